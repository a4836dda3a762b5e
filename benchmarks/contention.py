"""One cpu-preset eCLIP fold, quiet and beside N busy cores, with an older revision's run set-up and this one.

Issue 20: with one of two cores kept busy by another process, a fold whose two OpenMP threads spin while
they wait took more than 5× its quiet time. This makes an eCLIP repository (cpu preset, ``--n`` synthetic
prints), then runs fold 0 as ``autoresearch trial`` does (``loop.trial.run_trial``, one fold, in the
sandbox when bubblewrap works), four times in one go:

- with the runner of ``--baseline-rev`` (its ``src/`` taken with ``git archive`` into a temporary folder and
  imported in a child Python), quiet and with N busy cores;
- with the runner of this checkout, quiet and with N busy cores.

A busy core is a ``python -c 'while True: pass'`` pinned to it (the last N cores of this process's
affinity); the fold itself may use every core. Both set-ups run the same repository and ``train.py``; only
the runner (its environment and thread rules) differs. Thread and wait variables of this shell
(``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY``, ...) are removed from the children, so each set-up shows its own
defaults. The fold's deadline is ``--timeout`` (the repository's ``timeout_s`` is raised to it) so that a
collapse shows as a long run, not as a crash.

Prints wall and CPU seconds per run and each run's ratio to its own set-up's quiet time; the goal: with one
core busy, this checkout's fold takes at most 1.5× its quiet time. Times depend on the machine: compare the
rows of one run, on a machine with nothing else going on.

    python benchmarks/contention.py --baseline-rev c236e1c                           # the full fold
    python benchmarks/contention.py --baseline-rev c236e1c --steps 120 --timeout 120 # a short check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
GOAL = 1.5
DROP = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "AUTORESEARCH_CPUS", "OMP_WAIT_POLICY",
        "OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")

CHILD = r"""
import json, sys, time
from pathlib import Path
import autoresearch
from autoresearch import config as config_mod
from autoresearch.loop.trial import run_trial
root, run_dir, sandbox, src = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", Path(sys.argv[4])
assert Path(autoresearch.__file__).resolve().is_relative_to(src.resolve()), autoresearch.__file__
config = config_mod.load(root)
trial = run_trial(config, run_dir, seed=config.run.seed, sandbox=sandbox, folds=[0])
fold = trial.folds[0]
extra = fold.outcome.extra
print("RESULT " + json.dumps({"status": trial.status, "reason": trial.reason[:300], "seconds": fold.outcome.seconds,
                              "cpu": extra.get("cpu_seconds"), "threads": (extra.get("threads") or {}).get("summary"),
                              "step": extra.get("last_step"), "total": extra.get("total_steps"),
                              "value": fold.score.value}))
