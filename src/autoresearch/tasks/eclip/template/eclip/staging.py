"""Replace a repository's prepared data and its secret parts together, or not at all.

A preparation writes everything into ``STATE/.prepare-staging/{prepared,secret}``; nothing the previous
preparation wrote is touched while it does. Only once the new data is complete is a ``COMPLETE`` marker
written and the two folders swapped in by renames (old ones moved aside to ``.prepare-replaced/`` first,
then removed). A failure before the marker leaves the previous data byte for byte as it was; a crash during
the renames is finished by the next preparation (:func:`recover`), which rolls the swap forward, since the
marker says the new data is whole. A lock file keeps two preparations of one repository apart.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PARTS = ("prepared", "secret")
STAGING = ".prepare-staging"
REPLACED = ".prepare-replaced"
COMPLETE = "COMPLETE"
LOCK = ".prepare.lock"


class BusyError(RuntimeError):
    """Another preparation holds the lock on this state folder."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)
    _fsync_dir(dst.parent)


def _swap_in(state: Path) -> None:
    """Move the staged parts into place (idempotent: a part already moved is skipped), then clean up."""
    staging, replaced = state / STAGING, state / REPLACED
    replaced.mkdir(exist_ok=True)
    for part in PARTS:
        new, current, old = staging / part, state / part, replaced / part
        if not new.exists():
            continue            # moved in before an interruption
        if current.exists():
            if old.exists():
                shutil.rmtree(old)
            _rename(current, old)
        _rename(new, current)
    (staging / COMPLETE).unlink()
    _fsync_dir(staging)
    shutil.rmtree(staging)
    shutil.rmtree(replaced, ignore_errors=True)


def recover(state: Path | str) -> bool:
    """Finish a swap that was interrupted after its data was complete; discard an unfinished staging folder.

    Returns True when a swap was finished. Call with the lock held.
    """
    state = Path(state)
    staging = state / STAGING
    if (staging / COMPLETE).is_file():
        _swap_in(state)
        return True
    if staging.exists():
        shutil.rmtree(staging)
    if (state / REPLACED).exists():   # a finished swap whose clean-up was cut short
        shutil.rmtree(state / REPLACED)
    return False


@contextmanager
def locked(state: Path | str) -> Iterator[None]:
    """Hold the preparation lock of ``state`` (created if needed); refuse at once when another holds it."""
    state = Path(state)
    state.mkdir(parents=True, exist_ok=True)
    with open(state / LOCK, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"{state}: another data preparation is running on this repository; wait for it to "
                            f"finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextmanager
def staged(state: Path | str) -> Iterator[Path]:
    """Yield a fresh staging folder; on a clean exit swap its ``prepared/`` and ``secret/`` in, on an
    exception (Ctrl-C included) delete it and leave the current data untouched."""
    state = Path(state)
    with locked(state):
        recover(state)
        staging = state / STAGING
        staging.mkdir()
        try:
            yield staging
            missing = [p for p in PARTS if not (staging / p).is_dir()]
            if missing:
                raise RuntimeError(f"staging folder lacks {', '.join(missing)}")  # a bug, not user data
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        marker = staging / COMPLETE
        with open(marker, "wb") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(staging)
        _swap_in(state)
