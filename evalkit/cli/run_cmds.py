"""The commands about runs: run (evaluate a model), report (render a record), rescore and compare."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.table import Table

from evalkit._text import safe_text
from evalkit.cli.common import (
    level_settings,
    load_registry,
    make_console,
    model_errors,
    progress_display,
    select,
    write_rendered,
)
from evalkit.config import load_config
from evalkit.errors import ConfigError, ExitCode, NothingToRun

if TYPE_CHECKING:
    from rich.console import Console

    from evalkit.run.record import RunRecord


def cmd_run(args: argparse.Namespace) -> int:
    from evalkit.models.spec import load_backend
    from evalkit.reports import render_terminal
    from evalkit.run.runner import evaluate

    if args.alpha is not None and not args.adaptive:
        raise ConfigError("--alpha is the level of --adaptive's decisions: add --adaptive, or drop --alpha",
                          field="--alpha")
    tasks = select(load_registry(args), [*args.patterns, *(args.task or [])], args.tag or ())
    task_settings = level_settings(tasks, args.level)
    config = load_config()
    reports = Path(args.reports_dir) if args.reports_dir else config.reports
    console = make_console(stderr=True)
    with console.status(f"loading {args.model}…"):
        backend = load_backend(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                               model_name=args.model_name, concurrency=args.concurrency,
                               request_timeout=args.request_timeout)
    run_dir = None
    if args.fresh or args.run_id:
        from evalkit.run.runner import run_id_for

        run_id = args.run_id or run_id_for(args.model, backend.identity, {"fresh": os.urandom(4).hex()}, tasks)
        run_dir = reports / run_id
    progress, update = progress_display(console)
    with progress, model_errors(args.model):
        record = evaluate(tasks=tasks, backend=backend, model_spec=args.model, n=args.n, seed=args.seed, k=args.k,
                          temperature=args.temperature, top_p=args.top_p, split=args.split, level=args.level,
                          batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, run_dir=run_dir,
                          reports_dir=reports, progress=update, check_timeout=args.check_timeout, chat=args.chat,
                          task_settings=task_settings or None, adaptive=args.adaptive,
                          alpha=0.05 if args.alpha is None else args.alpha)
    _say_journal(record, console)
    write_rendered(record)
    out = make_console()
    render_terminal(record, out, verbosity=args.verbose - args.quiet)
    assert record.path is not None  # evaluate() with a reports folder always saves the record
    out.print(f"record: {record.path / 'record.json'}  ·  report: {record.path / 'report.html'}",
              highlight=False, soft_wrap=True)
    for t in record.tasks:  # an adaptive run: how many samples each task used, and why it stopped
        if a := t.get("adaptive"):
            from evalkit.run.sequential import describe

            out.print(safe_text(f"adaptive: {t['name']}: {describe(a)}", 400), soft_wrap=True)
    missed = [t for t in record.tasks if t.get("meets_target") is False]  # a task without a target misses nothing
    for t in missed:
        out.print(safe_text(f"target missed: {t['name']}: pass rate {t['rate']:.1%} < target {t['target']:.1%} "
                            f"(n={t['n_samples']})", 400, style="red"), soft_wrap=True)
    return ExitCode.FAILED if missed else ExitCode.OK


def _say_journal(record: RunRecord, console: Console) -> None:
    """What the run (or rescore) did with its journal: resumed, generated, failed, unreadable lines dropped."""
    from evalkit.run.batching import describe_journal

    if record.data.get("journal"):
        console.print(safe_text(describe_journal(record.data["journal"]), 1000), soft_wrap=True)


def cmd_report(args: argparse.Namespace) -> int:
    from evalkit.reports import FORMATS, SUFFIXES, render, render_terminal
    from evalkit.run.record import load_record

    record = load_record(Path(args.run))
    fmt = args.format or (SUFFIXES.get(Path(args.output).suffix.lower()) if args.output else None) or "terminal"
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}", field="--format")
    verbosity = args.verbose - args.quiet
    if args.output:
        Path(args.output).write_text(render(record, fmt, verbosity=verbosity, max_failures=args.max_failures),
                                     encoding="utf-8")
        make_console(stderr=True).print(f"wrote {args.output} ({fmt})", soft_wrap=True)
    elif fmt == "terminal":
        render_terminal(record, make_console(), verbosity=verbosity, max_failures=args.max_failures)
    else:
        sys.stdout.write(render(record, fmt, verbosity=verbosity, max_failures=args.max_failures))
    return ExitCode.OK


def cmd_rescore(args: argparse.Namespace) -> int:
    from evalkit.reports import render_terminal
    from evalkit.run.runner import rescore

    registry = load_registry(args)
    record = rescore(Path(args.run), registry=registry, check_timeout=args.check_timeout)
    _say_journal(record, make_console(stderr=True))
    write_rendered(record)
    out = make_console()
    render_terminal(record, out, verbosity=-1)
    assert record.path is not None  # a rescored run is saved in its folder
    out.print(f"rescored without generating: {record.path / 'record.json'}", highlight=False, soft_wrap=True)
    return ExitCode.OK


def cmd_compare(args: argparse.Namespace) -> int:
    from evalkit.run.record import load_record
    from evalkit.run.runner import compare_records

    a, b = load_record(Path(args.baseline)), load_record(Path(args.candidate))
    comparisons = compare_records(a, b, alpha=args.alpha)
    if not comparisons:
        raise NothingToRun("the two runs share no task examples")
    rows = [[name, str(c.n_shared), f"{c.rate_a:.1%}", f"{c.rate_b:.1%}", f"{c.diff:+.1%}", str(c.only_a),
             str(c.only_b), f"{c.p_value:.3g}", c.verdict] for name, c in comparisons.items()]
    # Light rules, a two-space gap; figures never cut (a column is at least as wide as its widest value), headers
    # and the verdict wrap between words: 80 columns hold it.
    table = Table(title=safe_text(f"{b.run_id} vs {a.run_id} (exact McNemar, alpha {args.alpha:g})", 1000),
                  title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    heads = ("task", "shared", "baseline", "candidate", "diff", "only base", "only cand", "p", "verdict")
    widths = [max([len(r[i]) for r in rows] + [len(word) for word in h.split()]) for i, h in enumerate(heads)]
    out = make_console()
    widths[-1] = max(len("significant"), min(widths[-1], out.width - sum(widths[:-1]) - 2 * (len(heads) - 1)))
    for col, width in zip(heads, widths):
        table.add_column(col, justify="left" if col in ("task", "verdict") else "right", width=width)
    colours = {"better": "green", "worse": "red"}
    for row in rows:
        table.add_row(safe_text(row[0], 200), *row[1:-1], safe_text(row[-1], 200, style=colours.get(row[-1], "")))
    out.print(table)
    return ExitCode.OK
