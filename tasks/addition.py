"""Example task: add two integers (a seeded generator with digit-count levels)."""

from __future__ import annotations

import re

from evalkit import task, verdict
from evalkit.core.extract import first_line

# ASCII digits only (\d also matches other scripts' digits), and short: int() of a huge string is slow
# and, past 4300 digits, refused.
_INT = re.compile(r"[+-]?[0-9]{1,20}")
# Chat mode: the answer's first line is the sum, or ends with it after "=", "is", "equals" or ":":
# "579", "579.", "123 + 456 = 579", "The answer is 579." Anything else ("579 apples", "5 79", "=579") is no answer.
_CHAT_SUM = re.compile(r"(?:.*?[^\s=:][ \t]*(?:=|\bis|\bequals|:)[ \t]*)?([+-]?[0-9]{1,20})[ \t]*\.?")


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
    # Chat mode: an instruct model is told to reply with the number, and may say "123 + 456 = 579".
    system="You are a calculator. Reply with the number only.",
    fewshot=[("What is 21 + 34?", "55")],
    chat_max_new_tokens=24,
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

    def chat(self, ex):
        return f"What is {ex['a']} + {ex['b']}?"

    def reference(self, ex):
        return str(ex["a"] + ex["b"])

    def chat_extract(self, output):
        # The first line (the stop "\n" ends it), read strictly: the sum alone or after "=" / "is".
        m = _CHAT_SUM.fullmatch(first_line(output))
        return m.group(1) if m else ""

    def chat_solutions(self, ex, rng):
        total = ex["a"] + ex["b"]
        a, b = ex["a"], ex["b"]
        return [f"{total}.", f"{a} + {b} = {total}", f"The answer is {total}.",
                f"\n{a}+{b}={total}\n\nI added the two numbers.", f"The sum of {a} and {b} is {total}."]

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
        # A sentence's full stop after it ("579.") does not change the number either.
        candidate = candidate.strip().removesuffix(".")
        digits = candidate[1:] if candidate[:1] in ("+", "-") else candidate
        return digits.isascii() and digits.isdigit() and int(candidate) == int(reference)


def _show(answer: str, limit: int = 40) -> str:
    """The answer quoted for a reason line, cut short: model output is data, not text to print whole."""
    return repr(answer if len(answer) <= limit else answer[:limit] + "...")
