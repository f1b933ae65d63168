"""What the loop does with the checker's signal between evaluations: when to evaluate next, and the learning rate.

    due(recipe, history, step)        # is an evaluation due at `step`? (eval.every, or eval.every_near near target)
    lr_scale(recipe, history, step)   # the factor on the scheduler's learning rate (train.anneal), 1.0 without it

A plain Trainer sees the loss; evalkit's loop also sees the pass rate of every task at each evaluation, and
two recipe settings act on it (both off by default, both pure functions of the recipe and the evaluation
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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evalkit.train.recipe import Recipe

__all__ = ["anneal_start", "due", "lr_scale", "near_target"]


def near_target(recipe: Recipe, entry: dict[str, Any]) -> bool:
    """Whether every task's pass rate in a history entry is within `eval.near` of its target (or above it)."""
    rates = entry.get("rates") or {}
    return bool(rates) and all(r["rate"] >= r["target"] - recipe.eval_near for r in rates.values())


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
        if rates and all(r["rate"] >= anneal["at"] * r["target"] for r in rates.values()):
            return int(entry["step"])
    return None


def lr_scale(recipe: Recipe, history: Sequence[dict[str, Any]], step: int) -> float:
    """The factor on the scheduled learning rate at `step`: 1.0 until the anneal starts, then a cosine from 1
    to `to` over `steps` steps, then `to`."""
    start = anneal_start(recipe, history)
    if start is None or step <= start:
        return 1.0
    anneal = recipe.train["anneal"]
    floor, span = float(anneal.get("to", 0.1)), int(anneal.get("steps", 200))
    done = min(1.0, (step - start) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * done))
