"""One trial: the editable script run once per fold under the hard limit, each fold scored by the tool.

A trial never raises for a bad run. It ends in a named status with a reason: ``ok``, ``crash`` (non-zero
exit, memory ceiling, missing or non-finite metric), ``timeout``, or ``interrupted`` (Ctrl-C, after the
children are dead and the partial result is returned).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from autoresearch.config import Config
from autoresearch.runner.executor import ExitKind, Executor, LocalExecutor, RunOutcome, RunSpec
from autoresearch.scoring.facts import number, read_facts
from autoresearch.scoring.safeio import UnsafeOutput, read_tail
from autoresearch.scoring.sources import RunRecord, Score, score
from autoresearch.tasks import command, hooks_for


@dataclass
class FoldResult:
    fold: int | None
    outcome: RunOutcome
    score: Score
    facts: dict
    score_seconds: float
    notes: list[str] = field(default_factory=list)   # what was dropped from facts.json, and why


@dataclass
class TrialResult:
    status: str                      # ok | crash | timeout | interrupted
    reason: str
    folds: list[FoldResult] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [f.score.value for f in self.folds]

    @property
    def mean(self) -> float:
        vals = self.values
        return statistics.fmean(vals) if vals and all(math.isfinite(v) for v in vals) else math.nan

    @property
    def std(self) -> float:
        vals = self.values
        if len(vals) < 2 or not all(math.isfinite(v) for v in vals):
            return 0.0 if len(vals) == 1 and math.isfinite(vals[0]) else math.nan
        return statistics.stdev(vals)

    @property
    def train_seconds(self) -> float:
        return sum(f.outcome.seconds for f in self.folds)

    @property
    def score_seconds(self) -> float:
        return sum(f.score_seconds for f in self.folds)

    @property
    def peak_memory_gb(self) -> float:
        peaks = [max(f.outcome.peak_rss_gb or 0.0, number(f.facts, "peak_memory_gb")) for f in self.folds]
        return max(peaks, default=0.0)

    @property
    def metrics(self) -> list[dict]:
        return [f.score.metrics for f in self.folds]

    def log_tail(self, lines: int = 40) -> str:
        for f in reversed(self.folds):
            if f.outcome.kind != ExitKind.OK or not math.isfinite(f.score.value):
                return tail(f.outcome.spec.log_path, lines)
        return tail(self.folds[-1].outcome.spec.log_path, lines) if self.folds else ""


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log, read from its last MiB only (a run may print gigabytes)."""
    try:
        text = read_tail(path, 1 << 20).decode("utf-8", errors="replace")
    except (OSError, UnsafeOutput):
        return ""
    return "\n".join(text.splitlines()[-lines:])


def fold_ids(config: Config, mode: str) -> list[int | None]:
    return [None] if mode == "final" else list(range(config.run.folds))


def run_trial(config: Config, run_dir: Path, *, seed: int, mode: str = "fold", sandbox: bool = True,
              executor: Executor | None = None,
              on_fold: Callable[[FoldResult], None] | None = None) -> TrialResult:
    """Run every fold (or the final run) and score it. Stops at the first failing fold."""
    executor = executor or LocalExecutor()
    hooks = hooks_for(config)
    result = TrialResult("ok", "")
    for fold in fold_ids(config, mode):
        name = "final" if fold is None else f"fold{fold}"
        out_dir = run_dir / name
        plan = hooks.plan(config, fold=fold, mode=mode, seed=seed, out_dir=out_dir)
        spec = RunSpec(name=name, command=command(config), cwd=config.root, env=plan.env, out_dir=out_dir,
                       log_path=run_dir / f"{name}.log", timeout_s=config.run.timeout_s,
                       grace_s=config.run.grace_s, memory_gb=config.run.memory_gb, sandbox=sandbox,
                       readonly=plan.readonly, hidden=plan.hidden)
        outcome = executor.run([spec])[0]
        fold_result = _score(config, outcome, fold, mode)
        result.folds.append(fold_result)
        if on_fold:
            on_fold(fold_result)
        status, reason = _status(outcome, fold_result.score)
        if status != "ok":
            result.status, result.reason = status, f"{name}: {reason}"
            break
    return result


def _score(config: Config, outcome: RunOutcome, fold: int | None, mode: str) -> FoldResult:
    spec = outcome.spec
    facts, notes = read_facts(spec.out_dir)     # validated: a run's bad facts never crash the tool
    start = time.perf_counter()
    if outcome.kind == ExitKind.OK:
        sc = score(config, RunRecord(out_dir=spec.out_dir, log_path=spec.log_path, fold=fold, mode=mode))
    else:
        sc = Score(math.nan, {}, outcome.reason or outcome.kind.value)
    for note in notes:                          # after scoring: a regex source never sees them
        _log_note(spec.log_path, note)
    return FoldResult(fold, outcome, sc, facts, time.perf_counter() - start, notes)


def _log_note(log: Path, note: str) -> None:
    """Append a '# ' line (the runner's own lines) to the fold's log, without following a link."""
    try:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return
    try:
        os.write(fd, f"# {note}\n".encode("utf-8", "replace"))
    except OSError:
        pass
    finally:
        os.close(fd)


def _last_line(log: Path) -> str:
    """The run's last line of its own output (the log's '#' lines are the runner's)."""
    lines = [ln for ln in tail(log, 30).splitlines() if ln.strip() and not ln.startswith("# ")]
    return lines[-1].strip()[:200] if lines else ""


def _status(outcome: RunOutcome, sc: Score) -> tuple[str, str]:
    if outcome.kind == ExitKind.INTERRUPTED:
        return "interrupted", outcome.reason or "interrupted"
    if outcome.kind == ExitKind.TIMEOUT:
        return "timeout", outcome.reason or "killed at the deadline"
    if outcome.kind != ExitKind.OK:
        cause = _last_line(outcome.spec.log_path)
        reason = outcome.reason or outcome.kind.value
        return "crash", f"{reason}: {cause}" if cause and outcome.kind == ExitKind.ERROR else reason
    if not math.isfinite(sc.value):
        return "crash", sc.reason or "the metric is not a finite number"
    return "ok", ""
