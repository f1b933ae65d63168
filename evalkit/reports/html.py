"""The HTML report: one self-contained file (inline CSS, JS and SVG; nothing fetched).

Header (run, model, date, evalkit version), a card per task (pass rate, interval bar,
target marker, status colour), learning curves when the record comes from fine-tuning
(`meta.training.history`), per-task tables, and a searchable, filterable table of failing
samples. Every piece of record text goes through `html.escape` (model output also through
`literal`, which escapes control characters); a Content-Security-Policy allows only this
file's own script, by hash, so even a leak could not run or fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from html import escape
from typing import Any

from evalkit.reports._common import (
    Failures,
    collect_failures,
    errors_text,
    failure_limit,
    headline,
    interval,
    literal,
    pct,
    seconds,
    status_word,
    target_text,
    timing_line,
    top_k,
    wall_time,
)
from evalkit.reports.charts import PALETTE, Series, interval_bar, line_chart, mini_bar
from evalkit.reports.html_assets import CSS, JS
from evalkit.run.record import RunRecord
from evalkit.run.sequential import describe

STATUS_CLASS = {"met": "met", "below": "below", "no target": "none"}
STATUS_COLOUR = {"met": "#15803d", "below": "#b91c1c", "no target": "#475569"}
STATUS_LABEL = {"met": "target met", "below": "below target", "no target": "no target"}
HTML_ROWS_PER_FAILURE = 10  # the failing-samples table is searchable: it holds 10 × max_failures per task


def e(value: Any) -> str:
    """Escape record text for HTML text and attribute values (quotes too)."""
    return escape("" if value is None else str(value), quote=True)


def u(value: str | None, limit: int = 4000) -> str:
    """Untrusted text (model output, prompts, reasons): literal, capped, HTML-escaped."""
    return escape(literal(value, limit), quote=True)


def render_html(record: RunRecord, *, verbosity: int = 0, max_failures: int = 5) -> str:
    """The report as one self-contained HTML document (deterministic for a given record).

    Args:
        verbosity: -1 leaves out the failing-samples table; 2+ includes every failing sample.
        max_failures: the table holds up to HTML_ROWS_PER_FAILURE × max_failures failures per task.
    """
    limit: int | None = None  # verbosity 2+: every failing sample
    if verbosity < 0:
        limit = 0
    elif verbosity < 2:
        limit = (failure_limit(max_failures, verbosity) or 0) * HTML_ROWS_PER_FAILURE
    failures = collect_failures(record, limit) if limit != 0 else Failures()
    script_hash = base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
           f"script-src 'sha256-{script_hash}'; base-uri 'none'; form-action 'none'")
    body = [_header(record), '<main class="wrap">', _cards(record, failures), _curves(record),
            _task_tables(record, failures)]
    if verbosity >= 0:
        body.append(_failure_table(record, failures))
    body += [_footer(record), "</main>"]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="generator" content="evalkit">',
        f"<title>evalkit · {e(record.run_id)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        *body, f"<script>{JS}</script>", "</body>", "</html>", ""])


def _date(value: str | None) -> str:
    if not value:
        return "—"
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return value
    offset = dt.utcoffset()
    zone = " UTC" if offset is not None and offset.total_seconds() == 0 else dt.strftime(" %z")
    return dt.strftime("%Y-%m-%d %H:%M:%S") + zone.rstrip()


def _header(record: RunRecord) -> str:
    d = record.data
    model = d.get("model", {})
    below = any(t.get("meets_target") is False for t in record.tasks)
    judged = any(t.get("meets_target") is not None for t in record.tasks)
    cls = "below" if below else ("met" if judged else "none")
    mark = {"below": "✕", "met": "✓", "none": "–"}[cls]
    n = sum(t["n_samples"] for t in record.tasks)
    facts = [("model", e(model.get("identity")), True)]
    if model.get("spec") and model.get("spec") != model.get("identity"):
        facts.append(("spec", e(model.get("spec")), True))
    facts += [("date", e(_date(d.get("created_at"))), False), ("evalkit", e(d.get("evalkit_version")), False),
              ("samples", f"{n:,}", False), ("overall pass rate", pct(record.pass_rate), False)]
    label, wall = wall_time(record)
    facts.append((label, e(seconds(wall)), False))
    if label != "wall time":  # fine-tuning: the evaluation shown is one of many
        facts.append(("this evaluation", e(seconds(d.get("timings", {}).get("total_s"))), False))
    incomplete = "" if d.get("complete", True) else ' <span class="pill warn">incomplete run</span>'
    mono_attr = {True: ' class="mono"', False: ""}
    items = "".join(f"<div><dt>{k}</dt><dd{mono_attr[mono]}>{v}</dd></div>" for k, v, mono in facts)
    return (f'<header class="top"><div class="wrap"><div class="brand">evalkit report</div>'
            f"<h1>{e(record.run_id)}</h1>"
            f'<span class="verdict {cls}">{mark} {e(headline(record))}</span>{incomplete}'
            f'<dl class="facts">{items}</dl></div></header>')


def _cards(record: RunRecord, failures: Failures) -> str:
    cards = []
    for t in record.tasks:
        st = status_word(t)
        whole, frac = f"{t['rate'] * 100:.1f}".split(".")
        label = f"{t['name']}: pass rate {pct(t['rate'])}, 95% interval {interval(t)}, target {target_text(t)}"
        foot = [f"<span>target <b>{target_text(t)}</b></span>" if t.get("target") is not None
                else "<span>reported, not judged</span>"]
        k = top_k(t)
        if k:
            foot.append(f"<span>pass@{k[0]} <b>{pct(k[1])}</b></span>")
        err = errors_text(t)
        if err != "—":
            foot.append(f'<span class="pill warn">{e(err)}</span>')
        if failures.count(t["name"]):
            foot.append(f'<a href="#failures-section" data-show-task="{e(t["name"])}">'
                        f'{_failing(failures, t["name"])} →</a>')
        cards.append(
            f'<article class="card {STATUS_CLASS[st]}"><div class="status">{STATUS_LABEL[st]}</div>'
            f'<h3>{e(t["name"])}</h3><div class="big">{whole}<small>.{frac}%</small></div>'
            f'<div class="sub">{t["passes"]:,} of {t["n_samples"]:,} samples passed<br>'
            f'95% interval {interval(t)}</div>'
            f'{interval_bar(t["rate"], t["low"], t["high"], t.get("target"), STATUS_COLOUR[st], label)}'
            f'<div class="card-foot">{"".join(foot)}</div></article>')
    return f'<h2>Tasks</h2><section class="cards">{"".join(cards)}</section>'


def _curves(record: RunRecord) -> str:
    history = ((record.data.get("meta") or {}).get("training") or {}).get("history")
    if not isinstance(history, list) or not history:
        return ""
    history = sorted((h for h in history if isinstance(h, dict) and "step" in h), key=lambda h: h["step"])
    names = [t["name"] for t in record.tasks]
    for h in history:
        names += [n for n in (h.get("rates") or {}) if n not in names]
    names = [n for n in names if any(n in (h.get("rates") or {}) for h in history)]
    targets = {t["name"]: t.get("target") for t in record.tasks}
    series, legend = [], []
    for i, name in enumerate(names):
        colour = PALETTE[i % len(PALETTE)]
        pts: list[tuple[float, float | None]] = []
        band: list[tuple[float, float, float]] = []
        tips: list[str] = []
        for h in history:
            r = (h.get("rates") or {}).get(name)
            if not r:
                continue
            step = float(h["step"])
            pts.append((step, float(r["rate"])))
            band.append((step, float(r.get("low", r["rate"])), float(r.get("high", r["rate"]))))
            level = (h.get("levels") or {}).get(name)  # verifier modes: the level trained at (curriculum)
            tips.append(f"{name} · step {h['step']}: {pct(r['rate'])} "
                        f"(95% CI {pct(r.get('low', r['rate']))}–{pct(r.get('high', r['rate']))})"
                        + (f" · training level {level}" if level is not None else ""))
        series.append(Series(name, colour, pts, band, targets.get(name), tips))
        tgt = targets.get(name)
        legend.append(f'<span><i style="background:{colour}"></i>{e(name)}'
                      f'{f" <small>(target {pct(tgt, 0)})</small>" if tgt is not None else ""}</span>')
    legend.append('<span><i class="dash"></i>target</span>')
    rate_chart = line_chart(series, y_lo=0.0, y_hi=1.0, y_fmt=lambda v: f"{v * 100:.0f}%", x_label="training step",
                            y_label="pass rate", title="pass rate per task vs training step")
    parts = ['<h2>Learning curves</h2><section class="panel">',
             ('<p class="chart-title">Pass rate vs step <span class="sub">— shaded: 95% interval; dashed: target'
              '</span></p>'), f'<div class="legend">{"".join(legend)}</div>', rate_chart, "</section>"]
    levelled = [n for n in names if len({(h.get("levels") or {}).get(n) for h in history} - {None}) > 1]
    if levelled:  # a curriculum moved some level: draw each task's training level against the step
        lv = [Series(n, PALETTE[names.index(n) % len(PALETTE)],
                     [(float(h["step"]), (h.get("levels") or {}).get(n)) for h in history],
                     tips=[f"{n} · step {h['step']}: level {(h.get('levels') or {}).get(n)}" for h in history])
              for n in levelled]
        top = max(v for s_ in lv for _, v in s_.points if v is not None)
        chart = line_chart(lv, y_lo=0.0, y_hi=float(top), y_fmt=lambda v: f"{v:g}", x_label="training step",
                           y_label="level", title="curriculum level per task vs step", height=220)
        parts += [('<section class="panel"><p class="chart-title">Curriculum level <span class="sub">— the level '
                   'each task trained at</span></p>'), chart, "</section>"]
    losses = [(float(h["step"]), h.get("loss")) for h in history]
    known = [v for _, v in losses if isinstance(v, (int, float))]
    if known:
        tips = [f"step {h['step']}: loss {h['loss']:.4g}" + (f" · {seconds(h['wall_s'])}" if h.get("wall_s") else "")
                if isinstance(h.get("loss"), (int, float)) else "" for h in history]
        loss_series = Series("loss", "#4f46e5", [(x, float(v) if isinstance(v, (int, float)) else None)
                                                 for x, v in losses], tips=tips)
        chart = line_chart([loss_series], y_lo=min(0.0, *known), y_hi=max(known) * 1.05 or 1.0,
                           y_fmt=lambda v: f"{v:g}", x_label="training step", y_label="loss",
                           title="training loss vs step", height=260)
        parts += ['<section class="panel"><p class="chart-title">Training loss</p>', chart, "</section>"]
    return "".join(parts)


def _task_tables(record: RunRecord, failures: Failures) -> str:
    blocks = []
    for t in record.tasks:
        st = status_word(t)
        colour = STATUS_COLOUR[st]
        rows = []
        for level, r in (t.get("per_level") or {}).items():
            rows.append(f'<tr><td>{e(level)}</td><td class="num">{r["n"]:,}</td><td class="num">{pct(r["rate"])}</td>'
                        f'<td>{mini_bar(r["rate"], r["low"], r["high"], colour)}</td><td class="num">{interval(r)}</td>'
                        f'<td>{e(errors_text(r))}</td></tr>')
        levels = ('<table><thead><tr><th>level</th><th class="num">n</th><th class="num">pass rate</th>'
                  '<th>interval</th>'
                  f'<th class="num">95% CI</th><th>errors</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
        gen = t.get("generation", {})
        kv = [("version", e(t.get("version"))), ("examples", f"{t['n_examples']:,}"),
              ("samples", f"{t['n_samples']:,} ({t['passes']:,} passed)"),
              ("mean score", f"{t.get('mean_score', 0):.3f}"),
              ("pass@k", e("  ".join(f"@{k} {pct(v)}" for k, v in t.get("pass_at_k", {}).items()))),
              ("generation", f'<code>{e(", ".join(f"{k}={v!r}" for k, v in gen.items()))}</code>'),
              ("timings", e(timing_line(t)))]
        if t.get("source"):
            kv.append(("source", f"<code>{e(t['source'])}</code>"))
        if a := t.get("adaptive"):
            kv.append(("adaptive", e(describe(a))))
        facts = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in kv)
        blocks.append(
            f'<details class="panel task-block"{" open" if st == "below" else ""}><summary><h3>{e(t["name"])}</h3>'
            f'<span class="pill {STATUS_CLASS[st]}">{STATUS_LABEL[st]}</span>'
            f'<span class="meta">{pct(t["rate"])} · 95% CI {interval(t)} · target {target_text(t)} · '
            f'{_failing(failures, t["name"])}</span></summary>'
            f'<div class="grid2"><div>{levels}</div><dl class="kv">{facts}</dl></div></details>')
    return f'<h2>Per task</h2>{"".join(blocks)}'


def _failure_table(record: RunRecord, failures: Failures) -> str:
    rows = []
    for t in record.tasks:
        for s in failures.of(t["name"]):
            where = e(s["example_id"]) + (f" #{s['sample_index']}" if s.get("sample_index") else "")
            level = f"<br>level {e(s['level'])}" if s.get("level") is not None else ""
            rows.append(
                f'<tr data-task="{e(s["task"])}" data-status="{e(s["status"])}"><td><b>{e(s["task"])}</b>'
                f'<div class="id">{where}{level}</div></td>'
                f'<td><span class="pill {e(s["status"])}">{e(s["status"])}</span></td>'
                f'<td><pre>{u(s.get("prompt"))}</pre></td><td><pre>{u(s.get("reference"))}</pre></td>'
                f'<td class="got"><pre>{u(s.get("output"))}</pre></td><td><pre>{u(s.get("answer"))}</pre></td>'
                f'<td class="reason">{u(s.get("reason"), 1000)}</td></tr>')
    total = sum(failures.total.values())
    if not total:
        return '<h2 id="failures-section">Failing samples</h2><section class="panel"><p class="empty">' \
               'No failing samples.</p></section>'
    options = "".join(f'<option value="{e(t["name"])}">{e(t["name"])}</option>'
                      for t in record.tasks if failures.count(t["name"]))
    statuses = sorted({s["status"] for name in failures.shown for s in failures.shown[name]})
    st_opts = "".join(f'<option value="{e(s)}">{e(s)}</option>' for s in statuses)
    capped = ""
    if len(rows) < total:  # said above the table, beside its count, and why
        per_task = max(len(v) for v in failures.shown.values())
        capped = (f'<p class="note" id="capped">The table lists {len(rows):,} of the {total:,} failing samples: '
                  f"the first {per_task:,} of each task. <code>evalkit report RUN -o report.html -vv</code> lists "
                  "every one (or a larger <code>--max-failures</code>).</p>")
    listed = f"{len(rows):,} listed" + (f" · {total:,} failing in all" if len(rows) < total else "")
    return (f'<h2 id="failures-section">Failing samples</h2><section class="panel">'
            f'<div class="controls"><input id="q" type="search" placeholder="Search prompts, outputs, reasons…" '
            f'aria-label="search failing samples"><select id="ft" aria-label="task"><option value="">all tasks</option>'
            f'{options}</select><select id="fs" aria-label="status"><option value="">any status</option>{st_opts}'
            f'</select><span class="count"><span id="shown">{len(rows):,}</span> shown of {listed}</span></div>{capped}'
            f'<div style="overflow-x:auto"><table id="failures"><thead><tr><th>task / example</th><th>status</th>'
            f'<th>prompt</th><th>expected</th><th>got (raw output)</th><th>answer</th><th>reason</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></section>')


def _failing(failures: Failures, name: str) -> str:
    """`152 failing`, and `(50 listed)` when the failing-samples table holds fewer of them."""
    total, listed = failures.count(name), len(failures.of(name))
    return f"{total:,} failing" + (f" ({listed:,} listed)" if listed < total else "")


def _footer(record: RunRecord) -> str:
    d = record.data
    items = [("settings", ", ".join(f"{k}={v}" for k, v in d.get("settings", {}).items())),
             ("environment", ", ".join(f"{k}={v}" for k, v in d.get("environment", {}).items()))]
    if d.get("finished_at"):
        items.append(("finished", _date(d["finished_at"])))
    dl = "".join(f"<dt>{k}</dt><dd>{e(v)}</dd>" for k, v in items)
    return f"<footer><dl>{dl}</dl></footer>"
