"""The commands about tasks themselves: init, tasks, show, selftest, export (lm-eval) and doctor."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

from evalkit._text import safe_text
from evalkit.cli.common import level_settings, levels_text, load_registry, make_console, select, selected_tasks
from evalkit.core.task import Task
from evalkit.discovery.broken import broken_error
from evalkit.errors import ExitCode, NothingToRun

if TYPE_CHECKING:
    from evalkit.core.selftest_report import SelftestReport
    from evalkit.discovery.broken import BrokenSource


def cmd_init(args: argparse.Namespace) -> int:
    from evalkit.cli.scaffold import init_project

    root = Path(args.dir)
    written = init_project(root)
    out = make_console()
    for path in written:
        out.print(f"created {path}", soft_wrap=True, highlight=False)
    if not written:
        out.print("nothing to do: the layout is already there")
    here = Path.cwd().resolve() == root.resolve()
    steps = "evalkit selftest && evalkit finetune finetune/double.yaml && evalkit gate reports/double"
    out.print(safe_text(f"next: {steps}" if here else f"next: cd {root} && {steps}", 1000), soft_wrap=True)
    return ExitCode.OK


def cmd_tasks(args: argparse.Namespace) -> int:
    """The tasks found (and the task files that failed to load: listed as broken, exit 2)."""
    registry = load_registry(args)
    tasks = registry.select(args.patterns, args.tag or (), skip_broken=True)
    broken = registry.broken_for(args.patterns, args.tag or ())
    if not tasks and not broken:
        select(registry, args.patterns, args.tag or ())  # says what selected nothing (exit 5)
    if args.json:
        out: list[dict[str, object]] = [
            {"name": t.name, "version": t.version, "kind": "generator" if t.is_generator else "data",
             "levels": list(t.levels), "target": t.target, "tags": list(t.tags), "source": t.source,
             "description": t.spec.description.splitlines()[0] if t.spec.description else ""} for t in tasks]
        out += [{"name": b.names[0] if len(b.names) == 1 else None, "kind": "broken", "source": b.source,
                 "error": str(b.error)} for b in broken]
        print(json.dumps(out, indent=2))
    elif args.quiet:
        console = make_console()
        for t in tasks:
            console.print(safe_text(t.name, 400), soft_wrap=True)
        for b in broken:
            console.print(safe_text(f"{b.source} (broken)", 2000), soft_wrap=True)
    else:
        _task_table(tasks, broken, verbose=args.verbose)
    if broken:
        sys.stdout.flush()  # the list, then why
        make_console(stderr=True).print(safe_text(f"error: {broken_error(broken)}", 4000, style="red"))
        return ExitCode.USAGE
    return ExitCode.OK


def _task_table(tasks: list[Task], broken: list[BrokenSource], verbose: bool) -> None:
    """One line per task where the width allows. Names and figures are never wrapped or cut; at a
    narrower width the tags wrap between tags and the description between words."""
    console = make_console()
    rows = [[t.name, str(t.version), "generator" if t.is_generator else "data", levels_text(t.levels),
             "—" if t.target is None else f"{t.target:.0%}", ", ".join(t.tags),
             t.spec.description.splitlines()[0] if t.spec.description else ""] for t in tasks]
    rows += [[b.names[0] if len(b.names) == 1 else Path(b.source).name, "", "BROKEN", "", "", "",
              "in error: see below"] for b in broken]
    heads = ("task", "ver", "kind", "levels", "target", "tags", "description")
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(heads)]
    room = console.width - sum(widths[:5]) - 2 * (len(heads) - 1)  # what tags and description share
    longest_tag = max([4, *(len(g) + 1 for t in tasks for g in t.tags)])
    tags_w = max(longest_tag, min(widths[5], room - widths[6]))  # the tags wrap first, then the description
    desc_w = max(12, min(widths[6], room - tags_w))
    title = f"{len(tasks)} task(s)" + (f", {len(broken)} broken task file(s)" if broken else "")
    # The gap between columns: the box's divider (a space) and one space of padding on the right.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False,
                  show_edge=False)
    for head, width in zip(heads[:5], widths[:5]):
        table.add_column(head, no_wrap=True, width=width)
    table.add_column("tags", width=tags_w)
    table.add_column("description", width=desc_w, overflow="fold")
    for row, t in zip(rows, [*tasks, *broken]):
        style = "red" if not isinstance(t, Task) else ""
        table.add_row(*(safe_text(cell, 2000, style=style) for cell in row))
    console.print(table)
    if verbose:
        for t in tasks:
            console.print(f"{t.name}: ", safe_text(t.source or "?"), style="dim")


def cmd_show(args: argparse.Namespace) -> int:
    from evalkit.core.scoring import score

    registry = load_registry(args)
    t = registry.get(args.task)
    level_settings([t], args.level)  # a level the task lacks: exit 2 naming its levels
    examples = t.examples(args.split, n=args.n, seed=args.seed, level=args.level)
    if not examples:
        raise NothingToRun(f"task {t.name!r} has no {args.split} examples")
    console = make_console()
    gen = t.generation
    console.print(f"[bold]{t.name}[/] v{t.version} · {args.split} · level "
                  f"{'all' if args.level == 'all' else examples[0].level} · "
                  f"max_new_tokens {gen.max_new_tokens or 'auto'} · stop {gen.stop!r}", highlight=False)
    for ex in examples:
        table = Table(show_header=False, box=None, padding=(0, 1))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(overflow="fold")
        table.add_row("id", ex.id)
        table.add_row("prompt", safe_text(ex.prompt))
        for m in t.messages(ex) if args.chat else ():  # the chat form, as `run --chat` sends it
            table.add_row(f"chat {m['role']}", safe_text(m["content"]))
        table.add_row("reference", safe_text(ex.reference))
        if ex.reference is not None:
            scored = score(t, ex, ex.reference)
            v = scored.verdict
            colour = "green" if v.passed else "red"
            table.add_row("verdict", safe_text(f"{v.status.value} ({v.score:g}) {v.reason}".rstrip(), style=colour))
        console.print(table)
        console.print()
    return ExitCode.OK


def cmd_selftest(args: argparse.Namespace) -> int:
    """Self-test each selected task: exit 1 on a FAIL, and on an UNPROVEN task unless --allow-unproven."""
    from evalkit.core.selftest import selftest_task

    tasks = selected_tasks(args)
    level_settings(tasks, args.level if args.level != "all" else None)  # a level a task lacks: exit 2
    console = make_console()
    verbosity = args.verbose - args.quiet
    states: dict[str, int] = {}
    for t in tasks:
        levels = [args.level] if isinstance(args.level, int) and t.levels else None
        with console.status(f"self-testing {t.name}…"):
            report = selftest_task(t, levels=levels, n_examples=args.examples, max_examples=args.max_examples,
                                   seed=args.seed)
        states[report.status] = states.get(report.status, 0) + 1
        print_selftest(console, t.name, t.version, report, verbosity)
    failed, unproven = states.get("FAIL", 0), states.get("UNPROVEN", 0)
    if not failed and not unproven:
        console.print(f"[bold]all self-tests passed[/] ({len(tasks)} task(s))")
        return ExitCode.OK
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    if not failed and args.allow_unproven:
        console.print(f"[bold]self-tests passed[/] ({len(tasks)} task(s): {counts}; UNPROVEN allowed by "
                      f"--allow-unproven)")
        return ExitCode.OK
    console.print(f"[bold]self-test FAILED[/] ({len(tasks)} task(s): {counts})")
    if unproven and not args.allow_unproven:
        console.print("UNPROVEN: the checker was never shown a right answer. Add reference(ex) or solutions(ex, rng) "
                      "to the task, or pass --allow-unproven to accept it untested.", highlight=False)
    return ExitCode.FAILED


_STYLE = {"PASS": "green", "FAIL": "red", "UNPROVEN": "yellow", "ok": "green", "FAILED": "red", "skipped": "yellow"}


def print_selftest(console: Console, name: str, version: int, report: SelftestReport, verbosity: int) -> None:
    """One task's self-test: a table of the properties (summed over the levels; -v: per level) with
    the inputs tried and those skipped and why, then each failure's counterexample (-v: every
    finding). -q: one line per task and what failed."""
    from evalkit.core.selftest import UNPROVEN_HINT

    size = f"{len(report.levels)} level(s), {sum(lv.examples for lv in report.levels)} examples"
    title = f"{name} v{version}: [{_STYLE[report.status]}]{report.status}[/] · {size}"
    rows = [(lv.level, r) for lv in report.levels for r in lv.results] if verbosity > 0 else \
        [(None, r) for r in report.by_property()]
    if verbosity < 0:
        console.print(title)
    else:
        table = Table(title=title, title_justify="left")
        for col in (["level"] if verbosity > 0 else []) + ["property", "result", "tried", "skipped / excused (why)"] \
                + (["inputs"] if verbosity > 0 else []):
            table.add_column(col, overflow="fold")
        for level, r in rows:
            cells = ["—" if level is None else str(level)] if verbosity > 0 else []
            table.add_row(*cells, r.name, f"[{_STYLE[r.status]}]{r.status}[/]", str(r.tried),
                          safe_text(r.skipped_text(), 300), *([r.detail] if verbosity > 0 else []))
        console.print(table)
    for level, r in rows:
        if r.passed is not False:
            continue
        where = "" if level is None else f"level {level}: "
        console.print(safe_text(f"FAILED {where}{r.name}: {r.counterexample}", 600, style="red"), soft_wrap=True)
        shown = r.findings[1:] if verbosity > 0 else ()
        for finding in shown:
            console.print(safe_text(f"  {finding}", 400), soft_wrap=True)
        if len(r.findings) > 1 and verbosity <= 0:
            console.print(f"  … and {len(r.findings) - 1} more (-v lists them)", highlight=False)
    if report.error:
        console.print(safe_text(f"error: {report.error}", style="red"), soft_wrap=True)
    if report.status == "UNPROVEN":
        unproven = ", ".join(str(lv.level) for lv in report.levels if not lv.proven)
        console.print(safe_text(f"UNPROVEN (level {unproven}): {UNPROVEN_HINT}", style="yellow"), soft_wrap=True)


def cmd_export(args: argparse.Namespace) -> int:
    from evalkit.lmeval.export import export_task

    tasks = selected_tasks(args)
    unlevelled = level_settings(tasks, args.level)  # --level applies to the tasks that have levels
    out = Path(args.output)
    exported = [export_task(t, out, n=args.n, seed=args.seed, split=args.split,
                            level=None if t.name in unlevelled else args.level,
                            max_new_tokens=args.max_new_tokens, prefix=args.prefix) for t in tasks]
    console = make_console()
    for e in exported:
        console.print(f"{e.name}: {e.examples} examples, max_gen_toks {e.max_gen_toks} ->",
                      safe_text(str(e.yaml)), soft_wrap=True)
    console.print(f"run: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 lm-eval run --model hf --model_args pretrained=MODEL "
                  f"--device cpu --include_path {out} --tasks {' '.join(e.name for e in exported)}", highlight=False,
                  soft_wrap=True)
    return ExitCode.OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """The sandbox's isolation in force and why; exit 3 if the configured level is unavailable."""
    from evalkit.sandbox import doctor

    lines, code = doctor()
    console = make_console()
    for line in lines:
        console.print(safe_text(line), soft_wrap=True)
    return code
