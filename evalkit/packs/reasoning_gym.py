"""reasoning-gym's procedural datasets as evalkit tasks: `rg:<dataset>` (pip install 'evalkit[reasoning-gym]').

    evalkit tasks 'rg:*'
    evalkit selftest rg:graph_color
    evalkit run --model oracle --task rg:graph_color --level 2 -n 50

Each dataset of `reasoning_gym.factory.DATASETS` is one task:

- examples: the dataset's entries. The fields are the entry (question, answer, metadata; its tuples and
  non-string keys kept, `evalkit.packs.jsontypes`), and the example's identity is its question alone
  (`identity=("question",)`), so the train and eval splits never share a prompt;
- levels: the dataset's curriculum. evalkit level k is what the curriculum configures at global level
  k-1 with reasoning-gym's default context (`RangeAttributeMode.INCLUSIVE`: a range attribute spans
  from its easiest value up to that level's), as reasoning-gym's own curriculum training uses it; its
  levels were tuned that way (the upper bands alone make some generators fail most entries). A level
  whose configuration repeats the previous one is not offered; a level whose configuration fails the
  dataset's own validation is not offered either, and the task's description says so. A dataset
  without a curriculum has no levels;
- prompt: the question as reasoning-gym writes it;
- answer: the model's output, or the text of its last `<answer>...</answer>` (reasoning-gym's
  convention), stripped;
- check: the dataset's `score_answer(answer, entry)`: PASS at exactly 1.0, else FAIL with the score
  as the verdict's score. A scorer that raises is an ERROR verdict (scoring does that);
- reference: the entry's `answer`; where that is None (several answers are right), one made by
  `evalkit.packs.rg_solvers` where it knows how (graph_color, rubiks_cube, propositional_logic);
- solutions: several valid answers where `rg_solvers` can make them, else the reference alone;
- version: changes with the adapter and with the reasoning-gym release (`task_version`).

Nothing here imports reasoning-gym until a task is asked for; without it, that is a ConfigError
(exit 2) saying what to install.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import inspect
import io
import random
import re
import warnings
from collections.abc import Callable, Mapping
from difflib import get_close_matches
from types import ModuleType
from typing import Any

from evalkit.core.example import Example
from evalkit.core.scoring import call_with_deadline
from evalkit.core.task import Task, task
from evalkit.core.verdict import Status, Verdict
from evalkit.errors import ConfigError, UnknownTaskError
from evalkit.packs.jsontypes import decode, encode
from evalkit.packs.rg_solvers import EQUIVALENCES, REFERENCES, SECOND_OPINIONS, SOLUTIONS

PREFIX = "rg"
TAG = "reasoning-gym"
INSTALL_HINT = "pip install 'evalkit[reasoning-gym]'"
ADAPTER_VERSION = 1  # bump when this adapter changes what a task means (prompt, extraction, check, levels)

DEFAULT_SIZE = 100_000  # entries per level: the example space a level's seed opens
SIZES = {
    "acre": 1_000,  # builds every entry up front (30 s for 100,000)
    "word_ladder": 20_000,  # its config refuses more
}
EXCLUDED = {
    "composite": "reasoning-gym's composite mixes other datasets by a configuration it has no default for; "
                 "select those datasets instead (e.g. 'rg:*')",
}
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
RETRIES = 3  # further entries drawn when reasoning-gym fails to make one (each failure is warned about)
ENTRY_TIMEOUT = 30.0  # seconds one entry may take to make (some generators loop forever on some entries)


def library() -> ModuleType:
    """The reasoning_gym module; a ConfigError naming the extra to install when it cannot be imported."""
    try:
        import reasoning_gym
    except Exception as exc:  # not installed, or broken: either way the rg: tasks cannot be offered
        raise ConfigError(f"the {PREFIX}: tasks need the reasoning-gym package, which could not be imported "
                          f"({type(exc).__name__}: {exc}); install it with: {INSTALL_HINT}") from None
    return reasoning_gym


def library_version() -> str:
    """The installed reasoning-gym release (its distribution's version: the module's `__version__` lags)."""
    try:
        return importlib.metadata.version("reasoning-gym")
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(library(), "__version__", "0"))


def task_version(release: str) -> int:
    """An integer that changes with the adapter and the reasoning-gym release: ADAPTER·10⁸ + major·10⁶ +
    minor·10³ + patch (1 and 0.1.25 give 100001025), so journals and run ids never mix releases."""
    parts = [int(p) for p in re.findall(r"\d+", release)[:3]] + [0, 0, 0]
    major, minor, patch = (min(p, 999) for p in parts[:3])
    return ADAPTER_VERSION * 10**8 + min(major, 99) * 10**6 + minor * 10**3 + patch


def extract_answer(output: str) -> str:
    """The text of the last `<answer>` (up to `</answer>` or the end), else the whole output; stripped."""
    start = output.rfind(ANSWER_OPEN)
    if start >= 0:
        output = output[start + len(ANSWER_OPEN):]
    end = output.find(ANSWER_CLOSE)
    return (output if end < 0 else output[:end]).strip()


def quietly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` with what it prints to stdout discarded: some generators print progress (`bf`
    dots) or run code that prints (`codeio`), which would land in evalkit's own output (tables, JSON)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def level_seed(dataset: str, level: int | None) -> int:
    """The dataset seed for one level: fixed, so a level's example space is the same in every run."""
    return int(hashlib.sha256(f"evalkit/{PREFIX}:{dataset}/{level}".encode()).hexdigest()[:8], 16)


