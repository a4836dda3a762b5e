"""From a candidate's runs to a verdict: the one place where keep, discard or "one more run" is reached.

Contract: pure (no I/O). ``Reference`` is what a candidate is judged against, read in the loop's thread
before its runs start (the champion's runs and fold scores, the evidence of seed noise from every other
code, the noise floor). ``judge`` takes every run of the candidate so far (per-fold values, the first run
first) and returns a ``Judgement``: ``KEEP``, ``DISCARD`` or ``MORE`` (one more run, of the candidate with a
fresh seed, or of the champion when only the evidence of noise is missing), with a reason a researcher can
read and the numbers behind it. ``fold_stop`` is the after-fold rule: whether the folds so far already show
the candidate is clearly not better, so the run's later folds need not run.

The rule is ``[decision] rule``: ``sequential`` (the default: ``loop/sequential.py``, fold by fold and run
by run against the measured seed noise), ``noise`` (one run, a confirmation band, ``[abort] fold_margin``)
or ``greedy`` (``loop/decide.py``); docs/decisions.md has the formulas and their measured error rates.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from autoresearch.config import Config
from autoresearch.loop import decide as decide_mod
from autoresearch.loop import sequential
from autoresearch.loop.noise import NO_EVIDENCE, NoiseEvidence
from autoresearch.vocab import DecisionRule, Status


class Verdict(enum.StrEnum):
    KEEP = Status.KEEP.value
    DISCARD = Status.DISCARD.value
    MORE = "more"          # uncertain: one more run (``Judgement.more``: of the candidate or the champion)


@dataclass
class Judgement:
    verdict: Verdict
    reason: str
    numbers: dict = field(default_factory=dict)
    more: str = "candidate"        # with MORE: "candidate" or "champion"


@dataclass(frozen=True)
class Reference:
    """What a candidate's runs are compared with, read before they start (runs read no ledger)."""

    champion_runs: list = field(default_factory=list)    # per run, per fold
    champion_folds: dict = field(default_factory=dict)   # fold -> the champion's first run's score
    noise: NoiseEvidence = NO_EVIDENCE                   # seed noise from every other code
    floor: decide_mod.NoiseFloor | None = None           # the noise rule's floor (``autoresearch baseline``)
    curves: dict = field(default_factory=dict)           # fold -> the champion's progress points
    pace: dict = field(default_factory=dict)             # fold -> the champion's CPU per step (the deadline rule)


def judge(config: Config, runs: list[list[float]], ref: Reference, *, seed_only: bool = False) -> Judgement:
    """The verdict on a candidate's runs so far."""
    settings, direction = config.decision, config.metric.direction
    if settings.rule == DecisionRule.SEQUENTIAL:
        v = sequential.after_run(sequential.Evidence(runs, ref.champion_runs, ref.noise, direction, settings,
                                                     seed_only=seed_only))
        numbers = {**v.numbers, "confirm_runs": runs[1:]} if len(runs) > 1 else v.numbers
        return Judgement(Verdict(v.action.value), v.reason, numbers, v.more or "candidate")
    extra = len(runs) - 1
    if extra == 0:
        d = decide_mod.decide(runs[0], ref.champion_runs, direction=direction, settings=settings, noise=ref.floor,
                              seed_only=seed_only)
        if d.status == decide_mod.CONFIRM:
            return Judgement(Verdict.MORE, d.reason, d.numbers)
        return Judgement(Verdict(d.status), d.reason, d.numbers)
    if extra < settings.confirm_repeats and all(math.isfinite(v) for v in runs[-1]):
        return Judgement(Verdict.MORE, f"confirmation run {extra} of {settings.confirm_repeats} done", {})
    d = decide_mod.decide_confirmed(runs, ref.champion_runs, direction=direction, settings=settings, noise=ref.floor,
                                    seed_only=seed_only)
    d.numbers["confirm_runs"] = runs[1:]
    return Judgement(Verdict(d.status), d.reason, d.numbers)


def fold_stop(config: Config, earlier: list[list[float]], current: list[float | None], ref: Reference,
              fold: int | None) -> dict | None:
    """After ``fold`` of the candidate's current run (``current``: its folds so far, None where not run;
    ``earlier``: its complete runs before): the evidence for not running the rest, or None to go on."""
    if config.decision.rule == DecisionRule.SEQUENTIAL:
        if not ref.champion_runs or not config.abort.enabled:
            return None
        v = sequential.after_fold(sequential.Evidence([*earlier, current], ref.champion_runs, ref.noise,
                                                      config.metric.direction, config.decision))
        if v.action is not sequential.Action.STOP:
            return None
        return {"kind": "sequential", "fold": fold, "reason": v.reason, "verdict": v.to_dict()}
    value = current[fold] if fold is not None and fold < len(current) else None
    return fold_margin(config, fold, math.nan if value is None else value, ref.champion_folds)


def fold_margin(config: Config, fold: int | None, value: float, champion_folds: dict[int | None, float]) -> dict | None:
    """``[abort] fold_margin`` (the noise and greedy rules): the evidence when ``value`` on ``fold`` is worse
    than the champion's score on the same fold by more than that share of it; None when it is not, or when
    there is nothing to compare."""
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
