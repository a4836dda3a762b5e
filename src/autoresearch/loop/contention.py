"""A loaded machine is not the candidate's fault: re-run starved candidates, pause when it keeps happening.

A fold cut off at the deadline while other work held the machine (``runner/load.py`` decides) ends the
experiment as ``contention``. The driver then runs the same candidate again, without a new agent turn;
the row counts for no phase budget, no experiment target and no crash-fix attempt (``Status.charged``).

When ``[contention] pause_after`` experiments in a row end like this, spending the budget would only
record more of them, so the loop pauses: it sleeps ``pause_s`` (doubling, at most ``pause_max_s``), then
runs the champion's first fold again and compares its time with the time the champion took when it was
recorded. It goes on once that run is not starved; each step is a ledger event (``contention_pause``,
``contention_probe``) and a message through the reporter. After ``GIVE_UP * pause_after`` starved
experiments in a row the run stops with a message instead of looping: a resumed run starts with the
starved candidate.
"""

from __future__ import annotations

import time
from typing import Callable

from autoresearch import events as ev
from autoresearch.loop.abort import champion_pace
from autoresearch.loop.context import Loop
from autoresearch.loop.rows import Experiment
from autoresearch.loop.runs import measure_commit
from autoresearch.loop.trial import TrialResult, fold_ids
from autoresearch.vocab import Kind, Status

CONTENTION = Status.CONTENTION

SLEEP_SLICE_S = 1.0   # a pause checks the run's own stop conditions this often
GIVE_UP = 3           # after GIVE_UP * pause_after starved experiments in a row the run stops: the
                      # champion ran fine in the pauses, so something keeps starving this candidate


def streak(rows: list[Experiment]) -> list[Experiment]:
    """The experiments at the end of ``rows`` (one tag, in order) that ended ``contention``, in a row;
    interrupted rows in between neither break nor extend it."""
    out: list[Experiment] = []
    for row in reversed([r for r in rows if r.kind == Kind.EXPERIMENT
                         and r.status not in (Status.RUNNING, Status.INTERRUPTED)]):
        if row.status != CONTENTION:
            break
        out.append(row)
    return out[::-1]


def pending(rows: list[Experiment]) -> Experiment | None:
    """The candidate to run again: the last experiment, when it ended ``contention``."""
    last = streak(rows)
    return last[-1] if last else None


def recorded_seconds(champ: Experiment) -> float | None:
    """How long the champion's first fold took when it was recorded."""
    runs = champ.decision.get("runs")
    if isinstance(runs, list) and runs and isinstance(runs[0], dict) and runs[0].get("seconds") is not None:
        return float(runs[0]["seconds"])
    folds = len(champ.folds)
    return champ.train_seconds / folds if champ.train_seconds and folds else None


def _sleep(seconds: float, stop: Callable[[], str | None]) -> str | None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if why := stop():
            return why
        time.sleep(min(SLEEP_SLICE_S, left))
    return stop()


def pause(loop: Loop, stop: Callable[[], str | None]) -> str | None:
    """Wait until the champion's first fold runs without being starved; a stop reason if ``stop`` says
    so first (the run's hours, a stop request, Ctrl-C)."""
    cfg = loop.config.contention
    rows = streak(loop.ledger.rows(tag=loop.tag, kinds=("experiment",)))
    champ = loop.state.champion()
    before = recorded_seconds(champ) if champ else None
    wait, probe = cfg.pause_s, 0
    last = rows[-1] if rows else None
    loop.ledger.event("contention_pause", number=last.number if last else None, tag=loop.tag,
                        streak=len(rows), pause_s=wait, reason=last.reason if last else "")
    loop.reporter(ev.ContentionPause(
        f"the machine is busy with other work: {len(rows)} experiments in a row could not finish because other "
        f"programs took the CPU, even with their deadlines moved for it. Pausing {wait:.0f} s, then timing the "
        f"champion's first fold to see whether the machine is free again, before spending more of the budget "
        f"(last: {last.reason if last else '?'})", wait))
    while True:
        try:
            if why := _sleep(wait, stop):
                return why
            probe += 1
            trial = _time_champion(loop, probe)
        except KeyboardInterrupt:
            return "interrupted (Ctrl-C) while paused for a busy machine; everything so far is recorded"
        seconds = trial.folds[0].outcome.seconds if trial.folds else None
        loop.ledger.event("contention_probe", number=champ.number if champ else None, tag=loop.tag,
                            probe=probe, status=trial.status, seconds=seconds, recorded_seconds=before,
                            reason=trial.reason, runs=trial.runs)
        then = f" (recorded: {before:.0f} s)" if before else ""
        took = f"{seconds:.0f} s" if seconds is not None else "no time"
        if trial.status != CONTENTION:
            loop.reporter(ev.ContentionProbe(
                f"the machine is free enough again: the champion's first fold took {took}{then} without being "
                f"starved; going on", True))
            return None
        wait = min(max(wait * 2, SLEEP_SLICE_S), cfg.pause_max_s)
        loop.reporter(ev.ContentionProbe(
            f"the machine is still busy: the champion's first fold was starved too; pausing {wait:.0f} s more "
            f"({trial.reason})", False))


def _time_champion(loop: Loop, probe: int) -> TrialResult:
    """The champion's first fold with the usual deadline."""
    name = f"contention-{time.strftime('%Y%m%d-%H%M%S')}-{probe}"
    first = fold_ids(loop.config, "fold")[:1]
    champ = loop.state.champion()
    return measure_commit(loop, champ.commit, name, seed=loop.config.run.seed, folds=first,
                          champion_pace=champion_pace(loop.config, champ))


def baseline_retry(loop: Loop, attempt: int, reason: str) -> None:
    """Before measuring the baseline again after it was starved: say so, record it, and back off."""
    cfg = loop.config.contention
    wait = min(cfg.pause_s * 2 ** (attempt - 1), cfg.pause_max_s)
    loop.ledger.event("contention_pause", tag=loop.tag, streak=attempt, pause_s=wait, reason=reason)
    loop.reporter(ev.ContentionPause(
        f"the machine is busy with other work: the baseline could not finish because other programs took the "
        f"CPU. Pausing {wait:.0f} s, then measuring it again ({reason})", wait))
    time.sleep(wait)
