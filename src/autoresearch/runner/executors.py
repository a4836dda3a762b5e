"""Choosing the executor from ``[resources]`` and the command line.

``local`` with the default resources is today's ``LocalExecutor`` (one run after another, nothing pinned);
with ``cpus``/``gpus`` per run, or several candidates in flight, it is ``LocalParallelExecutor`` (slots,
pinning). ``ray`` is ``RayExecutor`` (the optional extra ``autoresearch[ray]``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from autoresearch.config import Config
from autoresearch.errors import UserError
from autoresearch.runner.executor import LocalExecutor
from autoresearch.runner.local_parallel import LocalParallelExecutor, Slot, plan_slots
from autoresearch.runner.process import OnLine


def make_executor(config: Config, *, kind: str | None = None, address: str | None = None,
                  parallel: int | None = None, on_line: OnLine = None) -> tuple[Any, str]:
    """(executor, a few words saying where runs go). ``parallel`` candidates share the executor."""
    res = config.resources
    kind = kind or res.executor
    parallel = parallel or res.parallel
    if kind == "ray":
        from autoresearch.runner.ray_executor import RayExecutor

        ex = RayExecutor.from_config(config, address=address if address is not None else res.ray_address)
        return ex, ex.describe()
    if kind != "local":
        raise UserError(f"unknown executor {kind!r}", hint="use --executor local or --executor ray")
    slots = plan_slots(res)
    if len(slots) == 1 and not slots[0].env() and not slots[0].threads and parallel > 1:
        # No per-run resources given: the tool does not limit the machine; one run per candidate at a time.
        slots = [dataclasses.replace(slots[0], index=k) for k in range(parallel)]
    if len(slots) == 1 and slots[0] == Slot(0):
        return LocalExecutor(on_line=on_line), "local"
    ex = LocalParallelExecutor(slots, on_line=on_line)
    return ex, ex.describe()
