"""The runner: any model over any tasks, journaled, resumable, with statistics.

    record = evalkit.evaluate(model=model, tokenizer=tok, tasks=["addition"], n=200)
    record.rate("addition")

Every sample is journaled (journal.py) as its batch completes: a batch is checked while the next is
generated, and is on disk before the batch after that is asked for; a slow backend's batches shrink to a
few seconds each (batching.py). A task streams
(taskrun.py): its examples are read and run a chunk at a time, their samples written to samples.jsonl
and counted, so memory does not grow with the number of examples. Running the same
evaluation again into the same run folder generates only what is missing, and the final
record equals an uninterrupted run's (timestamps, timings and journal counts aside). Sampling is seeded per row
(seed, prompt, sample index), so batch composition never changes an output. Ctrl-C stops a
journaled run with `RunInterrupted`, which says how many samples are saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from evalkit.core.scoring import DEFAULT_CHECK_TIMEOUT
from evalkit.core.task import Task
from evalkit.discovery.load import TaskRef, load_tasks
from evalkit.errors import ConfigError, EvalkitError, NothingToRun
from evalkit.models.base import HasDevice, ModelBackend, chat_identity, missing_members
from evalkit.run.batching import RunInterrupted, Tally
from evalkit.run.journal import JOURNAL_FILE, Journal, dump_line
from evalkit.run.posthoc import compare_records, rescore
from evalkit.run.record import SAMPLES_FILE, SCHEMA_VERSION, RunRecord, utc_now
from evalkit.run.sequential import DEFAULT_ALPHA, Sequential, adaptive_targets
from evalkit.run.taskrun import ProgressFn, Scorer, SinkFn, run_task, size_max_new_tokens
from evalkit.sandbox import default_size as sandbox_pool_size
from evalkit.version import __version__

# rescore and compare_records live in posthoc.py; callers import them from here too.
__all__ = ["JOURNAL_FILE", "ProgressFn", "RunInterrupted", "compare_records", "environment", "evaluate", "rescore",
           "run_id_for", "size_max_new_tokens"]

PARTIAL_SAMPLES = f".{SAMPLES_FILE}.partial"


def _threads() -> int:
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    return os.cpu_count() or 1


def environment(backend: object) -> dict[str, Any]:
    """Where a run ran: Python, platform, threads, CPUs, torch version and the backend's device."""
    torch = sys.modules.get("torch")
    device = backend.device if isinstance(backend, HasDevice) else None
    return {"python": platform.python_version(), "platform": platform.platform(), "threads": _threads(),
            "cpus": os.cpu_count(), "torch": getattr(torch, "__version__", None),
            "device": str(device) if device is not None else None}


