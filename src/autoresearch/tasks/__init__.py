"""The bundled tasks, found by name: every subpackage of ``autoresearch.tasks`` that defines ``TASK``.

``get(name)`` returns that task, or the generic ``Task`` for a user's own repository;
``for_config(config)`` is ``get(config.task.name)``. Nothing here names a task: adding one is adding a
folder.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from autoresearch.config import Config
from autoresearch.errors import UserError
from autoresearch.tasks.base import RunPlan, Task, base_env, command, hidden  # noqa: F401  (the public face)


@functools.cache
def bundled() -> dict[str, Task]:
    """name -> task, for every bundled task."""
    found: dict[str, Task] = {}
    for info in pkgutil.iter_modules(__path__):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        task = getattr(module, "TASK", None)
        if isinstance(task, Task):
            found[task.name] = task
    return found


def get(name: str) -> Task:
    return bundled().get(name) or Task()


def for_config(config: Config) -> Task:
    return get(config.task.name)


def creatable(name: str) -> Task:
    """A bundled task with a template, or a UserError naming the ones there are."""
    task = bundled().get(name)
    if task is None or task.template is None:
        names = ", ".join(sorted(n for n, t in bundled().items() if t.template is not None))
        raise UserError(f"unknown task {name!r}", hint=f"the bundled tasks are: {names}")
    return task
