"""How experiments are executed: one small interface, a local implementation.

The engine builds a list of ``RunSpec`` (one per fold and seed) and hands it to an executor. The local
executor runs them one after another; an executor on a distributed engine (Ray) runs them at once and
returns the same ``RunOutcome`` objects. Executors never score and never decide.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from autoresearch.runner.process import OnLine, run_spec
from autoresearch.runner.spec import ExitKind, Mount, RunOutcome, RunSpec  # noqa: F401  (the executor's contract)


class Executor(Protocol):
    """Runs specs and returns one outcome per spec, in the same order.

    Contract: never raises for a failing run (a crash is an outcome); raises ``KeyboardInterrupt`` only
    after every child it started is dead; leaves no process behind.
    """

    def run(self, specs: Sequence[RunSpec]) -> list[RunOutcome]: ...


class LocalExecutor:
    """Runs specs one after another on this machine, each in its own process group."""

    def __init__(self, on_line: OnLine = None) -> None:
        self.on_line = on_line  # optional callback(spec, line) for progress display

    def run(self, specs: Sequence[RunSpec]) -> list[RunOutcome]:
        return [run_spec(spec, on_line=self.on_line) for spec in specs]
