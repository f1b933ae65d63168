"""The self-test's inputs and its hypothesis runner: corruptions of valid answers, junk, odd outputs.

`run_property` runs one property body under hypothesis (derandomized, no database, shrinking on);
the body raises `PropertyFailure` for a falsifying input and hypothesis shrinks it to a minimal one.
Hypothesis reseeds the global `random` before each input, so a property that must see the
process's own randomness (determinism) does not run here.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.reporting import with_reporter

CORRUPTIONS = ("digit_edit", "char_edit", "truncate", "append")
# Junk appended to an answer: visible characters, no whitespace (whitespace is a stop string
# or stripped by most extractors: appending it is no corruption).
JUNK = st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=8)

# Outputs that break careless checkers: any unicode, very long text, deep nesting, odd numbers.
WEIRD = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=200),
    st.text(min_size=1, max_size=5).map(lambda s: s * 20_000),  # very long outputs
    st.sampled_from(["\x00", "\u202e", "{" * 5000, "[" * 5000, "9" * 50_000, "1e99999", "nan", "inf",
                     "0/0", "\ud7ff" * 10, "```json\n{\n```"]),
)


class PropertyFailure(AssertionError):
    """One falsifying example; hypothesis shrinks to the minimal one and re-raises it."""


def show(text: str, limit: int = 120) -> str:
    """`text` quoted (repr) and cut to `limit` characters, for a message."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def corruption(reference: str, kinds: Sequence[str]) -> st.SearchStrategy[tuple[str, str]]:
    """(kind, corrupted text) for one valid output (a reference or a solution)."""
    options = []
    digits = [i for i, ch in enumerate(reference) if ch.isdigit()]
    if "digit_edit" in kinds and digits:
        options.append(st.tuples(st.sampled_from(digits), st.sampled_from(string.digits)).filter(
            lambda t: reference[t[0]] != t[1]).map(
            lambda t: ("digit_edit", reference[: t[0]] + t[1] + reference[t[0] + 1:])))
    if "char_edit" in kinds and reference:
        n = len(reference)
        ch = st.characters(codec="utf-8", exclude_categories=["Cs"])
        replace = st.tuples(st.integers(0, n - 1), ch).filter(lambda t: reference[t[0]] != t[1]).map(
            lambda t: ("char_edit", reference[: t[0]] + t[1] + reference[t[0] + 1:]))
        insert = st.tuples(st.integers(0, n), ch).map(
            lambda t: ("char_edit", reference[: t[0]] + t[1] + reference[t[0]:]))
        delete = st.integers(0, n - 1).map(lambda i: ("char_edit", reference[:i] + reference[i + 1:]))
        options += [replace, insert, delete]
    if "truncate" in kinds and reference:
        options.append(st.integers(0, len(reference) - 1).map(lambda i: ("truncate", reference[:i])))
    if "append" in kinds:
        options.append(JUNK.map(lambda j: ("append", reference.rstrip() + j)))
    return st.one_of(options) if options else st.nothing()


def run_property(body: Callable[[Any], None], strategy: st.SearchStrategy, max_examples: int) -> tuple[int, str | None]:
    """Run `body` on up to `max_examples` inputs drawn from `strategy`.

    Returns:
        (inputs tried, None) when the body never raised, else (inputs tried, the minimal
        counterexample's message).
    """
    tried = 0

    @settings(max_examples=max_examples, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
              phases=[Phase.explicit, Phase.generate, Phase.shrink], print_blob=False)
    @given(strategy)
    def prop(value):
        nonlocal tried
        tried += 1
        body(value)

    try:
        with with_reporter(lambda *_: None):
            prop()
    except PropertyFailure as exc:
        return tried, str(exc)
    except Flaky as exc:
        return tried, f"flaky (non-deterministic verdict): {exc}"
    return tried, None


def plain_corruption(text: str, rng: random.Random) -> str:
    """One corruption of `text` without hypothesis (for the determinism pass): a changed, dropped
    or added character."""
    if not text:
        return rng.choice(string.ascii_letters + string.digits)
    i = rng.randrange(len(text))
    how = rng.randrange(3)
    if how == 0:
        pool = string.digits if text[i].isdigit() else string.ascii_letters + string.punctuation
        return text[:i] + rng.choice([c for c in pool if c != text[i]]) + text[i + 1:]
    if how == 1:
        return text[:i] + text[i + 1:]
    return text[:i] + rng.choice(string.ascii_letters + string.digits + " ") + text[i:]


def plain_text(rng: random.Random, max_size: int = 40) -> str:
    """Random printable text, drawn without hypothesis."""
    return "".join(rng.choice(string.printable[:-5]) for _ in range(rng.randint(1, max_size)))
