"""The deadline rule: a run still on pace while other work takes the machine is given the time the other
work took, up to a cap; a run slow on its own is stopped at its deadline.

Most tests replay synthetic traces (CPU received, progress lines, the machine's other load, second by
second) through the pure rule, as the supervisor calls it: at the deadline and at each moved deadline. The
real runs pin themselves and CPU hogs to one core, so the run is starved by construction whatever the
rest of the machine does; their verdicts depend on CPU time per step, not on wall time.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoresearch import config as config_mod
from autoresearch.loop.abort import champion_pace
from autoresearch.loop.ledger import Experiment
from autoresearch.loop.trial import _status, deadline_rule, fold_specs, smoke_spec
from autoresearch.runner import load
from autoresearch.runner.deadline import DeadlineRule, Pace, Progress, decide
from autoresearch.runner.process import run_spec
from autoresearch.runner.spec import ExitKind, RunOutcome, RunSpec
from autoresearch.scoring.sources import Score

CONFIG = config_mod.parse(Path("/tmp"), {"metric": {"pattern": "(x)"}})
CHAMPION = Pace(cpu_seconds=70.0, steps=400, total_steps=400)     # 5 s start-up, 400 × 0.15 s, 5 s embedding


@dataclass
class Trace:
    """A synthetic run: ``start_cpu`` of loading, ``steps`` of ``step_cpu`` each, then ``end_cpu`` of
    embedding; it asks for ``demand`` cores and gets ``share`` of them while other work holds ``other``
    cores of ``cores`` (from ``busy_from`` seconds on); a progress line every ``every`` steps."""

    steps: int = 400
    step_cpu: float = 0.15
    start_cpu: float = 5.0
    end_cpu: float = 5.0
    demand: float = 1.0
    share: float = 1.0
    cores: int = 2
    other: float = 1.0
    busy_from: float = 0.0
    every: int = 50

    @property
    def needs(self) -> float:
        return self.start_cpu + self.steps * self.step_cpu + self.end_cpu


def replay(trace: Trace, rule: DeadlineRule | None, timeout_s: float, dt: float = 0.05):
    """(how it ended: "finished" | "killed", wall seconds, the last verdict or None), as the supervisor would."""
    wall = cpu = other_busy = 0.0
    first = last = None
    deadline, verdict = timeout_s, None
    printed = 0
    while True:
        busy = wall >= trace.busy_from
        rate = trace.demand * (trace.share if busy else 1.0)
        cpu += rate * dt
        other_busy += (trace.other if busy else 0.0) * dt
        wall += dt
        step = min(trace.steps, int(max(0.0, cpu - trace.start_cpu) / trace.step_cpu))
        while printed + trace.every <= step:
            printed += trace.every
            at = trace.start_cpu + printed * trace.step_cpu
            first = first or (at, printed)
            last = (at, printed, trace.steps)
        if cpu >= trace.needs:
            return "finished", wall, verdict
        if wall >= deadline:
            if rule is None:
                return "killed", wall, None
            got_wait = (trace.demand * wall - cpu)   # runnable but not running
            demand = (cpu + got_wait) / wall
            verdict = decide(rule, timeout_s, Progress(wall=wall, cpu=cpu, demand=demand, cores=trace.cores,
                                                       other=other_busy / wall, first=first, last=last))
            if verdict.kind != "extend":
                return "killed", wall, verdict
            deadline = verdict.deadline


RULE = DeadlineRule(cap=3.0, tolerance=1.5, pace=CHAMPION)


def test_a_run_slowed_by_another_process_but_on_pace_is_not_killed_at_the_deadline():
    # the champion's run needs 70 s of CPU; with half of its core taken it needs ~140 s of wall time
    starved = Trace(share=0.5)
    assert replay(starved, None, 100.0)[0] == "killed"                 # the old wall-clock rule
    how, wall, verdict = replay(starved, RULE, 100.0)
    assert how == "finished" and 135 < wall < 145
    assert verdict.kind == "extend" and "deadline moved to" in verdict.why and "took about" in verdict.why


def test_a_run_slowed_by_another_process_that_starts_midway_is_given_what_it_lost():
    how, wall, _ = replay(Trace(share=0.5, busy_from=40.0, other=1.5), RULE, 80.0)
    assert how == "finished" and wall == pytest.approx(100.0, abs=0.5)   # 40 s alone, then 60 s at half speed


def test_a_run_slow_on_its_own_on_a_quiet_machine_is_still_a_timeout():
    how, wall, verdict = replay(Trace(steps=1000, other=0.1), RULE, 100.0)
    assert (how, verdict.kind) == ("killed", "own") and wall == pytest.approx(100.0, abs=0.1)
    assert "slow on its own" in verdict.why


def test_a_run_that_starves_itself_with_too_many_threads_has_lost_nothing_to_other_work():
    # it asks for 8 cores of 2 and gets a quarter of that, but nothing else runs on the machine
    how, wall, verdict = replay(Trace(steps=2000, demand=8.0, share=0.25, other=0.0), DeadlineRule(cap=3.0), 100.0)
    assert (how, verdict.kind) == ("killed", "own") and wall == pytest.approx(100.0, abs=0.1)
    assert "took almost nothing from it" in verdict.why


def test_a_starved_run_whose_steps_cost_more_cpu_than_the_champions_is_a_timeout():
    # each step costs 0.3 s of CPU against the champion's 0.175 (start-up included): more than 1.5×
    how, wall, verdict = replay(Trace(step_cpu=0.3, share=0.5), RULE, 100.0)
    assert (how, verdict.kind) == ("killed", "own") and wall == pytest.approx(100.0, abs=0.1)
    assert "its steps cost 0.3 s of CPU each against the champion's 0.175 s" in verdict.why


def test_a_starved_run_with_many_more_steps_than_the_champion_is_a_timeout():
    how, _, verdict = replay(Trace(steps=1200, share=0.5), RULE, 100.0)
    assert (how, verdict.kind) == ("killed", "own") and "its 1200 steps need about" in verdict.why


def test_without_the_champions_pace_a_starved_run_gets_what_it_lost_and_no_more():
    # the baseline: no champion yet. 400 steps at 0.4 s need 170 s of CPU, more than the 100 s deadline
    # even alone: once it has had 100 s of the CPU it asked for, it is stopped as slow on its own
    no_pace = DeadlineRule(cap=3.0)
    how, wall, verdict = replay(Trace(step_cpu=0.4, share=0.6), no_pace, 100.0)
    assert (how, verdict.kind) == ("killed", "own") and 160 < wall < 175   # 100 s of CPU at 0.6 of a core
    assert "slow on its own" in verdict.why
    assert replay(Trace(share=0.5), no_pace, 100.0)[0] == "finished"


def test_a_run_starved_beyond_the_cap_is_stopped_there_and_judged_starved():
    how, wall, verdict = replay(Trace(share=0.1, other=1.8, every=10), RULE, 100.0)
    assert (how, verdict.kind) == ("killed", "capped") and wall == pytest.approx(300.0, abs=0.5)
    assert "hard cap of 300 s" in verdict.why


def test_the_deadline_only_moves_later_and_never_past_the_cap():
    rule = DeadlineRule(cap=2.0)
    p = Progress(wall=100.0, cpu=10.0, demand=1.0, cores=1, other=0.9, first=(1.0, 10), last=(10.0, 100, 400))
    verdict = decide(rule, 100.0, p)
    assert verdict.kind == "extend" and verdict.deadline == pytest.approx(190.0) and verdict.lost == pytest.approx(90.0)
    again = decide(rule, 100.0, Progress(**{**p.__dict__, "wall": 190.0}))   # no CPU since: up to the cap
    assert again.kind == "extend" and again.deadline == 200.0
    last = decide(rule, 100.0, Progress(**{**p.__dict__, "wall": 200.0}))
    assert last.kind == "capped" and last.deadline == 200.0


def test_the_rule_needs_progress_lines_load_figures_and_a_run_that_asks_for_cpu():
    p = dict(wall=100.0, cpu=10.0, demand=1.0, cores=1, other=0.9, first=(1.0, 10), last=(10.0, 100, 400))
    assert decide(RULE, 100.0, Progress(**{**p, "last": None, "first": None})).kind == "none"
    assert decide(RULE, 100.0, Progress(**{**p, "other": None})).kind == "none"
    assert decide(RULE, 100.0, Progress(**{**p, "demand": 0.1})).kind == "none"
    # one progress line: no pace without start-up in it, so only what was lost counts
    assert decide(RULE, 100.0, Progress(**{**p, "first": (10.0, 100)})).kind == "extend"


def test_a_run_slow_on_its_own_is_never_judged_starved_afterwards():
    """The load verdict honours the deadline rule's: "own" is a timeout, however starved the figures."""
    starved = {"wall_seconds": 250.0, "cpu_seconds": 100.0, "cpu_share": 0.4, "wait_seconds": 150.0,
               "cpu_demand": 1.0, "cpu_got": 0.4, "cores": 1, "machine_busy_other": 0.6}
    assert load.judge(starved)[0] is True
    own = {**starved, "deadline": {"verdict": "own", "why": "it had the 100 s deadline's worth ... slow on its own"}}
    over, why = load.judge(own)
    assert over is False and "slow on its own" in why
    spec = RunSpec(name="fold0", command=("x",), cwd=Path("/tmp"), env={}, out_dir=Path("/tmp/o"),
                   log_path=Path("/tmp/l"), timeout_s=100.0, sandbox=False)
    outcome = RunOutcome(spec, ExitKind.TIMEOUT, -15, 250.0, reason="killed at 250 s", extra=dict(own))
    status, reason = _status(outcome, Score(math.nan, {}, ""), CONFIG)
    assert status == "timeout" and "slow on its own" in reason
    capped = {**starved, "deadline": {"verdict": "capped", "why": "still starved at the hard cap"}}
    outcome = RunOutcome(spec, ExitKind.TIMEOUT, -15, 300.0, reason="killed at 300 s", extra=capped)
    assert _status(outcome, Score(math.nan, {}, ""), CONFIG)[0] == "contention"


