"""The checker self-test: passes on sound checkers, fails with a minimal counterexample otherwise;
catches over-strict checkers (solutions), non-deterministic ones (outside hypothesis), disagreement
with a second opinion, and calls a task with no known valid answer UNPROVEN, not PASS."""

from __future__ import annotations

import re

import pytest
from conftest import FIXTURES, TASKS
from hypothesis import given, settings
from hypothesis import strategies as st

import evalkit
from evalkit import Task, task, verdict
from evalkit.core.selftest import assert_selftest, corruption, selftest_task
from evalkit.discovery.registry import load_path

SELFTEST = FIXTURES / "selftest"
PROPERTIES = ["soundness", "accepts solutions", "rejects empty/echo", "rejects random text", "rejects corruptions",
              "agrees with second opinion", "deterministic", "robust"]


def fixture_task(name: str) -> Task:
    [t] = [t for path in sorted(SELFTEST.glob("*.py")) for t in load_path(path) if t.name == name]
    return t


def failed(report) -> list[str]:
    return sorted({r.name for _, r in report.failures()})


def test_sound_task_passes_every_property():
    [t] = load_path(TASKS / "reverse.py")
    report = selftest_task(t, levels=[2], max_examples=30)
    assert report.passed, report.failures()
    names = [r.name for r in report.levels[0].results]
    # reverse reads chat-mode replies its own way, so a chat pass follows the raw one.
    assert names == PROPERTIES + [f"chat: {p}" for p in PROPERTIES] + ["chat: rejects wrong answers in prose"]
    assert report.status == "PASS" and not report.unproven


def test_vacuous_checker_fails_with_counterexample():
    [t] = load_path(FIXTURES / "broken" / "vacuous.py")
    report = selftest_task(t, levels=[3], max_examples=50)
    assert not report.passed
    [(level, failure)] = [(lv, r) for lv, r in report.failures() if r.name == "rejects corruptions"]
    assert level == 3
    # Shrunk to a minimal corruption that keeps the first digit: a truncation to one character or
    # an edit of a later digit.
    assert "PASSED" in failure.counterexample and "reference" in failure.counterexample
    with pytest.raises(AssertionError, match="rejects corruptions"):
        assert_selftest(t, levels=[3], max_examples=50)


def test_crashing_checker_fails_robustness():
    [t] = load_path(FIXTURES / "broken" / "crashy.py")
    report = selftest_task(t, max_examples=60)
    failed = {r.name: r for _, r in report.failures()}
    assert "robust" in failed and "ERROR" in failed["robust"].counterexample


def test_equivalent_answers_are_not_counted_as_failures():
    @task(name="casefree", equivalent=("strip", "casefold"))
    class CaseFree:
        def rows(self):
            return [{"w": w} for w in ["Paris", "Rome", "Oslo"]]

        def prompt(self, ex):
            return f"capital? {ex['w'][0]}"

        def reference(self, ex):
            return ex["w"]

        def check(self, ex, answer):
            return verdict(answer.casefold() == ex["w"].casefold())

    assert selftest_task(Task.from_decorated(CaseFree), max_examples=60).passed


@settings(max_examples=50, deadline=None)
@given(ref=st.text(min_size=1, max_size=20), data=st.data())
def test_corruptions_differ_from_the_reference(ref, data):
    kind, text = data.draw(corruption(ref, ["digit_edit", "char_edit", "truncate", "append"]))
    assert text != ref


def test_selftest_takes_the_decorated_class():
    @task(name="echo_word", levels=[1], max_new_tokens=8)
    class EchoWord:
        def generate(self, rng, level):
            return {"w": "".join(rng.choice("abcdef") for _ in range(5))}

        def prompt(self, ex):
            return f"say {ex['w']}:"

        def reference(self, ex):
            return ex["w"]

        def check(self, ex, answer):
            return verdict(answer == ex["w"])

    assert assert_selftest(EchoWord, max_examples=20).passed
    assert selftest_task(EchoWord, max_examples=20).task == "echo_word"
    with pytest.raises(TypeError, match="expected a Task"):
        selftest_task("echo_word")


# -- over-strict checkers: solutions ---------------------------------------------------------

def test_over_strict_checker_fails_naming_a_rejected_valid_solution():
    t = fixture_task("strict_colouring")
    report = evalkit.selftest_task(t, levels=[1], max_examples=20)
    assert report.status == "FAIL" and failed(report) == ["accepts solutions"]
    [(_, result)] = report.failures()
    assert "over-strict" in result.counterexample
    shown = re.search(r"valid solution '([0-2 ]+)' got FAIL", result.counterexample).group(1)
    # The named answer is a right one (each edge joins two colours) and not the reference.
    [ex] = [e for e in t.examples("eval", n=20, level=1) + t.examples("train", n=20, level=1)
            if e.id in result.counterexample]
    colours = [int(c) for c in shown.split()]
    assert shown != ex.reference and all(colours[i] != colours[j] for i, j in ex["edges"])
    with pytest.raises(AssertionError, match="accepts solutions: .* solutions rejected"):
        evalkit.assert_selftest(t, levels=[1], max_examples=20)


