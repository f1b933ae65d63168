"""Verifier-only training: the task checkers supervise, no reference answers needed.

    mode: expert_iteration   # rounds: sample k completions per training prompt, keep the checker-
                             # passing ones (deduplicated, capped per prompt), fine-tune on them, evaluate
    mode: grpo               # TRL's GRPOTrainer, the checker's verdict score as the reward

Both run inside the fine-tuning loop of `evalkit.finetune` (the same `Loop`: held-out evaluation
by the runner, a run record per evaluation, atomic checkpoints, stop when every target is met on
`confirm` evaluations in a row, the best model exported with its record and report). What they add:

- warm_start: a few SFT steps on `data.sources` first, or a local model folder to start from;
- a baseline before any verifier-only training: sampling the training prompts, a task at 0 %
  pass@k is refused (nothing to reinforce), and when every sample already passes there is
  nothing to gain (no training);
- curriculum (evalkit.curriculum): each round or GRPO segment trains at each task's current
  level, which moves with the held-out pass rate at that level;
- eval.checkers: evaluation-only checkers (the reward / filter keeps the task's own checker).

Outputs, beside the SFT ones: rounds/round-NNN/ (each round's sampled completions as a run record)
and meta.training.rounds / .curriculum in the final record.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.train.curriculum import Curriculum, LevelRule
from evalkit.errors import ConfigError
from evalkit.train.loop import (STATE_FILE, FinetuneResult, Loop, Prepared, _build_model, attach, finish,
                       make_trainer, training_arguments, _make_trainer_class)
from evalkit.train.data import DataReport, Row, _norm, build_training_rows


class BaselineRefused(ConfigError):
    """A verifier-only mode would have nothing to reinforce: some task passes 0 % of its samples."""


# -- pure pieces (tested without a model) ----------------------------------------------

def select_samples(samples: Iterable[Mapping[str, Any]], *, cap_per_prompt: int,
                   exclude_prompts: set[str] = frozenset()) -> tuple[list[Row], Counter]:
    """Training rows from sampled completions: PASS only, one row per distinct (prompt, completion),
    at most `cap_per_prompt` per prompt (first sample indices first), none whose normalised prompt
    is in `exclude_prompts` (the held-out prompts). Returns (rows, counts of what was removed and why)."""
    rows: list[Row] = []
    removed: Counter = Counter()
    seen: set[tuple[str, str]] = set()
    per_prompt: Counter = Counter()
    for s in samples:
        prompt, completion = s["prompt"], s["output"]
        if s["status"] != "PASS":
            removed["failed the checker"] += 1
        elif _norm(prompt) in exclude_prompts:
            removed["held-out prompt"] += 1
        elif (prompt, completion) in seen:
            removed["duplicate"] += 1
        elif per_prompt[prompt] >= cap_per_prompt:
            removed["over the per-prompt cap"] += 1
        else:
            seen.add((prompt, completion))
            per_prompt[prompt] += 1
            rows.append(Row(prompt, completion, s["task"], s.get("example_id")))
    return rows, removed


@dataclass(frozen=True)
class Baseline:
    """Sampling statistics of one task on training prompts."""

    task: str
    level: int | None
    prompts: int
    k: int
    pass_at_k: float
    sample_rate: float


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


def build_curriculum(recipe: Any, registry: Any) -> Curriculum | None:
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


# -- the run ----------------------------------------------------------------------------

@dataclass
class _Run:
    loop: Loop
    model: Any
    tokenizer: Any
    ckpt_dir: Path
    budget: int
    curriculum: Curriculum | None
    held_out_prompts: set[str]
    display: Any
    step0_unsaved: bool = False  # step 0 was evaluated outside a Trainer: checkpoint it before training

    @property
    def recipe(self) -> Any:
        return self.loop.recipe

    def levels(self) -> dict[str, int | None]:
        """Each task's training level now: its curriculum level, else its eval level."""
        return {t.task: (self.curriculum.level(t.task) if self.curriculum and t.task in self.curriculum
                         else t.level) for t in self.recipe.targets}

    def say(self, text: str) -> None:
        console = getattr(self.display, "console", None)
        if console is not None:
            console.print(text, markup=False, highlight=False, soft_wrap=True)

    def train_tasks(self) -> list[Any]:
        return [self.loop.registry.get(t.task) for t in self.recipe.targets]  # the tasks' own checkers