def test_the_champions_pace_comes_from_its_recorded_runs():
    runs = [{"fold": 0, "kind": "ok", "cpu_seconds": 70.0, "last_step": 400, "total_steps": 400},
            {"fold": 1, "kind": "timeout", "cpu_seconds": 90.0, "last_step": 300, "total_steps": 400},
            {"fold": 2, "kind": "ok", "cpu_seconds": 60.0},                         # no progress lines
            {"fold": 3, "kind": "ok", "cpu_seconds": True, "last_step": 4, "total_steps": 4}]
    champ = Experiment(number=0, tag="t", kind="experiment", status="keep", decision_json=json.dumps({"runs": runs}))
    assert champion_pace(CONFIG, champ) == {0: Pace(70.0, 400, 400)}
    assert champion_pace(CONFIG, None) == {}
    assert Pace(50.0, 200, 400).projected == 100.0 and Pace(70.0, 400, 400).per_step == 0.175


def test_every_fold_spec_carries_the_rule_but_the_smoke_test_does_not(tmp_path):
    config = config_mod.parse(tmp_path, {"metric": {"source": "json", "key": "m"}, "run": {"folds": 2},
                                         "contention": {"deadline_cap": 4, "pace_tolerance": 2}})
    specs = fold_specs(config, tmp_path / "runs", seed=0, sandbox=False, champion_pace={1: CHAMPION})
    rules = [s.deadline for _, s in specs]
    assert rules[0] == DeadlineRule(cap=4.0, tolerance=2.0, pace=None)
    assert rules[1].pace == CHAMPION
    assert smoke_spec(config, tmp_path / "runs", seed=0, sandbox=False).deadline is None
    off = config_mod.parse(tmp_path, {"metric": {"source": "json", "key": "m"}, "contention": {"enabled": False}})
    assert deadline_rule(off, CHAMPION) is None
    never = config_mod.parse(tmp_path, {"metric": {"source": "json", "key": "m"}, "contention": {"deadline_cap": 1}})
    assert deadline_rule(never, CHAMPION) is None


