"""The Markdown report: a PR comment or a GitHub step summary.

GitHub-flavoured Markdown: a heading, the summary table with status emoji, and one
collapsible <details> per task holding its first failing samples in fenced code blocks.
`render_gate_markdown` writes a gate's verdict the same way.
Untrusted text (outputs, prompts, reasons) never becomes markup: inside a fence it is
literal (the fence is longer than any backtick run in it), outside one `<`, `>`, `&` and
Markdown's punctuation are escaped.
"""

from __future__ import annotations

import html
import re
from typing import Any

from evalkit.reports._common import (
    GateResultLike,
    any_k,
    collect_failures,
    errors_text,
    examples_per_second,
    failure_limit,
    headline,
    interval,
    literal,
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

EMOJI = {"met": "✅", "below": "❌", "no target": "➖"}
_MD_PUNCT = re.compile(r"([\\`*_{}\[\]|~])")


def inline(text: Any, limit: int = 300) -> str:
    """Untrusted text for a table cell or a sentence: one line, no HTML, no Markdown syntax."""
    s = literal(str(text), limit).replace("\r", " ").replace("\n", " ⏎ ")
    s = html.escape(s, quote=False)
    return _MD_PUNCT.sub(r"\\\1", s)


def fenced(text: str | None, limit: int = 2000, info: str = "text") -> str:
    """A fenced code block that `text` cannot close: the fence outruns its longest backtick run."""
    body = "(none)" if text is None else ("(empty)" if text == "" else literal(text, limit))
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{body}\n{fence}"


def render_markdown(record: RunRecord, *, verbosity: int = 0, max_failures: int = 5) -> str:
    """The report as GitHub-flavoured Markdown (ends with a newline).

    Args:
        verbosity: -1 the table only; 0 plus failures and timings; 1+ plus settings and
            per-level breakdowns, and more failures (see `failure_limit`).
        max_failures: failing samples shown per task at verbosity 0.
    """
    d = record.data
    model = d.get("model", {})
    status = "❌" if any(t.get("meets_target") is False for t in record.tasks) else "✅"
    out = [f"## {status} evalkit run `{_code_span(record.run_id)}` — {inline(headline(record))}", ""]
    bits = [f"**model** `{_code_span(model.get('identity', ''))}`", f"**date** {inline(d.get('created_at', ''))}",
            f"**evalkit** {inline(d.get('evalkit_version', ''))}"]
    if not d.get("complete", True):
        bits.append("**incomplete run**")
    out += [" · ".join(bits), ""]
    out += _table(record)
    adaptive = [f"- **{inline(t['name'])}**: {inline(describe(t['adaptive']))}"
                for t in record.tasks if t.get("adaptive")]
    if adaptive:  # how many samples each task used, and why it stopped
        out += ["", "Adaptive evaluation:", *adaptive]
    if verbosity < 0:
        return "\n".join(out).rstrip() + "\n"
    limit = failure_limit(max_failures, verbosity)
    failures = collect_failures(record, limit)
    text_limit = 1000 if verbosity == 0 else 4000
    for t in record.tasks:
        name = t["name"]
        total = failures.count(name)
        if not total and verbosity < 1:
            continue
        shown = failures.of(name)
        what = f"{total} of {t['n_samples']} samples failed" if total else "no failures"
        if shown and len(shown) < total:
            what += f", first {len(shown)} shown"
        out += ["", "<details>", (f"<summary>{EMOJI[status_word(t)]} <b>{html.escape(name)}</b> — "
                f"{pct(t['rate'])} ({html.escape(what)})</summary>"), ""]
        if verbosity >= 1:
            out += _details(t)
        for i, s in enumerate(shown, 1):
            head = f"**{i}. {s['status']}** `{_code_span(s['example_id'])}`"
            if s.get("sample_index"):
                head += f" sample {s['sample_index']}"
            if s.get("level") is not None:
                head += f" · level {s['level']}"
            head += f" — {inline(s.get('reason', ''))}"
            out += [head, "", _sample_block(s, text_limit), ""]
        out += ["</details>"]
    out += ["", _timings(record)]
    return "\n".join(out).rstrip() + "\n"


def render_gate_markdown(result: GateResultLike) -> str:
    """A gate's verdict as Markdown: a heading with the outcome, then one table row per gated task."""
    mark = "✅ passed" if result.passed else f"❌ failed (exit {int(result.exit_code)})"
    lines = [f"## evalkit gate: {mark}", "",
             f"Run `{_code_span(result.run_id)}`, rules from `{_code_span(result.source)}`.", "",
             "| task | result | pass rate | 95% CI | threshold | why |", "|---|---|---|---|---|---|"]
    for o in result.outcomes:
        ci = "—" if o.low is None or o.high is None else f"{pct(o.low)}–{pct(o.high)}"
        lines.append(f"| {inline(o.task)} | {'✅' if o.passed else '❌'} | {pct(o.rate)} | {ci} | "
                     f"{pct(o.threshold)} | {inline('; '.join(o.reasons), 2000)} |")
    return "\n".join(lines) + "\n"


def _sample_block(s: dict[str, Any], limit: int) -> str:
    """One fenced block per sample: labelled prompt, expected, raw output ("got") and extracted answer."""
    lines = []
    for label, key in (("prompt", "prompt"), ("expected", "reference"), ("got", "output"), ("answer", "answer")):
        value = s.get(key)
        shown = "(none)" if value is None else ("(empty)" if value == "" else literal(value, limit))
        lines.append(f"{label:<9} " + shown.replace("\n", "\n" + " " * 10))
    body = "\n".join(lines)
    return fenced(body, limit=len(body) + 1)


def _code_span(text: str) -> str:
    # Inside `…` backslashes are literal: drop backticks (ids and model names rarely hold any).
    return literal(str(text), 300).replace("`", "'").replace("\n", " ")


def _table(record: RunRecord) -> list[str]:
    show_k = any_k(record)
    head = ["", "task", "n", "pass rate", "95% interval"] + (["pass@k"] if show_k else []) + \
        ["target", "status", "errors/timeouts"]
    align = [":-:", ":--", "--:", "--:", ":-:"] + (["--:"] if show_k else []) + ["--:", ":--", ":--"]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for t in record.tasks:
        st = status_word(t)
        cells = [EMOJI[st], inline(t["name"]), str(t["n_samples"]), f"**{pct(t['rate'])}**", interval(t)]
        if show_k:
            k = top_k(t)
            cells.append("—" if k is None else f"@{k[0]} {pct(k[1])}")
        cells += [target_text(t), st, errors_text(t)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _timings(record: RunRecord) -> str:
    """One line of totals, and the per-task throughput folded away."""
    tm = record.data.get("timings", {})
    label, wall = wall_time(record)
    evaluation = f" · this evaluation {seconds(tm.get('total_s'))}" if label != "wall time" else ""
    line = (f"**timings** {label.replace(' time', '')} {seconds(wall)}{evaluation} · generate "
            f"{seconds(tm.get('generate_s'))} · check {seconds(tm.get('check_s'))}")
    rows = ["| task | examples/s | tokens/s | generate | check |", "|:--|--:|--:|--:|--:|"]
    for t in record.tasks:
        tt = t.get("timings", {})
        ex = "resumed" if tt.get("examples_generated", 1) == 0 else number(examples_per_second(tt))
        rows.append(f"| {inline(t['name'])} | {ex} | {number(tt.get('tokens_per_s'))} | "
                    f"{seconds(tt.get('generate_s'))} | {seconds(tt.get('check_s'))} |")
    return "\n".join([line, "", "<details>", "<summary>timings per task</summary>", "", *rows, "", "</details>"])


def _details(t: dict[str, Any]) -> list[str]:
    gen = t.get("generation", {})
    lines = [f"version {t.get('version')} · generation `" +
             _code_span(", ".join(f"{k}={v!r}" for k, v in gen.items())) + "`", ""]
    levels = t.get("per_level") or {}
    if levels:
        lines += ["| level | n | pass rate | 95% interval | errors/timeouts |", "|--:|--:|--:|:-:|:--|"]
        for level, r in levels.items():
            lines.append(f"| {inline(level)} | {r['n']} | {pct(r['rate'])} | {interval(r)} | {errors_text(r)} |")
        lines.append("")
    return lines
