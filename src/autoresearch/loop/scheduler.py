"""Several candidates in flight at once, decided one at a time (docs/parallel.md).

The scheduler drives the engine's own pieces (brief, edit policy, ledger rows, decision and record); it
adds only what concurrency needs:

- Each candidate is proposed in its own git worktree (``.autoresearch/worktrees/slot<k>``, detached at the
  base of that moment), so the repository's own tree stays at the champion. Agent turns happen one after
  another in the scheduler's thread; the brief lists the candidates in flight, and their proposals count as
  taken (``past_meta``) so no agent proposes the same change twice.
- Each candidate's trial runs in its own thread (``run_trial`` with the executor, every run's working
  folder rewritten to the candidate's worktree); the executor shares the machine (or the Ray cluster)
  between all of them.
- Results come back to the scheduler's thread, which alone decides, commits and writes the ledger (one
  writer). A candidate is recorded on the branch as it is at that moment: its code on the current base,
  its notes merged into the current scratchpad.
- The stale rule: a candidate whose parent is no longer the champion when its result comes in is judged
  against its parent first. Not better → discarded (nothing re-run). Better → its diff is re-applied onto
  the current champion; a conflict makes it ``stale``; otherwise it runs again there (a confirmation on the
  new parent) and that run is decided as usual. If the champion moves again meanwhile, it is re-applied
  once more; after ``MAX_REAPPLY`` moves it is ``stale``.
- Stopping: budgets, steering and ``max_experiments`` stop new proposals, and the candidates in flight are
  decided before ``run`` returns. Ctrl-C interrupts every run, records the candidates in flight as
  ``interrupted`` and resets the tree; a kill -9 leaves rows ``running`` that the next start marks
  ``interrupted`` (proposed again), and worktrees that the next start removes.
- Not in parallel mode: crash-fix turns (a crashed candidate is recorded and its reason is in the next
  brief). Confirmation and noise re-measurement runs block new proposals while they run.
"""

from __future__ import annotations

import dataclasses
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autoresearch import events as ev
from autoresearch.agents.base import Proposal
from autoresearch.errors import UserError
from autoresearch.loop import abort as abort_mod
from autoresearch.loop import decide as decide_mod
from autoresearch.loop import editpolicy, fingerprints, rebase
from autoresearch.loop.engine import MAX_AGENT_FAILURES, Engine, StopReason
from autoresearch.loop.gitops import Git, archive_ref
from autoresearch.loop.ledger import Experiment, utc_now
from autoresearch.loop.phases import Phase
from autoresearch.loop.trial import TrialResult, candidate_trial
from autoresearch.runner.executor import KeepGoing
from autoresearch.runner.spec import RunOutcome, RunSpec
from autoresearch.vocab import Kind, Status

MAX_REAPPLY = 2
WORKTREES = "worktrees"


class Locked:
    """A listener that may be called from several threads (runs' lines, folds of candidates in flight)."""

    def __init__(self, listener: ev.Listener) -> None:
        self.listener = listener
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self._lock:
            self.listener(event)


class InTree:
    """An executor whose runs work in a candidate's worktree instead of the repository's own tree."""

    def __init__(self, executor: Any, tree: Path) -> None:
        self.executor, self.tree = executor, tree

    def run(self, specs: list[RunSpec], *, keep_going: KeepGoing = None) -> list[RunOutcome]:
        moved = [dataclasses.replace(s, cwd=self.tree) for s in specs]
        return self.executor.run(moved, keep_going=keep_going)


@dataclass
class Flight:
    """One candidate in flight."""

    number: int
    slot: int
    tree: Path
    proposal: Proposal
    phase: Phase
    changed: str
    champion: Experiment          # the champion it was proposed from (its parent)
    base: str                     # the commit it started from (the champion plus notes)
    candidate: str                # its candidate commit
    label: str = ""               # run folder suffix: "" or "-reapplied<n>"
    reapplied: int = 0
    stale: dict = field(default_factory=dict)   # what the stale rule did, stored in the decision
    started: float = field(default_factory=time.monotonic)


