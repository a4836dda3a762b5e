"""Fold runs side by side on one machine, each pinned to its own devices.

The machine is cut into *slots* from ``[resources]`` (docs/parallel.md):

- ``gpus`` per run: the GPU ids come from ``[resources] gpu_ids``, else from ``CUDA_VISIBLE_DEVICES`` in the
  tool's environment, else one id per line of ``nvidia-smi -L``; slot k gets ids k·g … k·g+g−1 and its run
  sees exactly those (``CUDA_VISIBLE_DEVICES``). Asking for more GPUs than found is a setup error.
- ``cpus`` per run: slots = cores ÷ cpus (at least one). The run is given its share (``RunSpec.cpus``,
  at least 1), from which the runner's thread set-up (``runner/threads.py``) sets ``OMP_NUM_THREADS``,
  ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``AUTORESEARCH_CPUS`` (lowered to the cores free when it
  starts), so that two runs on one CPU do not each start a thread per core; with a whole number of cores
  and ``pin_cpus`` the run is also bound to its own cores. A fraction (``cpus = 0.25``) is for runs that
  mostly wait: more slots than cores, nothing bound.
- Both zero (the default): one slot, nothing set: folds run one after another as before.

Each run is a thread calling ``runner.process.run_spec`` (which blocks). CPU binding uses the fact that
on Linux a thread's affinity is inherited by the processes it starts: the run's thread binds itself
(``os.sched_setaffinity(0, …)`` acts on the calling thread) just before starting the run, so
``process.py`` needs no hook. The slots are shared by every concurrent caller of ``run`` (several
candidates in flight share one pool of devices). ``keep_going`` is called in the caller's thread;
progress lines from the runs' threads are handed to ``on_line`` one at a time (under a lock).

Stopping: Ctrl-C in the caller's thread, or ``cancel_all()`` from any thread, raises ``KeyboardInterrupt``
inside each run's thread (``PyThreadState_SetAsyncExc``, delivered within one 0.2 s supervision poll), so
``run_spec`` kills its process group exactly as on a Ctrl-C; a cancelled run comes back
``ExitKind.INTERRUPTED``, and a Ctrl-C is raised again in the caller once every child is dead.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import os
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from autoresearch.config import ResourcesSection
from autoresearch.errors import UserError
from autoresearch.runner.executor import KeepGoing, skipped
from autoresearch.runner.process import OnLine, run_spec
from autoresearch.runner.spec import ExitKind, RunOutcome, RunSpec


@dataclass(frozen=True)
class Slot:
    """One share of the machine: the GPUs and cores a run gets."""

    index: int
    gpus: tuple[str, ...] = ()
    cores: tuple[int, ...] = ()   # bound with sched_setaffinity (empty: not bound)
    threads: int = 0              # the cores' share the run is given (RunSpec.cpus; 0: its CPU affinity)

    def env(self) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)} if self.gpus else {}

    def pin(self, spec: RunSpec) -> RunSpec:
        """``spec`` as run in this slot: its GPUs and its share of the cores."""
        return dataclasses.replace(spec, env={**spec.env, **self.env()}, cpus=float(self.threads or spec.cpus))

    def where(self) -> dict:
        return {"executor": "local", "slot": self.index, "gpus": list(self.gpus), "cores": list(self.cores)}


def detect_gpus() -> list[str]:
    """GPU ids visible to the tool: ``CUDA_VISIBLE_DEVICES`` when set, else one per ``nvidia-smi -L`` line."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


