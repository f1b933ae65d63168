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
import io
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from evalkit.core.hashindex import HashIndex
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


def sample_keys(model: str, task: str, task_version: int, generation: Mapping[str, Any], seed: int
                ) -> Callable[[str, int, str | None], str]:
    """`sample_key` with the run's parts fixed: `keys(example_id, sample_index, prompt_form)` returns the same
    key, encoding only what varies (a list's JSON is its items' JSON joined by commas)."""
    def dumps(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    head = f"[{dumps(model)},{dumps(task)},{dumps(task_version)},"
    middle = f",{dumps(dict(generation))},{dumps(seed)},"

    def key(example_id: str, sample_index: int, prompt_form: str | None = None) -> str:
        tail = "]" if prompt_form is None else f",{dumps(prompt_form)}]"
        payload = f"{head}{dumps(example_id)}{middle}{dumps(sample_index)}{tail}"
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    return key


def dump_line(obj: Any) -> str:
    """`obj` as one JSON line, UTF-8 text where possible; a lone surrogate (legal in JSON, not in
    UTF-8) makes the line all-ASCII escapes instead of an error."""
    line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    if not line.isascii():  # (cheap) only text beyond ASCII can hold a lone surrogate
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            line = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    return line + "\n"


_KINDS = (("key", str), ("model", str), ("task", str), ("task_version", int), ("example", dict),
          ("sample_index", int), ("seed", int), ("generation", dict), ("output", str), ("answer", str),
          ("verdict", dict))


def valid_entry(entry: Any) -> bool:
    """Whether a decoded line is a complete journal entry of the expected types (what resuming and
    rescoring read from it, and what the record's schema asks of a sample)."""
    if not isinstance(entry, dict):
        return False
    for name, kind in _KINDS:  # a loop, not any(...): every line of a resumed journal comes through here
        if not isinstance(entry.get(name), kind):
            return False
    ex, v = entry["example"], entry["verdict"]
    score = v.get("score")
    return (isinstance(ex.get("id"), str) and isinstance(ex.get("prompt"), str) and isinstance(ex.get("split"), str)
            and isinstance(ex.get("fields"), dict) and isinstance(ex.get("reference"), (str, type(None)))
            and isinstance(ex.get("level"), (int, type(None))) and entry["sample_index"] >= 0
            and v.get("status") in STATUSES and isinstance(v.get("reason"), str)
            and isinstance(score, (int, float)) and not isinstance(score, bool) and 0 <= score <= 1
            and isinstance(entry.get("failed", ""), str)
            and ("messages" not in entry or _messages_ok(entry["messages"])))


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


def _parse(line: bytes) -> dict[str, Any] | None:
    """A line's entry, or None when it is not one (not UTF-8, not JSON, not a complete entry)."""
    try:
        entry = json.loads(line)  # bytes: decoded as UTF-8 (a journal line starts with "{")
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return entry if valid_entry(entry) else None


def _lines(fh: BinaryIO) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(offset, entry or None) for each non-blank complete line of a journal, read one line at a time;
    a final line without its newline (torn by a kill) is yielded as (offset, None) when it is not blank,
    and ends the file."""
    offset = 0
    for line in fh:
        if not line.endswith(b"\n"):
            if line.strip():
                yield offset, None
            return
        if line.strip():
            yield offset, _parse(line)
        offset += len(line)


def _good_end(fh: BinaryIO) -> int:
    """Where a journal's last complete line ends (the file's size when it ends with a newline)."""
    size = fh.seek(0, os.SEEK_END)
    end, step = size, 1 << 16
    while end > 0:
        start = max(0, end - step)
        fh.seek(start)
        chunk = fh.read(end - start)
        at = chunk.rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


def scan_journal(data: bytes) -> JournalScan:
    """Parse a journal's bytes; never raises on bad content (see the module's doc)."""
    scan = JournalScan(good_end=data.rfind(b"\n") + 1)
    for _, entry in _lines(io.BytesIO(data)):
        if entry is not None:
            scan.entries[entry["key"]] = entry
        else:
            scan.dropped += 1
    return scan


def load_journal(path: Path) -> JournalScan:
    """A journal's entries without locking it (for rescoring and reports)."""
    return scan_journal(Path(path).read_bytes())


