"""Run one ``RunSpec`` as a supervised subprocess: deadline, grace period, memory ceiling, log, cleanup.

The command (wrapped by bubblewrap when ``spec.sandbox`` is true) starts in its own session and process
group. Its stdout and stderr are merged and streamed line by line to ``spec.log_path`` (between a header
and a footer line written by the tool) and to ``on_line(spec, line)``. The log is line-buffered, so each
line is in the file as soon as the tool has read it (within a poll of the run printing it) and survives a
hard stop of the tool; a line the run has not ended with a newline yet stays in its buffer or ours.

Progress lines (``step N/M name value ...``, see ``curves.py``) become the run's curve, returned in
``RunOutcome.extra["curve"]``; when ``spec.abort`` is set, the curve is checked against it line by line
and a doomed run is stopped like at a deadline (SIGTERM, grace, SIGKILL) and ends ``ABORTED``. Every run
is also measured against the machine's load (``load.py``): the figures are in ``RunOutcome.extra``,
taken at the deadline for a run that reached it.

Every ~0.2 s the runner reads ``/proc`` and sums the resident memory of the run's processes: members of its
process group or session, their descendants, and any process seen so far that is still alive. That sum is
the peak RSS reported, and the memory ceiling (``spec.memory_gb > 0``) kills the run with SIGKILL when it
is exceeded. Polling can miss a spike shorter than 0.2 s; RLIMIT_AS would break CUDA and RLIMIT_NPROC does
not bind root, so neither is used. GB here means 2**30 bytes.

At the deadline every process of the run gets SIGTERM (inside a sandbox bwrap itself is spared so that its
PID namespace stays up while the program handles the signal); after ``spec.grace_s`` all of them get
SIGKILL. When the main process exits, whatever is left of its group, session and descendants is killed,
and ``run_spec`` returns only once none of them is alive: daemons do not outlive a run. A process that calls ``setsid`` and is re-parented before a poll sees it
escapes this in an unsandboxed run; in a sandbox the PID namespace (``--unshare-pid --die-with-parent``)
catches it.

Environment: the child gets exactly ``spec.env``, plus ``PATH``, ``HOME`` and ``LANG`` when the spec lacks
them, plus the variables in ``INHERITED`` when the tool's own environment has them and the spec does not.
Nothing else of the tool's environment (API keys in particular) reaches the run.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from autoresearch.errors import UserError
from autoresearch.runner import sandbox
from autoresearch.runner.curves import MAX_POINTS, AbortWatch, Point, parse_progress, thin
from autoresearch.runner.load import CLK_TCK, LoadMeter
from autoresearch.runner.spec import ExitKind, RunOutcome, RunSpec

GB = 2**30
POLL_S = 0.2
INTERRUPT_GRACE_S = 2.0
DRAIN_S = 1.0  # how long to wait for the output pipe to close once every process is dead
_PAGE = os.sysconf("SC_PAGE_SIZE")

# Inherited from the tool's environment when present and not set by the spec: device selection and
# thread counts, which the user sets for the machine, never credentials.
INHERITED = (
    "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
)

OnLine = Optional[Callable[[RunSpec, str], None]]


def child_env(spec: RunSpec) -> dict[str, str]:
    """The complete environment of the run (see the module docstring for what is added)."""
    env = {str(k): str(v) for k, v in spec.env.items()}
    for key in INHERITED:
        if key not in env and key in os.environ:
            env[key] = os.environ[key]
    env.setdefault("PATH", os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]))
    # In a sandbox the real home is read-only; the private /tmp is a writable home for caches.
    env.setdefault("HOME", "/tmp" if spec.sandbox else os.environ.get("HOME", "/tmp"))
    env.setdefault("LANG", "C.UTF-8")
    return env


# ---------------------------------------------------------------------------------------------- /proc


@dataclasses.dataclass(frozen=True)
class _Proc:
    ppid: int
    pgrp: int
    session: int
    rss: int    # bytes
    start: int  # start time in clock ticks since boot: tells a live process from a reused pid
    zombie: bool
    cpu: float = 0.0  # user + system seconds so far


def _scan() -> dict[int, _Proc]:
    """Every process on the machine, from /proc/<pid>/stat (zombies included, with rss 0)."""
    table: dict[int, _Proc] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue  # exited meanwhile
        rest = raw[raw.rfind(b")") + 2:].split()  # the command name may contain spaces and parentheses
        try:
            table[int(name)] = _Proc(int(rest[1]), int(rest[2]), int(rest[3]), int(rest[21]) * _PAGE, int(rest[19]),
                                     rest[0] == b"Z", (int(rest[11]) + int(rest[12])) / CLK_TCK)
        except (IndexError, ValueError):
            continue
    return table


def _members(table: dict[int, _Proc], root: int) -> set[int]:
    """Processes in root's group or session, and all descendants of root and of those."""
    found = {pid for pid, p in table.items() if pid == root or p.pgrp == root or p.session == root}
    children: dict[int, list[int]] = {}
    for pid, p in table.items():
        children.setdefault(p.ppid, []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    found.discard(os.getpid())
    return found


# ---------------------------------------------------------------------------------------------- the run


class _Supervisor:
    """One running process, its output and its process tree."""

    def __init__(self, spec: RunSpec, proc: subprocess.Popen, log, on_line: OnLine) -> None:
        self.spec, self.proc, self.log, self.on_line = spec, proc, log, on_line
        self.fd = proc.stdout.fileno()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.partial = ""
        self.eof = False
        self.seen: dict[int, int] = {}  # pid -> start time, of every process ever seen in the run
        self.peak = 0
        self.last_sample = 0.0
        self.done = False
        self.meter = LoadMeter(proc.pid)
        self.points: list[Point] = []
        self.watch = AbortWatch(spec.abort) if spec.abort is not None else None
        self.abort_reason = ""

    # -- output
    def pump(self, timeout: float) -> None:
        """Read whatever output arrives within ``timeout`` seconds and hand out complete lines."""
        if self.eof:  # output closed but the process may still run: just wait
            time.sleep(max(timeout, 0.0))
            return
        end = time.monotonic() + max(timeout, 0.0)
        while not self.eof:
            left = end - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(left, 0.0))
            if not ready:
                break
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
                text = self.decoder.decode(b"", final=True) + self.partial
                self.partial = ""
                if text:
                    self._emit(text)
                break
            self._feed(self.decoder.decode(chunk))
            if left <= 0:
                break
        self.log.flush()

    def _feed(self, text: str) -> None:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        if len(self.partial) > 1_000_000:  # a very long line without newline: cut it
            lines.append(self.partial)
            self.partial = ""
        for line in lines:
            self._emit(line)

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")
        self.log.write(line + "\n")
        shown = line.rsplit("\r", 1)[-1]
        if self.on_line is not None:
            try:
                self.on_line(self.spec, shown)
            except Exception as exc:  # a broken progress display must not stop the supervision
                self.log.write(f"# autoresearch: progress callback failed ({exc!r}); no longer called\n")
                self.on_line = None
        point = parse_progress(shown)
        if point is None:
            return
        self.points.append(point)
        if len(self.points) > 2 * MAX_POINTS:   # a run printing every step: keep the curve's shape, bounded
            self.points = thin(self.points)
        if self.watch is not None and not self.abort_reason:
            self.abort_reason = self.watch.feed(point) or ""

    # -- processes
    def sample(self) -> int:
        """Total RSS of the run's processes now (bytes); updates the peak and the set of seen pids."""
        table = _scan()
        members = _members(table, self.proc.pid)
        members |= {pid for pid, start in self.seen.items() if pid in table and table[pid].start == start}
        for pid in members:
            self.seen.setdefault(pid, table[pid].start)
        self.meter.sample({pid: (table[pid].start, table[pid].cpu) for pid in members})
        total = sum(table[pid].rss for pid in members)
        self.peak = max(self.peak, total)
        self.last_sample = time.monotonic()
        return total

    def _live(self, table: dict[int, _Proc]) -> set[int]:
        members = _members(table, self.proc.pid)
        members |= {pid for pid, start in self.seen.items() if pid in table and table[pid].start == start}
        return {pid for pid in members if not table[pid].zombie}

    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to every live process of the run (sparing bwrap itself for SIGTERM)."""
        table = _scan()
        members = self._live(table)
        for pid in members:
            self.seen.setdefault(pid, table[pid].start)
        if sig != signal.SIGKILL and self.spec.sandbox:
            # bwrap and the sandbox's pid 1: if they die on SIGTERM, the namespace dies with SIGKILL at once
            members -= {self.proc.pid} | {pid for pid in members if table[pid].ppid == self.proc.pid}
        for pid in members:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == signal.SIGKILL:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def kill_and_wait(self, timeout: float = 5.0) -> None:
        """SIGKILL every process of the run and return once none is alive (or after ``timeout`` s)."""
        end = time.monotonic() + timeout
        while True:
            self.signal_all(signal.SIGKILL)
            if not self._live(_scan()) or time.monotonic() > end:
                return
            self.pump(0.02)

    def stop(self, grace: float) -> bool:
        """SIGTERM everything, wait up to ``grace`` s for the main process, then SIGKILL. True if it exited."""
        self.signal_all(signal.SIGTERM)
        end = time.monotonic() + grace
        while self.proc.poll() is None and time.monotonic() < end:
            self.pump(min(POLL_S, max(end - time.monotonic(), 0.0)))
        exited = self.proc.poll() is not None
        self.signal_all(signal.SIGKILL)
        return exited

    def finish(self) -> None:
        """Kill what is left, read the rest of the output, reap the main process."""
        if self.done:
            return
        self.kill_and_wait()
        end = time.monotonic() + DRAIN_S
        while not self.eof and time.monotonic() < end:
            self.pump(end - time.monotonic())
        if not self.eof and self.partial:
            self._emit(self.partial)
            self.partial = ""
        if not self.eof:
            self.log.write("# autoresearch: output still open after every process was killed; stopped reading\n")
        self.proc.wait()
        self.proc.stdout.close()
        self.done = True


def _exit_reason(returncode: int, sandboxed: bool) -> tuple[ExitKind, str]:
    if returncode == 0:
        return ExitKind.OK, "exit code 0"
    if returncode < 0:
        return ExitKind.ERROR, f"killed by signal {-returncode}"
    if sandboxed and 128 < returncode < 128 + signal.NSIG:  # bwrap reports a signal death as 128 + signal
        return ExitKind.ERROR, f"killed by signal {returncode - 128} (exit code {returncode} from the sandbox)"
    return ExitKind.ERROR, f"exit code {returncode}"


def run_spec(spec: RunSpec, on_line: OnLine = None) -> RunOutcome:
    """Run one spec to completion and describe how it ended; never raises for a failing run.

    Raises ``UserError`` for a spec that cannot be run as written (empty command, bad deadline, the
    sandbox unavailable, a missing read-only mount) and re-raises ``KeyboardInterrupt`` after killing
    every process of the run.
    """
    if not spec.command:
        raise UserError(f"run {spec.name!r}: the command is empty", "give the program to run, e.g. python train.py")
    if not spec.timeout_s > 0:
        raise UserError(f"run {spec.name!r}: the deadline must be positive, got {spec.timeout_s!r} s",
                        "set the experiment's time budget to a number of seconds above 0")
    out_dir, log_path = Path(spec.out_dir), Path(spec.log_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = child_env(spec)
    if spec.sandbox:
        argv = sandbox.wrap(dataclasses.replace(spec, env=env))
    else:
        argv = list(spec.command)

    # Line-buffered: each line is written to the file before anyone (on_line, the abort rule) sees it, so
    # a hard stop of the tool loses nothing the run printed and the tool read.
    with open(log_path, "w", encoding="utf-8", errors="replace", buffering=1) as log:
        ceiling = f"{spec.memory_gb:g} GB" if spec.memory_gb > 0 else "none"
        log.write(f"# autoresearch run {spec.name}: {shlex.join(spec.command)}\n"
                  f"# cwd {spec.cwd}; sandbox {'on' if spec.sandbox else 'off'}; deadline {spec.timeout_s:g} s; "
                  f"grace {spec.grace_s:g} s; memory ceiling {ceiling}\n")
        log.flush()
        start = time.monotonic()
        try:
            proc = subprocess.Popen(argv, cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            reason = f"could not start {argv[0]!r}: {exc.strerror or exc}"
            log.write(f"# outcome: error: {reason}\n")
            return RunOutcome(spec, ExitKind.ERROR, None, 0.0, reason=reason, extra={"sandboxed": spec.sandbox})

        sup = _Supervisor(spec, proc, log, on_line)
        kind: ExitKind | None = None
        reason = ""
        try:
            deadline = start + spec.timeout_s
            while proc.poll() is None:
                now = time.monotonic()
                if now >= deadline or sup.abort_reason:
                    sup.sample()
                    sup.meter.freeze()   # the load figures of the run up to now, not of its grace period
                    exited = sup.stop(spec.grace_s)
                    how = (f"exited on SIGTERM within the {spec.grace_s:g} s grace" if exited
                           else f"SIGKILL after the {spec.grace_s:g} s grace")
                    if now >= deadline:
                        kind, reason = ExitKind.TIMEOUT, f"killed at the {spec.timeout_s:g} s deadline ({how})"
                    else:
                        kind, reason = ExitKind.ABORTED, f"stopped early: {sup.abort_reason} ({how})"
                    break
                if now - sup.last_sample >= POLL_S:
                    rss = sup.sample()
                    if spec.memory_gb > 0 and rss > spec.memory_gb * GB:
                        sup.meter.freeze()
                        sup.signal_all(signal.SIGKILL)
                        kind = ExitKind.MEMORY
                        reason = f"exceeded the {spec.memory_gb:g} GB memory ceiling ({rss / GB:.2f} GB)"
                        break
                sup.pump(min(POLL_S, max(deadline - now, 0.0), max(sup.last_sample + POLL_S - now, 0.0)))
            figures = sup.meter.figures(reaped=proc.returncode is not None)
            sup.finish()
        except KeyboardInterrupt:
            sup.stop(min(spec.grace_s, INTERRUPT_GRACE_S))
            sup.finish()
            log.write(f"# outcome: interrupted: the tool was interrupted after {time.monotonic() - start:.1f} s; "
                      "every process of the run was killed\n")
            raise
        seconds = time.monotonic() - start
        if kind is None:
            kind, reason = _exit_reason(proc.returncode, spec.sandbox)
        log.write(f"# outcome: {kind.value}: {reason}; {seconds:.1f} s; peak RSS {sup.peak / GB:.2f} GB; "
                  f"CPU {figures['cpu_seconds']:.1f} s\n")
    return RunOutcome(spec, kind, proc.returncode, seconds, peak_rss_gb=sup.peak / GB, reason=reason,
                      extra=_extra(spec, sup, figures))


def _extra(spec: RunSpec, sup: _Supervisor, figures: dict) -> dict:
    """What the outcome carries besides its kind: load figures, the curve, the abort evidence."""
    extra: dict = {"sandboxed": spec.sandbox, **figures, "curve": [p.to_dict() for p in thin(sup.points)]}
    if sup.points:
        extra["last_step"], extra["total_steps"] = sup.points[-1].step, sup.points[-1].total
    if sup.watch is not None and sup.abort_reason:
        extra["abort"] = {"reason": sup.abort_reason, "key": sup.watch.rule.key,
                          "champion": [list(p) for p in sup.watch.rule.reference],
                          "compared": sup.watch.compared}
    return extra
