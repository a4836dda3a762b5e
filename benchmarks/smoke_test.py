"""What the smoke test saves per crashed candidate, and what it costs a healthy one, on the eCLIP cpu preset.

Makes an eCLIP repository (cpu preset, synthetic data) and runs three candidates of the template train.py
twice each: once as the loop did before the smoke test (the folds: the trial stops at the first failing
fold, so a crash costs fold 0 up to the crash) and once as the smoke test (`loop.trial.smoke_trial`: the
first chunk's first 256 items, 3 steps, the first 256 queries). The candidates:

- ``step1``: crashes at training step 1, after the data are loaded and the model is built;
- ``late``: crashes after training, when the embeddings are written (a shape bug in the output);
- ``healthy``: the template as it is; its smoke test is the price every healthy candidate pays.

Prints seconds per candidate for both, and the time saved per crashed candidate. Times depend on the
machine's load; compare the two columns of one run.

    python benchmarks/smoke_test.py [--n 3000] [--no-sandbox] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import autoresearch
from autoresearch import config as config_mod
from autoresearch.loop import fingerprints
from autoresearch.loop.trial import run_trial, smoke_trial
from autoresearch.runner import sandbox

STEP1 = ("        optimizer.step()\n",
         "        optimizer.step()\n        if step == 1:\n            raise RuntimeError('benchmark: crash at step 1')\n")
LATE = ("    write_outputs(image_emb, caption_emb,", "    write_outputs(image_emb[:, :1], caption_emb,")
CANDIDATES = {"step1": STEP1, "late": LATE, "healthy": None}


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000, help="synthetic prints (the cpu preset's default)")
    ap.add_argument("--no-sandbox", action="store_true")
    ap.add_argument("--keep", type=Path, help="make the repository here and keep it")
    args = ap.parse_args()
    use_sandbox = sandbox.available() and not args.no_sandbox
    tmp = Path(tempfile.mkdtemp())
    root = args.keep or tmp / "eclip"
    try:
        t0 = time.perf_counter()
        autoresearch.create("eclip", root, preset="cpu", n=args.n, say=lambda s: None)
        print(f"repository: {root} ({args.n} prints, made in {time.perf_counter() - t0:.0f} s), "
              f"sandbox: {'bubblewrap' if use_sandbox else 'none'}")
        train = root / "train.py"
        original = train.read_text(encoding="utf-8")
        config = config_mod.load(root)
        fingerprints.verify(config)
        rows = []
        for name, edit in CANDIDATES.items():
            source = original if edit is None else original.replace(*edit)
            assert edit is None or source != original, f"the {name} edit no longer applies to train.py"
            train.write_text(source, encoding="utf-8")
            runs = root / ".autoresearch" / "runs"
            smoke, smoke_s = timed(lambda: smoke_trial(config, runs / f"{name}-smoke", seed=0, sandbox=use_sandbox))
            folds, folds_s = timed(lambda: run_trial(config, runs / f"{name}-folds", seed=0, sandbox=use_sandbox))
            ran = len([f for f in folds.folds if f.outcome.kind.value != "skipped"])
            rows.append((name, smoke.status, smoke_s, folds.status, folds_s, ran, smoke.reason or folds.reason))
        train.write_text(original, encoding="utf-8")
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'candidate':<10} {'smoke test':>18} {'without it (folds)':>28}   saved per crash")
    for name, s_status, s_sec, f_status, f_sec, ran, reason in rows:
        saved = f"{f_sec - s_sec:6.1f} s ({f_sec / s_sec:.1f}x)" if s_status != "ok" else "  (passes: costs the smoke time)"
        print(f"{name:<10} {s_status:>7} {s_sec:7.1f} s   {f_status:>7} {f_sec:7.1f} s ({ran} fold{'s' * (ran != 1)})   {saved}")
    for name, *_, reason in rows:
        if reason:
            print(f"  {name}: {reason[:150]}")


if __name__ == "__main__":
    main()
