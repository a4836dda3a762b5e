"""What the dashboard reads beyond the ledger's rows: the live training curves of a run's logs, log tails,
diffs, the scratchpad as it was after an experiment, and a cheap "has anything changed" key. Read-only:
files and git, never a write. ``Session`` inherits these."""

from __future__ import annotations

import os as _os
from pathlib import Path

from autoresearch.curves import MAX_CURVE_POINTS, parse_curve
from autoresearch.loop.gitops import Git
from autoresearch.loop.ledger import Experiment
from autoresearch.loop.phases import Phase
from autoresearch.loop.phases import current_phase as _current_phase
from autoresearch.loop.trial import tail
from autoresearch.vocab import Kind, Status

MAX_DIFF_CHARS = 200_000      # a diff beyond this is cut (an agent that rewrote a data file)


def _commit_of(row: Experiment) -> str | None:
    return row.commit or row.candidate_commit


def _cut(text: str) -> str:
    if len(text) <= MAX_DIFF_CHARS:
        return text
    return text[:MAX_DIFF_CHARS] + f"\n… (cut: the diff has {len(text):,} characters)\n"


class RunViews:
    """Mixed into ``Session`` (which provides ``config``, ``root``, ``ledger``, ``tag``, ``state``)."""

    def run_logs(self, number: int) -> list[tuple[str, Path]]:
        """The logs of experiment ``number``: ``fold0``, ``fold1`` … of its run, then those of its
        confirmation runs as ``confirm1/fold0`` …, in that order. Empty before its first run starts."""
        runs = self.config.state_dir / "runs"
        prefix = f"{number:04d}"
        found: list[tuple[str, Path]] = []
        try:
            names = sorted(n for n in _os.listdir(runs) if n == prefix or n.startswith(prefix + "-"))
        except OSError:
            return []
        for name in names:
            label = name[len(prefix) + 1:]
            folder = runs / name
            for log in sorted(folder.glob("*.log")):
                found.append((f"{label}/{log.stem}" if label else log.stem, log))
        return found

    def curves(self, number: int, max_points: int = MAX_CURVE_POINTS) -> dict[str, list[dict]]:
        """Each log's training curve (``parse_curve``), by log label; what the log holds so far while it runs."""
        out = {}
        for label, path in self.run_logs(number):
            try:
                out[label] = parse_curve(path.read_text(encoding="utf-8", errors="replace"), max_points)
            except OSError:
                continue
        return out

    def log_tails(self, number: int, lines: int = 40) -> dict[str, str]:
        return {label: tail(path, lines) for label, path in self.run_logs(number)}

    def run_progress(self, number: int) -> dict:
        """Where a running experiment's runs stand: per log, whether it has finished (the runner's footer
        ``# outcome:`` is written last), and when the latest run started. That start is the run folder's
        modification time: the runner creates each run's log and output folder in it when the run starts and
        nothing else writes there, so it is the start of the newest run."""
        runs: dict[str, dict] = {}
        started = None
        for label, path in self.run_logs(number):
            text = tail(path, 3)
            outcome = next((ln[len("# outcome: "):] for ln in text.splitlines() if ln.startswith("# outcome: ")), None)
            runs[label] = {"finished": outcome is not None, "outcome": outcome}
            try:
                started = max(started or 0.0, path.parent.stat().st_mtime)
            except OSError:
                pass
        return {"runs": runs, "latest_run_started": started}

    def diff(self, number: int) -> str | None:
        """What experiment ``number`` changed: its parent (the champion it started from) to its commit. None
        when it has no commit (an invalid edit is undone before any commit)."""
        row = self.ledger.get(number)
        if row is None or not row.parent_commit or not _commit_of(row):
            return None
        return _cut(Git(self.root).diff(row.parent_commit, _commit_of(row)))

    def diff_between(self, a: int, b: int) -> str | None:
        """The code of experiment ``a`` to that of experiment ``b`` (any tags); None if either has no commit."""
        ra, rb = self.ledger.get(a), self.ledger.get(b)
        if ra is None or rb is None or not _commit_of(ra) or not _commit_of(rb):
            return None
        return _cut(Git(self.root).diff(_commit_of(ra), _commit_of(rb)))

    def scratchpad_after(self, number: int) -> str | None:
        """The agent's scratchpad as it was after experiment ``number`` (from its commit), or None."""
        row = self.ledger.get(number)
        commit = _commit_of(row) if row is not None else None
        return Git(self.root).show(commit, self.config.task.scratchpad) if commit else None

    def change_key(self) -> tuple:
        """``(ledger version, log sizes)``: changes whenever the ledger gets a write from anywhere, or a running
        experiment's log grows. Only keys from the same Session (the same SQLite connection) are comparable."""
        logs = []
        for row in self.ledger.running():
            for label, path in self.run_logs(row.number):
                try:
                    logs.append((row.number, label, path.stat().st_size))
                except OSError:
                    pass
        return self.ledger.version(), tuple(logs)

    def phase_of(self, rows: list[Experiment]) -> tuple[Phase, int]:
        """``phase()`` from rows the caller already read (``rows()``): the same rule as ``Engine.phase`` (the
        finished experiments in order), without reading thousands of rows a second time."""
        finished = [r.status for r in rows if r.kind == Kind.EXPERIMENT and Status(r.status).finished]
        return _current_phase(self.state.program, finished)

    def running(self) -> list[Experiment]:
        """This tag's rows still running (one query of the running rows, not of all of them)."""
        return [r for r in self.ledger.running() if r.tag == self.tag]

    def tags(self) -> list[str]:
        """Every tag in the ledger, in the order each first appeared."""
        return self.ledger.tags()

    def tag_champions(self) -> dict[str, Experiment]:
        """Each tag's current champion (tags without one are left out): for comparing two tags."""
        return {tag: champ for tag in self.tags() if (champ := self.ledger.champion(tag)) is not None}
