"""Evidence of seed noise, and the check that a code honours the seed the tool passes it.

A keep must beat the run-to-run noise, so the noise has to be measured, and measured honestly. The unit here
is ``tau``: the standard deviation of one fold's score between runs of the same code that differ only in
``AUTORESEARCH_SEED``. Every group of such runs (the baseline's automatic repeats, a champion's runs, a
candidate's own runs) carries evidence about it: on each fold, ``n`` runs give ``n - 1`` degrees of freedom,
so R runs of K folds give K(R-1). ``noise_evidence`` pools the groups (sums of squares about each group's
fold means, and their degrees of freedom), so the estimate sharpens as the night goes on. Fold-to-fold
differences never enter it: they cancel in fold-paired comparisons.

A group whose runs under different seeds agree bit for bit (or whose output digests agree, or whose spread is
implausibly small against the noise measured elsewhere: ``ignores_seed``) is evidence of a script that
ignores its seed, not of zero noise: it is rejected, with a sentence saying why, and never pooled. A
candidate found so is never kept (``loop.sequential``); a baseline found so is a user error (the lead's
``UserError``: "train.py ignores AUTORESEARCH_SEED ...").

Pure: numbers in, numbers out. No I/O, no git, no ledger.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Iterable, Mapping, Sequence

Runs = Sequence[Sequence["float | None"]]     # per run, per fold; None: that fold has not run yet

# A group's own spread is "implausibly small" when, against the noise measured elsewhere, a chance this low
# or lower is below this (F test of the two variances). One honest candidate in a thousand that reaches a
# second run is wrongly flagged; a hard-coded seed on a GPU (runs equal up to rounding) is caught.
TOO_CLOSE_P = 1e-3


@dataclass(frozen=True)
class NoiseEvidence:
    """Pooled evidence of seed noise: ``tau = sqrt(ss / dof)``."""

    ss: float = 0.0            # sum of squares of fold scores about their group-and-fold means
    dof: int = 0               # sum over groups and folds of (runs on that fold - 1)
    groups: tuple[str, ...] = ()      # the groups that contributed, by label
    rejected: tuple[str, ...] = ()    # groups left out, each a sentence saying why

    @property
    def tau(self) -> float:
        """Std of one fold's score between seeds (NaN without evidence)."""
        return math.sqrt(self.ss / self.dof) if self.dof > 0 else math.nan

    def plus(self, other: "NoiseEvidence") -> "NoiseEvidence":
        return NoiseEvidence(self.ss + other.ss, self.dof + other.dof, self.groups + other.groups,
                             self.rejected + other.rejected)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(groups=list(self.groups), rejected=list(self.rejected), tau=_finite(self.tau))
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "NoiseEvidence":
        return cls(float(data.get("ss", 0.0)), int(data.get("dof", 0)), tuple(data.get("groups", ())),
                   tuple(data.get("rejected", ())))


NO_EVIDENCE = NoiseEvidence()


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _clean(runs: Runs, what: str) -> list[list[float | None]]:
    """Runs as lists of float or None (not run yet); non-numbers are an error; NaN stays NaN."""
    out = []
    for r in runs:
        row = []
        for v in r:
            if v is None:
                row.append(None)
                continue
            if isinstance(v, bool):
                raise ValueError(f"{what}: fold values must be numbers or None, got {v!r}")
            try:
                row.append(float(v))
            except (TypeError, ValueError):
                raise ValueError(f"{what}: fold values must be numbers or None, got {v!r}") from None
        out.append(row)
    return out


def valid_runs(runs: Runs, what: str = "runs") -> list[list[float | None]]:
    """The runs without a crashed fold (NaN or inf): a failed run measures nothing about the noise."""
    return [r for r in _clean(runs, what) if all(v is None or math.isfinite(v) for v in r)]


