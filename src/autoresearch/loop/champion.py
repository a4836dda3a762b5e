"""Measurements of the champion itself: the baseline, the noise floor, the one-time test score.

Contract: each function runs commits through ``runs.measure_commit`` and records one row per run
(kinds ``baseline``, ``noise``, ``final``), sealed like any other; none of them is an experiment, so no
phase budget is spent. A baseline that does not run, or a machine too busy to measure it, is a
``UserError`` naming what to fix.
"""

from __future__ import annotations

from autoresearch import events as ev
from autoresearch.errors import UserError
from autoresearch.loop import abort, contention, decide, noise
from autoresearch.loop.context import Loop
from autoresearch.loop.rows import Experiment
from autoresearch.loop.runs import measure_commit
from autoresearch.vocab import DecisionRule, Kind, Status, rerun_seed


def ensure_baseline(loop: Loop) -> Experiment:
    """The champion; with none yet, the starting commit measured and recorded as the baseline, then run again
    with fresh seeds up to ``[decision] baseline_repeats`` (the night's first evidence of seed noise)."""
    champ = loop.state.champion()
    if champ is not None:
        if champ.kind == Kind.BASELINE:
            _baseline_repeats(loop, champ)
        return champ
    row = _measure_baseline(loop)
    _baseline_repeats(loop, row)
    return row


def _baseline_repeats(loop: Loop, base: Experiment) -> None:
    """Top the baseline up to ``baseline_repeats`` runs (idempotent: runs made earlier count), check from the
    results that it honours its seed, and record the noise floor they give."""
    settings = loop.config.decision
    if settings.rule != DecisionRule.SEQUENTIAL or settings.baseline_repeats < 2:
        return
    runs = repeat(loop, base, settings.baseline_repeats)
    if message := noise.seed_error(runs, script=" ".join(loop.config.run.command[1:2]) or "the run"):
        raise UserError(message, hint="seed every random draw from AUTORESEARCH_SEED, or set [decision] rule = "
                                      "\"greedy\" to decide on single runs without a noise model")
    if loop.state.noise() is None:
        floor = decide.noise_floor(runs)
        loop.ledger.set_meta(f"noise:{loop.tag}", floor.to_dict())
        loop.ledger.event("noise_floor", number=base.number, tag=loop.tag, **floor.to_dict())


def repeat(loop: Loop, champ: Experiment, total: int) -> list[list[float]]:
    """The champion's commit measured until it has ``total`` runs (its own runs and noise-floor runs, each
    under a seed none of them used); returns them all. A run that fails stops with a message."""
    runs = loop.state.champion_runs(champ)
    while len(runs) < total:
        seed = rerun_seed(loop.config.run.seed, len(runs))
        number = loop.start_row(kind=Kind.NOISE, phase=0, phase_title="noise floor", parent_commit=champ.commit,
                                candidate_commit=champ.commit, commit=champ.commit,
                                description=f"noise floor: champion {champ.number} with seed {seed}")
        loop.reporter(ev.ExperimentStarted(number, f"champion again, seed {seed}", "noise floor"))
        trial = _measure(loop, number, champ.commit, f"{number:04d}", seed=seed, pace=abort.champion_pace(loop.config, champ))
        status = Status.KEEP if trial.status == "ok" else Status(trial.status)
        loop.finish(number, status, reason=trial.reason or "noise-floor run", **trial.ledger_fields())
        loop.reporter(ev.ExperimentFinished(loop.ledger.get(number)))
        if trial.status != "ok":
            raise UserError(f"a noise-floor run of experiment {champ.number} failed: {trial.reason}",
                            hint=f"check `autoresearch show {number}`; the champion should run reliably before its "
                                 "noise is measured (a busy machine: free some cores and run again)")
        runs.append(trial.values)
    return runs


