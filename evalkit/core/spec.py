"""What `@task` records: the task's declaration (name, version, target, levels, generation and self-test
settings, its chat form) as frozen dataclasses, and the decorator itself. `evalkit.core.task.Task` is the
loaded task built from a declaration; `evalkit.core.task` re-exports everything here."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from evalkit.core.chat import ChatSpec, chat_spec
from evalkit.core.example import as_identity

TASK_MARKER = "__evalkit_task__"
_T = TypeVar("_T")


@dataclass(frozen=True)
class GenerationConfig:
    """How a model should generate for a task.

    `max_new_tokens=None` lets the runner size it from the longest reference answer. `chat`: the run
    prompts in the chat form (`Task.messages`); it is a run setting, never a task's.
    """

    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ("\n",)
    temperature: float = 0.0
    top_p: float = 1.0
    chat: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The settings as journal keys and records hold them (`chat` only when on: raw keys never change)."""
        return {"max_new_tokens": self.max_new_tokens, "stop": list(self.stop), "temperature": self.temperature,
                "top_p": self.top_p, **({"chat": True} if self.chat else {})}


@dataclass(frozen=True)
class SelftestSpec:
    """What the self-test may treat as equivalent to the reference.

    Attributes:
        normalize: normalisations under which a corrupted answer counts as the same answer
            (any of "strip", "casefold", "whitespace", "punctuation", "json").
        skip: corruption kinds that the task's checker deliberately accepts
            ("digit_edit", "char_edit", "truncate", "append"). Skipping weakens the test; say why.
    """

    normalize: tuple[str, ...] = ("strip",)
    skip: tuple[str, ...] = ()
    chat_skip: tuple[str, ...] = ()  # kinds skipped in the chat pass only (YAML selftest.chat_skip)


@dataclass(frozen=True)
class TaskSpec:
    """What the @task decorator records."""

    name: str
    version: int = 1
    target: float | None = None
    levels: tuple[int, ...] = ()
    default_level: int | None = None
    tags: tuple[str, ...] = ()
    description: str = ""
    generation: GenerationConfig = GenerationConfig()
    eval_fraction: float = 0.5
    selftest: SelftestSpec = SelftestSpec()
    identity: tuple[str, ...] | None = None  # the fields that define an example; None: all
    chat: ChatSpec | None = None  # system message and few-shot turns of the chat form (evalkit.core.chat)


def task(
    name: str | None = None,
    *,
    version: int = 1,
    target: float | None = None,
    levels: Iterable[int] | None = None,
    default_level: int | None = None,
    tags: Sequence[str] = (),
    description: str | None = None,
    max_new_tokens: int | None = None,
    stop: Sequence[str] = ("\n",),
    eval_fraction: float | None = None,
    equivalent: Sequence[str] = ("strip",),
    selftest_skip: Sequence[str] = (),
    identity: str | Sequence[str] | None = None,
    system: str | None = None,
    fewshot: Iterable[Sequence[str] | Mapping[str, str]] = (),
    chat_stop: Sequence[str] | None = None,
    chat_max_new_tokens: int | None = None,
) -> Callable[[_T], _T]:
    """Register a class (or a zero-argument factory returning an instance) as a task.

    The decorator returns the class (or factory) itself, marked: subclass it, instantiate it,
    call its methods as usual. Everything that takes a task (`evalkit.evaluate`,
    `evalkit.load_tasks`, the self-test, `Registry`) accepts the decorated object as it is;
    `evalkit.as_task(obj)` turns it into the loaded `Task` explicitly.

    The class provides `prompt(ex)` and `check(ex, answer)`, and either `generate(rng, level)`
    (seeded generator) or `rows()` (a data source: an iterable of dicts). Optional:
    `reference(ex)` (solver or stored answer: the output a perfect model would write),
    `extract(output)` (default: cut at the first stop string, strip), `chat(ex)` (the chat form: the user
    message's text, or the whole list of messages; default: the prompt as the user message),
    `chat_extract(output)` (chat mode's; default: `extract`), and for the self-test `solutions(ex, rng)`,
    `chat_solutions(ex, rng)`, `second_opinion(ex, answer)`, `equivalent(ex, reference, candidate)`.

    Args:
        name: the task's name (default: the class name in snake case).
        version: bump it when the checker or prompts change meaning.
        target: the default pass-rate target in [0, 1].
        levels: the difficulty levels `generate` accepts.
        default_level: the level used when none is asked for (default: the middle one).
        tags: for selection by tag.
        max_new_tokens, stop: generation settings; chat_stop, chat_max_new_tokens: in chat mode (`for_chat`).
        eval_fraction: share of the example space in the eval split (default 0.5 for
            generators, 1.0 for data rows).
        equivalent: normalisations under which the self-test treats an answer as the reference.
        selftest_skip: corruption kinds the checker deliberately accepts.
        identity: the fields that define an example (its id, split, dedup), e.g. ("question",); default all.
        system, fewshot: the chat form's system message and (user, assistant) turns before the question.
    """
    chat = chat_spec(system, fewshot, chat_stop, chat_max_new_tokens)

    def decorate(obj: _T) -> _T:
        spec = TaskSpec(
            name=name or _snake(getattr(obj, "__name__", type(obj).__name__)),
            version=version,
            target=target,
            levels=tuple(levels) if levels is not None else (),
            default_level=default_level,
            tags=tuple(tags),
            description=description if description is not None else inspect.getdoc(obj) or "",
            generation=GenerationConfig(max_new_tokens=max_new_tokens, stop=tuple(stop)),
            eval_fraction=eval_fraction if eval_fraction is not None else -1.0,
            selftest=SelftestSpec(tuple(equivalent), tuple(selftest_skip)),
            identity=as_identity(identity),
            chat=chat,
        )
        setattr(obj, TASK_MARKER, spec)
        return obj

    return decorate


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


__all__ = ["TASK_MARKER", "GenerationConfig", "SelftestSpec", "TaskSpec", "task"]
