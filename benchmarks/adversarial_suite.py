"""The adversarial suite as a table: every attack of ``tests/adversarial.py`` against a real eCLIP repository.

    python benchmarks/adversarial_suite.py [--keep DIR] [--only KEY ...] [--no-probes]

Builds the suite's repository (200 synthetic prints, the fast honest baseline, 2 folds, timeout 15 s,
grace 1 s, memory ceiling 1 GB) in a temporary folder, runs the baseline, then each attack as one
sandboxed experiment, and prints: attack, what it tried, the status the ledger recorded, its reason,
seconds, and whether it was contained (recorded as expected, champion and earlier rows untouched, clean
tree, intact ledger, no process left, and the attack's own check). Known gaps (``probes()``) run after,
each on a fresh repository, and are listed separately. Exits 1 if any catalogue attack was not
contained, 2 if bubblewrap is not usable here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import adversarial  # noqa: E402

from autoresearch.errors import UserError  # noqa: E402
from autoresearch.runner import sandbox  # noqa: E402


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: list[adversarial.Outcome], title: str) -> None:
    print(f"\n{title}")
    print(f"{'attack':<24} {'what it tried':<58} {'status':<8} {'reason':<62} {'s':>5}  contained")
    print("-" * 172)
    for o in rows:
        mark = "yes" if o.contained else f"NO: {o.problem}"
        print(f"{o.attack.key:<24} {_cut(o.attack.tried, 58):<58} {o.status:<8} {_cut(o.reason, 62):<62} "
              f"{o.seconds:>5.1f}  {mark}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="build the repository here and leave it (default: a temp dir)")
    ap.add_argument("--only", nargs="*", help="run only these attack keys")
    ap.add_argument("--no-probes", action="store_true", help="skip the known-gap probes")
    args = ap.parse_args()
    if not sandbox.available():
        print(f"the sandbox is not usable here: {sandbox.unavailable_reason()}", file=sys.stderr)
        return 2
    attacks = [a for a in adversarial.catalogue() if not args.only or a.key in args.only]
    probes = [] if args.no_probes else [a for a in adversarial.probes() if not args.only or a.key in args.only]
    with tempfile.TemporaryDirectory(prefix="adversarial-") as tmp:
        base = args.keep or Path(tmp)
        t0 = time.perf_counter()
        suite = adversarial.Suite(adversarial.build_repo(base / "repo"))
        built = time.perf_counter() - t0
        b = suite.baseline
        print(f"repository {base / 'repo'}: built and baseline run in {built:.1f} s "
              f"(baseline {b.status}, mean_rank {b.metric_mean:.2f} over folds {[round(v, 2) for v in b.folds]}, "
              f"{suite.baseline_seconds:.1f} s)")
        outcomes = []
        for attack in attacks:
            outcomes.append(suite.attempt(attack))
        _table(outcomes, "attacks")
        gaps = []
        for i, probe in enumerate(probes):
            fresh = adversarial.Suite(adversarial.build_repo(base / f"probe{i}"))
            try:
                gaps.append(fresh.attempt(probe))
            except UserError as exc:   # the loop stopped and said why: contained
                gaps.append(adversarial.Outcome(probe, "stopped", str(exc), 0.0, True))
        if gaps:
            _table(gaps, "known gaps (not counted in the exit code)")
            for o in gaps:
                if not o.contained:
                    print(textwrap.fill(f"{o.attack.key}: {o.attack.known_gap}", 120))
        total = time.perf_counter() - t0
    bad = [o.attack.key for o in outcomes if not o.contained]
    print(f"\n{len(outcomes) - len(bad)}/{len(outcomes)} attacks contained in {total:.0f} s"
          + (f"; NOT contained: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
