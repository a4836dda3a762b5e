"""Simulate the keep/discard rules on synthetic research nights with known true effects.

    python benchmarks/decision_sim.py [--trajectories 200] [--experiments 30] [--seed 0] [--quick]

Each trajectory is one overnight loop on a minimised metric: a baseline, then a sequence of experiments,
each a change with a true effect delta (positive = better):
  35% exactly 0 (seed/cosmetic changes), 15% harmful (-delta log-uniform in [0.5, 64]),
  50% real improvements (delta log-uniform in [0.25, 64]); the eCLIP loop's deltas spanned 1 to 113.
A run on fold f measures  true + fold_offset[f] + N(0, (sigma*sqrt(K))^2)  independently per fold run, so the
mean over K = 3 folds has seed noise sigma (the noise level) and the fold offsets (sd 3) cancel in fold-paired
comparisons. A kept change becomes the champion (its true value and its measured runs), so a lucky champion
measurement makes later comparisons harder, as in a real loop.

On top of those, 5% of the experiments are candidates that ignore their seed: a pure seed effect (true delta 0)
whose code hard-codes the best of 20 seeds found beforehand (the draw with the best fold mean), so every run
repeats that lucky draw; half of them bit for bit, half within 1e-4 of the noise (a GPU's rounding).

Rules compared, all with the real ``autoresearch.loop`` code:
- greedy: Karpathy's rule, one run each, keep iff the mean is strictly better.
- noise, no floor: today's noise rule as the default night ran it (no `autoresearch baseline --repeats`):
  the spread of the fold-paired differences, one confirmation run.
- noise, floor R=3: the same rule with a noise floor from 3 baseline runs (the old table's setting).
- sequential: ``loop.sequential`` (after_fold after each fold but the last of a run, after_run after each
  run), the noise gathered as the loop gathers it: the baseline run R times, every champion's runs and the
  candidate's own runs pooled (``loop.noise.noise_evidence``). No oracle sigma anywhere.

Columns: false-keep = kept although delta <= 0 (seed-ignoring candidates apart); revert >=3s = discarded
although delta >= 3 sigma; (3-4s) the same for 3 <= delta/sigma < 4; small keep = kept among 0 < delta <
3 sigma; fixed-seed kept = seed-ignoring candidates kept; runs/exp = candidate runs per experiment, a run
stopped after j of K folds counted j/K; +base = the baseline's extra runs (R - 1) spread over the night's
experiments; gain/exp = true improvement accumulated per experiment (harmful keeps subtract).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, replace

import numpy as np

from autoresearch.config import DecisionSection
from autoresearch.loop.decide import decide, decide_confirmed, noise_floor
from autoresearch.loop.noise import noise_evidence
from autoresearch.loop.sequential import Action, Evidence, after_fold, after_run

K_FOLDS = 3
FOLD_SD = 3.0
BASELINE = 1000.0  # true metric of the baseline (a mean rank, say)
REAL_SIZE = 3.0  # reverts are counted for true effects >= REAL_SIZE * sigma
FIXED_SEED_SHARE = 0.05
LUCKY_OF = 20
GOALS = {"false_keep": 0.02, "real_revert": 0.02, "near_revert": 0.15}


@dataclass
class Tally:
    null: int = 0
    null_kept: int = 0
    real: int = 0
    real_reverted: int = 0
    near: int = 0
    near_reverted: int = 0
    small: int = 0
    small_kept: int = 0
    fixed: int = 0
    fixed_kept: int = 0
    experiments: int = 0
    candidate_runs: float = 0.0
    base_runs: int = 0
    gain: float = 0.0

    def row(self) -> dict:
        exps = max(self.experiments, 1)
        return {"false_keep": self.null_kept / max(self.null, 1),
                "real_revert": self.real_reverted / max(self.real, 1),
                "near_revert": self.near_reverted / max(self.near, 1),
                "small_keep": self.small_kept / max(self.small, 1),
                "fixed_kept": self.fixed_kept, "fixed": self.fixed,
                "runs_per_exp": self.candidate_runs / exps, "base_per_exp": self.base_runs / exps,
                "gain_per_exp": self.gain / exps}

    def count(self, delta: float, kept: bool, sigma: float, fixed: bool) -> None:
        self.experiments += 1
        if fixed:
            self.fixed += 1
            self.fixed_kept += kept
        elif delta <= 0:
            self.null += 1
            self.null_kept += kept
        elif delta >= REAL_SIZE * sigma:
            self.real += 1
            self.real_reverted += not kept
            if delta < (REAL_SIZE + 1) * sigma:
                self.near += 1
                self.near_reverted += not kept
        else:
            self.small += 1
            self.small_kept += kept
        if kept:
            self.gain += delta


def draw_effect(rng: np.random.Generator) -> float:
    u = rng.random()
    if u < 0.35:
        return 0.0
    if u < 0.50:
        return -float(np.exp(rng.uniform(np.log(0.5), np.log(64.0))))
    return float(np.exp(rng.uniform(np.log(0.25), np.log(64.0))))


class Night:
    """One trajectory's world: the fold offsets, and runs of code with a true value."""

    def __init__(self, rng: np.random.Generator, sigma: float) -> None:
        self.rng, self.seed_sd = rng, sigma * math.sqrt(K_FOLDS)
        self.folds = rng.normal(0.0, FOLD_SD, K_FOLDS)

    def run(self, true_value: float) -> list[float]:
        return (true_value + self.folds + self.rng.normal(0.0, self.seed_sd, K_FOLDS)).tolist()

    def lucky(self, true_value: float) -> tuple[np.ndarray, bool]:
        """A hard-coded seed: the best fold mean of ``LUCKY_OF`` seeds, repeated by every run (bit for bit, or
        within a GPU's rounding)."""
        draws = self.rng.normal(0.0, self.seed_sd, (LUCKY_OF, K_FOLDS))
        best = draws[np.argmin(draws.mean(axis=1))]
        return true_value + self.folds + best, bool(self.rng.random() < 0.5)

    def fixed_run(self, lucky: tuple[np.ndarray, bool]) -> list[float]:
        values, exact = lucky
        return values.tolist() if exact else (values + self.rng.normal(0, 1e-4 * self.seed_sd, K_FOLDS)).tolist()