def test_sound_checker_with_solutions_and_a_second_opinion_passes():
    report = evalkit.assert_selftest(fixture_task("colouring"), levels=[1], max_examples=20)
    by_name = {r.name: r for r in report.by_property()}
    assert all(r.passed for r in by_name.values()), by_name
    assert by_name["accepts solutions"].tried > 20 and by_name["agrees with second opinion"].tried > 20


def _signed_sum(with_solutions: bool):
    class SignedSum:
        def generate(self, rng, level):
            return {"a": rng.randrange(10, 100), "b": rng.randrange(10, 100)}

        def prompt(self, ex):
            return f"{ex['a']}+{ex['b']}="

        def reference(self, ex):
            return str(ex["a"] + ex["b"])

        def check(self, ex, answer):
            ref = self.reference(ex)
            # BUG (on purpose): a signed answer is only checked for its length.
            return verdict(answer == ref or bool(re.fullmatch(r"\+[0-9]+", answer)) and len(answer) == len(ref) + 1)

        def equivalent(self, ex, reference, candidate):
            return candidate.strip().lstrip("+") == self.reference(ex)

    if with_solutions:
        SignedSum.solutions = lambda self, ex, rng: ["+" + self.reference(ex)]
    return task(name="signed_sum", levels=[2])(SignedSum)


def test_solutions_seed_the_corruptions():
    """The bug hides two edits away from the reference ("579" -> "+578") but one away from the
    solution "+579": only corruptions of the solutions find it."""
    assert selftest_task(_signed_sum(False), max_examples=60).passed
    report = selftest_task(_signed_sum(True), max_examples=60)
    assert failed(report) == ["rejects corruptions"]
    assert re.search(r"corruption \(\w+\) '\+[0-9]+' PASSED", report.failures()[0][1].counterexample)


# -- no known valid answer: UNPROVEN -----------------------------------------------------------

def test_a_task_without_reference_or_solutions_is_unproven_not_passed():
    t = fixture_task("any_multiple")
    report = evalkit.selftest_task(t, levels=[1], max_examples=20)
    assert report.status == "UNPROVEN" and report.unproven and not report.passed and not report.failures()
    skipped = {r.name: r.skipped for r in report.by_property() if r.passed is None}
    assert skipped["soundness"] == {"the task defines no reference(ex)": None}
    assert skipped["accepts solutions"] == {"the task defines no solutions(ex, rng)": None}
    assert skipped["rejects corruptions"] == {"no known valid answer to corrupt": None}
    with pytest.raises(AssertionError, match=r"UNPROVEN(.|\n)*reference\(ex\)(.|\n)*solutions\(ex, rng\)"):
        evalkit.assert_selftest(t, levels=[1], max_examples=20)
    assert evalkit.assert_selftest(t, levels=[1], max_examples=20, allow_unproven=True).status == "UNPROVEN"


def test_a_failure_outranks_unproven():
    @task(name="no_ref_crash")
    class NoRefCrash:
        def rows(self):
            return [{"w": "x"}]

        def prompt(self, ex):
            return "say something:"

        def check(self, ex, answer):
            return verdict(len(answer) > 3)  # vacuous: any long text passes

    report = selftest_task(NoRefCrash, max_examples=30)
    assert report.status == "FAIL" and "rejects empty/echo" in failed(report)
    with pytest.raises(AssertionError):
        assert_selftest(NoRefCrash, max_examples=30, allow_unproven=True)


# -- determinism, outside hypothesis ---------------------------------------------------------

def test_coin_flip_checker_fails_on_determinism():
    report = selftest_task(fixture_task("coin_flip"), max_examples=20)
    result = {r.name: r for _, r in report.failures()}.get("deterministic")
    assert result is not None, f"determinism did not fail; failures: {failed(report)}"
    # Found by scoring the same input again outside hypothesis, not by hypothesis' Flaky.
    assert result.counterexample.startswith("non-deterministic verdict: output")
    assert "pure function" in result.counterexample


def test_random_partial_credit_fails_determinism_and_nothing_else():
    report = selftest_task(fixture_task("noisy_score"), max_examples=20)
    assert failed(report) == ["deterministic"]
    [(_, result)] = report.failures()
    assert re.search(r"gave FAIL \([0-9.]+\) then FAIL \([0-9.]+\)", result.counterexample)
    with pytest.raises(AssertionError, match="deterministic: non-deterministic verdict"):
        assert_selftest(fixture_task("noisy_score"), max_examples=20)


# -- second opinion --------------------------------------------------------------------------

