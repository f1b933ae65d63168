"""The pytest plugin: task files as test items, fixtures, JUnit, xdist — each in a real pytest subprocess."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import REPO, TASKS
from junitparser import Failure, JUnitXml

pytest_plugins = ["pytester"]

ADDER = "python:helpers.slow_model:adder"  # right on even sums only: addition ~50 %, every other task 0 %
ECHO_TASK = '''
from evalkit import task, verdict

@task(name="echo", version=1, tags=("mytag",))
class Echo:
    def generate(self, rng):       return {"w": str(rng.randrange(10**6))}
    def prompt(self, ex):          return f"echo {ex['w']}:"
    def reference(self, ex):       return ex["w"]
    def check(self, ex, answer):   return verdict(answer == ex["w"])
'''


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def eval_args(pytester: pytest.Pytester, model: str = "oracle", *extra: str) -> list[str]:
    """Evaluate the repo's example tasks, writing records under the test's own folder."""
    return ["--evalkit-model", model, "--evalkit-n", "20", "--evalkit-reports-dir", str(pytester.path / "reports"),
            *extra, str(TASKS)]


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # short-summary lines are not cut, whatever the tmp path's length


@pytest.fixture
def adder_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO / "tests"))  # makes helpers.slow_model importable


def test_oracle_passes_every_example_task(pytester: pytest.Pytester):
    result = run(pytester, *eval_args(pytester), "-v")
    result.assert_outcomes(passed=7)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*tasks/addition.py::addition PASSED*", ("*tasks/json_extract.yaml::json_extract "
                                 "PASSED*"), "*evalkit: 7 task(s)*", "PASS addition *100.0%*95% CI*n=20*"])
    assert len(list((pytester.path / "reports").glob("*/record.json"))) == 7


def test_failing_model_shows_rate_interval_and_failing_examples(pytester: pytest.Pytester, adder_path):
    result = run(pytester, *eval_args(pytester, ADDER, "-k", "addition", "--evalkit-show-failures", "2"))
    result.assert_outcomes(failed=1, deselected=6)  # -k addition selects exactly one task
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "evalkit: addition: pass rate 65.0% < 95.0%*", "*rate*65.0% (13/20 samples passed)",
        "*95% CI*43.3% – 81.9%*", "*threshold*95.0% on the pass rate (task target)",
        "*n*20 samples of 20 examples*", "*errors*0 errors, 0 timeouts*", "*failing samples (first 2 of 7):",
        "*#1 FAIL example*", "*prompt:   '*+*='", "*expected: '*'", "*got:      '*'", "*reason:*",
        "FAILED *tasks/addition.py::addition - evalkit: addition*"])


def test_model_output_is_shown_literally(pytester: pytest.Pytester):
    pytester.makepyfile(evil_model="def evil(prompt):\n    return '\\x1b[2J\\x1b[31mPWNED\\u202e'\n")
    result = run(pytester, *eval_args(pytester, "python:evil_model:evil", "-k", "addition"))
    result.assert_outcomes(failed=1, deselected=6)
    out = result.stdout.str()
    assert "\x1b[2J" not in out and "\u202e" not in out
    assert r"got:      '\x1b[2J\x1b[31mPWNED\u202e'" in out


CHAT_ADDER = """
import re

def chat_adder(prompt):
    # Chat mode sends the messages; a raw prompt ("12+34=") gets no answer.
    if isinstance(prompt, str):
        return ""
    a, b = map(int, re.findall(r"-?[0-9]+", prompt[-1]["content"]))
    return f"The answer is {a + b}."
