"""The terminal report: a rich summary table, the first failing samples, timings.

Model outputs, prompts and checker reasons are untrusted: they are drawn with
`safe_text` (literal, never markup, control characters escaped). The output depends only
on the record and the console's width.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from evalkit._text import safe_text
from evalkit.reports._common import (
    Failures,
    any_k,
    collect_failures,
    errors_text,
    examples_per_second,
    failure_limit,
    headline,
    interval,
    number,
    pct,
    seconds,
    status_word,
    target_text,
    top_k,
    wall_time,
)
from evalkit.run.record import RunRecord
from evalkit.run.sequential import describe

STATUS_STYLE = {"met": "bold green", "below": "bold red", "no target": "dim"}
SAMPLE_STYLE = {"PASS": "green", "FAIL": "bold red", "ERROR": "bold magenta", "TIMEOUT": "bold yellow"}


def render_terminal(record: RunRecord, console: Console, verbosity: int = 0, max_failures: int = 5) -> None:
    """Print the run's report to `console`.

    Args:
        record: the run record.
        console: where to draw (its width decides the layout; nothing else about the terminal does).
        verbosity: -1 one line per task; 0 summary, first failures and timings; 1 more failures
            (4 × max_failures), per-level breakdown, model, settings and environment; 2 every failure.
        max_failures: failing samples shown per task at verbosity 0.
    """
    if verbosity < 0:
        console.print(_quiet(record))
        return
    console.print(_header(record, verbosity))
    console.print(summary_table(record))
    limit = failure_limit(max_failures, verbosity)
    failures = collect_failures(record, limit) if limit != 0 else Failures()
    text_limit = 300 if verbosity == 0 else 4000
    for t in record.tasks:
        parts: list[RenderableType] = []
        if verbosity >= 1:
            parts.append(_task_details(t))
        if failures.count(t["name"]):
            parts.append(_failures(t, failures, text_limit))
        if parts:
            console.print()
            console.print(Text.assemble(("▌ ", _style(t)), safe_text(t["name"], 60, "bold"),
                                        (f"  v{t.get('version', '?')}", "dim")))
            for p in parts:
                console.print(p)
    console.print()
    console.print(_timings(record))


def summary_table(record: RunRecord) -> Table:
    """Task, n, pass rate, 95 % interval, pass@k (when k > 1), target, status, errors/timeouts."""
    show_k = any_k(record)
    # Light rules and a two-space gap (a divider space, one of padding): 80 columns hold every column.
    table = Table(header_style="bold", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, 1, 0, 0))
    table.add_column("task", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("pass rate", justify="right", no_wrap=True)
    table.add_column("95% CI", justify="right", no_wrap=True)
    if show_k:
        table.add_column("pass@k", justify="right", no_wrap=True)
    table.add_column("target", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("errors, timeouts", min_width=8)  # wraps between words at a narrow width, never cut
    for t in record.tasks:
        status = status_word(t)
        row: list[Any] = [safe_text(t["name"], 60), str(t["n_samples"]), Text(pct(t["rate"]), style="bold"),
                          interval(t)]
        if show_k:
            k = top_k(t)
            row.append("—" if k is None else f"@{k[0]} {pct(k[1])}")
        err = errors_text(t)
        row += [target_text(t), Text(status, style=STATUS_STYLE[status]),
                Text(err, style="yellow" if err != "—" else "dim")]
        table.add_row(*row)
    return table


def _style(t: dict[str, Any]) -> str:
    return STATUS_STYLE[status_word(t)]


def _header(record: RunRecord, verbosity: int) -> RenderableType:
    d = record.data
    model = d.get("model", {})
    title = Text.assemble(("evalkit run ", "bold"), safe_text(record.run_id, 200, "bold cyan"),
                          ("  —  ", "dim"), (headline(record), "bold"))
    if not d.get("complete", True):
        title.append("  (incomplete)", style="bold yellow")
    sub = Text.assemble(("model ", "dim"), safe_text(model.get("identity"), 300),
                        ("  ·  ", "dim"), safe_text(d.get("created_at"), 60),
                        ("  ·  evalkit ", "dim"), safe_text(d.get("evalkit_version"), 40))
    lines: list[RenderableType] = [title, sub]
    if verbosity >= 1:
        lines.append(_kv_grid([
            ("model spec", safe_text(model.get("spec"), 300)),
            ("settings", safe_text(_pairs(d.get("settings", {})), 1000)),
            ("environment", safe_text(_pairs(d.get("environment", {})), 1000)),
            *([("meta", safe_text(_pairs(_scalar_meta(d.get("meta") or {})), 1000))]
              if _scalar_meta(d.get("meta") or {}) else []),
        ]))
    return Group(*lines)


def _scalar_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}


def _pairs(d: dict[str, Any]) -> str:
    return "  ".join(f"{k}={_short(v)}" for k, v in d.items())


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return "—"
    return str(v)


def _kv_grid(rows: list[tuple[str, RenderableType]], indent: int = 0) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(label, value)
    return Padding(grid, (0, 0, 0, indent), expand=False) if indent else grid


def _task_details(t: dict[str, Any]) -> RenderableType:
    gen = t.get("generation", {})
    rows: list[tuple[str, RenderableType]] = [
        ("generation", safe_text(_pairs(gen), 500)),
        ("mean score", Text(f"{t.get('mean_score', 0):.3f}")),
    ]
    if t.get("pass_at_k") and len(t["pass_at_k"]) > 1:
        rows.append(("pass@k", Text("  ".join(f"@{k} {pct(v)}" for k, v in t["pass_at_k"].items()))))
    if t.get("source"):
        rows.append(("source", safe_text(t["source"], 300)))
    if a := t.get("adaptive"):
        rows.append(("adaptive", safe_text(describe(a), 500)))
    parts: list[RenderableType] = [_kv_grid(rows, indent=2)]
    levels = t.get("per_level") or {}
    if levels:
        table = Table(header_style="bold", show_edge=False, box=None, padding=(0, 2))
        for col, just in (("level", "right"), ("n", "right"), ("pass rate", "right"), ("95% interval", "right"),
                          ("errors/timeouts", "left")):
            table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
        for level, r in levels.items():
            table.add_row(level, str(r["n"]), pct(r["rate"]), interval(r), errors_text(r))
        parts.append(Padding(table, (0, 0, 0, 2), expand=False))
    return Group(*parts)


def _failures(t: dict[str, Any], failures: Failures, text_limit: int) -> RenderableType:
    name = t["name"]
    shown, total = failures.of(name), failures.count(name)
    head = Text(f"  {total} of {t['n_samples']} samples failed", style="bold")
    head.append(f"; the first {len(shown)}:" if len(shown) < total else ":", style="bold")
    parts: list[RenderableType] = [head]
    for s in shown:
        line = Text("  ")
        line.append(f"{s['status']:<8}", style=SAMPLE_STYLE.get(s["status"], "bold"))
        line.append(s["example_id"], style="cyan")
        if s.get("sample_index"):
            line.append(f" #{s['sample_index']}", style="cyan")
        if s.get("level") is not None:
            line.append(f" · level {s['level']}", style="dim")
        parts.append(line)
        rows: list[tuple[str, RenderableType]] = [
            ("prompt", _value(s.get("prompt"), text_limit)),
            ("expected", _value(s.get("reference"), text_limit)),
            ("got", _value(s.get("output"), text_limit)),
            ("answer", _value(s.get("answer"), text_limit)),
            ("reason", _value(s.get("reason"), text_limit, "italic")),
        ]
        parts.append(_kv_grid(rows, indent=4))
    return Group(*parts)


def _value(v: str | None, limit: int, style: str = "") -> Text:
    if v == "":
        return Text("(empty)", style="dim")
    return safe_text(v, limit, style)


def _timings(record: RunRecord) -> RenderableType:
    table = Table(title="timings", title_justify="left", title_style="bold", header_style="bold", box=None,
                  padding=(0, 2), show_edge=False)
    table.add_column("task", no_wrap=True)
    for col in ("examples/s", "tokens/s", "generate", "check"):
        table.add_column(col, justify="right", no_wrap=True)
    for t in record.tasks:
        tm = t.get("timings", {})
        resumed = tm.get("examples_generated", 1) == 0
        table.add_row(safe_text(t["name"], 60),
                      "resumed" if resumed else number(examples_per_second(tm)),
                      number(tm.get("tokens_per_s")),
                      seconds(tm.get("generate_s")), seconds(tm.get("check_s")))
    total = record.data.get("timings", {})
    table.add_row(Text("total", style="bold"), "", "", seconds(total.get("generate_s")),
                  seconds(total.get("check_s")))
    label, wall = wall_time(record)
    foot = Text(f"{label} {seconds(wall)}", style="dim")
    if label != "wall time":  # fine-tuning: the figures above are the best evaluation's
        foot.append(f" · this evaluation {seconds(total.get('total_s'))}", style="dim")
    return Group(table, foot)


def _quiet(record: RunRecord) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    for just in ("left", "right", "right", "left", "left", "left"):
        grid.add_column(justify=just, no_wrap=True)
    for t in record.tasks:
        status = status_word(t)
        err = errors_text(t)
        grid.add_row(safe_text(t["name"], 60), Text(pct(t["rate"]), style="bold"), f"[{interval(t)}]",
                     f"n={t['n_samples']} target {target_text(t)}", Text(status, style=STATUS_STYLE[status]),
                     Text("" if err == "—" else err, style="yellow"))
    return grid
