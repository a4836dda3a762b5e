"""The sequential rule (loop.sequential), one rule per test, on crafted numbers; and its simulation, small."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from autoresearch import config as config_mod
from autoresearch.config import DecisionSection
from autoresearch.errors import UserError
from autoresearch.loop.decide import decide, decide_confirmed
from autoresearch.loop.noise import NO_EVIDENCE, NoiseEvidence
from autoresearch.loop.sequential import MIN_DOF, Action, Evidence, after_fold, after_run, discard_boundary
from autoresearch.vocab import Direction

SEQ = DecisionSection(rule="sequential")     # the defaults otherwise: k = 2, max_runs = 4, stop_margin = 1
CHAMP = [100.0, 110.0, 120.0]
NOISE = NoiseEvidence(ss=60.0, dof=60)      # tau = 1 per fold run, well measured (the baseline's repeats and more)


def better(gain: float, base=CHAMP, jitter=(0.0, 0.0, 0.0), direction="minimize") -> list[float]:
    """A run ``gain`` better than ``base`` on every fold (minimize: lower), plus a seed's ``jitter``."""
    sign = -1.0 if direction == "minimize" else 1.0
    return [b + sign * gain + j for b, j in zip(base, jitter)]


J1, J2, J3, J4 = (0.3, -0.2, 0.1), (-0.4, 0.5, -0.1), (0.2, 0.1, -0.6), (-0.1, -0.3, 0.4)   # seeds' noise


def ev(cand, champ=(CHAMP,), noise=NOISE, direction="minimize", settings=SEQ, **kw) -> Evidence:
    return Evidence([list(r) for r in cand], [list(r) for r in champ], noise, direction, settings, **kw)


# ---------------------------------------------------------------- keep needs two honest runs

def test_a_candidate_is_never_kept_on_one_run():
    v = after_run(ev([better(10.0, jitter=J1)]))
    assert v.action is Action.MORE and v.more == "candidate" and "second run under another seed" in v.reason


def test_a_clear_gain_is_kept_after_two_runs():
    v = after_run(ev([better(4.0, jitter=J1), better(4.0, jitter=J2)]))
    assert v.kept and v.reason.startswith("kept: better by 3.9")
    assert v.numbers["z"] > v.numbers["keep_t"] and v.numbers["candidate_runs"] == 2


def test_a_candidate_whose_runs_agree_bit_for_bit_under_two_seeds_is_never_kept():
    lucky = better(50.0, jitter=J1)
    v = after_run(ev([lucky, list(lucky)]))
    assert v.action is Action.DISCARD and not v.kept
    assert "ignores the seed the tool passes" in v.reason and "lucky draw" in v.reason
    assert "bit for bit" in v.numbers["seed_ignored"]
    # ... whatever the cap, the noise or the size of the gain
    for settings in (replace(SEQ, max_runs=10), replace(SEQ, k=0.5)):
        assert after_run(ev([lucky, list(lucky), list(lucky)], settings=settings)).action is Action.DISCARD


def test_a_candidate_whose_output_digests_agree_is_never_kept():
    runs = [better(5.0, jitter=J1), better(5.0, jitter=(0.3 + 1e-9, -0.2, 0.1))]
    v = after_run(ev(runs, digests=[["d0", "d1", "d2"], ["d0", "d1", "d2"]]))
    assert v.action is Action.DISCARD and "same outputs" in v.reason


def test_a_candidate_whose_runs_agree_far_closer_than_the_noise_is_never_kept():
    lucky = np.array(better(3.0, jitter=J1))
    runs = [(lucky + d).tolist() for d in ([1e-6, -2e-6, 0.0], [0.0, 1e-6, 3e-6])]
    v = after_run(ev(runs))
    assert v.action is Action.DISCARD and "agree within" in v.reason


def test_a_second_run_that_repeats_the_first_stops_at_its_first_fold():
    first = better(5.0, jitter=J1)
    v = after_fold(ev([first, [first[0], None, None]]))
    assert v.action is Action.STOP and "ignores the seed" in v.reason


# ---------------------------------------------------------------- evidence of noise

