"""The keep/discard rules on crafted numbers, the noise floor, and seed-only detection."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from autoresearch.config import DecisionSection
from autoresearch.loop.decide import (
    SEED_ONLY_REASON,
    NoiseFloor,
    decide,
    decide_confirmed,
    is_seed_only,
    needs_remeasure,
    noise_floor,
)

GREEDY = DecisionSection(rule="greedy")
NOISE = DecisionSection(rule="noise", k=2.0, confirm_band=1.0, confirm_repeats=1)
CHAMP = [100.0, 110.0, 120.0]


def floor(sigma: float = 1.0, folds: int = 3) -> NoiseFloor:
    return NoiseFloor(sigma=sigma, sigma_fold=5.0, sigma_seed_fold=sigma * math.sqrt(folds), n_repeats=3,
                      n_folds=folds, metric_at=110.0, runs=[])


def shifted(gain: float, base=CHAMP, direction="minimize") -> list[float]:
    return [v - gain if direction == "minimize" else v + gain for v in base]


# ---------------------------------------------------------------- greedy

def test_greedy_keeps_strictly_better_only():
    assert decide(shifted(0.01), CHAMP, direction="minimize", settings=GREEDY, noise=None).status == "keep"
    assert decide(CHAMP, CHAMP, direction="minimize", settings=GREEDY, noise=None).status == "discard"
    assert decide(shifted(-1), CHAMP, direction="minimize", settings=GREEDY, noise=None).status == "discard"


def test_greedy_and_noise_disagree_on_a_small_gain():
    small = shifted(0.5)
    assert decide(small, CHAMP, direction="minimize", settings=GREEDY, noise=floor()).status == "keep"
    assert decide(small, CHAMP, direction="minimize", settings=NOISE, noise=floor()).status == "discard"


# ---------------------------------------------------------------- noise rule

@pytest.mark.parametrize("gain, status", [(3.0, "keep"), (2.0, "confirm"), (1.0, "discard"),
                                          (0.0, "discard"), (-4.0, "discard")])
def test_noise_rule_thresholds(gain, status):
    # one champion run: sd of the difference = sigma * sqrt(2) = 1.414; threshold 2.83; confirm from 1.41
    d = decide(shifted(gain), CHAMP, direction="minimize", settings=NOISE, noise=floor())
    assert d.status == status, d.reason
    assert d.numbers["sigma_d"] == pytest.approx(math.sqrt(2))
    assert d.numbers["threshold"] == pytest.approx(2 * math.sqrt(2))
    assert d.numbers["confirm_from"] == pytest.approx(math.sqrt(2))
    assert d.numbers["improvement"] == pytest.approx(gain)
    assert d.numbers["paired_differences"] == pytest.approx([gain] * 3)
    json.dumps(d.to_dict())  # numbers are plain JSON


def test_maximize_direction():
    up, down = shifted(3.0, direction="maximize"), shifted(-3.0, direction="maximize")
    assert decide(up, CHAMP, direction="maximize", settings=NOISE, noise=floor()).status == "keep"
    assert decide(down, CHAMP, direction="maximize", settings=NOISE, noise=floor()).status == "discard"
    assert decide(up, CHAMP, direction="minimize", settings=NOISE, noise=floor()).status == "discard"
    assert decide(up, CHAMP, direction="maximize", settings=GREEDY, noise=None).status == "keep"
    with pytest.raises(ValueError, match="direction"):
        decide(up, CHAMP, direction="up", settings=NOISE, noise=floor())


def test_min_delta_raises_the_threshold():
    s = replace(NOISE, min_delta=5.0)
    assert decide(shifted(3.0), CHAMP, direction="minimize", settings=s, noise=floor()).status == "discard"
    assert decide(shifted(4.0), CHAMP, direction="minimize", settings=s, noise=floor()).status == "confirm"
    assert decide(shifted(5.5), CHAMP, direction="minimize", settings=s, noise=floor()).status == "keep"


def test_no_confirmation_runs_means_discard_in_the_band():
    d = decide(shifted(2.0), CHAMP, direction="minimize", settings=replace(NOISE, confirm_repeats=0), noise=floor())
    assert d.status == "discard" and "confirm_repeats = 0" in d.reason


def test_pooled_champion_shrinks_the_threshold():
    champions = [CHAMP, shifted(0.5), shifted(-0.5)]          # mean equals CHAMP
    d = decide(shifted(2.5), champions, direction="minimize", settings=NOISE, noise=floor())
    assert d.numbers["sigma_d"] == pytest.approx(math.sqrt(1 + 1 / 3))
    assert d.numbers["champion_runs"] == 3
    assert d.status == "keep"                                 # with one champion run it would be "confirm"


def test_noise_floor_on_another_fold_count_is_rescaled():
    d = decide([99.0], [100.0], direction="minimize", settings=NOISE, noise=floor(sigma=1.0, folds=4))
    assert d.numbers["sigma_d"] == pytest.approx(2 * math.sqrt(2))   # sigma * sqrt(4/1) * sqrt(2)


def test_without_noise_floor_uses_fold_paired_spread():
    d = decide([99.0, 108.0, 117.0], CHAMP, direction="minimize", settings=NOISE, noise=None)
    # paired gains 1, 2, 3: std 1, sd of the mean 1/sqrt(3), threshold 1.155, gain 2
    assert d.numbers["sigma_d"] == pytest.approx(1 / math.sqrt(3))
    assert d.status == "keep" and "no noise floor" in d.reason



def test_the_noise_rule_never_keeps_on_a_spread_of_zero():
    single = decide([99.0], [100.0], direction="minimize", settings=NOISE, noise=None)
    assert single.status == "discard" and single.numbers["sigma_d"] == 0 and "spread is zero" in single.reason
    # a candidate that ignores its seed: its confirmation run repeats the first bit for bit
    same = decide_confirmed([shifted(0.5), shifted(0.5)], [CHAMP], direction="minimize", settings=NOISE, noise=None)
    assert same.status == "discard" and "spread is zero" in same.reason


def test_nan_candidate_is_never_kept():
    for settings in (GREEDY, NOISE):
        d = decide([1.0, math.nan, 1.0], CHAMP, direction="minimize", settings=settings, noise=floor())
        assert d.status == "discard" and "fold(s) [1]" in d.reason
    d = decide([math.inf] * 3, CHAMP, direction="maximize", settings=GREEDY, noise=None)
    assert d.status == "discard"


def test_failed_champion_runs_are_ignored():
    d = decide(shifted(3.0), [CHAMP, [math.nan] * 3], direction="minimize", settings=NOISE, noise=floor())
    assert d.status == "keep" and d.numbers["champion_runs"] == 1
    d = decide(CHAMP, [[math.nan] * 3], direction="minimize", settings=NOISE, noise=floor())
    assert d.status == "keep" and "no valid measurement" in d.reason


def test_seed_only_is_always_discarded():
    for settings in (GREEDY, NOISE):
        d = decide(shifted(50.0), CHAMP, direction="minimize", settings=settings, noise=floor(), seed_only=True)
        assert d.status == "discard" and d.reason == SEED_ONLY_REASON


def test_fold_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="folds"):
        decide([1.0, 2.0], CHAMP, direction="minimize", settings=NOISE, noise=None)


# ---------------------------------------------------------------- confirmation

def test_decide_confirmed_pools_runs():
    # 2 candidate runs vs 1 champion run: sd = sqrt(1/2 + 1) = 1.2247, threshold 2.449
    keep = decide_confirmed([shifted(2.0), shifted(3.2)], [CHAMP], direction="minimize", settings=NOISE,
                            noise=floor())
    assert keep.status == "keep" and keep.numbers["improvement"] == pytest.approx(2.6)
    assert keep.numbers["threshold"] == pytest.approx(2 * math.sqrt(1.5))
    drop = decide_confirmed([shifted(2.0), shifted(1.0)], [CHAMP], direction="minimize", settings=NOISE,
                            noise=floor())
    assert drop.status == "discard" and "not confirmed" in drop.reason


def test_decide_confirmed_failed_rerun_discards():
    d = decide_confirmed([shifted(9.0), [math.nan] * 3], [CHAMP], direction="minimize", settings=NOISE,
                         noise=floor())
    assert d.status == "discard"


def test_decide_confirmed_without_floor_uses_replicate_spread():
    cand = [shifted(3.0), shifted(5.0)]                      # within-fold residuals +-1, sigma_e = sqrt(2)
    d = decide_confirmed(cand, [CHAMP], direction="minimize", settings=NOISE, noise=None)
    expected = math.sqrt(2 / 3) * math.sqrt(1 / 2 + 1)     # sigma of a mean over 3 folds, then the difference
    assert d.numbers["sigma_d"] == pytest.approx(expected)
    assert d.status == "keep" and "repeated runs" in d.reason


# ---------------------------------------------------------------- noise floor

def test_noise_floor_estimates():
    nf = noise_floor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [math.nan, 1.0, 1.0]])
    assert nf.n_repeats == 2 and nf.n_folds == 3           # the failed run is left out
    assert nf.sigma == pytest.approx(math.sqrt(2))         # std of run means [2, 4]
    assert nf.sigma_seed_fold == pytest.approx(math.sqrt(2))
    assert nf.sigma_fold == pytest.approx(1.0)             # fold means 2, 3, 4
    assert nf.metric_at == pytest.approx(3.0)
    again = NoiseFloor.from_dict(json.loads(json.dumps(nf.to_dict())))
    assert again == nf


def test_noise_floor_uses_pooled_estimate_when_larger():
    # run means are equal (direct estimate 0) but every fold moves: pooled within-fold std is not 0
    nf = noise_floor([[1.0, 3.0, 2.0], [3.0, 1.0, 2.0]])
    assert nf.sigma == pytest.approx(math.sqrt(4 / 3) / math.sqrt(3))  # residuals +-1 on two folds, 3 dof


def test_noise_floor_needs_two_runs():
    with pytest.raises(ValueError, match="at least 2"):
        noise_floor([[1.0, 2.0], [math.nan, 2.0]])


def test_needs_remeasure():
    nf = floor()  # measured at 110
    assert needs_remeasure(None, 100.0, NOISE)
    assert not needs_remeasure(None, 100.0, GREEDY)
    assert not needs_remeasure(nf, 50.0, NOISE)             # remeasure_after = 0 disables
    s = replace(NOISE, remeasure_after=0.1)
    assert needs_remeasure(nf, 98.0, s)                    # moved 10.9%
    assert not needs_remeasure(nf, 100.0, s)               # moved 9.1%


# ---------------------------------------------------------------- seed-only changes

BASE = '''"""Train a model."""
import torch

SEED = 1  # the seed
LR = 3e-4


def train(steps):
    """Run the loop."""
    torch.manual_seed(SEED)
    return steps * LR
'''


@pytest.mark.parametrize("new", [
    BASE.replace("SEED = 1", "SEED = 7"),
    BASE.replace("SEED = 1", "SEED = -3"),
    BASE.replace("# the seed", "# a new comment"),
    BASE.replace("LR = 3e-4", "LR   =   3e-4   # learning rate").replace("\n\n\ndef", "\n\ndef"),
    BASE.replace('"""Train a model."""', '"""Train a better model."""'),
    BASE.replace('    """Run the loop."""\n', ""),
    BASE,
])
def test_seed_only_changes(new):
    assert is_seed_only(BASE, new)


@pytest.mark.parametrize("new", [
    BASE.replace("LR = 3e-4", "LR = 1e-4"),
    BASE.replace("SEED = 1", "SEED = int(torch.randint(0, 9, (1,)))"),
    BASE.replace("return steps * LR", "return steps * LR * 2"),
    BASE + "\nEXTRA = 1\n",
    BASE.replace("SEED = 1", "SEED = 1\nSEED_SCALE = 2.0"),
    BASE.replace("def train(steps):", "def train(steps:"),  # does not parse
])
def test_real_changes_are_not_seed_only(new):
    assert not is_seed_only(BASE, new)


def test_seed_assignment_inside_a_function_is_not_a_constant():
    old = "def f():\n    seed = 1\n    return seed\n"
    assert not is_seed_only(old, old.replace("seed = 1", "seed = 2"))
    assert is_seed_only("import random\nrandom.seed(3)\n", "import random\nrandom.seed(4)\n")
    assert is_seed_only("g = make(seed=3)\n", "g = make(seed=5)\n")


# ---------------------------------------------------------------- the simulation, small

def test_simulation_noise_rule_beats_greedy_on_false_keeps():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "decision_sim.py"
    spec = importlib.util.spec_from_file_location("decision_sim", path)
    sim = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sim  # dataclasses look their module up
    spec.loader.exec_module(sim)
    greedy = sim.simulate_old(GREEDY, 1.0, trajectories=20, experiments=20, repeats=1, seed=0).row()
    noise = sim.simulate_old(NOISE, 1.0, trajectories=20, experiments=20, repeats=3, seed=0).row()
    assert greedy["false_keep"] > 0.15
    assert noise["false_keep"] < 0.08
    assert noise["real_revert"] < greedy["real_revert"] + 0.15
