"""Experiments: one recipe run as several trials, compared with the checkers.

    evalkit experiment finetune/ladder.yaml              # sizes, smallest first; stop when growing stops paying
    evalkit experiment finetune/ablation.yaml --jobs 2   # each data source left out, trials in parallel
    evalkit experiment finetune/ladder.yaml --resume     # after a kill: finished trials are not re-run

An experiment file (schema: evalkit/schemas/experiment.schema.json) names a base recipe and either

* a **ladder**: trials in order (`param` + `values`, or named `trials` with recipe overrides). After each
  trial the ladder compares the pass rate gained with the cost of the step up and stops climbing when
  the gain per doubling of cost falls under `stop.min_gain_per_doubling`, or as soon as a trial meets
  every target (see `decide_ladder`); or
* an **ablation**: the full mixture, the mixture without each data source, and optional mixture weights,
  all with the same seed and step budget, each compared with the full mixture by the runner's paired
  test (exact McNemar) on the same held-out examples (see `ablation_verdicts`).

Every trial is an ordinary fine-tune run (`finetune(recipe, overrides=...)`). Compute per trial
(documented in `evalkit.experiment.measure`): parameters counted from the exported weights; tokens
= steps × rows per step × mean tokens per training row; FLOPs ≈ 6 × parameters × tokens.

This module is the plan and the decisions (pure: no training here); `runner.run_experiment` runs the
trials (`trials`: in this process, in processes, on Ray), `summary` compares them, `report` draws them.

Experiment folder (default `reports/<experiment name>/`):
    trials/<trial>/       an ordinary fine-tune output (record.json, report.html, model/, evals/, ...)
    trials/<trial>/trial.json   the trial's overrides, configuration hash and compute estimate
    summary.json          every trial (links to its record), the comparisons and the decision
    summary.md, summary.html    the table, links to each trial's report and record, the plot
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError

# Pass-rate verdicts of the paired test (stats.PairedComparison.verdict), as seen from the source left out.
HELPS, HURTS, NO_DIFFERENCE = "helps", "hurts", "no significant difference"


@dataclass(frozen=True)
class StopRule:
    """When a ladder stops climbing (the `ladder.stop` section)."""

    min_gain_per_doubling: float
    cost: str = "flops"
    measure: str = "rate"
    require_significant: bool = False
    alpha: float = 0.05


@dataclass(frozen=True)
class TrialPlan:
    """One trial: a name, the overrides that make it from the base recipe, its place on the axis."""

    name: str
    overrides: dict[str, Any]
    value: float | None = None
    role: str = ""  # ablation: "full", "without", "weights"
    source: str | None = None  # ablation: the source left out
    change: str = ""  # ablation: what differs from the full mixture, in words


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file. `recipe` is absolute; trial overrides include the experiment's own."""

    file: Path
    name: str
    description: str
    kind: str  # "ladder" or "ablation"
    recipe: Path
    trials: tuple[TrialPlan, ...]
    output: Path | None
    axis: str = ""
    stop: StopRule | None = None
    alpha: float = 0.05
    raw: dict[str, Any] = field(default_factory=dict)


# -- loading -------------------------------------------------------------------------------------------

def _bare(exc: ConfigError) -> str:
    """A ConfigError's message without its 'file: field ...: ' prefix."""
    text = str(exc)
    prefix = (exc.file or "") + (f": field '{exc.field}'" if exc.file and exc.field else "")
    if exc.file and text.startswith(prefix + ": "):
        return text[len(prefix) + 2:]
    if exc.field and text.startswith(f"field '{exc.field}': "):
        return text[len(f"field '{exc.field}': "):]
    return text


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _slug(value: Any) -> str:
    text = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in str(value)).strip("-.")
    return text or "trial"


def _check_recipe(exp_file: Path, recipe: Path, overrides: dict[str, Any], where: str) -> Any:
    from evalkit.train.recipe import load_recipe

    try:
        return load_recipe(recipe, overrides)
    except ConfigError as exc:
        field_ = where + (f".{exc.field}" if exc.field and exc.field != "(top level)" else "")
        raise ConfigError(_bare(exc), file=exp_file, field=field_) from None


