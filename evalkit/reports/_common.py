"""What every report format shares: picking the failing samples, wording numbers and statuses, and the
shape of a gate result the formats can render.

Everything here reads the record's plain data; nothing looks at the clock, the terminal or
the environment, so a report is a pure function of its record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from evalkit._text import safe_text
from evalkit.errors import ExitCode
from evalkit.run.record import RunRecord

FAILING = ("FAIL", "ERROR", "TIMEOUT")


@dataclass
class Failures:
    """The first failing samples of each task, and how many failed in all."""

    shown: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)

    def of(self, task: str) -> list[dict[str, Any]]:
        return self.shown.get(task, [])

    def count(self, task: str) -> int:
        return self.total.get(task, 0)


def failure_limit(max_failures: int, verbosity: int) -> int | None:
    """How many failing samples per task to show: more with -v, all with -vv (None)."""
    if verbosity >= 2:
        return None
    if verbosity == 1:
        return max_failures * 4
    return max(0, max_failures)


def collect_failures(record: RunRecord, limit: int | None) -> Failures:
    """One pass over the samples (they may stream from disk): the first `limit` failures per task."""
    out = Failures()
    for s in record.samples():
        if s["status"] not in FAILING:
            continue
        name = s["task"]
        out.total[name] = out.total.get(name, 0) + 1
        shown = out.shown.setdefault(name, [])
        if limit is None or len(shown) < limit:
            shown.append(s)
    return out


def literal(value: str | None, limit: int = 2000) -> str:
    """Untrusted text as a plain string: control characters and bidi overrides as \\xNN, capped."""
    return safe_text(value, limit=limit).plain


def pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x * 100:.{digits}f}%"


def interval(t: dict[str, Any]) -> str:
    return f"{pct(t['low'])}–{pct(t['high'])}"


def target_text(t: dict[str, Any]) -> str:
    return "—" if t.get("target") is None else pct(t["target"], 0 if round(t["target"] * 100, 6) % 1 == 0 else 1)


def status_word(t: dict[str, Any]) -> str:
    """met / below / no target — the gate's view of one task."""
    return {True: "met", False: "below", None: "no target"}[t.get("meets_target")]


def top_k(t: dict[str, Any]) -> tuple[int, float] | None:
    """The largest k with pass@k, when k > 1 samples were drawn."""
    ks = [int(k) for k in t.get("pass_at_k", {})]
    if not ks or max(ks) <= 1:
        return None
    k = max(ks)
    return k, t["pass_at_k"][str(k)]


def any_k(record: RunRecord) -> bool:
    return any(top_k(t) is not None for t in record.tasks)


def seconds(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:,.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 0.001:
        return f"{x * 1000:.1f} ms"
    return f"{x * 1e6:.0f} µs"


def number(x: float | None) -> str:
    """A throughput: thousands separators, two decimals below 10, "—" for none."""
    if not x:
        return "—"
    return f"{x:,.0f}" if x >= 10 else f"{x:.2f}"


def per_second(x: float | None, unit: str) -> str:
    return f"{number(x)} {unit}/s"


def examples_per_second(tm: dict[str, Any]) -> float | None:
    """A task's examples per second over the time spent on them, generating and checking: the figure the
    progress display shows. (The record's `examples_per_s` is generation alone: an oracle "generates"
    millions a second, which no run ever does.) None when nothing was generated or timed."""
    n, gen, check = tm.get("examples_generated"), tm.get("generate_s"), tm.get("check_s")
    if isinstance(n, int) and isinstance(gen, (int, float)) and isinstance(check, (int, float)):
        return n / (gen + check) if n and gen + check > 0 else None
    return tm.get("examples_per_s")  # a record without the counts: the only figure it has


def wall_time(record: RunRecord) -> tuple[str, float | None]:
    """What the report calls the wall time, and its seconds: a fine-tuning record's is the training run's
    (`meta.training.wall_s`, else its last evaluation's `wall_s`), not its best evaluation's."""
    training = (record.data.get("meta") or {}).get("training")
    if isinstance(training, dict):
        history = training.get("history") if isinstance(training.get("history"), list) else []
        total = training.get("wall_s", history[-1].get("wall_s") if history and isinstance(history[-1], dict)
                             else None)
        if isinstance(total, (int, float)):
            return "training wall time", float(total)
    return "wall time", record.data.get("timings", {}).get("total_s")


def timing_line(t: dict[str, Any]) -> str:
    """examples/s (generating and checking) · tokens/s (generating) · generate · check (tokens/s only when
    the backend counted tokens)."""
    tm = t.get("timings", {})
    parts = []
    if tm.get("examples_generated", 1) == 0:
        parts.append("resumed from journal")
    else:
        parts.append(per_second(examples_per_second(tm), "ex"))
    if tm.get("tokens_per_s"):
        parts.append(per_second(tm["tokens_per_s"], "tok"))
    parts.append(f"generate {seconds(tm.get('generate_s'))}")
    parts.append(f"check {seconds(tm.get('check_s'))}")
    return " · ".join(parts)


def errors_text(t: dict[str, Any]) -> str:
    e, to = t.get("errors", 0), t.get("timeouts", 0)
    if not e and not to:
        return "—"
    bits = []
    if e:
        bits.append(f"{e} error{'s' if e != 1 else ''}")
    if to:
        bits.append(f"{to} timeout{'s' if to != 1 else ''}")
    return ", ".join(bits)


def headline(record: RunRecord) -> str:
    """One sentence on the whole run: how many tasks met their targets."""
    tasks = record.tasks
    below = [t for t in tasks if t.get("meets_target") is False]
    with_target = [t for t in tasks if t.get("meets_target") is not None]
    if not with_target:
        return f"{len(tasks)} task{'s' if len(tasks) != 1 else ''}, none with a target"
    if below:
        return f"{len(below)} of {len(with_target)} target{'s' if len(with_target) != 1 else ''} missed"
    return f"all {len(with_target)} target{'s' if len(with_target) != 1 else ''} met"


# -- a gate's verdict, as the formats see it ------------------------------------------------------------
# evalkit.gate sits above reports, so reports does not import it: these protocols name what a gate
# result offers (evalkit.gate.GateResult and TaskOutcome have exactly this shape).


class GateOutcomeLike(Protocol):
    """One gated task: its exit code, why, and the numbers it was judged on (None when not measured)."""

    @property
    def task(self) -> str: ...
    @property
    def code(self) -> ExitCode: ...
    @property
    def reasons(self) -> Sequence[str]: ...
    @property
    def rate(self) -> float | None: ...
    @property
    def low(self) -> float | None: ...
    @property
    def high(self) -> float | None: ...
    @property
    def threshold(self) -> float | None: ...
    @property
    def passed(self) -> bool: ...


class GateResultLike(Protocol):
    """A whole gate: the run judged, where the rules came from, each task's outcome and the exit code."""

    @property
    def outcomes(self) -> Sequence[GateOutcomeLike]: ...
    @property
    def run_id(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def exit_code(self) -> ExitCode: ...
    @property
    def passed(self) -> bool: ...
