"""The oracle: answers every example with its task's reference solver.

Running a task with `--model oracle` validates it end to end (generation settings,
extraction, checker): anything below 100 % is a bug in the task, not a model. A task with
no reference (or an example without one) is refused, naming the task: the oracle never
answers "" in its place.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from evalkit.errors import ConfigError
from evalkit.models.base import GenerationStats

if TYPE_CHECKING:
    from evalkit.core.example import Example
    from evalkit.core.task import GenerationConfig


class OracleBackend:
    """Writes each example's reference output; a ConfigError for an example that has none."""

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
        out = []
        for ex in examples:
            if ex.reference is None:
                raise ConfigError(f"task {ex.task!r} has no reference answer for example {ex.id}, so the oracle "
                                  "cannot answer it: give the task a reference() (or a stored answer), or use "
                                  "another model", field="--model")
            out.append([ex.reference] * num_samples)
        self._stats = GenerationStats(prompts=len(examples), samples=len(examples) * num_samples,
                                      seconds=time.perf_counter() - start)
        return out