def run_verifier(run: Prepared, *, display: Any = None, max_steps: int | None = None) -> FinetuneResult:
    """Run a recipe whose mode is expert_iteration or grpo (called by `finetune`)."""
    import os

    recipe, registry = run.recipe, run.registry
    if run.resume_from is not None:
        raise ConfigError(f"--resume is not supported for mode {recipe.mode} yet; start again with --force",
                          file=recipe.file, field="mode")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"mode {recipe.mode} runs in one process (sampling happens between Trainer runs); "
                          "launch it without torchrun", file=recipe.file, field="mode")
    curriculum = build_curriculum(recipe, registry)
    loop = Loop(recipe, run.output, registry=registry, resume=False, display=display)
    eval_examples = [ex for t in recipe.targets for ex in registry.get(t.task).examples(
        "eval", n=t.n or recipe.eval_n, seed=recipe.eval_seed, level=t.level)]
    warm = recipe.warm_start.get("steps")
    if warm:
        rows, report = build_training_rows(recipe, registry, eval_examples, count_tokens=lambda s: len(s) + 1)
    else:
        rows, report = [], DataReport()
    vocab_rows = rows or [Row(e.prompt, "", e.task) for e in eval_examples]
    model, tokenizer = _build_model(recipe, run.output, vocab_rows, False)
    loop.model, loop.tokenizer = model, tokenizer
    run.output.mkdir(parents=True, exist_ok=True)
    if recipe.base_is_scratch:
        tokenizer.save_pretrained(run.output / "tokenizer")
    (run.output / "data.json").write_text(json.dumps(report.to_dict(), indent=1))
    ctx = _Run(loop, model, tokenizer, run.ckpt_dir, max_steps or recipe.max_steps, curriculum,
               {_norm(e.prompt) for e in eval_examples}, display)
    loop.training_meta["curriculum"] = curriculum.to_dict() if curriculum else None
    if display:
        display.start(recipe, report, model, None)
    met = None
    try:
        if warm:
            loop.entry_extra = {"phase": "warm_start", "levels": ctx.levels()}
            trainer = make_trainer(loop, model, tokenizer, rows, ckpt_dir=ctx.ckpt_dir,
                                   max_steps=min(warm, ctx.budget))
            trainer.train()
            loop.step_offset += trainer.state.global_step
        else:
            loop.entry_extra = {"phase": "start", "levels": ctx.levels()}
            loop.evaluate(model, 0, 0.0)
            ctx.step0_unsaved = True
        if loop.state.stopped_because is None and not loop.out_of_time():
            met = (_expert_iteration if recipe.mode == "expert_iteration" else _grpo)(ctx)
    finally:
        if display:
            display.stop()
        if curriculum:
            loop.training_meta["curriculum"] = curriculum.to_dict()
    default = (f"time budget of {recipe.max_minutes:g} minutes used" if loop.out_of_time()
               else f"step budget of {ctx.budget} steps used")
    return finish(loop, model, ctx.ckpt_dir, loop.step_offset, report.to_dict(), default, met=met)


def _before_training(ctx: _Run) -> None:
    """Checkpoint step 0 when no Trainer did (so it can still be exported if it stays the best)."""
    if ctx.step0_unsaved:
        ctx.step0_unsaved = False
        _checkpoint_now(ctx)


def _checkpoint_now(ctx: _Run) -> None:
    """A complete checkpoint of the current weights outside any Trainer (same layout, atomic)."""
    from evalkit.models.tiny import save_model

    folder = ctx.ckpt_dir / f"checkpoint-{ctx.loop.step_offset}"
    save_model(ctx.model, None, folder)
    (folder / STATE_FILE).write_text(json.dumps(ctx.loop.state_for_checkpoint(), indent=1))
    ctx.loop.prune(ctx.ckpt_dir)


def sample(ctx: _Run, levels: Mapping[str, int | None], *, n: int, k: int, temperature: float, top_p: float,
           seed: int, run_dir: Path | None) -> Any:
    """k completions for each of n training prompts per task, from the model as it is now (a RunRecord)."""
    from evalkit.run.runner import evaluate

    return evaluate(model=ctx.model, tokenizer=ctx.tokenizer, tasks=ctx.train_tasks(), split="train", n=n, k=k,
                    temperature=temperature, top_p=top_p, seed=seed, batch_size=ctx.recipe.eval_batch_size,
                    task_settings={name: {"level": lv} for name, lv in levels.items()}, run_dir=run_dir,
                    run_id=run_dir.name if run_dir else None,
                    meta={"training": {"step": ctx.loop.step_offset, "purpose": "verifier sampling"}})


