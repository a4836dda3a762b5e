"""Text that came from an agent or a run, made safe to store and safe to show.

Descriptions, hypotheses, notes, scratchpads, an agent's meta and a run's log lines are hostile input: they
may hold a NUL (git refuses it, and a crash at ``git commit`` replays on every resume), C0/C1 control
characters and ANSI/OSC escape sequences (a terminal obeys them: an agent could erase or forge lines of
``autoresearch run`` or ``status``, set the window title, or hide text), bidi overrides (the text reads in
another order than it is stored), lone surrogates (``str`` allows them, UTF-8 does not: SQLite, a file
write or a JSON response raise), or bytes that are not UTF-8. Two functions, one per direction:

- ``stored(value, limit)``: what the tool records (the ledger, git messages, the brief an agent reads).
  Valid UTF-8 (lone surrogates and undecodable bytes become U+FFFD), no NUL, no control character but
  newline and tab (``\\r\\n`` and a lone ``\\r`` become ``\\n``), no escape sequence (removed whole, so no
  ``[31m`` is left behind), no bidi embedding, override or isolate, and at most ``limit`` characters. It
  never raises, whatever it is given, and is idempotent.
- ``shown(value, multiline=False)``: what a terminal or a page shows. Nothing is dropped: every control
  character becomes visible (``\\x1b`` -> ``␛``, NUL -> ``␀``, a C1 character -> ``\\x9b``), bidi controls
  and lone surrogates are written as ``\\u202e``/``\\udcff``, and on one line a newline is ``␤``. Used at
  every display boundary (``progress.py``, ``cli.py``, ``report/html.py``; the dashboard does the same in
  ``static/plot.js``), so text recorded before ``stored`` existed is shown safely too.

``stored_meta`` applies ``stored`` to every string (keys included) of an agent's JSON-like meta.
"""

from __future__ import annotations

import math
import re
from typing import Any

DESCRIPTION_CHARS = 2_000       # a proposal's description (the commit title is its first line)
HYPOTHESIS_CHARS = 4_000
NOTE_CHARS = 4_000              # a researcher's note (the dashboard's limit too)
META_STRING_CHARS = 2_000       # each string of an agent's meta
META_ITEMS = 200                # entries per list or dict of an agent's meta
META_DEPTH = 8
DEFAULT_CHARS = 20_000

# Escape sequences, removed whole by ``stored``: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), DCS, SOS,
# PM and APC strings (ESC P/X/^/_ ... ST), the short ESC sequences (ESC ( B, ESC 7, ESC c), and the 8-bit
# C1 forms of CSI and OSC. A string sequence without its terminator ends at the line's end.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b\][^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[PX^_][^\x1b\x9c\n]*(?:\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"
)
_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"    # embeddings, overrides, isolates
_MARKS = "\u200e\u200f\u061c\u2028\u2029\ufeff"                    # invisible, shown escaped
_DROP = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f" + _BIDI + "\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def as_text(value: Any) -> str:
    """Any value as ``str``: bytes decoded as UTF-8 (bad bytes become U+FFFD), None as ''."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:                                   # a hostile __str__: never let it stop the loop
        return f"<{type(value).__name__}>"


def stored(value: Any, limit: int | None = DEFAULT_CHARS) -> str:
    """``value`` fit to record (see the module docstring); ``limit`` None keeps the whole text."""
    text = as_text(value)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    text = _ESCAPES.sub("", text)
    text = _SURROGATE.sub("\ufffd", text)
    text = _DROP.sub("", text)
    if limit is not None and len(text) > limit:     # the mark counts, so a stored text stores unchanged
        mark = f" … [cut: {len(text)} characters in all]"
        text = text[: max(0, limit - len(mark))] + mark
    return text


def stored_meta(value: Any, depth: int = 0) -> Any:
    """An agent's meta fit to record as JSON: strings (and keys) through ``stored``, at most ``META_ITEMS``
    entries per container and ``META_DEPTH`` levels; numbers that are not finite become None; any other
    object becomes its (stored) text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return stored(value, META_STRING_CHARS)
    if depth >= META_DEPTH:
        return stored(value, META_STRING_CHARS)
    if isinstance(value, dict):
        return {stored(k, 200): stored_meta(v, depth + 1) for k, v in list(value.items())[:META_ITEMS]}
    if isinstance(value, (list, tuple)):
        return [stored_meta(v, depth + 1) for v in list(value)[:META_ITEMS]]
    return stored(value, META_STRING_CHARS)


def _visible(match: re.Match) -> str:
    ch = match.group()
    code = ord(ch)
    if code < 0x20:
        return chr(0x2400 + code)          # the Unicode control pictures: ␀ ␇ ␛ ...
    if code == 0x7F:
        return "\u2421"                    # ␡
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


_SHOW_LINE = re.compile("[\x00-\x1f\x7f-\x9f" + _BIDI + _MARKS + "\ud800-\udfff]")
_SHOW_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f" + _BIDI + _MARKS + "\ud800-\udfff]")


def shown(value: Any, multiline: bool = False, limit: int | None = None) -> str:
    """``value`` fit for a terminal or a page: every control character, bidi control and lone surrogate made
    visible (see the module docstring). ``multiline`` keeps newlines and tabs (``\\r\\n`` read as a
    newline); otherwise a newline is ``␤`` and a tab a space. ``limit`` cuts to that many characters."""
    text = as_text(value)
    if multiline:
        text = _SHOW_LINES.sub(_visible, text.replace("\r\n", "\n"))
    else:
        text = _SHOW_LINE.sub(_visible, text.replace("\t", " ").replace("\r\n", "\n").replace("\n", "\u2424"))
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text
