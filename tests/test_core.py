"""The task API: decorator, examples, disjoint splits, overlap reports, safe scoring."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit import Example, Status, Task, Verdict, overlap, score, split_of, task, verdict
from evalkit.core.example import example_id
from evalkit.core.verdict import as_verdict


@task(name="tiny_add", levels=range(1, 4), target=0.9, tags=("math",), max_new_tokens=5)
class TinyAdd:
    """Add two small numbers."""

    def generate(self, rng, level):
        return {"a": rng.randrange(10**level), "b": rng.randrange(10**level)}

    def prompt(self, ex):
        return f"{ex['a']}+{ex['b']}="

    def reference(self, ex):
        return str(ex["a"] + ex["b"])

    def check(self, ex, answer):
        return verdict(answer == self.reference(ex), f"expected {self.reference(ex)}, got {answer!r}")


def make() -> Task:
    return Task.from_decorated(TinyAdd)


def test_spec_from_decorator():
    t = make()
    assert (t.name, t.version, t.target, t.levels, t.tags) == ("tiny_add", 1, 0.9, (1, 2, 3), ("math",))
    assert t.spec.default_level == 2  # the middle level
    assert t.generation.max_new_tokens == 5 and t.generation.stop == ("\n",)
    assert t.spec.description == "Add two small numbers."
    assert t.is_generator and t.has_reference


def test_examples_are_deterministic_and_distinct():
    t = make()
    a = t.examples("eval", n=50, seed=3, level=2)
    b = t.examples("eval", n=50, seed=3, level=2)
    assert [e.id for e in a] == [e.id for e in b]
    assert len({e.id for e in a}) == 50
    assert all(e.split == "eval" and e.level == 2 and e.reference == str(e["a"] + e["b"]) for e in a)
    assert [e.id for e in t.examples("eval", n=50, seed=4, level=2)] != [e.id for e in a]


@settings(max_examples=25, deadline=None)
@given(seed_a=st.integers(0, 10**6), seed_b=st.integers(0, 10**6), level=st.sampled_from([1, 2, 3]))
def test_splits_are_disjoint_whatever_the_seeds(seed_a, seed_b, level):
    t = make()
    train = t.examples("train", n=40, seed=seed_a, level=level)
    ev = t.examples("eval", n=40, seed=seed_b, level=level)
    assert overlap(train, ev).empty
    for e in train + ev:
        assert split_of(t.name, e.fields, t.spec.eval_fraction) == e.split
        assert e.id == example_id(t.name, e.fields)  # the generator hashes once for both; each is still its own


def test_small_example_space_is_exhausted_not_looped_forever():
    t = make()
    # Level 1 has 100 possible (a, b) pairs, about half of them in each split.
    ev = t.examples("eval", n=1000, level=1)
    assert 20 < len(ev) < 80


def test_overlap_reports_shared_ids_and_prompts():
    t = make()
    ev = t.examples("eval", n=5, level=2)
    fake_train = [Example("other", "tiny_add", "train", {"x": 1}, "  " + ev[0].prompt.upper() + " "), ev[1]]
    report = overlap(fake_train, ev)
    assert report.ids == (ev[1].id,)
    assert set(report.prompts) == {fake_train[0].prompt, ev[1].prompt}
    assert not report.empty and len(report) == 3


def test_unknown_level_and_split_are_errors():
    t = make()
    with pytest.raises(ValueError, match="no level 9"):
        t.examples("eval", n=1, level=9)
    with pytest.raises(ValueError, match="split"):
        t.examples("test", n=1)


def test_example_id_is_content_hash():
    assert example_id("t", {"a": 1, "b": 2}) == example_id("t", {"b": 2, "a": 1})
    assert example_id("t", {"a": 1}) != example_id("u", {"a": 1})


def test_score_extracts_at_stop_and_checks():
    t = make()
    ex = t.examples("eval", n=1, level=2)[0]
    assert score(t, ex, ex.reference + "\n12+3=15").verdict.status is Status.PASS
    bad = score(t, ex, "nope")
    assert bad.verdict.status is Status.FAIL and "expected" in bad.verdict.reason


class _Raises:
    def rows(self):
        return [{"q": "x"}]

    def prompt(self, ex):
        return ex["q"]

    def check(self, ex, answer):
        if answer == "hang":
            while True:
                pass
        raise ZeroDivisionError("boom")


def test_checker_exception_and_hang_become_verdicts():
    t = Task(task(name="raises")(_Raises).__evalkit_task__, _Raises())
    ex = t.examples("eval")[0]
    err = score(t, ex, "x").verdict
    assert err.status is Status.ERROR and "ZeroDivisionError: boom" in err.reason
    start = time.monotonic()
    to = score(t, ex, "hang", timeout=0.5).verdict
    assert to.status is Status.TIMEOUT and time.monotonic() - start < 5


def test_verdict_validation_and_coercion():
    assert as_verdict(True).passed and not as_verdict(False).passed
    assert as_verdict(0.5) == Verdict(Status.FAIL, 0.5)
    assert as_verdict(1.0).passed
    with pytest.raises(ValueError):
        Verdict(Status.PASS, 1.5)
    with pytest.raises(TypeError):
        as_verdict("yes")
    assert Verdict.from_dict(verdict(True, "ok").to_dict()) == verdict(True, "ok")


def test_task_must_have_exactly_one_source():
    class Neither:
        def prompt(self, ex):
            return ""

        def check(self, ex, a):
            return True

    with pytest.raises(TypeError, match="exactly one of"):
        Task.from_decorated(task(name="neither")(Neither))


def test_import_evalkit_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, evalkit, evalkit.cli, evalkit.core.selftest; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_example_constructor():
    t = make()
    ex = t.example({"a": 12, "b": 30}, level=2)
    assert ex.prompt == "12+30=" and ex.reference == "42" and ex.split in ("train", "eval")
    assert ex.split == split_of(t.name, ex.fields, t.spec.eval_fraction)


# -- the public API -------------------------------------------------------------------------------


def test_every_public_name_resolves_and_is_documented():
    import evalkit

    for name in evalkit.__all__:
        value = getattr(evalkit, name)
        assert value is not None, name
        if callable(value) and not isinstance(value, type) and name != "checkers":
            assert value.__doc__, f"evalkit.{name} has no docstring"
    assert set(evalkit.__all__) <= set(dir(evalkit))
    with pytest.raises(AttributeError, match="no attribute 'evalute'"):
        evalkit.evalute  # noqa: B018


def test_import_evalkit_stays_light_and_ships_its_types():
    import subprocess
    import sys
    from pathlib import Path

    import evalkit

    code = ("import sys, evalkit; print(sorted(m for m in ('torch', 'hypothesis', 'evalkit.run.runner', "
            "'evalkit.gate', 'evalkit.discovery.registry') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert (Path(evalkit.__file__).parent / "py.typed").is_file()


def test_task_decorator_returns_the_class_itself():
    assert isinstance(TinyAdd, type) and TinyAdd.__name__ == "TinyAdd"
    assert TinyAdd().prompt({"a": 1, "b": 2}) == "1+2="  # instantiate and call as usual

    class Sub(TinyAdd):
        pass

    assert Sub().reference({"a": 1, "b": 2}) == "3"


def test_as_task_accepts_everything_task_denotes():
    from evalkit import as_task

    built = as_task(TinyAdd)
    assert isinstance(built, Task) and built.name == "tiny_add" and built.source == __file__
    assert as_task(built) is built
    instance = TinyAdd()
    assert as_task(instance).impl is instance  # an instance is used as it is, not called

    @task(name="from_factory")
    def factory():
        return TinyAdd()

    assert as_task(factory).name == "from_factory" and isinstance(as_task(factory).impl, TinyAdd)


def test_as_task_rejects_what_is_not_a_task_and_says_why():
    from evalkit import as_task

    class Undecorated:
        def prompt(self, ex):
            return ""

        def check(self, ex, answer):
            return True

    with pytest.raises(TypeError, match=r"'.*Undecorated' is not a task: decorate it with @evalkit.task"):
        as_task(Undecorated)
    with pytest.raises(TypeError, match="expected a Task or a @task-decorated class, got int 3"):
        as_task(3)
