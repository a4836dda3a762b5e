"""The deadline of a run that is still progressing while other work takes the machine.

``[run] timeout_s`` is a wall-clock limit: on a quiet machine it is the time a run may take. When other work
takes the run's cores, the wall clock runs on while the run waits, and a run that would have finished is
killed. The rule below moves the deadline by what the other work took from the run, and only that, up to
a hard cap; a run that is slow on its own is still stopped at its deadline. It is a pure function of what
the supervisor measures (``runner/load.py`` figures and the run's progress lines), checked by the
supervisor at the deadline and again at each moved deadline; ``docs/contention.md`` shows it on recorded
cases.

With ``T`` = ``timeout_s``, ``W`` the wall seconds so far, ``C`` the CPU seconds the run received, ``d`` the
cores it asked for (``cpu_demand``, at most its cores) and ``N/M`` its last progress line:

1. No progress line yet, no load figures, or a run that asks for less than a quarter of a core: the
   deadline stays ``T`` (the run's verdict is the old one: ``load.judge`` tells timeout from contention).
2. The run's pace against the champion's on the same fold (when the champion's run is known): its CPU
   seconds per step since its first progress line above ``tolerance`` × the champion's (whose figure,
   start-up included, is the generous one), or the CPU its ``M`` steps would need at that pace above
   ``tolerance`` × what the champion's run needed: slow on its own; it stays ``T``.
3. The time the other work cost it: ``lost = W − C / d`` (the wall time beyond what its CPU would have
   taken had it had the cores it asked for), but never more than the other work ran on its cores
   (``machine_busy_other × W / d``): a run that starves itself with more threads than cores, on a quiet
   machine, has lost nothing to anyone. Under ``MIN_LOST`` of ``T`` it was slow on its own: it stays ``T``.
4. Otherwise the deadline is ``T + lost``, at most ``cap × T``. A run still going then is stopped: at the
   cap it is starved (``load.judge`` decides ``contention``, and the loop's re-run and pause path takes
   over); before the cap it had ``T`` seconds of the CPU it asked for and did not finish: a ``timeout``.

Both ``lost`` and the other work are counted over the whole run, so other work that starts midway counts
from when it started.

The deadline is re-checked each time it is reached, so it follows the starvation as it happens; it only
moves later, never past the cap. ``RunOutcome.extra["deadline"]`` records the verdict, the seconds added
and why.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_DEMAND = 0.25     # the same threshold as load.judge: below it the run mostly waited on something else
MIN_STEP_S = 0.2      # a moved deadline less than this ahead is not worth a check: stop now
MIN_LOST = 0.02       # lost less than this share of the deadline: the other work took nothing that matters


@dataclass(frozen=True)
class Pace:
    """The champion's run of the same fold: the CPU seconds it used for the steps it reached."""

    cpu_seconds: float
    steps: int          # the last step it reached (its total when it finished)
    total_steps: int

    @property
    def per_step(self) -> float:
        return self.cpu_seconds / self.steps

    @property
    def projected(self) -> float:
        """CPU seconds for its whole run (its own figure when it reached its last step)."""
        return self.cpu_seconds * max(self.total_steps, self.steps) / self.steps

    @classmethod
    def from_run(cls, run: dict) -> "Pace | None":
        """From one run recorded in a ledger row (``decision_json["runs"]``): a run that ended ``ok`` with
        CPU seconds and steps; None otherwise."""
        if not isinstance(run, dict) or run.get("kind") != "ok":
            return None
        cpu, step, total = run.get("cpu_seconds"), run.get("last_step"), run.get("total_steps")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (cpu, step, total)):
            return None
        if not (cpu > 0 and step >= 1 and total >= 1):
            return None
        return cls(float(cpu), int(step), int(total))


@dataclass(frozen=True)
class DeadlineRule:
    """The settings of the rule (``[contention]``) and the champion's pace for this run."""

    cap: float = 3.0          # the deadline may move up to cap × timeout_s
    tolerance: float = 1.5    # CPU per step up to this × the champion's is on pace
    pace: Pace | None = None


