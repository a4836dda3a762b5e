"""The agent's turn: brief it, let it edit its own working copy, take the editable files back as data.

Contract: ``AgentTurn.take`` runs one turn of the agent for a job (a new proposal, or a crash fix that
starts from the crashed candidate's files) and returns either the proposal with the editable files'
contents (checked: regular files, no links, UTF-8, sized; the scratchpad bounded in memory) or a ``Done``
for a turn that ended without a candidate: an agent failure (``agent_error``) or a bad edit (``invalid``),
each recorded and sealed here, the agent running out, or a crash fix that changed nothing. ``again`` is the
turn of a starved candidate: its files as they were, no agent involved. Nothing here writes the repository's
own tree; a change an agent inside the tool made to the repository's .git or data is found and put back.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from autoresearch import events as ev
from autoresearch.agents.base import Proposal, Usage, recordable
from autoresearch.errors import UserError
from autoresearch.loop import briefing, editpolicy, fingerprints, records, runs, scratchpad, workspace
from autoresearch.loop.ledger import CHAIN_HEAD
from autoresearch.loop.context import Loop
from autoresearch.loop.phases import Phase
from autoresearch.loop.rows import Experiment
from autoresearch.loop.trial import TrialResult
from autoresearch.vocab import Kind, Status


AGENT_FAILED = "agent_failed"       # a proposal's meta flag: the agent's call raised (its row: agent_error)


class JobKind(enum.StrEnum):
    NEW = "new"          # a new proposal
    FIX = "fix"          # a crash-fix turn on a crashed candidate
    RERUN = "rerun"      # the same candidate again, no agent turn (it was starved by other work)


@dataclass
class Job:
    """What a free slot does next."""

    kind: JobKind = JobKind.NEW
    attempt: int = 1
    failure: str = ""
    row: Experiment | None = None      # FIX: the crashed row; RERUN: the starved row


@dataclass
class Done:
    """An experiment (or an agent turn) that ended; what the driver needs to go on."""

    row: Experiment | None                   # the sealed row, None when nothing was recorded
    follow_up: Job | None = None             # what the slot's next turn must be
    exhausted: bool = False                  # the agent has nothing more to propose
    agent_failed: bool = False
    trial: TrialResult | None = None


class AgentTurn:
    def __init__(self, loop: Loop) -> None:
        self.loop = loop

    def take(self, job: Job, slot: int, in_flight, *, base: str, phase: Phase, champ: Experiment,
             started: str) -> tuple[Proposal, dict[str, bytes]] | Done:
        loop, cfg = self.loop, self.loop.config
        start = job.row.candidate_commit if job.kind is JobKind.FIX else base
        copy = workspace.WorkingCopy.create(loop.git, start, workspace.work_root(cfg.root) / f"slot{slot}")
        brief = briefing.assemble(loop.state, loop.git, start, notes=loop.notes, agent_name=loop.agent.name,
                                  attempt=job.attempt, failure=job.failure,
                                  fixing=job.row.meta if job.kind is JobKind.FIX else None, in_flight=in_flight)
        told, loop.notes = loop.notes, []
        before = editpolicy.Snapshot.take(loop.git)
        loop.reporter(ev.AgentStarted(loop.agent.name, phase.label, job.attempt))
        t0 = time.perf_counter()
        try:
            proposal = loop.agent.propose(brief, copy.path)
        except (KeyboardInterrupt, UserError):   # Ctrl-C, or a setting only the user can fix (an API key)
            loop.notes = told + loop.notes
            workspace.remove(copy.path)
            raise
        except Exception as exc:  # an agent failing (network, bug) is an outcome, not the loop's end
            proposal = Proposal(description=f"(agent error) {type(exc).__name__}: {exc}",
                                usage=getattr(exc, "usage", None) or Usage())   # failed calls' tokens count too
            proposal.meta.update(getattr(exc, "meta", None) or {})
            proposal.meta[AGENT_FAILED] = True
            loop.notes = told + loop.notes       # a failed call heard nothing: the next brief says it again
        else:
            briefing.deliver(loop.state, brief)  # the researcher's notes reached an agent that answered
        proposal = clean(proposal, time.perf_counter() - t0)
        outside = self._check_untouched(before, proposal)
        fields = dict(kind=Kind.EXPERIMENT, phase=phase.number, phase_title=phase.title, attempt=job.attempt,
                      parent_commit=champ.commit, agent=loop.agent.name, description=proposal.description,
                      hypothesis=proposal.hypothesis, started_at=started, agent_seconds=proposal.usage.seconds,
                      tokens_in=proposal.usage.input_tokens, tokens_out=proposal.usage.output_tokens,
                      cost_usd=proposal.usage.cost_usd, meta_json=proposal.meta, champion_metric=champ.metric_mean)
        try:
            if proposal.exhausted:
                return Done(None, exhausted=True)
            if proposal.meta.get(AGENT_FAILED):
                row = self._refuse(fields, Status.AGENT_ERROR, proposal.description, proposal)
                return Done(row, follow_up=job, agent_failed=True)
            taken = copy.take_back(list(dict.fromkeys([*cfg.task.editable, cfg.task.scratchpad])))
            verdict = editpolicy.judge(taken, cfg.task.scratchpad)
            if outside:
                verdict = editpolicy.Verdict(False, outside)
            files = self._files(taken, start)
            if job.kind is JobKind.FIX and verdict.ok and self._same_code(job.row.candidate_commit, files):
                loop.notes.append("the previous candidate crashed and was not fixed; it was reverted")
                return Done(None)
            if not verdict.ok:
                row = self._refuse(fields, Status.INVALID, verdict.reason, proposal)
                loop.notes.append(f"experiment {row.number} was invalid and undone: {verdict.reason}")
                return Done(row)
            return proposal, files
        finally:
            workspace.remove(copy.path)

    def _files(self, taken: workspace.TakeBack, start: str) -> dict[str, bytes]:
        """The editable files as they go into the candidate commit: what the agent left, the scratchpad
        bounded (in memory: nothing is written back through any path)."""
        cfg = self.loop.config
        files = dict(taken.files)
        pad = files.get(cfg.task.scratchpad)
        if pad is not None:
            text, cut = scratchpad.bound(pad.decode("utf-8"), cfg.loop.scratchpad_max_chars,
                                         self.loop.ledger.next_number())
            if cut:
                files[cfg.task.scratchpad] = text.encode("utf-8")
                self.loop.notes.append(f"the scratchpad was over {cfg.loop.scratchpad_max_chars} characters; "
                                       f"the oldest {cut} were cut")
        return files

    def _refuse(self, fields: dict, status: Status, reason: str, proposal: Proposal) -> Experiment:
        loop = self.loop
        number = loop.start_row(**fields)
        loop.finish(number, status, reason=reason)
        loop.agent.observe(number, status, None, proposal.meta)
        row = loop.ledger.get(number)
        loop.reporter(ev.ExperimentFinished(row))
        return row

    def _check_untouched(self, before: editpolicy.Snapshot, proposal: Proposal) -> str:
        """Defence in depth for agents that run inside the tool (an agent's own process cannot reach any
        of this): the repository's .git, prepared data and hidden keys must be as before the turn. A change
        to .git is put back and makes the turn invalid (the reason is returned); a change to data or keys
        is recorded and stops the run, since it cannot be restored from git; a change to the ledger's sealed
        records stops it too (named; the next start refuses it as well)."""
        loop, cfg = self.loop, self.loop.config
        tampered, _ = records.check_seals(loop.ledger.stored_rows(), loop.ledger.get_meta(CHAIN_HEAD) or "")
        if tampered:
            raise UserError("the ledger's records were changed during the agent's turn: "
                            + "; ".join(str(p) for p in tampered[:5]),
                            hint="restore .autoresearch/ledger.sqlite from a backup (or `autoresearch verify --accept` "
                                 "if a person changed it on purpose), and check how the agent could write there")
        if moved := runs.changed_snapshots():
            raise UserError("the code of a run in flight was changed during the agent's turn: " + "; ".join(moved),
                            hint="the run's result will not be believed (it is recorded as a crash); check how the "
                                 "agent could write into .autoresearch/snapshots")
        git_changes = editpolicy.git_metadata_changes(loop.git, before)
        state = cfg.state_dir.relative_to(cfg.root).as_posix() + "/"
        data = [d for d in fingerprints.changed(loop.fingerprints, fingerprints.compute(cfg)) if d.startswith(state)]
        if git_changes or data:
            editpolicy.restore(loop.git, loop.state.base(), before)
        if not data:
            if not git_changes:
                return ""
            more = f" and {len(git_changes) - 3} more" if len(git_changes) > 3 else ""
            return f"git metadata was changed: {', '.join(git_changes[:3])}{more}"
        fingerprints.save(cfg, loop.fingerprints)
        number = loop.start_row(kind=Kind.EXPERIMENT, agent=loop.agent.name, description=proposal.description,
                                meta_json=proposal.meta)
        reason = "the agent's turn changed fixed files or data: " + ", ".join(data[:5])
        loop.finish(number, Status.INVALID, reason=reason)
        loop.ledger.event("fingerprint_mismatch", number=number, changed=data)
        raise UserError(f"experiment {number}: {reason}",
                        hint="the data or keys cannot be restored from git: re-run `autoresearch data prepare` "
                             "(or restore a backup) and check how the agent could write there")

    def again(self, row: Experiment) -> tuple[Proposal, dict[str, bytes]]:
        """A starved candidate again: its editable files as they were, no agent turn."""
        cfg, git = self.loop.config, self.loop.git
        files = {}
        for rel in dict.fromkeys([*cfg.task.editable, cfg.task.scratchpad]):
            data = git.raw("cat-file", "blob", f"{row.candidate_commit}:{rel}") if \
                git.show(row.candidate_commit, rel) is not None else None
            if data is not None:
                files[rel] = data
        self.loop.reporter(ev.Notice(f"experiment {row.number} was starved by other work on the machine; "
                                     f"running the same candidate again: {row.description or ''}"))
        return (Proposal(description=row.description or "", hypothesis=row.hypothesis or "",
                         meta={**row.meta, "rerun_of": row.number}), files)

    def _same_code(self, commit: str, files: dict[str, bytes]) -> bool:
        cfg, git = self.loop.config, self.loop.git
        return all(files.get(rel) == git.raw("cat-file", "blob", f"{commit}:{rel}")
                   for rel in cfg.task.editable if rel != cfg.task.scratchpad and rel in files)


def clean(proposal: Proposal, seconds: float) -> Proposal:
    """The agent's proposal fit to record (``agents.base.recordable``: no NUL, control characters, escape
    sequences or bad UTF-8 in its text), with the time its turn took."""
    cleaned = recordable(proposal)
    cleaned.usage.seconds = cleaned.usage.seconds or seconds
    return cleaned
