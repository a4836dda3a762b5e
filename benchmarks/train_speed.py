"""How fast is train.py on the CPU: the cpu preset against the seed preset (fp32 and bf16), and what a fold
costs beyond its training steps.

    python benchmarks/train_speed.py                     # step rates and per-fold overhead (a few minutes)
    python benchmarks/train_speed.py --baseline-rev REV  # also the overhead of train.py as it was at git REV
    python benchmarks/train_speed.py --metric            # also: does bf16 change the cpu preset's mean rank?
                                                         # (with --baseline-rev: and train.py at REV's)

Step rates: each configuration trains a few steps on a tiny synthetic prepared set (random pixels and
token ids of the preset's sizes) in a fresh interpreter, logging every step; the rate is taken between the
first and the last logged step, so start-up and the first step's warm-up are excluded. The configurations
are run in turn, ``--repeats`` times, so the load of a shared machine falls on all of them; ratios, not
absolute rates, are the figures to compare.

Overhead: one fold of the cpu preset on the preset's data size (3,000 pooled items, 1,000 queries), wall
time of the whole process minus its training time, split into the interpreter with ``import torch``, the
set-up inside train.py (data, model, draws, optimiser) and the embedding of the query set.

``--metric`` makes a synthetic research repo (``autoresearch init eclip``), trains fold 0 of the cpu preset
in full with and without bf16 autocast, and scores both with the fold's key.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eclip_bench  # noqa: E402

from autoresearch.hyperparams import set_constants  # noqa: E402
from autoresearch.tasks.eclip import presets  # noqa: E402

TEMPLATE_PATH = "src/autoresearch/tasks/eclip/template/train.py"


def step_rate(stdout: str) -> float:
    """Steps per second between the first and the last progress line."""
    marks = [(int(s), float(t)) for s, t in re.findall(r"step\s+(\d+)/\d+ .*elapsed ([0-9.]+)s", stdout)]
    if len(marks) < 2:
        raise RuntimeError(f"fewer than two progress lines in:\n{stdout[-2000:]}")
    return (marks[-1][0] - marks[0][0]) / (marks[-1][1] - marks[0][1])


def rates(root: Path, steps: int, seed_steps: int, repeats: int) -> dict[str, list[float]]:
    configs = {
        "cpu preset (fp32)": ("cpu", {"STEPS": steps}),
        "seed preset, fp32": ("seed", {"STEPS": seed_steps}),
        "seed preset, bf16": ("seed", {"STEPS": seed_steps, "BF16_CPU": True}),
    }
    data = {p: eclip_bench.write_prepared(root / f"data-{p}", n_items=150, **presets.data_settings(p))
            for p in ("cpu", "seed")}
    found: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(repeats):
        for name, (preset, constants) in configs.items():
            repo = eclip_bench.make_repo(root / f"repo-{len(found[name])}-{preset}", preset, {**constants, "LOG_EVERY": 1})
            facts = eclip_bench.run_fold(repo, data[preset], root / "out")
            found[name].append(step_rate(facts["stdout"]))
            print(f"  [{r + 1}/{repeats}] {name}: {found[name][-1]:.3f} steps/s", flush=True)
    return found


def overhead(root: Path, steps: int, baseline_rev: str | None, repeats: int) -> list[tuple[str, dict]]:
    """Per version of train.py, the median over ``repeats`` alternating runs of each figure."""
    data = eclip_bench.write_prepared(root / "data-overhead", n_items=3000, **presets.data_settings("cpu"))
    runs = [("this train.py", eclip_bench.make_repo(root / "repo-overhead", "cpu", {"STEPS": steps}))]
    if baseline_rev:
        old = set_constants(old_train_source(baseline_rev), {"STEPS": steps})
        runs.append((f"train.py at {baseline_rev}", eclip_bench.make_repo(root / "repo-old", "cpu", train_source=old)))
    found: dict[str, list[dict]] = {name: [] for name, _ in runs}
    for _ in range(repeats):
        for name, repo in runs:
            found[name].append(eclip_bench.run_fold(repo, data, root / "out"))
    keys = ("wall_s", "train_seconds", "seconds", "setup_seconds")
    return [(name, {k: statistics.median(f[k] for f in facts) if all(k in f for f in facts) else None for k in keys})
            for name, facts in found.items()]


def old_train_source(rev: str) -> str:
    top = Path(__file__).resolve().parents[1]
    return subprocess.run(["git", "show", f"{rev}:{TEMPLATE_PATH}"], cwd=top, capture_output=True, text=True,
                          check=True).stdout


def metric(root: Path, baseline_rev: str | None) -> dict[str, dict]:
    from autoresearch.session import create

    repo = root / "metric-repo"
    print("  making a synthetic research repo (3,000 prints) ...", flush=True)
    create("eclip", repo, preset="cpu", n=3000, seed=0, say=lambda s: None)
    state = repo / ".autoresearch"
    source = (repo / "train.py").read_text(encoding="utf-8")
    found = {}
    sources = {"fp32": set_constants(source, {"BF16_CPU": False}), "bf16": set_constants(source, {"BF16_CPU": True})}
    if baseline_rev:
        sources[f"fp32 at {baseline_rev}"] = old_train_source(baseline_rev)
    for name, train_source in sources.items():
        run_repo = eclip_bench.make_repo(root / f"metric-{len(found)}", "cpu", train_source=train_source)
        out = root / f"metric-out-{len(found)}"
        facts = eclip_bench.run_fold(run_repo, state / "prepared", out, fold=0)
        found[name] = {**eclip_bench.score_fold(out, state / "secret" / "keys" / "fold_0.json"),
                       "train_seconds": facts["train_seconds"], "final_loss": facts["final_loss"]}
        print(f"  {name}: mean rank {found[name]['mean_rank']:.1f} in {facts['train_seconds']:.0f} s", flush=True)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="steps of the cpu preset per rate measurement")
    ap.add_argument("--seed-steps", type=int, default=3, help="steps of the seed preset per rate measurement")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--baseline-rev", help="also measure the overhead of train.py at this git revision")
    ap.add_argument("--metric", action="store_true", help="also train fold 0 fully in fp32 and bf16 and score both")
    ap.add_argument("--skip-rates", action="store_true")
    ap.add_argument("--threads", type=int, help="AUTORESEARCH_CPUS for every run (default: train.py's own choice, "
                                                "the CPUs it may run on); 1 is steadier on a shared machine")
    args = ap.parse_args(argv)
    if args.threads:
        eclip_bench.use_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="train-speed-") as tmp:
        root = Path(tmp)
        if not args.skip_rates:
            print("step rates (steps/s, first to last logged step):", flush=True)
            found = rates(root, args.steps, args.seed_steps, args.repeats)
            base = statistics.median(found["cpu preset (fp32)"])
            fp32 = statistics.median(found["seed preset, fp32"])
            print(f"\n{'configuration':<22} {'steps/s':>9} {'s/step':>8} {'vs cpu preset':>14} {'vs seed fp32':>13}")
            for name, values in found.items():
                rate = statistics.median(values)
                print(f"{name:<22} {rate:9.3f} {1 / rate:8.3f} {rate / base:13.4f}x {rate / fp32:12.2f}x")

        print(f"\nper-fold overhead at the cpu preset (seconds, median of {args.repeats}):", flush=True)
        interp = eclip_bench.interpreter_seconds(args.repeats)
        runs = overhead(root, args.steps, args.baseline_rev, args.repeats)
        print(f"{'train.py':<24} {'wall':>6} {'train':>6} {'overhead':>9} {'python+torch':>13} {'in main()':>10} "
              f"{'set-up':>7} {'eval+write':>11}")
        for name, f in runs:
            in_main = f["seconds"] - f["train_seconds"]
            setup = f["setup_seconds"]
            parts = (f"{setup:7.2f} {in_main - setup:11.2f}" if setup is not None else f"{'-':>7} {'-':>11}")
            print(f"{name:<24} {f['wall_s']:6.2f} {f['train_seconds']:6.2f} {f['wall_s'] - f['train_seconds']:9.2f} "
                  f"{interp['imports_s']:13.2f} {in_main:10.2f} {parts}")
        print(f"(python+torch: an interpreter that imports numpy and torch, measured apart; an empty one takes "
              f"{interp['python_s']:.2f} s. overhead - python+torch - in main() is train.py's other imports and exit)")

        if args.metric:
            print("\nbf16 autocast on the CPU, cpu preset, fold 0 trained in full:", flush=True)
            found = metric(root, args.baseline_rev)
            print(f"{'':18} {'mean rank':>10} {'R@1 i2t':>8} {'R@5 i2t':>8} {'train s':>8}")
            for name, m in found.items():
                print(f"{name:18} {m['mean_rank']:10.2f} {m.get('i2t_r1', float('nan')):8.3f} "
                      f"{m.get('i2t_r5', float('nan')):8.3f} {m['train_seconds']:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
