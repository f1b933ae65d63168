"""What task items report: a failed task's text (numbers and first failing samples), and the session's
`evalkit: N task(s)` summary section."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from evalkit.run.record import RunRecord


def show_literal(value: Any, limit: int = 200) -> str:
    """Untrusted text shown literally: repr escapes control characters, ESC and bidi overrides."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(str(value))} chars)"


def failure_report(record: RunRecord, t: dict[str, Any], model: str, threshold: float, source: str,
                   lower_bound: bool, show: int) -> str:
    """The body of a failed task item: rate, interval, threshold, n, errors, record and failing samples."""
    measured = "the 95% interval's lower bound" if lower_bound else "the pass rate"
    lines = [
        f"  model      {model}",
        f"  rate       {t['rate']:.1%} ({t['passes']}/{t['n_samples']} samples passed)",
        f"  95% CI     {t['low']:.1%} – {t['high']:.1%} (Wilson)",
        f"  threshold  {threshold:.1%} on {measured} ({source})",
        (f"  n          {t['n_samples']} samples of {t['n_examples']} examples "
         f"(seed {record.data['settings']['seed']}, level {'default' if t['level'] is None else t['level']})"),
        f"  errors     {t['errors']} errors, {t['timeouts']} timeouts (counted as failures)",
    ]
    if a := t.get("adaptive"):
        from evalkit.run.sequential import describe

        lines.append(f"  adaptive   {describe(a)}")
    if record.path is not None:
        lines.append(f"  record     {record.path / 'record.json'}")
    failing = [s for s in record.samples() if s["task"] == t["name"] and s["status"] != "PASS"]
    if failing and show > 0:
        lines.append(f"  failing samples (first {min(show, len(failing))} of {len(failing)}):")
        for i, s in enumerate(failing[:show], 1):
            lines.append(f"    #{i} {s['status']} example {s['example_id']}"
                         + (f" (level {s['level']})" if s.get("level") is not None else ""))
            lines.append(f"       prompt:   {show_literal(s['prompt'])}")
            lines.append(f"       expected: {show_literal(s['reference'])}")
            lines.append(f"       got:      {show_literal(s['output'])}")
            if s["answer"] != s["output"]:
                lines.append(f"       answer:   {show_literal(s['answer'])} (extracted)")
            lines.append(f"       reason:   {show_literal(s['reason'])}")
    return "\n".join(lines)


class TaskSummary:
    """Collects task items' results (from workers too, under xdist) for one summary section."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if report.when == "call" and "evalkit_task" in props:
            self.results.append({**props, "passed": report.passed})

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        tr = terminalreporter
        tr.write_sep("-", f"evalkit: {len(self.results)} task(s)")
        for r in sorted(self.results, key=lambda r: str(r["evalkit_task"])):
            what = "95% lower bound" if r["evalkit_lower_bound"] in (True, "True") else "rate"
            tr.write_line(f"{'PASS' if r['passed'] else 'FAIL'} {r['evalkit_task']:<20} "
                          f"{float(r['evalkit_rate']):7.1%}  95% CI {float(r['evalkit_low']):.1%}–"
                          f"{float(r['evalkit_high']):.1%}  n={r['evalkit_n']}  "
                          f"threshold {float(r['evalkit_threshold']):.1%} on the {what}"
                          + (f"  adaptive: {r['evalkit_adaptive']}" if r.get("evalkit_adaptive") else ""))
