"""From a candidate's runs to a verdict: the one place where keep, discard or "one more run" is reached.

Contract: pure (no I/O). ``judge`` takes every run of the candidate so far (per-fold values, the first run
first) and every measurement of the champion it is compared with, and returns a ``Judgement``: ``KEEP``,
``DISCARD`` or ``MORE`` (run the candidate once more with a fresh seed), with a reason a researcher can
read and the numbers behind it. The rule is ``[decision] rule`` (see ``loop/decide.py`` and
docs/decisions.md). ``fold_stop`` is the after-fold rule: whether a run's folds so far already show the
candidate is clearly not better, so its later folds need not run.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from autoresearch.config import Config
from autoresearch.loop import decide as decide_mod
from autoresearch.vocab import Status


class Verdict(enum.StrEnum):
    KEEP = Status.KEEP.value
    DISCARD = Status.DISCARD.value
    MORE = "more"          # uncertain: one more run of the candidate with a fresh seed


@dataclass
class Judgement:
    verdict: Verdict
    reason: str
    numbers: dict = field(default_factory=dict)


def judge(config: Config, runs: list[list[float]], champion_runs: list[list[float]],
          noise: decide_mod.NoiseFloor | None, *, seed_only: bool = False) -> Judgement:
    """The verdict on a candidate's runs so far against its champion's measurements."""
    settings, direction = config.decision, config.metric.direction
    extra = len(runs) - 1
    if extra == 0:
        d = decide_mod.decide(runs[0], champion_runs, direction=direction, settings=settings, noise=noise,
                              seed_only=seed_only)
        if d.status == "confirm":
            return Judgement(Verdict.MORE, d.reason, d.numbers)
        return Judgement(Verdict(d.status), d.reason, d.numbers)
    if extra < settings.confirm_repeats and all(math.isfinite(v) for v in runs[-1]):
        return Judgement(Verdict.MORE, f"confirmation run {extra} of {settings.confirm_repeats} done", {})
    d = decide_mod.decide_confirmed(runs, champion_runs, direction=direction, settings=settings, noise=noise,
                                    seed_only=seed_only)
    d.numbers["confirm_runs"] = runs[1:]
    return Judgement(Verdict(d.status), d.reason, d.numbers)


def fold_stop(config: Config, fold: int | None, value: float, champion_folds: dict[int | None, float]) -> dict | None:
    """``[abort] fold_margin``: the evidence when ``value`` on ``fold`` is worse than the champion's score on
    the same fold by more than that share of it; None when it is not, or when there is nothing to compare."""
    margin = config.abort.fold_margin
    champ = champion_folds.get(fold)
    if not config.abort.enabled or margin <= 0 or champ is None or not math.isfinite(champ) \
            or not math.isfinite(value) or champ == 0:
        return None
    worse = -config.metric.direction.gain(value, champ) / abs(champ)
    if worse <= margin:
        return None
    name = config.metric.name
    return {"kind": "fold", "fold": fold, "value": value, "champion": champ, "worse": round(worse, 4),
            "margin": margin,
            "reason": f"{name} {value:.4g} against the champion's {champ:.4g} on the same fold, {worse:.0%} worse "
                      f"(rule: fold_margin {margin:g})"}
