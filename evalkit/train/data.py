"""Training data for fine-tuning: sources, mixture, quality filters, contamination guard.

Sources are task generators (their train split, with reference answers, at a level mix)
and prompt/completion JSONL files. Each filter counts what it removed; the contamination
guard proves no eval example (by id or by prompt in `normalize_prompt` form, the form
`evalkit.overlap` compares) is left in the training data. Tokenisation puts the loss on the
completion only.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from evalkit.core.example import Example, normalize_prompt
from evalkit.core.scoring import score
from evalkit.errors import ConfigError
from evalkit.train.recipe import Recipe

# normalize_prompt lives in core/example.py (overlap() uses it too); it is re-exported here for the
# training modes that compare prompts with held-out ones.
__all__ = ["CompletionCollator", "ContaminationGuard", "DataReport", "Row", "build_training_rows",
           "normalize_prompt", "tokenize_rows"]


@dataclass(frozen=True)
class Row:
    prompt: str
    completion: str
    source: str
    example_id: str | None = None


@dataclass
class DataReport:
    """What each step did, per source: produced, removed by each filter, drawn into the mixture."""

    produced: Counter = field(default_factory=Counter)
    removed: dict[str, Counter] = field(default_factory=dict)
    drawn: Counter = field(default_factory=Counter)
    contamination_found: int = 0
    contamination_left: int = 0

    def remove(self, filter_name: str, source: str, count: int = 1) -> None:
        self.removed.setdefault(filter_name, Counter())[source] += count

    def to_dict(self) -> dict[str, Any]:
        return {"produced": dict(self.produced), "removed": {k: dict(v) for k, v in self.removed.items()},
                "drawn": dict(self.drawn), "contamination_found": self.contamination_found,
                "contamination_left": self.contamination_left}


class ContaminationGuard:
    """What training must never see: the eval examples' ids, and their prompts in `normalize_prompt`
    form (the form `evalkit.overlap` reports), so a row is excluded exactly when `overlap` would call
    its prompt or its example shared with the eval set."""

    def __init__(self, eval_examples: Iterable[Example]):
        examples = list(eval_examples)
        self.ids = frozenset(e.id for e in examples)
        self.prompts = frozenset(normalize_prompt(e.prompt) for e in examples)

    def excludes(self, prompt: str, example_id: str | None = None) -> bool:
        """Whether a training row with this prompt (and example id, if it came from a task) is eval data."""
        return (example_id is not None and example_id in self.ids) or normalize_prompt(prompt) in self.prompts


def _near_key(row: Row) -> str:
    """The near-duplicate filter's key for a training row: prompt and completion casefolded, every run of
    non-word characters one space. Deliberately looser than `normalize_prompt` (punctuation is dropped):
    it only thins the training data, and is never used to compare training data with eval data."""
    return re.sub(r"[^\w]+", " ", (row.prompt + "\x00" + row.completion).casefold()).strip()


def _task_rows(src: dict[str, Any], task: Any, recipe: Recipe, verify: bool, report: DataReport) -> list[Row]:
    if not task.has_reference:
        raise ConfigError(f"task {task.name!r} has no reference solver, so it cannot supply SFT data "
                          "(use a JSONL source, or a verifier-only mode)", file=recipe.file, field="data.sources")
    n = src.get("n", recipe.size or 2000)
    if task.levels:
        levels = src.get("levels") or {str(task.spec.default_level): 1.0}
    else:
        levels = {"": 1.0}
    total_w = sum(levels.values())
    rows: list[Row] = []
    for level_key, w in sorted(levels.items()):
        level = int(level_key) if level_key not in ("", "None") else None
        count = max(1, round(n * w / total_w))
        examples: Sequence[Example] = task.examples("train", n=count, seed=recipe.seed, level=level)
        for ex in examples:
            report.produced[src["name"]] += 1
            if verify and not score(task, ex, ex.reference or "").verdict.passed:
                report.remove("reference fails checker", src["name"])
                continue
            rows.append(Row(ex.prompt, ex.reference or "", src["name"], ex.id))
    return rows


def _jsonl_rows(src: dict[str, Any], report: DataReport) -> list[Row]:
    rows = []
    with open(src["jsonl"], encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            report.produced[src["name"]] += 1
            try:
                data = json.loads(line)
                prompt, completion = data["prompt"], data["completion"]
                if not isinstance(prompt, str) or not isinstance(completion, str):
                    raise TypeError
            except (json.JSONDecodeError, KeyError, TypeError):
                report.remove("malformed", src["name"])
                continue
            rows.append(Row(prompt, completion, src["name"]))
    return rows


def build_training_rows(recipe: Recipe, registry: Any, eval_examples: Sequence[Example],
                        count_tokens: Any = None) -> tuple[list[Row], DataReport]:
    """All training rows after filters, mixture and the contamination guard.

    Args:
        registry: where task sources are looked up (a discovery.Registry).
        eval_examples: every example the evaluations will use (for the contamination guard).
        count_tokens: `text -> int`, for the max_tokens filter (skipped when None).
    """
    report = DataReport()
    f = recipe.filters
    pools: dict[str, list[Row]] = {}
    for src in recipe.sources:
        rows = (_task_rows(src, registry.get(src["task"]), recipe, f["verify_reference"], report)
                if "task" in src else _jsonl_rows(src, report))
        kept = []
        for r in rows:
            if len(r.prompt) + len(r.completion) < f["min_chars"] or not r.completion:
                report.remove("too short", r.source)
            elif f["max_tokens"] and count_tokens and count_tokens(r.prompt + r.completion) + 2 > f["max_tokens"]:
                report.remove("too long", r.source)
            else:
                kept.append(r)
        pools[src["name"]] = kept
    # Deduplicate across all sources, first occurrence wins (sources in recipe order).
    seen_exact: set[tuple[str, str]] = set()
    seen_near: set[str] = set()
    for name, rows in pools.items():
        kept = []
        for r in rows:
            key = (r.prompt, r.completion)
            near = _near_key(r)
            if f["dedupe"] and key in seen_exact:
                report.remove("exact duplicate", name)
            elif f["near_dedupe"] and near in seen_near:
                report.remove("near duplicate", name)
            else:
                seen_exact.add(key)
                seen_near.add(near)
                kept.append(r)
        pools[name] = kept
    # Contamination guard: no eval example (same id) or eval prompt (normalised) may be trained on.
    guard = ContaminationGuard(eval_examples)
    for name, rows in pools.items():
        clean = [r for r in rows if not guard.excludes(r.prompt, r.example_id)]
        found = len(rows) - len(clean)
        if found:
            report.contamination_found += found
            if recipe.contamination == "fail":
                raise ConfigError(f"{found} training rows of source {name!r} match eval examples or prompts",
                                  file=recipe.file, field="data.contamination")
            report.remove("contamination (eval overlap)", name, found)
        pools[name] = clean
    rows = _mix(recipe, pools, report)
    report.contamination_left = sum(1 for r in rows if guard.excludes(r.prompt, r.example_id))
    if report.contamination_left:  # cannot happen: the guard above removed them; never train on eval data
        raise RuntimeError("contamination guard failed")
    if not rows:
        raise ConfigError("no training rows left after filtering", file=recipe.file, field="data")
    return rows, report


def _mix(recipe: Recipe, pools: dict[str, list[Row]], report: DataReport) -> list[Row]:
    """Draw `size` rows from the pools by weight; a pool smaller than its share is repeated."""
    weights = {s["name"]: s.get("weight", 1.0) for s in recipe.sources if pools.get(s["name"])}
    size = recipe.size or sum(len(p) for p in pools.values())
    rng = random.Random(recipe.seed)
    orders = {name: rng.sample(pools[name], len(pools[name])) for name in weights}
    cursors = dict.fromkeys(weights, 0)
    names, ws = list(weights), list(weights.values())
    out = []
    for _ in range(size):
        name = rng.choices(names, ws)[0]
        pool = orders[name]
        out.append(pool[cursors[name] % len(pool)])
        cursors[name] += 1
        report.drawn[name] += 1
    return out


def tokenize_rows(rows: Sequence[Row], tokenizer: Any) -> list[dict[str, list[int]]]:
    """Token ids with labels on the completion (and the EOS that ends it) only."""
    out = []
    eos = tokenizer.eos_token_id
    for r in rows:
        p = tokenizer(r.prompt, add_special_tokens=True)["input_ids"]
        c = tokenizer(r.completion, add_special_tokens=False)["input_ids"] + [eos]
        out.append({"input_ids": p + c, "labels": [-100] * len(p) + c})
    return out


class CompletionCollator:
    """Right-pads a batch; padded label positions are -100 (no loss)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
