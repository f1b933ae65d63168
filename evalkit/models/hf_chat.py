"""Prompts for a Hugging Face tokenizer, raw or chat, and the tokens that end a model's turn.

What `HFBackend` does with a prompt, as public functions that training can reuse to build exactly the
input the evaluation builds:

    text = render_chat(tokenizer, messages)     # the chat template, with the assistant's opening
    ids = encode_prompt(tokenizer, messages)     # == tokenizer(text, add_special_tokens=False) ids
    ids = encode_prompt(tokenizer, "12+34=")     # raw: the tokenizer adds its special tokens (BOS)
    rows = token_ids(tokenizer, texts, special=False)  # == tokenizer(texts, ...)["input_ids"], batched and fast

A rendered chat prompt already holds the special tokens the template writes (its BOS among them), so it
is tokenized without adding them again — as `apply_chat_template(..., tokenize=True)` does.

This module imports neither torch nor transformers: it works on the tokenizer it is given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from evalkit.core.chat import Message, Prompt, as_messages
from evalkit.errors import ConfigError

#: Special tokens that end a turn in common chat templates (ChatML, Llama 3, Gemma, Phi-3, Command-R).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>",
                      "<|END_OF_TURN_TOKEN|>")


def chat_template(tokenizer: Any) -> str | None:
    """The tokenizer's (default) chat template, None when it has none."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template if isinstance(template, str) and template.strip() else None


def chat_template_id(tokenizer: Any) -> str:
    """A short fingerprint of the tokenizer's chat template ("none" without one)."""
    template = chat_template(tokenizer)
    if template is None:
        return "none"
    return hashlib.blake2b(template.encode(), digest_size=8).hexdigest()


def render_chat(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The chat prompt as text: the tokenizer's chat template applied to `messages`, followed by the
    opening of the assistant's turn (`add_generation_prompt=True`).

    Raises:
        ConfigError: the tokenizer has no chat template (a base model: run without chat mode), or the
            template refuses the messages (e.g. one without a system role).
        TypeError, ValueError: malformed messages.
    """
    checked = as_messages(messages)
    if chat_template(tokenizer) is None:
        name = getattr(tokenizer, "name_or_path", "")
        of = f" of {name}" if name else ""
        raise ConfigError(f"the tokenizer{of} has no chat template, so chat mode cannot render its prompts: run "
                          "without --chat (raw prompts), or use an instruct model whose tokenizer_config.json "
                          "holds a chat_template", field="--chat")
    try:
        text = tokenizer.apply_chat_template([dict(m) for m in checked], add_generation_prompt=True,
                                             tokenize=False)
    except Exception as exc:  # noqa: BLE001 - jinja2 errors and the template's own raise_exception
        raise ConfigError(f"the chat template refused the messages: {type(exc).__name__}: {exc}",
                          field="--chat") from None
    if not isinstance(text, str):  # a batch or an encoding: not what tokenize=False promises
        raise ConfigError(f"apply_chat_template returned {type(text).__name__}, not text", field="--chat")
    return text


def token_ids(tokenizer: Any, texts: Sequence[str], *, special: bool) -> list[list[int]]:
    """`tokenizer(texts, add_special_tokens=special)["input_ids"]`, as lists.

    A fast tokenizer's ids come straight from its Rust tokenizer's `encode_batch`, which is what that call
    runs, without the per-text Python conversion around it (18 us a text: finetune/addition.yaml's 60,000
    training rows took 5.3 s to tokenize, about 2 s this way). Only while the Rust tokenizer is set up as that
    call would set it (no truncation, no padding, special-token strings split as the tokenizer says);
    otherwise, and for a slow tokenizer, the call itself.
    """
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if (backend is not None and backend.truncation is None and backend.padding is None
            and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False))):
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # fast: no offsets (tokenizers 0.21+)
        return [e.ids for e in encode(list(texts), add_special_tokens=special)]
    return [list(row) for row in tokenizer(list(texts), add_special_tokens=special)["input_ids"]]


def encode_prompts(tokenizer: Any, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids of each prompt: raw text with the tokenizer's special tokens added (BOS), a list of
    messages rendered by `render_chat` and tokenized without adding any (the template wrote them)."""
    ids: list[list[int]] = [[] for _ in prompts]
    raw: dict[int, str] = {}
    chat: dict[int, str] = {}
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            raw[i] = p
        else:
            chat[i] = render_chat(tokenizer, p)
    for texts, special in ((raw, True), (chat, False)):
        if texts:
            for i, row in zip(texts, token_ids(tokenizer, list(texts.values()), special=special)):
                ids[i] = row
    return ids


def encode_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of one prompt (see `encode_prompts`)."""
    return encode_prompts(tokenizer, [prompt])[0]


def end_of_turn_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of the end-of-turn tokens (`END_OF_TURN_TOKENS`) that the tokenizer holds as special tokens."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special = {getattr(tok, "content", str(tok)): i for i, tok in decoder.items() if getattr(tok, "special", False)}
    return frozenset(special[t] for t in END_OF_TURN_TOKENS if t in special)


def eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """The ids that end a row: the model's generation_config.eos_token_id (an int or a list) and the
    tokenizer's eos_token_id. `stop_ids` adds the end-of-turn tokens."""
    found: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    for src in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        found.update([src] if isinstance(src, int) else (src or []))
    return frozenset(found)


def stop_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every id that ends a model's answer, in raw and chat mode alike: `eos_ids` and `end_of_turn_ids`."""
    return eos_ids(model, tokenizer) | end_of_turn_ids(tokenizer)


__all__ = ["END_OF_TURN_TOKENS", "chat_template", "chat_template_id", "encode_prompt", "encode_prompts",
           "end_of_turn_ids", "eos_ids", "render_chat", "stop_ids", "token_ids"]
