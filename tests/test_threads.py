"""The thread set-up of every run: the count from the cores given and free, workers that do not spin.

The rule itself (``threads.choose``) is pure and tested on given loads; the real runs check that the set-up
reaches the run's environment, its log and its figures, whatever the machine's load.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from autoresearch import config as config_mod
from autoresearch.runner import threads
from autoresearch.runner.local_parallel import LocalParallelExecutor, Slot
from autoresearch.runner.process import run_spec
from autoresearch.runner.spec import ExitKind, RunSpec
from autoresearch.runner.threads import THREAD_VARS, choose, environment


def test_a_run_gets_every_core_it_may_use_when_they_are_free():
    plan = choose(cores=2, busy=0.1)
    assert (plan.threads, plan.rule) == (2, "cores")
    assert plan.summary == "threads 2 of 2 (0.1 cores busy at start)"


def test_a_core_busy_with_other_work_at_the_start_is_not_given_a_thread():
    plan = choose(cores=2, busy=1.0)
    assert plan.threads == 1 and plan.summary == "threads 1 of 2 (1.0 core busy at start)"
    assert choose(cores=2, busy=0.6).threads == 1          # half a core busy or more counts as taken
    assert choose(cores=2, busy=0.4).threads == 2
    assert choose(cores=8, busy=5.2).threads == 3
    assert choose(cores=2, busy=2.0).threads == 1          # never fewer than one


def test_a_slot_share_bounds_the_count_and_the_load_lowers_it():
    assert choose(cores=8, share=2, busy=0.0).threads == 2
    assert choose(cores=2, share=2, busy=1.0).threads == 1
    assert choose(cores=1, share=2, busy=0.0).threads == 1            # a share above the affinity: the affinity
    assert choose(cores=4, share=0.25, busy=0.0).threads == 1          # a fractional share: one thread
    assert choose(cores=4, share=2, busy=None).summary == "threads 2 of 2 (load not measured)"


def test_an_explicit_count_is_respected_in_its_order():
    # 1. [resources] threads
    assert choose(cores=2, busy=1.9, explicit=4, spec_env={"OMP_NUM_THREADS": "1"}).threads == 4
    # 2. the spec's OMP_NUM_THREADS (the task or the caller chose it), even over a slot's share
    plan = choose(cores=2, share=2, busy=0.0, spec_env={"OMP_NUM_THREADS": "3"})
    assert (plan.threads, plan.rule) == (3, "spec") and "set by OMP_NUM_THREADS of the run" in plan.summary
    # 3. a slot's share wins over the tool's environment (the slot was cut for this run)
    assert choose(cores=2, share=2, busy=0.0, tool_env={"OMP_NUM_THREADS": "8"}).threads == 2
    # 4. the tool's environment, as the person set it for the machine
    plan = choose(cores=2, busy=1.5, tool_env={"OMP_NUM_THREADS": "2"})
    assert (plan.threads, plan.rule) == (2, "environment")
    # a value that is not a positive count is no setting
    assert choose(cores=2, busy=1.0, tool_env={"OMP_NUM_THREADS": "zero"}).rule == "cores"
    assert choose(cores=2, busy=1.0, spec_env={"OMP_NUM_THREADS": "0"}).rule == "cores"


def test_the_environment_carries_the_count_and_passive_waiting_unless_already_set():
    plan = choose(cores=2, busy=1.0)
    env = environment(plan, {}, tool_env={})
    assert {k: env[k] for k in THREAD_VARS} == dict.fromkeys(THREAD_VARS, "1")
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["OPENBLAS_THREAD_TIMEOUT"] == "4"
    mine = environment(plan, {"MKL_NUM_THREADS": "4", "OMP_WAIT_POLICY": "ACTIVE"}, tool_env={})
    assert "MKL_NUM_THREADS" not in mine and "OMP_WAIT_POLICY" not in mine    # the spec's own values stay
    assert "OMP_WAIT_POLICY" not in environment(plan, {}, tool_env={"OMP_WAIT_POLICY": "ACTIVE"})


def test_the_load_is_measured_only_when_it_can_change_the_count():
    assert threads.needs_measure(cores=2, share=0, explicit=0, spec_env={}, tool_env={}) is True
    assert threads.needs_measure(cores=1, share=0, explicit=0, spec_env={}, tool_env={}) is False
    assert threads.needs_measure(cores=8, share=1, explicit=0, spec_env={}, tool_env={}) is False
    assert threads.needs_measure(cores=2, share=0, explicit=2, spec_env={}, tool_env={}) is False
    assert threads.needs_measure(cores=2, share=0, explicit=0, spec_env={}, tool_env={"OMP_NUM_THREADS": "2"}) is False


ENV_DUMP = "import json, os; json.dump(dict(os.environ), open(os.environ['DUMP'], 'w'))"


def _spec(tmp_path: Path, **kw) -> RunSpec:
    script = tmp_path / "dump.py"
    script.write_text(ENV_DUMP)
    base = dict(name="fold0", command=(sys.executable, str(script)), cwd=tmp_path,
                env={"DUMP": str(tmp_path / "env.json")}, out_dir=tmp_path / "out", log_path=tmp_path / "run.log",
                timeout_s=60, sandbox=False)
    return RunSpec(**{**base, **kw})


def test_every_run_records_its_thread_set_up_in_its_figures_and_log(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    out = run_spec(_spec(tmp_path, threads=3))
    assert out.kind is ExitKind.OK
    env = json.loads((tmp_path / "env.json").read_text())
    assert {env[k] for k in THREAD_VARS} == {"3"} and env["OMP_WAIT_POLICY"] == "PASSIVE"
    record = out.extra["threads"]
    assert record["threads"] == 3 and record["rule"] == "config"
    assert record["summary"] == "threads 3 of %d (set by [resources] threads)" % len(os.sched_getaffinity(0))
    header = (tmp_path / "run.log").read_text().splitlines()[2]
    assert header == f"# {record['summary']}; OMP_WAIT_POLICY=PASSIVE"


def test_an_inherited_thread_count_and_wait_policy_are_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    out = run_spec(_spec(tmp_path))
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["OMP_NUM_THREADS"] == env["AUTORESEARCH_CPUS"] == "5" and env["OMP_WAIT_POLICY"] == "ACTIVE"
    assert out.extra["threads"]["rule"] == "environment"


def test_a_slot_gives_its_share_not_its_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    ex = LocalParallelExecutor([Slot(0, threads=1)])
    out = ex.run([_spec(tmp_path)])[0]
    env = json.loads((tmp_path / "env.json").read_text())
    assert {env[k] for k in THREAD_VARS} == {"1"}
    assert out.extra["threads"]["rule"] == "share" and out.spec.cpus == 0.0   # the outcome keeps the caller's spec


def test_resources_threads_reaches_every_fold_spec(tmp_path):
    from autoresearch.loop.trial import fold_specs, smoke_spec

    config = config_mod.parse(tmp_path, {"metric": {"source": "json", "key": "m"}, "run": {"folds": 2},
                                         "resources": {"threads": 2}})
    specs = fold_specs(config, tmp_path / "runs", seed=0, sandbox=False)
    assert [s.threads for _, s in specs] == [2, 2]
    assert smoke_spec(config, tmp_path / "runs", seed=0, sandbox=False).threads == 2
    with pytest.raises(Exception, match=r"\[resources\] threads"):
        config_mod.parse(tmp_path, {"metric": {"source": "json", "key": "m"}, "resources": {"threads": -1}})


SPIN = textwrap.dedent("""
    import time, torch
    torch.set_num_threads(2)
    a = torch.randn(256, 256)
    a @ a
    cpu0, busy = time.process_time(), 0.0
    for _ in range(100):
        t = time.process_time(); a @ a; busy += time.process_time() - t
        time.sleep(0.004)
    print(f"idle_cpu {time.process_time() - cpu0 - busy:.3f}")
""")


@pytest.mark.skipif(shutil.which("true") is None, reason="needs a POSIX system")
def test_openmp_workers_of_a_run_sleep_while_they_wait(tmp_path, monkeypatch):
    """torch's OpenMP workers spin between parallel regions unless told to wait passively: CPU time spent
    while the main thread sleeps is the measure (near zero when passive, whatever the machine's load)."""
    pytest.importorskip("torch")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    script = tmp_path / "spin.py"
    script.write_text(SPIN)
    spec = RunSpec(name="spin", command=(sys.executable, str(script)), cwd=tmp_path, env={}, out_dir=tmp_path / "out",
                   log_path=tmp_path / "spin.log", timeout_s=120, sandbox=False, threads=2)
    out = run_spec(spec)
    assert out.kind is ExitKind.OK, spec.log_path.read_text()
    idle = float(next(ln.split()[1] for ln in spec.log_path.read_text().splitlines() if ln.startswith("idle_cpu")))
    assert idle < 0.15, f"{idle:.3f} s of CPU spent by waiting workers in ~0.4 s of sleep"