def test_no_noise_floor_yet_asks_for_runs_not_for_a_keep():
    v1 = after_run(ev([better(6.0, jitter=J1)], noise=NO_EVIDENCE))
    assert v1.action is Action.MORE and v1.more == "candidate" and "no evidence of the seed noise" in v1.reason
    v2 = after_run(ev([better(6.0, jitter=J1), better(6.0, jitter=J2)], noise=NO_EVIDENCE))
    # its own two runs measure some noise, but a candidate cannot vouch for its own noise
    assert v2.action is Action.MORE and v2.more == "champion" and "other code" in v2.reason
    champ = [CHAMP, better(0.0, jitter=J3)]
    v3 = after_run(ev([better(6.0, jitter=J1), better(6.0, jitter=J2)], champ=champ,
                      noise=NoiseEvidence(*_ss(champ), ("champion",))))
    assert v3.kept and v3.numbers["external_dof"] >= MIN_DOF


def _ss(runs):
    from autoresearch.loop.noise import group_ss
    return group_ss(runs)


def test_without_any_way_to_get_evidence_the_verdict_discards_and_says_so():
    fixed_champion = [CHAMP, list(CHAMP), list(CHAMP)]          # a champion that ignores its seed
    v = after_run(ev([better(6.0, jitter=J1), better(6.0, jitter=J2)], champ=fixed_champion, noise=NO_EVIDENCE))
    assert v.action is Action.DISCARD and "champion's runs give none" in v.reason
    assert "bit for bit" in v.numbers["champion_ignores_seed"]


def test_a_champion_that_ignores_its_seed_counts_as_one_run():
    v = after_run(ev([better(4.0, jitter=J1), better(4.0, jitter=J2)], champ=[CHAMP, list(CHAMP), list(CHAMP)]))
    assert v.numbers["champion_runs"] == 1 and "champion_ignores_seed" in v.numbers


def test_a_spread_of_zero_is_no_evidence():
    v = after_run(ev([better(4.0, jitter=J1), better(4.0, jitter=J2)], noise=NoiseEvidence(0.0, 6)))
    # the candidate's own spread is the only spread; the evidence from other code measured none
    assert not v.kept and v.more == "champion"


def test_a_thin_noise_estimate_widens_every_boundary():
    thin = NoiseEvidence(ss=4.0, dof=2)                       # pooled with the candidate's: about the same tau
    runs = [better(1.7, jitter=J1), better(1.7, jitter=J2)]
    wide, narrow = after_run(ev(runs, noise=thin)), after_run(ev(runs))
    assert wide.numbers["keep_t"] > narrow.numbers["keep_t"] > SEQ.k
    assert wide.numbers["tau"] == pytest.approx(narrow.numbers["tau"], rel=0.1)
    assert narrow.kept and not wide.kept


# ---------------------------------------------------------------- failures, scale, direction

def test_a_crashed_fold_stops_the_run_and_is_never_kept():
    v = after_fold(ev([[math.nan, None, None]]))
    assert v.action is Action.STOP and "crashed" in v.reason and "never kept" in v.reason
    v = after_run(ev([better(9.0, jitter=J1), [90.0, math.inf, 110.0]]))
    assert v.action is Action.DISCARD and "fold 1 of run 2 crashed" in v.reason


def test_failed_champion_runs_are_left_out():
    v = after_run(ev([better(4.0, jitter=J1), better(4.0, jitter=J2)], champ=[CHAMP, [math.nan] * 3]))
    assert v.kept and v.numbers["champion_runs"] == 1


def test_a_metric_near_zero_is_judged_in_absolute_units():
    scale = 1e-7
    tiny = lambda runs: [[v * scale for v in r] for r in runs]            # noqa: E731
    runs = [better(3.0, jitter=J1), better(3.0, jitter=J2)]
    big = after_run(ev(runs))
    small = after_run(ev(tiny(runs), champ=tiny([CHAMP]), noise=NoiseEvidence(NOISE.ss * scale ** 2, NOISE.dof)))
    assert small.action is big.action is Action.KEEP
    assert small.numbers["z"] == pytest.approx(big.numbers["z"])
    # a champion at exactly zero: no share of it is ever taken
    zero = after_run(ev([[-0.3, -0.2, -0.4], [-0.35, -0.1, -0.3]], champ=[[0.0, 0.0, 0.0]],
                        noise=NoiseEvidence(0.06, 60)))
    assert zero.kept and zero.numbers["gain"] == pytest.approx(0.275)


