"""How much CPU a run got against what it asked for, and how busy the rest of the machine was.

A fold that takes 27 s alone can take 180 s beside other work. A deadline alone cannot tell that from a
candidate that made training slower, so every run is measured (Linux ``/proc``; elsewhere the figures
are absent and every timeout stays a timeout):

- ``cpu_seconds``: user + system time of the run's processes. Each process the supervisor tracks is read
  from ``/proc/<pid>/stat`` at every poll and its last value is kept after it exits; once the main process
  is reaped, the tool's ``RUSAGE_CHILDREN`` delta (the main process and every descendant it waited for)
  is used when larger. Both are lower bounds of the truth, so the larger is the better estimate.
- ``wait_seconds``: time the run's threads were runnable but not running (the kernel's ``run_delay``
  in ``/proc/<pid>/task/<tid>/schedstat``); ``None`` when the kernel does not keep it. Then the demand
  falls back to the mean number of the run's threads seen runnable (state R) at each poll.
- ``cpu_demand``: cores the run asked for: (cpu + wait) / wall. ``cpu_got``: the fraction of that it got.
- ``machine_busy_other``: busy time of the cores the run may use (its CPU affinity), from the per-core
  lines of ``/proc/stat`` (user, nice, system, irq, softirq and steal: all but idle and iowait), minus the
  run's own CPU time, per second of wall time: how many of those cores other work kept busy.

``judge`` turns the figures into the verdict ``oversubscribed``: other work held at least ``busy_other``
of the run's cores AND the run got less than ``min_share`` of the CPU it asked for AND it asked for at
least a quarter of a core (a run that sleeps or waits on I/O is slow on its own) AND, when the run printed
progress (``step N/M``), its pace says it would have finished in time with the CPU it asked for: CPU
seconds × M / N / demand within the wall time it had (a candidate that doubled its steps is slow on its
own, however busy the machine). A candidate that starts more threads than there are cores starves only
itself: the machine's other work stays low and the verdict is no. Other work includes anything the run started that escaped its process tree (possible
only without a sandbox), which at worst turns a timeout into a re-run. A run whose deadline the deadline
rule (``deadline.py``) judged "slow on its own" (``figures["deadline"]["verdict"] == "own"``) is never
oversubscribed: that rule already gave it the time the other work took.
"""

from __future__ import annotations

import os
import resource
import time

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MIN_DEMAND = 0.25   # cores: below this the run mostly waited on something other than the CPU


