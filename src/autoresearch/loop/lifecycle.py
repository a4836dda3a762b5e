"""One experiment, from the agent's turn to its sealed record: the only place a status is decided.

Every driver (one candidate at a time, or several in flight) goes through these steps, in this order:

1. ``open`` (the loop's thread): the agent's turn (``loop/turn.py``: brief, its own working copy, the
   editable files taken back as data and checked; an agent failure or a bad edit is recorded there at once,
   ``agent_error`` or ``invalid``). Otherwise start the row and make the candidate commit as a git object
   on the base (no ref moves but the candidate's archive ref) → a ``Candidate``.
2. ``run`` (any thread; writes no ledger): a read-only snapshot of the candidate commit runs, its smoke
   test first, then its folds with the after-fold rule, each run into an output folder made fresh.
3. ``conclude`` (the loop's thread): the evidence so far decides (``evidence.judge``): one more run with a
   fresh seed, a re-run on a newer champion (the stale rule, when another candidate was kept meanwhile), or
   the record: result commit and notes commit as git objects, then the ledger row sealed with the commit
   the next experiment starts from (``base_after``), then the refs (archive, branch, the chain's anchor).
   What the slot does next (a crash-fix turn, the same candidate again after contention) comes back with it.

Write order is the contract with ``loop/recovery.py``: objects before records, records before refs, so a
kill at any instant leaves a state start-up can finish or undo from the records alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch import events as ev
from autoresearch.agents.base import Proposal
from autoresearch.hyperparams import describe_changes, diff_constants
from autoresearch.loop import abort as abort_mod
from autoresearch.loop import briefing, decide, evidence, fingerprints, rebase, runs
from autoresearch.loop import champion as champion_mod
from autoresearch.loop import noise as noise_mod
from autoresearch.loop.context import Loop
from autoresearch.loop.gitops import archive_ref, branch_name, format_message
from autoresearch.loop.phases import Phase
from autoresearch.loop.records import seal_line
from autoresearch.loop.state import RESULT
from autoresearch.loop.rows import Experiment, utc_now
from autoresearch.loop.trial import TrialResult, candidate_trial, fold_ids, nan_to_none, run_trial
from autoresearch.loop.turn import AgentTurn, Done, Job, JobKind
from autoresearch.vocab import Kind, Status, rerun_seed

MAX_REAPPLY = 2          # a candidate whose champion moved more often than this while it ran is stale


@dataclass
class Candidate:
    """One experiment in flight."""

    number: int
    slot: int
    job: Job
    proposal: Proposal
    phase: Phase
    parent: Experiment                 # the champion it was proposed from
    base: str                          # the commit it was made on
    commit: str                        # its candidate commit
    changed: str
    runs: list[TrialResult] = field(default_factory=list)
    label: str = ""                    # run folder suffix of its current measurement: "", "-reapplied1"
    reapplied: int = 0
    stale: dict = field(default_factory=dict)
    reference: evidence.Reference = field(default_factory=evidence.Reference)   # read in the loop's thread

    def in_flight(self) -> briefing.InFlight:
        return briefing.InFlight(self.number, self.proposal.description, self.parent.number, self.phase.number,
                                 self.proposal.meta)

    def next_run(self, config) -> tuple[int, str]:
        """(seed, run folder name) of this candidate's next run."""
        k = len(self.runs)
        seed = config.run.seed if k == 0 else rerun_seed(config.run.seed, k)
        return seed, f"{self.number:04d}{self.label}" + (f"-confirm{k}" if k else "")


@dataclass
class Again:
    """The candidate runs once more (a fresh seed, or re-applied on a newer champion)."""


