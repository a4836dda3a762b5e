"""The sequential rule: one statistical model for the whole experiment, fold by fold and run by run.

The model: a fold run's score is ``code effect + fold effect + seed noise``, the noise independent between fold
runs with standard deviation ``tau`` (``loop.noise``). The candidate is compared with the champion on the same
folds, so fold effects cancel: on each fold seen, the gain is ``Direction.gain(candidate's mean, champion's
mean)``, and the experiment's gain ``G`` is their average over the J folds seen, with

    sd(G) = tau * sqrt(sum over folds of (1/n_candidate_f + 1/n_champion_f)) / J

where n counts the runs on that fold. ``tau`` is pooled from every run of the same code under different seeds
(the baseline's repeats, the champions' runs: ``Evidence.noise``) and the candidate's own runs, with ``dof``
degrees of freedom. The test statistic is ``z = (G - min_delta) / sd(G)``; every boundary ``b`` below is
stated as if the noise were known and applied as the same tail probability of Student's t with ``dof``
degrees of freedom (``t_dof(Phi(b))``), so a thin estimate of the noise widens every boundary.

After a run n of at most ``max_runs`` (``after_run``):

    keep      z >= k, with n >= 2 runs whose seeds were honoured, and evidence of noise from code other than
              the candidate (``Evidence.noise``: at least MIN_DOF degrees of freedom, a spread above zero)
    discard   z <  c_n,  c_n = k * (n - 1) / (max_runs - 1): the band for another run narrows to nothing
    more      otherwise: one more run of the candidate with a fresh seed (at n = max_runs: discard); or, when
              only the evidence from other code is missing, one more run of the champion

After a fold that leaves folds of the run still to run (``after_fold``): stop when ``z < c_n - stop_margin``
(clearly not better, on the folds seen so far), else go on.

Never kept, whatever the numbers: a candidate with a crashed fold (NaN or inf); one whose runs under
different seeds agree bit for bit, or far more closely than the noise allows (``noise.ignores_seed``: its gain
cannot be told from a lucky draw); one whose change touches only seeds and comments (``seed_only``). A
champion found ignoring its seed counts as one run, not as several that agree.

Pure: numbers in, a ``Verdict`` out (an action, one sentence a researcher can read, and the numbers behind
it for the decision record). ``benchmarks/decision_sim.py`` measures its error rates and cost.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Sequence

from autoresearch.config import DecisionSection
from autoresearch.loop.noise import NoiseEvidence, group_ss, ignores_seed, t_quantile, valid_runs
from autoresearch.vocab import Direction, Status

MIN_DOF = 2   # never keep on a noise estimate with fewer degrees of freedom (one is a coin's worth of spread)
SEED_ONLY_REASON = "only a random seed / comments changed"
_PHI = NormalDist()


class Action(enum.StrEnum):
    CONTINUE = "continue"   # after a fold: run the next fold
    STOP = "stop"           # after a fold: clearly not better; the run's later folds are not run (a discard)
    KEEP = Status.KEEP.value          # after a run: the new champion
    DISCARD = Status.DISCARD.value    # after a run: not better beyond the noise, or not trustworthy
    MORE = "more"           # after a run: still uncertain; run once more with a fresh seed (``Verdict.more``)


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str                                 # one sentence for the record, the brief and the dashboard
    numbers: dict = field(default_factory=dict)
    more: str | None = None                     # with MORE: "candidate" or "champion", the code to run again


    @property
    def kept(self) -> bool:
        return self.action is Action.KEEP

    @property
    def final(self) -> bool:
        """The experiment is decided (no further fold or run)."""
        return self.action in (Action.KEEP, Action.DISCARD, Action.STOP)

    def to_dict(self) -> dict:
        out = {"status": str(self.action), "reason": self.reason, "numbers": self.numbers}
        if self.more:
            out["more"] = self.more
        return out


@dataclass(frozen=True)
class Evidence:
    """Everything a verdict rests on. Runs are per run, per fold (fold order); a fold not run yet is None.

    ``candidate_runs``: the candidate's runs under different seeds, in order; the last may be partial.
    ``champion_runs``: the champion's runs on the same folds (its own run, its extra runs, noise-floor runs).
    ``noise``: ``noise.noise_evidence`` over the runs of other code (the baseline's repeats, every champion's
    runs, the current champion's included); the candidate's own runs are pooled in here, not by the caller.
    ``digests``: the candidate's, per run, per fold (a digest of the fold run's output files; None unknown).
    ``seed_only``: the syntactic filter (``decide.is_seed_only``) found a change of seeds or comments only.
    """

    candidate_runs: Sequence[Sequence[float | None]]
    champion_runs: Sequence[Sequence[float | None]]
    noise: NoiseEvidence
    direction: Direction | str
    settings: DecisionSection
    digests: Sequence[Sequence[str | None]] | None = None
    seed_only: bool = False


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _z_to_t(z: float, dof: int) -> float:
    """A boundary stated for known noise, as the same tail probability of Student's t with ``dof``."""
    return t_quantile(_PHI.cdf(z), dof) if dof >= 1 else math.nan


