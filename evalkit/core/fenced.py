"""Markdown code fences, and the code or JSON in them: what instruct models wrap their answers in.

    fenced_blocks(text)            # the ```blocks```: (language, code) in order
    code_block("python")(output)   # the code of the first python block, else of the first block
    json_value(output)             # the JSON object/array: fenced, else the first one in the prose

Part of the extractors for models that talk (`evalkit.core.extractors`); linear scans with capped work.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

Extractor = Callable[[str], str]

# -- fenced blocks --------------------------------------------------------------------------
# An opening fence: ``` or ~~~ (3 or more) at the start of a line with an optional info string, or ```
# after text on the line and followed by at most a language ("Sure! ```python").
_OPEN_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$"
    r"|^[^`~\n]*?[^\s`~][ \t]*(?P<fence2>`{3,})(?P<info2>[ \t]*[\w+#.\-]*[ \t]*)$",
    re.MULTILINE,
)
MAX_BLOCKS = 200  # fenced blocks looked at; an output with more is not answering


def _closing_fence(char: str, length: int) -> re.Pattern[str]:
    c = re.escape(char)
    # A line of the fence alone, or the fence glued to the end of the last code line ("    return x```").
    return re.compile(rf"^[ \t]*{c}{{{length},}}[ \t]*$|(?<=[^\s`~]){c}{{{length},}}[ \t]*$", re.MULTILINE)


def _dedent(body: str, indent: int) -> str:
    if not indent:
        return body
    return "\n".join(line[min(indent, len(line) - len(line.lstrip(" \t"))):] for line in body.split("\n"))


def _tidy(code: str) -> str:
    """Without leading blank lines and trailing whitespace; indentation kept."""
    return re.sub(r"\A(?:[ \t]*\n)+", "", code).rstrip()


def fenced_blocks(text: str) -> Iterator[tuple[str, str]]:
    """The fenced code blocks of markdown text, in order: (language, code).

    `language` is the first word of the info string, lowercased ("" when untagged); `code` is what lies
    between the fences, de-indented by the opening fence's indentation, without leading blank lines and
    trailing whitespace. A fence that is never closed runs to the end of the text (a truncated output).
    """
    if "```" not in text and "~~~" not in text:
        return
    pos = 0
    for _ in range(MAX_BLOCKS):
        m = _OPEN_FENCE.search(text, pos)
        if not m:
            return
        fence = m["fence"] or m["fence2"]
        info = (m["info"] if m["fence"] else m["info2"]).split()
        start = m.end() + 1
        close = _closing_fence(fence[0], len(fence)).search(text, start) if start <= len(text) else None
        body = text[start:close.start()] if close else text[start:]
        yield (info[0].lower() if info else ""), _tidy(_dedent(body, len(m["indent"] or "")))
        if not close:
            return
        pos = close.end()


_ALIASES = {"py": "python", "python3": "python", "py3": "python", "js": "javascript", "node": "javascript",
            "ts": "typescript", "sh": "bash", "shell": "bash", "zsh": "bash", "c++": "cpp", "cs": "csharp",
            "c#": "csharp", "yml": "yaml", "rs": "rust", "golang": "go"}


def _language(name: str) -> str:
    name = name.lower().strip("{}.")
    return _ALIASES.get(name, name)


def code_block(language: str | None = None, fallback: bool = True) -> Extractor:
    """An extractor of the code in the output's first fenced block (```), preferring `language`.

    With `language` ("python"; aliases such as "py", "python3" count), the first block tagged with it
    is taken, else the first block whatever its tag. The code is returned without the fences, leading
    blank lines and trailing whitespace; indentation is kept. An unclosed fence runs to the end.

    Output with no fence at all: with `fallback` (the default) the whole output, tidied the same way,
    so one extractor serves instruct models (fenced code) and completion models (bare code, as in
    HumanEval); with `fallback=False`, "".
    """
    if language is not None and (not isinstance(language, str) or not language.strip()):
        raise ValueError(f"language must be a non-empty string, got {language!r}")
    if not isinstance(fallback, bool):
        raise ValueError(f"fallback must be true or false, got {fallback!r}")
    want = _language(language) if language else None

    def extract(output: str) -> str:
        first = None
        for tag, code in fenced_blocks(output):
            if want is None or _language(tag) == want:
                return code
            if first is None:
                first = code
        if first is not None:
            return first
        return _tidy(output) if fallback else ""

    extract.__name__ = f"code_block_{want or 'any'}"
    return extract


# -- JSON -----------------------------------------------------------------------------------
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is not a finite number")
    return value


# Strict JSON: no NaN / Infinity, no float overflowing to inf.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
_OPENING = re.compile(r"[{\[]")
_STRUCTURE = re.compile(r'[{}\[\]"]')
_IN_STRING = re.compile(r'["\\\n]')
MAX_JSON_CANDIDATES = 64  # bracketed spans tried that are not JSON, before giving up
MAX_SCAN_STEPS = 4096  # bracket and quote steps spent skipping spans that are not JSON


def _span_end(text: str, start: int, budget: list[int]) -> int:
    """The end of the bracketed span opening at `start` (quotes respected, so "}" in a string does not
    close it), or -1: never closed, or the scan budget is spent."""
    depth, pos = 0, start
    while budget[0] > 0:
        budget[0] -= 1
        m = _STRUCTURE.search(text, pos)
        if not m:
            return -1
        pos = m.end()
        if m.group() == '"':
            while budget[0] > 0:  # skip the string; one that never closes on its line was a stray quote
                budget[0] -= 1
                s = _IN_STRING.search(text, pos)
                if not s or s.group() == "\n":
                    break
                if s.group() == "\\":
                    pos = s.end() + 1
                    continue
                pos = s.end()
                break
        elif m.group() in "{[":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return pos
    return -1


def _decode(text: str, start: int) -> tuple[Any, int] | None:
    try:
        return _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; so is a 5000-digit int
        return None


def _first_top_level_json(text: str) -> tuple[Any, int, int] | None:
    """The first top-level JSON object or array in prose: (value, start, end), None if there is none.

    A bracketed span that is not JSON ("{curly braces}", "[1, 'x']") is skipped whole: a JSON value
    nested inside it is not the answer. A span that never closes (a truncated output) ends the search.
    """
    pos, budget = 0, [MAX_SCAN_STEPS]
    for _ in range(MAX_JSON_CANDIDATES):
        m = _OPENING.search(text, pos)
        if not m:
            return None
        found = _decode(text, m.start())
        if found is not None:
            return found[0], m.start(), found[1]
        pos = _span_end(text, m.start(), budget)
        if pos < 0:
            return None
    return None


def _canonical(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") cannot be written as UTF-8: escape it
        return json.dumps(value, sort_keys=True)
    except (ValueError, RecursionError):
        return ""


def json_value(output: str) -> str:
    """The output's JSON object or array, re-serialised canonically (sorted keys, `json.dumps` spacing,
    non-ASCII kept); "" when there is none.

    Where: the first fenced block whose whole content is one JSON object/array (```json or any fence),
    else the first top-level object/array in the text, fenced or embedded in prose ("Sure! {...} Hope
    this helps"). Strict JSON only: single quotes, trailing commas, comments, NaN and Infinity are not
    JSON; a bracketed span that is not JSON is skipped whole (a value nested inside it is not the
    answer); an object cut off by the token limit gives "".
    """
    for _, block in fenced_blocks(output):
        code = block.strip()
        if code[:1] in ("{", "["):
            found = _decode(code, 0)
            if found is not None and found[1] == len(code):
                return _canonical(found[0])
    top = _first_top_level_json(output)
    return _canonical(top[0]) if top else ""


__all__ = ["MAX_BLOCKS", "MAX_JSON_CANDIDATES", "MAX_SCAN_STEPS", "code_block", "fenced_blocks", "json_value"]
