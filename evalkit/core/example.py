"""Examples, split assignment by content hash, and overlap reports."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "eval")


def canonical(fields: Mapping[str, Any]) -> str:
    """The canonical JSON text of an example's fields (sorted keys, no spaces)."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_hash(task_name: str, fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(f"{task_name}\0{canonical(fields)}".encode()).hexdigest()


def example_id(task_name: str, fields: Mapping[str, Any]) -> str:
    """A stable id: the first 16 hex digits of the content hash."""
    return content_hash(task_name, fields)[:16]


def split_of(task_name: str, fields: Mapping[str, Any], eval_fraction: float) -> str:
    """Which split an example belongs to, decided by its content alone.

    Because the split is a function of the content, the same example can never be in
    both splits: train and eval are disjoint by construction, whatever the seed.
    """
    if eval_fraction >= 1.0:
        return "eval"
    if eval_fraction <= 0.0:
        return "train"
    # An independent slice of the hash (the id uses the first 16 digits).
    h = int(content_hash(task_name, fields)[16:32], 16) / 16**16
    return "eval" if h < eval_fraction else "train"


@dataclass(frozen=True, eq=False)
class Example:
    """One example of a task.

    Attributes:
        id: stable id from the content hash (task name + fields).
        task: the task's name.
        split: "train" or "eval".
        fields: what the prompt and checker need (JSON-serialisable).
        prompt: the rendered prompt.
        reference: the reference output, if the task has a solver or a stored answer.
        level: the difficulty level it was generated at, if the task has levels.
    """

    id: str
    task: str
    split: str
    fields: Mapping[str, Any]
    prompt: str
    reference: str | None = None
    level: int | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Example) and (self.task, self.id) == (other.task, other.id)

    def __hash__(self) -> int:
        return hash((self.task, self.id))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "split": self.split,
            "level": self.level,
            "fields": dict(self.fields),
            "prompt": self.prompt,
            "reference": self.reference,
        }


@dataclass(frozen=True)
class Overlap:
    """What two example sets share: ids (same content) and identical prompts."""

    ids: tuple[str, ...]
    prompts: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.ids and not self.prompts

    def __len__(self) -> int:
        return len(set(self.ids)) + len(set(self.prompts))


def _normalise_prompt(prompt: str) -> str:
    return " ".join(prompt.split()).casefold()


def overlap(a: Iterable[Example], b: Iterable[Example]) -> Overlap:
    """Report the examples and prompts two sets share (e.g. train vs eval).

    Prompts are compared after collapsing whitespace and case, so a reformatted copy of an
    eval prompt in training data is still found.
    """
    a, b = list(a), list(b)
    ids_b = {(e.task, e.id) for e in b}
    ids = sorted({e.id for e in a if (e.task, e.id) in ids_b})
    prompts_b = {_normalise_prompt(e.prompt) for e in b}
    prompts = sorted({e.prompt for e in a if _normalise_prompt(e.prompt) in prompts_b})
    return Overlap(tuple(ids), tuple(prompts))
