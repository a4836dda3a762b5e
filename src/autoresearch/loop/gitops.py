"""Git as the record of every attempt: the champion branch, archive refs, restores, commit messages.

Layout in the research repository:
- branch ``autoresearch/<tag>``: its head is always the champion (the best code so far), plus
  scratchpad-only commits that carry the agent's notes forward after a discarded experiment;
- ``refs/autoresearch/archive/<n>``: experiment n's commit, whatever its outcome, so that every attempt
  survives in git even after a revert.

The tool commits as "autoresearch" unless the repository configures an identity of its own. This module
knows nothing about the ledger; the engine reconciles the two.

Every git call runs with ``SAFE_CONFIG`` and ``_safe_env``: the agent's turn may have planted files under
``.git`` (a ``core.fsmonitor`` or hook command, ``commondir``, replace refs, alternates, a signing program),
and the tool's own ``git status`` must not run or honour any of them before the edit policy has compared
``.git`` with its snapshot and put it back (``loop/editpolicy.py``). Config keys whose value is a command
are overridden on the command line (``-c`` beats every config file), the system config is skipped, replace
objects are ignored, and the repository's git directory is named explicitly so that a planted
``commondir`` or ``core.worktree`` cannot redirect git. What ``-c`` cannot switch off (a filter or textconv
driver under a name of the agent's choosing, alternates) is the edit policy's to catch before git runs.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from autoresearch.bytecode import bytecode_files
from autoresearch.errors import UserError
from autoresearch.text import stored

BRANCH_PREFIX = "autoresearch/"
ARCHIVE_PREFIX = "refs/autoresearch/archive/"
# Config keys that make git run a command or trust something an agent could plant, forced to inert values.
SAFE_CONFIG = (
    "core.fsmonitor=false",          # a command git runs on every status
    "core.hooksPath=/dev/null",      # no hook runs (commit also passes --no-verify)
    "core.untrackedCache=false",     # no cached view of untracked files that could hide a new one
    "core.trustctime=true",          # a file rewritten with its old size and mtime is still seen as changed
    "core.checkStat=default",
    "core.pager=cat",
    "diff.external=",                # no external diff program
    "protocol.allow=never",          # no transport (fetch, submodules) at all
    "commit.gpgSign=false",          # gpg.program would be run
    "tag.gpgSign=false",
    "log.showSignature=false",
    "gc.auto=0",                     # no automatic gc or maintenance running hooks or rewriting packs
    "maintenance.auto=false",
)
# The user's own identity variables are kept; every other GIT_* variable of the caller is dropped (a GIT_DIR
# or GIT_INDEX_FILE inherited from a hook would point the tool at another repository).
_KEEP_ENV = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")
_IDENTITY = {
    "GIT_AUTHOR_NAME": "autoresearch", "GIT_AUTHOR_EMAIL": "autoresearch@localhost",
    "GIT_COMMITTER_NAME": "autoresearch", "GIT_COMMITTER_EMAIL": "autoresearch@localhost",
}


class GitError(RuntimeError):
    pass


@dataclass(frozen=True)
class Change:
    """One entry of ``git status``: a path and how it differs from HEAD."""

    code: str      # two-letter porcelain code, e.g. " M", "??", "D ", "R "
    path: str
    orig: str = ""  # the old path of a rename


class Git:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # A linked worktree's git directory names its common directory in ``commondir``; one that is not
        # linked now must never start honouring a ``commondir`` file that appears later.
        self._linked = (self.root / ".git" / "commondir").is_file()

    def __call__(self, *args: str, check: bool = True, input: str | None = None) -> str:
        proc = self.run(*args, input=input)
        if check and proc.returncode != 0:
            raise GitError(f"git {' '.join(args)} failed in {self.root}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """One git call with the safe overrides; the caller looks at the return code. Output is decoded
        leniently: a file that is not UTF-8 (a scratchpad, a data file) shows with U+FFFD instead of
        stopping the loop at `git show` or `git diff`."""
        return subprocess.run(self._argv(args), cwd=self.root, capture_output=True, text=True, encoding="utf-8",
                              errors="replace", env=self._safe_env(), input=input, check=False)

    def raw(self, *args: str, input: bytes | None = None, index: str | None = None,
            dates: str | None = None) -> bytes:
        """One git call on bytes (blobs, ``-z`` listings), optionally with a private index file and fixed
        author and committer dates (``commit-tree``: the same inputs give the same commit); raises
        ``GitError`` when it fails."""
        env = self._safe_env()
        if index is not None:
            env["GIT_INDEX_FILE"] = index
        if dates is not None:
            env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = dates
        proc = subprocess.run(self._argv(args), cwd=self.root, capture_output=True, env=env, input=input, check=False)
        if proc.returncode != 0:
            raise GitError(f"git {' '.join(args)} failed in {self.root}: "
                           f"{proc.stderr.decode('utf-8', 'replace').strip()}")
        return proc.stdout

    @staticmethod
    def _argv(args: tuple[str, ...]) -> list[str]:
        cmd = ["git", "--no-replace-objects"]
        for item in SAFE_CONFIG:
            cmd += ["-c", item]
        return [*cmd, *args]

    def _safe_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _KEEP_ENV}
        env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1", "GIT_ATTR_NOSYSTEM": "1",
                    "GIT_NO_REPLACE_OBJECTS": "1", "GIT_PAGER": "cat",
                    "GIT_OPTIONAL_LOCKS": "0"})   # status and diff never rewrite the index: .git is compared
        for key, value in _IDENTITY.items():
            env.setdefault(key, value)
        git_dir = Path(os.path.abspath(self.root)) / ".git"   # cwd is the root: a relative GIT_DIR would nest
        if git_dir.is_dir() and not git_dir.is_symlink():
            # Named explicitly: no discovery, and core.worktree or a planted commondir cannot redirect git.
            env["GIT_DIR"] = str(git_dir)
            env["GIT_WORK_TREE"] = str(git_dir.parent)
            if not self._linked:
                env["GIT_COMMON_DIR"] = str(git_dir)
        return env

    # --- reading -------------------------------------------------------------------------------
    def is_repo(self) -> bool:
        return (self.root / ".git").exists()

    def head(self) -> str:
        return self("rev-parse", "HEAD").strip()

    def rev_object(self, ref: str) -> str | None:
        """The object ``ref`` names, of any type (None when it names nothing)."""
        out = self("rev-parse", "--verify", "--quiet", ref, check=False).strip()
        return out or None

    def rev(self, ref: str) -> str | None:
        out = self("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False).strip()
        return out or None

    def current_branch(self) -> str | None:
        out = self("symbolic-ref", "--quiet", "--short", "HEAD", check=False).strip()
        return out or None

    def is_ancestor(self, ancestor: str, commit: str) -> bool:
        return self.run("merge-base", "--is-ancestor", ancestor, commit).returncode == 0

    def remove_stale_locks(self) -> list[str]:
        """Remove lock files a killed git left behind (the loop is the repository's only writer while it runs)."""
        git_dir = self.root / ".git"
        locks = [git_dir / "index.lock", git_dir / "HEAD.lock", git_dir / "packed-refs.lock"]
        locks += list((git_dir / "refs").rglob("*.lock"))
        removed = []
        for lock in locks:
            if lock.is_file():
                lock.unlink()
                removed.append(str(lock.relative_to(self.root)))
        return removed

    def tree_of(self, commit: str) -> str:
        return self("rev-parse", f"{commit}^{{tree}}").strip()

    def show(self, commit: str, path: str) -> str | None:
        out = self.run("show", "--no-textconv", f"{commit}:{path}")
        return out.stdout if out.returncode == 0 else None

    def message(self, commit: str) -> str:
        return self("log", "-1", "--format=%B", commit)

    def diff(self, a: str, b: str | None = None, paths: tuple[str, ...] = ()) -> str:
        args = ["diff", "--no-ext-diff", "--no-textconv", a] + ([b] if b else []) + (["--", *paths] if paths else [])
        return self(*args)

    def status(self, ignored: bool = False) -> list[Change]:
        """Every difference between the working tree (and index) and HEAD, untracked files included."""
        args = ["status", "--porcelain=v1", "-z", "--untracked-files=all"]
        if ignored:
            args.append("--ignored=matching")
        raw = self(*args)
        items = raw.split("\0")
        changes: list[Change] = []
        i = 0
        while i < len(items):
            entry = items[i]
            i += 1
            if not entry:
                continue
            code, path = entry[:2], entry[3:]
            orig = ""
            if code[0] in "RC":
                orig = items[i]
                i += 1
            changes.append(Change(code, path, orig))
        return changes

    def mode_changes(self, base: str) -> list[str]:
        """Paths whose file mode (executable bit, symlink) differs between ``base`` and the worktree."""
        out = self("diff", "--no-ext-diff", "--raw", "-z", base)
        parts = out.split("\0")
        paths = []
        for i in range(0, len(parts) - 1, 2):
            meta, path = parts[i], parts[i + 1]
            fields = meta.lstrip(":").split()
            if len(fields) >= 2 and fields[0] != fields[1] and fields[0] != "000000" and fields[1] != "000000":
                paths.append(path)
        return paths

    # --- writing -------------------------------------------------------------------------------
    def init(self) -> None:
        self("init", "-q", "-b", "main")

    def checkout_branch(self, branch: str, start: str | None = None) -> None:
        if self.rev(f"refs/heads/{branch}"):
            self("checkout", "-q", branch)
        else:
            self("checkout", "-q", "-b", branch, *([start] if start else []))

    def commit(self, paths: list[str], message: str, allow_empty: bool = False) -> str:
        """Stage exactly ``paths`` (additions, edits and deletions) and commit them. The message goes through
        ``text.stored``: git must never see a NUL (it cannot be passed at all) or an escape sequence."""
        if paths:
            self("add", "-A", "--", *paths)
        self("commit", "-q", "--no-verify", "-m", stored(message, None),
             *(["--allow-empty"] if allow_empty else []))
        return self.head()

    def commit_tree(self, tree: str, parent: str, message: str) -> str:
        return self("commit-tree", tree, "-p", parent, "-F", "-", input=stored(message, None)).strip()

    def update_ref(self, ref: str, commit: str) -> None:
        self("update-ref", ref, commit)

    def reset_hard(self, commit: str) -> None:
        """Make the worktree exactly ``commit``: tracked files restored, untracked (not ignored) removed,
        and untracked byte-code removed (see ``remove_bytecode``)."""
        self("reset", "-q", "--hard", commit)
        self("clean", "-q", "-fd")
        self.remove_bytecode()

    def remove_bytecode(self) -> list[str]:
        """Delete untracked ``__pycache__`` folders and ``.pyc`` files of the repository.

        Git ignores them, so a reset leaves them, yet Python would run a planted ``.pyc`` whose header
        matches its source's size and mtime instead of the source (see ``autoresearch.bytecode``). The
        tool's state folder, virtual environments and ``node_modules`` are left alone."""
        found = bytecode_files(self.root)
        if not found:
            return []
        tracked = set(self("ls-files", "-z").split("\0"))
        removed = []
        for rel in sorted(found - tracked):
            path = self.root / rel
            path.unlink(missing_ok=True)
            removed.append(rel)
            if path.parent.name == "__pycache__":
                try:
                    path.parent.rmdir()        # only once empty
                except OSError:
                    pass
        return removed


def branch_name(tag: str) -> str:
    return BRANCH_PREFIX + tag


def archive_ref(number: int) -> str:
    return f"{ARCHIVE_PREFIX}{number}"


def validate_tag(tag: str) -> str:
    ok = tag and all(c.isalnum() or c in "-_." for c in tag) and not tag.startswith(".")
    if not ok:
        raise UserError(f"invalid tag {tag!r}", hint="use letters, digits, '-', '_' or '.', e.g. --tag nov27")
    return tag


def format_message(*, number: int, description: str, metric_name: str, mean: float | None,
                   std: float | None, prev: float | None, delta: float | None, folds: list,
                   peak_memory_gb: float | None, phase: str, changed: str, status: str,
                   hypothesis: str = "", reason: str = "") -> str:
    """The seed's machine-readable commit message, one ``key: value`` per line after the title. Agent and
    run text (description, hypothesis, reason, changed) goes through ``text.stored`` and onto one line each."""

    def num(x: float | None, fmt: str = ".2f") -> str:
        return "nan" if x is None or x != x else format(x, fmt)

    description, hypothesis, reason = stored(description), stored(hypothesis), stored(reason)
    title = description.strip().splitlines()[0] if description.strip() else "(no description)"
    lines = [f"experiment {number}: {title}", ""]
    if mean is None:
        lines.append(f"{metric_name}: nan (prev: {num(prev)})")
    else:
        lines.append(f"{metric_name}: {num(mean)} ± {num(std)} (prev: {num(prev)})")
    lines += [
        f"delta: {'+' if (delta or 0) > 0 else ''}{num(delta)}",
        f"status: {status}",
        f"peak_memory_gb: {num(peak_memory_gb)}",
        f"folds: [{', '.join(num(v) for v in folds)}]",
        f"phase: {phase}",
        f"changed: {' '.join(stored(changed).split()) or '(code change)'}",
    ]
    if reason:
        lines.append(f"reason: {' '.join(reason.split())}")
    if hypothesis:
        lines.append(f"hypothesis: {' '.join(hypothesis.split())}")
    return "\n".join(lines) + "\n"