class Lifecycle:
    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.turn = AgentTurn(loop)

    # ------------------------------------------------------------------------------- 1. the agent's turn
    def open(self, job: Job, slot: int, in_flight: list[briefing.InFlight]) -> Candidate | Done:
        loop, cfg, state = self.loop, self.loop.config, self.loop.state
        champ, base = state.champion(), state.base()
        assert champ is not None and base is not None, "the baseline first"
        loop.fingerprints = fingerprints.verify(cfg)
        phase, _ = state.phase()
        started = utc_now()
        if job.row is not None:   # a fix or a re-run starts where the earlier candidate started: the stale
            base = loop.git("log", "-1", "--format=%P", job.row.candidate_commit).split()[0]   # rule moves it on
            champ = self._champion_of(job.row) or champ
        if job.kind is JobKind.RERUN:
            proposal, files = self.turn.again(job.row)
        else:
            opened = self.turn.take(job, slot, in_flight, base=base, phase=phase, champ=champ, started=started)
            if isinstance(opened, Done):
                return opened
            proposal, files = opened
        changed = self._changed(champ.commit, files)
        number = loop.start_row(kind=Kind.EXPERIMENT, phase=phase.number, phase_title=phase.title,
                                attempt=job.attempt, parent_commit=champ.commit, agent=loop.agent.name,
                                description=proposal.description, hypothesis=proposal.hypothesis,
                                started_at=started, agent_seconds=proposal.usage.seconds,
                                tokens_in=proposal.usage.input_tokens, tokens_out=proposal.usage.output_tokens,
                                cost_usd=proposal.usage.cost_usd, meta_json=proposal.meta,
                                champion_metric=champ.metric_mean, changed=changed)
        commit = rebase.overlay(cfg.root, base, files, f"experiment {number} (running): "
                                f"{proposal.description.splitlines()[0] if proposal.description else ''}\n")
        loop.ledger.update(number, candidate_commit=commit)
        loop.git.update_ref(archive_ref(number), commit)
        loop.reporter(ev.ExperimentStarted(number, proposal.description, phase.label))
        return Candidate(number, slot, job, proposal, phase, champ, base, commit, changed,
                         reference=self._reference(champ, number))

    def _reference(self, champ: Experiment, number: int | None = None) -> evidence.Reference:
        """What a candidate is judged against (its parent's runs and curves, the evidence of seed noise from
        every other code), read in the loop's thread so that runs read no ledger."""
        cfg, state = self.loop.config, self.loop.state
        return evidence.Reference(champion_runs=state.champion_runs(champ),
                                  champion_folds=abort_mod.champion_folds(cfg, champ),
                                  noise=noise_mod.noise_evidence(state.code_runs(exclude=number)),
                                  floor=state.noise(), curves=abort_mod.champion_curves(cfg, champ),
                                  pace=abort_mod.champion_pace(cfg, champ))

    def prepare_run(self, cand: Candidate) -> None:
        """Before each run of a candidate (the loop's thread): what it is compared with, as of now."""
        cand.reference = self._reference(cand.parent, cand.number)

    def _champion_of(self, row: Experiment) -> Experiment | None:
        for r in self.loop.ledger.rows(tag=self.loop.tag, kinds=(Kind.BASELINE, Kind.EXPERIMENT)):
            if r.commit == row.parent_commit and r.status == Status.KEEP:
                return r
        return None

    def _changed(self, champion_commit: str, files: dict[str, bytes]) -> str:
        """The constants (or files) changed from the champion."""
        cfg, git = self.loop.config, self.loop.git
        parts = []
        for rel in cfg.task.editable:
            if not rel.endswith(".py") or rel not in files:
                continue
            old, new = git.show(champion_commit, rel) or "", files[rel].decode("utf-8")
            try:
                changes = diff_constants(old, new)
            except SyntaxError:
                continue
            if changes:
                parts.append(describe_changes(changes))
            elif old != new:
                parts.append(f"{rel} (code)")
        return ", ".join(parts)

    # ------------------------------------------------------------------------------------------ 2. run
    def run(self, cand: Candidate) -> TrialResult:
        """The candidate's next measurement (any thread; writes no ledger). Ctrl-C propagates."""
        loop, cfg = self.loop, self.loop.config
        seed, name = cand.next_run(cfg)
        first = not cand.runs
        ref = cand.reference
        earlier = [t.values for t in cand.runs]
        folds = fold_ids(cfg, "fold")

        def stop_after(done) -> dict | None:
            scored = {f.fold: f.score.value for f in done}
            current = [scored.get(k) for k in folds]
            return evidence.fold_stop(cfg, earlier, current, ref, done[-1].fold)

        def trial(run_dir: Path, cwd: Path) -> TrialResult:
            on_fold = lambda f: loop.reporter(ev.FoldFinished(cand.number, f))  # noqa: E731
            if first:
                return candidate_trial(cfg, run_dir, seed=seed, sandbox=loop.sandbox, executor=loop.executor,
                                       on_fold=on_fold, champion_curves=ref.curves, stop_after=stop_after, cwd=cwd,
                                       champion_pace=ref.pace)
            return run_trial(cfg, run_dir, seed=seed, sandbox=loop.sandbox, executor=loop.executor,
                             on_fold=on_fold, stop_after=stop_after, cwd=cwd, champion_pace=ref.pace)

        return runs.measure(loop, cand.commit, name, trial)

    # ------------------------------------------------------------------------------------ 3. conclude
    def conclude(self, cand: Candidate, trial: TrialResult) -> Done | Again:
        loop, cfg = self.loop, self.loop.config
        cand.runs.append(trial)
        if trial.status == Status.INTERRUPTED:
            loop.finish(cand.number, Status.INTERRUPTED, reason=trial.reason + "; it will be proposed again",
                        **trial.ledger_fields())
            loop.agent.observe(cand.number, Status.INTERRUPTED, None, cand.proposal.meta)
            row = loop.ledger.get(cand.number)
            loop.reporter(ev.ExperimentFinished(row))
            return Done(row, trial=trial)
        first = cand.runs[0]
        stopped = trial.fold_abort or {}
        if stopped.get("kind") == "sequential":   # clearly not better on the folds so far: a discard
            return self.record(cand, Status.DISCARD, stopped["reason"], stopped["verdict"].get("numbers", {}))
        if first.status != "ok":
            return self.record(cand, Status(first.status), first.reason, {})
        if trial.status == Status.CONTENTION:     # an extra run starved: the evidence is incomplete, not bad
            return self.record(cand, Status.CONTENTION, f"confirmation run {len(cand.runs) - 1}: {trial.reason}", {})
        width = len(first.values)
        values = [t.values if t.status == "ok" else [math.nan] * width for t in cand.runs]
        seed_only = self._seed_only(cand)
        judgement = evidence.judge(cfg, values, cand.reference, seed_only=seed_only)
        for _ in range(cfg.decision.max_runs):    # only the evidence of noise is missing: measure the champion
            if judgement.verdict is not evidence.Verdict.MORE or judgement.more != "champion":
                break
            champion_mod.repeat(loop, cand.parent, len(cand.reference.champion_runs) + 1)
            self.prepare_run(cand)
            judgement = evidence.judge(cfg, values, cand.reference, seed_only=seed_only)
        if judgement.verdict is evidence.Verdict.MORE:
            if judgement.more == "champion":
                return self.record(cand, Status.DISCARD, "discarded: the champion could not be measured again to "
                                   f"give evidence of the noise ({judgement.reason})", judgement.numbers)
            return Again()
        champ = loop.state.champion()
        if champ.number != cand.parent.number:
            return self._stale_rule(cand, judgement, champ)
        return self.record(cand, Status(judgement.verdict), judgement.reason, judgement.numbers)

    def _seed_only(self, cand: Candidate) -> bool:
        cfg, git = self.loop.config, self.loop.git
        code = [p for p in cfg.task.editable if p.endswith(".py")]
        return bool(code) and all(decide.is_seed_only(git.show(cand.parent.commit, p) or "", git.show(cand.commit, p) or "")
                                  for p in code)

    def _stale_rule(self, cand: Candidate, judgement: evidence.Judgement, champ: Experiment) -> Done | Again:
        """Another candidate was kept while this one ran (docs/parallel.md): judged against its own parent
        first; not better → discarded; better → its change re-applied onto the new champion and measured
        there, or ``stale`` when it conflicts or the champion kept moving."""
        loop, cfg = self.loop, self.loop.config
        cand.stale = {**cand.stale, "parent": cand.parent.number, "parent_metric": cand.parent.metric_mean,
                      "values_on_parent": cand.runs[0].values, "champion_then": champ.number}
        if judgement.verdict is evidence.Verdict.DISCARD:
            cand.stale["rule"] = "not better than its parent: discarded without a re-run"
            return self.record(cand, Status.DISCARD, f"stale (parent {cand.parent.number} is no longer the champion); "
                               f"{judgement.reason}", judgement.numbers)
        if cand.reapplied >= MAX_REAPPLY:
            return self.record(cand, Status.STALE, f"the champion moved {cand.reapplied + 1} times while it ran", {})
        base = loop.state.base()
        code = [p for p in cfg.task.editable if p != cfg.task.scratchpad]
        moved = rebase.reapply(cfg.root, cand.base, cand.commit, base, code,
                               f"experiment {cand.number} (running, re-applied on experiment {champ.number}): "
                               f"{cand.proposal.description}\n")
        if moved is None:
            return self.record(cand, Status.STALE, f"beat its parent (experiment {cand.parent.number}) but its change "
                               f"conflicts with the new champion (experiment {champ.number})", {})
        moved = self._with_notes(cand, moved, base)
        cand.stale["rule"] = f"beat its parent: re-applied onto experiment {champ.number} and run again there"
        cand.stale.setdefault("original_candidate", cand.commit)
        cand.reapplied += 1
        cand.label, cand.runs = f"-reapplied{cand.reapplied}", []
        cand.parent, cand.base, cand.commit = champ, base, moved
        cand.reference = self._reference(champ, cand.number)
        cand.changed = self._changed(champ.commit, {p: loop.git.raw("cat-file", "blob", f"{moved}:{p}")
                                                    for p in code if loop.git.show(moved, p) is not None})
        loop.ledger.update(cand.number, candidate_commit=moved, parent_commit=champ.commit,   # the record first,
                           champion_metric=champ.metric_mean, changed=cand.changed)          # then the ref
        loop.git.update_ref(archive_ref(cand.number), moved)
        loop.reporter(ev.Notice(f"experiment {cand.number} beat its parent, which is no longer the champion: "
                                f"re-applied onto experiment {champ.number} and running again"))
        return Again()

    def _with_notes(self, cand: Candidate, commit: str, base: str) -> str:
        """``commit`` with its scratchpad replaced by ``base``'s notes plus what this candidate added."""
        cfg, git = self.loop.config, self.loop.git
        pad = cfg.task.scratchpad
        text = lambda c: (git.show(c, pad) or "")  # noqa: E731
        merged = rebase.merge_notes(text(cand.base), text(cand.commit), text(base))
        if merged == text(commit) and git("log", "-1", "--format=%P", commit).split() == [base]:
            return commit
        files = {p: git.raw("cat-file", "blob", f"{commit}:{p}") for p in cfg.task.editable
                 if p != pad and git.show(commit, p) is not None}
        return rebase.overlay(cfg.root, base, {**files, pad: merged.encode("utf-8")}, git.message(commit))

    # -------------------------------------------------------------------------------------- the record
    def record(self, cand: Candidate, status: Status, reason: str, numbers: dict) -> Done:
        """Seal the experiment's outcome: result and notes commits as objects, the row (with the base the
        next experiment starts from), then the refs. Returns what the slot does next."""
        loop, cfg, git = self.loop, self.loop.config, self.loop.git
        first = cand.runs[0]
        base = loop.state.base()
        effective = cand.commit if base == cand.base else self._with_notes(cand, cand.commit, base)
        delta = None
        if first.status == "ok" and cand.parent.metric_mean is not None and not math.isnan(first.mean):
            delta = first.mean - cand.parent.metric_mean
        fields = first.ledger_fields()
        decision = fields["decision_json"]
        decision.update(status=status.value, reason=reason, numbers={**numbers, "confirmation_runs": len(cand.runs) - 1})
        if len(cand.runs) > 1:
            decision["numbers"]["confirm_runs"] = [t.values for t in cand.runs[1:]]
            decision["confirm_runs_load"] = [t.runs for t in cand.runs[1:]]
        if cand.stale:
            decision["numbers"][Status.STALE] = cand.stale
        found = abort_mod.evidence(first) if status == Status.ABORTED else None
        if found:
            decision["abort"] = found
            loop.notes.append(abort_mod.note(cand.number, found, len(fold_ids(cfg, "fold"))))
        if status == Status.KEEP:
            new_base = RESULT
        elif status == Status.CONTENTION:
            new_base = base                      # its notes go forward with its re-run
        else:
            new_base = self._notes_commit(effective, base, cand.number)
        decision["base_after"] = new_base
        fields.update(delta=delta, reason=reason, changed=cand.changed, parent_commit=cand.parent.commit,
                      champion_metric=cand.parent.metric_mean, candidate_commit=cand.commit)
        digest = loop.ledger.preview_seal(cand.number, status, **fields)
        message = format_message(number=cand.number, description=cand.proposal.description,
                                 metric_name=cfg.metric.name, mean=nan_to_none(first.mean), std=nan_to_none(first.std),
                                 prev=cand.parent.metric_mean, delta=delta, folds=first.values,
                                 peak_memory_gb=first.peak_memory_gb, phase=cand.phase.label, changed=cand.changed,
                                 status=status, hypothesis=cand.proposal.hypothesis, reason=reason)
        result = git.commit_tree(git.tree_of(effective), base, message + seal_line(digest) + "\n")
        sealed = loop.finish(cand.number, status, commit=result, **fields)
        assert sealed == digest, "the ledger sealed something other than what the result commit carries"
        git.update_ref(archive_ref(cand.number), result)
        target = result if new_base == RESULT else new_base
        git.update_ref(f"refs/heads/{branch_name(loop.tag)}", target)
        git.reset_hard(target)
        if status != Status.CONTENTION:   # the agent hears the candidate's verdict once, after its re-run
            loop.agent.observe(cand.number, status, nan_to_none(first.mean), cand.proposal.meta)
        row = loop.ledger.get(cand.number)
        loop.reporter(ev.ExperimentFinished(row))
        return Done(row, follow_up=self._follow_up(cand, row, first), trial=first)

    def _notes_commit(self, effective: str, base: str, number: int) -> str:
        """The base with the candidate's scratchpad (its notes are kept when its code is not)."""
        cfg, git = self.loop.config, self.loop.git
        pad = cfg.task.scratchpad
        notes = git.show(effective, pad)
        if notes is None or notes == (git.show(base, pad) or ""):
            return base
        return rebase.overlay(cfg.root, base, {pad: notes.encode("utf-8")}, f"notes after experiment {number}\n")

    def _follow_up(self, cand: Candidate, row: Experiment, first: TrialResult) -> Job | None:
        cfg = self.loop.config
        if row.status == Status.CONTENTION:
            return Job(JobKind.RERUN, attempt=cand.job.attempt, failure=cand.job.failure, row=row)
        if row.status in (Status.CRASH, Status.TIMEOUT) and cand.job.attempt <= cfg.loop.max_crash_fixes:
            tail = first.log_tail(cfg.loop.log_tail_lines)
            return Job(JobKind.FIX, attempt=cand.job.attempt + 1, row=row,
                       failure=f"{row.status}: {row.reason}\n--- log tail ---\n{tail}")
        return None
