"""The self-test's properties, run on one level's examples (`LevelRun`); `evalkit.core.selftest` drives them.

Each property method returns a `PropertyResult`; `evalkit.core.selftest` documents what each one checks.
"""

from __future__ import annotations

import random

from hypothesis import strategies as st

from evalkit.core.example import Example
from evalkit.core.scoring import Scored, call_with_deadline, score
from evalkit.core.selftest_inputs import (
    CORRUPTIONS,
    WEIRD,
    PropertyFailure,
    corruption,
    plain_corruption,
    plain_text,
    run_property,
    show,
)
from evalkit.core.selftest_report import PropertyResult
from evalkit.core.task import Task
from evalkit.core.verdict import Status, Verdict, as_verdict
from evalkit.errors import InfrastructureError

__all__ = ["EXCUSED", "LevelRun", "nonzero"]

EXCUSED = "excused: equivalent to a valid answer"


class LevelRun:
    """One level's examples, their known valid answers, and the properties run on them."""

    def __init__(self, task: Task, examples: list[Example], *, seed: int, max_examples: int, timeout: float):
        self.task, self.examples, self.seed = task, examples, seed
        self.max_examples, self.timeout = max_examples, timeout
        self.impl = task.impl
        self.solutions: dict[str, list[str]] = {}
        self.solution_errors: list[str] = []
        self.repeats = 0
        if hasattr(self.impl, "solutions"):
            for ex in examples:
                self.solutions[ex.id] = self.draw_solutions(ex)

    def draw_solutions(self, ex: Example, method: str = "solutions") -> list[str]:
        rng = random.Random(f"{self.task.name}/{method}/{ex.id}/{self.seed}")
        solver = getattr(self.impl, method)
        try:
            given = call_with_deadline(lambda: list(solver(ex, rng)), self.timeout)
        except InfrastructureError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken solver fails "accepts solutions"
            self.solution_errors.append(f"{method}() raised {type(exc).__name__}: {exc} on example {ex.id}")
            return []
        out: list[str] = []
        for answer in given:
            if not isinstance(answer, str):
                self.solution_errors.append(f"{method}() gave a {type(answer).__name__}, not str, on example {ex.id}")
            elif answer == ex.reference or answer in out:
                self.repeats += 1
            else:
                out.append(answer)
        return out

    def valid(self, ex: Example) -> list[str]:
        """The known valid outputs for `ex`: its reference, then its solutions."""
        return ([ex.reference] if ex.reference is not None else []) + self.solutions.get(ex.id, [])

    def answers(self, ex: Example) -> list[str]:
        """The known valid answers that corruptions start from and excuse against (`valid`; the chat pass
        leaves out its outputs in prose, whose edits outside the answer change nothing)."""
        return self.valid(ex)

    def echoes(self, ex: Example) -> list[tuple[str, str]]:
        """Outputs that hold no answer: the empty output and the question echoed back."""
        return [("", "empty output"), (ex.prompt, "the prompt echoed back")]

    @property
    def proven(self) -> bool:
        return any(self.valid(ex) for ex in self.examples)

    def scored(self, ex: Example, output: str) -> Scored:
        return score(self.task, ex, output, timeout=self.timeout)

    def excused(self, ex: Example, output: str) -> bool:
        return any(self.task.equivalent(ex, answer, output) for answer in self.answers(ex))

    def outcome(self, ex: Example, output: str) -> str:
        """For an output that should fail: "rejected", "excused" (it passed, but the task calls it
        equivalent to a valid answer) or "PASSED" (a counterexample)."""
        if self.scored(ex, output).verdict.status is not Status.PASS:
            return "rejected"
        return "excused" if self.excused(ex, output) else "PASSED"

    @staticmethod
    def wrong_pass(ex: Example, output: str, what: str) -> str:
        return (f"{what} {show(output)} PASSED for example {ex.id} (prompt {show(ex.prompt)}, "
                f"reference {show(ex.reference or '')})")

    # -- the properties ---------------------------------------------------------------
    def properties(self) -> tuple[PropertyResult, ...]:
        return (self.soundness(), self.accepts_solutions(), self.rejects_empty_echo(), self.rejects_random_text(),
                self.rejects_corruptions(), self.agrees_with_second_opinion(), self.deterministic(), self.robust())

    def soundness(self) -> PropertyResult:
        with_ref = [ex for ex in self.examples if ex.reference is not None]
        skipped = {"examples without a reference": len(self.examples) - len(with_ref)}
        if not with_ref:
            why = "the task defines no reference(ex)" if not self.task.has_reference else "no example has a reference"
            return PropertyResult("soundness", None, 0, skipped={why: None}, detail="each example's reference")
        rejected = []
        for ex in with_ref:
            v = self.scored(ex, ex.reference or "").verdict
            if v.status is not Status.PASS:
                rejected.append(f"example {ex.id}: prompt {show(ex.prompt)}; reference {show(ex.reference or '')} "
                                f"{_got(v)}")
        failure = f"{len(rejected)} of {len(with_ref)} references rejected; first: {rejected[0]}" if rejected else None
        return PropertyResult("soundness", not rejected, len(with_ref), failure, nonzero(skipped),
                              "each example's reference")

    def accepts_solutions(self) -> PropertyResult:
        name, detail = "accepts solutions", "every answer solutions(ex, rng) gives, other than the reference"
        if not self.solutions:
            return PropertyResult(name, None, 0, skipped={"the task defines no solutions(ex, rng)": None},
                                  detail=detail)
        rejected = list(self.solution_errors)
        tried = 0
        for ex in self.examples:
            for answer in self.solutions[ex.id]:
                tried += 1
                v = self.scored(ex, answer).verdict
                if v.status is not Status.PASS:
                    rejected.append(f"valid solution {show(answer)} {_got(v)} — example "
                                    f"{ex.id} (prompt {show(ex.prompt)}, reference {show(ex.reference or '')})")
        skipped = {"examples with no solution": sum(not self.solutions[ex.id] for ex in self.examples),
                   "repeats of the reference or of another solution": self.repeats}
        failure = (f"{len(rejected)} of {tried} solutions rejected (an over-strict checker?); first: {rejected[0]}"
                   if rejected else None)
        return PropertyResult(name, not rejected, tried, failure, nonzero(skipped), detail)

    def rejects_empty_echo(self) -> PropertyResult:
        failure, excused, tried = None, 0, 0
        for ex in self.examples:
            for output, what in self.echoes(ex):
                tried += 1
                found = self.outcome(ex, output)
                excused += found == "excused"
                if found == "PASSED" and failure is None:
                    failure = self.wrong_pass(ex, output, what)
        return PropertyResult("rejects empty/echo", failure is None, tried, failure,
                              nonzero({EXCUSED: excused}), "the empty output and the prompt, for each example")

    def rejects_random_text(self) -> PropertyResult:
        excused = 0

        def body(v: tuple[Example, str]) -> None:
            nonlocal excused
            found = self.outcome(*v)
            excused += found == "excused"
            if found == "PASSED":
                raise PropertyFailure(self.wrong_pass(*v, "random text"))

        tried, failure = run_property(body, st.tuples(st.sampled_from(self.examples), st.text(max_size=40)),
                                      self.max_examples)
        return PropertyResult("rejects random text", failure is None, tried, failure, nonzero({EXCUSED: excused}),
                              "hypothesis-chosen text up to 40 characters")

    def rejects_corruptions(self) -> PropertyResult:
        name = "rejects corruptions"
        detail = "hypothesis-chosen edits, truncations and appended junk of every reference and solution"
        skip = self.task.spec.selftest.skip
        skipped: dict[str, int | None] = {f"kind {k!r}: skipped by the task": None for k in CORRUPTIONS if k in skip}
        kinds = [k for k in CORRUPTIONS if k not in skip]
        seeds = [(ex, answer) for ex in self.examples for answer in self.answers(ex)]
        if not seeds or not kinds:
            skipped["no known valid answer to corrupt" if not seeds else "every kind skipped by the task"] = None
            return PropertyResult(name, None, 0, skipped=skipped, detail=detail)
        excused: dict[str, int] = {}

        def body(v: tuple[Example, tuple[str, str]]) -> None:
            ex, (kind, output) = v
            found = self.outcome(ex, output)
            if found == "excused":
                excused[kind] = excused.get(kind, 0) + 1
            elif found == "PASSED":
                raise PropertyFailure(self.wrong_pass(ex, output, f"corruption ({kind})"))

        strategy = st.sampled_from(seeds).flatmap(lambda s: corruption(s[1], kinds).map(lambda c: (s[0], c)))
        tried, failure = run_property(body, strategy, self.max_examples)
        skipped.update({f"{EXCUSED} ({kind})": n for kind, n in sorted(excused.items())})
        return PropertyResult(name, failure is None, tried, failure, skipped, detail)

    def agrees_with_second_opinion(self) -> PropertyResult:
        name = "agrees with second opinion"
        detail = "valid answers, empty output, echoed prompt, corruptions and random text"
        if not hasattr(self.impl, "second_opinion"):
            return PropertyResult(name, None, 0, skipped={"the task defines no second_opinion(ex, answer)": None},
                                  detail=detail)
        seen: dict[tuple[str, str], None] = {}
        findings: list[str] = []
        skipped = {"the checker raised or timed out (see robust)": 0}

        def judge(ex: Example, output: str) -> None:
            if (ex.id, output) in seen:
                return
            seen[(ex.id, output)] = None
            scored = self.scored(ex, output)
            if scored.verdict.status in (Status.ERROR, Status.TIMEOUT):
                skipped["the checker raised or timed out (see robust)"] += 1
                return
            try:
                opinion = as_verdict(call_with_deadline(lambda: self.impl.second_opinion(ex, scored.answer),
                                                        self.timeout)).passed
            except InfrastructureError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported with the input
                findings.append(f"example {ex.id}: output {show(output)}: second opinion raised "
                                f"{type(exc).__name__}: {exc}")
                return
            if opinion != scored.verdict.passed:
                findings.append(f"example {ex.id} (prompt {show(ex.prompt)}): output {show(output)}: checker "
                                f"{scored.verdict.status.value}, second opinion {'PASS' if opinion else 'FAIL'}")

        for ex in self.examples:
            for output in [*self.valid(ex), "", ex.prompt]:
                judge(ex, output)
        seeds = [(ex, answer) for ex in self.examples for answer in self.valid(ex)]
        drawn = st.tuples(st.sampled_from(self.examples), st.text(max_size=40))
        if seeds:
            drawn = st.one_of(drawn, st.sampled_from(seeds).flatmap(
                lambda s: corruption(s[1], CORRUPTIONS).map(lambda c: (s[0], c[1]))))
        run_property(lambda v: judge(v[0], v[1]), drawn, self.max_examples)  # never raises: collects
        failure = (f"{len(findings)} disagreement(s) in {len(seen)} inputs; first: {findings[0]}"
                   if findings else None)
        return PropertyResult(name, not findings, len(seen), failure, nonzero(skipped), detail, tuple(findings))

    def deterministic(self) -> PropertyResult:
        """Outside hypothesis: each input scored three times (in order, reversed, in order again)."""
        rng = random.Random(f"{self.task.name}/determinism/{self.seed}")
        pool: list[tuple[Example, str]] = []
        for ex in self.examples:
            valid = self.valid(ex)
            pool += [(ex, answer) for answer in valid[:3]]
            pool += [(ex, ""), (ex, ex.prompt), (ex, plain_text(rng))]
            pool += [(ex, plain_corruption(answer, rng)) for answer in valid[:1]]
        n = max(16, self.max_examples // 4)
        inputs = pool if len(pool) <= n else rng.sample(pool, n)
        runs: list[dict[int, tuple[Status, float]]] = [{}, {}, {}]
        for run, order in zip(runs, (range(len(inputs)), range(len(inputs) - 1, -1, -1), range(len(inputs)))):
            for i in order:
                v = self.scored(*inputs[i]).verdict
                run[i] = (v.status, v.score)
        failure = None
        for i, (ex, output) in enumerate(inputs):
            seen = [run[i] for run in runs]
            if len(set(seen)) > 1:
                shown = " then ".join(f"{status.value} ({value:g})" for status, value in seen)
                failure = (f"non-deterministic verdict: output {show(output)} on example {ex.id} gave {shown}: "
                           f"a checker must be a pure function of the example and the answer")
                break
        return PropertyResult("deterministic", failure is None, 3 * len(inputs), failure,
                              detail="valid answers, empty output, prompt, random text and edits, each scored "
                                     "3 times in different orders, outside hypothesis")

    def robust(self) -> PropertyResult:
        def body(v: tuple[Example, str]) -> None:
            ex, output = v
            verdict = self.scored(ex, output).verdict
            if verdict.status in (Status.ERROR, Status.TIMEOUT):
                raise PropertyFailure(f"output {show(output)} on example {ex.id}: {verdict.status.value}: "
                                      f"{verdict.reason}")

        tried, failure = run_property(body, st.tuples(st.sampled_from(self.examples), WEIRD), self.max_examples)
        return PropertyResult("robust", failure is None, tried, failure,
                              detail="any unicode, control characters, 100k-character outputs, deep nesting")


def _got(v: Verdict) -> str:
    return f"got {v.status.value}: {v.reason}" if v.reason else f"got {v.status.value}"


def nonzero(counts: dict[str, int]) -> dict[str, int | None]:
    return {reason: n for reason, n in counts.items() if n}
