"""The serial loop with an executor that loses runs, Ctrl-C through the parallel executor, and status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from autoresearch.runner.executor import LocalExecutor
from autoresearch.runner.spec import ExitKind, RunOutcome
from autoresearch.session import Session
from toyrepo import make_toy_repo

QUEUE = "".join(f'[[experiment]]\ndescription = "LR -> {lr}"\nset = {{ LR = {lr} }}\n\n' for lr in (0.005, 0.001))


class LosesOneRun(LocalExecutor):
    """Runs locally, but the first fold of the second experiment's batch is lost (as a Ray node would)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def run(self, specs, *, keep_going=None):
        if specs and specs[0].name == "smoke":   # the smoke test before a candidate's folds: not a fold batch
            return super().run(specs, keep_going=keep_going)
        self.batches += 1
        if self.batches == 3:   # baseline, experiment 1, then this one
            lost = RunOutcome(specs[0], ExitKind.INTERRUPTED, None, 0.0, reason="the Ray run was lost (test)")
            if keep_going is not None:
                keep_going(lost)
            return [lost] + [RunOutcome(s, ExitKind.SKIPPED, None, 0.0) for s in specs[1:]]
        return super().run(specs, keep_going=keep_going)


def test_serial_loop_records_a_lost_run_as_interrupted_and_goes_on(tmp_path):
    root = make_toy_repo(tmp_path / "toy", queue=QUEUE, rule="greedy")
    session = Session(root, tag="s")
    engine = session.engine(agent=session.agent("replay"), no_sandbox=True)
    engine.executor = LosesOneRun()
    stop = engine.run(max_experiments=2)
    assert stop.why == "reached 2 experiments"
    rows = session.rows(kinds=("experiment",))
    assert [(r.status, r.meta["queue_index"]) for r in rows] == [("keep", 0), ("interrupted", 1), ("keep", 1)]
    assert "the Ray run was lost" in rows[1].reason


CTRL_C = textwrap.dedent(r'''
    import json, os, sys
    from pathlib import Path
    from autoresearch.runner.local_parallel import LocalParallelExecutor, Slot
    from autoresearch.runner.spec import RunSpec
    tmp = Path(sys.argv[1])
    code = "import os, time; open(os.environ['MARK'], 'w').write(str(os.getpid())); time.sleep(60)"
    specs = [RunSpec(name=f"f{k}", command=(sys.executable, "-c", code), cwd=tmp, env={"MARK": str(tmp / f"f{k}.pid")},
                     out_dir=tmp / f"out{k}", log_path=tmp / f"f{k}.log", timeout_s=120, grace_s=1, sandbox=False)
             for k in range(2)]
    try:
        LocalParallelExecutor([Slot(0), Slot(1)]).run(specs)
    except KeyboardInterrupt:
        print("interrupted after the runs ended", flush=True)
        sys.exit(130)
''')


def test_ctrl_c_kills_every_run_before_it_returns(tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    marks = [tmp_path / f"f{k}.pid" for k in range(2)]
    end = time.monotonic() + 60
    while not all(m.exists() and m.read_text() for m in marks) and time.monotonic() < end:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted after the runs ended" in out
    for m in marks:
        try:
            os.kill(int(m.read_text()), 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive


def test_status_says_what_is_in_flight_and_where(tmp_path):
    root = make_toy_repo(tmp_path / "toy", queue=QUEUE)
    session = Session(root, tag="s")
    n = session.ledger.start(tag="s", kind="experiment", description="LR -> 0.005")
    m = session.ledger.start(tag="s", kind="experiment", description="serial one")
    session.ledger.set_meta("inflight:s", {str(n): {"slot": 1, "executor": "ray (auto, 3 node(s))",
                                                    "parent": 0, "reapplied": 1, "description": "LR -> 0.005"}})
    where = session.status().in_flight
    assert where[n] == "ray (auto, 3 node(s)), slot 1, from champion 0, re-applied 1x"
    assert where[m] == "a snapshot of its candidate commit"
    out = subprocess.run([sys.executable, "-m", "autoresearch", "status", "-C", str(root), "--tag", "s"],
                         capture_output=True, text=True, check=True).stdout
    assert f"in flight: experiment {n} on ray (auto, 3 node(s))" in out
    json.dumps(where)


def test_agent_tools_rooted_in_a_worktree_read_it_but_not_the_plan(tmp_path):
    from autoresearch.agents.base import AgentContext
    from autoresearch.agents.tools import Toolbox, rooted

    root = tmp_path / "repo"
    tree = root / ".autoresearch" / "worktrees" / "slot0"
    for base in (root, tree):
        base.mkdir(parents=True, exist_ok=True)
        (base / "train.py").write_text("LR = 0.01\n")
        (base / "queue.toml").write_text("the answers\n")
    (root / ".autoresearch" / "ledger.sqlite").write_text("x")
    context = AgentContext(root=root, editable=["train.py"], denied=[root / ".autoresearch", root / "queue.toml"])
    tools = Toolbox(rooted(context, tree))
    assert "LR = 0.01" in tools.call("read_file", {"path": "train.py"}).text
    assert tools.call("read_file", {"path": "queue.toml"}).is_error
    assert tools.call("read_file", {"path": "../../ledger.sqlite"}).is_error
    assert not tools.call("write_file", {"path": "train.py", "content": "LR = 0.001\n"}).is_error
    assert (tree / "train.py").read_text() == "LR = 0.001\n" and (root / "train.py").read_text() == "LR = 0.01\n"
