"""Text from agents, runs and people as hostile input: made safe to store, and safe to show.

Agent text (descriptions, hypotheses, notes, scratchpads) and run output may hold anything: NUL bytes
(which git refuses in a commit message), control characters and terminal escape sequences (which would
let an agent draw over the tool's own lines), lone surrogates (which UTF-8 cannot encode) and bidi
overrides (which reorder what a person reads). Two functions, one per boundary:

- ``for_storage``: before anything is recorded (ledger, git message, brief): NUL and control characters
  other than newline and tab are dropped, lone surrogates replaced, the length capped.
- ``for_terminal``: before anything is printed: every control character (newline and tab excepted when
  ``lines``) and bidi control is shown as a visible escape such as ``\\x1b``.
"""

from __future__ import annotations

import re

_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_ALL_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MAX_CHARS = 20_000


def for_storage(text: object, *, limit: int | None = MAX_CHARS) -> str:
    """``text`` as a string safe to record: no NUL or control characters but newline and tab, valid UTF-8,
    at most ``limit`` characters (None: no cap)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text if text is not None else "")
    text = text.encode("utf-8", "replace").decode("utf-8") if _has_surrogate(text) else text
    text = _CONTROLS.sub("", text.replace("\r\n", "\n"))
    if limit is not None and len(text) > limit:
        text = text[:limit] + f" [... {len(text) - limit} characters cut]"
    return text


def for_terminal(text: object, *, lines: bool = True) -> str:
    """``text`` with every control character made visible (``\\x1b``), so nothing it holds can move the
    cursor, recolour or rewrite what a terminal shows; newlines and tabs kept when ``lines``."""
    text = str(text if text is not None else "")
    if _has_surrogate(text):
        text = text.encode("utf-8", "replace").decode("utf-8")
    pattern = _CONTROLS if lines else _ALL_CONTROLS
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
