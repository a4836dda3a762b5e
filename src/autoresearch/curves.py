"""Training curves from the lines a run prints: ``step 50/400  loss 3.12  lr 1.00e-04`` becomes
``{"step": 50, "total": 400, "loss": 3.12, "lr": 0.0001}``. One parser for everything that reads curves
(the dashboard, the early-abort rule, the brief)."""

from __future__ import annotations

import re as _re

_STEP_LINE = _re.compile(r"\bstep\s+(\d+)\s*/\s*(\d+)", _re.IGNORECASE)
# "loss 3.12", "loss=3.12", "loss: 3.12", "elapsed 12.3s": a name, then a number (a trailing s or % unit)
_NAMED_VALUE = _re.compile(r"([A-Za-z_][\w.\-]*?)(?:\s*[:=]\s*|\s+)"
                           r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:s|%)?(?![\w.])")
MAX_CURVE_POINTS = 400        # per log: enough for a plot, small enough to send every second


def parse_curve_line(line: str) -> dict | None:
    """One training line as a point: ``step 50/400  loss 3.12  lr 1.00e-04`` -> ``{"step": 50,
    "total": 400, "loss": 3.12, "lr": 0.0001}``; None for a line without ``step N/M``. The runner's own
    lines (starting with ``# ``) are not the training's and are skipped."""
    if line.startswith("# "):
        return None
    found = _STEP_LINE.search(line)
    if not found:
        return None
    point: dict = {"step": int(found.group(1)), "total": int(found.group(2))}
    for name, value in _NAMED_VALUE.findall(line[found.end():]):
        number = float(value)
        if name.lower() != "step" and number == number and abs(number) != float("inf"):
            point.setdefault(name, number)
    return point


def parse_curve(text: str, max_points: int = MAX_CURVE_POINTS) -> list[dict]:
    """Every step line of a log, thinned evenly to at most ``max_points`` (the last point always kept)."""
    points = [p for p in map(parse_curve_line, text.splitlines()) if p is not None]
    if len(points) <= max_points:
        return points
    stride = len(points) / max_points
    kept = [points[int(i * stride)] for i in range(max_points - 1)]
    return kept + [points[-1]]
