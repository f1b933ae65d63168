"""Task packs: families of tasks that another library generates, selected by a name prefix.

    evalkit tasks 'rg:*'                          # every reasoning-gym dataset, as evalkit tasks
    evalkit selftest rg:graph_color --level 2
    evalkit run --model oracle --task rg:graph_color -n 50

A pack's tasks are named `PREFIX:NAME` (`rg:graph_color`). The Registry asks a pack only for names
carrying its prefix, so a project's own tasks are listed, run and self-tested exactly as before and
the library behind a pack is imported only when one of its names is asked for. A pack whose library
is not installed is a ConfigError (exit 2) naming the extra to install.

A pack module defines `PACK`, an object with the `Pack` methods below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from evalkit.core.task import Task

SEPARATOR = ":"

PACKS: dict[str, str] = {
    "rg": "evalkit.packs.reasoning_gym",  # reasoning-gym's procedural datasets: pip install 'evalkit[reasoning-gym]'
}
"""Pack prefix -> the module defining its `PACK` (imported on first use)."""


class Pack(Protocol):
    """What the Registry needs from a pack."""

    prefix: str

    def names(self) -> list[str]:
        """Every task name the pack offers (`PREFIX:NAME`), sorted. ConfigError if its library is missing."""
        ...

    def unavailable(self) -> dict[str, str]:
        """Names the library has but the pack cannot offer, each with the reason (shown, never skipped
        silently)."""
        ...

    def task(self, name: str) -> Task:
        """The task called `name` (the same object on every call); UnknownTaskError if not offered."""
        ...


def pack_prefix(name: str) -> str | None:
    """The prefix of a known pack that `name` (a task name or glob) starts with, else None."""
    head, sep, _ = name.partition(SEPARATOR)
    return head if sep and head in PACKS else None


_LOADED: dict[str, Pack] = {}


def get_pack(prefix: str) -> Pack:
    """The pack for `prefix` (its module is imported once; the library behind it only when asked)."""
    if prefix not in _LOADED:
        module = importlib.import_module(PACKS[prefix])
        _LOADED[prefix] = module.PACK
    return _LOADED[prefix]


__all__ = ["PACKS", "SEPARATOR", "Pack", "get_pack", "pack_prefix"]
