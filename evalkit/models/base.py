"""The model contract: what the runner needs from anything that writes text.

A backend turns prompts into raw continuations, like the OpenAI completions API: the
prompt is not repeated, and each continuation is already cut before its first stop
string (`cut_at_stop`: a stop string inside the output's leading whitespace does not count).
A prompt is raw text (`str`) or, in a chat-mode run, a list of messages (`evalkit.core.chat`):
a backend renders the messages with the model's chat template (`hf:`), sends them as they are
(`openai:` chat completions), hands them to its function (`python:`), or raises a clear
`ConfigError` when it cannot. A backend also stops at the model's end-of-turn token(s), in
both forms. It also names itself with a stable `identity` (a fingerprint of the weights, or
an endpoint + model name) that the runner puts in every journal key, so a changed model
never reuses another model's samples.

`ModelBackend` is what every backend provides. Four capabilities are optional, each its own
runtime-checkable protocol that the runner tests with `isinstance`:

- `ExampleGenerator` (`generate_examples`): answers whole examples instead of bare prompts
  (the oracle writes each example's reference);
- `TokenCounter` (`count_tokens`): sizes a task's `max_new_tokens` from its longest reference in
  tokens (without it, in characters);
- `HasDevice` (`device`): where the model runs, recorded in the run's environment;
- `ChatTemplated` (`chat_template_id`): the backend renders messages with a template of its own;
  in chat mode the runner adds the template's fingerprint to the model identity (`chat_identity`),
  so a changed template never reuses samples.

This module imports no torch: the core imports it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from evalkit.core.chat import Prompt
    from evalkit.core.example import Example
    from evalkit.core.task import GenerationConfig


@dataclass(frozen=True)
class GenerationStats:
    """Counters of one `generate` call (or a sum of several, with `+`).

    Attributes:
        prompts: prompts asked for.
        samples: continuations returned (prompts x num_samples).
        prompt_tokens: tokens fed to the model as prompts, one count per generated row
            (0 when the backend has no tokenizer, e.g. a Python callable).
        generated_tokens: tokens the model produced, up to and including the one that
            ended each row (EOS or the token completing a stop string).
        seconds: wall time of the call.
        batches: forward batches run.
        truncated_prompts: prompts cut from the left to fit the model's context.
    """

    prompts: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    batches: int = 0
    truncated_prompts: int = 0

    def __add__(self, other: GenerationStats) -> GenerationStats:
        return GenerationStats(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                                  for f in fields(self)})

    def to_dict(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_generate_args(config: GenerationConfig, num_samples: int) -> int:
    """The argument checks every backend's `generate` makes (ValueError on bad input); returns
    `config.max_new_tokens`, now known to be a positive int."""
    if config.max_new_tokens is None or config.max_new_tokens < 1:
        raise ValueError("config.max_new_tokens must be a positive int (the runner sizes it)")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    return config.max_new_tokens


@runtime_checkable
class ModelBackend(Protocol):
    """Anything that can answer prompts for the runner.

    A backend may also have the optional capabilities below (`ExampleGenerator`, `TokenCounter`,
    `HasDevice`); the runner uses each when present.

    Attributes:
        identity: a stable fingerprint of the model that changes whenever its outputs may
            change (for in-memory weights: a hash of every tensor's bytes, recomputed when
            read). Read it once per evaluation.
        last_stats: counters of the latest `generate` call.
    """

    @property
    def identity(self) -> str: ...

    @property
    def last_stats(self) -> GenerationStats: ...

    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig, *, seed: int = 0,
                 num_samples: int = 1) -> list[list[str]]:
        """Continue each prompt `num_samples` times.

        Args:
            prompts: the prompts, in any order; the output keeps it. Each is raw text (`str`) or a
                list of chat messages (`evalkit.core.chat.Message`: role and content), which the
                backend renders as its model expects (its chat template), or refuses with a
                `ConfigError` naming why.
            config: max new tokens, stop strings, temperature (0 = greedy) and top_p (`config.chat`
                says whether the run is in chat mode; the prompts' type says what each one is).
            seed: makes sampling reproducible; greedy ignores it.
            num_samples: continuations per prompt.

        Returns:
            One list per prompt of `num_samples` raw continuations (prompt excluded), each
            cut before the first stop string (`evalkit.core.extract.cut_at_stop`: leading
            whitespace never ends one) and ended by the model's EOS or end-of-turn token.
        """
        ...


def missing_members(backend: object) -> list[str]:
    """The `ModelBackend` members `backend` lacks (looked up statically: reading `identity` may hash
    every weight, so `isinstance(backend, ModelBackend)` is avoided on Python < 3.12)."""
    missing = []
    for name in ("identity", "last_stats", "generate"):
        try:
            inspect.getattr_static(backend, name)
        except AttributeError:
            missing.append(name)
    return missing


@runtime_checkable
class ExampleGenerator(Protocol):
    """Optional: a backend that answers examples rather than bare prompts (e.g. the oracle).

    When a backend has it, the runner calls `generate_examples` instead of `generate`.
    """

    def generate_examples(self, examples: Sequence[Example], config: GenerationConfig, *, seed: int = 0,
                          num_samples: int = 1) -> list[list[str]]:
        """Like `ModelBackend.generate`, given the examples (prompt, reference, fields) themselves."""
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """Optional: a backend that counts tokens the way its model does.

    The runner uses it to size a task's `max_new_tokens` from its longest reference when the task
    sets none; without it the length is counted in characters (an upper bound for most tokenizers).
    """

    def count_tokens(self, text: str) -> int:
        """How many tokens the model spends writing `text`."""
        ...


@runtime_checkable
class HasDevice(Protocol):
    """Optional: a backend that says where its model runs (recorded as the run's `environment.device`)."""

    @property
    def device(self) -> Any: ...


@runtime_checkable
class ChatTemplated(Protocol):
    """Optional: a backend that renders chat messages with a template of its own (a tokenizer's chat
    template), so what the model sees in chat mode depends on more than its weights."""

    @property
    def chat_template_id(self) -> str:
        """A short fingerprint of the template ("none" when there is none)."""
        ...


def chat_identity(backend: object, identity: str) -> str:
    """The model identity a chat-mode run uses: `identity`, plus the backend's chat template fingerprint
    when it renders messages itself (`ChatTemplated`)."""
    try:
        inspect.getattr_static(backend, "chat_template_id")
    except AttributeError:
        return identity
    return f"{identity}#chat-template:{backend.chat_template_id}"  # type: ignore[attr-defined]
