"""A backend around a plain Python function: reference solvers, baselines, tests."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from evalkit.core.extract import cut_at_stop
from evalkit.models.base import GenerationStats

if TYPE_CHECKING:
    from evalkit.core.chat import Prompt
    from evalkit.core.task import GenerationConfig


class PythonCallableBackend:
    """Wrap `fn(prompts, config) -> list[str]` (batched) or `fn(prompt) -> str` (per prompt).

    The function's outputs are treated like a model's: cut before the first stop string. In a
    chat-mode run each prompt it receives is the list of messages (`[{"role": "system" | "user" |
    "assistant", "content": str}, ...]`, the question last) instead of text.
    With `num_samples > 1` the function is called once per sample index; a function that
    accepts a `seed` keyword gets `seed + sample_index`.

    Args:
        fn: the function.
        batched: whether `fn` takes the whole list and the config; by default it is batched
            when it has two or more positional parameters.
        identity: defaults to "python:<module>:<qualname>".
    """

    def __init__(self, fn: Callable[..., Any], *, batched: bool | None = None,
                 identity: str | None = None):
        self.fn = fn
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):  # some builtins have no signature
            params = []
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.batched = len(positional) >= 2 if batched is None else batched
        self._takes_seed = any(p.name == "seed" or p.kind == p.VAR_KEYWORD for p in params)
        if identity is None:
            module = getattr(fn, "__module__", None) or type(fn).__module__
            qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
            identity = f"python:{module}:{qualname}"
        self._identity = identity
        self._stats = GenerationStats()

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def last_stats(self) -> GenerationStats:
        return self._stats

    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig, *, seed: int = 0,
                 num_samples: int = 1) -> list[list[str]]:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        start = time.perf_counter()
        prompts = list(prompts)
        out: list[list[str]] = [[] for _ in prompts]
        for i in range(num_samples):
            kw = {"seed": seed + i} if self._takes_seed else {}
            if self.batched:
                texts = list(self.fn(prompts, config, **kw))
                if len(texts) != len(prompts):
                    raise ValueError(f"{self.identity} returned {len(texts)} outputs "
                                     f"for {len(prompts)} prompts")
            else:
                texts = [self.fn(p, **kw) for p in prompts]
            for row, text in zip(out, texts):
                if not isinstance(text, str):
                    raise TypeError(f"{self.identity} returned {type(text).__name__}, not str")
                row.append(cut_at_stop(text, config.stop))
        self._stats = GenerationStats(prompts=len(prompts), samples=len(prompts) * num_samples,
                                      seconds=time.perf_counter() - start,
                                      batches=num_samples if self.batched else 0)
        return out
