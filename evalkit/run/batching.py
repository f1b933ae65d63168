"""How a run cuts its work into journaled batches, and how any backend output becomes data.

- **Batches.** A journaled run hands the backend at most `batch_size` prompts at a time; a batch is
  checked while the next is generated, and its samples are in the journal (fsynced) before the batch
  after that is asked for. For a slow backend the batch shrinks until generating one takes about
  `FLUSH_S` seconds — never below the backend's own parallelism
  (an OpenAI backend's `concurrency`, a batched model's `batch_size`), where a smaller batch would
  only slow the run down — so completed work reaches the disk every few seconds. A run without a
  journal (in memory, e.g. the fine-tune loop's evaluations) keeps large batches.
- **Outputs.** Whatever a backend returns becomes a string that every file and report can hold: a
  lone surrogate (legal in JSON, not in UTF-8) becomes U+FFFD, an output longer than
  `MAX_OUTPUT_CHARS` is cut there, and an output that is not text, or a `FailedOutput`, becomes a
  failed sample (an ERROR verdict). A backend that answers the wrong number of rows stops the run.
- **Interruptions.** Ctrl-C (and SIGTERM in the CLI) during a journaled run raises `RunInterrupted`,
  a KeyboardInterrupt that says how many samples are saved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import InfrastructureError
from evalkit.models.failed import FailedOutput

FLUSH_S = 3.0  # generating a journaled batch of a slow backend takes about this long
FIRST_BATCH = 8  # prompts in a journaled run's first batch (unless the backend's parallelism is larger)
IN_MEMORY_BATCH = 64  # at least this many prompts per call when nothing is journaled
MAX_OUTPUT_CHARS = 1_000_000  # a longer output is cut here before it is checked and stored
_SURROGATE = re.compile("[\ud800-\udfff]")


def parallelism(backend: object) -> int:
    """How many prompts the backend works on at once: its `concurrency` (requests in flight) or its
    `batch_size` (rows per forward batch) when it has one, else 1."""
    for name in ("concurrency", "batch_size"):
        value = getattr(backend, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return 1


class BatchSizer:
    """The size of the next batch of examples (see the module's doc)."""

    def __init__(self, batch_size: int, backend: object, journaled: bool):
        batch_size = max(1, batch_size)
        if not journaled:
            self.size = self.low = self.high = max(batch_size * 4, IN_MEMORY_BATCH)
            return
        self.high = batch_size
        self.low = min(batch_size, parallelism(backend))
        self.size = min(batch_size, max(FIRST_BATCH, self.low))

    def done(self, examples: int, seconds: float) -> None:
        """Record that generating a batch of `examples` took `seconds`."""
        if self.low < self.high and examples > 0 and seconds > 0:
            self.size = max(self.low, min(self.high, int(examples * FLUSH_S / seconds)))


def clean_output(value: Any) -> str:
    """A backend's output as storable text (see the module's doc); a FailedOutput stays one."""
    if isinstance(value, FailedOutput):
        return value
    if not isinstance(value, str):
        return FailedOutput(f"the backend returned {type(value).__name__}, not text")
    text = _SURROGATE.sub("\ufffd", str(value))
    return text[:MAX_OUTPUT_CHARS]


def clean_outputs(outputs: Any, rows: int, k: int, backend: str) -> list[list[str]]:
    """`rows` lists of `k` clean outputs; InfrastructureError when the backend broke its contract."""
    try:
        table = [list(row) for row in outputs]
    except TypeError:
        raise InfrastructureError(f"{backend} returned {type(outputs).__name__}, not a list of lists of "
                                  "outputs") from None
    if len(table) != rows or any(len(row) < k for row in table):
        raise InfrastructureError(f"{backend} returned {len(table)} rows of {[len(r) for r in table][:5]} outputs "
                                  f"for {rows} prompts x {k} samples")
    return [[clean_output(out) for out in row[:k]] for row in table]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a journaled run; what it had finished is in the journal.

    Attributes:
        saved: samples in the journal that a rerun uses (failed ones excluded).
        made: samples this process added.
        journal: the journal's path. run_id: the run's id.
    """

    def __init__(self, saved: int, made: int, journal: Path, run_id: str):
        super().__init__(f"{saved} sample{'s' * (saved != 1)} saved in {journal} ({made} made by this run); "
                         f"running the same evaluation again resumes them (evalkit run ... --run-id {run_id})")
        self.saved, self.made, self.journal, self.run_id = saved, made, journal, run_id


@dataclass
class Tally:
    """What a run did with its journal: samples resumed from it and written to it, lines dropped."""

    resumed: int = 0
    generated: int = 0
    failed: int = 0
    dropped_lines: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"resumed": self.resumed, "generated": self.generated, "failed": self.failed,
                "dropped_lines": self.dropped_lines}


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'s' * (count != 1)}"


def describe_journal(info: dict[str, Any]) -> str:
    """One line on what a run (or a rescore) did with its journal: the record's `journal`."""
    if "rescored" in info:
        text = (f"rescored {_n(info['rescored'], 'sample')} of this record's configuration from its journal; "
                f"{_n(info.get('other_configurations', 0), 'output')} of other configurations ignored")
    else:
        text = f"journal: {_n(info.get('resumed', 0), 'sample')} resumed, {info.get('generated', 0)} generated"
        if info.get("failed"):
            text += f" ({info['failed']} without output: ERROR, generated again on a rerun)"
    if info.get("dropped_lines"):
        text += f"; {_n(info['dropped_lines'], 'unreadable journal line')} dropped"
    return text
