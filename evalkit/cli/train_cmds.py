"""The training commands: finetune (train until the checkers say the target is met) and experiment."""

from __future__ import annotations

import argparse
from pathlib import Path

from evalkit._text import safe_text
from evalkit.cli.common import load_registry, make_console
from evalkit.config import load_config


def cmd_finetune(args: argparse.Namespace) -> int:
    from evalkit.train import finetune
    from evalkit.train.display import TrainingDisplay

    registry = load_registry(args)
    display = TrainingDisplay(make_console(stderr=True))
    result = finetune(Path(args.recipe), output=Path(args.output) if args.output else None, resume=args.resume,
                      force=args.force, registry=registry, display=display, max_steps=args.max_steps)
    if not result.is_main:
        return result.exit_code
    out = make_console()
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
        out.print(safe_text(f"gate it:     {gate_command(result.output, recipe_gate(Path(args.recipe)))}", 2000),
                  soft_wrap=True)
    return result.exit_code


def recipe_gate(recipe: Path) -> Path | None:
    """The gate config a recipe names (`gate:`), if it names one."""
    from evalkit.train.recipe import load_recipe

    return load_recipe(recipe).gate


def gate_command(output: Path, gate: Path | None = None) -> str:
    """The command that gates a fine-tune's output: by the recipe's own gate config (`gate:`) when it names
    one, else as `evalkit gate` would judge it here: by the project's gate config when there is one (named, so
    the line works from anywhere), else by the recipe's targets."""
    from evalkit.cli.gate_cmd import project_gate_file

    if gate is not None:
        return f"evalkit gate {_relative(output)} --config {_relative(gate)}"
    config = load_config()
    if config.raw.get("gate"):
        return f"evalkit gate {_relative(output)}  (rules: [tool.evalkit.gate] in {_relative(config.pyproject)})"
    gate = project_gate_file(config)
    if gate is not None:
        return f"evalkit gate {_relative(output)} --config {_relative(gate)}"
    return f"evalkit gate {_relative(output)}  (rules: the recipe's targets)"


def _relative(path: Path | None) -> str:
    """A path as short as it can be said from here."""
    if path is None:
        return "?"
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def cmd_experiment(args: argparse.Namespace) -> int:
    from evalkit.experiment.report import render_terminal
    from evalkit.experiment.runner import run_experiment
    from evalkit.experiment.summary import exit_code
    from evalkit.experiment.trials import TaskSource
    from evalkit.train.display import TrainingDisplay

    registry = load_registry(args)
    config = load_config()
    tasks = (TaskSource(tuple(str(Path(p).resolve()) for p in args.tasks_dir), not args.no_entry_points)
             if args.tasks_dir else TaskSource(tuple(map(str, config.tasks)), not args.no_entry_points,
                                               not config.tasks_configured))
    summary = run_experiment(Path(args.file), registry=registry, tasks=tasks, jobs=args.jobs, ray_address=args.ray,
                             resume=args.resume, force=args.force, output=Path(args.output) if args.output else None,
                             console=make_console(stderr=True),
                             display_factory=lambda name: TrainingDisplay(make_console(stderr=True)))
    render_terminal(summary, make_console())
    return exit_code(summary)
