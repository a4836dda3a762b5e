"""What an agent turn may change, judged on what it left, whatever the agent says it did.

``judge`` gives the verdict on a turn's take-back from its working copy (``loop/workspace.py``): every
problem found there (a new, deleted or changed fixed file, a link, a mode change, a file that is not UTF-8
text) makes the experiment invalid, and so does a turn that changed no code or Python that does not compile.

Around every turn ``Snapshot.take`` also records the repository's own git directory (every control file by
content, the object store by each file's stat signature), its ignored files outside the tool's state folder
and its byte-code files: an agent that runs inside the tool could reach them. ``git_metadata_changes`` finds
what changed and ``restore`` puts everything back.

``.git`` is compared first, in Python, before any git command runs: a planted ``core.fsmonitor``, hook,
filter driver, ``commondir`` or alternates file must be found and removed before the tool's own
``git status`` could honour it. Nothing under ``.git`` changes legitimately during an agent's turn (the tool
writes no commit while the agent works), so every difference counts, except git's own journal (``logs/``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from autoresearch.bytecode import bytecode_files
from autoresearch.errors import UserError
from autoresearch.loop.gitops import Git

if TYPE_CHECKING:
    from autoresearch.loop.workspace import TakeBack

_STATE_DIRS = (".autoresearch/",)
_HARMLESS_IGNORED = ("__pycache__/", ".pytest_cache/")   # byte-code has its own check (venvs excluded)
# Under .git: the object store is large and immutable, so it is compared by stat signature (inode, size,
# mtime and ctime; ctime cannot be put back by an unprivileged process); logs are git's journal.
_OBJECTS = "objects/"
_OBJECT_CONTROL = "objects/info/"    # alternates, http-alternates, commit-graph: honoured by git, compared by content
_UNCHECKED = ("logs/",)


@dataclass
class Verdict:
    ok: bool
    reason: str = ""
    touched: list[str] = field(default_factory=list)   # editable files that changed


@dataclass
class Snapshot:
    git_files: dict[str, bytes]                       # .git control files by content ("" = .git itself, if a file)
    ignored: set[str]
    git_objects: dict[str, tuple] = field(default_factory=dict)   # object store files by stat signature
    git_dirs: set[str] = field(default_factory=set)
    bytecode: set[str] = field(default_factory=set)

    @classmethod
    def take(cls, git: Git) -> "Snapshot":
        ignored = _ignored(git)
        files, objects, dirs = _git_tree(git.root / ".git")
        return cls(files, ignored, objects, dirs, bytecode_files(git.root))


def judge(taken: "TakeBack", scratchpad: str) -> Verdict:
    """The verdict on an agent's turn from what it left in its working copy (``workspace.TakeBack``):
    every problem found there makes it invalid; so does a turn that changed no code, or Python that does
    not compile."""
    if taken.problems:
        more = f" and {len(taken.problems) - 4} more" if len(taken.problems) > 4 else ""
        return Verdict(False, "; ".join(taken.problems[:4]) + more, list(taken.changed))
    code = [p for p in taken.changed if p != scratchpad]
    if not code:
        return Verdict(False, "nothing changed in the editable files", list(taken.changed))
    for rel in code:
        if rel.endswith(".py"):
            try:
                compile(taken.files[rel].decode("utf-8"), rel, "exec")
            except (SyntaxError, ValueError) as exc:
                return Verdict(False, f"{rel} does not compile: {exc}", list(taken.changed))
    return Verdict(True, "", list(taken.changed))


def git_metadata_changes(git: Git, before: Snapshot) -> list[str]:
    """Paths under ``.git`` that differ from the snapshot (added, removed or rewritten), sorted."""
    files, objects, _ = _git_tree(git.root / ".git")
    out = [f".git/{rel}".rstrip("/") for rel in _differing(before.git_files, files)]
    out += [f".git/{rel}" for rel in _differing(before.git_objects, objects)]
    return sorted(out)


def restore(git: Git, champion: str, before: Snapshot) -> None:
    """Undo everything the agent did: git metadata first (so that no planted file is honoured by the git
    commands that follow), then tracked files, untracked files, byte-code and new ignored files."""
    _restore_git_dir(git.root / ".git", before)
    git.reset_hard(champion)          # also removes untracked byte-code
    for rel in _ignored(git) - before.ignored:
        path = git.root / rel
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


def _ignored(git: Git) -> set[str]:
    out = set()
    for change in git.status(ignored=True):
        if change.code == "!!" and not change.path.startswith(_STATE_DIRS) \
                and not any(part in change.path for part in _HARMLESS_IGNORED):
            out.add(change.path)
    return out


def _differing(a: dict, b: dict) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _git_tree(git_dir: Path) -> tuple[dict[str, bytes], dict[str, tuple], set[str]]:
    """(control files by content, object-store files by stat signature, folders) of a git directory.

    A ``.git`` that is a file (a linked worktree or submodule) or a symlink is recorded as itself, under "".
    """
    if git_dir.is_symlink() or git_dir.is_file():
        return {"": _read(git_dir)}, {}, set()
    files: dict[str, bytes] = {}
    objects: dict[str, tuple] = {}
    folders: set[str] = set()
    if not git_dir.is_dir():
        return files, objects, folders
    for current, dirs, names in os.walk(git_dir):
        here = Path(current)
        folders.add(here.relative_to(git_dir).as_posix())
        for d in list(dirs):
            if (here / d).is_symlink():      # a symlinked folder is recorded as a link, never followed
                dirs.remove(d)
                names.append(d)
        for name in names:
            path = here / name
            rel = path.relative_to(git_dir).as_posix()
            if rel.startswith(_UNCHECKED):
                continue
            if rel.startswith(_OBJECTS) and not rel.startswith(_OBJECT_CONTROL) and not path.is_symlink():
                st = path.lstat()
                objects[rel] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
            else:
                files[rel] = _read(path)
    return files, objects, folders


def _read(path: Path) -> bytes:
    if path.is_symlink():
        return b"symlink:" + os.readlink(path).encode()
    return path.read_bytes()


def _restore_git_dir(git_dir: Path, before: Snapshot) -> None:
    files, objects, folders = _git_tree(git_dir)
    if "" in files or "" in before.git_files or (before.git_files and not git_dir.is_dir()):
        if files.get("") != before.git_files.get(""):
            raise UserError(f"{git_dir} was replaced during the agent's turn; the repository cannot be restored "
                            "automatically", hint="restore .git from a backup and check how the agent could write there")
    rewritten = [rel for rel in before.git_objects if objects.get(rel) != before.git_objects[rel]]
    if rewritten:
        # Objects are not kept in the snapshot (too big); a rewritten one would change history silently.
        raise UserError(f"the agent's turn rewrote or removed git objects: .git/{', .git/'.join(rewritten[:3])}",
                        hint="run `git fsck` in the repository, restore .git from a backup if it reports damage, "
                             "and check how the agent could write there")
    for rel in objects.keys() - before.git_objects.keys():
        (git_dir / rel).unlink()             # a new pack or loose object could shadow an existing one
    for rel in sorted(files.keys() - before.git_files.keys(), key=len, reverse=True):
        path = git_dir / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.is_symlink() or path.exists():
            path.unlink()
    for rel, content in before.git_files.items():
        path = git_dir / rel
        if files.get(rel) == content:
            continue
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if content.startswith(b"symlink:"):
            os.symlink(content[len(b"symlink:"):].decode(), path)
        else:
            path.write_bytes(content)
    new_folders = folders - before.git_dirs if before.git_dirs else set()
    for rel in sorted(new_folders, key=len, reverse=True):   # refs/replace, modules/x, worktrees/y, ...
        if not rel.startswith(_UNCHECKED):
            shutil.rmtree(git_dir / rel, ignore_errors=True)
