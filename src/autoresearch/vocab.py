"""The closed vocabularies of the tool, one type each, with their behaviour on them.

They are ``StrEnum`` members, so they are stored in the ledger, in JSON and in git messages as their plain
string values (the on-disk format does not change), compare equal to those strings, and print as them.
Anything read back from disk goes through the type (``Status(row.status)``), so a misspelt value is an
error where it enters, not a silent miss later.
"""

from __future__ import annotations

import enum
import math


class Direction(enum.StrEnum):
    """Which way the metric improves. The only place the sign flip is written."""

    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"

    @classmethod
    def parse(cls, value: str | "Direction") -> "Direction":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"direction must be one of {', '.join(cls)}, got {value!r}") from None

    def gain(self, candidate: float, champion: float) -> float:
        """How much better ``candidate`` is than ``champion``: positive when better, in metric units."""
        return champion - candidate if self is Direction.MINIMIZE else candidate - champion

    def better(self, a: float, b: float) -> bool:
        """True when ``a`` is strictly better than ``b``; NaN is worst of all."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return self.gain(a, b) > 0

    @property
    def words(self) -> str:
        return "lower is better" if self is Direction.MINIMIZE else "higher is better"

    @property
    def adjective(self) -> str:
        return "lower" if self is Direction.MINIMIZE else "higher"


class Status(enum.StrEnum):
    """How a row of the ledger ended (or that it is still running)."""

    RUNNING = "running"          # started, not finished (a stop at this point makes it interrupted)
    KEEP = "keep"                # kept: the new champion (baseline, noise and final rows that ran fine too)
    DISCARD = "discard"          # ran and scored, not better beyond the noise
    CRASH = "crash"              # non-zero exit, memory ceiling, unusable or non-finite outputs
    TIMEOUT = "timeout"          # killed at the deadline while it had the machine to itself
    INVALID = "invalid"          # the agent's edit broke the rules; undone before any run
    INTERRUPTED = "interrupted"  # cut off by a stop of the tool; proposed again
    ABORTED = "aborted"          # stopped early: clearly worse than the champion at the same step
    CONTENTION = "contention"    # cut off while the machine was oversubscribed; proposed again
    STALE = "stale"              # beat its parent, but its change no longer applies to the newer champion
    AGENT_ERROR = "agent_error"  # the agent failed before any edit (an API error): not an experiment; asked again

    @property
    def finished(self) -> bool:
        """A final outcome of the candidate (counts for phases and budgets)."""
        return self not in (Status.RUNNING, Status.INTERRUPTED, Status.CONTENTION, Status.AGENT_ERROR)

    @property
    def charged(self) -> bool:
        """Whether the row spent the search's budget (a phase's experiments): every final outcome; not a
        row cut off by a stop, a run starved by other work, or an agent's failed call."""
        return self.finished

    @property
    def failed(self) -> bool:
        return self in (Status.CRASH, Status.TIMEOUT, Status.INVALID, Status.ABORTED)


class ExitKind(str, enum.Enum):
    """How one run's process ended (the runner's word; the trial turns it into a ``Status``)."""

    OK = "ok"              # exited 0
    ERROR = "error"        # non-zero exit or killed by a signal before the deadline
    TIMEOUT = "timeout"    # killed at the deadline
    MEMORY = "memory"      # killed for exceeding the memory ceiling (resident memory + the sandbox's tmpfs)
    OUTPUT = "output"      # killed for exceeding the output folder's quota
    INTERRUPTED = "interrupted"  # the tool was asked to stop while it ran
    SKIPPED = "skipped"    # never started: an earlier run of its batch failed
    ABORTED = "aborted"    # stopped by the spec's abort rule (its curve was doomed)


class Kind(enum.StrEnum):
    """What a ledger row is."""

    BASELINE = "baseline"        # the first measurement of the starting code
    EXPERIMENT = "experiment"    # one proposal of the agent
    NOISE = "noise"              # the champion again with another seed (the noise floor)
    FINAL = "final"              # the one-time score on the test split (never in a brief)
    ABLATION = "ablation"        # the champion, or the champion without one kept change, after the night (findings/)
    TRANSFER = "transfer"        # the baseline, the champion (or a variant) under a setting the loop did not tune on

    @property
    def finding(self) -> bool:
        """A measurement made after the search to explain it (``autoresearch ablate``/``transfer``): never a
        champion, never in a brief, not in results.tsv."""
        return self in (Kind.ABLATION, Kind.TRANSFER)


class DecisionRule(enum.StrEnum):
    """How a candidate is kept or discarded (``[decision] rule``; docs/decisions.md)."""

    SEQUENTIAL = "sequential"    # fold by fold and run by run against the measured seed noise (the default)
    NOISE = "noise"              # beat the champion by more than the measured noise
    GREEDY = "greedy"            # strictly better mean over folds (Karpathy's rule): no noise floor


class ExecutorKind(enum.StrEnum):
    """Where fold runs go (``[resources] executor``, ``--executor``)."""

    LOCAL = "local"              # on this machine, one after another or side by side in slots
    RAY = "ray"                  # each fold run a Ray task


def rerun_seed(base: int, index: int) -> int:
    """The seed of the ``index``-th re-run (index >= 1) of the same code: confirmation and noise-floor runs
    share one rule, so a confirmation run and a noise run of the same code never repeat each other's seed
    unless they are the same run."""
    if index < 1:
        raise ValueError("re-runs are numbered from 1")
    return base + 7919 * index
