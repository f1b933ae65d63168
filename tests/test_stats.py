"""Tests for evalkit.run.stats: Wilson intervals, pass@k, McNemar and the paired bootstrap."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit.core.verdict import Status
from evalkit.run.stats import (
    PairedComparison,
    RateSummary,
    mcnemar_exact_p,
    mean_pass_at_k,
    paired_bootstrap,
    paired_compare,
    pass_at_k,
    per_level,
    summarize,
    wilson_interval,
)

# --- Wilson ------------------------------------------------------------------------------------------

# Reference values (statsmodels proportion_confint(method="wilson") / textbook tables), 95 %.
KNOWN_WILSON = [
    (8, 10, 0.4901624, 0.9433178),
    (0, 10, 0.0, 0.2775328),
    (10, 10, 0.7224672, 1.0),
    (5, 10, 0.2365931, 0.7634069),
    (1, 1, 0.2065493, 1.0),
    (50, 100, 0.4038315, 0.5961685),
]


@pytest.mark.parametrize(("passes", "n", "low", "high"), KNOWN_WILSON)
def test_wilson_known_values(passes, n, low, high):
    lo, hi = wilson_interval(passes, n)
    assert lo == pytest.approx(low, abs=1e-6)
    assert hi == pytest.approx(high, abs=1e-6)


def test_wilson_edges_are_exact():
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_confidence_widens():
    lo90, hi90 = wilson_interval(8, 10, confidence=0.90)
    lo99, hi99 = wilson_interval(8, 10, confidence=0.99)
    assert lo99 < lo90 and hi90 < hi99


@pytest.mark.parametrize(("passes", "n", "conf"), [(-1, 10, 0.95), (11, 10, 0.95), (1, -1, 0.95),
                                                   (5, 10, 0.0), (5, 10, 1.0)])
def test_wilson_rejects_bad_input(passes, n, conf):
    with pytest.raises(ValueError):
        wilson_interval(passes, n, conf)


def test_wilson_against_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for n in (1, 2, 7, 30, 200):
        for passes in range(0, n + 1, max(1, n // 10)):
            ci = scipy_stats.binomtest(passes, n).proportion_ci(0.95, method="wilson")
            lo, hi = wilson_interval(passes, n)
            assert lo == pytest.approx(ci.low, abs=1e-9)
            assert hi == pytest.approx(ci.high, abs=1e-9)


@given(n=st.integers(1, 10_000), data=st.data(), conf=st.floats(0.5, 0.999))
def test_wilson_contains_rate(n, data, conf):
    passes = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(passes, n, conf)
    assert 0.0 <= lo <= passes / n <= hi <= 1.0


@given(num=st.integers(0, 10), den=st.integers(1, 10), m=st.integers(1, 200))
def test_wilson_narrows_with_n(num, den, m):
    num = min(num, den)
    lo1, hi1 = wilson_interval(num * m, den * m)
    lo2, hi2 = wilson_interval(num * 2 * m, den * 2 * m)
    assert hi2 - lo2 < hi1 - lo1


# --- pass@k ------------------------------------------------------------------------------------------

def _brute_pass_at_k(n: int, c: int, k: int) -> Fraction:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(_brute_pass_at_k(n, c, k)), abs=1e-12)


@given(n=st.integers(1, 500), data=st.data())
def test_pass_at_k_edges(n, data):
    k = data.draw(st.integers(1, n))
    c = data.draw(st.integers(0, n))
    assert pass_at_k(n, 0, k) == 0.0
    assert pass_at_k(n, n, k) == 1.0
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-9)
    if k < n:  # more attempts never hurt
        assert pass_at_k(n, c, k + 1) >= pass_at_k(n, c, k) - 1e-12


@pytest.mark.parametrize(("n", "c", "k"), [(5, 2, 6), (5, 6, 1), (5, -1, 1), (5, 2, 0), (0, 0, 1)])
def test_pass_at_k_rejects_bad_input(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k():
    assert mean_pass_at_k([(10, 0), (10, 10), (10, 5)], k=1) == pytest.approx(0.5)
    assert mean_pass_at_k([(4, 1), (5, 5)], k=2) == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ValueError):
        mean_pass_at_k([], k=1)
    with pytest.raises(ValueError):
        mean_pass_at_k([(3, 1), (10, 2)], k=5)


# --- summaries ---------------------------------------------------------------------------------------

def test_summarize_counts_errors_and_timeouts_as_failures():
    s = summarize([("PASS", 1.0), ("FAIL", 0.5), ("ERROR", 0.0), ("TIMEOUT", 0.0), (Status.PASS, 1.0)])
    assert (s.n, s.passes, s.errors, s.timeouts) == (5, 2, 1, 1)
    assert s.rate == pytest.approx(0.4)
    assert s.mean_score == pytest.approx(0.5)
    assert (s.low, s.high) == wilson_interval(2, 5)
    assert s.to_dict() == {"n": 5, "passes": 2, "rate": s.rate, "low": s.low, "high": s.high,
                           "errors": 1, "timeouts": 1, "mean_score": s.mean_score}


def test_summarize_empty_and_invalid():
    s = summarize([])
    assert (s.n, s.rate, s.low, s.high, s.mean_score) == (0, 0.0, 0.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        summarize([("MAYBE", 1.0)])
    with pytest.raises(ValueError):
        summarize([("PASS", 1.5)])
    with pytest.raises(ValueError):
        summarize([("PASS", float("nan"))])


def test_rate_summary_is_frozen():
    s = summarize([("PASS", 1.0)])
    assert isinstance(s, RateSummary)
    with pytest.raises(AttributeError):
        s.n = 3  # type: ignore[misc]


def test_per_level():
    records = [(1, True), (1, True), (2, False), (2, True), (None, "ERROR"), (3, "TIMEOUT"), (1, False)]
    out = per_level(records)
    assert list(out) == [1, 2, 3, None]
    assert (out[1].n, out[1].passes) == (3, 2)
    assert out[1].rate == pytest.approx(2 / 3)
    assert (out[1].low, out[1].high) == wilson_interval(2, 3)
    assert (out[None].errors, out[None].passes) == (1, 0)
    assert out[3].timeouts == 1
    assert per_level([]) == {}


# --- McNemar -----------------------------------------------------------------------------------------

def _runs(both: int, only_a: int, only_b: int, neither: int) -> tuple[dict[str, bool], dict[str, bool]]:
    a, b = {}, {}
    rows = [(True, True)] * both + [(True, False)] * only_a + [(False, True)] * only_b + [(False, False)] * neither
    for i, (x, y) in enumerate(rows):
        a[f"ex{i}"], b[f"ex{i}"] = x, y
    return a, b


def test_mcnemar_hand_values():
    assert mcnemar_exact_p(0, 10) == 2 * 0.5**10 == 0.001953125
    assert mcnemar_exact_p(10, 0) == 0.001953125
    assert mcnemar_exact_p(5, 5) == 1.0
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(1, 4) == pytest.approx(2 * (1 + 5) / 32)  # 0.375
    assert mcnemar_exact_p(2, 3) == 1.0  # doubled tail capped at 1


def test_mcnemar_against_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for x in range(0, 25):
        for y in range(0, 25):
            if x + y:
                ref = scipy_stats.binomtest(x, x + y, 0.5).pvalue
                assert mcnemar_exact_p(x, y) == pytest.approx(ref, rel=1e-9, abs=1e-15)


def test_paired_compare_better_and_worse():
    a, b = _runs(both=40, only_a=0, only_b=10, neither=50)
    r = paired_compare(a, b)
    assert isinstance(r, PairedComparison)
    assert (r.n_shared, r.both_pass, r.only_a, r.only_b, r.neither) == (100, 40, 0, 10, 50)
    assert (r.rate_a, r.rate_b) == (0.4, 0.5)
    assert r.diff == pytest.approx(0.1)
    assert r.p_value == 0.001953125
    assert r.method == "mcnemar-exact"
    assert r.verdict == "better"
    assert r.ci is None
    assert paired_compare(b, a).verdict == "worse"
    d = r.to_dict()
    assert d["verdict"] == "better" and d["p_value"] == r.p_value and d["ci"] is None


def test_paired_compare_no_difference():
    a, b = _runs(both=10, only_a=5, only_b=5, neither=10)
    r = paired_compare(a, b)
    assert r.p_value == 1.0 and r.diff == 0.0 and r.verdict == "no significant difference"
    a, b = _runs(both=10, only_a=2, only_b=6, neither=10)  # p = 0.289
    assert paired_compare(a, b).verdict == "no significant difference"


def test_paired_compare_uses_shared_keys_only():
    a = {"x": True, "y": False, "only_in_a": True}
    b = {"x": True, "y": True, "only_in_b": False}
    r = paired_compare(a, b)
    assert (r.n_shared, r.both_pass, r.only_b) == (2, 1, 1)
    with pytest.raises(ValueError):
        paired_compare({"x": True}, {"z": True})
    with pytest.raises(ValueError):
        paired_compare(a, b, alpha=0.0)


# --- bootstrap ---------------------------------------------------------------------------------------

def test_bootstrap_identical_is_no_difference():
    a = {f"ex{i}": (i % 7) / 6 for i in range(60)}
    r = paired_bootstrap(a, dict(a), n_resamples=2000)
    assert r.method == "paired-bootstrap"
    assert r.diff == 0.0 and r.p_value == 1.0 and r.ci == (0.0, 0.0)
    assert r.verdict == "no significant difference"


def test_bootstrap_clear_improvement():
    a = {f"ex{i}": 0.2 + 0.1 * (i % 3) for i in range(80)}
    b = {k: min(1.0, v + 0.5) for k, v in a.items()}
    r = paired_bootstrap(a, b, n_resamples=2000)
    assert r.verdict == "better"
    assert r.p_value < 0.05
    assert r.ci is not None and 0 < r.ci[0] <= r.diff <= r.ci[1]
    assert paired_bootstrap(b, a, n_resamples=2000).verdict == "worse"
    assert r.to_dict()["ci"] == list(r.ci)


def test_bootstrap_noise_is_not_significant():
    a = {f"ex{i}": float(i % 2) for i in range(40)}
    b = {f"ex{i}": float((i // 2) % 2) for i in range(40)}  # same rate, shuffled passes
    r = paired_bootstrap(a, b, n_resamples=2000)
    assert r.verdict == "no significant difference"


def test_bootstrap_is_deterministic_and_order_independent():
    a = {f"ex{i}": (i * 37 % 11) / 10 for i in range(50)}
    b = {f"ex{i}": (i * 53 % 11) / 10 for i in range(50)}
    r1 = paired_bootstrap(a, b, n_resamples=1000, seed=7)
    r2 = paired_bootstrap(dict(reversed(list(a.items()))), b, n_resamples=1000, seed=7)
    assert r1 == r2
    r3 = paired_bootstrap(a, b, n_resamples=1000, seed=8)
    assert r3.ci != r1.ci


def test_bootstrap_boolean_table_and_validation():
    a = {"x": 1.0, "y": 0.0, "z": 0.5}
    b = {"x": 1.0, "y": 1.0, "z": 0.0}
    r = paired_bootstrap(a, b, n_resamples=100)
    assert (r.both_pass, r.only_a, r.only_b, r.neither) == (1, 0, 1, 1)
    assert r.rate_a == pytest.approx(0.5) and r.rate_b == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        paired_bootstrap({"x": 1.2}, {"x": 1.0})
    with pytest.raises(ValueError):
        paired_bootstrap({"x": 1.0}, {"y": 1.0})
    with pytest.raises(ValueError):
        paired_bootstrap(a, b, n_resamples=0)


@settings(max_examples=30, deadline=None)
@given(scores=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=30))
def test_bootstrap_properties(scores):
    a = {f"e{i}": x for i, (x, _) in enumerate(scores)}
    b = {f"e{i}": y for i, (_, y) in enumerate(scores)}
    r = paired_bootstrap(a, b, n_resamples=200)
    assert 0.0 <= r.p_value <= 1.0
    assert r.ci is not None and -1.0 <= r.ci[0] <= r.ci[1] <= 1.0
    assert r.diff == pytest.approx(r.rate_b - r.rate_a, abs=1e-12)
    assert r.both_pass + r.only_a + r.only_b + r.neither == r.n_shared == len(scores)
