"""`load_tasks`: the tasks a program asks for, by name, glob, tag, path or object.

    tasks = evalkit.load_tasks(["addition", "*_extract", "tag:math"])     # the project's tasks
    tasks = evalkit.load_tasks("tasks/my_task.py")                       # every task of one file
    tasks = evalkit.load_tasks([MyTask, "addition"])                      # @task classes mixed in
    tasks = evalkit.load_tasks(tags=["arithmetic"])                       # every task with the tag

Names, globs and `tag:NAME` are resolved as `evalkit run --task` resolves them: against the
project's task folders (`[tool.evalkit] tasks` in the nearest pyproject.toml, else `tasks/`, else
evalkit's bundled examples) and the `evalkit.tasks` entry points. Nothing is skipped silently:
an unknown name is an UnknownTaskError with close matches, a path that holds no task is a
ConfigError, a value of the wrong type is a TypeError that says what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import Any, TypeAlias, Union

from evalkit.core.task import Task, TaskLike, as_task, describe, is_task_like
from evalkit.discovery.registry import Registry, discover, load_path, same_source
from evalkit.errors import ConfigError, UnknownTaskError

TaskRef: TypeAlias = Union[TaskLike, str, "os.PathLike[str]"]
"""One way to name tasks: a Task or @task-decorated class; a name, glob or `tag:NAME`; a path to a task
file or folder (a `Path`, or a string ending in .py/.yaml/.yml or holding a slash)."""

_EXPECTED = "a task name, glob or 'tag:NAME', a path to a task file or folder, a Task or a @task-decorated class"
_PathArg: TypeAlias = Union[str, "os.PathLike[str]"]


def load_tasks(
    tasks: TaskRef | Iterable[TaskRef] | None = None,
    *,
    tags: str | Sequence[str] = (),
    tasks_dir: _PathArg | Sequence[_PathArg] | None = None,
    entry_points: bool = True,
    registry: Registry | Callable[[], Registry] | None = None,
    project: _PathArg | None = None,
) -> list[Task]:
    """Load tasks as the CLI selects them, and return them as `Task` objects.

    Args:
        tasks: one task reference or a list of them (None: every task found). Each is
            - a task name (`"addition"`), a glob (`"*_extract"`) or `"tag:NAME"`, looked up in the
              project's tasks;
            - a path to a task file or folder (a `pathlib.Path`, or a string ending in `.py`,
              `.yaml` or `.yml`, or holding a `/`), loaded directly (relative to the working
              directory);
            - a `Task`, or a class or factory decorated with `@task` (or an instance of such a class).
        tags: keep only the tasks carrying every one of these tags.
        tasks_dir: task folders or files to search instead of the project's (like `--tasks-dir`).
        entry_points: also search the `evalkit.tasks` entry points (like the CLI; False is
            `--no-entry-points`).
        registry: search this Registry instead of discovering one (tasks_dir, entry_points and
            project are then unused), or a function returning it, called only when a name needs it.
        project: a folder in the project whose pyproject.toml to read (default: the working directory).

    Returns:
        The tasks in the order asked for, each once (a glob or tag gives its tasks by name).
        Task folders are only searched when a name, glob or tag (or `tasks=None`) needs them.

    Raises:
        UnknownTaskError: a name, glob, tag or `tags` entry that matches no task (with close matches).
        ConfigError: a path that does not exist or holds no task; two different tasks with one name;
            a task file that does not load (PluginImportError).
        TypeError: a value that is none of the above.
    """
    found = _Found(registry, tasks_dir, entry_points, project)
    chosen: dict[str, Task] = {}
    if tasks is None:
        for t in found.registry():
            _choose(chosen, t)
    elif isinstance(tasks, (str, os.PathLike)) or is_task_like(tasks):
        for t in _resolve(tasks, "tasks", found, {}):
            _choose(chosen, t)
    elif isinstance(tasks, Iterable) and not isinstance(tasks, (bytes, dict)):
        built: dict[int, Task] = {}  # one Task per decorated object, however often it is named
        for index, item in enumerate(tasks):
            for t in _resolve(item, f"tasks[{index}]", found, built):
                _choose(chosen, t)
    else:
        raise TypeError(f"tasks: expected {_EXPECTED}, or a list of them; got {describe(tasks)}")
    selected = list(chosen.values())
    for tag in [tags] if isinstance(tags, str) else tags:
        in_use = sorted({g for t in [*selected, *found.known()] for g in t.tags})
        if tag not in in_use:
            close = get_close_matches(tag, in_use, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
            raise UnknownTaskError(f"no task has tag {tag!r}{hint} Tags in use: {', '.join(in_use) or 'none'}.")
        selected = [t for t in selected if tag in t.tags]
    return selected


def _looks_like_path(text: str) -> bool:
    return text.endswith((".py", ".yaml", ".yml")) or "/" in text or os.sep in text or text in (".", "..")


class _Found:
    """The registry to select names from, discovered on first use (explicit tasks need none)."""

    def __init__(self, registry: Registry | Callable[[], Registry] | None, tasks_dir: Any, entry_points: bool,
                 project: Any):
        self._make = registry if callable(registry) else None
        self._registry = registry if isinstance(registry, Registry) else None
        self._dirs = None if tasks_dir is None else (
            [Path(tasks_dir)] if isinstance(tasks_dir, (str, os.PathLike)) else [Path(p) for p in tasks_dir])
        self._entry_points = entry_points
        self._project = project

    def registry(self) -> Registry:
        if self._registry is None:
            if self._make is not None:
                self._registry = self._make()
            elif self._dirs is not None:
                self._registry = discover(self._dirs, entry_points=self._entry_points)
            else:
                from evalkit.config import load_config

                config = load_config(Path(self._project) if self._project is not None else None)
                self._registry = discover(config.tasks, entry_points=self._entry_points,
                                          fallback_to_bundled=not config.tasks_configured)
        return self._registry

    def known(self) -> list[Task]:
        return list(self._registry) if self._registry is not None else []


def _resolve(item: Any, where: str, found: _Found, built: dict[int, Task]) -> list[Task]:
    if isinstance(item, Task):
        return [item]
    if is_task_like(item):
        if id(item) not in built:
            built[id(item)] = as_task(item)
        return [built[id(item)]]
    if isinstance(item, os.PathLike) or (isinstance(item, str) and _looks_like_path(item)):
        path = Path(item)
        loaded = load_path(path)
        if not loaded:
            what = "folder holds no task files" if path.is_dir() else "file defines no task (no @task class)"
            raise ConfigError(what, file=path)
        return loaded
    if isinstance(item, str):
        if not item.strip():
            raise UnknownTaskError(f"{where}: an empty task name")
        try:
            return found.registry().select([item])
        except UnknownTaskError as exc:
            if Path(item).exists():
                hint = f" For the folder or file {item!r}, pass Path({item!r}) or './{item}'."
                raise UnknownTaskError(f"{exc}{hint}") from None
            raise
    raise TypeError(f"{where}: expected {_EXPECTED}; got {describe(item)}")


def _choose(chosen: dict[str, Task], t: Task) -> None:
    existing = chosen.get(t.name)
    if existing is None:
        chosen[t.name] = t
    elif existing is not t and not same_source(existing, t):
        raise ConfigError(f"two different tasks are named {t.name!r}: from {existing.source or 'a Task object'} and "
                          f"from {t.source or 'a Task object'}", file=t.source)
