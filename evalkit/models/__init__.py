"""Model backends: the one contract (`ModelBackend`, plus the optional `ExampleGenerator`,
`TokenCounter` and `HasDevice` capabilities) and its implementations.

`base` and `python` import no torch. `hf` (Hugging Face models) and `tiny` (tiny models
built from a config, for tests and the embedded default) import torch/transformers; they
are loaded on first attribute access, so `import evalkit.models` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from evalkit.models.base import ExampleGenerator, GenerationStats, HasDevice, ModelBackend, TokenCounter
from evalkit.models.python import PythonCallableBackend

_LAZY = {
    "HFBackend": "hf",
    "build_char_tokenizer": "tiny",
    "tiny_llama": "tiny",
    "tiny_gpt2": "tiny",
    "save_model": "tiny",
    "load_model": "tiny",
}

__all__ = ["ExampleGenerator", "GenerationStats", "HFBackend", "HasDevice", "ModelBackend", "PythonCallableBackend",
           "TokenCounter", "build_char_tokenizer", "load_model", "save_model", "tiny_gpt2", "tiny_llama"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
