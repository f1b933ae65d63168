"""Python values as JSON that keeps their types: tuples, sets, fractions, decimals and dicts with
non-string keys come back as they were.

An example's fields must be JSON (they are journaled, and a rescore rebuilds the example from them), but
a library's checker may compare with the exact types it generated: reasoning-gym's ARC scorers compare a
parsed board (a tuple of tuples) with the stored one, so a list of lists would fail every answer.

    encode((1, 2))            -> {"__tuple__": [1, 2]}
    encode({3: "x"})          -> {"__items__": [[3, "x"]]}
    encode(Fraction(1, 3))    -> {"__fraction__": [1, 3]}
    decode(encode(value)) == value, with the same types
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

TUPLE, SET, ITEMS, FRACTION, DECIMAL = "__tuple__", "__set__", "__items__", "__fraction__", "__decimal__"
MARKERS = (TUPLE, SET, ITEMS, FRACTION, DECIMAL)


def encode(value: Any, where: str = "value") -> Any:
    """`value` as JSON-serialisable data that `decode` turns back into it.

    Raises:
        TypeError: a value of another type (an object, bytes), or a float that is not finite:
            storing its text instead would change what the checker compares.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{where} is {value!r}, which JSON cannot hold")
        return value
    if isinstance(value, Fraction):
        return {FRACTION: [value.numerator, value.denominator]}
    if isinstance(value, Decimal):
        return {DECIMAL: str(value)}
    if isinstance(value, list):
        return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {TUPLE: [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, (set, frozenset)):
        items = [encode(v, f"{where}{{}}") for v in value]
        return {SET: sorted(items, key=repr)}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not (len(value) == 1 and next(iter(value)) in MARKERS):
            return {k: encode(v, f"{where}.{k}") for k, v in value.items()}
        return {ITEMS: [[encode(k, f"{where} key"), encode(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    raise TypeError(f"{where} is a {type(value).__name__}, which evalkit cannot store as JSON")


def decode(data: Any) -> Any:
    """The value that `encode` made `data` from."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if isinstance(data, dict):
        if len(data) == 1:
            key, inner = next(iter(data.items()))
            if key == TUPLE:
                return tuple(decode(v) for v in inner)
            if key == SET:
                return {decode(v) for v in inner}
            if key == ITEMS:
                return {decode(k): decode(v) for k, v in inner}
            if key == FRACTION:
                return Fraction(*inner)
            if key == DECIMAL:
                return Decimal(inner)
        return {k: decode(v) for k, v in data.items()}
    return data


__all__ = ["decode", "encode"]
