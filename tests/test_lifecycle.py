"""One lifecycle for every driver: the same scripted night, with one candidate in flight and with two,
ends in the same statuses, phase budgets, notes and brief lines.

The script, in order: a keep, a discard, an invalid edit, an agent error, a crash that its fix repairs, a
close call that needs a confirmation run, and a run cut off by contention (then run again). The toy
script's metric is a known function of its constants, so every verdict is known beforehand; the run
starved by contention is injected at the executor (its figures are given, the loop's handling is under
test), so no verdict here depends on how busy the machine is.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from autoresearch import config as config_mod
from autoresearch.agents.base import Proposal
from autoresearch.loop import records
from autoresearch.loop.engine import Engine, open_ledger
from autoresearch.loop.gitops import Git
from autoresearch.runner.executor import LocalExecutor, skipped
from autoresearch.runner.spec import ExitKind, RunOutcome
from toyrepo import make_toy_repo

pytestmark = pytest.mark.slow

TRAIN = '''\
"""The toy script with a close-call constant: CLOSE = 1 is better by 0.015 on average, unevenly by fold."""
import math
import os
import time

LR = 0.01  # learning rate
CLOSE = 0  # a small, uneven gain
SLEEP = 0.1  # seconds of pretend training

fold = int(os.environ.get("AUTORESEARCH_FOLD") or 0)
seed = int(os.environ.get("AUTORESEARCH_SEED") or 0)
for step in range(1, 3):
    time.sleep(SLEEP / 2)
    print(f"step {step}/2 loss {1.0 / step:.3f}", flush=True)
val = (math.log10(LR) + 3) ** 2 + 1.0 + 0.02 * fold - CLOSE * (0.015 + (0.01 if fold == 0 else -0.01))
val += 1e-6 * ((seed * 7 + fold) % 13)      # a seed honoured, far below every difference that matters
print(f"val_bpb: {val:.6f}")
'''


def _set(name, value):
    def edit(work: Path) -> None:
        text = (work / "train.py").read_text()
        (work / "train.py").write_text(re.sub(rf"^{name} = \S+", f"{name} = {value}", text, count=1, flags=re.M))
    return edit


def _crash(work: Path) -> None:
    _set("LR", "0.0009")(work)
    text = (work / "train.py").read_text()
    (work / "train.py").write_text(text.replace("val = (math", "raise SystemExit(3)\nval = (math", 1))


SCRIPT = [
    ("LR 0.01 -> 0.001", _set("LR", "0.001")),                                   # keep
    ("LR -> 0.1", _set("LR", "0.1")),                                            # discard
    ("rewrite the rules", lambda w: (w / "program.md").write_text("new rules")),  # invalid
    ("(the API is down)", None),                                                 # agent error, asked again
    ("LR -> 0.0009 (crashes first)", _crash),                                    # crash, then its fix
    ("CLOSE on", _set("CLOSE", "1")),                                            # close call: a confirmation run
    ("LR -> 0.002 (starved once)", _set("LR", "0.002")),                         # contention, then again
]


class Scripted:
    """Plays SCRIPT one entry per call; a fix turn removes the planted crash."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls = 0
        self.briefs: list = []

    def propose(self, brief, workdir):
        self.briefs.append(brief)
        work = Path(workdir)
        if brief.attempt > 1:
            text = (work / "train.py").read_text().replace("raise SystemExit(3)\n", "")
            (work / "train.py").write_text(text)
            return Proposal("fix: the stray raise removed", meta={"entry": brief.fixing.get("entry"), "fix": True})
        k, self.calls = self.calls, self.calls + 1
        description, edit = SCRIPT[k]
        if edit is None:
            raise RuntimeError("the API is down (scripted)")
        edit(work)
        pad = work / "scratchpad.md"
        pad.write_text(pad.read_text() + f"- note of entry {k}: {description}\n")
        return Proposal(description, meta={"entry": k})

    def observe(self, *args) -> None:
        pass


