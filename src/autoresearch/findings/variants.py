"""Commits that the night never made, built with git plumbing: no working tree or branch is touched.

- ``without``: the champion with one kept change taken out. First its diff reversed onto the champion, file
  by file (a change of UPPER_CASE constants only is undone by setting the old values, which survives edits
  on the neighbouring lines; anything else by ``git merge-file``'s 3-way merge). When that conflicts, the
  other kept changes are re-applied in order onto the baseline the same way. When that conflicts too, the
  change is *entangled* with a later one (typically: a later change rewrote the lines it wrote) and
  ``Variant.commit`` is None with the reason.
- ``with_constants``: a commit with some constants overridden (``transfer --set STEPS=800``, a preset).
- ``normalised``: a commit with the scratchpad of the baseline, so that two commits with the same code are
  the same tree (and a measurement of one is a measurement of the other).

Running a commit is the loop's (``loop/runs.py``: a read-only snapshot of its tree); see ``findings.measure``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autoresearch.errors import UserError
from autoresearch.hyperparams import MISSING, UnknownConstant, diff_constants, read_constants, set_constants
from autoresearch.loop import rebase
from autoresearch.loop.gitops import Git
from autoresearch.findings.changes import History, KeptChange

Files = dict[str, "bytes | None"]      # path -> content (None: absent)


class Conflict(Exception):
    """A change does not apply to a file; the message says which and why."""


@dataclass(frozen=True)
class Variant:
    """A piece of code to measure: its commit (None when it cannot be built) and how it was made."""

    name: str                   # "champion", "baseline", "without #7"
    commit: str | None
    how: str                    # "as recorded", "reverted from the champion", "replayed on the baseline", "entangled"
    why: str = ""               # what did not apply, for a fallback or an entangled change
    change: int | None = None   # the kept change it leaves out


def blob(git: Git, commit: str, path: str) -> bytes | None:
    """A file of a commit as bytes; None when the commit has no such file."""
    return rebase.show(git.root, commit, path)


def merge3(path: str, ours: bytes | None, base: bytes | None, theirs: bytes | None, git: Git) -> bytes | None:
    """The change base → theirs applied onto ours; Conflict when it does not apply."""
    if ours == base:
        return theirs
    if theirs == base or ours == theirs:
        return ours
    if ours is None or base is None or theirs is None:
        raise Conflict(f"{path}: added or removed on one side and changed on the other")
    if path.endswith(".py"):
        done = _constants(path, ours, base, theirs)
        if done is not None:
            return done
    with tempfile.TemporaryDirectory(prefix="autoresearch-merge-") as tmp:
        names = []
        for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
            (Path(tmp) / name).write_bytes(data)
            names.append(str(Path(tmp) / name))
        # three loose files in a folder of their own: no repository, so no configuration or driver of one
        proc = subprocess.run(["git", "merge-file", "-p", "-q", *names], capture_output=True, check=False, cwd=tmp,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C",
                                   "GIT_CONFIG_NOSYSTEM": "1", "HOME": tmp})
    if proc.returncode != 0:
        raise Conflict(f"{path}: the change's lines were changed again later (a 3-way merge conflicts)")
    return proc.stdout


def _constants(path: str, ours: bytes, base: bytes, theirs: bytes) -> bytes | None:
    """A change of constants only, applied by setting the values; None when it is more than constants.
    Conflict when a constant it sets no longer has the value the change started from."""
    try:
        old, new, now = base.decode(), theirs.decode(), ours.decode()
        diffs = diff_constants(old, new)
        values = {name: value for name, before, value in diffs if before is not MISSING and value is not MISSING}
        if not values or len(values) != len(diffs) or set_constants(old, values) != new:
            return None
        current, start = read_constants(now), read_constants(old)
        for name in values:
            if name not in current or repr(current[name]) != repr(start[name]):
                found = repr(current[name]) if name in current else "gone"
                raise Conflict(f"{path}: {name} was changed again later (now {found}, the change set it from "
                               f"{start[name]!r})")
        return set_constants(now, values).encode()
    except (SyntaxError, ValueError, UnicodeDecodeError, UnknownConstant):
        return None


def apply(git: Git, onto: Files, base_commit: str, after_commit: str, paths: list[str], read) -> Files:
    """The change base_commit → after_commit on ``paths``, applied onto the files ``onto`` (read with
    ``read(path)`` where ``onto`` has no entry); returns the new contents of those paths."""
    out: Files = {}
    for path in paths:
        ours = onto[path] if path in onto else read(path)
        out[path] = merge3(path, ours, blob(git, base_commit, path), blob(git, after_commit, path), git)
    return out


def overlay(git: Git, base: str, files: Files, message: str) -> str:
    """A commit whose parent is ``base`` and whose tree is ``base``'s with ``files`` replaced (None: removed)."""
    return rebase.overlay(git.root, base, files, message)


