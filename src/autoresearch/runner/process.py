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
process group or session, their descendants, and any process seen so far that is still alive. That sum,
plus what a sandboxed run holds in its ``/tmp`` and ``/dev/shm`` (tmpfs, in the host's memory), is the
peak memory reported, and the memory ceiling (``spec.memory_gb > 0``) kills the run with SIGKILL when it
is exceeded (a page both mapped by the run and kept in ``/dev/shm`` is counted twice: the error is on the
side of the ceiling). Polling can miss a spike shorter than 0.2 s; RLIMIT_AS would break CUDA and RLIMIT_NPROC does
not bind root, so neither is used. GB here means 2**30 bytes.

At the deadline every process of the run gets SIGTERM (inside a sandbox bwrap itself is spared so that its
PID namespace stays up while the program handles the signal); after ``spec.grace_s`` all of them get
SIGKILL. When the main process exits, whatever is left of its group, session and descendants is killed,
and ``run_spec`` returns only once none of them is alive: daemons do not outlive a run. A process that calls ``setsid`` and is re-parented before a poll sees it
escapes this in an unsandboxed run; in a sandbox the PID namespace (``--unshare-pid --die-with-parent``)
catches it.

Storage (``storage.py``): the output folder and the log are made fresh and empty just before the start
(nothing planted there survives, no link is followed); a sandboxed run's ``/tmp`` and ``/dev/shm`` are
sized tmpfs whose contents count with its resident memory against ``spec.memory_gb`` (``ExitKind.MEMORY``);
the output folder's quota ``spec.output_gb`` is enforced while the run runs and once more when it ends
(``ExitKind.OUTPUT``), with or without a sandbox.

Deadline: with ``spec.deadline`` set, a run that reaches its deadline while other work takes the machine
and that is still on pace gets the deadline moved by what the other work took from it, up to a hard cap
(``deadline.py``); the verdict is in ``RunOutcome.extra["deadline"]``.

Environment: the child gets exactly ``spec.env``, plus the thread set-up (``threads.py``: the thread count
in ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``AUTORESEARCH_CPUS``, workers
that wait without spinning; recorded in ``RunOutcome.extra["threads"]``), plus ``PATH``, ``HOME`` and
``LANG`` when the spec lacks them, plus the variables in ``INHERITED`` when the tool's own environment has
them and the spec does not. Nothing else of the tool's environment (API keys in particular) reaches the run.
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
from autoresearch.runner import deadline as deadline_rule
from autoresearch.runner import sandbox, storage, threads
from autoresearch.runner.curves import MAX_POINTS, AbortWatch, Point, parse_progress, thin
from autoresearch.runner.load import CLK_TCK, LoadMeter
from autoresearch.runner.spec import ExitKind, RunOutcome, RunSpec

GB = 2**30
POLL_S = 0.2
INTERRUPT_GRACE_S = 2.0
DRAIN_S = 1.0  # how long to wait for the output pipe to close once every process is dead
_PAGE = os.sysconf("SC_PAGE_SIZE")

# Inherited from the tool's environment when present and not set by the spec: device selection, BLAS
# kernel and how worker threads wait, which the user sets for the machine, never credentials. Thread
# counts are the thread set-up's (threads.py), which reads OMP_NUM_THREADS from the tool's environment.
INHERITED = (
    "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
    "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", *threads.WAIT_VARS, "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
)

OnLine = Optional[Callable[[RunSpec, str], None]]


def thread_plan(spec: RunSpec) -> threads.ThreadPlan:
    """The thread set-up of ``spec`` if it started now from this thread (see ``threads.py``)."""
    return threads.plan(share=spec.cpus, explicit=spec.threads, spec_env=spec.env)


def child_env(spec: RunSpec, plan: threads.ThreadPlan | None = None) -> dict[str, str]:
    """The complete environment of the run (see the module docstring for what is added)."""
    env = {str(k): str(v) for k, v in spec.env.items()}
    env.update(threads.environment(plan or thread_plan(spec), env))
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
        self.first: tuple[float, int] | None = None          # (CPU seconds, step) at the first progress line
        self.last: tuple[float, int, int] | None = None      # (CPU seconds, step, total) at the latest one
        self.rss = 0                                          # bytes, at the last sample
        self.tmpfs = 0                                        # bytes in the sandbox's /tmp and /dev/shm, idem
        self.tmpfs_peak = 0
        self.inside: int | None = None                        # a process inside the sandbox (its mounts)
        self.output = storage.OutputWatch(spec.out_dir, spec.output_gb)

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
        cpu = self.meter.cpu_now()
        if self.first is None:
            self.first = (cpu, point.step)
        self.last = (cpu, point.step, point.total)
        if len(self.points) > 2 * MAX_POINTS:   # a run printing every step: keep the curve's shape, bounded
            self.points = thin(self.points)
        if self.watch is not None and not self.abort_reason:
            self.abort_reason = self.watch.feed(point) or ""

    # -- processes
    def sample(self) -> int:
        """The run's memory now (bytes): the RSS of its processes plus, in a sandbox, what its ``/tmp`` and
        ``/dev/shm`` hold; updates the peak and the set of seen pids."""
        table = _scan()
        members = _members(table, self.proc.pid)
        members |= {pid for pid, start in self.seen.items() if pid in table and table[pid].start == start}
        for pid in members:
            self.seen.setdefault(pid, table[pid].start)
        self.meter.sample({pid: (table[pid].start, table[pid].cpu) for pid in members})
        self.rss = sum(table[pid].rss for pid in members)
        if self.spec.sandbox:
            self.tmpfs = self._tmpfs(table, members)
            self.tmpfs_peak = max(self.tmpfs_peak, self.tmpfs)
        total = self.rss + self.tmpfs
        self.peak = max(self.peak, total)
        self.last_sample = time.monotonic()
        return total

    def _tmpfs(self, table: dict[int, _Proc], members: set[int]) -> int:
        """Bytes in the sandbox's tmpfs, read through a process inside it (bwrap's child, else any other)."""
        if self.inside is not None and self.inside in members:
            used = storage.tmpfs_used(self.inside)
            if used is not None:
                return used
        inner = sorted(members - {self.proc.pid}, key=lambda pid: table[pid].ppid != self.proc.pid)
        for pid in inner:
            used = storage.tmpfs_used(pid)
            if used is not None:
                self.inside = pid
                return used
        return self.tmpfs   # nothing inside readable now (starting or ending): the last figure stands

    def progress(self, wall: float) -> deadline_rule.Progress:
        """What the deadline rule is told at a check, ``wall`` seconds after the start (load figures as of now)."""
        figures = self.meter.figures()
        return deadline_rule.Progress(wall=wall, cpu=figures["cpu_seconds"],
                                      demand=figures["cpu_demand"], cores=figures["cores"],
                                      other=figures["machine_busy_other"], first=self.first, last=self.last)

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
    _check_out_dir(spec)
    storage.fresh_dir(out_dir)           # nothing planted before the run is scored as its output
    plan = thread_plan(spec)
    env = child_env(spec, plan)
    if spec.sandbox:
        argv = sandbox.wrap(dataclasses.replace(spec, env=env))
    else:
        argv = list(spec.command)

    # Line-buffered: each line is written to the file before anyone (on_line, the abort rule) sees it, so
    # a hard stop of the tool loses nothing the run printed and the tool read.
    with storage.fresh_file(log_path) as log:
        log.write(f"# autoresearch run {spec.name}: {shlex.join(spec.command)}\n"
                  f"# cwd {spec.cwd}; sandbox {'on' if spec.sandbox else 'off'}; deadline {spec.timeout_s:g} s; "
                  f"grace {spec.grace_s:g} s; {_limits(spec)}\n"
                  f"# {plan.summary}; OMP_WAIT_POLICY={env.get('OMP_WAIT_POLICY', 'unset')}\n")
        log.flush()
        start = time.monotonic()
        try:
            proc = subprocess.Popen(argv, cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            reason = f"could not start {argv[0]!r}: {exc.strerror or exc}"
            log.write(f"# outcome: error: {reason}\n")
            return RunOutcome(spec, ExitKind.ERROR, None, 0.0, reason=reason,
                              extra={"sandboxed": spec.sandbox, "threads": plan.to_dict()})

        sup = _Supervisor(spec, proc, log, on_line)
        kind: ExitKind | None = None
        reason = ""
        moved = _Deadline(spec)
        try:
            deadline = start + spec.timeout_s
            while proc.poll() is None:
                now = time.monotonic()
                if now >= deadline and not sup.abort_reason and moved.rule is not None:
                    sup.sample()
                    deadline = start + moved.check(sup.progress(now - start), log)
                    if now < deadline:
                        continue
                if now >= deadline or sup.abort_reason:
                    sup.sample()
                    sup.meter.freeze()   # the load figures of the run up to now, not of its grace period
                    exited = sup.stop(spec.grace_s)
                    how = (f"exited on SIGTERM within the {spec.grace_s:g} s grace" if exited
                           else f"SIGKILL after the {spec.grace_s:g} s grace")
                    if now >= deadline:
                        kind, reason = ExitKind.TIMEOUT, f"{moved.killed_at(now - start)} ({how})"
                    else:
                        kind, reason = ExitKind.ABORTED, f"stopped early: {sup.abort_reason} ({how})"
                    break
                if now - sup.last_sample >= POLL_S:
                    total = sup.sample()
                    over = _over_limits(spec, sup, total)
                    if over is not None:
                        sup.meter.freeze()
                        sup.signal_all(signal.SIGKILL)
                        kind, reason = over
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
            sup.output.next = 0.0        # a run that wrote past its quota and exited between two walks
            if over := sup.output.check():
                kind, reason = ExitKind.OUTPUT, over
        log.write(f"# outcome: {kind.value}: {reason}; {seconds:.1f} s; peak memory {sup.peak / GB:.2f} GB; "
                  f"CPU {figures['cpu_seconds']:.1f} s\n")
    return RunOutcome(spec, kind, proc.returncode, seconds, peak_rss_gb=sup.peak / GB, reason=reason,
                      extra=_extra(spec, sup, figures, plan, moved))


def _check_out_dir(spec: RunSpec) -> None:
    """Refuse an output folder that holds the run's folder or a read-only mount: emptying it would delete them."""
    out = Path(spec.out_dir).absolute()
    out = out.parent.resolve() / out.name       # the folder itself may be a link, which is removed, not followed
    for path in (Path(spec.cwd), *(Path(m.path) for m in spec.readonly)):
        if path.resolve().is_relative_to(out):
            raise UserError(f"run {spec.name!r}: its output folder {out} holds {path}, and the runner empties the "
                            "output folder before each run", "give the run an output folder of its own")


def _limits(spec: RunSpec) -> str:
    """The storage and memory limits of the run, for its log's header."""
    ceiling = f"memory ceiling {spec.memory_gb:g} GB" if spec.memory_gb > 0 else "no memory ceiling"
    if spec.sandbox:
        size = f"{spec.tmp_gb:g} GB each" if spec.tmp_gb > 0 else "the kernel's default size"
        ceiling += f" (with /tmp and /dev/shm: tmpfs, {size})"
    quota = f"output quota {spec.output_gb:g} GB" if spec.output_gb > 0 else "no output quota"
    return f"{ceiling}; {quota}"


def _over_limits(spec: RunSpec, sup: _Supervisor, total: int) -> tuple[ExitKind, str] | None:
    """The limit a run is past now (memory with its tmpfs, the output quota), with why; None within them."""
    if spec.memory_gb > 0 and total > spec.memory_gb * GB:
        if sup.tmpfs:
            return ExitKind.MEMORY, (f"exceeded the {spec.memory_gb:g} GB memory ceiling ({total / GB:.2f} GB: "
                                     f"RSS {sup.rss / GB:.2f} GB + {sup.tmpfs / GB:.2f} GB held in the sandbox's "
                                     f"/tmp and /dev/shm, which count against it)")
        return ExitKind.MEMORY, f"exceeded the {spec.memory_gb:g} GB memory ceiling ({total / GB:.2f} GB)"
    if why := sup.output.check():
        return ExitKind.OUTPUT, why
    return None


class _Deadline:
    """The run's deadline as the deadline rule moves it (``deadline.py``); the last verdict is recorded."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec, self.rule = spec, spec.deadline
        self.verdict: deadline_rule.Verdict | None = None
        self.checks = 0

    def check(self, progress: deadline_rule.Progress, log) -> float:
        """The deadline (seconds from the start) after a check at or past the current one."""
        assert self.rule is not None
        self.checks += 1
        verdict = deadline_rule.decide(self.rule, self.spec.timeout_s, progress)
        if verdict.kind == "extend" and (self.verdict is None or self.verdict.kind != "extend"):
            log.write(f"# autoresearch: {verdict.why}\n")
        self.verdict = verdict
        return verdict.deadline

    @property
    def extended(self) -> float:
        return self.verdict.deadline - self.spec.timeout_s if self.verdict is not None else 0.0

    def killed_at(self, wall: float) -> str:
        if self.extended > 0:
            return (f"killed at {wall:.0f} s: the {self.spec.timeout_s:g} s deadline moved {self.extended:.0f} s "
                    f"for what other work took; {self.verdict.why}")
        return f"killed at the {self.spec.timeout_s:g} s deadline"

    def record(self) -> dict | None:
        if self.verdict is None:
            return None
        v = self.verdict
        return {"verdict": "extended" if v.kind == "extend" else v.kind, "why": v.why,
                "timeout_s": self.spec.timeout_s, "deadline_s": round(v.deadline, 3),
                "extended_s": round(self.extended, 3), "lost_s": round(v.lost, 3),
                "cap_s": round(max(self.rule.cap, 1.0) * self.spec.timeout_s, 3), "checks": self.checks}


def _extra(spec: RunSpec, sup: _Supervisor, figures: dict, plan: threads.ThreadPlan, moved: _Deadline) -> dict:
    """What the outcome carries besides its kind: load figures, threads, the curve, the abort and deadline
    evidence, the storage figures."""
    extra: dict = {"sandboxed": spec.sandbox, **figures, "threads": plan.to_dict(),
                   "curve": [p.to_dict() for p in thin(sup.points)]}
    if sup.points:
        extra["last_step"], extra["total_steps"] = sup.points[-1].step, sup.points[-1].total
    if sup.watch is not None and sup.abort_reason:
        extra["abort"] = {"reason": sup.abort_reason, "key": sup.watch.rule.key,
                          "champion": [list(p) for p in sup.watch.rule.reference],
                          "compared": sup.watch.compared}
    if (record := moved.record()) is not None:
        extra["deadline"] = record
    if spec.sandbox:
        extra["peak_tmpfs_gb"] = round(sup.tmpfs_peak / GB, 4)
    if spec.output_gb > 0:
        extra["output_gb"] = round(sup.output.peak / GB, 4)
    return extra