def _measure_baseline(loop: Loop) -> Experiment:
    head, cfg = loop.git.head(), loop.config
    for starved in range(1, cfg.contention.pause_after + 1):
        number = loop.start_row(kind=Kind.BASELINE, number=0 if loop.ledger.next_number() == 0 else None,
                                phase=0, phase_title="baseline", parent_commit=head, candidate_commit=head,
                                agent="", description="baseline")
        loop.reporter(ev.ExperimentStarted(number, "baseline", "baseline"))
        trial = _measure(loop, number, head, f"{number:04d}", seed=cfg.run.seed)
        if trial.status != Status.CONTENTION or starved == cfg.contention.pause_after:
            break
        loop.finish(number, Status.CONTENTION, reason=trial.reason, **trial.ledger_fields())
        contention.baseline_retry(loop, starved, trial.reason)
    if trial.status == Status.CONTENTION:
        loop.finish(number, Status.CONTENTION, reason=trial.reason, **trial.ledger_fields())
        raise UserError(f"the machine is too busy to measure the baseline: {trial.reason}",
                        hint="free some cores (or raise [run] timeout_s in autoresearch.toml) and run again")
    if trial.status != "ok":
        loop.finish(number, Status(trial.status), reason=trial.reason, **trial.ledger_fields())
        raise UserError(f"the baseline did not run: {trial.reason}\n--- log tail ---\n{trial.log_tail()}",
                        hint="fix train.py (or the run command) so that `autoresearch trial` succeeds")
    fields = trial.ledger_fields()
    fields["decision_json"]["base_after"] = head
    loop.finish(number, Status.KEEP, commit=head, reason="baseline", **fields)
    row = loop.ledger.get(number)
    loop.reporter(ev.ExperimentFinished(row))
    return row


def _measure(loop: Loop, number: int, commit: str, name: str, *, seed: int, mode: str = "fold",
             pace: dict | None = None):
    """A trial of ``commit`` for row ``number``; Ctrl-C records the row as interrupted and is raised again."""
    try:
        trial = measure_commit(loop, commit, name, seed=seed, mode=mode, number=number, champion_pace=pace)
    except KeyboardInterrupt:
        loop.finish(number, Status.INTERRUPTED, reason="interrupted by Ctrl-C")
        raise
    if trial.status == Status.INTERRUPTED:
        loop.finish(number, Status.INTERRUPTED, reason=trial.reason, **trial.ledger_fields())
        raise KeyboardInterrupt
    return trial


def measure_noise(loop: Loop, repeats: int) -> decide.NoiseFloor:
    """The champion measured until it has ``repeats`` runs in all (its own run counts, and so do runs made
    earlier: asking twice costs nothing the second time); the noise floor they give is recorded."""
    if repeats < 2:
        raise UserError("--repeats must be at least 2 to measure a spread", hint="use --repeats 3")
    champ = ensure_baseline(loop)
    runs = repeat(loop, champ, repeats)
    if message := noise.seed_error(runs, what=f"experiment {champ.number}"):
        raise UserError(message)
    floor = decide.noise_floor(runs)
    loop.ledger.set_meta(f"noise:{loop.tag}", floor.to_dict())
    loop.ledger.event("noise_floor", number=champ.number, tag=loop.tag, **floor.to_dict())
    return floor


def maybe_remeasure(loop: Loop) -> None:
    """Measure the noise floor again when the champion has moved far from where it was measured."""
    noise, champ = loop.state.noise(), loop.state.champion()
    if noise is None or champ is None or loop.config.decision.remeasure_after <= 0:
        return   # without a floor, `autoresearch baseline` measures one; the rule falls back to the folds
    if decide.needs_remeasure(noise, champ.metric_mean, loop.config.decision):
        loop.reporter(ev.Remeasure(noise, champ))
        measure_noise(loop, max(2, noise.n_repeats))


def run_final(loop: Loop) -> Experiment:
    """Train the champion on train+val and score the hidden test split once. Each use is recorded as a
    ``test_used`` event; the result is a row of kind ``final`` that no brief ever includes."""
    champ = loop.state.champion()
    if champ is None:
        raise UserError(f"tag {loop.tag!r} has no champion yet", hint="run `autoresearch run` (or `trial`) first")
    loop.ledger.event("test_used", number=champ.number, tag=loop.tag, commit=champ.commit)
    number = loop.start_row(kind=Kind.FINAL, phase=0, phase_title="final test", parent_commit=champ.commit,
                            candidate_commit=champ.commit, commit=champ.commit,
                            description=f"final: champion {champ.number} on train+val, scored on test")
    loop.reporter(ev.ExperimentStarted(number, "final training on train+val", "final"))
    trial = _measure(loop, number, champ.commit, f"{number:04d}-final", seed=loop.config.run.seed, mode="final")
    status = Status.KEEP if trial.status == "ok" else Status(trial.status)
    loop.finish(number, status, reason=trial.reason or "one-time test score", **trial.ledger_fields())
    return loop.ledger.get(number)
