"""Is a sandboxed run slower? Runs one CPU-bound torch workload alternately with and without bubblewrap.

    python benchmarks/sandbox_overhead.py [--repeats 3] [--steps 15]

Each run goes through ``run_spec`` exactly as an experiment does (same deadline, same environment); the
only difference is ``sandbox=True/False``. Prints, per mode, the mean wall seconds of the whole run
(process start, torch import, work, exit) and of the work alone (timed inside the workload), the
sandboxed/plain ratio of each, and the fixed cost of starting an empty program in the sandbox. Alternating
the modes spreads the noise of a shared machine over both; the CPU seconds of the work (``time.process_time``
inside the workload) are also reported, since on an oversubscribed machine they vary far less than wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

from autoresearch.runner import sandbox
from autoresearch.runner.spec import ExitKind, RunSpec
from autoresearch.runner.process import run_spec

WORKLOAD = """
    import json, os, sys, time
    import torch
    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    steps = int(sys.argv[1])
    model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 512))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(256, 512)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):                      # a tiny training loop: forward, backward, step
        for _ in range(10):
            loss = (model(x) - x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    work = time.perf_counter() - start
    json.dump({"work_s": work, "work_cpu_s": time.process_time() - cpu, "loss": float(loss)},
              open(os.environ["OUT"] + "/facts.json", "w"))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode (default 3)")
    parser.add_argument("--steps", type=int, default=15, help="workload size; 15 is about 5 s on one idle core")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the workload")
    parser.add_argument("--startup", type=int, default=20, help="runs per mode of an empty program (default 20)")
    args = parser.parse_args()
    if not sandbox.available():
        print(f"bubblewrap does not work here: {sandbox.unavailable_reason()}", file=sys.stderr)
        return 2

    results: dict[bool, dict[str, list[float]]] = {m: {"run": [], "work": [], "work cpu": []} for m in (False, True)}
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        root = Path(tmp)
        (root / "workload.py").write_text(textwrap.dedent(WORKLOAD))
        for i in range(-2, args.repeats * 2):   # runs -2 and -1 warm the file cache and are not counted
            boxed = i % 2 == 1
            out_dir = root / "runs" / str(i)
            spec = RunSpec(name=f"bench{i}", command=(sys.executable, str(root / "workload.py"), str(args.steps)),
                           cwd=root, env={"OUT": str(out_dir), "THREADS": str(args.threads)}, out_dir=out_dir,
                           log_path=out_dir / "log.txt", timeout_s=600, sandbox=boxed)
            outcome = run_spec(spec)
            if outcome.kind is not ExitKind.OK:
                print(f"run {i} failed: {outcome.reason}\n{spec.log_path.read_text()}", file=sys.stderr)
                return 1
            facts = json.loads((out_dir / "facts.json").read_text())
            work = facts["work_s"]
            if i < 0:
                print(f"  warm-up ({'sandbox' if boxed else 'plain'}): {outcome.seconds:6.2f} s, not counted")
                continue
            results[boxed]["run"].append(outcome.seconds)
            results[boxed]["work"].append(work)
            results[boxed]["work cpu"].append(facts["work_cpu_s"])
            print(f"  run {i}: {'sandbox' if boxed else 'plain  '}  {outcome.seconds:6.2f} s  (work {work:.2f} s, "
                  f"CPU {facts['work_cpu_s']:.2f} s)")

        # The fixed cost: an empty Python program, many times, alternating.
        empty: dict[bool, list[float]] = {False: [], True: []}
        for i in range(args.startup * 2):
            boxed = i % 2 == 1
            out_dir = root / "empty" / str(i)
            spec = RunSpec(name=f"empty{i}", command=(sys.executable, "-c", "pass"), cwd=root, env={},
                           out_dir=out_dir, log_path=out_dir / "log.txt", timeout_s=60, sandbox=boxed)
            empty[boxed].append(run_spec(spec).seconds)
    plain, boxed = statistics.mean(empty[False]), statistics.mean(empty[True])
    print(f"empty program: plain {plain:.3f} s, sandbox {boxed:.3f} s, fixed cost {boxed - plain:+.3f} s")

    for part in ("run", "work", "work cpu"):
        plain, boxed = (statistics.mean(results[m][part]) for m in (False, True))
        spread = max(statistics.pstdev(results[m][part]) for m in (False, True))
        print(f"{part:>8}: plain {plain:.2f} s, sandbox {boxed:.2f} s, ratio {boxed / plain:.3f} "
              f"(largest std {spread:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
