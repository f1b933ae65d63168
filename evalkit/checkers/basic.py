"""Text checkers: exact strings, regular expressions, numbers and multiple-choice letters.

Every factory validates its parameters when it is called (a bad parameter raises
ValueError/TypeError naming it) and returns a pure `(example, answer) -> Verdict`. A checker
never raises on a strange answer: a malformed answer is a FAIL with a short reason. It may
raise ValueError at check time only when the *example* is unusable (a missing field, an
expected value that is not a number): scoring turns that into an ERROR verdict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

from evalkit.checkers import Check, expected, register
from evalkit.core.example import Example
from evalkit.core.task import normalize as _normalize
from evalkit.core.verdict import Verdict, verdict

NORMALISATIONS = ("strip", "casefold", "whitespace", "punctuation")


def short_repr(value: object, limit: int = 80) -> str:
    """repr() of `value` cut to about `limit` characters, so a long answer never floods a reason.

    repr() also escapes control characters, so an answer cannot inject terminal markup.
    """
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."
    try:
        text = repr(value)
    except ValueError:  # e.g. an int with more digits than sys.get_int_max_str_digits()
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _check_field(field: object) -> None:
    if field is not None and not isinstance(field, str):
        raise TypeError(f"field must be a field name (str) or None, got {type(field).__name__}")


def _not_str(answer: object) -> Verdict:
    return verdict(False, f"answer is {type(answer).__name__}, not str")


# -- exact ------------------------------------------------------------------------------
@register("exact")
def exact(field: str | None = None, normalize: str | Sequence[str] = ("strip",)) -> Check:
    """Pass iff the normalised answer equals the normalised expected value (str() of it).

    Args:
        field: the example field holding the expected value (default: the reference).
        normalize: names applied in order: strip, casefold, whitespace (collapse), punctuation (drop).
    """
    _check_field(field)
    steps = (normalize,) if isinstance(normalize, str) else normalize
    if not isinstance(steps, Sequence) or not all(isinstance(s, str) for s in steps):
        raise TypeError(f"normalize must be a list of names from {NORMALISATIONS}, got {normalize!r}")
    unknown = [s for s in steps if s not in NORMALISATIONS]
    if unknown:
        raise ValueError(f"normalize: unknown normalisation {unknown[0]!r}; expected any of {NORMALISATIONS}")
    steps = tuple(steps)

    def check(example: Example, answer: str) -> Verdict:
        if not isinstance(answer, str):
            return _not_str(answer)
        want = _normalize(str(expected(example, field)), steps)
        got = _normalize(answer, steps)
        if got == want:
            return verdict(True, "exact match")
        return verdict(False, f"expected {short_repr(want)}, got {short_repr(got)}")

    return check


# -- regex ------------------------------------------------------------------------------
# Placeholders are `{identifier}` only, so regex quantifiers such as `\d{3}` or `{1,3}` need
# no doubling; `\N{NAME}` (a named Unicode escape) is left alone.
_PLACEHOLDER = re.compile(r"(?<!\\N)\{([A-Za-z_]\w*)\}")
_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}
_MODES = ("fullmatch", "search")


@register("regex")
def regex(pattern: str, mode: str = "fullmatch", flags: str = "") -> Check:
    """Pass iff the answer matches `pattern` (whole answer for "fullmatch", anywhere for "search").

    Args:
        pattern: a Python regular expression; `{name}` is replaced by the example's field
            `name`, escaped, so it matches literally. A missing field raises ValueError at
            check time (an ERROR verdict).
        mode: "fullmatch" or "search".
        flags: letters i (ignore case), m (multiline), s (dot matches newline).
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if not isinstance(flags, str) or any(ch not in _FLAGS for ch in flags):
        raise ValueError(f"flags must be letters from 'ims', got {flags!r}")
    re_flags = 0
    for ch in flags:
        re_flags |= _FLAGS[ch]
    names = _PLACEHOLDER.findall(pattern)
    try:  # validate the syntax now, with each placeholder standing for a literal
        compiled = re.compile(_PLACEHOLDER.sub("x", pattern), re_flags)
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None

    def fill(match: re.Match[str], example: Example) -> str:
        try:
            return re.escape(str(example[match.group(1)]))
        except KeyError:
            raise ValueError(f"regex placeholder {{{match.group(1)}}}: example has no such field") from None

    def check(example: Example, answer: str) -> Verdict:
        if not isinstance(answer, str):
            return _not_str(answer)
        rx = re.compile(_PLACEHOLDER.sub(lambda m: fill(m, example), pattern), re_flags) if names else compiled
        if getattr(rx, mode)(answer) is not None:
            return verdict(True, "matches")
        how = "does not match" if mode == "fullmatch" else "has no match for"
        return verdict(False, f"{short_repr(answer)} {how} {short_repr(rx.pattern, 60)}")

    return check


