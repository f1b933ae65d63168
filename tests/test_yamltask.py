"""Declarative YAML tasks: loading, path resolution, validation errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES, TASKS

from evalkit import ConfigError, Status, score
from evalkit.discovery.yamltask import load_yaml_task


def write(tmp_path: Path, text: str, rows=({"q": "1+1", "a": "2"}, {"q": "2+2", "a": "4"}), name="t.yaml") -> Path:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / name
    path.write_text(text)
    return path


BASE = 'name: t\ndata: rows.jsonl\nprompt: "Q: {q}\\nA: "\nreference: "{a}"\ncheck: exact\n'


def test_minimal_yaml_task(tmp_path):
    t = load_yaml_task(write(tmp_path, BASE))
    exs = t.examples("eval")
    assert [e.prompt for e in exs] == ["Q: 1+1\nA: ", "Q: 2+2\nA: "]
    assert [e.reference for e in exs] == ["2", "4"]
    assert score(t, exs[0], " 2\nQ: next").verdict.status is Status.PASS
    assert score(t, exs[0], "3").verdict.status is Status.FAIL


def test_data_path_resolves_relative_to_yaml_not_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    path = write(sub, BASE)
    monkeypatch.chdir(tmp_path)
    assert len(load_yaml_task(path).examples("eval")) == 2


def test_csv_data_and_regex_extraction(tmp_path):
    (tmp_path / "rows.csv").write_text("q,a\nseven,7\nten,10\n")
    path = tmp_path / "t.yaml"
    path.write_text('name: t\ndata: rows.csv\nprompt: "{q} as digits: "\nreference: "answer: {a}"\n'
                    'extract: {type: regex, pattern: "answer: *(\\\\d+)", group: 1}\ncheck: {name: numeric}\n')
    t = load_yaml_task(path)
    ex = t.examples("eval")[0]
    assert score(t, ex, "answer: 7").verdict.passed
    assert score(t, ex, "the answer: 8").verdict.status is Status.FAIL


def test_wrong_field_type_names_file_and_field():
    with pytest.raises(ConfigError) as info:
        load_yaml_task(FIXTURES / "badyaml" / "wrong_type.yaml")
    msg = str(info.value)
    assert "wrong_type.yaml" in msg and "generation.max_new_tokens" in msg and "expected integer" in msg


@pytest.mark.parametrize("text,field,expect", [
    (BASE.replace("check: exact\n", ""), "check", "required field is missing"),
    (BASE + "colour: red\n", "colour", "unknown field"),
    (BASE + "target: 1.5\n", "target", "<= 1"),
    (BASE.replace("check: exact", "check: exakt"), "check.name", "unknown checker 'exakt'"),
    (BASE.replace("check: exact", "check: {name: regex, mode: sideways, pattern: x}"), "check", "mode"),
    (BASE.replace("rows.jsonl", "missing.jsonl"), "data", "data file not found"),
    (BASE + "extract: {type: regex}\n", "extract.pattern", "required field is missing"),
    (BASE.replace("{q}", "{question}"), None, "no field 'question'"),
    (BASE.replace("{q}", "{q.attr}"), "prompt", "plain field name"),
    (BASE + "identity: [question]\n", "identity", "'question' is not a field of row 1 of rows.jsonl"),
    (BASE + "identity: [q, q]\n", "identity", "non-unique"),
    ("name: [unclosed\n", None, "not valid YAML"),
])
def test_validation_errors(tmp_path, text, field, expect):
    with pytest.raises(ConfigError) as info:
        load_yaml_task(write(tmp_path, text))
    msg = str(info.value)
    if field:
        assert f"field '{field}'" in msg, msg
    assert expect in msg, msg


def test_bad_jsonl_line_is_named(tmp_path):
    path = write(tmp_path, BASE)
    (tmp_path / "rows.jsonl").write_text('{"q": "1", "a": "1"}\n{not json}\n')
    with pytest.raises(ConfigError, match=r"rows.jsonl: line 2: not valid JSON"):
        load_yaml_task(path)


def test_shipped_yaml_tasks_load():
    for name in ("json_extract", "multiple_choice"):
        t = load_yaml_task(TASKS / f"{name}.yaml")
        exs = t.examples("eval")
        assert len(exs) >= 20
        assert all(score(t, e, e.reference).verdict.passed for e in exs)


def test_json_extract_checks_schema_and_values():
    t = load_yaml_task(TASKS / "json_extract.yaml")
    ex = t.examples("eval")[0]
    ans = json.loads(ex.reference)
    assert score(t, ex, "```json " + json.dumps(ans, indent=2).replace("\n", " ") + "```").verdict.passed
    wrong_age = dict(ans, age=ans["age"] + 1)
    assert not score(t, ex, json.dumps(wrong_age)).verdict.passed
    assert not score(t, ex, json.dumps({"name": ans["name"]})).verdict.passed
    assert not score(t, ex, "no json here").verdict.passed


def test_multiple_choice_reads_letters():
    t = load_yaml_task(TASKS / "multiple_choice.yaml")
    ex = t.examples("eval")[0]
    letter = ex.reference
    other = "A" if letter != "A" else "B"
    for ok in (letter, f"({letter})", f"{letter}) whatever", letter.lower()):
        assert score(t, ex, ok).verdict.passed, ok
    for bad in (other, f"{letter} or {other}", ""):
        assert not score(t, ex, bad).verdict.passed, bad


def test_data_row_that_is_not_an_object_names_file_and_line(tmp_path):
    path = write(tmp_path, BASE, rows=({"q": "1+1", "a": "2"}, [1, 2]))
    with pytest.raises(ConfigError) as info:
        load_yaml_task(path).examples("eval")
    assert "rows.jsonl" in str(info.value) and "line 2" in str(info.value)
    assert "expected a JSON object, got a list [1, 2]" in str(info.value)
