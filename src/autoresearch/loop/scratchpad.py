"""The scratchpad's size bound: the agent's memory stays readable, the oldest notes go first."""

from __future__ import annotations

CUT_MARK = "[autoresearch: "


def bound(text: str, max_chars: int, experiment: int) -> tuple[str, int]:
    """Keep ``text`` within ``max_chars`` by cutting the oldest notes.

    The first heading line (the scratchpad's title) is kept, then a note saying how much was cut, then
    the newest part, cut at a line boundary. Returns the new text and the number of characters cut.
    """
    if len(text) <= max_chars:
        return text, 0
    lines = text.splitlines(keepends=True)
    head = lines[0] if lines and lines[0].startswith("#") else ""
    body = text[len(head):]
    # Drop an earlier cut note so notes do not pile up.
    if body.startswith(CUT_MARK):
        body = body.split("\n", 1)[1] if "\n" in body else ""
    note_len = 100
    room = max(0, max_chars - len(head) - note_len)
    tail = body[len(body) - room:] if room else ""
    newline = tail.find("\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1:]
    cut = len(text) - len(head) - len(tail)
    note = f"{CUT_MARK}{cut} older characters cut before experiment {experiment} to keep this file under {max_chars}]\n"
    return head + note + tail, cut
