"""The engine's side of early abort: the champion's curves (and its pace, for the deadline rule), and the
evidence of an aborted candidate.

The rule itself is in ``runner/curves.py`` (it runs inside the supervisor, line by line); this module
finds what to compare against and what to tell the agent and the ledger. See ``docs/early-abort.md``.
"""

from __future__ import annotations

from autoresearch.config import Config
from autoresearch.loop.ledger import Experiment
from autoresearch.loop.trial import TrialResult, fold_ids
from autoresearch.runner.curves import Point, curve_from_log, points_from_dicts
from autoresearch.runner.deadline import Pace
from autoresearch.runner.spec import ExitKind


def champion_curves(config: Config, champ: Experiment | None) -> dict[int | None, list[Point]]:
    """fold -> the champion's progress points: from the curves its row recorded (``decision_json["runs"]``)
    or, for a row recorded before curves were stored, parsed from its fold logs."""
    if champ is None:
        return {}
    out: dict[int | None, list[Point]] = {}
    runs = champ.decision.get("runs")
    for run in runs if isinstance(runs, list) else ():
        if isinstance(run, dict) and isinstance(run.get("curve"), list):
            out[run.get("fold")] = points_from_dicts(run["curve"])
    if out:
        return out
    run_dir = config.state_dir / "runs" / f"{champ.number:04d}"
    for fold in fold_ids(config, "fold"):
        points = curve_from_log(run_dir / f"fold{fold}.log")
        if points:
            out[fold] = points
    return out


def champion_pace(config: Config, champ: Experiment | None) -> dict[int | None, Pace]:
    """fold -> the champion's pace on it (CPU seconds for the steps it reached), for the deadline rule
    (``runner/deadline.py``): from the runs its row recorded (``decision_json["runs"]``) that ended ``ok``."""
    if champ is None:
        return {}
    out: dict[int | None, Pace] = {}
    runs = champ.decision.get("runs")
    for run in runs if isinstance(runs, list) else ():
        pace = Pace.from_run(run)
        if pace is not None:
            out[run.get("fold")] = pace
    return out


def champion_folds(config: Config, champ: Experiment | None) -> dict[int | None, float]:
    """fold -> the champion's score on it, for ``[abort] fold_margin`` (its row's per-fold metrics)."""
    if champ is None:
        return {}
    ids = fold_ids(config, "fold")
    values = champ.folds
    return dict(zip(ids, values)) if len(values) == len(ids) else {}


def evidence(trial: TrialResult) -> dict | None:
    """For an aborted trial: the fold, the reason, and both curves (candidate and champion) of the key; or
    for one stopped by the fold rule, both scores of that fold and the folds not run."""
    if trial.fold_abort:
        return dict(trial.fold_abort)
    for f in trial.folds:
        if f.outcome.kind != ExitKind.ABORTED:
            continue
        extra = f.outcome.extra
        found = extra.get("abort") or {}
        key = found.get("key", "loss")
        candidate = [[p["step"], p.get(key)] for p in extra.get("curve", []) if key in p]
        return {"fold": f.fold, "reason": found.get("reason", f.outcome.reason), "key": key,
                "candidate": candidate, "champion": found.get("champion", []),
                "compared": found.get("compared", []), "last_step": extra.get("last_step"),
                "total_steps": extra.get("total_steps"), "seconds": round(f.outcome.seconds, 3)}
    return None


def note(number: int, found: dict, folds_total: int) -> str:
    """The line the next brief carries about an aborted experiment."""
    if found.get("kind") == "fold":
        return (f"experiment {number} was stopped after fold {found['fold']} and discarded: {found['reason']}; "
                f"its {len(found['not_run'])} later fold(s) were not run")
    skipped = folds_total - 1 - (found["fold"] or 0)
    later = f"; its {skipped} later fold(s) were not run" if skipped > 0 else ""
    return (f"experiment {number} was stopped early at fold {found['fold']} and discarded after "
            f"{found['seconds']:.0f} s: {found['reason']}{later}")
