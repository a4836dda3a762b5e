"""The command line on the toy repository: run, status, show, brief, report, baseline and errors."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from autoresearch.cli import app
from autoresearch.runner import sandbox
from toyrepo import make_toy_repo

runner = CliRunner()
FLAGS = [] if sandbox.available() else ["--no-sandbox"]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    root = make_toy_repo(tmp_path_factory.mktemp("cli") / "toy")
    result = runner.invoke(app, ["run", "-C", str(root), "--tag", "c", *FLAGS])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def toy(ran, tmp_path):
    """A private copy of the repository after one run, so no test sees another's changes."""
    root = tmp_path / "toy"
    shutil.copytree(ran, root, symlinks=True)
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


def test_final_scores_once_and_warns_on_reuse(toy):
    first = runner.invoke(app, ["final", "-C", str(toy), *FLAGS])
    assert first.exit_code == 0, first.output
    assert "one-time score" in first.output and "warning" not in first.output
    second = runner.invoke(app, ["final", "-C", str(toy), *FLAGS])
    assert second.exit_code == 0, second.output
    assert "has been used 1 time" in second.output
    from autoresearch import config as config_mod
    from autoresearch.loop.engine import open_ledger

    ledger = open_ledger(config_mod.load(toy))
    assert len(ledger.events("test_used")) == 2
    assert [r.kind for r in ledger.rows()].count("final") == 2
    # The final rows never reach an agent's brief.
    brief = runner.invoke(app, ["brief", "-C", str(toy)])
    assert "final:" not in brief.output


def test_data_synth_writes_the_ukiyoe_layout(tmp_path):
    result = runner.invoke(app, ["data", "synth", str(tmp_path / "d"), "--n", "20", "--seed", "3"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert names == ["images", "ukiyoe_vg_test_annotated.jsonl", "ukiyoe_vg_train_pgt_odvg.jsonl",
                     "ukiyoe_vg_val_pgt_odvg.jsonl"]
    assert len(list((tmp_path / "d" / "images").iterdir())) == 20


@pytest.mark.slow
def test_init_toy_then_run_completes_a_short_loop(tmp_path):
    target = tmp_path / "toy"
    result = runner.invoke(app, ["init", "toy", str(target)])
    assert result.exit_code == 0, result.output
    assert "created" in result.output
    result = runner.invoke(app, ["run", "-C", str(target), "--agent", "replay", *FLAGS])
    assert result.exit_code == 0, result.output
    assert "the agent has nothing more to propose" in result.output
    assert "keep: 2" in result.output                  # LR 1e-3 and WIDTH 32 are real improvements
    assert "only a random seed / comments changed" in result.output


def test_square_brackets_in_messages_are_printed(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    config = root / "autoresearch.toml"
    config.write_text(config.read_text().replace('direction = "minimize"', 'direction = "sideways"'))
    result = runner.invoke(app, ["status", "-C", str(root)])
    assert result.exit_code == 2
    assert "[metric] direction" in result.output        # not swallowed as markup
    help_text = runner.invoke(app, ["trial", "--help"]).output
    assert "[run] seed" in help_text
