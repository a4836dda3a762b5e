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


# -- the structure, and `autoresearch brief` on a fresh eCLIP repository ------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from autoresearch import config as config_mod  # noqa: E402
from autoresearch.agents.brief import program_section  # noqa: E402
from autoresearch.cli import app  # noqa: E402
from autoresearch.loop import fingerprints  # noqa: E402
from autoresearch.loop.engine import open_ledger  # noqa: E402
from autoresearch.loop.runfacts import checkpoints, parse_curve  # noqa: E402
from autoresearch.tasks.eclip import EclipTask  # noqa: E402
from eclip_fake_data import write_fake_prepared  # noqa: E402

PROGRAM = "# My program\n\n## Goal\n\nLower it.\n\n## Rules\n\n- one change\n"


def test_the_program_is_one_section_with_its_headings_one_level_down():
    assert program_section(PROGRAM) == ["## Program: My program", "### Goal", "", "Lower it.", "", "### Rules", "",
                                        "- one change", ""]
    text = render(make_brief(program_rules=PROGRAM))
    headings = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert "## Rules" not in headings and headings.count("### Rules") == 1
    assert headings.index("## Program: My program") < headings.index("### Goal") < headings.index("### Rules")


def test_curves_are_parsed_from_progress_lines():
    log = "\n".join(f"step {s:5d}/400  loss {5 - s / 100:.4f}  temperature {14 + s / 100:.3f}  lr 3e-4"
                    for s in range(50, 401, 50)) + "\nstep 3/4 loss nan\nnoise step 2 of 5\n"
    points = parse_curve(log)
    assert len(points) == 9 and (points[0].step, points[0].total, points[0].loss, points[0].temperature) == \
        (50, 400, 4.5, 14.5)
    assert points[-1].temperature is None and points[-1].loss != points[-1].loss     # NaN is kept, as NaN
    assert [p.step for p in checkpoints(points[:8])] == [50, 150, 250, 300, 400]


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.fixture
def eclip_repo(tmp_path) -> Path:
    """An eCLIP repository as `autoresearch init eclip` makes it, with a small fake prepared dataset
    (3 folds of 40/40/40 pairs) in place of the synthetic one, so no data generation is needed."""
    root = tmp_path / "eclip"
    root.mkdir()
    EclipTask().write(root, preset="cpu")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "eclip")
    write_fake_prepared(root / ".autoresearch", n_items=120, image_size=64, caption_len=64, phrase_len=16)
    fingerprints.record(config_mod.load(root))
    return root


def brief_cli(root: Path) -> str:
    result = CliRunner().invoke(app, ["brief", "-C", str(root), "--tag", "night"])
    assert result.exit_code == 0, result.output
    return result.output


def test_brief_on_a_fresh_eclip_repository_gives_the_numbers_that_bound_a_change(eclip_repo):
    text = brief_cli(eclip_repo)
    # what the agent gets first: experiment 1, after the baseline the loop runs itself
    assert text.startswith("# Experiment 1\n")
    assert "the loop runs the baseline itself" in text and "opens phase 1" in text
    limits = text[text.index("## The numbers that bound a change"):text.index("## Champion")]
    assert "about 60 s ([run] time_budget_s)" in limits            # per-fold time budget
    assert "killed at 180 s ([run] timeout_s)" in limits           # hard deadline
    assert "above 4 GB ([run] memory_gb)" in limits                # memory ceiling
    assert "3 folds per experiment" in limits
    assert "held-out chunk of 40/40/40 images" in limits           # gallery size
    assert "mean rank about 19.5/19.5/19.5" in limits              # what a random ranking scores
    assert "R@1 about 2.5%" in limits
    assert "3 steps on a small slice (deadline 60 s)" in limits     # the smoke test
    # one outline: the program is one section, the tools to look further are named
    headings = [ln for ln in text.splitlines() if ln.startswith("## ")]
    assert "## Rules" not in headings and "## Program: eCLIP on Ukiyo-eVG: research program" in headings
    assert "`read_run(number)`" in text and "`check_run(steps)`" in text and "`read_run(n)` tool" in text


