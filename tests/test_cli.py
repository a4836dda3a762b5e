"""The command line on the toy repository: run, status, show, brief, report, baseline and errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from autoresearch.cli import app
from autoresearch.runner import sandbox
from toyrepo import make_toy_repo

runner = CliRunner()
FLAGS = [] if sandbox.available() else ["--no-sandbox"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = make_toy_repo(tmp_path_factory.mktemp("cli") / "toy")
    result = runner.invoke(app, ["run", "-C", str(root), "--tag", "c", *FLAGS])
    assert result.exit_code == 0, result.output
    return root


def test_run_prints_progress_and_stops_cleanly(toy):
    result = runner.invoke(app, ["status", "-C", str(toy)])
    assert result.exit_code == 0, result.output
    assert "champion: experiment 1" in result.output
    assert "keep: 1" in result.output and "discard" in result.output


def test_show_prints_diff_metrics_and_log(toy):
    result = runner.invoke(app, ["show", "1", "-C", str(toy)])
    assert result.exit_code == 0, result.output
    assert "-LR = 0.01" in result.output and "+LR = 0.001" in result.output
    assert "val_bpb: 1.0" in result.output
    assert "--- log tail ---" in result.output


def test_brief_shows_what_the_agent_sees(toy):
    result = runner.invoke(app, ["brief", "-C", str(toy)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "val_bpb" in out and "lower is better" in out
    assert "everything else" in out          # the current phase's title
    assert "LR 1e-2 -> 1e-3" in out           # the history


def test_report_writes_page_plot_and_exports(toy):
    result = runner.invoke(app, ["report", "-C", str(toy)])
    assert result.exit_code == 0, result.output
    for name in ("index.html", "progress.png", "results.tsv", "results.jsonl"):
        assert (toy / "report" / name).stat().st_size > 0
    assert len((toy / "report" / "results.tsv").read_text().splitlines()) >= 6


def test_baseline_records_a_noise_floor(toy):
    result = runner.invoke(app, ["baseline", "-C", str(toy), "--repeats", "2", *FLAGS])
    assert result.exit_code == 0, result.output
    assert "noise floor" in result.output
    status = runner.invoke(app, ["status", "-C", str(toy)])
    assert "champion: experiment 1" in status.output   # noise rows never become champions


def test_user_errors_are_one_clear_message(tmp_path):
    result = runner.invoke(app, ["status", "-C", str(tmp_path)])
    assert result.exit_code == 2
    assert "no autoresearch.toml" in result.output and "hint" in result.output
    result = runner.invoke(app, ["init", "nosuchtask", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown task" in result.output
