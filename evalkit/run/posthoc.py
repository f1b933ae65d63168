"""After a run: re-scoring its journaled outputs with the current checkers, and comparing two runs.

    evalkit rescore reports/<run-id>
    evalkit compare reports/<baseline> reports/<candidate>
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from evalkit.core.scoring import DEFAULT_CHECK_TIMEOUT, score
from evalkit.core.task import GenerationConfig
from evalkit.errors import ConfigError
from evalkit.run import stats
from evalkit.run.journal import JOURNAL_FILE, load_journal, prompt_fingerprint, sample_key
from evalkit.run.record import RunRecord, load_record, sample_row, task_result, utc_now


def rescore(run: Path | str, *, tasks_dir: Sequence[Path] | None = None, check_timeout: float = DEFAULT_CHECK_TIMEOUT,
            registry: Any = None) -> RunRecord:
    """Re-apply the current checkers to a run's journaled outputs; generates nothing.

    The task's current version and reference are used; the prompts and outputs are the
    journal's. Each of the record's samples is looked up by its full journal key (`sample_key`:
    model, task version, generation settings, seed, sample index and chat wording, all as the
    record states them), so an output made under another configuration — another run that shared
    the run folder, say with another `--max-new-tokens` — is never used. A sample with no output
    for the record's configuration stops the rescore with a `ConfigError` that counts what was
    found, and what exists only for other configurations. A sample whose generation failed keeps its
    ERROR verdict. The run's record.json and samples.jsonl are rewritten; the record's `journal`
    says how many samples were rescored, how many journaled outputs of other configurations were
    ignored, and how many unreadable journal lines were dropped.

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
    scan = load_journal(journal_path)
    names = [t["name"] for t in record.tasks]
    if registry is None:
        registry_tasks = {t.name: t for t in load_tasks(names, tasks_dir=tasks_dir)}
    else:
        registry_tasks = {name: registry.get(name) for name in names}
    rows = list(record.samples())
    keys = [record_sample_key(record, row) for row in rows]
    wanted = set(keys)
    missing = [row for row, key in zip(rows, keys) if key not in scan.entries]
    same_sample = {(row["task"], row["example_id"], row["sample_index"]) for row in rows}
    others = [e for key, e in scan.entries.items() if key not in wanted
              and (e["task"], e["example"]["id"], e["sample_index"]) in same_sample]
    if missing:
        raise ConfigError(_missing_message(record, len(rows) - len(missing), len(rows), missing, others),
                          file=journal_path)
    samples_by_task: dict[str, list[dict[str, Any]]] = {}
    start = time.perf_counter()
    for row, key in zip(rows, keys):
        entry = dict(scan.entries[key])
        name = row["task"]
        task = registry_tasks[name]
        if entry["generation"].get("chat"):
            task = task.for_chat()  # chat-mode outputs are read as chat-mode runs read them
        stored = entry["example"]
        ex = task.example(stored["fields"], stored.get("level"))
        ex = replace(ex, split=stored["split"], prompt=stored["prompt"])
        if "failed" not in entry:  # a sample that was never generated keeps its ERROR verdict
            sc = score(task, ex, entry["output"], timeout=check_timeout)
            entry.update(answer=sc.answer, verdict=sc.verdict.to_dict())
        entry["example"] = {**stored, "reference": ex.reference}
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
    record.data["journal"] = {**record.data.get("journal", {}), "file": JOURNAL_FILE, "rescored": len(rows),
                              "other_configurations": len(others), "dropped_lines": scan.dropped}
    record.data["meta"] = {**record.data.get("meta", {}), "rescored_at": utc_now()}
    record.save(folder, samples=all_samples)
    return record


def record_sample_key(record: RunRecord, row: dict[str, Any]) -> str:
    """The journal key of one of a record's samples, from what the record says about its run."""
    task = record.task(row["task"])
    chat_form = row.get("messages")
    return sample_key(record.data["model"]["identity"], task["name"], task["version"], row["example_id"],
                      task["generation"], record.data["settings"]["seed"], row["sample_index"],
                      prompt_fingerprint(chat_form) if task["generation"].get("chat") else None)


def _missing_message(record: RunRecord, found: int, total: int, missing: list[dict[str, Any]],
                     others: list[dict[str, Any]]) -> str:
    """Why a record cannot be rescored: its configuration, what was found, and the other configurations."""
    name = missing[0]["task"]
    gen = record.task(name)["generation"]
    text = (f"the journal holds {found} of the record's {total} samples for its configuration "
            f"(model {record.data['model']['identity']}, seed {record.data['settings']['seed']}, task {name!r} "
            f"version {record.task(name)['version']}, generation {json.dumps(gen, sort_keys=True)}); ")
    if others:
        seen = sorted({json.dumps({"seed": e["seed"], "task_version": e["task_version"], **e["generation"]},
                                  sort_keys=True) for e in others})
        text += (f"{len(others)} outputs for the same samples were made under other configurations "
                 f"({'; '.join(seen[:3])}{' ...' if len(seen) > 3 else ''}) and are never used for this record; ")
    return text + "run the evaluation again to generate the missing samples"


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