@pytest.mark.parametrize("gain", [6.0, 2.0, 0.5, -3.0])
def test_maximise_and_minimise_are_mirror_images(gain):
    down = after_run(ev([better(gain, jitter=J1), better(gain, jitter=J2)]))
    up_runs = [better(gain, jitter=tuple(-j for j in J), direction="maximize") for J in (J1, J2)]
    up = after_run(ev(up_runs, direction=Direction.MAXIMIZE))
    assert up.action is down.action
    assert up.numbers["gain"] == pytest.approx(down.numbers["gain"]) == pytest.approx(gain + 0.0, abs=0.5)
    with pytest.raises(ValueError, match="direction"):
        after_run(ev(up_runs, direction="up"))


def test_min_delta_is_what_the_gain_must_beat():
    runs = [better(4.0, jitter=J1), better(4.0, jitter=J2)]
    assert after_run(ev(runs)).kept
    v = after_run(ev(runs, settings=replace(SEQ, min_delta=3.5)))
    assert not v.kept and v.numbers["keep_at"] > 3.5


# ---------------------------------------------------------------- sequential: after each fold, after each run

def test_after_a_fold_a_clearly_worse_candidate_stops_and_a_better_one_goes_on():
    worse = after_fold(ev([[104.0, None, None]]))
    assert worse.action is Action.STOP and worse.reason.startswith("stopped after 1 fold(s) of run 1: clearly not")
    assert worse.numbers["stop_t"] < 0 and worse.numbers["candidate_runs"] == pytest.approx(1 / 3, abs=1e-3)
    assert after_fold(ev([[99.0, None, None]])).action is Action.CONTINUE
    assert after_fold(ev([[100.5, None, None]])).action is Action.CONTINUE     # a little worse: within the noise


def test_a_later_run_is_stopped_against_its_own_narrower_band():
    runs = [better(0.6, jitter=J1)]
    assert after_run(ev(runs)).action is Action.MORE
    second = runs + [[CHAMP[0] + 5.0, None, None]]
    v = after_fold(ev(second))
    assert v.numbers["stop_z"] == pytest.approx(discard_boundary(2, SEQ) - SEQ.stop_margin)
    assert v.action is Action.STOP


def test_a_candidate_in_the_band_runs_again_and_the_band_narrows_run_by_run():
    assert [discard_boundary(n, SEQ) for n in (1, 2, 3, 4)] == pytest.approx([0, 2 / 3, 4 / 3, 2])
    v = after_run(ev([better(1.0, jitter=J1), better(1.0, jitter=J2)]))
    assert v.action is Action.MORE and v.more == "candidate" and "run 3 of at most 4" in v.reason


def test_the_cap_on_extra_runs():
    capped = replace(SEQ, max_runs=3)
    runs = [better(1.0, jitter=J) for J in (J1, J2, J3)]
    assert after_run(ev(runs[:2], settings=capped)).action is Action.MORE
    v = after_run(ev(runs, settings=capped))
    assert v.action is Action.DISCARD and "after 3 runs, the most allowed" in v.reason
    assert v.numbers["discard_t"] == pytest.approx(v.numbers["keep_t"])     # the band has closed
    with pytest.raises(ValueError, match="last run complete"):
        after_run(ev([better(1.0), [99.0, None, None]]))


def test_seed_only_changes_are_discarded_at_the_first_fold():
    v = after_fold(ev([[50.0, None, None]], seed_only=True))
    assert v.action is Action.STOP and "only a random seed" in v.reason


