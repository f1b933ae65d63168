"""The sample journal: every sample appended as its batch completes, so a stopped run resumes.

One JSON object per line (no pickle). Each `append` writes its whole batch with one write and
fsyncs it before returning, so what was appended is on disk before the runner does more work. A
line is keyed by `sample_key(...)`: model identity, task name + version, example id, generation
config (chat mode included), seed, sample index and, in chat mode, a fingerprint of the messages
sent — a changed model, setting or chat wording never reuses another's samples (lm-eval's cache
key omits the model). A run holds an exclusive lock on its journal: two processes writing one
journal are refused.

Reading never crashes on a bad line: a line torn by SIGKILL (no final newline) is cut off before
anything is appended, and a line that is not UTF-8, not JSON, or not a complete entry is dropped
and counted (`Journal.dropped`, `JournalScan.dropped`): its sample is generated again. Lines are
written as UTF-8; text that cannot be (a lone surrogate) is written with JSON escapes instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.errors import EvalkitError, ExitCode

if TYPE_CHECKING:
    from typing_extensions import Self

JOURNAL_FILE = "journal.jsonl"  # its name in a run folder
STATUSES = ("PASS", "FAIL", "ERROR", "TIMEOUT")


class JournalLocked(EvalkitError):
    """Another process is writing this journal."""

    exit_code = ExitCode.USAGE


def prompt_fingerprint(prompt: object) -> str:
    """A short sha256 of a prompt as sent (raw text, or a chat form's list of messages)."""
    payload = json.dumps(prompt, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def sample_key(model: str, task: str, task_version: int, example_id: str, generation: Mapping[str, Any],
               seed: int, sample_index: int, prompt_form: str | None = None) -> str:
    """The journal key of one sample (a sha256 over everything its output depends on).

    `prompt_form`: in chat mode, `prompt_fingerprint` of the messages sent (the chat wording: system
    message, few-shot turns); None for raw prompts, whose keys are what they always were.
    """
    parts: list[Any] = [model, task, task_version, example_id, dict(generation), seed, sample_index]
    if prompt_form is not None:
        parts.append(prompt_form)
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def dump_line(obj: Any) -> str:
    """`obj` as one JSON line, UTF-8 text where possible; a lone surrogate (legal in JSON, not in
    UTF-8) makes the line all-ASCII escapes instead of an error."""
    line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    return line + "\n"


def valid_entry(entry: Any) -> bool:
    """Whether a decoded line is a complete journal entry of the expected types (what resuming and
    rescoring read from it, and what the record's schema asks of a sample)."""
    if not isinstance(entry, dict):
        return False
    kinds = {"key": str, "model": str, "task": str, "task_version": int, "example": dict, "sample_index": int,
             "seed": int, "generation": dict, "output": str, "answer": str, "verdict": dict}
    if any(not isinstance(entry.get(name), kind) for name, kind in kinds.items()):
        return False
    ex, v = entry["example"], entry["verdict"]
    score = v.get("score")
    return (all(isinstance(ex.get(name), str) for name in ("id", "prompt", "split"))
            and isinstance(ex.get("fields"), dict) and isinstance(ex.get("reference"), (str, type(None)))
            and isinstance(ex.get("level"), (int, type(None))) and entry["sample_index"] >= 0
            and v.get("status") in STATUSES and isinstance(v.get("reason"), str)
            and isinstance(score, (int, float)) and not isinstance(score, bool) and 0 <= score <= 1
            and isinstance(entry.get("failed", ""), str) and _messages_ok(entry.get("messages", [])))


def _messages_ok(messages: Any) -> bool:
    return isinstance(messages, list) and all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
        for m in messages)


@dataclass
class JournalScan:
    """What a journal file holds: its usable entries by key (the latest line of a key wins), how many
    lines were dropped as unreadable, and where its last complete line ends."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: int = 0
    good_end: int = 0


def scan_journal(data: bytes) -> JournalScan:
    """Parse a journal's bytes; never raises on bad content (see the module's doc)."""
    scan = JournalScan(good_end=data.rfind(b"\n") + 1)
    if scan.good_end < len(data) and data[scan.good_end:].strip():
        scan.dropped += 1  # a final line without its newline: torn by a kill
    for line in data[:scan.good_end].split(b"\n"):
        if not line.strip():
            continue
        try:
            entry = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            entry = None
        if valid_entry(entry):
            scan.entries[entry["key"]] = entry
        else:
            scan.dropped += 1
    return scan


def load_journal(path: Path) -> JournalScan:
    """A journal's entries without locking it (for rescoring and reports)."""
    return scan_journal(Path(path).read_bytes())


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """The usable entries of a journal, one per key (bad and torn lines skipped)."""
    yield from load_journal(path).entries.values()


class Journal:
    """An append-only JSONL file of samples, locked for one writer.

    Use as a context manager: `with Journal(path) as j: j.get(key); j.append(entries)`.

    Attributes:
        entries: the usable entries by key, those read on opening and those appended since.
        dropped: lines found unreadable on opening (their samples are generated again).
        appended: entries appended since opening.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._lock_path = self.path.with_suffix(self.path.suffix + ".lock")
        self._fd: int | None = None
        self.entries: dict[str, dict[str, Any]] = {}
        self.dropped = 0
        self.appended = 0

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # journal.jsonl.lock exists while a writer holds it: the writer removes it, still locked, on closing
        # (kill -9 leaves it, unlocked, for the next writer). A file locked after its holder removed it is
        # not the lock any more: take the one now at the path.
        lock_path = self._lock_path
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise JournalLocked(f"{self.path} is being written by another evalkit process (pid {holder}); "
                                    "wait for it to finish, or use another --run-id") from None
            try:
                current = os.stat(lock_path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        try:
            self._load_and_repair()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock_path)  # while still locked: no other writer can hold this file now
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load_and_repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        scan = scan_journal(data)
        if scan.good_end < len(data):  # cut a torn final line off before appending after it
            with open(self.path, "r+b") as fh:
                fh.truncate(scan.good_end)
        self.entries, self.dropped = scan.entries, scan.dropped

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Write entries (each with a "key") in one write and fsync them before returning.

        Ctrl-C or SIGTERM during the append takes effect once it is done (in the main thread), so what
        `entries` and `appended` count is exactly what is on disk.
        """
        if self._fd is None:
            raise RuntimeError("journal is not open")
        data = memoryview("".join(dump_line(e) for e in entries).encode("utf-8"))
        with _interrupts_deferred():
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
            os.fsync(self._fd)
            for e in entries:
                self.entries[e["key"]] = e
            self.appended += len(entries)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM's Python handlers until the block is done, then run the first one caught."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, Any]] = []
    held: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if callable(handler):
            held[sig] = handler
            signal.signal(sig, lambda signum, frame: caught.append((signum, frame)))
    try:
        yield
    finally:
        for number, handler in held.items():
            signal.signal(number, handler)
        if caught:
            signum, frame = caught[0]
            held[signum](signum, frame)
