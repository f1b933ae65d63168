"""An experiment's summary document: every trial in plan order, and what the finished ones say.

For a ladder, the stop rule's decision (with the paired test between neighbouring trials); for an
ablation, each trial's verdict against the full mixture. `write_summary` writes summary.json
atomically (and summary.md / summary.html at the end, drawn by evalkit.experiment.report).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evalkit.errors import ExitCode
from evalkit.experiment.plan import Experiment, LadderPoint, ablation_verdicts, decide_ladder
from evalkit.experiment.report import render_html, render_markdown
from evalkit.run.record import atomic_write

SUMMARY_VERSION = 1


def now() -> str:
    """The current UTC time, to the second (ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_summary(exp: Experiment, folder: Path, results: dict[str, dict[str, Any]], *, executor: str,
                  ) -> dict[str, Any]:
    """The summary document: every trial in plan order (links relative to the folder) and the analysis."""
    from evalkit.run.record import load_record

    trials = []
    for i, plan in enumerate(exp.trials):
        r = dict(results.get(plan.name) or {"status": "pending"})
        r.update(name=plan.name, index=i, value=plan.value, role=plan.role or None, source=plan.source,
                 change=plan.change or None, overrides=plan.overrides)
        if r["status"] == "done":
            r["record"] = f"trials/{plan.name}/record.json"
            r["report"] = f"trials/{plan.name}/report.html"
        trials.append(r)
    doc: dict[str, Any] = {"schema_version": SUMMARY_VERSION, "kind": f"evalkit.experiment.{exp.kind}",
                           "experiment": exp.name, "description": exp.description, "file": str(exp.file),
                           "recipe": str(exp.recipe), "folder": str(folder), "updated_at": now(),
                           "executor": executor, "axis": exp.axis, "trials": trials}
    records = {t["name"]: load_record(folder / t["record"]) for t in trials if t["status"] == "done"}
    if exp.kind == "ladder":
        doc["ladder"] = ladder_summary(exp, trials, records)
    else:
        doc["ablation"] = ablation_summary(exp, trials, records)
    return doc


def ladder_summary(exp: Experiment, trials: list[dict[str, Any]], records: dict[str, Any]) -> dict[str, Any]:
    from evalkit.run.runner import compare_records

    rule = exp.stop
    assert rule is not None
    points: list[LadderPoint] = []
    for t in trials:  # the contiguous finished prefix, in plan order
        if t["status"] == "pending":
            break
        if t["status"] != "done":
            points.append(LadderPoint(t["name"], 0.0, 0.0, failed=t.get("error") or "unknown error"))
            break
        measured = [r["low"] if rule.measure == "lower_bound" else r["rate"] for r in t["rates"].values()]
        cost = {"flops": t["flops"], "wall_s": t["wall_s"], "axis": t.get("value") or 0.0}[rule.cost]
        better = p_value = None
        if points:
            comps = compare_records(records[points[-1].name], records[t["name"]], alpha=rule.alpha)
            if comps:
                better = any(c.verdict == "better" for c in comps.values()) and \
                    not any(c.verdict == "worse" for c in comps.values())
                p_value = min(c.p_value for c in comps.values())
                t["paired_vs_previous"] = {k: c.to_dict() for k, c in comps.items()}
        t["measured"] = sum(measured) / len(measured) if measured else 0.0
        points.append(LadderPoint(t["name"], t["measured"], float(cost), bool(t.get("targets_met")), None,
                                  better, p_value))
    label = {"flops": "training FLOPs", "wall_s": "wall time", "axis": exp.axis}[rule.cost]
    decision = decide_ladder(points, rule, planned=len(trials), cost_label=label)
    names = [t["name"] for t in trials]
    if decision.stop and decision.stopped_at in names:
        for t in trials[names.index(decision.stopped_at) + 1:]:
            if t["status"] == "done":
                t["after_stop"] = True  # ran in parallel before the stop was known; not part of the decision
    return {"stop_rule": rule.__dict__, "decision": decision.to_dict()}


def ablation_summary(exp: Experiment, trials: list[dict[str, Any]], records: dict[str, Any]) -> dict[str, Any]:
    plans = {p.name: p for p in exp.trials}
    full = next((t for t in trials if t["role"] == "full"), None)
    verdicts: list[dict[str, Any]] = []
    if full is not None and full["name"] in records:
        variants = {t["name"]: (plans[t["name"]], records[t["name"]]) for t in trials
                    if t["role"] != "full" and t["name"] in records}
        verdicts = ablation_verdicts(records[full["name"]], variants, exp.alpha)
    complete = all(t["status"] != "pending" for t in trials)
    out = {"alpha": exp.alpha, "baseline": "full", "complete": complete, "verdicts": verdicts}
    steps = {t["name"]: t.get("steps") for t in trials if t["status"] == "done"}
    if len(set(steps.values())) > 1:  # e.g. budget.max_minutes ended some trials early
        out["warning"] = ("the trials trained different numbers of steps (" + ", ".join(
            f"{k} {v}" for k, v in steps.items()) + "): the comparison is not at an equal budget")
    return out


def write_summary(folder: Path, summary: dict[str, Any], *, final: bool = False) -> None:
    """summary.json (atomically) always; summary.md and summary.html too when `final`."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    if final:
        atomic_write(folder / "summary.md", render_markdown(summary))
        atomic_write(folder / "summary.html", render_html(summary))


def exit_code(summary: dict[str, Any]) -> ExitCode:
    """0 when every trial the experiment needed finished; 3 when one failed (an internal error)."""
    failed = any(t["status"] == "failed" for t in summary["trials"])
    return ExitCode.INTERNAL if failed else ExitCode.OK


__all__ = ["SUMMARY_VERSION", "build_summary", "exit_code", "now", "write_summary"]
