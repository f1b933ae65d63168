"""What the loop does with the checker's signal between evaluations: when to evaluate next, and the learning rate.

    due(recipe, history, step)        # is an evaluation due at `step`? (eval.every, or eval.every_near near target)
    lr_scale(recipe, history, step)   # the factor on the scheduler's learning rate (train.rise, train.anneal)

A plain Trainer sees the loss; evalkit's loop also sees the pass rate of every task at each evaluation, and
three recipe settings act on it (all off by default, all pure functions of the recipe and the evaluation
history, which checkpoints carry, so a resumed run continues on the same schedule):

- `eval.every_near` — while every task's last pass rate is within `eval.near` of its target (or above it),
  evaluate every `every_near` steps instead of every `eval.every`: the stop lands soon after the target is
  actually reached instead of up to `every` steps later, and the `confirm` evaluations come sooner. Far from
  the target the cadence stays `eval.every` (nothing to decide there).
- `train.anneal: {at, steps, to}` — at the first evaluation where every task's pass rate reaches `at` x its
  target (the learning curve has moved), the learning rate leaves the recipe's schedule for a cosine decay
  to `to` x over `steps` steps, then stays there. A constant learning rate that was right for finding the
  solution keeps the weights bouncing around it once found; decaying it as the pass rate moves is what a
  learning-rate schedule cannot know in advance (when that happens).
- `train.rise: {to, steps}` (needs the anneal) — a warmup that does not stop until the pass rate moves: the
  learning rate keeps rising past the schedule's, to `to` x over `steps` steps, and at the anneal's start it
  is back at the schedule's rate, from which the anneal decays. While the pass rate sits near zero (a model
  that has not found the solution yet), a larger rate shortens the search; once it moves, the rate comes down.
  A fixed larger rate does not do it (finetune/addition.yaml: a constant 2x found the carries sooner and then
  held ~70 %), and too large a rise finds a partial solution (2.5x: 26-44 %, bench/RESULTS.md).

With adaptive evaluation (`eval.adaptive`) the thresholds these compare with (`at` x target, target - near) are
`marks` the evaluation decides as it decides the target (`marks`, `reached`): a "missed" decided after 8 samples
says nothing about whether the rate passed half the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evalkit.train.recipe import Recipe

__all__ = ["anneal_start", "due", "from_values", "lr_scale", "marks", "near_target", "reached", "risen",
           "to_values"]


def marks(recipe: Recipe, target: float) -> list[float]:
    """The thresholds this module compares a task's pass rate with (`at` x target, target - near): an adaptive
    evaluation decides each of them too (`evalkit.run.sequential`, marks), not just the target."""
    anneal = recipe.train.get("anneal")
    out = {anneal["at"] * target} if anneal else set()
    if recipe.eval_every_near and recipe.eval_every_near != recipe.eval_every:
        out.add(target - recipe.eval_near)
    return sorted(round(m, 9) for m in out if 0.0 < m < 1.0)


def reached(rate: dict[str, Any], threshold: float) -> bool:
    """Whether a task's rate entry is at or above `threshold`: the adaptive evaluation's decision for that mark
    when it made one (an 8-sample point estimate is noise), else the measured rate."""
    for mark in rate.get("marks") or ():
        if math.isclose(mark["at"], threshold, abs_tol=1e-9) and mark["decision"]:
            return bool(mark["decision"] == "above")
    return bool(rate["rate"] >= threshold)


def near_target(recipe: Recipe, entry: dict[str, Any]) -> bool:
    """Whether every task's pass rate in a history entry is within `eval.near` of its target (or above it)."""
    rates = entry.get("rates") or {}
    return bool(rates) and all(reached(r, r["target"] - recipe.eval_near) for r in rates.values())


def due(recipe: Recipe, history: Sequence[dict[str, Any]], step: int) -> bool:
    """Whether an evaluation is due at `step` (the last step and the time budget add their own)."""
    if recipe.eval_every_near and history and near_target(recipe, history[-1]):
        return step % recipe.eval_every_near == 0
    return step % recipe.eval_every == 0


def anneal_start(recipe: Recipe, history: Sequence[dict[str, Any]]) -> int | None:
    """The step of the first evaluation at which every task reached `train.anneal.at` x its target (None: not yet,
    or no anneal)."""
    anneal = recipe.train.get("anneal")
    if not anneal:
        return None
    for entry in history:
        rates = entry.get("rates") or {}
        if rates and all(reached(r, anneal["at"] * r["target"]) for r in rates.values()):
            return int(entry["step"])
    return None


def lr_scale(recipe: Recipe, history: Sequence[dict[str, Any]], step: int) -> float:
    """The factor on the scheduled learning rate at `step`: until the anneal starts, `risen` (1.0 without a rise);
    from its start a cosine from 1 to `to` over `steps` steps, then `to`."""
    start = anneal_start(recipe, history)
    if start is None or step <= start:
        return risen(recipe, step)
    anneal = recipe.train["anneal"]
    floor, span = float(anneal.get("to", 0.1)), int(anneal.get("steps", 200))
    done = min(1.0, (step - start) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * done))


def risen(recipe: Recipe, step: int) -> float:
    """`train.rise`'s factor at `step` while the pass rate has not moved: 1 + (to - 1) x step / steps, capped at
    `to` (1.0 without a rise)."""
    rise = recipe.train.get("rise")
    if not rise:
        return 1.0
    top = float(rise["to"])
    return 1.0 + (top - 1.0) * min(1.0, step / int(rise.get("steps", 500)))


_CODES = {"above": 1.0, "below": -1.0}


def to_values(recipe: Recipe, targets: dict[str, float], rates: dict[str, Any]) -> list[float]:
    """What the other ranks need of an evaluation's `rates` (rank 0's history entry), as floats to broadcast:
    per task in `targets`' order its rate, target and each mark's decision (+1 above, -1 below, 0 undecided)."""
    out: list[float] = []
    for name, target in targets.items():
        r = rates.get(name, {})
        said = {m["at"]: m["decision"] for m in r.get("marks") or ()}
        out += [float(r.get("rate", 0.0)), float(r.get("target", 0.0)),
                *(_CODES.get(said.get(m) or "", 0.0) for m in marks(recipe, target))]
    return out


def from_values(recipe: Recipe, targets: dict[str, float], values: Sequence[float]) -> dict[str, Any]:
    """The `rates` of a history entry back from `to_values`' floats (what `signal` reads of it)."""
    out, i = {}, 0
    for name, target in targets.items():
        thresholds = marks(recipe, target)
        codes = values[i + 2: i + 2 + len(thresholds)]
        out[name] = {"rate": values[i], "target": values[i + 1],
                     "marks": [{"at": m, "decision": {1.0: "above", -1.0: "below"}.get(c)}
                               for m, c in zip(thresholds, codes)]}
        i += 2 + len(thresholds)
    return out