@dataclass(frozen=True)
class Progress:
    """What the supervisor knows of the run at a check."""

    wall: float                                   # seconds since the start
    cpu: float                                    # CPU seconds received
    demand: float | None                          # cores the run asked for (load.py cpu_demand)
    cores: int                                    # the cores it may use
    other: float | None                           # cores other work kept busy (load.py machine_busy_other)
    first: tuple[float, int] | None = None        # (CPU seconds, step) at its first progress line
    last: tuple[float, int, int] | None = None    # (CPU seconds, step, total) at its latest progress line


@dataclass(frozen=True)
class Verdict:
    """``deadline``: wall seconds from the start at which the run is to be stopped. ``kind``: ``extend`` (it
    goes on), ``own`` (slow on its own: a timeout), ``capped`` (starved up to the cap), ``none`` (the rule
    had nothing to go on: the old verdict applies)."""

    deadline: float
    kind: str
    why: str
    lost: float = 0.0


def decide(rule: DeadlineRule, timeout_s: float, p: Progress) -> Verdict:
    """The rule of the module docstring at one check (``p.wall`` at or past the current deadline)."""
    T = float(timeout_s)
    cap = max(rule.cap, 1.0) * T
    if p.last is None:
        return Verdict(T, "none", "it printed no progress line (step N/M), so its progress is unknown")
    if p.other is None or p.demand is None:
        return Verdict(T, "none", "no load figures on this system")
    cores = max(1, p.cores)
    rate = min(p.demand, float(cores))
    if rate < MIN_DEMAND:
        return Verdict(T, "none", "the run mostly waited on something other than the CPU")
    _, step, total = p.last
    if rule.pace is not None and (slow := _off_pace(rule, p)):
        return Verdict(T, "own", slow)
    lost = min(max(0.0, p.wall - p.cpu / rate), p.other * p.wall / rate)
    if lost < MIN_LOST * T:
        return Verdict(T, "own", f"other work took almost nothing from it (it held {p.other:.2f} of its {cores} "
                                 f"cores; the run got {p.cpu:.0f} s of CPU in {p.wall:.0f} s): slow on its own, "
                                 f"at step {step}/{total}")
    moved = min(T + lost, cap)
    said = (f"other work held {p.other:.2f} of its {cores} cores and took about {lost:.0f} s from it "
            f"({p.cpu:.0f} s of CPU in {p.wall:.0f} s, asking for {rate:.2f} cores)")
    if moved > p.wall + MIN_STEP_S:
        return Verdict(moved, "extend", f"deadline moved to {moved:.0f} s: {said}; at step {step}/{total}", lost)
    if T + lost >= cap:
        return Verdict(cap, "capped", f"still starved at the hard cap of {cap:.0f} s ({rule.cap:g} × timeout_s): "
                                      f"{said}; at step {step}/{total}", lost)
    return Verdict(moved, "own", f"it had the {T:.0f} s deadline's worth of the CPU it asked for (plus {lost:.0f} s "
                                 f"for what other work took) and was at step {step}/{total}: slow on its own", lost)


def _off_pace(rule: DeadlineRule, p: Progress) -> str:
    """Why the run is slower than the champion on its own CPU; '' when it is not (or when it cannot tell)."""
    pace, tol = rule.pace, rule.tolerance
    assert pace is not None and p.last is not None
    cpu, step, total = p.last
    if p.first is None or step <= p.first[1]:
        return ""     # one progress line so far: no pace without start-up in it
    per_step = (cpu - p.first[0]) / (step - p.first[1])
    if per_step > tol * pace.per_step:
        return (f"its steps cost {per_step:.3g} s of CPU each against the champion's {pace.per_step:.3g} s "
                f"(more than {tol:g}×): slow on its own CPU, at step {step}/{total}")
    needed = cpu + per_step * max(0, total - step)
    if needed > tol * pace.projected:
        return (f"at its pace its {total} steps need about {needed:.0f} s of CPU against the champion's "
                f"{pace.projected:.0f} s (more than {tol:g}×): slow on its own CPU, at step {step}/{total}")
    return ""
