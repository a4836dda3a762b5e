"""The agent contract: given a brief, edit the editable files, say what and why, report usage.

An agent never runs experiments, never sees the metric's hidden key, and never decides. The engine
checks whatever it did to the tree afterwards, whether or not it obeyed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from autoresearch import text
from autoresearch.agents.brief import Brief, HistoryRow  # noqa: F401  (part of the agent contract)


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None     # None when unknown
    seconds: float = 0.0

    def add(self, other: "Usage") -> "Usage":
        cost = None if self.cost_usd is None and other.cost_usd is None else (self.cost_usd or 0) + (other.cost_usd or 0)
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
                     cost, self.seconds + other.seconds)


@dataclass
class Proposal:
    """What an agent returns after editing the working tree."""

    description: str
    hypothesis: str = ""
    usage: Usage = field(default_factory=Usage)
    meta: dict = field(default_factory=dict)   # agent-specific, stored in the ledger (e.g. optuna trial)
    exhausted: bool = False                    # True: the agent has nothing more to propose


def recordable(proposal: Proposal) -> Proposal:
    """``proposal`` with its text fit to record (``text.stored``): the description, hypothesis and every
    string of its meta without NUL, control characters, escape sequences, bidi overrides or lone
    surrogates, and capped. The loop calls this on every proposal before anything of it is recorded (a
    commit, a ledger row, an event), so no agent text can stop ``git commit`` or SQLite, or replay the same
    crash on every resume. An empty description becomes ``(no description)``."""
    description = text.stored(proposal.description, text.DESCRIPTION_CHARS).strip()
    meta = text.stored_meta(proposal.meta if isinstance(proposal.meta, dict) else {"meta": proposal.meta})
    u = proposal.usage if isinstance(proposal.usage, Usage) else Usage()
    usage = Usage(_count(u.input_tokens), _count(u.output_tokens),
                  None if u.cost_usd is None else _amount(u.cost_usd), _amount(u.seconds) or 0.0)
    return Proposal(description or "(no description)", text.stored(proposal.hypothesis, text.HYPOTHESIS_CHARS),
                    usage, meta, bool(proposal.exhausted))


def _count(x: object) -> int:
    try:
        return max(0, int(x))            # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0


def _amount(x: object) -> float | None:
    try:
        value = float(x)                 # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


@dataclass
class AgentContext:
    """What an agent may use besides the brief. Built by the engine."""

    root: Path                                  # the research repository (the working tree)
    editable: list[str]                         # relative paths the agent may change (scratchpad included)
    denied: list[Path]                          # never readable by an agent (hidden keys, test split, state)
    list_experiments: Callable[[], str] = lambda: ""        # a compact table of past experiments
    show_experiment: Callable[[int], str] = lambda n: ""    # one experiment: diff, metrics, log tail
    check_run: Callable[[int, Path], str] = lambda steps, tree: ""   # run N steps of a working copy: verdict + log
    options: dict[str, Any] = field(default_factory=dict)   # from [agent] in autoresearch.toml and the CLI


class Agent(Protocol):
    name: str

    def propose(self, brief: Brief, workdir: Path) -> Proposal:
        """Edit files under ``workdir`` (the research repository) and describe the change."""

    def observe(self, number: int, status: str, metric: float | None, meta: dict) -> None:
        """Told the outcome of the proposal (optional for most agents)."""
