"""The JSON behind each page of the dashboard: pure functions of an open ``Session``.

Nothing here renders HTML: text that came from an agent or a run (descriptions, hypotheses, reasons,
diffs, logs, the scratchpad) travels as JSON strings and the page puts it in the DOM as text. Numbers
that are not finite become null (JSON has no NaN).
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

from autoresearch.loop.gitops import archive_ref
from autoresearch.loop.ledger import Experiment
from autoresearch.session import Session
from autoresearch.vocab import Direction, Kind, Status

PLOT_DESCRIPTION_CHARS = 200     # a hover label, not the whole text


def finite(x: Any) -> Any:
    """JSON-safe: non-finite floats become None, containers are cleaned recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def _epoch(stamp: str | None) -> float | None:
    """The ledger's ISO-8601 UTC time (``...Z``) as seconds since the epoch."""
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def row_summary(r: Experiment) -> dict:
    """One line of the experiments table. The ledger stores a non-finite float as null, so the float
    columns need no cleaning (this runs 2,000 times per table)."""
    tokens = (r.tokens_in or 0) + (r.tokens_out or 0)
    return {
        "number": r.number, "tag": r.tag, "kind": r.kind, "status": r.status, "phase": r.phase,
        "phase_title": r.phase_title, "agent": r.agent or "", "description": r.description or "",
        "mean": r.metric_mean, "std": r.metric_std, "delta": r.delta, "started_at": r.started_at,
        "ended_at": r.ended_at, "cost_usd": r.cost_usd, "tokens": tokens or None,
        "seconds": (r.agent_seconds or 0) + (r.train_seconds or 0) + (r.score_seconds or 0) or None,
        "reason": r.reason or "",
    }


def _plot_point(r: Experiment) -> dict:
    text = " ".join((r.description or "").split())
    if len(text) > PLOT_DESCRIPTION_CHARS:
        text = text[:PLOT_DESCRIPTION_CHARS - 1] + "…"
    return {"n": r.number, "status": r.status, "kind": r.kind, "mean": r.metric_mean, "std": r.metric_std,
            "description": text, "failed": bool(r.failed), "kept": r.status == Status.KEEP}


def _champion_brief(r: Experiment | None) -> dict | None:
    if r is None:
        return None
    return {"number": r.number, "mean": r.metric_mean, "std": r.metric_std, "description": r.description or "",
            "commit": r.commit}


def summary(s: Session, rows: list[Experiment] | None = None) -> dict:
    """The small part of the overview that every page's header shows; what the event stream pushes.

    The same facts as ``Session.status()``, read with one query of the tag's rows (``rows``, if the caller
    has them) plus the phase: with thousands of experiments every full read of the rows counts."""
    rows = s.rows() if rows is None else rows
    experiments = [r for r in rows if r.kind == Kind.EXPERIMENT]
    counts: dict[str, int] = {}
    for r in experiments:
        counts[r.status] = counts.get(r.status, 0) + 1
    phase, used = s.phase_of(rows)
    noise = s.noise()
    direction = s.config.metric.direction
    return finite({
        "tag": s.tag, "metric": s.config.metric.name, "direction": direction,
        "direction_words": Direction.parse(direction).words,
        "champion": _champion_brief(s.champion()), "control": s.control(),
        "phase": {"label": phase.label, "used": used, "budget": phase.budget},
        "counts": counts, Status.RUNNING.value: [row_summary(r) for r in rows if r.status == Status.RUNNING],
        "noise": None if noise is None else {"sigma": noise.sigma, "n_repeats": noise.n_repeats,
                                             "metric_at": noise.metric_at},
        "cost_usd": sum(r.cost_usd or 0.0 for r in experiments),
        "tokens": sum((r.tokens_in or 0) + (r.tokens_out or 0) for r in experiments),
    })


def overview(s: Session) -> dict:
    """Everything the overview page shows: the summary, time spent, the plot's points and steps, notes.
    The wall time is sent as its ends (the page counts on from the first start while something runs)."""
    rows = s.rows()
    measured = [r for r in rows if r.status not in (Status.RUNNING, Status.INTERRUPTED, Status.CONTENTION)]
    steps = [(r.number, r.metric_mean) for r in rows if r.status == Status.KEEP and r.metric_mean is not None]
    starts = [t for t in (_epoch(r.started_at) for r in rows) if t is not None]
    ends = [t for t in (_epoch(r.ended_at) for r in rows) if t is not None]
    return {
        **summary(s, rows),
        "n_experiments": sum(1 for r in rows if r.kind == Kind.EXPERIMENT),
        "time": {"first_started": min(starts, default=None), "last_ended": max(ends, default=None),
                 Status.RUNNING.value: any(r.status == Status.RUNNING for r in rows),
                 "train_s": sum(r.train_seconds or 0 for r in rows), "agent_s": sum(r.agent_seconds or 0 for r in rows)},
        "plot": {"points": [_plot_point(r) for r in measured], "steps": steps},
        "notes": s.notes(), "tags": tag_champions(s),
    }


