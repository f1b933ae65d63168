"""Type-strict comparison of decoded values, done in the trusted parent.

`strict_equal(expected, actual)` is equality with exact types at every level: True is not
1, 1 is not 1.0, a tuple is not a list, and set members and dict keys are matched by type
as well as value. Floats may be given a tolerance (both values must still be floats);
NaN equals NaN. Values are builtins decoded by `_wire.decode`, so no comparison here can
call code the program wrote.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

from evalkit.sandbox._wire import canonical

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlong = 60
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = _repr.maxfrozenset = 8


def strict_equal(expected: Any, actual: Any, abs_tol: float = 0.0, rel_tol: float = 0.0) -> bool:
    """Equal with exact types; floats within `abs_tol`/`rel_tol` (math.isclose)."""
    t = type(expected)
    if t is not type(actual):
        return False
    if t is float:
        if expected != expected or actual != actual:
            return expected != expected and actual != actual
        if abs_tol or rel_tol:
            return math.isclose(expected, actual, rel_tol=rel_tol, abs_tol=abs_tol)
        return expected == actual
    if t is complex:
        return (strict_equal(expected.real, actual.real, abs_tol, rel_tol)
                and strict_equal(expected.imag, actual.imag, abs_tol, rel_tol))
    if t is list or t is tuple:
        return len(expected) == len(actual) and all(
            strict_equal(e, a, abs_tol, rel_tol) for e, a in zip(expected, actual))
    if t is dict:
        if len(expected) != len(actual):
            return False
        keyed = {canonical(k): v for k, v in actual.items()}
        for k, v in expected.items():
            ck = canonical(k)
            if ck not in keyed or not strict_equal(v, keyed[ck], abs_tol, rel_tol):
                return False
        return True
    if t is set or t is frozenset:
        return {canonical(v) for v in expected} == {canonical(v) for v in actual}
    return bool(expected == actual)


def describe(value: Any) -> str:
    """A short, printable `repr (type)` for verdict reasons."""
    text = _repr.repr(value)
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return f"{text} ({type(value).__name__})"
