"""After a run: re-scoring its journaled outputs with the current checkers, and comparing two runs.

    evalkit rescore reports/<run-id>
    evalkit compare reports/<baseline> reports/<candidate>
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from evalkit.core.scoring import DEFAULT_CHECK_TIMEOUT, score
from evalkit.core.task import GenerationConfig
from evalkit.errors import ConfigError
from evalkit.run import stats
from evalkit.run.journal import JOURNAL_FILE, read_journal
from evalkit.run.record import RunRecord, load_record, sample_row, task_result, utc_now


def rescore(run: Path | str, *, tasks_dir: Sequence[Path] | None = None, check_timeout: float = DEFAULT_CHECK_TIMEOUT,
            registry: Any = None) -> RunRecord:
    """Re-apply the current checkers to a run's journaled outputs; generates nothing.

    The task's current version and reference are used; the prompts and outputs are the
    journal's. The run's record.json and samples.jsonl are rewritten.

    Args:
        run: the run folder (or its record.json).
        tasks_dir: where to find the tasks (default: the project's task folders).
        check_timeout: seconds one check may take.
        registry: a Registry to take the tasks from instead.
    """
    from evalkit.discovery.load import load_tasks

    record = load_record(run)
    folder = record.path
    assert folder is not None
    journal_path = folder / JOURNAL_FILE
    if not journal_path.is_file():
        raise ConfigError("run has no journal to rescore from", file=journal_path)
    entries = {e["key"]: e for e in read_journal(journal_path)}
    names = [t["name"] for t in record.tasks]
    if registry is None:
        registry_tasks = {t.name: t for t in load_tasks(names, tasks_dir=tasks_dir)}
    else:
        registry_tasks = {name: registry.get(name) for name in names}
    old_order = [(s["task"], s["example_id"], s["sample_index"]) for s in record.samples()]
    by_id = {(e["task"], e["example"]["id"], e["sample_index"]): e for e in entries.values()
             if e["model"] == record.data["model"]["identity"]}
    samples_by_task: dict[str, list[dict[str, Any]]] = {}
    start = time.perf_counter()
    for name, ex_id, i in old_order:
        entry = dict(by_id[(name, ex_id, i)])
        task = registry_tasks[name]
        if entry["generation"].get("chat"):
            task = task.for_chat()  # chat-mode outputs are read as chat-mode runs read them
        stored = entry["example"]
        ex = task.example(stored["fields"], stored.get("level"))
        ex = replace(ex, split=stored["split"], prompt=stored["prompt"])
        sc = score(task, ex, entry["output"], timeout=check_timeout)
        entry.update(answer=sc.answer, verdict=sc.verdict.to_dict(), example={**stored, "reference": ex.reference})
        samples_by_task.setdefault(name, []).append(sample_row(entry))
    check_s = time.perf_counter() - start
    results, all_samples = [], []
    for old in record.tasks:
        task = registry_tasks[old["name"]]
        gen = GenerationConfig(old["generation"]["max_new_tokens"], tuple(old["generation"]["stop"]),
                               old["generation"]["temperature"], old["generation"]["top_p"],
                               old["generation"].get("chat", False))
        samples = samples_by_task.get(old["name"], [])
        timings = {**old["timings"], "check_s": round(check_s, 4)}
        results.append(task_result(task, gen, old.get("level"), samples, timings))
        all_samples.extend(samples)
    record.data["tasks"] = results
    record.data["meta"] = {**record.data.get("meta", {}), "rescored_at": utc_now()}
    record.save(folder, samples=all_samples)
    return record


def compare_records(a: RunRecord, b: RunRecord, *, alpha: float = 0.05) -> dict[str, stats.PairedComparison]:
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