def discard_boundary(n: int, settings: DecisionSection) -> float:
    """``c_n``: after run n, a z below this discards; it closes linearly from 0 to ``k`` at ``max_runs``."""
    cap = max(2, settings.max_runs)
    return settings.k * (min(n, cap) - 1) / (cap - 1)


class _State:
    """The numbers of one look at the evidence (shared by ``after_fold`` and ``after_run``)."""

    def __init__(self, e: Evidence, stage: str) -> None:
        s = e.settings
        if s.rule != "sequential":
            raise ValueError(f"after_fold/after_run implement rule = \"sequential\", not {s.rule!r}; "
                             "the noise and greedy rules are decide.decide and decide.decide_confirmed")
        self.direction = Direction.parse(e.direction)
        cand = [list(r) for r in e.candidate_runs]
        if not cand:
            raise ValueError("the candidate has no run")
        champ_all = valid_runs(e.champion_runs, "champion runs")
        widths = {len(r) for r in champ_all}
        if len(widths) > 1:
            raise ValueError(f"the champion's runs have different fold counts: {sorted(widths)}")
        width = widths.pop() if widths else max(len(r) for r in cand)
        if any(len(r) != width for r in cand[:-1]) or len(cand[-1]) > width:
            raise ValueError(f"the candidate's runs have {[len(r) for r in cand]} folds but the champion's {width} "
                             "(only the last run may be partial)")
        self.cand = [[(None if v is None else float(v)) for v in r] + [None] * (width - len(r)) for r in cand]
        self.k_folds = width
        self.complete = sum(all(v is not None for v in r) for r in self.cand)
        done = sum(v is not None for r in self.cand for v in r)
        self.n = len(self.cand)
        self.numbers: dict = {"rule": "sequential", "stage": stage, "direction": str(self.direction),
                              "n_folds": width, "candidate_runs": round(done / width, 4) if width else 0,
                              "max_runs": s.max_runs, "k": s.k, "min_delta": s.min_delta}
        self.crashed = [(i + 1, f) for i, r in enumerate(self.cand) for f, v in enumerate(r)
                        if v is not None and not math.isfinite(v)]
        # the champion: a champion that ignores its seed is one run, however many times it ran
        self.champion_note = ignores_seed(champ_all, noise=e.noise) if len(champ_all) > 1 else None
        champ = champ_all[:1] if self.champion_note else champ_all
        self.champ = [r + [None] * (width - len(r)) for r in champ]
        self.numbers["champion_runs"] = len(self.champ)
        if self.champion_note:
            self.numbers["champion_ignores_seed"] = self.champion_note
        # the candidate's own evidence of noise, and whether it honours its seed
        self.seed_note = None if self.crashed else ignores_seed(self.cand, e.digests, noise=e.noise)
        own_ss, own_dof = (0.0, 0) if (self.crashed or self.seed_note) else group_ss(self.cand)
        noise = e.noise.plus(NoiseEvidence(own_ss, own_dof, ("candidate",) if own_dof else ()))
        self.noise = noise
        self.tau, self.dof = noise.tau, noise.dof
        self.external_dof = e.noise.dof
        self.numbers.update(tau=_finite(self.tau), dof=self.dof, external_dof=e.noise.dof,
                            noise_groups=len(noise.groups),
                            noise_rejected=list(noise.rejected))
        if self.seed_note:
            self.numbers["seed_ignored"] = self.seed_note
        self._compare(s)

    def _compare(self, s: DecisionSection) -> None:
        seen, gains, inv = [], [], 0.0
        for f in range(self.k_folds):
            c = [r[f] for r in self.cand if r[f] is not None and math.isfinite(r[f])]
            h = [r[f] for r in self.champ if r[f] is not None]
            if c and h:
                seen.append(f)
                gains.append(self.direction.gain(math.fsum(c) / len(c), math.fsum(h) / len(h)))
                inv += 1 / len(c) + 1 / len(h)
        self.folds_seen = seen
        self.gain = math.fsum(gains) / len(gains) if gains else math.nan
        self.sd = self.tau * math.sqrt(inv) / len(seen) if seen and math.isfinite(self.tau) else math.nan
        self.z = (self.gain - s.min_delta) / self.sd if self.sd > 0 else math.nan
        cm = [v for r in self.cand for f, v in enumerate(r) if f in seen and v is not None]
        hm = [v for r in self.champ for f, v in enumerate(r) if f in seen and v is not None]
        self.numbers.update(folds_seen=[f for f in seen], paired_differences=[round(g, 10) for g in gains],
                            candidate_mean=_finite(math.fsum(cm) / len(cm)) if cm else None,
                            champion_mean=_finite(math.fsum(hm) / len(hm)) if hm else None,
                            gain=_finite(self.gain), improvement=_finite(self.gain), sigma_d=_finite(self.sd),
                            z=_finite(self.z))

    def boundary(self, name: str, z: float) -> float:
        """Record a boundary in z (as stated), in t (as applied) and in metric units of the gain."""
        t = _z_to_t(z, self.dof)
        self.numbers[f"{name}_z"] = z
        self.numbers[f"{name}_t"] = _finite(t)
        at = self.numbers[f"{name}_at"] = _finite(self.numbers["min_delta"] + t * self.sd) \
            if math.isfinite(self.sd) else None
        if name == Action.KEEP:
            self.numbers["threshold"] = at
        return t

    def versus(self) -> str:
        last = sum(v is not None for v in self.cand[-1])
        whole = self.complete
        runs_s = f"{whole} run{'s' * (whole != 1)}" if whole else ""
        if last < self.k_folds:
            part = f"{last} of {self.k_folds} folds of run {self.n}"
            runs_s = f"{runs_s} and {part}" if runs_s else part
        better = "better" if self.gain >= 0 else "worse"
        m = len(self.champ)
        return (f"{better} by {_fmt(abs(self.gain))}, z = {_fmt(self.z)} sd ({runs_s} against the champion's {m} "
                f"run{'s' * (m != 1)}; seed noise {_fmt(self.tau)} per fold run, {self.dof} dof)")


