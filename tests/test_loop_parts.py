"""Phases, the scratchpad bound, commit messages, fingerprints and configuration errors."""

from __future__ import annotations

import pytest

from autoresearch import config as config_mod
from autoresearch.errors import UserError
from autoresearch.loop import fingerprints
from autoresearch.loop.gitops import format_message, validate_tag
from autoresearch.loop.phases import current_phase, parse_program
from autoresearch.loop.scratchpad import CUT_MARK, bound
from toyrepo import make_toy_repo

PROGRAM = """# Goal
Lower the metric.

## Phase 1: baseline tuning
Budget: 3 experiments. Advance after 2 experiments without improvement.
- LR

## Phase 2: moonshots
Budget: 5 experiments.
Multi-change: yes
"""


def test_program_phases_parse_with_budget_patience_and_multi_change():
    program = parse_program(PROGRAM)
    assert program.preamble.startswith("# Goal")
    one, two = program.phases
    assert (one.number, one.title, one.budget, one.patience, one.multi_change) == (1, "baseline tuning", 3, 2, False)
    assert (two.budget, two.patience, two.multi_change) == (5, None, True)
    assert "- LR" in one.text


@pytest.mark.parametrize("outcomes, phase, used", [
    ([], 1, 0),
    (["keep"], 1, 1),
    (["keep", "discard"], 1, 2),
    (["discard", "crash"], 2, 0),             # two in a row without improvement
    (["keep", "keep", "keep"], 2, 0),         # budget spent
    (["keep", "keep", "keep"] + ["discard"] * 9, 2, 9),   # the last phase never ends
])
def test_current_phase_is_derived_from_outcomes(outcomes, phase, used):
    p, n = current_phase(parse_program(PROGRAM), outcomes)
    assert (p.number, n) == (phase, used)


def test_program_without_phases_is_one_phase():
    program = parse_program("Just improve it.")
    assert len(program.phases) == 1 and program.phases[0].budget is None


def test_phases_out_of_order_are_an_error():
    with pytest.raises(UserError, match="phase 1 comes after phase 2"):
        parse_program("## Phase 2: b\n\n## Phase 1: a\n")


def test_scratchpad_bound_cuts_oldest_notes_with_a_note():
    text = "# Scratchpad\n" + "".join(f"- note {i}: {'x' * 40}\n" for i in range(200))
    out, cut = bound(text, 1000, experiment=7)
    assert len(out) <= 1000 and cut > 0
    assert out.startswith("# Scratchpad\n" + CUT_MARK)
    assert "before experiment 7" in out
    assert "note 199" in out and "note 0:" not in out
    # Cutting again does not pile up notes.
    again, _ = bound(out + "- note 200\n" * 30, 1000, experiment=8)
    assert again.count(CUT_MARK) == 1
    assert bound("short", 1000, 1) == ("short", 0)


def test_commit_message_follows_the_seed_format():
    msg = format_message(number=4, description="Raise MAX_TEMPERATURE to 100", metric_name="mean_rank",
                         mean=157.43, std=0.76, prev=270.6, delta=-113.17, folds=[157.0, 158.1, 157.2],
                         peak_memory_gb=1.25, phase="1: baseline tuning", changed="MAX_TEMPERATURE=100.0 (was 2.0)",
                         status="keep")
    lines = msg.splitlines()
    assert lines[0] == "experiment 4: Raise MAX_TEMPERATURE to 100"
    assert "mean_rank: 157.43 ± 0.76 (prev: 270.60)" in lines
    assert "delta: -113.17" in lines and "folds: [157.00, 158.10, 157.20]" in lines
    assert "changed: MAX_TEMPERATURE=100.0 (was 2.0)" in lines and "peak_memory_gb: 1.25" in lines


def test_tags_are_validated():
    assert validate_tag("nov27") == "nov27"
    with pytest.raises(UserError):
        validate_tag("../etc")


def test_fingerprint_mismatch_names_the_changed_file(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    config = config_mod.load(root)
    fingerprints.record(config)
    fingerprints.verify(config)
    (root / "program.md").write_text("changed")
    with pytest.raises(UserError, match=r"program.md \(modified\)"):
        fingerprints.verify(config)


OK_METRIC = "[metric]\nsource = 'json'\nkey = 'loss'\n"


@pytest.mark.parametrize("toml, message", [
    ("[run]\ntimout_s = 5\n", "[run] timout_s is not a known key"),
    ("[run]\ntimeout_s = -1\n", "[run] timeout_s must be positive"),
    ("[run]\ntimeout_s = 'x'\n", "[run] timeout_s must be a number"),
    ("[metric]\ndirection = 'down'\n", "[metric] direction must be one of minimize, maximize"),
    ("[metric]\nsource = 'regex'\n", "[metric] pattern is required"),
    ("[metric]\nsource = 'regex'\npattern = 'val: [0-9]+'\n", "needs one capturing group"),
    ("[metric]\nsource = 'json'\n", "[metric] key is required"),
    (OK_METRIC + "[search_space]\nlr = { low = 1, high = 2 }\n", "UPPER_CASE"),
    (OK_METRIC + "[search_space]\nLR = { low = 2, high = 1 }\n", "low < high"),
    ("[bogus]\n", "[bogus] is not a known section"),
    ("[task]\neditable = ['../x.py']\n", "inside the repository"),
    ("[run\n", "not valid TOML"),
])
def test_configuration_errors_name_the_key(tmp_path, toml, message):
    (tmp_path / "autoresearch.toml").write_text(toml)
    with pytest.raises(UserError) as info:
        config_mod.load(tmp_path)
    assert message in str(info.value)
    assert "autoresearch.toml" in str(info.value)