def _baselines(record: Any, levels: Mapping[str, int | None], k: int) -> list[Baseline]:
    return [Baseline(t["name"], levels.get(t["name"]), t["n_examples"], k, t["pass_at_k"][str(k)], t["rate"])
            for t in record.tasks]


def _update_curriculum(ctx: _Run) -> dict[str, Any]:
    """Measure each curriculum task at its current level on held-out examples and apply the rule."""
    from evalkit.run.runner import evaluate

    if not ctx.curriculum or not ctx.loop.state.history:
        return {}
    last, recipe, out = ctx.loop.state.history[-1], ctx.recipe, {}
    for t in recipe.targets:
        if t.task not in ctx.curriculum:
            continue
        level, rule = ctx.curriculum.level(t.task), ctx.curriculum.rules[t.task]
        task = ctx.loop.tasks[[x.task for x in recipe.targets].index(t.task)]
        eval_level = t.level if t.level is not None else task.spec.default_level
        n = rule.n or t.n or recipe.eval_n
        if level == eval_level and rule.n is None:
            rate = last["rates"][t.task]["rate"]  # the evaluation just made is at this level
        else:
            rec = evaluate(model=ctx.model, tokenizer=ctx.tokenizer, tasks=[task], n=n, seed=recipe.eval_seed,
                           level=level, batch_size=recipe.eval_batch_size, keep_samples=False)
            rate = rec.tasks[0]["rate"]
        change = ctx.curriculum.update(t.task, rate, last["step"])
        out[t.task] = {"level": level, "rate": round(rate, 6), "n": n,
                       "new_level": change.new if change else level}
        if change:
            ctx.say(f"curriculum: {t.task} level {change.old} -> {change.new} ({change.reason})")
    last.setdefault("curriculum", out)  # an empty round re-measures the same evaluation: keep the first
    ctx.loop.training_meta["curriculum"] = ctx.curriculum.to_dict()
    return out


def _held_out(ctx: _Run) -> dict[str, float]:
    last = ctx.loop.state.history[-1]
    return {name: r["rate"] for name, r in last["rates"].items()}


