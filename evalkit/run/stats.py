"""Statistics for pass rates: Wilson intervals, unbiased pass@k and paired comparisons of two runs.

Pure standard library (no numpy/scipy), so the core imports cheaply. ERROR and TIMEOUT count as
failures in every rate here, as everywhere in evalkit.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from statistics import NormalDist

from evalkit.core.verdict import Status

__all__ = [
    "PairedComparison", "RateSummary", "mcnemar_exact_p", "mean_pass_at_k", "paired_bootstrap",
    "paired_compare", "pass_at_k", "per_level", "summarize", "wilson_interval",
]

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no significant difference"


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)


def wilson_interval(passes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Unlike the normal (Wald) interval it stays meaningful at 0 % and 100 %: the lower end is exactly
    0.0 when ``passes == 0`` and the upper end exactly 1.0 when ``passes == n``.

    Args:
        passes: number of successes, ``0 <= passes <= n``.
        n: number of trials, ``n >= 0``.
        confidence: two-sided coverage in (0, 1); z is the normal quantile at ``1 - (1 - confidence) / 2``.

    Returns:
        ``(low, high)`` with ``0 <= low <= passes / n <= high <= 1``; ``(0.0, 1.0)`` when ``n == 0``.

    Raises:
        ValueError: on negative counts, ``passes > n`` or a confidence outside (0, 1).
    """
    z = _z(confidence)
    if n < 0 or not 0 <= passes <= max(n, 0):
        raise ValueError(f"need 0 <= passes <= n, got passes={passes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = passes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    # Clamp: the closed form is exact at the edges only up to rounding, and the contract promises p is inside.
    low = 0.0 if passes == 0 else min(max(0.0, center - half), p)
    high = 1.0 if passes == n else max(min(1.0, center + half), p)
    return low, high


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator of Chen et al. (2021): ``1 - C(n - c, k) / C(n, k)``.

    The probability that at least one of k samples drawn without replacement from n generated
    samples (c of them correct) is correct. Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``, which
    avoids the huge binomial coefficients.

    Args:
        n: samples generated for the problem (``n >= 1``).
        c: correct samples among them (``0 <= c <= n``).
        k: the k in pass@k (``1 <= k <= n``).

    Raises:
        ValueError: if ``k > n`` (the estimator is undefined) or any count is out of range.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """Mean of :func:`pass_at_k` over problems.

    Args:
        counts: one ``(n, c)`` pair per problem: samples drawn and how many were correct.
        k: the k in pass@k; must not exceed any problem's n.

    Raises:
        ValueError: if there are no problems, or as :func:`pass_at_k`.
    """
    values = [pass_at_k(n, c, k) for n, c in counts]
    if not values:
        raise ValueError("mean_pass_at_k needs at least one problem")
    return math.fsum(values) / len(values)


@dataclass(frozen=True)
class RateSummary:
    """A pass rate with its Wilson 95 % interval.

    Attributes:
        n: samples counted. passes: those with status PASS.
        rate: ``passes / n`` (0.0 when n == 0; the interval is then (0, 1)).
        low, high: the Wilson 95 % interval for the rate.
        errors, timeouts: ERROR and TIMEOUT samples (already counted as failures in ``rate``).
        mean_score: mean verdict score in [0, 1] (equals ``rate`` for boolean records).
    """

    n: int
    passes: int
    rate: float
    low: float
    high: float
    errors: int = 0
    timeouts: int = 0
    mean_score: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _status(value: object) -> Status:
    if isinstance(value, bool):
        return Status.PASS if value else Status.FAIL
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        return Status(str(value).upper())
    except ValueError:
        raise ValueError(f"unknown status {value!r}; expected PASS, FAIL, ERROR or TIMEOUT") from None


def summarize(statuses_and_scores: Iterable[tuple[str | Status, float]]) -> RateSummary:
    """Summarize samples given as ``(status, score)`` pairs.

    Args:
        statuses_and_scores: status is ``"PASS"``, ``"FAIL"``, ``"ERROR"`` or ``"TIMEOUT"`` (a
            :class:`~evalkit.core.verdict.Status` works too); score is in [0, 1]. Only PASS counts as a pass.

    Raises:
        ValueError: on an unknown status or a score outside [0, 1].
    """
    n = passes = errors = timeouts = 0
    scores: list[float] = []
    for status, given in statuses_and_scores:
        st = _status(status)
        score = float(given)
        if not 0.0 <= score <= 1.0:  # also rejects NaN
            raise ValueError(f"score must be in [0, 1], got {score!r}")
        n += 1
        passes += st is Status.PASS
        errors += st is Status.ERROR
        timeouts += st is Status.TIMEOUT
        scores.append(score)
    low, high = wilson_interval(passes, n)
    rate, mean = (passes / n, math.fsum(scores) / n) if n else (0.0, 0.0)
    return RateSummary(n, passes, rate, low, high, errors, timeouts, mean)


def per_level(records: Iterable[tuple[int | None, bool | str | Status]]) -> dict[int | None, RateSummary]:
    """Break a pass rate down by difficulty level.

    Args:
        records: ``(level, outcome)`` per sample; level is None for tasks without levels; outcome is a
            bool (passed) or a status (ERROR/TIMEOUT are then counted, and count as failures).

    Returns:
        ``{level: RateSummary}`` in ascending level order, None last. ``mean_score`` is the pass rate,
        since the records carry no scores.
    """
    groups: dict[int | None, list[tuple[Status, float]]] = {}
    for level, outcome in records:
        st = _status(outcome)
        groups.setdefault(level, []).append((st, 1.0 if st is Status.PASS else 0.0))
    order = sorted(groups, key=lambda lv: (lv is None, lv if lv is not None else 0))
    return {lv: summarize(groups[lv]) for lv in order}


@dataclass(frozen=True)
class PairedComparison:
    """Run b compared with run a on the examples both ran.

    Attributes:
        n_shared: examples present in both runs (only these are compared).
        both_pass, only_a, only_b, neither: the 2x2 table (for scores: an example passes at score 1.0).
        rate_a, rate_b: mean outcome of each run on the shared examples; diff = rate_b - rate_a.
        p_value: two-sided p for "no difference". method: "mcnemar-exact" or "paired-bootstrap".
        verdict: "better", "worse" (b relative to a) or "no significant difference"; significant
            means ``p_value <= alpha``.
        alpha: the two-sided significance level used.
        ci: bootstrap ``1 - alpha`` percentile interval for diff (None for McNemar).
    """

    n_shared: int
    both_pass: int
    only_a: int
    only_b: int
    neither: int
    rate_a: float
    rate_b: float
    diff: float
    p_value: float
    method: str
    verdict: str
    alpha: float = 0.05
    ci: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci is not None else None
        return d


def _shared(a: Mapping[str, object], b: Mapping[str, object], alpha: float) -> list[str]:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    keys = sorted(k for k in a if k in b)  # sorted: the bootstrap must not depend on dict order
    if not keys:
        raise ValueError("the two runs share no examples; nothing to compare")
    return keys


def _verdict(p_value: float, diff: float, alpha: float) -> str:
    if p_value <= alpha and diff != 0:
        return BETTER if diff > 0 else WORSE
    return NO_DIFFERENCE


def _table(pa: list[bool], pb: list[bool]) -> tuple[int, int, int, int]:
    both = sum(x and y for x, y in zip(pa, pb))
    only_a = sum(x and not y for x, y in zip(pa, pb))
    only_b = sum(y and not x for x, y in zip(pa, pb))
    return both, only_a, only_b, len(pa) - both - only_a - only_b


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p: the doubled smaller binomial(n_d, 1/2) tail, capped at 1.

    ``n_d = only_a + only_b`` are the discordant pairs; with none, p is 1.0. Computed with exact
    integers (``sum C(n_d, i) for i <= min / 2**n_d``), so it does not underflow for moderate n_d.
    """
    n_d = only_a + only_b
    if n_d == 0:
        return 1.0
    m = min(only_a, only_b)
    tail = sum(math.comb(n_d, i) for i in range(m + 1))
    return min(1.0, 2 * tail / 2**n_d)


def paired_compare(a: Mapping[str, bool], b: Mapping[str, bool], alpha: float = 0.05) -> PairedComparison:
    """Exact McNemar test of run b against run a on their shared examples.

    Args:
        a, b: example id -> passed (with several samples per example, the caller reduces them to one
            boolean per example first). Ids present in only one run are ignored.
        alpha: two-sided significance level for the verdict.

    Raises:
        ValueError: if no example id is shared, or alpha is outside (0, 1).
    """
    keys = _shared(a, b, alpha)
    pa, pb = [bool(a[k]) for k in keys], [bool(b[k]) for k in keys]
    both, only_a, only_b, neither = _table(pa, pb)
    n = len(keys)
    rate_a, rate_b = (both + only_a) / n, (both + only_b) / n
    p = mcnemar_exact_p(only_a, only_b)
    diff = (only_b - only_a) / n
    return PairedComparison(n, both, only_a, only_b, neither, rate_a, rate_b, diff, p, "mcnemar-exact",
                            _verdict(p, only_b - only_a, alpha), alpha)


def _quantile(sorted_values: list[float], q: float) -> float:
    # Linear interpolation between order statistics (numpy's default "linear" method).
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def paired_bootstrap(a: Mapping[str, float], b: Mapping[str, float], n_resamples: int = 10000,
                     seed: int = 0, alpha: float = 0.05) -> PairedComparison:
    """Paired bootstrap of the mean per-example score difference (b - a) on shared examples.

    Examples are resampled with replacement (the same draw for both runs, which keeps the pairing).
    The p-value is the share of resampled mean differences on the other side of 0 from the observed
    one (0 itself counts as the other side), doubled and capped at 1; it is 1.0 when the observed
    difference is 0. Deterministic for a given seed, independent of the mappings' order. With only a
    handful of examples the bootstrap distribution is degenerate (one example: p is 0 whenever the
    scores differ); prefer :func:`paired_compare` there.

    Args:
        a, b: example id -> score in [0, 1] (e.g. a per-example pass@k or fraction of samples passing).
        n_resamples: bootstrap resamples (>= 1). seed: for the resampling RNG.
        alpha: two-sided level for the verdict and the ``1 - alpha`` percentile interval ``ci``.

    Raises:
        ValueError: if no example id is shared, a score is outside [0, 1], or an argument is out of range.
    """
    keys = _shared(a, b, alpha)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    sa, sb = [float(a[k]) for k in keys], [float(b[k]) for k in keys]
    for s in (*sa, *sb):
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"scores must be in [0, 1], got {s!r}")
    n = len(keys)
    diffs = [y - x for x, y in zip(sa, sb)]
    observed = math.fsum(diffs) / n
    rng = random.Random(seed)
    means = sorted(math.fsum(rng.choices(diffs, k=n)) / n for _ in range(n_resamples))
    if observed == 0:
        p = 1.0
    else:
        other = sum(1 for m in means if (m <= 0 if observed > 0 else m >= 0))
        p = min(1.0, 2 * other / n_resamples)
    ci = (_quantile(means, alpha / 2), _quantile(means, 1 - alpha / 2))
    both, only_a, only_b, neither = _table([s >= 1.0 for s in sa], [s >= 1.0 for s in sb])
    return PairedComparison(n, both, only_a, only_b, neither, math.fsum(sa) / n, math.fsum(sb) / n, observed,
                            p, "paired-bootstrap", _verdict(p, observed, alpha), alpha, ci)
