"""Adaptive evaluation: decide "target met" or "target missed" as soon as the samples allow, at level alpha.

    seq = Sequential(target=0.95, alpha=0.05, cap=200)
    for n in seq.looks():                      # 8, 12, 18, 27, ... 200 samples
        ...evaluate the examples up to n...
        if seq.look(passes, n):                # decided: "met", "missed", or "cap" at n == cap
            break
    seq.to_dict()                              # the record's `adaptive` block

The statistics: two one-sided mixture sequential probability ratio tests against the target `m` (Robbins'
method of mixtures; Wald's SPRT with a prior over the alternative). After n samples with s passes and f = n - s
failures,

    E+(m) = mean over q ~ U(m, 1) of (q / m)^s ((1 - q) / (1 - m))^f      evidence that the rate is above m
    E-(m) = mean over q ~ U(0, m) of (q / m)^s ((1 - q) / (1 - m))^f      evidence that the rate is below m

Under any true rate p <= m, each term of E+(m) is a nonnegative supermartingale with expectation 1 at the start
(E[(q/m)^x ((1-q)/(1-m))^(1-x)] = p q/m + (1-p)(1-q)/(1-m) <= 1 for q > m >= p), and so is their mean. Ville's
inequality then bounds the chance that E+(m) *ever* reaches 1/alpha by alpha: at every look, however many looks
are taken and whenever one stops. So "met" (E+(target) >= 1/alpha) is wrong with probability <= alpha when the
true rate is below the target, and "missed" (E-(target) >= 1/alpha) likewise when it is at or above it; for any
true rate only one of the two can be wrong, so a wrong decision has probability <= alpha. Peeking at a Wilson
interval after each round has no such bound: its wrong decisions grow with the number of looks
(tests/test_adaptive.py measures both).

The prior is uniform over the alternative, as a fixed grid of `PRIOR_POINTS` points (any fixed prior is valid; this
is the one used, not an approximation of one). Written as q = m + (1 - m) u (resp. q = m u) with the grid over u,
E+(m) falls and E-(m) rises with m, so the bounds below are intervals found by bisection, and
"E+(target) >= 1/alpha" is "the lower bound >= target".

`bound` in the record is [lo, hi]: lo = inf{m : E+(m) < 1/alpha}, hi = sup{m : E-(m) < 1/alpha}, each a
one-sided (1 - alpha) confidence sequence (valid at every n at once) computed from the passes and samples used.
Samples are taken as independent draws: the runner evaluates a task's examples in a seeded random order, k = 1.

`marks` are further thresholds a caller needs decided, e.g. `Sequential(0.95, marks=(0.475, 0.7))` for a
training loop whose schedule acts when the rate passes half its target (evalkit.train.signal): sampling goes on
until the target *and* every mark are decided, or the cap. A mark's "above"/"below" is the same test at that
threshold on the final counts, so each is wrong with probability <= alpha on its own (the record says which
marks stayed undecided at the cap). Pure standard library.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from evalkit.errors import ConfigError

__all__ = ["DEFAULT_ALPHA", "FIRST_LOOK", "GROWTH", "PRIOR_POINTS", "Sequential", "adaptive_targets",
           "check_marks", "confidence_bounds", "decide", "decide_mark", "log_evidence_met", "log_evidence_missed",
           "looks", "seeded_order", "thresholds"]

DEFAULT_ALPHA = 0.05
FIRST_LOOK = 8  # samples before the first look
GROWTH = 1.5  # each look at about 1.5x the samples of the one before
PRIOR_POINTS = 256
_U = [(j + 0.5) / PRIOR_POINTS for j in range(PRIOR_POINTS)]
_LOG_1_MINUS_U = [math.log1p(-u) for u in _U]
_LOG_U = [math.log(u) for u in _U]
_T = TypeVar("_T")


def _log_mean_exp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(math.fsum(math.exp(v - top) for v in values)) - math.log(len(values))


def _counts(passes: int, n: int) -> tuple[int, int]:
    if n < 0 or not 0 <= passes <= n:
        raise ValueError(f"need 0 <= passes <= n, got passes={passes}, n={n}")
    return passes, n - passes


def log_evidence_met(passes: int, n: int, m: float) -> float:
    """log E+(m): the evidence that the pass rate is above `m` (0 < m < 1), from `passes` of `n` samples."""
    s, f = _counts(passes, n)
    r = (1.0 - m) / m
    return _log_mean_exp([s * math.log1p(r * u) + f * lu for u, lu in zip(_U, _LOG_1_MINUS_U)])


def log_evidence_missed(passes: int, n: int, m: float) -> float:
    """log E-(m): the evidence that the pass rate is below `m` (0 < m < 1), from `passes` of `n` samples."""
    s, f = _counts(passes, n)
    r = m / (1.0 - m)
    return _log_mean_exp([s * lu + f * math.log1p(r * (1.0 - u)) for u, lu in zip(_U, _LOG_U)])


def _check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise ConfigError(f"alpha must be a number in (0, 1), got {alpha!r}", field="alpha")
    return math.log(1.0 / alpha)


def decide(passes: int, n: int, target: float, alpha: float = DEFAULT_ALPHA) -> str | None:
    """"met", "missed", or None (not decided yet) after `passes` of `n` samples, at level `alpha`."""
    level = _check_alpha(alpha)
    s, f = _counts(passes, n)
    if target <= 0.0:
        return "met"  # every rate is >= 0
    if target >= 1.0:
        return "missed" if f else None  # one failure proves a rate below 1; no finite sample proves 1
    if n and log_evidence_met(s, n, target) >= level:
        return "met"
    if n and log_evidence_missed(s, n, target) >= level:
        return "missed"
    return None


def decide_mark(passes: int, n: int, mark: float, alpha: float = DEFAULT_ALPHA) -> str | None:
    """"above", "below", or None (not decided yet): `decide` against a mark rather than a target."""
    return {"met": "above", "missed": "below"}.get(decide(passes, n, mark, alpha) or "")


def _bisect(rejected: Any, low: float, high: float) -> float:
    """The boundary between m in [low, high] where rejected(m) holds and where it does not (monotone)."""
    for _ in range(60):
        mid = (low + high) / 2
        if rejected(mid):
            low = mid
        else:
            high = mid
    return low


def confidence_bounds(passes: int, n: int, alpha: float = DEFAULT_ALPHA) -> tuple[float, float]:
    """[lo, hi] after `passes` of `n` samples: each end a one-sided (1 - alpha) anytime-valid bound on the rate."""
    level = _check_alpha(alpha)
    s, f = _counts(passes, n)
    lo = 0.0 if s == 0 else _bisect(lambda m: log_evidence_met(s, n, m) >= level, 0.0, 1.0)
    hi = 1.0 if f == 0 else 1.0 - _bisect(lambda d: log_evidence_missed(s, n, 1.0 - d) >= level, 0.0, 1.0)
    return lo, hi


def looks(cap: int, first: int = FIRST_LOOK, growth: float = GROWTH) -> list[int]:
    """The sample counts at which the runner looks: first, then about `growth` times more each time, then cap."""
    if cap < 1:
        return []
    out, n = [], max(1, first)
    while n < cap:
        out.append(n)
        n = max(n + 1, math.ceil(n * growth))
    return [*out, cap]


def thresholds(target: float, alpha: float, at: Sequence[int]) -> list[tuple[int, int, int]]:
    """(n, fewest passes that decide "met", most passes that decide "missed") at each n of `at`: the decision
    rule as a table (n + 1: "met" is out of reach; -1: "missed" is)."""
    out = []
    for n in at:
        low, high = 0, n + 1  # the fewest passes that decide "met" (evidence for it grows with passes)
        while low < high:
            mid = (low + high) // 2
            low, high = (low, mid) if decide(mid, n, target, alpha) == "met" else (mid + 1, high)
        met = low
        low, high = -1, n  # the most passes that decide "missed"
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if decide(mid, n, target, alpha) == "missed" else (low, mid - 1)
        out.append((n, met, low))
    return out


def seeded_order(items: Sequence[_T], key: str) -> list[_T]:
    """`items` in a random order fixed by `key`: what an adaptive run evaluates first."""
    out = list(items)
    random.Random(f"evalkit-adaptive/{key}").shuffle(out)
    return out


@dataclass
class Sequential:
    """One task's adaptive evaluation: looks at the counts so far and says when to stop (module doc)."""

    target: float
    alpha: float = DEFAULT_ALPHA
    cap: int = 200
    marks: tuple[float, ...] = ()
    decision: str | None = field(default=None, init=False)
    used: int = field(default=0, init=False)
    passes: int = field(default=0, init=False)
    rounds: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        _check_alpha(self.alpha)
        if not 0.0 <= self.target <= 1.0:
            raise ConfigError(f"target must be in [0, 1], got {self.target!r}", field="target")
        self.marks = tuple(check_marks(self.marks))

    def looks(self) -> list[int]:
        return looks(self.cap)

    def marked(self) -> dict[float, str | None]:
        """Each mark's decision on the counts so far (`decide_mark`)."""
        return {m: decide_mark(self.passes, self.used, m, self.alpha) for m in self.marks}

    def look(self, passes: int, n: int) -> bool:
        """Take the counts after `n` samples; True when decided ("met", "missed", or "cap" once n reaches cap)
        and every mark is decided too (or n reached cap)."""
        self.passes, self.used, self.rounds = passes, n, self.rounds + 1
        self.decision = decide(passes, n, self.target, self.alpha) or ("cap" if n >= self.cap else None)
        if self.decision in ("met", "missed") and n < self.cap and None in self.marked().values():
            return False  # the target is decided but a mark is not: sample on
        return self.decision is not None

    def to_dict(self) -> dict[str, Any]:
        """The record's `adaptive` block: samples used, cap, decision and why, level, target, bound, rounds."""
        lo, hi = confidence_bounds(self.passes, self.used, self.alpha)
        if self.decision == "met":
            lo = max(lo, self.target)  # the same statement, kept exact against the bisection's last digit
        elif self.decision == "missed":
            hi = min(hi, self.target)
        rate = self.passes / self.used if self.used else 0.0
        reason = {
            "met": f"lower bound {lo:.1%} >= target {self.target:.1%}",
            "missed": f"upper bound {hi:.1%} < target {self.target:.1%}",
            "cap": (f"cap reached: undecided at alpha {self.alpha:g} after {self.used} samples; decided as a "
                    f"fixed-n run: rate {rate:.1%} {'>=' if rate >= self.target else '<'} target {self.target:.1%}"),
        }.get(self.decision or "", "not decided")
        out: dict[str, Any] = {"used": self.used, "cap": self.cap, "decision": self.decision, "reason": reason,
                               "alpha": self.alpha, "target": self.target, "bound": [round(lo, 6), round(hi, 6)],
                               "rounds": self.rounds}
        if self.marks:
            out["marks"] = [{"at": m, "decision": d} for m, d in self.marked().items()]
        return out


