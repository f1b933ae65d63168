"""Measuring a finished trial: what it cost (parameters, tokens, FLOPs, wall time) and how it scored.

`measure_trial` writes `trials/<name>/trial.json`; `trial_result` is a finished trial as the summary
sees it; `finished_trial` reads one found on resume (and refuses it when its configuration changed).

The compute estimate (what `trial.json` and the summary report):
    params    every parameter of the exported model, counted from its safetensors headers
              (embeddings included; a LoRA model is counted merged, i.e. base + adapter)
    trainable the parameters that were trained: the LoRA adapter's (from a checkpoint) or all
    tokens    steps trained × rows per step (batch × gradient accumulation) × mean tokens per
              training row (prompt with BOS + completion + EOS, as tokenised for training; padding
              is not counted). Steps are the trial's last step, so compute is everything the trial
              spent, although its record is the best evaluation's.
    flops     (4 × params + 2 × trainable) × tokens: forward 2N, backward 2N for activations and 2
              per trained parameter for weight gradients — 6 × params × tokens for full fine-tuning
              (Kaplan et al. 2020). Evaluation (generation) is not counted; wall time includes it.
    wall_s    the fine-tune loop's own clock (training and evaluations, summed over resumes).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError, EvalkitError

TRIAL_FILE = "trial.json"


def safetensors_numel(path: Path) -> int:
    """Parameters in a safetensors file, from its JSON header alone (no tensors are read)."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def count_params(folder: Path) -> int:
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise EvalkitError(f"no safetensors weights in {folder}")
    return sum(safetensors_numel(f) for f in files)


def training_flops(params: int, trainable: int, tokens: float) -> float:
    """(4 N + 2 N_trainable) × tokens; 6 N × tokens for full fine-tuning. See the module docstring."""
    return (4 * params + 2 * trainable) * tokens


def mean_tokens_per_row(recipe: Any, registry: Any, tokenizer_dir: Path) -> float:
    """Mean tokens per training row, rebuilding the trial's rows exactly as the fine-tune loop does."""
    from transformers import AutoTokenizer

    from evalkit.train.data import build_training_rows

    eval_examples = [ex for t in recipe.targets for ex in registry.get(t.task).examples(
        "eval", n=t.n or recipe.eval_n, seed=recipe.eval_seed, level=t.level)]
    rows, _ = build_training_rows(recipe, registry, eval_examples, count_tokens=lambda s: len(s) + 1)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    prompts = tok([r.prompt for r in rows], add_special_tokens=True)["input_ids"]
    completions = tok([r.completion for r in rows], add_special_tokens=False)["input_ids"]
    return sum(len(p) + len(c) + 1 for p, c in zip(prompts, completions)) / len(rows)  # + 1: EOS


def config_hash(recipe_path: Path, overrides: dict[str, Any]) -> str:
    """The trial's recipe after overrides (thread count aside): a changed trial is never taken as finished."""
    from evalkit.train.recipe import load_recipe

    raw = json.loads(json.dumps(load_recipe(recipe_path, overrides).raw, default=str))
    (raw.get("train") or {}).pop("threads", None)
    raw.pop("output", None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


def targets_met(history: list[dict[str, Any]], confirm: int) -> bool:
    run = 0
    for h in history:
        run = run + 1 if h.get("all_met") else 0
    return run >= confirm


def measure_trial(folder: Path, recipe_path: Path, overrides: dict[str, Any], registry: Any) -> dict[str, Any]:
    """The compute estimate of a finished trial folder (see the module docstring); writes trial.json."""
    from evalkit.run.record import atomic_write, load_record
    from evalkit.train.recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    record = load_record(folder)
    training = record.data["meta"]["training"]
    history = training["history"]
    params = count_params(folder / "model")
    trainable = params
    if recipe.train.get("lora"):
        adapters = sorted(folder.glob("checkpoints/checkpoint-*/adapter_model.safetensors"))
        if adapters:
            trainable = safetensors_numel(adapters[-1])
    steps = max(h["step"] for h in history)
    rows_per_step = recipe.train["batch_size"] * recipe.train["gradient_accumulation"]
    tok_dir = folder / "tokenizer" if (folder / "tokenizer").is_dir() else folder / "model"
    # The verifier-only modes train on generated samples, not rows: no token estimate (cost: wall_s).
    sft = getattr(recipe, "mode", "sft") == "sft"
    per_row = mean_tokens_per_row(recipe, registry, tok_dir) if sft else None
    tokens = steps * rows_per_step * per_row if per_row is not None else None
    env = record.data.get("environment") or {}
    info = {"config_hash": config_hash(recipe_path, overrides), "params": params, "trainable_params": trainable,
            "steps": steps, "rows_per_step": rows_per_step,
            "mean_tokens_per_row": None if per_row is None else round(per_row, 3),
            "tokens": None if tokens is None else round(tokens),
            "flops": None if tokens is None else training_flops(params, trainable, tokens),
            "wall_s": history[-1].get("wall_s") or 0.0, "threads": recipe.train.get("threads") or env.get("threads"),
            "device": env.get("device"), "best_step": training.get("best_step"),
            "stopped_because": training.get("stopped_because"),
            "targets_met": targets_met(history, recipe.confirm), "finished_at": record.data.get("finished_at")}
    atomic_write(folder / TRIAL_FILE, json.dumps(info, indent=1) + "\n")
    return info


def trial_result(folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    """A finished trial for the summary: its trial.json plus each task's rate and interval from its record."""
    from evalkit.run.record import load_record

    record = load_record(folder)
    targets = record.data["meta"]["training"].get("targets") or {}
    rates = {}
    for t in record.tasks:
        tgt = targets.get(t["name"], {})
        on = tgt.get("on", "rate")
        target = tgt.get("target", t.get("target"))
        measured = t["low"] if on == "lower_bound" else t["rate"]
        rates[t["name"]] = {"rate": t["rate"], "low": t["low"], "high": t["high"], "passes": t["passes"],
                            "n": t["n_samples"], "target": target, "on": on,
                            "met": None if target is None else measured >= target}
    return {"status": "done", **info, "rates": rates}


def finished_trial(folder: Path, recipe_path: Path, plan: Any, registry: Any, exp_file: Path) -> dict[str, Any]:
    """A trial found finished on resume: never re-run, but refused when its configuration has changed."""
    info_file = folder / TRIAL_FILE
    if info_file.is_file():
        info = json.loads(info_file.read_text(encoding="utf-8"))
        now = config_hash(recipe_path, plan.overrides)
        if info.get("config_hash") != now:
            raise ConfigError(f"trial {plan.name!r} finished with a different configuration than the experiment now "
                              "gives it; pass --force to start over (or rename the trial)", file=exp_file,
                              field=f"trials.{plan.name}")
    else:  # killed between the record and trial.json: measure now, without training again
        info = measure_trial(folder, recipe_path, plan.overrides, registry)
    return trial_result(folder, info)


__all__ = ["TRIAL_FILE", "config_hash", "count_params", "finished_trial", "mean_tokens_per_row",
           "measure_trial", "safetensors_numel", "targets_met", "trial_result", "training_flops"]
