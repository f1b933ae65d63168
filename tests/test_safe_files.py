"""Safe files and honest exit codes (issue 14): YAML aliases bounded in every user file, C1 control characters
escaped on the terminal, record.json written with the permissions of its siblings, a training output folder
proven writable before any model is loaded, `evalkit run` exit 1 on a missed target, and the oracle refusing a
task it has no answer for."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FIXTURES, TASKS

from evalkit._text import safe_text
from evalkit._yaml import MAX_ALIAS_EXPANSION, read_yaml
from evalkit.discovery.registry import load_path
from evalkit.errors import ConfigError
from evalkit.models.python import PythonCallableBackend
from evalkit.run.runner import evaluate

sys.path.insert(0, str(Path(__file__).parent))

# Nine levels of nine aliases: 28 nodes on disk, 9**9 (387 million) strings to anything that walks it.
BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))


def test_read_yaml_refuses_an_alias_bomb_and_a_recursive_alias(tmp_path):
    (tmp_path / "bomb.yaml").write_text(BOMB)
    with pytest.raises(ConfigError, match=r"bomb\.yaml: its aliases expand it to .* an alias bomb, refused"):
        read_yaml(tmp_path / "bomb.yaml")
    (tmp_path / "loop.yaml").write_text("rows: &r\n  - 1\n  - *r\n")
    with pytest.raises(ConfigError, match=r"loop\.yaml: an alias refers to a node that contains it \(line 1"):
        read_yaml(tmp_path / "loop.yaml")


def test_read_yaml_keeps_ordinary_anchors_and_merge_keys(tmp_path):
    (tmp_path / "ok.yaml").write_text("base: &b {x: 1, y: [1, 2]}\none:\n  <<: *b\n  z: 3\ntwo: *b\n")
    assert read_yaml(tmp_path / "ok.yaml") == {"base": {"x": 1, "y": [1, 2]}, "one": {"x": 1, "y": [1, 2], "z": 3},
                                               "two": {"x": 1, "y": [1, 2]}}
    # At the bound: aliases may add MAX_ALIAS_EXPANSION nodes, and not one more.
    for extra, refused in ((0, False), (1, True)):
        count = MAX_ALIAS_EXPANSION + extra  # *s copies one scalar: one node per alias
        (tmp_path / "edge.yaml").write_text("s: &s x\nl: [" + ", ".join(["*s"] * count) + "]\n")
        if refused:
            with pytest.raises(ConfigError, match="alias bomb"):
                read_yaml(tmp_path / "edge.yaml")
        else:
            assert len(read_yaml(tmp_path / "edge.yaml")["l"]) == count


def _bombed(kind: str, tmp_path: Path) -> tuple[Path, object]:
    """A user file of `kind` whose only flaw is the bomb, and the function that reads it."""
    from evalkit.discovery.yamltask import load_yaml_task
    from evalkit.experiment.plan import load_experiment
    from evalkit.gate import load_gate
    from evalkit.lmeval.importer import load_lmeval_task
    from evalkit.train.recipe import load_recipe

    path = tmp_path / f"{kind}.yaml"
    path.write_text(BOMB.replace("a: &a", "x_a: &a"))
    return path, {"task": load_yaml_task, "recipe": load_recipe, "gate": load_gate, "experiment": load_experiment,
                  "lm-eval import": load_lmeval_task}[kind]


@pytest.mark.parametrize("kind", ["task", "recipe", "gate", "experiment", "lm-eval import"])
def test_every_user_yaml_file_refuses_the_bomb_before_validating_it(tmp_path, kind):
    path, read = _bombed(kind, tmp_path)
    with pytest.raises(ConfigError, match="alias bomb") as info:
        read(path)  # type: ignore[operator]
    assert str(path) in str(info.value)


def test_a_bomb_in_a_task_folder_is_exit_2_not_a_hang(run_cli, tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "laughs.yaml").write_text(BOMB)
    out = run_cli("tasks", "--tasks-dir", str(tmp_path / "tasks"), "--no-entry-points", timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "laughs.yaml" in out.stderr and "alias bomb" in out.stderr and "Traceback" not in out.stderr


def test_safe_text_escapes_every_c1_control():
    for code in range(0x80, 0xA0):
        assert safe_text(f"a{chr(code)}b").plain == f"a\\x{code:02x}b"
    assert safe_text("\x9b31mred\x9b0m é ü ¡").plain == "\\x9b31mred\\x9b0m é ü ¡"  # U+00A0 on: printable


def test_a_c1_csi_in_model_output_reaches_the_terminal_escaped(run_cli, tmp_path):
    def hostile(prompt: str) -> str:
        return "\x9b2J\x9b31mgotcha\x1b[0m"

    addition = load_path(TASKS / "addition.py")[0]
    evaluate(tasks=[addition], backend=PythonCallableBackend(hostile), n=3, run_dir=tmp_path / "run")
    out = run_cli("report", str(tmp_path / "run"), "-v")
    assert out.returncode == 0, out.stderr
    assert "\\x9b31mgotcha" in out.stdout
    assert not any(0x80 <= ord(c) <= 0x9F or c == "\x1b" for c in out.stdout)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_record_json_gets_the_permissions_of_its_siblings(tmp_path, umask):
    addition = load_path(TASKS / "addition.py")[0]
    old = os.umask(umask)
    try:
        record = evaluate(tasks=[addition], backend=PythonCallableBackend(lambda p: "1"), n=3,
                          run_dir=tmp_path / "run")
        (tmp_path / "plain.txt").write_text("a file made the ordinary way")
    finally:
        os.umask(old)
    assert record.path is not None
    expected = 0o666 & ~umask
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "plain.txt") == expected
    assert {p.name: mode(p) for p in record.path.iterdir()} == {p.name: expected for p in record.path.iterdir()}
    assert {"record.json", "samples.jsonl", "journal.jsonl"} <= {p.name for p in record.path.iterdir()}
    assert not [p for p in record.path.iterdir() if p.name.startswith(".")]  # no temporary file left


# -- training output folders -----------------------------------------------------------------------------------

def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text((FIXTURES / "ft" / "quick.yaml").read_text())
    return path


def _read_only(folder: Path) -> None:
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        (folder / "probe").write_text("")
    except OSError:
        return
    (folder / "probe").unlink()
    folder.chmod(0o755)
    pytest.skip("this user writes into read-only folders (root): the blocked-path cases cover it")


@pytest.mark.parametrize("how", ["checkpoints is a file", "read-only checkpoints", "read-only output",
                                 "output under a file"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_training(tmp_path, how):
    pytest.importorskip("torch")
    from evalkit.discovery.registry import discover
    from evalkit.train import finetune

    out = tmp_path / "out"
    blocked = {"checkpoints is a file": out / "checkpoints", "read-only checkpoints": out / "checkpoints",
               "read-only output": out, "output under a file": tmp_path / "out"}[how]
    if how == "checkpoints is a file":
        out.mkdir()
        (out / "checkpoints").write_text("not a folder")
    elif how == "output under a file":
        out.write_text("not a folder")
        out = out / "run"
    else:
        _read_only(blocked)
    try:
        with pytest.raises(ConfigError) as info:
            finetune(_recipe(tmp_path), output=out, registry=discover([FIXTURES / "ft" / "tasks.py"],
                                                                      entry_points=False))
    finally:
        if blocked.is_dir():
            blocked.chmod(0o755)
    message = str(info.value)
    assert "recipe.yaml: field 'output'" in message and "is not writable" in message and str(blocked) in message
    # Refused before the data, tokenizer or model were made: nothing of a run was written.
    if out.is_dir():
        assert not {"tokenizer", "data.json", "evals", "model"} & {p.name for p in out.iterdir()}


def test_cli_finetune_into_a_blocked_folder_exits_2(run_cli, tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoints").write_text("not a folder")
    out = run_cli("finetune", str(_recipe(tmp_path)), "--output", str(tmp_path / "out"), "--tasks-dir",
                  str(FIXTURES / "ft" / "tasks.py"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{tmp_path / 'out' / 'checkpoints'} is not writable" in out.stderr.replace("\n", "")
    assert "Traceback" not in out.stderr


# -- `evalkit run` exit codes, and the oracle ----------------------------------------------------------------------

NO_REFERENCE = textwrap.dedent('''
    from evalkit import task, verdict

    @task(name="opinion", target=0.5)
    class Opinion:
        """No reference: any non-empty answer passes, so only a model can answer it."""
        def rows(self):
            return [{"q": f"what do you think of {i}?"} for i in range(5)]
        def prompt(self, ex):
            return ex["q"]
        def check(self, ex, answer):
            return verdict(bool(answer.strip()))

    @task(name="untargeted")
    class Untargeted:
        def rows(self):
            return [{"q": str(i)} for i in range(5)]
        def prompt(self, ex):
            return ex["q"]
        def reference(self, ex):
            return "right"
        def check(self, ex, answer):
            return verdict(answer == "right")
''')


def test_evalkit_run_exits_1_when_a_task_misses_its_target(run_cli, tmp_path):
    env_args = ("--tasks-dir", str(TASKS / "addition.py"), "-n", "40", "--reports-dir", str(tmp_path / "r"))
    half = run_cli("run", "--model", "python:helpers.slow_model:adder", "--task", "addition", *env_args,
                   cwd=Path(__file__).parent)
    assert half.returncode == 1, half.stdout + half.stderr  # right on even sums only: far below the 95 % target
    assert "target missed: addition: pass rate" in half.stdout and "< target 95.0%" in half.stdout
    record = json.loads(next((tmp_path / "r").glob("*/record.json")).read_text())
    assert record["tasks"][0]["meets_target"] is False and record["tasks"][0]["rate"] < 0.95
    ok = run_cli("run", "--model", "oracle", "--task", "addition", *env_args)
    assert ok.returncode == 0 and "target missed" not in ok.stdout, ok.stdout + ok.stderr


def test_a_task_without_a_target_misses_nothing(run_cli, tmp_path):
    (tmp_path / "tasks.py").write_text(NO_REFERENCE)
    (tmp_path / "wrong.py").write_text("def answer(prompt):\n    return 'wrong'\n")
    out = run_cli("run", "--model", "python:wrong:answer", "--task", "untargeted", "--tasks-dir",
                  str(tmp_path / "tasks.py"), "--reports-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(next((tmp_path / "r").glob("*/record.json")).read_text())["tasks"][0]["rate"] == 0.0


def test_the_oracle_refuses_a_task_without_a_reference(run_cli, tmp_path):
    (tmp_path / "tasks.py").write_text(NO_REFERENCE)
    args = ("--model", "oracle", "--tasks-dir", str(tmp_path / "tasks.py"), "--reports-dir", str(tmp_path / "r"))
    out = run_cli("run", *args, "--task", "opinion")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "task 'opinion' has no reference answer" in out.stderr.replace("\n", " ")
    assert "Traceback" not in out.stderr
    gate = run_cli("gate", *args, "--task", "opinion", "--task-targets")  # not the repo's gate.yaml
    assert gate.returncode == 2 and "task 'opinion' has no reference answer" in gate.stderr.replace("\n", " ")
    fine = run_cli("run", *args, "--task", "untargeted")
    assert fine.returncode == 0, fine.stdout + fine.stderr
