"""CPU and load figures of a run, and the verdict that tells a starved run from a slow one."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch import config as config_mod
from autoresearch.loop.trial import _status
from autoresearch.runner.spec import ExitKind, RunOutcome, RunSpec
from autoresearch.runner.load import judge
from autoresearch.runner.process import run_spec
from autoresearch.scoring.sources import Score

CONFIG = config_mod.parse(Path("/tmp"), {"metric": {"pattern": "(x)"}})


def figures(**kw) -> dict:
    base = {"wall_seconds": 100.0, "cpu_seconds": 95.0, "cpu_share": 0.95, "wait_seconds": 5.0,
            "cpu_demand": 1.0, "cpu_got": 0.95, "cores": 2, "machine_busy_other": 0.1}
    return {**base, **kw}


def test_a_run_slow_on_its_own_is_not_oversubscribed():
    assert judge(figures())[0] is False                                          # quiet machine, got its CPU
    assert judge(figures(machine_busy_other=1.9))[0] is False                    # busy machine, still got its CPU
    assert judge(figures(cpu_demand=2.0, cpu_got=0.3))[0] is False               # starved only by its own threads
    sleeping = figures(cpu_seconds=0.1, cpu_share=0.001, wait_seconds=2.0, cpu_demand=0.021, cpu_got=0.05,
                       machine_busy_other=1.9)
    over, why = judge(sleeping)
    assert over is False and "waited on something other than the CPU" in why   # asked for almost nothing
    assert judge({"cores": 2})[0] is False                                       # no figures: never a verdict


def test_a_starved_run_on_a_busy_machine_is_oversubscribed():
    over, why = judge(figures(cpu_seconds=15.0, cpu_share=0.15, wait_seconds=85.0, cpu_got=0.15,
                              machine_busy_other=1.8))
    assert over is True
    assert "1.80 of the run's 2 cores" in why and "got 15%" in why
    # the thresholds come from [contention]
    starved = figures(cpu_got=0.4, machine_busy_other=1.2)
    assert judge(starved)[0] is True
    assert judge(starved, busy_other=0.7)[0] is False
    assert judge(starved, min_share=0.3)[0] is False


def _outcome(tmp_path: Path, kind: ExitKind, extra: dict) -> RunOutcome:
    spec = RunSpec(name="fold0", command=("x",), cwd=tmp_path, env={}, out_dir=tmp_path, log_path=tmp_path / "log",
                   timeout_s=1.0, sandbox=False)
    return RunOutcome(spec, kind, -15, 1.2, reason="killed at the 1 s deadline", extra=dict(extra))


def test_trial_status_timeout_or_contention_from_the_figures(tmp_path):
    nan = Score(math.nan, {}, "")
    slow = _outcome(tmp_path, ExitKind.TIMEOUT, figures(machine_busy_other=1.9))
    status, reason = _status(slow, nan, CONFIG)
    assert status == "timeout" and "got its CPU" in reason and slow.extra["oversubscribed"] is False
    starved = _outcome(tmp_path, ExitKind.TIMEOUT, figures(cpu_got=0.2, machine_busy_other=1.9))
    status, reason = _status(starved, nan, CONFIG)
    assert status == "contention" and "oversubscribed" in reason and starved.extra["oversubscribed"] is True
    off = config_mod.parse(Path("/tmp"), {"metric": {"pattern": "(x)"}, "contention": {"enabled": False}})
    assert _status(_outcome(tmp_path, ExitKind.TIMEOUT, starved.extra), nan, off)[0] == "timeout"
    # a run that exits in time is never contention, however starved
    ok = _outcome(tmp_path, ExitKind.OK, figures(cpu_got=0.2, machine_busy_other=1.9))
    assert _status(ok, Score(1.0, {}, ""), CONFIG)[0] == "ok"


@pytest.mark.skipif(not shutil.which("sleep"), reason="needs the sleep program")
@pytest.mark.slow
def test_a_sleeping_run_past_the_deadline_is_still_a_timeout(tmp_path):
    """Real run: it asks for no CPU (``sleep``), so however busy the machine, the deadline is its own doing."""
    spec = RunSpec(name="fold0", command=(shutil.which("sleep"), "60"), cwd=tmp_path, env={}, out_dir=tmp_path / "out",
                   log_path=tmp_path / "log.txt", timeout_s=1.5, grace_s=0.5, sandbox=False)
    out = run_spec(spec)
    assert out.kind is ExitKind.TIMEOUT
    assert out.extra["cpu_demand"] < 0.25 and out.extra["cores"] >= 1
    assert out.extra["machine_busy_other"] is not None
    status, reason = _status(out, Score(math.nan, {}, ""), CONFIG)
    assert status == "timeout" and "waited on something other than the CPU" in reason


def test_cpu_seconds_count_what_the_run_burnt(tmp_path):
    """The run burns 0.4 s of CPU in two processes (by construction: it spins on process_time)."""
    script = tmp_path / "burn.py"
    script.write_text("import subprocess, sys, time\n"
                      "spin = 'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.2: pass'\n"
                      "child = subprocess.Popen([sys.executable, '-c', spin])\n"
                      "exec(spin)\n"
                      "child.wait()\n"
                      "print('step 1/1 loss 0.5', flush=True)\n")
    spec = RunSpec(name="fold0", command=(sys.executable, str(script)), cwd=tmp_path, env={},
                   out_dir=tmp_path / "out", log_path=tmp_path / "log.txt", timeout_s=120, sandbox=False)
    out = run_spec(spec)
    assert out.kind is ExitKind.OK
    assert out.extra["cpu_seconds"] >= 0.4
    assert out.extra["cpu_seconds"] <= out.extra["wall_seconds"] * out.extra["cores"] + 0.05
    assert out.extra["curve"] == [{"step": 1, "total": 1, "loss": 0.5}]
    assert out.extra["last_step"] == 1 and out.extra["total_steps"] == 1
    assert "CPU" in spec.log_path.read_text().splitlines()[-1]


def _hogs(n: int) -> list[subprocess.Popen]:
    # each in its own session: with autogroup scheduling, a session shares one CPU slot
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(n)]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
@pytest.mark.slow
def test_a_run_pinned_beside_hogs_is_judged_oversubscribed(tmp_path):
    """Real run on one core with four CPU hogs: fair scheduling gives it about a fifth of that core,
    whatever the rest of the machine does, so the verdict is starved by construction."""
    cpu = min(os.sched_getaffinity(0))
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})   # the run and the hogs inherit it
    hogs = _hogs(4)
    try:
        script = tmp_path / "spin.py"
        script.write_text("while True:\n    pass\n")
        spec = RunSpec(name="fold0", command=(sys.executable, str(script)), cwd=tmp_path, env={},
                       out_dir=tmp_path / "out", log_path=tmp_path / "log.txt", timeout_s=2.0, grace_s=0.5,
                       sandbox=False)
        out = run_spec(spec)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        os.sched_setaffinity(0, saved)
    assert out.kind is ExitKind.TIMEOUT and out.extra["cores"] == 1
    status, reason = _status(out, Score(math.nan, {}, ""), CONFIG)
    assert status == "contention", (reason, out.extra)


def test_a_starved_run_too_slow_even_with_its_cpu_is_still_a_timeout():
    """Steps reached: at this pace the candidate would not have made the deadline even alone."""
    starved = figures(wall_seconds=100.0, cpu_seconds=20.0, cpu_share=0.2, cpu_got=0.2, machine_busy_other=1.8)
    assert judge({**starved, "last_step": 300, "total_steps": 400})[0] is True      # needed ~27 s of 100 s
    over, why = judge({**starved, "last_step": 10, "total_steps": 400})            # needed ~800 s
    assert over is False and "step 10/400" in why and "needed about 800 s" in why
    assert judge({**starved, "last_step": 400, "total_steps": 400})[0] is True     # evaluating after training
