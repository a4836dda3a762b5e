"""A competing CPU-heavy load beside the loop: no candidate is charged a timeout for it.

The toy repository's train.py burns the CPU time written in a file the test controls. The test pins
itself to one core (the runs and the hogs inherit it) and starts four busy processes there, so each run
gets about a fifth of that core, by fair scheduling, whatever else the machine does: the verdict
"starved" is certain by construction, not a matter of how busy the machine happens to be. When the loop
pauses, the test stops the hogs; the champion is timed again, and the starved candidate runs again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch import config as config_mod
from autoresearch.agents import make_agent
from autoresearch.agents.base import AgentContext
from autoresearch.loop.engine import Engine, open_ledger
from toyrepo import make_toy_repo

TRAIN = '''\
"""Toy training script whose CPU work the test sets from outside."""
import math
import os
import random
import time

LR = 0.01  # learning rate
SEED = 0  # random seed
WORK_FILE = {work!r}

work = float(open(WORK_FILE).read())  # seconds of CPU to burn
rng = random.Random(int(os.environ.get("AUTORESEARCH_SEED") or 0))
t0 = time.process_time()
while time.process_time() - t0 < work:
    pass
print("step 1/1 loss 1.0", flush=True)
print(f"val_bpb: {{(math.log10(LR) + 3) ** 2 + 1.0 + rng.gauss(0, 0.01):.6f}}")
'''

QUEUE = '''\
[[experiment]]
description = "LR 1e-2 -> 1e-3"
set = { LR = 0.001 }

[[experiment]]
description = "LR 1e-3 -> 1e-1"
set = { LR = 0.1 }
'''

SETTINGS = '''
[contention]
pause_after = 2
pause_s = 0.2
pause_max_s = 1
'''



def _named(event) -> tuple[str, dict]:
    """A loop event as (snake_case name, fields), e.g. ("contention_pause", {"message": ..., "seconds": ...})."""
    import dataclasses

    from autoresearch.events import handler_name

    return handler_name(type(event))[len("on_"):], dataclasses.asdict(event) if dataclasses.is_dataclass(event) else {}

def _repo(tmp_path: Path) -> tuple[Path, Path]:
    work = tmp_path / "work"
    work.write_text("0")
    root = make_toy_repo(tmp_path / "toy", rule="greedy", queue=QUEUE)
    (root / "train.py").write_text(TRAIN.format(work=str(work)), encoding="utf-8")
    toml = (root / "autoresearch.toml").read_text()
    toml = (toml.replace("time_budget_s = 10", "time_budget_s = 2").replace("timeout_s = 30", "timeout_s = 2")
            .replace("grace_s = 1", "grace_s = 0.5").replace("folds = 2", "folds = 1")) + SETTINGS
    (root / "autoresearch.toml").write_text(toml)
    subprocess.run(["git", "commit", "-qam", "cpu work from a file"], cwd=root, check=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    return root, work


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
@pytest.mark.slow
def test_a_busy_machine_charges_no_candidate_a_timeout(tmp_path):
    root, work = _repo(tmp_path)
    config = config_mod.load(root)
    assert config.run.timeout_s == 2 and config.contention.pause_after == 2
    events: list[tuple[str, dict]] = []
    hogs: list[subprocess.Popen] = []

    def stop_hogs():
        for hog in hogs:
            hog.kill()
            hog.wait()
        hogs.clear()

    def reporter(event):
        kind, data = _named(event)
        events.append((kind, data))
        if kind == "contention_pause":   # the machine calms down while the loop waits
            stop_hogs()
            work.write_text("0")

    context = AgentContext(root=config.root, editable=["train.py", "scratchpad.md"], denied=[config.state_dir])
    engine = Engine(config, tag="t", sandbox=False, ledger=open_ledger(config), reporter=reporter)
    engine.agent = make_agent("replay", config, context, tag="t")
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})
    try:
        engine.prepare()
        engine.ensure_baseline()                       # measured on a quiet core
        work.write_text("30")                          # far more than the deadline: only starvation explains it
        hogs.extend(subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
                    for _ in range(4))
        stop = engine.run()
    finally:
        stop_hogs()
        os.sched_setaffinity(0, saved)

    assert "nothing more" in stop.why
    rows = [r for r in engine.ledger.rows(tag="t") if r.kind == "experiment"]
    statuses = [r.status for r in rows]
    assert "timeout" not in statuses
    assert statuses[:2] == ["contention", "contention"], [(r.status, r.reason) for r in rows]
    for row in rows[:2]:
        assert row.description == "LR 1e-2 -> 1e-3"     # the same candidate, run again
        run = row.decision["runs"][0]
        assert run["oversubscribed"] is True and run["kind"] == "timeout"
        assert run["cores"] == 1 and run["machine_busy_other"] >= 0.5 and run["cpu_got"] < 0.5
        assert "oversubscribed" in row.reason
    assert rows[1].meta.get("rerun_of") == rows[0].number and rows[1].agent_seconds == 0
    by_desc = {r.description: r.status for r in rows[2:]}
    assert by_desc == {"LR 1e-2 -> 1e-3": "keep", "LR 1e-3 -> 1e-1": "discard"}
    # No budget spent on them: two finished experiments, and the phase counts only those.
    assert len(engine.finished()) == 2 and engine.phase()[1] == 2
    kinds = [k for k, _ in events]
    assert kinds.count("contention_pause") == 1 and "contention_probe" in kinds
    probe = [d for k, d in events if k == "contention_probe"][-1]
    assert probe["resumed"] is True and "champion" in probe["message"]
    pause = [d for k, d in events if k == "contention_pause"][0]
    assert "2 experiments in a row" in pause["message"]
    recorded = [e.kind for e in engine.ledger.events()]
    assert "contention_pause" in recorded and "contention_probe" in recorded
    # Every finished run carries its load figures in the ledger.
    for row in rows:
        assert row.decision["runs"][0]["cpu_seconds"] is not None


class _StarvedExecutor:
    """Runs the baseline for real; every later candidate fold 'reaches the deadline starved' (injected
    figures), and the champion's probes during a pause are starved on every other call."""

    STARVED = {"wall_seconds": 2.0, "cpu_seconds": 0.3, "cpu_share": 0.15, "wait_seconds": 1.7, "cpu_demand": 1.0,
               "cpu_got": 0.15, "cores": 1, "machine_busy_other": 0.85}

    def __init__(self):
        from autoresearch.runner.executor import LocalExecutor

        self.real = LocalExecutor()
        self.calls: list[str] = []
        self.probes = 0

    def run(self, specs, keep_going=None):
        from autoresearch.runner.executor import skipped

        outcomes, going = [], True
        for spec in specs:
            if not going:
                outcomes.append(skipped(spec))
                continue
            outcomes.append(self._one(spec))
            going = keep_going is None or keep_going(outcomes[-1])
        return outcomes

    def _one(self, spec):
        from autoresearch.runner.spec import ExitKind, RunOutcome

        self.calls.append(spec.log_path.parent.name)
        if spec.log_path.parent.name == "0000":
            return self.real.run([spec])[0]
        if spec.log_path.parent.name.startswith("contention-"):
            self.probes += 1
            if self.probes % 2 == 0:
                return self.real.run([spec])[0]
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        spec.log_path.write_text("step 1/2 loss 1.0\n")
        return RunOutcome(spec, ExitKind.TIMEOUT, -15, 2.0, reason="killed at the 2 s deadline",
                          extra=dict(self.STARVED))


