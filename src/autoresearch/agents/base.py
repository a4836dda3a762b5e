"""The agent contract: given a brief, edit the editable files, say what and why, report usage.

An agent never runs experiments, never sees the metric's hidden key, and never decides. The engine
checks whatever it did to the tree afterwards, whether or not it obeyed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

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
