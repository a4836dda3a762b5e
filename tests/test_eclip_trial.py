"""A short end-to-end eCLIP trial: init on synthetic data, the real train.py (shrunk), the tool's scorer."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow   # trains for real or runs whole loops: deselect with -m 'not slow'

import re

from typer.testing import CliRunner

from autoresearch.hyperparams import set_constants
from autoresearch.cli import app
from autoresearch.loop.gitops import Git
from autoresearch.runner import sandbox

runner = CliRunner()
FLAGS = [] if sandbox.available() else ["--no-sandbox"]
TINY = {"STEPS": 30, "WARMUP_STEPS": 5, "BATCH_SIZE": 16, "VIT_WIDTH": 32, "VIT_DEPTH": 1, "VIT_HEADS": 2,
        "TEXT_WIDTH": 32, "TEXT_HEADS": 2, "PROJ_DIM": 32, "LOG_EVERY": 10}


def test_init_then_trial_scores_every_fold(tmp_path):
    repo = tmp_path / "eclip"
    result = runner.invoke(app, ["init", "eclip", str(repo), "--n", "200"])
    assert result.exit_code == 0, result.output
    assert "3 folds of" in result.output
    for name in ("train.py", "program.md", "scratchpad.md", "autoresearch.toml", "queue.toml", "eclip/prepare.py"):
        assert (repo / name).is_file(), name
    assert (repo / ".autoresearch" / "secret" / "keys" / "fold_0.json").is_file()
    git = Git(repo)
    assert git.status() == []   # everything the task needs is committed; the data is ignored

    train = repo / "train.py"
    train.write_text(set_constants(train.read_text(), TINY))
    git("commit", "-qam", "tiny model for the test")
    result = runner.invoke(app, ["trial", "-C", str(repo), *FLAGS])
    assert result.exit_code == 0, result.output
    m = re.search(r"mean_rank: ([0-9.]+) ± ([0-9.]+)\s+folds \[([0-9., ]+)\]", result.output)
    assert m, result.output
    folds = [float(x) for x in m.group(3).split(",")]
    assert len(folds) == 3
    gallery = int(re.search(r"gallery (\d+) per fold", result.output).group(1))
    assert all(0 <= f <= gallery - 1 for f in folds)
    # Editing the fixed preparation code is caught before anything runs.
    prep = repo / "eclip" / "prepare.py"
    prep.write_text(prep.read_text() + "\n# changed\n")
    git("commit", "-qam", "tamper")
    result = runner.invoke(app, ["trial", "-C", str(repo), *FLAGS])
    assert result.exit_code == 2 and "eclip/prepare.py (modified)" in " ".join(result.output.split())
