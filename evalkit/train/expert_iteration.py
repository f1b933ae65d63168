"""Expert iteration (`mode: expert_iteration`): sample, keep what the checker passes, fine-tune, repeat.

    mode: expert_iteration
    expert_iteration: {rounds: 10, k: 8, prompts_per_round: 256, cap_per_prompt: 2, steps_per_round: 50}

No reference answers are needed: the task checkers supervise. The steps, in order:

1. refuse what the mode cannot do yet (--resume, torchrun); build the curriculum, if any;
2. data and model: the warm-start rows (data.sources, only with warm_start.steps) and the model
   (scratch, a local folder, or warm_start.model); `tokenizer/` and `data.json`;
3. warm start: warm_start.steps of SFT on those rows through the evaluation callback, or else
   one evaluation at step 0 (checkpointed before the first round trains);
4. rounds, until a target is confirmed, a budget ends or nothing is left to reinforce:
   a. sample k completions for `prompts_per_round` training prompts per task at the current level
      (`rounds/round-NNN/` holds them as a run record);
   b. round 1 only: judge the baseline (0 % pass@k: refused; 100 % of samples pass: nothing to gain);
   c. keep the passing samples (deduplicated, capped per prompt, no held-out prompt) and, with
      `accumulate`, every passing sample of the rounds before (STaR-style);
   d. fine-tune on them for `steps_per_round` steps (the same Trainer and evaluation callback as SFT;
      checkpoints and curves count the run's steps);
   e. move the curriculum by the held-out rate at the current level;
5. finish: the best model, the final record (meta.training.rounds, .curriculum) and the report.
"""

from __future__ import annotations

import time
from typing import Any

from evalkit.train.common import FinetuneResult, Run, build_model, write_run_files
from evalkit.train.curriculum import Curriculum
from evalkit.train.data import Row, normalize_prompt
from evalkit.train.finish import finish
from evalkit.train.trainer import sft_trainer
from evalkit.train.verify import (
    baselines,
    build_curriculum,
    checkpoint_start,
    fmt_rates,
    held_out_rates,
    judge_baseline,
    refuse_unsupported,
    sample,
    select_samples,
    training_levels,
    update_curriculum,
    warm_start_rows,
)


def train(run: Run, *, max_steps: int | None = None) -> FinetuneResult:
    """Run an expert-iteration recipe to its targets (or its budget).

    Args:
        run: the prepared run (`evalkit.train.common.prepare`).
        max_steps: overrides the recipe's budget.max_steps (warm start and rounds together).
    """
    recipe, display = run.recipe, run.display

    # 1. What this mode cannot do; the curriculum.
    refuse_unsupported(run)
    curriculum = build_curriculum(recipe, run.registry)

    # 2. Data and model.
    eval_examples = run.eval_examples()
    rows, report = warm_start_rows(run, eval_examples)
    vocabulary = rows or [Row(e.prompt, "", e.task) for e in eval_examples]
    run.model, run.tokenizer = build_model(recipe, run.output, vocabulary, resume=False)
    write_run_files(run, report.to_dict())
    held_out = {normalize_prompt(e.prompt) for e in eval_examples}
    budget = max_steps or recipe.max_steps
    run.training_meta["curriculum"] = curriculum.to_dict() if curriculum else None
    if display:
        display.start(recipe, report, run.model, None)

    met = None
    try:
        # 3. Warm start: a few SFT steps, or just the step-0 evaluation.
        warm = recipe.warm_start.get("steps")
        if warm:
            run.entry_extra = {"phase": "warm_start", "levels": training_levels(recipe, curriculum)}
            trainer = sft_trainer(run, run.model, run.tokenizer, rows, max_steps=min(warm, budget))
            trainer.train()
            run.step_offset += trainer.state.global_step
        else:
            run.entry_extra = {"phase": "start", "levels": training_levels(recipe, curriculum)}
            run.evaluate(run.model, 0, 0.0)

        # 4. Rounds.
        if run.state.stopped_because is None and not run.out_of_time():
            met = rounds(run, curriculum, held_out, budget, step0_unsaved=not warm)
    finally:
        if display:
            display.stop()
        if curriculum:
            run.training_meta["curriculum"] = curriculum.to_dict()

    # 5. The best model, the final record, the report.
    default = (f"time budget of {recipe.max_minutes:g} minutes used" if run.out_of_time()
               else f"step budget of {budget} steps used")
    return finish(run, run.model, current_step=run.step_offset, data_report=report.to_dict(),
                  default_reason=default, met=met)


