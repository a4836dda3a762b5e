"""One trial: the editable script run once per fold under the hard limit, each fold scored by the tool.

A trial never raises for a bad run. It ends in a named status with a reason: ``ok``, ``crash`` (non-zero
exit, memory ceiling with the sandbox's tmpfs, output folder quota, missing or non-finite metric),
``timeout`` (the run reached the deadline while it got the CPU it asked for: slow on its own; a run still
on pace while other work took the machine has its deadline moved first, see ``runner/deadline.py``),
``contention`` (it reached the deadline while other work held the machine and starved it: see
``runner/load.py``; not the candidate's verdict), ``aborted`` (its
progress lines showed a doomed run: see ``runner/curves.py``), or ``interrupted`` (Ctrl-C, after the
children are dead and the partial result is returned). The first fold that does not end ``ok`` ends the
trial: the later folds are not run.

``smoke_trial`` runs before the folds: the candidate once, as fold 0 in the same sandbox, told
``AUTORESEARCH_SMOKE=1`` and ``AUTORESEARCH_SMOKE_STEPS=N`` (a task that honours them loads a small slice and
stops after N steps), under a short deadline. A crash there is the candidate's crash, found in seconds
instead of after a fold's time; a run still alive at the deadline got past start-up and passes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from autoresearch.config import Config
from autoresearch import tasks
from autoresearch.runner.executor import Executor, LocalExecutor
from autoresearch.runner.spec import ExitKind, Mount, RunOutcome, RunSpec
from autoresearch.loop.workspace import linked_inputs
from autoresearch.vocab import Status
from autoresearch.scoring.facts import number, read_facts
from autoresearch.scoring.safeio import UnsafeOutput, read_tail
from autoresearch.scoring.sources import RunRecord, Score
from autoresearch.runner import load
from autoresearch.runner.curves import AbortRule, Point
from autoresearch.runner.deadline import DeadlineRule, Pace


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
    status: str                      # ok | crash | timeout | contention | aborted | interrupted
    reason: str
    folds: list[FoldResult] = field(default_factory=list)
    smoke: RunOutcome | None = None  # the smoke test's run, when it stopped the trial before any fold
    fold_abort: dict | None = None   # the fold rule's evidence, when it stopped the later folds

    @property
    def values(self) -> list[float]:
        return [f.score.value for f in self.folds]

    @property
    def mean(self) -> float:
        """The metric: NaN when a fold failed, and when the fold rule left folds out (a part is no metric)."""
        vals = self.values
        ok = vals and all(math.isfinite(v) for v in vals) and not self.fold_abort
        return statistics.fmean(vals) if ok else math.nan

    @property
    def std(self) -> float:
        vals = self.values
        if self.fold_abort:
            return math.nan
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

    def ledger_fields(self) -> dict:
        """The columns of a ledger row that this trial fills."""
        return dict(folds_json=[nan_to_none(v) for v in self.values], metrics_json=self.metrics,
                    metric_mean=nan_to_none(self.mean), metric_std=nan_to_none(self.std),
                    train_seconds=self.train_seconds, score_seconds=self.score_seconds,
                    peak_memory_gb=max(self.peak_memory_gb, self.smoke.peak_rss_gb if self.smoke else 0.0),
                    decision_json={"runs": self.runs},
                    log_path=str(self.folds[-1].outcome.spec.log_path) if self.folds
                    else str(self.smoke.spec.log_path) if self.smoke else None)

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
        if self.smoke is not None and not self.folds:
            return tail(self.smoke.spec.log_path, lines)
        for f in reversed(self.folds):
            if f.outcome.kind != ExitKind.OK or not math.isfinite(f.score.value):
                return tail(f.outcome.spec.log_path, lines)
        return tail(self.folds[-1].outcome.spec.log_path, lines) if self.folds else ""


def nan_to_none(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log, read from its last MiB only (a run may print gigabytes)."""
    try:
        text = read_tail(path, 1 << 20).decode("utf-8", errors="replace")
    except (OSError, UnsafeOutput):
        return ""
    return "\n".join(text.splitlines()[-lines:])


def fold_ids(config: Config, mode: str) -> list[int | None]:
    return [None] if mode == "final" else list(range(config.run.folds))