def _cpus(pid: int) -> list[int]:
    try:
        return sorted(os.sched_getaffinity(pid))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def machine_busy(cpus: list[int]) -> float | None:
    """Busy seconds so far summed over the given cores, from /proc/stat; None without /proc."""
    wanted = {f"cpu{c}" for c in cpus}
    total = 0
    try:
        with open("/proc/stat", "rb") as fh:
            for raw in fh:
                parts = raw.split()
                if not parts or parts[0].decode() not in wanted:
                    continue
                v = [int(x) for x in parts[1:9]] + [0] * 8
                total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]   # user nice system irq softirq steal
    except (OSError, ValueError):
        return None
    return total / CLK_TCK


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class LoadMeter:
    """Accumulates the figures of one run; ``sample`` at every poll, ``figures`` once at the end."""

    def __init__(self, root_pid: int) -> None:
        self.root = root_pid
        self.cpus = _cpus(root_pid)
        self.start = time.monotonic()
        self.busy0 = machine_busy(self.cpus)
        self.rusage0 = _children_cpu()
        self.cpu: dict[tuple[int, int], float] = {}     # (pid, start) -> last user+system seconds
        self.wait: dict[tuple[int, int], float] = {}    # (pid, tid) -> last run_delay seconds
        self.schedstat = False                          # the kernel reported a run_delay at least once
        self.runnable: list[int] = []                   # threads in state R at each sample
        self.frozen: dict | None = None

    def sample(self, procs: dict[int, tuple[int, float]]) -> None:
        """``procs``: pid -> (start time, user+system seconds) of the run's live processes now."""
        runnable = 0
        for pid, (start, seconds) in procs.items():
            self.cpu[(pid, start)] = max(seconds, self.cpu.get((pid, start), 0.0))
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as fh:
                        fields = fh.read().split()
                    if int(fields[0]) > 0:
                        self.schedstat = True
                        self.wait[(pid, int(tid))] = int(fields[1]) / 1e9
                    with open(f"/proc/{pid}/task/{tid}/stat", "rb") as fh:
                        raw = fh.read()
                    runnable += raw[raw.rfind(b")") + 2:raw.rfind(b")") + 3] == b"R"
                except (OSError, ValueError, IndexError):
                    continue
        self.runnable.append(runnable)

    def cpu_now(self) -> float:
        """CPU seconds of the run's processes as of the last sample."""
        return sum(self.cpu.values())

    def freeze(self) -> dict:
        """Take the figures now (at the deadline, before the stop signals) and keep them."""
        self.frozen = self.figures()
        return self.frozen

    def figures(self, reaped: bool = False) -> dict:
        """The run's figures (see the module docstring); ``reaped``: the main process has been waited for."""
        if self.frozen is not None:
            return self.frozen
        wall = max(time.monotonic() - self.start, 1e-6)
        cpu = sum(self.cpu.values())
        if reaped:
            cpu = max(cpu, _children_cpu() - self.rusage0)
        busy = machine_busy(self.cpus)
        other = None if busy is None or self.busy0 is None else max(0.0, busy - self.busy0 - cpu) / wall
        cores = len(self.cpus)
        wait = sum(self.wait.values()) if self.schedstat else None
        if wait is not None:
            demand = (cpu + wait) / wall
        else:
            demand = min(sum(self.runnable) / len(self.runnable), cores) if self.runnable else cpu / wall
        got = min(1.0, (cpu / wall) / demand) if demand > 0 else 1.0
        return {"wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "cpu_share": round(cpu / wall, 3),
                "wait_seconds": None if wait is None else round(wait, 3), "cpu_demand": round(demand, 3),
                "cpu_got": round(got, 3), "cores": cores,
                "machine_busy_other": None if other is None else round(other, 3)}


def judge(figures: dict, *, busy_other: float = 0.5, min_share: float = 0.5) -> tuple[bool, str]:
    """(oversubscribed, why): see the module docstring for the rule."""
    other, cores = figures.get("machine_busy_other"), figures.get("cores") or 1
    demand, got = figures.get("cpu_demand"), figures.get("cpu_got")
    if other is None or demand is None or got is None:
        return False, "no load figures on this system"
    moved = figures.get("deadline")
    if isinstance(moved, dict) and moved.get("verdict") == "own":   # the deadline rule already judged it
        return False, str(moved.get("why", "slow on its own"))
    said = (f"other work kept {other:.2f} of the run's {cores} cores busy; the run asked for {demand:.2f} "
            f"cores and got {got:.0%} of that ({figures.get('cpu_seconds', 0):.1f} s of CPU in "
            f"{figures.get('wall_seconds', 0):.1f} s)")
    if demand < MIN_DEMAND:
        return False, "the run mostly waited on something other than the CPU: " + said
    if other < busy_other * cores:
        return False, f"the machine was not oversubscribed (threshold {busy_other:.0%} of the cores): " + said
    if got >= min_share:
        return False, f"the run got its CPU (threshold {min_share:.0%}): " + said
    step, total = figures.get("last_step"), figures.get("total_steps")
    if step and total and step < total:
        needed = figures.get("cpu_seconds", 0.0) * total / step / demand
        if needed > figures.get("wall_seconds", 0.0):
            return False, (f"it was starved, but at its pace (step {step}/{total} after "
                           f"{figures.get('cpu_seconds', 0.0):.1f} s of CPU) it needed about {needed:.0f} s with all "
                           f"the CPU it asked for, more than the {figures.get('wall_seconds', 0.0):.0f} s it had: " + said)
    return True, said
