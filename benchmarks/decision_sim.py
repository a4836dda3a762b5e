"""Simulate the keep/discard rules on synthetic research runs with known true effects.

    python benchmarks/decision_sim.py [--trajectories 200] [--experiments 30] [--seed 0]

Each trajectory is one overnight loop on a minimised metric: a baseline, then a sequence of experiments,
each a change with a true effect delta (positive = better):
  35% exactly 0 (seed/cosmetic changes), 15% harmful (-delta log-uniform in [0.5, 64]),
  50% real improvements (delta log-uniform in [0.25, 64]); the eCLIP loop's deltas spanned 1 to 113.
A run on fold f measures  true + fold_offset[f] + N(0, (sigma*sqrt(K))^2),  so the mean over K folds has
seed noise sigma (the noise level) and the fold offsets (sd 3) cancel in fold-paired comparisons. A kept
change becomes the champion (its true value and its measured runs), so a lucky champion measurement makes
later comparisons harder, as in a real loop.

Rules compared, using the real ``autoresearch.loop.decide`` code:
- greedy: Karpathy's rule, one run each, keep iff the mean is strictly better (champion = its one run).
- noise:  our rule, the noise floor measured once from R baseline repeats, confirmation runs as configured.

Columns: false-keep = kept although delta <= 0; false-revert = discarded although delta >= 3 sigma
(a real, clearly measurable gain); small-gain keep = kept among 0 < delta < 3 sigma; confirm runs and
total candidate runs per experiment; gain/exp = true improvement accumulated per experiment, minus what
false keeps of harmful changes cost.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, replace

import numpy as np

from autoresearch.config import DecisionSection
from autoresearch.loop.decide import decide, decide_confirmed, needs_remeasure, noise_floor

K_FOLDS = 3
FOLD_SD = 3.0
BASELINE = 1000.0  # true metric of the baseline (a mean rank, say)
REAL_SIZE = 3.0  # false-revert is counted for true effects >= REAL_SIZE * sigma


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
    experiments: int = 0
    confirm_runs: int = 0
    remeasure_runs: int = 0
    candidate_runs: int = 0
    gain: float = 0.0

    def row(self) -> dict:
        return {
            "false_keep": self.null_kept / max(self.null, 1),
            "false_revert": self.real_reverted / max(self.real, 1),
            "near_revert": self.near_reverted / max(self.near, 1),
            "small_keep": self.small_kept / max(self.small, 1),
            "confirm_per_exp": self.confirm_runs / max(self.experiments, 1),
            "runs_per_exp": (self.candidate_runs + self.remeasure_runs) / max(self.experiments, 1),
            "gain_per_exp": self.gain / max(self.experiments, 1),
        }


def draw_effect(rng: np.random.Generator) -> float:
    u = rng.random()
    if u < 0.35:
        return 0.0
    if u < 0.50:
        return -float(np.exp(rng.uniform(np.log(0.5), np.log(64.0))))
    return float(np.exp(rng.uniform(np.log(0.25), np.log(64.0))))


def simulate(settings: DecisionSection, sigma: float, *, trajectories: int, experiments: int,
             repeats: int, seed: int) -> Tally:
    rng = np.random.default_rng(seed)
    seed_sd = sigma * math.sqrt(K_FOLDS)
    tally = Tally()
    greedy = settings.rule == "greedy"
    for _ in range(trajectories):
        folds = rng.normal(0.0, FOLD_SD, K_FOLDS)

        def run(true_value: float) -> list[float]:
            return (true_value + folds + rng.normal(0.0, seed_sd, K_FOLDS)).tolist()

        truth = BASELINE
        champion_runs = [run(truth) for _ in range(1 if greedy else repeats)]
        noise = None if greedy else noise_floor(champion_runs)
        for _ in range(experiments):
            if not greedy and settings.remeasure_after > 0 and \
                    needs_remeasure(noise, float(np.mean(champion_runs)), settings):
                extra = [run(truth) for _ in range(repeats)]
                tally.remeasure_runs += repeats
                noise = noise_floor(extra)
                champion_runs = champion_runs + extra
            delta = draw_effect(rng)
            cand_truth = truth - delta  # minimise: a positive delta lowers the metric
            cand_runs = [run(cand_truth)]
            d = decide(cand_runs[0], champion_runs, direction="minimize", settings=settings, noise=noise)
            if d.status == "confirm":
                cand_runs += [run(cand_truth) for _ in range(settings.confirm_repeats)]
                tally.confirm_runs += settings.confirm_repeats
                d = decide_confirmed(cand_runs, champion_runs, direction="minimize", settings=settings,
                                     noise=noise)
            tally.experiments += 1
            tally.candidate_runs += len(cand_runs)
            kept = d.status == "keep"
            if delta <= 0:
                tally.null += 1
                tally.null_kept += kept
            elif delta >= REAL_SIZE * sigma:
                tally.real += 1
                tally.real_reverted += not kept
                if delta < (REAL_SIZE + 1) * sigma:
                    tally.near += 1
                    tally.near_reverted += not kept
            else:
                tally.small += 1
                tally.small_kept += kept
            if kept:
                tally.gain += delta
                truth, champion_runs = cand_truth, cand_runs
    return tally


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trajectories", type=int, default=200)
    ap.add_argument("--experiments", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3, help="baseline runs behind the noise floor")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    default = DecisionSection()
    configs = []
    for sigma in (0.5, 1.0, 2.0, 4.0):
        configs.append(("greedy", sigma, DecisionSection(rule="greedy")))
        configs.append(("noise (default)", sigma, default))
    variants = [dict(k=1.5), dict(confirm_band=0.0, confirm_repeats=0), dict(confirm_repeats=2),
                dict(confirm_band=2.0, confirm_repeats=2), dict(k=2.5, confirm_band=1.5, confirm_repeats=2),
                dict(k=3.0, confirm_band=1.5), dict(remeasure_after=0.01)]
    for sigma, chosen in ((1.0, variants), (2.0, variants[:3] + variants[-1:])):
        for v in chosen:
            configs.append(("noise", sigma, replace(default, **v)))
    print(f"{args.trajectories} trajectories x {args.experiments} experiments, K={K_FOLDS} folds, "
          f"noise floor from {args.repeats} repeats; false-revert counts true gains >= {REAL_SIZE:g} sigma\n")
    head = (f"{'rule':16} {'sigma':>5} {'k':>4} {'band':>4} {'conf':>4} {'remeas':>6} | {'false-keep':>10} "
            f"{'false-revert':>12} {'(3-4 sigma)':>11} {'small-gain keep':>15} {'confirm/exp':>11} {'runs/exp':>8} "
            f"{'gain/exp':>8}")
    print(head)
    print("-" * len(head))
    t0 = time.perf_counter()
    for i, (label, sigma, s) in enumerate(configs):
        tally = simulate(s, sigma, trajectories=args.trajectories, experiments=args.experiments,
                         repeats=args.repeats, seed=args.seed + i)
        r = tally.row()
        knobs = ["-"] * 4 if s.rule == "greedy" else \
            [f"{s.k:g}", f"{s.confirm_band:g}", str(s.confirm_repeats), f"{s.remeasure_after:g}"]
        print(f"{label:16} {sigma:>5g} {knobs[0]:>4} {knobs[1]:>4} {knobs[2]:>4} {knobs[3]:>6} | "
              f"{r['false_keep']:>10.1%} {r['false_revert']:>12.1%} {r['near_revert']:>11.1%} "
              f"{r['small_keep']:>15.1%} {r['confirm_per_exp']:>11.2f} {r['runs_per_exp']:>8.2f} "
              f"{r['gain_per_exp']:>8.2f}")
    print(f"\n({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