def load_experiment(path: Path | str) -> Experiment:
    """Read and validate an experiment file and every trial's recipe; ConfigError naming file and field."""
    from evalkit._yaml import read_yaml
    from evalkit.schemas import validate
    from evalkit.train.recipe import deep_merge, load_recipe

    path = Path(path).resolve()
    data = read_yaml(path, "experiment file")
    validate(data, "experiment", path)
    kinds = [k for k in ("ladder", "ablation") if k in data]
    if len(kinds) != 1:
        raise ConfigError("give exactly one of 'ladder' or 'ablation'", file=path,
                          field="ladder" if not kinds else "ablation")
    kind = kinds[0]
    recipe_path = (path.parent / data["recipe"]).resolve()
    if not recipe_path.is_file():
        raise ConfigError(f"recipe not found: {recipe_path} (paths are relative to the experiment file)",
                          file=path, field="recipe")
    load_recipe(recipe_path)  # the base recipe's own errors name the recipe file
    common = data.get("overrides") or {}
    base = _check_recipe(path, recipe_path, common, "overrides")
    spec = data[kind]
    if kind == "ladder":
        trials, axis = _ladder_trials(path, spec)
        s = spec["stop"]
        stop = StopRule(s["min_gain_per_doubling"], s.get("cost", "flops"), s.get("measure", "rate"),
                        s.get("require_significant", False), s.get("alpha", 0.05))
        if stop.cost == "flops" and getattr(base, "mode", "sft") != "sft":
            raise ConfigError(f"training FLOPs are estimated for SFT recipes only (mode is {base.mode}); use "
                              "stop.cost: wall_s", file=path, field="ladder.stop.cost")
        if stop.cost == "axis" and any(t.value is None for t in trials):
            raise ConfigError("stop.cost 'axis' needs a numeric value per trial (param + numeric values, or "
                              "trials[].value)", file=path, field="ladder.stop.cost")
        alpha = stop.alpha
    else:
        trials, axis, stop, alpha = _ablation_trials(path, spec, base), "data mixture", None, spec.get("alpha", 0.05)
    names = [t.name for t in trials]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"two trials share the name {dupes[0]!r}; give each a distinct name", file=path,
                          field="ladder.trials" if kind == "ladder" else "ablation.weights")
    planned = []
    for i, t in enumerate(trials):
        overrides = deep_merge(deep_merge(common, t.overrides), {"name": f"{data['name']}.{t.name}"})
        where = (f"ladder.trials.{i}.overrides" if "trials" in spec else f"ladder.values.{i}") if kind == "ladder" \
            else f"ablation ({t.name})"
        _check_recipe(path, recipe_path, overrides, where)
        planned.append(TrialPlan(t.name, overrides, t.value, t.role, t.source, t.change))
    return Experiment(file=path, name=data["name"], description=data.get("description", ""), kind=kind,
                      recipe=recipe_path, trials=tuple(planned),
                      output=Path(data["output"]) if data.get("output") else None, axis=axis, stop=stop,
                      alpha=alpha, raw=data)


def _ladder_trials(path: Path, spec: dict[str, Any]) -> tuple[list[TrialPlan], str]:
    has_values, has_trials = "values" in spec or "param" in spec, "trials" in spec
    if has_values == has_trials:
        raise ConfigError("give either param + values or trials", file=path,
                          field="ladder.trials" if has_trials else "ladder.values")
    if has_trials:
        return [TrialPlan(t["name"], t["overrides"], t.get("value")) for t in spec["trials"]], spec.get("axis", "size")
    if "param" not in spec or "values" not in spec:
        raise ConfigError("required field is missing", file=path,
                          field="ladder.values" if "param" in spec else "ladder.param")
    param = spec["param"]
    leaf = param.rsplit(".", 1)[-1]
    trials = [TrialPlan(f"{_slug(leaf)}-{_slug(v)}", _nested(param, v),
                        float(v) if isinstance(v, (int, float)) and v > 0 else None) for v in spec["values"]]
    return trials, spec.get("axis", param)