# -- numeric ----------------------------------------------------------------------------
MAX_NUMBER_CHARS = 1000  # longer "numbers" are refused before any arithmetic
MAX_EXPONENT = 1000  # 1e999999999 would otherwise build a billion-digit integer

_INT = r"[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+"  # plain digits or correct thousands commas
_DECIMAL = re.compile(
    rf"(?P<sign>[+-]?)(?:(?P<int>{_INT})(?:\.(?P<frac>[0-9]*))?|\.(?P<frac2>[0-9]+))"
    r"(?:[eE](?P<exp>[+-]?[0-9]+))?"
)
_FRACTION = re.compile(rf"(?P<sign>[+-]?)(?P<num>{_INT})\s*/\s*(?P<den>{_INT})")
_NON_FINITE = {"nan", "inf", "infinity"}


def parse_number(text: str) -> Fraction:
    """Parse an int, decimal, scientific or fraction literal exactly.

    Accepts "1,234", "+5", "-0.25", ".5", "6.02e23", "3/4", "-3/4" (surrounding whitespace
    allowed). Only ASCII digits are accepted.

    Raises:
        ValueError: with a short reason ("not a number", "not a finite number", ...).
    """
    s = text.strip()
    if len(s) > MAX_NUMBER_CHARS:
        raise ValueError(f"not a number: too long ({len(s)} chars)")
    m = _FRACTION.fullmatch(s)
    if m:
        den = int(m["den"].replace(",", ""))
        if den == 0:
            raise ValueError("not a number: zero denominator")
        value = Fraction(int(m["num"].replace(",", "")), den)
        return -value if m["sign"] == "-" else value
    m = _DECIMAL.fullmatch(s)
    if not m:
        if s.lower().lstrip("+-") in _NON_FINITE:
            raise ValueError("not a finite number")
        raise ValueError("not a number")
    exp = int(m["exp"] or 0)
    if abs(exp) > MAX_EXPONENT:
        raise ValueError(f"not a number: exponent beyond ±{MAX_EXPONENT}")
    frac = m["frac"] or m["frac2"] or ""
    mantissa = int(((m["int"] or "").replace(",", "") + frac) or "0")
    exp -= len(frac)
    value = Fraction(mantissa * 10**exp) if exp >= 0 else Fraction(mantissa, 10**-exp)
    return -value if m["sign"] == "-" else value


