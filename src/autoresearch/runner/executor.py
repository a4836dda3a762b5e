"""How experiments are executed: one small interface, a local implementation.

The loop builds a batch of ``RunSpec`` (one per fold) and hands it to an executor, which decides whether
they run one after another or side by side. The local executor runs them one after another; an executor
on a distributed engine (Ray) may run them at once and returns the same ``RunOutcome`` objects.
Executors never score and never decide.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence

from autoresearch.runner.process import OnLine, run_spec
from autoresearch.runner.spec import ExitKind, Mount, RunOutcome, RunSpec  # noqa: F401  (the executor's contract)


KeepGoing = Optional[Callable[[RunOutcome], bool]]


class Executor(Protocol):
    """Runs a batch of specs and returns one outcome per spec, in the same order.

    Contract: never raises for a failing run (a crash is an outcome); raises ``KeyboardInterrupt`` only
    after every child it started is dead; leaves no process behind. ``keep_going(outcome)`` is called in
    the caller's thread as each run ends; once it returns False, specs not yet started are not started
    and come back as ``ExitKind.SKIPPED`` (runs already going are let finish).
    """

    def run(self, specs: Sequence[RunSpec], *, keep_going: KeepGoing = None) -> list[RunOutcome]: ...


def skipped(spec: RunSpec) -> RunOutcome:
    return RunOutcome(spec, ExitKind.SKIPPED, None, 0.0, reason="not started: an earlier run of the batch failed")


class LocalExecutor:
    """Runs specs one after another on this machine, each in its own process group."""

    def __init__(self, on_line: OnLine = None) -> None:
        self.on_line = on_line  # optional callback(spec, line) for progress display

    def run(self, specs: Sequence[RunSpec], *, keep_going: KeepGoing = None) -> list[RunOutcome]:
        outcomes: list[RunOutcome] = []
        going = True
        for spec in specs:
            if not going:
                outcomes.append(skipped(spec))
                continue
            outcome = run_spec(spec, on_line=self.on_line)
            outcomes.append(outcome)
            if keep_going is not None and not keep_going(outcome):
                going = False
        return outcomes
