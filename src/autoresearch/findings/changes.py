"""The kept changes of a night, read from the ledger and the champion's history in git.

A kept change is the diff of a kept experiment's result commit against its parent (the champion it was
measured against; ``parent_commit`` of its row, updated by the lifecycle when a candidate was re-applied
onto a newer champion), the scratchpad left out: the scratchpad is the agent's memory, not the research
result. The order is the order of keeping (``ended_at``, then number: the order ``Ledger.champion`` uses),
so change i's parent is change i−1's commit and the last change's commit is the champion. A crash fixed on
a later attempt is already inside the kept commit (the fix attempt started from the crashed candidate's
files), so the attempts it took are listed (``fixes``), never separate changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from autoresearch.errors import UserError
from autoresearch.hyperparams import MISSING, diff_constants, render_value, set_constants
from autoresearch.loop.gitops import Git
from autoresearch.loop.ledger import Experiment, Ledger
from autoresearch.vocab import Direction, Kind, Status


@dataclass(frozen=True)
class KeptChange:
    """One kept experiment as a change: what it touched and the evidence it was kept on."""

    number: int
    description: str
    parent: str                   # the champion it was measured against
    commit: str                   # its result commit (the champion after it)
    paths: tuple[str, ...]        # the files it changed, the scratchpad left out
    changed: str                  # "LR=0.001 (was 0.01)" or "train.py (code)", as the loop recorded it
    mean: float | None            # its metric, and the champion's before it
    prev: float | None
    gain: float | None            # how much better than its parent, in the metric's direction
    sd: float | None              # one standard deviation of that difference (the decision's sigma_d)
    threshold: float | None
    confirm_runs: list[list[float]]
    reason: str
    hypothesis: str
    phase_title: str
    fixes: tuple[int, ...] = ()   # crashed attempts of the same candidate folded into it
    kept_at: str | None = None    # when it was kept (the row's ended_at)

    @property
    def label(self) -> str:
        return f"#{self.number} {self.description}"


@dataclass
class History:
    baseline: Experiment
    champion: Experiment
    changes: list[KeptChange]
    scratchpad: str
    warnings: list[str] = field(default_factory=list)

    def change(self, number: int) -> KeptChange:
        for c in self.changes:
            if c.number == number:
                return c
        raise UserError(f"experiment {number} is not a kept change of this tag",
                        hint="the kept changes: " + ", ".join(str(c.number) for c in self.changes))


def history(ledger: Ledger, git: Git, *, tag: str, direction: Direction | str, scratchpad: str) -> History:
    """The baseline, the champion and the kept changes between them, in the order of keeping."""
    direction = Direction.parse(direction)
    rows = ledger.rows(tag=tag, kinds=(Kind.BASELINE, Kind.EXPERIMENT))
    baseline = next((r for r in rows if r.kind == Kind.BASELINE and r.status == Status.KEEP and r.commit), None)
    champion = ledger.champion(tag)
    if baseline is None or champion is None:
        raise UserError(f"tag {tag!r} has no measured baseline yet",
                        hint="run the loop first (`autoresearch run --tag ...`)")
    kept = sorted((r for r in rows if r.kind == Kind.EXPERIMENT and r.status == Status.KEEP and r.commit),
                  key=lambda r: (r.ended_at or "", r.number))
    by_number = {r.number: r for r in rows}
    changes = [_change(git, r, by_number, direction, scratchpad) for r in kept]
    out = History(baseline=baseline, champion=champion, changes=changes, scratchpad=scratchpad)
    expected = baseline.commit
    for c in changes:
        if c.parent != expected:
            out.warnings.append(f"experiment {c.number} was measured against {c.parent[:10]}, not the champion "
                                f"before it ({expected[:10]}): its diff is taken against its own parent")
        expected = c.commit
    if expected != champion.commit:
        out.warnings.append(f"the champion {champion.commit[:10]} is not the last kept change's commit {expected[:10]}")
    return out


def _change(git: Git, row: Experiment, rows: dict[int, Experiment], direction: Direction, pad: str) -> KeptChange:
    parent = row.parent_commit or ""
    paths = tuple(p for p in code_paths(git, parent, row.commit) if p != pad)
    numbers = row.decision.get("numbers") if isinstance(row.decision.get("numbers"), dict) else {}
    gain = None
    if _finite(row.metric_mean) and _finite(row.champion_metric):
        gain = direction.gain(row.metric_mean, row.champion_metric)
    fixes, n = [], row.number - 1
    while (row.attempt or 1) > 1 and n in rows and rows[n].kind == Kind.EXPERIMENT and (rows[n].attempt or 1) < (row.attempt or 1):
        fixes.append(n)
        if (rows[n].attempt or 1) == 1:
            break
        n -= 1
    return KeptChange(
        number=row.number, description=row.description or "", parent=parent, commit=row.commit, paths=paths,
        changed=row.changed or "", mean=row.metric_mean, prev=row.champion_metric, gain=gain,
        sd=numbers.get("sigma_d") if _finite(numbers.get("sigma_d")) else None,
        threshold=numbers.get("threshold") if _finite(numbers.get("threshold")) else None,
        confirm_runs=[list(r) for r in numbers.get("confirm_runs") or []], reason=row.reason or "",
        hypothesis=row.hypothesis or "", phase_title=row.phase_title or "", fixes=tuple(sorted(fixes)),
        kept_at=row.ended_at)


def code_paths(git: Git, before: str, after: str) -> list[str]:
    """The files that differ between two commits (added, changed, removed)."""
    if not before or not after:
        return []
    out = git.raw("diff", "--no-ext-diff", "--no-textconv", "--name-only", "-z", before, after)
    return [p for p in out.decode("utf-8", "surrogateescape").split("\0") if p]


@dataclass(frozen=True)
class Touch:
    """What a change did: constants set (name -> (old, new)) and files changed beyond their constants."""

    constants: dict
    code: tuple[str, ...]

    @property
    def key(self) -> str:
        """How ``summary.md`` groups attempts: ``LR``, ``LR, WIDTH``, or ``code: train.py``."""
        parts = []
        if self.constants:
            parts.append(", ".join(sorted(self.constants)))
        if self.code:
            parts.append("code: " + ", ".join(self.code))
        return " + ".join(parts) or "nothing"

    @property
    def values(self) -> str:
        return ", ".join(f"{k}={_render(v[1])}" for k, v in self.constants.items())


def touched(git: Git, before: str, after: str, pad: str) -> Touch:
    """The constants a change set and the files it changed otherwise (the scratchpad left out)."""
    constants, code = {}, []
    for path in code_paths(git, before, after):
        if path == pad:
            continue
        old, new = git.show(before, path), git.show(after, path)
        if path.endswith(".py") and old is not None and new is not None:
            try:
                diffs = diff_constants(old, new)
                values = {n: v for n, o, v in diffs if o is not MISSING and v is not MISSING}
                if len(values) == len(diffs) and values and set_constants(old, values) == new:
                    constants.update({n: (o, v) for n, o, v in diffs})
                    continue
                constants.update({n: (o, v) for n, o, v in diffs})
            except (SyntaxError, ValueError, KeyError):
                pass
        code.append(path)
    return Touch(constants, tuple(code))


def _render(value) -> str:
    if value is MISSING:
        return "(none)"
    try:
        return render_value(value)
    except ValueError:
        return repr(value)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