@pytest.mark.parametrize("key, value", [("deadline_cap", 0.5), ("pace_tolerance", 0.9), ("deadline_cap", "3")])
def test_a_bad_deadline_setting_names_its_key(tmp_path, key, value):
    with pytest.raises(Exception, match=rf"\[contention\] {key}"):
        config_mod.parse(tmp_path, {"metric": {"source": "json", "key": "m"}, "contention": {key: value}})


# --- real runs, starved by construction ---------------------------------------------------------------

STEPS = """
import sys, time
steps, cost = int(sys.argv[1]), float(sys.argv[2])
for i in range(1, steps + 1):
    t = time.process_time()
    while time.process_time() - t < cost:
        pass
    print(f"step {i}/{steps} loss {1.0 / i:.4f}", flush=True)
"""


def _starved_run(tmp_path: Path, steps: int, cost: float, rule: DeadlineRule, timeout_s: float) -> RunOutcome:
    """The run, the test and three CPU hogs pinned to one core: the run gets about a quarter of it by fair
    scheduling, and other work holds the rest, whatever else the machine does."""
    script = tmp_path / "steps.py"
    script.write_text(STEPS)
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})      # the run and the hogs inherit it
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(3)]
    try:
        spec = RunSpec(name="fold0", command=(sys.executable, str(script), str(steps), str(cost)), cwd=tmp_path,
                       env={}, out_dir=tmp_path / "out", log_path=tmp_path / "fold0.log", timeout_s=timeout_s,
                       grace_s=0.5, sandbox=False, deadline=rule)
        return run_spec(spec)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        os.sched_setaffinity(0, saved)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
