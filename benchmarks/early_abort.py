"""Replay recorded training curves through the early-abort rule: time saved, and kept candidates lost.

    python benchmarks/early_abort.py [--data benchmarks/data/curves] [--all]

The curves are real fold logs of the eCLIP cpu preset (``benchmarks/record_curves.py``: the replay queue
on a 1200-image synthetic repository, one fold per experiment, the loop's own keep/discard decisions; the
machine was shared with other work while they were recorded, so the seconds are noisy, the steps are
not). Each candidate's curve is fed, line by line, to the real ``AbortWatch`` against the curve of the
champion it was compared with, as the runner would have done.

Columns, for each setting (ratio, min_progress, patience, min_fraction):
- discarded aborted: how many discarded candidates the rule would have stopped;
- saved (time): training seconds those aborts save, as a share of all the seconds spent on discarded
  candidates (the seconds from the abort point to the end of the run, from the logs' ``elapsed`` and
  ``done in`` lines); saved (steps): the same as a share of steps, which does not depend on the load;
- kept aborted: kept candidates the rule would have stopped (false aborts: the goal is none);
- goal: at least 30% of the discarded candidates' time saved with no kept candidate aborted.
``--all`` prints every setting of the grid instead of every (ratio, min_progress) at the default patience
and min_fraction.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from autoresearch.config import AbortSection, DecisionSection
from autoresearch.loop.noise import NoiseEvidence, noise_evidence
from autoresearch.loop.sequential import Action, Evidence, after_fold
from autoresearch.runner.curves import AbortRule, AbortWatch, Point, curve_from_log

DATA = Path(__file__).resolve().parent / "data" / "curves"
RATIOS = (1.02, 1.05, 1.1, 1.15, 1.2, 1.3, 1.5, 2.0)
PATIENCES = (1, 2, 3)
MIN_FRACTIONS = (0.1, 0.25, 0.5)
MIN_PROGRESS = (0.0, 0.1, 0.2, 0.3, 0.5)
GOAL = 0.30
_DONE = re.compile(r"^done in ([0-9.]+)s", re.MULTILINE)


@dataclass
class Run:
    session: str
    number: int
    description: str
    status: str
    champion: int | None
    curve: list[Point]
    seconds: float        # training and evaluation: the "done in" line (elapsed since the script's start)
    folds: list[float | None] = ()          # per-fold scores (sessions recorded with several folds)
    fold_seconds: list[float | None] = ()   # per-fold wall times
    runs: list[list[float | None]] = ()     # every run of this code (its own first; noise and extra runs)

    def elapsed_at(self, step: int) -> float:
        for p in self.curve:
            if p.step >= step:
                return p.values.get("elapsed", self.seconds * step / max(p.total, 1))
        return self.seconds


def load(data: Path) -> tuple[dict[tuple[str, int], Run], list[Run]]:
    runs: dict[tuple[str, int], Run] = {}
    for manifest in sorted(data.glob("*/runs.json")):
        session = manifest.parent.name
        for row in json.loads(manifest.read_text(encoding="utf-8")):
            log = manifest.parent / f"{row['number']:04d}.log"
            text = log.read_text(encoding="utf-8", errors="replace")
            done = _DONE.search(text)
            curve = curve_from_log(log)
            if not curve:
                continue
            seconds = float(done.group(1)) if done else curve[-1].values.get("elapsed", 0.0)
            folds = row.get("folds") or []
            runs[(session, row["number"])] = Run(session, row["number"], row["description"], row["status"],
                                                 row["champion"], curve, seconds, folds,
                                                 row.get("fold_seconds") or [], row.get("runs") or [folds])
    candidates = [r for r in runs.values() if r.champion is not None and r.status in ("keep", "discard")
                  and (r.session, r.champion) in runs]
    return runs, candidates


def replay(run: Run, champion: Run, ratio: float, min_progress: float, patience: int,
           min_fraction: float) -> Point | None:
    """The point at which the rule would have stopped ``run``, or None."""
    watch = AbortWatch(AbortRule.against(champion.curve, ratio=ratio, patience=patience, min_fraction=min_fraction,
                                         min_progress=min_progress))
    for point in run.curve:
        if watch.feed(point):
            return point
    return None


def evaluate(runs, candidates, ratio, min_progress, patience, min_fraction) -> dict:
    discarded = [r for r in candidates if r.status == "discard"]
    kept = [r for r in candidates if r.status == "keep"]
    total_s = sum(r.seconds for r in discarded)
    total_steps = sum(r.curve[-1].total for r in discarded)
    saved_s = saved_steps = 0.0
    hits, false = [], []
    for r in candidates:
        stop = replay(r, runs[(r.session, r.champion)], ratio, min_progress, patience, min_fraction)
        if stop is None:
            continue
        if r.status == "keep":
            false.append(r)
        else:
            hits.append(r)
            saved_s += max(0.0, r.seconds - r.elapsed_at(stop.step))
            saved_steps += stop.total - stop.step
    return {"ratio": ratio, "min_progress": min_progress, "patience": patience, "min_fraction": min_fraction, "hits": hits, "false": false,
            "n_discarded": len(discarded), "n_kept": len(kept),
            "saved_time": saved_s / total_s if total_s else 0.0, "saved_s": saved_s, "total_s": total_s,
            "saved_steps": saved_steps / total_steps if total_steps else 0.0}


FOLD_MARGINS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def fold_replay(run: Run, champion: Run, margin: float, stop_step: int | None = None) -> tuple[int | None, float]:
    """Folds run in order; after each but the last, the fold rule compares its score with the champion's on
    the same fold (lower is better: mean rank). Returns (the fold after which it stopped, or None; the
    seconds saved). ``stop_step``: the curve rule stopped fold 0 at that step (everything after is saved)."""
    secs = [s or 0.0 for s in run.fold_seconds]
    if stop_step is not None:
        return 0, max(0.0, run.seconds - run.elapsed_at(stop_step)) + sum(secs[1:])
    for k, (value, champ) in enumerate(zip(run.folds[:-1], champion.folds)):
        if margin > 0 and value is not None and champ and (value - champ) / abs(champ) > margin:
            return k, sum(secs[k + 1:])
    return None, 0.0


def evaluate_folds(runs, candidates, margin: float, with_curves: bool) -> dict:
    multi = [r for r in candidates if len(r.folds) > 1 and len(runs[(r.session, r.champion)].folds) == len(r.folds)]
    discarded = [r for r in multi if r.status == "discard"]
    total = sum(sum(s or 0.0 for s in r.fold_seconds) for r in discarded)
    d = AbortSection()
    saved, hits, false = 0.0, [], []
    for r in multi:
        champ = runs[(r.session, r.champion)]
        stop = replay(r, champ, d.ratio, d.min_progress, d.patience, d.min_fraction) if with_curves else None
        fold, secs = fold_replay(r, champ, margin, stop.step if stop else None)
        if fold is None:
            continue
        (false if r.status == "keep" else hits).append(r)
        if r.status == "discard":
            saved += secs
    return {"margin": margin, "curves": with_curves, "hits": hits, "false": false, "n_discarded": len(discarded),
            "n_kept": sum(r.status == "keep" for r in multi), "saved": saved / total if total else 0.0,
            "saved_s": saved, "total_s": total}


def print_folds(runs, candidates) -> None:
    if not any(len(r.folds) > 1 for r in candidates):
        print("\n(no session recorded with several folds: record one with record_curves.py --folds 3)")
        return
    print("\nThe fold rule ([abort] fold_margin), on the sessions recorded with several folds: after each fold but "
          "the last,\na score worse than the champion's on the same fold by more than the margin skips the rest; "
          "alone, and after\nthe default curve rule (a fold 0 it stops saves the rest of fold 0 and every later fold).")
    print(f"\n{'margin':>7} {'curve rule':>10}  discarded aborted   saved (time)               kept aborted   goal")
    print("-" * 92)
    for with_curves in (False, True):
        for margin in (0.0, *FOLD_MARGINS):
            res = evaluate_folds(runs, candidates, margin, with_curves)
            goal = "yes" if res["saved"] >= GOAL and not res["false"] else "no"
            mark = "  <- the default" if with_curves and margin == AbortSection().fold_margin else ""
            print(f"{margin:>7g} {'default' if with_curves else 'off':>10}  {len(res['hits']):>3d}/{res['n_discarded']:<3d}"
                  f"             {100 * res['saved']:>5.1f}%  ({res['saved_s']:>5.0f} of {res['total_s']:>5.0f} s)"
                  f"  {len(res['false']):>3d}/{res['n_kept']:<3d}        {goal}{mark}")
    closest = []
    for r in candidates:
        if r.status == "keep" and len(r.folds) > 1:
            champ = runs[(r.session, r.champion)]
            closest += [((v - c) / abs(c), k, r) for k, (v, c) in enumerate(zip(r.folds[:-1], champ.folds))
                        if v is not None and c]
    if closest:
        worst = max(closest, key=lambda c: c[0])
        print(f"\nkept candidates, worst fold against the champion's (the rule's margin must stay above it): "
              f"{100 * worst[0]:+.1f}% ({worst[2].session}/{worst[2].number} fold {worst[1]}: {worst[2].description})")


def session_noise(runs, session: str) -> tuple[NoiseEvidence, str]:
    """The evidence of seed noise a session holds: its codes' repeated runs (the baseline's repeats, the
    champions' extra runs) when it recorded any; otherwise a stand-in from the spread of each candidate's
    fold-paired differences against its champion (each pair of single runs: Var(d_f - mean d) =
    2 tau^2 (1 - 1/K) plus any real fold-to-fold difference of the change's effect, so the stand-in is
    if anything too large, which makes the rule stop less)."""
    mine = {r.number: r for (s, _), r in runs.items() if s == session}
    measured = noise_evidence({f"experiment {n}": r.runs for n, r in mine.items() if len(r.runs) > 1})
    if measured.dof:
        return measured, f"measured: {measured.dof} dof from repeated runs"
    ss = dof = 0.0
    for r in mine.values():
        champ = mine.get(r.champion) if r.champion is not None else None
        if champ is None or len(r.folds) < 2 or len(champ.folds) != len(r.folds) or None in r.folds + champ.folds:
            continue
        d = [a - b for a, b in zip(r.folds, champ.folds)]
        mean = sum(d) / len(d)
        ss += sum((x - mean) ** 2 for x in d) / 2       # two runs' noise in each difference
        dof += len(d) - 1
    return NoiseEvidence(ss, int(dof), ("stand-in",)), (f"stand-in: the spread of fold-paired differences, "
                                                       f"{int(dof)} dof (no repeated runs recorded)")


def sequential_replay(run: Run, champion: Run, noise: NoiseEvidence, settings: DecisionSection,
                      stop_step: int | None = None) -> tuple[int | None, float, str]:
    """The sequential rule's after-fold stop on the candidate's first run, fold by fold, against every
    recorded run of its champion: (the fold after which it stopped, or None; seconds saved; the reason)."""
    secs = [s or 0.0 for s in run.fold_seconds]
    if stop_step is not None:
        return 0, max(0.0, run.seconds - run.elapsed_at(stop_step)) + sum(secs[1:]), "curve rule"
    k = len(run.folds)
    for j in range(k - 1):
        partial = list(run.folds[:j + 1]) + [None] * (k - j - 1)
        v = after_fold(Evidence([partial], champion.runs, noise, "minimize", settings))
        if v.action is Action.STOP:
            return j, sum(secs[j + 1:]), v.reason
    return None, 0.0, ""


def evaluate_sequential(runs, candidates, settings: DecisionSection, with_curves: bool, scale: float = 1.0) -> dict:
    multi = [r for r in candidates if len(r.folds) > 1 and len(runs[(r.session, r.champion)].folds) == len(r.folds)]
    discarded = [r for r in multi if r.status == "discard"]
    total = sum(sum(s or 0.0 for s in r.fold_seconds) for r in discarded)
    d = AbortSection()
    saved, hits, false, sources = 0.0, [], [], {}
    for r in multi:
        champ = runs[(r.session, r.champion)]
        noise, sources[r.session] = session_noise(runs, r.session)
        noise = NoiseEvidence(noise.ss * scale ** 2, noise.dof, noise.groups)
        stop = replay(r, champ, d.ratio, d.min_progress, d.patience, d.min_fraction) if with_curves else None
        fold, secs, why = sequential_replay(r, champ, noise, settings, stop.step if stop else None)
        if fold is None:
            continue
        (false if r.status == "keep" else hits).append((r, fold, why))
        if r.status == "discard":
            saved += secs
    return {"hits": hits, "false": false, "n_discarded": len(discarded),
            "n_kept": sum(r.status == "keep" for r in multi), "saved": saved / total if total else 0.0,
            "saved_s": saved, "total_s": total, "sources": sources}


def print_sequential(runs, candidates) -> None:
    if not any(len(r.folds) > 1 for r in candidates):
        return
    default = DecisionSection(rule="sequential")
    first = evaluate_sequential(runs, candidates, default, False)
    print("\nThe sequential rule's after-fold stop ([decision] rule = \"sequential\", the default), on the sessions "
          "recorded\nwith several folds, after the default curve rule: after each fold but the last of the "
          "candidate's first run,\nstop when z < c_1 - stop_margin (c_1 = 0), z the gain on the folds so far in sd of "
          "the difference, against\nevery recorded run of the champion. Noise: "
          + "; ".join(f"{s}: {src}" for s, src in first["sources"].items()))
    print(f"\n{'noise sd':>9} {'stop_margin':>11}  discarded stopped   saved (time)               kept stopped   goal")
    print("-" * 93)
    for scale in (0.5, 1.0, 2.0):
        for margin in (0.5, 1.0, 2.0):
            settings = DecisionSection(rule="sequential", stop_margin=margin)
            res = evaluate_sequential(runs, candidates, settings, True, scale)
            goal = "yes" if res["saved"] >= GOAL and not res["false"] else "no"
            mark = "  <- the default" if (scale, margin) == (1.0, default.stop_margin) else ""
            print(f"{f'x{scale:g}':>9} {margin:>11g}  {len(res['hits']):>3d}/{res['n_discarded']:<3d}             "
                  f"{100 * res['saved']:>5.1f}%  ({res['saved_s']:>5.0f} of {res['total_s']:>5.0f} s)  "
                  f"{len(res['false']):>3d}/{res['n_kept']:<3d}         {goal}{mark}")
    alone = evaluate_sequential(runs, candidates, default, False)
    print(f"(the default without the curve rule: {100 * alone['saved']:.1f}% saved, {len(alone['false'])} kept "
          f"stopped; noise sd x0.5 and x2: the noise estimate halved and doubled)")
    res = evaluate_sequential(runs, candidates, default, True)
    print("\ncandidates the default stops (curve rule, then the sequential rule):")
    for r, fold, why in res["hits"] + res["false"]:
        print(f"  {r.session}/{r.number:<3d} {r.status:<8} after fold {fold}: {r.description}\n      {why}")
    closest = []
    for r in candidates:
        champ = runs.get((r.session, r.champion))
        if r.status != "keep" or len(r.folds) < 2 or champ is None or len(champ.folds) != len(r.folds):
            continue
        noise, _ = session_noise(runs, r.session)
        for j in range(len(r.folds) - 1):
            partial = list(r.folds[:j + 1]) + [None] * (len(r.folds) - j - 1)
            n = after_fold(Evidence([partial], champ.runs, noise, "minimize", default)).numbers
            closest.append((n["z"] - n["stop_t"], n["z"], n["stop_t"], j, r))
    if closest:
        gap, z, stop, j, r = min(closest, key=lambda c: c[0])
        print(f"\nkept candidates, closest call: z = {z:+.2f} against the stop boundary {stop:+.2f} after fold {j} "
              f"({r.session}/{r.number}: {r.description})")


def _line(res: dict, mark: str = "") -> str:
    goal = "yes" if res["saved_time"] >= GOAL and not res["false"] else "no"
    return (f"{res['ratio']:>6g} {res['min_progress']:>8g} {res['patience']:>8d} {res['min_fraction']:>12g}  "
            f"{len(res['hits']):>3d}/{res['n_discarded']:<3d}      {100 * res['saved_time']:>5.1f}%  "
            f"({res['saved_s']:>5.0f} of {res['total_s']:>5.0f} s)  {100 * res['saved_steps']:>5.1f}%  "
            f"{len(res['false']):>3d}/{res['n_kept']:<3d}     {goal:<4} {mark}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--all", action="store_true", help="print every setting of the grid")
    args = ap.parse_args()
    runs, candidates = load(args.data)
    sessions = sorted({r.session for r in runs.values()})
    print(f"{len(candidates)} candidates ({sum(r.status == 'keep' for r in candidates)} kept, "
          f"{sum(r.status == 'discard' for r in candidates)} discarded) from {len(sessions)} recorded session(s): "
          f"{', '.join(sessions)}")
    grid = [evaluate(runs, candidates, *s)
            for s in itertools.product(RATIOS, MIN_PROGRESS, PATIENCES, MIN_FRACTIONS)]
    d = AbortSection()
    default = evaluate(runs, candidates, d.ratio, d.min_progress, d.patience, d.min_fraction)
    print(f"\n{'ratio':>6} {'min_prog':>8} {'patience':>8} {'min_fraction':>12}  discarded   saved (time)"
          f"              (steps)  kept       goal")
    print(f"{'':>6} {'':>8} {'':>8} {'':>12}  aborted                                         aborted")
    print("-" * 113)
    # by default: the ratios alone, then min_progress with the default ratio, at the default's patience and
    # min_fraction (the trade-offs); then the default
    at_default = [g for g in grid if (g["patience"], g["min_fraction"]) == (d.patience, d.min_fraction)]
    shown = grid if args.all else ([g for g in at_default if g["min_progress"] == 0.0] +
                                   [g for g in at_default if g["min_progress"] > 0 and g["ratio"] == d.ratio])
    for res in shown:
        print(_line(res))
    print("-" * 113)
    print(_line(default, "<- the default ([abort] in config.py)"))
    print("\ncandidates the default stops:")
    for r in default["hits"] + default["false"]:
        stop = replay(r, runs[(r.session, r.champion)], d.ratio, d.min_progress, d.patience, d.min_fraction)
        print(f"  {r.session}/{r.number:<3d} {r.status:<8} step {stop.step}/{stop.total}  {r.description}")
    closest = []
    for r in candidates:
        if r.status == "keep":
            rule = AbortRule.against(runs[(r.session, r.champion)].curve, ratio=d.ratio, patience=d.patience,
                                     min_fraction=d.min_fraction, min_progress=max(d.min_progress, 1e-9))
            watch = AbortWatch(rule)
            for point in r.curve:
                watch.feed(point)
            closest += [(row.get("progress", 9.0), row.get("ratio", 0.0), row["step"], r) for row in watch.compared]
    if closest:
        low, high = min(closest, key=lambda c: c[0]), max(closest, key=lambda c: c[1])
        print(f"\nkept candidates, closest calls from {d.min_fraction:.0%} of the steps on: progress {low[0]:.2f} of "
              f"the champion's ({low[3].session}/{low[3].number} at step {low[2]}), loss {high[1]:.2f}x the "
              f"champion's ({high[3].session}/{high[3].number} at step {high[2]})")
    print_sequential(runs, candidates)
    print_folds(runs, candidates)
    print("\nnever stopped by any setting without a false abort (their loss tracks the champion's):")
    safe = [g for g in grid if not g["false"]]
    caught = {(r.session, r.number) for g in safe for r in g["hits"]}
    for r in candidates:
        if r.status == "discard" and (r.session, r.number) not in caught:
            print(f"  {r.session}/{r.number:<3d} {r.description}")


if __name__ == "__main__":
    main()
