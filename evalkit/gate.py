"""The deploy gate: judge a run record against per-task rules. It fails closed.

A gate config (`gate.yaml`, or `[tool.evalkit.gate]` in pyproject.toml) names the gated
tasks and their rules: minimum pass rate (optionally on the interval's lower end), maximum
error rate, "no significant regression" against a baseline record, required tasks. Every
doubt is a failure with its own message and exit code: a missing task, zero examples,
errors above tolerance, an unreadable baseline, a task with no threshold, an incomplete
record, a number that is not finite or counts that do not add up, a record made with another
version of a task than the one installed — never exit 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from evalkit.core.task import TaskLike, as_task
from evalkit.discovery.registry import Registry
from evalkit.errors import ConfigError, ExitCode
from evalkit.reports import render_gate_junit, render_gate_markdown
from evalkit.run.record import RunRecord, load_record
from evalkit.run.stats import PairedComparison, wilson_interval
from evalkit.schemas import is_finite_number

# Which outcome wins when several tasks fail differently: the most severe first.
_SEVERITY = [ExitCode.INTERNAL, ExitCode.USAGE, ExitCode.NO_TESTS, ExitCode.FAILED, ExitCode.OK]

Installed: TypeAlias = Registry | Mapping[str, int] | Iterable[TaskLike]
"""The installed tasks a record's task versions are checked against: a Registry, {name: version}, or tasks."""

_MISMATCH_HINT = "rerun it with the installed task, or pass --allow-version-mismatch (allow_version_mismatch=True)"


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
    """Validate a gate mapping (schema `gate`) and build the config; paths relative to base_dir.

    Thresholds must be finite numbers in [0, 1] (`.nan`, `.inf`, TOML's `nan` are ConfigErrors naming the field).
    """
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
        baseline = load_record(config.baseline)
    except ConfigError as exc:
        return None, f"baseline unreadable: {exc}"
    if baseline.data.get("complete") is not True:
        return None, f"baseline {config.baseline} is an incomplete record (complete: false)"
    return baseline, None


def _project_registry() -> Registry:
    """The project's tasks, found as `evalkit gate` finds them without --tasks-dir."""
    from evalkit.config import load_config
    from evalkit.discovery.registry import discover

    config = load_config()
    return discover(config.tasks, fallback_to_bundled=not config.tasks_configured)


def _installed_versions(installed: Installed | None, names: list[str]) -> dict[str, int | None]:
    """{name: installed version, or None when no such task is installed} for the gated tasks of the record."""
    if not names:
        return {}
    if installed is None:
        installed = _project_registry()
    if isinstance(installed, Registry):
        return {n: installed.get(n).version if n in installed else None for n in names}
    if isinstance(installed, Mapping):
        return {n: installed.get(n) for n in names}
    versions = {t.name: t.version for t in map(as_task, installed)}
    return {n: versions.get(n) for n in names}


def judge(record: RunRecord, config: GateConfig, installed: Installed | None = None, *,
          allow_version_mismatch: bool = False) -> GateResult:
    """Apply every rule to the record; never raises for a bad record or baseline (those fail).

    Args:
        installed: the tasks whose versions the record's must equal (a Registry, {name: version}, or Task
            objects / @task classes); None: the project's tasks (task folders and entry points), found once.
        allow_version_mismatch: judge a record made with another version of a task than the installed one
            (`--allow-version-mismatch`); otherwise that task fails, as does one that is not installed.
    """
    outcomes = []
    if not (is_finite_number(config.alpha) and 0 < config.alpha < 1):
        outcomes.append(TaskOutcome("(gate)", ExitCode.USAGE, (f"alpha {config.alpha!r} is not a number in (0, 1)",)))
    baseline, baseline_error = _load_baseline(config)
    comparisons = {}
    if baseline is not None and not outcomes:
        from evalkit.run.runner import compare_records

        comparisons = compare_records(baseline, record, alpha=config.alpha)
    entries = record.data.get("tasks")
    in_run: dict[str, dict[str, Any]] = {}
    twice = set()
    for t in entries if isinstance(entries, list) else []:
        name = str(t.get("name")) if isinstance(t, dict) else None
        if name is not None:
            if name in in_run:
                twice.add(name)
            in_run[name] = t
    gated = [name for name in config.rules if name in in_run]
    versions = {} if allow_version_mismatch else _installed_versions(installed, gated)
    flag = record.data.get("complete")
    incomplete = (None if flag is True else "no 'complete' field" if flag is None
                  else f"complete: {json.dumps(flag, default=str)}")
    for name, rule in config.rules.items():
        t = in_run.get(name)
        if t is None:
            if rule.required:
                outcomes.append(TaskOutcome(name, ExitCode.FAILED, ("required task is missing from the run",)))
            continue
        record_problems = [f"the record holds task {name!r} more than once"] if name in twice else []
        if incomplete:
            record_problems.append(f"the record is incomplete ({incomplete}): an interrupted or unfinished run; "
                                   "finish it (the same command resumes it) before gating")
        if not allow_version_mismatch:
            record_problems += _version_problems(t, versions.get(name))
        record_problems += _number_problems(t) + _setting_problems(t, record.data.get("settings"), config.run)
        if record_problems:
            outcomes.append(TaskOutcome(name, ExitCode.FAILED, tuple(record_problems), *_shown(t)))
            continue
        outcomes.append(_judge_task(t, rule, baseline_error, comparisons.get(name), config.baseline is not None))
    if not config.rules:
        outcomes.append(TaskOutcome("(gate)", ExitCode.USAGE, ("the gate names no tasks",)))
    return GateResult(tuple(outcomes), str(record.data.get("run_id")), config.source)