def test_starved_again_and_again_backs_off_then_stops_with_a_message(tmp_path):
    """Injected measurements: the verdict is given, the loop's handling of it is under test."""
    root = make_toy_repo(tmp_path / "toy", rule="greedy", queue=QUEUE)
    toml = root / "autoresearch.toml"
    toml.write_text(toml.read_text() + "\n[contention]\npause_after = 1\npause_s = 0.01\npause_max_s = 0.05\n")
    subprocess.run(["git", "commit", "-qam", "pause at once"], cwd=root, check=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    config = config_mod.load(root)
    events: list[tuple[str, dict]] = []
    executor = _StarvedExecutor()
    context = AgentContext(root=config.root, editable=["train.py", "scratchpad.md"], denied=[config.state_dir])
    engine = Engine(config, tag="t", sandbox=False, ledger=open_ledger(config), executor=executor,
                    reporter=lambda event: events.append(_named(event)))
    engine.agent = make_agent("replay", config, context, tag="t")
    stop = engine.run(max_experiments=5)
    assert "3 experiments in a row were starved" in stop.why and "free some cores" in stop.why
    rows = [r for r in engine.ledger.rows(tag="t") if r.kind == "experiment"]
    assert [r.status for r in rows] == ["contention"] * 3
    assert {r.description for r in rows} == {"LR 1e-2 -> 1e-3"} and engine.finished() == []
    # two pauses (after the 1st and the 2nd), each: a starved probe, a longer pause, a probe that runs fine
    probes = [d for k, d in events if k == "contention_probe"]
    assert [p["resumed"] for p in probes] == [False, True, False, True]
    assert "pausing 0 s more" in probes[0]["message"] and "took" in probes[1]["message"]
    assert [k for k, _ in events].count("contention_pause") == 2
    assert engine.ledger.events("contention_probe")[0].payload["status"] == "contention"
    # a resumed run starts with the starved candidate, without asking the agent
    assert engine.experiment()[0].meta["rerun_of"] == rows[-1].number


def test_starved_and_interrupted_experiments_charge_no_phase_budget_but_aborted_ones_do():
    from autoresearch.loop.phases import current_phase, parse_program

    program = parse_program("## Phase 1: a\nBudget: 2 experiments.\n\n## Phase 2: b\nBudget: 5 experiments.\n")
    assert current_phase(program, ["discard", "contention", "interrupted", "contention"])[0].number == 1
    assert current_phase(program, ["discard", "contention", "aborted"])[0].number == 2
