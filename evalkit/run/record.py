"""Run records: the plain-data result of one evaluation, validated against a versioned schema.

The runner writes them, reports render them, the gate judges them, and the fine-tune loop
writes one per evaluation. On disk a run is a folder: `record.json` (the summary, schema
`evalkit/schemas/record.schema.json`), `samples.jsonl` (every sample, in order) and the
`journal.jsonl` it was built from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evalkit.core.task import GenerationConfig, Task
from evalkit.errors import ConfigError
from evalkit.run.counts import TaskCounts

SCHEMA_VERSION = 1
RECORD_FILE = "record.json"
SAMPLES_FILE = "samples.jsonl"


@dataclass
class RunRecord:
    """A run record. `data` is the JSON document; helpers read the common parts.

    Attributes:
        data: the record as plain data (what `record.json` holds).
        path: the run folder it was read from or saved to, if any.
    """

    data: dict[str, Any]
    path: Path | None = None

    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    @property
    def tasks(self) -> list[dict[str, Any]]:
        return self.data["tasks"]

    def task(self, name: str) -> dict[str, Any]:
        for t in self.tasks:
            if t["name"] == name:
                return t
        raise KeyError(f"task {name!r} is not in run {self.run_id}; tasks: {[t['name'] for t in self.tasks]}")

    def rate(self, name: str) -> float:
        return self.task(name)["rate"]

    @property
    def pass_rate(self) -> float:
        """The pass rate over all samples of all tasks."""
        n = sum(t["n_samples"] for t in self.tasks)
        return sum(t["passes"] for t in self.tasks) / n if n else 0.0

    def samples(self) -> Iterator[dict[str, Any]]:
        """Every sample: from memory, or streamed from samples.jsonl beside the record."""
        if self.data.get("samples") is not None:
            yield from self.data["samples"]
        elif self.path is not None and self.data.get("samples_file"):
            with open(self.path / self.data["samples_file"], encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield json.loads(line)

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def save(self, folder: Path, samples: list[dict[str, Any]] | None = None) -> Path:
        """Write record.json (and samples.jsonl when samples are given) atomically into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if samples is not None:
            atomic_write(folder / SAMPLES_FILE,
                          "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
            self.data["samples_file"] = SAMPLES_FILE
        validate_record(self.data, folder / RECORD_FILE)
        atomic_write(folder / RECORD_FILE, json.dumps(self.data, indent=2, ensure_ascii=False) + "\n")
        self.path = folder
        return folder / RECORD_FILE


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader sees the old file or the new one, never a part.

    The file gets the permissions of any file the process creates (0666 less the umask: 0644 as a rule),
    like the files written beside it — not tempfile's 0600.
    """
    fd, tmp = _create_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise




def _create_beside(path: Path) -> tuple[int, str]:
    """A new, uniquely named temporary file beside `path`, opened for writing, mode 0666 less the umask."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def utc_now() -> str:
    """The current UTC time as the record writes it (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sample_row(entry: dict[str, Any]) -> dict[str, Any]:
    """The record's row for one sample (samples.jsonl), from its journal entry."""
    ex, v = entry["example"], entry["verdict"]
    row = {"task": entry["task"], "example_id": ex["id"], "sample_index": entry["sample_index"],
           "level": ex.get("level"), "prompt": ex["prompt"], "reference": ex.get("reference"),
           "output": entry["output"], "answer": entry["answer"], "status": v["status"], "score": v["score"],
           "reason": v["reason"]}
    if "messages" in entry:  # a chat-mode sample: what the model was sent (`prompt` is the raw form)
        row["messages"] = entry["messages"]
    return row


def task_result(task: Task, gen: GenerationConfig, level: int | None, samples: Iterable[dict[str, Any]],
                timings: dict[str, Any], adaptive: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record's entry for one task, from its sample rows (see `task_entry`)."""
    counts = TaskCounts()
    counts.add_rows(samples)
    return task_entry(task, gen, level, counts, timings, adaptive)


def task_entry(task: Task, gen: GenerationConfig, level: int | None, counts: TaskCounts,
               timings: dict[str, Any], adaptive: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record's entry for one task, from its counts: pass rate over all samples with its Wilson
    interval, pass@k over examples, per-level rates, errors and timeouts; for an adaptive run, `adaptive`
    (`evalkit.run.sequential.Sequential.to_dict`: samples used, cap, decision, bound) — the rate and the
    Wilson interval are then those of the samples used."""
    summary = counts.summary()
    target = task.target
    result = {
        "name": task.name, "version": task.version, "target": target, "source": task.source, "level": level,
        "generation": gen.to_dict(), "n_examples": counts.examples, "n_samples": summary.n,
        "passes": summary.passes, "rate": summary.rate, "low": summary.low, "high": summary.high,
        "mean_score": summary.mean_score, "errors": summary.errors, "timeouts": summary.timeouts,
        "pass_at_k": counts.pass_at_k(), "per_level": counts.per_level(),
        "meets_target": None if target is None else summary.rate >= target, "timings": timings,
    }
    if adaptive is not None:
        result["adaptive"] = adaptive
    return result


def validate_record(data: Any, file: Path | str = "<record>") -> None:
    """Validate against the shipped record schema; ConfigError naming the field otherwise."""
    from evalkit.schemas import validate

    if isinstance(data, dict) and data.get("schema_version") not in (None, SCHEMA_VERSION):
        raise ConfigError(f"record schema version {data.get('schema_version')!r} is not supported "
                          f"(this evalkit reads version {SCHEMA_VERSION})", file=file, field="schema_version")
    validate(data, "record", Path(file))


def load_record(path: Path | str) -> RunRecord:
    """Read a run record from a run folder or a record.json, validating it.

    Raises:
        ConfigError: missing, unreadable or invalid record (names the file and field).
    """
    path = Path(path)
    file = path / RECORD_FILE if path.is_dir() else path
    if not file.is_file():
        raise ConfigError("no run record here (expected a run folder holding record.json, or the file)", file=path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read run record: {exc}", file=file) from None
    validate_record(data, file)
    return RunRecord(data, file.parent)
