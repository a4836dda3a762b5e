"""What a run may store, and a clean place to store it.

- **Fresh places.** Just before a run starts, whatever is at its output folder and its log is removed
  without following links (a symlink or a file there is removed, never its target; a folder with all it
  holds) and created anew, empty: files planted there before the run (``embeddings.npz``,
  ``metrics.json``) can never be scored as if the run wrote them, and a planted link cannot redirect the
  log.
- **The sandbox's memory-backed folders.** ``/tmp`` and ``/dev/shm`` inside the sandbox are tmpfs, held in
  the host's memory. Each is mounted with a size (``[run] tmp_gb``; by default the memory ceiling), and
  what they hold is read every poll (``statvfs`` through ``/proc/<pid>/root`` of a process inside the
  sandbox) and counted with the run's resident memory against ``[run] memory_gb``.
- **The output folder's quota** (``[run] output_gb``), with and without the sandbox: its size is read
  while the run runs (every ``OUTPUT_POLL_S``, a walk capped at ``MAX_ENTRIES`` entries; allocated
  blocks, each file once however many links it has, links not followed). Past the quota, or past
  ``MAX_ENTRIES`` files, the run is stopped.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

GB = 2**30
OUTPUT_POLL_S = 1.0      # the output folder is walked at most this often...
MAX_ENTRIES = 100_000    # ...and a walk stops here (more files than this is a failed run too)
TMPFS = ("tmp", "dev/shm")   # the sandbox's memory-backed folders, relative to its root


def remove(path: Path) -> None:
    """Remove whatever is at ``path`` without following a link: a link or a file is unlinked, a folder is
    removed with its contents (``shutil.rmtree`` does not follow the links inside)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def fresh_dir(path: Path) -> None:
    """``path`` as a new empty folder (what was there removed first; its parents made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        remove(path)
        try:
            os.mkdir(path)
            return
        except FileExistsError:   # something was put back in between: remove it again
            continue
    raise OSError(f"could not make a fresh folder at {path}: something keeps re-creating it")


def fresh_file(path: Path):
    """``path`` opened as a new empty file for line-buffered text (what was there removed first; never
    written through a link)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    return os.fdopen(fd, "w", encoding="utf-8", errors="replace", buffering=1)


def folder_size(path: Path, max_entries: int = MAX_ENTRIES) -> tuple[int, int]:
    """(bytes allocated, entries seen) under ``path``, without following links and counting each file
    once; the walk stops after ``max_entries`` entries (then the entry count says so)."""
    total, entries = 0, 0
    seen: set[tuple[int, int]] = set()
    todo = [str(path)]
    while todo and entries < max_entries:
        try:
            it = os.scandir(todo.pop())
        except OSError:
            continue
        with it:
            for entry in it:
                entries += 1
                if entries >= max_entries:
                    break
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue    # removed meanwhile
                if stat.S_ISDIR(st.st_mode):
                    todo.append(entry.path)
                elif (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total, entries


def _root(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def tmpfs_used(pid: int) -> int | None:
    """Bytes held in the sandbox's ``/tmp`` and ``/dev/shm``, read through a process inside it; None when
    that process is gone, its root cannot be read, or its root is still the host's (bwrap before it has
    set the sandbox up, or a process outside it: its ``/tmp`` would be the host's)."""
    theirs = _root(f"/proc/{pid}/root")
    if theirs is None or theirs == _root("/"):
        return None
    total = 0
    for sub in TMPFS:
        try:
            st = os.statvfs(f"/proc/{pid}/root/{sub}")
        except OSError:
            return None
        total += (st.f_blocks - st.f_bfree) * st.f_frsize
    return total


class OutputWatch:
    """The output folder's quota, read at most every ``OUTPUT_POLL_S`` (longer when a walk is slow)."""

    def __init__(self, path: Path, quota_gb: float) -> None:
        self.path, self.quota = Path(path), int(quota_gb * GB) if quota_gb > 0 else 0
        self.next = 0.0
        self.peak = 0

    def check(self) -> str:
        """'' while within the quota; otherwise why the run must stop."""
        now = time.monotonic()
        if not self.quota or now < self.next:
            return ""
        size, entries = folder_size(self.path)
        spent = time.monotonic() - now
        self.next = time.monotonic() + max(OUTPUT_POLL_S, 10 * spent)
        self.peak = max(self.peak, size)
        if entries >= MAX_ENTRIES:
            return f"the run put more than {MAX_ENTRIES} files in its output folder ([run] output_gb quota)"
        if size > self.quota:
            return (f"the run wrote {size / GB:.2f} GB to its output folder, over its "
                    f"{self.quota / GB:g} GB quota ([run] output_gb)")
        return ""
