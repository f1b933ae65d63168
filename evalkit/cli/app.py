"""The `evalkit` command line.

Exit codes (DESIGN.md): 0 ok · 1 a gate/threshold/self-test failed · 2 usage or configuration
error · 3 internal or infrastructure error · 4 interrupted · 5 nothing to run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# OpenMP threads that spin while waiting make a small model 20-40x slower as soon as another
# process shares the cores (measured in bench/eval_throughput.py); torch reads this when it loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rich.console import Console  # noqa: E402
from rich.table import Table

from evalkit.version import __version__
from evalkit._text import safe_text
from evalkit.config import load_config
from evalkit.discovery.registry import Registry, discover
from evalkit.errors import ConfigError, EvalkitError, ExitCode, NothingToRun


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's usage errors: exit 2, one clear line
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def _console(stderr: bool = False) -> Console:
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


def _selected(args: argparse.Namespace):
    registry = load_registry(args)
    tasks = registry.select(args.patterns, args.tag or ())
    if not tasks:
        raise NothingToRun("no tasks selected")
    return tasks


def cmd_tasks(args: argparse.Namespace) -> int:
    tasks = _selected(args)
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
    console = _console()
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
    console = _console()
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

    tasks = _selected(args)
    console = _console()
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


def _progress_display(console: Console):
    """A plain rich progress display: one bar per task with examples/s and ETA."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    progress = Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]:>9}"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=console, transient=False)
    bars: dict[str, tuple[int, float, int]] = {}

    def update(name: str, done: int, total: int) -> None:
        import time

        if name not in bars:
            bars[name] = (progress.add_task(name, total=total, rate=""), time.perf_counter(), done)
        bar, start, first = bars[name]
        elapsed = time.perf_counter() - start
        rate = f"{(done - first) / elapsed:,.0f} ex/s" if elapsed > 0 and done > first else ""
        progress.update(bar, completed=done, total=total, rate=rate)

    return progress, update


def print_summary(record, console: Console, verbosity: int = 0) -> None:
    """The terminal report of a run (pytest-like -q / -v)."""
    from evalkit.reports import render_terminal

    render_terminal(record, console, verbosity=verbosity)


def write_rendered(record) -> None:
    """reports/<run-id>/report.html and report.md beside record.json."""
    from evalkit.reports import render

    if record.path is not None:
        (record.path / "report.html").write_text(render(record, "html"), encoding="utf-8")
        (record.path / "report.md").write_text(render(record, "markdown"), encoding="utf-8")


def cmd_report(args: argparse.Namespace) -> int:
    from evalkit.run.record import load_record
    from evalkit.reports import FORMATS, SUFFIXES, render, render_terminal

    record = load_record(Path(args.run))
    fmt = args.format or (SUFFIXES.get(Path(args.output).suffix.lower()) if args.output else None) or "terminal"
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}", field="--format")
    verbosity = args.verbose - args.quiet
    if args.output:
        Path(args.output).write_text(render(record, fmt, verbosity=verbosity, max_failures=args.max_failures),
                                     encoding="utf-8")
        _console(stderr=True).print(f"wrote {args.output} ({fmt})", soft_wrap=True)
    elif fmt == "terminal":
        render_terminal(record, _console(), verbosity=verbosity, max_failures=args.max_failures)
    else:
        sys.stdout.write(render(record, fmt, verbosity=verbosity, max_failures=args.max_failures))
    return ExitCode.OK


