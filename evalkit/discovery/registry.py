"""Finding tasks: task folders (Python and YAML files) and the `evalkit.tasks` entry points.

A plugin that fails to import, a task file with an error, two tasks with one name, an
unknown name: each is an error (exit 2) naming the file — silently skipping a task would
let a gate pass. With `discover(..., keep_broken=True)` (the command line) a file that fails to
load is kept aside (`Registry.broken`) and raises only when a lookup needs it: a run of `addition`
is not stopped by a typo in another task's file, a run of every task is.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import importlib.util
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from evalkit.core.task import TASK_MARKER, Task, TaskLike, as_task, describe
from evalkit.discovery.broken import BrokenSource, broken_error, declared_names
from evalkit.errors import ConfigError, PluginImportError, UnknownTaskError
from evalkit.packs import get_pack, pack_prefix

ENTRY_POINT_GROUP = "evalkit.tasks"
_SKIP_DIRS = {"data", "__pycache__"}


def bundled_tasks_dir() -> Path:
    """The example tasks shipped with evalkit (the wheel's copy, else the source checkout's)."""
    package = Path(__file__).resolve().parent.parent  # evalkit/
    installed = package / "_bundled_tasks"
    return installed if installed.is_dir() else package.parent / "tasks"


def _task_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).parts
        if any(p.startswith((".", "_")) or p in _SKIP_DIRS for p in rel[:-1]):
            continue
        if path.name.startswith((".", "_")) or not path.is_file():
            continue
        if path.suffix == ".py" or path.suffix in (".yaml", ".yml"):
            files.append(path)
    return files


def _import_file(path: Path) -> ModuleType:
    # A unique, dot-free module name per file: two task folders may both hold "addition.py".
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    name = f"evalkit_task_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginImportError(f"cannot import {path}", file=path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ConfigError:
        raise
    except BaseException as exc:  # any import failure is the plugin's error
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PluginImportError(f"failed to import: {_where(exc, path)}", file=path) from exc
    return module


def _where(exc: BaseException, path: Path) -> str:
    """`ExcType: message (line N)` with the deepest frame inside the plugin file."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    if isinstance(exc, SyntaxError) and exc.lineno:
        line = exc.lineno
    suffix = f" (line {line})" if line else ""
    return f"{type(exc).__name__}: {exc}{suffix}"


def _tasks_in_module(module: ModuleType, source: str) -> list[Task]:
    found = []
    for obj in list(vars(module).values()):
        if isinstance(obj, Task):
            found.append(obj)
        elif hasattr(obj, TASK_MARKER) and getattr(obj, "__module__", None) == module.__name__:
            found.append(_build(obj, source))
    return found


def _build(obj: Any, source: str) -> Task:
    try:
        return Task.from_decorated(obj, source=source)
    except ConfigError:
        raise
    except Exception as exc:  # a task that cannot be built is the plugin's error
        name = getattr(getattr(obj, TASK_MARKER, None), "name", getattr(obj, "__name__", "?"))
        raise PluginImportError(f"task {name!r} could not be built: {type(exc).__name__}: {exc}",
                                file=source) from exc


def load_path(path: Path) -> list[Task]:
    """All tasks defined by one file (Python or YAML) or folder."""
    path = Path(path)
    if path.is_dir():
        out: list[Task] = []
        for file in _task_files(path):
            out.extend(load_path(file))
        return out
    if not path.exists():
        raise ConfigError("no such task file or folder", file=path)
    if path.suffix in (".yaml", ".yml"):
        from evalkit.discovery.yamltask import load_yaml_task
        from evalkit.lmeval.importer import is_lmeval_task_file, load_lmeval_task

        if is_lmeval_task_file(path):  # an lm-eval task imported by a top-level `lm_eval:` key
            return [load_lmeval_task(path)]

        return [load_yaml_task(path)]
    if path.suffix == ".py":
        return _tasks_in_module(_import_file(path), str(path))
    raise ConfigError("expected a .py, .yaml or .yml task file", file=path)


def _load_entry_point_value(value: Any, source: str) -> list[Task]:
    if isinstance(value, Task):
        return [value]
    if isinstance(value, (str, Path)):
        return load_path(Path(value))
    if isinstance(value, ModuleType):
        return _tasks_in_module(value, source)
    if hasattr(value, TASK_MARKER):
        return [_build(value, source)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _load_entry_point_value(v, source)]
    if callable(value):
        return _load_entry_point_value(value(), source)
    raise PluginImportError(f"entry point gave {type(value).__name__}; expected a task, module, path or list",
                            file=source)


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> list[Task]:
    return [t for _, load in _entry_points(group) for t in load()]


