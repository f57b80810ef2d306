"""Text from people made safe for a terminal and a ledger (issue 9 #9).

A note or a reason may arrive with escape sequences that, printed, rewrite the screen (CSI: colours,
cursor moves, clearing), set the window title or plant hyperlinks (OSC), or with other C0/C1 control
characters. ``strip_controls`` removes all of them before the text is printed or recorded; line
breaks and tabs become spaces, so a note stays one line in tables.
"""

from __future__ import annotations

import re

# ESC [ ... final byte (CSI); ESC ] ... BEL or ESC \ (OSC); ESC P/X/^/_ ... ESC \ (DCS, SOS, PM,
# APC); the 8-bit forms (U+009B CSI, U+009D OSC ...); any other two-byte ESC sequence.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d).*?(?:\x07|\x1b\\|\x9c|$)"
    r"|(?:\x1b[PX^_]|[\x90\x98\x9e\x9f]).*?(?:\x1b\\|\x9c|$)"
    r"|\x1b[ -/]*[0-~]?",
    re.DOTALL,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SPACE = re.compile(r"[\t\n]+")
_SPACES = re.compile(r" {2,}")


def strip_controls(text: str) -> str:
    """``text`` without terminal control sequences or control characters, one line, stripped."""
    text = _SEQUENCE.sub("", text)
    text = text.replace("\r\n", " ").replace("\r", " ")
    text = _SPACE.sub(" ", text)
    # What was removed may leave two spaces where one was meant.
    return _SPACES.sub(" ", _CONTROL.sub("", text)).strip()
