"""The sample journal: every sample appended as it completes, so a killed run resumes.

One JSON object per line (no pickle), flushed after each batch of writes. A line is keyed by
`sample_key(...)`: model identity, task name + version, example id, generation config, seed
and sample index — a changed model never reuses another's samples (lm-eval's cache key
omits the model). A run holds an exclusive lock on its journal: two processes writing one
journal are refused. A line torn by SIGKILL is dropped on open, before anything is appended.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from evalkit.errors import EvalkitError, ExitCode

if TYPE_CHECKING:
    from typing_extensions import Self

JOURNAL_FILE = "journal.jsonl"  # its name in a run folder


class JournalLocked(EvalkitError):
    """Another process is writing this journal."""

    exit_code = ExitCode.USAGE


def sample_key(model: str, task: str, task_version: int, example_id: str, generation: Mapping[str, Any],
               seed: int, sample_index: int) -> str:
    """The journal key of one sample (a sha256 over everything its output depends on)."""
    payload = json.dumps([model, task, task_version, example_id, dict(generation), seed, sample_index],
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class Journal:
    """An append-only JSONL file of samples, locked for one writer.

    Use as a context manager: `with Journal(path) as j: j.get(key); j.append(entries)`.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._file: TextIO | None = None
        self.entries: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_suffix(self.path.suffix + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise JournalLocked(f"{self.path} is being written by another evalkit process (pid {holder}); "
                                "wait for it to finish, or use another --run-id") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        self._load_and_repair()
        self._file = open(self.path, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load_and_repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = data.rfind(b"\n") + 1  # a final line without newline was torn by a kill
        if good_end < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
        for line in data[:good_end].splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self.entries[entry["key"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # an unreadable line is a sample to generate again

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Write entries (each with a "key") and flush them to the OS before returning."""
        if self._file is None:
            raise RuntimeError("journal is not open")
        for e in entries:
            self._file.write(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n")
            self.entries[e["key"]] = e
        self._file.flush()
        os.fsync(self._file.fileno())


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """Entries of a journal without locking it (for rescoring and reports); torn lines skipped."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.endswith("\n"):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue
