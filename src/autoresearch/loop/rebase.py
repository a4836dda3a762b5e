"""Moving a candidate onto a newer base without touching any working tree.

With several candidates in flight, a candidate's base (the commit it was proposed from) may have moved
on by the time its result comes in: notes of other experiments were carried forward, or another
candidate was kept. These helpers build the commits the lifecycle needs with git plumbing and a private
index file (``GIT_INDEX_FILE``), so neither the repository's tree nor any worktree changes:

- ``overlay``: a new commit on ``base`` with some files replaced (the candidate's code, merged notes);
- ``reapply``: the candidate's diff (its base → the candidate, code files only) applied onto a newer base;
  when the text patch does not apply but the change is only UPPER_CASE constants (``LR = 1e-3``), the same
  constant values are set on the newer base (the re-run tests them there); ``None`` when neither works
  (a conflict: the rule in docs/parallel.md makes it ``stale``);
- ``merge_notes``: the scratchpad of the new base plus what the candidate's agent added to its own.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from autoresearch.hyperparams import UnknownConstant, diff_constants, set_constants
from autoresearch.loop.gitops import Git, GitError


def _git(root: Path, *args: str, index: str | None = None, input: bytes | None = None) -> bytes:
    """One git call through the safe wrapper (no hook, filter or planted config runs), on bytes."""
    return Git(root).raw(*args, input=input, index=index)


def _commit_index(root: Path, index: str, base: str, message: str) -> str:
    tree = _git(root, "write-tree", index=index).decode().strip()
    return _git(root, "commit-tree", tree, "-p", base, "-F", "-", input=message.encode()).decode().strip()


def show(root: Path, commit: str, path: str) -> bytes | None:
    try:
        return _git(root, "cat-file", "blob", f"{commit}:{path}")
    except GitError:
        return None


def overlay(root: Path, base: str, files: dict[str, bytes | None], message: str) -> str:
    """A commit on ``base`` whose tree is ``base``'s with ``files`` replaced (None: removed)."""
    with tempfile.TemporaryDirectory(prefix="autoresearch-index-") as tmp:
        index = str(Path(tmp) / "index")
        _git(root, "read-tree", base, index=index)
        for rel, content in files.items():
            if content is None:
                _git(root, "update-index", "--force-remove", "--", rel, index=index)
                continue
            blob = _git(root, "hash-object", "-w", "--stdin", input=content).decode().strip()
            _git(root, "update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", index=index)
        return _commit_index(root, index, base, message)


def reapply(root: Path, old_base: str, candidate: str, new_base: str, paths: list[str], message: str) -> str | None:
    """``candidate``'s change to ``paths`` (relative to ``old_base``) as a commit on ``new_base``, or None
    when the change does not apply there without a conflict."""
    patch = _git(root, "diff", "--no-ext-diff", "--no-textconv", "--binary", "--full-index", old_base, candidate, "--", *paths)
    with tempfile.TemporaryDirectory(prefix="autoresearch-index-") as tmp:
        index = str(Path(tmp) / "index")
        _git(root, "read-tree", new_base, index=index)
        if patch.strip():
            try:
                _git(root, "apply", "--cached", "--whitespace=nowarn", "-", input=patch, index=index)
            except GitError:
                return _reapply_constants(root, old_base, candidate, new_base, paths, message)
        return _commit_index(root, index, new_base, message)


def _reapply_constants(root: Path, old_base: str, candidate: str, new_base: str, paths: list[str],
                       message: str) -> str | None:
    files: dict[str, bytes | None] = {}
    for rel in paths:
        old, mine, now = (show(root, c, rel) for c in (old_base, candidate, new_base))
        if old == mine:
            continue
        if old is None or mine is None or now is None:
            return None
        try:
            old_t, mine_t, now_t = old.decode(), mine.decode(), now.decode()
            values = {name: new for name, _, new in diff_constants(old_t, mine_t)}
            if not values or set_constants(old_t, values) != mine_t:
                return None   # more than constants changed: a real conflict
            files[rel] = set_constants(now_t, values).encode()
        except (SyntaxError, ValueError, UnicodeDecodeError, UnknownConstant):
            return None
    return overlay(root, new_base, files, message) if files else None


def merge_notes(old: str, mine: str, now: str) -> str:
    """The scratchpad of the newer base (``now``) plus what this candidate's agent wrote to its copy
    (``mine``, begun from ``old``): appended text is appended; anything else keeps both, marked. A line the
    newer notes already hold is not added again (a crash's notes carried forward, then its fix's)."""
    if mine == old or mine == now:
        return now
    if now == old:
        return mine
    added = mine[len(old):] if mine.startswith(old) else mine
    have = set(now.splitlines())
    added = "\n".join(line for line in added.splitlines() if line not in have or not line.strip())
    if not added.strip():
        return now
    sep = "" if now.endswith("\n") or not now else "\n"
    return now + sep + added.strip("\n") + "\n"
