"""Render a ``Brief`` as the markdown an LLM agent reads at the start of an experiment.

Deterministic (same brief, same text: no clock, no randomness) and bounded: every free-text part is
clipped with a visible marker, and the history shows only the last ``HISTORY_ROWS`` experiments plus a
one-line count of the older ones. The agent can ask for more with its ``list_experiments`` tool.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from autoresearch.text import stored
from autoresearch.vocab import Direction, Status


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
class CurvePoint:
    step: int
    total: int
    loss: float
    temperature: float | None = None


@dataclass
class FoldSummary:
    fold: int
    value: float | None                       # the metric on this fold
    metrics: dict[str, float] = field(default_factory=dict)   # a few other metrics of this fold
    seconds: float | None = None              # the run's own time (facts.json)
    peak_memory_gb: float | None = None
    steps: int | None = None
    steps_per_s: float | None = None
    final_loss: float | None = None
    final_temperature: float | None = None


@dataclass
class RunSummary:
    """What a researcher looks at after one experiment (``loop.runfacts.summarize`` builds it)."""

    number: int
    status: str
    description: str
    metric: float | None
    std: float | None
    folds: list[FoldSummary] = field(default_factory=list)
    curve: list[CurvePoint] = field(default_factory=list)     # fold 0's progress lines, a few checkpoints
    train_seconds: float | None = None
    peak_memory_gb: float | None = None
    reason: str = ""


@dataclass
class Brief:
    """Everything the agent is told for one experiment. Rendered deterministically by ``render``."""

    experiment: int
    task: str
    metric_name: str
    direction: Direction
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
    limits: list[str] = field(default_factory=list)      # the numbers that bound a change (time, memory, data)
    champion_run: RunSummary | None = None               # the champion's folds, curve, time and memory
    recent_runs: list[RunSummary] = field(default_factory=list)   # the last few experiments, the same way
    baseline_pending: bool = False                       # no champion yet: the loop runs the baseline first
    folds: int = 0                                       # folds per experiment
    fixing: dict = field(default_factory=dict)           # on a crash fix: the crashed proposal's own meta

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
RECENT_RUNS = 3       # experiments shown in detail besides the champion


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


def program_section(preamble: str) -> list[str]:
    """program.md's text before its phases as one section: its title (a leading ``# ...`` line) names the
    section and its own headings move one level down, so the brief's outline stays flat and readable."""
    lines = clip_head(preamble, LIMITS["rules"]).splitlines()
    title = "Program"
    if lines and lines[0].startswith("# "):
        title = f"Program: {one_line(lines[0][2:], 100)}"
        lines = lines[1:]
    body = [("#" + ln) if re.match(r"#{1,5} ", ln) else ln for ln in lines]
    return [f"## {title}", *("\n".join(body).strip().splitlines()), ""]


