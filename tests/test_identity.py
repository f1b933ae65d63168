"""Example identity (`identity=`) and the one prompt normalisation shared by overlap() and the
fine-tuning contamination guard (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TASKS
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit import ConfigError, Example, as_task, load_tasks, overlap, split_of, task
from evalkit.core.example import as_identity, example_id, normalize_prompt
from evalkit.discovery.yamltask import load_yaml_task
from evalkit.train.data import ContaminationGuard


class _SeededQuestions:
    """What wrapping a reasoning-gym dataset gives: a question, its answer, and a per-example seed
    (incidental: it does not change the question)."""

    def generate(self, rng):
        a, b = rng.randrange(100), rng.randrange(100)
        return {"question": f"{a}+{b}=", "answer": str(a + b), "seed": rng.randrange(2**32)}

    def prompt(self, ex):
        return ex["question"]

    def reference(self, ex):
        return ex["answer"]

    def check(self, ex, answer):
        return answer == ex["answer"]


def seeded(identity=None):
    return as_task(task(name="seeded", identity=identity)(type("Seeded", (_SeededQuestions,), {})))


def test_incidental_fields_leak_prompts_across_splits_unless_identity_names_the_question():
    leaky, keyed = seeded(), seeded(identity=("question",))
    leaks = overlap(leaky.examples("train", n=1000), leaky.examples("eval", n=1000))
    assert not leaks.ids and len(leaks.prompts) > 20  # same question, other seed: the other split
    train, ev = keyed.examples("train", n=1000), keyed.examples("eval", n=1000)
    assert len(train) == len(ev) == 1000
    assert overlap(train, ev).empty
    assert len({e.prompt for e in train}) == 1000  # equal identity is one example: dedup keeps one
    # ... and the contamination guard agrees with overlap(): it drops nothing of the keyed train split.
    guard = ContaminationGuard(leaky.examples("eval", n=1000))
    assert {e.prompt for e in leaky.examples("train", n=1000) if guard.excludes(e.prompt, e.id)} == set(leaks.prompts)
    assert not any(ContaminationGuard(ev).excludes(e.prompt, e.id) for e in train)


def test_identity_decides_id_and_split_and_nothing_else_does():
    t = seeded(identity="question")  # one name may be a string
    assert t.spec.identity == ("question",)
    one = t.example({"question": "1+2=", "answer": "3", "seed": 1})
    other = t.example({"question": "1+2=", "answer": "3", "seed": 2})
    assert one.id == other.id == example_id("seeded", {"question": "1+2="})
    assert one.split == other.split == split_of("seeded", one.fields, t.spec.eval_fraction, ("question",))
    assert one.fields["seed"] == 1  # the fields themselves are kept whole


def test_default_identity_is_every_field_so_ids_do_not_change():
    fields = {"a": 1, "b": [2, 3]}
    assert example_id("t", fields) == example_id("t", fields, None) == example_id("t", fields, ("a", "b"))
    assert example_id("t", fields, ("a",)) != example_id("t", fields)
    # Pinned ids of the shipped tasks (run journals and records key on them): they must never move.
    pinned = {("addition", 3): ["3071892d0e8a1b8d", "e56e853f9c4804d8", "c0951e4762ecc958"],
              ("countdown", 2): ["f47d7c4e4c1b4fb2", "6a9e475510e1c84a", "09eb46ddd4fb2b67"],
              ("reverse", 1): ["2045c2adad7cf185", "c2b80f638955498e", "4c90d6b06ffb26dc"],
              ("json_extract", None): ["e30aed7efc7fb063", "37dadd2680f9690b", "503393f62041e15a"],
              ("multiple_choice", None): ["5052a5b84c8a5e53", "cbcb180aa4e779a2", "270e4e19eea20f33"],
              ("python_functions", None): ["77306a53989e6311", "691d796648778410", "a86340eeacb02a7d"]}
    for (name, level), ids in pinned.items():
        [t] = load_tasks([TASKS / (f"{name}.yaml" if (TASKS / f"{name}.yaml").exists() else f"{name}.py")])
        assert [e.id for e in t.examples("eval", n=3, seed=0, level=level)] == ids, name
    [sorting] = load_tasks([TASKS / "sorting.py"])
    assert [e.id for e in sorting.examples("train", n=3, seed=0, level=2)] == [
        "fd256dbd02959509", "c776f9a03e130a04", "f4d16db18410229c"]


@pytest.mark.parametrize("bad,match", [((), "at least one field"), (("q", "q"), "twice"),
                                       (("q", ""), "field names"), ((1,), "field names")])
def test_identity_option_is_checked(bad, match):
    with pytest.raises(ValueError, match=match):
        as_identity(bad)
    with pytest.raises(ValueError, match=match):
        task(name="x", identity=bad)(_SeededQuestions)


def test_identity_field_the_example_lacks_is_an_error_naming_it():
    t = seeded(identity=("question", "difficulty"))
    with pytest.raises(ValueError, match=r"task 'seeded': identity field 'difficulty' is not a field.*seed"):
        t.examples("eval", n=1)


def test_data_rows_with_equal_identity_are_one_example():
    @task(name="rows_keyed", identity=["q"])
    class Rows:
        def rows(self):
            return [{"q": "a?", "a": "1", "src": "x"}, {"q": "b?", "a": "2"}, {"q": "a?", "a": "1", "src": "y"}]

        def prompt(self, ex):
            return ex["q"]

        def check(self, ex, answer):
            return True

    exs = as_task(Rows).examples("eval")
    assert [(e.prompt, e.get("src")) for e in exs] == [("a?", "x"), ("b?", None)]  # the first is kept


# -- YAML ------------------------------------------------------------------------------------------

YAML = 'name: t\ndata: rows.jsonl\nprompt: "Q: {q}\\nA: "\nreference: "{a}"\ncheck: exact\neval_fraction: 0.5\n'
ROWS = [{"q": f"{i}+{i}", "a": str(2 * i), "seed": s} for i in range(200) for s in (1, 2)]


def yaml_task(tmp_path: Path, extra: str = "", rows=ROWS) -> Path:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "t.yaml"
    path.write_text(YAML + extra)
    return path


def test_yaml_identity_keys_examples_on_the_named_fields(tmp_path):
    leaky = load_yaml_task(yaml_task(tmp_path))
    assert overlap(leaky.examples("train"), leaky.examples("eval")).prompts  # 400 rows, shared questions
    keyed = load_yaml_task(yaml_task(tmp_path, "identity: [q]\n"))
    assert keyed.spec.identity == ("q",)
    train, ev = keyed.examples("train"), keyed.examples("eval")
    assert len(train) + len(ev) == 200 and overlap(train, ev).empty
    assert all(e.id == example_id("t", {"q": e["q"]}) for e in train + ev)


@pytest.mark.parametrize("extra,expect", [
    ("identity: q\n", "expected array"),
    ("identity: []\n", "identity"),
    ("identity: [q, q]\n", "identity"),
    ("identity: [question]\n", "'question' is not a field of row 1 of rows.jsonl (its fields: q, a, seed)"),
])
def test_yaml_identity_is_validated_naming_file_and_field(tmp_path, extra, expect):
    with pytest.raises(ConfigError) as info:
        load_yaml_task(yaml_task(tmp_path, extra))
    msg = str(info.value)
    assert "t.yaml" in msg and "field 'identity'" in msg and expect in msg, msg


def test_yaml_identity_field_missing_from_one_row_names_the_row(tmp_path):
    rows = [{"q": "1", "a": "1", "k": 1}, {"q": "2", "a": "2"}]
    with pytest.raises(ConfigError, match=r"t.yaml: field 'identity': 'k' is not a field of row 2 of rows.jsonl"):
        load_yaml_task(yaml_task(tmp_path, "identity: [k]\n", rows=rows))


def test_yaml_identity_may_not_name_the_level_field(tmp_path):
    rows = [{"q": "1", "a": "1", "lvl": 1}]
    with pytest.raises(ConfigError, match=r"field 'identity': 'lvl' is the level field"):
        load_yaml_task(yaml_task(tmp_path, "level_field: lvl\nidentity: [lvl]\n", rows=rows))


# -- the one prompt normalisation ------------------------------------------------------------------

def test_normalize_prompt_keeps_punctuation_and_folds_form():
    assert normalize_prompt("12+34=") != normalize_prompt("12*34=")
    assert normalize_prompt("  What IS\t12+34=\n") == normalize_prompt("what is 12+34=") == "what is 12+34="
    assert normalize_prompt("１２＋３４＝") == "12+34="  # full-width forms (NFKC)
    assert normalize_prompt("ﬁx\u00a0Straße") == normalize_prompt("FIX STRASSE")  # ligature, nbsp, ß
    assert normalize_prompt("{\"a\": 1}") != normalize_prompt("{\"a\": [1]}")


def _ex(prompt: str, eid: str, split: str = "eval") -> Example:
    return Example(eid, "t", split, {"p": prompt}, prompt)


def test_guard_excludes_reformatted_copies_but_not_other_problems():
    guard = ContaminationGuard([_ex("12+34=", "e1")])
    assert guard.excludes("12+34=") and guard.excludes("  12+34=\n") and guard.excludes("１２+３４=")
    assert not guard.excludes("12*34=") and not guard.excludes("12-34=") and not guard.excludes("1234=")
    assert guard.excludes("anything", example_id="e1") and not guard.excludes("anything", example_id="e2")
    assert not guard.excludes("anything", example_id=None)


prompts = st.one_of(st.text(max_size=12),
                    st.text(alphabet=" \t\n\u00a0\u3000aAbB1１+*=ﬁß.,", max_size=12))


@settings(max_examples=400, deadline=None)
@given(train_prompt=prompts, eval_prompt=prompts, same_id=st.booleans())
def test_overlap_and_guard_agree_on_any_two_prompts(train_prompt, eval_prompt, same_id):
    """What `overlap()` reports as shared is exactly what the contamination guard drops."""
    train_ex, eval_ex = _ex(train_prompt, "same" if same_id else "train"), _ex(eval_prompt, "same")
    report = overlap([train_ex], [eval_ex])
    assert (not report.empty) == ContaminationGuard([eval_ex]).excludes(train_prompt, train_ex.id)
    assert bool(report.prompts) == ContaminationGuard([eval_ex]).excludes(train_prompt)
    assert bool(report.prompts) == (normalize_prompt(train_prompt) == normalize_prompt(eval_prompt))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_normalize_prompt_is_idempotent(text):
    once = normalize_prompt(text)
    assert normalize_prompt(once) == once and once == once.strip()
