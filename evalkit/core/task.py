"""The task API: a decorator that turns a small class into a checkable task, and `Task`, the loaded task.

A task knows its name and version, how to produce examples per split (a seeded
generator with difficulty levels, or rows of a data file), how to render a prompt,
its generation settings, how to extract an answer, how to check it, optionally a
reference solver, and a default target.

    @task(name="addition", version=1, target=0.95, levels=range(1, 6))
    class Addition:
        def generate(self, rng, level):
            return {"a": rng.randrange(10**level), "b": rng.randrange(10**level)}
        def prompt(self, ex):    return f"{ex['a']}+{ex['b']}="
        def reference(self, ex): return str(ex["a"] + ex["b"])
        def check(self, ex, answer): return verdict(answer == self.reference(ex))

What `@task` records (`TaskSpec`, `GenerationConfig`, `SelftestSpec`) and the decorator live in
`evalkit.core.spec`; this module re-exports them.
"""

from __future__ import annotations

import inspect
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, TypeAlias

from evalkit.core.chat import Message, chat_view, has_chat_settings, task_messages
from evalkit.core.example import SPLITS, Example, content_hash, example_id, id_from_hash, split_by_hash, split_of
from evalkit.core.extract import Extractor, cut_at_stop, normalize
from evalkit.core.hashindex import HashIndex
from evalkit.core.spec import TASK_MARKER, GenerationConfig, SelftestSpec, TaskSpec, task
from evalkit.core.verdict import Verdict, as_verdict


