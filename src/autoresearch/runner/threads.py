"""The thread set-up of every run: how many threads, and workers that wait without spinning.

One cpu-preset eCLIP fold with two threads took 65 s on a quiet 2-core machine and did not finish in 400 s
with one core kept busy by another process: OpenMP workers spin while they wait for each other, so a busy
core turns each parallel region into a fight. Every run the tool starts (folds, smoke tests, confirmation,
noise-floor and final runs; local, in slots or on Ray) goes through ``runner.process.run_spec``, which
calls ``plan`` just before the run starts and puts ``environment(plan)`` into the run's environment.

Waiting (measured with ``benchmarks/contention.py`` and a spin probe, see ``docs/contention.md``):

- ``OMP_WAIT_POLICY=PASSIVE`` with ``GOMP_SPINCOUNT=1000``: OpenMP workers spin a moment, then sleep
  (GNU libgomp, which PyTorch's CPU wheels use with MKL; LLVM and Intel OpenMP follow the standard
  variable, which implies their ``KMP_BLOCKTIME=0``). A pure ``PASSIVE`` fold (1,200 prints) took 27-30 s
  quiet against 18-21 s spinning, no better than one thread; a short spin keeps the quiet speed (19-21 s)
  and, when another process takes a core in the middle of the run, costs 37-41 s where libgomp's default
  spin (300,000) and ``ACTIVE`` took 208-215 s and ``PASSIVE`` 31 s (``docs/contention.md``).
- ``OPENBLAS_THREAD_TIMEOUT=4``: OpenBLAS (NumPy's BLAS) uses its own threads, which ignore the OpenMP
  variable; 4 is its shortest spin (2**4 cycles) before they sleep.

A variable already in the spec's environment, or in the tool's own environment, is left as it is: a
person who sets ``OMP_WAIT_POLICY=ACTIVE`` for a dedicated machine gets it.

How many threads (the first rule that applies):

1. ``spec.threads`` > 0 (``[resources] threads``): exactly that many.
2. ``OMP_NUM_THREADS`` in the spec's environment (the task or the caller chose it): exactly that.
3. ``spec.cpus`` > 0 (an executor's share: a slot's cores, a Ray task's CPUs): that share, lowered to the
   cores free when the run starts.
4. ``OMP_NUM_THREADS`` in the tool's own environment (a person set it for the machine): exactly that.
5. Otherwise: the cores of the run's CPU affinity, lowered to those free when it starts.

"Free when it starts": other work's busy time on the run's cores (``/proc/stat``, the same count as
``runner/load.py``) over ``WINDOW_S`` just before the start; free = cores − busy, and the count is
``max(1, min(share, round(free)))`` (half a core busy or more counts as taken). Two threads barely beat
one at the cpu preset (65 s against 71 s), so giving up a thread to a busy core costs little, while
fighting for it cost more than 5×.

The count goes into ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
``AUTORESEARCH_CPUS`` (each one the spec does not set itself). The bundled templates read
``AUTORESEARCH_CPUS`` (``torch.set_num_threads``); a user's own script gets it through the environment
alone, since the OpenMP and BLAS runtimes read these variables when they load. The choice is recorded in
the run's figures (``RunOutcome.extra["threads"]``, in the ledger's ``decision_json["runs"]``) and in the
log's header: ``threads 1 of 2 (1.0 core busy at start)``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Mapping

from autoresearch.runner.load import machine_busy

# The thread-count variables every run gets (one home: the executors import it from here).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "AUTORESEARCH_CPUS")
# Workers that wait without spinning: set unless the spec or the tool's environment sets them.
WAIT_VARS = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000", "OPENBLAS_THREAD_TIMEOUT": "4"}
WINDOW_S = 0.2   # how long the other work on the run's cores is measured before it starts


@dataclass(frozen=True)
class ThreadPlan:
    """The thread set-up of one run, and why."""

    threads: int          # the count every thread variable gets
    cores: int            # the cores the run may use (its CPU affinity)
    share: float          # the cores it is given (its slot's share, else all of them)
    busy: float | None    # cores other work kept busy just before it started (None: not measured)
    rule: str             # which rule chose the count: config | spec | share | environment | cores

    @property
    def summary(self) -> str:
        """One line for a researcher, e.g. ``threads 1 of 2 (1.0 core busy at start)``."""
        given = self.share if self.share < self.cores else self.cores
        text = f"threads {self.threads} of {given:g}"
        if self.rule in ("config", "spec", "environment"):
            where = {"config": "[resources] threads", "spec": "OMP_NUM_THREADS of the run",
                     "environment": "OMP_NUM_THREADS of the tool's environment"}[self.rule]
            return f"{text} (set by {where})"
        if self.busy is None:
            return text if given < 2 else f"{text} (load not measured)"
        return f"{text} ({self.busy:.1f} core{'s' * (round(self.busy, 1) != 1)} busy at start)"

    def to_dict(self) -> dict:
        return {"threads": self.threads, "cores": self.cores, "share": self.share,
                "busy_at_start": None if self.busy is None else round(self.busy, 2), "rule": self.rule,
                "summary": self.summary}


def _count(value: str | None) -> int | None:
    """A positive thread count from a variable's value (``OMP_NUM_THREADS=4``, or ``4,2`` for nesting)."""
    try:
        n = int(float((value or "").split(",")[0].strip()))
    except ValueError:
        return None
    return n if n >= 1 else None