def group_ss(runs: Runs) -> tuple[float, int]:
    """(sum of squares about the fold means, degrees of freedom) of one group of runs of the same code."""
    ss, dof = 0.0, 0
    clean = valid_runs(runs)
    width = max((len(r) for r in clean), default=0)
    for f in range(width):
        vals = [r[f] for r in clean if f < len(r) and r[f] is not None]
        if len(vals) > 1:
            mean = math.fsum(vals) / len(vals)
            ss += math.fsum((v - mean) ** 2 for v in vals)
            dof += len(vals) - 1
    return ss, dof


def ignores_seed(runs: Runs, digests: Sequence[Sequence[str | None]] | None = None, *,
                 noise: NoiseEvidence | None = None) -> str | None:
    """Whether runs of one code under *different* seeds show that the code ignores its seed: the evidence as
    a sentence, or None.

    - Two runs agree bit for bit on every fold both have run (at least one): the same score, or the same
      ``digests`` (per run, per fold: a digest of the files that fold run wrote that the scorer reads, None when
      unknown or empty). Digests only add evidence: different digests never clear two equal scores (a
      ``facts.json`` with timings differs between any two runs, whatever the seed).
    - Or, with ``noise`` measured on other code, the group's own spread is so far below it that an honest
      code with that noise would show it less than once in 1/``TOO_CLOSE_P`` times: a fixed seed on
      hardware that rounds differently from run to run.
    """
    clean = _clean(runs, "runs")
    valid = [i for i, r in enumerate(clean) if all(v is None or math.isfinite(v) for v in r)]
    for a in range(len(valid)):
        for b in range(a + 1, len(valid)):
            i, j = valid[a], valid[b]
            common = [f for f in range(min(len(clean[i]), len(clean[j])))
                      if clean[i][f] is not None and clean[j][f] is not None]
            if common and all(_same(clean, digests, i, j, f) for f in common):
                how = "scores" if all(clean[i][f] == clean[j][f] for f in common) else "outputs"
                return (f"runs {i + 1} and {j + 1}, under different seeds, have the same {how} bit for bit on "
                        f"{'every fold' if len(common) > 1 else 'fold ' + str(common[0])} "
                        f"({', '.join(f'{clean[i][f]:.6g}' for f in common)})")
    if noise is not None and noise.dof > 0 and noise.ss > 0:
        ss, dof = group_ss(runs)
        if dof > 0:
            ratio = (ss / dof) / (noise.ss / noise.dof)
            p = f_cdf(ratio, dof, noise.dof)
            if p < TOO_CLOSE_P:
                return (f"its runs under different seeds agree within {math.sqrt(ratio):.2g} of the seed noise "
                        f"measured elsewhere (chance {p:.1e} for a code that uses its seed)")
    return None


def seed_error(runs: Runs, digests: Sequence[Sequence[str | None]] | None = None, *, script: str = "train.py",
               what: str = "the baseline") -> str | None:
    """The message for a baseline (or any champion) whose repeats show that it ignores its seed, or None.
    The caller raises it as the user's error: its noise cannot be measured, so nothing could be kept."""
    found = ignores_seed(runs, digests)
    if found is None:
        return None
    return (f"{script} ignores AUTORESEARCH_SEED: {what}'s {found}, so its seed noise cannot be measured and no "
            f"change could ever be told from a lucky draw. Seed every random draw from the variable "
            f"(e.g. torch.manual_seed(int(os.environ['AUTORESEARCH_SEED']))) and run again.")


def _digest(digests, run: int, fold: int) -> str | None:
    try:
        return digests[run][fold] or None
    except (IndexError, TypeError):
        return None


def _same(clean, digests, i: int, j: int, f: int) -> bool:
    if clean[i][f] == clean[j][f]:
        return True
    a, b = (_digest(digests, i, f), _digest(digests, j, f)) if digests is not None else (None, None)
    return a is not None and a == b


