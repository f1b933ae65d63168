"""`evalkit gate`: judge an existing run, or a fresh run of --model, against the gate's rules.

The rules, as pytest finds its configuration: `--config FILE`; else the project's own, `[tool.evalkit.gate]`
in pyproject.toml, else `gate.yaml` beside that pyproject.toml (or in the working directory); else, or with
`--task-targets`, each task's own target. The record's task versions are checked against the tasks installed
here (the task folders, --tasks-dir and entry points); `--allow-version-mismatch` skips that check.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from evalkit._text import safe_text
from evalkit.cli.common import level_settings, load_registry, make_console, model_errors, progress_display
from evalkit.config import ProjectConfig, load_config
from evalkit.errors import ConfigError

if TYPE_CHECKING:
    from evalkit.core.task import Task
    from evalkit.discovery.registry import Registry
    from evalkit.gate import GateConfig, GateResult
    from evalkit.run.record import RunRecord


def cmd_gate(args: argparse.Namespace) -> int:
    from evalkit.gate import default_config_for, judge, load_gate, to_junit, to_markdown

    if bool(args.run) == bool(args.model):
        raise ConfigError("give either a run (evalkit gate RUN) or --model SPEC, not both or neither",
                          field="RUN/--model")
    if args.config and args.task_targets:
        raise ConfigError("give --config FILE or --task-targets, not both", field="--task-targets")
    config = load_config()
    gate_config = None
    if args.config:
        gate_config = load_gate(Path(args.config))
    elif not args.task_targets and config.raw.get("gate"):
        gate_config = load_gate(None, config.raw["gate"], config.pyproject)
    elif not args.task_targets and project_gate_file(config) is not None:
        gate_config = load_gate(project_gate_file(config))
    if args.task and gate_config is not None:
        raise ConfigError(f"--task chooses the tasks only without a gate config; {gate_config.source} names them "
                          "(add --task-targets to judge the --task tasks by their own targets)", field="--task")
    installed: Registry | list[Task] | dict[str, int]
    if args.run:
        from evalkit.run.record import load_record

        record = load_record(Path(args.run))
        if args.allow_version_mismatch:
            installed = {}
        else:
            installed = load_registry(args)
            installed.require([t["name"] for t in record.tasks])  # a broken task file the record's tasks need
    else:
        record, installed = _evaluate_model(args, gate_config, config)
    if gate_config is None:
        gate_config = default_config_for(record)
    result = judge(record, gate_config, installed, allow_version_mismatch=args.allow_version_mismatch)
    _print_result(result)
    if args.junit:
        Path(args.junit).write_text(to_junit(result), encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(to_markdown(result), encoding="utf-8")
    return result.exit_code


def project_gate_file(config: ProjectConfig) -> Path | None:
    """gate.yaml beside the project's pyproject.toml (or in the working directory), if it is there."""
    path = (config.pyproject.parent if config.pyproject else Path.cwd()) / "gate.yaml"
    return path if path.is_file() else None


def _evaluate_model(args: argparse.Namespace, gate_config: GateConfig | None,
                    config: ProjectConfig) -> tuple[RunRecord, list[Task]]:
    """`gate --model`: run the gated tasks (the config's, else --task) with the config's run settings; the record
    and the tasks it was made with (installed here, so their versions are the record's)."""
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
    # Each task decided against its threshold at the gate's alpha (--adaptive, or `adaptive: true` in run:).
    adaptive = bool(getattr(args, "adaptive", False) or run.get("adaptive", False))
    thresholds = {n: {"target": r.min_pass_rate} for n, r in (gate_config.rules.items() if gate_config else ())
                  if r.min_pass_rate is not None and n in {t.name for t in tasks}}
    levels = level_settings(tasks, run.get("level"))  # the config's level applies to the tasks that have levels
    console = make_console(stderr=True)
    with console.status(f"loading {args.model}…"):
        backend = load_backend(args.model, device=args.device, dtype=args.dtype, batch_size=run.get("batch_size", 64),
                               model_name=args.model_name, concurrency=args.concurrency,
                               request_timeout=args.request_timeout)
    progress, update = progress_display(console)
    with progress, model_errors(args.model):
        record = evaluate(tasks=tasks, backend=backend, model_spec=args.model,
                        n=args.n or run.get("n", 200), seed=run.get("seed", 0), k=run.get("k", 1),
                        temperature=run.get("temperature", 0.0), level=run.get("level"),
                        batch_size=run.get("batch_size", 64), chat=args.chat or run.get("chat", False),
                        reports_dir=Path(args.reports_dir) if args.reports_dir else config.reports,
                        progress=update, adaptive=adaptive, alpha=gate_config.alpha if gate_config else 0.05,
                        task_settings=_merged(levels, thresholds if adaptive else {}) or None)
    return record, tasks


def _merged(*settings: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-task settings from several sources, key by key (a task's level, its adaptive threshold)."""
    out: dict[str, dict[str, Any]] = {}
    for each in settings:
        for name, values in each.items():
            out.setdefault(name, {}).update(values)
    return out


def _print_result(result: GateResult) -> None:
    """The verdict table (why each task passed or failed) and the overall line, on standard output."""
    out = make_console()
    table = Table(title=safe_text(f"gate on run {result.run_id} (rules: {result.source})", 1000),
                  title_justify="left")
    for col in ("task", "result", "why"):
        table.add_column(col, overflow="fold", no_wrap=col != "why")
    for o in result.outcomes:
        label = Text("PASS", style="green") if o.passed else Text.assemble(("FAIL", "red"), f" (exit {int(o.code)})")
        table.add_row(safe_text(o.task, 200), label, safe_text("; ".join(o.reasons), 2000))
    out.print(table)
    verdict = "[green]gate passed" if result.passed else f"[red]gate FAILED[/] (exit {int(result.exit_code)})"
    out.print(verdict)
