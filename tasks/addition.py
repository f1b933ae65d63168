"""Example task: add two integers (a seeded generator with digit-count levels)."""

from __future__ import annotations

import re

from evalkit import task, verdict

# ASCII digits only (\d also matches other scripts' digits), and short: int() of a huge string is slow
# and, past 4300 digits, refused.
_INT = re.compile(r"[+-]?[0-9]{1,20}")


@task(
    name="addition",
    version=2,
    target=0.95,
    levels=range(1, 8),
    default_level=3,
    tags=("arithmetic", "generated", "example"),
    # The longest answer (level 7: 9999999+9999999) has 8 digits; leave a little margin.
    max_new_tokens=10,
    stop=("\n",),
)
class Addition:
    """Add two `level`-digit integers: "123+456=" -> "579"."""

    def generate(self, rng, level):
        # Both operands have exactly `level` digits (level 1: 0-9), so "3-digit addition" means
        # what it says. (Version 1 drew the second operand from 0..10**level, so a tenth of the
        # level-3 problems mixed lengths such as 722+39.)
        low = 0 if level == 1 else 10 ** (level - 1)
        return {"a": rng.randrange(low, 10**level), "b": rng.randrange(low, 10**level)}

    def prompt(self, ex):
        return f"{ex['a']}+{ex['b']}="

    def reference(self, ex):
        return str(ex["a"] + ex["b"])

    def check(self, ex, answer):
        expected = ex["a"] + ex["b"]
        if _INT.fullmatch(answer) and int(answer) == expected:
            return verdict(True)
        return verdict(False, f"expected {expected}, got {_show(answer)}")

    def solutions(self, ex, rng):
        # One sum, but written the ways the check accepts: a plus sign, leading zeros, and
        # whitespace around it (the extractor strips). The self-test requires each to pass.
        total = str(ex["a"] + ex["b"])
        pad = ["", " ", "  ", "\t"]
        return [f"+{total}", "0" * rng.randint(1, 3) + total, f"+0{total}",
                rng.choice(pad[1:]) + total + rng.choice(pad), rng.choice(pad) + total + rng.choice(pad[1:])]

    def equivalent(self, ex, reference, candidate):
        # The same integer, however written ("0579", "+579"): that is what the check accepts.
        candidate = candidate.strip()
        digits = candidate[1:] if candidate[:1] in ("+", "-") else candidate
        return digits.isascii() and digits.isdigit() and int(candidate) == int(reference)


def _show(answer: str, limit: int = 40) -> str:
    """The answer quoted for a reason line, cut short: model output is data, not text to print whole."""
    return repr(answer if len(answer) <= limit else answer[:limit] + "...")
