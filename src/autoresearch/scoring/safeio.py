"""Reading what a run left behind, as hostile input: regular files only, no links followed, sizes capped.

A run controls its output folder. It can put a FIFO where a file belongs (``open`` would block forever),
a symbolic link to another run's outputs or to a device, a hard link to a file it could not copy, or a
file of any size. ``open_output`` walks from the output folder to the file one component at a time with
``O_NOFOLLOW`` (so neither the folder, nor a folder inside it, nor the file may be a link), opens with
``O_NONBLOCK`` (a FIFO or a device does not block the open), and accepts only a regular file with one
link whose size is within the cap; ``read_capped`` then never reads past the cap even if the file grows.

Every refusal is an ``UnsafeOutput`` whose message names the file and what was wrong, to be recorded as
the run's crash reason.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

MiB = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafeOutput(Exception):
    """A run's output that the tool refuses to read; the message is the reason to record."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISLNK, "a symbolic link"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def relative_parts(rel: str | os.PathLike) -> list[str]:
    """The components of a path inside the output folder; ValueError for absolute paths and '..'."""
    text = os.fspath(rel)
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if not parts or PurePosixPath(text).is_absolute() or ".." in parts:
        raise ValueError(f"{text!r} must be a relative path inside the run's output folder, without '..'")
    return parts


def open_output(base: Path, rel: str | os.PathLike, max_bytes: int, *, what: str | None = None) -> int:
    """A read-only descriptor for ``base / rel``, which must be a regular file of at most ``max_bytes``.

    ``base`` itself must not be a symbolic link, nor any folder between it and the file. Raises
    ``FileNotFoundError`` when the file is absent (the caller words that case), ``UnsafeOutput`` otherwise.
    """
    parts = relative_parts(rel)
    name = what or "/".join(parts)
    try:
        info = os.lstat(base)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"the output folder {base} does not exist", str(base)) from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeOutput(f"the output folder {base} is a symbolic link; the tool reads only the folder it made")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeOutput(f"the output folder {base} is {_kind(info.st_mode)}, not a folder")
    fd = os.open(base, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | (_NONBLOCK if last else _DIRECTORY)
            try:
                nxt = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    raise
                where = "/".join(parts[:i + 1])
                try:
                    mode = os.lstat(part, dir_fd=fd).st_mode
                except OSError:
                    mode = None
                if mode is not None and stat.S_ISLNK(mode):
                    target = _readlink(part, fd)
                    raise UnsafeOutput(f"{where} is a symbolic link{target}; the tool reads only files the run "
                                       "wrote itself, never through links") from None
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise UnsafeOutput(f"{where} is {_kind(mode or 0)} where a folder was expected") from None
                raise UnsafeOutput(f"{where} cannot be opened: {exc.strerror}") from None
            os.close(fd)
            fd = nxt
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeOutput(f"{name} is {_kind(info.st_mode)}, not a regular file")
        if info.st_nlink != 1:
            raise UnsafeOutput(f"{name} has {info.st_nlink} hard links; the tool reads only files the run "
                               "wrote itself, not links to other files")
        if info.st_size > max_bytes:
            raise UnsafeOutput(f"{name} is {_size(info.st_size)}, over the {_size(max_bytes)} the tool reads")
        if _NONBLOCK:
            os.set_blocking(fd, True)
        result, fd = fd, -1
        return result
    finally:
        if fd >= 0:
            os.close(fd)


def _readlink(part: str, dir_fd: int) -> str:
    try:
        return f" (to {os.readlink(part, dir_fd=dir_fd)!r})"
    except OSError:
        return ""


def _size(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n} bytes"


def read_capped(fd: int, max_bytes: int, *, what: str) -> bytes:
    """Everything up to ``max_bytes`` from ``fd`` (closed afterwards); UnsafeOutput if there is more."""
    with os.fdopen(fd, "rb", closefd=True) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeOutput(f"{what} grew past {_size(max_bytes)} while it was read")
    return data


def read_output(base: Path, rel: str | os.PathLike, max_bytes: int) -> bytes:
    """``open_output`` then ``read_capped``: the whole (small) file or an exception."""
    what = "/".join(relative_parts(rel))
    return read_capped(open_output(base, rel, max_bytes, what=what), max_bytes, what=what)


def read_tail(path: Path, max_bytes: int) -> bytes:
    """The last ``max_bytes`` of a regular file (a log the tool wrote), opened without following a link."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeOutput(f"{path.name} is {_kind(info.st_mode)}, not a regular file")
        os.set_blocking(fd, True)
        start = max(0, info.st_size - max_bytes)
        os.lseek(fd, start, os.SEEK_SET)
        chunks, left = [], max_bytes
        while left > 0:
            chunk = os.read(fd, min(left, MiB))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if start:      # drop the partial first line
            cut = data.find(b"\n")
            data = data[cut + 1:] if cut >= 0 else data
        return data
    finally:
        os.close(fd)
