"""What the commands share: consoles, warnings as one plain line, the task registry from the common flags,
the level each task runs at, progress (bars on a terminal, a line now and then elsewhere), and writing a
run's rendered reports beside its record."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console

from evalkit._text import safe_text
from evalkit.config import load_config
from evalkit.discovery.registry import Registry, discover
from evalkit.errors import ConfigError, EvalkitError, NothingToRun

if TYPE_CHECKING:
    from rich.progress import Progress

    from evalkit.core.task import Task
    from evalkit.run.record import RunRecord

PROGRESS_ENV = "EVALKIT_PROGRESS_SECONDS"
"""Seconds between the progress lines printed where standard error is not a terminal (default 30)."""


def make_console(stderr: bool = False) -> Console:
    """Standard output (reports, tables) or standard error (progress, notes, errors); never highlighted."""
    return Console(stderr=stderr, highlight=False, soft_wrap=stderr)


def plain_warnings() -> Callable[..., None]:
    """A `warnings.showwarning` for the command line: `warning: MESSAGE` on standard error, each message once,
    without the source line Python's format adds (the category and module too, for another library's)."""
    seen: set[str] = set()

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        text = str(message)
        if text in seen:
            return
        seen.add(text)
        module = Path(filename).stem if filename else "?"
        ours = category is UserWarning or "evalkit" in Path(filename or "").parts
        label = "warning" if ours else f"warning ({category.__name__}, {module})"
        with contextlib.suppress(Exception):  # a warning never stops a command
            make_console(stderr=True).print(safe_text(f"{label}: {text}", 2000, style="yellow"), soft_wrap=True)

    return show


def load_registry(args: argparse.Namespace) -> Registry:
    """Tasks from --tasks-dir (repeatable) or `[tool.evalkit] tasks`, plus entry points. A task file that
    fails to load is kept aside: it stops only the commands that need it (`Registry.broken`)."""
    config = load_config()
    if getattr(args, "lm_eval_defaults", False):
        from evalkit.lmeval import DEFAULTS_ENV

        os.environ[DEFAULTS_ENV] = "1"  # read where an lm-eval import file is loaded
    if args.tasks_dir:
        return discover([Path(p) for p in args.tasks_dir], entry_points=not args.no_entry_points, keep_broken=True)
    # The default tasks/ of a project that has none falls back to evalkit's bundled examples.
    return discover(config.tasks, entry_points=not args.no_entry_points,
                    fallback_to_bundled=not config.tasks_configured, keep_broken=True)


def select(registry: Registry, patterns: Sequence[str], tags: Sequence[str]) -> list[Task]:
    """The tasks named by patterns and --tag; none selected is NothingToRun (exit 5), saying what selected none."""
    tasks = registry.select(patterns, tags)
    if not tasks:
        if not patterns and not tags:
            raise NothingToRun("no tasks found (no task files in the task folders, no entry points)")
        asked = " ".join(patterns) if patterns else "every task"
        raise NothingToRun(f"no task is both in {asked!r} and tagged {' and '.join(map(repr, tags))}")
    return tasks


def selected_tasks(args: argparse.Namespace) -> list[Task]:
    """The tasks named by the positional patterns and --tag; none selected is NothingToRun (exit 5)."""
    return select(load_registry(args), args.patterns, args.tag or ())


@contextlib.contextmanager
def model_errors(spec: str) -> Iterator[None]:
    """A `python:` model that raises is the user's code failing: exit 2 with the exception and where it was
    raised in their module, never `internal error` (exit 3). Other models' failures pass unchanged."""
    try:
        yield
    except EvalkitError:
        raise
    except Exception as exc:
        if not spec.startswith("python:"):
            raise
        frames = traceback.extract_tb(exc.__traceback__)
        module = sys.modules.get(spec[len("python:"):].rpartition(":")[0])
        theirs = Path(getattr(module, "__file__", None) or "?").resolve()
        mine = [f for f in frames if Path(f.filename).resolve() == theirs]
        wrapper = Path(frames[-1].filename).resolve() if frames else None
        if not mine and wrapper != Path(__file__).resolve().parent.parent / "models" / "python.py":
            raise  # not from the model's module, nor its contract (a str per prompt): not the model's fault
        where = f" ({Path(mine[-1].filename).name}, line {mine[-1].lineno})" if mine else ""
        raise ConfigError(f"the model {spec} raised {type(exc).__name__}: {exc}{where}; the batches finished "
                          "before it are saved, and the same command resumes them", field="--model") from None


