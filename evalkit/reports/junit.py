"""The JUnit XML report: one testcase per task, for CI systems that read JUnit.

    <testsuites name="evalkit"><testsuite name="evalkit">
      <properties> run id, model identity and spec, evalkit version, settings </properties>
      <testcase classname="evalkit.addition" name="addition">  <failure .../>  </testcase>

A testcase fails (<failure>) exactly when its task misses its target — the gate's verdict;
errors and timeouts are failed samples (they count as failures in every rate),
so they show in the failure message and in <system-out>, never as a separate <error>.
A task without a target is a passing testcase with a note in <system-out>.

`render_gate_junit` writes a gate's verdict: one testcase per gated task, a <failure> for a
task below its rule, an <error> for a configuration problem (no threshold, unreadable baseline,
zero examples), the reasons in <system-out> for a pass.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from evalkit.errors import ExitCode
from evalkit.reports._common import (
    GateResultLike,
    collect_failures,
    errors_text,
    interval,
    literal,
    pct,
    target_text,
    timing_line,
)
from evalkit.run.record import RunRecord
from evalkit.run.sequential import describe

# Characters XML 1.0 cannot hold at all (not even as references): C0 controls but tab, newline and
# carriage return; lone surrogates; U+FFFE and U+FFFF.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def xml_safe(text: Any) -> str:
    """Text XML 1.0 can carry: illegal characters become visible \\xNN / \\uNNNN escapes."""
    def esc(m: re.Match[str]) -> str:
        c = ord(m.group())
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"

    return _ILLEGAL_XML.sub(esc, str(text))


def render_junit(record: RunRecord, *, max_failures: int = 5) -> str:
    """The record as a JUnit XML document (UTF-8, with an XML declaration).

    Args:
        max_failures: failing samples quoted in each failed testcase's text.
    """
    d = record.data
    failures = collect_failures(record, max_failures)
    tasks = record.tasks
    n_failed = sum(1 for t in tasks if t.get("meets_target") is False)
    total_s = float(d.get("timings", {}).get("total_s", 0.0))
    counts = {"tests": str(len(tasks)), "failures": str(n_failed), "errors": "0", "skipped": "0",
              "time": f"{total_s:.3f}"}
    root = ET.Element("testsuites", {"name": "evalkit", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": "evalkit", **counts,
                                              "timestamp": xml_safe(d.get("created_at", "")),
                                              "id": xml_safe(record.run_id)})
    props = ET.SubElement(suite, "properties")
    model = d.get("model", {})
    settings = d.get("settings", {})
    for name, value in [("run_id", record.run_id), ("model.identity", model.get("identity")),
                        ("model.spec", model.get("spec")), ("evalkit_version", d.get("evalkit_version")),
                        ("created_at", d.get("created_at")), ("complete", d.get("complete")),
                        *((f"settings.{k}", v) for k, v in settings.items())]:
        ET.SubElement(props, "property", {"name": xml_safe(name), "value": xml_safe(_str(value))})
    for t in tasks:
        tm = t.get("timings", {})
        case = ET.SubElement(suite, "testcase", {
            "classname": xml_safe(f"evalkit.{t['name']}"), "name": xml_safe(t["name"]),
            "time": f"{float(tm.get('generate_s', 0)) + float(tm.get('check_s', 0)):.3f}"})
        summary = (f"{t['name']}: pass rate {pct(t['rate'])} ({t['passes']}/{t['n_samples']}), "
                   f"95% interval {interval(t)}, target {target_text(t)}")
        err = errors_text(t)
        if err != "—":
            summary += f", {err} (counted as failures)"
        if t.get("meets_target") is False:
            failure = ET.SubElement(case, "failure", {"message": xml_safe(f"below target — {summary}"),
                                                      "type": "BelowTarget"})
            failure.text = xml_safe(_failure_text(t, failures.of(t["name"]), failures.count(t["name"])))
        note = summary
        if t.get("meets_target") is None:
            note = f"no target: reported, not judged — {summary}"
        out = ET.SubElement(case, "system-out")
        adaptive = f"adaptive: {describe(t['adaptive'])}\n" if t.get("adaptive") else ""
        out.text = xml_safe(f"{note}\ntimings: {timing_line(t)}\n{adaptive}")
    ET.indent(root, space="  ")
    return XML_DECLARATION + ET.tostring(root, encoding="unicode") + "\n"


def render_gate_junit(result: GateResultLike) -> str:
    """A gate's verdict as a JUnit XML document (UTF-8, with an XML declaration)."""
    failures = sum(1 for o in result.outcomes if o.code is ExitCode.FAILED)
    errors = sum(1 for o in result.outcomes if o.code not in (ExitCode.OK, ExitCode.FAILED))
    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite", {"name": "evalkit.gate", "tests": str(len(result.outcomes)),
                                              "failures": str(failures), "errors": str(errors)})
    for o in result.outcomes:
        case = ET.SubElement(suite, "testcase", {"classname": "evalkit.gate", "name": xml_safe(o.task)})
        message, text = xml_safe("; ".join(o.reasons)), xml_safe("\n".join(o.reasons))
        if o.code is ExitCode.FAILED:
            ET.SubElement(case, "failure", {"message": message}).text = text
        elif o.code is not ExitCode.OK:
            ET.SubElement(case, "error", {"message": message}).text = text
        else:
            ET.SubElement(case, "system-out").text = text
    ET.indent(root, space="  ")
    return XML_DECLARATION + ET.tostring(root, encoding="unicode") + "\n"


def _str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _failure_text(t: dict[str, Any], shown: list[dict[str, Any]], total: int) -> str:
    lines = [f"{total} of {t['n_samples']} samples failed" +
             (f"; the first {len(shown)}:" if len(shown) < total else ":")]
    for s in shown:
        where = s["example_id"] + (f" #{s['sample_index']}" if s.get("sample_index") else "")
        if s.get("level") is not None:
            where += f" (level {s['level']})"
        lines += ["", f"[{s['status']}] {where}: {literal(s.get('reason', ''), 500)}",
                  _field("prompt", s.get("prompt")), _field("expected", s.get("reference")),
                  _field("got", s.get("output")), _field("answer", s.get("answer"))]
    return "\n".join(lines) + "\n"


def _field(label: str, value: str | None) -> str:
    shown = "(none)" if value is None else literal(value, 1000)
    pad = " " * (len(label) + 4)
    return f"  {label}: " + shown.replace("\n", "\n" + pad)