def cmd_run(args: argparse.Namespace) -> int:
    from evalkit.models.spec import load_backend
    from evalkit.run.runner import evaluate

    registry = load_registry(args)
    tasks = registry.select(args.task or [], args.tag or ())
    if not tasks:
        raise NothingToRun("no tasks selected")
    config = load_config()
    reports = Path(args.reports_dir) if args.reports_dir else config.reports
    console = _console(stderr=True)
    with console.status(f"loading {args.model}…"):
        backend = load_backend(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                               model_name=args.model_name, concurrency=args.concurrency, chat=args.chat)
    run_dir = None
    if args.fresh or args.run_id:
        from evalkit.run.runner import run_id_for

        run_id = args.run_id or run_id_for(args.model, backend.identity, {"fresh": os.urandom(4).hex()}, tasks)
        run_dir = reports / run_id
    progress, update = _progress_display(console)
    with progress:
        record = evaluate(tasks=tasks, backend=backend, model_spec=args.model, n=args.n, seed=args.seed, k=args.k,
                          temperature=args.temperature, top_p=args.top_p, split=args.split, level=args.level,
                          batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, run_dir=run_dir,
                          reports_dir=reports, progress=update, check_timeout=args.check_timeout)
    write_rendered(record)
    out = _console()
    print_summary(record, out, args.verbose - args.quiet)
    out.print(f"record: {record.path / 'record.json'}  ·  report: {record.path / 'report.html'}",
              highlight=False, soft_wrap=True)
    return ExitCode.OK


def cmd_rescore(args: argparse.Namespace) -> int:
    from evalkit.run.runner import rescore

    registry = load_registry(args)
    record = rescore(Path(args.run), registry=registry, check_timeout=args.check_timeout)
    write_rendered(record)
    out = _console()
    print_summary(record, out, -1)
    out.print(f"rescored without generating: {record.path / 'record.json'}", highlight=False, soft_wrap=True)
    return ExitCode.OK


def cmd_compare(args: argparse.Namespace) -> int:
    from evalkit.run.record import load_record
    from evalkit.run.runner import compare_records

    a, b = load_record(Path(args.baseline)), load_record(Path(args.candidate))
    comparisons = compare_records(a, b, alpha=args.alpha)
    if not comparisons:
        raise NothingToRun("the two runs share no task examples")
    table = Table(title=f"{b.run_id} vs {a.run_id} (exact McNemar, alpha {args.alpha:g})", title_justify="left")
    for col in ("task", "shared", "baseline", "candidate", "diff", "only base", "only cand", "p", "verdict"):
        table.add_column(col, justify="left" if col in ("task", "verdict") else "right", no_wrap=True)
    colours = {"better": "green", "worse": "red"}
    for name, c in comparisons.items():
        table.add_row(name, str(c.n_shared), f"{c.rate_a:.1%}", f"{c.rate_b:.1%}", f"{c.diff:+.1%}",
                      str(c.only_a), str(c.only_b), f"{c.p_value:.3g}",
                      f"[{colours.get(c.verdict, 'default')}]{c.verdict}")
    _console().print(table)
    return ExitCode.OK


