"""An experiment's summary drawn for people: terminal (table + character plot), Markdown, HTML.

Every function reads only the summary document (summary.json's data), so a report is a pure
function of it; trial links are relative to the experiment folder.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape as escape_markup
from rich.table import Table

from evalkit._text import safe_text

MARKS = "123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
VERDICT_CLASS = {"helps": "met", "better": "met", "hurts": "below", "worse": "below", "mixed": "warn"}
VERDICT_STYLE = {"helps": "green", "better": "green", "hurts": "red", "worse": "red", "mixed": "yellow"}


def _sci(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def _params(n: int | None) -> str:
    return "—" if n is None else (f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def _rate(r: dict[str, Any]) -> str:
    return f"{_pct(r['rate'])} [{_pct(r['low'])}, {_pct(r['high'])}]"


def _points(x: float | None, sign: bool = True) -> str:
    if x is None:
        return "—"
    return f"{x * 100:+.1f}" if sign else f"{x * 100:.1f}"


def _tasks(summary: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for t in summary["trials"]:
        names += [n for n in t.get("rates", {}) if n not in names]
    return names


def _steps(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    decision = (summary.get("ladder") or {}).get("decision") or {}
    return {s["to"]: s for s in decision.get("steps", [])}


def _note(summary: dict[str, Any], t: dict[str, Any]) -> str:
    decision = (summary.get("ladder") or {}).get("decision") or {}
    if t["status"] == "failed":
        return "failed"
    if t["status"] == "pending":
        return "not run (ladder stopped)" if decision.get("stop") else "pending"
    notes = []
    if decision.get("recommended") == t["name"] and decision.get("stop"):
        notes.append("recommended")
    if t.get("targets_met"):
        notes.append("targets met")
    if t.get("after_stop"):
        notes.append("ran past the stop")
    return ", ".join(notes)


def _change(t: dict[str, Any]) -> str:
    return t.get("change") or ""


# -- terminal ---------------------------------------------------------------------------------------------

def ascii_plot(points: list[tuple[str, float, float, float, float]], *, width: int = 60, height: int = 12,
               x_label: str = "training FLOPs") -> list[str]:
    """Pass rate (y, 0-100 %) against cost (x, log scale) in characters: each trial's mark at its rate, ':'
    over its 95 % interval. points: (mark, x, rate, low, high)."""
    pts = [p for p in points if p[1] > 0]
    if not pts:
        return []
    lx = [math.log10(p[1]) for p in pts]
    lo_x, hi_x = min(lx), max(lx)
    span = (hi_x - lo_x) or 1.0
    grid = [[" "] * width for _ in range(height)]

    def row(v: float) -> int:
        return height - 1 - min(height - 1, max(0, round(v * (height - 1))))

    for (mark, _, rate, low, high), x in zip(pts, lx):
        col = round((x - lo_x) / span * (width - 1)) if hi_x > lo_x else width // 2
        for r in range(row(high), row(low) + 1):
            if grid[r][col] == " ":
                grid[r][col] = ":"
        grid[row(rate)][col] = mark
    lines = []
    for i, cells in enumerate(grid):
        label = {0: "100%", height - 1: "  0%", (height - 1) // 2: " 50%"}.get(i, "    ")
        lines.append(f"{label} |{''.join(cells)}")
    lines.append("     +" + "-" * width)
    left, right = f"{10 ** lo_x:.3g}", f"{10 ** hi_x:.3g}"
    lines.append("      " + left + " " * max(1, width - len(left) - len(right)) + right)
    lines.append("      " + f"{x_label} (log scale)".center(width))
    return lines


def ladder_plot_points(summary: dict[str, Any], task: str, cost: str = "flops"
                       ) -> list[tuple[str, float, float, float, float]]:
    out = []
    for i, t in enumerate(summary["trials"]):
        r = t.get("rates", {}).get(task)
        if t["status"] == "done" and r:
            out.append((MARKS[i % len(MARKS)], float(t.get(cost) or 0.0), r["rate"], r["low"], r["high"]))
    return out


def render_terminal(summary: dict[str, Any], console: Console) -> None:
    """The summary table, the plot (ladder) or the verdicts (ablation), and the conclusion."""
    if "ladder" in summary:
        _ladder_terminal(summary, console)
    else:
        _ablation_terminal(summary, console)
    console.print(f"summary: {summary['folder']}/summary.html  ·  {summary['folder']}/summary.md", soft_wrap=True,
                  highlight=False)


def _ladder_terminal(summary: dict[str, Any], console: Console) -> None:
    tasks, steps = _tasks(summary), _steps(summary)
    rule = summary["ladder"]["stop_rule"]
    table = Table(title=f"{summary['experiment']}: {summary['axis']} ladder (stop under "
                  f"{_points(rule['min_gain_per_doubling'], False)} points per doubling of {rule['cost']})",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    for col in ("#", "trial", "params", "FLOPs", "wall", *[f"{n} [95% CI]" for n in tasks], "gain/2x", "note"):
        table.add_column(col, justify="left" if col in ("trial", "note") else "right",
                         no_wrap=col != "note", min_width=len(col) if col != "note" else 8,
                         overflow="fold")
    for i, t in enumerate(summary["trials"]):
        step = steps.get(t["name"], {})
        per = step.get("gain_per_doubling")
        per_text = "—" if not step else ("free" if per is None and step.get("gain", 0) > 0 else _points(per))
        done = t["status"] == "done"
        table.add_row(MARKS[i % len(MARKS)], safe_text(t["name"]), _params(t.get("params")),
                      _sci(t.get("flops")) if done else "—", f"{t['wall_s']:.0f}s" if done else "—",
                      *[_rate(t["rates"][n]) if n in t.get("rates", {}) else "—" for n in tasks],
                      per_text, _note(summary, t))
    console.print(table)
    for task in tasks:
        lines = ascii_plot(ladder_plot_points(summary, task), x_label=f"training FLOPs · {task} pass rate")
        if lines:
            console.print("\n".join(lines), highlight=False, markup=False)
    d = summary["ladder"]["decision"]
    if d.get("stop") and d.get("recommended"):
        console.print(f"[bold]recommended: {escape_markup(d['recommended'])}[/] —", safe_text(d["reason"], 1000))
    else:
        console.print("[bold]no recommendation[/] —", safe_text(d["reason"], 1000))


def _ablation_terminal(summary: dict[str, Any], console: Console) -> None:
    ab = summary["ablation"]
    by_trial = {v["trial"]: v for v in ab["verdicts"]}
    tasks = _tasks(summary) or ["—"]
    several = len(tasks) > 1
    table = Table(title=f"{summary['experiment']}: each trial against the full mixture"
                  + ("" if several else f" on {tasks[0]}")
                  + f" (exact McNemar, alpha {ab['alpha']:g}, same held-out examples)", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    cols = ["trial", "change", *(["task"] if several else []), "pass rate [95% CI]", "diff", "only full/trial", "p",
            "verdict"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("trial", "change", "task", "verdict") else "right",
                         no_wrap=col not in ("change", "verdict"), min_width=min(len(col), 10), overflow="fold")
    for t in summary["trials"]:
        v = by_trial.get(t["name"])
        for task in tasks:
            r = t.get("rates", {}).get(task)
            c = (v or {}).get("comparisons", {}).get(task)
            verdict = v["verdict"] if v else ("baseline" if t.get("role") == "full" else t["status"])
            if v and v["role"] == "without":
                verdict = f"{t['source']} {verdict}"
            style = VERDICT_STYLE.get(v["verdict"], "default") if v else "default"
            table.add_row(safe_text(t["name"]), safe_text(_change(t)), *([task] if several else []),
                          _rate(r) if r else t["status"], _points(c["diff"]) if c else "",
                          f"{c['only_a']}/{c['only_b']}" if c else "", f"{c['p_value']:.2g}" if c else "",
                          safe_text(verdict, style=style))
    console.print(table)
    if ab.get("warning"):
        console.print(safe_text(f"warning: {ab['warning']}", 1000, style="yellow"))
    for v in ab["verdicts"]:
        if v["role"] == "without":
            console.print(f"  source [bold]{escape_markup(v['source'])}[/]:",
                          safe_text(v["verdict"], style=VERDICT_STYLE.get(v["verdict"], "")))


# -- Markdown ----------------------------------------------------------------------------------------------

def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# Experiment {_md(summary['experiment'])}", ""]
    if summary.get("description"):
        lines += [_md(summary["description"]), ""]
    lines += [f"Recipe `{summary['recipe']}` · {_md(summary.get('executor', ''))}", ""]
    tasks = _tasks(summary)
    if "ladder" in summary:
        steps = _steps(summary)
        lines += ["| # | trial | params | tokens | FLOPs | wall | " + " | ".join(f"{_md(n)} [95% CI]" for n in tasks)
                  + " | gain/doubling (points) | note | links |",
                  "|---|---|---:|---:|---:|---:|" + "---:|" * len(tasks) + "---:|---|---|"]
        for i, t in enumerate(summary["trials"]):
            step = steps.get(t["name"], {})
            per = _points(step.get("gain_per_doubling")) if step else "—"
            done = t["status"] == "done"
            links = f"[record]({t['record']}) · [report]({t['report']})" if done else ""
            wall = f"{t['wall_s']:.0f}s" if done else "—"
            lines.append(f"| {MARKS[i % len(MARKS)]} | {_md(t['name'])} | {_params(t.get('params'))} | "
                         f"{_sci(t.get('tokens')) if done else '—'} | {_sci(t.get('flops')) if done else '—'} | "
                         f"{wall} | "
                         + " | ".join(_rate(t['rates'][n]) if n in t.get('rates', {}) else "—" for n in tasks)
                         + f" | {per} | {_note(summary, t)} | {links} |")
        for task in tasks:
            plot = ascii_plot(ladder_plot_points(summary, task), x_label=f"training FLOPs · {task} pass rate")
            if plot:
                lines += ["", "```", *plot, "```"]
        d = summary["ladder"]["decision"]
        head = f"**Recommended: {_md(d['recommended'])}**" if d.get("stop") and d.get("recommended") \
            else "**No recommendation**"
        lines += ["", f"{head} — {_md(d['reason'])}", ""]
    else:
        ab = summary["ablation"]
        by_trial = {v["trial"]: v for v in ab["verdicts"]}
        lines += [f"Each trial against the full mixture: exact McNemar on the same held-out examples, alpha "
                  f"{ab['alpha']:g}.", "",
                  "| trial | change | task | pass rate [95% CI] | diff vs full (points) | only full | only trial | p | "
                  "verdict | links |", "|---|---|---|---:|---:|---:|---:|---:|---|---|"]
        for t in summary["trials"]:
            v = by_trial.get(t["name"])
            links = f"[record]({t['record']}) · [report]({t['report']})" if t["status"] == "done" else ""
            for task in tasks or ["—"]:
                r = t.get("rates", {}).get(task)
                c = (v or {}).get("comparisons", {}).get(task)
                verdict = (f"{t['source']} **{v['verdict']}**" if v["role"] == "without" else f"**{v['verdict']}**") \
                    if v else ("baseline" if t.get("role") == "full" else t["status"])
                lines.append(f"| {_md(t['name'])} | {_md(_change(t))} | {_md(task)} | {_rate(r) if r else t['status']} "
                             f"| {_points(c['diff']) if c else ''} | {c['only_a'] if c else ''} | "
                             f"{c['only_b'] if c else ''} | {format(c['p_value'], '.3g') if c else ''} | "
                             f"{_md(verdict)} | "
                             f"{links} |")
        if ab.get("warning"):
            lines += ["", f"**Warning:** {_md(ab['warning'])}"]
        lines.append("")
    return "\n".join(lines) + "\n"


# -- HTML --------------------------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def render_html(summary: dict[str, Any]) -> str:
    """One self-contained page (inline CSS and SVG; no script, nothing fetched)."""
    from evalkit.reports.html_assets import CSS

    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
    body = [f'<header class="top"><div class="wrap"><div class="brand">evalkit experiment</div>'
            f"<h1>{_e(summary['experiment'])}</h1>"
            f'<p class="sub">{_e(summary.get("description"))}</p>'
            f'<p class="sub">recipe <code>{_e(summary["recipe"])}</code> · {_e(summary.get("executor"))} · '
            f'updated {_e(summary.get("updated_at"))}</p></div></header>', '<main class="wrap">']
    body += _ladder_html(summary) if "ladder" in summary else _ablation_html(summary)
    body.append("</main>")
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      '<meta name="viewport" content="width=device-width, initial-scale=1">',
                      f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
                      f"<title>evalkit experiment · {_e(summary['experiment'])}</title>", f"<style>{CSS}</style>",
                      "</head>", "<body>", *body, "</body>", "</html>", ""])


def _links(t: dict[str, Any]) -> str:
    if t["status"] != "done":
        return ""
    return f'<a href="{_e(t["report"])}">report</a> · <a href="{_e(t["record"])}">record</a>'


def _ladder_html(summary: dict[str, Any]) -> list[str]:
    from evalkit.reports.charts import PALETTE, Series, line_chart, mini_bar

    tasks, steps = _tasks(summary), _steps(summary)
    d = summary["ladder"]["decision"]
    rule = summary["ladder"]["stop_rule"]
    cls = "met" if d.get("stop") and d.get("recommended") else "none"
    head = f"recommended: {d['recommended']}" if d.get("stop") and d.get("recommended") else "no recommendation"
    out = [f'<h2>Recommendation</h2><section class="panel"><span class="verdict {cls}">{_e(head)}</span>'
           f'<p>{_e(d["reason"])}</p><p class="note">Stop rule: climb while a step up gains at least '
           f'{_points(rule["min_gain_per_doubling"], False)} points of '
           f'{"pass rate" if rule["measure"] == "rate" else "the pass rate&#39;s 95% lower bound"} per doubling '
           f'of {_e(rule["cost"])}, until a trial meets every target'
           f'{" and the paired test finds it better" if rule.get("require_significant") else ""}.</p></section>']
    rows = []
    for i, t in enumerate(summary["trials"]):
        step = steps.get(t["name"], {})
        per = _points(step.get("gain_per_doubling")) if step else "—"
        done = t["status"] == "done"
        wall = f"{t['wall_s']:.0f}s" if done else "—"
        cells = []
        for j, n in enumerate(tasks):
            r = t.get("rates", {}).get(n)
            bar = mini_bar(r["rate"], r["low"], r["high"], PALETTE[j % 10]) if r else ""
            cells.append(f'<td class="num" style="white-space:nowrap">{_rate(r)}<br>{bar}</td>' if r
                         else '<td class="num">—</td>')
        rows.append(f'<tr><td>{MARKS[i % len(MARKS)]}</td><td><b>{_e(t["name"])}</b></td>'
                    f'<td class="num">{_params(t.get("params"))}</td>'
                    f'<td class="num">{_sci(t.get("tokens")) if done else "—"}</td>'
                    f'<td class="num">{_sci(t.get("flops")) if done else "—"}</td>'
                    f'<td class="num">{wall}</td>{"".join(cells)}'
                    f'<td class="num">{per}</td><td>{_e(_note(summary, t))}</td><td>{_links(t)}</td></tr>')
    heads = "".join(f'<th class="num">{_e(n)} [95% CI]</th>' for n in tasks)
    out.append('<h2>Trials</h2><section class="panel"><table><thead><tr><th>#</th><th>trial</th>'
               '<th class="num">params</th><th class="num">tokens</th><th class="num">FLOPs</th>'
               f'<th class="num">wall</th>{heads}<th class="num">gain / doubling (points)</th><th>note</th>'
               f'<th>links</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
               '<p class="note">FLOPs ≈ 6 × parameters × tokens trained (LoRA: (4 × all + 2 × trained) × tokens); '
               'tokens = steps × rows per step × mean tokens per training row. Pass rates are each trial\'s best '
               'evaluation, with Wilson 95 % intervals.</p></section>')
    for cost, label in (("flops", "log₁₀ training FLOPs"), ("wall_s", "wall seconds")):
        series = []
        for j, n in enumerate(tasks):
            pts, band, tips = [], [], []
            for i, t in enumerate(summary["trials"]):
                r = t.get("rates", {}).get(n)
                x = float(t.get(cost) or 0.0)
                if t["status"] != "done" or not r or x <= 0:
                    continue
                xv = math.log10(x) if cost == "flops" else x
                pts.append((xv, r["rate"]))
                band.append((xv, r["low"], r["high"]))
                tips.append(f"{MARKS[i % len(MARKS)]} {t['name']} · {_params(t.get('params'))} params · "
                            f"{x:.3g} {'FLOPs' if cost == 'flops' else 's'} · {n} {_rate(r)}")
            target = next((t["rates"][n].get("target") for t in summary["trials"] if n in t.get("rates", {})), None)
            order = sorted(range(len(pts)), key=lambda k: pts[k][0])  # a line left to right, whatever the plan order
            series.append(Series(n, PALETTE[j % 10], [pts[k] for k in order], [band[k] for k in order], target,
                                 [tips[k] for k in order]))
        if any(s.points for s in series):
            chart = line_chart(series, y_lo=0.0, y_hi=1.0, y_fmt=lambda v: f"{v * 100:.0f}%", x_label=label,
                               y_label="pass rate", title=f"pass rate vs {label}", height=300)
            out.append(f'<section class="panel"><p class="chart-title">Pass rate vs {_e(label)} '
                       '<span class="sub">— shaded: 95% interval; dashed: target; hover a point for its trial'
                       f'</span></p>{chart}</section>')
    return out


def _ablation_html(summary: dict[str, Any]) -> list[str]:
    from evalkit.reports.charts import mini_bar

    ab = summary["ablation"]
    by_trial = {v["trial"]: v for v in ab["verdicts"]}
    tasks = _tasks(summary)
    cards = []
    for v in ab["verdicts"]:
        what = f"source {v['source']}" if v["role"] == "without" else f"weights {v['trial']}"
        cards.append(f'<span class="pill {VERDICT_CLASS.get(v["verdict"], "none")}">{_e(what)}: '
                     f'{_e(v["verdict"])}</span>')
    out = [f'<h2>Verdicts</h2><section class="panel"><p>{" ".join(cards) or "no comparison yet"}</p>'
           f'<p class="note">Each trial against the full mixture: exact McNemar test on the same held-out examples, '
           f'alpha {ab["alpha"]:g}. A source helps when the mixture without it is significantly worse; it hurts '
           'when the mixture without it is significantly better. Same seed and step budget for every trial.</p>'
           + (f'<p><span class="pill warn">warning</span> {_e(ab["warning"])}</p>' if ab.get("warning") else "")
           + '</section>']
    rows = []
    for t in summary["trials"]:
        v = by_trial.get(t["name"])
        for task in tasks or ["—"]:
            r = t.get("rates", {}).get(task)
            c = (v or {}).get("comparisons", {}).get(task)
            verdict = v["verdict"] if v else ("baseline" if t.get("role") == "full" else t["status"])
            bar = mini_bar(r["rate"], r["low"], r["high"], "#4f46e5") if r else ""
            rows.append(f'<tr><td><b>{_e(t["name"])}</b></td><td>{_e(_change(t))}</td><td>{_e(task)}</td>'
                        f'<td class="num" style="white-space:nowrap">{_rate(r) if r else _e(t["status"])}<br>{bar}</td>'
                        f'<td class="num">{_points(c["diff"]) if c else ""}</td>'
                        f'<td class="num">{c["only_a"] if c else ""}</td>'
                        f'<td class="num">{c["only_b"] if c else ""}</td>'
                        f'<td class="num">{format(c["p_value"], ".2g") if c else ""}</td>'
                        f'<td><span class="pill {VERDICT_CLASS.get(verdict, "none")}">{_e(verdict)}</span></td>'
                        f"<td>{_links(t)}</td></tr>")
    out.append('<h2>Trials</h2><section class="panel"><table><thead><tr><th>trial</th><th>change</th><th>task</th>'
               '<th class="num">pass rate [95% CI]</th><th class="num">diff (points)</th>'
               '<th class="num">only full</th><th class="num">only trial</th><th class="num">p</th><th>verdict</th>'
               f'<th>links</th></tr></thead><tbody>{"".join(rows)}</tbody></table></section>')
    return out