def key_id(key: str) -> int | None:
    """A sample key's first 64 bits as the journal's index holds them (None for a key that is not 32 hex
    digits: those are held as text)."""
    if len(key) == 32:
        with contextlib.suppress(ValueError):
            return int(key[:16], 16)
    return None


class Journal:
    """An append-only JSONL file of samples, locked for one writer.

    Use as a context manager: `with Journal(path) as j: j.get(key); j.append(entries)`.

    Opening reads the file one line at a time and keeps an index of where each key's latest line starts
    (`HashIndex`: a key's first 64 bits to an offset, 32 bytes or so a line), not the entries: `get` reads
    the line back from the file when asked, and checks its full key. So a resumed run's memory holds a
    compact index of its keys, never every output. The index is of the file as opened (`get` answers for
    it): entries appended since are on disk, counted, and not looked up again.

    Attributes:
        dropped: lines found unreadable on opening (their samples are generated again).
        appended: entries appended since opening.
        saved: entries a rerun would use (failed ones are generated again): those found on opening and
            those appended since.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._lock_path = self.path.with_suffix(self.path.suffix + ".lock")
        self._fd: int | None = None
        self._reader: BinaryIO | None = None
        # key -> offset of its latest line; -1 - offset for a failed sample (one a rerun generates again)
        self._index = HashIndex(values=True)
        self._other_keys: dict[str, int] = {}  # keys that are not 32 hex digits (not evalkit's)
        self.dropped = 0
        self.appended = 0
        self.saved = 0

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
        if self._reader is not None:
            self._reader.close()
            self._reader = None
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
        with open(self.path, "rb") as fh:
            saved = dropped = 0
            for offset, entry in _lines(fh):
                if entry is None:
                    dropped += 1
                    continue
                value, key = -1 - offset if "failed" in entry else offset, entry["key"]
                number = key_id(key)
                if number is None:
                    before = self._other_keys.get(key)
                    self._other_keys[key] = value
                else:
                    before = self._index.put(number, value)
                saved += (value >= 0) - (before is not None and before >= 0)  # the latest line of a key counts
            good_end = _good_end(fh)
            size = fh.seek(0, os.SEEK_END)
        if good_end < size:  # cut a torn final line off before appending after it
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
        self.dropped, self.saved = dropped, saved
        self._reader = open(self.path, "rb")  # noqa: SIM115 - closed by close()

    def _read(self, offset: int) -> dict[str, Any] | None:
        assert self._reader is not None
        self._reader.seek(offset if offset >= 0 else -1 - offset)
        try:  # checked as a complete entry on opening: the lines before the end were not written since
            entry = json.loads(self._reader.readline())
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        return entry if isinstance(entry, dict) else None

    def _lookup(self, key: str) -> int | None:
        number = key_id(key)
        return self._other_keys.get(key) if number is None else self._index.get(number)

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry of `key` on disk when the journal was opened (its latest line), or None."""
        offset = self._lookup(key)
        if offset is None:
            return None
        entry = self._read(offset)
        return entry if entry is not None and entry["key"] == key else None

    def __contains__(self, key: str) -> bool:
        return self._lookup(key) is not None

    def __len__(self) -> int:
        """Keys found on opening."""
        return len(self._index) + len(self._other_keys)

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Write entries (each with a "key") in one write and fsync them before returning.

        Ctrl-C or SIGTERM during the append takes effect once it is done (in the main thread), so what
        `appended` and `saved` count is exactly what is on disk.
        """
        if self._fd is None:
            raise RuntimeError("journal is not open")
        data = memoryview("".join(dump_line(e) for e in entries).encode("utf-8"))
        with _interrupts_deferred():
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
            os.fsync(self._fd)
            self.appended += len(entries)
            self.saved += sum("failed" not in e for e in entries)


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
