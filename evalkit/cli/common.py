"""What the commands share: consoles, the task registry from the common flags, progress bars, and
writing a run's rendered reports beside its record."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from evalkit.config import load_config
from evalkit.discovery.registry import Registry, discover
from evalkit.errors import NothingToRun

if TYPE_CHECKING:
    from rich.progress import Progress

    from evalkit.core.task import Task
    from evalkit.run.record import RunRecord


def make_console(stderr: bool = False) -> Console:
    """Standard output (reports, tables) or standard error (progress, notes, errors); never highlighted."""
    return Console(stderr=stderr, highlight=False, soft_wrap=stderr)


def load_registry(args: argparse.Namespace) -> Registry:
    """Tasks from --tasks-dir (repeatable) or `[tool.evalkit] tasks`, plus entry points."""
    config = load_config()
    if getattr(args, "lm_eval_defaults", False):
        from evalkit.lmeval import DEFAULTS_ENV

        os.environ[DEFAULTS_ENV] = "1"  # read where an lm-eval import file is loaded
    if args.tasks_dir:
        return discover([Path(p) for p in args.tasks_dir], entry_points=not args.no_entry_points)
    # The default tasks/ of a project that has none falls back to evalkit's bundled examples.
    return discover(config.tasks, entry_points=not args.no_entry_points,
                    fallback_to_bundled=not config.tasks_configured)


def selected_tasks(args: argparse.Namespace) -> list[Task]:
    """The tasks named by the positional patterns and --tag; none selected is NothingToRun (exit 5)."""
    registry = load_registry(args)
    tasks = registry.select(args.patterns, args.tag or ())
    if not tasks:
        raise NothingToRun("no tasks selected")
    return tasks


def progress_display(console: Console) -> tuple[Progress, Callable[[str, int, int], None]]:
    """A plain rich progress display: one bar per task with examples/s and ETA; and its update callback."""
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