def fold_specs(config: Config, run_dir: Path, *, seed: int, mode: str = "fold", sandbox: bool = True,
               champion_curves: dict[int | None, list[Point]] | None = None,
               folds: list[int | None] | None = None, cwd: Path | None = None,
               champion_pace: dict[int | None, Pace] | None = None) -> list[tuple[int | None, RunSpec]]:
    """Every run of one trial: (fold, spec), in fold order (one spec, fold None, in final mode). In fold mode
    each spec carries the abort rule of ``[abort]``, armed with the champion's curve of that fold. Every
    spec carries the deadline rule of ``[contention]``, with the champion's pace on that fold when given
    (``champion_pace``, see ``loop/abort.champion_pace``), and the storage limits of ``[run]``. ``cwd``:
    the tree the runs execute (a snapshot of the commit under test); default the repository itself."""
    task = tasks.for_config(config)
    inputs = linked_inputs(cwd, config.root, config.state_dir) if cwd is not None else []
    specs = []
    for fold in (fold_ids(config, mode) if folds is None else folds):
        name = "final" if fold is None else f"fold{fold}"
        out_dir = run_dir / name
        plan = task.plan(config, fold=fold, mode=mode, seed=seed, out_dir=out_dir)
        rule = abort_rule(config, (champion_curves or {}).get(fold, [])) if mode == "fold" else None
        readonly = plan.readonly + tuple(Mount(p) for p in inputs)
        specs.append((fold, RunSpec(name=name, command=tasks.command(config), cwd=cwd or config.root, env=plan.env,
                                    out_dir=out_dir, log_path=run_dir / f"{name}.log", timeout_s=config.run.timeout_s,
                                    grace_s=config.run.grace_s, memory_gb=config.run.memory_gb, sandbox=sandbox,
                                    readonly=readonly, hidden=plan.hidden, abort=rule,
                                    deadline=deadline_rule(config, (champion_pace or {}).get(fold)),
                                    threads=config.resources.threads, tmp_gb=config.run.tmp_size_gb,
                                    output_gb=config.run.output_quota_gb)))
    return specs


def deadline_rule(config: Config, pace: Pace | None) -> DeadlineRule | None:
    """The ``[contention]`` deadline rule with the champion's pace on this fold; None when it is off
    (``enabled = false``, or ``deadline_cap = 1``)."""
    c = config.contention
    if not c.enabled or c.deadline_cap <= 1:
        return None
    return DeadlineRule(cap=c.deadline_cap, tolerance=c.pace_tolerance, pace=pace)


SMOKE_LABEL = "smoke test"
StopAfter = Callable[[list[FoldResult]], "dict | None"] | None   # the after-fold rule (see run_trial)


def smoke_spec(config: Config, run_dir: Path, *, seed: int, sandbox: bool = True, steps: int | None = None,
               name: str = "smoke", cwd: Path | None = None) -> RunSpec:
    """Fold 0's run with the smoke variables, its own output folder and log, and the smoke deadline."""
    fold, spec = fold_specs(config, run_dir, seed=seed, sandbox=sandbox, cwd=cwd)[0]
    env = {**spec.env, "AUTORESEARCH_SMOKE": "1",
           "AUTORESEARCH_SMOKE_STEPS": str(steps if steps is not None else config.smoke.steps)}
    out_dir = run_dir / name
    env["AUTORESEARCH_OUT"] = env["HOME"] = str(out_dir)
    return dataclasses.replace(spec, name=name, env=env, out_dir=out_dir, log_path=run_dir / f"{name}.log",
                               timeout_s=config.smoke.deadline(config.run), grace_s=min(spec.grace_s, 2.0),
                               deadline=None)   # alive at its deadline is a pass: nothing to move


def smoke_passed(outcome: RunOutcome, config: Config) -> tuple[str, str]:
    """(status, reason) of a smoke run: ``ok`` when it exited 0 or was still alive at its deadline."""
    if outcome.kind in (ExitKind.OK, ExitKind.TIMEOUT):
        return "ok", ""
    status, reason = _status(outcome, Score(math.nan, {}, ""), config)
    return status, reason if status == Status.INTERRUPTED else f"{SMOKE_LABEL}: {reason}"