class Task:
    """A loaded task: the uniform interface the runner, self-test and trainer use."""

    def __init__(self, spec: TaskSpec, impl: Any, source: str | None = None):
        if not hasattr(impl, "prompt") or not hasattr(impl, "check"):
            raise TypeError(f"task {spec.name!r} must define prompt(ex) and check(ex, answer)")
        has_gen, has_rows = hasattr(impl, "generate"), hasattr(impl, "rows")
        if has_gen == has_rows:
            raise TypeError(f"task {spec.name!r} must define exactly one of generate(rng, level) or rows()")
        if spec.eval_fraction < 0:
            spec = replace(spec, eval_fraction=0.5 if has_gen else 1.0)
        if has_gen and spec.levels and spec.default_level is None:
            spec = replace(spec, default_level=spec.levels[len(spec.levels) // 2])
        if spec.target is not None and not 0.0 <= spec.target <= 1.0:
            raise ValueError(f"task {spec.name!r}: target must be in [0, 1], got {spec.target}")
        self.spec = spec
        self.impl = impl
        self.source = source
        self._extract: Extractor = (
            impl.extract if hasattr(impl, "extract") else self._default_extract
        )
        self._rows: list[Example] | None = None
        self._drawn: dict[tuple[str, int, int, int | None], tuple[Example, ...]] = {}  # by `_generate`
        self._chat_view: Task | None = None

    @classmethod
    def from_decorated(cls, obj: Any, source: str | None = None) -> Task:
        """The Task for a `@task`-decorated class or factory, or an instance of a decorated class.

        A class or factory is called with no arguments to make the implementation; an instance
        is used as it is.
        """
        spec: TaskSpec = getattr(obj, TASK_MARKER)
        instance = not isinstance(obj, type) and hasattr(type(obj), TASK_MARKER)
        impl = obj() if callable(obj) and not instance else obj
        if isinstance(impl, Task):
            return impl
        return cls(spec, impl, source)

    # -- identity ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> int:
        return self.spec.version

    @property
    def target(self) -> float | None:
        return self.spec.target

    @property
    def tags(self) -> tuple[str, ...]:
        return self.spec.tags

    @property
    def levels(self) -> tuple[int, ...]:
        return self.spec.levels

    @property
    def generation(self) -> GenerationConfig:
        return self.spec.generation

    @property
    def has_reference(self) -> bool:
        return hasattr(self.impl, "reference")

    @property
    def is_generator(self) -> bool:
        return hasattr(self.impl, "generate")

    def __repr__(self) -> str:
        return f"<Task {self.name} v{self.version}>"

    # -- examples ---------------------------------------------------------------------
    def _make(self, fields: Mapping[str, Any], split: str, level: int | None, eid: str | None = None) -> Example:
        eid = eid if eid is not None else example_id(self.name, fields, self.spec.identity)
        ex = Example(eid, self.name, split, dict(fields), "", None, level)
        prompt = self.impl.prompt(ex)
        if not isinstance(prompt, str):
            raise TypeError(f"task {self.name!r}: prompt() must return str, got {type(prompt).__name__}")
        ref = self.impl.reference(ex) if self.has_reference else None
        if ref is not None and not isinstance(ref, str):
            ref = str(ref)
        return Example(ex.id, ex.task, split, ex.fields, prompt, ref, level)  # not replace(): the hot path

    def example(self, fields: Mapping[str, Any], level: int | None = None) -> Example:
        """An Example of this task from given fields (its split follows from its content)."""
        return self._make(fields, split_of(self.name, fields, self.spec.eval_fraction, self.spec.identity), level)

    def examples(self, split: str = "eval", n: int | None = None, seed: int = 0,
                 level: int | str | None = None) -> list[Example]:
        """Examples of one split, deterministic in (task, split, n, seed, level).

        Generators draw until `n` distinct examples of the split are found (fewer only when
        the level's example space is exhausted). Data tasks return the split's rows in file
        order, the first `n` of them (all when `n` is None). `level="all"`: every level, the `n`
        examples shared out evenly (the lower levels take the remainder), each level's examples
        those `level=L` gives first; for data tasks, the rows of every level.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if level == "all":
            if not self.is_generator or not self.levels:
                level = None if not self.is_generator else self.spec.default_level
            else:
                total, count = 100 if n is None else n, len(self.levels)
                return [ex for i, lv in enumerate(self.levels)
                        for ex in self._generate(split, total // count + (i < total % count), seed, lv)]
        if not isinstance(level, (int, type(None))):
            raise ValueError(f"task {self.name!r}: level must be a whole number or 'all', got {level!r}")
        if self.is_generator:
            return self._generate(split, 100 if n is None else n, seed, level)
        if level is not None and self.levels and level not in self.levels:
            raise ValueError(f"task {self.name!r} has no level {level}; levels: {list(self.levels)}")
        rows = [e for e in self._all_rows() if e.split == split]
        if level is not None:
            rows = [e for e in rows if e.level == level]
        return rows if n is None else rows[:n]

    def iter_examples(self, split: str = "eval", n: int | None = None, seed: int = 0,
                      level: int | str | None = None) -> Iterator[Example]:
        """`examples(...)` one at a time: the same examples in the same order. A data task's rows are read as
        they are needed and not kept (only their ids are, to skip a repeated one), so a run over a large data
        file holds a batch of examples at a time; a generator's are made as `examples` makes them."""
        if level == "all" and not self.is_generator:
            level = None
        if (self.is_generator or self._rows is not None or split not in SPLITS or (n is not None and n < 0)
                or not isinstance(level, (int, type(None))) or (level is not None and self.levels
                                                                and level not in self.levels)):
            yield from self.examples(split, n, seed, level)  # which also raises on a bad argument
            return
        count = 0
        for ex in self._stream_rows() if n != 0 else ():
            if ex.split == split and (level is None or ex.level == level):
                yield ex
                count += 1
                if count == n:
                    return

    def _generate(self, split: str, n: int, seed: int, level: int | None) -> list[Example]:
        if level is None:
            level = self.spec.default_level
        elif self.levels and level not in self.levels:
            raise ValueError(f"task {self.name!r} has no level {level}; levels: {list(self.levels)}")
        # Deterministic in its arguments, so drawn once per process (a few small draws, the latest kept):
        # repeated evaluations (a training loop's) do not hash thousands of candidates again.
        if n > 4096:
            return self._draw(split, n, seed, level)
        key = (split, n, seed, level)
        if key not in self._drawn:
            if len(self._drawn) >= 8:
                self._drawn.pop(next(iter(self._drawn)))
            self._drawn[key] = tuple(self._draw(split, n, seed, level))
        return list(self._drawn[key])

    def _draw(self, split: str, n: int, seed: int, level: int | None) -> list[Example]:
        rng = random.Random(f"{self.name}/{split}/{level}/{seed}")
        takes_level = len(inspect.signature(self.impl.generate).parameters) >= 2
        seen: set[str] = set()
        out: list[Example] = []
        attempts, max_attempts = 0, 50 * n + 1000
        while len(out) < n and attempts < max_attempts:
            attempts += 1
            fields = self.impl.generate(rng, level) if takes_level else self.impl.generate(rng)
            digest = content_hash(self.name, fields, self.spec.identity)  # once: the split and the id
            if split_by_hash(digest, self.spec.eval_fraction) != split:
                continue
            eid = id_from_hash(digest)
            if eid in seen:
                continue
            seen.add(eid)
            out.append(self._make(fields, split, level, eid))
        return out

    def _all_rows(self) -> list[Example]:
        if self._rows is None:
            self._rows = list(self._stream_rows())
        return self._rows

    def _stream_rows(self) -> Iterator[Example]:
        seen = HashIndex()  # the ids (16 hex digits: 64 bits) in 16 bytes or so each, not a set of strings
        for given in self.impl.rows():
            row = dict(given)
            level = row.pop("level", None) if "level" in row and self.levels else None
            split = split_of(self.name, row, self.spec.eval_fraction, self.spec.identity)
            ex = self._make(row, split, level)
            if seen.add(int(ex.id, 16)):  # rows with equal identity are one example: the first is kept
                yield ex

    # -- answers ----------------------------------------------------------------------
    def _default_extract(self, output: str) -> str:
        return cut_at_stop(output, self.generation.stop).strip()

    def extract(self, output: str) -> str:
        return self._extract(output)

    def for_chat(self) -> Task:
        """This task as chat-mode runs use it (`evalkit.core.chat.chat_view`); itself without chat settings."""
        self._chat_view = self._chat_view or (chat_view(self) if has_chat_settings(self) else self)
        return self._chat_view

    def messages(self, ex: Example) -> list[Message]:
        """The chat form of `ex`'s prompt, what chat-mode runs send (`evalkit.core.chat.task_messages`)."""
        return task_messages(self, ex)

    def check(self, ex: Example, answer: str) -> Verdict:
        """The task's check on an already extracted answer (may raise: see scoring.score)."""
        return as_verdict(self.impl.check(ex, answer))

    def reference(self, ex: Example) -> str | None:
        return ex.reference

    def equivalent(self, ex: Example, reference: str, candidate: str) -> bool:
        """Whether the self-test should treat `candidate` as the same answer as `reference`."""
        if hasattr(self.impl, "equivalent"):
            return bool(self.impl.equivalent(ex, reference, candidate))
        return normalize(reference, self.spec.selftest.normalize) == normalize(
            candidate, self.spec.selftest.normalize)


TaskLike: TypeAlias = Task | type | Callable[[], Any]
"""What denotes one task: a loaded `Task`, or what `@task` decorated (a class or a zero-argument
factory). An instance of a decorated class is accepted too."""


def is_task_like(obj: Any) -> bool:
    """Whether `obj` is a Task, or carries the `@task` mark (a decorated class, factory or instance)."""
    return isinstance(obj, Task) or hasattr(obj, TASK_MARKER)


def as_task(obj: Any, source: str | None = None) -> Task:
    """The loaded Task that `obj` denotes: a Task is returned as it is; a `@task`-decorated class or
    factory (or an instance of a decorated class) is built with `Task.from_decorated`.

    Args:
        obj: the task.
        source: where it was defined, for messages and records (default: its module's file).

    Raises:
        TypeError: `obj` is not a task (an undecorated class names the missing decorator).
    """
    if isinstance(obj, Task):
        return obj
    if hasattr(obj, TASK_MARKER):
        if source is None:
            module = sys.modules.get(getattr(obj, "__module__", None) or "")
            source = getattr(module, "__file__", None)
        return Task.from_decorated(obj, source=source)
    if isinstance(obj, type) and hasattr(obj, "prompt") and hasattr(obj, "check"):
        raise TypeError(f"class {obj.__qualname__!r} is not a task: decorate it with @evalkit.task(...)")
    raise TypeError(f"expected a Task or a @task-decorated class, got {describe(obj)}")


def describe(obj: Any) -> str:
    """`type value` for an error message, e.g. `int 3` or `list [1, 2]` (shortened)."""
    shown = repr(obj)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{type(obj).__name__} {shown}"


def default_max_new_tokens(references: Iterable[str | None],
                           count_tokens: Callable[[str], int] | None = None) -> int:
    """Room for the longest reference answer plus a margin (a cap too small silently caps the rate).

    Lengths are counted with `count_tokens` when given, else in characters (an upper bound for
    most tokenizers). 256 when there is no reference.
    """
    longest = max(((count_tokens(r) if count_tokens else len(r)) for r in references if r), default=None)
    if longest is None:
        return 256
    # +1 for the stop/EOS token, and a margin so a model may add a little (a space, a sign).
    return longest + max(4, longest // 4) + 1


__all__ = ["TASK_MARKER", "GenerationConfig", "SelftestSpec", "Task", "TaskLike", "TaskSpec", "as_task",
           "default_max_new_tokens", "describe", "is_task_like", "task"]
