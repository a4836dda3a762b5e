"""What the agent is told for its next turn: a ``Brief`` assembled from the loop's state.

Contract: ``assemble`` reads (the ledger through ``LoopState``, the base commit's scratchpad, the
champion's and recent runs' files) and writes nothing; the caller decides what was delivered (the tool's
notes it passed in; ``deliver`` marks the researcher's notes as briefed). One brief is assembled per agent
turn; candidates already in flight are part of it (their proposals count as taken, and a line names them).

The "phase opens" planning note is written here and only here: the first new proposal of a phase (no new
proposal of that phase recorded or in flight yet; crash fixes, re-runs and agent errors do not count) is
the one that opens it, whether one candidate is in flight or several.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autoresearch import tasks
from autoresearch.agents.base import Brief, HistoryRow
from autoresearch.agents.brief import RECENT_RUNS
from autoresearch.loop import noise as noise_mod
from autoresearch.loop import runfacts
from autoresearch.loop.gitops import Git
from autoresearch.loop.phases import Phase
from autoresearch.loop.state import LoopState
from autoresearch.text import stored
from autoresearch.vocab import Kind, Status


@dataclass(frozen=True)
class InFlight:
    """A candidate running while another is proposed: what the next brief says of it."""

    number: int
    description: str
    champion: int
    phase: int
    meta: dict = field(default_factory=dict)


def opening_note(phase: Phase, scratchpad: str) -> str:
    return (f"this experiment opens phase {phase.label}: first write a ranked plan of hypotheses for this phase "
            f"into {scratchpad} (under '## Plan: phase {phase.number}'), then make the first change of that plan")


def assemble(state: LoopState, git: Git, base: str | None, *, notes: list[str], agent_name: str,
             attempt: int = 1, failure: str = "", fixing: dict | None = None,
             in_flight: list[InFlight] = ()) -> Brief:
    """The brief for the next turn. ``base``: the commit the turn starts from (its scratchpad is shown);
    ``notes``: the tool's messages since the last brief; ``fixing``: the crashed proposal's meta on a fix."""
    cfg = state.config
    phase, _ = state.phase()
    champ = state.champion()
    noise = state.noise()
    rows = [r for r in state.ledger.rows(tag=state.tag, kinds=(Kind.BASELINE, Kind.EXPERIMENT))
            if r.status != Status.AGENT_ERROR]
    history = [HistoryRow(r.number, r.status, r.description or "", r.metric_mean, r.metric_std, r.delta,
                          r.reason or "") for r in rows]
    finished = state.finished()
    past_meta = [r.meta for r in finished if agent_name and r.agent == agent_name]
    past_meta += [f.meta for f in in_flight]
    lines = list(notes)
    begun = any(r.phase == phase.number and (r.attempt or 1) == 1 and not r.meta.get("rerun_of")
                and r.status != Status.AGENT_ERROR for r in state.experiments())
    if attempt == 1 and not begun and not any(f.phase == phase.number for f in in_flight):
        lines.append(opening_note(phase, cfg.task.scratchpad))
    if in_flight:
        lines.append("these candidates are running now; do not propose the same change again: " + "; ".join(
            f"experiment {f.number}: {f.description} (from champion {f.champion})" for f in in_flight))
    lines += [f"not counted as evidence of seed noise: {why}"
              for why in noise_mod.noise_evidence(state.code_runs()).rejected]
    lines += [researcher_line(n["text"]) for n in state.pending_notes()]
    champion_run = runfacts.summarize(cfg, champ) if champ else None
    recent = [runfacts.summarize(cfg, r) for r in finished[-RECENT_RUNS:][::-1]
              if champ is None or r.number != champ.number]
    limits = runfacts.limits(cfg, tasks.for_config(cfg).brief_facts(cfg), champion_run)
    scratchpad = (git.show(base, cfg.task.scratchpad) if base else None) or ""
    # With no champion, the loop runs the baseline (taking the next number) before the agent's first turn.
    number = state.ledger.next_number() + (1 if champ is None else 0)
    return Brief(experiment=number, task=cfg.task.name, metric_name=cfg.metric.name,
                 direction=cfg.metric.direction, phase_title=phase.label, phase_text=phase.text,
                 program_rules=state.program.preamble, scratchpad=stored(scratchpad, None),
                 editable=list(dict.fromkeys([*cfg.task.editable, cfg.task.scratchpad])),
                 champion_metric=champ.metric_mean if champ else None,
                 champion_std=champ.metric_std if champ else None,
                 noise_sigma=noise.sigma if noise else None, history=history,
                 multi_change=phase.multi_change, failure=failure, attempt=attempt, notes=lines,
                 past_meta=past_meta, limits=limits, champion_run=champion_run, recent_runs=recent,
                 baseline_pending=champ is None, folds=cfg.run.folds, fixing=fixing or {})


def deliver(state: LoopState, brief: Brief) -> None:
    """Mark the researcher's notes that ``brief`` carried as delivered (after an agent answered it); a note
    that arrived after the brief was assembled waits for the next one."""
    carried = set(brief.notes)
    for note in state.pending_notes():
        if researcher_line(note["text"]) in carried:
            state.ledger.event("note_delivered", number=brief.experiment, note=note["id"], tag=state.tag)


def researcher_line(text: str) -> str:
    return f"a note from the researcher: {text}"