"""


def test_chat_option_sends_the_chat_form(pytester: pytest.Pytester):
    pytester.makepyfile(chat_model=CHAT_ADDER)
    raw = run(pytester, *eval_args(pytester, "python:chat_model:chat_adder", "-k", "addition"))
    raw.assert_outcomes(failed=1, deselected=6)
    chat = run(pytester, *eval_args(pytester, "python:chat_model:chat_adder", "-k", "addition", "--evalkit-chat"))
    chat.assert_outcomes(passed=1, deselected=6)
    chat.stdout.fnmatch_lines(["evalkit: model python:chat_model:chat_adder*chat mode*",
                               "PASS addition *100.0%*n=20*"])
    pytester.makepyfile(test_fixture="""
        def test_fixture_in_chat_mode(evalkit_run):
            assert evalkit_run("addition", n=10).rate("addition") == 1.0
    """)
    fixture = run(pytester, "--evalkit-model", "python:chat_model:chat_adder", "--evalkit-chat", "test_fixture.py")
    fixture.assert_outcomes(passed=1)


def test_threshold_option_and_lower_bound(pytester: pytest.Pytester):
    # The oracle: 20/20, Wilson lower bound 83.9 %: a 90 % threshold passes on the rate, fails on the bound.
    passed = run(pytester, *eval_args(pytester, "oracle", "-k", "addition", "--evalkit-threshold", "0.9"))
    passed.assert_outcomes(passed=1, deselected=6)
    failed = run(pytester, *eval_args(pytester, "oracle", "-k", "addition", "--evalkit-threshold", "0.9",
                                      "--evalkit-lower-bound"))
    failed.assert_outcomes(failed=1, deselected=6)
    failed.stdout.fnmatch_lines(["evalkit: addition: 95% lower bound 83.9% < 90.0%*",
                                 "*threshold*90.0% on the 95% interval's lower bound (--evalkit-threshold)"])
    usage = run(pytester, "--evalkit-model", "oracle", "--evalkit-threshold", "95", str(TASKS))
    assert usage.ret == pytest.ExitCode.USAGE_ERROR
    usage.stderr.fnmatch_lines(["*--evalkit-threshold*expected a number in ?0, 1?, got '95'*"])


def test_stop_after_first_failure(pytester: pytest.Pytester, adder_path):
    result = run(pytester, *eval_args(pytester, ADDER, "-x"))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])


def test_junitxml_counts_and_properties(pytester: pytest.Pytester, adder_path):
    xml = pytester.path / "junit.xml"
    result = run(pytester, *eval_args(pytester, ADDER, "-k", "addition or reverse", "--evalkit-threshold", "0.3",
                                      f"--junitxml={xml}"))
    result.assert_outcomes(passed=1, failed=1, deselected=5)  # addition 50 % >= 30 %, reverse 0 %
    suites = JUnitXml.fromfile(str(xml))
    assert (suites.tests, suites.failures, suites.errors) == (2, 1, 0)
    cases = {case.name: case for suite in suites for case in suite}
    assert set(cases) == {"addition", "reverse"}
    assert cases["addition"].is_passed
    [failure] = [r for r in cases["reverse"].result if isinstance(r, Failure)]
    assert failure.message.startswith("evalkit: reverse: pass rate 0.0% < 30.0%")
    props = {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
             for case in ET.parse(xml).getroot().iter("testcase")}
    assert props["addition"]["evalkit_rate"] == "0.65" and props["reverse"]["evalkit_rate"] == "0.0"
    assert float(props["addition"]["evalkit_low"]) == pytest.approx(0.433, abs=1e-3)
    assert props["addition"]["evalkit_threshold"] == "0.3" and props["reverse"]["evalkit_n"] == "20"
    assert props["addition"]["evalkit_model"] == ADDER


def test_xdist_two_workers(pytester: pytest.Pytester):
    result = run(pytester, *eval_args(pytester), "-n", "2")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["*2 workers*", "*evalkit: 7 task(s)*"])


def test_project_task_folder_markers_and_fail_closed(pytester: pytest.Pytester):
    """A user's project: default tasks/ and reports/, tags as markers, a task without target fails."""
    pytester.mkdir("tasks")
    (pytester.path / "tasks" / "echo.py").write_text(ECHO_TASK)
    collected = run(pytester, "--evalkit-model", "oracle", "--strict-markers", "-m", "mytag and evalkit",
                    "--collect-only", "-q")
    collected.stdout.fnmatch_lines(["tasks/echo.py::echo", "1 test collected*"])
    no_target = run(pytester, "--evalkit-model", "oracle", "--evalkit-n", "5")
    no_target.assert_outcomes(failed=1)
    no_target.stdout.fnmatch_lines(["evalkit: task 'echo' has no target and no --evalkit-threshold was given*"])
    ok = run(pytester, "--evalkit-model", "oracle", "--evalkit-n", "5", "--evalkit-threshold", "1")
    ok.assert_outcomes(passed=1)
    assert len(list((pytester.path / "reports").glob("*/record.json"))) == 1  # ./reports by default
    skipped = run(pytester, "--evalkit-model", "oracle", "--evalkit-level", "3", "-rs")
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines(["*task 'echo' has no level 3 (levels: none)*"])
    bad_model = run(pytester, "--evalkit-model", "nonsense")
    bad_model.assert_outcomes(errors=1)
    bad_model.stdout.fnmatch_lines(["evalkit: ConfigError: *unknown model spec 'nonsense'*",
                                    "ERROR tasks/echo.py::echo - *ConfigError*"])
    (pytester.path / "tasks" / "broken.py").write_text("raise RuntimeError('boom')\n")
    broken = run(pytester, "--evalkit-model", "oracle")
    assert broken.ret == pytest.ExitCode.INTERRUPTED  # a task that fails to import is a collection error
    broken.stdout.fnmatch_lines(["*evalkit: *broken.py: failed to import: RuntimeError: boom*"])


