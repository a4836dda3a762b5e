"""The scratchpad: the agent's memory between experiments, read and size-bounded as hostile input.

The agent writes this file, so it may be anything: bytes that are not UTF-8, a symlink or a hard link to a
hidden key (reading it would put the key into the brief; bounding it by writing in place would write
through the link and truncate the key), a FIFO that blocks a reader, or gigabytes. Every reader here opens
it without following a link (``O_NOFOLLOW``, ``O_NONBLOCK``), takes only a regular file with one link, reads
at most ``MAX_READ_BYTES`` and decodes leniently; ``bound_file`` replaces the file (a new file renamed over
the name) rather than writing into it. A scratchpad that is not valid UTF-8 is an invalid edit (the loop's
take-back of the editable files refuses it); ``problem`` says why a file cannot be taken, for that check.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

CUT_MARK = "[autoresearch: "
MAX_READ_BYTES = 4 << 20      # far above any bound; a larger file is read only this far


def _open_plain(path: Path) -> tuple[int, os.stat_result] | str:
    """(fd, stat) of a regular file with one link, opened without following a link; or why not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return "a symbolic link" if os.path.islink(path) else f"unreadable ({exc.strerror})"
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return "not a regular file"
    if st.st_nlink != 1:
        os.close(fd)
        return f"a file with {st.st_nlink} hard links"
    return fd, st


def _read_plain(path: Path) -> tuple[bytes, os.stat_result] | str:
    """The first ``MAX_READ_BYTES`` of a regular file with one link, and its stat; or why not."""
    opened = _open_plain(Path(path))
    if isinstance(opened, str):
        return opened
    fd, st = opened
    try:
        chunks, left = [], MAX_READ_BYTES
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def problem(path: Path) -> str | None:
    """Why ``path`` cannot be taken as the scratchpad (a link, not a regular file, more than
    ``MAX_READ_BYTES``, not valid UTF-8), or None when it can (a missing file can: it is empty)."""
    got = _read_plain(Path(path))
    if got == "missing":
        return None
    if isinstance(got, str):
        return got
    data = got[0]
    if len(data) >= MAX_READ_BYTES:
        return f"larger than {MAX_READ_BYTES} bytes"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start})"
    return None


def read(path: Path) -> str:
    """The scratchpad's text for a reader (the brief, a view): '' when missing; a one-line note instead of
    the content when it is a link or not a regular file; bytes that are not UTF-8 shown as U+FFFD."""
    got = _read_plain(Path(path))
    if got == "missing":
        return ""
    if isinstance(got, str):
        return f"(the scratchpad is {got}; its content is not shown)"
    return got[0].decode("utf-8", errors="replace")


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


def bound_file(path: Path, max_chars: int, experiment: int) -> int:
    """Bound the scratchpad file at ``path`` in place (``bound``); returns the characters cut.

    Only a regular file with one link is bounded (anything else is left for the edit check to refuse, and
    never written through). The bounded text replaces the file by a rename, so even a link made after the
    check cannot redirect the write; bytes that are not UTF-8 are written back as U+FFFD."""
    path = Path(path)
    got = _read_plain(path)
    if isinstance(got, str):
        return 0
    data, st = got
    bounded, cut = bound(data.decode("utf-8", errors="replace"), max_chars, experiment)
    if not cut:
        return 0
    tmp = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                      delete=False)
    try:
        with tmp:
            tmp.write(bounded)
        os.chmod(tmp.name, stat.S_IMODE(st.st_mode))
        os.replace(tmp.name, path)
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise
    return cut