def level_settings(tasks: Sequence[Task], level: int | str | None) -> dict[str, dict[str, Any]]:
    """`--level` over several tasks: it applies to each task that has levels, and a task without levels
    runs as usual (the runner's per-task settings say so). A task whose levels lack the number asked
    for is an error naming its levels, as is a level no selected task has."""
    if level is None:
        return {}
    levelled = [t for t in tasks if t.levels]
    if not levelled:
        names = ", ".join(t.name for t in tasks)
        raise ConfigError(f"{level!r}: no selected task has levels ({names})", field="--level")
    if level != "all":
        for t in levelled:
            if level not in t.levels:
                raise ConfigError(f"task {t.name!r} has no level {level}; its levels are {levels_text(t.levels)}",
                                  field="--level")
    return {t.name: {"level": None} for t in tasks if not t.levels}


def levels_text(levels: Sequence[int]) -> str:
    """1–7 for a run of levels, else 1, 3, 5; — for none."""
    if not levels:
        return "—"
    if list(levels) == list(range(levels[0], levels[-1] + 1)) and len(levels) > 1:
        return f"{levels[0]}–{levels[-1]}"
    return ", ".join(map(str, levels))


def progress_display(console: Console) -> tuple[contextlib.AbstractContextManager[Any],
                                                 Callable[[str, int, int], None]]:
    """Progress of a run, and its update callback. On a terminal, one rich bar per task with examples/s and
    ETA; elsewhere (a CI log) a plain line per task at most every EVALKIT_PROGRESS_SECONDS (30) and when it
    ends: `addition: 300/1,000 (30%) · 120 ex/s · ETA 0:00:06`."""
    if not console.is_terminal:
        return contextlib.nullcontext(), progress_lines(console)
    return rich_progress(console)


def progress_lines(console: Console, every: float | None = None) -> Callable[[str, int, int], None]:
    """The update callback that prints progress lines (see progress_display)."""
    if every is None:
        try:
            every = float(os.environ.get(PROGRESS_ENV, "30"))
        except ValueError:
            raise ConfigError(f"expected a number of seconds, got {os.environ[PROGRESS_ENV]!r}",
                              field=PROGRESS_ENV) from None
    state: dict[str, tuple[float, int, float]] = {}  # task: (started, done at start, last printed)

    def update(name: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if name not in state:
            state[name] = (now, done, now)
            if done < total:
                return
        start, first, last = state[name]
        if done < total and now - last < every:
            return
        state[name] = (start, first, now)
        elapsed = now - start
        rate = (done - first) / elapsed if elapsed > 0 and done > first else 0.0
        parts = [f"{name}: {done:,}/{total:,} ({done / total:.0%})" if total else f"{name}: {done:,}"]
        if rate:
            parts.append(f"{rate:,.0f} ex/s" if rate >= 10 else f"{rate:.2f} ex/s")
        if done < total:
            parts.append(f"ETA {_clock((total - done) / rate)}" if rate else "ETA ?")
        else:
            parts.append(f"done in {_clock(elapsed)}")
        console.print(safe_text(" · ".join(parts), 400), soft_wrap=True)

    return update


def _clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def rich_progress(console: Console) -> tuple[Progress, Callable[[str, int, int], None]]:
    """The terminal's progress: one rich bar per task with examples/s and ETA; and its update callback."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]:>9}"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=console, transient=False)
    bars: dict[str, tuple[TaskID, float, int]] = {}

    def update(name: str, done: int, total: int) -> None:
        if name not in bars:
            bars[name] = (progress.add_task(name, total=total, rate=""), time.perf_counter(), done)
        bar, start, first = bars[name]
        elapsed = time.perf_counter() - start
        rate = f"{(done - first) / elapsed:,.0f} ex/s" if elapsed > 0 and done > first else ""
        progress.update(bar, completed=done, total=total, rate=rate)

    return progress, update


def write_rendered(record: RunRecord) -> None:
    """reports/<run-id>/report.html and report.md beside record.json."""
    from evalkit.reports import render

    if record.path is not None:
        (record.path / "report.html").write_text(render(record, "html"), encoding="utf-8")
        (record.path / "report.md").write_text(render(record, "markdown"), encoding="utf-8")
