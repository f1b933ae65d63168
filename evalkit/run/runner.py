"""The runner: any model over any tasks, journaled, resumable, with statistics.

    record = evalkit.evaluate(model=model, tokenizer=tok, tasks=["addition"], n=200)
    record.rate("addition")

Every sample is journaled as its batch completes (journal.py); running the same
evaluation again into the same run folder generates only what is missing, and the final
record equals an uninterrupted run's (timestamps aside). Sampling is seeded per row
(seed, prompt, sample index), so batch composition never changes an output.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evalkit.version import __version__
from evalkit.run import stats
from evalkit.errors import ConfigError, NothingToRun
from evalkit.core.example import Example
from evalkit.run.journal import Journal, sample_key
from evalkit.run.record import SAMPLES_FILE, SCHEMA_VERSION, RunRecord
from evalkit.core.scoring import DEFAULT_CHECK_TIMEOUT, score
from evalkit.core.task import GenerationConfig, Task

JOURNAL_FILE = "journal.jsonl"
# Progress callback: (task name, examples done, examples total, examples generated this session).
ProgressFn = Callable[[str, int, int], None]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _threads() -> int:
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    return os.cpu_count() or 1


def environment(backend: Any) -> dict[str, Any]:
    torch = sys.modules.get("torch")
    env = {"python": platform.python_version(), "platform": platform.platform(), "threads": _threads(),
           "cpus": os.cpu_count(), "torch": getattr(torch, "__version__", None)}
    device = getattr(backend, "device", None)
    env["device"] = str(device) if device is not None else None
    return env


def _slug(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return text[-40:].strip("-") or "model"


def run_id_for(model_spec: str, identity: str, settings: dict[str, Any], tasks: Sequence[Task]) -> str:
    """A deterministic run id: the same command on the same model resumes the same run."""
    payload = json.dumps([identity, settings, sorted((t.name, t.version) for t in tasks)], sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:10]
    name = Path(model_spec.split(":", 1)[-1]).name if model_spec.startswith("hf:") else model_spec
    return f"{_slug(name)}-{digest}"


def size_max_new_tokens(task: Task, examples: Sequence[Example], backend: Any) -> int:
    """Room for the longest reference answer plus a margin (a cap too small silently caps the rate)."""
    refs = [e.reference for e in examples if e.reference]
    if not refs:
        return 256
    count = getattr(backend, "count_tokens", None)
    longest = max((count(r) if count else len(r)) for r in refs)
    # +1 for the stop/EOS token, and a margin so a model may add a little (a space, a sign).
    return longest + max(4, longest // 4) + 1


def _resolve_tasks(tasks: Iterable[Task | str], tasks_dir: Sequence[Path] | None) -> list[Task]:
    out: list[Task] = []
    registry = None
    for t in tasks:
        if isinstance(t, Task):
            out.append(t)
            continue
        if registry is None:
            from evalkit.config import load_config
            from evalkit.discovery.registry import discover

            config = load_config()
            dirs = list(tasks_dir) if tasks_dir else list(config.tasks)
            registry = discover(dirs, fallback_to_bundled=not tasks_dir and not config.tasks_configured)
        out.extend(registry.select([t]))
    if not out:
        raise NothingToRun("no tasks to evaluate")
    return out


def _make_backend(model: Any, tokenizer: Any, backend: Any, model_spec: str | None, batch_size: int) -> Any:
    if backend is not None:
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
    tasks: Iterable[Task | str],
    backend: Any = None,
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
) -> RunRecord:
    """Evaluate a model on tasks and return the run record.

    Args:
        model, tokenizer: an in-memory Hugging Face model (no reload; its training mode is
            restored afterwards). Or give `backend` (any ModelBackend) or `model_spec`
            ("hf:PATH", "openai:URL", "python:module:fn", "oracle").
        tasks: Task objects or names/globs/tag:NAME found in the project's task folders.
        n: examples per task (None: all, for data tasks). seed: example and sampling seed.
        k: samples per example (pass@k); k > 1 needs temperature > 0.
        split, level: which examples.
        max_new_tokens: overrides every task's setting (default: the task's, else sized
            from its longest reference).
        run_dir: journal and record folder; an existing journal there is resumed.
            Default: `reports_dir/run_id` when `reports_dir` is given, else nothing is written.
        progress: called as progress(task, done, total) after each batch.
        meta: free-form data stored in the record (e.g. the training step).
        keep_samples: keep every sample inline in the returned record (without a run folder).
        task_settings: per-task overrides of `n` and `level`, e.g. {"addition": {"level": 3}}.

    Raises:
        ConfigError: bad settings. NothingToRun: no tasks or no examples.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}", field="k")
    if k > 1 and temperature <= 0:
        raise ConfigError("k > 1 samples per example need --temperature > 0 (greedy samples are identical)",
                          field="temperature")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}", field="top_p")
    task_list = _resolve_tasks(tasks, tasks_dir)
    backend = _make_backend(model, tokenizer, backend, model_spec, batch_size)
    spec = model_spec or ("hf:<in-memory>" if model is not None else getattr(backend, "identity", "backend"))
    identity = backend.identity
    settings = {"split": split, "n": n, "seed": seed, "k": k, "temperature": temperature, "top_p": top_p,
                "level": level, "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    if task_settings:
        settings["task_settings"] = task_settings
    if run_dir is None and reports_dir is not None:
        run_id = run_id or run_id_for(spec, identity, {kk: v for kk, v in settings.items() if kk != "batch_size"},
                                      task_list)
        run_dir = Path(reports_dir) / run_id
    run_id = run_id or (Path(run_dir).name if run_dir else run_id_for(spec, identity, settings, task_list))
    created = _now()
    start = time.perf_counter()
    journal = Journal(Path(run_dir) / JOURNAL_FILE) if run_dir else None
    workers = check_workers or min(8, os.cpu_count() or 1)
    task_results: list[dict[str, Any]] = []
    all_samples: list[dict[str, Any]] = []
    total_gen = total_check = 0.0
    # With a run folder, samples stream to samples.jsonl task by task (a large run never holds
    # every sample in memory); the file is renamed into place only when the run is complete.
    samples_tmp = Path(run_dir) / f".{SAMPLES_FILE}.partial" if run_dir else None
    sink = None
    try:
        if journal is not None:
            journal.__enter__()
            sink = open(samples_tmp, "w", encoding="utf-8")
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evalkit-score") as pool:
            for task in task_list:
                own = (task_settings or {}).get(task.name, {})
                result, samples = _run_task(task, backend, identity, journal, pool, n=own.get("n", n), seed=seed,
                                            k=k, temperature=temperature, top_p=top_p, split=split,
                                            level=own.get("level", level),
                                            batch_size=batch_size, max_new_tokens=max_new_tokens,
                                            check_timeout=check_timeout, progress=progress)
                task_results.append(result)
                if sink is not None:
                    sink.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
                elif keep_samples:
                    all_samples.extend(samples)
                total_gen += result["timings"]["generate_s"]
                total_check += result["timings"]["check_s"]
        if sink is not None:
            sink.flush()
            os.fsync(sink.fileno())
    finally:
        if sink is not None:
            sink.close()
        if journal is not None:
            journal.close()
    data = {
        "schema_version": SCHEMA_VERSION, "kind": "evalkit.run", "run_id": run_id, "evalkit_version": __version__,
        "created_at": created, "finished_at": _now(), "complete": True,
        "model": {"spec": spec, "identity": identity},
        "settings": settings, "environment": environment(backend), "tasks": task_results,
        "samples_file": None, "samples": None,
        "timings": {"total_s": round(time.perf_counter() - start, 4), "generate_s": round(total_gen, 4),
                    "check_s": round(total_check, 4)},
        "meta": dict(meta or {}),
    }
    record = RunRecord(data)
    if run_dir:
        os.replace(samples_tmp, Path(run_dir) / SAMPLES_FILE)
        data["samples_file"] = SAMPLES_FILE
        record.save(Path(run_dir))
    elif keep_samples:
        data["samples"] = all_samples
    return record


def _run_task(task: Task, backend: Any, identity: str, journal: Journal | None, pool: ThreadPoolExecutor, *,
              n: int | None, seed: int, k: int, temperature: float, top_p: float, split: str, level: int | None,
              batch_size: int, max_new_tokens: int | None, check_timeout: float,
              progress: ProgressFn | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    examples = task.examples(split, n=n, seed=seed, level=level)
    if not examples:
        raise NothingToRun(f"task {task.name!r} has no {split} examples (level {level})")
    mnt = max_new_tokens or task.generation.max_new_tokens or size_max_new_tokens(task, examples, backend)
    gen = GenerationConfig(max_new_tokens=mnt, stop=task.generation.stop, temperature=temperature, top_p=top_p)
    gen_key = gen.to_dict()
    keys = {(ex.id, i): sample_key(identity, task.name, task.version, ex.id, gen_key, seed, i)
            for ex in examples for i in range(k)}
    found: dict[tuple[str, int], dict[str, Any]] = {}
    if journal is not None:
        for key_id, key in keys.items():
            entry = journal.get(key)
            if entry is not None:
                found[key_id] = entry
    pending = [ex for ex in examples if any((ex.id, i) not in found for i in range(k))]
    done = len(examples) - len(pending)
    if progress:
        progress(task.name, done, len(examples))
    gen_s = check_s = 0.0
    gen_tokens = prompt_tokens = generated_examples = 0
    chunk = max(batch_size * 4, 64)
    for lo in range(0, len(pending), chunk):
        batch = pending[lo: lo + chunk]
        t0 = time.perf_counter()
        if hasattr(backend, "generate_examples"):
            outputs = backend.generate_examples(batch, gen, seed=seed, num_samples=k)
        else:
            outputs = backend.generate([ex.prompt for ex in batch], gen, seed=seed, num_samples=k)
        gen_s += time.perf_counter() - t0
        st = getattr(backend, "last_stats", None)
        if st is not None:
            gen_tokens += st.generated_tokens
            prompt_tokens += st.prompt_tokens
        generated_examples += len(batch)
        t1 = time.perf_counter()
        jobs = [(ex, i, outs[i]) for ex, outs in zip(batch, outputs) for i in range(k)]
        scored = list(pool.map(lambda job: score(task, job[0], job[2], timeout=check_timeout), jobs))
        check_s += time.perf_counter() - t1
        entries = []
        for (ex, i, output), sc in zip(jobs, scored):
            entry = {"key": keys[(ex.id, i)], "model": identity, "task": task.name, "task_version": task.version,
                     "example": ex.to_dict(), "sample_index": i, "seed": seed, "generation": gen_key,
                     "output": output, "answer": sc.answer, "verdict": sc.verdict.to_dict()}
            entries.append(entry)
            found[(ex.id, i)] = entry
        if journal is not None:
            journal.append(entries)
        done += len(batch)
        if progress:
            progress(task.name, done, len(examples))
    samples = [_sample(found[(ex.id, i)]) for ex in examples for i in range(k)]
    timings = {"generate_s": round(gen_s, 4), "check_s": round(check_s, 4),
               "examples_per_s": round(generated_examples / gen_s, 2) if gen_s > 0 else 0.0,
               "tokens_per_s": round(gen_tokens / gen_s, 2) if gen_s > 0 else 0.0,
               "generated_tokens": gen_tokens, "prompt_tokens": prompt_tokens,
               "examples_generated": generated_examples, "examples_resumed": len(examples) - generated_examples}
    return summarize_task(task, gen, level, samples, timings), samples


def _sample(entry: dict[str, Any]) -> dict[str, Any]:
    ex, v = entry["example"], entry["verdict"]
    return {"task": entry["task"], "example_id": ex["id"], "sample_index": entry["sample_index"],
            "level": ex.get("level"), "prompt": ex["prompt"], "reference": ex.get("reference"),
            "output": entry["output"], "answer": entry["answer"], "status": v["status"], "score": v["score"],
            "reason": v["reason"]}


def summarize_task(task: Task, gen: GenerationConfig, level: int | None, samples: list[dict[str, Any]],
                   timings: dict[str, Any]) -> dict[str, Any]:
    """Per-task statistics from its samples (pass rate over all samples, pass@k over examples)."""
    summary = stats.summarize((s["status"], s["score"]) for s in samples)
    by_example: dict[str, list[bool]] = {}
    for s in samples:
        by_example.setdefault(s["example_id"], []).append(s["status"] == "PASS")
    k = max((len(v) for v in by_example.values()), default=1)
    pass_at_k = {}
    for kk in sorted({1, k} | {2**j for j in range(1, 8) if 2**j < k}):
        pass_at_k[str(kk)] = round(stats.mean_pass_at_k(((len(v), sum(v)) for v in by_example.values()), kk), 6)
    levels = stats.per_level((s.get("level"), s["status"]) for s in samples)
    per_level = {("none" if lv is None else str(lv)): r.to_dict() for lv, r in levels.items()}
    target = task.target
    return {
        "name": task.name, "version": task.version, "target": target, "source": task.source, "level": level,
        "generation": gen.to_dict(), "n_examples": len(by_example), "n_samples": summary.n,
        "passes": summary.passes, "rate": summary.rate, "low": summary.low, "high": summary.high,
        "mean_score": summary.mean_score, "errors": summary.errors, "timeouts": summary.timeouts,
        "pass_at_k": pass_at_k, "per_level": per_level,
        "meets_target": None if target is None else summary.rate >= target, "timings": timings,
    }


def rescore(run: Path | str, *, tasks_dir: Sequence[Path] | None = None, check_timeout: float = DEFAULT_CHECK_TIMEOUT,
            registry: Any = None) -> RunRecord:
    """Re-apply the current checkers to a run's journaled outputs; generates nothing.

    The task's current version and reference are used; the prompts and outputs are the
    journal's. The run's record.json and samples.jsonl are rewritten.
    """
    from evalkit.run.journal import read_journal
    from evalkit.run.record import load_record

    record = load_record(run)
    folder = record.path
    assert folder is not None
    journal_path = folder / JOURNAL_FILE
    if not journal_path.is_file():
        raise ConfigError("run has no journal to rescore from", file=journal_path)
    entries = {e["key"]: e for e in read_journal(journal_path)}
    if registry is None:
        registry_tasks = {t.name: t for t in _resolve_tasks([t["name"] for t in record.tasks], tasks_dir)}
    else:
        registry_tasks = {t["name"]: registry.get(t["name"]) for t in record.tasks}
    old_order = [(s["task"], s["example_id"], s["sample_index"]) for s in record.samples()]
    by_id = {(e["task"], e["example"]["id"], e["sample_index"]): e for e in entries.values()
             if e["model"] == record.data["model"]["identity"]}
    samples_by_task: dict[str, list[dict[str, Any]]] = {}
    start = time.perf_counter()
    for name, ex_id, i in old_order:
        entry = dict(by_id[(name, ex_id, i)])
        task = registry_tasks[name]
        stored = entry["example"]
        ex = task._make(stored["fields"], stored["split"], stored.get("level"))
        ex = replace(ex, prompt=stored["prompt"])
        sc = score(task, ex, entry["output"], timeout=check_timeout)
        entry.update(answer=sc.answer, verdict=sc.verdict.to_dict(), example={**stored, "reference": ex.reference})
        samples_by_task.setdefault(name, []).append(_sample(entry))
    check_s = time.perf_counter() - start
    results, all_samples = [], []
    for old in record.tasks:
        task = registry_tasks[old["name"]]
        gen = GenerationConfig(old["generation"]["max_new_tokens"], tuple(old["generation"]["stop"]),
                               old["generation"]["temperature"], old["generation"]["top_p"])
        samples = samples_by_task.get(old["name"], [])
        timings = {**old["timings"], "check_s": round(check_s, 4)}
        results.append(summarize_task(task, gen, old.get("level"), samples, timings))
        all_samples.extend(samples)
    record.data["tasks"] = results
    record.data["meta"] = {**record.data.get("meta", {}), "rescored_at": _now()}
    record.save(folder, samples=all_samples)
    return record


def compare_records(a: RunRecord, b: RunRecord, *, alpha: float = 0.05) -> dict[str, "stats.PairedComparison"]:
    """Paired comparison of two runs, task by task, on the examples both ran (b relative to a).

    An example passes when any of its samples passes (pass@k with the run's k) — for k = 1
    runs that is the plain verdict. Uses the exact McNemar test.
    """
    def by_example(record: RunRecord) -> dict[str, dict[str, bool]]:
        out: dict[str, dict[str, bool]] = {}
        for s in record.samples():
            d = out.setdefault(s["task"], {})
            d[s["example_id"]] = d.get(s["example_id"], False) or s["status"] == "PASS"
        return out

    pa, pb = by_example(a), by_example(b)
    result = {}
    for name in sorted(set(pa) & set(pb)):
        if set(pa[name]) & set(pb[name]):
            result[name] = stats.paired_compare(pa[name], pb[name], alpha=alpha)
    return result
