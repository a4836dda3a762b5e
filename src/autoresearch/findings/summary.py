"""``summary.md``: what the night found, derived from the ledger and git (no LLM writes any of it).

Sections: the result (baseline → champion, the one-time test score when ``final`` has run), what worked
(the kept changes with their gain when kept and their contribution now), what did not (every other attempt,
grouped by what it changed: which constants, or which files' code), the ablation and transfer tables, the
cost (agent tokens and USD from the ledger, training time, the findings runs), the final branch, and the
scratchpad's last version quoted as the agent wrote it. Text that agents wrote (descriptions, the
scratchpad) is put in table cells with ``|`` escaped, or in a fenced block longer than any fence inside it.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from autoresearch.findings import ablate as ablate_mod
from autoresearch.findings.ablate import Ablation
from autoresearch.findings.changes import History, touched
from autoresearch.findings.finalize import Final
from autoresearch.loop.gitops import Git
from autoresearch.loop.ledger import Experiment
from autoresearch.text import shown
from autoresearch.vocab import Direction, Kind, Status


def write(session: Any, hist: History, path: Path, *, final: Final | None, ablation: Ablation | None,
          transfers: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if ablation is not None:
        from autoresearch.report.plot import contributions_png

        contributions_png(ablation, path.parent / "ablation.png")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(session, hist, final=final, ablation=ablation, transfers=transfers), encoding="utf-8")
    tmp.replace(path)
    return path


def render(session: Any, hist: History, *, final: Final | None, ablation: Ablation | None, transfers: list) -> str:
    cfg, ledger, tag = session.config, session.ledger, session.tag
    metric, direction = cfg.metric.name, Direction.parse(cfg.metric.direction)
    git = Git(cfg.root)
    rows = ledger.rows(tag=tag)
    experiments = [r for r in rows if r.kind == Kind.EXPERIMENT]
    out = [f"# What night `{tag}` found", ""]
    out.append(f"Repository `{cfg.root.name}` (task {cfg.task.name}); metric `{metric}`, {direction.words}; "
               f"{len(experiments)} experiments{_span(rows)}. Everything below is derived from the ledger "
               f"(`.autoresearch/ledger.sqlite`) and git; nothing was written by a model.")
    out += ["", "## Result", ""]
    base, champ = hist.baseline, hist.champion
    out += ["| | experiment | " + metric + " (mean ± std over folds) |", "|---|---|---|",
            f"| baseline | {base.number} | {_pm(base)} |", f"| champion | {champ.number} | {_pm(champ)} |"]
    if _finite(base.metric_mean) and _finite(champ.metric_mean):
        gain = direction.gain(champ.metric_mean, base.metric_mean)
        pct = f" ({100 * gain / abs(base.metric_mean):.1f}% of the baseline)" if base.metric_mean else ""
        out += ["", f"Gain: **{gain:+.4g}**{pct} over {len(hist.changes)} kept change(s), as the loop measured it."]
    out += ["", _test_score(rows, ledger, tag, metric)]
    out += ["", "## What worked: the kept changes", ""]
    out += _kept(hist, ablation)
    out += ["", "## What did not work", ""]
    out += _not_kept(git, experiments, cfg.task.scratchpad, direction)
    out += ["", "## Ablation", ""]
    out += _ablation(ablation, metric)
    out += ["", "## Transfer", ""]
    out += _transfers(transfers)
    out += ["", "## Cost", ""]
    out += _cost(rows)
    out += ["", "## The final branch", ""]
    out += _final(final, hist)
    out += ["", "## Lessons in the scratchpad", ""]
    out += _scratchpad(git, session.state.base() or hist.champion.commit, hist)
    if hist.warnings:
        out += ["", "## Warnings", ""] + [f"- {_cell(w)}" for w in hist.warnings]
    return "\n".join(out).rstrip() + "\n"


def _kept(hist: History, ablation: Ablation | None) -> list[str]:
    if not hist.changes:
        return ["No change was kept: the champion is the baseline."]
    lines = {line.change.number: line for line in ablation.lines} if ablation else {}
    out = ["In the order they were kept. *When kept*: the gain over the champion of its moment (± one standard "
           "deviation of the difference). *Now*: its contribution to the final champion (ablation: the champion "
           "against the champion without it, paired; ± standard error).", "",
           "| # | change | changed | when kept | now | verdict |", "|---|---|---|---|---|---|"]
    for c in hist.changes:
        kept = "—" if c.gain is None else f"{c.gain:+.4g}" + (f" ± {c.sd:.3g}" if c.sd is not None else "")
        line = lines.get(c.number)
        now = line.contribution.text() if line and line.contribution else "—"
        verdict = line.verdict if line else "not ablated"
        out.append(f"| {c.number} | {_cell(c.description)} | {_cell(c.changed)} | {kept} | {now} | {_cell(verdict)} |")
    removable = [line for line in lines.values() if line.verdict.startswith("no longer")]
    if removable:
        out += ["", "No longer matter at the champion (candidates for removal: simpler code at no measured cost): "
                + ", ".join(f"#{x.change.number} {_cell(x.change.description)}" for x in removable) + "."]
    return out


def _not_kept(git: Git, experiments: list[Experiment], pad: str, direction: Direction) -> list[str]:
    groups: dict[str, list[Experiment]] = defaultdict(list)
    values: dict[int, str] = {}
    for r in experiments:
        if r.status in (Status.KEEP, Status.RUNNING, Status.INTERRUPTED, Status.CONTENTION, Status.AGENT_ERROR):
            continue
        commit = r.commit or r.candidate_commit
        if not commit or not r.parent_commit:
            groups["(undone before any run: the edit broke the rules)"].append(r)
            continue
        t = touched(git, r.parent_commit, commit, pad)
        values[r.number] = t.values
        groups[t.key if t.key != "nothing" else "(no code change)"].append(r)
    if not groups:
        return ["Every finished experiment was kept."]
    out = ["Every other finished attempt, grouped by what it changed (constants, or code beyond them). *Δ*: its "
           "metric minus the champion's at the time.", "", "| what it changed | tries | outcomes | the tries |",
           "|---|---|---|---|"]
    for key, group in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        counts = defaultdict(int)
        for r in group:
            counts[r.status] += 1
        outcome = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        tries = "; ".join(f"#{r.number} {_cell(_short(r.description))}"
                          + (f" ({values[r.number]})" if values.get(r.number) else "")
                          + (f" Δ {r.delta:+.4g}" if _finite(r.delta) else f" [{r.status}]") for r in group)
        out.append(f"| {_cell(key)} | {len(group)} | {outcome} | {tries} |")
    return out


def _ablation(a: Ablation | None, metric: str) -> list[str]:
    if a is None:
        return ["Not run: `autoresearch ablate` measures each kept change's contribution at the champion."]
    out = [f"Champion {a.champion} ({a.commit[:10]}) re-measured with {len(a.seeds)} fresh seed(s) "
           f"({', '.join(map(str, a.seeds))}) on every fold"
           + (f": {metric} {a.champion_mean:.4g}" if a.champion_mean is not None else "")
           + f"; ledger rows {_numbers(a.champion_rows)}. Rule: {a.rule}.", "",
           "![each kept change's contribution now, with its 95% interval, and its gain when kept](ablation.png)", "",
           "| change | when kept | contribution now | verdict | variant |", "|---|---|---|---|---|"]
    for cells in ablate_mod.describe(a):
        out.append(f"| {_cell(cells['change'])} | {cells['kept']} | {cells['now']} | {_cell(cells['verdict'])} | "
                   f"{_cell(cells['how'])} |")
    return out


def _transfers(transfers: list) -> list[str]:
    if not transfers:
        return ["Not run: `autoresearch transfer --seeds 3 [--set NAME=VALUE] [--preset P] [--data DIR]` moves "
                "the baseline and the champion to a setting the loop did not tune on."]
    out = ["| setting | seeds | gain when tuned | gain there | verdict |", "|---|---|---|---|---|"]
    for t in transfers:
        tuned = f"{t.tuned_gain:+.4g}" if t.tuned_gain is not None else "—"
        out.append(f"| {_cell(t.words)} | {len(t.seeds)} | {tuned} | {t.gain.text() if t.gain else '—'} | "
                   f"{_cell(t.verdict)} |")
    for t in transfers:
        extra = [x for x in t.lines if x.change is not None]
        means = ", ".join(f"{x.name} {x.mean:.4g}" for x in t.lines if x.change is None and x.mean is not None)
        out += ["", f"*{_cell(t.words)}*: means {means or '—'}."]
        if extra:
            out += ["", "| without | contribution there | verdict |", "|---|---|---|"]
            out += [f"| {_cell(x.name)} | {x.vs.text() if x.vs else '—'} | {_cell(x.verdict)} |" for x in extra]
        out += [""] + [f"- {_cell(w)}" for w in t.warnings] if t.warnings else []
    return out


def _test_score(rows: list[Experiment], ledger, tag: str, metric: str) -> str:
    finals = [r for r in rows if r.kind == Kind.FINAL]
    if not finals:
        return "One-time test score: not measured (`autoresearch final` trains the champion on train+val and scores " \
               "the hidden test split once)."
    uses = sum(1 for e in ledger.events("test_used") if e.payload.get("tag", tag) == tag)
    r = finals[0]
    m = r.metrics[0] if isinstance(r.metrics, list) and r.metrics and isinstance(r.metrics[0], dict) else {}
    extra = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if k != metric and _finite(v))
    return (f"One-time test score (experiment {r.number}, {r.status}): **{metric} {_num(r.metric_mean)}**"
            + (f" ({extra})" if extra else "") + f". The test split was used {uses} time(s)"
            + ("; this is the first result." if uses > 1 else "."))


def _cost(rows: list[Experiment]) -> list[str]:
    exp = [r for r in rows if r.kind == Kind.EXPERIMENT]
    usd = [r.cost_usd for r in exp if _finite(r.cost_usd)]
    tokens_in = sum(r.tokens_in or 0 for r in exp)
    tokens_out = sum(r.tokens_out or 0 for r in exp)
    train = sum(r.train_seconds or 0 for r in rows if not Kind(r.kind).finding) / 3600
    agent = sum(r.agent_seconds or 0 for r in exp) / 3600
    found = [r for r in rows if Kind(r.kind).finding]
    kept = sum(1 for r in exp if r.status == Status.KEEP)
    cost = f"${sum(usd):.2f}" if usd else ("unknown (no price for the model)" if tokens_in or tokens_out else "$0 (no LLM)")
    per = f", ${sum(usd) / kept:.2f} per kept change" if usd and kept else ""
    return [f"- Agent: {cost}{per}; {tokens_in + tokens_out:,} tokens ({tokens_in:,} in, {tokens_out:,} out); "
            f"{agent:.2f} h of agent time.",
            f"- Training during the night: {train:.2f} h over {len([r for r in rows if not Kind(r.kind).finding])} rows "
            f"(experiments, confirmations, noise floor, final).",
            f"- Findings (ablation, transfer): {len(found)} runs, "
            f"{sum(r.train_seconds or 0 for r in found) / 3600:.2f} h of training."]


def _final(final: Final | None, hist: History) -> list[str]:
    if final is None:
        return ["Not built: `autoresearch finalize`."]
    out = [f"`{final.branch}` starts at the baseline {final.base[:10]} with one commit per kept change (fix attempts "
           f"and the loop's notes commits folded in). `{', '.join(final.left_out)}` stays as at the baseline there "
           f"(the agent's memory, not the result; quoted below), so the branch's tree is the champion's "
           f"{hist.champion.commit[:10]} in every other file.", ""]
    out += [f"- `{sha[:10]}` {_cell(c.description)} (experiment {c.number})" for sha, c in final.commits]
    if not final.commits:
        out.append("- (no kept change: the branch is the baseline)")
    out += ["", f"Review it with `git log -p {final.base[:10]}..{final.branch}`."]
    return out


def _scratchpad(git: Git, base: str, hist: History) -> list[str]:
    text = git.show(base, hist.scratchpad) or ""
    if not text.strip():
        return ["(the scratchpad is empty)"]
    text = shown(text, multiline=True)
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return [f"The scratchpad `{hist.scratchpad}` as the agent left it (commit {base[:10]}), verbatim:", "",
            f"{fence}text", text.rstrip("\n"), fence]


def _span(rows: list[Experiment]) -> str:
    starts = [r.started_at for r in rows if r.started_at and not Kind(r.kind).finding]
    ends = [r.ended_at for r in rows if r.ended_at and not Kind(r.kind).finding]
    if not starts or not ends:
        return ""
    try:
        a = datetime.fromisoformat(min(starts).replace("Z", "+00:00"))
        b = datetime.fromisoformat(max(ends).replace("Z", "+00:00"))
    except ValueError:
        return ""
    return f", {a:%Y-%m-%d %H:%M} to {b:%Y-%m-%d %H:%M} UTC ({(b - a).total_seconds() / 3600:.2f} h)"


def _pm(r: Experiment) -> str:
    return "—" if not _finite(r.metric_mean) else f"{r.metric_mean:.4f}" + (
        f" ± {r.metric_std:.4f}" if _finite(r.metric_std) else "")


def _numbers(ns: list[int]) -> str:
    return ", ".join(map(str, ns)) or "none yet"


def _short(text: str | None, limit: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(text: Any) -> str:
    """Text for a markdown table cell: one line, control characters made visible (``text.shown``), pipes
    escaped."""
    return " ".join(shown(text or "").split()).replace("|", "\\|")


def _num(x: Any) -> str:
    return f"{x:.4g}" if _finite(x) else "—"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
