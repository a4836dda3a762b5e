"""What the loop tells its listeners while it works: one frozen dataclass per event.

The engine emits events; the terminal display, the tests and the dashboard listen. A listener is any
callable taking one event. ``Dispatcher`` routes each event type to a method named after it and refuses
to be built without a handler for every type it is given (so a new event, or a misspelt handler, is an
error when the listener is made, not a silently dropped message).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class AgentStarted:
    agent: str
    phase: str
    attempt: int


@dataclass(frozen=True)
class ExperimentStarted:
    number: int
    description: str
    phase: str


@dataclass(frozen=True)
class RunLine:
    spec: Any          # runner.spec.RunSpec
    line: str


@dataclass(frozen=True)
class FoldFinished:
    number: int
    fold: Any          # loop.trial.FoldResult


@dataclass(frozen=True)
class ExperimentFinished:
    row: Any           # loop.ledger.Experiment


@dataclass(frozen=True)
class Interrupted:
    number: int


@dataclass(frozen=True)
class Remeasure:
    noise: Any         # loop.decide.NoiseFloor
    champion: Any      # loop.ledger.Experiment


@dataclass(frozen=True)
class Paused:
    why: str


@dataclass(frozen=True)
class ContentionPause:
    """Runs keep being starved by other work on the machine: the loop waits before spending more budget."""

    message: str
    seconds: float


@dataclass(frozen=True)
class ContentionProbe:
    """The champion timed again during a contention pause; ``resumed`` when it was not starved."""

    message: str
    resumed: bool


@dataclass(frozen=True)
class Notice:
    """Something the person watching should read (a pause lifted, a note delivered to the agent)."""

    text: str


EVENTS: tuple[type, ...] = (AgentStarted, ExperimentStarted, RunLine, FoldFinished, ExperimentFinished,
                            Interrupted, Remeasure, Paused, ContentionPause, ContentionProbe, Notice)
Listener = Callable[[Any], None]


def handler_name(event_type: type) -> str:
    """``ExperimentStarted`` -> ``on_experiment_started``."""
    return "on_" + re.sub(r"(?<!^)(?=[A-Z])", "_", event_type.__name__).lower()


def ignore(event: Any) -> None:
    """The listener that listens to nothing."""


class Locked:
    """A listener that may be called from several threads (runs' lines, candidates in flight)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self._lock:
            self.listener(event)


class Dispatcher:
    """Base class of listeners: ``self(event)`` calls ``self.on_<event_name>(event)``.

    ``handles`` lists the event types the listener wants; each must have its method, checked at
    construction. Events of other types are ignored on purpose, and unknown objects are an error.
    """

    handles: tuple[type, ...] = EVENTS

    def __init__(self) -> None:
        missing = [handler_name(t) for t in self.handles if not callable(getattr(self, handler_name(t), None))]
        if missing:
            raise TypeError(f"{type(self).__name__} lacks handlers: {', '.join(missing)}")
        self._routes = {t: getattr(self, handler_name(t)) for t in self.handles}

    def __call__(self, event: Any) -> None:
        if type(event) not in EVENTS:
            raise TypeError(f"not a loop event: {event!r}")
        route = self._routes.get(type(event))
        if route is not None:
            route(event)
