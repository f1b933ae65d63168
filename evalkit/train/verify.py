"""What the verifier-only modes share: the task checkers supervise, no reference answers needed.

    refuse_unsupported(run)                         # no --resume, no torchrun (yet)
    curriculum = build_curriculum(recipe, registry) # each task's training level, moved by the 0.7 / 0.3 rule
    record = sample(run, levels, n=64, k=8, ...)    # k completions per training prompt, judged
    judge_baseline(baselines(record, levels, 8), "GRPO")   # refuse 0 % pass@k; nothing to gain at 100 %
    rows, removed = select_samples(record.samples(), cap_per_prompt=2, exclude_prompts=held_out)

Used by evalkit.train.expert_iteration and evalkit.train.grpo; pure pieces (select_samples,
judge_baseline, build_curriculum) are tested without a model.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.core.example import normalize_prompt
from evalkit.errors import ConfigError
from evalkit.train.checkpoints import prune, save_now
from evalkit.train.common import Run
from evalkit.train.curriculum import Curriculum, LevelRule
from evalkit.train.data import DataReport, Row, build_training_rows
from evalkit.train.recipe import Recipe


class BaselineRefused(ConfigError):
    """A verifier-only mode would have nothing to reinforce: some task passes 0 % of its samples."""


@dataclass(frozen=True)
class Baseline:
    """Sampling statistics of one task on training prompts."""

    task: str
    level: int | None
    prompts: int
    k: int
    pass_at_k: float
    sample_rate: float


# -- pure pieces (tested without a model) ----------------------------------------------

def select_samples(samples: Iterable[Mapping[str, Any]], *, cap_per_prompt: int,
                   exclude_prompts: AbstractSet[str] = frozenset()) -> tuple[list[Row], Counter]:
    """Training rows from sampled completions: PASS only, one row per distinct (prompt, completion),
    at most `cap_per_prompt` per prompt (first sample indices first), none whose prompt, in
    `normalize_prompt` form, is in `exclude_prompts` (the held-out prompts in that form). A chat-mode
    sample's row carries the messages the model was sent. Returns (rows, counts of what was removed and why)."""
    rows: list[Row] = []
    removed: Counter = Counter()
    seen: set[tuple[str, str]] = set()
    per_prompt: Counter = Counter()
    for s in samples:
        prompt, completion = s["prompt"], s["output"]
        if s["status"] != "PASS":
            removed["failed the checker"] += 1
        elif normalize_prompt(prompt) in exclude_prompts:
            removed["held-out prompt"] += 1
        elif (prompt, completion) in seen:
            removed["duplicate"] += 1
        elif per_prompt[prompt] >= cap_per_prompt:
            removed["over the per-prompt cap"] += 1
        else:
            seen.add((prompt, completion))
            per_prompt[prompt] += 1
            messages = tuple(s["messages"]) if s.get("messages") else None
            rows.append(Row(prompt, completion, s["task"], s.get("example_id"), messages))
    return rows, removed


def judge_baseline(baselines: Sequence[Baseline], mode: str, *, file: Any = None,
                   curriculum: bool = False) -> str | None:
    """Raise BaselineRefused when a task is at 0 % pass@k; return a 'nothing to gain' reason when
    every sample of every task passed; else None (train)."""
    for b in baselines:
        if b.pass_at_k == 0:
            lower = f"curriculum.{b.task}.start" if curriculum else f"eval.tasks.{b.task}.level"
            at = f" at level {b.level}" if b.level is not None else ""
            raise BaselineRefused(
                f"baseline: {b.task} passes none of {b.prompts} training prompts with {b.k} samples each "
                f"(pass@{b.k} = 0 %{at}), so {mode} has nothing to reinforce. Warm-start first "
                f"(warm_start.steps with data.sources, or warm_start.model)"
                + (f", or lower the level ({lower})." if b.level is not None else "."),
                file=file, field="warm_start")
    if baselines and all(b.sample_rate >= 1.0 for b in baselines):
        total = sum(b.prompts * b.k for b in baselines)
        return (f"nothing to gain: all {total} completions sampled on training prompts already pass the "
                f"checkers (pass@k 100 %); no {mode} training done")
    return None


def build_curriculum(recipe: Recipe, registry: Any) -> Curriculum | None:
    """The recipe's curriculum with each task's levels filled in (defaults: from the lowest level
    up to the eval level); ConfigError naming the field for a level the task does not have."""
    if not recipe.curriculum:
        return None
    rules = {}
    for t in recipe.targets:
        if t.task not in recipe.curriculum:
            continue
        spec, task, where = recipe.curriculum[t.task], registry.get(t.task), f"curriculum.{t.task}"
        if not task.levels:
            raise ConfigError(f"task {t.task!r} has no difficulty levels", file=recipe.file, field=where)
        eval_level = t.level if t.level is not None else task.spec.default_level
        values = {"min_level": spec.get("min_level", min(task.levels))}
        values["max_level"] = spec.get("max_level", eval_level if eval_level is not None else max(task.levels))
        values["start"] = spec.get("start", values["min_level"])
        for key, level in values.items():
            if level not in task.levels:
                raise ConfigError(f"level {level} is not one of {t.task}'s levels {list(task.levels)}",
                                  file=recipe.file, field=f"{where}.{key}")
        try:
            rules[t.task] = LevelRule(**values, rise=spec.get("rise", 0.7), fall=spec.get("fall", 0.3),
                                      n=spec.get("n"), levels=tuple(task.levels))
        except ValueError as exc:
            raise ConfigError(str(exc), file=recipe.file, field=where) from None
    return Curriculum(rules)


