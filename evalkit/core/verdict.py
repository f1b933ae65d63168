"""Verdicts: what a check says about one answer."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Status(str, enum.Enum):
    """Outcome of one check. ERROR and TIMEOUT count as failures in every rate."""

    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"


@dataclass(frozen=True)
class Verdict:
    """The result of checking one answer.

    Attributes:
        status: PASS, FAIL, ERROR (the checker raised) or TIMEOUT (it hung).
        score: in [0, 1]; 1.0 for a plain pass, 0.0 for a plain failure.
        reason: a short human explanation, e.g. "expected '579', got '578'".
    """

    status: Status
    score: float = 0.0
    reason: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.status, Status):
            object.__setattr__(self, "status", Status(self.status))
        score = float(self.score)
        if not 0.0 <= score <= 1.0 or math.isnan(score):
            raise ValueError(f"verdict score must be in [0, 1], got {self.score!r}")
        object.__setattr__(self, "score", score)

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    def to_dict(self) -> dict:
        return {"status": self.status.value, "score": self.score, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict) -> Verdict:
        return cls(Status(data["status"]), data.get("score", 0.0), data.get("reason", ""))


def verdict(ok: bool, reason: str = "", score: float | None = None) -> Verdict:
    """A PASS or FAIL verdict; score defaults to 1.0 / 0.0."""
    if score is None:
        score = 1.0 if ok else 0.0
    return Verdict(Status.PASS if ok else Status.FAIL, score, reason)


def as_verdict(value: object) -> Verdict:
    """Normalise what a check returned: a Verdict, a bool, or a score in [0, 1] (pass iff 1.0)."""
    if isinstance(value, Verdict):
        return value
    if isinstance(value, bool):
        return verdict(value)
    if isinstance(value, (int, float)):
        return Verdict(Status.PASS if float(value) >= 1.0 else Status.FAIL, float(value))
    raise TypeError(f"a check must return a Verdict, bool or score, got {type(value).__name__}")
