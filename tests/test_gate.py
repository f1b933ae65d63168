"""The gate fails closed: a test matrix of every failure kind, plus a pass, with exact exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import TASKS

from evalkit.discovery.registry import load_path
from evalkit.errors import ExitCode
from evalkit.gate import GateConfig, Rule, judge, load_gate
from evalkit.models.oracle import OracleBackend
from evalkit.models.python import PythonCallableBackend
from evalkit.run.runner import evaluate

sys.path.insert(0, str(Path(__file__).parent))
from helpers.slow_model import adder

ADDITION = load_path(TASKS / "addition.py")[0]
REVERSE = load_path(TASKS / "reverse.py")[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    good = evaluate(tasks=[ADDITION, REVERSE], backend=OracleBackend(), n=100, run_dir=root / "good")
    half = evaluate(tasks=[ADDITION, REVERSE], backend=PythonCallableBackend(adder), n=100, run_dir=root / "half")
    return root, good, half


def write_gate(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gate.yaml"
    path.write_text(text)
    return path


def outcome(result, task):
    return next(o for o in result.outcomes if o.task == task)


def test_pass(runs, tmp_path):
    _, good, _ = runs
    result = judge(good, load_gate(write_gate(tmp_path, "tasks:\n  addition: {min_pass_rate: 0.95}\n  reverse:\n")))
    assert result.exit_code is ExitCode.OK and result.passed
    assert "pass rate 100.0% >= 95.0%" in outcome(result, "addition").reasons[0]


@pytest.mark.parametrize("gate_text,record,code,message", [
    ("tasks:\n  addition: {min_pass_rate: 0.9}\n", "half", ExitCode.FAILED, "pass rate"),
    ("tasks:\n  addition: {min_pass_rate: 0.98, use_lower_bound: true}\n", "good", ExitCode.FAILED,
     "95% lower bound 96.3% < 98.0%"),
    ("tasks:\n  addition:\n  countdown:\n", "good", ExitCode.FAILED, "required task is missing"),
    ("tasks:\n  addition:\nbaseline: nowhere/record.json\n", "good", ExitCode.USAGE, "baseline unreadable"),
    ("tasks:\n  addition: {no_regression: true}\n", "good", ExitCode.USAGE, "no baseline"),
    ("tasks:\n  addition:\nbaseline: GOOD\n", "half", ExitCode.FAILED, "significant regression"),
])
def test_fail_closed_matrix(runs, tmp_path, gate_text, record, code, message):
    root, good, half = runs
    gate_text = gate_text.replace("GOOD", str(root / "good"))
    result = judge({"good": good, "half": half}[record], load_gate(write_gate(tmp_path, gate_text)))
    assert result.exit_code is code
    assert any(message in r for o in result.outcomes for r in o.reasons), [o.reasons for o in result.outcomes]


def test_errors_above_tolerance_fail(tmp_path):
    def crashy(prompt: str) -> str:
        return "x" * 10

    from evalkit import Task, task, verdict

    @task(name="fragile", target=0.0)
    class Fragile:
        def rows(self):
            return [{"q": str(i)} for i in range(10)]

        def prompt(self, ex):
            return ex["q"]

        def check(self, ex, answer):
            if ex["q"] in "0123":
                raise RuntimeError("checker bug")
            return verdict(True)

    record = evaluate(tasks=[Task.from_decorated(Fragile)], backend=PythonCallableBackend(crashy))
    result = judge(record, GateConfig({"fragile": Rule(max_error_rate=0.2)}), [Fragile])
    assert result.exit_code is ExitCode.FAILED and "4 errors" in outcome(result, "fragile").reasons[0]
    assert judge(record, GateConfig({"fragile": Rule(max_error_rate=0.5)}), [Fragile]).passed


def test_no_threshold_is_a_configuration_failure():
    from evalkit import Task, task, verdict

    @task(name="untargeted")
    class Untargeted:
        def rows(self):
            return [{"q": "a"}]

        def prompt(self, ex):
            return ex["q"]

        def check(self, ex, answer):
            return verdict(True)

    record = evaluate(tasks=[Task.from_decorated(Untargeted)], backend=PythonCallableBackend(lambda p: "a"))
    result = judge(record, GateConfig({"untargeted": Rule()}), [Untargeted])
    assert result.exit_code is ExitCode.USAGE and "no threshold" in outcome(result, "untargeted").reasons[0]


def test_zero_examples_exit_5(runs):
    _, good, _ = runs
    data = json.loads(json.dumps(good.data))
    data["tasks"][0].update(n_samples=0, n_examples=0, passes=0, rate=0.0, low=0.0, high=1.0)
    from evalkit.run.record import RunRecord

    result = judge(RunRecord(data), GateConfig({"addition": Rule(min_pass_rate=0.5)}))
    assert result.exit_code is ExitCode.NO_TESTS and "zero examples" in result.outcomes[0].reasons[0]


def test_bad_gate_config_names_the_field(tmp_path):
    from evalkit import ConfigError

    with pytest.raises(ConfigError, match=r"field 'tasks.addition.min_pass_rate'.*<= 1"):
        load_gate(write_gate(tmp_path, "tasks:\n  addition: {min_pass_rate: 95}\n"))
    with pytest.raises(ConfigError, match=r"field 'tasks.addition.min_pass'.*unknown field"):
        load_gate(write_gate(tmp_path, "tasks:\n  addition: {min_pass: 0.9}\n"))


def test_exit_0_only_when_every_threshold_is_met(runs):
    """Meta-test: over many rule combinations, OK <=> every task's rate (or bound) meets its threshold."""
    _, good, half = runs
    for record in (good, half):
        for thr in (0.0, 0.3, 0.5, 0.7, 0.96, 1.0):
            for lower in (False, True):
                config = GateConfig({"addition": Rule(min_pass_rate=thr, use_lower_bound=lower),
                                     "reverse": Rule(min_pass_rate=thr, use_lower_bound=lower)})
                result = judge(record, config)
                met = all((t["low"] if lower else t["rate"]) >= thr for t in record.tasks)
                assert (result.exit_code is ExitCode.OK) == met