def table(s: Session) -> dict:
    return {"metric": s.config.metric.name, "rows": [row_summary(r) for r in s.rows()]}


def experiment(s: Session, number: int) -> dict | None:
    """One experiment in full: metrics per fold, decision evidence, diff, logs, curves, scratchpad, git."""
    r = s.experiment(number)
    if r is None:
        return None
    champion = s.champion()
    return finite({
        **row_summary(r),
        "hypothesis": r.hypothesis or "", "changed": r.changed or "", "attempt": r.attempt,
        "folds": r.folds, "metrics": r.metrics, "decision": r.decision or None,
        "champion_metric": r.champion_metric, "metric_name": s.config.metric.name,
        "tokens_in": r.tokens_in, "tokens_out": r.tokens_out, "agent_seconds": r.agent_seconds,
        "train_seconds": r.train_seconds, "score_seconds": r.score_seconds, "peak_memory_gb": r.peak_memory_gb,
        "sandbox": None if r.sandbox is None else bool(r.sandbox),
        "git": {"parent": r.parent_commit, "candidate": r.candidate_commit, "commit": r.commit,
                "archive_ref": archive_ref(r.number) if r.kind == Kind.EXPERIMENT else None},
        "diff": _safe(s.diff, number), "scratchpad": _safe(s.scratchpad_after, number),
        "logs": s.log_tails(number, 60), "curves": s.curves(number),
        "champion_number": champion.number if champion else None,
    })


def now(s: Session) -> dict:
    """What is running: per running experiment its description, diff, live curves over the champion's,
    and elapsed time against the deadline of a run (``[run] timeout_s``)."""
    champ = s.champion()
    champion_curves = s.curves(champ.number) if champ is not None else {}
    out = []
    for r in s.running():
        progress = s.run_progress(r.number)
        started = _epoch(r.started_at)
        latest = progress["latest_run_started"]
        running_runs = [k for k, v in progress["runs"].items() if not v["finished"]]
        out.append(finite({
            **row_summary(r), "hypothesis": r.hypothesis or "", "changed": r.changed or "",
            "diff": _safe(s.diff, r.number), "curves": s.curves(r.number), "runs": progress["runs"],
            "running_runs": running_runs,
            "elapsed_s": None if started is None else time.time() - started,
            "run_elapsed_s": None if latest is None or not running_runs else time.time() - latest,
        }))
    return finite({Status.RUNNING.value: out, "champion": _champion_brief(champ), "champion_curves": champion_curves,
                   "timeout_s": s.config.run.timeout_s, "folds": s.config.run.folds, "control": s.control(),
                   "metric": s.config.metric.name})


def compare(s: Session, a: int, b: int) -> dict | None:
    ra, rb = s.experiment(a), s.experiment(b)
    if ra is None or rb is None:
        return None
    side = [finite({**row_summary(r), "hypothesis": r.hypothesis or "", "folds": r.folds, "metrics": r.metrics,
                    "commit": r.commit or r.candidate_commit}) for r in (ra, rb)]
    return {"a": side[0], "b": side[1], "diff": _safe(s.diff_between, a, b), "metric": s.config.metric.name}


def findings(s: Session) -> dict:
    """What ``autoresearch ablate`` and ``transfer`` found about the current champion: the ablation table (each
    kept change's gain when kept and its contribution now, with the interval) and one table per setting."""
    from autoresearch.findings.ablate import describe

    ablation = s.ablation()
    return finite({
        "metric": s.config.metric.name, "direction_words": Direction.parse(s.config.metric.direction).words,
        "ablation": None if ablation is None else {**ablation.to_dict(), "cells": describe(ablation)},
        "transfers": [{**t.to_dict(), "gain_text": t.gain.text() if t.gain else None,
                       "lines": [{**line.to_dict(), "vs_text": line.vs.text() if line.vs else None} for line in t.lines]}
                      for t in s.transfers()],
    })


def tag_champions(s: Session) -> list[dict]:
    """Each tag's champion, for comparing two tags."""
    return [finite({"tag": tag, "number": c.number, "mean": c.metric_mean}) for tag, c in s.tag_champions().items()]


def _safe(fn, *args) -> Any:
    """A git read that failed (a pruned commit) is shown as a message, not a broken page."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - any git failure is displayed, never fatal
        return f"(unavailable: {exc})"
