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


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "finetune").glob("*.yaml")))
def test_shipped_recipes_validate(recipe):
    from evalkit.recipe import load_recipe

    assert load_recipe(REPO / "finetune" / recipe).targets


def test_shipped_gate_validates():
    from evalkit.gate import load_gate

    assert "addition" in load_gate(REPO / "gate.yaml").rules


def test_python_m_evalkit_and_version():
    out = subprocess.run([sys.executable, "-m", "evalkit", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("evalkit ")
