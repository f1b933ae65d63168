"""The live display of a fine-tuning run: progress, loss, each task's pass rate and its curve.

On a terminal: a rich Live panel. Elsewhere (a CI log): a line per evaluation, with the loss the run
records for that step (the Trainer logs it just after the evaluation), and between evaluations a progress
line at most every EVALKIT_PROGRESS_SECONDS (default 30): step, loss, steps/s and the ETA of the budget.
"""

from __future__ import annotations

import os
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

_BLOCKS = "▁▂▃▄▅▆▇█"


def _seconds_from_env() -> float:
    try:
        return float(os.environ.get("EVALKIT_PROGRESS_SECONDS", "30"))
    except ValueError:
        return 30.0


def sparkline(values: list[float], width: int = 24) -> str:
    """Pass rates in [0, 1] as a row of block characters (the last `width` of them)."""
    return "".join(_BLOCKS[min(7, int(v * 8))] for v in values[-width:])


class TrainingDisplay:
    """Rich Live display on a terminal; one plain line per evaluation elsewhere (CI logs)."""

    def __init__(self, console: Console | None = None, every: float | None = None):
        self.console = console or Console(stderr=True, highlight=False)
        self.live: Live | None = None
        self.step = 0
        self.max_steps = 0
        self.loss: float | None = None
        self.history: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.max_minutes: float | None = None
        self.header = ""
        self.every = every if every is not None else _seconds_from_env()
        self._pending: dict[str, Any] | None = None  # an evaluation whose line waits for its step's loss
        self._last_line = time.monotonic()
        self._first: tuple[float, int] | None = None  # (when, step) of the first progress: the rate's origin
        self._loss_step = 0

    def start(self, recipe: Any, data_report: Any, model: Any, resume_from: Any) -> None:
        params = sum(p.numel() for p in model.parameters())
        drawn = sum(data_report.drawn.values())
        removed = sum(sum(c.values()) for c in data_report.removed.values())
        self.max_minutes = recipe.max_minutes  # the budget a line's ETA is to: steps or minutes, whichever ends first
        self.header = (f"[bold]{recipe.name}[/] · {params / 1e6:.2f}M params · {drawn:,} training rows "
                       f"({removed:,} removed by filters, {data_report.contamination_found} eval overlaps dropped)"
                       + (f" · resumed from {resume_from.name}" if resume_from else ""))
        if self.console.is_terminal:
            self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self.live.start()
        else:
            self.console.print(self.header)

    def progress(self, step: int, max_steps: int, loss: float | None) -> None:
        now = time.monotonic()
        if self._first is None or step < self._first[1]:
            self._first = (now, step)
        if loss != self.loss:
            self._loss_step = step  # the Trainer reports a loss every few steps: say which step it is from
        self.step, self.max_steps, self.loss = step, max_steps, loss
        if self.live:
            self.live.update(self._render())
            return
        self._flush()  # the loss of an evaluation's step has arrived (or never will: the next step is here)
        if step < max_steps and now - self._last_line >= self.every:
            self._last_line = now
            self.console.print(self._progress_line(now), highlight=False, soft_wrap=True)

    def evaluation(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        self.step = max(self.step, entry["step"])
        if self.live:
            self.live.update(self._render())
        else:
            self._flush()
            # The Trainer logs the loss of the steps up to an evaluation just after it, into this entry:
            # the line waits for it (the next progress call, or the end), so it shows what the record holds.
            self._pending = entry

    def _flush(self) -> None:
        entry, self._pending = self._pending, None
        if entry is None:
            return
        parts = [f"{name} {r['rate']:.1%} [{r['low']:.1%}–{r['high']:.1%}] {'met' if r['met'] else 'below'} "
                 f"{r['target']:.0%}" for name, r in entry["rates"].items()]
        loss = f" loss {entry['loss']:.4g}" if entry.get("loss") is not None else ""
        self.console.print(f"step {entry['step']:>6}{loss} · {entry['wall_s']:.0f}s · " + " · ".join(parts),
                           highlight=False, soft_wrap=True)
        self._last_line = time.monotonic()

    def _progress_line(self, now: float) -> str:
        parts = [f"step {self.step:,}/{self.max_steps:,}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}" + (f" (step {self._loss_step:,})" if self._loss_step != self.step
                                                    else ""))
        when, first = self._first or (now, self.step)
        rate = (self.step - first) / (now - when) if now > when and self.step > first else 0.0
        if rate:
            left, budget = (self.max_steps - self.step) / rate, "step"
            if self.max_minutes is not None and self.max_minutes * 60 - (now - self.started) < left:
                left, budget = max(0.0, self.max_minutes * 60 - (now - self.started)), "time"  # the one that binds
            parts += [f"{rate:.2f} steps/s", f"ETA {int(left) // 60}:{int(left) % 60:02d} to the {budget} budget"]
        return " · ".join(parts)

    def stop(self) -> None:
        self._flush()
        if self.live:
            self.live.update(self._render())
            self.live.stop()
            self.live = None

    def _render(self) -> Group:
        elapsed = time.monotonic() - self.started
        frac = self.step / self.max_steps if self.max_steps else 0.0
        bar_width = 30
        filled = int(frac * bar_width)
        # Before the Trainer's first step the budget is unknown: the first evaluation (step 0) is running.
        where = (f"step {self.step:,}/{self.max_steps:,}" if self.max_steps
                 else "starting: the first evaluation (step 0)" if not self.history else f"step {self.step:,}")
        line = Text.assemble(
            ("━" * filled, "green"), ("━" * (bar_width - filled), "grey37"),
            f"  {where}  ·  {elapsed:.0f}s",
            f"  ·  loss {self.loss:.4f}" if self.loss is not None else "")
        table = Table(box=None, padding=(0, 2), show_edge=False)
        for col in ("task", "pass rate", "95% CI", "target", "", "curve"):
            table.add_column(col, no_wrap=True)
        if self.history:
            last = self.history[-1]
            for name, r in last["rates"].items():
                curve = sparkline([h["rates"][name]["rate"] for h in self.history if name in h["rates"]])
                table.add_row(name, f"{r['rate']:.1%}", f"{r['low']:.1%}–{r['high']:.1%}",
                              f"{r['target']:.0%} ({'rate' if r['on'] == 'rate' else 'lower bound'})",
                              "[green]met" if r["met"] else "[yellow]below", curve)
        return Group(Text.from_markup(self.header), line, table)
