"""Fold runs side by side on one machine: slots from [resources], pinning, keep_going, cancel."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from autoresearch.config import ResourcesSection
from autoresearch.errors import UserError
from autoresearch.runner.local_parallel import LocalParallelExecutor, Slot, plan_slots
from autoresearch.runner.spec import ExitKind, RunSpec

# Each run writes what it was given, then waits until every run of the batch has started: the batch can
# only finish if the runs really ran side by side (run one after another, the first would time out).
BARRIER = r'''
import json, os, sys, time
d, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
open(os.path.join(d, name + ".started"), "w").close()
info = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "AUTORESEARCH_CPUS")}
info["affinity"] = sorted(os.sched_getaffinity(0))
info["pid"] = os.getpid()
json.dump(info, open(os.path.join(d, name + ".json"), "w"))
end = time.monotonic() + float(sys.argv[4])
while sum(f.endswith(".started") for f in os.listdir(d)) < n:
    if time.monotonic() > end:
        sys.exit(7)
    time.sleep(0.02)
sys.exit(int(sys.argv[5]) if len(sys.argv) > 5 else 0)
'''


def _spec(tmp: Path, name: str, n: int, wait: float = 20.0, code: int = 0) -> RunSpec:
    script = tmp / "barrier.py"
    script.write_text(BARRIER)
    marks = tmp / "marks"
    marks.mkdir(exist_ok=True)
    return RunSpec(name=name, command=(sys.executable, str(script), str(marks), name, str(n), str(wait), str(code)),
                   cwd=tmp, env={}, out_dir=tmp / "out" / name, log_path=tmp / "logs" / f"{name}.log",
                   timeout_s=60, grace_s=1, sandbox=False)


def test_slots_from_resources():
    assert plan_slots(ResourcesSection()) == [Slot(0)]   # the default: today's behaviour
    gpu = plan_slots(ResourcesSection(gpus=1), gpus=["3", "5", "7"], cores=[0, 1])
    assert [s.gpus for s in gpu] == [("3",), ("5",), ("7",)]
    two = plan_slots(ResourcesSection(gpus=2), gpus=["0", "1", "2", "3", "4"], cores=[0])
    assert [s.gpus for s in two] == [("0", "1"), ("2", "3")]
    cpu = plan_slots(ResourcesSection(cpus=2), cores=[0, 1, 2, 3, 4])
    assert [(s.cores, s.threads) for s in cpu] == [((0, 1), 2), ((2, 3), 2)]
    waiting = plan_slots(ResourcesSection(cpus=0.25), cores=[0, 1])
    assert len(waiting) == 8 and all(s.cores == () and s.threads == 1 for s in waiting)
    both = plan_slots(ResourcesSection(cpus=1, gpus=1), gpus=["0", "1", "2", "3"], cores=[0, 1])
    assert len(both) == 2   # the scarcer resource decides
    assert plan_slots(ResourcesSection(cpus=1, pin_cpus=False), cores=[0, 1])[1].cores == ()
    with pytest.raises(UserError, match=r"gpus = 2 per run, but 1 GPU"):
        plan_slots(ResourcesSection(gpus=2), gpus=["0"], cores=[0])
    assert plan_slots(ResourcesSection(gpus=1, gpu_ids=("9",)), gpus=["0", "1"], cores=[0])[0].gpus == ("9",)


def test_runs_side_by_side_each_pinned_to_its_devices(tmp_path):
    cores = sorted(os.sched_getaffinity(0))
    slots = [Slot(k, gpus=(str(10 + k),), cores=(cores[k % len(cores)],), threads=1) for k in range(3)]
    ex = LocalParallelExecutor(slots)
    seen = []
    outcomes = ex.run([_spec(tmp_path, f"fold{k}", 3) for k in range(3)],
                      keep_going=lambda o: seen.append((o.spec.name, threading.get_ident())) or True)
    assert [o.kind for o in outcomes] == [ExitKind.OK] * 3, [o.reason for o in outcomes]
    assert [o.spec.name for o in outcomes] == ["fold0", "fold1", "fold2"]   # in spec order
    assert {tid for _, tid in seen} == {threading.get_ident()}            # keep_going in the caller's thread
    infos = [json.loads((tmp_path / "marks" / f"fold{k}.json").read_text()) for k in range(3)]
    assert sorted(i["CUDA_VISIBLE_DEVICES"] for i in infos) == ["10", "11", "12"]
    assert all(i["OMP_NUM_THREADS"] == i["MKL_NUM_THREADS"] == i["AUTORESEARCH_CPUS"] == "1" for i in infos)
    for o, info in zip(outcomes, infos):
        assert info["affinity"] == list(o.extra["where"]["cores"])
        assert info["CUDA_VISIBLE_DEVICES"] == o.extra["where"]["gpus"][0]
    assert sorted(os.sched_getaffinity(0)) == cores   # the tool's own threads are not bound


@pytest.mark.slow
def test_a_failing_run_skips_the_runs_not_yet_started(tmp_path):
    ex = LocalParallelExecutor([Slot(0), Slot(1)])
    # fold1 outlives fold0's failure (it waits for a barrier that never fills), so no slot frees up before
    # keep_going has seen the failure.
    specs = [_spec(tmp_path, "fold0", 1, code=3), _spec(tmp_path, "fold1", 9, wait=3),
             _spec(tmp_path, "fold2", 1), _spec(tmp_path, "fold3", 1)]
    outcomes = ex.run(specs, keep_going=lambda o: o.kind == ExitKind.OK)
    assert outcomes[0].kind == ExitKind.ERROR
    assert [o.kind for o in outcomes[2:]] == [ExitKind.SKIPPED, ExitKind.SKIPPED]
    assert not (tmp_path / "marks" / "fold2.started").exists()


def test_cancel_interrupts_runs_and_leaves_no_process(tmp_path):
    ex = LocalParallelExecutor([Slot(0), Slot(1)])
    specs = [_spec(tmp_path, f"fold{k}", 5, wait=50) for k in range(2)]   # would wait for 5 starts
    marks = tmp_path / "marks"

    def cancel_when_started():
        while not all((marks / f"fold{k}.json").exists() for k in range(2)):
            time.sleep(0.02)
        ex.cancel_all()

    threading.Thread(target=cancel_when_started, daemon=True).start()
    outcomes = ex.run(specs)
    assert [o.kind for o in outcomes] == [ExitKind.INTERRUPTED] * 2
    for k in range(2):
        pid = json.loads((marks / f"fold{k}.json").read_text())["pid"]
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_resources_section_defaults_and_errors_name_the_key(tmp_path):
    from autoresearch import config

    metric = {"metric": {"pattern": "x: (.*)"}}
    assert config.parse(tmp_path, metric).resources == ResourcesSection()   # today's behaviour
    res = config.parse(tmp_path, {**metric, "resources": {"gpus": 1, "gpu_ids": ["2", "3"], "parallel": 4,
                                                          "custom": {"a100": 1}, "executor": "ray"}}).resources
    assert (res.gpus, res.gpu_ids, res.parallel, res.custom, res.executor) == (1, ("2", "3"), 4, (("a100", 1.0),), "ray")
    for bad, words in [({"parallel": 0}, "[resources] parallel must be positive"),
                       ({"cpus": -1}, "[resources] cpus must be zero or more"),
                       ({"executor": "slurm"}, "[resources] executor must be one of local, ray"),
                       ({"custom": {"a100": "one"}}, "[resources] custom a100 must be a number"),
                       ({"gpus": 3, "gpu_ids": ["0"]}, "[resources] gpus (3) is more than the 1 GPUs"),
                       ({"paralel": 2}, "[resources] paralel is not a known key")]:
        with pytest.raises(UserError) as info:
            config.parse(tmp_path, {**metric, "resources": bad})
        assert words in info.value.message, info.value.message
