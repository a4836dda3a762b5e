"""Paired comparisons of two pieces of code measured on the same folds with the same seeds.

A pair is one (seed, fold): both sides trained with that seed and scored on that fold, so the fold's
difficulty and the seed's luck shared by both cancel in their difference. ``gain`` is the mean over pairs
of how much better side A is than side B, in the metric's own direction (``Direction.gain``: positive when A
is better), so "the champion against the champion without change i" reads as that change's contribution.

Its standard error is the larger of two estimates of the same quantity, as ``loop.decide.noise_floor`` does
for the noise floor: the spread of the per-seed mean differences (S − 1 degrees of freedom; catches a seed
effect shared across folds) and the pooled spread of the differences within each fold (K(S − 1) degrees of
freedom). With a single seed the spread of the K fold differences stands in (a rough estimate; ``source``
says so). The 95% interval uses Student's t with the degrees of freedom of the chosen estimate.

``verdict`` uses the loop's own rule (``[decision] k`` and ``min_delta``): a contribution beyond
``max(min_delta, k·se)`` matters; one below its negative hurts (removing the change is better); anything
between is within the noise: the change no longer matters at the champion and is a candidate for removal.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

from autoresearch.vocab import Direction

# Student's t, two-sided 95% (the 0.975 quantile), for 1..30 degrees of freedom; beyond: the normal's 1.96.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

MATTERS = "matters"
NO_LONGER = "no longer matters (candidate for removal)"
HURTS = "hurts now (the champion is better without it)"


def t975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom (1.96 beyond 30)."""
    if dof < 1:
        return math.nan
    return _T975[dof - 1] if dof <= len(_T975) else 1.96


@dataclass(frozen=True)
class Paired:
    """A's gain over B from paired runs: mean over (seed, fold) pairs, its standard error and 95% interval."""

    gain: float
    se: float
    dof: int
    n_seeds: int
    n_folds: int
    source: str
    seed_gains: list[float] = field(default_factory=list)   # per seed, the mean over folds

    @property
    def low(self) -> float:
        return self.gain - t975(self.dof) * self.se

    @property
    def high(self) -> float:
        return self.gain + t975(self.dof) * self.se

    def to_dict(self) -> dict:
        return {**asdict(self), "low": self.low, "high": self.high}

    def text(self, digits: int = 4) -> str:
        """``+1.003 ± 0.004 (95% CI +0.99 … +1.02; 3 seeds × 2 folds)``."""
        if not math.isfinite(self.gain):
            return "—"
        g = f"{self.gain:+.{digits}g}"
        if not math.isfinite(self.se):
            return f"{g} (one pair: no uncertainty)"
        return (f"{g} ± {self.se:.{max(1, digits - 1)}g} (95% CI {self.low:+.{digits}g} … {self.high:+.{digits}g}; "
                f"{self.n_seeds} seed{'s' * (self.n_seeds != 1)} × {self.n_folds} folds)")


def paired(a: Mapping[int, Sequence[float]], b: Mapping[int, Sequence[float]], direction: Direction | str) -> Paired | None:
    """A's gain over B. ``a`` and ``b``: seed -> per-fold values. Seeds present on both sides with every fold
    finite are paired; None when there is no such seed."""
    direction = Direction.parse(direction)
    seeds = sorted(s for s in a if s in b and _usable(a[s], b[s]))
    if not seeds:
        return None
    k = len(a[seeds[0]])
    diffs = [[direction.gain(x, y) for x, y in zip(a[s], b[s])] for s in seeds]
    n_s = len(seeds)
    seed_gains = [statistics.fmean(d) for d in diffs]
    gain = statistics.fmean(seed_gains)
    if n_s >= 2:
        se_seed = statistics.stdev(seed_gains) / math.sqrt(n_s)
        fold_means = [statistics.fmean(d[j] for d in diffs) for j in range(k)]
        ss = sum((d[j] - fold_means[j]) ** 2 for d in diffs for j in range(k))
        se_pool = math.sqrt(ss / (k * (n_s - 1)) / (k * n_s))
        if se_seed >= se_pool:
            se, dof, source = se_seed, n_s - 1, f"spread of {n_s} per-seed differences"
        else:
            se, dof, source = se_pool, k * (n_s - 1), f"spread within folds over {n_s} seeds"
    elif k >= 2:
        se, dof = statistics.stdev(diffs[0]) / math.sqrt(k), k - 1
        source = f"spread of {k} fold differences of one seed (a rough estimate)"
    else:
        se, dof, source = math.nan, 0, "one pair: no estimate"
    return Paired(gain=gain, se=se, dof=dof, n_seeds=n_s, n_folds=k, source=source, seed_gains=seed_gains)


def _usable(x: Sequence[float], y: Sequence[float]) -> bool:
    return len(x) == len(y) > 0 and all(math.isfinite(v) for v in (*x, *y))


def threshold(p: Paired, *, k: float, min_delta: float) -> float:
    """The loop's bar for "beyond the noise": ``max(min_delta, k·se)``."""
    return max(min_delta, k * p.se) if math.isfinite(p.se) else min_delta


def verdict(p: Paired, *, k: float, min_delta: float) -> str:
    """``matters``, ``hurts now`` or ``no longer matters (candidate for removal)`` for a contribution."""
    bar = threshold(p, k=k, min_delta=min_delta)
    if p.gain > bar:
        return MATTERS
    if p.gain < -bar:
        return HURTS
    return NO_LONGER


def holds(p: Paired, *, k: float, min_delta: float) -> str:
    """For a gain moved to another setting: ``holds``, ``reversed`` or ``not shown (within the noise)``."""
    bar = threshold(p, k=k, min_delta=min_delta)
    if p.gain > bar:
        return "holds"
    if p.gain < -bar:
        return "reversed"
    return "not shown (within the noise)"
