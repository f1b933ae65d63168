"""Running an experiment: load and check the plan, keep finished trials, run the rest, keep the summary current.

    summary = run_experiment("finetune/ladder.yaml", jobs=2, resume=True)

Finished trials (a complete record.json) are read, never re-run; the others run in plan order
through a pool (evalkit.experiment.trials), the ladder starting no trial once its stop rule has
decided. summary.json is rewritten after every trial; summary.md and summary.html at the end.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError
from evalkit.experiment import trials as rx
from evalkit.experiment.measure import finished_trial
from evalkit.experiment.plan import Experiment, TrialPlan, load_experiment
from evalkit.experiment.summary import build_summary, write_summary


def experiment_folder(exp: Experiment, output: Path | None = None) -> Path:
    """Where the experiment writes: `output`, else the file's `output`, else reports/<name>/."""
    from evalkit.config import load_config

    config = load_config()
    folder = Path(output) if output else (config.root / exp.output if exp.output else config.reports / exp.name)
    return folder.resolve()


def run_experiment(path: Path | str, *, registry: Any = None, tasks: Any = None, jobs: int | None = None,
                   ray_address: str | None = None, resume: bool = False, force: bool = False,
                   output: Path | None = None, console: Any = None, display_factory: Any = None,
                   ) -> dict[str, Any]:
    """Run (or resume) an experiment; returns the summary (also written to summary.json/.md/.html).

    Args:
        registry: where tasks are looked up in this process (default: the project's task folders).
        tasks: how trial processes find the tasks: a `trials.TaskSource` (default: the project's).
        jobs: trials at a time (default 1; with Ray, the cluster's CPUs); above 1, each trial runs in its
            own process with cores // jobs torch threads.
        ray_address: run each trial as a Ray task on this cluster (needs the folder on shared storage).
        resume: keep finished trials (a complete record.json) and continue the others from their checkpoints.
        force: delete the experiment folder first.
        console: a rich Console for progress lines (None: quiet).
        display_factory: in-process runs only: called with the trial name, returns a fine-tune display.
    """
    exp = load_experiment(path)
    folder = experiment_folder(exp, output)
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}", field="--jobs")
    source = tasks or rx.TaskSource.from_project()
    if registry is None:
        registry = source.registry()
    started = (folder / "summary.json").exists() or (folder / "trials").is_dir()
    if started and force:
        shutil.rmtree(folder)
    elif started and not resume:
        raise ConfigError(f"{folder} already holds this experiment; pass --resume to continue it (finished trials "
                          "are kept) or --force to start over", file=exp.file, field="output")
    (folder / "trials").mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for plan in exp.trials:  # finished trials: read, never re-run
        trial_dir = folder / "trials" / plan.name
        if (trial_dir / "record.json").is_file():
            results[plan.name] = finished_trial(trial_dir, exp.recipe, plan, registry, exp.file)
    pool = rx.make_pool(jobs=jobs, ray_address=ray_address, registry=registry,
                        display_factory=display_factory)
    summary = build_summary(exp, folder, results, executor=pool.describe())
    write_summary(folder, summary)

    def may_start() -> bool:
        return not (exp.kind == "ladder" and summary["ladder"]["decision"]["stop"])

    def on_done(plan: TrialPlan, result: dict[str, Any]) -> None:
        nonlocal summary
        results[plan.name] = result
        summary = build_summary(exp, folder, results, executor=pool.describe())
        write_summary(folder, summary)
        if console is not None:
            progress_line(console, plan, result)

    todo = [p for p in exp.trials if p.name not in results]
    specs = [rx.trial_spec(plan, exp.recipe, folder / "trials" / plan.name, source) for plan in todo]
    if console is not None and todo:
        console.print(f"[bold]{exp.name}[/]: {len(exp.trials)} trials ({len(exp.trials) - len(todo)} finished "
                      f"before), {pool.describe()}", highlight=False)
    start = time.monotonic()
    rx.schedule(list(zip(todo, specs)), pool, may_start=may_start, on_done=on_done)  # closes the pool on errors
    pool.close()
    summary["elapsed_s"] = round(time.monotonic() - start, 2)
    write_summary(folder, summary, final=True)
    return summary


def progress_line(console: Any, plan: TrialPlan, result: dict[str, Any]) -> None:
    """One line per finished trial: its pass rates and what it cost (or why it failed)."""
    from evalkit._text import safe_text

    if result.get("status") != "done":
        console.print(safe_text(f"  {plan.name}: FAILED: {result.get('error')}", 600, style="red"))
        return
    rates = ", ".join(f"{t} {r['rate']:.1%}" for t, r in result.get("rates", {}).items())
    flops = "—" if result.get("flops") is None else f"{result['flops']:.3g}"
    console.print(f"  {plan.name}: {rates} · {result['params'] / 1e6:.2f}M params · {flops} FLOPs · "
                  f"{result['wall_s']:.0f}s", highlight=False)


__all__ = ["experiment_folder", "progress_line", "run_experiment"]
