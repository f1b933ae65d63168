"""Task files that failed to load, kept aside so that they block only what needs them.

A command that names `addition` does not need `tasks/oops.yaml`; a command that asks for every task,
a glob or a tag might (the broken file could define a matching task), and so does a name that no
loaded task has. `evalkit tasks` lists broken files as such. Nothing is skipped silently: whatever
needs a broken file stops with its error (exit 2), naming the file and field.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evalkit._yaml import read_yaml
from evalkit.errors import ConfigError


@dataclass(frozen=True)
class BrokenSource:
    """A task file or entry point that failed to load.

    Attributes:
        source: the file's path, or `entry point NAME = VALUE`.
        error: what loading it raised (a ConfigError: the message names the file and field).
        names: the task names it declares, when they can be read without loading it (a YAML task's
            `name:`); empty when unknown (a Python file that fails to import could define any task).
    """

    source: str
    error: ConfigError
    names: tuple[str, ...] = ()

    def may_define(self, pattern: str) -> bool:
        """Whether this file could define a task matching a name or glob (`tag:` patterns: always)."""
        if not self.names or pattern.startswith("tag:"):
            return True
        return any(fnmatch.fnmatchcase(n, pattern) for n in self.names)


def declared_names(path: Path) -> tuple[str, ...]:
    """The `name:` of a YAML task file, read without validating it; () when it cannot be read."""
    if path.suffix not in (".yaml", ".yml"):
        return ()
    try:
        data = read_yaml(path, "task file")
    except Exception:  # noqa: BLE001 - unreadable: the name is unknown, so the file may define anything
        return ()
    name = data.get("name") if isinstance(data, dict) else None
    return (name,) if isinstance(name, str) and name else ()


def broken_error(broken: Sequence[BrokenSource]) -> ConfigError:
    """One error for the broken files a command needs: the file's own error when there is one, else a
    list of them (exit 2 either way)."""
    if len(broken) == 1:
        return broken[0].error
    lines = "\n".join(f"  {b.error}" for b in broken)
    return ConfigError(f"{len(broken)} task files could not be loaded:\n{lines}")


__all__ = ["BrokenSource", "broken_error", "declared_names"]
