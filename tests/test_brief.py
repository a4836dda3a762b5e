"""The brief: every section present, deterministic, bounded."""

from __future__ import annotations

from autoresearch.agents.base import Brief, HistoryRow
from autoresearch.agents.brief import HISTORY_ROWS, LIMITS, render


def make_brief(**over) -> Brief:
    base = dict(
        experiment=7, task="eCLIP retrieval on Ukiyo-eVG", metric_name="mean_rank", direction="minimize",
        phase_title="Baseline tuning", phase_text="Tune LR, batch, temperature.",
        program_rules="One change per experiment.\nNever change the metric.", scratchpad="LR 1e-4 helped.",
        editable=["train.py", "scratchpad.md"], champion_metric=157.43, champion_std=0.76, noise_sigma=1.2,
        history=[HistoryRow(1, "kept", "baseline", 344.68, 2.0, None),
                 HistoryRow(2, "discarded", "label smoothing | 0.1", 391.7, 3.1, 47.0),
                 HistoryRow(3, "crashed", "LR 1e-3", None, None, None, reason="NaN loss")],
    )
    base.update(over)
    return Brief(**base)


def test_sections_and_values():
    text = render(make_brief())
    assert text.startswith("# Experiment 7\n")
    for needle in ["mean_rank", "lower is better", "157.43 ± 0.76", "1.2", "## Phase: Baseline tuning",
                   "Tune LR, batch", "Never change the metric", "`train.py`, `scratchpad.md`",
                   "exactly one change", "LR 1e-4 helped.", "DESCRIPTION:", "HYPOTHESIS:", "finish("]:
        assert needle in text, needle
    assert "| 2 | discarded | 391.7 ± 3.1 | +47 | label smoothing / 0.1 |" in text  # pipes cannot break the table
    assert "| 3 | crashed | - | - | LR 1e-3 [NaN loss] |" in text
    assert "previous attempt failed" not in text
    assert "higher is better" in render(make_brief(direction="maximize"))


def test_multi_change_and_no_champion():
    text = render(make_brief(multi_change=True, champion_metric=None, champion_std=None, noise_sigma=None,
                             history=[]))
    assert "Several related changes" in text and "exactly one change" not in text
    assert "No champion yet" in text and "No experiments yet" in text


def test_failure_section_and_notes():
    log = "\n".join(f"line {i}" for i in range(5000)) + "\nRuntimeError: CUDA out of memory"
    text = render(make_brief(attempt=2, failure="crashed: exit 1\n" + log, notes=["edit to prepare.py undone"]))
    assert "(attempt 2" in text and "## The previous attempt failed" in text
    assert "RuntimeError: CUDA out of memory" in text       # the tail is kept
    assert "earlier characters truncated" in text
    assert "edit to prepare.py undone" in text
    # attempt > 1 without a recorded reason still gets the section
    assert "(no reason recorded)" in render(make_brief(attempt=2))


def test_history_keeps_last_rows_and_counts_older():
    rows = [HistoryRow(i, "kept" if i % 3 == 0 else "discarded", f"change {i}", 100.0 - i, 0.5, -1.0)
            for i in range(1, 41)]
    text = render(make_brief(history=rows))
    assert "25 older experiments not shown (17 discarded, 8 kept)" in text
    assert f"| {40 - HISTORY_ROWS + 1} |" in text and f"| {40 - HISTORY_ROWS} |" not in text
    assert text.count("\n| ") == HISTORY_ROWS + 1        # header and rows


def test_deterministic_and_bounded():
    huge = "x" * 100_000
    b = make_brief(phase_text=huge, program_rules=huge, scratchpad=huge, failure=huge, task=huge,
                   history=[HistoryRow(i, "kept", huge, 1.0, 0.1, 0.0) for i in range(100)])
    first, second = render(b), render(b)
    assert first == second
    assert len(first) < sum(LIMITS.values()) + HISTORY_ROWS * 200 + 3000
    assert "[... truncated" in first
    assert b.render() == first      # the Brief method delegates here
