"""Experiments per hour with 1, 2 and 4 candidates in flight, local executor and Ray executor.

    python benchmarks/parallel_throughput.py [--experiments 12] [--sleep 3] [--slots 1 2 4] [--no-sandbox]

The toy task (`autoresearch init toy`) with its pretend training set to ``--sleep`` seconds: runs that
mostly wait, so that two cores are not what limits them. Each fold run asks for a quarter of a core
(``[resources] cpus = 0.25``: eight runs at once on two cores), so with N slots N candidates and both of
their folds run side by side. The replay agent plays a fixed queue (mostly changes that are worse, two
that are better, so the stale rule has something to do). Each configuration starts from a fresh copy;
the rate counts decided experiments between the first experiment's start and the last one's end (the
baseline and Ray's start-up are outside the window; Ray is told it has 8 logical CPUs and its eight
workers are started before measuring). Printed side by side as ratios to 1 slot.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

from autoresearch.loop.gitops import Git
from autoresearch.session import Session, create

CHANGES = [("WIDTH", 2), ("LR", 0.05), ("WIDTH", 1), ("LR", 0.005), ("WIDTH", 3), ("LR", 0.1),
           ("WIDTH", 8), ("LR", 0.03), ("WIDTH", 2), ("LR", 0.08), ("WIDTH", 1), ("LR", 0.04),
           ("WIDTH", 3), ("LR", 0.06), ("WIDTH", 2), ("LR", 0.09)]


def make_repo(dest: Path, sleep: float, experiments: int) -> Path:
    create("toy", dest, say=lambda _: None)
    train = (dest / "train.py").read_text()
    (dest / "train.py").write_text(train.replace("SLEEP = 0.2", f"SLEEP = {sleep}"))
    queue = "".join(f'[[experiment]]\ndescription = "{name} -> {value} (#{i})"\nset = {{ {name} = {value} }}\n\n'
                    for i, (name, value) in enumerate((CHANGES * 4)[:experiments]))
    (dest / "queue.toml").write_text(queue)
    with open(dest / "autoresearch.toml", "a") as fh:
        fh.write("\n[resources]\ncpus = 0.25\n")
    toml = (dest / "autoresearch.toml").read_text().replace("timeout_s = 30", f"timeout_s = {max(30, 4 * sleep)}")
    (dest / "autoresearch.toml").write_text(toml.replace("time_budget_s = 10", f"time_budget_s = {2 * sleep}"))
    Git(dest).commit(["train.py", "queue.toml", "autoresearch.toml"], "benchmark settings\n")
    from autoresearch import config
    from autoresearch.loop import fingerprints

    fingerprints.record(config.load(dest))
    return dest


def _t(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def measure(template: Path, work: Path, executor: str, slots: int, experiments: int, sandbox: bool) -> dict:
    repo = work / f"{executor}-{slots}"
    shutil.copytree(template, repo, symlinks=True)
    session = Session(repo, tag="bench")
    t0 = time.perf_counter()
    stop = session.run("replay", experiments=experiments, parallel=slots, executor=executor, no_sandbox=not sandbox)
    wall = time.perf_counter() - t0
    rows = session.rows(kinds=("experiment",))
    decided = [r for r in rows if r.status not in ("interrupted", "running")]
    window = max(_t(r.ended_at) for r in decided) - min(_t(r.started_at) for r in rows)
    return {"per_hour": 3600 * len(decided) / window, "window": window, "wall": wall, "decided": len(decided),
            "kept": sum(r.status == "keep" for r in decided), "stop": stop.why,
            "reruns": sum(1 for r in decided if (r.decision.get("numbers") or {}).get("stale", {}).get("original_candidate"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=12)
    ap.add_argument("--sleep", type=float, default=3.0, help="seconds of pretend training per fold run")
    ap.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--executors", nargs="+", default=["local", "ray"])
    ap.add_argument("--no-sandbox", action="store_true")
    args = ap.parse_args()
    if "ray" in args.executors:
        import ray

        # Logical CPUs, as `ray start --num-cpus 8` would declare: the runs mostly wait. Ray keeps as many
        # idle workers as it has CPUs, so with 2 it would start a fresh Python worker for most runs.
        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False)

        @ray.remote(num_cpus=0.25)
        def warm() -> None:
            import autoresearch.runner.ray_executor  # noqa: F401  (what every run imports)

            time.sleep(1.0)

        ray.get([warm.remote() for _ in range(8)])   # eight workers up before anything is measured
    work = Path(tempfile.mkdtemp(prefix="autoresearch-throughput-"))
    try:
        template = make_repo(work / "template", args.sleep, args.experiments)
        results: dict[tuple[str, int], dict] = {}
        for executor in args.executors:
            for slots in args.slots:
                r = measure(template, work, executor, slots, args.experiments, not args.no_sandbox)
                results[(executor, slots)] = r
                print(f"{executor:5} {slots} slot(s): {r['decided']} experiments ({r['kept']} kept, "
                      f"{r['reruns']} re-run by the stale rule) in {r['window']:.1f} s -> "
                      f"{r['per_hour']:.0f}/hour  [{r['stop']}]", flush=True)
        print(f"\nexperiments per hour, ratio to 1 slot (toy task, {args.sleep:g} s of waiting per fold run, "
              f"2 folds, {'sandboxed' if not args.no_sandbox else 'no sandbox'}):")
        print(f"{'slots':>5} | " + " | ".join(f"{e:>18}" for e in args.executors))
        one = {e: results[(e, args.slots[0])]["per_hour"] for e in args.executors}
        for slots in args.slots:
            cells = [f"{results[(e, slots)]['per_hour']:7.0f}/h ({results[(e, slots)]['per_hour'] / one[e]:4.2f}x)"
                     for e in args.executors]
            print(f"{slots:>5} | " + " | ".join(f"{c:>18}" for c in cells))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if "ray" in args.executors:
            import ray

            ray.shutdown()


if __name__ == "__main__":
    main()