class StarvesOnce:
    """The real executor, but the first fold of the candidate that sets LR 0.002 'reaches the deadline
    starved' once (injected load figures)."""

    STARVED = {"wall_seconds": 2.0, "cpu_seconds": 0.3, "cpu_share": 0.15, "wait_seconds": 1.7, "cpu_demand": 1.0,
               "cpu_got": 0.15, "cores": 1, "machine_busy_other": 0.85}

    def __init__(self) -> None:
        self.real = LocalExecutor()
        self.starved = False

    def run(self, specs, keep_going=None):
        outcomes, going = [], True
        for spec in specs:
            if not going:
                outcomes.append(skipped(spec))
                continue
            code = (Path(spec.cwd) / "train.py").read_text()
            if spec.name == "fold0" and "LR = 0.002" in code and not self.starved:
                self.starved = True
                spec.log_path.parent.mkdir(parents=True, exist_ok=True)
                spec.log_path.write_text("step 1/2 loss 1.0\n")
                outcome = RunOutcome(spec, ExitKind.TIMEOUT, -15, 2.0, reason="killed at the 2 s deadline",
                                     extra=dict(self.STARVED))
            else:
                outcome = self.real.run([spec])[0]
            outcomes.append(outcome)
            going = keep_going is None or keep_going(outcome)
        return outcomes


def _night(root: Path, parallel: int) -> dict:
    make_toy_repo(root, rule="noise")
    (root / "train.py").write_text(TRAIN)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "close-call toy"],
                   cwd=root, check=True)
    config = config_mod.load(root)
    agent = Scripted()
    engine = Engine(config, tag="n", agent=agent, sandbox=False, ledger=open_ledger(config), executor=StarvesOnce())
    stop = engine.run(max_experiments=7, parallel=parallel)
    rows = engine.ledger.rows(tag="n", kinds=("experiment",))
    phase, used = engine.phase()
    brief = engine.brief()
    numbered = re.compile(r"experiment \d+")
    return {
        "stop": stop.why,
        "outcomes": sorted((r.description, r.status, r.attempt) for r in rows),
        "phase": (phase.number, used),
        "notes": sorted(numbered.sub("experiment N", n) for b in agent.briefs for n in b.notes
                        if not n.startswith("these candidates are running now")),
        "history": sorted((h.status, h.description) for h in brief.history),
        "confirmations": {r.description: r.decision["numbers"]["confirmation_runs"] for r in rows
                          if r.decision.get("numbers")},
        "pad": (root / "scratchpad.md").read_text(),
        "records": records.verify(engine.ledger, Git(root), repair=False),
        "rows": rows,
    }


def test_one_candidate_in_flight_and_two_end_the_same_night(tmp_path):
    one, two = _night(tmp_path / "one", 1), _night(tmp_path / "two", 2)
    expected = [
        ("(agent error) RuntimeError: the API is down (scripted)", "agent_error", 1),
        ("CLOSE on", "keep", 1),
        ("LR -> 0.0009 (crashes first)", "crash", 1),
        ("LR -> 0.002 (starved once)", "contention", 1),
        ("LR -> 0.002 (starved once)", "discard", 1),
        ("LR -> 0.1", "discard", 1),
        ("LR 0.01 -> 0.001", "keep", 1),
        ("fix: the stray raise removed", "discard", 2),
        ("rewrite the rules", "invalid", 1),
    ]
    assert one["outcomes"] == expected, one["outcomes"]
    for key in ("stop", "outcomes", "phase", "notes", "history", "confirmations"):
        assert one[key] == two[key], key
    assert one["stop"] == "reached 7 experiments" and one["phase"] == (2, 4)
    assert one["confirmations"]["CLOSE on"] == 1          # the close call needed one confirmation run
    assert "experiment N was invalid and undone: changed program.md, which is not editable" in one["notes"]
    for night in (one, two):
        assert night["records"] == []
        for k, (description, _) in enumerate(SCRIPT):     # every candidate's notes reached the branch
            if _ is not None and "rules" not in description:
                assert night["pad"].count(f"- note of entry {k}: {description}") == 1, (k, night["pad"])
    # With two in flight, some experiment really ran while another did.
    rows = two["rows"]
    assert any(a.started_at < b.ended_at and b.started_at < a.ended_at
               for a in rows for b in rows if a.number < b.number and a.ended_at and b.ended_at)
