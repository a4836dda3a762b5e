"""kill -9 of the tool at random moments during `autoresearch run`, then resume to the end."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow   # trains for real or runs whole loops: deselect with -m 'not slow'

import random
import re

from autoresearch import config as config_mod
from autoresearch.loop.engine import open_ledger
from autoresearch.loop.gitops import Git, archive_ref
from procs import run_cli
from toyrepo import make_toy_repo

LRS = [0.005, 0.002, 0.001, 0.0005, 0.003, 0.0001]
QUEUE = "".join(f'[[experiment]]\ndescription = "LR -> {lr}"\nset = {{ LR = {lr} }}\n\n' for lr in LRS)


def _run(root, *, kill_after: float | None):
    run_cli(["run", "-C", str(root), "--experiments", str(len(LRS)), "--tag", "k"], kill_after=kill_after)


def test_kill_nine_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    root = make_toy_repo(tmp_path / "toy", sleep=0.5, queue=QUEUE, rule="greedy")
    rng = random.Random(1234)
    for _ in range(5):
        _run(root, kill_after=rng.uniform(0.5, 4.0))
    _run(root, kill_after=None)

    config = config_mod.load(root)
    ledger = open_ledger(config)
    rows = ledger.rows(tag="k")
    assert not ledger.running()
    finished = [r for r in rows if r.kind == "experiment" and r.status != "interrupted"]
    # Each queue entry ran to a result exactly once: nothing lost, nothing duplicated.
    assert sorted(r.meta["queue_index"] for r in finished) == list(range(len(LRS)))
    assert [r.number for r in rows] == sorted(r.number for r in rows)
    # The champion's recorded metric matches its commit, and the tree is exactly the branch head.
    git = Git(root)
    champ = ledger.champion("k")
    assert champ.description == "LR -> 0.001"
    assert re.search(rf"val_bpb: {champ.metric_mean:.2f} ± ", git.message(champ.commit))
    assert "LR = 0.001" in git.show(champ.commit, "train.py")
    assert git.current_branch() == "autoresearch/k"
    assert git.head() == ledger.get_meta("base:k")
    assert git.status() == []
    assert "LR = 0.001" in (root / "train.py").read_text()
    for r in finished:
        assert git.rev(archive_ref(r.number)) == r.commit
