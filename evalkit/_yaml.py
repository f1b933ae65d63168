"""Reading YAML files the user wrote: every failure is a ConfigError naming the file (and line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from evalkit.errors import ConfigError


def read_yaml(path: Path, what: str = "file") -> Any:
    """The parsed YAML document at `path`.

    Raises:
        ConfigError: missing, unreadable, or not valid YAML (with the line and column).
    """
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what}: {exc}", file=path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", file=path) from None
