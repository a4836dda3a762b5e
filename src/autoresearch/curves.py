"""Training curves for display: ``step 50/400  loss 3.12  lr 1.00e-04`` becomes ``{"step": 50, "total": 400,
"loss": 3.12, "lr": 0.0001}``. The line parser is the runner's (``runner.curves.parse_progress``, which the
early-abort rule uses); this module only shapes its points for JSON, leaving out NaN and infinite values."""

from __future__ import annotations

import math

from autoresearch.runner.curves import parse_progress

MAX_CURVE_POINTS = 400        # per log: enough for a plot, small enough to send every second


def parse_curve_line(line: str) -> dict | None:
    """One training line as a point, or None for a line without ``step N/M``. The runner's own lines
    (starting with ``# ``) are not the training's and are skipped."""
    if line.startswith("# "):
        return None
    point = parse_progress(line)
    if point is None:
        return None
    return {"step": point.step, "total": point.total,
            **{k: v for k, v in point.values.items() if math.isfinite(v)}}


def parse_curve(text: str, max_points: int = MAX_CURVE_POINTS) -> list[dict]:
    """Every step line of a log, thinned evenly to at most ``max_points`` (the last point always kept)."""
    points = [p for p in map(parse_curve_line, text.splitlines()) if p is not None]
    if len(points) <= max_points:
        return points
    stride = len(points) / max_points
    kept = [points[int(i * stride)] for i in range(max_points - 1)]
    return kept + [points[-1]]
