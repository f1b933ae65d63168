"""A task's counts, accumulated one example at a time: what the record's task entry needs, in memory that does
not grow with the number of samples.

The runner feeds each example's samples as they are made or resumed, and drops them; `task_result`
(evalkit.run.record) turns the counts into the entry. The figures equal those computed from the whole list of
samples (`evalkit.run.stats.summarize`, `per_level`, `mean_pass_at_k`): the sums are kept exact (a float sum's
partials, as `math.fsum` keeps them; pass@k per distinct (samples, passes) pair), so streaming changes no
digit of a record.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

from evalkit.run import stats

_STATUSES = ("PASS", "FAIL", "ERROR", "TIMEOUT")


class ExactSum:
    """A sum of floats held exactly as non-overlapping partials (Shewchuk's algorithm, what `math.fsum` does
    inside): `value()` is the correctly rounded total, equal to `math.fsum` of every number added."""

    def __init__(self) -> None:
        self.partials: list[float] = []

    def add(self, x: float) -> None:
        partials, i = self.partials, 0
        for partial in partials:
            x, y = (partial, x) if abs(x) < abs(partial) else (x, partial)
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]

    def value(self) -> float:
        return math.fsum(self.partials)


class TaskCounts:
    """Counts over a task's samples, fed one example (its k samples) at a time.

    Attributes:
        n, passes, errors, timeouts: samples, and those with each outcome.
        examples: examples fed. per_example: how many examples had (samples, passes) = each pair.
        levels: per level, [samples, passes, errors, timeouts].
    """

    def __init__(self) -> None:
        self.n = self.passes = self.errors = self.timeouts = self.examples = 0
        self.scores = ExactSum()
        self.per_example: Counter[tuple[int, int]] = Counter()
        self.levels: dict[int | None, list[int]] = {}

    def add_example(self, level: int | None, outcomes: Iterable[tuple[str, float]]) -> None:
        """One example's samples as (status, score) pairs (a sample row's "status" and "score")."""
        samples = passes = 0
        counts = self.levels.setdefault(level, [0, 0, 0, 0])
        for status, given in outcomes:
            if status not in _STATUSES:
                raise ValueError(f"unknown status {status!r}; expected one of {', '.join(_STATUSES)}")
            score = float(given)
            if not 0.0 <= score <= 1.0:  # also rejects NaN
                raise ValueError(f"score must be in [0, 1], got {score!r}")
            samples += 1
            passes += status == "PASS"
            self.errors += status == "ERROR"
            self.timeouts += status == "TIMEOUT"
            counts[0] += 1
            counts[1] += status == "PASS"
            counts[2] += status == "ERROR"
            counts[3] += status == "TIMEOUT"
            self.scores.add(score)
        self.n += samples
        self.passes += passes
        self.examples += 1
        self.per_example[(samples, passes)] += 1

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Sample rows of any order: grouped by example id (first appearance order), then fed."""
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for row in rows:
            groups.setdefault(row["example_id"], []).append(row)
        for group in groups.values():
            self.add_example(group[0].get("level"), ((s["status"], s["score"]) for s in group))

    def summary(self) -> stats.RateSummary:
        low, high = stats.wilson_interval(self.passes, self.n)
        rate, mean = (self.passes / self.n, self.scores.value() / self.n) if self.n else (0.0, 0.0)
        return stats.RateSummary(self.n, self.passes, rate, low, high, self.errors, self.timeouts, mean)

    def pass_at_k(self) -> dict[str, float]:
        """pass@k over examples for k = 1, the samples per example, and the powers of two between."""
        k = max((samples for samples, _ in self.per_example), default=1)
        out = {}
        for kk in sorted({1, k} | {2**j for j in range(1, 8) if 2**j < k}):
            if not self.examples:
                raise ValueError("mean_pass_at_k needs at least one problem")
            # sum over the distinct pairs, exactly (Fraction), then rounded once: math.fsum's value
            total = sum((Fraction(stats.pass_at_k(n, c, kk)) * count for (n, c), count in self.per_example.items()),
                        Fraction(0))
            out[str(kk)] = round(float(total) / self.examples, 6)
        return out

    def per_level(self) -> dict[str, dict[str, Any]]:
        order = sorted(self.levels, key=lambda lv: (lv is None, lv if lv is not None else 0))
        out = {}
        for lv in order:
            n, passes, errors, timeouts = self.levels[lv]
            low, high = stats.wilson_interval(passes, n)
            rate = passes / n if n else 0.0
            out["none" if lv is None else str(lv)] = stats.RateSummary(n, passes, rate, low, high, errors, timeouts,
                                                                       rate).to_dict()
        return out
