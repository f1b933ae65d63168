"""The oracle: answers every example with its task's reference solver.

Running a task with `--model oracle` validates it end to end (generation settings,
extraction, checker): anything below 100 % is a bug in the task, not a model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from evalkit.models.base import GenerationStats

if TYPE_CHECKING:
    from evalkit.core.example import Example
    from evalkit.core.task import GenerationConfig


class OracleBackend:
    """Writes each example's reference output (the empty string when a task has no solver)."""

    identity = "oracle"

    def __init__(self) -> None:
        self._stats = GenerationStats()

    @property
    def last_stats(self) -> GenerationStats:
        return self._stats

    def generate(self, prompts: Sequence[str], config: GenerationConfig, *, seed: int = 0,
                 num_samples: int = 1) -> list[list[str]]:
        raise TypeError("the oracle answers examples, not bare prompts: use generate_examples")

    def generate_examples(self, examples: Sequence[Example], config: GenerationConfig, *, seed: int = 0,
                          num_samples: int = 1) -> list[list[str]]:
        start = time.perf_counter()
        out = [[ex.reference or ""] * num_samples for ex in examples]
        self._stats = GenerationStats(prompts=len(examples), samples=len(examples) * num_samples,
                                      seconds=time.perf_counter() - start)
        return out
