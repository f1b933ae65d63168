"""The `evalkit` command (`evalkit.cli:main`; `python -m evalkit` runs it too)."""

import os

# OpenMP threads that spin while waiting make a small model 20-40x slower as soon as another
# process shares the cores (measured in bench/eval_throughput.py); torch reads this when it loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from evalkit.cli.app import main

__all__ = ["main"]