def busy_now(cpus: list[int], window: float = WINDOW_S) -> float | None:
    """Cores of ``cpus`` kept busy by anything over the next ``window`` seconds (this process is idle
    meanwhile, so it is all other work); None without ``/proc/stat``."""
    before = machine_busy(cpus)
    if before is None:
        return None
    start = time.monotonic()
    time.sleep(window)
    after = machine_busy(cpus)
    if after is None:
        return None
    return max(0.0, min(float(len(cpus)), (after - before) / max(time.monotonic() - start, 1e-3)))


def choose(*, cores: int, share: float = 0.0, busy: float | None = None, explicit: int = 0,
           spec_env: Mapping[str, str] | None = None, tool_env: Mapping[str, str] | None = None) -> ThreadPlan:
    """The thread count by the rules of the module docstring (pure: ``busy`` is measured by the caller)."""
    cores = max(1, int(cores))
    given = min(float(share), float(cores)) if share > 0 else float(cores)
    if explicit > 0:
        return ThreadPlan(int(explicit), cores, given, busy, "config")
    if (n := _count((spec_env or {}).get("OMP_NUM_THREADS"))) is not None:
        return ThreadPlan(n, cores, given, busy, "spec")
    if share <= 0 and (n := _count((tool_env or {}).get("OMP_NUM_THREADS"))) is not None:
        return ThreadPlan(n, cores, given, busy, "environment")
    top = max(1, math.floor(given))
    free = given if busy is None else min(given, cores - busy)
    threads = max(1, min(top, math.floor(free + 0.5)))
    return ThreadPlan(threads, cores, given, busy, "share" if share > 0 else "cores")


def needs_measure(*, cores: int, share: float, explicit: int, spec_env: Mapping[str, str],
                  tool_env: Mapping[str, str]) -> bool:
    """Whether the load matters to the count (one core, or a count fixed by a setting: it does not)."""
    fixed = choose(cores=cores, share=share, explicit=explicit, spec_env=spec_env, tool_env=tool_env)
    return fixed.rule in ("share", "cores") and min(share or cores, cores) >= 2


def plan(*, share: float = 0.0, explicit: int = 0, spec_env: Mapping[str, str] | None = None,
         tool_env: Mapping[str, str] | None = None, cpus: list[int] | None = None) -> ThreadPlan:
    """The plan for a run started from this thread now: its affinity (inherited by the run), the load on
    those cores over ``WINDOW_S`` when it matters, and ``choose``."""
    spec_env = spec_env or {}
    tool_env = os.environ if tool_env is None else tool_env
    if cpus is None:
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = list(range(os.cpu_count() or 1))
    busy = None
    if needs_measure(cores=len(cpus), share=share, explicit=explicit, spec_env=spec_env, tool_env=tool_env):
        busy = busy_now(cpus)
    return choose(cores=len(cpus), share=share, busy=busy, explicit=explicit, spec_env=spec_env, tool_env=tool_env)


def environment(chosen: ThreadPlan, spec_env: Mapping[str, str],
                tool_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables to add to the run's environment: the count in every thread variable the spec does
    not set, and the waiting variables that neither the spec nor the tool's environment sets."""
    tool_env = os.environ if tool_env is None else tool_env
    out = {k: str(chosen.threads) for k in THREAD_VARS if k not in spec_env}
    out.update({k: v for k, v in WAIT_VARS.items() if k not in spec_env and k not in tool_env})
    return out
