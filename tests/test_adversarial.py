"""Adversarial suite: every attack in ``tests/adversarial.py`` against a real eCLIP repository, sandboxed.

One repository and one engine for the module (built once, ~15 s); each attack is one experiment and must
end contained: recorded with its expected status and reason, the champion and the earlier ledger rows
untouched, a clean tree, an intact ledger, no process of the run alive, and its own check.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow   # trains for real or runs whole loops: deselect with -m 'not slow'

from autoresearch.errors import UserError
from autoresearch.runner import sandbox

if not sandbox.available():
    pytest.skip(f"the sandbox is not usable here: {sandbox.unavailable_reason()}", allow_module_level=True)

import adversarial  # noqa: E402

CATALOGUE = adversarial.catalogue()


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    config = adversarial.build_repo(tmp_path_factory.mktemp("adversarial") / "repo")
    return adversarial.Suite(config)


def test_the_baseline_is_honest_and_better_than_chance(suite):
    base = suite.baseline
    assert base.status == "keep" and base.kind == "baseline"
    assert len(base.folds) == suite.config.run.folds == 2
    chance = [(adversarial.query_size(suite.config, k) - 1) / 2 for k in range(2)]
    # Clearly better than a random ranking, so a constant or random candidate is never kept over it.
    assert all(v < 0.85 * c for v, c in zip(base.folds, chance)), (base.folds, chance)
    assert base.sandbox == 1


@pytest.mark.parametrize("attack", CATALOGUE, ids=[a.key for a in CATALOGUE])
def test_attack_is_contained_and_recorded(suite, attack):
    outcome = suite.attempt(attack)
    assert outcome.contained, f"{attack.key}: {outcome.problem} (recorded {outcome.status}: {outcome.reason})"


IN_FLIGHT = adversarial.round_three() + adversarial.seed_attacks()


@pytest.mark.parametrize("attack", IN_FLIGHT, ids=[a.key for a in IN_FLIGHT])
def test_attack_with_candidates_in_flight_is_contained_and_recorded(suite, attack):
    outcome = suite.attempt(attack, parallel=2)
    assert outcome.contained, f"{attack.key}: {outcome.problem} (recorded {outcome.status}: {outcome.reason})"


def test_every_attack_left_one_row_and_the_champion_is_the_baseline(suite):
    rows = suite.engine.ledger.rows(tag=adversarial.TAG, kinds=("experiment",))
    said = {(r.description or "").split(" ")[0] for r in rows}
    assert said >= {a.key for a in CATALOGUE if not a.rowless}
    assert all(r.reason for r in rows)
    assert suite.engine.ledger.champion(adversarial.TAG).number == suite.baseline.number


@pytest.mark.parametrize("attack", adversarial.probes(), ids=[a.key for a in adversarial.probes()])
def test_agent_forging_the_hidden_key_stops_the_run(tmp_path, attack):
    suite = adversarial.Suite(adversarial.build_repo(tmp_path / "repo"))
    try:
        outcome = suite.attempt(attack)
    except UserError:  # stopping the loop, naming the changed files, also contains it
        ledger = suite.engine.ledger
        assert ledger.champion(adversarial.TAG).number == suite.baseline.number
        assert all(r.metric_mean is None or r.metric_mean > 0.5 for r in ledger.rows())
        return
    assert outcome.contained, f"{attack.key}: {outcome.problem} (recorded {outcome.status}: {outcome.reason})"


@pytest.mark.slow
def test_regeneration_pairs_every_query_when_the_seed_is_public(tmp_path):
    """Positive control for i9-1-regenerate: with the seed every repository had before issue 9 (an explicit
    0 today), the same train.py scores a perfect 0.00 on every fold."""
    from autoresearch.loop.trial import run_trial

    from autoresearch import config as config_mod

    config = adversarial.build_repo(tmp_path / "repo", seed=0)
    toml = config.root / config_mod.CONFIG_NAME       # rebuilding takes longer than the suite's 15 s deadline
    toml.write_text(adversarial.set_run_limits(toml.read_text(), {"timeout_s": 120, "time_budget_s": 60}))
    config = config_mod.load(config.root)
    (config.root / "train.py").write_text(adversarial.REGENERATE, encoding="utf-8")
    result = run_trial(config, config.state_dir / "runs" / "regen", seed=0, sandbox=True)
    assert result.status == "ok", result.reason + result.log_tail(10)
    assert result.values == [0.0] * config.run.folds


def test_survivor_scan_finds_a_live_process_by_its_environment(tmp_path):
    """Positive control for the leftover-process checks above: the scan does see a live marked process."""
    import os
    import subprocess
    import sys

    marker = str(tmp_path / "marker")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            env={**os.environ, "AUTORESEARCH_OUT": marker})
    try:
        assert proc.pid in adversarial.survivors(marker)
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in adversarial.survivors(marker)


SEEDS = adversarial.seed_attacks()


@pytest.fixture(scope="module")
def unmeasured(tmp_path_factory):
    """A repository whose night starts without a noise floor (``baseline_repeats = 1``)."""
    config = adversarial.build_repo(tmp_path_factory.mktemp("unmeasured") / "repo", decision={"baseline_repeats": 1})
    return adversarial.Suite(config)


@pytest.mark.parametrize("attack", SEEDS, ids=[a.key for a in SEEDS])
def test_a_fixed_seed_without_a_measured_floor_is_never_kept(unmeasured, attack):
    outcome = unmeasured.attempt(attack)
    assert outcome.contained, f"{attack.key}: {outcome.problem} (recorded {outcome.status}: {outcome.reason})"
