"""The commands about tasks themselves: init, tasks, show, selftest, export (lm-eval) and doctor."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from evalkit._text import safe_text
from evalkit.cli.common import load_registry, make_console, selected_tasks
from evalkit.errors import ExitCode, NothingToRun


def cmd_init(args: argparse.Namespace) -> int:
    from evalkit.cli.scaffold import init_project

    root = Path(args.dir)
    written = init_project(root)
    out = make_console()
    for path in written:
        out.print(f"created {path}", soft_wrap=True, highlight=False)
    if not written:
        out.print("nothing to do: the layout is already there")
    out.print(f"next: cd {root} && evalkit selftest && evalkit finetune finetune/double.yaml", highlight=False)
    return ExitCode.OK


def cmd_tasks(args: argparse.Namespace) -> int:
    tasks = selected_tasks(args)
    if args.json:
        out = [{"name": t.name, "version": t.version, "kind": "generator" if t.is_generator else "data",
                "levels": list(t.levels), "target": t.target, "tags": list(t.tags), "source": t.source,
                "description": t.spec.description.splitlines()[0] if t.spec.description else ""} for t in tasks]
        print(json.dumps(out, indent=2))
        return ExitCode.OK
    table = Table(title=f"{len(tasks)} task(s)", title_justify="left")
    for col in ("task", "ver", "kind", "levels", "target", "tags", "description"):
        table.add_column(col, overflow="fold")
    for t in tasks:
        levels = f"{t.levels[0]}–{t.levels[-1]}" if t.levels else "—"
        desc = t.spec.description.splitlines()[0] if t.spec.description else ""
        table.add_row(t.name, str(t.version), "generator" if t.is_generator else "data", levels,
                      "—" if t.target is None else f"{t.target:.0%}", ", ".join(t.tags), safe_text(desc, 60))
    console = make_console()
    console.print(table)
    if args.verbose:
        for t in tasks:
            console.print(f"{t.name}: ", safe_text(t.source or "?"), style="dim")
    return ExitCode.OK


def cmd_show(args: argparse.Namespace) -> int:
    from evalkit.core.scoring import score

    registry = load_registry(args)
    t = registry.get(args.task)
    examples = t.examples(args.split, n=args.n, seed=args.seed, level=args.level)
    if not examples:
        raise NothingToRun(f"task {t.name!r} has no {args.split} examples")
    console = make_console()
    gen = t.generation
    console.print(f"[bold]{t.name}[/] v{t.version} · {args.split} · level {examples[0].level} · "
                  f"max_new_tokens {gen.max_new_tokens or 'auto'} · stop {gen.stop!r}", highlight=False)
    for ex in examples:
        table = Table(show_header=False, box=None, padding=(0, 1))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(overflow="fold")
        table.add_row("id", ex.id)
        table.add_row("prompt", safe_text(ex.prompt))
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
    from evalkit.core.selftest import selftest_task

    tasks = selected_tasks(args)
    console = make_console()
    ok = True
    for t in tasks:
        levels = [args.level] if args.level is not None else None
        with console.status(f"self-testing {t.name}…"):
            report = selftest_task(t, levels=levels, n_examples=args.examples, max_examples=args.max_examples,
                                   seed=args.seed)
        ok &= report.passed
        table = Table(title=f"{t.name} v{t.version}: {'[green]PASS' if report.passed else '[red]FAIL'}",
                      title_justify="left")
        for col in ("level", "property", "result", "tried", "counterexample / note"):
            table.add_column(col, overflow="fold")
        for lv in report.levels:
            for r in lv.results:
                result = {True: "[green]ok", False: "[red]FAILED", None: "[yellow]skipped"}[r.passed]
                table.add_row("—" if lv.level is None else str(lv.level), r.name, result, str(r.tried),
                              safe_text(r.counterexample or "", 300))
        console.print(table)
        if report.error:
            console.print(safe_text(f"error: {report.error}", style="red"))
    console.print(f"[bold]{'all self-tests passed' if ok else 'self-test FAILED'}[/] ({len(tasks)} task(s))")
    return ExitCode.OK if ok else ExitCode.FAILED


def cmd_export(args: argparse.Namespace) -> int:
    from evalkit.lmeval.export import export_tasks

    tasks = selected_tasks(args)
    out = Path(args.output)
    exported = export_tasks(tasks, out, n=args.n, seed=args.seed, split=args.split, level=args.level,
                            max_new_tokens=args.max_new_tokens, prefix=args.prefix)
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
