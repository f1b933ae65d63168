"""Extractors for models that talk: the answer out of prose, markdown and code fences.

Instruct models answer "17 + 25 = 42.", "The answer is **42**", "The correct answer is (B) Paris.",
"Sure! Here's the JSON:\\n```json\\n{...}\\n```". Each extractor here finds one kind of answer in such
text and returns it in one canonical spelling, or "" when the text holds no such answer, or more than
one where guessing would be needed. They never raise, and every scan is linear (bounded regexes, capped
work), so a 100 KB hostile output costs milliseconds.

`evalkit.core.extract` registers them by name (`extract: last_number` in a YAML task); the table in
docs/WRITING_TASKS.md says what each returns.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from evalkit.core.fenced import MAX_BLOCKS, MAX_JSON_CANDIDATES, MAX_SCAN_STEPS, code_block, fenced_blocks, json_value

Extractor = Callable[[str], str]

# -- numbers --------------------------------------------------------------------------------
# A number is a whole token: never digits inside a longer token whose meaning they do not carry.
_NUMBER = re.compile(
    r"""
    (?=[-+\u2212.0-9])(?=[-+\u2212]?\.?[0-9])  # cheap first tests: most characters start no number
    (?<![\w./])                              # not inside a token: x2, v1.2.3, 3.14 (the "14"), 1/2
    (?<![^\W\d_]-)                           # nor the end of a hyphenated name: COVID-19, GPT-4
    (?P<sign>[-+\u2212](?=\.?[0-9]))?        # a sign only right before the digits: -7, −7 (U+2212), +5
    (?P<body>
        (?:[0-9]{1,3}(?:,[0-9]{3}(?![0-9]))+ # 1,234,567 (groups of exactly three)
          |[0-9]+)
        (?P<frac>\.[0-9]+)?                  # 3.14
      | (?P<frac2>\.[0-9]+)                  # .5
    )
    (?P<exp>[eE][-+]?[0-9]+)?                # 6.02e23
    (?P<den>/[0-9]+)?                        # 3/4
    (?![./][0-9])                            # not followed by more of a token: 1.2.3, 12/25/2024
    (?![^\W\d_]*[\d_])                       # nor by letters then digits: 0x1F, 3a4
    (?![xX][0-9A-Fa-f])                      # nor hex: 0xFF
    (?!(?i:st|nd|rd|th)(?![^\W\d_]))         # and is not an ordinal: 3rd, 21st (a unit is fine: 5km)
    """,
    re.VERBOSE,
)


def _number_text(m: re.Match[str]) -> str:
    """One spelling: ASCII minus, no plus sign, no thousands separators."""
    sign = "-" if m["sign"] in ("-", "\u2212") else ""
    return sign + m.group(0).lstrip("+-\u2212").replace(",", "")


def _is_integer(m: re.Match[str]) -> bool:
    return not (m["frac"] or m["frac2"] or m["exp"] or m["den"])


_DIGITS = frozenset("0123456789")
_NUMBER_CHARS = _DIGITS | frozenset("-+\u2212.,eE/")
_GROUP = re.compile(r"[0-9]{3}(?![0-9])")
_TAIL = 256  # last_number reads the text from its end in chunks: 256 characters, then 16 times more


def _apart(text: str, i: int) -> bool:
    """Whether no number can hold both text[i - 1] and text[i]: a scan for numbers that starts at i then
    finds what a scan from the start of the text finds from i on (lookbehinds see the whole text)."""
    a, b = text[i - 1], text[i:i + 1]
    if a not in _NUMBER_CHARS or b not in _NUMBER_CHARS:
        return True
    if b in _DIGITS:  # a digit joins anything before it, except a comma that starts no group of three
        return a == "," and not _GROUP.match(text, i)
    if a in _DIGITS:
        return b not in ".eE/" and not (b == "," and _GROUP.match(text, i + 1))
    return not (a in "+-\u2212" and b == "." or a in "eE" and b in "+-")


def _scan_start(text: str, start: int) -> int:
    """A position at or a little before `start` where numbers can be scanned from (0 near the start),
    or -1 when there is none close by."""
    for i in range(start, max(start - 64, 0), -1):
        if _apart(text, i):
            return i
    return 0 if start <= 64 else -1


def last_number(output: str) -> str:
    """The last number in the text: "17 + 25 = 42." -> "42"; "" when there is none.

    For outputs that reason first and answer last (chain of thought). Integers, decimals ("3.14",
    ".5"), thousands separators ("1,234" -> "1234"), exponents ("6.02e23") and fractions ("3/4");
    signs "-", "+" and "−" (U+2212) give "-7" / "7". Digits inside a longer token are not a number:
    "x2", "v1.2.3", "COVID-19", "0xFF", "3rd", "12/25/2024" give nothing (a unit does not: "5km" -> "5").
    """
    n, chunk = len(output), _TAIL
    while True:  # the answer usually ends the text: read its end first, not every number before it
        start = _scan_start(output, n - chunk) if chunk < n else 0
        if start >= 0:
            last = None
            for last in _NUMBER.finditer(output, start):  # noqa: B007 - the loop finds the last match
                pass
            if last is not None or start == 0:
                return _number_text(last) if last else ""
        chunk *= 16


def numbers(output: str) -> list[str]:
    """Every number in the text, in order, read and spelled as `last_number` reads and spells them."""
    return [_number_text(m) for m in _NUMBER.finditer(output)]


def first_number(output: str) -> str:
    """The first number in the text, read as `last_number` reads numbers: "42. Because 17 + 25 = 42" -> "42"."""
    m = _NUMBER.search(output)
    return _number_text(m) if m else ""


def first_integer(output: str) -> str:
    """The first number in the text if it is an integer ("1,234" -> "1234", "-7"), else "".

    For outputs that answer first and may explain after ("42 apples, since 17 + 25 = 42"), or go on to
    invent the next question: "17 + 25 = 42" -> "17", so use `last_number` when the answer comes last.
    A first number that is not an integer ("3.5", "3/4", "1e3") gives "": the answer is not an integer,
    and skipping to a later number would be a guess.
    """
    m = _NUMBER.search(output)
    return _number_text(m) if m and _is_integer(m) else ""


# -- choice letters -------------------------------------------------------------------------
def _letters(letters: str | Sequence[str]) -> str:
    if isinstance(letters, str):
        items: Sequence[Any] = list(letters)
    elif isinstance(letters, Sequence):
        items = letters
    else:
        raise ValueError(f"letters must be a string of letters, got {letters!r}")
    if not items or not all(isinstance(c, str) and len(c) == 1 and c.isascii() and c.isalpha() for c in items):
        raise ValueError(f"letters must be single ASCII letters, e.g. ABCD; got {letters!r}")
    upper = "".join(items).upper()
    if len(set(upper)) != len(upper):
        raise ValueError(f"letters must be distinct (ignoring case), got {letters!r}")
    return upper


def _choice_patterns(allowed: str) -> dict[str, re.Pattern[str]]:
    up, any_case = f"[{allowed}]", f"[{allowed}{allowed.lower()}]"
    token = rf"(?P<open>[(\[]?)(?P<letter>{any_case})(?P<close>[)\]]?)(?![A-Za-z0-9])"
    w, s = r"\s{1,3}", r"\s{0,3}"  # bounded gaps keep every pattern linear
    adverb = rf"(?:{w}(?:therefore|thus|clearly|definitely|probably|likely|most{w}likely))?"
    verb = rf"(?:{w}(?:is|was|would{w}be|will{w}be|should{w}be|must{w}be){adverb})?"
    lead_in = (rf"\b(?:(?:final|correct|right|best|my){w})?answer{verb}"
               rf"|\b(?:correct|right|best|final){w}(?:option|choice|letter){verb}"
               rf"|\b(?:choose|chose|pick|select|go{w}with|going{w}with)")
    return {
        # "The answer is (B)", "Answer: C", "correct option is D", "I'd go with B", "answer is option b."
        "phrase": re.compile(rf"(?i:(?=[abcfgmprs])(?:{lead_in}){s}[:=\-]?{s}(?:(?:option|choice|letter){w})?){token}"),
        # "Option B is correct", "(B) is the right answer"
        "postfix": re.compile(rf"(?=[(\[acoACO{any_case[1:-1]}])(?<![A-Za-z0-9])(?i:(?:option|choice|answer){w})?"
                              rf"(?P<open>[(\[]?)(?P<letter>{any_case})(?P<close>[)\]]?)(?i:{w}is{w}(?:correct|the{w}(?:correct|right)"
                              rf"{w}(?:answer|one|choice|option))\b)"),
        # the whole answer: "B", "(b)", "B.", "Option C"
        "bare": re.compile(rf"(?i:(?:option|choice|letter){w})?[(\[]?(?P<letter>{any_case})[)\]]?[.:]?"),
        # a line that starts with a letter set off: "B) Paris", "(B) Paris", "b) Paris", "B. Paris", "B: ...",
        # "B - Paris", "B, Paris", "B" alone
        "leading": re.compile(rf"^[ \t]*(?:[(\[](?P<a>{any_case})[)\]]|(?P<b>{any_case})\)"
                              rf"|(?P<c>{up})(?:[.:,](?=\s|$)|[ \t]{{1,3}}[-\u2013\u2014](?=[ \t])|(?=[ \t]*$)))",
                              re.MULTILINE),
        # "(C)" anywhere
        "bracketed": re.compile(rf"(?<![A-Za-z0-9])[(\[](?P<letter>{any_case})[)\]](?![A-Za-z0-9])"),
        # what offers a second letter: "A or B", "A and C", "A/B", "A, C"
        "alternative": re.compile(rf"{s}(?i:,|/|&|\bor\b|\band\b)(?i:{w}(?:maybe|perhaps|possibly))?{s}"
                                  rf"(?i:(?:option|choice){w})?(?:[(\[]{any_case}[)\]]?|{up}[)\]]?)(?![A-Za-z0-9])"),
    }


MAX_CHOICE_MENTIONS = 64  # an output naming a letter more often than this picks none
_PHRASE_WORDS = ("answer", "option", "choice", "letter", "choose", "chose", "pick", "select", "with")


def _offered(m: re.Match[str]) -> bool:
    """A lowercase letter after a phrase is a choice only when bracketed or ending a clause, so "the
    answer is a bit unclear" is not A."""
    if m["letter"].isupper() or m["open"]:
        return True
    rest = m.string[m.end():m.end() + 1]
    return rest == "" or rest in ".!?;:,)\n"


