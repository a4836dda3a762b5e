"""The loop's shared parts, assembled once by the session: ``Loop``.

Contract: ``Loop`` holds what every step of the loop uses (settings, tag, ledger, git, the state queries,
the agent, the sandbox choice, the executor, the listener) and owns the two ways a row is written:
``start_row`` (a row begins, with what every row records) and ``finish`` (the row is sealed and git's
record of the chain follows). It decides nothing; recovery, the lifecycle and the driver do.
Its writes happen in one thread (the loop's); runs may go on in others but never write the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autoresearch import events as ev
from autoresearch import hardware
from autoresearch.agents.base import Agent
from autoresearch.config import Config
from autoresearch.loop import records
from autoresearch.loop.gitops import Git
from autoresearch.loop.ledger import Ledger
from autoresearch.loop.rows import utc_now
from autoresearch.loop.state import LoopState
from autoresearch.runner.executor import Executor, LocalExecutor
from autoresearch.text import stored
from autoresearch.vocab import Kind, Status


REASON_CHARS = 4_000


@dataclass
class Loop:
    config: Config
    tag: str
    ledger: Ledger
    agent: Agent | None = None
    sandbox: bool = True
    executor: Executor | None = None
    reporter: ev.Listener = ev.ignore
    where: str = "local"
    notes: list[str] = field(default_factory=list)          # tool messages for the next brief
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.git = Git(self.config.root)
        self.state = LoopState(self.config, self.ledger, self.tag)
        if self.executor is None:
            self.executor = LocalExecutor(on_line=lambda spec, line: self.reporter(ev.RunLine(spec, line)))

    @property
    def state_dir(self):
        return self.config.state_dir

    def start_row(self, *, kind: Kind, **fields: Any) -> int:
        """Start a ledger row with what every row records: the tag, the machine, the sandbox, the
        fingerprints of the fixed files and the start time."""
        fields.setdefault("attempt", 1)
        fields.setdefault("started_at", utc_now())
        return self.ledger.start(tag=self.tag, kind=kind, hardware_json=hardware.describe(),
                                 sandbox=int(self.sandbox), fingerprints_json=self.fingerprints, **fields)

    def finish(self, number: int, status: Status, *, meta: dict | None = None, **fields: Any) -> str:
        """Seal row ``number`` with its outcome (and ``meta`` in the same transaction), then tell git. A reason
        is often a run's own last line: it is recorded as text fit to store."""
        if fields.get("reason") is not None:
            fields["reason"] = stored(fields["reason"], REASON_CHARS)
        digest = self.ledger.finish(number, status, meta=meta, **fields)
        records.anchor(self.git, digest)
        return digest
