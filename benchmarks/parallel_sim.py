"""What the stale rule costs and saves: serial search against 2, 4 and 8 candidates in flight.

    python benchmarks/parallel_sim.py [--trajectories 100] [--hours 48] [--seed 0]

One trajectory is one night of search with a fixed wall-clock budget of ``--hours`` trial-lengths (one
trial, all its folds, takes about 1 unit: uniform 0.9-1.1; an agent turn 0.05, one at a time). The code
under search is a state with two kinds of change, as in the eCLIP loop:
- constants (70% of proposals): one of 6 knobs moved by N(0, 0.6); the true metric is
  100 + sum_k 4 (x_k - opt_k)^2 + 2 (x_0 - opt_0)(x_1 - opt_1), so knob changes interact;
- code changes (30%): in one of 4 regions of the file, an additive effect drawn as in decision_sim
  (35% none, 15% harmful, 50% helpful; scaled to 0.1-8). Two code changes of one region conflict.
A trial measures the true metric plus fold offsets and seed noise (sigma 1 per mean of 3 folds); the
keep/discard rule is the real ``autoresearch.loop.decide`` with a noise floor from 3 baseline runs.

With N slots, each free slot gets a candidate proposed from the champion of that moment; results are
decided one at a time. A candidate whose parent is no longer the champion is stale. Rules for it:
- rule (ours, loop/scheduler.py): judged against its parent; not better -> discarded, nothing re-run;
  better -> re-applied onto the current champion (constants: the candidate's values set there; code: a
  conflict in the same region -> `stale`) and run again there, decided as usual; re-applied at most twice.
- naive: decided against the current champion on its old measurement; a keep makes its tree (built on
  the old champion, without what was kept since) the champion.
- drop: every stale candidate is discarded.

Columns: experiments decided in the night, kept ones, trials run (GPU time, confirmations and re-runs included),
gain = true metric of the baseline minus that of the final champion (higher is better) with its standard
error over nights, ratio to the serial gain, regressions = keeps that made the true metric worse, stale% = share of experiments whose
parent had moved, rerun = re-runs the rule spent, lost = stale candidates that had beaten their parent
and were dropped (conflict or rule).
"""

from __future__ import annotations

import argparse
import heapq
import math
import time
from dataclasses import dataclass, field

import numpy as np

from autoresearch.config import DecisionSection
from autoresearch.loop.decide import decide, decide_confirmed, noise_floor

K_FOLDS, FOLD_SD, SIGMA = 3, 3.0, 1.0
KNOBS, REGIONS = 6, 4
AGENT = 0.05
MAX_REAPPLY = 2


@dataclass(frozen=True)
class State:
    x: tuple[float, ...]
    code: tuple[tuple[int, float], ...] = ()     # kept code changes: (region, effect)


@dataclass
class Change:
    knob: int | None = None
    value: float = 0.0
    region: int | None = None
    effect: float = 0.0

    def apply(self, s: State) -> State:
        if self.knob is not None:
            x = list(s.x)
            x[self.knob] = self.value
            return State(tuple(x), s.code)
        return State(s.x, s.code + ((self.region, self.effect),))


@dataclass
class Champion:
    state: State
    runs: list
    version: int
    regions: tuple[int, ...] = ()    # regions of code changes kept so far, in order


@dataclass
class Tally:
    decided: int = 0
    kept: int = 0
    trials: int = 0
    stale: int = 0
    reruns: int = 0
    lost: int = 0
    regressions: int = 0
    gain: float = 0.0


@dataclass(order=True)
class Event:
    time: float
    seq: int
    cand: dict = field(compare=False)


def truth(s: State, opt: np.ndarray) -> float:
    d = np.array(s.x) - opt
    return float(100 + 4 * np.sum(d ** 2) + 2 * d[0] * d[1] - sum(e for _, e in s.code))


def draw_code_effect(rng: np.random.Generator) -> float:
    u = rng.random()
    if u < 0.35:
        return 0.0
    size = float(np.exp(rng.uniform(np.log(0.1), np.log(8.0))))
    return -size if u < 0.50 else size