def plan_levels(dataset: str) -> tuple[dict[int | None, Any], list[str]]:
    """The configuration of each evalkit level (key None: a dataset without curriculum) and notes on the
    levels not offered."""
    from reasoning_gym.coaching.base_curriculum import DefaultCurriculumContext, RangeAttributeMode
    from reasoning_gym.factory import CURRICULA, DATASETS

    config_cls = DATASETS[dataset][1]
    if dataset not in CURRICULA:
        return {None: config_cls()}, []
    curriculum = CURRICULA[dataset]()
    depth = max((len(a.levels) for a in curriculum.attributes.values()), default=1)
    context = DefaultCurriculumContext(mode=RangeAttributeMode.INCLUSIVE)
    configs: dict[int | None, Any] = {}
    notes: list[str] = []
    previous = None
    for index in range(depth):
        level = index + 1
        try:
            curriculum.set_global_level(index)
            config = curriculum.generate_configuration(context=context)
            if hasattr(config, "validate"):
                config.validate()
        except Exception as exc:  # noqa: BLE001 - upstream's own validation: that level is not offered
            notes.append(f"level {level} not offered: its configuration fails validation "
                         f"({type(exc).__name__}: {exc})")
            continue
        if config == previous:
            continue  # every attribute already at its last level: the same difficulty again
        configs[level] = previous = config
    if not configs:  # the curriculum is unusable: the dataset's own default configuration, without levels
        config = config_cls()
        if hasattr(config, "validate"):
            config.validate()
        configs[None] = config
        notes.insert(0, "no level of its curriculum is valid: offered at its default configuration, without levels")
    return configs, notes


class ReasoningGymTask:
    """One reasoning-gym dataset: its entries as examples, its `score_answer` as the check."""

    def __init__(self, dataset: str, configs: Mapping[int | None, Any], default_level: int | None):
        self.dataset = dataset
        self.configs = dict(configs)
        self.default_level = default_level
        self._built: dict[int | None, Any] = {}
        self.failures: dict[int | None, int] = {}  # entries upstream failed to make, per level (each one warned)

    def build(self, level: int | None) -> Any:
        """The dataset of one level (built once; the entries are made on demand)."""
        if level not in self.configs:
            level = self.default_level
        if level not in self._built:
            from reasoning_gym.factory import DATASETS

            size = SIZES.get(self.dataset, DEFAULT_SIZE)
            config = dataclasses.replace(self.configs[level], seed=level_seed(self.dataset, level), size=size)
            self._built[level] = quietly(DATASETS[self.dataset][0], config=config)
        return self._built[level]

    @staticmethod
    def entry(ex: Example) -> dict[str, Any]:
        """The reasoning-gym entry an example holds, with its original types (a fresh copy each time)."""
        return {key: decode(value) for key, value in ex.fields.items()}

    # -- the task API ---------------------------------------------------------------------------
    def generate(self, rng: random.Random, level: int | None) -> dict[str, Any]:
        dataset = self.build(level)
        size = SIZES.get(self.dataset, DEFAULT_SIZE)
        where = f"{PREFIX}:{self.dataset} level {level}"
        for attempt in range(RETRIES + 1):
            dataset.size = size  # a dataset may shrink its size when an entry fails (word_ladder): undo that
            index = rng.randrange(size)
            try:
                entry = call_with_deadline(functools.partial(quietly, dataset.__getitem__, index), ENTRY_TIMEOUT)
                break
            except Exception as exc:  # noqa: BLE001 - upstream failed or hung on this entry: counted, shown
                self.failures[level] = self.failures.get(level, 0) + 1
                why = (f"took over {ENTRY_TIMEOUT:g} s" if isinstance(exc, TimeoutError)
                       else f"failed ({type(exc).__name__}: {exc})")
                if attempt == RETRIES:
                    raise RuntimeError(f"{where}: reasoning-gym could not make {RETRIES + 1} entries in a row; "
                                       f"the last, entry {index}, {why}") from exc
                warnings.warn(f"{where}: an entry {why} in reasoning-gym; another is drawn", stacklevel=2)
        question = entry.get("question")
        if not isinstance(question, str) or not question:
            raise ValueError(f"{PREFIX}:{self.dataset} made an entry without a question")
        return {key: encode(value, key) for key, value in entry.items()}

    def prompt(self, ex: Example) -> str:
        return str(ex["question"])

    def reference(self, ex: Example) -> str | None:
        answer = ex.get("answer")
        if answer is not None:
            return answer if isinstance(answer, str) else str(decode(answer))
        solver = REFERENCES.get(self.dataset)
        return solver(self.entry(ex)) if solver else None

    def solutions(self, ex: Example, rng: random.Random) -> list[str]:
        solver = SOLUTIONS.get(self.dataset)
        if solver is not None:
            return solver(self.entry(ex), rng)
        reference = self.reference(ex)
        return [] if reference is None else [reference]

    def extract(self, output: str) -> str:
        return extract_answer(output)

    def check(self, ex: Example, answer: str) -> Verdict:
        got = self.build(ex.level).score_answer(answer, self.entry(ex))
        value = float(got)
        if not 0.0 <= value <= 1.0:  # NaN included
            raise ValueError(f"score_answer returned {got!r}, outside [0, 1]")
        if value == 1.0:
            return Verdict(Status.PASS, 1.0)
        return Verdict(Status.FAIL, value, f"score_answer gave {value:g}")

    def equivalent(self, ex: Example, reference: str, candidate: str) -> bool:
        """Whether the self-test should count `candidate` as a right answer: the same answer once extracted
        (say, junk after `</answer>`), or right by an independent judge (`rg_solvers.EQUIVALENCES`)."""
        answer = extract_answer(candidate)
        judge = EQUIVALENCES.get(self.dataset)
        return answer == extract_answer(reference) or (judge is not None and judge(self.entry(ex), answer))


