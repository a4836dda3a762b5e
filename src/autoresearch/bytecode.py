"""Python byte-code in a research repository: found, hidden from runs, removed after an agent's turn.

Git ignores ``__pycache__`` and ``*.pyc``, so no commit, diff, revert or fingerprint sees them, yet Python
runs a ``.pyc`` instead of its source when the header's recorded source mtime and size match. An agent
that planted one for a fixed module (``eclip/io.py``) would change every later run. So: a sandboxed run
gets every byte-code folder and file of the repository covered (it compiles from source; runs write none,
``PYTHONDONTWRITEBYTECODE``), the edit policy refuses new byte-code, and every reset removes it.

Why not ``PYTHONPYCACHEPREFIX`` to an empty private folder: Python then looks up *all* byte-code there,
the interpreter's libraries included, and recompiles torch, numpy, tokenizers and transformers from source
in every run: ``benchmarks/integrity_costs.py`` measured the eCLIP run's imports at 4.1 s of CPU with the
caches and 9.0 s with an empty prefix (+4.9 s a run, on a busy 2-core machine).
"""

from __future__ import annotations

import os
from pathlib import Path

_NOT_SCANNED = frozenset({".git", ".autoresearch", "node_modules"})


def bytecode_files(root: Path) -> set[str]:
    """Repository-relative paths of every file in a ``__pycache__`` folder and every ``.pyc``/``.pyo``,
    outside ``.git``, the state folder, virtual environments (a ``pyvenv.cfg`` or ``conda-meta``) and
    ``node_modules``. Symlinked folders are not followed."""
    root = Path(root)
    found: set[str] = set()
    for current, dirs, files in os.walk(root):
        here = Path(current)
        if here != root and ("pyvenv.cfg" in files or "conda-meta" in dirs):
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if d not in _NOT_SCANNED]
        in_cache = here.name == "__pycache__"
        for name in files:
            if in_cache or name.endswith((".pyc", ".pyo")):
                found.add((here / name).relative_to(root).as_posix())
    return found


def bytecode_paths(root: Path) -> list[Path]:
    """What to cover in a run: each ``__pycache__`` folder once, and each byte-code file outside one."""
    out: set[Path] = set()
    for rel in bytecode_files(root):
        path = Path(root) / rel
        out.add(path.parent if path.parent.name == "__pycache__" else path)
    return sorted(out)
