"""`train.bf16`: whether the Trainer runs its steps under bfloat16 autocast.

    bf16: true     # always (warned where the hardware only emulates it)
    bf16: false    # never (fp32)
    bf16: auto     # where the hardware does bfloat16 natively: a CUDA GPU that supports it, or a CPU with
                   # AVX512-BF16 / AMX (oneDNN's own test); fp32 elsewhere

Why `auto` exists: on a CPU without native bfloat16 (AVX2 only: AMD Zen 3, most laptops) autocast is emulated,
and a SmolLM2-135M forward and backward took 64-69 s under it against 4.2 s in fp32 (2026-12-01, AMD EPYC
Zen 3, 1 thread) — a recipe measured 1.4x faster with bf16 on one machine is 15x slower on another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Setting = bool | Literal["auto"]


@dataclass(frozen=True)
class Precision:
    """What a run trains in, and why (the record's `meta.training.bf16`)."""

    bf16: bool
    setting: Setting
    native: bool  # whether this device does bfloat16 natively
    device: str

    def warning(self) -> str | None:
        """A line for the user when `bf16: true` asks for what this device only emulates."""
        if self.bf16 and not self.native:
            return (f"train.bf16: true on a {self.device} without native bfloat16: autocast is emulated and "
                    "each step can be many times slower than fp32 (15x measured on an AVX2 CPU); "
                    "`bf16: auto` trains in fp32 here")
        return None

    def to_dict(self) -> dict[str, object]:
        return {"bf16": self.bf16, "setting": self.setting, "native": self.native, "device": self.device}


def native_bf16() -> tuple[bool, str]:
    """(whether the training device does bfloat16 natively, its name): the GPU when there is one (the Trainer
    uses it), else the CPU."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported()), "CUDA GPU"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        native = False
    return native, "CPU"


def resolve(setting: Setting | None, native: bool | None = None, device: str | None = None) -> Precision:
    """The precision `setting` (None: the default, false) means on this device, or on the one that `native`
    and `device` describe (both given)."""
    if native is None or device is None:
        native, device = native_bf16()
    setting = False if setting is None else setting
    use = native if setting == "auto" else bool(setting)
    return Precision(use, setting, native, device)


__all__ = ["Precision", "Setting", "native_bf16", "resolve"]
