"""Argparse types for numbers in a range, shared by the command line and the pytest plugin.

Each raises `argparse.ArgumentTypeError` with the range expected, which argparse turns into a usage
error (exit 2) naming the option.
"""

from __future__ import annotations

import argparse
import math


def _number(text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def significance(text: str) -> float:
    """A significance level: a number in the open interval (0, 1)."""
    value = _number(text, "a number in (0, 1)")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def unit_float(text: str) -> float:
    """A rate or threshold: a number in the closed interval [0, 1]."""
    value = _number(text, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A count: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
