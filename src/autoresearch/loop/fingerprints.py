"""sha256 fingerprints of what must not change during a run: fixed code, configuration, prepared data.

Recorded at init (``.autoresearch/fingerprints.json``), checked before each experiment and stored with
its result. A mismatch stops the run with a message that names each changed path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from autoresearch.config import CONFIG_NAME, Config
from autoresearch.errors import UserError

FILE = "fingerprints.json"
_SKIP_PARTS = {"__pycache__", ".pytest_cache"}
# Hashing gigabytes of prepared data before every experiment would cost seconds (the seed preset's
# 10,993 prints at 224 px are about 2 GB), so a file whose identity is unchanged reuses its earlier hash
# within one process. The identity includes the inode and the ctime: size and mtime alone can be put back
# (os.utime) after a rewrite, but the ctime is set by the kernel on every change and cannot be, and a
# replacement file (rename over it) has a new inode.
_cache: dict[tuple, str] = {}


def _hash_file(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _cache:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _cache[key] = digest.hexdigest()
    return _cache[key]


def _files(base: Path, rel: str) -> list[Path]:
    path = base / rel
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not _SKIP_PARTS & set(p.parts))
    return []


def compute(config: Config) -> dict[str, str]:
    """Path (relative to the repository) → sha256, for fixed files, the config and prepared data."""
    root = config.root
    rels = {CONFIG_NAME, config.task.program, *config.task.fixed}
    out: dict[str, str] = {}
    for rel in sorted(rels):
        for path in _files(root, rel):
            out[str(path.relative_to(root))] = _hash_file(path)
    for sub in ("prepared", "secret"):
        for path in _files(config.state_dir, sub):
            out[str(path.relative_to(root))] = _hash_file(path)
    return out


def record(config: Config) -> dict[str, str]:
    return save(config, compute(config))


def changed(want: dict[str, str], now: dict[str, str]) -> list[str]:
    """Paths whose fingerprint differs, each with what happened to it."""
    keys = sorted(k for k in want.keys() | now.keys() if want.get(k) != now.get(k))
    return [f"{k} ({'removed' if k not in now else 'added' if k not in want else 'modified'})" for k in keys]


def save(config: Config, prints: dict[str, str]) -> dict[str, str]:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    target = config.state_dir / FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(prints, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(target)
    return prints


def recorded(config: Config) -> dict[str, str] | None:
    path = config.state_dir / FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def verify(config: Config) -> dict[str, str]:
    """Compare with the recorded fingerprints; raise naming every changed path. Returns the current ones."""
    want = recorded(config)
    now = compute(config)
    if want is None:
        return record(config)
    diff = changed(want, now)
    if diff:
        raise UserError(
            "fixed files changed since they were fingerprinted: " + ", ".join(diff[:8])
            + (f" and {len(diff) - 8} more" if len(diff) > 8 else ""),
            hint="restore them (git checkout -- <file>), or if you changed them on purpose, commit the change "
                 "(`git commit -am \"...\"`: the loop starts from the committed tree and refuses uncommitted changes "
                 "to fixed files) and run `autoresearch rehash` to accept the new versions (results before and "
                 "after are not comparable)")
    return now
