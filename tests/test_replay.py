"""The replay agent: order, derived position, skips, crash fixes, exhaustion, queue validation."""

from pathlib import Path

import pytest

from autoresearch.agents.base import AgentContext, Brief
from autoresearch.hyperparams import read_constants
from autoresearch.agents.replay import ReplayAgent
from autoresearch.errors import UserError

TRAIN = """# tiny train.py
LR = 3e-4            # learning rate
MAX_TEMPERATURE = 2.0
STEPS = 400

def loss(x):
    return x.clamp(0.01, MAX_TEMPERATURE)  # the clamp
"""

QUEUE = '''
[[experiment]]
description = "Lower LR from 3e-4 to 1e-4"
hypothesis = "3e-4 is too high for a pretrained backbone"
phase = 1
set = { LR = 1e-4 }

[[experiment]]
description = "Raise MAX_TEMPERATURE from 2 to 100"
set = { MAX_TEMPERATURE = 100 }
scratchpad = "The clamp capped the logit scale."

[[experiment]]
description = "Clamp in log space"
[[experiment.replace]]
old = "x.clamp(0.01, MAX_TEMPERATURE)"
new = "x.clamp(0.01, MAX_TEMPERATURE).log()"
[[experiment.fix]]
old = ".log()"
new = ".log1p()"

[[experiment]]
description = "Double the steps"
set = { STEPS = 800 }
'''


def make(tmp_path: Path, queue: str = QUEUE, train: str = TRAIN):
    (tmp_path / "train.py").write_text(train)
    (tmp_path / "queue.toml").write_text(queue)
    ctx = AgentContext(root=tmp_path, editable=["train.py", "scratchpad.md"], denied=[])
    return ReplayAgent("queue.toml", ctx)


def brief(past=(), attempt=1, experiment=1):
    return Brief(experiment=experiment, task="t", metric_name="m", direction="minimize", phase_title="",
                 phase_text="", program_rules="", scratchpad="", editable=["train.py", "scratchpad.md"],
                 champion_metric=None, champion_std=None, noise_sigma=None, history=[],
                 attempt=attempt, past_meta=list(past))


def constants(tmp_path):
    return read_constants((tmp_path / "train.py").read_text())


def test_entries_apply_in_order_and_exhaust(tmp_path):
    agent = make(tmp_path)
    assert agent.name == "replay"
    past = []
    p = agent.propose(brief(past), tmp_path)
    assert p.description == "Lower LR from 3e-4 to 1e-4"
    assert p.hypothesis.startswith("3e-4 is too high")
    assert p.meta == {"queue_index": 0, "phase": 1}
    assert p.usage.input_tokens == 0 and p.usage.seconds >= 0
    assert constants(tmp_path)["LR"] == 1e-4
    assert "LR = 0.0001            # learning rate" in (tmp_path / "train.py").read_text()
    past.append(p.meta)

    p = agent.propose(brief(past, experiment=2), tmp_path)
    assert p.meta["queue_index"] == 1
    assert "MAX_TEMPERATURE = 100.0" in (tmp_path / "train.py").read_text()
    past.append(p.meta)

    p = agent.propose(brief(past, experiment=3), tmp_path)
    assert p.meta["queue_index"] == 2
    assert "MAX_TEMPERATURE).log()" in (tmp_path / "train.py").read_text()
    past.append(p.meta)

    p = agent.propose(brief(past, experiment=4), tmp_path)
    assert p.meta["queue_index"] == 3 and constants(tmp_path)["STEPS"] == 800
    past.append(p.meta)

    before = (tmp_path / "train.py").read_text()
    p = agent.propose(brief(past, experiment=5), tmp_path)
    assert p.exhausted and p.description == "queue exhausted"
    assert (tmp_path / "train.py").read_text() == before

    log = (tmp_path / "scratchpad.md").read_text().splitlines()
    assert log[0].startswith("- Exp 1 (plan #1, phase 1): Lower LR from 3e-4 to 1e-4.")
    assert "Changed: LR=0.0001 (was 0.0003)." in log[0]
    assert "Hypothesis: 3e-4 is too high" in log[0]
    assert log[1].startswith("- Exp 2 (plan #2): Raise MAX_TEMPERATURE")
    assert log[2] == "  The clamp capped the logit scale."
    assert len(log) == 5


def test_position_is_derived_so_resume_replays_the_same_entry(tmp_path):
    agent = make(tmp_path)
    first = agent.propose(brief(), tmp_path)
    # The experiment was interrupted: the engine does not pass its meta, and resets the tree.
    (tmp_path / "train.py").write_text(TRAIN)
    again = make(tmp_path).propose(brief(), tmp_path)   # a fresh agent, as after a restart
    assert again.meta["queue_index"] == first.meta["queue_index"] == 0
    # Unordered past_meta and foreign entries: the highest queue_index counts.
    p = agent.propose(brief([{"queue_index": 1}, {}, {"queue_index": 0}, {"queue_index": "x"}]), tmp_path)
    assert p.meta["queue_index"] == 2


def test_non_matching_replace_is_skipped_with_reason(tmp_path):
    agent = make(tmp_path, train=TRAIN.replace("x.clamp(0.01, MAX_TEMPERATURE)", "x"))
    p = agent.propose(brief([{"queue_index": 0}, {"queue_index": 1}]), tmp_path)
    assert p.meta["queue_index"] == 3
    assert p.description == "Double the steps"
    [skip] = p.meta["skipped"]
    assert skip["index"] == 2 and "found 0 times" in skip["reason"]
    assert constants(tmp_path)["STEPS"] == 800


