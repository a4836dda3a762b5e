"""The value types of the runner: what to run (``RunSpec``), where it may look (``Mount``) and how it ended
(``RunOutcome``, ``ExitKind``). No behaviour here, so every part of the runner (process, sandbox,
executors) and the loop can import them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from autoresearch.vocab import ExitKind  # noqa: F401  (the runner's contract: how a run ended)

if TYPE_CHECKING:
    from autoresearch.runner.curves import AbortRule
    from autoresearch.runner.deadline import DeadlineRule


@dataclass(frozen=True)
class Mount:
    """A path made visible inside the sandbox at the same location."""

    path: Path
    writable: bool = False


@dataclass(frozen=True)
class RunSpec:
    """One process to run: the command, where, with what, for how long."""

    name: str                         # e.g. "fold0"
    command: tuple[str, ...]
    cwd: Path
    env: dict[str, str]
    out_dir: Path                     # made fresh and empty by the runner; the only writable place in a sandbox
    log_path: Path                    # stdout and stderr together
    timeout_s: float
    grace_s: float = 10.0
    memory_gb: float = 0.0            # 0 = no ceiling
    sandbox: bool = True
    readonly: tuple[Mount, ...] = ()  # extra read-only paths (prepared data)
    hidden: tuple[Path, ...] = ()     # paths inside cwd that must not be visible (keys, test split)
    abort: "AbortRule | None" = None  # stop early when the progress lines say the run is doomed
    deadline: "DeadlineRule | None" = None  # move the deadline for what other work took (runner/deadline.py)
    threads: int = 0                  # exact thread count ([resources] threads); 0 = chosen (runner/threads.py)
    cpus: float = 0.0                 # cores an executor gives the run (a slot's share); 0 = its CPU affinity
    tmp_gb: float = 0.0               # size of the sandbox's /tmp and of its /dev/shm; 0 = the kernel's default
    output_gb: float = 0.0            # quota of out_dir, enforced while the run runs; 0 = none


@dataclass
class RunOutcome:
    spec: RunSpec
    kind: ExitKind
    returncode: int | None
    seconds: float
    peak_rss_gb: float = 0.0
    reason: str = ""                  # human-readable, e.g. "killed at the 300 s deadline"
    extra: dict = field(default_factory=dict)