@pytest.mark.slow
def test_a_real_run_starved_by_a_cpu_hog_but_on_pace_finishes_past_its_deadline(tmp_path):
    """0.6 s of CPU in 12 steps under a 1 s deadline: alone it would finish in time; beside the hogs it
    gets a fraction of its core, so it needs several seconds. The cap (40 s) is far beyond what even a
    crowded machine makes of it, so the verdict does not depend on the machine's load."""
    rule = DeadlineRule(cap=40.0, tolerance=1.5, pace=Pace(0.6, 12, 12))
    out = _starved_run(tmp_path, 12, 0.05, rule, timeout_s=1.0)
    assert out.kind is ExitKind.OK, (out.reason, out.extra.get("deadline"))
    assert out.seconds > 1.0 and out.extra["deadline"]["verdict"] == "extended"
    assert out.extra["deadline"]["extended_s"] > 0 and out.extra["last_step"] == 12
    assert "deadline moved to" in (tmp_path / "fold0.log").read_text()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
@pytest.mark.slow
def test_a_real_run_starved_by_a_cpu_hog_but_slow_on_its_own_cpu_is_a_timeout(tmp_path):
    """Each step costs 0.05 s of CPU against the champion's 0.01 s: past 1.5×, whatever its share of the core."""
    rule = DeadlineRule(cap=40.0, tolerance=1.5, pace=Pace(0.4, 40, 40))
    out = _starved_run(tmp_path, 40, 0.05, rule, timeout_s=1.0)
    assert out.kind is ExitKind.TIMEOUT and out.extra["deadline"]["verdict"] == "own", out.extra.get("deadline")
    status, reason = _status(out, Score(math.nan, {}, ""), CONFIG)
    assert status == "timeout" and "slow on its own CPU" in reason