def test_every_verdict_carries_a_reason_and_plain_json_numbers():
    for v in (after_run(ev([better(4.0, jitter=J1), better(4.0, jitter=J2)])), after_run(ev([better(0.5)])),
              after_fold(ev([[104.0, None, None]])), after_run(ev([better(4.0)], noise=NO_EVIDENCE))):
        data = json.loads(json.dumps(v.to_dict(), allow_nan=False))
        assert data["reason"] and "." not in data["reason"][-1:]
        for key in ("gain", "sigma_d", "dof", "tau", "candidate_runs", "champion_runs", "k", "max_runs", "stage"):
            assert key in data["numbers"], key
    kept = after_run(ev([better(4.0, jitter=J1), better(4.0, jitter=J2)])).numbers
    assert kept["threshold"] == kept["keep_at"] and kept["interval"][0] < kept["gain"] < kept["interval"][1]


def test_the_other_rules_are_not_this_api():
    with pytest.raises(ValueError, match="sequential"):
        after_run(ev([CHAMP], settings=DecisionSection(rule="noise")))


def test_decide_answers_for_the_sequential_rule_with_one_confirmation_run():
    first = decide(better(6.0, jitter=J1), [CHAMP, better(0.0, jitter=J3)], direction="minimize", settings=SEQ,
                   noise=None)
    assert first.status == "confirm"
    kept = decide_confirmed([better(6.0, jitter=J1), better(6.0, jitter=J2)], [CHAMP, better(0.0, jitter=J3)],
                            direction="minimize", settings=SEQ, noise=None)
    assert kept.status == "keep"
    unsure = decide_confirmed([better(0.4, jitter=J1), better(0.4, jitter=J2)], [CHAMP, better(0.0, jitter=J3)],
                              direction="minimize", settings=SEQ, noise=None)
    assert unsure.status == "discard" and "still uncertain" in unsure.reason


# ---------------------------------------------------------------- configuration

METRIC = {"metric": {"source": "json", "key": "m"}}

@pytest.mark.parametrize("table, message", [({"max_runs": 1}, "[decision] max_runs must be at least 2"),
                                            ({"baseline_repeats": 0}, "[decision] baseline_repeats must be at least 1"),
                                            ({"stop_margin": -1}, "[decision] stop_margin must be zero or more"),
                                            ({"rule": "bayes"}, "[decision] rule must be one of sequential")])
def test_decision_settings_are_checked_and_the_error_names_the_key(tmp_path, table, message):
    with pytest.raises(UserError) as info:
        config_mod.parse(tmp_path, {"decision": table, **METRIC})
    assert message in str(info.value)


def test_the_sequential_rule_is_a_choice():
    assert config_mod.parse(Path("/tmp"), {**METRIC, "decision": {"rule": "sequential"}}).decision.rule == "sequential"


# ---------------------------------------------------------------- the simulation, small and deterministic

def _sim():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "decision_sim.py"
    spec = importlib.util.spec_from_file_location("decision_sim", path)
    sim = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sim
    spec.loader.exec_module(sim)
    return sim


def test_simulation_of_the_sequential_rule_meets_its_goals_and_keeps_no_fixed_seed():
    sim = _sim()
    seq = sim.simulate_sequential(SEQ, 1.0, trajectories=40, experiments=20, seed=3).row()
    old = sim.simulate_old(DecisionSection(rule="noise"), 1.0, trajectories=40, experiments=20, repeats=1,
                           seed=3).row()
    assert seq["fixed_kept"] == 0 < seq["fixed"] and old["fixed_kept"] > 0
    assert seq["false_keep"] <= 0.04 and seq["real_revert"] <= 0.04
    assert seq["real_revert"] < old["real_revert"] and seq["near_revert"] < old["near_revert"]
    assert 1.2 < seq["runs_per_exp"] < 2.0


def test_the_sequential_rule_is_the_default():
    assert config_mod.parse(Path("/tmp"), METRIC).decision.rule == "sequential"


def test_a_short_last_run_is_a_partial_run_not_a_finished_one():
    assert after_fold(ev([[104.0]])).action is Action.STOP
    with pytest.raises(ValueError, match="last run complete"):
        after_run(ev([[99.0]]))
