"""Keep or discard: the rules that turn per-fold metrics into a decision, with the numbers behind it.

Three rules (``[decision] rule``):

- ``sequential`` (the default): ``loop.sequential``, one statistical model for the whole experiment, judged
  after each fold and each run, with the noise gathered as the loop goes (``loop.noise``). Its API is
  ``sequential.after_fold`` / ``sequential.after_run``; ``decide`` and ``decide_confirmed`` below answer for it
  too, for a caller that runs at most one confirmation run (a MORE becomes ``confirm``, then ``discard``).
- ``greedy``: keep iff the candidate's mean over folds is strictly better (Karpathy's rule). One run
  decides, so a change of random seed alone is kept about half the time.
- ``noise``: the improvement must beat the run-to-run noise. ``sigma`` is the standard deviation of
  the experiment metric (the mean over folds) between seeds, measured by re-running the champion
  (``noise_floor``). The difference of two experiment means then has ``sd = sigma * sqrt(1/m_c + 1/m_h)``
  for m_c candidate runs and m_h champion runs, and

      threshold = max(min_delta, k * sd)
      improvement >  threshold                          -> keep
      threshold - confirm_band * sd < improvement <= threshold, improvement > 0
                                                        -> confirm (re-run the candidate)
      otherwise                                         -> discard

  A confirmed candidate is decided once more by ``decide_confirmed`` on all its runs pooled fold by
  fold: keep iff the pooled improvement beats ``max(min_delta, k * sd)`` with the smaller sd of the
  pooled means. Without a noise floor the sd is estimated from the spread of the fold-paired
  differences (few degrees of freedom; the reason says so). A spread of zero never keeps.
  ``benchmarks/decision_sim.py`` measures the false-keep and false-revert rates of these rules;
  docs/decisions.md has the table.

A failed (NaN) candidate is never kept. ``is_seed_only`` recognises a change of seed or comments only.
"""

from __future__ import annotations

import ast
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from autoresearch.config import DecisionSection
from autoresearch.loop import sequential
from autoresearch.loop.noise import NO_EVIDENCE, NoiseEvidence, noise_evidence
from autoresearch.vocab import Direction, Status

CONFIRM = "confirm"      # the noise rule's close call: re-run the candidate (the lifecycle's "one more run")
STATUSES = (Status.KEEP, Status.DISCARD, CONFIRM)
SEED_ONLY_REASON = sequential.SEED_ONLY_REASON
NO_SPREAD = ("the measured spread is zero, which is no evidence of noise (runs that agree bit for bit "
             "ignore their seed); measure the noise floor: autoresearch baseline --repeats 3")


# ---------------------------------------------------------------- noise floor