def night(rule: str, slots: int, hours: float, rng: np.random.Generator, settings: DecisionSection) -> Tally:
    opt = rng.normal(0, 1, KNOBS)
    folds = rng.normal(0.0, FOLD_SD, K_FOLDS)
    seed_sd = SIGMA * math.sqrt(K_FOLDS)
    tally = Tally()

    def run(s: State) -> list[float]:
        tally.trials += 1
        return (truth(s, opt) + folds + rng.normal(0.0, seed_sd, K_FOLDS)).tolist()

    start = State(tuple(rng.normal(0, 1, KNOBS) + opt * 0.3))
    base_runs = [run(start) for _ in range(3)]
    noise = noise_floor(base_runs)
    champ = Champion(start, base_runs, 0)
    history = {0: champ}
    t_agent, seq = 0.0, 0
    events: list[Event] = []

    def judge(runs: list, against: list) -> tuple[str, list]:
        d = decide(runs[0], against, direction="minimize", settings=settings, noise=noise)
        if d.status == "confirm":
            runs = runs + [run(runs_state) for _ in range(max(1, settings.confirm_repeats))]
            d = decide_confirmed(runs, against, direction="minimize", settings=settings, noise=noise)
        return d.status, runs

    def launch(now: float, cand: dict) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, Event(now + rng.uniform(0.9, 1.1), seq, cand))

    def propose(now: float) -> None:
        nonlocal t_agent
        t_agent = max(t_agent, now) + AGENT
        if rng.random() < 0.7:
            k = int(rng.integers(KNOBS))
            change = Change(knob=k, value=champ.state.x[k] + rng.normal(0, 0.6))
        else:
            change = Change(region=int(rng.integers(REGIONS)), effect=draw_code_effect(rng))
        launch(t_agent, {"change": change, "parent": champ.version, "state": change.apply(champ.state),
                         "reapplied": 0})

    for _ in range(slots):
        propose(0.0)
    while events:
        ev = heapq.heappop(events)
        now, cand = ev.time, ev.cand
        if now > hours:
            break
        runs_state = cand["state"]
        runs = [run(runs_state)]
        confirm_before = tally.trials   # after the candidate's own run
        parent = history[cand["parent"]]
        kept = False
        if cand["parent"] == champ.version or rule == "naive":
            if cand["parent"] != champ.version:
                tally.stale += cand["reapplied"] == 0
            status, runs = judge(runs, champ.runs)
            kept = status == "keep"
        else:
            tally.stale += cand["reapplied"] == 0
            if rule == "drop":   # dropped unseen; counted as lost when it had beaten its parent
                d = decide(runs[0], parent.runs, direction="minimize", settings=settings, noise=noise)
                tally.lost += d.status != "discard"
            else:
                status, runs = judge(runs, parent.runs)
                if status != "discard":
                    change: Change = cand["change"]
                    moved = champ.regions[len(parent.regions):]
                    if cand["reapplied"] >= MAX_REAPPLY or (change.region is not None and change.region in moved):
                        tally.lost += 1
                    else:   # re-apply onto the champion of now and run it again there
                        tally.reruns += 1
                        launch(now, {**cand, "parent": champ.version, "state": change.apply(champ.state),
                                     "reapplied": cand["reapplied"] + 1})
                        continue
        now += tally.trials - confirm_before   # confirmation runs keep the slot busy
        tally.decided += 1
        if kept:
            tally.kept += 1
            before = truth(champ.state, opt)
            tally.regressions += truth(runs_state, opt) > before
            regions = champ.regions + ((cand["change"].region,) if cand["change"].region is not None else ())
            champ = Champion(runs_state, runs, champ.version + 1, regions)
            history[champ.version] = champ
        if now <= hours:
            propose(now)
    tally.gain = truth(start, opt) - truth(champ.state, opt)
    return tally


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trajectories", type=int, default=100)
    ap.add_argument("--hours", type=float, default=48.0, help="the night, in trial lengths")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    settings = DecisionSection(rule="noise")   # the figures in docs/parallel.md were measured with the noise rule
    print(f"{args.trajectories} nights of {args.hours:g} trial-lengths each; decide() with the noise rule's defaults; "
          f"mean over nights\n")
    head = (f"{'rule':6} {'slots':>5} | {'decided':>7} {'kept':>5} {'trials':>7} {'gain':>7} {'± se':>5} {'x serial':>8} {'regress':>7} "
            f"{'stale%':>6} {'rerun':>6} {'lost':>5}")
    print(head)
    print("-" * len(head))
    t0 = time.perf_counter()
    serial_gain = None
    for slots in (1, 2, 4, 8):
        for rule in (("rule",) if slots == 1 else ("rule", "naive", "drop")):
            tallies = [night(rule, slots, args.hours, np.random.default_rng([args.seed, i]), settings)
                       for i in range(args.trajectories)]
            mean = {k: float(np.mean([getattr(t, k) for t in tallies])) for k in vars(tallies[0])}
            se = float(np.std([t.gain for t in tallies], ddof=1) / math.sqrt(len(tallies)))
            serial_gain = mean["gain"] if slots == 1 else serial_gain
            print(f"{rule if slots > 1 else 'serial':6} {slots:>5} | {mean['decided']:>7.1f} {mean['kept']:>5.1f} {mean['trials']:>7.1f} "
                  f"{mean['gain']:>7.2f} {se:>5.2f} {mean['gain'] / serial_gain:>8.2f} {mean['regressions']:>7.2f} "
                  f"{100 * mean['stale'] / max(mean['decided'], 1):>6.1f} {mean['reruns']:>6.1f} {mean['lost']:>5.2f}")
    print(f"\n({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
