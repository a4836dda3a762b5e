"""The progress plot, after Karpathy's: every attempt a point, kept ones labelled, the champion as a step line.

Reads ledger rows only; computes nothing but the running champion and the visible y-range. Failed attempts
(crash, timeout, invalid) have no metric and are drawn as crosses on the bottom edge; discarded attempts far
worse than anything kept (a collapsed run) are clipped to the top or bottom edge with a triangle and their
value, so one disaster does not squash the rest of the plot. Interrupted and running rows are not drawn;
rows of kinds other than baseline and experiment (noise-floor runs, the one-time test) are left out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from autoresearch.loop.ledger import CHAMPION_KINDS, Experiment
from autoresearch.vocab import Direction, Status

LABEL_CHARS = 42

_FAIL_STYLE = {  # status -> (colour, legend label)
    Status.CRASH: ("#d62728", Status.CRASH.value),
    Status.TIMEOUT: ("#ff7f0e", Status.TIMEOUT.value),
    Status.INVALID: ("#9467bd", Status.INVALID.value),
    Status.ABORTED: ("#8c564b", "aborted early"),
}
_KEEP_COLOUR = "#2ca02c"
_CHAMPION_COLOUR = "#1f77b4"


def ellipsise(text: str, limit: int = LABEL_CHARS) -> str:
    """One line, at most ``limit`` characters, with an ellipsis when cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _charged(status: str | None) -> bool:
    try:
        return Status(status).charged
    except ValueError:
        return False


def direction_label(metric_name: str, direction: Direction) -> str:
    """'mean_rank (lower is better)'."""
    return f"{metric_name} ({Direction.parse(direction).words})"


def champion_steps(rows: Sequence[Experiment]) -> list[tuple[int, float]]:
    """(number, champion mean) at each row where the champion changed: kept baseline/experiment rows."""
    return [(r.number, r.metric_mean) for r in rows
            if r.kind in CHAMPION_KINDS and r.status == Status.KEEP and _finite(r.metric_mean)]