def noise_evidence(groups: Mapping[str, Runs] | Iterable[tuple[str, Runs]],
                   digests: Mapping[str, Sequence[Sequence[str | None]]] | None = None) -> NoiseEvidence:
    """Pool the seed noise of groups of runs, each group the runs of one code under different seeds.

    ``groups``: label -> runs (per run, per fold; failed runs are left out, partial runs count on the folds
    they have). A group found ignoring its seed (``ignores_seed``, checked against the other groups' pooled
    noise too) is rejected with a sentence in ``rejected``; a group with one run adds nothing.
    """
    items = list(groups.items()) if isinstance(groups, Mapping) else list(groups)
    digests = digests or {}
    rejected = {label: found for label, runs in items if (found := ignores_seed(runs, digests.get(label)))}
    parts = {label: group_ss(runs) for label, runs in items if label not in rejected}
    total_ss = sum(ss for ss, _ in parts.values())
    total_dof = sum(d for _, d in parts.values())
    for label, runs in items:     # then each group's spread against the others' (equal runs already out)
        if label in parts:
            ss, dof = parts[label]
            if found := ignores_seed(runs, noise=NoiseEvidence(total_ss - ss, total_dof - dof)):
                rejected[label] = found
    out = NO_EVIDENCE
    for label, _ in items:
        if label in rejected:
            out = out.plus(NoiseEvidence(rejected=(f"{label}: {rejected[label]}",)))
        elif parts[label][1] > 0:
            out = out.plus(NoiseEvidence(*parts[label], (label,)))
    return out


# ---------------------------------------------------------------- distributions (integer degrees of freedom)

def t_cdf(t: float, dof: int) -> float:
    """Student's t distribution function for integer ``dof`` >= 1, exact (Abramowitz & Stegun 26.7.3-4)."""
    if dof < 1:
        raise ValueError("dof must be at least 1")
    if dof > 2000:
        return 0.5 * math.erfc(-t / math.sqrt(2))
    theta = math.atan(abs(t) / math.sqrt(dof))
    c, s = math.cos(theta), math.sin(theta)
    if dof % 2:
        term, acc = c, c if dof > 1 else 0.0
        for k in range(3, dof - 1, 2):
            term *= c * c * (k - 1) / k
            acc += term
        a = 2 / math.pi * (theta + s * acc) if dof > 1 else 2 * theta / math.pi
    else:
        term = acc = 1.0
        for k in range(2, dof - 1, 2):
            term *= c * c * (k - 1) / k
            acc += term
        a = s * acc
    return 0.5 + 0.5 * a if t >= 0 else 0.5 - 0.5 * a


@lru_cache(maxsize=4096)
def t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t with integer ``dof`` (bisection on ``t_cdf``; 1e-10)."""
    if not 0 < p < 1:
        raise ValueError("p must be in (0, 1)")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1 - p, dof)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, dof) < p:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, dof) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10:
            break
    return (lo + hi) / 2


def f_cdf(x: float, d1: int, d2: int) -> float:
    """P(F <= x) for Fisher's F(d1, d2): the regularized incomplete beta I_y(d1/2, d2/2), y = d1 x/(d1 x + d2),
    by its power series (accurate for the small values the seed check asks about; 1 beyond y = 0.9)."""
    if x <= 0:
        return 0.0
    y = d1 * x / (d1 * x + d2)
    if y > 0.9:
        return 1.0
    a, b = d1 / 2, d2 / 2
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    log_front = a * math.log(y) + b * math.log1p(-y) - math.log(a) - log_beta
    # I_y(a, b) = y^a (1-y)^b / (a B(a, b)) * sum_{n>=0} (a+b)_n / (a+1)_n y^n   (a hypergeometric series)
    term, acc = 1.0, 1.0
    for n in range(2000):
        term *= (a + b + n) / (a + 1 + n) * y
        acc += term
        if term < 1e-16 * acc:
            break
    return min(1.0, math.exp(log_front) * acc)


__all__ = ["NoiseEvidence", "NO_EVIDENCE", "noise_evidence", "ignores_seed", "seed_error", "group_ss", "valid_runs",
           "t_cdf", "t_quantile", "f_cdf", "TOO_CLOSE_P"]
