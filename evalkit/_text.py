"""Showing untrusted text (model outputs, prompts) literally in a terminal."""

from __future__ import annotations

from rich.text import Text

_CONTROL = {i: f"\\x{i:02x}" for i in range(32) if chr(i) not in "\n\t"}
_CONTROL.update({0x7F: "\\x7f", 0x1B: "\\x1b"})


def safe_text(value: str | None, limit: int = 500, style: str = "") -> Text:
    """A rich Text that shows `value` literally: no markup, no escape codes, capped in length.

    Control characters (ESC, NUL, ...) are written as \\xNN so a model's output can never move
    the cursor, change colours or hide text; bidi overrides are escaped the same way.
    """
    if value is None:
        return Text("—", style="dim")
    shown = value.translate(_CONTROL)
    shown = "".join(f"\\u{ord(c):04x}" if 0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069 else c
                    for c in shown)
    if len(shown) > limit:
        shown = shown[:limit] + f"… (+{len(shown) - limit} chars)"
    return Text(shown, style=style)
