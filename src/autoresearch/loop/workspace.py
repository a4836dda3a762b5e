"""The folders an agent edits and a run executes: each made from a commit, never the repository's own tree.

- ``export(git, commit, dest)``: the commit's tracked files written into a new folder ``dest``, from the
  object store (``ls-tree`` and ``cat-file``): no checkout, so no filter, hook or attribute of the
  repository runs, and nothing else (``.git``, ``.autoresearch``, untracked files) comes along.
- ``WorkingCopy``: an agent's turn. The commit it starts from (the base, or the crashed candidate a fix
  starts from) is exported into a folder of its own; the agent edits that folder and nothing else. The
  tool then reads the editable files back as data (``take_back``): regular files only, never through a
  link (symbolic or hard), size-capped, UTF-8 text without NUL; every other difference from the export
  (a new, deleted or changed file, a link, a new folder, a changed mode) is named as a problem. The
  folder is never read again after that: what it holds is data the tool validated, not a path it follows.
- ``Snapshot``: what a run executes. The candidate commit exported read-only into a folder no agent can
  reach, so the code that ran is the code committed, whatever happens to any working copy meanwhile.

Working copies live outside the repository (``work_root``: a folder of the system's temporary folder
named for the repository), so an agent's jail (``runner/jail.py``), which never shows the repository,
can show its copy; snapshots live under ``.autoresearch/snapshots/``, which runs see only as their own
read-only working folder and agents never see.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch.loop.gitops import Git

SNAPSHOTS = "snapshots"
MAX_EDITABLE_BYTES = 2 * 1024 * 1024     # one editable file taken back from an agent's turn
_REGULAR, _EXECUTABLE, _SYMLINK = "100644", "100755", "120000"


def work_root(repo: Path) -> Path:
    """Where the agents' working copies of the repository at ``repo`` are made (outside it)."""
    tag = hashlib.sha256(str(Path(repo).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"autoresearch-work-{tag}"


@dataclass(frozen=True)
class Entry:
    mode: str          # git's: 100644, 100755 or 120000
    data: bytes        # file content, or a symlink's target


def tree(git: Git, commit: str) -> dict[str, Entry]:
    """Every tracked file of ``commit``: path -> mode and content (submodules are left out)."""
    listing = git.raw("ls-tree", "-r", "-z", "--full-tree", commit)
    wanted: list[tuple[str, str, str]] = []
    for item in listing.split(b"\0"):
        if not item:
            continue
        meta, path = item.split(b"\t", 1)
        mode, kind, sha = meta.decode().split()
        if kind == "blob":
            wanted.append((path.decode("utf-8", "surrogateescape"), mode, sha))
    if not wanted:
        return {}
    out = git.raw("cat-file", "--batch", input="".join(f"{sha}\n" for _, _, sha in wanted).encode())
    entries: dict[str, Entry] = {}
    pos = 0
    for path, mode, _ in wanted:
        header_end = out.index(b"\n", pos)
        size = int(out[pos:header_end].split()[2])
        start = header_end + 1
        entries[path] = Entry(mode, out[start:start + size])
        pos = start + size + 1
    return entries


def export(git: Git, commit: str, dest: Path, *, read_only: bool = False) -> dict[str, Entry]:
    """Write ``commit``'s tracked files into ``dest`` (removed first if it exists); returns what was written."""
    remove(dest)
    dest.mkdir(parents=True)
    entries = tree(git, commit)
    for rel, entry in entries.items():
        target = dest / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            continue      # git never stores such a path; a forged tree must not write outside dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.mode == _SYMLINK:
            os.symlink(entry.data, target)
            continue
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755 if entry.mode == _EXECUTABLE else 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(entry.data)
    if read_only:
        _chmod_tree(dest, writable=False)
    return entries


def remove(path: Path) -> None:
    """Remove a file, link or folder tree at ``path`` without following any link; nothing if absent."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        _chmod_tree(path, writable=True)
        shutil.rmtree(path)


def _chmod_tree(root: Path, *, writable: bool) -> None:
    for current, dirs, files in os.walk(root, topdown=False):
        for name in [*files, *dirs]:
            p = Path(current) / name
            if p.is_symlink():
                continue
            mode = p.stat().st_mode
            os.chmod(p, (mode | stat.S_IWUSR) if writable else (mode & ~0o222))
    os.chmod(root, (root.stat().st_mode | stat.S_IWUSR) if writable else (root.stat().st_mode & ~0o222))


# ------------------------------------------------------------------------------------- the agent's copy


@dataclass
class TakeBack:
    """What an agent's turn left in its working copy, as data: the editable files' contents (changed or
    not) and every problem found."""

    files: dict[str, bytes] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)      # editable files whose content differs from the start
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class WorkingCopy:
    """One agent turn's folder: an export of ``commit`` at ``path``."""

    path: Path
    commit: str
    entries: dict[str, Entry]
    stats: dict[str, tuple] = field(default_factory=dict)   # each exported file's identity after writing

    @classmethod
    def create(cls, git: Git, commit: str, path: Path) -> "WorkingCopy":
        entries = export(git, commit, path)
        return cls(path, commit, entries, {rel: _identity(os.lstat(path / rel)) for rel in entries})

    def take_back(self, editable: list[str], *, max_bytes: int = MAX_EDITABLE_BYTES) -> TakeBack:
        """Read the editable files back and compare everything else with the export (see the module
        docstring). Never follows a link; never writes."""
        result = TakeBack()
        seen: set[str] = set()
        dirs = {Path(rel).parent.as_posix() for rel in self.entries} | {"."}
        dirs |= {p.as_posix() for rel in self.entries for p in Path(rel).parents}
        for current, subdirs, names in os.walk(self.path):
            here = Path(current)
            for name in list(subdirs):
                rel = (here / name).relative_to(self.path).as_posix()
                if (here / name).is_symlink():
                    subdirs.remove(name)
                    names.append(name)          # judged as a file entry below: never walked into
                elif rel not in dirs:
                    subdirs.remove(name)
                    result.problems.append(f"new folder {rel}")
            for name in names:
                rel = (here / name).relative_to(self.path).as_posix()
                seen.add(rel)
                self._judge(rel, editable, max_bytes, result)
        for rel in self.entries.keys() - seen:
            result.problems.append(f"deleted {rel}")
        result.problems = list(dict.fromkeys(result.problems))
        return result

    def _judge(self, rel: str, editable: list[str], max_bytes: int, result: TakeBack) -> None:
        path = self.path / rel
        st = os.lstat(path)
        before = self.entries.get(rel)
        if stat.S_ISLNK(st.st_mode):
            if before is None or before.mode != _SYMLINK or os.readlink(path).encode() != before.data:
                result.problems.append(f"{rel} is a symbolic link")
            return
        if not stat.S_ISREG(st.st_mode):
            result.problems.append(f"{rel} is not a regular file")
            return
        if before is None and rel not in editable:
            result.problems.append(f"new file {rel}")
            return
        if before is not None and before.mode == _SYMLINK:
            result.problems.append(f"{rel} was a symbolic link and is now a file")
            return
        if before is not None and bool(st.st_mode & stat.S_IXUSR) != (before.mode == _EXECUTABLE):
            result.problems.append(f"mode of {rel} changed")
        if st.st_nlink != 1:
            result.problems.append(f"{rel} is a hard link ({st.st_nlink} names for one file)")
            return
        if rel not in editable:
            same = self.stats.get(rel) == _identity(st) or read_file(path, len(before.data) + 1) == before.data
            if not same:
                result.problems.append(f"changed {rel}, which is not editable")
            return
        if st.st_size > max_bytes:
            result.problems.append(f"{rel} is {st.st_size} bytes, over the {max_bytes} bytes an editable file may hold")
            return
        data = read_file(path, max_bytes + 1)
        if data is None:
            result.problems.append(f"{rel} could not be read as a regular file")
            return
        problem = text_problem(data)
        if problem:
            result.problems.append(f"{rel} {problem}")
            return
        result.files[rel] = data
        if before is None or data != before.data:
            result.changed.append(rel)


def _identity(st: os.stat_result) -> tuple:
    """What changes whenever a file's content does: the ctime is set by the kernel on every write and
    cannot be put back, and a file renamed over it has another inode."""
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def read_file(path: Path, limit: int) -> bytes | None:
    """At most ``limit`` bytes of the regular file at ``path``, opened without following a link; None
    when it is not a regular file with a single name."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return None
        return fh.read(limit)


def text_problem(data: bytes) -> str:
    """Why ``data`` is not acceptable as an editable text file ('' when it is)."""
    if b"\0" in data:
        return "holds NUL bytes (not a text file)"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"is not valid UTF-8 (byte {exc.start})"
    return ""


# ------------------------------------------------------------------------------------------- snapshots


def snapshot(git: Git, commit: str, path: Path, inputs: dict[str, Path] | None = None) -> Path:
    """``commit``'s tree, read-only, at ``path``: the folder a run of that commit executes in. ``inputs``
    (``repository_inputs``) are linked in beside the tracked files, at the same names."""
    entries = export(git, commit, path)
    tops = {rel.split("/")[0] for rel in entries}
    for name, target in (inputs or {}).items():
        if name not in tops:
            os.symlink(target, path / name)
    _chmod_tree(path, writable=False)
    return path


def repository_inputs(git: Git, excluded: list[Path]) -> dict[str, Path]:
    """What a run reads from the repository besides its tracked files: the ignored top-level files and
    folders (a gitignored data folder, a checkpoint), as they are in the repository itself. Never the
    tool's state, git's own folder, byte-code, or any of ``excluded`` (the raw dataset)."""
    out: dict[str, Path] = {}
    for change in git.status(ignored=True):
        if change.code != "!!":
            continue
        top = change.path.split("/")[0]
        path = git.root / top
        if top in (".git", ".autoresearch", "__pycache__", ".pytest_cache") or top.endswith((".pyc", ".pyo")):
            continue
        if any(path == e or path.is_relative_to(e) or e.is_relative_to(path) for e in excluded):
            continue
        out[top] = path
    return out


def linked_inputs(tree: Path, root: Path, state_dir: Path) -> list[Path]:
    """The repository paths a snapshot links to (``snapshot``'s ``inputs``): the run's sandbox mounts them
    read-only. A link into the tool's state folder is never one of them."""
    out = []
    for entry in tree.iterdir() if tree.is_dir() else ():
        if entry.is_symlink():
            target = Path(os.readlink(entry))
            if target.is_absolute() and target.is_relative_to(root) and not target.is_relative_to(state_dir) \
                    and target.exists():
                out.append(target)
    return out