def simulate_old(settings: DecisionSection, sigma: float, *, trajectories: int, experiments: int, repeats: int,
                 seed: int) -> Tally:
    """greedy and noise: one run, a confirmation run when asked (``decide``, ``decide_confirmed``)."""
    rng = np.random.default_rng(seed)
    tally = Tally()
    greedy = settings.rule == "greedy"
    for _ in range(trajectories):
        night = Night(rng, sigma)
        truth = BASELINE
        champion_runs = [night.run(truth) for _ in range(max(1, repeats))]
        tally.base_runs += max(1, repeats) - 1
        noise = noise_floor(champion_runs) if repeats >= 2 and not greedy else None
        for _ in range(experiments):
            fixed = rng.random() < FIXED_SEED_SHARE
            delta = 0.0 if fixed else draw_effect(rng)
            cand_truth = truth - delta
            lucky = night.lucky(cand_truth) if fixed else None
            draw = (lambda: night.fixed_run(lucky)) if fixed else (lambda: night.run(cand_truth))
            cand_runs = [draw()]
            d = decide(cand_runs[0], champion_runs, direction="minimize", settings=settings, noise=noise)
            if d.status == "confirm":
                cand_runs += [draw() for _ in range(settings.confirm_repeats)]
                d = decide_confirmed(cand_runs, champion_runs, direction="minimize", settings=settings, noise=noise)
            tally.candidate_runs += len(cand_runs)
            kept = d.status == "keep"
            tally.count(delta, kept, sigma, fixed)
            if kept:
                truth, champion_runs = cand_truth, cand_runs
    return tally


def sequential_experiment(draw, champion, lineage: dict, settings) -> tuple[bool, float, list]:
    """One candidate through the sequential rule: (kept, runs spent with partial runs as fractions, its runs).
    ``champion``: (label in ``lineage``, a function drawing one more champion run) for MORE of the champion."""
    label, champion_draw = champion
    noise = noise_evidence(lineage)
    runs: list[list[float]] = []
    spent = 0.0
    while True:
        values = draw()
        for j in range(K_FOLDS - 1):
            partial = values[:j + 1] + [None] * (K_FOLDS - j - 1)
            v = after_fold(Evidence(runs + [partial], lineage[label], noise, "minimize", settings))
            if v.action is Action.STOP:
                return False, spent + (j + 1) / K_FOLDS, runs
        spent += 1
        runs.append(values)
        v = after_run(Evidence(runs, lineage[label], noise, "minimize", settings))
        while v.action is Action.MORE and v.more == "champion":
            lineage[label] = lineage[label] + [champion_draw()]
            spent += 1
            noise = noise_evidence(lineage)
            v = after_run(Evidence(runs, lineage[label], noise, "minimize", settings))
        if v.action is not Action.MORE:
            return v.action is Action.KEEP, spent, runs


