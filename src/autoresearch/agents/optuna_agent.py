"""The Optuna agent: a TPE sampler over the UPPER_CASE constants named in ``[search_space]``.

Each proposal is one ``study.ask()``: the sampled values are written into the first editable file with
``constants.set_constants``. The study lives in SQLite next to the ledger and is reloaded on start, so
trial numbers continue after a resume; a trial left RUNNING by a killed tool is marked FAIL then.

A constant that is an ``int`` in the file (or a parameter declared ``int = true``) is searched as an
integer and stays an ``int`` in the file. A crash-fix turn (``brief.attempt > 1``) changes nothing:
a sampler cannot repair code, and the crashed trial is told FAIL when the engine observes it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)
from optuna.trial import TrialState

from autoresearch.agents.base import AgentContext, Brief, Proposal, Usage
from autoresearch.hyperparams import read_constants, set_constants
from autoresearch.config import Config, SearchParam
from autoresearch.errors import UserError
from autoresearch.vocab import Status

SCORED = (Status.KEEP, Status.DISCARD)   # statuses whose metric is told to the study


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)


def _distribution(param: SearchParam, current: Any, where: str) -> BaseDistribution:
    if param.choices:
        return CategoricalDistribution(list(param.choices))
    if param.low is None or param.high is None:
        raise UserError(f"{where} needs numeric low and high, or choices")
    if param.integer or (isinstance(current, int) and not isinstance(current, bool)):
        low, high = math.ceil(param.low), math.floor(param.high)
        if low >= high:
            raise UserError(f"{where}: the integer constant needs at least two whole numbers in "
                            f"[{param.low}, {param.high}]", hint="widen low/high or make the constant a float")
        return IntDistribution(low, high, log=param.log)
    return FloatDistribution(param.low, param.high, log=param.log)


class OptunaAgent:
    """Proposes constants from a persistent Optuna study; ``observe`` tells it the outcome."""

    name = "optuna"

    def __init__(self, config: Config, context: AgentContext, storage_path: Path | str, study_name: str) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.config, self.context = config, context
        code = [f for f in config.task.editable if f != config.task.scratchpad] or list(config.task.editable)
        self.file = code[0]
        if not config.search_space:
            raise UserError(f"{config.path}: the optuna agent needs a [search_space] table",
                            hint="add e.g. [search_space] LR = { low = 1e-5, high = 1e-3, log = true }")
        source_path = context.root / self.file
        try:
            current = read_constants(source_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UserError(f"{source_path}: cannot read the file to tune: {exc}") from None
        except SyntaxError as exc:
            raise UserError(f"{source_path}: does not parse (line {exc.lineno}): {exc.msg}") from None
        self.distributions: dict[str, BaseDistribution] = {}
        for param in config.search_space:
            where = f"{config.path}: [search_space] {param.name}"
            if param.name not in current:
                raise UserError(f"{where} is not a constant of {self.file} "
                                f"(known: {', '.join(current) or 'none'})",
                                hint=f"use the name of an UPPER_CASE constant at the top level of {self.file}")
            self.distributions[param.name] = _distribution(param, current[param.name], where)

        path = Path(storage_path)
        path = path if path.is_absolute() else context.root / path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.storage_path = path
        self.study = optuna.create_study(
            storage=f"sqlite:///{path}", study_name=study_name, direction=config.metric.direction,
            sampler=optuna.samplers.TPESampler(seed=config.run.seed), load_if_exists=True)
        stored = self.study.direction.name.lower()
        if stored != config.metric.direction:
            raise UserError(f"{path}: study {study_name!r} was made to {stored}, but [metric] direction is "
                            f"{config.metric.direction}", hint="delete the study file or use another study name")
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        # The champion's values, told to the study with the champion's metric before the first ask, so
        # TPE starts from the baseline without spending an experiment on re-running it.
        self.baseline = {name: current[name] for name, dist in self.distributions.items()
                         if self._contains(dist, current[name])}

    @staticmethod
    def _contains(dist: BaseDistribution, value: Any) -> bool:
        if isinstance(value, bool):
            return isinstance(dist, CategoricalDistribution) and value in dist.choices
        if isinstance(dist, CategoricalDistribution):
            return value in dist.choices
        return isinstance(value, (int, float)) and dist.low <= value <= dist.high  # type: ignore[attr-defined]

    def propose(self, brief: Brief, workdir: Path) -> Proposal:
        start = time.monotonic()
        if brief.attempt > 1:
            return Proposal(description="optuna cannot fix a crash; nothing changed",
                            meta={"no_fix": True}, usage=Usage(seconds=time.monotonic() - start))
        self._seed_with_champion(brief.champion_metric)
        trial = self.study.ask(self.distributions)
        params = {name: trial.params[name] for name in self.distributions}
        target = workdir / self.file
        target.write_text(set_constants(target.read_text(encoding="utf-8"), params), encoding="utf-8")
        described = ", ".join(f"{name}={_short(value)}" for name, value in params.items())
        return Proposal(description=f"optuna trial {trial.number}: {described}",
                        hypothesis="TPE expects these values to improve the metric",
                        meta={"trial": trial.number, "params": params},
                        usage=Usage(seconds=time.monotonic() - start))

    def _seed_with_champion(self, metric: float | None) -> None:
        if self.study.get_trials(deepcopy=False) or not self.baseline:
            return
        if metric is None or not math.isfinite(metric):
            return
        dists = {name: self.distributions[name] for name in self.baseline}
        self.study.add_trial(optuna.trial.create_trial(params=dict(self.baseline), distributions=dists,
                                                       value=float(metric)))

    def observe(self, number: int, status: str, metric: float | None, meta: dict) -> None:
        """Tell the study: the metric for a scored result, FAIL for crash/timeout/invalid/interrupted."""
        trial = meta.get("trial") if isinstance(meta, dict) else None
        if not isinstance(trial, int):
            return
        if status in SCORED and metric is not None and math.isfinite(metric):
            self.study.tell(trial, float(metric), skip_if_finished=True)
        else:
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)

    def best(self) -> tuple[float, dict[str, Any]] | None:
        """The best scored value and its parameters so far, or None before any."""
        try:
            best = self.study.best_trial
        except ValueError:
            return None
        return best.value, dict(best.params)   # type: ignore[return-value]
