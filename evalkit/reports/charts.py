"""Inline SVG for the HTML reports (runs and experiments): interval bars and line charts, as deterministic
strings.

No scripts, no external references; every number is rounded to 0.1 px so the same data
always gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626",
           "#4f46e5", "#ea580c")
INK, MUTED, GRID = "#0f172a", "#64748b", "#e5e7eb"


def _f(x: float) -> str:
    s = f"{x:.1f}"
    return s.removesuffix(".0")


def interval_bar(rate: float, low: float, high: float, target: float | None, colour: str,
                 label: str = "") -> str:
    """A 0–100 % track with the 95 % interval as a band, the rate as a dot and the target as a tick."""
    w, pad, y = 200.0, 8.0, 14.0

    def x(v: float) -> float:
        return pad + max(0.0, min(1.0, v)) * (w - 2 * pad)

    parts = [(f'<svg class="ci" viewBox="0 0 {_f(w)} 34" width="100%" role="img" '
              f'aria-label="{escape(label)}">'),
             f'<rect x="{_f(pad)}" y="{_f(y - 3)}" width="{_f(w - 2 * pad)}" height="6" rx="3" fill="#eef0f4"/>',
             (f'<rect x="{_f(x(low))}" y="{_f(y - 5)}" width="{_f(max(2.0, x(high) - x(low)))}" height="10" '
              f'rx="5" fill="{colour}" fill-opacity="0.28"/>')]
    if target is not None:
        tx = x(target)
        parts.append(f'<line x1="{_f(tx)}" x2="{_f(tx)}" y1="2" y2="26" stroke="{INK}" stroke-width="1.5" '
                     f'stroke-dasharray="3 2"/>')
    parts.append(f'<circle cx="{_f(x(rate))}" cy="{_f(y)}" r="5.5" fill="{colour}" stroke="#fff" '
                 f'stroke-width="2"/>')
    for v, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        parts.append(f'<text x="{_f(x(v) if anchor == "middle" else (pad - 4 if v == 0 else w - pad + 4))}" '
                     f'y="32" font-size="8" fill="{MUTED}" text-anchor="{anchor}">{int(v * 100)}%</text>')
    parts.append("</svg>")
    return "".join(parts)


def mini_bar(rate: float, low: float, high: float, colour: str) -> str:
    """A compact interval bar for table cells."""
    w = 120.0
    return (f'<svg class="mini" viewBox="0 0 {_f(w)} 10" width="{_f(w)}" height="10" aria-hidden="true">'
            f'<rect x="0" y="3.5" width="{_f(w)}" height="3" rx="1.5" fill="#eef0f4"/>'
            f'<rect x="{_f(low * w)}" y="1.5" width="{_f(max(1.5, (high - low) * w))}" height="7" rx="3.5" '
            f'fill="{colour}" fill-opacity="0.3"/>'
            f'<circle cx="{_f(min(w - 3, max(3, rate * w)))}" cy="5" r="3" fill="{colour}"/></svg>')


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 × 10^k)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if raw <= m * mag * (1 + 1e-9))
    start = math.floor(lo / step + 1e-9) * step
    ticks, i = [], 0
    while True:
        v = round(start + i * step, 10)
        ticks.append(v)
        if v >= hi - step * 1e-9:
            break
        i += 1
    return ticks


@dataclass
class Series:
    """One line: (x, y) points (y None breaks the line) and an optional (x, low, high) band."""

    name: str
    colour: str
    points: list[tuple[float, float | None]]
    band: list[tuple[float, float, float]] = field(default_factory=list)
    target: float | None = None
    tips: list[str] = field(default_factory=list)


def line_chart(series: Sequence[Series], *, y_lo: float, y_hi: float, y_fmt: Callable[[float], str],
               x_label: str, y_label: str, title: str, width: int = 920, height: int = 340) -> str:
    """A line chart with gridlines, bands, dashed targets and point tooltips (SVG <title>)."""
    ml, mr, mt, mb = 56.0, 24.0, 14.0, 42.0
    xs = [x for s in series for x, _ in s.points] or [0.0, 1.0]
    x_ticks = nice_ticks(min(xs), max(xs), 6)
    x_lo, x_hi = x_ticks[0], x_ticks[-1]
    y_ticks = nice_ticks(y_lo, y_hi, 5)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    pw, ph = width - ml - mr, height - mt - mb

    def px(v: float) -> float:
        return ml + (v - x_lo) / (x_hi - x_lo) * pw

    def py(v: float) -> float:
        return mt + (1 - (v - y_lo) / (y_hi - y_lo)) * ph

    out = [(f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'aria-label="{escape(title)}" font-size="12">')]
    for t in y_ticks:
        out.append(f'<line x1="{_f(ml)}" x2="{_f(ml + pw)}" y1="{_f(py(t))}" y2="{_f(py(t))}" stroke="{GRID}"/>')
        out.append(f'<text x="{_f(ml - 8)}" y="{_f(py(t) + 4)}" text-anchor="end" fill="{MUTED}">'
                   f'{escape(y_fmt(t))}</text>')
    for t in x_ticks:
        if x_lo - 1e-9 <= t <= x_hi + 1e-9:
            out.append(f'<line x1="{_f(px(t))}" x2="{_f(px(t))}" y1="{_f(mt + ph)}" y2="{_f(mt + ph + 5)}" '
                       f'stroke="{MUTED}"/>')
            out.append(f'<text x="{_f(px(t))}" y="{_f(mt + ph + 18)}" text-anchor="middle" fill="{MUTED}">'
                       f'{escape(_num(t))}</text>')
    out.append(f'<line x1="{_f(ml)}" x2="{_f(ml + pw)}" y1="{_f(mt + ph)}" y2="{_f(mt + ph)}" stroke="{MUTED}"/>')
    out.append(f'<text x="{_f(ml + pw / 2)}" y="{height - 4}" text-anchor="middle" fill="{MUTED}">'
               f'{escape(x_label)}</text>')
    out.append(f'<text transform="translate(13 {_f(mt + ph / 2)}) rotate(-90)" text-anchor="middle" '
               f'fill="{MUTED}">{escape(y_label)}</text>')
    for s in series:
        if len(s.band) >= 2:
            upper = " ".join(f"{_f(px(x))},{_f(py(hi))}" for x, _, hi in s.band)
            lower = " ".join(f"{_f(px(x))},{_f(py(lo))}" for x, lo, _ in reversed(s.band))
            out.append(f'<polygon points="{upper} {lower}" fill="{s.colour}" fill-opacity="0.1"/>')
    for s in series:
        if s.target is not None and y_lo <= s.target <= y_hi:
            ty = py(s.target)
            out.append(f'<line x1="{_f(ml)}" x2="{_f(ml + pw)}" y1="{_f(ty)}" y2="{_f(ty)}" stroke="{s.colour}" '
                       f'stroke-width="1.5" stroke-dasharray="6 4" stroke-opacity="0.85"/>')
    for s in series:
        for seg in _segments(s.points):
            if len(seg) >= 2:
                pts = " ".join(f"{_f(px(x))},{_f(py(y))}" for x, y in seg)
                out.append(f'<polyline points="{pts}" fill="none" stroke="{s.colour}" stroke-width="2.25" '
                           f'stroke-linejoin="round" stroke-linecap="round"/>')
        for i, (x, y) in enumerate(s.points):
            if y is None:
                continue
            tip = s.tips[i] if i < len(s.tips) else f"{s.name} @ {_num(x)}: {y_fmt(y)}"
            out.append(f'<circle cx="{_f(px(x))}" cy="{_f(py(y))}" r="3.25" fill="#fff" stroke="{s.colour}" '
                       f'stroke-width="2"><title>{escape(tip)}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def _segments(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    segs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            if segs[-1]:
                segs.append([])
        else:
            segs[-1].append((x, y))
    return [s for s in segs if s]


def _num(v: float) -> str:
    if float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:g}"