def _as_fraction(value: Any, what: str) -> Fraction:
    """An expected value or tolerance as an exact Fraction (ValueError if it is not a finite number)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if isinstance(value, (int, Fraction)):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} must be finite, got {value!r}")
        return Fraction(repr(value))  # the decimal the author wrote, not its binary approximation
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{what} must be finite, got {value!r}")
        return Fraction(value)
    try:
        return parse_number(str(value))
    except ValueError as exc:
        raise ValueError(f"{what} {short_repr(value)} is {exc}") from None


def _tolerance(value: object, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return _as_fraction(value, name)


@register("numeric")
def numeric(field: str | None = None, abs_tol: float = 0.0, rel_tol: float = 0.0) -> Check:
    """Pass iff the answer is a number within tolerance of the expected one.

    Numbers are parsed exactly (see `parse_number`), so "0.5" equals "1/2" with zero
    tolerance. Pass iff |answer - expected| <= max(abs_tol, rel_tol * |expected|).

    Args:
        field: the example field holding the expected value (default: the reference).
        abs_tol, rel_tol: tolerances, >= 0.
    """
    _check_field(field)
    a_tol, r_tol = _tolerance(abs_tol, "abs_tol"), _tolerance(rel_tol, "rel_tol")

    def check(example: Example, answer: str) -> Verdict:
        if not isinstance(answer, str):
            return _not_str(answer)
        raw = expected(example, field)
        want = _as_fraction(raw, "expected value")
        try:
            got = parse_number(answer)
        except ValueError as exc:
            return verdict(False, f"{exc}: {short_repr(answer)}")
        if abs(got - want) <= max(a_tol, r_tol * abs(want)):
            return verdict(True, "equal" if got == want else "within tolerance")
        return verdict(False, f"expected {short_repr(str(raw))}, got {short_repr(answer.strip())}")

    return check


# -- choice -----------------------------------------------------------------------------
_TOKEN = r"(?P<open>[(\[]?)(?P<letter>[A-Za-z])(?P<close>[)\]]?)"
_BARE = re.compile(rf"{_TOKEN}[.:]?")  # the whole answer: "B", "(b)", "B.", "B)"
# A letter that starts the answer and is set off: "B) text", "B. text", "(B) text", "B\n...".
_LEADING = re.compile(rf"{_TOKEN}(?:(?<=[)\]])[.:]?|[.:])?(?:(?<=[.:)\]])(?=\s)|(?=[ \t]*\n))")
# "Answer: B", "The answer is (B)", "correct option is C", "Choice: d."
_PHRASE = re.compile(rf"(?i:\b(?:answer|option|choice)\b(?:\s+is)?\s*[:\-]?\s*(?:option\s+|choice\s+)?){_TOKEN}"
                     r"(?![A-Za-z0-9])")
# "... A or B", "A and B", "A/B": more than one choice offered.
_ALTERNATIVE = re.compile(rf"\s*(?:or|and|/|&)\s*{_TOKEN}(?![A-Za-z0-9])", re.IGNORECASE)
_STANDALONE = re.compile(r"(?<![A-Za-z0-9])(?:\(([A-Za-z])\)|([A-Z]))(?![A-Za-z0-9])")


def _offered(m: re.Match[str]) -> bool:
    """Whether a phrase match really offers a letter: a lowercase one must be bracketed or end a
    clause, so "the answer is a bit unclear" is not read as A."""
    if m["letter"].isupper() or m["open"]:
        return True
    rest = m.string[m.end():m.end() + 1]
    return rest == "" or rest in ".!?;:,)"


def _read_choice(answer: str) -> tuple[str | None, str]:
    """The one letter the answer picks (upper-cased), or None and why not."""
    text = answer.replace("*", "").replace("`", "").strip()  # markdown emphasis: "**B**"
    m = _BARE.fullmatch(text) or _LEADING.match(text)
    found = [m] if m else [p for p in _PHRASE.finditer(text) if _offered(p)]
    if found:
        letters = sorted({p["letter"].upper() for p in found})
        if len(letters) == 1 and not any(_ALTERNATIVE.match(text, p.end()) for p in found):
            return letters[0], ""
        return None, f"ambiguous choice in {short_repr(answer)}"
    standalone = {a or b for a, b in _STANDALONE.findall(text)}
    if len(standalone) > 1:
        return None, f"ambiguous choice in {short_repr(answer)}"
    return None, f"no choice letter in {short_repr(answer)}"


def _expected_letter(value: Any, letters: str) -> str:
    if isinstance(value, bool):
        raise ValueError(f"expected choice must be a letter or an index, got {value!r}")
    if isinstance(value, int):
        index = value
    else:
        s = str(value).strip()
        if not (s.isascii() and s.isdigit()):
            m = _BARE.fullmatch(s)
            if m and m["letter"].upper() in letters:
                return m["letter"].upper()
            raise ValueError(f"expected choice {short_repr(value)} is not one of {letters} nor an index")
        index = int(s)
    if not 0 <= index < len(letters):
        raise ValueError(f"expected choice index {index} is out of range for {letters}")
    return letters[index]


@register("choice")
def choice(field: str | None = None, letters: str | Sequence[str] = "ABCDEFGHIJ") -> Check:
    """Pass iff the answer picks exactly one choice letter and it is the expected one.

    Read strictly: "B", "b", "(B)", "B)", "B.", "B) text", "Answer: B", "The answer is (B)".
    "A or B" is ambiguous and "BX" or "Banana" pick nothing: both fail.

    Args:
        field: the example field holding the expected value (default: the reference); a
            letter, or an index (0 is the first letter).
        letters: the choice letters, distinct ASCII letters (case-insensitive).
    """
    _check_field(field)
    if not isinstance(letters, (str, Sequence)) or not letters:
        raise ValueError(f"letters must be a non-empty string of letters, got {letters!r}")
    if not all(isinstance(c, str) and len(c) == 1 and c.isascii() and c.isalpha() for c in letters):
        raise ValueError(f"letters must be single ASCII letters, got {letters!r}")
    allowed = "".join(letters).upper()
    if len(set(allowed)) != len(allowed):
        raise ValueError(f"letters must be distinct (ignoring case), got {letters!r}")

    def check(example: Example, answer: str) -> Verdict:
        if not isinstance(answer, str):
            return _not_str(answer)
        want = _expected_letter(expected(example, field), allowed)
        got, why = _read_choice(answer)
        if got is None:
            return verdict(False, why)
        if got not in allowed:
            return verdict(False, f"{got!r} is not one of the choices {allowed}")
        if got == want:
            return verdict(True, f"chose {got}")
        return verdict(False, f"expected {want!r}, got {got!r}")

    return check
