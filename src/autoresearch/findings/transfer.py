"""``autoresearch transfer``: does the night's gain hold under a setting the loop did not tune on?

A setting is any mix of: fresh seeds (always; ``--seeds N``), constants overridden in every variant
(``--set STEPS=800``, written with ``hyperparams.set_constants``), a size preset of the task (its constants
and its ``[run]`` limits; the prepared data must match it) and another prepared data set (``--data DIR``:
another research repository of the same task, whose prepared data and hidden keys score the runs). The
baseline and the champion, and with ``--each`` the champion without each kept change, are run under it with
the same seeds on the same folds; the gain is the champion's paired gain over the baseline there, set beside
the gain the loop measured (``holds``, ``not shown (within the noise)`` or ``reversed``).

The plan is a ledger event ``transfer`` (one per setting and champion); the tables are derived from it and
the rows, so an interrupted transfer resumes, and a setting measured twice reuses its runs.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoresearch import config as config_mod
from autoresearch.config import Config
from autoresearch.errors import UserError
from autoresearch.findings import stats
from autoresearch.findings.changes import History
from autoresearch.findings.measure import Bench, failure, measure, recorded, runs
from autoresearch.findings.variants import normalised, tree_of, with_constants, without
from autoresearch.loop.gitops import Git
from autoresearch.loop.ledger import Ledger
from autoresearch.vocab import Direction, Kind

EVENT = "transfer"


@dataclass(frozen=True)
class Setting:
    overrides: dict = field(default_factory=dict)    # NAME -> value, set in every variant
    preset: str | None = None
    data: str | None = None                          # another repository's prepared data (its root)

    @property
    def key(self) -> str:
        """What identifies the setting in the ledger ('' for the loop's own, with fresh seeds)."""
        parts = [f"{k}={v!r}" for k, v in sorted(self.overrides.items())]
        parts += [f"preset={self.preset}"] if self.preset else []
        parts += [f"data={self.data}"] if self.data else []
        return "; ".join(parts)

    @property
    def words(self) -> str:
        return self.key or "the loop's own setting, fresh seeds"


def parse_overrides(items: list[str]) -> dict:
    """``["STEPS=800", "LR=3e-4"]`` -> ``{"STEPS": 800, "LR": 0.0003}``; a value that is no Python literal
    is taken as a string."""
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier() or name.upper() != name:
            raise UserError(f"--set {item!r}: expected NAME=VALUE with an UPPER_CASE constant name",
                            hint="e.g. --set STEPS=800")
        try:
            out[name] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            out[name] = text.strip()
    return out


def configure(config: Config, task: Any, *, overrides: dict, preset: str | None, data: Path | None) -> tuple[Config, Setting, dict]:
    """The configuration the runs use under a setting, the setting, and every constant it sets (the
    preset's, then ``overrides``)."""
    constants: dict = {}
    run_cfg = config
    if data is not None:
        other = config_mod.load(data)
        if other.task.name != config.task.name or other.metric.name != config.metric.name:
            raise UserError(f"{data} is a {other.task.name!r} repository scoring {other.metric.name!r}; this one is "
                            f"{config.task.name!r} scoring {config.metric.name!r}",
                            hint="give --data a research repository of the same task (e.g. `autoresearch init "
                                 f"{config.task.name} DIR ...` on the other data)")
        if not (other.state_dir / "prepared").is_dir():
            raise UserError(f"{data} has no prepared data", hint=f"run `autoresearch data prepare -C {data}` first")
        run_cfg = dataclasses.replace(run_cfg, root=other.root, run=dataclasses.replace(run_cfg.run, folds=other.run.folds))
    if preset:
        values, limits = task.preset(run_cfg, preset)
        constants.update(values)
        run_cfg = dataclasses.replace(run_cfg, run=dataclasses.replace(run_cfg.run, **limits))
    constants.update(overrides)
    setting = Setting(overrides=dict(overrides), preset=preset, data=str(run_cfg.root) if data is not None else None)
    return run_cfg, setting, constants


@dataclass
class Line:
    name: str                       # "baseline", "champion", "without #7"
    change: int | None
    rows: list[int] = field(default_factory=list)
    mean: float | None = None       # mean over its runs under the setting
    failed: str = ""
    vs: stats.Paired | None = None  # for "without #n": the champion's gain over it (the change's contribution)
    verdict: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "change": self.change, "rows": self.rows, "mean": self.mean, "failed": self.failed,
                "verdict": self.verdict, "contribution": self.vs.to_dict() if self.vs else None}


