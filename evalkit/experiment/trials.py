"""Running an experiment's trials: the trial worker, its compute estimate, and where trials run.

A trial is `finetune(recipe, overrides=...)` into `trials/<name>/`, then `measure_trial`, which writes
`trial.json`. Trials run in this process (`--jobs 1`), each in its own spawned process
(`--jobs N`: a `ProcessPoolExecutor`, one process per trial, `cores // N` torch threads each, GPUs
handed out round robin when there are any), or as Ray tasks (`--ray ADDRESS`; each task asks for
as many CPUs as it uses threads, and one GPU when the cluster has GPUs). Ray workers write into the
experiment folder directly, so on a multi-machine cluster it must be on storage they all see.

The compute estimate (what `trial.json` and the summary report):
    params    every parameter of the exported model, counted from its safetensors headers
              (embeddings included; a LoRA model is counted merged, i.e. base + adapter)
    trainable the parameters that were trained: the LoRA adapter's (from a checkpoint) or all
    tokens    steps trained × rows per step (batch × gradient accumulation) × mean tokens per
              training row (prompt with BOS + completion + EOS, as tokenised for training; padding
              is not counted). Steps are the trial's last step, so compute is everything the trial
              spent, although its record is the best evaluation's.
    flops     (4 × params + 2 × trainable) × tokens: forward 2N, backward 2N for activations and 2
              per trained parameter for weight gradients — 6 × params × tokens for full fine-tuning
              (Kaplan et al. 2020). Evaluation (generation) is not counted; wall time includes it.
    wall_s    the fine-tune loop's own clock (training and evaluations, summed over resumes).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError, EvalkitError

TRIAL_FILE = "trial.json"


@dataclass(frozen=True)
class TaskSource:
    """How a trial process finds the tasks (a Registry does not travel between processes)."""

    paths: tuple[str, ...]
    entry_points: bool = True
    fallback_to_bundled: bool = False

    @classmethod
    def from_project(cls) -> "TaskSource":
        from evalkit.config import load_config

        config = load_config()
        return cls(tuple(str(p) for p in config.tasks), True, not config.tasks_configured)

    def registry(self) -> Any:
        from evalkit.discovery.registry import discover

        return discover([Path(p) for p in self.paths], entry_points=self.entry_points,
                        fallback_to_bundled=self.fallback_to_bundled)


# -- compute ---------------------------------------------------------------------------------------------

def safetensors_numel(path: Path) -> int:
    """Parameters in a safetensors file, from its JSON header alone (no tensors are read)."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def count_params(folder: Path) -> int:
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise EvalkitError(f"no safetensors weights in {folder}")
    return sum(safetensors_numel(f) for f in files)


def training_flops(params: int, trainable: int, tokens: float) -> float:
    """(4 N + 2 N_trainable) × tokens; 6 N × tokens for full fine-tuning. See the module docstring."""
    return (4 * params + 2 * trainable) * tokens


def mean_tokens_per_row(recipe: Any, registry: Any, tokenizer_dir: Path) -> float:
    """Mean tokens per training row, rebuilding the trial's rows exactly as the fine-tune loop does."""
    from transformers import AutoTokenizer

    from evalkit.train.data import build_training_rows

    eval_examples = [ex for t in recipe.targets for ex in registry.get(t.task).examples(
        "eval", n=t.n or recipe.eval_n, seed=recipe.eval_seed, level=t.level)]
    rows, _ = build_training_rows(recipe, registry, eval_examples, count_tokens=lambda s: len(s) + 1)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    prompts = tok([r.prompt for r in rows], add_special_tokens=True)["input_ids"]
    completions = tok([r.completion for r in rows], add_special_tokens=False)["input_ids"]
    return sum(len(p) + len(c) + 1 for p, c in zip(prompts, completions)) / len(rows)  # + 1: EOS