def test_every_disagreement_with_the_second_opinion_is_reported():
    t = fixture_task("judged_sum")
    report = selftest_task(t, max_examples=20)
    assert failed(report) == ["agrees with second opinion"]
    [(_, result)] = report.failures()
    examples = t.examples("eval", n=20, level=2) + t.examples("train", n=20, level=2)
    for ex in examples:  # each example's solution "+N" is one the judges disagree on
        assert any(f"output '+{ex['a'] + ex['b']}': checker PASS, second opinion FAIL" in f for f in result.findings)
    assert len(result.findings) >= len(examples)
    assert result.counterexample.startswith(f"{len(result.findings)} disagreement(s) in {result.tried} inputs")


# -- what the report says --------------------------------------------------------------------

def test_the_report_counts_inputs_and_says_what_was_skipped():
    [t] = load_path(TASKS / "countdown.py")
    report = selftest_task(t, levels=[1, 2], max_examples=20, n_examples=5)
    assert report.passed
    summed = {r.name: r for r in report.by_property()}
    for name in PROPERTIES:
        assert summed[name].tried == sum(r.tried for lv in report.levels for r in lv.results if r.name == name) > 0
        assert summed[name].detail
    assert summed["soundness"].tried == 20  # 5 eval + 5 train examples, two levels
    assert summed["accepts solutions"].tried > 20
    assert summed["deterministic"].tried % 3 == 0

    [rev] = load_path(TASKS / "reverse.py")
    level = selftest_task(rev, levels=[1], max_examples=20).levels[0]
    second = {r.name: r for r in level.results}["agrees with second opinion"]
    assert second.passed is None and second.skipped == {"the task defines no second_opinion(ex, answer)": None}


def test_skips_by_the_task_are_reported():
    @task(name="lenient_tail", selftest_skip=("append",))
    class LenientTail:
        def rows(self):
            return [{"w": w} for w in ["red", "green", "blue"]]

        def prompt(self, ex):
            return f"say {ex['w']}:"

        def reference(self, ex):
            return ex["w"]

        def check(self, ex, answer):
            return verdict(answer.startswith(ex["w"]) and len(answer) <= len(ex["w"]) + 10)

    [level] = selftest_task(LenientTail, max_examples=20).levels
    corruptions = {r.name: r for r in level.results}["rejects corruptions"]
    assert corruptions.passed and "kind 'append': skipped by the task" in corruptions.skipped


# -- the command -----------------------------------------------------------------------------

def selftest_cli(run_cli, *args: str):
    return run_cli("selftest", "--tasks-dir", str(SELFTEST), "--max-examples", "20", *args)


def test_cli_over_strict_checker_exits_1_naming_the_solution(run_cli):
    out = selftest_cli(run_cli, "strict_colouring", "--level", "1")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "strict_colouring v1: FAIL" in out.stdout
    assert re.search(r"FAILED accepts solutions: .*valid solution '[0-2 ]+' got FAIL", out.stdout)


def test_cli_unproven_exits_1_unless_allowed(run_cli):
    out = selftest_cli(run_cli, "any_multiple")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "any_multiple v1: UNPROVEN" in out.stdout and "--allow-unproven" in out.stdout
    assert "solutions(ex, rng)" in out.stdout and "all self-tests passed" not in out.stdout
    allowed = selftest_cli(run_cli, "any_multiple", "--allow-unproven", "-q")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "1 UNPROVEN" in allowed.stdout and "allowed by --allow-unproven" in allowed.stdout
    # --allow-unproven never hides a failure.
    both = selftest_cli(run_cli, "any_multiple", "noisy_score", "--allow-unproven", "-q")
    assert both.returncode == 1 and "1 FAIL, 1 UNPROVEN" in both.stdout


def test_cli_coin_flip_fails_on_determinism(run_cli):
    out = selftest_cli(run_cli, "coin_flip", "-q")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "coin_flip v1: FAIL" in out.stdout
    assert "FAILED deterministic: non-deterministic verdict" in out.stdout


def test_cli_second_opinion_lists_disagreements(run_cli):
    out = selftest_cli(run_cli, "judged_sum")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED agrees with second opinion:" in out.stdout and "-v lists them" in out.stdout
    verbose = selftest_cli(run_cli, "judged_sum", "-v")
    listed = re.findall(r"output '\+[0-9]+': checker PASS, second opinion FAIL", verbose.stdout)
    assert len(listed) >= 40 and "inputs" in verbose.stdout  # every one, and the -v columns
    quiet = selftest_cli(run_cli, "judged_sum", "-q")
    assert "┃" not in quiet.stdout and quiet.stdout.count("\n") <= 4


def test_countdown_solutions_are_many_different_valid_expressions():
    import random

    [t] = load_path(TASKS / "countdown.py")
    for ex in t.examples("eval", n=10, level=3):
        sols = set(t.impl.solutions(ex, random.Random(ex.id))) - {ex.reference}
        assert len(sols) >= 3, (ex.fields, sols)
        for answer in sols:
            assert t.impl.second_opinion(ex, answer.strip()) and evalkit.score(t, ex, answer).verdict.passed
        # Different expressions, not only spacing: at least two distinct once spaces and parentheses go.
        assert len({s.replace(" ", "").strip("()") for s in sols} - {ex.reference}) >= 2
