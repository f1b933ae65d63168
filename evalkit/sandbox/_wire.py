"""Plain data across the sandbox boundary: tagged JSON, never pickle (stdlib only).

Both sides use this module: the parent imports it, and the supervisor carries a copy of its
source (see `_pool.supervisor_source`). Values are builtins of exact types — a subclass of
int, or any object with its own `__eq__`, is refused by `encode`, and `decode` only ever
builds fresh builtins — so nothing that crosses can run code or lie about equality.

JSON carries None, bool, int, float (finite), str, list and dicts with string keys as they
are. Everything else is a one-key object whose key is a tag:

    {"$tuple": [...]}  {"$set": [...]}  {"$frozenset": [...]}  {"$bytes": "<base64>"}
    {"$bytearray": "<base64>"}  {"$float": "nan" | "inf" | "-inf"}  {"$complex": [re, im]}
    {"$int": "<hex>"} (more than 4000 digits)  {"$dict": [[key, value], ...]}

A dict whose only key starts with "$" is sent as "$dict", so plain JSON objects are never
mistaken for tags. Expected values in task data may use the same tags (e.g. a tuple).
"""

import base64
import json
import math

MAX_DEPTH = 200
_BIG_INT = 10 ** 4000
_TAGS = ("$tuple", "$set", "$frozenset", "$bytes", "$bytearray", "$float", "$complex", "$int", "$dict")


def encode(value, _depth=0):
    """A JSON-able structure for `value`; TypeError for anything that is not plain data."""
    if _depth > MAX_DEPTH:
        raise ValueError("the value is nested too deeply")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -_BIG_INT < value < _BIG_INT else {"$int": hex(value)}
    if t is float:
        if math.isfinite(value):
            return value
        return {"$float": "nan" if value != value else ("inf" if value > 0 else "-inf")}
    d = _depth + 1
    if t is list:
        return [encode(v, d) for v in value]
    if t is tuple:
        return {"$tuple": [encode(v, d) for v in value]}
    if t is dict:
        if all(type(k) is str for k in value) and not (len(value) == 1 and next(iter(value)).startswith("$")):
            return {k: encode(v, d) for k, v in value.items()}
        return {"$dict": [[encode(k, d), encode(v, d)] for k, v in value.items()]}
    if t is set or t is frozenset:
        return {"$set" if t is set else "$frozenset": [encode(v, d) for v in value]}
    if t is bytes or t is bytearray:
        return {"$bytes" if t is bytes else "$bytearray": base64.b64encode(value).decode("ascii")}
    if t is complex:
        return {"$complex": [encode(value.real, d), encode(value.imag, d)]}
    raise TypeError(f"a {t.__name__}, which is not plain data (None, bool, int, float, complex, str, bytes, "
                    f"list, tuple, dict, set)")


def decode(data, _depth=0):
    """Fresh builtins from an `encode`d structure; ValueError/TypeError when malformed."""
    if _depth > MAX_DEPTH:
        raise ValueError("the value is nested too deeply")
    t = type(data)
    if data is None or t is bool or t is str or t is int:
        return data
    if t is float:
        return data
    d = _depth + 1
    if t is list:
        return [decode(v, d) for v in data]
    if t is not dict:
        raise TypeError(f"not a wire value: {t.__name__}")
    if len(data) == 1:
        (tag, inner), = data.items()
        if tag in _TAGS:
            return _decode_tag(tag, inner, d)
    return {str(k): decode(v, d) for k, v in data.items()}


def _decode_tag(tag, inner, d):
    if tag == "$float":
        if inner not in ("nan", "inf", "-inf"):
            raise ValueError(f"bad $float {inner!r}")
        return float(inner)
    if tag == "$int":
        if type(inner) is not str:
            raise ValueError("bad $int")
        return int(inner, 16)
    if tag in ("$bytes", "$bytearray"):
        if type(inner) is not str:
            raise ValueError(f"bad {tag}")
        raw = base64.b64decode(inner.encode("ascii"), validate=True)
        return raw if tag == "$bytes" else bytearray(raw)
    if type(inner) is not list:
        raise ValueError(f"bad {tag}")
    if tag == "$tuple":
        return tuple(decode(v, d) for v in inner)
    if tag == "$set":
        return {decode(v, d) for v in inner}
    if tag == "$frozenset":
        return frozenset(decode(v, d) for v in inner)
    if tag == "$complex":
        if len(inner) != 2:
            raise ValueError("bad $complex")
        re_, im = decode(inner[0], d), decode(inner[1], d)
        if type(re_) is not float or type(im) is not float:
            raise ValueError("bad $complex")
        return complex(re_, im)
    out = {}  # $dict
    for pair in inner:
        if type(pair) is not list or len(pair) != 2:
            raise ValueError("bad $dict")
        out[decode(pair[0], d)] = decode(pair[1], d)
    return out


def dumps(value):
    """`encode` then JSON, as bytes (ASCII: lone surrogates survive as escapes)."""
    return json.dumps(encode(value), allow_nan=False, separators=(",", ":")).encode("ascii")


def loads(raw):
    """Inverse of `dumps`; ValueError/TypeError/RecursionError when malformed."""
    return decode(json.loads(raw))


def canonical(value):
    """A string equal for two values iff they are equal with exact types (sets/dicts sorted)."""
    return json.dumps(_canon(value), allow_nan=False, separators=(",", ":"))


def _canon(value, _depth=0):
    if _depth > MAX_DEPTH:
        raise ValueError("the value is nested too deeply")
    t = type(value)
    d = _depth + 1
    if t is list:
        return ["list", [_canon(v, d) for v in value]]
    if t is tuple:
        return ["tuple", [_canon(v, d) for v in value]]
    if t is set or t is frozenset:
        return [t.__name__, sorted(json.dumps(_canon(v, d)) for v in value)]
    if t is dict:
        return ["dict", sorted([json.dumps(_canon(k, d)), _canon(v, d)] for k, v in value.items())]
    if t is float and value != value:
        return ["float", "nan"]
    if t is float and not math.isfinite(value):
        return ["float", "inf" if value > 0 else "-inf"]
    if t is float and value == 0:
        return ["float", 0.0]  # -0.0 == 0.0
    return [t.__name__, encode(value)]