def config_hash(recipe_path: Path, overrides: dict[str, Any]) -> str:
    """The trial's recipe after overrides (thread count aside): a changed trial is never taken as finished."""
    from evalkit.train.recipe import load_recipe

    raw = json.loads(json.dumps(load_recipe(recipe_path, overrides).raw, default=str))
    (raw.get("train") or {}).pop("threads", None)
    raw.pop("output", None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


def _targets_met(history: list[dict[str, Any]], confirm: int) -> bool:
    run = 0
    for h in history:
        run = run + 1 if h.get("all_met") else 0
    return run >= confirm


def measure_trial(folder: Path, recipe_path: Path, overrides: dict[str, Any], registry: Any) -> dict[str, Any]:
    """The compute estimate of a finished trial folder (see the module docstring); writes trial.json."""
    from evalkit.run.record import _atomic_write, load_record
    from evalkit.train.recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    record = load_record(folder)
    training = record.data["meta"]["training"]
    history = training["history"]
    params = count_params(folder / "model")
    trainable = params
    if recipe.train.get("lora"):
        adapters = sorted(folder.glob("checkpoints/checkpoint-*/adapter_model.safetensors"))
        if adapters:
            trainable = safetensors_numel(adapters[-1])
    steps = max(h["step"] for h in history)
    rows_per_step = recipe.train["batch_size"] * recipe.train["gradient_accumulation"]
    tok_dir = folder / "tokenizer" if (folder / "tokenizer").is_dir() else folder / "model"
    # The verifier-only modes train on generated samples, not rows: no token estimate (cost: wall_s).
    sft = getattr(recipe, "mode", "sft") == "sft"
    per_row = mean_tokens_per_row(recipe, registry, tok_dir) if sft else None
    tokens = steps * rows_per_step * per_row if per_row is not None else None
    env = record.data.get("environment") or {}
    info = {"config_hash": config_hash(recipe_path, overrides), "params": params, "trainable_params": trainable,
            "steps": steps, "rows_per_step": rows_per_step,
            "mean_tokens_per_row": None if per_row is None else round(per_row, 3),
            "tokens": None if tokens is None else round(tokens),
            "flops": None if tokens is None else training_flops(params, trainable, tokens),
            "wall_s": history[-1].get("wall_s") or 0.0, "threads": recipe.train.get("threads") or env.get("threads"),
            "device": env.get("device"), "best_step": training.get("best_step"),
            "stopped_because": training.get("stopped_because"),
            "targets_met": _targets_met(history, recipe.confirm), "finished_at": record.data.get("finished_at")}
    _atomic_write(folder / TRIAL_FILE, json.dumps(info, indent=1) + "\n")
    return info


def trial_result(folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    """A finished trial for the summary: its trial.json plus each task's rate and interval from its record."""
    from evalkit.run.record import load_record

    record = load_record(folder)
    targets = record.data["meta"]["training"].get("targets") or {}
    rates = {}
    for t in record.tasks:
        tgt = targets.get(t["name"], {})
        on = tgt.get("on", "rate")
        target = tgt.get("target", t.get("target"))
        measured = t["low"] if on == "lower_bound" else t["rate"]
        rates[t["name"]] = {"rate": t["rate"], "low": t["low"], "high": t["high"], "passes": t["passes"],
                            "n": t["n_samples"], "target": target, "on": on,
                            "met": None if target is None else measured >= target}
    return {"status": "done", **info, "rates": rates}


def finished_trial(folder: Path, recipe_path: Path, plan: Any, registry: Any, exp_file: Path) -> dict[str, Any]:
    """A trial found finished on resume: never re-run, but refused when its configuration has changed."""
    info_file = folder / TRIAL_FILE
    if info_file.is_file():
        info = json.loads(info_file.read_text(encoding="utf-8"))
        now = config_hash(recipe_path, plan.overrides)
        if info.get("config_hash") != now:
            raise ConfigError(f"trial {plan.name!r} finished with a different configuration than the experiment now "
                              "gives it; pass --force to start over (or rename the trial)", file=exp_file,
                              field=f"trials.{plan.name}")
    else:  # killed between the record and trial.json: measure now, without training again
        info = measure_trial(folder, recipe_path, plan.overrides, registry)
    return trial_result(folder, info)


# -- one trial ---------------------------------------------------------------------------------------------

def trial_spec(plan: Any, recipe_path: Path, folder: Path, tasks: TaskSource) -> dict[str, Any]:
    """Everything a trial process needs, as plain picklable data."""
    return {"name": plan.name, "recipe": str(recipe_path), "overrides": plan.overrides, "output": str(folder),
            "tasks": tasks, "threads": None, "gpu": None, "watch_parent": None}


def _watch_parent(pid: int) -> None:
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
        _watch_parent(spec["watch_parent"])
    if spec.get("gpu") is not None:  # a fresh process: torch has not seen CUDA yet
        os.environ["CUDA_VISIBLE_DEVICES"] = str(spec["gpu"])
    try:
        from evalkit.train.loop import finetune
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

def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


class InlinePool:
    """Trials one after another in this process (`--jobs 1`): no start-up cost, a live display."""

    jobs = 1

    def __init__(self, registry: Any, display_factory: Any = None):
        self.registry, self.display_factory, self.done = registry, display_factory, {}

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
        self.gpus = _gpu_ids()
        # One fresh process per trial (Python >= 3.11), so a trial's GPU choice holds before torch starts.
        fresh = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
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
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
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
