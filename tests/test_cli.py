"""The command line, as a user runs it: real subprocesses, exit codes as the README lists them."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES


def test_tasks_lists_all_seven(run_cli):
    out = run_cli("tasks")
    assert out.returncode == 0, out.stderr
    for name in ("addition", "sorting", "reverse", "countdown", "json_extract", "python_functions",
                 "multiple_choice"):
        assert name in out.stdout
    data = json.loads(run_cli("tasks", "--json").stdout)
    assert len(data) == 7 and {d["kind"] for d in data} == {"generator", "data"}


def test_show_prints_prompts_references_and_verdicts(run_cli):
    out = run_cli("show", "addition", "-n", "3", "--level", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("prompt") == 3 and out.stdout.count("PASS") == 3 and "+" in out.stdout


def test_unknown_task_exits_2_with_suggestion(run_cli):
    out = run_cli("show", "additon")
    assert out.returncode == 2
    assert "did you mean 'addition'" in out.stderr and "Traceback" not in out.stderr


def test_yaml_with_wrong_field_type_exits_2_naming_the_field(run_cli):
    out = run_cli("tasks", "--tasks-dir", str(FIXTURES / "badyaml"))
    assert out.returncode == 2
    assert "wrong_type.yaml" in out.stderr and "generation.max_new_tokens" in out.stderr
    assert "Traceback" not in out.stderr


def test_plugin_import_error_exits_2(run_cli):
    out = run_cli("tasks", "--tasks-dir", str(FIXTURES / "importerror"))
    assert out.returncode == 2 and "oops.py" in out.stderr and "not_a_real_module_xyz" in out.stderr


def test_selftest_fails_on_broken_checker_with_counterexample(run_cli):
    out = run_cli("selftest", "vacuous_addition", "--tasks-dir", str(FIXTURES / "broken"), "--level", "3",
                  "--max-examples", "40")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stdout and "rejects corruptions" in out.stdout and "PASSED for example" in out.stdout


def test_selftest_passes_on_a_shipped_task(run_cli):
    out = run_cli("selftest", "reverse", "multiple_choice", "--max-examples", "30")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all self-tests passed" in out.stdout


def test_bad_flag_exits_2(run_cli):
    out = run_cli("show", "addition", "-n", "many")
    assert out.returncode == 2 and "invalid int value" in out.stderr


def test_no_selected_tasks_exits_5(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    out = run_cli("tasks", "--tasks-dir", str(tmp_path / "empty"), "--no-entry-points")
    assert out.returncode == 5


def test_bundled_tasks_outside_a_project(run_cli, tmp_path):
    out = run_cli("tasks", cwd=tmp_path)
    assert out.returncode == 0 and "countdown" in out.stdout


@pytest.mark.slow
def test_selftest_all_shipped_tasks(run_cli):
    """The README's main job: every shipped task's checker passes its self-test."""
    out = run_cli("selftest", timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "all self-tests passed (7 task(s))" in out.stdout


def test_init_makes_a_working_project(run_cli, tmp_path):
    out = run_cli("init", str(tmp_path / "proj"))
    assert out.returncode == 0 and "created" in out.stdout
    proj = tmp_path / "proj"
    assert (proj / "tasks" / "double.py").is_file() and (proj / "finetune" / "double.yaml").is_file()
    listed = run_cli("tasks", "--json", "--no-entry-points", cwd=proj)
    assert [t["name"] for t in json.loads(listed.stdout)] == ["double"]
    assert run_cli("selftest", "--max-examples", "20", cwd=proj).returncode == 0
    from evalkit.train.recipe import load_recipe

    assert load_recipe(proj / "finetune" / "double.yaml").targets[0].task == "double"
    again = run_cli("init", str(proj))
    assert again.returncode == 0 and "nothing to do" in again.stdout
