"""A generator task's examples are drawn once per (split, n, seed, level) in a process: a training loop's
repeated evaluations do not draw and hash them again, and get the same examples."""

from __future__ import annotations

from evalkit import task, verdict
from evalkit.core.task import as_task


@task(name="counted", levels=range(1, 4), max_new_tokens=4)
class Counted:
    calls = 0

    def generate(self, rng, level):
        Counted.calls += 1
        return {"a": rng.randrange(10 ** (level + 2))}

    def prompt(self, ex):
        return f"{ex['a']}="

    def reference(self, ex):
        return str(ex["a"])

    def check(self, ex, answer):
        return verdict(answer == str(ex["a"]))


def test_examples_are_drawn_once_per_arguments_and_are_the_same():
    t = as_task(Counted)
    Counted.calls = 0
    first = t.examples("eval", n=50, seed=3, level=2)
    drawn = Counted.calls
    assert drawn >= 50
    again = t.examples("eval", n=50, seed=3, level=2)
    assert Counted.calls == drawn  # not drawn again
    assert [e.id for e in again] == [e.id for e in first] and again is not first
    again.pop()  # the caller's list is its own
    assert len(t.examples("eval", n=50, seed=3, level=2)) == 50
    # Other arguments draw their own; a fresh Task (another process, in effect) draws the same ones.
    other = t.examples("eval", n=50, seed=4, level=2)
    assert Counted.calls > drawn and {e.id for e in other} != {e.id for e in first}
    fresh = as_task(Counted).examples("eval", n=50, seed=3, level=2)
    assert [e.id for e in fresh] == [e.id for e in first]
    assert [e.id for e in t.iter_examples("eval", n=50, seed=3, level=2)] == [e.id for e in first]
