"""What an agent may read of past runs: each experiment's logs and its folds' ``facts.json``, nothing else.

Everything else under ``.autoresearch`` stays denied (the ledger, prepared data, the hidden keys and test
split, the final test's run, embeddings). The allowed files of experiment ``n`` are, under
``.autoresearch/runs/``, ``<nnnn>[-confirmK]/<name>.log`` (written by the tool's runner) and
``<nnnn>[-confirmK]/<fold>/facts.json`` (written by the run itself, inside its sandbox). A symlink is never
followed: a run could leave ``facts.json`` pointing at a key, and reading it here, outside the sandbox,
would hand the key to the agent.

``read_run`` is the API agents' tool; ``copy_runs`` gives Claude Code, whose Read permission cannot carve an
exception out of the ``.autoresearch`` deny rule, a copy of the same files in a folder of its own.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

STATE = ".autoresearch"
RUN_DIR = re.compile(r"^(\d{4})(-confirm\d+)?$")
MAX_FILE_CHARS = 20_000
MAX_FACTS_BYTES = 200_000
TAIL_LINES = 30
COPIED_EXPERIMENTS = 30       # the latest experiments copied for Claude Code


def _plain(path: Path, base: Path) -> bool:
    """A regular file whose every component below ``base`` is a real folder or file, not a symlink."""
    try:
        rel = path.relative_to(base)
    except ValueError:
        return False
    here = base
    for part in rel.parts:
        here = here / part
        if here.is_symlink():
            return False
    return path.is_file()


def run_files(root: Path, number: int) -> list[Path]:
    """The readable files of experiment ``number``, in a stable order (logs, then facts by fold)."""
    runs = Path(root) / STATE / "runs"
    if runs.is_symlink() or not runs.is_dir():
        return []
    out: list[Path] = []
    for d in sorted(runs.iterdir()):
        m = RUN_DIR.match(d.name)
        if not m or int(m.group(1)) != number or d.is_symlink() or not d.is_dir():
            continue
        out += [p for p in sorted(d.glob("*.log")) if _plain(p, runs)]
        out += [p for p in sorted(d.glob("*/facts.json"))
                if _plain(p, runs) and p.stat().st_size <= MAX_FACTS_BYTES]
    return out


def _name(path: Path, root: Path) -> str:
    return path.relative_to(Path(root) / STATE / "runs").as_posix()


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def read_run(root: Path, number: int, file: str = "") -> str:
    """Experiment ``number``'s files for an agent: every facts.json in full and each log's last lines; or,
    with ``file`` (a name from that list, e.g. ``0003/fold0.log``), that file (its end, when long)."""
    files = run_files(root, number)
    if not files:
        return (f"no logs or facts for experiment {number} (an experiment whose edit was refused, or that "
                "has not run, has none; the one-time test's run is never shown)")
    names = {_name(p, root): p for p in files}
    if file:
        asked = file.strip().lstrip("/")
        name = asked if asked in names else f"{number:04d}/{asked}"
        path = names.get(name)
        if path is None:
            return f"error: {file} is not a file of experiment {number}; its files are: {', '.join(names)}"
        text = _read(path)
        if len(text) > MAX_FILE_CHARS:
            text = f"[... the first {len(text) - MAX_FILE_CHARS} characters are not shown]\n" + text[-MAX_FILE_CHARS:]
        return f"--- {name} ---\n{text}"
    parts = [f"experiment {number}: " + ", ".join(f"{n} ({p.stat().st_size} bytes)" for n, p in names.items())]
    for name, path in names.items():
        text = _read(path)
        if name.endswith("facts.json"):
            parts.append(f"--- {name} ---\n{text.strip()}")
        else:
            lines = text.splitlines()
            shown = "\n".join(lines[-TAIL_LINES:])
            more = f" (last {TAIL_LINES} of {len(lines)} lines; read_run({number}, \"{name}\") for all)" \
                if len(lines) > TAIL_LINES else ""
            parts.append(f"--- {name}{more} ---\n{shown}")
    out = "\n".join(parts)
    return out if len(out) <= MAX_FILE_CHARS * 2 else out[: MAX_FILE_CHARS * 2] + "\n[... truncated]"


def copy_runs(root: Path, dest: Path, numbers: list[int] | None = None) -> list[str]:
    """Copy the readable files of ``numbers`` (default: the latest ``COPIED_EXPERIMENTS``) into ``dest`` as
    ``<nnnn>/<name>``; returns the copied names. Contents are copied, never links."""
    runs = Path(root) / STATE / "runs"
    if numbers is None:
        found = {int(m.group(1)) for d in (runs.iterdir() if runs.is_dir() else [])
                 if (m := RUN_DIR.match(d.name))}
        numbers = sorted(found)[-COPIED_EXPERIMENTS:]
    copied = []
    for n in numbers:
        for path in run_files(root, n):
            name = _name(path, root)
            target = Path(dest) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target, follow_symlinks=False)
            copied.append(name)
    return copied
