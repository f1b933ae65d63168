"""Training data for fine-tuning: sources, mixture, quality filters, contamination guard.

Sources are task generators (their train split, with reference answers, at a level mix)
and prompt/completion JSONL files. Each filter counts what it removed; the contamination
guard proves no eval example (by id or by prompt in `normalize_prompt` form, the form
`evalkit.overlap` compares) is left in the training data; it compares the raw prompt (`Row.prompt`)
in chat mode too, as evaluation's `overlap` does. Tokenisation (`tokenize_rows`) builds each row as
evaluation builds its prompt and puts the loss on the answer and the token that ends it only:

    input_ids = encode_prompt(tokenizer, prompt)  +  answer ids  +  the end token
    labels    = -100 for every prompt token       +  answer ids  +  the end token

- The prompt ids are evaluation's, from the same function (`models.hf_chat.encode_prompt`): raw text
  with the tokenizer's special tokens (BOS); in chat mode the chat template rendered with the
  assistant's opening (`render_chat`), tokenized without adding any.
- The answer ids are the ones that, generated after exactly those prompt ids, spell the answer. BPE
  tokenizes text in context, so: tokenize prompt text + answer together; when the prompt's ids are a
  prefix of that, the rest are the answer ids (the in-context tokenization: no spurious leading space
  from a SentencePiece tokenizer); when a token merges across the boundary (a prompt ending in a space
  before a digit, in byte-level BPE), the prompt's ids are fixed, so the answer is tokenized alone
  (which byte-level BPE decodes back exactly).
- The end token: raw mode, the EOS; chat mode, what the template writes after the answer up to and
  including the first end-of-turn token (`<|im_end|>` in ChatML; the EOS when the template ends turns
  with it), which is where generation stops; what follows it (ChatML's newline) is never generated and
  is not trained. The answer text is the template's too, so a template that opens the turn with a
  newline the generation prompt leaves out (`...assistant` then `\n46<|im_end|>`) trains that newline.
- Chat mode (a recipe's `eval.chat: true`): rows from tasks carry `Task.messages(ex)` (system message,
  few-shot turns, question), the form evaluation sends; rows from JSONL sources, which name no task, are
  one user message holding the prompt, with no system message; sampled rows (expert iteration) carry
  the messages the model was sent.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from evalkit.core.chat import Message, as_messages, message
from evalkit.core.example import Example, normalize_prompt
from evalkit.core.scoring import score
from evalkit.errors import ConfigError
from evalkit.train.recipe import Recipe

# normalize_prompt lives in core/example.py (overlap() uses it too); it is re-exported here for the
# training modes that compare prompts with held-out ones.
__all__ = ["CompletionCollator", "ContaminationGuard", "DataReport", "Row", "answer_text", "build_training_rows",
           "encode_row", "normalize_prompt", "tokenize_rows"]


@dataclass(frozen=True)
class Row:
    """One training row. `prompt` is the raw prompt (what filters and the contamination guard compare);
    `messages` its chat form when it has one (chat mode without it: one user message holding `prompt`)."""

    prompt: str
    completion: str
    source: str
    example_id: str | None = None
    messages: tuple[Message, ...] | None = field(default=None, compare=False)

    def chat_messages(self) -> list[Message]:
        """The messages chat mode sends for this row."""
        return list(self.messages) if self.messages else [message("user", self.prompt)]


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
            messages = tuple(task.messages(ex)) if recipe.eval_chat else None
            rows.append(Row(ex.prompt, ex.reference or "", src["name"], ex.id, messages))
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


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _continuation_ids(tokenizer: Any, prompt_text: str, text: str, prompt: Sequence[int] | None = None,
                      joint: Sequence[int] | None = None) -> list[int]:
    """The ids that, after `prompt_text`'s own ids, spell `text`: the in-context tokenization when the
    prompt's ids are a prefix of it, else (a token merges across the boundary) `text` tokenized alone.
    `prompt` / `joint`: the ids of `prompt_text` and of `prompt_text + text` when already tokenized."""
    alone = list(prompt) if prompt is not None else _ids(tokenizer, prompt_text)
    both = list(joint) if joint is not None else _ids(tokenizer, prompt_text + text)
    return both[len(alone):] if both[:len(alone)] == alone else _ids(tokenizer, text)


def _end_tokens(tokenizer: Any) -> list[str]:
    """The texts of the tokens that end an assistant turn: end-of-turn tokens, then the EOS."""
    from evalkit.models.hf_chat import end_of_turn_ids

    ends = [tokenizer.convert_ids_to_tokens(i) for i in sorted(end_of_turn_ids(tokenizer))]
    eos = getattr(tokenizer, "eos_token", None)
    return ends + ([eos] if isinstance(eos, str) and eos not in ends else [])


def answer_text(tokenizer: Any, messages: Sequence[Message], completion: str, prompt_text: str) -> str:
    """What the assistant's turn adds after `prompt_text` (`render_chat` of `messages`) in the chat
    template, up to and including the first token that ends the turn: `completion` and the end-of-turn
    token, with any text the template puts around the answer. A template that renders the conversation
    differently once it holds an answer gets `completion` and the first end token instead."""
    ends = _end_tokens(tokenizer)
    if not ends:
        raise ValueError("the tokenizer has no end-of-turn or EOS token to end a trained answer")
    full = tokenizer.apply_chat_template([*(dict(m) for m in messages), {"role": "assistant", "content": completion}],
                                         tokenize=False, add_generation_prompt=False)
    if isinstance(full, str) and full.startswith(prompt_text):
        turn = full[len(prompt_text):]
        start = turn.find(completion)
        found = [(turn.find(e, start + len(completion)), e) for e in ends] if start >= 0 else []
        found = [(i, e) for i, e in found if i >= 0]
        if found:
            i, end = min(found)
            return turn[:i + len(end)]
    return completion + ends[0]


def encode_row(row: Row, tokenizer: Any, chat: bool = False) -> dict[str, list[int]]:
    """A row's input ids and labels (see the module docstring): evaluation's prompt ids (labels -100),
    then the answer ids and the end token (learned)."""
    from evalkit.models.hf_chat import encode_prompt, render_chat

    if chat:
        messages = as_messages(row.chat_messages())
        prompt_ids = encode_prompt(tokenizer, messages)
        prompt_text = render_chat(tokenizer, messages)
        target = _continuation_ids(tokenizer, prompt_text, answer_text(tokenizer, messages, row.completion,
                                                                       prompt_text))
    else:
        prompt_ids = encode_prompt(tokenizer, row.prompt)
        target = _continuation_ids(tokenizer, row.prompt, row.completion) + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + target, "labels": [-100] * len(prompt_ids) + target}


def tokenize_rows(rows: Sequence[Row], tokenizer: Any, chat: bool = False) -> list[dict[str, list[int]]]:
    """Token ids with labels on the completion and the token that ends it only (`encode_row`); `chat`:
    the rows in their chat form, rendered by the tokenizer's chat template as evaluation renders them.
    Raw rows are tokenized in three batched calls (each row's ids are still `encode_row`'s): finetune/addition.yaml's
    60,000 rows in about 2 s (`token_ids`: 5.3 s through the tokenizer's own call)."""
    from evalkit.models.hf_chat import encode_prompts, token_ids

    if chat or not rows:
        return [encode_row(r, tokenizer, chat) for r in rows]
    prompts = [r.prompt for r in rows]
    prompt_ids = encode_prompts(tokenizer, prompts)  # what evaluation feeds
    bare = token_ids(tokenizer, prompts, special=False)
    joint = token_ids(tokenizer, [r.prompt + r.completion for r in rows], special=False)
    eos = tokenizer.eos_token_id
    out = []
    for row, ids, prompt, whole in zip(rows, prompt_ids, bare, joint):
        target = _continuation_ids(tokenizer, row.prompt, row.completion, prompt, whole) + [eos]
        out.append({"input_ids": ids + target, "labels": [-100] * len(ids) + target})
    return out


class CompletionCollator:
    """Right-pads a batch; padded label positions are -100 (no loss)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        pads = [width - len(b["input_ids"]) for b in batch]
        # One tensor per field from padded lists: a tensor per row costs more than the step's data (7 ms a batch).
        ids = [list(b["input_ids"]) + [self.pad_id] * p for b, p in zip(batch, pads)]
        labels = [list(b["labels"]) + [-100] * p for b, p in zip(batch, pads)]
        mask = [[1] * (width - p) + [0] * p for p in pads]
        return {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long),
                "attention_mask": torch.tensor(mask, dtype=torch.long)}
