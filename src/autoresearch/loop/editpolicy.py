"""What an agent turn may change, checked on the tree itself, whatever the agent says it did.

Before the agent runs, ``Snapshot.take`` records the git control files (config, hooks, HEAD, refs) and the
ignored files outside the tool's state folder. Afterwards ``check`` compares the working tree with the
champion commit and the snapshot. Any change outside the editable files (new, deleted or renamed files,
symlinks, mode changes, git metadata, configuration, program, preparation code) makes the experiment
invalid; ``restore`` puts everything back.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch.loop.gitops import Git

_GIT_CONTROL = ("config", "HEAD", "hooks", "info", "packed-refs", "refs/heads", "refs/tags")
_STATE_DIRS = (".autoresearch/",)
_HARMLESS_IGNORED = ("__pycache__/", ".pytest_cache/")


@dataclass
class Verdict:
    ok: bool
    reason: str = ""
    touched: list[str] = field(default_factory=list)   # editable files that changed


@dataclass
class Snapshot:
    git_files: dict[str, bytes]
    ignored: set[str]

    @classmethod
    def take(cls, git: Git) -> "Snapshot":
        return cls(_git_control(git.root / ".git"), _ignored(git))


def check(git: Git, champion: str, editable: list[str], scratchpad: str, before: Snapshot) -> Verdict:
    """Compare the tree with ``champion``; only editable files may differ, as regular files."""
    allowed = set(editable) | {scratchpad}
    problems: list[str] = []
    touched: list[str] = []
    if _git_control(git.root / ".git") != before.git_files:
        problems.append("git metadata (.git config, hooks or refs) was changed")
    for change in git.status():
        paths = [change.path] + ([change.orig] if change.orig else [])
        if change.code == "??":
            problems.append(f"new file {change.path}")
        elif "D" in change.code:
            problems.append(f"deleted {change.path}")
        elif change.code[0] in "RC":
            problems.append(f"renamed {change.orig} to {change.path}")
        elif any(p not in allowed for p in paths):
            problems.append(f"changed {change.path}, which is not editable")
        else:
            touched.append(change.path)
    for path in git.mode_changes(champion):
        problems.append(f"mode of {path} changed")
    for rel in touched:
        full = git.root / rel
        if full.is_symlink() or not stat.S_ISREG(os.lstat(full).st_mode):
            problems.append(f"{rel} is no longer a regular file")
    new_ignored = _ignored(git) - before.ignored
    if new_ignored:
        problems.append(f"new ignored file {sorted(new_ignored)[0]}")
    if problems:
        return Verdict(False, "; ".join(dict.fromkeys(problems)), touched)
    code_changes = [p for p in touched if p != scratchpad]
    if not code_changes:
        return Verdict(False, "nothing changed in the editable files", touched)
    for rel in code_changes:
        if rel.endswith(".py"):
            try:
                compile((git.root / rel).read_text(encoding="utf-8"), rel, "exec")
            except (SyntaxError, ValueError, UnicodeDecodeError) as exc:
                return Verdict(False, f"{rel} does not compile: {exc}", touched)
    return Verdict(True, "", touched)


def restore(git: Git, champion: str, before: Snapshot) -> None:
    """Undo everything the agent did: tracked files, untracked files, new ignored files, git metadata."""
    _restore_git_control(git.root / ".git", before.git_files)
    git.reset_hard(champion)
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


def _git_control(git_dir: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name in _GIT_CONTROL:
        path = git_dir / name
        if path.is_file() or path.is_symlink():
            files[name] = _read(path)
        elif path.is_dir():
            for sub in sorted(path.rglob("*")):
                if sub.is_file() or sub.is_symlink():
                    files[str(sub.relative_to(git_dir))] = _read(sub)
    return files


def _read(path: Path) -> bytes:
    if path.is_symlink():
        return b"symlink:" + os.readlink(path).encode()
    return path.read_bytes()


def _restore_git_control(git_dir: Path, files: dict[str, bytes]) -> None:
    current = _git_control(git_dir)
    for rel in current.keys() - files.keys():
        (git_dir / rel).unlink()
    for rel, content in files.items():
        path = git_dir / rel
        if current.get(rel) == content:
            continue
        if path.is_symlink() or path.exists():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        if content.startswith(b"symlink:"):
            os.symlink(content[len(b"symlink:"):].decode(), path)
        else:
            path.write_bytes(content)
