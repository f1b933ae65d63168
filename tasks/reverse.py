"""Example task: reverse a string of lowercase letters (a seeded generator; longer strings at higher levels)."""

from __future__ import annotations

import re
import string

from evalkit import task, verdict
from evalkit.core.extract import first_line

# Chat mode: the first line is the reversed text, bare or quoted, optionally after "is" or ":"
# ('The reversed text is "cba".'). Anything else is no answer.
_CHAT_TEXT = re.compile(r"(?:.*?(?:\bis|:)[ \t]+)?([\"'`]?)([a-z]{1,64})\1[ \t]*\.?")


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
    system="Reply with the reversed text only.",
    fewshot=[('Write "abcd" backwards.', "dcba")],
    chat_max_new_tokens=32,
)
class Reverse:
    """Reverse 2*level+1 lowercase letters: "reverse: abc =" -> "cba"."""

    def generate(self, rng, level):
        return {"text": "".join(rng.choice(string.ascii_lowercase) for _ in range(_length(level)))}

    def prompt(self, ex):
        return f"reverse: {ex['text']} ="

    def chat(self, ex):
        return f'Write "{ex["text"]}" backwards.'

    def reference(self, ex):
        return ex["text"][::-1]

    def chat_extract(self, output):
        m = _CHAT_TEXT.fullmatch(first_line(output))
        return m.group(2) if m else ""

    def chat_solutions(self, ex, rng):
        answer = ex["text"][::-1]
        return [f'"{answer}"', f"{answer}.", f'The reversed text is "{answer}".', f"Reversed: {answer}",
                f"\n{answer}\n\nEach letter is now in the opposite order."]

    def equivalent(self, ex, reference, candidate):
        # Chat mode reads "cba." and '"cba"' as cba; the raw check takes the exact letters only.
        return candidate.strip().removesuffix(".").strip("\"'`") == reference.strip()

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
