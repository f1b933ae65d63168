"""The deploy gate: judge a run record against per-task rules. It fails closed.

A gate config (`gate.yaml`, or `[tool.evalkit.gate]` in pyproject.toml) names the gated
tasks and their rules: minimum pass rate (optionally on the interval's lower end), maximum
error rate, "no significant regression" against a baseline record, required tasks. Every
doubt is a failure with its own message and exit code: a missing task, zero examples,
errors above tolerance, an unreadable baseline, a task with no threshold — never exit 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError, ExitCode
from evalkit.reports import render_gate_junit, render_gate_markdown
from evalkit.run.record import RunRecord, load_record
from evalkit.run.stats import PairedComparison

# Which outcome wins when several tasks fail differently: the most severe first.
_SEVERITY = [ExitCode.INTERNAL, ExitCode.USAGE, ExitCode.NO_TESTS, ExitCode.FAILED, ExitCode.OK]


@dataclass(frozen=True)
class Rule:
    min_pass_rate: float | None = None
    use_lower_bound: bool = False
    max_error_rate: float = 0.0
    no_regression: bool | None = None
    required: bool = True


@dataclass(frozen=True)
class GateConfig:
    rules: dict[str, Rule]
    baseline: Path | None = None
    alpha: float = 0.05
    run: dict[str, Any] = field(default_factory=dict)
    source: str = "<defaults>"


@dataclass(frozen=True)
class TaskOutcome:
    task: str
    code: ExitCode
    reasons: tuple[str, ...]
    rate: float | None = None
    low: float | None = None
    high: float | None = None
    threshold: float | None = None

    @property
    def passed(self) -> bool:
        return self.code is ExitCode.OK


@dataclass(frozen=True)
class GateResult:
    outcomes: tuple[TaskOutcome, ...]
    run_id: str
    source: str

    @property
    def exit_code(self) -> ExitCode:
        codes = {o.code for o in self.outcomes} or {ExitCode.NO_TESTS}
        return next(c for c in _SEVERITY if c in codes)

    @property
    def passed(self) -> bool:
        return self.exit_code is ExitCode.OK


def _rule(data: dict[str, Any] | None, defaults: dict[str, Any]) -> Rule:
    merged = {**defaults, **(data or {})}
    return Rule(**merged)


def parse_gate(data: Any, source: Path | str, base_dir: Path) -> GateConfig:
    """Validate a gate mapping (schema `gate`) and build the config; paths relative to base_dir."""
    from evalkit.schemas import validate

    validate(data, "gate", Path(source))
    defaults = data.get("defaults", {})
    if "tasks" not in data:
        raise ConfigError("required field is missing: name the gated tasks", file=source, field="tasks")
    rules = {name: _rule(rule, defaults) for name, rule in data["tasks"].items()}
    baseline = (base_dir / data["baseline"]).resolve() if data.get("baseline") else None
    return GateConfig(rules, baseline, data.get("alpha", 0.05), data.get("run", {}), str(source))


def load_gate(path: Path | None = None, pyproject_table: dict[str, Any] | None = None,
              pyproject: Path | None = None) -> GateConfig:
    """A gate config from a YAML file, or else from `[tool.evalkit.gate]`."""
    if path is not None:
        from evalkit._yaml import read_yaml

        path = Path(path)
        return parse_gate(read_yaml(path, "gate config"), path, path.parent)
    if pyproject_table:
        return parse_gate(pyproject_table, f"{pyproject}: [tool.evalkit.gate]",
                          pyproject.parent if pyproject else Path.cwd())
    raise ConfigError("no gate config: pass --config gate.yaml or add [tool.evalkit.gate] to pyproject.toml",
                      field="--config")


def _load_baseline(config: GateConfig) -> tuple[RunRecord | None, str | None]:
    if config.baseline is None:
        return None, None
    try:
        return load_record(config.baseline), None
    except ConfigError as exc:
        return None, f"baseline unreadable: {exc}"


def judge(record: RunRecord, config: GateConfig) -> GateResult:
    """Apply every rule to the record; never raises for a bad record or baseline (those fail)."""
    baseline, baseline_error = _load_baseline(config)
    comparisons = {}
    if baseline is not None:
        from evalkit.run.runner import compare_records

        comparisons = compare_records(baseline, record, alpha=config.alpha)
    outcomes = []
    in_run = {t["name"]: t for t in record.tasks}
    for name, rule in config.rules.items():
        t = in_run.get(name)
        if t is None:
            if rule.required:
                outcomes.append(TaskOutcome(name, ExitCode.FAILED, ("required task is missing from the run",)))
            continue
        outcomes.append(_judge_task(t, rule, baseline_error, comparisons.get(name), config.baseline is not None))
    if not config.rules:
        outcomes.append(TaskOutcome("(gate)", ExitCode.USAGE, ("the gate names no tasks",)))
    return GateResult(tuple(outcomes), record.run_id, config.source)


def _judge_task(t: dict[str, Any], rule: Rule, baseline_error: str | None,
                comparison: PairedComparison | None, has_baseline: bool) -> TaskOutcome:
    name, n = t["name"], t["n_samples"]
    if n == 0:
        return TaskOutcome(name, ExitCode.NO_TESTS, ("zero examples were evaluated",))
    problems: list[tuple[ExitCode, str]] = []
    notes: list[str] = []
    threshold = rule.min_pass_rate if rule.min_pass_rate is not None else t.get("target")
    rate, low, high = t["rate"], t["low"], t["high"]
    if threshold is None:
        problems.append((ExitCode.USAGE, "no threshold: set min_pass_rate in the gate or a target on the task"))
    else:
        measured, what = (low, "95% lower bound") if rule.use_lower_bound else (rate, "pass rate")
        if measured + 1e-12 < threshold:
            problems.append((ExitCode.FAILED, (f"{what} {measured:.1%} < {threshold:.1%} "
                                               f"(rate {rate:.1%}, 95% CI {low:.1%}–{high:.1%}, n={n})")))
        else:
            notes.append(f"{what} {measured:.1%} >= {threshold:.1%} (95% CI {low:.1%}–{high:.1%}, n={n})")
    bad = t["errors"] + t["timeouts"]
    if bad / n > rule.max_error_rate + 1e-12:
        problems.append((ExitCode.FAILED, (f"{t['errors']} errors + {t['timeouts']} timeouts = {bad / n:.1%} of "
                                           f"samples > allowed {rule.max_error_rate:.1%}")))
    check_regression = rule.no_regression if rule.no_regression is not None else has_baseline
    if check_regression:
        if baseline_error:
            problems.append((ExitCode.USAGE, baseline_error))
        elif not has_baseline:
            problems.append((ExitCode.USAGE, "no_regression is set but the gate has no baseline"))
        elif comparison is None:
            problems.append((ExitCode.FAILED, "baseline shares no examples of this task with the run"))
        elif comparison.verdict == "worse":
            problems.append((ExitCode.FAILED, (f"significant regression vs baseline: {comparison.rate_a:.1%} → "
                                               f"{comparison.rate_b:.1%} (p={comparison.p_value:.3g}, "
                                               f"{comparison.only_a} newly failing)")))
        else:
            notes.append(f"vs baseline: {comparison.verdict} ({comparison.rate_a:.1%} → {comparison.rate_b:.1%}, "
                         f"p={comparison.p_value:.3g})")
    if problems:
        code = next(c for c in _SEVERITY if c in {p[0] for p in problems})
        return TaskOutcome(name, code, tuple(p[1] for p in problems), rate, low, high, threshold)
    return TaskOutcome(name, ExitCode.OK, tuple(notes), rate, low, high, threshold)


def default_config_for(record: RunRecord) -> GateConfig:
    """Without a config: every task of the run must meet its own target."""
    return GateConfig({t["name"]: Rule() for t in record.tasks}, source="task targets")


def to_markdown(result: GateResult) -> str:
    """The result as Markdown (a PR comment, $GITHUB_STEP_SUMMARY): see evalkit.reports.render_gate_markdown."""
    return render_gate_markdown(result)


def to_junit(result: GateResult) -> str:
    """The result as JUnit XML, one testcase per gated task: see evalkit.reports.render_gate_junit."""
    return render_gate_junit(result)