def choice_letter(letters: str | Sequence[str] = "ABCD") -> Extractor:
    """An extractor of the one choice letter an answer picks, upper-cased; "" when it picks none or
    more than one.

    Read in this order, the first that finds a letter deciding:
      1. answer phrases: "The answer is (B) Paris.", "Answer: C", "The correct option is D", "I'd go
         with B", "Option B is correct" (several phrases naming different letters: "");
      2. the whole output is a letter: "B", "b", "(B)", "B.", "**B**", "Option C";
      3. lines that start with a letter set off: "B) Paris", "(B) Paris", "B. Paris", "B - Paris",
         "B" alone on a line (an answer listing "A) ...", "B) ..." names several: "");
      4. one bracketed letter anywhere: "I'd say (C)."
    A letter followed by an alternative ("A or B", "A and C", "A/B", "A, C") gives "", as does a letter
    not in `letters` ("E" when the choices are A–D). Letters in running prose ("Definitely C", "A cat")
    are not read: a bare capital is too often an article or an initial.
    """
    allowed = _letters(letters)
    rx = _choice_patterns(allowed)

    def decide(found: Iterator[tuple[str, int]], text: str) -> str | None:
        """The one letter found (None: nothing found), "" when several letters or an alternative."""
        picked = None
        for count, (letter, end) in enumerate(found):
            if count >= MAX_CHOICE_MENTIONS or picked not in (None, letter.upper()):
                return ""
            if rx["alternative"].match(text, end):
                return ""
            picked = letter.upper()
        return picked

    def extract(output: str) -> str:
        text = output.replace("*", "").replace("`", "").strip()  # markdown emphasis: "**B**"
        low = text.lower()  # (phrases need their words: a cheap test first)
        phrases = itertools.chain(
            ((m["letter"], m.end("close")) for m in rx["phrase"].finditer(text) if _offered(m))
            if any(word in low for word in _PHRASE_WORDS) else (),
            ((m["letter"], m.end("close")) for m in rx["postfix"].finditer(text) if m["letter"].isupper() or m["open"])
            if "correct" in low or "right" in low else ())
        found = decide(phrases, text)
        if found is not None:
            return found
        bare = rx["bare"].fullmatch(text)
        if bare:
            return bare["letter"].upper()
        leading = ((m["a"] or m["b"] or m["c"], m.end("c") if m["c"] else m.end())
                   for m in rx["leading"].finditer(text))
        found = decide(leading, text)
        if found is not None:
            return found
        return decide(((m["letter"], m.end()) for m in rx["bracketed"].finditer(text)), text) or ""

    extract.__name__ = f"choice_{allowed}"
    return extract


__all__ = ["MAX_BLOCKS", "MAX_CHOICE_MENTIONS", "MAX_JSON_CANDIDATES", "MAX_SCAN_STEPS", "choice_letter",
           "code_block", "fenced_blocks", "first_integer", "first_number", "json_value", "last_number", "numbers"]