def _shown(t: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """The record's rate and interval where they are finite numbers (a report shows — for the others)."""
    rate, low, high = (float(t[k]) if is_finite_number(t.get(k)) else None for k in ("rate", "low", "high"))
    return rate, low, high


def _version_problems(t: dict[str, Any], installed: int | None) -> list[str]:
    version = t.get("version")
    if installed is None:
        return [f"task is not installed here, so the record's version (v{version}) cannot be checked: install it, "
                "or pass --allow-version-mismatch (allow_version_mismatch=True)"]
    if version != installed:
        return [f"the record was made with version {version} of the task, the installed task is version "
                f"{installed}: {_MISMATCH_HINT}"]
    return []


def _setting_problems(t: dict[str, Any], settings: Any, run: Mapping[str, Any]) -> list[str]:
    """What the record measured against what the gate's `run:` section says it gates: a record made at another
    difficulty level, or in the other prompt form (chat or raw), does not measure what the thresholds are for."""
    problems = []
    level = run.get("level")
    measured = sorted(k for k in (t.get("per_level") or {}) if k not in ("None", "null"))
    if isinstance(level, int) and not isinstance(level, bool) and measured and measured != [str(level)]:
        problems.append(f"the record measured level {', '.join(measured)}; the gate's run.level is {level} "
                        "(rerun at that level, or gate with a config made for this one)")
    chat = run.get("chat")
    made = settings.get("chat", False) if isinstance(settings, dict) else None
    if isinstance(chat, bool) and made is not None and bool(made) != chat:
        forms = {True: "chat form (--chat)", False: "raw prompts"}
        problems.append(f"the record was made with {forms[bool(made)]}; the gate's run.chat says {forms[chat]}")
    return problems


def _adaptive_problems(t: dict[str, Any], block: dict[str, Any]) -> list[str]:
    """An adaptive task's block against its counts: the samples used are the record's, and a met/missed
    decision is the one the sequential test makes on those counts (evalkit.run.sequential.decide)."""
    from evalkit.run.sequential import decide, decide_mark

    if block.get("used") != t["n_samples"] or not 0 < t["n_samples"] <= block.get("cap", -1):
        return [f"the adaptive block does not add up: {block.get('used')!r} used of {block.get('cap')!r} for "
                f"{t['n_samples']} samples"]
    decision = block.get("decision")
    if decision in ("met", "missed") and is_finite_number(block.get("target")) and is_finite_number(block.get("alpha")):
        try:
            made = decide(t["passes"], t["n_samples"], float(block["target"]), float(block["alpha"]))
        except ValueError:
            made = None
        if made != decision:
            return [f"the adaptive decision {decision!r} is not what {t['passes']} passes of {t['n_samples']} "
                    f"samples give at alpha {block['alpha']} against {block['target']:.1%} ({made or 'undecided'})"]
        for mark in block.get("marks") or ():
            made = decide_mark(t["passes"], t["n_samples"], float(mark["at"]), float(block["alpha"]))
            if made != mark["decision"]:
                return [f"the adaptive mark {mark['at']:.1%} says {mark['decision']!r}, but {t['passes']} passes of "
                        f"{t['n_samples']} samples give {made!r} at alpha {block['alpha']}"]
    return []


def _number_problems(t: dict[str, Any]) -> list[str]:
    """What is wrong with a task entry's numbers: each a message; [] when they are finite and add up."""
    counts = {k: t.get(k) for k in ("n_samples", "n_examples", "passes", "errors", "timeouts")}
    bad = [f"{k} {v!r}" for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0]
    if bad:
        return [f"counts are not whole numbers >= 0: {', '.join(bad)}"]
    rates: dict[str, Any] = {k: t.get(k) for k in ("rate", "low", "high")}
    if t.get("target") is not None:
        rates["target"] = t["target"]
    bad = [f"{k} {v!r}" for k, v in rates.items() if not (is_finite_number(v) and 0 <= v <= 1)]
    if bad:
        return [f"not a finite number in [0, 1]: {', '.join(bad)}"]
    n, passes, rate, low, high = (t["n_samples"], t["passes"], t["rate"], t["low"], t["high"])
    problems = []
    if passes + t["errors"] + t["timeouts"] > n:
        problems.append(f"counts do not add up: {passes} passes + {t['errors']} errors + {t['timeouts']} timeouts "
                        f"> {n} samples")
    elif n and not 1 <= t["n_examples"] <= n:
        problems.append(f"counts do not add up: {t['n_examples']} examples for {n} samples")
    elif not math.isclose(rate, passes / n if n else 0.0, abs_tol=1e-9):
        problems.append(f"counts do not add up: rate {rate:.1%} but {passes} passes of {n} samples")
    elif isinstance(t.get("adaptive"), dict):
        problems += _adaptive_problems(t, t["adaptive"])
    if not problems:
        want_low, want_high = wilson_interval(passes, n)
        if not (math.isclose(low, want_low, abs_tol=1e-6) and math.isclose(high, want_high, abs_tol=1e-6)):
            problems.append(f"the interval {low:.1%}–{high:.1%} is not the 95% Wilson interval of {passes} passes "
                            f"of {n} samples ({want_low:.1%}–{want_high:.1%})")
    return problems


def _rule_problems(rule: Rule) -> list[str]:
    problems = []
    for what in ("min_pass_rate", "max_error_rate"):
        value = getattr(rule, what)
        if value is not None and not (is_finite_number(value) and 0 <= value <= 1):
            problems.append(f"{what} {value!r} is not a finite number in [0, 1]")
    return problems


def _judge_task(t: dict[str, Any], rule: Rule, baseline_error: str | None,
                comparison: PairedComparison | None, has_baseline: bool) -> TaskOutcome:
    """Apply one rule to one task entry whose numbers are finite and add up (checked before)."""
    name, n = t["name"], t["n_samples"]
    rate, low, high = t["rate"], t["low"], t["high"]
    if rule_problems := _rule_problems(rule):
        return TaskOutcome(name, ExitCode.USAGE, tuple(rule_problems), rate, low, high)
    if n == 0:
        return TaskOutcome(name, ExitCode.NO_TESTS, ("zero examples were evaluated",))
    problems: list[tuple[ExitCode, str]] = []
    notes: list[str] = []
    threshold = rule.min_pass_rate if rule.min_pass_rate is not None else t.get("target")
    if threshold is None:
        problems.append((ExitCode.USAGE, "no threshold: set min_pass_rate in the gate or a target on the task"))
    else:
        measured, what = (low, "95% lower bound") if rule.use_lower_bound else (rate, "pass rate")
        if measured + 1e-12 >= threshold:  # written so that anything not comparable fails
            notes.append(f"{what} {measured:.1%} >= {threshold:.1%} (95% CI {low:.1%}–{high:.1%}, n={n})")
        else:
            problems.append((ExitCode.FAILED, (f"{what} {measured:.1%} < {threshold:.1%} "
                                               f"(rate {rate:.1%}, 95% CI {low:.1%}–{high:.1%}, n={n})")))
    bad = t["errors"] + t["timeouts"]
    if not bad / n <= rule.max_error_rate + 1e-12:
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
