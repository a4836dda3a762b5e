"""The experiment loop. The only module that knows the order of things.

One experiment: brief the agent → let it edit → check the tree → commit the candidate → run every fold
under the hard limit → score → decide → record in the ledger → keep (the branch moves) or revert.

Crash safety. The ledger is the single source of truth; git follows it. An experiment gets its ledger row
only once the candidate is about to be committed; a row still ``running`` when the tool starts again was
cut off, so it is marked ``interrupted`` and the next experiment proposes again. The commit the next
experiment starts from (the champion's code plus the agent's latest notes) is kept in the ledger's meta
as ``base:<tag>``; at start-up the worktree is reset to it, so a half-finished step leaves nothing behind.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from autoresearch import events as ev
from autoresearch import hardware
from autoresearch.agents.base import Agent, Brief, HistoryRow, Proposal, Usage
from autoresearch.agents.brief import RECENT_RUNS
from autoresearch.hyperparams import describe_changes, diff_constants
from autoresearch.config import Config
from autoresearch.errors import UserError
from autoresearch.vocab import Kind, Status, rerun_seed
from autoresearch.loop import abort as abort_mod
from autoresearch.loop import contention
from autoresearch.loop import decide as decide_mod
from autoresearch.loop import editpolicy, fingerprints, runfacts, scratchpad
from autoresearch.loop.gitops import Git, archive_ref, branch_name, format_message, unrecorded_own_commits
from autoresearch.loop.ledger import Experiment, Ledger, utc_now
from autoresearch.loop.phases import Phase, current_phase, load_program
from autoresearch.loop.status import ABORTED, CONTENTION
from autoresearch.loop.trial import TrialResult, candidate_trial, fold_ids, nan_to_none, run_trial
from autoresearch.runner.executor import Executor, LocalExecutor
from autoresearch import tasks

MAX_AGENT_FAILURES = 3           # consecutive agent errors (API down, bad key) that end a run
Reporter = ev.Listener            # gets every loop event (autoresearch.events); never decides




@dataclass
class StopReason:
    why: str


class Engine:
    def __init__(self, config: Config, *, tag: str, agent: Agent | None = None, sandbox: bool = True,
                 executor: Executor | None = None, reporter: Reporter | None = None,
                 ledger: Ledger | None = None) -> None:
        self.config = config
        self.tag = tag
        self.agent = agent
        self.sandbox = sandbox
        self.reporter = reporter or ev.ignore
        self.executor = executor or LocalExecutor(on_line=lambda spec, line: self.reporter(ev.RunLine(spec, line)))
        self.git = Git(config.root)
        self.ledger = ledger or open_ledger(config)
        self.program = load_program(config.root / config.task.program)
        self.notes: list[str] = []        # tool messages for the next brief
        self.fingerprints: dict[str, str] = {}
        self._failed_candidate: str | None = None   # the crashed candidate a fix attempt starts from
        self._stop_requested = False

    # --- state derived from the ledger -----------------------------------------------------------
    def champion(self) -> Experiment | None:
        return self.ledger.champion(self.tag)

    def finished(self) -> list[Experiment]:
        return [r for r in self.ledger.rows(tag=self.tag, kinds=(Kind.EXPERIMENT,)) if Status(r.status).finished]

    def phase(self) -> tuple[Phase, int]:
        return current_phase(self.program, [r.status for r in self.finished()])

    def noise(self) -> decide_mod.NoiseFloor | None:
        raw = self.ledger.get_meta(f"noise:{self.tag}")
        return decide_mod.NoiseFloor.from_dict(raw) if raw else None

    def base(self) -> str:
        """The commit the next experiment starts from: the champion, or a notes-only commit on top of it.

        The ledger records it after each experiment; if the tool stopped between recording a keep and
        recording the new base, the recorded base is older than the champion, and the champion wins."""
        base = self.ledger.get_meta(f"base:{self.tag}")
        champ = self.champion()
        if champ is None:
            return base or self.git.head()
        if base and self.git.is_ancestor(champ.commit, base):
            return base
        return champ.commit

    # --- start-up ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Reconcile git with the ledger after any stop, and check the fixed files' fingerprints."""
        if not self.git.is_repo():
            raise UserError(f"{self.config.root} is not a git repository", hint="run `git init` and commit your files first")
        self._check_required_files()
        branch = branch_name(self.tag)
        self.git.remove_stale_locks()
        self._keep_user_work(branch)
        for row in self.ledger.running():
            self.ledger.finish(row.number, "interrupted", reason="the tool stopped while this ran; it will be proposed again")
            self.reporter(ev.Interrupted(row.number))
            if self.agent is not None:
                self.agent.observe(row.number, "interrupted", None, row.meta)
        if self.git.rev(f"refs/heads/{branch}") is None:
            self.git.checkout_branch(branch)
        elif self.git.current_branch() != branch:
            self.git("checkout", "-q", branch)
        self._add_scratchpad()
        base = self.base() if self.champion() else None
        if base:
            if self.git.head() != base:
                self.git("update-ref", f"refs/heads/{branch}", base)
            self.git.reset_hard(base)
        for row in self.ledger.rows(tag=self.tag):
            if row.commit and row.kind == "experiment" and self.git.rev(archive_ref(row.number)) is None:
                self.git.update_ref(archive_ref(row.number), row.commit)
        self.fingerprints = fingerprints.verify(self.config)
        tasks.for_config(self.config).check(self.config)

    def _check_required_files(self) -> None:
        """The files the loop cannot run without, checked before anything is recorded."""
        cfg = self.config
        for rel in cfg.task.editable:
            if rel != cfg.task.scratchpad and not (cfg.root / rel).is_file() and self.git.show("HEAD", rel) is None:
                raise UserError(f"{cfg.path}: [task] editable names {rel}, which does not exist",
                                hint=f"create and commit {rel}, or fix [task] editable")

    def _keep_user_work(self, branch: str) -> None:
        """Never throw a person's work away. The loop resets the tree to the champion at start-up, so:
        uncommitted edits of the editable files on the loop's branch (an agent turn that was cut off) are
        saved with `git stash`; any other uncommitted change stops the run with a message; and a commit on
        the branch that the loop did not make stops it too."""
        pad = self.config.task.scratchpad
        changes = [c for c in self.git.status() if not (c.code == "??" and c.path == pad)]
        on_branch = self.git.current_branch() == branch
        editable = set(self.config.task.editable) | {pad}
        if changes and on_branch and all(c.code != "??" and c.path in editable and not c.orig for c in changes):
            self.git("stash", "push", "-q", "-m", f"autoresearch: uncommitted edits found at start-up ({utc_now()})")
            self.reporter(ev.Notice("uncommitted edits of the editable files were saved with `git stash` "
                                    "(`git stash list` shows them) before the loop reset the tree"))
        elif changes:
            names = ", ".join(c.path for c in changes[:5]) + (" …" if len(changes) > 5 else "")
            raise UserError(f"the working tree has uncommitted changes: {names}",
                            hint="commit them (`git commit -am ...`) or stash them (`git stash`) first: the loop "
                                 "resets the tree to the champion when it starts, and would otherwise lose them")
        head, base = self.git.rev(f"refs/heads/{branch}"), self.ledger.get_meta(f"base:{self.tag}")
        if head is None or base is None or head == base or self.git.is_ancestor(head, base):
            return
        ours = {c for r in self.ledger.rows(tag=self.tag) for c in (r.commit, r.candidate_commit) if c}
        running = {r.number for r in self.ledger.running()}
        resume = None if head in ours else unrecorded_own_commits(self.git, head, base, running,
                                                                   self.config.task.scratchpad)
        if resume is not None:      # stopped between making a commit and recording it: the loop's own
            if resume != base:
                self.ledger.set_meta(f"base:{self.tag}", resume)
            return
        if head not in ours:
            subject = self.git("log", "-1", "--format=%s", head).strip()
            raise UserError(f"branch {branch} has a commit the loop did not make: {head[:10]} {subject!r}",
                            hint=f"move it to a branch of its own (`git branch my-work {head[:10]}`) and put the "
                                 f"loop's branch back (`git update-ref refs/heads/{branch} {base[:10]}`), or "
                                 "start a new tag with --tag")

    def _add_scratchpad(self) -> None:
        """The scratchpad is optional for the user: create (or take the user's untracked one) and commit it."""
        pad = self.config.task.scratchpad
        if self.git.show("HEAD", pad) is not None:
            return
        path = self.config.root / pad
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("# Scratchpad\n\nThe agent's notes between experiments.\n", encoding="utf-8")
        self.git.commit([pad], f"autoresearch: add {pad} (the agent's memory)\n")

    def ensure_baseline(self) -> Experiment:
        champ = self.champion()
        if champ is not None:
            return champ
        head = self.git.head()
        for starved in range(1, self.config.contention.pause_after + 1):
            number = self._start_row(kind=Kind.BASELINE, number=0 if self.ledger.next_number() == 0 else None,
                                     phase=0, phase_title="baseline", parent_commit=head, candidate_commit=head,
                                     agent="", description="baseline")
            self.reporter(ev.ExperimentStarted(number, "baseline", "baseline"))
            trial = self._trial(number, seed=self.config.run.seed)
            if trial.status != CONTENTION or starved == self.config.contention.pause_after:
                break
            self.ledger.finish(number, CONTENTION, reason=trial.reason, **trial.ledger_fields())
            contention.baseline_retry(self, starved, trial.reason)
        if trial.status == CONTENTION:
            self.ledger.finish(number, CONTENTION, reason=trial.reason, **trial.ledger_fields())
            raise UserError(f"the machine is too busy to measure the baseline: {trial.reason}",
                            hint="free some cores (or raise [run] timeout_s in autoresearch.toml) and run again")
        if trial.status != "ok":
            self.ledger.finish(number, trial.status, reason=trial.reason, **trial.ledger_fields())
            raise UserError(f"the baseline did not run: {trial.reason}\n--- log tail ---\n{trial.log_tail()}",
                            hint="fix train.py (or the run command) so that `autoresearch trial` succeeds")
        self.ledger.finish(number, Status.KEEP, commit=head, reason="baseline", **trial.ledger_fields())
        self.ledger.set_meta(f"base:{self.tag}", head)
        row = self.ledger.get(number)
        self.reporter(ev.ExperimentFinished(row))
        return row

    # --- the loop ----------------------------------------------------------------------------------
    def spent(self) -> tuple[float, int]:
        """The agent's cost in USD and tokens so far on this tag (unknown costs count as zero)."""
        rows = self.ledger.rows(tag=self.tag, kinds=("experiment",))
        return (sum(r.cost_usd or 0.0 for r in rows),
                sum((r.tokens_in or 0) + (r.tokens_out or 0) for r in rows))

    def budget_stop(self, max_cost: float | None, max_tokens: int | None) -> str | None:
        cost, tokens = self.spent()
        if max_cost and cost >= max_cost:
            return f"reached the cost budget: ${cost:.2f} of ${max_cost:.2f}"
        if max_tokens and tokens >= max_tokens:
            return f"reached the token budget: {tokens} of {max_tokens}"
        return None

    def pending_notes(self) -> list[dict]:
        """Researcher notes for this tag (``Session.note``) not yet put in a brief."""
        delivered = {e.payload.get("note") for e in self.ledger.events("note_delivered")}
        return [{"id": e.id, "text": e.payload.get("text", "")} for e in self.ledger.events("note")
                if e.payload.get("tag") == self.tag and e.id not in delivered]

    def steer(self, poll_s: float = 1.0) -> str | None:
        """Obey a person's control (``Session.pause``/``stop``, e.g. from the dashboard) between experiments:
        wait while paused; return why to stop, or None to go on. A stop is consumed (the next run goes on)."""
        key, announced = f"control:{self.tag}", False
        while True:
            control = self.ledger.get_meta(key) or "run"
            if control == "stop":
                self.ledger.set_meta(key, "run")
                return "stopped on request (the dashboard or `Session.stop`)"
            if control != "pause":
                if announced:
                    self.reporter(ev.Notice("resumed"))
                return None
            if not announced:
                self.reporter(ev.Paused("paused on request; resume or stop from the dashboard"))
                announced = True
            time.sleep(poll_s)

    def run(self, *, max_experiments: int | None = None, hours: float | None = None,
            max_cost: float | None = None, max_tokens: int | None = None,
            should_stop: Callable[[], str | None] | None = None) -> StopReason:
        """Run experiments until a stop condition; ``max_experiments`` counts finished experiments of
        this tag in total, so a resumed run continues to the same target. Cost and token budgets
        (default: ``[agent] max_cost_usd`` and ``max_total_tokens``) also count the whole tag."""
        max_cost = max_cost if max_cost is not None else (self.config.agent.max_cost_usd or None)
        max_tokens = max_tokens if max_tokens is not None else (self.config.agent.max_total_tokens or None)
        if self.agent is None:
            raise UserError("no agent given", hint="pass --agent replay|optuna|openai|anthropic|claude-code")
        self.prepare()
        self.ensure_baseline()
        deadline = time.monotonic() + hours * 3600 if hours else None
        attempt, failure = 1, ""
        agent_failures = 0

        def stop_while_paused() -> str | None:
            if deadline is not None and time.monotonic() >= deadline:
                return f"reached the {hours} h limit"
            return should_stop() if should_stop else None

        while True:
            done = len(self.finished())
            if max_experiments is not None and done >= max_experiments:
                return StopReason(f"reached {max_experiments} experiments")
            if deadline is not None and time.monotonic() >= deadline:
                return StopReason(f"reached the {hours} h limit")
            if (why := self.budget_stop(max_cost, max_tokens)) or (should_stop and (why := should_stop())) \
                    or (why := self.steer()):
                return StopReason(why)
            try:
                outcome = self.experiment(attempt=attempt, failure=failure)
            except KeyboardInterrupt:
                return StopReason("interrupted (Ctrl-C); everything so far is recorded")
            if outcome is None:
                return StopReason("the agent has nothing more to propose")
            row, trial = outcome
            if row is not None and row.status == CONTENTION:
                # Not the candidate's verdict: the same candidate runs again; attempt and failure stay.
                starved = contention.streak(self.ledger.rows(tag=self.tag, kinds=("experiment",)))
                if len(starved) >= contention.GIVE_UP * self.config.contention.pause_after:
                    return StopReason(f"{len(starved)} experiments in a row were starved by other work on the "
                                      f"machine, even after pauses (last: {row.reason}); free some cores and run "
                                      "again: the starved candidate runs first")
                if len(starved) >= self.config.contention.pause_after:
                    if why := contention.pause(self, stop_while_paused):
                        return StopReason(why)
                continue
            agent_failures = agent_failures + 1 if row is not None and row.status == Status.AGENT_ERROR else 0
            if agent_failures >= MAX_AGENT_FAILURES:
                return StopReason(f"the agent failed {agent_failures} times in a row (last: {row.reason})")
            if agent_failures:
                # not an experiment: the same one is asked again, a crash fix with the same failure and files
                if attempt > 1 and self._failed_candidate:
                    self.git("checkout", self._failed_candidate, "--", *self.config.task.editable)
                continue
            if row is not None and row.status == "keep":
                self._maybe_remeasure()
            if row is not None and row.status in ("crash", "timeout") and attempt <= self.config.loop.max_crash_fixes:
                tail = trial.log_tail(self.config.loop.log_tail_lines) if trial else ""
                attempt, failure = attempt + 1, f"{row.status}: {row.reason}\n--- log tail ---\n{tail}"
                self._reopen_candidate(row)
            else:
                attempt, failure, self._failed_candidate = 1, "", None

    def _maybe_remeasure(self) -> None:
        """Measure the noise floor again when the champion has moved far from where it was measured."""
        noise, champ = self.noise(), self.champion()
        if noise is None or champ is None or self.config.decision.remeasure_after <= 0:
            return   # without a floor, `autoresearch baseline` measures one; the rule falls back to the folds
        if decide_mod.needs_remeasure(noise, champ.metric_mean, self.config.decision):
            self.reporter(ev.Remeasure(noise, champ))
            self.measure_noise(max(2, noise.n_repeats))

    def champion_runs(self, champ: Experiment) -> list[list[float]]:
        """Every measurement of the champion's code: its own run, its confirmation runs and noise-floor runs."""
        runs = [champ.folds] + [list(r) for r in (champ.decision.get("numbers", {}).get("confirm_runs") or [])]
        for row in self.ledger.rows(tag=self.tag, kinds=("noise",)):
            if row.commit == champ.commit and row.status == "keep":
                runs.append(row.folds)
        return runs

    def experiment(self, *, attempt: int = 1, failure: str = "") -> tuple[Experiment | None, TrialResult | None] | None:
        """One experiment. Returns (row, trial), (None, None) when a crash fix was abandoned, or None
        when the agent is exhausted."""
        assert self.agent is not None
        champ = self.champion()
        assert champ is not None, "ensure_baseline() first"
        base = self.base()
        self.fingerprints = fingerprints.verify(self.config)
        phase, used = self.phase()
        rerun = contention.pending(self.ledger.rows(tag=self.tag, kinds=("experiment",)))
        if used == 0 and attempt == 1 and rerun is None:
            self.notes.append(f"this experiment opens phase {phase.label}: first write a ranked plan of hypotheses "
                              f"for this phase into {self.config.task.scratchpad} (under '## Plan: phase "
                              f"{phase.number}'), then make the first change of that plan")
        if rerun is not None:   # starved by other work last time: the same candidate, no agent turn
            proposal = self._restore_candidate(rerun)   # (the tool's own checkout: before the .git snapshot)
            attempt = rerun.attempt or attempt
        before = editpolicy.Snapshot.take(self.git)
        failed = self._failed_candidate if attempt > 1 else None
        started = utc_now()
        t0 = time.perf_counter()
        if rerun is None:
            brief = self.brief(phase, attempt=attempt, failure=failure)
            self.notes = []
            for note in self.pending_notes():
                self.ledger.event("note_delivered", number=brief.experiment, note=note["id"], tag=self.tag)
            self.reporter(ev.AgentStarted(self.agent.name, phase.label, attempt))
            try:
                proposal = self.agent.propose(brief, self.config.root)
            except (KeyboardInterrupt, UserError):   # Ctrl-C, or a setting only the user can fix (an API key)
                editpolicy.restore(self.git, base, before)
                raise
            except Exception as exc:  # an agent failing (network, bug) is an outcome, not the loop's end
                proposal = Proposal(description=f"(agent error) {type(exc).__name__}: {exc}",
                                    usage=getattr(exc, "usage", None) or Usage())   # failed calls' tokens count too
                proposal.meta.update(getattr(exc, "meta", None) or {})
                proposal.meta["agent_error"] = True
        agent_seconds = time.perf_counter() - t0 if rerun is None else 0.0   # a re-run costs no agent time
        proposal.usage.seconds = proposal.usage.seconds or agent_seconds
        self._check_untouched(proposal, base, before)
        if proposal.exhausted:
            editpolicy.restore(self.git, base, before)
            return None
        if failed is not None and self._same_code(failed):
            # A crash fix that changed nothing: give up on this candidate.
            editpolicy.restore(self.git, base, before)
            self.notes.append("the previous candidate crashed and was not fixed; it was reverted")
            return None, None
        verdict = editpolicy.check(self.git, base, list(self.config.task.editable), self.config.task.scratchpad, before)
        bad_status = "invalid"
        if proposal.meta.get("agent_error"):
            verdict, bad_status = editpolicy.Verdict(False, proposal.description), Status.AGENT_ERROR
        fields = dict(kind=Kind.EXPERIMENT, phase=phase.number, phase_title=phase.title,
                      attempt=attempt, parent_commit=champ.commit, agent=self.agent.name,
                      description=proposal.description, hypothesis=proposal.hypothesis, started_at=started,
                      agent_seconds=proposal.usage.seconds, tokens_in=proposal.usage.input_tokens,
                      tokens_out=proposal.usage.output_tokens, cost_usd=proposal.usage.cost_usd,
                      meta_json=proposal.meta, champion_metric=champ.metric_mean)
        if not verdict.ok:
            number = self._start_row(**fields)
            editpolicy.restore(self.git, base, before)
            self.ledger.finish(number, bad_status, reason=verdict.reason)
            if bad_status != Status.AGENT_ERROR:    # an agent failure is no news for the agent's next brief
                self.notes.append(f"experiment {number} was {bad_status} and undone: {verdict.reason}")
            row = self.ledger.get(number)
            self.agent.observe(number, bad_status, None, proposal.meta)
            self.reporter(ev.ExperimentFinished(row))
            return row, None
        self._bound_scratchpad()
        changed = self._changed(champ.commit)
        number = self._start_row(changed=changed, **fields)
        self.reporter(ev.ExperimentStarted(number, proposal.description, phase.label))
        candidate = self.git.commit(list(self.config.task.editable) + [self.config.task.scratchpad],
                                    f"experiment {number} (running): {proposal.description}\n")
        self.git.update_ref(archive_ref(number), candidate)
        self.ledger.update(number, candidate_commit=candidate)
        trial = self._trial(number, seed=self.config.run.seed, candidate=True,     # smoke test, then the folds
                            curves=abort_mod.champion_curves(self.config, champ),
                            scores=abort_mod.champion_folds(self.config, champ))
        row = self._decide_and_record(number, trial, champ, base, candidate, proposal, phase, changed)
        return row, trial

    def _restore_candidate(self, row: Experiment) -> Proposal:
        """Put a starved candidate's files back on the base, as its proposal: it runs again as it was."""
        files = list(dict.fromkeys([*self.config.task.editable, self.config.task.scratchpad]))
        present = [f for f in files if self.git.show(row.candidate_commit, f) is not None]
        self.git("checkout", row.candidate_commit, "--", *present)
        self.reporter(ev.Notice(f"experiment {row.number} was starved by other work on the machine; "
                                f"running the same candidate again: {row.description or ''}"))
        return Proposal(description=row.description or "", hypothesis=row.hypothesis or "",
                        meta={**row.meta, "rerun_of": row.number})

    # --- pieces ------------------------------------------------------------------------------------
    def _trial(self, number: int, *, seed: int, label: str = "", mode: str = "fold", curves=None,
               scores=None, candidate: bool = False) -> TrialResult:
        """Run a trial for ledger row ``number`` (``curves``, ``scores``: the champion's, for the abort rules; with
        ``candidate``, a candidate's first trial: its smoke test, then its folds). Ctrl-C (after the runner has killed every child) records the row as
        interrupted, puts the tree back at the base, and is raised again."""
        run_dir = self.config.state_dir / "runs" / (f"{number:04d}{label}")
        try:
            if candidate:
                trial = candidate_trial(self.config, run_dir, seed=seed, sandbox=self.sandbox, executor=self.executor,
                                        on_fold=lambda f: self.reporter(ev.FoldFinished(number, f)),
                                        champion_curves=curves, champion_folds=scores)
            else:
                trial = run_trial(self.config, run_dir, seed=seed, mode=mode, sandbox=self.sandbox,
                                  executor=self.executor, on_fold=lambda f: self.reporter(ev.FoldFinished(number, f)),
                                  champion_curves=curves, champion_folds=scores)
        except KeyboardInterrupt:
            trial = TrialResult("interrupted", "interrupted by Ctrl-C")
        else:
            if trial.status == "interrupted":
                # The executor lost a run (a Ray worker or node went away): recorded as interrupted by the
                # caller like any result, and the loop goes on; the agent proposes it again.
                return trial
        if trial.status == "interrupted":
            self.ledger.finish(number, Status.INTERRUPTED, reason=trial.reason, **trial.ledger_fields())
            row = self.ledger.get(number)
            if row.kind == "experiment":
                self.git.reset_hard(self.base())
                if self.agent is not None:
                    self.agent.observe(number, "interrupted", None, row.meta)
            raise KeyboardInterrupt
        return trial

    def _start_row(self, *, kind: Kind, **fields: Any) -> int:
        """Start a ledger row with what every row records: the tag, the machine, the sandbox, the
        fingerprints of the fixed files and the start time."""
        fields.setdefault("attempt", 1)
        fields.setdefault("started_at", utc_now())
        return self.ledger.start(tag=self.tag, kind=kind, hardware_json=hardware.describe(),
                                 sandbox=int(self.sandbox), fingerprints_json=self.fingerprints, **fields)

    def measure_noise(self, repeats: int) -> decide_mod.NoiseFloor:
        """Run the champion ``repeats`` times with fresh seeds; record each run and the resulting noise floor.

        The champion's own recorded run counts as one of the repeats, so R repeats cost R − 1 new runs."""
        if repeats < 2:
            raise UserError("--repeats must be at least 2 to measure a spread", hint="use --repeats 3")
        self.prepare()
        champ = self.ensure_baseline()
        runs = [champ.folds]
        for r in range(1, repeats):
            seed = rerun_seed(self.config.run.seed, r)
            number = self._start_row(kind=Kind.NOISE, phase=0, phase_title="noise floor",
                                     parent_commit=champ.commit, candidate_commit=champ.commit, commit=champ.commit,
                                     description=f"noise floor: champion {champ.number} with seed {seed}")
            self.reporter(ev.ExperimentStarted(number, f"champion again, seed {seed}", "noise floor"))
            trial = self._trial(number, seed=seed)
            status = Status.KEEP if trial.status == "ok" else trial.status
            self.ledger.finish(number, status, reason=trial.reason or "noise-floor run", **trial.ledger_fields())
            self.reporter(ev.ExperimentFinished(self.ledger.get(number)))
            if trial.status != "ok":
                raise UserError(f"a noise-floor run failed: {trial.reason}", hint=f"check `autoresearch show "
                                f"{number}`; the champion should run reliably before its noise is measured")
            runs.append(trial.values)
        noise = decide_mod.noise_floor(runs)
        self.ledger.set_meta(f"noise:{self.tag}", noise.to_dict())
        self.ledger.event("noise_floor", number=champ.number, tag=self.tag, **noise.to_dict())
        return noise

    def run_final(self) -> Experiment:
        """Train the champion on train+val and score the hidden test split once. Each use is recorded as a
        ``test_used`` event; the result is a row of kind ``final`` that no brief ever includes."""
        self.prepare()
        champ = self.champion()
        if champ is None:
            raise UserError(f"tag {self.tag!r} has no champion yet", hint="run `autoresearch run` (or `trial`) first")
        self.ledger.event("test_used", number=champ.number, tag=self.tag, commit=champ.commit)
        number = self._start_row(kind=Kind.FINAL, phase=0, phase_title="final test", parent_commit=champ.commit,
                                 candidate_commit=champ.commit, commit=champ.commit,
                                 description=f"final: champion {champ.number} on train+val, scored on test")
        self.reporter(ev.ExperimentStarted(number, "final training on train+val", "final"))
        trial = self._trial(number, seed=self.config.run.seed, mode="final", label="-final")
        status = Status.KEEP if trial.status == "ok" else trial.status
        self.ledger.finish(number, status, reason=trial.reason or "one-time test score", **trial.ledger_fields())
        return self.ledger.get(number)

    def _decide_and_record(self, number, trial, champ, base, candidate, proposal, phase, changed) -> Experiment:
        cfg = self.config
        fields = trial.ledger_fields()
        if trial.status != "ok":
            status, reason, decision = trial.status, trial.reason, None
        else:
            editable_py = [p for p in cfg.task.editable if p.endswith(".py")]
            seed_only = bool(editable_py) and all(
                decide_mod.is_seed_only(self.git.show(champ.commit, p) or "", (cfg.root / p).read_text(encoding="utf-8"))
                for p in editable_py)
            champion_runs = self.champion_runs(champ)
            decision = decide_mod.decide(trial.values, champion_runs, direction=cfg.metric.direction,
                                         settings=cfg.decision, noise=self.noise(), seed_only=seed_only)
            spent = 0
            if decision.status == "confirm":
                runs = [trial.values]
                for r in range(max(1, cfg.decision.confirm_repeats)):
                    extra = self._trial(number, seed=rerun_seed(cfg.run.seed, r + 1), label=f"-confirm{r + 1}")
                    spent += 1
                    fields["decision_json"].setdefault("confirm_runs_load", []).append(extra.runs)
                    if extra.status == CONTENTION:   # the evidence is incomplete, not bad: run it all again
                        decision.status, decision.reason = CONTENTION, f"confirmation run {r + 1}: {extra.reason}"
                        break
                    if extra.status != "ok":
                        runs.append([math.nan] * len(trial.values))   # a failed confirmation discards
                        break
                    runs.append(extra.values)
                if decision.status != CONTENTION:
                    decision = decide_mod.decide_confirmed(runs, champion_runs, direction=cfg.metric.direction,
                                                           settings=cfg.decision, noise=self.noise())
                    decision.numbers["confirm_runs"] = runs[1:]
            status, reason = decision.status, decision.reason
            decision.numbers["confirmation_runs"] = spent
        delta = None
        if trial.status == "ok" and champ.metric_mean is not None:
            delta = trial.mean - champ.metric_mean
        message = format_message(number=number, description=proposal.description, metric_name=cfg.metric.name,
                                 mean=nan_to_none(trial.mean), std=nan_to_none(trial.std),
                                 prev=champ.metric_mean, delta=delta, folds=trial.values,
                                 peak_memory_gb=trial.peak_memory_gb, phase=phase.label, changed=changed,
                                 status=status, hypothesis=proposal.hypothesis, reason=reason)
        result = self.git.commit_tree(self.git.tree_of(candidate), base, message)
        if decision is not None:
            fields["decision_json"].update(status=decision.status, reason=decision.reason, numbers=decision.numbers)
        found = abort_mod.evidence(trial) if status == ABORTED else None
        if found:
            fields["decision_json"]["abort"] = found
            self.notes.append(abort_mod.note(number, found, len(fold_ids(cfg, "fold"))))
        self.ledger.finish(number, status, reason=reason, commit=result, delta=delta, **fields)
        self.git.update_ref(archive_ref(number), result)
        if status == "keep":
            new_base = result
            self.git.update_ref(f"refs/heads/{branch_name(self.tag)}", result)
            self.git.reset_hard(result)
        else:
            new_base = self._carry_notes(base, candidate, number)
        self.ledger.set_meta(f"base:{self.tag}", new_base)
        if status != CONTENTION:   # the agent hears the candidate's verdict once, after its re-run
            self.agent.observe(number, status, nan_to_none(trial.mean), proposal.meta)
        row = self.ledger.get(number)
        self.reporter(ev.ExperimentFinished(row))
        return row

    def _carry_notes(self, base: str, candidate: str, number: int) -> str:
        """Revert the code to ``base`` but keep the agent's scratchpad notes in a notes-only commit."""
        pad = self.config.task.scratchpad
        notes = self.git.show(candidate, pad)
        self.git.reset_hard(base)
        if notes is None or notes == (self.git.show(base, pad) or ""):
            return base
        (self.config.root / pad).write_text(notes, encoding="utf-8")
        return self.git.commit([pad], f"notes after experiment {number}\n")

    def _check_untouched(self, proposal: Proposal, base: str, before: editpolicy.Snapshot) -> None:
        """Prepared data and hidden keys must be exactly as fingerprinted before the agent's turn. The
        tool's state folder is outside git, so the edit policy cannot see it; an agent that rewrote a key
        (and the fingerprint file) would otherwise score perfectly. The trusted fingerprints are written
        back, the tree restored, and the run stops: data cannot be restored from git."""
        state = self.config.state_dir.relative_to(self.config.root).as_posix() + "/"
        diff = [d for d in fingerprints.changed(self.fingerprints, fingerprints.compute(self.config))
                if d.startswith(state)]   # tracked fixed files are the edit policy's: invalid and restored
        if not diff:
            return
        fingerprints.save(self.config, self.fingerprints)
        editpolicy.restore(self.git, base, before)
        number = self._start_row(kind=Kind.EXPERIMENT, agent=self.agent.name if self.agent else "",
                                 description=proposal.description, meta_json=proposal.meta)
        reason = "the agent's turn changed fixed files or data: " + ", ".join(diff[:5])
        self.ledger.finish(number, "invalid", reason=reason)
        self.ledger.event("fingerprint_mismatch", number=number, changed=diff)
        raise UserError(f"experiment {number}: {reason}",
                        hint="the data or keys cannot be restored from git: re-run `autoresearch data prepare` "
                             "(or restore a backup) and check how the agent could write there")

    def _reopen_candidate(self, row: Experiment) -> None:
        """Put the crashed candidate's files back in the tree (uncommitted) so the agent can fix its change."""
        self._failed_candidate = row.candidate_commit
        if row.candidate_commit:
            self.git("checkout", row.candidate_commit, "--", *self.config.task.editable)

    def _same_code(self, commit: str) -> bool:
        pad = self.config.task.scratchpad
        return all(self.git.show(commit, rel) == _read(self.config.root / rel)
                   for rel in self.config.task.editable if rel != pad)

    def _bound_scratchpad(self, root: Path | None = None) -> None:
        path = (root or self.config.root) / self.config.task.scratchpad
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            bounded, cut = scratchpad.bound(text, self.config.loop.scratchpad_max_chars, self.ledger.next_number())
            if cut:
                path.write_text(bounded, encoding="utf-8")
                self.notes.append(f"the scratchpad was over {self.config.loop.scratchpad_max_chars} characters; "
                                  f"the oldest {cut} were cut")

    def _changed(self, champion_commit: str, root: Path | None = None) -> str:
        """The constants (or files) changed from the champion in the tree at ``root`` (default: the repository)."""
        parts = []
        for rel in self.config.task.editable:
            if not rel.endswith(".py"):
                continue
            old = self.git.show(champion_commit, rel) or ""
            new = ((root or self.config.root) / rel).read_text(encoding="utf-8")
            try:
                changes = diff_constants(old, new)
            except SyntaxError:
                continue
            if changes:
                parts.append(describe_changes(changes))
            elif old != new:
                parts.append(f"{rel} (code)")
        return ", ".join(parts)

    def brief(self, phase: Phase, *, attempt: int = 1, failure: str = "", agent_name: str | None = None) -> Brief:
        """What the agent is told next. ``agent_name`` (default: this engine's agent) selects its own past
        proposals; researcher notes not yet delivered are included (and marked delivered by ``experiment``)."""
        cfg = self.config
        agent_name = agent_name or (self.agent.name if self.agent is not None else "")
        champ = self.champion()
        noise = self.noise()
        rows = [r for r in self.ledger.rows(tag=self.tag, kinds=("baseline", "experiment"))
                if r.status != Status.AGENT_ERROR]
        history = [HistoryRow(r.number, r.status, r.description or "", r.metric_mean, r.metric_std, r.delta,
                              r.reason or "") for r in rows]
        pad = cfg.root / cfg.task.scratchpad
        finished = self.finished()
        past_meta = [r.meta for r in finished if agent_name and r.agent == agent_name]
        notes = list(self.notes)
        if attempt == 1 and current_phase(self.program, [r.status for r in finished])[1] == 0:
            notes.append(f"this experiment opens phase {phase.label}: first write a ranked plan of hypotheses "
                         f"for this phase into {cfg.task.scratchpad} (under '## Plan: phase {phase.number}'), "
                         f"then make the first change of that plan")
        notes += [f"a note from the researcher: {n['text']}" for n in self.pending_notes()]
        champion_run = runfacts.summarize(cfg, champ) if champ else None
        recent = [runfacts.summarize(cfg, r) for r in finished[-RECENT_RUNS:][::-1]
                  if champ is None or r.number != champ.number]
        limits = runfacts.limits(cfg, tasks.for_config(cfg).brief_facts(cfg), champion_run)
        # With no champion, the loop runs the baseline (taking the next number) before the agent's first turn.
        number = self.ledger.next_number() + (1 if champ is None else 0)
        return Brief(experiment=number, task=cfg.task.name, metric_name=cfg.metric.name,
                     direction=cfg.metric.direction, phase_title=phase.label, phase_text=phase.text,
                     program_rules=self.program.preamble, scratchpad=pad.read_text(encoding="utf-8") if pad.is_file() else "",
                     editable=list(dict.fromkeys([*cfg.task.editable, cfg.task.scratchpad])),
                     champion_metric=champ.metric_mean if champ else None,
                     champion_std=champ.metric_std if champ else None,
                     noise_sigma=noise.sigma if noise else None, history=history,
                     multi_change=phase.multi_change, failure=failure, attempt=attempt, notes=notes,
                     past_meta=past_meta, limits=limits, champion_run=champion_run, recent_runs=recent,
                     baseline_pending=champ is None, folds=cfg.run.folds)


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def open_ledger(config: Config) -> Ledger:
    """The ledger of a repository, creating the state folder. The folder ignores itself in git (its own
    ``.gitignore``), so a repository whose .gitignore does not list it never looks dirty because of it."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    ignore = config.state_dir / ".gitignore"
    if not ignore.is_file():
        ignore.write_text("# the tool's state: never committed\n*\n", encoding="utf-8")
    return Ledger(config.state_dir / "ledger.sqlite")

