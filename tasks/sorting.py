"""Example task: sort a short list of integers (a seeded generator; longer lists at higher levels)."""

from __future__ import annotations

import re
from collections import Counter

from evalkit import task, verdict
from evalkit.core.extract import first_line

# ASCII digits only (\d also matches other scripts' digits), and short: int() of a huge string is slow
# and, past 4300 digits, refused.
_INT = re.compile(r"[+-]?[0-9]{1,20}")
# Chat mode: the first line is the list and nothing else, bare or in brackets, separated by spaces or
# commas ("3, 5, 9."). No lead-in: "Sort in ascending order: 3 5 9", the question echoed, is no answer.
_CHAT_LIST = re.compile(r"\[?([+-]?[0-9]{1,20}(?:(?:[ \t]*,[ \t]*|[ \t]+)[+-]?[0-9]{1,20})*)[ \t]*\]?[ \t]*\.?")


def _length(level: int) -> int:
    return 2 * level + 1


@task(
    name="sorting",
    version=1,
    target=0.95,
    levels=range(1, 6),
    default_level=3,
    tags=("lists", "generated", "example"),
    # Level 5: 11 numbers of up to 2 digits and 10 spaces = 32 characters at most.
    max_new_tokens=40,
    stop=("\n",),
    equivalent=("strip", "whitespace"),
    system="Reply with the sorted numbers only, separated by spaces.",
    fewshot=[("Sort in ascending order: 9 2 5", "2 5 9")],
    chat_max_new_tokens=64,
)
class Sorting:
    """Sort 2*level+1 integers (0..99) ascending: "sort: 5 3 9 =" -> "3 5 9"."""

    def generate(self, rng, level):
        return {"numbers": [rng.randrange(100) for _ in range(_length(level))]}

    def prompt(self, ex):
        return "sort: " + " ".join(map(str, ex["numbers"])) + " ="

    def chat(self, ex):
        return "Sort in ascending order: " + " ".join(map(str, ex["numbers"]))

    def reference(self, ex):
        return " ".join(map(str, sorted(ex["numbers"])))

    def chat_extract(self, output):
        # The first line read strictly as a list of integers; commas become the checker's spaces.
        m = _CHAT_LIST.fullmatch(first_line(output))
        return " ".join(m.group(1).replace(",", " ").split()) if m else ""

    def chat_solutions(self, ex, rng):
        ordered = self.reference(ex)
        return [f"{ordered}.", "[" + ordered.replace(" ", ", ") + "]", ordered.replace(" ", ", "),
                f"[{ordered}]", f"\n{ordered}\n\nThese are in ascending order."]

    def check(self, ex, answer):
        tokens = answer.split()
        if not tokens:
            return verdict(False, "empty answer")
        if len(tokens) > 10 * len(ex["numbers"]):
            return verdict(False, f"not a permutation of the input: {len(tokens)} numbers for {len(ex['numbers'])}")
        bad = next((t for t in tokens if not _INT.fullmatch(t)), None)
        if bad is not None:
            return verdict(False, f"not a list of integers: {_show(bad)}")
        values = [int(t) for t in tokens]
        given = Counter(ex["numbers"])
        got = Counter(values)
        if got != given:
            missing = sorted((given - got).elements())
            extra = sorted((got - given).elements())
            parts = []
            if missing:
                parts.append(f"missing {_few(missing)}")
            if extra:
                parts.append(f"extra {_few(extra)}")
            return verdict(False, "not a permutation of the input: " + ", ".join(parts))
        for x, y in zip(values, values[1:]):
            if x > y:
                return verdict(False, f"not sorted ascending: {x} before {y}")
        return verdict(True)

    def solutions(self, ex, rng):
        # One sorted list, but spaced and written the ways the check accepts: any whitespace
        # between and around the numbers, "+7" and "07" for 7. The self-test requires each to pass.
        ordered = [str(n) for n in sorted(ex["numbers"])]
        spaces = [" ", "  ", "\t", " \t "]
        spelled = [rng.choice(["+", "0", ""]) + n for n in ordered]
        return ["\t".join(ordered), " " + "  ".join(ordered) + " ",
                "".join(n + rng.choice(spaces) for n in ordered).rstrip(), " ".join(spelled)]

    def equivalent(self, ex, reference, candidate):
        # Same numbers in the same order, however spaced or written ("05", "+5").
        # (Commas between them too, and a full stop after: chat mode reads "3, 5, 9." as this list.)
        candidate = candidate.strip().removesuffix(".").replace(",", " ")
        try:
            return [int(t) for t in candidate.split()] == [int(t) for t in reference.split()]
        except ValueError:
            return False


def _few(values: list[int], limit: int = 5) -> str:
    shown = " ".join(map(str, values[:limit]))
    return shown + (" ..." if len(values) > limit else "")


def _show(text: str, limit: int = 20) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
