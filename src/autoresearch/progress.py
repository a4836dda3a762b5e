"""Progress on the terminal while long work runs: the loop's events and the training's own lines.

The engine emits typed events (``autoresearch.events``); this listener turns them into Rich output. It
never decides. Text that came from an agent or a run goes through ``_t``: its control characters and
escape sequences made visible (``text.shown``, so an agent cannot move the cursor, erase or forge lines,
or set the window title) and its square brackets escaped (so they are shown, not taken for markup).
"""

from __future__ import annotations

import math
import re
import time

from rich.console import Console
from rich.markup import escape

from autoresearch import events as ev
from autoresearch.text import shown

from autoresearch.vocab import Status

_STEP = re.compile(r"step\s+(\d+)\s*/\s*(\d+)", re.IGNORECASE)
_STATUS_STYLE = {Status.KEEP: "bold green", Status.DISCARD: "yellow", Status.CRASH: "bold red",
                 Status.TIMEOUT: "bold red", Status.INVALID: "magenta", Status.INTERRUPTED: "dim",
                 Status.ABORTED: "red", Status.CONTENTION: "dim yellow", Status.AGENT_ERROR: "dim red",
                 Status.STALE: "dim"}


def _t(value: object, limit: int | None = None) -> str:
    """Agent or run text for a Rich markup string: on one line, controls visible, brackets escaped."""
    return escape(shown(value, limit=limit))


def fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


class ConsoleReporter(ev.Dispatcher):
    """Prints one line per loop event and keeps a live status line with the training's last step."""

    def __init__(self, console: Console, *, metric: str = "metric", timeout_s: float | None = None) -> None:
        super().__init__()
        self.console = console
        self.metric = metric
        self.timeout_s = timeout_s
        self._status = None
        self._fold_started = time.monotonic()
        self._number: int | None = None

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _live(self, text: str) -> None:
        if self._status is None:
            self._status = self.console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def on_agent_started(self, e: ev.AgentStarted) -> None:
        extra = f", fixing a crash (attempt {e.attempt})" if e.attempt > 1 else ""
        self._live(f"[cyan]agent {_t(e.agent)} is proposing a change[/] (phase {_t(e.phase)}{extra})")

    def on_experiment_started(self, e: ev.ExperimentStarted) -> None:
        self.close()
        self._number = e.number
        self._fold_started = time.monotonic()
        self.console.print(f"[bold]experiment {e.number}[/] [dim]({_t(e.phase)})[/] {_t(e.description)}")

    def on_run_line(self, e: ev.RunLine) -> None:
        if not _STEP.search(e.line):
            return
        elapsed = time.monotonic() - self._fold_started
        budget = f" / {self.timeout_s:.0f} s limit" if self.timeout_s else ""
        self._live(f"  {_t(e.spec.name)}: {_t(e.line.strip(), limit=90)}  [dim]{elapsed:.0f} s{budget}[/]")

    def on_fold_finished(self, e: ev.FoldFinished) -> None:
        self.close()
        fold = e.fold
        o = fold.outcome
        value = fold.score.value
        text = (f"{self.metric} {fmt(value)}" if math.isfinite(value)
                else f"[red]{_t(fold.score.reason or o.reason)}[/]")
        self.console.print(f"  {_t(o.spec.name)}: {text}  [dim]{o.seconds:.0f} s, {o.peak_rss_gb:.1f} GB[/]")
        self._fold_started = time.monotonic()

    def on_experiment_finished(self, e: ev.ExperimentFinished) -> None:
        self.close()
        row = e.row
        style = _STATUS_STYLE.get(row.status, "")
        delta = "" if row.delta is None else f" (delta {row.delta:+.2f})"
        reason = f" — {_t(row.reason)}" if row.reason else ""
        status = f"[{style}]{row.status}[/]" if style else _t(row.status)
        self.console.print(f"  → {status}: {self.metric} {fmt(row.metric_mean)} ± "
                           f"{fmt(row.metric_std)}{delta}{reason}")

    def on_interrupted(self, e: ev.Interrupted) -> None:
        self.console.print(f"[dim]experiment {e.number} was cut off by an earlier stop; recorded as interrupted[/]")

    def on_remeasure(self, e: ev.Remeasure) -> None:
        self.close()
        self.console.print(f"[dim]the champion moved far from where its noise was measured "
                           f"(σ {e.noise.sigma:.3g}); measuring the noise floor again[/]")

    def on_paused(self, e: ev.Paused) -> None:
        self.close()
        self.console.print(f"[bold yellow]paused:[/] {_t(e.why)}")

    def on_contention_pause(self, e: ev.ContentionPause) -> None:
        self.close()
        self.console.print(f"[bold yellow]paused:[/] {_t(e.message)}")

    def on_contention_probe(self, e: ev.ContentionProbe) -> None:
        self.close()
        self.console.print(f"[{'green' if e.resumed else 'yellow'}]{_t(e.message)}[/]")

    def on_notice(self, e: ev.Notice) -> None:
        self.close()
        self.console.print(f"[dim]{_t(e.text)}[/]")
