"""Tiny models built from a config, with a character-level tokenizer made locally.

Nothing here downloads: the tokenizer is built with the `tokenizers` library, the models
are randomly initialised from a config, and `load_model` only reads a local directory.
The reference point: `tiny_llama(build_char_tokenizer())` is a ~1.1M-parameter
Llama (hidden 128, 4 layers) that learns 3-digit addition in a few minutes on two cores.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
#: Printable ASCII (space to ~), newline and tab.
DEFAULT_ALPHABET = "".join(chr(i) for i in range(32, 127)) + "\n\t"


def build_char_tokenizer(alphabet: str | None = None, *, padding_side: str = "left",
                         add_bos: bool = True, model_max_length: int | None = None,
                         ) -> PreTrainedTokenizerBase:
    """A character-level fast tokenizer: one token per character of `alphabet`.

    Ids 0-3 are <pad>, <s> (bos), </s> (eos), <unk>; then the alphabet in order. Characters
    outside the alphabet encode as <unk>. `decode(encode(s), skip_special_tokens=True) == s`
    for any `s` over the alphabet, even one containing "<s>": special tokens are never
    parsed from text (`split_special_tokens`), so training code must append EOS by id
    (`tokenizer.eos_token_id`), not as the string "</s>".

    Args:
        alphabet: the characters (default: printable ASCII, newline, tab); duplicates dropped.
        padding_side: "left" (for generation) or "right".
        add_bos: prepend <s> when encoding with special tokens (as Llama does).
        model_max_length: recorded in the tokenizer (default: unlimited).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(alphabet if alphabet is not None else DEFAULT_ALPHABET))
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *chars])}
    if len(vocab) != len(SPECIAL_TOKENS) + len(chars):
        raise ValueError("the alphabet must not contain the special tokens' strings")
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Every character is its own pre-token ([\s\S] also matches newlines); Fuse joins the
    # decoded pieces without the spaces WordLevel would put between them.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])])
    kwargs: dict[str, Any] = {}
    if model_max_length is not None:
        kwargs["model_max_length"] = model_max_length
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        padding_side=padding_side, clean_up_tokenization_spaces=False,
        split_special_tokens=True,  # "<s>" typed in a prompt is three characters, not BOS
        **kwargs)


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    return {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}


def _finish(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    ids = _special_ids(tokenizer)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        setattr(model.generation_config, key, ids[key])
    return model.eval()


def _seeded_init(seed: int, build: Any) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG alone
        torch.manual_seed(seed)
        return build()


def tiny_llama(tokenizer: PreTrainedTokenizerBase, hidden: int = 128, layers: int = 4,
               heads: int = 4, intermediate: int | None = None, max_positions: int = 256,
               seed: int = 0, *, kv_heads: int | None = None, tie_embeddings: bool = False,
               ) -> PreTrainedModel:
    """A randomly initialised `LlamaForCausalLM` on CPU (float32) sized for `tokenizer`.

    `intermediate` defaults to 4 x hidden. Initialisation is deterministic in `seed` and
    does not touch the global torch RNG. The model is returned in eval mode.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads, intermediate_size=intermediate or 4 * hidden,
        max_position_embeddings=max_positions, tie_word_embeddings=tie_embeddings,
        **_special_ids(tokenizer))
    return _finish(_seeded_init(seed, lambda: LlamaForCausalLM(config)), tokenizer)


def tiny_gpt2(tokenizer: PreTrainedTokenizerBase, hidden: int = 128, layers: int = 4,
              heads: int = 4, intermediate: int | None = None, max_positions: int = 256,
              seed: int = 0) -> PreTrainedModel:
    """A randomly initialised `GPT2LMHeadModel` on CPU (float32); see `tiny_llama`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_inner=intermediate,
                        n_positions=max_positions, **_special_ids(tokenizer))
    return _finish(_seeded_init(seed, lambda: GPT2LMHeadModel(config)), tokenizer)


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None,
               path: str | os.PathLike[str]) -> Path:
    """Save model (safetensors) and tokenizer to `path`, atomically.

    Everything is written to a temporary directory beside `path`, which then replaces it
    by rename: a reader sees the old directory or the complete new one, never a partial
    one (an existing `path` is moved aside first and removed after).
    """
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)  # safetensors is the default format
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():  # durable before it becomes visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu",
               dtype: torch.dtype | str | None = None,
               ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model and its tokenizer from a LOCAL directory, or a local .gguf file (never the hub).

    Returns:
        (model in eval mode on `device`, tokenizer). A .gguf is dequantized (float32 unless `dtype`).

    Raises:
        FileNotFoundError: when `path` is not a directory with a config.json, nor a .gguf file.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar in evalkit's own output
    p = Path(path)
    if p.suffix.lower() == ".gguf" and p.is_file():  # llama.cpp's format: evalkit.models.gguf_file
        from evalkit.models.gguf_file import load_gguf

        return load_gguf(p, device=device, dtype=dtype)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"no model at {p} (expected a directory with config.json)")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model: Any = AutoModelForCausalLM.from_pretrained(p, **kwargs)  # Any: transformers' stubs wrap .to badly
    model = model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True)
    return model.eval(), tokenizer
