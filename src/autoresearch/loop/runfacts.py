"""What a researcher looks at after a run, gathered for the brief: per-fold metrics, the loss and
temperature curve at a few checkpoints, time, speed and memory, and the numbers that bound a change.

Read from what the tool itself keeps: the ledger row, each fold's ``facts.json`` (written by the run) and
its log, where a training script prints progress lines such as
``step   50/400  loss 3.2154  temperature 14.210 ...`` (the eCLIP template's, nanoGPT's and many others').
Only the tool reads these files here; agents read them through ``agents.runview``.
"""

from __future__ import annotations

import math
from pathlib import Path

from autoresearch.agents.brief import CurvePoint, FoldSummary, RunSummary
from autoresearch.config import Config
from autoresearch.loop.ledger import Experiment
from autoresearch.runner.curves import parse_progress
from autoresearch.scoring import facts as scoring_facts

CHECKPOINTS = 5


def parse_curve(text: str) -> list[CurvePoint]:
    """Every progress line of a log that carries a loss (``step N/M ... loss X [temperature T]``), in order;
    the line parser is the runner's (``runner.curves.parse_progress``), the one the abort rule reads."""
    points = []
    for line in text.splitlines():
        point = parse_progress(line) if not line.startswith("# ") else None
        if point is None or "loss" not in point.values:
            continue
        temperature = next((point.values[k] for k in ("temperature", "temp", "logit_scale") if k in point.values),
                           None)
        points.append(CurvePoint(point.step, point.total, point.values["loss"], temperature))
    return points


def checkpoints(points: list[CurvePoint], k: int = CHECKPOINTS) -> list[CurvePoint]:
    """About ``k`` points spread over the curve, the first and the last included."""
    if len(points) <= k:
        return list(points)
    picks = sorted({round(i * (len(points) - 1) / (k - 1)) for i in range(k)})
    return [points[i] for i in picks]


def read_facts(path: Path) -> dict:
    """A run's facts.json through the scorer's validating reader (no links, capped, numbers only); {} when
    it is missing or unusable."""
    return scoring_facts.read_facts(path.parent)[0]


def _read_log(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summarize(config: Config, row: Experiment, metric_keys: int = 4) -> RunSummary:
    """One experiment as the brief shows it. Folds are found in ``.autoresearch/runs/<n>/``; a row whose
    runs were never made (an invalid edit) has no folds."""
    run_dir = config.state_dir / "runs" / f"{row.number:04d}"
    values = row.folds
    metrics = row.metrics if isinstance(row.metrics, list) else []
    folds = []
    for i, value in enumerate(values):
        name = f"fold{i}"
        facts = read_facts(run_dir / name / "facts.json")
        others = metrics[i] if i < len(metrics) and isinstance(metrics[i], dict) else {}
        shown = {k: v for k, v in others.items() if k != config.metric.name and _number(v) is not None}
        steps, train_s = _number(facts.get("steps")), _number(facts.get("train_seconds"))
        folds.append(FoldSummary(
            fold=i, value=None if math.isnan(value) else value,
            metrics=dict(list(shown.items())[:metric_keys]),
            seconds=_number(facts.get("seconds")), peak_memory_gb=_number(facts.get("peak_memory_gb")),
            steps=int(steps) if steps is not None else None,
            steps_per_s=steps / train_s if steps and train_s else None,
            final_loss=_number(facts.get("final_loss")), final_temperature=_number(facts.get("final_temperature"))))
    log = run_dir / "fold0.log"
    if not log.is_file() and row.log_path:
        log = Path(row.log_path)
    curve = checkpoints(parse_curve(_read_log(log))) if log.is_file() else []
    return RunSummary(number=row.number, status=row.status or "", description=row.description or "",
                      metric=row.metric_mean, std=row.metric_std, folds=folds, curve=curve,
                      train_seconds=row.train_seconds, peak_memory_gb=row.peak_memory_gb,
                      reason=row.reason or "")


def limits(config: Config, task_facts: list[str], champion: RunSummary | None) -> list[str]:
    """The numbers that bound a change, one line each."""
    run = config.run
    out = [f"Time: each fold is expected to take about {run.time_budget_s:g} s ([run] time_budget_s) and is "
           f"killed at {run.timeout_s:g} s ([run] timeout_s), which fails the experiment; "
           f"{run.folds} fold{'s' * (run.folds != 1)} per experiment."]
    c = config.contention
    if c.enabled and c.deadline_cap > 1:
        out[-1] += (f" On a machine busy with other work, a fold still on the champion's pace gets the time the "
                    f"other work took added, up to {c.deadline_cap * run.timeout_s:g} s ([contention] deadline_cap).")
    out.append(f"Memory: a fold is killed above {run.memory_gb:g} GB ([run] memory_gb)." if run.memory_gb
               else "Memory: no ceiling is set ([run] memory_gb = 0).")
    tmp = f"{run.tmp_size_gb:g} GB each" if run.tmp_size_gb else "the system's default size"
    counted = " and count against the memory ceiling" if run.memory_gb else ""
    out.append(f"Storage: in the sandbox /tmp and /dev/shm are in memory ({tmp}, [run] tmp_gb){counted}; "
               f"the output folder may hold {run.output_quota_gb:g} GB ([run] output_gb), checked while the fold "
               f"runs; past either limit the fold is stopped and the experiment is a crash.")
    if config.smoke.enabled:
        out.append(f"Smoke test: before its folds a candidate runs {config.smoke.steps} steps on a small slice "
                   f"(deadline {config.smoke.deadline(run):g} s); a crash there costs seconds and comes back to "
                   f"you as a fix attempt.")
    out += task_facts
    if champion is not None:
        speed = [f.steps_per_s for f in champion.folds if f.steps_per_s]
        seconds = [f.seconds for f in champion.folds if f.seconds]
        steps = [f.steps for f in champion.folds if f.steps]
        if speed:
            rate = sum(speed) / len(speed)
            out.append(f"Champion speed: {rate:.3g} training steps/s ({steps[0] if steps else '?'} steps; "
                       f"{sum(seconds) / max(1, len(seconds)):.0f} s a fold with loading and embedding), so the "
                       f"{run.time_budget_s:g} s budget holds at most about {int(rate * run.time_budget_s)} steps "
                       f"at this speed.")
        elif champion.train_seconds:
            per_fold = champion.train_seconds / max(1, len(champion.folds))
            line = f"Champion time: {per_fold:.0f} s a fold"
            if champion.curve and per_fold > 0:    # no facts.json: the log's last step over the whole run
                line += (f", about {champion.curve[-1].step / per_fold:.3g} steps/s counting start-up "
                         f"(step {champion.curve[-1].step} of {champion.curve[-1].total} in its log)")
            out.append(line + ".")
        if champion.peak_memory_gb:
            out.append(f"Champion peak memory: {champion.peak_memory_gb:.2f} GB.")
    return out
