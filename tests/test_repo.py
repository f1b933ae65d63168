"""The repository's own contract: README commands, shipped recipes and gate, packaging metadata."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- commands -->", 1)[1].split("<!-- /commands -->", 1)[0]
    return [line for line in block.splitlines() if line.startswith(("python3", ".venv/"))]


def test_readme_has_exactly_two_commands_that_ci_runs():
    setup, tests = readme_commands()
    assert "torch==2.13.0" in setup and "evalkit finetune finetune/addition.yaml" in setup
    assert "evalkit gate reports/addition" in setup
    assert "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert "<!-- commands -->" in ci  # CI runs the README's lines, not a copy of them


def test_library_accepts_a_torch_range():
    text = (REPO / "pyproject.toml").read_text()
    assert re.search(r'"torch>=2\.\d+"', text) and "torch==" not in text


def _is_experiment(path) -> bool:
    import yaml

    return "recipe" in (yaml.safe_load(path.read_text()) or {})


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "finetune").glob("*.yaml")))
def test_shipped_recipes_and_experiments_validate(recipe):
    path = REPO / "finetune" / recipe
    if _is_experiment(path):
        from evalkit.experiment.plan import load_experiment

        assert load_experiment(path)
    else:
        import yaml

        from evalkit.errors import ConfigError
        from evalkit.models.store import KNOWN_MODELS, is_complete, models_dir
        from evalkit.train.recipe import load_recipe

        base = yaml.safe_load(path.read_text())["model"]["base"]
        if base in KNOWN_MODELS and not is_complete(models_dir() / base):  # not cached here: says how to get it
            with pytest.raises(ConfigError, match=f"model.base.*evalkit models get {base}"):
                load_recipe(path)
        else:
            assert load_recipe(path).targets


def test_readme_real_model_path_is_what_ci_gets():
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- real-model -->", 1)[1].split("<!-- /real-model -->", 1)[0]
    lines = [line.split("#")[0].strip() for line in block.splitlines() if line.startswith(".venv/bin/evalkit")]
    assert lines[0] == ".venv/bin/evalkit models get smollm2-135m-instruct"
    assert any(line.startswith(".venv/bin/evalkit finetune finetune/smollm2-addition.yaml") for line in lines)
    assert any(line.startswith(".venv/bin/evalkit gate reports/smollm2-addition") for line in lines)
    assert "<!-- real-model -->" in (REPO / ".ci" / "run").read_text()


def test_shipped_real_model_gate_validates():
    from evalkit.gate import load_gate

    gate = load_gate(REPO / "gate-smollm2.yaml")
    assert gate.rules["addition"].min_pass_rate == 0.9 and gate.run["chat"] is True


def test_shipped_gate_validates():
    from evalkit.gate import load_gate

    assert "addition" in load_gate(REPO / "gate.yaml").rules


def test_python_m_evalkit_and_version():
    out = subprocess.run([sys.executable, "-m", "evalkit", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("evalkit ")


@pytest.mark.slow
@pytest.mark.parametrize("script,extra", [("time_to_target.py", []), ("time_to_target.py", ["--seeds", "3,1"]),
                                          ("eval_throughput.py", [])])
def test_benchmarks_run_quick(script, extra, tmp_path):
    """Smoke test: the benchmarks' --quick mode runs end to end (numbers are not asserted)."""
    pytest.importorskip("lm_eval")
    args = [sys.executable, str(REPO / "bench" / script), "--quick", *extra]
    if script == "time_to_target.py":
        args.append("--no-append")
    else:
        args += ["--results", str(tmp_path / "RESULTS.md")]
    out = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "ratio" in out.stdout and "x" in out.stdout
    if extra:  # one row per seed, in the order given
        assert [line.split("|")[1].strip() for line in out.stdout.splitlines() if line.startswith("| ")
                and line.split("|")[1].strip().isdigit()] == ["3", "1"]
