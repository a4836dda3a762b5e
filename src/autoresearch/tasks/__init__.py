"""Bundled tasks and what the runner needs to know about a task to run one fold of it.

A task's hooks say, for one run (a fold, or the final run on the test split), which environment variables
the script gets, which files it may read and which it must never see. Any repository whose
``[task] name`` is not a bundled task gets the generic hooks: the script is told its fold, seed, mode and
output folder, and the tool's whole state folder is hidden from it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from autoresearch.bytecode import bytecode_paths
from autoresearch.config import Config
from autoresearch.runner.executor import Mount

# Variables a child process may inherit from the tool's environment; everything else (API keys
# included) is dropped.
_INHERIT = ("PATH", "LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass(frozen=True)
class RunPlan:
    env: dict[str, str]
    readonly: tuple[Mount, ...]
    hidden: tuple[Path, ...]


class GenericHooks:
    """For any repository: the fold, seed, mode and output folder, nothing else."""

    def plan(self, config: Config, *, fold: int | None, mode: str, seed: int, out_dir: Path) -> RunPlan:
        return RunPlan(base_env(config, fold=fold, mode=mode, seed=seed, out_dir=out_dir), (), hidden(config))


class EclipHooks(GenericHooks):
    """eCLIP: fold k trains on every chunk but k and embeds fold k's blind query set.

    Only the files a run needs are mounted: the held-out chunk (which pairs images with captions),
    every key and the test split stay invisible; in final mode the run trains on all chunks and embeds
    the test query set, whose key stays hidden.
    """

    def plan(self, config: Config, *, fold: int | None, mode: str, seed: int, out_dir: Path) -> RunPlan:
        prepared = config.state_dir / "prepared"
        secret = config.state_dir / "secret"
        chunks = sorted(prepared.glob("chunk_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        if mode == "final":
            train, queries = chunks, secret / "queries_test.pt"
        else:
            train = [c for c in chunks if c.stem != f"chunk_{fold}"]
            queries = prepared / "queries" / f"fold_{fold}.pt"
        env = base_env(config, fold=fold, mode=mode, seed=seed, out_dir=out_dir)
        env.update({
            "AUTORESEARCH_DATA": str(prepared),
            "AUTORESEARCH_TRAIN": os.pathsep.join(str(c) for c in train),
            "AUTORESEARCH_QUERIES": str(queries),
        })
        readonly = [Mount(prepared / "meta.json"), Mount(prepared / "vocab.txt"), Mount(queries)]
        readonly += [Mount(c) for c in train]
        return RunPlan(env, tuple(readonly), hidden(config))


HOOKS: dict[str, GenericHooks] = {"eclip": EclipHooks()}


def hooks_for(config: Config) -> GenericHooks:
    return HOOKS.get(config.task.name, GenericHooks())


def hidden(config: Config) -> tuple[Path, ...]:
    """What a run must not see: the tool's state folder, and the repository's byte-code (a run compiles
    the repository's modules from source; see ``autoresearch.bytecode``)."""
    return (config.state_dir, *bytecode_paths(config.root))


def base_env(config: Config, *, fold: int | None, mode: str, seed: int, out_dir: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERIT if k in os.environ}
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