def _finite(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def _common(e: Evidence, st: _State) -> Verdict | None:
    """Verdicts that no number can change: a seed-only change, a crashed fold, a seed that is ignored."""
    if e.seed_only:
        return Verdict(Action.DISCARD, f"discarded: {SEED_ONLY_REASON}", {**st.numbers, "seed_only": True})
    if st.crashed:
        where = ", ".join(f"fold {f} of run {r}" for r, f in st.crashed)
        return Verdict(Action.DISCARD, f"discarded: {where} crashed (no valid score); a failed run is never kept",
                       {**st.numbers, "crashed": [[r, f] for r, f in st.crashed]})
    if st.seed_note:
        return Verdict(Action.DISCARD, "never kept: it ignores the seed the tool passes (AUTORESEARCH_SEED), so "
                       f"its gain cannot be told from a lucky draw: {st.seed_note}", st.numbers)
    return None


def after_fold(e: Evidence) -> Verdict:
    """After a fold of the candidate's current (last) run: ``STOP`` (clearly not better: the run's later folds
    are not run, the candidate is discarded) or ``CONTINUE``."""
    n = len(e.candidate_runs)
    st = _State(e, f"after {sum(v is not None for v in e.candidate_runs[-1])} fold(s) of run {n}")
    common = _common(e, st)
    if common is not None:
        return Verdict(Action.STOP, common.reason.replace("discarded:", "stopped:", 1), common.numbers)
    if not st.champ:
        return Verdict(Action.CONTINUE, "the champion has no valid run to compare with: go on", st.numbers)
    if not math.isfinite(st.z):
        return Verdict(Action.CONTINUE, "no measured noise yet to judge a part of a run by: go on", st.numbers)
    stop_z = discard_boundary(n, e.settings) - e.settings.stop_margin
    stop_t = st.boundary("stop", stop_z)
    st.boundary(Action.KEEP, e.settings.k)
    if st.z < stop_t:
        return Verdict(Action.STOP, f"stopped after {st.numbers['stage'].removeprefix('after ')}: clearly not "
                       f"better, {st.versus()}, below the stop boundary {_fmt(stop_t)} sd", st.numbers)
    return Verdict(Action.CONTINUE, f"go on: {st.versus()}, above the stop boundary {_fmt(stop_t)} sd",
                   st.numbers)


def after_run(e: Evidence) -> Verdict:
    """After the candidate's last run has all its folds: ``KEEP``, ``DISCARD`` or ``MORE`` (run it once more
    with a fresh seed; never beyond ``max_runs``)."""
    n = len(e.candidate_runs)
    s = e.settings
    st = _State(e, f"after run {n}")
    if any(v is None for v in st.cand[-1]):
        raise ValueError("after_run needs the last run complete (use after_fold while folds are missing)")
    common = _common(e, st)
    if common is not None:
        return common
    can_more = n < s.max_runs
    more = f"one more run with a fresh seed (run {n + 1} of at most {s.max_runs})"
    if not st.champ:
        if n >= 2:
            return Verdict(Action.KEEP, "kept: the champion has no valid run, and the candidate ran twice with "
                           "its seed honoured", st.numbers)
        return Verdict(Action.MORE, f"the champion has no valid run; {more}, to check the seed", st.numbers,
                       more="candidate")
    c_n = discard_boundary(n, s)
    keep_t = st.boundary(Action.KEEP, s.k)
    if not math.isfinite(st.z):
        why = ("no evidence of the seed noise yet" if st.dof == 0 else
               f"the runs of the same code measured no spread at all ({st.dof} dof)")
        if can_more:
            return Verdict(Action.MORE, f"{why}: {more}", st.numbers, more="candidate")
        return Verdict(Action.DISCARD, f"discarded: {why} after {n} runs, and a keep needs it", st.numbers)
    discard_t = st.boundary(Action.DISCARD, c_n)
    lo, hi = st.gain - keep_t * st.sd, st.gain + keep_t * st.sd
    st.numbers["interval"] = [_finite(lo), _finite(hi)]
    if st.z < discard_t:
        if st.gain <= s.min_delta:
            why = "not better"
        elif can_more:
            why = "better, but not by enough to earn another run"
        else:
            why = f"better, but short of the keep boundary after {n} runs, the most allowed"
        return Verdict(Action.DISCARD, f"discarded: {why}: {st.versus()}, below the discard boundary "
                       f"{_fmt(discard_t)} sd after run {n}", st.numbers)
    if st.z >= keep_t and n >= 2:
        if st.external_dof < MIN_DOF or e.noise.ss <= 0:   # the candidate cannot vouch for its own noise
            if st.champion_note or len(st.champ) >= max(3, s.max_runs):
                return Verdict(Action.DISCARD, "discarded: a keep needs evidence of the noise from other code than "
                               f"the candidate's own runs ({st.external_dof} dof, at least {MIN_DOF}), and the "
                               f"champion's runs give none ({st.champion_note or f'{len(st.champ)} runs'})",
                               st.numbers)
            return Verdict(Action.MORE, f"run the champion once more with a fresh seed: the candidate looks "
                           f"better ({st.versus()}), but a keep needs evidence of the noise from other code than "
                           f"the candidate's own runs ({st.external_dof} dof, at least {MIN_DOF})",
                           st.numbers, more="champion")
        return Verdict(Action.KEEP, f"kept: {st.versus()}, beyond the keep boundary {_fmt(keep_t)} sd",
                       st.numbers)
    wait = ("a keep needs a second run under another seed" if n < 2 else
            f"between the discard boundary {_fmt(discard_t)} and the keep boundary {_fmt(keep_t)} sd")
    if can_more:
        return Verdict(Action.MORE, f"{more}: {st.versus()}; {wait}", st.numbers, more="candidate")
    return Verdict(Action.DISCARD, f"discarded after {n} runs, the most allowed: {st.versus()}; {wait}",
                   st.numbers)


__all__ = ["Action", "Verdict", "Evidence", "after_fold", "after_run", "discard_boundary", "MIN_DOF",
           "SEED_ONLY_REASON"]