class Scheduler:
    def __init__(self, engine: Engine, *, parallel: int, executor: Any, where: str = "local") -> None:
        if parallel < 1:
            raise UserError(f"--parallel must be at least 1, got {parallel}", hint="use --parallel 2 or more")
        self.engine = engine
        self.parallel = parallel
        self.executor = executor
        self.where = where
        engine.executor = executor            # confirmation and noise runs share the same machines
        if not isinstance(engine.reporter, Locked):
            engine.reporter = Locked(engine.reporter)
        self.flights: dict[int, Flight] = {}
        self.results: queue.Queue = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.free_slots = list(range(parallel))
        self.lost = 0                          # candidates dropped as interrupted since last looked at

    # --- properties of the engine used here --------------------------------------------------------
    @property
    def git(self) -> Git:
        return self.engine.git

    @property
    def ledger(self):
        return self.engine.ledger

    @property
    def tree_root(self) -> Path:
        return self.engine.config.state_dir / WORKTREES

    # --- worktrees -----------------------------------------------------------------------------------
    def clean_worktrees(self) -> None:
        """Remove every candidate worktree (left behind by a stop) and git's record of them."""
        for line in self.git("worktree", "list", "--porcelain").splitlines():
            if line.startswith("worktree "):
                path = Path(line[len("worktree "):])
                if path.resolve().is_relative_to(self.tree_root.resolve()):
                    self.git("worktree", "remove", "--force", str(path), check=False)
        shutil.rmtree(self.tree_root, ignore_errors=True)
        self.git("worktree", "prune")

    def _tree(self, slot: int, commit: str) -> Path:
        path = self.tree_root / f"slot{slot}"
        if (path / ".git").is_file():
            tree = Git(path)
            tree("checkout", "-q", "--detach", commit)
            tree("reset", "-q", "--hard", commit)
            tree("clean", "-q", "-fdx")
        else:
            shutil.rmtree(path, ignore_errors=True)
            self.git("worktree", "prune")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.git("worktree", "add", "-q", "--detach", str(path), commit)
        return path

    # --- the loop ------------------------------------------------------------------------------------
    def run(self, *, max_experiments: int | None = None, hours: float | None = None,
            max_cost: float | None = None, max_tokens: int | None = None,
            should_stop: Callable[[], str | None] | None = None) -> StopReason:
        eng = self.engine
        max_cost = max_cost if max_cost is not None else (eng.config.agent.max_cost_usd or None)
        max_tokens = max_tokens if max_tokens is not None else (eng.config.agent.max_total_tokens or None)
        if eng.agent is None:
            raise UserError("no agent given", hint="pass --agent replay|optuna|openai|anthropic|claude-code")
        eng.prepare()
        self.clean_worktrees()
        eng.ensure_baseline()
        deadline = time.monotonic() + hours * 3600 if hours else None
        why: str | None = None
        exhausted = False
        agent_failures = 0
        try:
            while True:
                while self._collect(block=False):
                    pass
                if self.lost:
                    exhausted, self.lost = False, 0   # a lost run's proposal is open again
                if why is None:
                    done = len(eng.finished())
                    if max_experiments is not None and done >= max_experiments:
                        why = f"reached {max_experiments} experiments"
                    elif deadline is not None and time.monotonic() >= deadline:
                        why = f"reached the {hours} h limit"
                    elif (w := eng.budget_stop(max_cost, max_tokens)) or (should_stop and (w := should_stop())):
                        why = w
                    elif agent_failures >= MAX_AGENT_FAILURES:
                        why = f"the agent failed {agent_failures} times in a row"
                    elif self._control() == "stop":
                        why = eng.steer()
                if self._control() == "pause" and why is None and not self.flights:
                    why = eng.steer()   # waits while paused (nothing in flight), then goes on or stops
                    continue
                room = max_experiments is None or len(eng.finished()) + len(self.flights) < max_experiments
                if why is None and not exhausted and self.free_slots and room and self._control() == "run":
                    row = self._start()
                    if row == "exhausted":
                        exhausted = True
                    elif row is not None:
                        agent_failures = agent_failures + 1 if row.meta.get("agent_error") else 0
                    continue
                if not self.flights:
                    if exhausted and why is None:
                        return StopReason("the agent has nothing more to propose")
                    if why is not None:
                        return StopReason(why)
                    if max_experiments is not None and not room:
                        continue   # finished rows reached the target between the checks above
                self._collect(block=True)
                if self.lost:
                    exhausted, self.lost = False, 0
        except KeyboardInterrupt:
            self._abort()
            return StopReason("interrupted (Ctrl-C); everything so far is recorded")
        except BaseException:
            self._abort()   # a setup error: no run is left behind, nothing stays `running`
            raise

    def _control(self) -> str:
        return self.ledger.get_meta(f"control:{self.engine.tag}") or "run"

    # --- proposing -----------------------------------------------------------------------------------
    def _start(self) -> Experiment | str | None:
        """One agent turn in a free worktree; returns the row when it ended at once (invalid, agent
        error), "exhausted", or None when a candidate is now in flight."""
        eng, cfg = self.engine, self.engine.config
        champ, base = eng.champion(), eng.base()
        eng.fingerprints = fingerprints.verify(cfg)
        phase, used = eng.phase()
        if used == 0 and not self.flights:
            eng.notes.append(f"this experiment opens phase {phase.label}: first write a ranked plan of hypotheses "
                             f"for this phase into {cfg.task.scratchpad} (under '## Plan: phase {phase.number}'), "
                             "then make the first change of that plan")
        slot = self.free_slots.pop(0)
        tree_path = self._tree(slot, base)
        tree = Git(tree_path)
        brief = eng.brief(phase)
        brief.past_meta = [*brief.past_meta, *(f.proposal.meta for f in self.flights.values())]
        brief.notes = [*brief.notes, *self._in_flight_notes()]
        eng.notes = []
        for note in eng.pending_notes():
            self.ledger.event("note_delivered", number=brief.experiment, note=note["id"], tag=eng.tag)
        before, before_repo = editpolicy.Snapshot.take(tree), editpolicy.Snapshot.take(self.git)
        link = (tree_path / ".git").read_bytes()
        self.engine.reporter(ev.AgentStarted(eng.agent.name, phase.label, 1))
        started, t0 = utc_now(), time.perf_counter()
        try:
            proposal = eng.agent.propose(brief, tree_path)
        except (KeyboardInterrupt, UserError):
            self.free_slots.insert(0, slot)
            raise
        except Exception as exc:  # an agent failing is an outcome, as in the serial loop
            proposal = Proposal(description=f"(agent error) {type(exc).__name__}: {exc}")
            proposal.meta["agent_error"] = True
        proposal.usage.seconds = proposal.usage.seconds or time.perf_counter() - t0
        eng._check_untouched(proposal, base, before_repo)
        if proposal.exhausted:
            self.free_slots.insert(0, slot)
            return "exhausted"
        verdict = editpolicy.check(tree, base, list(cfg.task.editable), cfg.task.scratchpad, before)
        if (tree_path / ".git").read_bytes() != link or self.git.status() or \
                editpolicy.Snapshot.take(self.git).git_files != before_repo.git_files:
            verdict = editpolicy.Verdict(False, "outside its worktree: the worktree's .git link, the repository's "
                                                ".git or the repository's own files were changed")
            editpolicy.restore(self.git, base, before_repo)
            (tree_path / ".git").write_bytes(link)
        bad_status = "invalid"
        if proposal.meta.get("agent_error"):
            verdict, bad_status = editpolicy.Verdict(False, proposal.description), "crash"
        fields = dict(kind=Kind.EXPERIMENT, phase=phase.number, phase_title=phase.title, attempt=1,
                      parent_commit=champ.commit, agent=eng.agent.name, description=proposal.description,
                      hypothesis=proposal.hypothesis, started_at=started, agent_seconds=proposal.usage.seconds,
                      tokens_in=proposal.usage.input_tokens, tokens_out=proposal.usage.output_tokens,
                      cost_usd=proposal.usage.cost_usd, meta_json=proposal.meta, champion_metric=champ.metric_mean)
        if not verdict.ok:
            number = eng._start_row(**fields)
            self.ledger.finish(number, bad_status, reason=verdict.reason)
            eng.notes.append(f"experiment {number} was {bad_status} and undone: {verdict.reason}")
            eng.agent.observe(number, bad_status, None, proposal.meta)
            self.free_slots.insert(0, slot)
            row = self.ledger.get(number)
            eng.reporter(ev.ExperimentFinished(row))
            return row
        eng._bound_scratchpad(tree_path)
        changed = eng._changed(champ.commit, tree_path)
        number = eng._start_row(changed=changed, **fields)
        eng.reporter(ev.ExperimentStarted(number, proposal.description, phase.label))
        candidate = tree.commit(list(cfg.task.editable) + [cfg.task.scratchpad],
                                f"experiment {number} (running): {proposal.description}\n")
        self.git.update_ref(archive_ref(number), candidate)
        self.ledger.update(number, candidate_commit=candidate)
        flight = Flight(number, slot, tree_path, proposal, phase, changed, champ, base, candidate)
        self.flights[number] = flight
        self._launch(flight)
        return None

    def _in_flight_notes(self) -> list[str]:
        if not self.flights:
            return []
        lines = [f"experiment {f.number}: {f.proposal.description} (from champion {f.champion.number})"
                 for f in self.flights.values()]
        return ["these candidates are running now; do not propose the same change again: " + "; ".join(lines)]

    # --- running -------------------------------------------------------------------------------------
    def _launch(self, flight: Flight) -> None:
        eng = self.engine
        run_dir = eng.config.state_dir / "runs" / f"{flight.number:04d}{flight.label}"
        executor = InTree(self.executor, flight.tree)
        # against the champion it was proposed from, like a candidate of the sequential loop
        curves = abort_mod.champion_curves(eng.config, flight.champion)
        scores = abort_mod.champion_folds(eng.config, flight.champion)

        def work() -> None:
            trial, error = None, None
            try:
                trial = candidate_trial(eng.config, run_dir, seed=eng.config.run.seed, sandbox=eng.sandbox,
                                        executor=executor, on_fold=lambda f: eng.reporter(ev.FoldFinished(flight.number, f)),
                                        champion_curves=curves, champion_folds=scores)
            except KeyboardInterrupt:
                trial = TrialResult("interrupted", "interrupted by Ctrl-C")
            except BaseException as exc:  # a setup error (UserError): raised in the scheduler's thread
                error = exc
            self.results.put((flight.number, trial, error))

        thread = threading.Thread(target=work, name=f"candidate-{flight.number}", daemon=True)
        self.threads.append(thread)
        thread.start()
        self._save_in_flight()

    def _save_in_flight(self) -> None:
        root = self.engine.config.root
        self.ledger.set_meta(f"inflight:{self.engine.tag}", {
            str(f.number): {"worktree": str(f.tree.relative_to(root)) if f.tree.is_relative_to(root) else str(f.tree),
                            "executor": self.where, "parent": f.champion.number, "reapplied": f.reapplied,
                            "description": f.proposal.description}
            for f in self.flights.values()})

    # --- deciding ------------------------------------------------------------------------------------
    def _collect(self, *, block: bool) -> bool:
        """Decide one finished candidate, if any (waiting up to 0.5 s when ``block``). True if one was."""
        try:
            number, trial, error = self.results.get(timeout=0.5) if block else self.results.get_nowait()
        except queue.Empty:
            return False
        if error is not None:
            self._drop(self.flights.pop(number), "interrupted", f"the run could not start: {error}")
            raise error
        flight = self.flights[number]
        placement = [f.outcome.extra.get("where") for f in trial.folds if f.outcome.extra.get("where")]
        if placement:
            row = self.ledger.get(number)
            self.ledger.update(number, hardware_json={**row.hardware, "placement": placement})
        self._decide(flight, trial)
        return True

    def _finish_flight(self, flight: Flight) -> None:
        self.flights.pop(flight.number, None)
        self.free_slots.append(flight.slot)
        self.free_slots.sort()
        self._save_in_flight()

    def _drop(self, flight: Flight, status: str, reason: str, trial: TrialResult | None = None) -> None:
        """Record a candidate that ends without a result commit (its run was lost or interrupted)."""
        self.ledger.finish(flight.number, status, reason=reason, **(trial.ledger_fields() if trial else {}))
        self.engine.agent.observe(flight.number, status, None, flight.proposal.meta)
        self.engine.reporter(ev.ExperimentFinished(self.ledger.get(flight.number)))
        self._finish_flight(flight)

    def _decide(self, flight: Flight, trial: TrialResult) -> None:
        eng, cfg = self.engine, self.engine.config
        if trial.status == "interrupted":
            self._drop(flight, Status.INTERRUPTED, trial.reason + "; it will be proposed again", trial)
            self.lost += 1
            return
        champ, base = eng.champion(), eng.base()
        if trial.status != "ok" or champ.number == flight.champion.number:
            self._record(flight, trial, champ, base)
            return
        # Stale: judged against its own parent first.
        parent_runs = eng.champion_runs(flight.champion)
        verdict = decide_mod.decide(trial.values, parent_runs, direction=cfg.metric.direction, settings=cfg.decision,
                                    noise=eng.noise(), seed_only=False)
        flight.stale = {**flight.stale, "parent": flight.champion.number, "parent_metric": flight.champion.metric_mean,
                        "values_on_parent": trial.values, "champion_then": champ.number}
        if verdict.status == "discard":
            flight.stale["rule"] = "not better than its parent: discarded without a re-run"
            self._record(flight, trial, flight.champion, base)
            return
        if flight.reapplied >= MAX_REAPPLY:
            self._stale(flight, trial, champ, base, f"the champion moved {flight.reapplied + 1} times while it ran")
            return
        code = [p for p in cfg.task.editable if p != cfg.task.scratchpad]
        moved = rebase.reapply(cfg.root, flight.base, flight.candidate, base, code,
                               f"experiment {flight.number} (running, re-applied on experiment {champ.number}): "
                               f"{flight.proposal.description}\n")
        if moved is None:
            self._stale(flight, trial, champ, base, f"beat its parent (experiment {flight.champion.number}) but its "
                                                    f"change conflicts with the new champion (experiment {champ.number})")
            return
        moved = self._with_notes(flight, moved, base)
        flight.stale["rule"] = f"beat its parent: re-applied onto experiment {champ.number} and run again there"
        flight.stale.setdefault("original_candidate", flight.candidate)
        flight.reapplied += 1
        flight.label = f"-reapplied{flight.reapplied}"
        flight.champion, flight.base, flight.candidate = champ, base, moved
        flight.changed = eng._changed(champ.commit, self._tree(flight.slot, moved))
        self.ledger.update(flight.number, parent_commit=champ.commit, candidate_commit=moved,
                           champion_metric=champ.metric_mean, changed=flight.changed)
        self.git.update_ref(archive_ref(flight.number), moved)
        eng.reporter(ev.Notice(f"experiment {flight.number} beat its parent, which is no longer the champion: "
                               f"re-applied onto experiment {champ.number} and running again"))
        self._launch(flight)

    def _with_notes(self, flight: Flight, commit: str, base: str) -> str:
        """``commit`` with its scratchpad replaced by the base's notes plus what this candidate added."""
        pad = self.engine.config.task.scratchpad
        root = self.engine.config.root
        text = lambda c: (rebase.show(root, c, pad) or b"").decode("utf-8", errors="replace")  # noqa: E731
        merged = rebase.merge_notes(text(flight.base), text(flight.candidate), text(base))
        if merged == text(commit):
            return commit
        message = self.git.message(commit)
        return rebase.overlay(root, base, {
            **{p: rebase.show(root, commit, p) for p in self.engine.config.task.editable if p != pad},
            pad: merged.encode()}, message)

    def _effective(self, flight: Flight, base: str) -> str:
        """The candidate as a commit on the current base: its code, the merged notes."""
        if base == flight.base:
            return flight.candidate
        return self._with_notes(flight, flight.candidate, base)

    def _record(self, flight: Flight, trial: TrialResult, champ: Experiment, base: str) -> None:
        """Decide and record with the engine's own code, the candidate materialised in the repository's
        tree (which is at ``base``)."""
        eng, cfg = self.engine, self.engine.config
        effective = self._effective(flight, base)
        self.git("checkout", effective, "--", *dict.fromkeys([*cfg.task.editable, cfg.task.scratchpad]))
        row = eng._decide_and_record(flight.number, trial, champ, base, effective, flight.proposal, flight.phase,
                                     flight.changed)
        if flight.stale:
            decision = row.decision or {}
            numbers = {**decision.get("numbers", {}), "stale": flight.stale}
            reason = row.reason or ""
            if flight.stale.get("rule", "").startswith("not better"):
                reason = f"stale (parent {flight.champion.number} is no longer the champion); {reason}"
            self.ledger.update(flight.number, reason=reason, decision_json={**decision, "numbers": numbers})
        if row.status in ("crash", "timeout"):
            eng.notes.append(f"experiment {row.number} ({row.description}) ended {row.status}: {row.reason}")
        self._finish_flight(flight)
        if row.status == "keep":
            eng._maybe_remeasure()

    def _stale(self, flight: Flight, trial: TrialResult, champ: Experiment, base: str, reason: str) -> None:
        eng = self.engine
        effective = self._effective(flight, base)
        message = (f"experiment {flight.number}: {flight.proposal.description}\n\nstatus: stale\nreason: {reason}\n")
        result = self.git.commit_tree(self.git.tree_of(effective), base, message)
        delta = trial.mean - flight.champion.metric_mean if flight.champion.metric_mean is not None else None
        fields = trial.ledger_fields()
        fields["decision_json"].update(status="stale", reason=reason, numbers={"stale": flight.stale})
        self.ledger.finish(flight.number, Status.STALE, reason=reason, commit=result, delta=delta, **fields)
        self.git.update_ref(archive_ref(flight.number), result)
        new_base = eng._carry_notes(base, effective, flight.number)
        self.ledger.set_meta(f"base:{eng.tag}", new_base)
        eng.agent.observe(flight.number, Status.STALE, trial.mean, flight.proposal.meta)
        eng.reporter(ev.ExperimentFinished(self.ledger.get(flight.number)))
        self._finish_flight(flight)

    # --- stopping ------------------------------------------------------------------------------------
    def _abort(self) -> None:
        """Ctrl-C: interrupt every run, wait for the threads, record what was in flight, reset the tree."""
        cancel = getattr(self.executor, "cancel_all", None)
        while any(t.is_alive() for t in self.threads):
            if cancel is not None:
                cancel()
            for t in self.threads:
                t.join(timeout=0.5)
        for flight in list(self.flights.values()):
            row = self.ledger.get(flight.number)
            if row is not None and row.status == "running":
                self.ledger.finish(flight.number, Status.INTERRUPTED, reason="interrupted by Ctrl-C; it will be "
                                                                             "proposed again")
            self._finish_flight(flight)
        self.git.reset_hard(self.engine.base())
