"""Training curves from progress lines, and the rule that stops a run whose curve is doomed.

A progress line is any line with ``step N/M`` followed by ``name value`` pairs, as the eCLIP and toy
scripts print them::

    step   50/400  loss 3.1234  temperature 14.286  lr 2.98e-04  elapsed 12.3s
    step 3/10 loss=nan acc: 0.5

Names are identifiers; values are numbers (``nan`` and ``inf`` included), an optional unit such as ``s``
or ``%`` is dropped. Everything else a run prints is ignored here.

The abort rule (``AbortRule``, documented in ``docs/early-abort.md``) is data, so any executor can apply
it; ``AbortWatch`` applies it line by line while the run prints:

- a non-finite ``key`` value (NaN or inf loss) stops the run at once;
- past ``min_fraction`` of the run's steps, a ``key`` value above ``ratio`` times the champion's at the
  same step (linear interpolation between the champion's logged steps; never extrapolated beyond them),
  on ``patience`` progress lines in a row, stops the run. Values that are not positive are not compared
  (a ratio of losses means nothing there);
- past the same point, a run whose progress since its first progress line is under ``min_progress`` of
  the champion's progress over the same steps (``(v0 - v) / (c(s0) - c(s))``: 0 for a run stuck where it
  started, 1 for the champion's pace) is a strike too. It is immune to a change that shifts the loss's
  level (label smoothing, a larger batch): it compares how far each run came, not where it stands.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

_STEP = re.compile(r"\bstep\s*[:=]?\s*(\d+)\s*/\s*(\d+)", re.IGNORECASE)
_NUMBER = r"[-+]?(?:nan|inf(?:inity)?|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
_PAIR = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*(?:[:=]\s*|\s+)(" + _NUMBER + r")[A-Za-z%]*(?=[\s,;|)]|$)",
                   re.IGNORECASE)
MAX_POINTS = 400   # a curve longer than this keeps every other point (the last one always)


@dataclass(frozen=True)
class Point:
    step: int
    total: int
    values: dict[str, float]

    def to_dict(self) -> dict:
        return {"step": self.step, "total": self.total, **self.values}


def parse_progress(line: str) -> Point | None:
    """The progress point in ``line``, or None when it is not a progress line."""
    m = _STEP.search(line)
    if not m:
        return None
    values: dict[str, float] = {}
    for name, raw in _PAIR.findall(line[m.end():]):
        if name.lower() != "step":
            values.setdefault(name, float(raw))
    return Point(int(m.group(1)), int(m.group(2)), values)


def points_from_dicts(items) -> list[Point]:
    """Points back from their stored form (``Point.to_dict``; a null value is NaN); bad items are skipped."""
    out = []
    for d in items or ():
        if not isinstance(d, dict) or not isinstance(d.get("step"), int) or not isinstance(d.get("total"), int):
            continue
        values = {k: math.nan if v is None else float(v) for k, v in d.items()
                  if k not in ("step", "total") and (v is None or isinstance(v, (int, float)))}
        out.append(Point(d["step"], d["total"], values))
    return out


def curve_from_log(path: Path | str) -> list[Point]:
    """Every progress point of a run's log (the runner's own ``#`` lines are skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    points = [parse_progress(line) for line in text.splitlines() if not line.startswith("# ")]
    return thin([p for p in points if p is not None])


def thin(points: list[Point]) -> list[Point]:
    while len(points) > MAX_POINTS:
        points = points[:-1:2] + [points[-1]]
    return points


@dataclass(frozen=True)
class AbortRule:
    """Stop a run early; ``reference`` is the champion's curve for the same fold ((step, value) pairs)."""

    reference: tuple[tuple[int, float], ...] = ()
    key: str = "loss"
    ratio: float = 2.0
    patience: int = 3
    min_fraction: float = 0.25
    min_progress: float = 0.0   # 0: off

    @classmethod
    def against(cls, points: list[Point], **settings) -> "AbortRule":
        """The rule with ``points`` (the champion's curve) as the reference."""
        key = settings.get("key", cls.key)
        finite = {p.step: p.values[key] for p in points if key in p.values and math.isfinite(p.values[key])}
        ref = sorted(finite.items())
        return cls(reference=tuple(ref), **settings)

    def champion_at(self, step: int) -> float | None:
        """The champion's value at ``step``, interpolated between its logged steps; None outside them."""
        ref = self.reference
        if not ref or step < ref[0][0] or step > ref[-1][0]:
            return None
        for (s0, v0), (s1, v1) in zip(ref, ref[1:]):
            if s0 <= step <= s1:
                return v0 if s1 == s0 else v0 + (v1 - v0) * (step - s0) / (s1 - s0)
        return ref[-1][1] if step == ref[-1][0] else None


@dataclass
class AbortWatch:
    """Applies an ``AbortRule`` to a run's progress points as they come; ``feed`` returns a reason to stop."""

    rule: AbortRule
    strikes: int = 0
    reason: str = ""
    compared: list[dict] = field(default_factory=list)   # the comparisons behind the verdict
    start: tuple[float, float] | None = None              # (the run's first value, the champion's at that step)

    def feed(self, point: Point) -> str | None:
        rule = self.rule
        value = point.values.get(rule.key)
        if value is None:
            return None
        where = f"step {point.step}/{point.total}"
        if not math.isfinite(value):
            self.reason = f"{rule.key} is {value} at {where}"
            return self.reason
        champ = rule.champion_at(point.step)
        if champ is None:
            return None
        if self.start is None:                # where progress is counted from: the first comparable line
            self.start = (value, champ)
        if point.total <= 0 or point.step < rule.min_fraction * point.total:
            return None
        row: dict = {"step": point.step, "value": value, "champion": round(champ, 6)}
        why = []
        if champ > 0 and value > 0:
            row["ratio"] = round(value / champ, 4)
            if row["ratio"] > rule.ratio:
                why.append(f"{rule.key} {value:.4g} at {where} is {row['ratio']:.2f}x the champion's {champ:.4g} "
                           f"at the same step (rule: above {rule.ratio:g}x)")
        progress = self._progress(value, champ)
        if progress is not None:
            row["progress"] = round(progress, 4)
            if progress < rule.min_progress:
                v0, c0 = self.start or (value, champ)
                why.append(f"{rule.key} went from {v0:.4g} to {value:.4g} by {where}, {progress:.2f} of the "
                           f"champion's progress over the same steps ({c0:.4g} to {champ:.4g}; rule: under "
                           f"{rule.min_progress:g})")
        if "ratio" not in row and "progress" not in row:
            return None                       # nothing comparable on this line
        self.compared.append(row)
        self.strikes = self.strikes + 1 if why else 0
        if self.strikes >= rule.patience:
            self.reason = (f"{'; and '.join(why)}; {self.strikes} progress lines in a row (rule: {rule.patience} lines in a "
                           f"row, from {rule.min_fraction:.0%} of the steps)")
            return self.reason
        return None

    def _progress(self, value: float, champ: float) -> float | None:
        """The run's progress since its first comparable line over the champion's over the same steps; None
        when off, or while the champion has come less than 1% of its starting value's size."""
        if self.rule.min_progress <= 0 or self.start is None:
            return None
        v0, c0 = self.start
        came = c0 - champ
        if came <= 0.01 * max(abs(c0), 1e-12):
            return None
        return (v0 - value) / came
