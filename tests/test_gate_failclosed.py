"""The gate fails closed on what it cannot trust (issue 14): a number that is not finite or counts that do not
add up, a record made with another version of a task than the installed one, an incomplete record — each a
failure (exit 1) with its own message — and a threshold that is not a finite number in [0, 1] (exit 2, naming
the file and field when it comes from gate.yaml or pyproject.toml)."""

from __future__ import annotations

import copy
import json
import math
import textwrap
from pathlib import Path

import pytest
from conftest import TASKS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkit.discovery.registry import load_path
from evalkit.errors import ConfigError, ExitCode
from evalkit.gate import GateConfig, Rule, judge, load_gate
from evalkit.models.oracle import OracleBackend
from evalkit.run.record import RunRecord, load_record
from evalkit.run.runner import evaluate

ADDITION = load_path(TASKS / "addition.py")[0]
NAN, INF = float("nan"), float("inf")
Z95 = 1.959963984540054  # the normal quantile at 0.975


def wilson(passes: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval, written out here (not taken from evalkit.run.stats)."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = passes / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> RunRecord:
    """The oracle on addition: 20 of 20 (rate 1.0, Wilson 83.9 %–100 %), made with the installed version 2."""
    return evaluate(tasks=[ADDITION], backend=OracleBackend(), n=20, run_dir=tmp_path_factory.mktemp("r") / "good")


def entry(data: dict) -> dict:
    return data["tasks"][0]


INSTALLED = {"addition": 2}
RULE = Rule(min_pass_rate=0.5)  # the good record passes it on the rate and on the lower bound

# (case, how the record is spoiled, the rule, the installed versions, what the gate must say)
RECORD_CASES = [
    ("rate NaN", lambda d: entry(d).update(rate=NAN), RULE, INSTALLED, "not a finite number in [0, 1]: rate nan"),
    ("rate +Infinity", lambda d: entry(d).update(rate=INF), RULE, INSTALLED, "rate inf"),
    ("rate above 1", lambda d: entry(d).update(rate=1.5), RULE, INSTALLED, "rate 1.5"),
    ("lower bound NaN", lambda d: entry(d).update(low=NAN), Rule(min_pass_rate=0.5, use_lower_bound=True), INSTALLED,
     "low nan"),
    ("upper bound -Infinity", lambda d: entry(d).update(high=-INF), RULE, INSTALLED, "high -inf"),
    ("target NaN, no min_pass_rate", lambda d: entry(d).update(target=NAN), Rule(), INSTALLED, "target nan"),
    ("passes 0 but rate 1.0", lambda d: entry(d).update(passes=0), RULE, INSTALLED,
     "counts do not add up: rate 100.0% but 0 passes of 20 samples"),
    ("more passes than samples", lambda d: entry(d).update(passes=25), RULE, INSTALLED,
     "25 passes + 0 errors + 0 timeouts > 20 samples"),
    ("errors on top of all passes", lambda d: entry(d).update(errors=1), RULE, INSTALLED,
     "20 passes + 1 errors + 0 timeouts > 20 samples"),
    ("no examples behind the samples", lambda d: entry(d).update(n_examples=0), RULE, INSTALLED,
     "0 examples for 20 samples"),
    ("negative sample count", lambda d: entry(d).update(n_samples=-20), RULE, INSTALLED,
     "counts are not whole numbers >= 0: n_samples -20"),
    ("sample count as text", lambda d: entry(d).update(n_samples="20"), RULE, INSTALLED, "n_samples '20'"),
    ("sample count NaN", lambda d: entry(d).update(n_samples=NAN), RULE, INSTALLED, "n_samples nan"),
    ("forged interval", lambda d: entry(d).update(low=0.99), Rule(min_pass_rate=0.5, use_lower_bound=True), INSTALLED,
     "the interval 99.0%–100.0% is not the 95% Wilson interval of 20 passes of 20 samples (83.9%–100.0%)"),
    ("incomplete record", lambda d: d.update(complete=False), RULE, INSTALLED, "the record is incomplete"),
    ("no completeness flag", lambda d: d.pop("complete"), RULE, INSTALLED, "the record is incomplete"),
    ("task twice in the record", lambda d: d["tasks"].append(copy.deepcopy(entry(d))), RULE, INSTALLED,
     "holds task 'addition' more than once"),
    ("made with an older version", lambda d: entry(d).update(version=1), RULE, INSTALLED,
     "made with version 1 of the task, the installed task is version 2"),
    ("installed task is newer", lambda d: None, RULE, {"addition": 3},
     "made with version 2 of the task, the installed task is version 3"),
    ("task not installed", lambda d: None, RULE, {}, "task is not installed here"),
]


@pytest.mark.parametrize("case,spoil,rule,installed,message", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_a_record_it_cannot_trust_fails_with_its_own_message(good, case, spoil, rule, installed, message):
    assert judge(good, GateConfig({"addition": rule}), INSTALLED).passed  # the unspoiled record passes this rule
    data = copy.deepcopy(good.data)
    spoil(data)
    result = judge(RunRecord(data), GateConfig({"addition": rule}), installed)
    assert result.exit_code is ExitCode.FAILED, result
    [outcome] = result.outcomes
    assert any(message in reason for reason in outcome.reasons), outcome.reasons


def test_each_case_has_a_message_of_its_own(good):
    said = set()
    for _case, spoil, rule, installed, _ in RECORD_CASES:
        data = copy.deepcopy(good.data)
        spoil(data)
        said.add(judge(RunRecord(data), GateConfig({"addition": rule}), installed).outcomes[0].reasons)
    assert len(said) == len(RECORD_CASES)


def test_allow_version_mismatch_judges_the_numbers_anyway(good):
    data = copy.deepcopy(good.data)
    entry(data)["version"] = 1
    older = RunRecord(data)
    assert judge(older, GateConfig({"addition": RULE}), {}, allow_version_mismatch=True).passed
    assert not judge(older, GateConfig({"addition": Rule(min_pass_rate=1.0, use_lower_bound=True)}), {},
                     allow_version_mismatch=True).passed
    entry(data)["rate"] = NAN  # numbers are never let through
    assert not judge(RunRecord(data), GateConfig({"addition": RULE}), {}, allow_version_mismatch=True).passed


def test_installed_tasks_as_a_registry_tasks_or_the_project(good):
    from evalkit.discovery.registry import Registry

    for installed in (Registry([ADDITION]), [ADDITION], INSTALLED, None):  # None: the project's tasks/ (v2)
        assert judge(good, GateConfig({"addition": RULE}), installed).passed, installed
    assert "not installed" in judge(good, GateConfig({"addition": RULE}), Registry()).outcomes[0].reasons[0]


@pytest.mark.parametrize("rule,config,message", [
    (Rule(min_pass_rate=NAN), {}, "min_pass_rate nan is not a finite number in [0, 1]"),
    (Rule(min_pass_rate=INF), {}, "min_pass_rate inf"),
    (Rule(min_pass_rate=-0.1), {}, "min_pass_rate -0.1"),
    (Rule(min_pass_rate=0.5, max_error_rate=NAN), {}, "max_error_rate nan"),
    (Rule(min_pass_rate=0.5, max_error_rate=2.0), {}, "max_error_rate 2.0"),
    (RULE, {"alpha": NAN}, "alpha nan is not a number in (0, 1)"),
])
def test_a_threshold_that_is_not_a_finite_number_is_a_configuration_failure(good, rule, config, message):
    result = judge(good, GateConfig({"addition": rule}, **config), INSTALLED)
    assert result.exit_code is ExitCode.USAGE
    assert any(message in r for o in result.outcomes for r in o.reasons), result.outcomes


@pytest.mark.parametrize("yaml_text,field", [
    ("tasks:\n  addition: {min_pass_rate: .nan}\n", "tasks.addition.min_pass_rate"),
    ("tasks:\n  addition: {min_pass_rate: .inf}\n", "tasks.addition.min_pass_rate"),
    ("tasks:\n  addition: {min_pass_rate: -.inf}\n", "tasks.addition.min_pass_rate"),
    ("tasks:\n  addition: {max_error_rate: .NaN}\n", "tasks.addition.max_error_rate"),
    ("tasks:\n  addition:\ndefaults: {max_error_rate: .nan}\n", "defaults.max_error_rate"),
    ("tasks:\n  addition:\nalpha: .nan\n", "alpha"),
    ("tasks:\n  addition:\nrun: {temperature: .inf}\n", "run.temperature"),
])
def test_non_finite_numbers_in_gate_yaml_are_refused_naming_the_field(tmp_path, yaml_text, field):
    (tmp_path / "gate.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_gate(tmp_path / "gate.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'gate.yaml'}: field '{field}': expected a finite number")


def test_cli_gate_config_problems_exit_2_naming_file_and_field(run_cli, good, tmp_path):
    (tmp_path / "gate.yaml").write_text("tasks:\n  addition: {min_pass_rate: .nan}\n")
    out = run_cli("gate", str(good.path), "--config", str(tmp_path / "gate.yaml"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "gate.yaml: field 'tasks.addition.min_pass_rate': expected a finite number" in out.stderr
    (tmp_path / "pyproject.toml").write_text("[tool.evalkit.gate.tasks.addition]\nmax_error_rate = nan\n")
    toml = run_cli("gate", str(good.path), cwd=tmp_path)
    assert toml.returncode == 2, toml.stdout + toml.stderr
    assert "pyproject.toml: [tool.evalkit.gate]: field 'tasks.addition.max_error_rate'" in toml.stderr
    assert "Traceback" not in out.stderr + toml.stderr


def _write_record(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps(data))  # NaN and Infinity as Python's json writes them
    return folder


@pytest.mark.parametrize("case,spoil,code,message", [
    ("rate NaN", lambda d: entry(d).update(rate=NAN), 2, "field 'tasks.0.rate': expected a finite number, got"),
    ("lower bound Infinity", lambda d: entry(d).update(low=INF), 2, "field 'tasks.0.low': expected a finite number"),
    ("target NaN", lambda d: entry(d).update(target=NAN), 2, "field 'tasks.0.target': expected a finite number"),
    ("passes 0 but rate 1.0", lambda d: entry(d).update(passes=0), 1, "counts do not add up"),
    ("incomplete", lambda d: d.update(complete=False), 1, "the record is incomplete"),
    ("made with version 1", lambda d: entry(d).update(version=1), 1, "made with version 1 of the task"),
])
def test_cli_gate_on_a_spoiled_record_file(run_cli, good, tmp_path, case, spoil, code, message):
    data = copy.deepcopy(good.data)
    spoil(data)
    run = _write_record(tmp_path / "run", data)
    (tmp_path / "gate.yaml").write_text("tasks:\n  addition: {min_pass_rate: 0.5}\n")
    out = run_cli("gate", str(run), "--config", str(tmp_path / "gate.yaml"), "--tasks-dir", str(TASKS / "addition.py"))
    assert out.returncode == code, out.stdout + out.stderr
    assert message in (out.stdout + out.stderr).replace("\n", " "), out.stdout + out.stderr
    if code == 2:  # a record file holding NaN or Infinity is not a record, for every command that reads one
        with pytest.raises(ConfigError, match="expected a finite number"):
            load_record(run)


TASK_V = textwrap.dedent('''
    from evalkit import task, verdict

    @task(name="echo", version={version}, target=0.9)
    class Echo:
        def rows(self):
            return [{{"q": str(i)}} for i in range(12)]
        def prompt(self, ex):
            return ex["q"]
        def reference(self, ex):
            return ex["q"]
        def check(self, ex, answer):
            return verdict(answer == ex["q"])
''')


def test_cli_gate_checks_the_installed_version(run_cli, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "echo.py").write_text(TASK_V.format(version=1))
    evaluate(tasks=load_path(tasks / "echo.py"), backend=OracleBackend(), run_dir=tmp_path / "run")
    args = ("gate", str(tmp_path / "run"), "--tasks-dir", str(tasks), "--task-targets")  # not the repo's gate.yaml
    same = run_cli(*args)
    assert same.returncode == 0 and "gate passed" in same.stdout, same.stdout + same.stderr
    (tasks / "echo.py").write_text(TASK_V.format(version=2))  # the task changed since the run
    newer = run_cli(*args)
    assert newer.returncode == 1, newer.stdout + newer.stderr
    assert "made with version 1 of the task, the installed task is version 2" in newer.stdout.replace("\n", " ")
    allowed = run_cli(*args, "--allow-version-mismatch")
    assert allowed.returncode == 0 and "gate passed" in allowed.stdout, allowed.stdout + allowed.stderr
    gone = run_cli("gate", str(tmp_path / "run"), "--tasks-dir", str(TASKS / "addition.py"), "--task-targets")
    assert gone.returncode == 1 and "not installed here" in gone.stdout.replace("\n", " "), gone.stdout


def _task_entry(n: int, passes: int, errors: int, timeouts: int, target: float | None) -> dict:
    low, high = wilson(passes, n)
    return {"n_samples": n, "n_examples": n, "passes": passes, "errors": errors, "timeouts": timeouts,
            "rate": passes / n, "low": low, "high": high, "target": target}


counts = st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n)).flatmap(
    lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.integers(0, t[0] - t[1])).flatmap(
        lambda u: st.tuples(st.just(u[0]), st.just(u[1]), st.just(u[2]), st.integers(0, u[0] - u[1] - u[2])))))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(counts=counts, threshold=st.floats(0, 1), lower=st.booleans(), max_error=st.floats(0, 1),
       spoil=st.sampled_from([None, "rate", "low", "high", "target", "passes"]),
       bad=st.sampled_from([NAN, INF, -INF]))
def test_exit_0_only_on_finite_consistent_numbers_that_meet_the_rule(good, counts, threshold, lower, max_error,
                                                                      spoil, bad):
    n, passes, errors, timeouts = counts
    data = copy.deepcopy(good.data)
    data["tasks"][0].update(_task_entry(n, passes, errors, timeouts, threshold))
    if spoil == "passes":
        data["tasks"][0]["passes"] = (passes + 1) % (n + 1)  # another count, the rate unchanged
    elif spoil is not None:
        data["tasks"][0][spoil] = bad
    result = judge(RunRecord(data), GateConfig({"addition": Rule(use_lower_bound=lower, max_error_rate=max_error)}),
                   INSTALLED)
    low = wilson(passes, n)[0]
    meets = (low if lower else passes / n) >= threshold - 1e-12 and (errors + timeouts) / n <= max_error + 1e-12
    assert result.passed == (spoil is None and meets)
    if spoil is not None:
        assert result.exit_code is ExitCode.FAILED
