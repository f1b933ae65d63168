"""Python "models" for the fault-injection and rescore tests (importable as python:helpers.fault_models:FN)."""

import re


def _sum(prompt: str) -> int | None:
    m = re.fullmatch(r"(\d+)\+(\d+)=", prompt)
    return int(m.group(1)) + int(m.group(2)) if m else None


def by_budget(prompts, config):
    """Right when given at least 10 new tokens, else "0": outputs that depend on a generation setting."""
    return [str(_sum(p)) if config.max_new_tokens >= 10 else "0" for p in prompts]


def bad_text(prompt: str) -> str:
    """Outputs no file can hold as they are: a lone surrogate, NUL, and a huge one, by the prompt's sum."""
    total = _sum(prompt) or 0
    kind = total % 3
    if kind == 0:
        return f"{total}\ud83d"
    if kind == 1:
        return f"{total}\x00"
    return str(total) + "9" * 2_000_000
