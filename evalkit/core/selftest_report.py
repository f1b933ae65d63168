"""What the checker self-test found: per property, per level, per task (data only; no hypothesis).

A task's self-test ends in one of three states:

- PASS: every property that could run held, and the task gave at least one known valid answer
  (`reference` or `solutions`) on every level, so soundness and corruptions were tested;
- FAIL: a property failed (the counterexample says which input), or the task could not be tested;
- UNPROVEN: nothing failed, but some level had no known valid answer, so the checker was never
  shown a right answer: it may reject everything right. Not a pass (`--allow-unproven` accepts it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PASS, FAIL, UNPROVEN = "PASS", "FAIL", "UNPROVEN"

UNPROVEN_HINT = ("no known valid answer: define reference(ex) (a solver or a stored answer) or solutions(ex, rng) "
                 "(several valid answers) so that soundness and corruptions can be tested")


@dataclass(frozen=True)
class PropertyResult:
    """One property on one level (or, from `SelftestReport.by_property`, summed over the levels).

    Attributes:
        name: the property, e.g. "soundness", "accepts solutions", "deterministic".
        passed: True (held), False (failed: see `counterexample`), None (could not run: see `skipped`).
        tried: how many inputs were checked.
        counterexample: for a failure, the (minimal) input and what went wrong.
        skipped: what was not tried or not counted, and why -> how many (None: not countable), e.g.
            {"examples without a reference": 3, "kind 'append': skipped by the task": None}.
        detail: what the inputs were, in words.
        findings: every offending input, for properties that collect them all (second opinion).
    """

    name: str
    passed: bool | None
    tried: int = 0
    counterexample: str | None = None
    skipped: Mapping[str, int | None] = field(default_factory=dict)
    detail: str = ""
    findings: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        """"ok", "FAILED" or "skipped"."""
        return {True: "ok", False: "FAILED", None: "skipped"}[self.passed]

    def skipped_text(self) -> str:
        """The skips as one line: `reason (count)`, joined by `; `."""
        return "; ".join(reason if count is None else f"{reason} ({count})" for reason, count in self.skipped.items())


@dataclass(frozen=True)
class LevelResult:
    """Every property on one level.

    Attributes:
        examples: how many examples were drawn (eval and train splits).
        proven: whether some example had a known valid answer (reference or solutions).
    """

    task: str
    level: int | None
    results: tuple[PropertyResult, ...]
    examples: int = 0
    proven: bool = True

    @property
    def passed(self) -> bool:
        """No property failed (an unproven level can still pass this: see `SelftestReport.status`)."""
        return all(r.passed is not False for r in self.results)


@dataclass
class SelftestReport:
    """A task's self-test: `status` is PASS, FAIL or UNPROVEN; `passed` only for PASS."""

    task: str
    levels: list[LevelResult] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error is not None or not all(lv.passed for lv in self.levels):
            return FAIL
        return UNPROVEN if self.unproven else PASS

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def unproven(self) -> bool:
        """Some level had no known valid answer (reported as UNPROVEN unless something failed)."""
        return any(not lv.proven for lv in self.levels)

    def failures(self) -> list[tuple[int | None, PropertyResult]]:
        return [(lv.level, r) for lv in self.levels for r in lv.results if r.passed is False]

    def by_property(self) -> list[PropertyResult]:
        """Each property summed over the levels: tried and skip counts added, the first counterexample,
        every finding (prefixed with its level when there are several levels)."""
        names: dict[str, list[tuple[int | None, PropertyResult]]] = {}
        for lv in self.levels:
            for r in lv.results:
                names.setdefault(r.name, []).append((lv.level, r))
        return [merge(name, found, several=len(self.levels) > 1) for name, found in names.items()]

    def message(self) -> str:
        """Why the self-test did not pass, one line per failed property ('' when it passed)."""
        if self.passed:
            return ""
        lines = [f"self-test of {self.task!r}: {self.status}"]
        if self.error:
            lines.append(f"  error: {self.error}")
        for level, r in self.failures():
            lines.append(f"  level {level}: {r.name}: {r.counterexample}")
            lines += [f"    {finding}" for finding in r.findings[1:]]
        if self.status == UNPROVEN:
            unproven = [lv.level for lv in self.levels if not lv.proven]
            lines.append(f"  {UNPROVEN_HINT} (levels: {', '.join(map(str, unproven))})")
        return "\n".join(lines)


def merge(name: str, found: Iterable[tuple[int | None, PropertyResult]], several: bool = True) -> PropertyResult:
    """One property's results on several levels as one result."""
    found = list(found)
    results = [r for _, r in found]
    failed = [(lv, r) for lv, r in found if r.passed is False]
    ran = [r for r in results if r.passed is not None]
    passed = False if failed else (True if ran else None)
    skipped: dict[str, int | None] = {}
    for r in results:
        for reason, count in r.skipped.items():
            before = skipped.get(reason)
            skipped[reason] = None if count is None and before is None else (before or 0) + (count or 0)
    counterexample = None
    if failed:
        level, first = failed[0]
        counterexample = f"level {level}: {first.counterexample}" if several else first.counterexample
    findings = tuple(f"level {lv}: {f}" if several else f for lv, r in found for f in r.findings)
    return PropertyResult(name, passed, sum(r.tried for r in results), counterexample, skipped,
                          next((r.detail for r in results if r.detail), ""), findings)
