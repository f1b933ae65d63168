"""Project settings: `[tool.evalkit]` in the nearest pyproject.toml."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from evalkit.errors import ConfigError


@dataclass(frozen=True)
class ProjectConfig:
    """Settings of one project.

    Attributes:
        root: the folder holding pyproject.toml (or the working directory when there is none).
        pyproject: the pyproject.toml read, if any.
        tasks: task folders/files, absolute.
        reports: the reports folder, absolute.
        tasks_configured: whether `tasks` came from pyproject (vs the default "tasks").
        raw: the whole `[tool.evalkit]` table, for later sections (gate, ...).
    """

    root: Path
    pyproject: Path | None
    tasks: tuple[Path, ...]
    reports: Path
    tasks_configured: bool = False
    raw: dict[str, Any] = field(default_factory=dict)


def find_pyproject(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_config(start: Path | None = None) -> ProjectConfig:
    """Read `[tool.evalkit]` from the nearest pyproject.toml at or above `start` (default: cwd).

    Paths in it are relative to the pyproject's folder. Missing keys take defaults:
    tasks = ["tasks"], reports = "reports".
    """
    start = (start or Path.cwd()).resolve()
    pyproject = find_pyproject(start)
    raw: dict[str, Any] = {}
    root = start
    if pyproject is not None:
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"not valid TOML: {exc}", file=pyproject) from None
        raw = data.get("tool", {}).get("evalkit", {})
        if not isinstance(raw, dict):
            raise ConfigError("expected a table", file=pyproject, field="tool.evalkit")
        if raw:
            root = pyproject.parent
    tasks = raw.get("tasks", ["tasks"])
    if isinstance(tasks, str):
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ConfigError("expected a list of folder paths (strings)", file=pyproject, field="tool.evalkit.tasks")
    reports = raw.get("reports", "reports")
    if not isinstance(reports, str):
        raise ConfigError("expected a folder path (string)", file=pyproject, field="tool.evalkit.reports")
    return ProjectConfig(
        root=root,
        pyproject=pyproject,
        tasks=tuple((root / t).resolve() for t in tasks),
        reports=(root / reports).resolve(),
        tasks_configured="tasks" in raw,
        raw=raw,
    )
