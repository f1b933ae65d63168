"""GGUF files (llama.cpp's format) as transformers models: load one for evaluation, or turn one into
an ordinary safetensors folder that loads, evaluates and fine-tunes like any other.

transformers reads a GGUF with the `gguf` package (in the [train] extra) and dequantizes it: the
weights come out in float32 (or `dtype`), and the tokenizer with its chat template and special tokens
comes from the file's metadata. Everything is local (`local_files_only`): nothing here touches the hub.

The loaded model still carries the file's `quantization_config` (transformers then refuses to save
or train it), so `gguf_to_folder` copies the weights into a model built from the same config without
that key, saves it with the tokenizer and a generation config whose EOS is the tokenizer's (a chat
model's end of turn), and loads the folder back to check it computes the same logits.

This module imports torch and transformers: only code that runs a model imports it.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: The prompt whose logits must agree between the GGUF and the folder written from it.
CHECK_PROMPT = "The sum of 17 and 25 is"


def load_gguf(path: str | os.PathLike[str], device: str | torch.device = "cpu",
              dtype: torch.dtype | str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model (dequantized: float32 unless `dtype` says otherwise; eval mode, on `device`) and its
    tokenizer from a local .gguf file.

    Raises:
        FileNotFoundError: `path` is not a file.
        ImportError: the `gguf` package is missing.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "de-quantizing" bar in evalkit's own output
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise FileNotFoundError(f"no GGUF file at {p}")
    kwargs: dict[str, Any] = {"gguf_file": p.name, "local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model: Any = AutoModelForCausalLM.from_pretrained(p.parent, **kwargs)  # Any: transformers' stubs wrap .to badly
    tokenizer = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name, local_files_only=True)
    return model.to(device).eval(), tokenizer


def plain_copy(model: PreTrainedModel) -> PreTrainedModel:
    """The same weights in a model built from the same config without `quantization_config`: one
    that saves, trains and loads like any other (the GGUF-loaded one refuses to save or train)."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain: Any = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.eval()


def gguf_to_folder(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the GGUF at `path` as an ordinary float32 safetensors folder `out` (created; it should be
    a fresh folder: the caller renames it into place when this returns).

    The folder holds config.json (no quantization_config), model.safetensors, the tokenizer files with
    the chat template, and generation_config.json with the tokenizer's BOS/EOS/PAD ids.

    Raises:
        RuntimeError: the written folder does not compute the same logits as the GGUF.
    """
    model, tokenizer = load_gguf(path)
    plain = plain_copy(model)
    gen = plain.generation_config
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, key, None)
        if value is not None:
            setattr(gen, key, value)
    if gen.pad_token_id is None:
        gen.pad_token_id = gen.eos_token_id
    max_positions = getattr(plain.config, "max_position_embeddings", None)
    if isinstance(max_positions, int):
        tokenizer.model_max_length = max_positions
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(target)  # safetensors
    tokenizer.save_pretrained(target)
    _drop_load_flags(target / "tokenizer_config.json")
    check_same_logits(model, tokenizer, target)
    return target


def _drop_load_flags(path: Path) -> None:
    """The flags the GGUF was loaded with are no property of the tokenizer: keep them out of its config."""
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in ("is_local", "local_files_only", "gguf_file"):
            data.pop(key, None)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def check_same_logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Load `folder` back (local files only) and compare its logits with `model`'s on CHECK_PROMPT.

    Raises:
        RuntimeError: they differ, or the folder's tokenizer encodes the prompt differently.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded: Any = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    reloaded_tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    ids = tokenizer(CHECK_PROMPT, return_tensors="pt").input_ids
    if reloaded_tok(CHECK_PROMPT, return_tensors="pt").input_ids.tolist() != ids.tolist():
        raise RuntimeError(f"the tokenizer saved in {folder} encodes {CHECK_PROMPT!r} differently from the GGUF's")
    with torch.no_grad():
        expected = model(ids.to(model.device)).logits.float().cpu()
        got = reloaded.eval()(ids).logits.float()
    diff = (expected - got).abs().max().item()
    if not diff <= 1e-4:
        raise RuntimeError(f"the model saved in {folder} differs from the GGUF: max |logit difference| = {diff:.3g}")
