"""Curriculum: each task's training level follows its held-out pass rate.

    curriculum = Curriculum({"addition": LevelRule(start=1, min_level=1, max_level=3)})
    curriculum.level("addition")                    # 1
    curriculum.update("addition", rate=0.82, step=200)   # LevelChange(1 -> 2): 0.82 >= rise 0.7

The rule is reasoning-gym's: a level rises by one when the held-out pass rate *at the current
level* reaches `rise` (default 0.7) and falls by one when it drops below `fall` (default 0.3),
never leaving [min_level, max_level]. Pure logic, no torch: the verifier modes measure the rates
and record `to_dict()` in the run record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_RISE = 0.7
DEFAULT_FALL = 0.3


@dataclass(frozen=True)
class LevelRule:
    """One task's curriculum.

    Attributes:
        start: the first training level.
        min_level, max_level: bounds the level never leaves.
        rise: the level goes up when the held-out rate at the current level is >= rise.
        fall: the level goes down when that rate is < fall.
        n: held-out examples used to measure the rate at the current level (None: the eval's n).
        levels: the task's levels, when they are not consecutive integers (a move goes to the
            next one present); empty: every integer in [min_level, max_level].
    """

    start: int
    min_level: int
    max_level: int
    rise: float = DEFAULT_RISE
    fall: float = DEFAULT_FALL
    n: int | None = None
    levels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.min_level <= self.max_level:
            raise ValueError(f"min_level {self.min_level} > max_level {self.max_level}")
        if not self.min_level <= self.start <= self.max_level:
            raise ValueError(f"start {self.start} is outside [{self.min_level}, {self.max_level}]")
        if not 0.0 <= self.fall < self.rise <= 1.0:
            raise ValueError(f"need 0 <= fall < rise <= 1, got fall {self.fall}, rise {self.rise}")

    def next_level(self, level: int, rate: float) -> int:
        """The level after observing `rate` at `level` (pure; clamped to the bounds)."""
        allowed = sorted(v for v in (self.levels or range(self.min_level, self.max_level + 1))
                         if self.min_level <= v <= self.max_level)
        if rate >= self.rise:
            return next((v for v in allowed if v > level), level)
        if rate < self.fall:
            return next((v for v in reversed(allowed) if v < level), level)
        return level


@dataclass(frozen=True)
class LevelChange:
    """A recorded move: `task` went from `old` to `new` at `step` because of `rate`."""

    task: str
    step: int
    old: int
    new: int
    rate: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Curriculum:
    """Current levels of the tasks under a curriculum, and every change so far."""

    rules: Mapping[str, LevelRule]
    levels: dict[str, int] = field(default_factory=dict)
    changes: list[LevelChange] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, rule in self.rules.items():
            self.levels.setdefault(name, rule.start)

    def __contains__(self, task: object) -> bool:
        return task in self.rules

    def level(self, task: str) -> int:
        return self.levels[task]

    def update(self, task: str, rate: float, step: int) -> LevelChange | None:
        """Apply the rule to `task` after a held-out `rate` at its current level; the change, if any."""
        rule, old = self.rules[task], self.levels[task]
        new = rule.next_level(old, rate)
        if new == old:
            return None
        reason = (f"held-out {rate:.1%} >= rise {rule.rise:.0%}" if new > old
                  else f"held-out {rate:.1%} < fall {rule.fall:.0%}")
        change = LevelChange(task, step, old, new, round(rate, 6), reason)
        self.levels[task] = new
        self.changes.append(change)
        return change

    def to_dict(self) -> dict[str, Any]:
        return {"rules": {k: asdict(r) for k, r in self.rules.items()}, "levels": dict(self.levels),
                "changes": [c.to_dict() for c in self.changes]}


__all__ = ["DEFAULT_FALL", "DEFAULT_RISE", "Curriculum", "LevelChange", "LevelRule"]