@dataclass
class Transfer:
    setting: str                    # its key ('' = the loop's own)
    words: str
    seeds: list[int]
    gain: stats.Paired | None       # the champion's paired gain over the baseline under the setting
    tuned_gain: float | None        # the same gain as the loop measured it (champion vs baseline)
    verdict: str
    lines: list[Line]
    warnings: list[str]

    def to_dict(self) -> dict:
        return {"setting": self.setting, "words": self.words, "seeds": self.seeds, "tuned_gain": self.tuned_gain,
                "gain": self.gain.to_dict() if self.gain else None, "verdict": self.verdict,
                "lines": [x.to_dict() for x in self.lines], "warnings": self.warnings}


def run(bench: Bench, hist: History, setting: Setting, constants: dict, seeds: list[int], *, editable: list[str],
        each: bool = False) -> None:
    """Measure the baseline, the champion (and with ``each`` the champion without each kept change) under
    the setting; the plan is recorded first (a ``transfer`` event)."""
    git = bench.git
    sources = [("baseline", hist.baseline.commit, None), ("champion", hist.champion.commit, None)]
    warnings = list(hist.warnings)
    if each:
        for c in hist.changes:
            v = without(git, hist, c)
            if v.commit is None:
                warnings.append(f"#{c.number} is entangled ({v.why}): not measured without it")
            else:
                sources.append((v.name, v.commit, c.number))
    for c in hist.changes:
        clash = sorted(set(constants) & set(_constants_of(c.changed)))
        if clash:
            warnings.append(f"the setting overrides {', '.join(clash)}, which kept change #{c.number} set "
                            f"({c.changed}): its effect is replaced here")
    variants = []
    for name, source, change in sources:
        commit, _ = with_constants(git, normalised(git, source, hist), constants, editable)
        variants.append({"name": name, "source": source, "commit": commit, "change": change})
    bench.ledger.event(EVENT, number=hist.champion.number, tag=bench.tag, champion=hist.champion.commit,
                       setting=setting.key, words=setting.words, seeds=seeds, variants=variants, warnings=warnings)
    for v in variants:
        measure(bench, v["commit"], seeds, kind=Kind.TRANSFER, source=v["source"],
                description=f"transfer ({setting.words}): {v['name']}",
                meta={"study": EVENT, "variant": v["name"], "change": v["change"], "champion": hist.champion.commit})


def _constants_of(changed: str) -> list[str]:
    """The constant names of a ``changed:`` line (``LR=0.001 (was 0.01), WIDTH=8 (was 4)``)."""
    names = []
    for part in changed.split(", "):
        name = part.split("=")[0].split(" ")[0].strip()
        if name.isidentifier() and name.upper() == name:
            names.append(name)
    return names


def tables(ledger: Ledger, git: Git, hist: History, *, tag: str, direction: Direction | str, k: float,
           min_delta: float) -> list[Transfer]:
    """Every setting the current champion was moved to (the latest plan of each), from the plans and rows."""
    direction = Direction.parse(direction)
    latest: dict[str, Any] = {}
    for e in ledger.events(EVENT):
        if e.payload.get("tag") == tag and e.payload.get("champion") == hist.champion.commit:
            latest[e.payload.get("setting", "")] = e.payload
    tuned = None
    if hist.champion.metric_mean is not None and hist.baseline.metric_mean is not None:
        tuned = direction.gain(hist.champion.metric_mean, hist.baseline.metric_mean)
    out = []
    for key, plan in latest.items():
        seeds = list(plan.get("seeds") or [])
        lines, measured = [], {}
        for v in plan.get("variants") or []:
            rows = recorded(ledger, tag, tree_of(git, v["commit"]), key)
            ok = runs(rows, seeds)
            values = [x for folds in ok.values() for x in folds]
            line = Line(name=v["name"], change=v.get("change"), rows=sorted(r.number for s, r in rows.items() if s in seeds),
                        mean=sum(values) / len(values) if values else None, failed=failure(rows, seeds))
            measured[v["name"]] = ok
            lines.append(line)
        gain = stats.paired(measured.get("champion", {}), measured.get("baseline", {}), direction)
        for line in lines:
            if line.change is not None and not line.failed:
                line.vs = stats.paired(measured.get("champion", {}), measured[line.name], direction)
                line.verdict = stats.verdict(line.vs, k=k, min_delta=min_delta) if line.vs else ""
            elif line.failed:
                line.verdict = f"fails ({line.failed})"
        failing = [x for x in lines if x.change is None and x.failed]
        if gain:
            verdict = stats.holds(gain, k=k, min_delta=min_delta)
        elif failing:
            verdict = f"the {failing[0].name} fails there ({failing[0].failed})"
        else:
            verdict = "not measured yet"
        out.append(Transfer(setting=key, words=plan.get("words") or key, seeds=seeds, gain=gain, tuned_gain=tuned,
                            verdict=verdict, lines=lines, warnings=list(plan.get("warnings") or [])))
    return out
