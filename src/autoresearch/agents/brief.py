"""Render a ``Brief`` as the markdown an LLM agent reads at the start of an experiment.

Deterministic (same brief, same text: no clock, no randomness) and bounded: every free-text part is
clipped with a visible marker, and the history shows only the last ``HISTORY_ROWS`` experiments plus a
one-line count of the older ones. The agent can ask for more with its ``list_experiments`` tool.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from autoresearch.vocab import Direction


@dataclass
class HistoryRow:
    number: int
    status: str
    description: str
    metric: float | None
    std: float | None
    delta: float | None
    reason: str = ""


@dataclass
class Brief:
    """Everything the agent is told for one experiment. Rendered deterministically by ``render``."""

    experiment: int
    task: str
    metric_name: str
    direction: str
    phase_title: str
    phase_text: str
    program_rules: str
    scratchpad: str
    editable: list[str]
    champion_metric: float | None
    champion_std: float | None
    noise_sigma: float | None
    history: list[HistoryRow]
    multi_change: bool = False
    failure: str = ""           # reason + log tail of the previous attempt when it crashed or was invalid
    attempt: int = 1            # >1 when this is a crash fix
    notes: list[str] = field(default_factory=list)  # tool messages (e.g. an invalid edit was undone)
    past_meta: list[dict] = field(default_factory=list)  # this agent's own meta from earlier finished proposals

    def render(self) -> str:
        return render(self)


HISTORY_ROWS = 15
LIMITS = {            # characters per part; the whole brief stays well under the sum
    "task": 400,
    "phase_text": 4000,
    "rules": 4000,
    "description": 90,
    "note": 400,
    "failure": 4000,
    "scratchpad": 8000,
}


def clip_head(text: str, limit: int) -> str:
    """Keep the beginning of ``text``; mark what was cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + f"\n[... truncated {len(text) - limit} characters]"


def clip_tail(text: str, limit: int) -> str:
    """Keep the end of ``text`` (for logs, where the last lines matter); mark what was cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} earlier characters truncated]\n" + text[-limit:].lstrip()


def one_line(text: str, limit: int) -> str:
    """Collapse whitespace to one line, clip with an ellipsis, and keep table cells intact."""
    flat = " ".join(text.split()).replace("|", "/")
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value:
        return "nan"
    return f"{value:.6g}"


def fmt_signed(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value:
        return "nan"
    return f"{value:+.4g}"


def mean_std(metric: float | None, std: float | None) -> str:
    if metric is None:
        return "-"
    return fmt(metric) if std is None else f"{fmt(metric)} ± {fmt(std)}"


def _history(rows: list[HistoryRow]) -> list[str]:
    if not rows:
        return ["No experiments yet: this one is the first."]
    shown = rows[-HISTORY_ROWS:]
    older = rows[:-HISTORY_ROWS]
    out = []
    if older:
        counts = Counter(r.status for r in older)
        parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        out.append(f"{len(older)} older experiments not shown ({parts}); call `list_experiments` to see all.")
        out.append("")
    out.append("| # | status | metric (mean ± std) | delta | description |")
    out.append("|---|---|---|---|---|")
    for r in shown:
        text = r.description if not r.reason else f"{r.description} [{r.reason}]"
        out.append(f"| {r.number} | {r.status} | {mean_std(r.metric, r.std)} | {fmt_signed(r.delta)} "
                   f"| {one_line(text, LIMITS['description'])} |")
    return out


def render(brief: Brief) -> str:
    """The whole brief as markdown, sections in a fixed order."""
    direction = Direction.parse(brief.direction).words
    title = f"# Experiment {brief.experiment}"
    if brief.attempt > 1:
        title += f" (attempt {brief.attempt}: fix the previous attempt)"
    lines = [title, "", f"Task: {clip_head(brief.task, LIMITS['task'])}",
             f"Metric: `{brief.metric_name}` ({direction}).", ""]

    lines.append("## Champion")
    if brief.champion_metric is None:
        lines.append("No champion yet: the first kept experiment becomes the baseline.")
    else:
        lines.append(f"Current best {brief.metric_name}: {mean_std(brief.champion_metric, brief.champion_std)}.")
    if brief.noise_sigma is not None:
        lines.append(f"Measurement noise (sigma): {fmt(brief.noise_sigma)}. Differences smaller than about "
                     f"twice this are not improvements.")
    lines.append("")

    phase_title = brief.phase_title.strip() or "(no phase)"
    lines += [f"## Phase: {one_line(phase_title, 120)}", clip_head(brief.phase_text, LIMITS["phase_text"]), ""]

    if brief.program_rules.strip():
        lines += ["## Rules", clip_head(brief.program_rules, LIMITS["rules"]), ""]

    lines.append("## What you may change")
    lines.append("Editable files (everything else is read-only, and edits elsewhere are undone): "
                 + ", ".join(f"`{p}`" for p in brief.editable) + ".")
    if brief.multi_change:
        lines.append("Several related changes in one experiment are allowed in this phase.")
    else:
        lines.append("Make exactly one change per experiment, so its effect can be measured.")
    lines.append("")

    lines.append("## History")
    lines += _history(brief.history)
    lines.append("")

    if brief.notes:
        lines.append("## Notes from the tool")
        lines += [f"- {one_line(n, LIMITS['note'])}" for n in brief.notes]
        lines.append("")

    if brief.attempt > 1 or brief.failure.strip():
        lines.append("## The previous attempt failed")
        lines.append("Fix the cause below while keeping the idea of the change, or undo it if it cannot work.")
        lines += ["```", clip_tail(brief.failure, LIMITS["failure"]) or "(no reason recorded)", "```", ""]

    lines.append("## Scratchpad (your notes from earlier experiments)")
    lines.append(clip_head(brief.scratchpad, LIMITS["scratchpad"]) or "(empty)")
    lines.append("")

    lines.append("## Your answer")
    lines.append("Edit the editable files, then finish with a one-line description of the change and a "
                 "hypothesis (why it should move the metric). With a `finish` tool, call "
                 "`finish(description, hypothesis)`; otherwise end your reply with two lines:")
    lines.append("`DESCRIPTION: <one line>` and `HYPOTHESIS: <one or two sentences>`.")
    return "\n".join(lines) + "\n"