def commit_tree(git: Git, tree: str, parents: list[str], message: str, *, date: str | None = None) -> str:
    """``git commit-tree``; with ``date`` (ISO 8601) as both dates, so the same inputs give the same commit."""
    args = ["commit-tree", tree]
    for p in parents:
        args += ["-p", p]
    return git.raw(*args, "-F", "-", input=message.encode(), dates=date).decode().strip()


def tree_of(git: Git, commit: str) -> str:
    return git.raw("rev-parse", f"{commit}^{{tree}}").decode().strip()


def normalised(git: Git, commit: str, hist: History) -> str:
    """``commit`` with the baseline's scratchpad: the code alone decides the tree (and what a run is)."""
    pad = hist.scratchpad
    want = blob(git, hist.baseline.commit, pad)
    if blob(git, commit, pad) == want:
        return commit
    return overlay(git, commit, {pad: want}, f"{_subject(git, commit)}\n\n(the baseline's {pad})\n")


def without(git: Git, hist: History, change: KeptChange) -> Variant:
    """The champion without ``change``: reverted from the champion, else the others replayed on the
    baseline, else entangled (commit None)."""
    name = f"without #{change.number}"
    champion = hist.champion.commit
    paths = list(change.paths)
    try:
        files = apply(git, {}, change.commit, change.parent, paths, lambda p: blob(git, champion, p))
        commit = overlay(git, champion, files, f"ablation: champion without experiment {change.number}\n\n"
                                               f"{change.description}\n")
        return Variant(name, normalised(git, commit, hist), "reverted from the champion", change=change.number)
    except Conflict as first:
        reverted = str(first)
    base = hist.baseline.commit
    state: Files = {}
    try:
        for other in hist.changes:
            if other.number != change.number:
                state.update(apply(git, state, other.parent, other.commit, list(other.paths),
                                   lambda p: blob(git, base, p)))
    except Conflict as second:
        return Variant(name, None, "entangled", f"reverting it conflicts ({reverted}); replaying the others on the "
                                                f"baseline conflicts too ({second})", change=change.number)
    commit = overlay(git, base, state, f"ablation: the baseline with every kept change but experiment "
                                       f"{change.number}\n")
    return Variant(name, normalised(git, commit, hist), "replayed on the baseline",
                   f"reverting it from the champion conflicts: {reverted}", change=change.number)


def with_constants(git: Git, commit: str, values: dict, files: list[str]) -> tuple[str, list[str]]:
    """``commit`` with constants set in whichever of ``files`` (the editable Python files) define them;
    the new commit and, per name, the file it was set in. UserError for a name no file defines."""
    if not values:
        return commit, []
    left, changed, where = dict(values), {}, []
    for rel in files:
        source = blob(git, commit, rel)
        if source is None or not rel.endswith(".py"):
            continue
        text = source.decode("utf-8")
        known = read_constants(text)
        mine = {k: v for k, v in left.items() if k in known}
        if mine:
            changed[rel] = set_constants(text, mine).encode()
            where += [f"{k} in {rel}" for k in mine]
            for k in mine:
                left.pop(k)
    if left:
        raise UserError(f"{', '.join(sorted(left))}: not an UPPER_CASE constant of {', '.join(files)} at "
                        f"{commit[:10]}", hint="name a constant defined at the top of an editable file")
    names = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return overlay(git, commit, changed, f"{_subject(git, commit)}\n\nwith {names}\n"), where


def _subject(git: Git, commit: str) -> str:
    return git.raw("log", "-1", "--format=%s", commit).decode("utf-8", "replace").strip()