def smoke_trial(config: Config, run_dir: Path, *, seed: int, sandbox: bool = True,
                executor: Executor | None = None, cwd: Path | None = None) -> TrialResult:
    """The smoke test before a candidate's folds: ``ok`` (go on with ``run_trial``), or the crash (or
    interruption) that ends the trial with no fold run. Nothing is scored."""
    executor = executor or LocalExecutor()
    spec = smoke_spec(config, run_dir, seed=seed, sandbox=sandbox, cwd=cwd)
    outcome = executor.run([spec])[0]
    status, reason = smoke_passed(outcome, config)
    return TrialResult(status, reason, smoke=outcome)


def candidate_trial(config: Config, run_dir: Path, *, seed: int, sandbox: bool = True,
                    executor: Executor | None = None, on_fold: Callable[[FoldResult], None] | None = None,
                    champion_curves: dict[int | None, list[Point]] | None = None,
                    stop_after: StopAfter = None, cwd: Path | None = None,
                    champion_pace: dict[int | None, Pace] | None = None) -> TrialResult:
    """A candidate's first trial: its smoke test (``[smoke]``), then, when that passed or is off, its folds
    with the abort rules against the champion's curves and ``stop_after``, and the deadline rule against the
    champion's pace. A smoke-test crash is the result."""
    if config.smoke.enabled:
        smoke = smoke_trial(config, run_dir, seed=seed, sandbox=sandbox, executor=executor, cwd=cwd)
        if smoke.status != "ok":
            return smoke
    return run_trial(config, run_dir, seed=seed, sandbox=sandbox, executor=executor, on_fold=on_fold,
                     champion_curves=champion_curves, stop_after=stop_after, cwd=cwd,
                     champion_pace=champion_pace)


CHECK_MAX_STEPS = 50


def check_run(config: Config, run_dir: Path, steps: int, *, seed: int, sandbox: bool = True,
              executor: Executor | None = None, lines: int = 40, cwd: Path | None = None) -> str:
    """An agent's ``check_run`` tool: the working tree as it is now, run like a smoke test with ``steps``
    steps (at most ``CHECK_MAX_STEPS``), in the same sandbox; the verdict and the log tail as text.
    Nothing is scored or recorded: the metric stays the tool's, measured on the folds after ``finish``."""
    steps = max(1, min(int(steps), CHECK_MAX_STEPS))
    executor = executor or LocalExecutor()
    spec = smoke_spec(config, run_dir, seed=seed, sandbox=sandbox, steps=steps, name="check", cwd=cwd)
    outcome = executor.run([spec])[0]
    status, reason = smoke_passed(outcome, config)
    if outcome.kind == ExitKind.TIMEOUT:
        verdict = (f"still running at the {spec.timeout_s:.0f} s smoke deadline (it got past start-up; "
                   f"a script that ignores AUTORESEARCH_SMOKE_STEPS runs until then): passed")
    elif status == "ok":
        verdict = f"passed: exit 0 after {outcome.seconds:.1f} s"
    else:
        verdict = f"FAILED after {outcome.seconds:.1f} s: {reason.removeprefix(SMOKE_LABEL + ': ')}"
    return (f"check_run ({steps} step{'s' * (steps != 1)} on a small slice of the data, in the sandbox; "
            f"not scored): {verdict}\n--- log tail ---\n{tail(spec.log_path, lines) or '(the run printed nothing)'}")


