"""The tool's own overhead per experiment: everything but training and the agent.

Runs the loop on a toy repository whose train.py sleeps a fixed time per fold, with the replay agent,
and prints per experiment: wall time, time inside the training processes, the agent's time, and the
rest (git, ledger, edit policy, fingerprints, scoring, process start-up). Targets: at most 2 s, and at
most 2% of a one-minute experiment.

    python benchmarks/loop_overhead.py [--experiments 8] [--sleep 1.0] [--no-sandbox]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from autoresearch import config as config_mod  # noqa: E402
from autoresearch.agents import make_agent  # noqa: E402
from autoresearch.agents.base import AgentContext  # noqa: E402
from autoresearch.loop.engine import Engine, open_ledger  # noqa: E402
from autoresearch.runner import sandbox  # noqa: E402
from toyrepo import make_toy_repo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", type=int, default=8)
    ap.add_argument("--sleep", type=float, default=1.0, help="pretend training seconds per fold")
    ap.add_argument("--no-sandbox", action="store_true")
    args = ap.parse_args()
    use_sandbox = sandbox.available() and not args.no_sandbox
    lrs = [10 ** (-1 - 3 * i / args.experiments) for i in range(args.experiments)]
    queue = "".join(f'[[experiment]]\ndescription = "LR {lr:.2e}"\nset = {{ LR = {lr!r} }}\n\n' for lr in lrs)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_toy_repo(Path(tmp) / "toy", sleep=args.sleep, queue=queue)
        config = config_mod.load(root)
        ledger = open_ledger(config)
        context = AgentContext(root=root, editable=["train.py", "scratchpad.md"], denied=[config.state_dir])
        engine = Engine(config, tag="bench", sandbox=use_sandbox, ledger=ledger)
        engine.agent = make_agent("replay", config, context, tag="bench")
        engine.prepare()
        engine.ensure_baseline()
        rows = []
        for _ in range(args.experiments):
            t0 = time.perf_counter()
            row, _trial = engine.experiment()
            wall = time.perf_counter() - t0
            rows.append((row.number, wall, row.train_seconds or 0.0, row.agent_seconds or 0.0, row.status))
    print(f"sandbox: {'on' if use_sandbox else 'off'}; {config.run.folds} folds of {args.sleep:.1f} s pretend training")
    print(f"{'exp':>4} {'status':>8} {'wall s':>8} {'train s':>8} {'agent s':>8} {'overhead s':>11}")
    overheads = []
    for number, wall, train, agent, status in rows:
        over = wall - train - agent
        overheads.append(over)
        print(f"{number:>4} {status:>8} {wall:>8.2f} {train:>8.2f} {agent:>8.3f} {over:>11.3f}")
    mean = statistics.fmean(overheads)
    print(f"mean overhead {mean:.3f} s per experiment (max {max(overheads):.3f} s); target ≤ 2 s")
    print(f"as a share of a one-minute experiment: {100 * mean / 60:.2f}% (target ≤ 2%)")
    print("note: 'train s' is measured around each training process, so interpreter and sandbox start-up "
          "count as training; 'overhead' is git, ledger, edit policy, fingerprints and scoring.")


if __name__ == "__main__":
    main()
