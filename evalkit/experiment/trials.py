"""Running an experiment's trials: the trial worker and where trials run.

A trial is `finetune(recipe, overrides=...)` into `trials/<name>/`, then `measure.measure_trial`, which
writes `trial.json`. Trials run in this process (`--jobs 1`), each in its own spawned process
(`--jobs N`: a `ProcessPoolExecutor`, one process per trial, `cores // N` torch threads each, GPUs
handed out round robin when there are any), or as Ray tasks (`--ray ADDRESS`; each task asks for
as many CPUs as it uses threads, and one GPU when the cluster has GPUs). Ray workers write into the
experiment folder directly, so on a multi-machine cluster it must be on storage they all see.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError, EvalkitError
from evalkit.experiment.measure import measure_trial, trial_result


@dataclass(frozen=True)
class TaskSource:
    """How a trial process finds the tasks (a Registry does not travel between processes)."""

    paths: tuple[str, ...]
    entry_points: bool = True
    fallback_to_bundled: bool = False

    @classmethod
    def from_project(cls) -> TaskSource:
        from evalkit.config import load_config

        config = load_config()
        return cls(tuple(str(p) for p in config.tasks), True, not config.tasks_configured)

    def registry(self) -> Any:
        from evalkit.discovery.registry import discover

        # As the command line: a broken task file blocks only the trials that need one of its tasks.
        return discover([Path(p) for p in self.paths], entry_points=self.entry_points,
                        fallback_to_bundled=self.fallback_to_bundled, keep_broken=True)


# -- one trial ---------------------------------------------------------------------------------------------

def trial_spec(plan: Any, recipe_path: Path, folder: Path, tasks: TaskSource) -> dict[str, Any]:
    """Everything a trial process needs, as plain picklable data."""
    return {"name": plan.name, "recipe": str(recipe_path), "overrides": plan.overrides, "output": str(folder),
            "tasks": tasks, "threads": None, "gpu": None, "watch_parent": None}


def watch_parent(pid: int) -> None:
    """In a pool process: exit when the experiment process is gone (a kill must not leave trials running)."""
    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != pid:
                os._exit(70)

    threading.Thread(target=watch, daemon=True, name="evalkit-watch-parent").start()


def run_trial(spec: dict[str, Any], registry: Any = None, display: Any = None) -> dict[str, Any]:
    """Fine-tune one trial (resuming from its last checkpoint if any) and measure it; never raises."""
    if spec.get("watch_parent"):
        watch_parent(spec["watch_parent"])
    if spec.get("gpu") is not None:  # a fresh process: torch has not seen CUDA yet
        os.environ["CUDA_VISIBLE_DEVICES"] = str(spec["gpu"])
    try:
        from evalkit.train import finetune
        from evalkit.train.recipe import deep_merge

        overrides = spec["overrides"]
        if spec.get("threads"):
            overrides = deep_merge(overrides, {"train": {"threads": spec["threads"]}})
        registry = registry if registry is not None else spec["tasks"].registry()
        folder = Path(spec["output"])
        finetune(spec["recipe"], output=folder, resume=True, registry=registry, display=display,
                 overrides=overrides)
        info = measure_trial(folder, Path(spec["recipe"]), spec["overrides"], registry)
        return trial_result(folder, info)
    except EvalkitError as exc:
        return {"status": "failed", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a failed trial is data for the summary, not a crash
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=20)}


# -- where trials run ----------------------------------------------------------------------------------------

def gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


class InlinePool:
    """Trials one after another in this process (`--jobs 1`): no start-up cost, a live display."""

    jobs = 1

    def __init__(self, registry: Any, display_factory: Any = None):
        self.registry, self.display_factory = registry, display_factory
        self.done: dict[str, dict[str, Any]] = {}

    def describe(self) -> str:
        return "one trial at a time, in this process"

    def submit(self, spec: dict[str, Any], slot: int) -> str:
        display = self.display_factory(spec["name"]) if self.display_factory else None
        self.done[spec["name"]] = run_trial(spec, self.registry, display)
        return spec["name"]

    def wait_any(self, handles: list[Any]) -> list[Any]:
        return [h for h in handles if h in self.done]

    def result(self, handle: Any) -> dict[str, Any]:
        return self.done.pop(handle)

    def close(self, cancel: bool = False) -> None:
        pass


class ProcessPool:
    """`jobs` trials at a time, each in a fresh spawned process with `cores // jobs` torch threads."""

    def __init__(self, jobs: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.jobs = jobs
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self.gpus = gpu_ids()
        # One fresh process per trial (Python >= 3.11), so a trial's GPU choice holds before torch starts.
        fresh: dict[str, Any] = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
        self.executor = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                            **fresh)

    def describe(self) -> str:
        gpus = f", GPUs {','.join(self.gpus)} round robin" if self.gpus else ""
        return f"{self.jobs} trials at a time in their own processes, {self.threads} torch thread(s) each{gpus}"

    def submit(self, spec: dict[str, Any], slot: int) -> Any:
        spec = {**spec, "threads": self.threads, "watch_parent": os.getpid(),
                "gpu": self.gpus[slot % len(self.gpus)] if self.gpus else None}
        return self.executor.submit(run_trial, spec)

    def wait_any(self, handles: list[Any]) -> list[Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def result(self, handle: Any) -> dict[str, Any]:
        try:
            return handle.result()
        except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory)
            return {"status": "failed", "error": f"trial process died: {type(exc).__name__}: {exc}"}

    def close(self, cancel: bool = False) -> None:
        self.executor.shutdown(wait=not cancel, cancel_futures=cancel)


class RayPool:
    """Each trial a Ray task on an existing cluster (`ray.init(address=...)`)."""

    def __init__(self, address: str, jobs: int | None):
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs Ray: pip install 'evalkit[ray]'", field="--ray") from None
        self.ray, self.address = ray, address
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:  # noqa: BLE001 - connection refused, bad address
            raise EvalkitError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
        resources = ray.cluster_resources()
        self.cpus = int(resources.get("CPU", 1))
        self.gpus = int(resources.get("GPU", 0))
        self.jobs = jobs or max(1, self.cpus)
        self.threads = max(1, self.cpus // self.jobs)
        self.remote = ray.remote(run_trial)

    def describe(self) -> str:
        gpus = f", one GPU each of {self.gpus}" if self.gpus else ""
        return (f"Ray at {self.address} ({self.cpus} CPUs): {self.jobs} trials at a time, {self.threads} CPU(s) "
                f"each{gpus}")

    def submit(self, spec: dict[str, Any], slot: int) -> Any:
        spec = {**spec, "threads": self.threads}
        return self.remote.options(num_cpus=self.threads, num_gpus=1 if self.gpus else 0,
                                   max_retries=0).remote(spec)

    def wait_any(self, handles: list[Any]) -> list[Any]:
        done, _ = self.ray.wait(handles, num_returns=1)
        return done

    def result(self, handle: Any) -> dict[str, Any]:
        try:
            return self.ray.get(handle)
        except Exception as exc:  # noqa: BLE001 - the task's worker died
            return {"status": "failed", "error": f"Ray task failed: {type(exc).__name__}: {exc}"}

    def close(self, cancel: bool = False) -> None:
        self.ray.shutdown()


def make_pool(*, jobs: int | None, ray_address: str | None, registry: Any, display_factory: Any = None) -> Any:
    if ray_address:
        return RayPool(ray_address, jobs)
    if (jobs or 1) > 1:
        return ProcessPool(jobs or 1)
    return InlinePool(registry, display_factory)


def schedule(items: list[tuple[Any, dict[str, Any]]], pool: Any, *, may_start: Any, on_done: Any) -> None:
    """Run (plan, spec) items in order, `pool.jobs` at a time, starting each only while `may_start()`.

    Slots (0 .. jobs-1) decide a trial's GPU. On Ctrl-C, trials not started are cancelled.
    """
    pending = list(items)
    running: dict[Any, tuple[Any, int]] = {}
    free = list(range(pool.jobs))
    try:
        while pending or running:
            while pending and free and may_start():
                plan, spec = pending.pop(0)
                slot = free.pop(0)
                running[pool.submit(spec, slot)] = (plan, slot)
            if not running:
                break
            for handle in pool.wait_any(list(running)):
                plan, slot = running.pop(handle)
                free.append(slot)
                free.sort()
                on_done(plan, pool.result(handle))
    except BaseException:
        pool.close(cancel=True)
        raise


__all__ = ["InlinePool", "ProcessPool", "RayPool", "TaskSource", "gpu_ids", "make_pool", "run_trial", "schedule",
           "trial_spec", "watch_parent"]
