"""One trial: the editable script run once per fold under the hard limit, each fold scored by the tool.

A trial never raises for a bad run. It ends in a named status with a reason: ``ok``, ``crash`` (non-zero
exit, memory ceiling, missing or non-finite metric), ``timeout`` (the run reached the deadline while it
got the CPU it asked for: slow on its own), ``contention`` (it reached the deadline while other work held
the machine and starved it: see ``runner/load.py``; not the candidate's verdict), ``aborted`` (its
progress lines showed a doomed run: see ``runner/curves.py``), or ``interrupted`` (Ctrl-C, after the
children are dead and the partial result is returned). The first fold that does not end ``ok`` ends the
trial: the later folds are not run.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from autoresearch.config import Config
from autoresearch.loop.status import ABORTED, CONTENTION
from autoresearch.runner import load
from autoresearch.runner.curves import AbortRule, Point
from autoresearch.runner.executor import ExitKind, Executor, LocalExecutor, RunOutcome, RunSpec
from autoresearch.scoring.sources import RunRecord, Score, score
from autoresearch.tasks import command, hooks_for


@dataclass
class FoldResult:
    fold: int | None
    outcome: RunOutcome
    score: Score
    facts: dict
    score_seconds: float


@dataclass
class TrialResult:
    status: str                      # ok | crash | timeout | contention | aborted | interrupted
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
        peaks = [max(f.outcome.peak_rss_gb or 0.0, float(f.facts.get("peak_memory_gb") or 0.0)) for f in self.folds]
        return max(peaks, default=0.0)

    @property
    def metrics(self) -> list[dict]:
        return [f.score.metrics for f in self.folds]

    @property
    def runs(self) -> list[dict]:
        """Per fold: how it ended, its CPU and load figures, the contention verdict and its curve (for the ledger)."""
        out = []
        for f in self.folds:
            extra = {k: v for k, v in f.outcome.extra.items() if k != "sandboxed"}
            out.append({"fold": f.fold, "name": f.outcome.spec.name, "kind": f.outcome.kind.value,
                        "seconds": round(f.outcome.seconds, 3), **extra})
        return out

    def log_tail(self, lines: int = 40) -> str:
        for f in reversed(self.folds):
            if f.outcome.kind != ExitKind.OK or not math.isfinite(f.score.value):
                return tail(f.outcome.spec.log_path, lines)
        return tail(self.folds[-1].outcome.spec.log_path, lines) if self.folds else ""


def tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def fold_ids(config: Config, mode: str) -> list[int | None]:
    return [None] if mode == "final" else list(range(config.run.folds))


def run_trial(config: Config, run_dir: Path, *, seed: int, mode: str = "fold", sandbox: bool = True,
              executor: Executor | None = None,
              on_fold: Callable[[FoldResult], None] | None = None,
              champion_curves: dict[int | None, list[Point]] | None = None,
              folds: list[int | None] | None = None) -> TrialResult:
    """Run every fold (or the final run, or only ``folds``) and score it. Stops at the first failing fold.

    ``champion_curves`` (fold -> the champion's progress points) arms the abort rule of ``[abort]``; with
    None no run is compared (a NaN loss still stops a fold-mode run when the rule is enabled)."""
    executor = executor or LocalExecutor()
    hooks = hooks_for(config)
    result = TrialResult("ok", "")
    for fold in (fold_ids(config, mode) if folds is None else folds):
        name = "final" if fold is None else f"fold{fold}"
        out_dir = run_dir / name
        plan = hooks.plan(config, fold=fold, mode=mode, seed=seed, out_dir=out_dir)
        spec = RunSpec(name=name, command=command(config), cwd=config.root, env=plan.env, out_dir=out_dir,
                       log_path=run_dir / f"{name}.log", timeout_s=config.run.timeout_s,
                       grace_s=config.run.grace_s, memory_gb=config.run.memory_gb, sandbox=sandbox,
                       readonly=plan.readonly, hidden=plan.hidden,
                       abort=abort_rule(config, (champion_curves or {}).get(fold, [])) if mode == "fold" else None)
        outcome = executor.run([spec])[0]
        fold_result = _score(config, outcome, fold, mode)
        result.folds.append(fold_result)
        if on_fold:
            on_fold(fold_result)
        status, reason = _status(outcome, fold_result.score, config)
        if status != "ok":
            result.status, result.reason = status, f"{name}: {reason}"
            break
    return result


def _score(config: Config, outcome: RunOutcome, fold: int | None, mode: str) -> FoldResult:
    spec = outcome.spec
    facts: dict = {}
    facts_path = spec.out_dir / "facts.json"
    if facts_path.is_file():
        try:
            loaded = json.loads(facts_path.read_text(encoding="utf-8"))
            facts = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            facts = {}
    start = time.perf_counter()
    if outcome.kind == ExitKind.OK:
        sc = score(config, RunRecord(out_dir=spec.out_dir, log_path=spec.log_path, fold=fold, mode=mode))
    else:
        sc = Score(math.nan, {}, outcome.reason or outcome.kind.value)
    return FoldResult(fold, outcome, sc, facts, time.perf_counter() - start)


def _last_line(log: Path) -> str:
    """The run's last line of its own output (the log's '#' lines are the runner's)."""
    lines = [ln for ln in tail(log, 30).splitlines() if ln.strip() and not ln.startswith("# ")]
    return lines[-1].strip()[:200] if lines else ""


def abort_rule(config: Config, champion: list[Point]) -> AbortRule | None:
    """The ``[abort]`` rule against the champion's curve for one fold; None when the rule is off."""
    a = config.abort
    if not a.enabled:
        return None
    return AbortRule.against(champion, key=a.key, ratio=a.ratio, patience=a.patience, min_fraction=a.min_fraction)


def judge_load(outcome: RunOutcome, config: Config) -> tuple[bool, str]:
    """Whether the run was starved by other work (``[contention]`` thresholds); stored in ``outcome.extra``."""
    c = config.contention
    over, why = load.judge(outcome.extra, busy_other=c.busy_other, min_share=c.min_share)
    over = over and c.enabled
    outcome.extra["oversubscribed"] = over
    return over, why


def _status(outcome: RunOutcome, sc: Score, config: Config) -> tuple[str, str]:
    over, why = judge_load(outcome, config)
    if outcome.kind == ExitKind.INTERRUPTED:
        return "interrupted", outcome.reason or "interrupted"
    if outcome.kind == ExitKind.ABORTED:
        return ABORTED, outcome.reason or "stopped early by the abort rule"
    if outcome.kind == ExitKind.TIMEOUT:
        reason = outcome.reason or "killed at the deadline"
        if over:
            return CONTENTION, f"{reason} while the machine was oversubscribed: {why}"
        measured = outcome.extra.get("machine_busy_other") is not None
        return "timeout", f"{reason}; {why}" if measured else reason   # the agent learns it was its own slowness
    if outcome.kind != ExitKind.OK:
        cause = _last_line(outcome.spec.log_path)
        reason = outcome.reason or outcome.kind.value
        return "crash", f"{reason}: {cause}" if cause and outcome.kind == ExitKind.ERROR else reason
    if not math.isfinite(sc.value):
        return "crash", sc.reason or "the metric is not a finite number"
    return "ok", ""
