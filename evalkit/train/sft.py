"""Supervised fine-tuning until the checks pass (`mode: sft`, the default), top to bottom.

    evalkit finetune finetune/addition.yaml            # train, evaluate, stop at target
    evalkit finetune finetune/addition.yaml --resume   # after a kill: continue from the last checkpoint

One readable recipe on the HF Trainer (so `torchrun` / `accelerate launch` data parallelism comes
from the Trainer). The steps, in order:

1. data: the recipe's sources, mixed and filtered, with no held-out example or prompt left in
   (`data.json` says what each filter removed);
2. model: built from scratch (character tokenizer) or loaded from a local folder, LoRA if asked;
   on --resume the tokenizer comes from `tokenizer/`;
3. Trainer: completion-only loss on the rows; a callback evaluates with the task checkers on the
   held-out split every `eval.every` steps, writes a run record per evaluation and an atomic
   checkpoint, and stops when every target has held for `confirm` evaluations in a row;
4. train, resuming model, optimizer, scheduler, RNG, data position and the evaluation history
   from the last complete checkpoint on --resume;
5. finish: export the best model by the checker metric, the final record and the report; name
   the missed targets when the budget ended first (exit 1).

`prepare` (the output folder, --force / --resume) comes before, in `evalkit.train.finetune`.
"""

from __future__ import annotations

from evalkit.train.common import FinetuneResult, Run, build_model, write_run_files
from evalkit.train.data import build_training_rows
from evalkit.train.finish import finish
from evalkit.train.trainer import sft_trainer


def train(run: Run, *, max_steps: int | None = None) -> FinetuneResult:
    """Fine-tune on the recipe's data until every target is met or the budget ends.

    Args:
        run: the prepared run (`evalkit.train.common.prepare`).
        max_steps: overrides the recipe's budget.max_steps.
    """
    recipe, display = run.recipe, run.display

    # 1. Data: sources -> filters -> mixture -> contamination guard.
    rows, report = build_training_rows(recipe, run.registry, run.eval_examples(), count_tokens=lambda s: len(s) + 1)

    # 2. Model (and the files that describe the run).
    run.model, run.tokenizer = build_model(recipe, run.output, rows, resume=run.resume_from is not None)
    write_run_files(run, report.to_dict())
    if display:
        display.start(recipe, report, run.model, run.resume_from)

    # 3. The Trainer, with the evaluation and atomic-checkpoint callbacks.
    steps = max_steps or recipe.max_steps
    trainer = sft_trainer(run, run.model, run.tokenizer, rows, max_steps=steps)

    # 4. Train (or continue).
    if run.resume_from is not None:
        run.restore(run.resume_from)
    try:
        trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    finally:
        if display:
            display.stop()

    # 5. The best model, the final record, the report.
    return finish(run, trainer.model, current_step=trainer.state.global_step, data_report=report.to_dict(),
                  default_reason=f"step budget of {steps} steps used")


__all__ = ["train"]
