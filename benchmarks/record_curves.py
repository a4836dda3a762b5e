"""Record real training curves for ``benchmarks/early_abort.py``: the replay queue on the eCLIP cpu preset.

    python benchmarks/record_curves.py DIR [--n 1200] [--folds 1] [--name SESSION]   # create, run, export
    python benchmarks/record_curves.py DIR --folds 3 --n 300 --experiments 1 --out /tmp/curves   # a short check
    python benchmarks/record_curves.py DIR --export-only [--name SESSION]   # export a repository already run
    python benchmarks/record_curves.py DIR --doomed [--name SESSION]        # doomed candidates (see below)

Creates an eCLIP research repository (``autoresearch init eclip DIR --n N``, synthetic data, cpu preset),
sets the folds, a 1200 s deadline (so that a busy machine does not cut a curve short), no early abort (no
curve rule and no fold-level stop: every fold of every run is recorded whole) and, with one fold, the greedy
rule; with several folds the loop's own default rule decides, and the baseline is first run
``baseline_repeats`` times (``autoresearch baseline``: the evidence of noise that rule needs).
It commits that, then runs the replay agent through the whole ``queue.toml`` (the baseline and each entry on
top of the champion of its time, kept or discarded by the loop itself; ``--experiments N``: the first N).
The export copies each run's fold-0 log to ``OUT/SESSION/NNNN.log`` and writes ``runs.json``: for every row
its number, description, status, metric, seconds, per-fold scores and times, the number of the champion it
was compared against, and ``runs``: every run of its code (its own first, then its extra runs and the
noise-floor runs of that commit), which ``benchmarks/early_abort.py`` pools as the session's measured noise.
Takes about 13 runs of 30-60 s on two idle cores; much longer on a shared machine.

The queue holds no candidate that diverges on the cpu preset, so ``--doomed`` adds some (``DOOMED``):
in a copy of a recorded repository, each is applied to the baseline's train.py and run once with
``autoresearch trial``; the export labels it by the greedy rule against the baseline's metric (``discard``
when worse), with the baseline as its champion.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from autoresearch.loop.ledger import Ledger

OUT = Path(__file__).resolve().parent / "data" / "curves"


def _cli(*args: str, cwd: Path | None = None) -> None:
    subprocess.run([sys.executable, "-m", "autoresearch", *args], cwd=cwd, check=True)


def create_and_run(repo: Path, n: int, folds: int = 1, experiments: int = 0) -> None:
    _cli("init", "eclip", str(repo), "--n", str(n))
    toml = repo / "autoresearch.toml"
    text = toml.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^timeout_s = .*$", "timeout_s = 1200       # long: the machine may be shared", text)
    text = re.sub(r"(?m)^folds = \d+", f"folds = {folds}", text)
    # whole curves: the abort rule (on by default) would cut the very runs the benchmark replays it on;
    # several folds: the loop's own default decision rule
    rule = '[decision]\nrule = "greedy"\n\n' if folds == 1 else ""
    text = text.replace("[agent]", rule + '[abort]\nenabled = false\n\n[agent]')
    toml.write_text(text, encoding="utf-8")
    env = {**os.environ, "GIT_AUTHOR_NAME": "r", "GIT_AUTHOR_EMAIL": "r@r", "GIT_COMMITTER_NAME": "r",
           "GIT_COMMITTER_EMAIL": "r@r"}
    subprocess.run(["git", "commit", "-qam", f"{folds} fold(s), long deadline, no abort (curve recording)"], cwd=repo,
                   check=True, env=env)
    _cli("rehash", cwd=repo)
    if folds > 1:   # the evidence of noise the default rule needs (a run that measures it itself tops it up)
        from autoresearch.config import DecisionSection
        _cli("baseline", "--repeats", str(DecisionSection.baseline_repeats), "--tag", "curves", cwd=repo)
    _cli("run", "--agent", "replay", "--tag", "curves", *(["--experiments", str(experiments)] if experiments else []),
         cwd=repo)


DOOMED = {"LR 3e-4 -> 1e-2": {"LR": 1e-2}, "LR 3e-4 -> 1.0": {"LR": 1.0}}


def record_doomed(repo: Path, name: str) -> Path:
    """Run each of ``DOOMED`` on the baseline of an already recorded repository; export them with it."""
    from autoresearch.hyperparams import set_constants

    ledger = Ledger(repo / ".autoresearch" / "ledger.sqlite", create=False)
    base = ledger.rows(tag="curves", kinds=("baseline",))[0]
    ledger.close()
    work = repo.parent / f"{repo.name}-doomed"
    if not work.exists():
        shutil.copytree(repo, work, symlinks=True)
    baseline_py = subprocess.run(["git", "show", f"{base.commit}:train.py"], cwd=work, check=True,
                                 capture_output=True, text=True).stdout
    dest = OUT / name
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(repo / ".autoresearch" / "runs" / f"{base.number:04d}" / "fold0.log", dest / "0000.log")
    manifest = [{"number": 0, "kind": "baseline", "description": "baseline", "status": "keep",
                 "metric": base.metric_mean, "seconds": base.train_seconds, "champion": None}]
    for number, (description, values) in enumerate(DOOMED.items(), start=1):
        (work / "train.py").write_text(set_constants(baseline_py, values), encoding="utf-8")
        runs = work / ".autoresearch" / "runs"
        before = set(runs.iterdir())
        done = subprocess.run([sys.executable, "-m", "autoresearch", "trial"], cwd=work, capture_output=True, text=True)
        print(done.stdout[-600:])
        run_dir = next(iter(set(runs.iterdir()) - before))
        shutil.copyfile(run_dir / "fold0.log", dest / f"{number:04d}.log")
        found = re.search(r"mean_rank: ([0-9.]+)", done.stdout)
        metric = float(found.group(1)) if found else None
        status = "discard" if metric is None or metric >= base.metric_mean else "keep"
        manifest.append({"number": number, "kind": "experiment", "description": description, "status": status,
                         "metric": metric, "seconds": None, "champion": 0})
    (dest / "runs.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return dest


def _seconds(log: Path) -> float | None:
    """A fold's wall time from its log's outcome line (``# outcome: ok: exit code 0; 18.2 s; ...``)."""
    found = re.search(r"^# outcome: [^;]*; ([0-9.]+) s", log.read_text(encoding="utf-8", errors="replace"), re.MULTILINE)
    return float(found.group(1)) if found else None


def _runs(row, noise_rows) -> list[list[float | None]]:
    """Every run of a row's code: its own, its extra runs (confirmation, or the sequential rule's), and the
    noise-floor runs of the same commit."""
    numbers = (row.decision or {}).get("numbers") or {}
    extra = [list(r) for r in numbers.get("confirm_runs") or []]
    extra += [n.folds for n in noise_rows if n.commit and n.commit == row.commit and n.status == "keep"]
    return [[None if v != v else v for v in r] for r in [row.folds] + extra]


def export(repo: Path, name: str, out: Path = OUT) -> Path:
    ledger = Ledger(repo / ".autoresearch" / "ledger.sqlite", create=False)
    rows = ledger.rows(tag="curves", kinds=("baseline", "experiment"))
    noise_rows = ledger.rows(tag="curves", kinds=("noise",))
    by_commit = {r.commit: r.number for r in rows if r.status == "keep" and r.commit}
    dest = out / name
    dest.mkdir(parents=True, exist_ok=True)
    manifest = []
    for r in rows:
        log = repo / ".autoresearch" / "runs" / f"{r.number:04d}" / "fold0.log"
        if not log.is_file() or r.status in ("running",):
            continue
        shutil.copyfile(log, dest / f"{r.number:04d}.log")
        fold_logs = sorted((repo / ".autoresearch" / "runs" / f"{r.number:04d}").glob("fold*.log"))
        manifest.append({"number": r.number, "kind": r.kind, "description": r.description, "status": r.status,
                         "metric": r.metric_mean, "seconds": r.train_seconds,
                         "folds": [None if v != v else v for v in r.folds],
                         "fold_seconds": [_seconds(p) for p in fold_logs],
                         "runs": _runs(r, noise_rows),
                         "champion": None if r.kind == "baseline" else by_commit.get(r.parent_commit)})
    (dest / "runs.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    ledger.close()
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", type=Path)
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--name", default="")
    ap.add_argument("--folds", type=int, default=1, help="folds per experiment (several: the loop's default "
                    "decision rule; benchmarks/early_abort.py --folds replays their scores)")
    ap.add_argument("--experiments", type=int, default=0, help="replay only the first N entries of the queue")
    ap.add_argument("--out", type=Path, default=OUT, help="where the session folder is written")
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--doomed", action="store_true", help="run the DOOMED candidates on a recorded repository")
    args = ap.parse_args()
    if args.doomed:
        print(f"exported to {record_doomed(args.repo, args.name or args.repo.name + '-doomed')}")
        return
    if not args.export_only:
        create_and_run(args.repo, args.n, args.folds, args.experiments)
    print(f"exported to {export(args.repo, args.name or args.repo.name, args.out)}")


if __name__ == "__main__":
    main()
