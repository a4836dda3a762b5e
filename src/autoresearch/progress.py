"""Progress on the terminal while long work runs: the loop's events and the training's own lines.

The engine calls ``reporter(kind, **data)``; this module turns that into Rich output. It never decides.
"""

from __future__ import annotations

import math
import re
import time

from rich.console import Console

from autoresearch.loop.status import ABORTED, CONTENTION

_STEP = re.compile(r"step\s+(\d+)\s*/\s*(\d+)", re.IGNORECASE)
_STATUS_STYLE = {"keep": "bold green", "discard": "yellow", "crash": "bold red", "timeout": "bold red",
                 "invalid": "magenta", "interrupted": "dim", ABORTED: "red", CONTENTION: "dim yellow"}


def fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


class ConsoleReporter:
    """Prints one line per loop event and keeps a live status line with the training's last step."""

    def __init__(self, console: Console, *, metric: str = "metric", timeout_s: float | None = None) -> None:
        self.console = console
        self.metric = metric
        self.timeout_s = timeout_s
        self._status = None
        self._fold_started = time.monotonic()
        self._number: int | None = None

    def __call__(self, kind: str, **data) -> None:
        handler = getattr(self, f"on_{kind}", None)
        if handler:
            handler(**data)

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

    def on_agent_start(self, agent: str, phase: str, attempt: int) -> None:
        extra = f", fixing a crash (attempt {attempt})" if attempt > 1 else ""
        self._live(f"[cyan]agent {agent} is proposing a change[/] (phase {phase}{extra})")

    def on_experiment_start(self, number: int, description: str, phase: str) -> None:
        self.close()
        self._number = number
        self._fold_started = time.monotonic()
        self.console.print(f"[bold]experiment {number}[/] [dim]({phase})[/] {description}")

    def on_line(self, spec, line: str) -> None:
        m = _STEP.search(line)
        if not m:
            return
        elapsed = time.monotonic() - self._fold_started
        budget = f" / {self.timeout_s:.0f} s limit" if self.timeout_s else ""
        self._live(f"  {spec.name}: {line.strip()[:90]}  [dim]{elapsed:.0f} s{budget}[/]")

    def on_fold_done(self, number: int, fold) -> None:
        self.close()
        o = fold.outcome
        value = fold.score.value
        text = f"{self.metric} {fmt(value)}" if math.isfinite(value) else f"[red]{fold.score.reason or o.reason}[/]"
        self.console.print(f"  {o.spec.name}: {text}  [dim]{o.seconds:.0f} s, {o.peak_rss_gb:.1f} GB[/]")
        self._fold_started = time.monotonic()

    def on_experiment_done(self, row) -> None:
        self.close()
        style = _STATUS_STYLE.get(row.status, "")
        delta = "" if row.delta is None else f" (delta {row.delta:+.2f})"
        reason = f" — {row.reason}" if row.reason else ""
        self.console.print(f"  → [{style}]{row.status}[/]: {self.metric} {fmt(row.metric_mean)} ± "
                           f"{fmt(row.metric_std)}{delta}{reason}")

    def on_rerun(self, number: int, description: str) -> None:
        self.close()
        self.console.print(f"[dim yellow]experiment {number} was starved by other work on the machine; "
                           f"running the same candidate again[/]")

    def on_contention_pause(self, message: str, seconds: float) -> None:
        self.close()
        self.console.print(f"[bold yellow]paused:[/] {message}")

    def on_contention_probe(self, message: str, resumed: bool) -> None:
        self.close()
        self.console.print(f"[{'green' if resumed else 'yellow'}]{message}[/]")

    def on_interrupted(self, number: int) -> None:
        self.console.print(f"[dim]experiment {number} was cut off by an earlier stop; recorded as interrupted[/]")
