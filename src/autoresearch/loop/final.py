"""The one-time test: train the champion on train+val and score the hidden test split.

Each use is recorded as an event; the result is written to the ledger as a row of kind ``final`` that no
brief ever includes.
"""

from __future__ import annotations

from autoresearch import hardware
from autoresearch.errors import UserError
from autoresearch.loop.engine import Engine, _now
from autoresearch.loop.ledger import Experiment


def run_final(engine: Engine) -> Experiment:
    engine.prepare()
    champ = engine.champion()
    if champ is None:
        raise UserError(f"tag {engine.tag!r} has no champion yet", hint="run `autoresearch run` (or `trial`) first")
    engine.ledger.event("test_used", number=champ.number, tag=engine.tag, commit=champ.commit)
    number = engine.ledger.start(tag=engine.tag, kind="final", phase=0, phase_title="final test", attempt=1,
                                 parent_commit=champ.commit, candidate_commit=champ.commit, commit=champ.commit,
                                 description=f"final: champion {champ.number} on train+val, scored on test",
                                 hardware_json=hardware.describe(), sandbox=int(engine.sandbox),
                                 fingerprints_json=engine.fingerprints, started_at=_now())
    engine.reporter("experiment_start", number=number, description="final training on train+val", phase="final")
    from autoresearch.loop.trial import run_trial

    run_dir = engine.config.state_dir / "runs" / f"{number:04d}-final"
    trial = run_trial(engine.config, run_dir, seed=engine.config.run.seed, mode="final", sandbox=engine.sandbox,
                      executor=engine.executor, on_fold=lambda f: engine.reporter("fold_done", number=number, fold=f))
    if trial.status == "interrupted":
        engine.ledger.finish(number, "interrupted", reason=trial.reason)
        raise KeyboardInterrupt
    status = "keep" if trial.status == "ok" else trial.status
    engine.ledger.finish(number, status, reason=trial.reason or "one-time test score", **engine._trial_fields(trial))
    return engine.ledger.get(number)