def rounds(run: Run, curriculum: Curriculum | None, held_out: set[str], budget: int, *,
           step0_unsaved: bool) -> bool | None:
    """Rounds of sample -> keep passing -> fine-tune -> evaluate. Returns `met` for finish() (None: the
    confirmed-target rule decides)."""
    recipe, ei = run.recipe, run.recipe.expert_iteration
    log: list[dict[str, Any]] = run.training_meta.setdefault("rounds", [])
    pool: list[Any] = []  # every passing sample so far (accumulate: STaR-style)
    for r in range(1, ei["rounds"] + 1):
        if run.out_of_time() or run.step_offset >= budget:
            return None

        # a. Sample k completions per training prompt at the current levels.
        levels = training_levels(recipe, curriculum)
        t0 = time.monotonic()
        folder = run.output / "rounds" / f"round-{r:03d}"
        record = sample(run, levels, n=ei["prompts_per_round"], k=ei["k"], temperature=ei["temperature"],
                        top_p=ei["top_p"], seed=recipe.seed * 1000 + r, run_dir=folder)
        stats = baselines(record, levels, ei["k"])

        # b. The baseline, before any verifier-only training.
        if r == 1:
            nothing = judge_baseline(stats, "expert iteration", file=recipe.file, curriculum=bool(curriculum))
            if nothing:
                run.state.stopped_because = nothing
                run.say(nothing)
                return bool(run.state.history[-1]["all_met"])

        # c. Keep what the checker passed.
        samples = list(record.samples())
        rows, removed = select_samples(samples, cap_per_prompt=ei["cap_per_prompt"], exclude_prompts=held_out)
        kept = len(rows)
        if ei["accumulate"] and rows:
            pool += [x for x in samples if x["status"] == "PASS"]
            rows, _ = select_samples(pool, cap_per_prompt=ei["cap_per_prompt"], exclude_prompts=held_out)
        info: dict[str, Any] = {"round": r, "step": run.step_offset, "levels": levels,
                "prompts": {b.task: b.prompts for b in stats}, "k": ei["k"],
                "pass_at_k": {b.task: b.pass_at_k for b in stats},
                "sample_pass_rate": {b.task: b.sample_rate for b in stats},
                "kept": kept, "train_rows": len(rows), "removed": dict(removed),
                "sample_s": round(time.monotonic() - t0, 2), "record": str(folder.relative_to(run.output))}
        log.append(info)
        if not rows:  # under a curriculum the level may have risen too far: the rule can bring it back
            info["steps"], info["curriculum"] = 0, update_curriculum(run, curriculum)
            run.say(f"round {r}: pass@{ei['k']} {fmt_rates(info['pass_at_k'])} · kept nothing · no training")
            if not any(c["new_level"] != c["level"] for c in info["curriculum"].values()):
                run.state.stopped_because = f"round {r} kept no passing samples: nothing left to reinforce"
                return None
            continue

        # d. Fine-tune on them (evaluating and checkpointing as SFT does).
        run.entry_extra = {"phase": "expert_iteration", "round": r, "levels": levels}
        overrides = {"seed": recipe.seed + r, "data_seed": recipe.seed + r, "warmup_steps": ei["warmup_steps"]}
        if ei["lr"]:
            overrides["learning_rate"] = ei["lr"]
        if step0_unsaved:  # step 0 was evaluated outside a Trainer: checkpoint it before training
            checkpoint_start(run)
            step0_unsaved = False
        trainer = sft_trainer(run, run.model, run.tokenizer, rows,
                              max_steps=min(ei["steps_per_round"], budget - run.step_offset), **overrides)
        trainer.train()
        run.step_offset += trainer.state.global_step
        info["steps"] = trainer.state.global_step
        info["held_out"] = held_out_rates(run)

        # e. Move the curriculum.
        info["curriculum"] = update_curriculum(run, curriculum)
        prompts = sum(info["prompts"].values())
        run.say(f"round {r}: {prompts} prompts x {ei['k']} samples · pass@{ei['k']} "
                f"{fmt_rates(info['pass_at_k'])} · kept {info['kept']} (training on {len(rows)}) · "
                f"trained {info['steps']} steps · held-out {fmt_rates(info['held_out'])}")
        if run.state.stopped_because:
            return None
    if run.state.stopped_because is None and run.step_offset < budget:
        run.state.stopped_because = f"round budget of {ei['rounds']} rounds used"
    return None


__all__ = ["rounds", "train"]