def check_marks(marks: Any) -> list[float]:
    """`marks` as a list of thresholds in (0, 1), else ConfigError (field `marks`)."""
    if isinstance(marks, (str, bytes)) or not isinstance(marks, Sequence) or not all(
            isinstance(m, (int, float)) and not isinstance(m, bool) and 0.0 < m < 1.0 for m in marks):
        raise ConfigError(f"marks must be a list of numbers in (0, 1), got {marks!r}", field="marks")
    return [float(m) for m in marks]


def adaptive_targets(tasks: Sequence[Any], task_settings: Mapping[str, Mapping[str, Any]] | None, *,
                     k: int, alpha: float) -> dict[str, float]:
    """Each task's decision threshold for an adaptive run (`task_settings[name]["target"]`, else the task's own
    target); ConfigError for what adaptive evaluation cannot do: k > 1, alpha outside (0, 1), no target."""
    _check_alpha(alpha)
    if k != 1:
        raise ConfigError(f"adaptive evaluation decides on one sample per example; k must be 1, got {k}", field="k")
    out = {}
    for t in tasks:
        target = (task_settings or {}).get(t.name, {}).get("target", t.target)
        if target is None:
            raise ConfigError(f"adaptive evaluation decides against a target, and task {t.name!r} has none: set "
                              "target= on the task (or a threshold) or run it without --adaptive", field="target")
        if not 0.0 <= target <= 1.0:
            raise ConfigError(f"task {t.name!r}: target must be in [0, 1], got {target!r}", field="target")
        marks = (task_settings or {}).get(t.name, {}).get("marks", ())
        try:
            check_marks(marks)
        except ConfigError:
            raise ConfigError(f"task {t.name!r}: marks must be a list of numbers in (0, 1), got {marks!r}",
                              field="marks") from None
        out[t.name] = float(target)
    return out


def describe(block: Mapping[str, Any]) -> str:
    """One line for a record's `adaptive` block: the decision, samples used of the cap, why, and the bound."""
    lo, hi = block["bound"]
    return (f"{block['decision']} after {block['used']} of {block['cap']} samples: {block['reason']} "
            f"(alpha {block['alpha']:g}, anytime-valid bound {lo:.1%} – {hi:.1%})")