def _fake_run(root: Path, number: int, *, values, steps=400, train_s=(80.0, 100.0, 90.0), description="", **row):
    """A finished row with what a real run leaves: each fold's facts.json and log."""
    config = config_mod.load(root)
    ledger = open_ledger(config)
    run_dir = config.state_dir / "runs" / f"{number:04d}"
    metrics = []
    for k, (value, seconds) in enumerate(zip(values, train_s)):
        (run_dir / f"fold{k}").mkdir(parents=True)
        (run_dir / f"fold{k}" / "facts.json").write_text(json.dumps(
            {"steps": steps, "train_seconds": seconds, "seconds": seconds + 12, "peak_memory_gb": 0.61 + k / 100,
             "final_loss": 2.5 + k / 10, "final_temperature": 19.5}))
        (run_dir / f"fold{k}.log").write_text("# autoresearch run\nfold 0: 80 items\n" + "\n".join(
            f"step {s:5d}/{steps}  loss {4.0 - s / 200:.4f}  temperature {14 + s / 100:.3f}  lr 1e-4"
            for s in range(50, steps + 1, 50)) + "\ndone\n")
        metrics.append({"mean_rank": value, "median_rank": value - 3, "i2t_r1": 0.1})
    ledger.start(number=number, tag="night", description=description, **row)
    ledger.finish(number, row.pop("status", "keep"), folds_json=list(values), metrics_json=metrics,
                  metric_mean=sum(values) / len(values), metric_std=1.0, train_seconds=sum(train_s),
                  peak_memory_gb=0.63, log_path=str(run_dir / "fold2.log"))
    ledger.close()


def test_brief_shows_the_champion_and_recent_runs_as_a_researcher_reads_them(eclip_repo):
    _fake_run(eclip_repo, 0, values=[11.0, 12.0, 13.0], kind="baseline", description="baseline")
    _fake_run(eclip_repo, 1, values=[15.0, 16.0, 14.0], kind="experiment", description="LR 3e-4 -> 1e-3",
              status="discard")
    text = brief_cli(eclip_repo)
    assert text.startswith("# Experiment 2\n") and "Current best mean_rank: 12 ± 1." in text
    champion = text[text.index("### Champion: experiment 0"):text.index("## Recent experiments in detail")]
    # per-fold metrics, time and memory
    assert "| fold | mean_rank | i2t_r1 | median_rank | steps | steps/s | seconds | peak GB |" in champion
    assert "| 0 | 11 | 0.1 | 8 | 400 | 5 | 92 | 0.61 | 2.5 | 19.5 |" in champion
    # the loss and temperature curve at a few checkpoints (fold 0's log)
    assert re.search(r"Loss curve \(fold 0\): step 50/400: loss 3\.75, temperature 14\.5; .*step 400/400: "
                     r"loss 2, temperature 18\.", champion)
    # the champion's speed, among the numbers that bound a change: 400 steps in 80, 100, 90 s
    speed = 400 / 80 + 400 / 100 + 400 / 90
    assert f"Champion speed: {speed / 3:.3g} training steps/s" in text and "Champion peak memory: 0.63 GB" in text
    recent = text[text.index("## Recent experiments in detail"):text.index("## History")]
    assert "### Experiment 1 [discard]: LR 3e-4 -> 1e-3" in recent and "| 1 | 16 |" in recent


def test_a_script_without_facts_gets_its_speed_from_its_log(tmp_path):
    from autoresearch.agents.brief import CurvePoint, FoldSummary, RunSummary
    from autoresearch.loop.runfacts import limits

    config = config_mod.parse(tmp_path, {"metric": {"source": "json", "key": "m"}, "run": {"folds": 2}})
    champ = RunSummary(0, "keep", "baseline", 1.0, 0.1, folds=[FoldSummary(0, 1.0), FoldSummary(1, 1.1)],
                       curve=[CurvePoint(100, 400, 2.0), CurvePoint(400, 400, 1.0)], train_seconds=200.0)
    lines = limits(config, [], champ)
    assert any("Champion time: 100 s a fold, about 4 steps/s counting start-up (step 400 of 400" in x
               for x in lines), lines
    assert "No fold ran: nothing changed." in render(make_brief(recent_runs=[
        RunSummary(3, "invalid", "x", None, None, reason="nothing changed")]))
