"""Python-callable "models" for runner tests (importable via python:helpers.slow_model:FN)."""

import os
import re
import time


def adder(prompt: str) -> str:
    """Right on even sums, off by one on odd ones: a model with a known 50-ish % pass rate."""
    m = re.fullmatch(r"(\d+)\+(\d+)=", prompt)
    if not m:
        return "?"
    total = int(m.group(1)) + int(m.group(2))
    return str(total if total % 2 == 0 else total + 1) + "\n"


def slow_adder(prompt: str) -> str:
    time.sleep(float(os.environ.get("SLOW_ADDER_DELAY", "0.02")))
    return adder(prompt)