@dataclass
class NoiseFloor:
    """Seed noise of the champion, measured from R repeats x K folds."""

    sigma: float            # std of the experiment metric (mean over folds) between seeds
    sigma_fold: float       # std between folds of the per-fold means (systematic; cancels in paired comparisons)
    sigma_seed_fold: float  # std of one run on one fold between seeds (pooled within folds)
    n_repeats: int
    n_folds: int
    metric_at: float        # the champion's mean where the floor was measured
    runs: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "NoiseFloor":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _matrix(runs: Sequence, what: str) -> np.ndarray:
    """A list of per-fold lists (or one per-fold list) as a float array [runs, folds]."""
    if len(runs) and all(isinstance(v, (int, float, np.number)) for v in runs):
        runs = [runs]
    try:
        arr = np.array([[float(v) for v in r] for r in runs], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a list of per-fold lists of numbers, got {runs!r}") from None
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{what} must be non-empty with the same number of folds in every run, got {runs!r}")
    return arr


def noise_floor(runs: list[list[float]]) -> NoiseFloor:
    """Estimate the seed noise from R >= 2 repeats of the same code, each a list of K fold values.

    ``sigma`` is the larger of two estimates of the same quantity: the std of the R run means
    (catches seed effects shared across folds) and the pooled within-fold std / sqrt(K) (has
    K(R-1) degrees of freedom instead of R-1). Runs with a non-finite value are left out.
    """
    x = _matrix(runs, "noise floor runs")
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < 2:
        raise ValueError(f"a noise floor needs at least 2 finite repeats, got {len(x)} of {len(runs)}")
    r, k = x.shape
    sigma_direct = float(x.mean(axis=1).std(ddof=1))
    resid = x - x.mean(axis=0)
    sigma_seed_fold = float(math.sqrt((resid ** 2).sum() / (k * (r - 1))))
    sigma = max(sigma_direct, sigma_seed_fold / math.sqrt(k))
    sigma_fold = float(x.mean(axis=0).std(ddof=1)) if k > 1 else 0.0
    return NoiseFloor(sigma=sigma, sigma_fold=sigma_fold, sigma_seed_fold=sigma_seed_fold,
                      n_repeats=r, n_folds=k, metric_at=float(x.mean()), runs=x.tolist())


def needs_remeasure(noise: NoiseFloor | None, champion_mean: float, settings: DecisionSection) -> bool:
    """Whether the noise floor should be measured (again) at the current champion (the ``noise`` rule).

    With the ``noise`` rule and no floor yet: True. Otherwise True when the champion has moved from
    where the floor was measured by more than ``remeasure_after`` (relative); 0 disables. The sequential
    rule pools every run as it goes and asks for runs itself (``sequential.Verdict.more``).
    """
    if settings.rule != "noise":
        return False
    if noise is None:
        return True
    if settings.remeasure_after <= 0 or not math.isfinite(champion_mean) or not math.isfinite(noise.metric_at):
        return False
    scale = abs(noise.metric_at) or 1.0
    return abs(champion_mean - noise.metric_at) / scale > settings.remeasure_after


# ---------------------------------------------------------------- decisions

@dataclass
class Decision:
    status: str             # Status.KEEP | Status.DISCARD | CONFIRM
    reason: str             # one sentence for the report
    numbers: dict = field(default_factory=dict)

    @property
    def kept(self) -> bool:
        return self.status == Status.KEEP

    def to_dict(self) -> dict:
        return asdict(self)




def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _sd_of_difference(cand: np.ndarray, champ: np.ndarray, direction: Direction,
                      noise: NoiseFloor | None) -> tuple[float, str]:
    """The std of (candidate mean - champion mean) and where it came from."""
    mc, k = cand.shape
    mh = champ.shape[0]
    scale = math.sqrt(1 / mc + 1 / mh)
    if noise is not None:
        sigma = noise.sigma * math.sqrt(noise.n_folds / k)  # floor measured on another fold count
        return sigma * scale, f"noise floor of {noise.n_repeats} repeats"
    replicated = [g for g in (cand, champ) if len(g) > 1]
    if replicated:
        ss = sum(float(((g - g.mean(axis=0)) ** 2).sum()) for g in replicated)
        dof = sum(k * (len(g) - 1) for g in replicated)
        return math.sqrt(ss / dof / k) * scale, "spread of repeated runs (no noise floor yet)"
    if k > 1:
        diffs = [direction.gain(c, h) for c, h in zip(cand.mean(axis=0), champ.mean(axis=0))]
        return float(np.std(diffs, ddof=1)) / math.sqrt(k), \
            f"spread of {k} fold-paired differences (no noise floor yet, a rough estimate)"
    return 0.0, "no noise estimate (no noise floor and a single fold)"


def _prepare(candidate, champion, direction: Direction, seed_only: bool, stage: str):
    """Shared checks; returns (early Decision or None, cand, champ, numbers)."""
    cand = _matrix(candidate, "candidate")
    champ = _matrix(champion, "champion")
    if cand.shape[1] != champ.shape[1]:
        raise ValueError(f"candidate has {cand.shape[1]} folds but champion {champ.shape[1]}")
    numbers: dict = {"stage": stage, "n_folds": int(cand.shape[1]), "candidate_runs": int(len(cand)),
                     "direction": str(direction)}
    if seed_only:
        return Decision(Status.DISCARD, SEED_ONLY_REASON, {**numbers, "seed_only": True}), cand, champ, numbers
    bad = np.flatnonzero(~np.isfinite(cand).all(axis=0))
    if bad.size:
        numbers["failed_folds"] = bad.tolist()
        return Decision(Status.DISCARD, f"the candidate has no valid metric on fold(s) {bad.tolist()}; "
                        "a failed run is never kept", numbers), cand, champ, numbers
    champ = champ[np.isfinite(champ).all(axis=1)]
    numbers["champion_runs"] = int(len(champ))
    numbers["candidate_mean"] = float(cand.mean())
    if not len(champ):
        return Decision(Status.KEEP, "the champion has no valid measurement, so any valid result is better",
                        numbers), cand, champ, numbers
    numbers["champion_mean"] = float(champ.mean())
    numbers["improvement"] = direction.gain(float(cand.mean()), float(champ.mean()))
    numbers["paired_differences"] = [float(direction.gain(c, h))
                                     for c, h in zip(cand.mean(axis=0), champ.mean(axis=0))]
    return None, cand, champ, numbers


def _greedy(numbers: dict) -> Decision:
    gain = numbers["improvement"]
    where = f"mean {_fmt(numbers['candidate_mean'])} vs champion {_fmt(numbers['champion_mean'])}"
    if gain > 0:
        return Decision(Status.KEEP, f"greedy rule: {where}, better by {_fmt(gain)}", numbers)
    return Decision(Status.DISCARD, f"greedy rule: {where}, not strictly better", numbers)


def _threshold(cand, champ, direction: Direction, settings: DecisionSection, noise: NoiseFloor | None,
               numbers: dict) -> tuple[float, float, float, str]:
    """(gain, sd of the difference, threshold, where sd came from); records them in ``numbers``."""
    sd, source = _sd_of_difference(cand, champ, direction, noise)
    threshold = max(settings.min_delta, settings.k * sd)
    numbers.update(sigma_d=sd, sigma_source=source, k=settings.k, min_delta=settings.min_delta,
                   threshold=threshold, sigma=noise.sigma if noise is not None else None)
    return numbers["improvement"], sd, threshold, source


def decide(candidate: Sequence[float], champion: Sequence, *, direction: Direction | str,
           settings: DecisionSection, noise: NoiseFloor | None, seed_only: bool = False) -> Decision:
    """Decide one candidate run (a list of per-fold values) against the champion.

    ``champion`` is one run's per-fold list, or a list of such lists pooled fold by fold.
    """
    direction = Direction.parse(direction)          # the edge: a string from a benchmark or a test
    if settings.rule == "sequential":
        return _sequential([candidate], champion, direction, settings, noise, seed_only, confirmed=False)
    early, cand, champ, numbers = _prepare(candidate, champion, direction, seed_only, "first")
    if early is not None:
        return early
    if settings.rule == "greedy":
        return _greedy(numbers)
    gain, sd, threshold, source = _threshold(cand, champ, direction, settings, noise, numbers)
    if sd <= 0 < settings.k:
        return Decision(Status.DISCARD, f"not kept: {NO_SPREAD}", numbers)
    lower = threshold - settings.confirm_band * sd
    numbers.update(confirm_band=settings.confirm_band, confirm_from=lower, confirm_repeats=settings.confirm_repeats)
    versus = f"improvement {_fmt(gain)} vs threshold {_fmt(threshold)} (k={settings.k:g} x sd {_fmt(sd)}, " \
             f"min_delta {settings.min_delta:g}; {source})"
    if gain > threshold:
        return Decision(Status.KEEP, f"kept: {versus}", numbers)
    if gain > 0 and gain > lower:
        if settings.confirm_repeats > 0:
            return Decision(CONFIRM, f"promising but within the noise, re-running {settings.confirm_repeats}x "
                            f"to confirm: {versus}", numbers)
        return Decision(Status.DISCARD, f"within the noise and confirm_repeats = 0: {versus}", numbers)
    if gain > 0:
        return Decision(Status.DISCARD, f"better, but not beyond the noise: {versus}", numbers)
    return Decision(Status.DISCARD, f"not better: {versus}", numbers)


def decide_confirmed(candidate_runs: Sequence[Sequence[float]], champion_runs: Sequence, *, direction: Direction | str,
                     settings: DecisionSection, noise: NoiseFloor | None, seed_only: bool = False) -> Decision:
    """Final keep/discard after confirmation runs: all candidate runs vs all champion runs, paired by fold.

    Keep iff the pooled improvement exceeds ``max(min_delta, k * sd)``, where sd is the std of the
    difference of the two pooled means (it shrinks as runs are added). Any failed confirmation run
    discards the candidate. Never returns ``CONFIRM``.
    """
    if settings.rule == "sequential":
        return _sequential(candidate_runs, champion_runs, direction, settings, noise, seed_only, confirmed=True)
    direction = Direction.parse(direction)
    early, cand, champ, numbers = _prepare(candidate_runs, champion_runs, direction, seed_only, "confirmed")
    if early is not None:
        return early
    if settings.rule == "greedy":
        return _greedy(numbers)
    gain, sd, threshold, source = _threshold(cand, champ, direction, settings, noise, numbers)
    if sd <= 0 < settings.k:
        return Decision(Status.DISCARD, f"not confirmed: {NO_SPREAD}", numbers)
    numbers["run_means"] = [float(v) for v in cand.mean(axis=1)]
    versus = (f"pooled over {len(cand)} candidate and {len(champ)} champion runs, improvement {_fmt(gain)} "
              f"vs threshold {_fmt(threshold)} (k={settings.k:g} x sd {_fmt(sd)}; {source})")
    if gain > threshold:
        return Decision(Status.KEEP, f"confirmed: {versus}", numbers)
    return Decision(Status.DISCARD, f"not confirmed: {versus}", numbers)


def floor_evidence(noise: NoiseFloor | None, champion_runs: Sequence) -> NoiseEvidence:
    """The evidence of noise a caller of ``decide`` holds: the champion's runs (its noise-floor runs among
    them), and the floor's runs when they were measured on other code."""
    champ = _matrix(champion_runs, "champion").tolist() if len(champion_runs) else []
    groups = {"champion": champ}
    if noise is not None and noise.runs and not all(list(r) in champ for r in noise.runs):
        groups["noise floor"] = noise.runs
    return noise_evidence(groups) if champ or noise is not None else NO_EVIDENCE


def _sequential(candidate_runs, champion_runs, direction, settings, noise, seed_only, *, confirmed: bool) -> Decision:
    """The sequential rule for a caller of ``decide`` (a MORE is ``confirm`` the first time, then a discard)."""
    cand = _matrix(candidate_runs, "candidate").tolist()
    evidence = sequential.Evidence(cand, _matrix(champion_runs, "champion").tolist(),
                                   floor_evidence(noise, champion_runs), direction, settings, seed_only=seed_only)
    verdict = sequential.after_run(evidence)
    if verdict.action is sequential.Action.MORE:
        if not confirmed:
            return Decision(CONFIRM, verdict.reason, verdict.numbers)
        return Decision(Status.DISCARD, f"discarded: still uncertain after {len(cand)} runs, and this loop runs no "
                        f"more: {verdict.reason}", verdict.numbers)
    return Decision(str(verdict.action), verdict.reason, verdict.numbers)


# ---------------------------------------------------------------- seed-only changes

_SEED_MARK = "<seed>"


def _int_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int


def _has_seed(name: str | None) -> bool:
    return name is not None and "SEED" in name.upper()


def _call_name(func: ast.AST) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _normalise(tree: ast.Module) -> ast.Module:
    """Drop docstrings; blank the integer values of SEED constants and of seeding-call arguments."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:]
        if isinstance(node, ast.Call):
            seeding = _has_seed(_call_name(node.func))
            node.args = [ast.Constant(_SEED_MARK) if seeding and _int_literal(a) else a for a in node.args]
            for kw in node.keywords:
                if (seeding or _has_seed(kw.arg)) and _int_literal(kw.value):
                    kw.value = ast.Constant(_SEED_MARK)
    for stmt in tree.body:  # top-level constants only
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) and _has_seed(t.id) for t in stmt.targets) \
                and _int_literal(stmt.value):
            stmt.value = ast.Constant(_SEED_MARK)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and _has_seed(stmt.target.id) \
                and stmt.value is not None and _int_literal(stmt.value):
            stmt.value = ast.Constant(_SEED_MARK)
    return tree


def is_seed_only(old_source: str, new_source: str) -> bool:
    """True when two Python sources differ only in comments, whitespace, docstrings or seeds.

    Seeds are integer literals assigned to top-level names containing SEED (``SEED = 1`` ->
    ``SEED = 7``) or passed to a call whose name contains "seed" (``torch.manual_seed(0)``,
    ``set_seed(seed=3)``). A source that does not parse is never seed-only.
    """
    try:
        old, new = ast.parse(old_source), ast.parse(new_source)
    except (SyntaxError, ValueError):
        return False
    return ast.dump(_normalise(old)) == ast.dump(_normalise(new))
