"""GRPO (`mode: grpo`): TRL's GRPOTrainer with the task checker's verdict score as the reward.

    mode: grpo
    grpo: {steps: 200, num_generations: 8, prompts_per_step: 8, lr: 1.0e-5, format_reward: 0.0}

No reference answers are needed: the task checkers supervise. The steps, in order:

1. refuse what the mode cannot do yet (--resume, torchrun, no TRL); build the curriculum, if any;
2. data and model: the warm-start rows (data.sources, only with warm_start.steps) and the model
   (scratch, a local folder, or warm_start.model); `tokenizer/` and `data.json`;
3. warm start: warm_start.steps of SFT on those rows through the evaluation callback, or else
   one evaluation at step 0 (checkpointed before GRPO trains);
4. baseline: sample the training prompts (`rounds/baseline/`); a task at 0 % pass@k is refused,
   and when every sample already passes there is nothing to gain (no training);
5. GRPO in segments (one per `eval.every` steps under a curriculum, else one): a dataset of
   training prompts at the current levels, the GRPOTrainer with the evaluation and atomic-checkpoint
   callbacks (rewards logged per step), then the curriculum moves by the held-out rate;
6. finish: the best model, the final record (meta.training.baseline, .rewards, .rounds) and the report.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from transformers import TrainerCallback

from evalkit.errors import ConfigError
from evalkit.train.checkpoints import staging_folder
from evalkit.train.common import FinetuneResult, Run, build_model, training_arguments, write_run_files
from evalkit.train.curriculum import Curriculum
from evalkit.train.data import Row, normalize_prompt
from evalkit.train.finish import finish
from evalkit.train.trainer import attach, sft_trainer
from evalkit.train.verify import (
    baselines,
    build_curriculum,
    checkpoint_start,
    fmt_rates,
    held_out_rates,
    judge_baseline,
    refuse_unsupported,
    sample,
    train_tasks,
    training_levels,
    update_curriculum,
    warm_start_rows,
)


def train(run: Run, *, max_steps: int | None = None) -> FinetuneResult:
    """Run a GRPO recipe to its targets (or its budget).

    Args:
        run: the prepared run (`evalkit.train.common.prepare`).
        max_steps: overrides the recipe's budget.max_steps (warm start and GRPO together).
    """
    recipe, display = run.recipe, run.display

    # 1. What this mode cannot do; the curriculum.
    refuse_unsupported(run)
    try:
        import trl  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"mode: grpo needs TRL (pip install 'evalkit[rl]'): {exc}", file=recipe.file,
                          field="mode") from None
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

        # 4-5. Baseline, then GRPO segments.
        if run.state.stopped_because is None and not run.out_of_time():
            met = grpo(run, curriculum, held_out, budget, step0_unsaved=not warm)
    finally:
        if display:
            display.stop()
        if curriculum:
            run.training_meta["curriculum"] = curriculum.to_dict()

    # 6. The best model, the final record, the report.
    default = (f"time budget of {recipe.max_minutes:g} minutes used" if run.out_of_time()
               else f"step budget of {budget} steps used")
    return finish(run, run.model, current_step=run.step_offset, data_report=report.to_dict(),
                  default_reason=default, met=met)


def checker_reward(tasks: Mapping[str, Any], format_weight: float = 0.0) -> Callable[..., list[float]]:
    """The TRL reward function over dataset columns `task`, `fields` (JSON) and `level`: the task
    checker's verdict score, with the answer's format as a factor, never a bonus.

    reward = score x (1 - format_weight + format_weight x well_formed), where well_formed is 1.0
    for a non-empty extracted answer. A wrong answer (score 0) earns 0 however well formatted:
    under GRPO's group-normalised advantages an additive format bonus would reward well-formatted
    wrong answers over the group's mean (open-instruct gates the verification reward on the
    format for this reason). `format_weight` in [0, 1]: how much of a right answer's reward
    depends on its format (0: none).
    """
    from evalkit.core.extract import cut_at_stop
    from evalkit.core.scoring import score

    if not 0.0 <= format_weight <= 1.0:
        raise ValueError(f"format_weight must be in [0, 1], got {format_weight}")
    cache: dict[tuple[str, str, Any], Any] = {}

    def example(name: str, fields: str, level: Any) -> Any:
        key = (name, fields, level)
        if key not in cache:
            cache[key] = tasks[name].example(json.loads(fields), level)
        return cache[key]

    def reward(prompts: Any, completions: list[str], task: list[str], fields: list[str], level: list[Any],
               **kwargs: Any) -> list[float]:
        out = []
        for completion, name, f, lv in zip(completions, task, fields, level):
            # A conversational dataset's completion is the assistant's message list; a raw one, text.
            text = completion if isinstance(completion, str) else "".join(m["content"] for m in completion)
            t = tasks[name]
            scored = score(t, example(name, f, lv), cut_at_stop(text, t.generation.stop))
            well_formed = 1.0 if scored.answer.strip() else 0.0
            out.append(scored.verdict.score * (1.0 - format_weight + format_weight * well_formed))
        return out

    return reward


def prompt_dataset(run: Run, levels: Mapping[str, int | None], n: int, seed: int, held_out: set[str],
                   chat: bool = False) -> Any:
    """n training prompts per task at `levels` (no held-out prompt), shuffled: GRPO's dataset. `chat`: each
    prompt is the example's chat form (a list of messages, TRL's conversational format)."""
    from datasets import Dataset

    items = []
    for task in train_tasks(run):
        for ex in task.examples("train", n=n, seed=seed, level=levels.get(task.name)):
            if normalize_prompt(ex.prompt) not in held_out:
                prompt = [dict(m) for m in task.messages(ex)] if chat else ex.prompt
                items.append({"prompt": prompt, "task": task.name, "level": ex.level,
                              "fields": json.dumps(dict(ex.fields), sort_keys=True)})
    random.Random(seed).shuffle(items)
    return Dataset.from_list(items)


class RewardLog(TrainerCallback):
    """Each logged mean reward, by run step, into meta.training.rewards and the evaluation at that step."""

    def __init__(self, run: Run, log: list[dict[str, Any]]):
        self.run, self.log = run, log

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs and "reward" in logs:
            step = self.run.step_offset + state.global_step
            self.log.append({"step": step, "reward": float(logs["reward"])})
            history = self.run.state.history
            if history and history[-1]["step"] == step:
                history[-1]["reward"] = float(logs["reward"])


def grpo(run: Run, curriculum: Curriculum | None, held_out: set[str], budget: int, *,
         step0_unsaved: bool) -> bool | None:
    """The baseline, then TRL GRPO in segments. Returns `met` for finish() (None: the confirmed-target
    rule decides)."""
    from trl import GRPOConfig, GRPOTrainer

    recipe, g = run.recipe, run.recipe.grpo
    k = g["num_generations"]

    # 4. Baseline: is there anything to reinforce, anything to gain?
    levels = training_levels(recipe, curriculum)
    record = sample(run, levels, n=max(32, g["prompts_per_step"]), k=k, temperature=g["temperature"], top_p=1.0,
                    seed=recipe.seed * 1000, run_dir=run.output / "rounds" / "baseline")
    stats = baselines(record, levels, k)
    run.training_meta["baseline"] = [b.__dict__ for b in stats]
    nothing = judge_baseline(stats, "GRPO", file=recipe.file, curriculum=bool(curriculum))
    if nothing:
        run.state.stopped_because = nothing
        run.say(nothing)
        return bool(run.state.history[-1]["all_met"])

    # 5. GRPO segments: the checker's reward (the format a factor of it, never a bonus), the evaluation callback.
    # In chat mode (eval.chat) the prompts are the tasks' chat forms, which TRL renders with the chat template,
    # and replies are read as chat-mode evaluation reads them (the chat view's stop strings and extractor).
    chat = recipe.eval_chat
    tasks = {t.name: t.for_chat() if chat else t for t in train_tasks(run)}
    rewards: list[Any] = [checker_reward(tasks, g["format_reward"])]
    longest = g["max_completion_length"] or max(t.generation.max_new_tokens or 32 for t in tasks.values())
    total = min(g["steps"], budget - run.step_offset)
    segment = recipe.eval_every if curriculum else total
    segments: list[dict[str, Any]] = run.training_meta.setdefault("rounds", [])
    log: list[dict[str, Any]] = run.training_meta.setdefault("rewards", [])
    done, i = 0, 0
    while done < total and run.state.stopped_because is None and not run.out_of_time():
        i += 1
        steps, levels = min(segment, total - done), training_levels(recipe, curriculum)
        run.entry_extra = {"phase": "grpo", "round": i, "levels": levels}
        dataset = prompt_dataset(run, levels, steps * g["prompts_per_step"], recipe.seed * 1000 + i, held_out,
                                 chat=chat)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TRL passes transformers' renamed options
            args = training_arguments(
                recipe, staging_folder(run.ckpt_dir), steps, cls=GRPOConfig, num_generations=k,
                per_device_train_batch_size=g["prompts_per_step"] * k, gradient_accumulation_steps=1,
                learning_rate=g["lr"], beta=g["beta"], temperature=g["temperature"],
                max_completion_length=longest, warmup_steps=g["warmup_steps"], logging_steps=1,
                gradient_checkpointing=False, seed=recipe.seed + i,
                data_seed=recipe.seed + i)
            trainer = GRPOTrainer(model=run.model, reward_funcs=rewards, args=args, train_dataset=dataset,
                                  processing_class=run.tokenizer)
        attach(trainer, run)
        trainer.add_callback(RewardLog(run, log))
        if step0_unsaved:  # step 0 was evaluated outside a Trainer: checkpoint it before training
            checkpoint_start(run)
            step0_unsaved = False
        first = len(log)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            trainer.train()
        run.step_offset += trainer.state.global_step
        done += trainer.state.global_step
        seg_rewards = [x["reward"] for x in log[first:]]
        mean_reward = round(sum(seg_rewards) / len(seg_rewards), 6) if seg_rewards else None
        info: dict[str, Any] = {"round": i, "step": run.step_offset, "levels": levels,
                                "steps": trainer.state.global_step, "prompts": len(dataset),
                                "reward_mean": mean_reward, "held_out": held_out_rates(run)}
        info["curriculum"] = update_curriculum(run, curriculum)
        segments.append(info)
        run.say(f"grpo segment {i}: {info['steps']} steps · mean reward {info['reward_mean']} · "
                f"held-out {fmt_rates(info['held_out'])}")
    if run.state.stopped_because is None and done >= total and total < budget - (run.step_offset - done):
        run.state.stopped_because = f"grpo.steps budget of {g['steps']} steps used"
    return None


__all__ = ["RewardLog", "checker_reward", "grpo", "prompt_dataset", "train"]
