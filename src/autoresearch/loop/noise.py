"""Measuring the noise floor: the champion run again with other seeds, every fold each time."""

from __future__ import annotations

from autoresearch import hardware
from autoresearch.errors import UserError
from autoresearch.loop import decide as decide_mod
from autoresearch.loop.engine import Engine, _now


def measure_noise(engine: Engine, repeats: int) -> decide_mod.NoiseFloor:
    """Run the champion ``repeats`` times with fresh seeds; record each run and the resulting noise floor.

    The champion's own recorded run counts as one of the repeats, so R repeats cost R − 1 new runs.
    """
    if repeats < 2:
        raise UserError("--repeats must be at least 2 to measure a spread", hint="use --repeats 3")
    engine.prepare()
    champ = engine.ensure_baseline()
    runs = [champ.folds]
    for r in range(1, repeats):
        seed = engine.config.run.seed + 7919 * r
        number = engine.ledger.start(tag=engine.tag, kind="noise", phase=0, phase_title="noise floor", attempt=1,
                                     parent_commit=champ.commit, candidate_commit=champ.commit, commit=champ.commit,
                                     description=f"noise floor: champion {champ.number} with seed {seed}",
                                     hardware_json=hardware.describe(), sandbox=int(engine.sandbox),
                                     fingerprints_json=engine.fingerprints, started_at=_now())
        engine.reporter("experiment_start", number=number, description=f"champion again, seed {seed}", phase="noise floor")
        trial = engine._trial(number, seed=seed)
        status = "keep" if trial.status == "ok" else trial.status
        engine.ledger.finish(number, status, reason=trial.reason or "noise-floor run", **engine._trial_fields(trial))
        engine.reporter("experiment_done", row=engine.ledger.get(number))
        if trial.status != "ok":
            raise UserError(f"a noise-floor run failed: {trial.reason}", hint="check `autoresearch show "
                            f"{number}`; the champion should run reliably before its noise is measured")
        runs.append(trial.values)
    noise = decide_mod.noise_floor(runs)
    engine.ledger.set_meta(f"noise:{engine.tag}", noise.to_dict())
    engine.ledger.event("noise_floor", number=champ.number, tag=engine.tag, **noise.to_dict())
    return noise