def training_levels(recipe: Recipe, curriculum: Curriculum | None) -> dict[str, int | None]:
    """Each task's training level now: its curriculum level, else its eval level."""
    return {t.task: (curriculum.level(t.task) if curriculum and t.task in curriculum else t.level)
            for t in recipe.targets}


def fmt_rates(rates: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {rate:.1%}" for name, rate in rates.items())


# -- with a run ---------------------------------------------------------------------------

def refuse_unsupported(run: Run) -> None:
    """ConfigError for what the verifier modes cannot do yet: --resume, several processes."""
    recipe = run.recipe
    if run.resume_from is not None:
        raise ConfigError(f"--resume is not supported for mode {recipe.mode} yet; start again with --force",
                          file=recipe.file, field="mode")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"mode {recipe.mode} runs in one process (sampling happens between Trainer runs); "
                          "launch it without torchrun", file=recipe.file, field="mode")


def warm_start_rows(run: Run, eval_examples: Sequence[Any]) -> tuple[list[Row], DataReport]:
    """The SFT rows of warm_start.steps (data.sources, filtered as for SFT), or none."""
    if not run.recipe.warm_start.get("steps"):
        return [], DataReport()
    return build_training_rows(run.recipe, run.registry, eval_examples, count_tokens=lambda s: len(s) + 1)


def train_tasks(run: Run) -> list[Any]:
    """The tasks as training judges them: their own checkers (eval.checkers are for evaluation only)."""
    return [run.registry.get(t.task) for t in run.recipe.targets]


def sample(run: Run, levels: Mapping[str, int | None], *, n: int, k: int, temperature: float, top_p: float,
           seed: int, run_dir: Path | None) -> Any:
    """k completions for each of n training prompts per task, from the model as it is now (a RunRecord), in
    chat mode when the recipe evaluates in it (the samples then carry their messages: see select_samples)."""
    from evalkit.run.runner import evaluate

    return evaluate(model=run.model, tokenizer=run.tokenizer, tasks=train_tasks(run), split="train", n=n, k=k,
                    temperature=temperature, top_p=top_p, seed=seed, batch_size=run.recipe.eval_batch_size,
                    task_settings={name: {"level": lv} for name, lv in levels.items()}, run_dir=run_dir,
                    run_id=run_dir.name if run_dir else None, chat=run.recipe.eval_chat,
                    meta={"training": {"step": run.step_offset, "purpose": "verifier sampling"}})


def baselines(record: Any, levels: Mapping[str, int | None], k: int) -> list[Baseline]:
    """Each task's sampling statistics in a `sample` record."""
    return [Baseline(t["name"], levels.get(t["name"]), t["n_examples"], k, t["pass_at_k"][str(k)], t["rate"])
            for t in record.tasks]


def held_out_rates(run: Run) -> dict[str, float]:
    """Each task's pass rate in the last evaluation."""
    return {name: r["rate"] for name, r in run.state.history[-1]["rates"].items()}


def checkpoint_start(run: Run) -> None:
    """Checkpoint the weights evaluated at the current step outside any Trainer (step 0 without a warm
    start), so that they can still be exported if they stay the best."""
    save_now(run.model, run.ckpt_dir, run.step_offset, run.state_for_checkpoint())
    prune(run.ckpt_dir, run.best_steps())


def update_curriculum(run: Run, curriculum: Curriculum | None) -> dict[str, Any]:
    """Measure each curriculum task at its current level on held-out examples and apply the rule."""
    from evalkit.run.runner import evaluate

    if not curriculum or not run.state.history:
        return {}
    last, recipe, out = run.state.history[-1], run.recipe, {}
    for t in recipe.targets:
        if t.task not in curriculum:
            continue
        level, rule = curriculum.level(t.task), curriculum.rules[t.task]
        task = run.tasks[[x.task for x in recipe.targets].index(t.task)]
        eval_level = t.level if t.level is not None else task.spec.default_level
        n = rule.n or t.n or recipe.eval_n
        if level == eval_level and rule.n is None and last["rates"][t.task].get("decision") in (None, "cap"):
            rate = last["rates"][t.task]["rate"]  # the evaluation just made is at this level, on all n examples
        else:
            rec = evaluate(model=run.model, tokenizer=run.tokenizer, tasks=[task], n=n, seed=recipe.eval_seed,
                           level=level, batch_size=recipe.eval_batch_size, keep_samples=False, chat=recipe.eval_chat)
            rate = rec.tasks[0]["rate"]
        change = curriculum.update(t.task, rate, last["step"])
        out[t.task] = {"level": level, "rate": round(rate, 6), "n": n,
                       "new_level": change.new if change else level}
        if change:
            run.say(f"curriculum: {t.task} level {change.old} -> {change.new} ({change.reason})")
    last.setdefault("curriculum", out)  # an empty round re-measures the same evaluation: keep the first
    run.training_meta["curriculum"] = curriculum.to_dict()
    return out


__all__ = ["Baseline", "BaselineRefused", "baselines", "build_curriculum", "checkpoint_start", "fmt_rates",
           "held_out_rates", "judge_baseline", "refuse_unsupported", "sample", "select_samples", "train_tasks",
           "training_levels", "update_curriculum", "warm_start_rows"]