class ReasoningGymTaskWithOpinion(ReasoningGymTask):
    """A dataset for which `rg_solvers` has an independent judge (the self-test compares the two)."""

    def second_opinion(self, ex: Example, answer: str) -> bool:
        return SECOND_OPINIONS[self.dataset](self.entry(ex), answer)


def build_task(dataset: str) -> Task:
    """The evalkit task for one reasoning-gym dataset (its datasets are built only when examples are drawn)."""
    from reasoning_gym.factory import DATASETS

    dataset_cls = DATASETS[dataset][0]
    try:
        configs, notes = plan_levels(dataset)
    except Exception as exc:  # noqa: BLE001 - upstream's configuration: the task cannot be offered
        raise ConfigError(f"task '{PREFIX}:{dataset}' cannot be built: {type(exc).__name__}: {exc}") from exc
    levels = sorted(level for level in configs if level is not None)
    default = levels[len(levels) // 2] if levels else None
    kind = ReasoningGymTaskWithOpinion if dataset in SECOND_OPINIONS else ReasoningGymTask
    impl = kind(dataset, configs, default)
    parts = dataset_cls.__module__.split(".")
    category = parts[1] if len(parts) >= 3 else "other"
    summary = (inspect.cleandoc(dataset_cls.__doc__ or "") or dataset).splitlines()[0].rstrip(".")  # its own
    release = library_version()
    dropped = sum(note.startswith("level ") for note in notes)
    first = f"{summary} (reasoning-gym {release}" + (f"; {dropped} level(s) not offered)" if dropped else ")")
    decorate = task(name=f"{PREFIX}:{dataset}", version=task_version(release), levels=levels, default_level=default,
                    tags=(TAG, category), description="\n".join([first, *notes]), stop=(ANSWER_CLOSE,),
                    identity=("question",))
    source = inspect.getsourcefile(dataset_cls) or f"reasoning-gym {release}"
    return Task.from_decorated(decorate(lambda: impl), source=source)


class ReasoningGymPack:
    """The `rg:` names: one task per reasoning-gym dataset, built on first request."""

    prefix = PREFIX

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def names(self) -> list[str]:
        library()
        from reasoning_gym.factory import DATASETS

        return sorted(f"{PREFIX}:{name}" for name in DATASETS if name not in EXCLUDED)

    def unavailable(self) -> dict[str, str]:
        library()
        from reasoning_gym.factory import DATASETS

        return {f"{PREFIX}:{name}": why for name, why in EXCLUDED.items() if name in DATASETS}

    def task(self, name: str) -> Task:
        if name not in self._tasks:
            known = self.names()
            if name not in known:
                why = self.unavailable().get(name)
                if why:
                    raise UnknownTaskError(f"task {name!r} is not offered: {why}")
                bare = [n[len(PREFIX) + 1:] for n in known]
                close = [f"{PREFIX}:{c}" for c in get_close_matches(name[len(PREFIX) + 1:], bare, n=3, cutoff=0.6)]
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
                raise UnknownTaskError(f"unknown task {name!r}{hint} reasoning-gym {library_version()} has "
                                       f"{len(known)} datasets: evalkit tasks '{PREFIX}:*' lists them.")
            self._tasks[name] = build_task(name[len(PREFIX) + 1:])
        return self._tasks[name]


PACK = ReasoningGymPack()

__all__ = ["PACK", "ReasoningGymPack", "ReasoningGymTask", "build_task", "extract_answer", "plan_levels",
           "task_version"]
