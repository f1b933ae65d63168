"""Example task: reverse a string of lowercase letters (a seeded generator; longer strings at higher levels)."""

from __future__ import annotations

import string

from evalkit import task, verdict


def _length(level: int) -> int:
    return 2 * level + 1


@task(
    name="reverse",
    version=1,
    target=0.95,
    levels=range(1, 6),
    default_level=3,
    tags=("strings", "generated", "example"),
    # Level 5: 11 letters; a little margin for a leading space.
    max_new_tokens=16,
    stop=("\n",),
)
class Reverse:
    """Reverse 2*level+1 lowercase letters: "reverse: abc =" -> "cba"."""

    def generate(self, rng, level):
        return {"text": "".join(rng.choice(string.ascii_lowercase) for _ in range(_length(level)))}

    def prompt(self, ex):
        return f"reverse: {ex['text']} ="

    def reference(self, ex):
        return ex["text"][::-1]

    def solutions(self, ex, rng):
        # One answer, but the extractor strips: whitespace around it must pass too.
        answer = ex["text"][::-1]
        return [rng.choice([" ", "\t", "  "]) + answer, answer + rng.choice([" ", "\t", "  "]), f" {answer} "]

    def check(self, ex, answer):
        expected = ex["text"][::-1]
        if answer == expected:
            return verdict(True)
        shown = answer if len(answer) <= 40 else answer[:40] + "..."
        return verdict(False, f"expected {expected!r}, got {shown!r}")
