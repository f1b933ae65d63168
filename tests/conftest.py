"""Shared fixtures: paths to the repo's tasks and test fixtures, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# See evalkit/cli/__init__.py: spinning OpenMP waits make torch crawl when pytest-xdist workers share cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "tasks"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def run_cli():
    """Run `python -m evalkit ARGS` in a real subprocess; returns CompletedProcess (text)."""

    def run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
        return subprocess.run([sys.executable, "-m", "evalkit", *args], cwd=cwd or REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return run