def run_trial(config: Config, run_dir: Path, *, seed: int, mode: str = "fold", sandbox: bool = True,
              executor: Executor | None = None,
              on_fold: Callable[[FoldResult], None] | None = None,
              champion_curves: dict[int | None, list[Point]] | None = None,
              folds: list[int | None] | None = None,
              stop_after: StopAfter = None, cwd: Path | None = None,
              champion_pace: dict[int | None, Pace] | None = None) -> TrialResult:
    """Run every fold (or the final run, or only ``folds``) and score it.

    The executor gets the whole batch and decides whether the folds run one after another or side by
    side. Each finished run is scored at once; once one fails, runs not yet started are skipped (a
    failing candidate does not spend the other folds' time). The trial's status is that of the first
    failing fold in fold order. ``champion_curves`` (fold -> the champion's progress points) arms the abort
    rule of ``[abort]``; with None no run is compared (a NaN loss still stops a fold-mode run when the rule
    is enabled). ``stop_after`` (the folds scored so far -> evidence, or None) is the after-fold rule:
    once it returns evidence, the folds not yet started are not run and the trial is ``aborted`` (when at
    least one was left out). ``champion_pace``
    (fold -> the champion's CPU seconds and steps) arms the deadline rule's pace check; without it a
    starved run's deadline still moves by what other work took (``runner/deadline.py``)."""
    executor = executor or LocalExecutor()
    task = tasks.for_config(config)
    batch = fold_specs(config, run_dir, seed=seed, mode=mode, sandbox=sandbox, champion_curves=champion_curves,
                       folds=folds, cwd=cwd, champion_pace=champion_pace)
    fold_of = {spec.name: fold for fold, spec in batch}
    scored: dict[str, FoldResult] = {}

    stopped: dict = {}

    def keep_going(outcome: RunOutcome) -> bool:
        fold_result = _score(config, task, outcome, fold_of[outcome.spec.name], mode)
        scored[outcome.spec.name] = fold_result
        if on_fold:
            on_fold(fold_result)
        if _status(outcome, fold_result.score, config)[0] != "ok":
            return False
        if mode == "fold" and not stopped and stop_after is not None and \
                (found := stop_after(list(scored.values()))):
            stopped.update(found, seconds=round(fold_result.outcome.seconds, 3))
            return False
        return True

    executor.run([spec for _, spec in batch], keep_going=keep_going)
    result = TrialResult("ok", "")
    for _, spec in batch:
        fold_result = scored.get(spec.name)
        if fold_result is None:   # skipped after an earlier failure
            continue
        result.folds.append(fold_result)
        status, reason = _status(fold_result.outcome, fold_result.score, config)
        if status != "ok" and result.status == "ok":
            result.status, result.reason = status, f"{spec.name}: {reason}"
    not_run = [fold for fold, spec in batch if spec.name not in scored]
    if stopped and not_run and result.status == "ok":     # every fold ran anyway (side by side): no abort
        result.fold_abort = {**stopped, "not_run": not_run}
        result.status = Status.ABORTED
        result.reason = (f"fold{stopped['fold']}: stopped after this fold: {stopped['reason']}; its "
                         f"{len(not_run)} later fold(s) were not run")
    return result


def _score(config: Config, task: tasks.Task, outcome: RunOutcome, fold: int | None, mode: str) -> FoldResult:
    spec = outcome.spec
    facts, notes = read_facts(spec.out_dir)     # validated: a run's bad facts never crash the tool
    start = time.perf_counter()
    if outcome.kind == ExitKind.OK:
        sc = task.scorer(config)(config, RunRecord(out_dir=spec.out_dir, log_path=spec.log_path, fold=fold, mode=mode))
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


def abort_rule(config: Config, champion: list[Point]) -> AbortRule | None:
    """The ``[abort]`` rule against the champion's curve for one fold; None when the rule is off."""
    a = config.abort
    if not a.enabled:
        return None
    return AbortRule.against(champion, key=a.key, ratio=a.ratio, patience=a.patience, min_fraction=a.min_fraction,
                             min_progress=a.min_progress)


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
        return Status.INTERRUPTED, outcome.reason or Status.INTERRUPTED
    if outcome.kind == ExitKind.ABORTED:
        return Status.ABORTED, outcome.reason or "stopped early by the abort rule"
    if outcome.kind == ExitKind.TIMEOUT:
        reason = outcome.reason or "killed at the deadline"
        if over:
            return Status.CONTENTION, f"{reason} while the machine was oversubscribed: {why}"
        measured = outcome.extra.get("machine_busy_other") is not None
        return Status.TIMEOUT, f"{reason}; {why}" if measured else reason   # the agent learns it was its own slowness
    if outcome.kind != ExitKind.OK:
        cause = _last_line(outcome.spec.log_path)
        reason = outcome.reason or outcome.kind.value
        return Status.CRASH, f"{reason}: {cause}" if cause and outcome.kind == ExitKind.ERROR else reason
    if not math.isfinite(sc.value):
        return Status.CRASH, sc.reason or "the metric is not a finite number"
    return "ok", ""