def _ablation_trials(path: Path, spec: dict[str, Any], base: Any) -> list[TrialPlan]:
    raw_sources = base.raw["data"]["sources"]
    names = [s["name"] for s in base.sources]
    fixed: dict[str, Any] = {}
    if spec.get("fixed_budget", True):
        # No early stop: `confirm` beyond the number of evaluations, and no patience.
        fixed = {"eval": {"confirm": base.max_steps // base.eval_every + 2, "patience": None}}
    trials = [TrialPlan("full", fixed, role="full", change="all sources")]
    leave = spec.get("leave_one_out", True)
    chosen = names if leave is True else ([] if leave is False else list(leave))
    for i, name in enumerate(chosen):
        if name not in names:
            raise ConfigError(f"no data source {name!r} in the recipe; sources: {', '.join(names)}", file=path,
                              field=f"ablation.leave_one_out.{i}")
    if chosen and len(names) < 2:
        raise ConfigError("leaving a source out needs a recipe with at least two data sources", file=path,
                          field="ablation.leave_one_out")
    for name in chosen:
        kept = [dict(src) for src, n in zip(raw_sources, names) if n != name]
        trials.append(TrialPlan(f"without-{_slug(name)}", {**fixed, "data": {"sources": kept}}, role="without",
                                source=name, change=f"without {name}"))
    for i, variant in enumerate(spec.get("weights") or []):
        sources = []
        for raw, n in zip(raw_sources, names):
            source = dict(raw)
            if n in variant["weights"]:
                source["weight"] = variant["weights"][n]
            sources.append(source)
        unknown = sorted(set(variant["weights"]) - set(names))
        if unknown:
            raise ConfigError(f"no data source {unknown[0]!r} in the recipe; sources: {', '.join(names)}", file=path,
                              field=f"ablation.weights.{i}.weights.{unknown[0]}")
        change = ", ".join(f"{n} weight {w:g}" for n, w in variant["weights"].items())
        trials.append(TrialPlan(variant["name"], {**fixed, "data": {"sources": sources}}, role="weights",
                                change=change))
    if len(trials) < 2:
        raise ConfigError("nothing to compare: leave a source out or give weight variants", file=path,
                          field="ablation")
    return trials


# -- the ladder's stop rule ------------------------------------------------------------------------------

@dataclass(frozen=True)
class LadderPoint:
    """What the stop rule needs from a finished trial.

    Attributes:
        measured: the mean over target tasks of the pass rate (or its lower bound, per `StopRule.measure`).
        cost: the trial's cost in the rule's unit (FLOPs, wall seconds or axis value).
        better: the paired test's answer to "is this trial better than the previous one?" (None: not run).
        p_value: that test's smallest p-value over tasks (for the reason text).
    """

    name: str
    measured: float
    cost: float
    targets_met: bool = False
    failed: str | None = None
    better: bool | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class LadderDecision:
    """The ladder's verdict so far: whether to stop, which trial to recommend, why; one step per climb."""

    stop: bool
    recommended: str | None
    reason: str
    steps: tuple[dict[str, Any], ...] = ()
    stopped_at: str | None = None  # the trial at which the rule stopped the ladder

    def to_dict(self) -> dict[str, Any]:
        return {"stop": self.stop, "recommended": self.recommended, "reason": self.reason,
                "stopped_at": self.stopped_at, "steps": list(self.steps)}


def _pts(x: float) -> str:
    return f"{x * 100:+.1f} points"


def decide_ladder(points: list[LadderPoint], rule: StopRule, *, planned: int | None = None,
                  cost_label: str = "compute") -> LadderDecision:
    """Apply the stop rule to the finished trials, in ladder order.

    Walking up from the smallest trial, the ladder stops at trial i when
      * trial i failed (recommend i-1); or
      * trial i meets every target (recommend i: the smallest size that does); or
      * gain_i = measured_i - measured_{i-1} <= 0 (recommend i-1); or
      * `require_significant` and the paired test does not find i better than i-1 (recommend i-1); or
      * gain_i / log2(cost_i / cost_{i-1}) < min_gain_per_doubling (recommend i-1: the step up did not pay).
    A step up that costs no more (cost ratio <= 1) and gains is always taken. When no trial stops the
    ladder, the last one is recommended ("the curve has not flattened").

    Args:
        points: the finished trials, smallest first (a contiguous prefix of the plan).
        planned: how many trials the plan has (to say whether the ladder is complete).
    """
    steps: list[dict[str, Any]] = []
    for i, p in enumerate(points):
        prev = points[i - 1] if i else None
        if p.failed:
            return LadderDecision(True, prev.name if prev else None, f"trial {p.name} failed: {p.failed}",
                                  tuple(steps), p.name)
        if p.targets_met:
            return LadderDecision(True, p.name, f"{p.name} is the smallest trial that meets every target",
                                  tuple(steps), p.name)
        if prev is None:
            continue
        gain = p.measured - prev.measured
        ratio = p.cost / prev.cost if prev.cost > 0 else math.inf
        doublings = math.log2(ratio) if ratio > 0 else -math.inf
        per = gain / doublings if doublings > 0 and math.isfinite(doublings) else (math.inf if gain > 0 else 0.0)
        step = {"from": prev.name, "to": p.name, "gain": gain, "cost_ratio": ratio,
                "gain_per_doubling": per if math.isfinite(per) else None, "better": p.better, "p_value": p.p_value}
        steps.append(step)
        if gain <= 0:
            return LadderDecision(True, prev.name, f"{p.name} did no better than {prev.name} ({_pts(gain)} for "
                                  f"{ratio:.3g}x the {cost_label}): the curve has flattened", tuple(steps), p.name)
        if rule.require_significant and p.better is False:
            return LadderDecision(True, prev.name, f"{p.name}'s gain over {prev.name} ({_pts(gain)}) is not "
                                  f"significant (paired test p = {p.p_value:.3g} > {rule.alpha:g})", tuple(steps),
                                  p.name)
        if per < rule.min_gain_per_doubling:
            return LadderDecision(True, prev.name, f"stepping up from {prev.name} to {p.name} gained {_pts(gain)} "
                                  f"for {ratio:.3g}x the {cost_label}: {_pts(per)} per doubling, under the "
                                  f"threshold of {_pts(rule.min_gain_per_doubling)[1:]}", tuple(steps), p.name)
    if not points:
        return LadderDecision(False, None, "no trial has finished yet")
    last = points[-1].name
    if planned is not None and len(points) < planned:
        return LadderDecision(False, last, "every step up so far paid for itself; climbing on", tuple(steps))
    reason = ("every step up paid for itself: the curve has not flattened within the ladder (consider larger "
              "trials)" if len(points) > 1 else "the only trial")
    return LadderDecision(True, last, reason, tuple(steps), last)


# -- the ablation's verdicts ------------------------------------------------------------------------------

def source_verdict(comparison_verdict: str) -> str:
    """What leaving a source out says about it: the mixture without it is worse -> the source helps."""
    return {"worse": HELPS, "better": HURTS}.get(comparison_verdict, NO_DIFFERENCE)


def ablation_verdicts(full: Any, variants: dict[str, tuple[TrialPlan, Any]], alpha: float = 0.05,
                      ) -> list[dict[str, Any]]:
    """Compare each variant with the full mixture on the same held-out examples (`runner.compare_records`).

    Args:
        full: the full mixture's RunRecord.
        variants: trial name -> (its plan, its RunRecord).

    Returns one entry per variant: the per-task paired comparisons (variant relative to full) and a
    verdict: for a source left out, "helps" when the mixture without it is significantly worse on some
    task and better on none, "hurts" in the opposite case, "mixed" when both, else "no significant
    difference"; for a weight variant, "better" / "worse" / "mixed" / "no significant difference".
    """
    from evalkit.run.runner import compare_records

    out = []
    for name, (plan, record) in variants.items():
        comparisons = compare_records(full, record, alpha=alpha)
        verdicts = {c.verdict for c in comparisons.values()}
        if plan.role == "without":
            per_task = {t: source_verdict(c.verdict) for t, c in comparisons.items()}
            kinds = set(per_task.values()) - {NO_DIFFERENCE}
            verdict = "mixed" if len(kinds) > 1 else (kinds.pop() if kinds else NO_DIFFERENCE)
        else:
            kinds = verdicts - {"no significant difference"}
            verdict = "mixed" if len(kinds) > 1 else (kinds.pop() if kinds else NO_DIFFERENCE)
        out.append({"trial": name, "role": plan.role, "source": plan.source, "verdict": verdict,
                    "comparisons": {t: c.to_dict() for t, c in comparisons.items()}})
    return out


__all__ = ["HELPS", "HURTS", "NO_DIFFERENCE", "Experiment", "LadderDecision", "LadderPoint", "StopRule", "TrialPlan",
           "ablation_verdicts", "decide_ladder", "load_experiment", "source_verdict"]
