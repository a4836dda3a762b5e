"""kill -9 of the tool at random moments during `autoresearch run`, then resume to the end."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow   # runs whole loops again and again: deselect with -m 'not slow'

import random

from autoresearch import config as config_mod
from autoresearch.loop.engine import open_ledger
from consistency import check_consistent
from procs import run_cli
from toyrepo import make_toy_repo

LRS = [0.005, 0.002, 0.001, 0.0005, 0.003, 0.0001]
QUEUE = "".join(f'[[experiment]]\ndescription = "LR -> {lr}"\nset = {{ LR = {lr} }}\n\n' for lr in LRS)
KILLS = 30     # per setting: 60 kills in all, at random instants of the run


def _run(root, parallel: int, *, kill_after: float | None):
    run_cli(["run", "-C", str(root), "--experiments", str(len(LRS)), "--tag", "k", "--parallel", str(parallel),
             "--no-sandbox"], kill_after=kill_after)


@pytest.mark.parametrize("parallel", [1, 2])
def test_kill_nine_at_random_moments_loses_and_duplicates_nothing(tmp_path, parallel):
    """kill -9 of the whole process group at random instants (start-up, an agent turn, a run, a record,
    a ref update), again and again, then a resume to the end: the ledger, the branch, the archive refs and
    every candidate's notes agree, each queue entry has exactly one result, and every seal holds."""
    root = make_toy_repo(tmp_path / "toy", sleep=0.4, queue=QUEUE, rule="greedy")
    rng = random.Random(1234 + parallel)
    for _ in range(KILLS):
        _run(root, parallel, kill_after=rng.uniform(0.6, 3.0))
    _run(root, parallel, kill_after=None)
    rows = check_consistent(root, "k", len(LRS))
    champ = open_ledger(config_mod.load(root)).champion("k")
    assert champ.description == "LR -> 0.001" and "LR = 0.001" in (root / "train.py").read_text()
    assert any(r.status == "interrupted" for r in rows)      # the storm did cut experiments off
