"""The smoke test before a candidate's folds: a crash at the first step is found by one short run, no fold
runs, and the crash goes back to the agent as a fix attempt (on the toy task, made by ``autoresearch.create``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import autoresearch
from autoresearch import config as config_mod
from autoresearch.agents import make_agent
from autoresearch.loop import fingerprints
from autoresearch.loop.engine import Engine, open_ledger
from autoresearch.loop.trial import fold_specs, smoke_spec
from autoresearch.runner import sandbox

SANDBOX = sandbox.available()
BOOM = "smoke marker 91c2: shapes do not match"
QUEUE = f'''\
[[experiment]]
description = "a change that crashes at its first step"
replace = [{{ file = "train.py", old = "    print(f\\"step", new = "    raise SystemExit({BOOM!r})\\n    print(f\\"step" }}]
fix = [{{ file = "train.py", old = "    raise SystemExit({BOOM!r})\\n", new = "" }}]
'''


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


def toy(root: Path, extra_toml: str = "") -> config_mod.Config:
    autoresearch.create("toy", root, say=lambda s: None)
    (root / "queue.toml").write_text(QUEUE, encoding="utf-8")
    if extra_toml:
        with (root / "autoresearch.toml").open("a", encoding="utf-8") as fh:
            fh.write(extra_toml)
    _git(root, "commit", "-qam", "a queue whose first entry crashes")
    config = config_mod.load(root)
    fingerprints.record(config)
    return config


def engine_for(config: config_mod.Config, briefs: list[str]) -> Engine:
    context = autoresearch.open(config.root, tag="smoke").agent_context()
    engine = Engine(config, tag="smoke", sandbox=SANDBOX, ledger=open_ledger(config))
    agent = make_agent("replay", config, context, tag="smoke")
    propose = agent.propose

    def spy(brief, workdir):
        briefs.append(brief.render())
        return propose(brief, workdir)

    agent.propose = spy
    engine.agent = agent
    return engine


@pytest.mark.slow
def test_a_crash_at_the_first_step_runs_no_fold_and_is_fixed(tmp_path):
    config = toy(tmp_path / "toy")
    briefs: list[str] = []
    engine = engine_for(config, briefs)
    stop = engine.run(max_experiments=2)
    assert "2 experiments" in stop.why, stop.why
    crash, fix = engine.ledger.rows(tag="smoke", kinds=("experiment",))
    # the crash: found by the smoke test, recorded as a crash, and not one fold was run
    assert crash.status == "crash" and crash.reason.startswith("smoke test: ") and BOOM in crash.reason
    run_dir = config.state_dir / "runs" / f"{crash.number:04d}"
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["smoke.log"]
    assert crash.folds == [] and crash.train_seconds == 0.0
    assert crash.log_path == str(run_dir / "smoke.log")
    assert "AUTORESEARCH_SMOKE" not in crash.reason
    # the crash went back to the agent as a fix attempt, with the smoke run's log tail
    assert len(briefs) == 2 and "(attempt 2" in briefs[1].splitlines()[0]
    assert "smoke test: " in briefs[1] and BOOM in briefs[1]
    # the fix passed its smoke test and then ran every fold
    fix_dir = config.state_dir / "runs" / f"{fix.number:04d}"
    assert fix.attempt == 2 and fix.status in ("keep", "discard") and len(fix.folds) == config.run.folds
    assert sorted(p.name for p in fix_dir.glob("*.log")) == ["fold0.log", "fold1.log", "smoke.log"]
    assert "step 1/4" in (fix_dir / "smoke.log").read_text()


def test_the_smoke_test_can_be_switched_off(tmp_path):
    config = toy(tmp_path / "toy", "\n[smoke]\nenabled = false\n")
    engine = engine_for(config, [])
    engine.run(max_experiments=1)
    crash = engine.ledger.rows(tag="smoke", kinds=("experiment",))[0]
    run_dir = config.state_dir / "runs" / f"{crash.number:04d}"
    assert crash.status == "crash" and not crash.reason.startswith("smoke test")
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["fold0.log"]


@pytest.mark.slow
def test_a_run_alive_at_the_smoke_deadline_passes(tmp_path):
    """A script that ignores the smoke variables is only checked for getting past start-up."""
    from autoresearch.loop.trial import smoke_trial

    config = toy(tmp_path / "toy", "\n[smoke]\ntimeout_s = 1.5\n")
    (config.root / "train.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(30)\n")
    result = smoke_trial(config, config.state_dir / "runs" / "x", seed=0, sandbox=SANDBOX)
    assert result.status == "ok" and result.smoke.kind.value == "timeout"
    assert "started" in (config.state_dir / "runs" / "x" / "smoke.log").read_text()
    (config.root / "train.py").write_text("import sys\nsys.exit('bad import')\n")
    result = smoke_trial(config, config.state_dir / "runs" / "y", seed=0, sandbox=SANDBOX)
    assert result.status == "crash" and result.reason.startswith("smoke test: ") and "bad import" in result.reason


def test_the_smoke_spec_is_fold_zero_with_the_smoke_environment(tmp_path):
    config = toy(tmp_path / "toy", "\n[smoke]\nsteps = 7\n")
    spec = smoke_spec(config, tmp_path / "run", seed=3)
    assert spec.env["AUTORESEARCH_SMOKE"] == "1" and spec.env["AUTORESEARCH_SMOKE_STEPS"] == "7"
    assert spec.env["AUTORESEARCH_FOLD"] == "0" and spec.env["AUTORESEARCH_SEED"] == "3"
    assert spec.out_dir == tmp_path / "run" / "smoke" == Path(spec.env["AUTORESEARCH_OUT"])
    # the same sandbox as fold 0: command, working folder, mounts, hidden paths, memory ceiling
    fold0 = fold_specs(config, tmp_path / "run", seed=3)[0][1]
    assert (spec.command, spec.cwd, spec.sandbox, spec.readonly, spec.hidden, spec.memory_gb) == \
        (fold0.command, fold0.cwd, fold0.sandbox, fold0.readonly, fold0.hidden, fold0.memory_gb)
    assert {k: v for k, v in spec.env.items() if not k.startswith(("AUTORESEARCH_SMOKE", "AUTORESEARCH_OUT", "HOME"))} \
        == {k: v for k, v in fold0.env.items() if not k.startswith(("AUTORESEARCH_OUT", "HOME"))}
    # automatic deadline: 10% of the 10 s time budget, at least 10 s, within the fold's 30 s timeout
    assert spec.timeout_s == 10.0
    with pytest.raises(autoresearch.errors.UserError, match=r"\[smoke\] steps"):
        config_mod.parse(tmp_path, {"metric": {"source": "json", "key": "m"}, "smoke": {"steps": 0}})