def test_plain_pytest_is_unaffected(pytester: pytest.Pytester):
    pytester.mkdir("tasks")
    (pytester.path / "tasks" / "echo.py").write_text(ECHO_TASK)
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n\n"
                                   "def test_eval(evalkit_run):\n    evalkit_run('echo')\n")
    result = run(pytester, "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*evalkit: no model to evaluate — run pytest with --evalkit-model SPEC*"])
    assert "evalkit:" not in result.stdout.str().split("short test summary")[0]  # no header, no summary
    collected = run(pytester, "--collect-only", "-q", "tasks")
    assert collected.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_fixtures_in_a_normal_test_file(pytester: pytest.Pytester, adder_path):
    pytester.makepyfile(test_evals='''
        import pytest

        def test_addition(evalkit_run):
            record = evalkit_run("addition", n=50)
            assert record.rate("addition") >= 0.95 and record.task("addition")["n_samples"] == 50

        @pytest.mark.evalkit(model="python:helpers.slow_model:adder")
        def test_marker_overrides_the_model(evalkit_run, evalkit_task):
            task = evalkit_task("addition")
            assert task.target == 0.95
            assert evalkit_run([task], n=20).rate("addition") == 0.65

        def test_unknown_task(evalkit_task):
            with pytest.raises(Exception, match="did you mean 'sorting'"):
                evalkit_task("sortin")

        from evalkit import task, verdict

        @task(name="shout", eval_fraction=1.0)
        class Shout:  # a task defined in the test file: the bare @task class is accepted as it is
            def generate(self, rng):       return {"w": "ab"[rng.randrange(2)] * 3}
            def prompt(self, ex):          return f"shout {ex['w']}:"
            def reference(self, ex):       return ex["w"].upper()
            def check(self, ex, answer):   return verdict(answer == ex["w"].upper())

        def test_a_task_class_from_the_test_file(evalkit_run):
            assert evalkit_run(Shout, n=5).rate("shout") == 1.0
            assert evalkit_run([Shout, "addition"], n=5).rate("addition") == 1.0
    ''')
    result = run(pytester, "--evalkit-model", "oracle", "--evalkit-tasks-dir", str(TASKS))
    result.assert_outcomes(passed=4)


def test_importing_the_plugin_is_cheap():
    code = ("import sys, evalkit.pytest_plugin; "
            "print(sorted(m for m in ('torch', 'transformers', 'hypothesis', 'evalkit.run.runner', "
            "'evalkit.discovery.registry', 'evalkit.models.spec') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
