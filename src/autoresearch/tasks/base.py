"""What the tool needs to know about a task, as one object: ``Task``.

A task says how a research repository of it is created (its template and any data preparation), what
one run of its script gets (environment, read-only files, hidden paths), how a run is scored (its metric
sources, the metrics they compute and which way each improves) and what agents must never read. The
generic layers (loop, runner, scoring, agents) only ever talk to this interface; a task lives in one
folder under ``autoresearch/tasks/`` and is found by name (see ``autoresearch.tasks``). A user's own
repository, whose ``[task] name`` is no bundled task, gets ``Task`` itself: its script is told its fold,
seed, mode and output folder, and the tool's whole state folder is hidden from it.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from autoresearch import provenance
from autoresearch.bytecode import bytecode_paths
from autoresearch.config import Config
from autoresearch.errors import UserError
from autoresearch.runner.process import INHERITED
from autoresearch.runner.spec import Mount
from autoresearch.scoring.sources import SOURCES, RunRecord, Score, json_file
from autoresearch.vocab import Direction

Scorer = Callable[[Config, RunRecord], Score]
Say = Callable[[str], None]
_NOT_COPIED = {"__pycache__"}


@dataclass(frozen=True)
class RunPlan:
    env: dict[str, str]
    readonly: tuple[Mount, ...]
    hidden: tuple[Path, ...]


class Task:
    """The generic task; bundled tasks subclass it."""

    name = "generic"
    summary = "any script that prints or writes its metric (Karpathy-style)"
    template: Path | None = None          # copied into a new repository by `autoresearch init`
    sources: Mapping[str, Scorer] = {}    # metric sources of this task, besides the generic json/regex
    metric_directions: Mapping[str, Direction] = {}   # metrics its own sources compute, and their direction
    final_metrics: tuple[str, ...] = ()   # side metrics printed after the one-time test

    # --- creating a repository ---------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """The `init` options this task understands, with their defaults."""
        return {}

    def write(self, dest: Path, *, say: Say = print, **options: Any) -> None:
        """Write the task's files into the empty folder ``dest`` (before the first commit)."""
        if self.template is None:
            raise UserError(f"task {self.name!r} has no template to create a repository from")
        for src in sorted(self.template.rglob("*")):
            rel = src.relative_to(self.template)
            if any(part in _NOT_COPIED for part in rel.parts) or rel == Path("__init__.py"):
                continue
            target = dest / rel
            if src.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)

    def prepare(self, root: Path, *, say: Say = print, again: bool = False, **options: Any) -> dict:
        """Prepare the task's data in the committed repository at ``root`` (``again``: in an existing
        repository, `autoresearch data prepare`); returns facts to print."""
        return {}

    def describe(self, facts: dict) -> str:
        """One line about what `init` made, for the terminal."""
        return ""

    def preset(self, config: Config, name: str) -> tuple[dict[str, Any], dict[str, float]]:
        """A size preset of the task for code of this repository: the constants it sets in the editable files
        and its ``[run]`` limits (``autoresearch transfer --preset``). A generic repository has none."""
        raise UserError(f"task {self.name!r} has no size presets",
                        hint="set the constants yourself with --set NAME=VALUE")

    # --- running and scoring ------------------------------------------------------------------------
    def plan(self, config: Config, *, fold: int | None, mode: str, seed: int, out_dir: Path) -> RunPlan:
        return RunPlan(base_env(config, fold=fold, mode=mode, seed=seed, out_dir=out_dir), (), hidden(config))

    def scorer(self, config: Config) -> Scorer:
        source = config.metric.source
        found = self.sources.get(source) or SOURCES.get(source)
        if found is None:
            known = ", ".join([*self.sources, *SOURCES])
            raise UserError(f"{config.path}: [metric] source = {source!r} is not known for task {self.name!r}",
                            hint=f"use one of {known}")
        return found

    def check(self, config: Config) -> None:
        """Setup problems visible before any run: an unknown source, a metric the source does not compute,
        a direction that contradicts the metric."""
        self.scorer(config)
        if config.metric.source == "json":
            json_file(config)   # the metric file must lie inside the run's output folder
        if config.metric.source not in self.sources:
            return
        wanted = self.metric_directions.get(config.metric.name)
        if wanted is None:
            raise UserError(f"{config.path}: [metric] name = {config.metric.name!r} is not computed by the "
                            f"{config.metric.source} source", hint=f"use one of {', '.join(self.metric_directions)}")
        if config.metric.direction != wanted:
            raise UserError(f"{config.path}: [metric] direction = {config.metric.direction!r} but "
                            f"{config.metric.name} should be {wanted}d", hint=f"set direction = \"{wanted}\"")

    def brief_facts(self, config: Config) -> list[str]:
        """Lines for the brief's "numbers that bound a change" that only the task knows (data sizes,
        what a random model scores), one fact a line; none for a generic script."""
        return []

    def agent_denied(self, config: Config) -> list[Path]:
        """Paths no agent may read: the tool's state (ledger, keys, run outputs) and the raw data the
        prepared sets were made from, wherever it lives (it pairs every image with its caption)."""
        return [config.state_dir, *provenance.private_paths(config.state_dir)]


def hidden(config: Config) -> tuple[Path, ...]:
    """What a run must not see: the tool's state folder, and the repository's byte-code (a run compiles
    the repository's modules from source; see ``autoresearch.bytecode``)."""
    return (config.state_dir, *bytecode_paths(config.root))


def base_env(config: Config, *, fold: int | None, mode: str, seed: int, out_dir: Path) -> dict[str, str]:
    """What every run is told. Only the variables in ``runner.process.INHERITED`` (device selection,
    thread counts, BLAS kernel) and PATH/LANG come from the tool's environment; API keys never do."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", *INHERITED) if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({
        "HOME": str(out_dir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "AUTORESEARCH_MODE": mode,
        "AUTORESEARCH_FOLD": "" if fold is None else str(fold),
        "AUTORESEARCH_SEED": str(seed),
        "AUTORESEARCH_OUT": str(out_dir),
        "AUTORESEARCH_TIME_BUDGET_S": str(config.run.time_budget_s),
    })
    return env


def command(config: Config) -> tuple[str, ...]:
    """The run command; a leading ``python`` means the interpreter the tool runs in, so the experiment
    sees the same installed packages."""
    cmd = config.run.command
    if cmd and cmd[0] in ("python", "python3"):
        return (sys.executable, *cmd[1:])
    return cmd
