"""The Hugging Face Trainer as every method uses it: two callbacks, through public hooks only.

    trainer = sft_trainer(run, model, tokenizer, rows, max_steps=500)   # or attach(GRPOTrainer(...), run)
    trainer.train()

- `EvaluateAndStop` evaluates with the task checkers every `eval.every` steps (`eval.every_near` while
  the pass rates are near their targets; and at the last step, and when the time budget ends), asks
  the Trainer for a checkpoint after each evaluation and stops training when the run's stop rule says
  so. With `train.anneal` it scales the scheduler's learning rate once the pass rate has moved
  (`evalkit.train.signal`), right before each optimizer step.
- `AtomicCheckpoints` makes each checkpoint complete before it becomes visible. The Trainer's
  output_dir is the staging folder (checkpoints/.staging); `on_save`, which the Trainer calls
  right after writing `checkpoint-<global_step>` there, waits for every rank's files, writes the
  loop state into it and renames it to checkpoints/checkpoint-<run step> (evalkit.train.checkpoints).

No private Trainer method is overridden, so the same code runs on every transformers version the
package allows and on TRL's GRPOTrainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from evalkit.train.checkpoints import commit, prune, remove_staging, staging_folder
from evalkit.train.common import Run, broadcast, training_arguments
from evalkit.train.data import CompletionCollator, Row, tokenize_rows
from evalkit.train.signal import due, lr_scale


class EvaluateAndStop(TrainerCallback):
    """Evaluates with the task checkers, saves a checkpoint per evaluation, stops at target."""

    def __init__(self, run: Run):
        self.run = run

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step == 0 and not self.run.state.history:
            self.run.evaluate(model, 0, 0.0)  # the starting point of every learning curve

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        run = self.run
        if logs and "loss" in logs:
            run.last_loss = float(logs["loss"])
            # Logging runs after on_step_end: the loss of the steps up to an evaluation arrives
            # just after it (and before the checkpoint is saved, so a resume keeps it).
            step = run.step_offset + state.global_step
            if run.state.history and run.state.history[-1]["step"] == step:
                run.state.history[-1]["loss"] = run.last_loss
            if run.display:
                run.display.progress(step, run.step_offset + state.max_steps, run.last_loss)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                              lr_scheduler: Any = None, **kwargs: Any) -> None:
        run = self.run
        if optimizer is None or lr_scheduler is None or not run.recipe.train.get("anneal"):
            return
        scale = lr_scale(run.recipe, run.signal_history, run.step_offset + state.global_step + 1)
        if scale != 1.0:  # the scheduler sets each group's rate afresh every step; this step's is scaled
            for group, lr in zip(optimizer.param_groups, lr_scheduler.get_last_lr()):
                group["lr"] = lr * scale

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        run = self.run
        step = run.step_offset + state.global_step
        out_of_time = bool(broadcast([1.0 if run.out_of_time() else 0.0])[0])
        if due(run.recipe, run.signal_history, step) or state.global_step >= state.max_steps or out_of_time:
            stop = run.evaluate(model, step, state.epoch)
            control.should_save = True
            if out_of_time and not stop:
                run.state.stopped_because = f"time budget of {run.recipe.max_minutes:g} minutes used"
            if stop or out_of_time:
                control.should_training_stop = True
        elif run.display:
            run.display.progress(step, run.step_offset + state.max_steps, run.last_loss)
        return control


class AtomicCheckpoints(TrainerCallback):
    """Renames each checkpoint into place, complete with the loop state, right after the Trainer saved it."""

    def __init__(self, run: Run):
        self.run = run

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import torch.distributed as dist

        run = self.run
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank has written its part (its RNG state) before the folder moves
        if not args.should_save:
            return
        staged = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        commit(staged, run.ckpt_dir, run.step_offset + state.global_step, run.state_for_checkpoint())
        remove_staging(run.ckpt_dir)
        prune(run.ckpt_dir, run.best_steps())


def attach(trainer: Any, run: Run) -> Any:
    """Give a trainer (whose output_dir is the staging folder) the evaluation and atomic-checkpoint
    callbacks, and no progress printing of its own (the live display shows progress)."""
    trainer.add_callback(EvaluateAndStop(run))
    trainer.add_callback(AtomicCheckpoints(run))
    for quiet in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(quiet)
    return trainer


def sft_trainer(run: Run, model: Any, tokenizer: Any, rows: list[Row], *, max_steps: int,
                **overrides: Any) -> Any:
    """A Trainer that fine-tunes `model` on prompt/completion `rows` (loss on the completion) for
    `max_steps`, evaluating and checkpointing through `run` (it stops when every target is met). The rows
    are in their chat form when the recipe evaluates in chat mode (`eval.chat`), so training and
    evaluation see the same tokens (`evalkit.train.data.encode_row`).

    Args:
        overrides: TrainingArguments that differ from the recipe's (e.g. a round's seed).
    """
    args = training_arguments(run.recipe, staging_folder(run.ckpt_dir), max_steps, **overrides)
    trainer = Trainer(model=model, args=args, train_dataset=tokenize_rows(rows, tokenizer, chat=run.recipe.eval_chat),
                      data_collator=CompletionCollator(tokenizer.pad_token_id))
    return attach(trainer, run)


__all__ = ["AtomicCheckpoints", "EvaluateAndStop", "attach", "sft_trainer"]
