"""How the loop runs a commit: a read-only snapshot of it, a run folder made fresh, the snapshot removed.

The snapshot holds the commit's tracked files and links to the repository's ignored top-level files and
folders (a gitignored data folder, say: ``workspace.repository_inputs``), which a sandboxed run sees
read-only, as it saw the whole repository before runs were snapshots.

Contract: every run the loop starts goes through ``measure`` (candidates, the baseline, noise-floor, final
and contention-probe runs), so the code that ran is always a commit's tree, never a folder an agent can
write, and no run finds files planted in its output folder. Thread-safe: no ledger writes here.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from autoresearch import events as ev
from autoresearch import provenance
from autoresearch.loop import workspace
from autoresearch.loop.context import Loop
from autoresearch.loop.trial import TrialResult, run_trial
from autoresearch.vocab import Status

_lock = threading.Lock()
_live: dict[Path, workspace.Snapshot] = {}     # the snapshots runs execute now (runs go on in several threads)


def measure(loop: Loop, commit: str, name: str, trial: Callable[[Path, Path], TrialResult]) -> TrialResult:
    """Run ``trial(run_dir, cwd)`` on a read-only snapshot of ``commit``, into a run folder made fresh
    (``.autoresearch/runs/<name>``); the snapshot is removed afterwards. Every run of the loop goes through
    here: candidates, the baseline, noise-floor, final and contention-probe runs."""
    cfg = loop.config
    run_dir = cfg.state_dir / "runs" / name
    workspace.remove(run_dir)
    inputs = workspace.repository_inputs(loop.git, [cfg.state_dir, *provenance.private_paths(cfg.state_dir)])
    snap = workspace.snapshot(loop.git, commit, cfg.state_dir / workspace.SNAPSHOTS / name, inputs)
    with _lock:
        _live[snap.path] = snap
    try:
        result = trial(run_dir, snap.path)
        changed = snap.changes()
        if changed and result.status != Status.INTERRUPTED:
            result.status = Status.CRASH
            result.reason = (f"the snapshot it ran was changed while it ran ({', '.join(changed[:5])}): the code "
                             "that ran is not the code committed")
        return result
    finally:
        with _lock:
            _live.pop(snap.path, None)
        workspace.remove(snap.path)


def changed_snapshots() -> list[str]:
    """The runs going on now whose snapshot no longer matches its commit ('<run folder>: <files>')."""
    with _lock:
        live = list(_live.values())
    return [f"{snap.path.name}: {', '.join(changes[:5])}" for snap in live if (changes := snap.changes())]


def measure_commit(loop: Loop, commit: str, name: str, *, seed: int, mode: str = "fold",
                   folds: list[int | None] | None = None, number: int | None = None,
                   champion_pace: dict | None = None) -> TrialResult:
    """One plain trial (no smoke test, no abort rule) of ``commit``: the baseline, noise, final and probe runs."""
    cfg = loop.config

    def trial(run_dir: Path, cwd: Path) -> TrialResult:
        return run_trial(cfg, run_dir, seed=seed, mode=mode, sandbox=loop.sandbox, executor=loop.executor,
                         on_fold=lambda f: loop.reporter(ev.FoldFinished(number or 0, f)), folds=folds, cwd=cwd,
                         champion_pace=champion_pace)

    return measure(loop, commit, name, trial)