def plan_slots(res: ResourcesSection, *, cores: Sequence[int] | None = None,
               gpus: Sequence[str] | None = None) -> list[Slot]:
    """Cut the machine into slots (see the module docstring). ``cores`` and ``gpus`` default to this
    machine's (the tool's CPU affinity; ``detect_gpus``)."""
    if res.cpus <= 0 and res.gpus <= 0:
        return [Slot(0)]
    cores = sorted(os.sched_getaffinity(0)) if cores is None else list(cores)
    count = math.inf
    ids: list[str] = []
    if res.gpus > 0:
        ids = list(res.gpu_ids) or (detect_gpus() if gpus is None else list(gpus))
        if len(ids) < res.gpus:
            raise UserError(f"[resources] gpus = {res.gpus} per run, but {len(ids)} GPU(s) were found "
                            "(gpu_ids, else CUDA_VISIBLE_DEVICES, else nvidia-smi)",
                            hint="lower [resources] gpus, list the GPUs in [resources] gpu_ids, or set gpus = 0")
        count = len(ids) // res.gpus
    if res.cpus > 0:
        count = min(count, max(1, int(len(cores) // res.cpus)))
    count = int(count)
    whole = res.cpus >= 1 and float(res.cpus).is_integer()
    slots = []
    for k in range(count):
        g = tuple(ids[k * res.gpus:(k + 1) * res.gpus]) if res.gpus > 0 else ()
        c = tuple(cores[k * int(res.cpus):(k + 1) * int(res.cpus)]) if whole and res.pin_cpus else ()
        threads = max(1, int(res.cpus)) if res.cpus > 0 else 0
        slots.append(Slot(k, g, c, threads))
    return slots


class _Pool:
    """The free slots, shared by every thread that runs specs."""

    def __init__(self, slots: list[Slot]) -> None:
        self._free = list(slots)
        self._lock = threading.Lock()

    def take(self) -> Slot | None:
        with self._lock:
            return self._free.pop(0) if self._free else None

    def give(self, slot: Slot) -> None:
        with self._lock:
            self._free.append(slot)
            self._free.sort(key=lambda s: s.index)


def _raise_in(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(KeyboardInterrupt))


class LocalParallelExecutor:
    """Runs specs on this machine, as many at once as there are free slots."""

    def __init__(self, slots: list[Slot] | None = None, on_line: OnLine = None) -> None:
        self.slots = slots or [Slot(0)]
        self.on_line = on_line
        self._pool = _Pool(self.slots)
        self._line_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._running: dict[int, str] = {}    # thread id -> spec name, while inside run_spec
        self._hit: set[int] = set()             # threads already interrupted: never twice (cleanup must finish)

    @classmethod
    def from_resources(cls, res: ResourcesSection, on_line: OnLine = None) -> "LocalParallelExecutor":
        return cls(plan_slots(res), on_line=on_line)

    def describe(self) -> str:
        return f"local, {len(self.slots)} slot(s)"

    def cancel_all(self) -> None:
        """Interrupt every run now going (from any thread); they come back INTERRUPTED."""
        self._interrupt(None)

    def _interrupt(self, only: set[int] | None) -> None:
        with self._state_lock:
            for tid in list(self._running):
                if tid not in self._hit and (only is None or tid in only):
                    self._hit.add(tid)
                    _raise_in(tid)

    # --- one run, in its own thread ----------------------------------------------------------------
    def _line(self, spec: RunSpec, line: str) -> None:
        if self.on_line is not None:
            with self._line_lock:
                self.on_line(spec, line)

    def _work(self, index: int, spec: RunSpec, slot: Slot, done: queue.Queue) -> None:
        outcome, error = None, None
        try:
            if slot.cores:
                os.sched_setaffinity(0, slot.cores)   # this thread only; the run inherits it
            pinned = slot.pin(spec)
            tid = threading.get_ident()
            try:
                with self._state_lock:
                    self._running[tid] = spec.name
                outcome = run_spec(pinned, on_line=self._line)
            finally:
                with self._state_lock:
                    self._running.pop(tid, None)
                    self._hit.discard(tid)
            outcome = dataclasses.replace(outcome, spec=spec, extra={**outcome.extra, "where": slot.where()})
        except KeyboardInterrupt:
            outcome = RunOutcome(spec, ExitKind.INTERRUPTED, None, 0.0, reason="stopped by the tool (Ctrl-C or stop)",
                                 extra={"where": slot.where()})
        except BaseException as exc:  # a spec that cannot run (UserError): the caller raises it
            error = exc
        done.put((index, outcome, error))   # before the slot is free: the caller sees the outcome first
        self._pool.give(slot)

    # --- the batch -----------------------------------------------------------------------------------
    def run(self, specs: Sequence[RunSpec], *, keep_going: KeepGoing = None) -> list[RunOutcome]:
        results: list[RunOutcome | None] = [None] * len(specs)
        pending = list(enumerate(specs))
        done: queue.Queue = queue.Queue()
        threads: list[threading.Thread] = []
        going, error = True, None
        active = 0
        try:
            while pending or active:
                # Outcomes first: keep_going decides before any further run may take a freed slot.
                block = bool(active) and not (going and pending)
                while active:
                    try:
                        index, outcome, exc = done.get(timeout=0.1) if block else done.get_nowait()
                    except queue.Empty:
                        break
                    block = False
                    active -= 1
                    if exc is not None:
                        error, going = error or exc, False
                    else:
                        results[index] = outcome
                        if keep_going is not None and going and not keep_going(outcome):
                            going = False
                if not going:
                    for index, spec in pending:
                        results[index] = skipped(spec)
                    pending = []
                    continue
                started = False
                while pending:
                    slot = self._pool.take()
                    if slot is None:
                        break
                    if not done.empty():
                        # A run ended after the outcomes were read (its outcome is queued before its slot is
                        # freed): keep_going must see it before this slot starts anything.
                        self._pool.give(slot)
                        break
                    index, spec = pending.pop(0)
                    t = threading.Thread(target=self._work, args=(index, spec, slot, done),
                                         name=f"run-{spec.name}", daemon=True)
                    t.start()
                    threads.append(t)
                    active += 1
                    started = True
                if pending and not started:
                    time.sleep(0.05)   # every slot is busy (maybe with another caller's runs): wait for one
        except KeyboardInterrupt:
            self._stop(threads)
            raise
        if error is not None:
            raise error
        return [r if r is not None else skipped(s) for r, s in zip(results, specs)]

    def _stop(self, threads: list[threading.Thread]) -> None:
        """Interrupt this batch's runs and return once their threads (and so their children) are done."""
        mine = {t.ident for t in threads}
        while any(t.is_alive() for t in threads):
            self._interrupt(mine)   # runs that started meanwhile are caught on the next round
            for t in threads:
                t.join(timeout=0.2)