def _fmt_rates(rates: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {rate:.1%}" for name, rate in rates.items())


# -- expert iteration -----------------------------------------------------------------

def _expert_iteration(ctx: _Run) -> bool | None:
    """Rounds of sample -> keep passing -> fine-tune -> evaluate. Returns `met` for finish()."""
    loop, recipe, ei = ctx.loop, ctx.recipe, ctx.recipe.expert_iteration
    rounds: list[dict[str, Any]] = loop.training_meta.setdefault("rounds", [])
    pool: list[Mapping[str, Any]] = []  # every passing sample so far (accumulate: STaR-style)
    for r in range(1, ei["rounds"] + 1):
        if loop.out_of_time() or loop.step_offset >= ctx.budget:
            return None
        levels = ctx.levels()
        t0 = time.monotonic()
        folder = loop.output / "rounds" / f"round-{r:03d}"
        record = sample(ctx, levels, n=ei["prompts_per_round"], k=ei["k"], temperature=ei["temperature"],
                        top_p=ei["top_p"], seed=recipe.seed * 1000 + r, run_dir=folder)
        baselines = _baselines(record, levels, ei["k"])
        if r == 1:
            nothing = judge_baseline(baselines, "expert iteration", file=recipe.file, curriculum=bool(ctx.curriculum))
            if nothing:
                loop.state.stopped_because = nothing
                ctx.say(nothing)
                return bool(loop.state.history[-1]["all_met"])
        samples = list(record.samples())
        rows, removed = select_samples(samples, cap_per_prompt=ei["cap_per_prompt"],
                                       exclude_prompts=ctx.held_out_prompts)
        kept = len(rows)
        if ei["accumulate"] and rows:
            pool += [x for x in samples if x["status"] == "PASS"]
            rows, _ = select_samples(pool, cap_per_prompt=ei["cap_per_prompt"], exclude_prompts=ctx.held_out_prompts)
        info = {"round": r, "step": loop.step_offset, "levels": levels,
                "prompts": {b.task: b.prompts for b in baselines}, "k": ei["k"],
                "pass_at_k": {b.task: b.pass_at_k for b in baselines},
                "sample_pass_rate": {b.task: b.sample_rate for b in baselines},
                "kept": kept, "train_rows": len(rows), "removed": dict(removed),
                "sample_s": round(time.monotonic() - t0, 2), "record": str(folder.relative_to(loop.output))}
        rounds.append(info)
        if not rows:  # under a curriculum the level may have risen too far: the rule can bring it back
            info["steps"], info["curriculum"] = 0, _update_curriculum(ctx)
            ctx.say(f"round {r}: pass@{ei['k']} {_fmt_rates(info['pass_at_k'])} · kept nothing · no training")
            if not any(c["new_level"] != c["level"] for c in info["curriculum"].values()):
                loop.state.stopped_because = f"round {r} kept no passing samples: nothing left to reinforce"
                return None
            continue
        steps = min(ei["steps_per_round"], ctx.budget - loop.step_offset)
        loop.entry_extra = {"phase": "expert_iteration", "round": r, "levels": levels}
        overrides = {"seed": recipe.seed + r, "data_seed": recipe.seed + r, "warmup_steps": ei["warmup_steps"]}
        if ei["lr"]:
            overrides["learning_rate"] = ei["lr"]
        _before_training(ctx)
        trainer = make_trainer(loop, ctx.model, ctx.tokenizer, rows, ckpt_dir=ctx.ckpt_dir, max_steps=steps,
                               **overrides)
        trainer.train()
        loop.step_offset += trainer.state.global_step
        info["steps"] = trainer.state.global_step
        info["held_out"] = _held_out(ctx)
        info["curriculum"] = _update_curriculum(ctx)
        prompts = sum(info["prompts"].values())
        ctx.say(f"round {r}: {prompts} prompts x {ei['k']} samples · pass@{ei['k']} "
                f"{_fmt_rates(info['pass_at_k'])} · kept {info['kept']} (training on {len(rows)}) · "
                f"trained {info['steps']} steps · held-out {_fmt_rates(info['held_out'])}")
        if loop.state.stopped_because:
            return None
    if loop.state.stopped_because is None and loop.step_offset < ctx.budget:
        loop.state.stopped_because = f"round budget of {ei['rounds']} rounds used"
    return None


# -- GRPO -------------------------------------------------------------------------------

def checker_rewards(tasks: Mapping[str, Any]) -> tuple[Any, Any]:
    """TRL reward functions over dataset columns `task`, `fields` (JSON) and `level`:
    the task checker's verdict score, and a format reward (1.0 for a non-empty extracted answer)."""
    from evalkit.core.extract import cut_at_stop
    from evalkit.core.scoring import score

    cache: dict[tuple[str, str, Any], Any] = {}

    def example(name: str, fields: str, level: Any) -> Any:
        key = (name, fields, level)
        if key not in cache:
            cache[key] = tasks[name].example(json.loads(fields), level)
        return cache[key]

    def checker_score(prompts, completions, task, fields, level, **kwargs):  # noqa: ARG001 - TRL's signature
        out = []
        for text, name, f, lv in zip(completions, task, fields, level):
            t = tasks[name]
            out.append(score(t, example(name, f, lv), cut_at_stop(text, t.generation.stop)).verdict.score)
        return out

    def answer_format(prompts, completions, task, **kwargs):  # noqa: ARG001
        out = []
        for text, name in zip(completions, task):
            t = tasks[name]
            try:
                answer = t.extract(cut_at_stop(text, t.generation.stop))
            except Exception:  # noqa: BLE001 - a crashing extractor is a malformed answer
                answer = ""
            out.append(1.0 if isinstance(answer, str) and answer.strip() else 0.0)
        return out

    return checker_score, answer_format


def _grpo_dataset(ctx: _Run, levels: Mapping[str, int | None], n: int, seed: int) -> Any:
    from datasets import Dataset

    items = []
    for task in ctx.train_tasks():
        for ex in task.examples("train", n=n, seed=seed, level=levels.get(task.name)):
            if _norm(ex.prompt) not in ctx.held_out_prompts:
                items.append({"prompt": ex.prompt, "task": task.name, "level": ex.level,
                              "fields": json.dumps(dict(ex.fields), sort_keys=True)})
    random.Random(seed).shuffle(items)
    return Dataset.from_list(items)


def _grpo(ctx: _Run) -> bool | None:
    """TRL GRPO in segments (one per eval.every steps under a curriculum, else one). Returns `met`."""
    try:
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as exc:
        raise ConfigError(f"mode: grpo needs TRL (pip install 'evalkit[rl]'): {exc}", file=ctx.recipe.file,
                          field="mode") from None
    loop, recipe, g = ctx.loop, ctx.recipe, ctx.recipe.grpo
    k = g["num_generations"]
    levels = ctx.levels()
    record = sample(ctx, levels, n=max(32, g["prompts_per_step"]), k=k, temperature=g["temperature"], top_p=1.0,
                    seed=recipe.seed * 1000, run_dir=loop.output / "rounds" / "baseline")
    baselines = _baselines(record, levels, k)
    loop.training_meta["baseline"] = [b.__dict__ for b in baselines]
    nothing = judge_baseline(baselines, "GRPO", file=recipe.file, curriculum=bool(ctx.curriculum))
    if nothing:
        loop.state.stopped_because = nothing
        ctx.say(nothing)
        return bool(loop.state.history[-1]["all_met"])
    tasks = {t.name: t for t in ctx.train_tasks()}
    rewards = list(checker_rewards(tasks))
    weights = [1.0, g["format_reward"]]
    if not g["format_reward"]:
        rewards, weights = rewards[:1], weights[:1]
    longest = g["max_completion_length"] or max(t.generation.max_new_tokens or 32 for t in tasks.values())
    total = min(g["steps"], ctx.budget - loop.step_offset)
    segment = recipe.eval_every if ctx.curriculum else total
    segments: list[dict[str, Any]] = loop.training_meta.setdefault("rounds", [])
    log: list[dict[str, Any]] = loop.training_meta.setdefault("rewards", [])

    class RewardLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                step = loop.step_offset + state.global_step
                log.append({"step": step, "reward": float(logs["reward"])})
                if loop.state.history and loop.state.history[-1]["step"] == step:
                    loop.state.history[-1]["reward"] = float(logs["reward"])

    done, i = 0, 0
    while done < total and loop.state.stopped_because is None and not loop.out_of_time():
        i += 1
        steps, levels = min(segment, total - done), ctx.levels()
        loop.entry_extra = {"phase": "grpo", "round": i, "levels": levels}
        dataset = _grpo_dataset(ctx, levels, steps * g["prompts_per_step"], recipe.seed * 1000 + i)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TRL passes transformers' renamed options
            args = training_arguments(
                recipe, ctx.ckpt_dir, steps, cls=GRPOConfig, num_generations=k,
                per_device_train_batch_size=g["prompts_per_step"] * k, gradient_accumulation_steps=1,
                learning_rate=g["lr"], beta=g["beta"], temperature=g["temperature"],
                max_completion_length=longest, warmup_steps=g["warmup_steps"], logging_steps=1,
                gradient_checkpointing=False, reward_weights=weights, seed=recipe.seed + i,
                data_seed=recipe.seed + i)
            trainer = _make_trainer_class(GRPOTrainer)(model=ctx.model, reward_funcs=rewards, args=args,
                                                      train_dataset=dataset, processing_class=ctx.tokenizer)
        attach(trainer, loop)
        trainer.add_callback(RewardLog())
        _before_training(ctx)
        first = len(log)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            trainer.train()
        loop.step_offset += trainer.state.global_step
        done += trainer.state.global_step
        seg_rewards = [x["reward"] for x in log[first:]]
        info = {"round": i, "step": loop.step_offset, "levels": levels, "steps": trainer.state.global_step,
                "prompts": len(dataset), "reward_mean": round(sum(seg_rewards) / len(seg_rewards), 6)
                if seg_rewards else None, "held_out": _held_out(ctx)}
        info["curriculum"] = _update_curriculum(ctx)
        segments.append(info)
        ctx.say(f"grpo segment {i}: {info['steps']} steps · mean reward {info['reward_mean']} · "
                f"held-out {_fmt_rates(info['held_out'])}")
    if loop.state.stopped_because is None and done >= total and total < ctx.budget - (loop.step_offset - done):
        loop.state.stopped_because = f"grpo.steps budget of {g['steps']} steps used"
    return None


__all__ = ["run_verifier", "select_samples", "judge_baseline", "build_curriculum", "checker_rewards",
           "Baseline", "BaselineRefused", "sample"]
