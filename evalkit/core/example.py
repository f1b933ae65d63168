"""Examples, their identity (content-hash ids and splits), prompt normalisation, and overlap reports."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "eval")


def canonical(fields: Mapping[str, Any]) -> str:
    """The canonical JSON text of an example's fields (sorted keys, no spaces)."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def as_identity(identity: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """Check an `identity=` option: None (every field defines the example) or the names of the fields
    that do, e.g. `("question",)`; a single name may be given as a string.

    Raises:
        ValueError: no name, a name twice, or a name that is not a non-empty string.
    """
    if identity is None:
        return None
    names = (identity,) if isinstance(identity, str) else tuple(identity)
    if not names:
        raise ValueError("identity must name at least one field (or be None: all fields)")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"identity must be field names, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"identity names a field twice: {list(names)}")
    return names


def identity_fields(task_name: str, fields: Mapping[str, Any],
                    identity: tuple[str, ...] | None = None) -> Mapping[str, Any]:
    """The fields that define an example: all of them, or the ones `identity` names.

    Raises:
        ValueError: `identity` names a field the example does not have.
    """
    if identity is None:
        return fields
    for name in identity:
        if name not in fields:
            raise ValueError(f"task {task_name!r}: identity field {name!r} is not a field of the example "
                             f"(its fields: {', '.join(map(str, fields)) or 'none'})")
    return {name: fields[name] for name in identity}


def content_hash(task_name: str, fields: Mapping[str, Any], identity: tuple[str, ...] | None = None) -> str:
    """sha256 of the task name and the canonical JSON of the example's identity fields (default: all)."""
    key = canonical(identity_fields(task_name, fields, identity))
    return hashlib.sha256(f"{task_name}\0{key}".encode()).hexdigest()


def example_id(task_name: str, fields: Mapping[str, Any], identity: tuple[str, ...] | None = None) -> str:
    """A stable id: the first 16 hex digits of the content hash.

    Two examples with equal identity fields have one id: they are the same example.
    """
    return id_from_hash(content_hash(task_name, fields, identity))


def id_from_hash(digest: str) -> str:
    """`example_id` from the example's `content_hash` (a generator that also needs the split hashes once)."""
    return digest[:16]


def split_of(task_name: str, fields: Mapping[str, Any], eval_fraction: float,
             identity: tuple[str, ...] | None = None) -> str:
    """Which split an example belongs to, decided by its identity fields (default: all fields) alone.

    Because the split is a function of the content, the same example can never be in
    both splits: train and eval are disjoint by construction, whatever the seed. Fields
    outside `identity` (a per-example seed, metadata) do not move an example between splits.
    """
    if not 0.0 < eval_fraction < 1.0:  # every example on one side: nothing to hash
        return split_by_hash("", eval_fraction)
    return split_by_hash(content_hash(task_name, fields, identity), eval_fraction)


def split_by_hash(digest: str, eval_fraction: float) -> str:
    """`split_of` from the example's `content_hash` (a generator that also needs the id hashes once)."""
    if eval_fraction >= 1.0:
        return "eval"
    if eval_fraction <= 0.0:
        return "train"
    # An independent slice of the hash (the id uses the first 16 digits).
    h = int(digest[16:32], 16) / 16**16
    return "eval" if h < eval_fraction else "train"


def normalize_prompt(text: str) -> str:
    """The one form in which evalkit compares prompts: `overlap()`, the fine-tuning contamination guard,
    the near-duplicate filter and the verifier modes' held-out prompts all use it.

    Unicode NFKC (full-width digits, ligatures, non-breaking spaces become their plain forms), casefold,
    every run of whitespace one space, stripped. Punctuation and symbols are kept: in checkable tasks they
    carry meaning (`12+34=` and `12*34=` are different problems), so deleting them would make the guard
    drop distinct training rows and `overlap()` report false matches. A copy reformatted only in spacing,
    case or Unicode form is caught; one that adds or drops punctuation is not.
    """
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(text.split())


@dataclass(frozen=True, eq=False)
class Example:
    """One example of a task.

    Attributes:
        id: stable id from the content hash (task name + the identity fields: all, unless the task
            names them with `identity=`).
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
    """What two example sets share: ids (same identity) and prompts equal under `normalize_prompt`."""

    ids: tuple[str, ...]
    prompts: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.ids and not self.prompts

    def __len__(self) -> int:
        return len(set(self.ids)) + len(set(self.prompts))


def overlap(a: Iterable[Example], b: Iterable[Example]) -> Overlap:
    """Report the examples and prompts two sets share (e.g. train vs eval).

    Examples are the same when their ids are (same task and identity fields). Prompts are compared
    in `normalize_prompt` form, the form the fine-tuning contamination guard excludes, so what this
    reports is exactly what training would drop.
    """
    a, b = list(a), list(b)
    ids_b = {(e.task, e.id) for e in b}
    ids = sorted({e.id for e in a if (e.task, e.id) in ids_b})
    prompts_b = {normalize_prompt(e.prompt) for e in b}
    prompts = sorted({e.prompt for e in a if normalize_prompt(e.prompt) in prompts_b})
    return Overlap(tuple(ids), tuple(prompts))
