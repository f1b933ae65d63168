"""Showing untrusted text (model outputs, prompts) literally in a terminal."""

from __future__ import annotations

from rich.text import Text

# C0 controls but newline and tab, DEL, and the C1 controls U+0080–U+009F (U+009B is a one-character CSI:
# a terminal that reads 8-bit controls takes "\x9b31m" as ESC [ 31 m).
_CONTROL = {i: f"\\x{i:02x}" for i in [*range(32), 0x7F, *range(0x80, 0xA0)] if chr(i) not in "\n\t"}


def safe_text(value: str | None, limit: int = 500, style: str = "") -> Text:
    """A rich Text that shows `value` literally: no markup, no escape codes, capped in length.

    Control characters (ESC, NUL, DEL, the C1 controls U+0080–U+009F such as the one-character CSI
    U+009B, ...) are written as \\xNN so a model's output can never move the cursor, change colours
    or hide text; bidi overrides are escaped the same way.
    """
    if value is None:
        return Text("—", style="dim")
    shown = value.translate(_CONTROL)
    shown = "".join(f"\\u{ord(c):04x}" if 0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069 else c
                    for c in shown)
    if len(shown) > limit:
        shown = shown[:limit] + f"… (+{len(shown) - limit} chars)"
    return Text(shown, style=style)
