"""The loop over experiments: up to N candidates in flight, every one through the same lifecycle.

``Driver(loop, parallel=N).run(...)`` is the whole night. With N = 1 it is the serial loop: a candidate's
runs happen in the loop's own thread, one experiment after another. With N > 1 each candidate's runs
happen in a thread of their own while the next agent turn is taken; the executor shares the machine (or
the Ray cluster) between them. Everything else is the same code: the lifecycle (``loop/lifecycle.py``)
decides every status, records every row and says what a slot does next (a crash-fix turn, the same
candidate again after contention); the driver only chooses what may start and when to stop.

Stopping: budgets (experiments, hours, cost, tokens), a person's pause or stop (the dashboard,
``Session.stop``) and the agent running out stop new proposals; the candidates in flight are decided
before ``run`` returns. Ctrl-C interrupts every run, records the candidates in flight as ``interrupted``
and resets the tree; a kill -9 leaves rows ``running`` that the next start marks ``interrupted``.
A machine that keeps starving runs pauses the loop (``loop/contention.py``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from autoresearch import events as ev
from autoresearch.errors import UserError
from autoresearch.loop import champion as champion_mod
from autoresearch.loop import contention
from autoresearch.loop.context import Loop
from autoresearch.loop.lifecycle import Again, Candidate, Done, Job, JobKind, Lifecycle
from autoresearch.loop.recovery import recover
from autoresearch.loop.trial import TrialResult
from autoresearch.vocab import Status

MAX_AGENT_FAILURES = 3           # consecutive agent errors (API down, bad key) that end a run
STOP_POLL_S = 1.0


@dataclass
class StopReason:
    why: str


def first_job(loop: Loop) -> Job:
    """What the first free slot of a (resumed) run does: the starved candidate again, if the last
    experiment was cut off by contention; else a new proposal."""
    pending = contention.pending(loop.state.experiments())
    return Job(JobKind.RERUN, attempt=pending.attempt or 1, row=pending) if pending is not None else Job()


def steer(loop: Loop, poll_s: float = STOP_POLL_S) -> str | None:
    """Obey a person's control (``Session.pause``/``stop``, e.g. from the dashboard): wait while paused;
    return why to stop, or None to go on. A stop is consumed (the next run goes on)."""
    announced = False
    while True:
        control = loop.state.control()
        if control == "stop":
            loop.ledger.set_meta(f"control:{loop.tag}", "run")
            return "stopped on request (the dashboard or `Session.stop`)"
        if control != "pause":
            if announced:
                loop.reporter(ev.Notice("resumed"))
            return None
        if not announced:
            loop.reporter(ev.Paused("paused on request; resume or stop from the dashboard"))
            announced = True
        time.sleep(poll_s)


class Driver:
    def __init__(self, loop: Loop, *, parallel: int = 1) -> None:
        if parallel < 1:
            raise UserError(f"--parallel must be at least 1, got {parallel}", hint="use --parallel 2 or more")
        self.loop = loop
        self.parallel = parallel
        self.lifecycle = Lifecycle(loop)
        self.flights: dict[int, Candidate] = {}
        self.jobs: deque[Job] = deque()
        self.free = list(range(parallel))
        self.results: queue.Queue = queue.Queue()
        self.threads: list[threading.Thread] = []
        self._paused_at: int | None = None       # the starved row the loop last paused after

    # ------------------------------------------------------------------------------------------ the loop
    def run(self, *, max_experiments: int | None = None, hours: float | None = None,
            max_cost: float | None = None, max_tokens: int | None = None,
            should_stop: Callable[[], str | None] | None = None) -> StopReason:
        """Run experiments until a stop condition; ``max_experiments`` counts finished experiments of
        this tag in total, so a resumed run continues to the same target. Cost and token budgets
        (default: ``[agent] max_cost_usd`` and ``max_total_tokens``) also count the whole tag."""
        loop = self.loop
        cfg = loop.config
        max_cost = max_cost if max_cost is not None else (cfg.agent.max_cost_usd or None)
        max_tokens = max_tokens if max_tokens is not None else (cfg.agent.max_total_tokens or None)
        if loop.agent is None:
            raise UserError("no agent given", hint="pass --agent replay|optuna|openai|anthropic|claude-code")
        recover(loop)
        champion_mod.ensure_baseline(loop)
        self._resume_starved()
        deadline = time.monotonic() + hours * 3600 if hours else None

        def time_up() -> str | None:
            if deadline is not None and time.monotonic() >= deadline:
                return f"reached the {hours} h limit"
            return should_stop() if should_stop else None

        why: str | None = None
        exhausted = False
        failures = 0
        try:
            while True:
                while self._collect(block=False):
                    pass
                if why is None:
                    why = self._stop_reason(max_experiments, time_up, max_cost, max_tokens, failures)
                control = loop.state.control()
                if why is None and control == "pause" and not self.flights:
                    why = steer(loop)
                    continue
                starving = self._starving()
                if why is None and starving and not self.flights:
                    why = self._contention_pause(time_up)
                    continue
                room = max_experiments is None or len(loop.state.finished()) + len(self.flights) < max_experiments
                if why is None and self.free and room and control == "run" and (self.jobs or not exhausted) \
                        and not starving:
                    done = self._start()
                    if done is not None:
                        exhausted |= done.exhausted
                        failures = failures + 1 if done.agent_failed else 0
                        if done.agent_failed and failures >= MAX_AGENT_FAILURES:
                            why = f"the agent failed {failures} times in a row (last: {done.row.reason})"
                    continue
                if not self.flights:
                    if why is not None:
                        return StopReason(why)
                    if exhausted and not self.jobs:
                        return StopReason("the agent has nothing more to propose")
                    continue
                self._collect(block=True)
        except KeyboardInterrupt:
            self._abort()
            return StopReason("interrupted (Ctrl-C); everything so far is recorded")
        except BaseException:
            self._abort()   # a setup error: no run is left behind, nothing stays `running`
            raise

    def _stop_reason(self, max_experiments, time_up, max_cost, max_tokens, failures) -> str | None:
        loop = self.loop
        if max_experiments is not None and len(loop.state.finished()) >= max_experiments:
            return f"reached {max_experiments} experiments"
        if why := time_up() or loop.state.budget_stop(max_cost, max_tokens):
            return why
        if loop.state.control() == "stop":
            return steer(loop)
        return None

    # ------------------------------------------------------------------------------------- starting
    def _start(self) -> Done | None:
        """One agent turn (or a starved candidate again) in a free slot; returns what ended at once."""
        slot = self.free.pop(0)
        job = self.jobs.popleft() if self.jobs else Job()
        try:
            opened = self.lifecycle.open(job, slot, [c.in_flight() for c in self.flights.values()])
        except BaseException:
            self.jobs.appendleft(job)
            self._release(slot)
            raise
        if isinstance(opened, Done):
            self._release(slot)
            if opened.exhausted and job.kind is not JobKind.NEW:
                return Done(None)            # nothing to fix: the crashed candidate stays as recorded
            if opened.follow_up is not None:
                self.jobs.appendleft(opened.follow_up)
            return opened
        self.flights[opened.number] = opened
        self._launch(opened)
        return None

    def _launch(self, cand: Candidate) -> None:
        self.lifecycle.prepare_run(cand)
        self._save_in_flight()
        if self.parallel == 1:    # the serial loop: the run in the loop's own thread (Ctrl-C reaches it)
            self.results.put((cand.number, self.lifecycle.run(cand), None))
            return

        def work() -> None:
            trial, error = None, None
            try:
                trial = self.lifecycle.run(cand)
            except KeyboardInterrupt:
                trial = TrialResult(Status.INTERRUPTED, "interrupted by Ctrl-C")
            except BaseException as exc:   # a setup error (UserError): raised in the loop's thread
                error = exc
            self.results.put((cand.number, trial, error))

        thread = threading.Thread(target=work, name=f"candidate-{cand.number}", daemon=True)
        self.threads.append(thread)
        thread.start()

    # ------------------------------------------------------------------------------------- deciding
    def _collect(self, *, block: bool) -> bool:
        """Conclude one finished measurement, if any (waiting up to a second when ``block``)."""
        try:
            number, trial, error = self.results.get(timeout=STOP_POLL_S) if block else self.results.get_nowait()
        except queue.Empty:
            return False
        cand = self.flights[number]
        if error is not None:
            self._finish_flight(cand)
            self.loop.finish(number, Status.INTERRUPTED, reason=f"the run could not start: {error}")
            raise error
        placement = [f.outcome.extra.get("where") for f in trial.folds if f.outcome.extra.get("where")]
        if placement:
            row = self.loop.ledger.get(number)
            self.loop.ledger.update(number, hardware_json={**row.hardware, "placement": placement})
        step = self.lifecycle.conclude(cand, trial)
        if isinstance(step, Again):
            self._launch(cand)
            return True
        self._finish_flight(cand)
        if step.follow_up is not None:
            self.jobs.append(step.follow_up)
        if step.row is not None and step.row.status == Status.KEEP:
            champion_mod.maybe_remeasure(self.loop)
        return True

    def _finish_flight(self, cand: Candidate) -> None:
        self.flights.pop(cand.number, None)
        self._release(cand.slot)
        self._save_in_flight()

    def _release(self, slot: int) -> None:
        self.free.append(slot)
        self.free.sort()

    def _save_in_flight(self) -> None:
        self.loop.ledger.set_meta(f"inflight:{self.loop.tag}", {
            str(c.number): {"slot": c.slot, "executor": self.loop.where, "parent": c.parent.number,
                            "reapplied": c.reapplied, "description": c.proposal.description}
            for c in self.flights.values()})

    # ------------------------------------------------------------------------------------- contention
    def _starving(self) -> bool:
        """Whether the machine has starved ``pause_after`` experiments in a row since the loop last paused
        for it (new proposals wait for the candidates in flight, then the loop pauses)."""
        starved = contention.streak(self.loop.state.experiments())
        return len(starved) >= self.loop.config.contention.pause_after and starved[-1].number != self._paused_at

    def _resume_starved(self) -> None:
        """A run stopped right after a starved candidate runs that candidate first."""
        job = first_job(self.loop)
        if job.row is not None and not self.jobs:
            self.jobs.append(job)

    def _contention_pause(self, time_up: Callable[[], str | None]) -> str | None:
        """Nothing in flight and the machine starving runs: stop after too many, else pause and probe."""
        cfg = self.loop.config.contention
        starved = contention.streak(self.loop.state.experiments())
        self._paused_at = starved[-1].number
        if len(starved) >= contention.GIVE_UP * cfg.pause_after:
            return (f"{len(starved)} experiments in a row were starved by other work on the machine, even after "
                    f"pauses (last: {starved[-1].reason}); free some cores and run again: the starved candidate "
                    "runs first")
        return contention.pause(self.loop, time_up)

    # ------------------------------------------------------------------------------------- stopping
    def _abort(self) -> None:
        """Ctrl-C or an error: interrupt every run, wait for the threads, record what was in flight."""
        cancel = getattr(self.loop.executor, "cancel_all", None)
        while any(t.is_alive() for t in self.threads):
            if cancel is not None:
                cancel()
            for t in self.threads:
                t.join(timeout=0.5)
        for cand in list(self.flights.values()):
            row = self.loop.ledger.get(cand.number)
            if row is not None and row.status == Status.RUNNING:
                self.loop.finish(cand.number, Status.INTERRUPTED,
                                 reason="interrupted by Ctrl-C; it will be proposed again")
                self.loop.agent.observe(cand.number, Status.INTERRUPTED, None, cand.proposal.meta)
            self._finish_flight(cand)
        base = self.loop.state.base()
        if base:
            self.loop.git.reset_hard(base)