def _slug(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return text[-40:].strip("-") or "model"


def run_id_for(model_spec: str, identity: str, settings: dict[str, Any], tasks: Sequence[Task]) -> str:
    """A deterministic run id: the same command on the same model resumes the same run."""
    payload = json.dumps([identity, settings, sorted((t.name, t.version) for t in tasks)], sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:10]
    name = Path(model_spec.split(":", 1)[-1]).name if model_spec.startswith("hf:") else model_spec
    return f"{_slug(name)}-{digest}"


def _make_backend(model: Any, tokenizer: Any, backend: ModelBackend | None, model_spec: str | None,
                  batch_size: int) -> ModelBackend:
    if backend is not None:
        missing = missing_members(backend)
        if missing:
            raise TypeError(f"backend= must be a ModelBackend (identity, last_stats, generate); "
                            f"{type(backend).__name__} lacks {', '.join(missing)}")
        return backend
    if model is not None:
        if tokenizer is None:
            raise ValueError("evaluate(model=...) needs tokenizer=... too")
        from evalkit.models.hf import HFBackend

        return HFBackend(model, tokenizer, batch_size=batch_size)
    if model_spec is not None:
        from evalkit.models.spec import load_backend

        return load_backend(model_spec, batch_size=batch_size)
    raise ValueError("evaluate() needs model= (and tokenizer=), backend= or model_spec=")


def evaluate(
    model: Any = None,
    tokenizer: Any = None,
    *,
    tasks: TaskRef | Iterable[TaskRef],
    backend: ModelBackend | None = None,
    model_spec: str | None = None,
    n: int | None = 100,
    seed: int = 0,
    k: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    split: str = "eval",
    level: int | None = None,
    batch_size: int = 64,
    max_new_tokens: int | None = None,
    run_dir: Path | str | None = None,
    run_id: str | None = None,
    reports_dir: Path | str | None = None,
    tasks_dir: Sequence[Path] | None = None,
    check_timeout: float = DEFAULT_CHECK_TIMEOUT,
    check_workers: int | None = None,
    progress: ProgressFn | None = None,
    meta: dict[str, Any] | None = None,
    keep_samples: bool = True,
    task_settings: dict[str, dict[str, Any]] | None = None,
    chat: bool = False,
    adaptive: bool = False,
    alpha: float = DEFAULT_ALPHA,
) -> RunRecord:
    """Evaluate a model on tasks and return the run record.

    Args:
        model, tokenizer: an in-memory Hugging Face model (no reload; its training mode is
            restored afterwards). Or give `backend` (any ModelBackend) or `model_spec`
            ("hf:PATH", "openai:URL", "python:module:fn", "oracle").
        tasks: one task or a list, as `evalkit.load_tasks` takes them: Task objects, @task-decorated
            classes, paths to task files, or names/globs/tag:NAME found in the project's task folders
            (or in `tasks_dir`).
        n: examples per task (None: all, for data tasks). seed: example and sampling seed.
        k: samples per example (pass@k); k > 1 needs temperature > 0.
        split, level: which examples.
        max_new_tokens: overrides every task's setting (default: the task's, else sized
            from its longest reference).
        run_dir: journal and record folder; an existing journal there is resumed (its unreadable
            lines dropped and counted: the record's `journal`). Default: `reports_dir/run_id` when
            `reports_dir` is given, else nothing is written.
        check_timeout: seconds an extraction or a check may take; past it the sample is a TIMEOUT and
            the check is ended (its worker process interrupted, or killed: `evalkit.core.checkpool`).
        check_workers: processes (threads for `contained` tasks) that check at once (default: the
            CPUs, at most 8).
        progress: called as progress(task, done, total) after each batch.
        meta: free-form data stored in the record (e.g. the training step).
        keep_samples: keep every sample inline in the returned record (without a run folder).
        task_settings: per-task overrides of `n` and `level`, e.g. {"addition": {"level": 3}}, and of the
            `target` an adaptive run decides against, and its `marks`: further thresholds it decides too
            (`evalkit.run.sequential`).
        chat: chat mode: prompt with each task's chat form (`Task.messages`: system message, few-shot
            turns, the question), which the backend renders with the model's chat template. Part of
            every journal key and the run id, and recorded (settings.chat, each task's generation.chat).
        adaptive: evaluate each task's n examples in a seeded random order, in rounds, and stop the task as soon
            as "target met" or "target missed" is decided at level `alpha`, valid however many rounds are
            looked at (`evalkit.run.sequential`); at n undecided, decide as a fixed-n run. Needs k = 1 and a
            target per task. The task's entry says how many samples were used and why it stopped (`adaptive`).

    Raises:
        ConfigError: bad settings. NothingToRun: no tasks or no examples. UnknownTaskError: a task
        name that matches nothing. TypeError: a `tasks` entry that is not a task.
        RunInterrupted: Ctrl-C (a KeyboardInterrupt) during a journaled run; it says what is saved.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}", field="k")
    if k > 1 and temperature <= 0:
        raise ConfigError("k > 1 samples per example need --temperature > 0 (greedy samples are identical)",
                          field="temperature")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}", field="top_p")
    task_list = load_tasks(tasks, tasks_dir=tasks_dir)
    if chat:  # the chat stop strings, token budget and extraction, where a task has them
        task_list = [t.for_chat() for t in task_list]
    if not task_list:
        raise NothingToRun("no tasks to evaluate")
    targets = adaptive_targets(task_list, task_settings, k=k, alpha=alpha) if adaptive else {}
    backend = _make_backend(model, tokenizer, backend, model_spec, batch_size)
    identity = backend.identity  # read once: for in-memory weights it is a hash of every tensor
    if chat:
        identity = chat_identity(backend, identity)  # + its chat template's fingerprint, when it has one
    spec = model_spec or ("hf:<in-memory>" if model is not None else identity)
    settings: dict[str, Any] = {"split": split, "n": n, "seed": seed, "k": k, "temperature": temperature,
                                "top_p": top_p, "level": level, "max_new_tokens": max_new_tokens,
                                "batch_size": batch_size}
    if task_settings:
        settings["task_settings"] = task_settings
    if chat:  # only when on: raw runs keep the ids they always had
        settings["chat"] = True
    if adaptive:
        settings["adaptive"] = {"alpha": alpha}
    if run_dir is None and reports_dir is not None:
        run_id = run_id or run_id_for(spec, identity, {kk: v for kk, v in settings.items() if kk != "batch_size"},
                                      task_list)
        run_dir = Path(reports_dir) / run_id
    run_id = run_id or (Path(run_dir).name if run_dir else run_id_for(spec, identity, settings, task_list))
    created = utc_now()
    start = time.perf_counter()
    folder = Path(run_dir) if run_dir else None
    workers = check_workers or min(8, os.cpu_count() or 1)
    task_results: list[dict[str, Any]] = []
    all_samples: list[dict[str, Any]] = []
    total_gen = total_check = 0.0
    tally = Tally()
    with contextlib.ExitStack() as stack:
        journal = stack.enter_context(Journal(folder / JOURNAL_FILE)) if folder else None
        tally.dropped_lines = journal.dropped if journal else 0
        # With a run folder, samples stream to samples.jsonl a chunk at a time (a large run never holds
        # its samples in memory); the file is renamed into place only when the run is complete.
        sink: SinkFn | None = None
        if folder:
            fh = stack.enter_context(open(folder / PARTIAL_SAMPLES, "w", encoding="utf-8"))
            sink = lambda rows: fh.writelines(dump_line(s) for s in rows)  # noqa: E731
        elif keep_samples:
            sink = all_samples.extend
        # Contained checks (model-written code in the sandbox) wait on the sandbox's pool: as many at once as it runs.
        scorer = stack.enter_context(Scorer(task_list, workers, check_timeout,
                                            thread_workers=check_workers or max(workers, sandbox_pool_size())))
        try:
            for task in task_list:
                own = (task_settings or {}).get(task.name, {})
                result = run_task(task, backend, identity, journal, scorer, n=own.get("n", n), seed=seed, k=k,
                                  temperature=temperature, top_p=top_p, split=split, level=own.get("level", level),
                                  batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress,
                                  chat=chat, tally=tally, sink=sink,
                                  sequential=Sequential(targets[task.name], alpha, marks=own.get("marks", ()))
                                  if adaptive else None)
                task_results.append(result)
                total_gen += result["timings"]["generate_s"]
                total_check += result["timings"]["check_s"]
        except KeyboardInterrupt:
            if journal is None:
                raise
            raise RunInterrupted(journal.saved, journal.appended, journal.path, run_id) from None
        except EvalkitError as exc:  # e.g. a server that stopped answering: say what is kept
            if journal is not None and journal.appended and exc.args and isinstance(exc.args[0], str):
                exc.args = (f"{exc.args[0]} ({journal.saved} samples are saved in {journal.path}; the same "
                            "command resumes them)", *exc.args[1:])
            raise
        if folder:
            fh.flush()
            os.fsync(fh.fileno())
    data = {
        "schema_version": SCHEMA_VERSION, "kind": "evalkit.run", "run_id": run_id, "evalkit_version": __version__,
        "created_at": created, "finished_at": utc_now(), "complete": True,
        "model": {"spec": spec, "identity": identity},
        "settings": settings, "environment": environment(backend), "tasks": task_results,
        "samples_file": None, "samples": None,
        "timings": {"total_s": round(time.perf_counter() - start, 4), "generate_s": round(total_gen, 4),
                    "check_s": round(total_check, 4)},
        "meta": dict(meta or {}),
    }
    if folder:
        data["journal"] = {"file": JOURNAL_FILE, **tally.to_dict()}
    record = RunRecord(data)
    if folder:
        os.replace(folder / PARTIAL_SAMPLES, folder / SAMPLES_FILE)
        data["samples_file"] = SAMPLES_FILE
        record.save(folder)
    elif keep_samples:
        data["samples"] = all_samples
    return record
