"""The checker self-test: passes on sound checkers, fails with a minimal counterexample otherwise."""

from __future__ import annotations

import pytest
from conftest import FIXTURES, TASKS
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit import Task, task, verdict
from evalkit.core.selftest import assert_selftest, corruption, selftest_task
from evalkit.discovery.registry import load_path


def test_sound_task_passes_every_property():
    [t] = load_path(TASKS / "reverse.py")
    report = selftest_task(t, levels=[2], max_examples=30)
    assert report.passed, report.failures()
    names = [r.name for r in report.levels[0].results]
    assert names == ["soundness", "rejects empty/echo", "rejects random text", "rejects corruptions",
                     "deterministic", "robust"]


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


def test_non_deterministic_checker_is_caught():
    import random

    @task(name="coin")
    class Coin:
        def rows(self):
            return [{"x": str(i)} for i in range(5)]

        def prompt(self, ex):
            return ex["x"]

        def check(self, ex, answer):
            return verdict(random.random() < 0.5)

    report = selftest_task(Task.from_decorated(Coin), max_examples=40)
    assert not report.passed


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