def simulate_sequential(settings: DecisionSection, sigma: float, *, trajectories: int, experiments: int,
                        seed: int) -> Tally:
    rng = np.random.default_rng(seed)
    tally = Tally()
    for _ in range(trajectories):
        night = Night(rng, sigma)
        truth = BASELINE
        repeats = settings.baseline_repeats
        tally.base_runs += repeats - 1
        label = "baseline"
        lineage = {label: [night.run(truth) for _ in range(repeats)]}
        for i in range(experiments):
            fixed = rng.random() < FIXED_SEED_SHARE
            delta = 0.0 if fixed else draw_effect(rng)
            cand_truth = truth - delta
            lucky = night.lucky(cand_truth) if fixed else None
            draw = (lambda: night.fixed_run(lucky)) if fixed else (lambda: night.run(cand_truth))
            kept, spent, runs = sequential_experiment(draw, (label, lambda: night.run(truth)), lineage, settings)
            tally.candidate_runs += spent
            tally.count(delta, kept, sigma, fixed)
            if kept:
                truth, label = cand_truth, f"experiment {i + 1}"
                lineage[label] = runs
    return tally


def simulate(label: str, settings: DecisionSection, sigma: float, args, seed: int, repeats: int = 0) -> Tally:
    if settings.rule == "sequential":
        return simulate_sequential(settings, sigma, trajectories=args.trajectories, experiments=args.experiments,
                                   seed=seed)
    return simulate_old(settings, sigma, trajectories=args.trajectories, experiments=args.experiments,
                        repeats=repeats, seed=seed)


def configs(args) -> list[tuple[str, float, DecisionSection, int]]:
    seq = DecisionSection(rule="sequential")
    old = DecisionSection(rule="noise")
    out = []
    for sigma in (0.5, 1.0, 2.0, 4.0):
        out.append(("greedy", sigma, DecisionSection(rule="greedy"), 1))
        out.append(("noise, no floor", sigma, old, 1))
        out.append(("noise, floor R=3", sigma, old, 3))
        out.append(("sequential (default)", sigma, seq, seq.baseline_repeats))
    if args.quick:
        return out
    for sigma in (1.0, 4.0):
        for v in (dict(max_runs=3), dict(max_runs=6), dict(k=1.75), dict(k=2.25), dict(stop_margin=0.5),
                  dict(stop_margin=2.0), dict(max_runs=3, stop_margin=0.5)):
            s = replace(seq, **v)
            out.append(("sequential", sigma, s, s.baseline_repeats))
    return out


HEAD = (f"{'rule':20} {'sigma':>5} {'R':>2} {'k':>4} {'cap':>3} {'stop':>4} | {'false-keep':>10} {'revert>=3s':>10} "
        f"{'(3-4s)':>7} {'small keep':>10} {'fixed-seed kept':>15} {'runs/exp':>8} {'+base':>5} {'gain/exp':>8} "
        f"{'n(3-4s)':>7}")


def line(label: str, sigma: float, s: DecisionSection, repeats: int, tally: Tally) -> str:
    r = tally.row()
    seq = s.rule == "sequential"
    knobs = [str(repeats), f"{s.k:g}" if s.rule != "greedy" else "-", str(s.max_runs) if seq else "-",
             f"{s.stop_margin:g}" if seq else "-"]
    return (f"{label:20} {sigma:>5g} {knobs[0]:>2} {knobs[1]:>4} {knobs[2]:>3} {knobs[3]:>4} | "
            f"{r['false_keep']:>10.1%} {r['real_revert']:>10.1%} {r['near_revert']:>7.1%} {r['small_keep']:>10.1%} "
            f"{r['fixed_kept']:>9d} of {r['fixed']:<3d} {r['runs_per_exp']:>8.2f} {r['base_per_exp']:>5.2f} "
            f"{r['gain_per_exp']:>8.2f} {tally.near:>7d}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trajectories", type=int, default=400)
    ap.add_argument("--experiments", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="only the four rules at each noise level")
    args = ap.parse_args()
    print(f"{args.trajectories} trajectories x {args.experiments} experiments, K={K_FOLDS} folds; reverts count "
          f"true gains >= {REAL_SIZE:g} sigma; {FIXED_SEED_SHARE:.0%} of experiments hard-code a lucky seed "
          f"(best of {LUCKY_OF})\n")
    print(HEAD)
    print("-" * len(HEAD))
    t0 = time.perf_counter()
    for i, (label, sigma, s, repeats) in enumerate(configs(args)):
        print(line(label, sigma, s, repeats, simulate(label, s, sigma, args, args.seed + i, repeats)), flush=True)
    if not args.quick:
        short = 10
        many = args.trajectories * args.experiments // short
        print(f"\nBaseline repeats R (the sequential rule's first evidence of noise), on the first {short} "
              f"experiments of a night, where it matters most ({many} nights):\n")
        print(HEAD)
        print("-" * len(HEAD))
        for sigma in (1.0, 4.0):
            for repeats in (1, 2, 3, 4, 5):
                s = DecisionSection(rule="sequential", baseline_repeats=repeats)
                tally = simulate_sequential(s, sigma, trajectories=many, experiments=short,
                                            seed=args.seed + 1000 + repeats)
                print(line("sequential", sigma, s, repeats, tally), flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
