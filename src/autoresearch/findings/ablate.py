"""``autoresearch ablate``: which kept changes still matter in the champion.

For each kept change, the champion without it (``variants.without``) and the champion itself are run with
the same fresh seeds on the same folds (``measure``); the change's contribution is the champion's paired
gain over that variant (``stats.paired``), in the metric's own direction: positive when the change helps.
Beside it stands the order-of-keeping path: the gain each change had when it was kept, against the champion
of its moment. The two differ when changes interact: a change a later one made redundant shows a large
gain at its time and none now (``no longer matters``: simpler code at no cost).

The study's plan (which variants, how each was built, which changes are entangled) is a ledger event
``ablation``; the table is derived from that event and the rows, so an interrupted ablation shows what it
has, and a second run measures only what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autoresearch.findings import stats
from autoresearch.findings.changes import History, KeptChange
from autoresearch.findings.measure import Bench, failure, measure, recorded, runs
from autoresearch.findings.variants import Variant, normalised, tree_of, without
from autoresearch.loop.gitops import Git
from autoresearch.loop.ledger import Ledger
from autoresearch.vocab import Direction, Kind

EVENT = "ablation"


@dataclass
class Line:
    """One kept change in the ablation table."""

    change: KeptChange
    how: str                          # how its variant was built, or "entangled"
    why: str = ""
    contribution: stats.Paired | None = None
    verdict: str = "not measured yet"
    rows: list[int] = field(default_factory=list)   # the ledger rows of its variant

    def to_dict(self) -> dict:
        c = self.change
        return {"number": c.number, "description": c.description, "changed": c.changed, "kept_gain": c.gain,
                "kept_sd": c.sd, "how": self.how, "why": self.why, "verdict": self.verdict, "rows": self.rows,
                "contribution": self.contribution.to_dict() if self.contribution else None}


@dataclass
class Ablation:
    champion: int                     # the champion's experiment number
    commit: str
    seeds: list[int]
    lines: list[Line]
    champion_mean: float | None       # the champion's mean over the ablation's runs
    champion_rows: list[int]
    metric: str
    direction: Direction
    rule: str                         # the verdict's rule, in words

    def to_dict(self) -> dict:
        return {"champion": self.champion, "commit": self.commit, "seeds": self.seeds, "metric": self.metric,
                "direction": self.direction, "champion_mean": self.champion_mean, "champion_rows": self.champion_rows,
                "rule": self.rule, "lines": [line.to_dict() for line in self.lines]}


def plan(git: Git, hist: History) -> list[Variant]:
    """The champion without each kept change, in the order of keeping."""
    return [without(git, hist, c) for c in hist.changes]


def run(bench: Bench, hist: History, seeds: list[int], *, only: list[int] | None = None) -> None:
    """Measure the champion and each variant with ``seeds``; record the plan first (an ``ablation`` event)."""
    changes = [c for c in hist.changes if only is None or c.number in only]
    if only:
        for n in only:
            hist.change(n)      # a UserError for a number that is not a kept change
    variants = [without(bench.git, hist, c) for c in changes]
    champion = normalised(bench.git, hist.champion.commit, hist)
    bench.ledger.event(EVENT, number=hist.champion.number, tag=bench.tag, champion=hist.champion.commit,
                       champion_variant=champion, seeds=seeds, setting=bench.setting,
                       variants=[{"change": v.change, "commit": v.commit, "how": v.how, "why": v.why}
                                 for v in variants])
    measure(bench, champion, seeds, kind=Kind.ABLATION, source=hist.champion.commit,
            description=f"ablation: champion {hist.champion.number} again",
            meta={"study": EVENT, "variant": "champion", "champion": hist.champion.commit})
    for v in variants:
        if v.commit is None:
            continue
        measure(bench, v.commit, seeds, kind=Kind.ABLATION, source=hist.champion.commit,
                description=f"ablation: champion {hist.champion.number} without experiment {v.change}",
                meta={"study": EVENT, "variant": v.name, "change": v.change, "champion": hist.champion.commit})


def table(ledger: Ledger, git: Git, hist: History, *, tag: str, metric: str, direction: Direction | str,
          k: float, min_delta: float) -> Ablation | None:
    """The ablation of the current champion, from the latest plan recorded for it and the rows; None when
    the champion has not been ablated."""
    plans = [e for e in ledger.events(EVENT) if e.payload.get("tag") == tag
             and e.payload.get("champion") == hist.champion.commit and not e.payload.get("setting")]
    if not plans:
        return None
    merged: dict[int, dict] = {}
    for e in plans:                   # a later plan (say, --only 7) adds to or replaces an earlier one's lines
        for v in e.payload.get("variants") or []:
            merged[v["change"]] = v
    seeds = list(plans[-1].payload.get("seeds") or [])
    champ_commit = plans[-1].payload.get("champion_variant") or hist.champion.commit
    champ_rows = recorded(ledger, tag, tree_of(git, champ_commit), "")
    champ_runs = runs(champ_rows, seeds)
    direction = Direction.parse(direction)
    lines = []
    for change in hist.changes:
        v = merged.get(change.number)
        if v is None:
            continue
        line = Line(change=change, how=v.get("how", ""), why=v.get("why", ""))
        if v.get("commit") is None:
            line.verdict = "entangled: not measured"
            lines.append(line)
            continue
        rows = recorded(ledger, tag, tree_of(git, v["commit"]), "")
        line.rows = sorted(r.number for s, r in rows.items() if s in seeds)
        failed = failure(rows, seeds)
        if failed:
            line.verdict = f"needed: without it the code fails ({failed})"
        elif (p := stats.paired(champ_runs, runs(rows, seeds), direction)) is not None:
            line.contribution = p
            line.verdict = stats.verdict(p, k=k, min_delta=min_delta)
        lines.append(line)
    values = [v for folds in champ_runs.values() for v in folds]
    return Ablation(champion=hist.champion.number, commit=hist.champion.commit, seeds=seeds, lines=lines,
                    champion_mean=sum(values) / len(values) if values else None,
                    champion_rows=sorted(r.number for s, r in champ_rows.items() if s in seeds), metric=metric,
                    direction=str(direction),
                    rule=f"a contribution beyond max(min_delta {min_delta:g}, {k:g} × its standard error) matters; "
                         f"within it, the change no longer matters (candidate for removal)")


def describe(a: Ablation) -> list[dict[str, Any]]:
    """The table as printable cells (the CLI, summary.md and the report share it)."""
    out = []
    for line in a.lines:
        c = line.change
        kept = "—" if c.gain is None else f"{c.gain:+.4g}" + (f" ± {c.sd:.3g}" if c.sd is not None else "")
        out.append({"change": f"#{c.number} {c.description}", "changed": c.changed or "", "kept": kept,
                    "now": line.contribution.text() if line.contribution else "—", "verdict": line.verdict,
                    "how": line.how + (f" ({line.why})" if line.why else "")})
    return out
