"""Checkers built from other checkers: all_of, any_of and weighted.

Sub-checks are specs accepted by `evalkit.checkers.make` (a name, a mapping
`{"name": ..., **params}` or a callable) and are built when the composite is built, so a
bad sub-spec fails at factory time, with its index in the message. Every sub-check runs
(in order) on every answer, so the score is exact. A sub-check that raises counts as an
ERROR verdict for that sub-check; ERROR and TIMEOUT decide the result only when the
passing and failing sub-checks do not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from evalkit.checkers import Check, make, register
from evalkit.core.example import Example
from evalkit.core.verdict import Status, Verdict, as_verdict

_MAX_REASON = 300
_UNDECIDED = (Status.ERROR, Status.TIMEOUT)


def _label(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        return str(spec.get("name", "?"))
    return getattr(spec, "__name__", type(spec).__name__)


def _build(spec: Any, where: str) -> tuple[str, Check]:
    try:
        return _label(spec), make(spec)
    except (KeyError, TypeError, ValueError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        raise type(exc)(f"{where}: {message}") from exc


def _build_list(checks: Any, name: str) -> list[tuple[str, Check]]:
    if isinstance(checks, (str, Mapping)) or not isinstance(checks, Sequence):
        raise TypeError(f"{name}: checks must be a list of checker specs, got {type(checks).__name__}")
    if not checks:
        raise ValueError(f"{name}: checks must not be empty")
    return [_build(spec, f"{name}: checks[{i}]") for i, spec in enumerate(checks)]


def _run(subs: list[tuple[str, Check]], example: Example, answer: str) -> list[tuple[str, Verdict]]:
    out = []
    for label, check in subs:
        try:
            v = as_verdict(check(example, answer))
        except Exception as exc:  # noqa: BLE001 - one broken sub-check must not hide the others
            v = Verdict(Status.ERROR, 0.0, f"checker raised {type(exc).__name__}: {exc}"[:200])
        out.append((label, v))
    return out


def _reason(results: list[tuple[str, Verdict]]) -> str:
    text = "; ".join(f"{label}: {v.reason or v.status.value}" for label, v in results)
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _first_undecided(results: list[tuple[str, Verdict]]) -> Status | None:
    return next((v.status for _, v in results if v.status in _UNDECIDED), None)


@register("all_of")
def all_of(checks: Sequence[Any]) -> Check:
    """Pass iff every sub-check passes; score = the lowest sub-score.

    Any FAIL makes it a FAIL; otherwise an ERROR/TIMEOUT sub-verdict is propagated.
    """
    subs = _build_list(checks, "all_of")

    def check(example: Example, answer: str) -> Verdict:
        results = _run(subs, example, answer)
        score = min(v.score for _, v in results)
        failed = [(label, v) for label, v in results if v.status is Status.FAIL]
        if failed:
            return Verdict(Status.FAIL, score, _reason(failed))
        status = _first_undecided(results)
        if status is not None:
            return Verdict(status, score, _reason([r for r in results if r[1].status in _UNDECIDED]))
        return Verdict(Status.PASS, score, f"all {len(results)} passed")

    return check


@register("any_of")
def any_of(checks: Sequence[Any]) -> Check:
    """Pass iff at least one sub-check passes; score = the highest sub-score.

    Any PASS makes it a PASS; otherwise an ERROR/TIMEOUT sub-verdict is propagated.
    """
    subs = _build_list(checks, "any_of")

    def check(example: Example, answer: str) -> Verdict:
        results = _run(subs, example, answer)
        score = max(v.score for _, v in results)
        passed = [(label, v) for label, v in results if v.status is Status.PASS]
        if passed:
            return Verdict(Status.PASS, score, _reason(passed[:1]))
        return Verdict(_first_undecided(results) or Status.FAIL, score, _reason(results))

    return check


def _weight(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}: weight must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: weight must be a finite number > 0, got {value!r}")
    return float(value)


@register("weighted")
def weighted(checks: Sequence[Mapping[str, Any]], threshold: float = 1.0) -> Check:
    """Score = the weighted mean of the sub-scores; pass iff score >= threshold.

    Args:
        checks: a non-empty list of `{"check": spec, "weight": w}` with w > 0.
        threshold: in [0, 1].

    An ERROR/TIMEOUT sub-verdict (scored 0) decides the status only when counting it as a
    full pass could reach the threshold and counting it as 0 does not.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"weighted: threshold must be a number, got {threshold!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"weighted: threshold must be in [0, 1], got {threshold!r}")
    if isinstance(checks, (str, Mapping)) or not isinstance(checks, Sequence):
        raise TypeError(f"weighted: checks must be a list of {{check, weight}} mappings, got {type(checks).__name__}")
    if not checks:
        raise ValueError("weighted: checks must not be empty")
    subs, weights = [], []
    for i, item in enumerate(checks):
        where = f"weighted: checks[{i}]"
        if not isinstance(item, Mapping) or "check" not in item:
            raise TypeError(f"{where}: expected a mapping with keys 'check' and 'weight', got {item!r}")
        extra = set(item) - {"check", "weight"}
        if extra:
            raise ValueError(f"{where}: unknown keys {sorted(extra)}; expected 'check' and 'weight'")
        subs.append(_build(item["check"], where))
        weights.append(_weight(item.get("weight", 1.0), where))
    total = sum(weights)
    eps = 1e-9  # so that float rounding of an exact mean (e.g. 0.1 + 0.2) cannot flip the verdict

    def check(example: Example, answer: str) -> Verdict:
        results = _run(subs, example, answer)
        mean = sum(w * v.score for w, (_, v) in zip(weights, results)) / total
        score = min(1.0, max(0.0, mean))
        best = sum(w * (1.0 if v.status in _UNDECIDED else v.score) for w, (_, v) in zip(weights, results)) / total
        summary = f"score {score:.3g} vs threshold {threshold:g}"
        failing = [r for r in results if r[1].status is not Status.PASS]
        detail = f" ({_reason(failing)})" if failing else ""
        if score + eps >= threshold:
            return Verdict(Status.PASS, score, summary + detail)
        status = _first_undecided(results) if best + eps >= threshold else None
        return Verdict(status or Status.FAIL, score, summary + detail)

    return check
