"""Report renderers: pure functions of a run record.

    from evalkit.reports import render
    text = render(record, "markdown")          # terminal | json | junit | markdown | html
    render_gate_markdown(gate_result)          # a gate's verdict (also render_gate_junit)

Each format reads only the record (its data and its samples), never the clock or the
environment, so the same record always renders to the same text. Model outputs are data:
every format shows them literally (escaped for its medium), never as markup.
"""

from __future__ import annotations

import io
import json

from rich.console import Console

from evalkit.reports._common import GateOutcomeLike, GateResultLike
from evalkit.reports.html import render_html
from evalkit.reports.junit import render_gate_junit, render_junit
from evalkit.reports.markdown import render_gate_markdown, render_markdown
from evalkit.reports.terminal import render_terminal, summary_table
from evalkit.run.record import RunRecord

FORMATS = ("terminal", "json", "junit", "markdown", "html")
# File suffixes a CLI may use to guess a format from `-o FILE`.
SUFFIXES = {".txt": "terminal", ".json": "json", ".xml": "junit", ".md": "markdown", ".html": "html",
            ".htm": "html"}


def render_json(record: RunRecord) -> str:
    """The record's JSON, pretty-printed (what record.json holds; valid against the schema)."""
    return json.dumps(record.data, indent=2, ensure_ascii=False) + "\n"


def render_text(record: RunRecord, *, verbosity: int = 0, max_failures: int = 5, width: int = 100) -> str:
    """The terminal report as plain text (no colour codes), laid out for `width` columns."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False,
                      emoji=False, legacy_windows=False)
    render_terminal(record, console, verbosity=verbosity, max_failures=max_failures)
    # rich pads grid cells to the column width; trailing blanks are noise in a file.
    return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())


def render(record: RunRecord, fmt: str, *, verbosity: int = 0, max_failures: int = 5) -> str:
    """Render a run record in one of FORMATS.

    Args:
        record: the run record (samples in memory or beside it on disk).
        fmt: "terminal" (plain text, 100 columns), "json", "junit", "markdown" or "html".
        verbosity: -1 quiet, 0 default, 1+ more detail (terminal, markdown and html).
        max_failures: failing samples shown per task (html lists 10 × as many: it is searchable).

    Raises:
        ValueError: an unknown format (the message lists the known ones).
    """
    if fmt == "terminal":
        return render_text(record, verbosity=verbosity, max_failures=max_failures)
    if fmt == "json":
        return render_json(record)
    if fmt == "junit":
        return render_junit(record, max_failures=max_failures)
    if fmt == "markdown":
        return render_markdown(record, verbosity=verbosity, max_failures=max_failures)
    if fmt == "html":
        return render_html(record, verbosity=verbosity, max_failures=max_failures)
    raise ValueError(f"unknown report format {fmt!r}; expected one of: {', '.join(FORMATS)}")


__all__ = ["FORMATS", "SUFFIXES", "GateOutcomeLike", "GateResultLike", "render", "render_gate_junit",
           "render_gate_markdown", "render_html", "render_json", "render_junit", "render_markdown", "render_terminal",
           "render_text", "summary_table"]