def progress_png(rows: Sequence[Experiment], path: Path | str, *, metric_name: str, direction: Direction,
                 noise_sigma: float | None = None, title: str = "", noise_k: float = 2.0) -> Path:
    """Draw the progress plot of ``rows`` (one tag, in number order) to a 1200×600 PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the Agg backend, no global pyplot state
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    ylabel = direction_label(metric_name, direction)
    minimize = Direction.parse(direction) is Direction.MINIMIZE
    n_exp = sum(1 for r in rows if r.kind == "experiment")
    # Only the search itself: noise-floor re-runs, confirmations and the one-time test are not experiments.
    rows = sorted((r for r in rows if r.kind in CHAMPION_KINDS and _charged(r.status)),
                  key=lambda r: r.number)
    steps = champion_steps(rows)
    measured = [r for r in rows if _finite(r.metric_mean) and not r.failed]

    fig = Figure(figsize=(12, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlabel("experiment #")
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    kept_n = sum(1 for r in rows if r.kind == "experiment" and r.status == Status.KEEP)
    ax.set_title(title or f"{n_exp} experiments, {kept_n} kept", loc="left", fontsize=12)

    if not rows:
        ax.text(0.5, 0.5, "no experiments yet", transform=ax.transAxes, ha="center", va="center", color="grey")
        return _save(fig, path)

    x_max = max(r.number for r in rows)
    x_min = min(r.number for r in rows)
    lo, hi = _y_window([m for _, m in steps], [r.metric_mean for r in measured], noise_sigma, noise_k)
    legend: list = []

    # champion step line and noise band
    if steps:
        xs = [n for n, _ in steps] + [x_max + 0.5]
        ys = [m for _, m in steps] + [steps[-1][1]]
        if noise_sigma and noise_sigma > 0:
            band = noise_k * noise_sigma
            ax.fill_between(xs, [y - band for y in ys], [y + band for y in ys], step="post",
                            color=_CHAMPION_COLOUR, alpha=0.12, linewidth=0, zorder=1)
            legend.append(_patch(_CHAMPION_COLOUR, f"noise band ±{noise_k:g}σ (σ={noise_sigma:.3g})"))
        ax.step(xs, ys, where="post", color=_CHAMPION_COLOUR, linewidth=2, zorder=2)
        legend.append(Line2D([], [], color=_CHAMPION_COLOUR, linewidth=2, label="champion (running best)"))

    # all measured attempts as grey points; those outside the window clipped to the edge
    inside = [r for r in measured if lo <= r.metric_mean <= hi]
    ax.scatter([r.number for r in inside], [r.metric_mean for r in inside], s=22, color="#9a9a9a",
               alpha=0.7, linewidths=0, zorder=3)
    legend.append(Line2D([], [], marker="o", linestyle="", color="#9a9a9a", label="discarded / other"))
    clipped = [r for r in measured if not lo <= r.metric_mean <= hi]
    edge = ax.get_xaxis_transform()  # x in data, y in axes fraction
    last_text = {True: -math.inf, False: -math.inf}
    for r in clipped:
        top = r.metric_mean > hi
        y = 0.975 if top else 0.08
        ax.scatter([r.number], [y], transform=edge, marker="^" if top else "v", s=46, color="#7f7f7f", zorder=4)
        if r.number - last_text[top] > 0.04 * max(1, x_max - x_min):   # values of close neighbours would overprint
            ax.annotate(f"{r.metric_mean:.4g}", (r.number, y), xycoords=edge, xytext=(6, 0),
                        textcoords="offset points", fontsize=7, color="#555555", va="center")
            last_text[top] = r.number
    if clipped:
        legend.append(Line2D([], [], marker="^", linestyle="", color="#7f7f7f", label="off the scale (value shown)"))

    # kept experiments in colour, labelled; the baseline as a star
    kept = [r for r in rows if r.kind == "experiment" and r.status == Status.KEEP and _finite(r.metric_mean)]
    ax.scatter([r.number for r in kept], [r.metric_mean for r in kept], s=60, color=_KEEP_COLOUR,
               edgecolors="black", linewidths=0.6, zorder=5)
    if kept:
        legend.append(Line2D([], [], marker="o", linestyle="", color=_KEEP_COLOUR, markeredgecolor="black",
                             label="kept"))
    labels = _label_kept(ax, kept, x_min, x_max, minimize)
    base = next((r for r in rows if r.kind == "baseline" and _finite(r.metric_mean)), None)
    if base is not None:
        ax.axhline(base.metric_mean, color="black", linewidth=0.8, linestyle=(0, (4, 4)), alpha=0.5, zorder=1)
        ax.scatter([base.number], [base.metric_mean], marker="*", s=260, color="black", zorder=6)
        legend.append(Line2D([], [], marker="*", linestyle="", color="black", markersize=12,
                             label=f"baseline ({base.metric_mean:.5g})"))

    # failed attempts: crosses on the bottom edge (they have no metric)
    for status, (colour, label) in _FAIL_STYLE.items():
        xs = [r.number for r in rows if r.status == status]
        if xs:
            ax.scatter(xs, [0.03] * len(xs), transform=edge, marker="x", s=50, color=colour, linewidths=2,
                       zorder=6, clip_on=False)
            legend.append(Line2D([], [], marker="x", linestyle="", color=colour, markeredgewidth=2,
                                 label=f"{label} (no metric)"))

    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    pad = max(1.0, 0.02 * (x_max - x_min))
    ax.set_xlim(x_min - pad, x_max + pad + 0.5)
    ax.set_ylim(lo, hi)
    # the champion falls to the lower right (minimize) or climbs to the upper right: the other corner is free
    ax.legend(handles=legend, loc="upper right" if minimize else "upper left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    _make_room(fig, ax, labels)
    return _save(fig, path)


def _make_room(fig, ax, labels: list) -> None:
    """Widen the x-range until the rotated labels end inside the axes (labels have a fixed size in
    pixels, so widening moves the points left and frees space on the right)."""
    if not labels:
        return
    renderer = fig.canvas.get_renderer()
    for _ in range(4):
        right = max(t.get_window_extent(renderer).x1 for t in labels)
        box = ax.get_window_extent(renderer)
        overflow = right - (box.x1 - 4)
        if overflow <= 0:
            return
        x0, x1 = ax.get_xlim()
        # a point at pixel p moves to p * w / (w + extra_px): solve for the extra data units needed
        scale = (x1 - x0) / box.width
        ax.set_xlim(x0, x1 + overflow * scale * 1.15)


def _label_kept(ax, kept: Sequence[Experiment], x_min: int, x_max: int, minimize: bool) -> list:
    """Rotated short descriptions next to kept points, away from where later champions go (up-right
    when lower is better, down-right when higher is better); a label that would start close to the
    previous one is pushed further out so that neighbours do not print on top of each other."""
    x_span = max(1, x_max - x_min)
    sign = 1 if minimize else -1
    labels = []
    last_x = None
    shift = 0
    for r in kept:
        text = ellipsise(r.description or f"#{r.number}")
        if _finite(r.delta):
            text += f" ({r.delta:+.3g})"
        near = last_x is not None and (r.number - last_x) < 0.04 * x_span
        shift = shift + 1 if near else 0
        dy = sign * (8 + 14 * (shift % 3))
        labels.append(ax.annotate(
            text, (r.number, r.metric_mean), xytext=(4, dy), textcoords="offset points",
            rotation=sign * 28, rotation_mode="anchor", ha="left", va="bottom" if minimize else "top",
            fontsize=7.5, color="#1a1a1a", zorder=7,
            arrowprops=dict(arrowstyle="-", color="#bbbbbb", linewidth=0.6) if shift else None))
        last_x = r.number
    return labels


def _y_window(core: Sequence[float], others: Sequence[float], noise_sigma: float | None,
              noise_k: float) -> tuple[float, float]:
    """The visible y-range: the champion's values (``core``), plus any other value within one champion
    span of them; values further out (a collapsed run) are clipped to the edge. Padded for the labels."""
    core = [v for v in core if _finite(v)] or [v for v in others if _finite(v)]
    if not core:
        return 0.0, 1.0
    lo, hi = min(core), max(core)
    span = hi - lo
    if noise_sigma and noise_sigma > 0:
        span = max(span, 4 * noise_k * noise_sigma)
    if span == 0:
        span = abs(hi) * 0.1 or 1.0
    near = [v for v in others if _finite(v) and lo - span <= v <= hi + span]
    lo, hi = min([lo, *near]), max([hi, *near])
    if hi == lo:   # one value (only the baseline measured, every attempt failed): centre it
        return lo - span / 2, hi + span / 2
    pad = 0.12 * (hi - lo)
    return lo - pad, hi + pad


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _patch(colour: str, label: str):
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, alpha=0.2, label=label)


def _save(fig, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def contributions_png(ablation, path: Path | str, *, title: str = "") -> Path:
    """Each kept change's contribution at the champion (``findings.ablate.Ablation``) as a bar with its 95%
    interval, beside the gain it had when it was kept (± one standard deviation): one row per change, in the
    order of keeping, positive = the change helps, whichever way the metric goes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    lines = list(ablation.lines)
    fig = Figure(figsize=(10, 1.2 + 0.62 * max(1, len(lines))), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(len(lines)))[::-1]
    colours = {"matters": _KEEP_COLOUR, "no longer": "#9a9a9a", "hurts": "#d62728"}
    for y, line in zip(ys, lines):
        c = line.change
        if c.gain is not None:
            ax.barh(y + 0.2, c.gain, height=0.36, color="#c7d8ea", edgecolor=_CHAMPION_COLOUR, linewidth=0.6,
                    xerr=c.sd or None, error_kw={"ecolor": "#555555", "capsize": 3, "linewidth": 0.8})
        p = line.contribution
        if p is not None and _finite(p.gain):
            colour = next((v for k, v in colours.items() if line.verdict.startswith(k)), "#7f7f7f")
            half = (p.high - p.low) / 2 if _finite(p.high) and _finite(p.low) else None
            ax.barh(y - 0.2, p.gain, height=0.36, color=colour, xerr=half,
                    error_kw={"ecolor": "black", "capsize": 4, "linewidth": 1.0})
        else:
            ax.text(0, y - 0.2, f"  {line.verdict}", va="center", fontsize=8, color="#b42318")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels([ellipsise(f"#{line.change.number} {line.change.description}", 48) for line in lines], fontsize=9)
    ax.set_xlabel(f"gain in {ablation.metric} ({Direction.parse(ablation.direction).words}; positive = the change helps)")
    ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set_title(title or f"kept changes at champion {ablation.champion}: contribution now (95% CI, "
                          f"{len(ablation.seeds)} seeds, paired) and gain when kept (± 1 sd)", loc="left", fontsize=10)
    ax.legend(handles=[Patch(facecolor="#c7d8ea", edgecolor=_CHAMPION_COLOUR, label="gain when kept"),
                       Patch(facecolor=_KEEP_COLOUR, label="now: matters"),
                       Patch(facecolor="#9a9a9a", label="now: no longer matters"),
                       Patch(facecolor="#d62728", label="now: hurts")], fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, path)
