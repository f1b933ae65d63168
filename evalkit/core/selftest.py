"""Checker self-test: prove with hypothesis that a task's checker is sound and not vacuous.

For each task and level, on generated (or loaded) eval and train examples:

- soundness: the reference output passes;
- non-vacuity: the empty output, the prompt echoed back, random text, and hypothesis-chosen
  corruptions of the reference (digit/character edits, truncation, appended junk) fail, unless
  the task declares the corrupted answer equivalent (`equivalent` / `selftest.normalize`);
- determinism: the same input gives the same verdict;
- robustness: arbitrary unicode and very long outputs never make the checker raise or hang.

Usable from pytest: `assert_selftest(task)` raises AssertionError with the minimal counterexample.
Every function here takes a loaded `Task` or what `@task` decorated.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.reporting import with_reporter

from evalkit.core.example import Example
from evalkit.core.scoring import score
from evalkit.core.task import TaskLike, as_task
from evalkit.core.verdict import Status
from evalkit.errors import InfrastructureError

CORRUPTIONS = ("digit_edit", "char_edit", "truncate", "append")
# Junk appended to an answer: visible characters, no whitespace (whitespace is a stop string
# or stripped by most extractors: appending it is no corruption).
_JUNK = st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=8)


class PropertyFailure(AssertionError):
    """One falsifying example; hypothesis shrinks to the minimal one and re-raises it."""


@dataclass(frozen=True)
class PropertyResult:
    name: str
    passed: bool | None  # None: skipped (e.g. no reference solver)
    tried: int = 0
    counterexample: str | None = None


@dataclass(frozen=True)
class LevelResult:
    task: str
    level: int | None
    results: tuple[PropertyResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed is not False for r in self.results)


@dataclass
class SelftestReport:
    task: str
    levels: list[LevelResult] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(lv.passed for lv in self.levels)

    def failures(self) -> list[tuple[int | None, PropertyResult]]:
        return [(lv.level, r) for lv in self.levels for r in lv.results if r.passed is False]


def _show(text: str, limit: int = 120) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def corruption(reference: str, kinds: Sequence[str]) -> st.SearchStrategy[tuple[str, str]]:
    """(kind, corrupted text) for one reference output."""
    options = []
    digits = [i for i, ch in enumerate(reference) if ch.isdigit()]
    if "digit_edit" in kinds and digits:
        options.append(st.tuples(st.sampled_from(digits), st.sampled_from(string.digits)).filter(
            lambda t: reference[t[0]] != t[1]).map(
            lambda t: ("digit_edit", reference[: t[0]] + t[1] + reference[t[0] + 1:])))
    if "char_edit" in kinds and reference:
        n = len(reference)
        ch = st.characters(codec="utf-8", exclude_categories=["Cs"])
        replace = st.tuples(st.integers(0, n - 1), ch).filter(lambda t: reference[t[0]] != t[1]).map(
            lambda t: ("char_edit", reference[: t[0]] + t[1] + reference[t[0] + 1:]))
        insert = st.tuples(st.integers(0, n), ch).map(
            lambda t: ("char_edit", reference[: t[0]] + t[1] + reference[t[0]:]))
        delete = st.integers(0, n - 1).map(lambda i: ("char_edit", reference[:i] + reference[i + 1:]))
        options += [replace, insert, delete]
    if "truncate" in kinds and reference:
        options.append(st.integers(0, len(reference) - 1).map(lambda i: ("truncate", reference[:i])))
    if "append" in kinds:
        options.append(_JUNK.map(lambda j: ("append", reference.rstrip() + j)))
    return st.one_of(options) if options else st.nothing()


def _run_property(name: str, strategy: st.SearchStrategy, body: Callable, max_examples: int) -> PropertyResult:
    tried = 0

    @settings(max_examples=max_examples, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
              phases=[Phase.explicit, Phase.generate, Phase.shrink], print_blob=False)
    @given(strategy)
    def prop(value):
        nonlocal tried
        tried += 1
        body(value)

    try:
        with with_reporter(lambda *_: None):
            prop()
    except PropertyFailure as exc:
        return PropertyResult(name, False, tried, str(exc))
    except Flaky as exc:
        return PropertyResult(name, False, tried, f"flaky (non-deterministic verdict): {exc}")
    return PropertyResult(name, True, tried)


def selftest_level(task: TaskLike, level: int | None, *, n_examples: int = 20, max_examples: int = 100,
                   seed: int = 0, timeout: float = 10.0) -> LevelResult:
    """Run every property for one task at one level.

    Args:
        task: the task (a Task, or a @task-decorated class).
        level: the level (None: the task's default).
        n_examples: examples drawn per split (eval and train).
        max_examples: hypothesis examples per property.
        seed: the examples' seed.
        timeout: seconds one check may take before it counts as TIMEOUT.
    """
    task = as_task(task)
    examples: list[Example] = []
    for split in ("eval", "train"):
        examples += task.examples(split, n=n_examples, seed=seed, level=level)
    results: list[PropertyResult] = []
    if not examples:
        return LevelResult(task.name, level, (PropertyResult("examples", False, 0, "the task produced no examples"),))
    with_ref = [e for e in examples if e.reference is not None]

    def verdict_of(ex: Example, output: str):
        return score(task, ex, output, timeout=timeout).verdict

    # Soundness: every reference passes (no sampling: all examples are tried).
    if with_ref:
        failure = None
        for ex in with_ref:
            v = verdict_of(ex, ex.reference or "")
            if v.status is not Status.PASS:
                failure = (f"example {ex.id}: prompt {_show(ex.prompt)}; reference {_show(ex.reference or '')} "
                           f"got {v.status.value}: {v.reason}")
                break
        results.append(PropertyResult("soundness", failure is None, len(with_ref), failure))
    else:
        results.append(PropertyResult("soundness", None, 0, "no reference solver: skipped"))

    def must_fail(ex: Example, output: str, what: str) -> None:
        v = verdict_of(ex, output)
        if v.status is Status.PASS:
            ref = ex.reference
            if ref is not None and task.equivalent(ex, ref, output):
                return
            raise PropertyFailure(f"{what} {_show(output)} PASSED for example {ex.id} "
                                  f"(prompt {_show(ex.prompt)}, reference {_show(ref or '')})")

    # Non-vacuity, fixed cases: empty output and the prompt echoed back.
    failure = None
    for ex in examples:
        for output, what in (("", "empty output"), (ex.prompt, "the prompt echoed back")):
            try:
                must_fail(ex, output, what)
            except PropertyFailure as exc:
                failure = failure or str(exc)
    results.append(PropertyResult("rejects empty/echo", failure is None, 2 * len(examples), failure))

    pick = st.sampled_from(examples)
    results.append(_run_property(
        "rejects random text", st.tuples(pick, st.text(max_size=40)),
        lambda v: must_fail(v[0], v[1], "random text"), max_examples))

    kinds = [k for k in CORRUPTIONS if k not in task.spec.selftest.skip]
    if with_ref and kinds:
        corrupted = st.sampled_from(with_ref).flatmap(
            lambda ex: corruption(ex.reference or "", kinds).map(lambda c: (ex, c)))
        results.append(_run_property(
            "rejects corruptions", corrupted,
            lambda v: must_fail(v[0], v[1][1], f"corruption ({v[1][0]})"), max_examples))
    else:
        results.append(PropertyResult("rejects corruptions", None, 0,
                                      "no reference solver" if not with_ref else "all kinds skipped by the task"))

    def deterministic(v) -> None:
        ex, output = v
        first, second = verdict_of(ex, output), verdict_of(ex, output)
        if (first.status, first.score) != (second.status, second.score):
            raise PropertyFailure(f"output {_show(output)} on example {ex.id} gave {first.status.value} "
                                  f"then {second.status.value}")

    outputs = st.one_of(st.text(max_size=40), *(
        [st.sampled_from([e.reference for e in with_ref])] if with_ref else []))
    results.append(_run_property("deterministic", st.tuples(pick, outputs), deterministic, max(10, max_examples // 4)))

    def robust(v) -> None:
        ex, output = v
        verdict = verdict_of(ex, output)
        if verdict.status in (Status.ERROR, Status.TIMEOUT):
            raise PropertyFailure(f"output {_show(output)} on example {ex.id}: {verdict.status.value}: "
                                  f"{verdict.reason}")

    weird = st.one_of(
        st.text(st.characters(codec="utf-8"), max_size=200),
        st.text(min_size=1, max_size=5).map(lambda s: s * 20_000),  # very long outputs
        st.sampled_from(["\x00", "\u202e", "{" * 5000, "[" * 5000, "9" * 50_000, "1e99999", "nan", "inf",
                         "0/0", "\ud7ff" * 10, "```json\n{\n```"]),
    )
    results.append(_run_property("robust", st.tuples(pick, weird), robust, max_examples))
    return LevelResult(task.name, level, tuple(results))


def selftest_task(task: TaskLike, *, levels: Sequence[int] | None = None, **kwargs: Any) -> SelftestReport:
    """Self-test a task at each of its levels (or the given ones); keywords go to `selftest_level`."""
    task = as_task(task)
    report = SelftestReport(task.name)
    chosen: Sequence[int | None] = list(levels) if levels else (list(task.levels) or [None])
    if not task.is_generator and not task.levels:
        chosen = [None]
    for level in chosen:
        try:
            report.levels.append(selftest_level(task, level, **kwargs))
        except InfrastructureError:
            raise  # e.g. no sandbox for a code check: not the task's fault, the run stops (exit 3)
        except Exception as exc:  # noqa: BLE001 - a task that cannot even produce examples fails here
            report.error = f"level {level}: {type(exc).__name__}: {exc}"
            break
    return report


def assert_selftest(task: TaskLike, **kwargs: Any) -> SelftestReport:
    """Run the self-test; raise AssertionError naming each failed property and its counterexample.

    Keywords: `levels` and those of `selftest_level` (`n_examples`, `max_examples`, `seed`, `timeout`).
    """
    task = as_task(task)
    report = selftest_task(task, **kwargs)
    if not report.passed:
        lines = [f"self-test of {task.name!r} failed:"]
        if report.error:
            lines.append(f"  error: {report.error}")
        for level, r in report.failures():
            lines.append(f"  level {level}: {r.name}: {r.counterexample}")
        raise AssertionError("\n".join(lines))
    return report