def test_cli_gate_on_run_and_on_model(run_cli, runs, tmp_path):
    root, _, _ = runs
    gate = write_gate(tmp_path, "tasks:\n  addition: {min_pass_rate: 0.9}\nrun: {n: 50}\n")
    ok = run_cli("gate", str(root / "good"), "--config", str(gate), "--junit", str(tmp_path / "g.xml"),
                 "--markdown", str(tmp_path / "g.md"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "gate passed" in ok.stdout and "✅" in (tmp_path / "g.md").read_text()
    import xml.etree.ElementTree as ET

    suite = ET.parse(tmp_path / "g.xml").getroot().find("testsuite")
    assert suite.get("tests") == "1" and suite.get("failures") == "0"
    bad = run_cli("gate", str(root / "half"), "--config", str(gate))
    assert bad.returncode == 1 and "gate FAILED" in bad.stdout
    fresh = run_cli("gate", "--model", "oracle", "--config", str(gate), "--reports-dir", str(tmp_path / "r"))
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    missing = run_cli("gate", str(tmp_path / "nothing-here"), "--config", str(gate))
    assert missing.returncode == 2 and "no run record" in missing.stderr


def test_gate_markdown_and_junit_show_untrusted_text_literally():
    """The gate's Markdown and JUnit come from evalkit.reports: one table row per task whatever a reason
    holds (newlines, pipes, markup, escape codes), and JUnit that parses."""
    import xml.etree.ElementTree as ET

    from evalkit.gate import GateResult, TaskOutcome, to_junit, to_markdown

    hostile = "baseline unreadable: a|b\n<script>alert(1)</script> \x1b[31m"
    result = GateResult((
        TaskOutcome("addition", ExitCode.OK, ("pass rate 100.0% >= 95.0%",), 1.0, 0.963, 1.0, 0.95),
        TaskOutcome("odd|<b>name", ExitCode.USAGE, (hostile,)),
        TaskOutcome("reverse", ExitCode.FAILED, ("pass rate 50.0% < 95.0%", "2 errors"), 0.5, 0.4, 0.6, 0.95),
    ), "run-1", "gate.yaml")
    md = to_markdown(result)
    assert md.startswith("## evalkit gate: ❌ failed (exit 2)\n") and "Run `run-1`, rules from `gate.yaml`." in md
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert len(rows) == 5 and all(row.replace("\\|", "").count("|") == 7 for row in rows)
    assert "| 100.0% | 96.3%–100.0% | 95.0% |" in rows[2] and "| — | — | — |" in rows[3]
    assert "<script>" not in md and "\x1b" not in md and "<b>" not in md
    suite = ET.fromstring(to_junit(result).encode()).find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["addition"].find("system-out").text == "pass rate 100.0% >= 95.0%"
    assert cases["reverse"].find("failure").get("message") == "pass rate 50.0% < 95.0%; 2 errors"
    error = cases["odd|<b>name"].find("error")
    assert "\\x1b[31m" in error.get("message") and error.text.endswith("</script> \\x1b[31m")


@pytest.mark.parametrize("run_section,passes,says", [
    ("run: {level: 3}", True, None),                      # the default level of addition is 3: what was measured
    ("run: {level: 2}", False, "the record measured level 3; the gate's run.level is 2"),
    ("run: {chat: false}", True, None),
    ("run: {chat: true}", False, "the record was made with raw prompts; the gate's run.chat says chat form"),
])
def test_a_record_made_at_other_settings_than_the_gates_run_fails(runs, tmp_path, run_section, passes, says):
    """The thresholds are for what `run:` describes: an easier level, or the other prompt form, is not it."""
    _, good, _ = runs
    config = load_gate(write_gate(tmp_path, f"tasks:\n  addition: {{min_pass_rate: 0.9}}\n{run_section}\n"))
    result = judge(good, config, [ADDITION, REVERSE])
    assert result.passed is passes
    if says:
        assert says in " ".join(outcome(result, "addition").reasons)