def _fold_table(run: RunSummary, metric_name: str) -> list[str]:
    extra = list(dict.fromkeys(k for f in run.folds for k in f.metrics))
    head = ["fold", metric_name, *extra, "steps", "steps/s", "seconds", "peak GB", "final loss", "temperature"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in run.folds:
        cells = [str(f.fold), fmt(f.value), *(fmt(f.metrics.get(k)) for k in extra),
                 "-" if f.steps is None else str(f.steps), fmt(f.steps_per_s and round(f.steps_per_s, 2)),
                 fmt(f.seconds and round(f.seconds, 1)), fmt(f.peak_memory_gb and round(f.peak_memory_gb, 2)),
                 fmt(f.final_loss and round(f.final_loss, 4)), fmt(f.final_temperature and round(f.final_temperature, 3))]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _curve(run: RunSummary) -> str:
    if not run.curve:
        return "Loss curve: no `step N/M loss X` lines in its log."
    parts = [f"step {p.step}/{p.total}: loss {fmt(round(p.loss, 4))}"
             + (f", temperature {fmt(round(p.temperature, 3))}" if p.temperature is not None else "")
             for p in run.curve]
    return "Loss curve (fold 0): " + "; ".join(parts) + "."


def run_detail(run: RunSummary, metric_name: str, heading: str) -> list[str]:
    """One experiment as a researcher reads it: metric per fold, curve, time and memory."""
    out = [heading]
    if not run.folds and not run.curve and run.metric is None:      # refused before any run, or no fold ran
        return out + [f"No fold ran: {one_line(run.reason, 300) or run.status}.", ""]
    summary = f"{metric_name} {mean_std(run.metric, run.std)}"
    if run.train_seconds:
        summary += f"; {run.train_seconds:.0f} s of training runs in all"
    if run.peak_memory_gb:
        summary += f"; peak memory {run.peak_memory_gb:.2f} GB"
    out.append(summary + ".")
    if run.reason and run.status != Status.KEEP:
        out.append(f"Why: {one_line(run.reason, 300)}")
    if run.folds:
        out += _fold_table(run, metric_name)
    out.append(_curve(run))
    out.append("")
    return out


def render(brief: Brief) -> str:
    """The whole brief as markdown, sections in a fixed order: what to do and where things stand first,
    then the evidence (champion, recent runs, history), then the program, the notes and the answer.

    The result goes through ``text.stored``: descriptions, notes, the scratchpad and log lines may hold NUL,
    escape sequences or lone surrogates, which an agent's stdin, a JSON request or a terminal
    (``autoresearch brief``) would choke on or obey."""
    direction = Direction.parse(brief.direction).words
    title = f"# Experiment {brief.experiment}"
    if brief.attempt > 1:
        title += f" (attempt {brief.attempt}: fix the previous attempt)"
    folds = f", the mean over {brief.folds} folds" if brief.folds > 1 else ""
    lines = [title, "", f"Task: {clip_head(brief.task, LIMITS['task'])}",
             f"Metric: `{brief.metric_name}` ({direction}){folds}.", ""]

    if brief.attempt > 1 or brief.failure.strip():
        lines.append("## The previous attempt failed")
        lines.append("Fix the cause below while keeping the idea of the change, or undo it if it cannot work.")
        lines += ["```", clip_tail(brief.failure, LIMITS["failure"]) or "(no reason recorded)", "```", ""]

    phase_title = brief.phase_title.strip() or "(no phase)"
    lines += [f"## Phase: {one_line(phase_title, 120)}", clip_head(brief.phase_text, LIMITS["phase_text"]), ""]

    lines.append("## What you may change")
    lines.append("Editable files (everything else is read-only, and edits elsewhere are undone): "
                 + ", ".join(f"`{p}`" for p in brief.editable) + ".")
    if brief.multi_change:
        lines.append("Several related changes in one experiment are allowed in this phase.")
    else:
        lines.append("Make exactly one change per experiment, so its effect can be measured.")
    lines.append("")

    if brief.limits:
        lines.append("## The numbers that bound a change")
        lines += [f"- {one_line(x, LIMITS['note'])}" for x in brief.limits]
        lines.append("")

    lines.append("## Champion")
    if brief.champion_metric is None:
        if brief.baseline_pending:
            lines.append("No champion yet. Before this brief is sent, the loop runs the baseline itself (the "
                         "editable files as committed, every fold); its result becomes the champion and is "
                         "shown here, and this experiment is measured against it.")
        else:
            lines.append("No champion yet: the first kept experiment becomes the baseline.")
    else:
        lines.append(f"Current best {brief.metric_name}: {mean_std(brief.champion_metric, brief.champion_std)}.")
    if brief.noise_sigma is not None:
        lines.append(f"Measurement noise (sigma): {fmt(brief.noise_sigma)}. Differences smaller than about "
                     f"twice this are not improvements.")
    lines.append("")
    if brief.champion_run is not None:
        lines += run_detail(brief.champion_run, brief.metric_name,
                            f"### Champion: experiment {brief.champion_run.number}, "
                            f"{one_line(brief.champion_run.description, LIMITS['description'])}")

    if brief.recent_runs:
        lines.append("## Recent experiments in detail")
        for run in brief.recent_runs:
            lines += run_detail(run, brief.metric_name, f"### Experiment {run.number} [{run.status}]: "
                                                        f"{one_line(run.description, LIMITS['description'])}")

    lines.append("## History")
    lines += _history(brief.history)
    lines.append("")

    if brief.notes:
        lines.append("## Notes from the tool")
        lines += [f"- {one_line(n, LIMITS['note'])}" for n in brief.notes]
        lines.append("")

    lines.append("## Scratchpad (your notes from earlier experiments)")
    lines.append(clip_head(brief.scratchpad, LIMITS["scratchpad"]) or "(empty)")
    lines.append("")

    if brief.program_rules.strip():
        lines += program_section(brief.program_rules)

    lines.append("## Looking further")
    lines.append("- `read_run(number)`: experiment `number`'s logs and each fold's `facts.json` (steps, time, "
                 "memory, final loss, effective temperature); `read_run(number, file)` one of them in full.")
    lines.append("- `show_experiment(number)`: its diff, metrics, reason and log tail; `list_experiments()`: "
                 "every experiment.")
    lines.append("- `check_run(steps)`: run your edited script for a few steps on a small slice, in the same "
                 "sandbox, and read its log; a crash shows up in seconds. It is not scored.")
    lines.append("")

    lines.append("## Your answer")
    lines.append("Edit the editable files, then finish with a one-line description of the change and a "
                 "hypothesis (why it should move the metric). With a `finish` tool, call "
                 "`finish(description, hypothesis)`; otherwise end your reply with two lines:")
    lines.append("`DESCRIPTION: <one line>` and `HYPOTHESIS: <one or two sentences>`.")
    return stored("\n".join(lines) + "\n", None)