def cmd_gate(args: argparse.Namespace) -> int:
    from evalkit import gate as gate_mod
    from evalkit.run.record import load_record

    if bool(args.run) == bool(args.model):
        raise ConfigError("give either a run (evalkit gate RUN) or --model SPEC, not both or neither",
                          field="RUN/--model")
    config = load_config()
    gate_config = None
    if args.config or config.raw.get("gate"):
        gate_config = gate_mod.load_gate(Path(args.config) if args.config else None, config.raw.get("gate"),
                                         config.pyproject)
    if args.run:
        record = load_record(Path(args.run))
    else:
        from evalkit.models.spec import load_backend
        from evalkit.run.runner import evaluate

        registry = load_registry(args)
        names = list(gate_config.rules) if gate_config else (args.task or [])
        if not names:
            raise ConfigError("name the tasks: a gate config, or --task", field="--config")
        if gate_config:
            # A gated task nobody defines is a configuration error (exit 2), unless it is optional.
            tasks = [registry.get(n) for n in names if n in registry or gate_config.rules[n].required]
        else:
            tasks = registry.select(names)
        run = gate_config.run if gate_config else {}
        console = _console(stderr=True)
        backend = load_backend(args.model, device=args.device, batch_size=run.get("batch_size", 64))
        progress, update = _progress_display(console)
        with progress:
            record = evaluate(tasks=tasks, backend=backend, model_spec=args.model,
                              n=args.n or run.get("n", 200), seed=run.get("seed", 0), k=run.get("k", 1),
                              temperature=run.get("temperature", 0.0), level=run.get("level"),
                              batch_size=run.get("batch_size", 64),
                              reports_dir=Path(args.reports_dir) if args.reports_dir else config.reports,
                              progress=update)
    if gate_config is None:
        gate_config = gate_mod.default_config_for(record)
    result = gate_mod.judge(record, gate_config)
    out = _console()
    table = Table(title=f"gate on run {record.run_id} (rules: {result.source})", title_justify="left")
    for col in ("task", "result", "why"):
        table.add_column(col, overflow="fold", no_wrap=col != "why")
    for o in result.outcomes:
        label = "[green]PASS" if o.passed else f"[red]FAIL[/] (exit {int(o.code)})"
        table.add_row(o.task, label, safe_text("; ".join(o.reasons)))
    out.print(table)
    verdict = "[green]gate passed" if result.passed else f"[red]gate FAILED[/] (exit {int(result.exit_code)})"
    out.print(verdict)
    if args.junit:
        Path(args.junit).write_text(gate_mod.to_junit(result), encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(gate_mod.to_markdown(result), encoding="utf-8")
    return result.exit_code


def cmd_finetune(args: argparse.Namespace) -> int:
    from evalkit.train.display import TrainingDisplay
    from evalkit.train.loop import finetune

    registry = load_registry(args)
    display = TrainingDisplay(_console(stderr=True))
    result = finetune(Path(args.recipe), output=Path(args.output) if args.output else None, resume=args.resume,
                      force=args.force, registry=registry, display=display, max_steps=args.max_steps)
    if not result.is_main:
        return result.exit_code
    out = _console()
    if result.targets_met:
        out.print(f"[green]target reached[/]: {result.stopped_because}")
    else:
        out.print(f"[red]target not reached[/]: {result.stopped_because}")
        for line in result.missed:
            out.print(f"  missed {safe_text(line)}")
    if result.best_step is not None:
        out.print(f"best model (step {result.best_step}): {result.output / 'model'}", soft_wrap=True)
        out.print(f"run record:  {result.record_path}", soft_wrap=True)
        if (result.output / "report.html").is_file():
            out.print(f"report:      {result.output / 'report.html'}", soft_wrap=True)
        out.print(f"gate it:     evalkit gate {result.output}", soft_wrap=True)
    return result.exit_code


def cmd_export(args: argparse.Namespace) -> int:
    from evalkit.lmeval.export import export_tasks

    tasks = _selected(args)
    out = Path(args.output)
    exported = export_tasks(tasks, out, n=args.n, seed=args.seed, split=args.split, level=args.level,
                            max_new_tokens=args.max_new_tokens, prefix=args.prefix)
    console = _console()
    for e in exported:
        console.print(f"{e.name}: {e.examples} examples, max_gen_toks {e.max_gen_toks} ->",
                      safe_text(str(e.yaml)), soft_wrap=True)
    console.print(f"run: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 lm-eval run --model hf --model_args pretrained=MODEL "
                  f"--device cpu --include_path {out} --tasks {' '.join(e.name for e in exported)}", highlight=False,
                  soft_wrap=True)
    return ExitCode.OK


def cmd_init(args: argparse.Namespace) -> int:
    from evalkit.cli.scaffold import init_project

    root = Path(args.dir)
    written = init_project(root)
    out = _console()
    for path in written:
        out.print(f"created {path}", soft_wrap=True, highlight=False)
    if not written:
        out.print("nothing to do: the layout is already there")
    out.print(f"next: cd {root} && evalkit selftest && evalkit finetune finetune/double.yaml", highlight=False)
    return ExitCode.OK


def cmd_experiment(args: argparse.Namespace) -> int:
    from evalkit.train.display import TrainingDisplay
    from evalkit.experiment.report import render_terminal
    from evalkit.experiment.trials import TaskSource
    from evalkit.experiment.plan import exit_code, run_experiment

    registry = load_registry(args)
    config = load_config()
    tasks = (TaskSource(tuple(str(Path(p).resolve()) for p in args.tasks_dir), not args.no_entry_points)
             if args.tasks_dir else TaskSource(tuple(map(str, config.tasks)), not args.no_entry_points,
                                               not config.tasks_configured))
    summary = run_experiment(Path(args.file), registry=registry, tasks=tasks, jobs=args.jobs, ray_address=args.ray,
                             resume=args.resume, force=args.force, output=Path(args.output) if args.output else None,
                             console=_console(stderr=True),
                             display_factory=lambda name: TrainingDisplay(_console(stderr=True)))
    render_terminal(summary, _console())
    return exit_code(summary)


def cmd_doctor(args: argparse.Namespace) -> int:
    """The sandbox's isolation in force and why; exit 3 if the configured level is unavailable."""
    from evalkit.sandbox import doctor

    lines, code = doctor()
    console = _console()
    for line in lines:
        console.print(safe_text(line), soft_wrap=True)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="evalkit", description="Checkable tasks, evaluation and fine-tuning for small models.")
    parser.add_argument("--version", action="version", version=f"evalkit {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tasks-dir", action="append", metavar="DIR",
                        help="task folder or file (repeatable; default: [tool.evalkit] tasks, else ./tasks)")
    common.add_argument("--no-entry-points", action="store_true", help="ignore the evalkit.tasks entry points")
    common.add_argument("--lm-eval-defaults", action="store_true",
                        help="lm-eval import files: also index lm-eval's bundled tasks (slow, ~7 s)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("init", help="create a project layout: tasks/, finetune/, reports/, gate.yaml")
    p.add_argument("dir", nargs="?", default=".", help="project folder (default: here)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("tasks", parents=[common], help="list the tasks found")
    p.add_argument("patterns", nargs="*", metavar="TASK", help="names, globs (add*) or tag:NAME")
    p.add_argument("--tag", action="append", help="only tasks with this tag (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="show where each task comes from")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("show", parents=[common], help="show example prompts, references and verdicts")
    p.add_argument("task")
    p.add_argument("-n", type=int, default=5, help="number of examples (default 5)")
    p.add_argument("--split", choices=["eval", "train"], default="eval")
    p.add_argument("--level", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("selftest", parents=[common], help="prove each task's checker sound and non-vacuous")
    p.add_argument("patterns", nargs="*", metavar="TASK", help="names, globs or tag:NAME (default: all)")
    p.add_argument("--tag", action="append")
    p.add_argument("--level", type=int, help="only this level")
    p.add_argument("--examples", type=int, default=20, help="examples per split and level (default 20)")
    p.add_argument("--max-examples", type=int, default=100, help="hypothesis examples per property (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_selftest)

    p = sub.add_parser("run", parents=[common], help="evaluate a model on tasks (journaled, resumable)")
    p.add_argument("--model", required=True,
                   help="hf:PATH | openai:URL | python:MODULE:FUNCTION | lmeval:MODEL,ARGS | oracle")
    p.add_argument("--task", action="append", metavar="TASK", help="name, glob or tag:NAME (repeatable; default all)")
    p.add_argument("--tag", action="append")
    p.add_argument("-n", type=int, default=100, help="examples per task (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-k", type=int, default=1, help="samples per example, for pass@k (needs --temperature > 0)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--split", choices=["eval", "train"], default="eval")
    p.add_argument("--level", type=int)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, help="override every task's setting")
    p.add_argument("--device", help="hf: cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="hf: weights dtype")
    p.add_argument("--model-name", help="openai: the served model's name (default: the first listed)")
    p.add_argument("--chat", action="store_true", help="openai: use /v1/chat/completions")
    p.add_argument("--concurrency", type=int, default=8, help="openai: requests in flight")
    p.add_argument("--check-timeout", type=float, default=30.0, help="seconds per check before TIMEOUT")
    p.add_argument("--reports-dir", help="default: [tool.evalkit] reports, else ./reports")
    p.add_argument("--run-id", help="run folder name (default: derived from model and settings, so the "
                                    "same command resumes the same run)")
    p.add_argument("--fresh", action="store_true", help="start a new run instead of resuming")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail (repeatable)")
    p.add_argument("-q", "--quiet", action="count", default=0, help="one line per task")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="render a run record: terminal, json, junit, markdown, html")
    p.add_argument("run", help="run folder (reports/<run-id>) or its record.json")
    p.add_argument("--format", "-f", help="terminal | json | junit | markdown | html (default: from -o's suffix)")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.add_argument("--max-failures", type=int, default=5, help="failing samples shown per task")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-q", "--quiet", action="count", default=0)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("rescore", parents=[common], help="re-apply the current checkers to a run; no generation")
    p.add_argument("run", help="run folder (reports/<run-id>) or its record.json")
    p.add_argument("--check-timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_rescore)

    p = sub.add_parser("compare", help="paired test of two runs on their shared examples")
    p.add_argument("baseline", help="run folder or record.json")
    p.add_argument("candidate", help="run folder or record.json")
    p.add_argument("--alpha", type=float, default=0.05)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("gate", parents=[common], help="judge a run (or a fresh run of --model) against the gate")
    p.add_argument("run", nargs="?", help="an existing run folder or record.json")
    p.add_argument("--model", help="evaluate this model first (hf:PATH | openai:URL | python:M:F | oracle)")
    p.add_argument("--config", help="gate YAML (default: [tool.evalkit.gate], else each task's own target)")
    p.add_argument("--task", action="append", help="with --model and no config: tasks to run")
    p.add_argument("-n", type=int, help="examples per task with --model (default: the config's run.n, else 200)")
    p.add_argument("--device")
    p.add_argument("--reports-dir")
    p.add_argument("--junit", metavar="FILE", help="write the gate's result as JUnit XML")
    p.add_argument("--markdown", metavar="FILE", help="write the gate's result as Markdown (e.g. $GITHUB_STEP_SUMMARY)")
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser("export", parents=[common], help="write tasks in another harness's format (lm-eval)")
    p.add_argument("format", choices=["lm-eval"], help="lm-eval: a task folder for `lm-eval run --include_path`")
    p.add_argument("patterns", nargs="+", metavar="TASK", help="names, globs or tag:NAME")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the include folder to write")
    p.add_argument("-n", type=int, default=100, help="examples per task (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=["eval", "train"], default="eval")
    p.add_argument("--level", type=int)
    p.add_argument("--max-new-tokens", type=int, help="max_gen_toks (default: the task's, else sized from it)")
    p.add_argument("--prefix", default="", help="prepended to each lm-eval task name")
    p.set_defaults(func=cmd_export, tag=None)

    p = sub.add_parser("doctor", help="show the sandbox isolation in force and the kernel features behind it")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("finetune", parents=[common], help="train until the task checkers say the target is met")
    p.add_argument("recipe", help="a recipe YAML, e.g. finetune/addition.yaml")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    p.add_argument("--force", action="store_true", help="delete an existing run in the output folder first")
    p.add_argument("--output", help="output folder (default: the recipe's, else reports/<recipe name>)")
    p.add_argument("--max-steps", type=int, help="override the recipe's step budget")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("experiment", parents=[common], help="a size ladder or a data-source ablation of a recipe")
    p.add_argument("file", help="an experiment YAML, e.g. finetune/ladder.yaml")
    p.add_argument("--jobs", type=int, metavar="N", help="trials at a time, each in its own process (default 1; "
                   "with --ray: the cluster's CPUs)")
    p.add_argument("--ray", metavar="ADDRESS", help="run each trial as a task on this Ray cluster (host:port)")
    p.add_argument("--resume", action="store_true", help="continue: finished trials are kept, not re-run")
    p.add_argument("--force", action="store_true", help="delete the experiment folder first")
    p.add_argument("--output", help="experiment folder (default: the file's, else reports/<name>)")
    p.set_defaults(func=cmd_experiment)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `evalkit` console script; returns (and exits with) the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
    except EvalkitError as exc:
        _console(stderr=True).print(safe_text(f"error: {exc}", 2000, style="red"))
        code = int(exc.exit_code)
    except KeyboardInterrupt:
        _console(stderr=True).print("interrupted", style="yellow")
        code = int(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - never a bare traceback for the user
        if os.environ.get("EVALKIT_DEBUG"):
            raise
        _console(stderr=True).print(safe_text(
            f"internal error: {type(exc).__name__}: {exc} (set EVALKIT_DEBUG=1 for the traceback)", 2000,
            style="red"))
        code = int(ExitCode.INTERNAL)
    sys.exit(code)