"""


def make_repo(root: Path, n: int, steps: int | None, timeout: float) -> None:
    import autoresearch

    t0 = time.perf_counter()
    autoresearch.create("eclip", root, preset="cpu", n=n, say=lambda s: None)
    toml = root / "autoresearch.toml"
    text, count = re.subn(r"(?m)^timeout_s = [0-9.]+", f"timeout_s = {timeout:g}", toml.read_text(), count=1)
    if count != 1:
        raise SystemExit("benchmark: [run] timeout_s not found in autoresearch.toml")
    toml.write_text(text)
    if steps is not None:
        train = root / "train.py"
        text, count = re.subn(r"(?m)^STEPS = \d+", f"STEPS = {steps}", train.read_text())
        if count != 1:
            raise SystemExit("benchmark: STEPS not found in train.py")
        train.write_text(text)
    print(f"repository: {root} ({n} prints{f', STEPS = {steps}' if steps else ''}; made in "
          f"{time.perf_counter() - t0:.0f} s)", flush=True)


def baseline_src(rev: str, dest: Path) -> Path:
    """``src/`` of revision ``rev`` of this checkout, extracted under ``dest``."""
    archive = subprocess.run(["git", "-C", str(HERE), "archive", "--format=tar", rev, "src"], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"benchmark: git archive {rev} failed: {archive.stderr.decode(errors='replace').strip()}")
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src"


def start_hogs(n: int) -> list[subprocess.Popen]:
    cores = sorted(os.sched_getaffinity(0))
    if n > len(cores):
        raise SystemExit(f"benchmark: {n} busy cores asked, {len(cores)} available")
    hogs = []
    for core in cores[len(cores) - n:]:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        os.sched_setaffinity(hog.pid, {core})
        hogs.append(hog)
    time.sleep(1.0)   # let them take their cores before the run starts
    return hogs


def run_fold(src: Path, root: Path, run_dir: Path, use_sandbox: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DROP}
    env["PYTHONPATH"] = str(src)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), str(run_dir), "1" if use_sandbox else "0", str(src)],
                          env=env, capture_output=True, text=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"benchmark: the fold's driver failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(line[len("RESULT "):])
    result["driver_s"] = time.perf_counter() - t0
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-rev", default="c236e1c", help="the revision whose runner is compared (default c236e1c)")
    ap.add_argument("--busy", type=int, default=1, help="cores kept busy by a pinned hog (default 1)")
    ap.add_argument("--n", type=int, default=1200, help="synthetic prints (default 1200)")
    ap.add_argument("--steps", type=int, help="STEPS in train.py (default: the template's); e.g. 120 for a check")
    ap.add_argument("--timeout", type=float, default=400.0, help="the fold's deadline in seconds (default 400)")
    ap.add_argument("--repo", type=Path, help="an eCLIP repository made by an earlier run (--keep) to use as it is")
    ap.add_argument("--keep", type=Path, help="make the repository here and keep it")
    ap.add_argument("--no-sandbox", action="store_true")
    args = ap.parse_args()

    sys.path.insert(0, str(HERE / "src"))
    from autoresearch.runner import sandbox

    use_sandbox = sandbox.available() and not args.no_sandbox
    tmp = Path(tempfile.mkdtemp(prefix="contention-bench-"))
    hogs: list[subprocess.Popen] = []
    rows = []
    try:
        root = args.repo or args.keep or tmp / "eclip"
        if args.repo is None:
            make_repo(root, args.n, args.steps, args.timeout)
        setups = [(args.baseline_rev, baseline_src(args.baseline_rev, tmp / "baseline")), ("this checkout", HERE / "src")]
        print(f"sandbox: {'bubblewrap' if use_sandbox else 'none'}; cores: {len(os.sched_getaffinity(0))}; "
              f"busy: {args.busy}", flush=True)
        for busy in (0, args.busy):
            for label, src in setups:
                hogs = start_hogs(busy) if busy else []
                try:
                    run_dir = root / ".autoresearch" / "runs" / f"bench-{len(rows)}"
                    result = run_fold(src, root, run_dir, use_sandbox)
                finally:
                    for hog in hogs:
                        hog.kill()
                        hog.wait()
                    hogs = []
                rows.append((label, busy, result))
                print(f"  {label}, {busy} busy: {result['status']} in {result['seconds']:.1f} s "
                      f"(CPU {result['cpu'] or 0:.1f} s; {result['threads'] or 'threads not recorded'})", flush=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        if args.keep is None and args.repo is None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(tmp / "baseline", ignore_errors=True)

    quiet = {label: r["seconds"] for label, busy, r in rows if busy == 0}
    print(f"\n{'set-up':<16} {'busy cores':>10} {'status':>8} {'wall s':>8} {'CPU s':>8} {'× quiet':>8}  "
          f"{'steps':>9}  threads")
    for label, busy, r in rows:
        ratio = r["seconds"] / quiet[label] if quiet.get(label) else float("nan")
        steps = f"{r['step']}/{r['total']}" if r.get("step") is not None else "-"
        print(f"{label:<16} {busy:>10} {r['status']:>8} {r['seconds']:>8.1f} {r['cpu'] or 0:>8.1f} {ratio:>7.2f}×  "
              f"{steps:>9}  {r['threads'] or '-'}")
    mine = [r for label, busy, r in rows if label == "this checkout" and busy == args.busy][0]
    ratio = mine["seconds"] / quiet["this checkout"]
    verdict = "met" if ratio <= GOAL and mine["status"] == "ok" else "NOT met"
    print(f"\ngoal: with {args.busy} busy core(s), this checkout's fold at most {GOAL}× its quiet time: "
          f"{verdict} ({ratio:.2f}×, {mine['status']})")
    for label, busy, r in rows:
        if r["status"] != "ok":
            print(f"  {label}, {busy} busy: {r['reason']}")


if __name__ == "__main__":
    main()
