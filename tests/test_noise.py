"""Evidence of seed noise (loop.noise): what counts, what is rejected, and the seed check from results."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from autoresearch.loop.noise import (
    NoiseEvidence,
    f_cdf,
    group_ss,
    ignores_seed,
    noise_evidence,
    seed_error,
    t_cdf,
    t_quantile,
)

BASE = [100.0, 110.0, 120.0]


def runs_of(offsets: list[list[float]], base=BASE) -> list[list[float]]:
    return [[b + o for b, o in zip(base, row)] for row in offsets]


def test_r_repeats_of_k_folds_give_k_times_r_minus_one_degrees_of_freedom():
    rng = np.random.default_rng(0)
    ev = noise_evidence({"baseline": runs_of(rng.normal(0, 1, (3, 3)).tolist())})
    assert ev.dof == 3 * (3 - 1) and ev.groups == ("baseline",) and ev.tau > 0


def test_groups_pool_their_sums_of_squares():
    a = runs_of([[1, 0, -1], [-1, 0, 1]])          # ss 4 over 3 dof
    b = runs_of([[2, 2, 2], [0, 0, 0], [1, 1, 1]])   # ss 6 over 6 dof
    ev = noise_evidence({"baseline": a, "experiment 4": b})
    assert ev.dof == 9 and ev.ss == pytest.approx(10.0) and ev.tau == pytest.approx(math.sqrt(10 / 9))


def test_a_group_whose_runs_agree_bit_for_bit_is_rejected_not_counted_as_zero_noise():
    honest = runs_of([[1, 0, -1], [-1, 0, 1], [0.5, 0.2, 0.1]])
    fixed = [BASE, list(BASE), list(BASE)]
    ev = noise_evidence({"baseline": honest, "experiment 3": fixed})
    assert ev.groups == ("baseline",) and ev.dof == 6
    assert len(ev.rejected) == 1 and ev.rejected[0].startswith("experiment 3: runs 1 and 2")
    alone = noise_evidence({"baseline": fixed})
    assert alone.dof == 0 and math.isnan(alone.tau) and alone.rejected


def test_a_failed_run_adds_no_evidence_of_noise():
    ss, dof = group_ss(runs_of([[1, 0, -1], [math.nan, 0, 0], [-1, 0, 1]]))
    assert dof == 3 and ss == pytest.approx(4.0)


def test_a_partial_run_counts_on_the_folds_it_has():
    ss, dof = group_ss([[1.0, 2.0, 3.0], [3.0, None, None]])
    assert dof == 1 and ss == pytest.approx(2.0)


def test_two_runs_that_agree_on_every_fold_ignore_their_seed():
    found = ignores_seed([BASE, list(BASE)])
    assert found and "bit for bit on every fold" in found
    assert ignores_seed([BASE, [100.0, 110.0, 120.000001]]) is None


def test_a_second_run_that_repeats_the_first_fold_already_shows_it():
    assert "fold 0" in ignores_seed([BASE, [100.0, None, None]])


def test_equal_digests_add_evidence_and_different_ones_never_clear_equal_scores():
    assert "same outputs" in ignores_seed([BASE, [1.0, 2.0, 3.0]], [["a", "b", "c"], ["a", "b", "c"]])
    same_scores = [BASE, list(BASE)]
    assert "same scores" in ignores_seed(same_scores, [["a", "b", "c"], ["x", "y", "z"]])   # timings in facts.json
    assert ignores_seed([BASE, [1.0, 2.0, 3.0]], [[None, None, None], [None, None, None]]) is None


def test_runs_closer_than_the_noise_allows_mark_a_fixed_seed_on_rounding_hardware():
    rng = np.random.default_rng(1)
    noise = noise_evidence({"baseline": runs_of(rng.normal(0, 2.0, (3, 3)).tolist())})
    lucky = np.array(BASE) - 3.0
    gpu = [(lucky + rng.normal(0, 1e-4, 3)).tolist() for _ in range(2)]
    assert ignores_seed(gpu) is None                           # not bit for bit...
    found = ignores_seed(gpu, noise=noise)                     # ...but far closer than seeds allow
    assert found and "agree within" in found


def test_an_honest_group_is_almost_never_flagged():
    rng = np.random.default_rng(2)
    flagged = 0
    for _ in range(2000):
        noise = NoiseEvidence(float(rng.chisquare(6)), 6)       # tau = 1 measured with 6 dof
        pair = runs_of(rng.normal(0, 1, (2, 3)).tolist())
        flagged += ignores_seed(pair, noise=noise) is not None
    assert flagged <= 10                                        # TOO_CLOSE_P = 1e-3: about 2 in 2000


def test_seed_error_names_the_variable_for_the_baseline():
    msg = seed_error([BASE, list(BASE), list(BASE)])
    assert msg.startswith("train.py ignores AUTORESEARCH_SEED: the baseline's runs 1 and 2")
    assert seed_error(runs_of([[1, 0, 0], [0, 1, 0]])) is None


def test_noise_evidence_round_trips_through_a_dict():
    ev = noise_evidence({"baseline": runs_of([[1, 0, -1], [-1, 0, 1]]), "x": [BASE, list(BASE)]})
    data = json.loads(json.dumps(ev.to_dict()))
    assert NoiseEvidence.from_dict(data) == ev and data["tau"] == pytest.approx(ev.tau)


@pytest.mark.parametrize("p, dof, expected", [(0.975, 3, 3.182446305), (0.95, 10, 1.812461123), (0.75, 1, 1.0),
                                              (0.9, 2, 1.885618083), (0.97725, 30, 2.086), (0.5, 7, 0.0),
                                              (0.025, 3, -3.182446305)])
def test_student_t_quantiles_match_the_tables(p, dof, expected):
    assert t_quantile(p, dof) == pytest.approx(expected, abs=2e-3 if dof == 30 else 1e-6)
    assert t_cdf(t_quantile(p, dof), dof) == pytest.approx(p, abs=1e-9)


def test_f_distribution_agrees_with_scipy_where_it_is_installed():
    stats = pytest.importorskip("scipy.stats")
    for d1, d2, x in [(3, 6, 0.01), (3, 6, 0.2), (1, 30, 1e-5), (6, 3, 0.5), (2, 2, 0.05)]:
        assert f_cdf(x, d1, d2) == pytest.approx(float(stats.f.cdf(x, d1, d2)), rel=1e-9)
