"""Answer extraction: from a model's raw output to the answer a checker sees.

Every extractor is a pure function `str -> str`. They never raise on odd input: a
missing answer is the empty string, which checkers fail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from evalkit.core.extractors import choice_letter, code_block, first_integer, first_number, json_value, last_number

Extractor = Callable[[str], str]


def find_stop(output: str, stop: Sequence[str]) -> int:
    """Where the output ends: the index of the earliest stop string that starts at or after the output's
    first non-whitespace character, -1 when there is none.

    Leading whitespace never ends an answer: an instruct model that opens with a newline is not cut
    to nothing by the stop string "\n" (nor by "\n\n", "\n\n\n" ...); its first line is the answer.
    """
    start = len(output) - len(output.lstrip())
    end = -1
    for s in stop:
        if s:
            i = output.find(s, start)
            if i >= 0 and (end < 0 or i < end):
                end = i
    return end


def cut_at_stop(output: str, stop: Sequence[str]) -> str:
    """Cut the output at the earliest stop string (the stop string itself excluded), ignoring stop strings
    inside its leading whitespace (`find_stop`)."""
    end = find_stop(output, stop)
    return output if end < 0 else output[:end]


def strip(output: str) -> str:
    return output.strip()


def rstrip(output: str) -> str:
    """Trailing whitespace only: keeps the indentation of code answers."""
    return output.rstrip()


def first_line(output: str) -> str:
    for line in output.splitlines():
        if line.strip():
            return line.strip()
    return ""


def last_line(output: str) -> str:
    for line in reversed(output.splitlines()):
        if line.strip():
            return line.strip()
    return ""


def regex(pattern: str, group: int | str = 0, flags: str = "", last: bool = False) -> Extractor:
    """Extract the first (or last) match of `pattern`, returning `group`; "" when none."""
    fl = 0
    for ch in flags:
        fl |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}[ch]
    rx = re.compile(pattern, fl)

    def extract(output: str) -> str:
        matches = list(rx.finditer(output)) if last else [m for m in [rx.search(output)] if m]
        if not matches:
            return ""
        value = matches[-1].group(group)
        return (value or "").strip()

    return extract


_decoder = json.JSONDecoder()
_MAX_JSON_ATTEMPTS = 64


def find_json(text: str) -> Any:
    """The first JSON object or array in `text` (code fences and prose around it allowed).

    Raises:
        ValueError: when there is none.
    """
    # A JSON value ends with its closing bracket: nothing after the last one can belong to it.
    # Capping failed attempts keeps hostile outputs ("{" * 100_000) linear instead of quadratic.
    end = max(text.rfind("}"), text.rfind("]")) + 1
    text = text[:end]
    attempts = 0
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                value, _ = _decoder.raw_decode(text, i)
                return value
            except json.JSONDecodeError:
                attempts += 1
                if attempts >= _MAX_JSON_ATTEMPTS:
                    break
    raise ValueError("no JSON object or array found")


def normalize(text: str, how: Iterable[str]) -> str:
    """Apply named normalisations: strip, casefold, whitespace (collapse), punctuation (drop)."""
    for step in how:
        if step == "strip":
            text = text.strip()
        elif step == "casefold":
            text = text.casefold()
        elif step == "whitespace":
            text = " ".join(text.split())
        elif step == "json":
            # Same JSON value, whatever the spacing or key order (and prose around it).
            text = json_value(text) or text
        elif step == "punctuation":
            text = "".join(ch for ch in text if ch.isalnum() or ch.isspace())
        else:
            raise ValueError(f"unknown normalisation {step!r}; expected strip, casefold, whitespace, punctuation, json")
    return text


BY_NAME: dict[str, Callable[..., Extractor]] = {
    "strip": lambda: strip,
    "rstrip": lambda: rstrip,
    "first_line": lambda: first_line,
    "last_line": lambda: last_line,
    "regex": regex,
    "json": lambda: json_value,
    "last_number": lambda: last_number,
    # Extractors for models that talk (evalkit/core/extractors.py): answers in prose, markdown and fences.
    "first_number": lambda: first_number,
    "first_integer": lambda: first_integer,
    "choice": choice_letter,
    "code_block": code_block,
}


def make_extractor(spec: str | dict[str, Any] | Extractor | None) -> Extractor:
    """Build an extractor from a name, a `{"type": name, **params}` mapping or a callable."""
    if spec is None:
        return strip
    if callable(spec):
        return spec
    if isinstance(spec, str):
        spec = {"type": spec}
    params = dict(spec)
    kind = params.pop("type")
    if kind not in BY_NAME:
        raise ValueError(f"unknown extractor {kind!r}; expected one of {sorted(BY_NAME)}")
    return BY_NAME[kind](**params)