def test_replace_matching_twice_is_skipped(tmp_path):
    train = TRAIN + "\ny = x.clamp(0.01, MAX_TEMPERATURE)\n"
    agent = make(tmp_path, train=train)
    p = agent.propose(brief([{"queue_index": 0}, {"queue_index": 1}]), tmp_path)
    assert p.meta["skipped"][0]["index"] == 2 and "found 2 times" in p.meta["skipped"][0]["reason"]


def test_skips_at_the_end_exhaust(tmp_path):
    without_last = QUEUE.split('[[experiment]]\ndescription = "Double')[0]
    agent = make(tmp_path, queue=without_last, train=TRAIN.replace("x.clamp(0.01, MAX_TEMPERATURE)", "x"))
    p = agent.propose(brief([{"queue_index": 0}, {"queue_index": 1}]), tmp_path)
    assert p.exhausted and p.meta["skipped"][0]["index"] == 2


def test_fix_on_second_attempt(tmp_path):
    agent = make(tmp_path)
    p = agent.propose(brief([{"queue_index": 0}, {"queue_index": 1}]), tmp_path)
    assert p.meta["queue_index"] == 2
    # Attempt 2 on the crashed tree: the fix applies on top of the entry.
    fix = agent.propose(brief([{"queue_index": 0}, {"queue_index": 1}, p.meta], attempt=2), tmp_path)
    assert fix.meta == {"queue_index": 2, "fix": True}
    assert "MAX_TEMPERATURE).log1p()" in (tmp_path / "train.py").read_text()
    assert "crashed; applying the planned fix" in (tmp_path / "scratchpad.md").read_text()


def test_fix_not_matching_or_already_tried_gives_up(tmp_path):
    agent = make(tmp_path)
    # The tree does not hold the crashed change (".log()"): the fix does not apply.
    p = agent.propose(brief([{"queue_index": 2}], attempt=2), tmp_path)
    assert p.meta["no_fix"] is True and "found 0 times" in p.meta["reason"]
    assert (tmp_path / "train.py").read_text() == TRAIN
    # The fix itself crashed: attempt 3 changes nothing.
    agent.propose(brief([{"queue_index": 0}, {"queue_index": 1}]), tmp_path)
    tried = [{"queue_index": 2}, {"queue_index": 2, "fix": True}]
    before = (tmp_path / "train.py").read_text()
    p = agent.propose(brief(tried, attempt=3), tmp_path)
    assert p.meta["no_fix"] is True and (tmp_path / "train.py").read_text() == before


def test_no_fix_planned_changes_nothing(tmp_path):
    agent = make(tmp_path)
    agent.propose(brief(), tmp_path)
    before = (tmp_path / "train.py").read_text()
    p = agent.propose(brief([{"queue_index": 0}], attempt=2), tmp_path)
    assert p.meta == {"queue_index": 0, "no_fix": True}
    assert not p.exhausted
    assert (tmp_path / "train.py").read_text() == before


@pytest.mark.parametrize("queue,needle", [
    ("[[experiment]\ndescription = 'x'\n", "not valid TOML"),
    ("", "no [[experiment]] entries"),
    ("[[experiment]]\ndescription = 'a'\n[[experiment]]\ndescripton = 'b'\n", "experiment #2: unknown key 'descripton'"),
    ("[[experiment]]\nhypothesis = 'a'\n", "experiment #1: `description` is required"),
    ("[[experiment]]\ndescription = 'a'\n[[experiment]]\ndescription = 'b'\nset = { LRR = 1.0 }\n",
     "experiment #2: set.LRR is not a constant of train.py (known: LR, MAX_TEMPERATURE, STEPS)"),
    ("[[experiment]]\ndescription = 'a'\nset = { lr = 1.0 }\n", "set.lr: names must be UPPER_CASE"),
    ("[[experiment]]\ndescription = 'a'\nfile = 'prepare.py'\n", "experiment #1 file = 'prepare.py' is not an editable file"),
    ("[[experiment]]\ndescription = 'a'\nset = { LR = nan }\n", "set.LR"),
    ("[[experiment]]\ndescription = 'a'\nphase = 'one'\n", "`phase` must be an integer"),
    ("[[experiment]]\ndescription = 'a'\n[[experiment.replace]]\nold = 'x'\n",
     "experiment #1 replace #1: `new` is required"),
    ("[[experiment]]\ndescription = 'a'\n[[experiment.fix]]\nold = 'x'\nnew = 'y'\nfiel = 'z'\n",
     "experiment #1 fix #1: unknown key 'fiel'"),
    ("title = 'plan'\n[[experiment]]\ndescription = 'a'\n", "unknown top-level key 'title'"),
])
def test_queue_validation_names_file_entry_and_key(tmp_path, queue, needle):
    with pytest.raises(UserError) as info:
        make(tmp_path, queue=queue)
    assert needle in str(info.value)
    assert "queue.toml" in str(info.value)


def test_missing_queue_file(tmp_path):
    ctx = AgentContext(root=tmp_path, editable=["train.py"], denied=[])
    with pytest.raises(UserError, match="not found"):
        ReplayAgent(tmp_path / "nope.toml", ctx)


def test_scratchpad_created_and_appended_without_clobbering(tmp_path):
    agent = make(tmp_path)
    (tmp_path / "scratchpad.md").write_text("# Notes\nno trailing newline")
    agent.propose(brief(), tmp_path)
    text = (tmp_path / "scratchpad.md").read_text()
    assert text.startswith("# Notes\nno trailing newline\n- Exp 1 (plan #1")
    assert text.endswith("\n")