def _entry_points(group: str) -> Iterator[tuple[str, Callable[[], list[Task]]]]:
    """(source, a function loading its tasks) for each entry point of the group."""
    for ep in entry_points(group=group):
        source = f"entry point {ep.name} = {ep.value}"

        def load(ep: Any = ep, source: str = source) -> list[Task]:
            try:
                value = ep.load()
            except Exception as exc:
                raise PluginImportError(f"failed to load: {type(exc).__name__}: {exc}", file=source) from exc
            return _load_entry_point_value(value, source)

        yield source, load


def same_source(a: Task, b: Task) -> bool:
    """Whether two Task objects were loaded from the same file (e.g. tasks/ and an entry point to it)."""
    return bool(a.source and b.source and Path(a.source).resolve() == Path(b.source).resolve())


class Registry:
    """The tasks found, by name. Tasks may be given as Task objects or @task-decorated classes.

    Names with a pack's prefix (`rg:graph_color`, `'rg:*'`: evalkit.packs) are looked up in that pack,
    on request only: `names()`, iteration and the pattern `*` cover the tasks found here, not the packs.
    """

    def __init__(self, tasks: Iterable[TaskLike] = ()):
        self._tasks: dict[str, Task] = {}
        self.broken: list[BrokenSource] = []  # files that failed to load (discover(keep_broken=True))
        for t in tasks:
            self.add(t)

    def add(self, t: TaskLike) -> None:
        """Add a task (a Task or a @task-decorated class); ConfigError if another task has its name."""
        t = as_task(t)
        existing = self._tasks.get(t.name)
        if existing is not None and existing is not t:
            if same_source(existing, t):
                return  # the same file reached twice (e.g. tasks/ and an entry point to it)
            raise ConfigError(f"task {t.name!r} is defined twice: in {existing.source} and in {t.source}",
                              file=t.source)
        self._tasks[t.name] = t

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, name: str) -> bool:
        if name in self._tasks:
            return True
        prefix = pack_prefix(name)
        if prefix is None:
            return False
        try:
            return name in get_pack(prefix).names()
        except ConfigError:  # the pack's library is not installed
            return False

    def broken_for(self, patterns: Sequence[str] = (), tags: Sequence[str] = ()) -> list[BrokenSource]:
        """The broken files a selection needs: for a name, those that declare it (or, when no loaded task
        has it, any whose names are unknown); for every task, a glob or a tag, any that may match."""
        if not self.broken:
            return []
        if tags or not patterns:
            return list(self.broken)
        needed = []
        for b in self.broken:
            for p in patterns:
                exact = not p.startswith("tag:") and not any(ch in p for ch in "*?[")
                if (p in b.names) if exact and p in self._tasks else b.may_define(p):
                    needed.append(b)
                    break
        return needed

    def require(self, patterns: Sequence[str] = (), tags: Sequence[str] = ()) -> None:
        """Raise the error of each broken file the selection needs (see `broken_for`); nothing if none."""
        needed = self.broken_for(patterns, tags)
        if needed:
            raise broken_error(needed)

    def get(self, name: str) -> Task:
        """The task called `name`; UnknownTaskError with close matches otherwise (or the error of a
        broken file that may define it)."""
        self.require([name])
        return self._lookup(name)

    def _lookup(self, name: str) -> Task:
        if name in self._tasks:
            return self._tasks[name]
        prefix = pack_prefix(name)
        if prefix is not None:
            return get_pack(prefix).task(name)
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
        known = f" Known tasks: {', '.join(self.names())}." if self._tasks else " No tasks were found."
        raise UnknownTaskError(f"unknown task {name!r}{hint}{known}")

    def select(self, patterns: Sequence[str] = (), tags: Sequence[str] = (), *,
               skip_broken: bool = False) -> list[Task]:
        """Tasks matching any pattern (exact name, glob, or `tag:NAME`) and carrying all `tags`.

        No patterns means every task. A plain name that is unknown, or a glob/tag (pattern or
        `tags` entry) that matches nothing, is an UnknownTaskError: a typo must not silently select
        fewer tasks. A broken task file the selection needs raises its error, unless `skip_broken`
        (the caller reports `broken_for(...)` itself). (To mix Task objects and paths with names, use
        `evalkit.load_tasks(..., registry=self)`.)
        """
        chosen: dict[str, Task] = {}
        if isinstance(patterns, str):
            patterns = [patterns]
        if isinstance(tags, str):
            tags = [tags]
        if not skip_broken:
            self.require(patterns, tags)
        for pattern in patterns or ["*"]:
            if not isinstance(pattern, str):
                raise TypeError(f"Registry.select takes task names, globs or 'tag:NAME' strings, got "
                                f"{describe(pattern)}; for Task objects or @task classes use evalkit.load_tasks")
            if pattern.startswith("tag:"):
                tag = pattern[4:]
                hits = [t for t in self if tag in t.tags]
                if not hits:
                    all_tags = sorted({g for t in self for g in t.tags})
                    raise UnknownTaskError(f"no task has tag {tag!r}; tags in use: {', '.join(all_tags) or 'none'}")
            elif any(ch in pattern for ch in "*?[") and pack_prefix(pattern):
                hits = self._select_pack(pattern)
            elif any(ch in pattern for ch in "*?["):
                hits = [t for t in self if fnmatch.fnmatchcase(t.name, pattern)]
                if not hits and patterns:
                    raise UnknownTaskError(f"no task matches {pattern!r}; known tasks: {', '.join(self.names())}")
            else:
                hits = [self._lookup(pattern) if skip_broken else self.get(pattern)]
            for t in hits:
                chosen.setdefault(t.name, t)
        selected = list(chosen.values())
        in_use = sorted({g for t in [*self, *selected] for g in t.tags})
        for tag in tags:
            if tag not in in_use:  # a typo in --tag is an error, as a typo in a name is
                close = difflib.get_close_matches(tag, in_use, n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
                raise UnknownTaskError(f"no task has tag {tag!r}{hint} Tags in use: {', '.join(in_use) or 'none'}.")
            selected = [t for t in selected if tag in t.tags]
        return selected

    def _select_pack(self, pattern: str) -> list[Task]:
        """The tasks of a pack (and any found here) whose names match a glob with the pack's prefix."""
        pack = get_pack(pack_prefix(pattern) or "")
        for name, why in pack.unavailable().items():
            if fnmatch.fnmatchcase(name, pattern):  # reported, never skipped silently
                warnings.warn(f"task {name!r} is not offered: {why}", stacklevel=3)
        hits = [t for t in self if fnmatch.fnmatchcase(t.name, pattern)]
        for name in pack.names():
            if fnmatch.fnmatchcase(name, pattern) and name not in self._tasks:
                try:
                    hits.append(pack.task(name))
                except ConfigError as exc:  # one dataset its library cannot build: reported, the others run
                    warnings.warn(str(exc), stacklevel=3)
        if not hits:
            raise UnknownTaskError(f"no task matches {pattern!r}; the {pack.prefix}: pack has {len(pack.names())} "
                                   f"tasks (evalkit tasks '{pack.prefix}:*' lists them)")
        return sorted(hits, key=lambda t: t.name)


def discover(paths: Sequence[Path] = (), *, entry_points: bool = True, fallback_to_bundled: bool = False,
             keep_broken: bool = False) -> Registry:
    """Load every task from `paths` (folders or files) and, optionally, the entry points.

    Args:
        paths: task folders or files. A folder that does not exist is an error unless
            `fallback_to_bundled` is set (the default `tasks/` of a project that has none).
        entry_points: also load the `evalkit.tasks` entry-point group.
        fallback_to_bundled: when no given folder exists, use evalkit's bundled example tasks.
        keep_broken: a file or entry point that fails to load (or defines a task another one
            defines too) goes to `Registry.broken` instead of raising here; the registry raises its
            error when a lookup needs it (`Registry.require`).
    """
    registry = Registry()
    existing = [Path(p) for p in paths if Path(p).exists()]
    if fallback_to_bundled and not existing:
        existing = [bundled_tasks_dir()]
    else:
        for p in paths:
            if not Path(p).exists():
                raise ConfigError("task folder or file not found", file=p)
    sources: list[tuple[str, Callable[[], list[Task]]]] = []
    for p in existing:
        files = _task_files(p) if keep_broken and p.is_dir() else [p]
        sources += [(str(f), functools.partial(load_path, f)) for f in files]
    if entry_points:
        sources += list(_entry_points(ENTRY_POINT_GROUP))
    for source, load in sources:
        if not keep_broken:
            for t in load():
                registry.add(t)
            continue
        try:
            loaded = load()
        except ConfigError as exc:
            registry.broken.append(BrokenSource(source, exc, declared_names(Path(source))))
            continue
        for t in loaded:
            try:
                registry.add(t)
            except ConfigError as exc:  # a second task of one name: both are in doubt
                registry.broken.append(BrokenSource(source, exc, (t.name,)))
    return registry
