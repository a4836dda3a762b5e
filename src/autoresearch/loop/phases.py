"""Phases of program.md: ``## Phase N: title`` sections with a budget and an advance rule.

A phase section may carry these lines (case-insensitive, anywhere in the section):

    Budget: 8 experiments. Advance after 4 experiments without improvement.
    Multi-change: yes

The current phase is never stored: it is derived from the ledger's finished experiments, so a resumed
run is in exactly the phase it would have been in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from autoresearch.errors import UserError
from autoresearch.vocab import Status

_HEADING = re.compile(r"^##\s+Phase\s+(\d+)\s*[:.\-–]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_BUDGET = re.compile(r"budget:\s*(\d+)\s*experiments?", re.IGNORECASE)
_PATIENCE = re.compile(r"advance\s+after\s+(\d+)\s*experiments?\s+without\s+improvement", re.IGNORECASE)
_MULTI = re.compile(r"multi-change:\s*(yes|true|on)", re.IGNORECASE)


@dataclass(frozen=True)
class Phase:
    number: int
    title: str
    text: str
    budget: int | None       # experiments in this phase; None = unlimited
    patience: int | None     # advance after this many experiments in a row without a keep
    multi_change: bool = False

    @property
    def label(self) -> str:
        return f"{self.number}: {self.title}"


@dataclass(frozen=True)
class Program:
    preamble: str            # the text before the first phase: goal and rules
    phases: tuple[Phase, ...]


def parse_program(text: str, source: str = "program.md") -> Program:
    matches = list(_HEADING.finditer(text))
    if not matches:
        whole = Phase(1, "Research", text.strip(), None, None)
        return Program(preamble="", phases=(whole,))
    phases = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end():end].strip()
        budget = _BUDGET.search(body)
        patience = _PATIENCE.search(body)
        number = int(m.group(1))
        if phases and number <= phases[-1].number:
            raise UserError(f"{source}: phase {number} comes after phase {phases[-1].number}",
                            hint="number the `## Phase N: title` sections in increasing order")
        phases.append(Phase(number, m.group(2), body, int(budget.group(1)) if budget else None,
                            int(patience.group(1)) if patience else None, bool(_MULTI.search(body))))
    return Program(preamble=text[:matches[0].start()].strip(), phases=tuple(phases))


def load_program(path: Path) -> Program:
    if not path.is_file():
        raise UserError(f"{path} not found", hint="the task's [task] program setting must name an existing file")
    return parse_program(path.read_text(encoding="utf-8"), str(path))


def current_phase(program: Program, outcomes: list[str]) -> tuple[Phase, int]:
    """The phase for the next experiment, and how many experiments that phase has used.

    ``outcomes`` are the statuses of finished experiments in order; those that charge nothing
    (``Status.charged`` false: interrupted, contention, agent errors) are skipped. A ``keep`` resets the patience counter.
    """
    index, used, since_keep = 0, 0, 0
    for status in outcomes:
        if not Status(status).charged:
            continue
        used += 1
        since_keep = 0 if status == Status.KEEP else since_keep + 1
        phase = program.phases[index]
        spent = phase.budget is not None and used >= phase.budget
        stalled = phase.patience is not None and since_keep >= phase.patience
        if (spent or stalled) and index + 1 < len(program.phases):
            index, used, since_keep = index + 1, 0, 0
    return program.phases[index], used
