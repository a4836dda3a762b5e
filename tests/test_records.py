"""Tamper evidence: a ledger row or a ref changed outside the tool is named at the next start, never believed.

Each case records a short night on the toy task, changes what the tool recorded the way a person (or an
agent with ordinary file access) could, and checks that the next start stops with the change named, that
`autoresearch verify` names it too, and that `verify --accept` lets a person take the ledger as it is.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

import autoresearch
from autoresearch.errors import UserError
from autoresearch.loop import records
from autoresearch.loop.gitops import Git, archive_ref
from autoresearch.loop.ledger import CHAIN_HEAD
from autoresearch.session import Session
from toyrepo import make_toy_repo

QUEUE = "".join(f'[[experiment]]\ndescription = "LR -> {lr}"\nset = {{ LR = {lr} }}\n\n'
                for lr in (0.001, 0.1, 0.002))


@pytest.fixture()
def night(tmp_path):
    root = make_toy_repo(tmp_path / "toy", queue=QUEUE, rule="greedy")
    session = autoresearch.open(root, tag="t")
    session.run("replay", experiments=3, no_sandbox=True)
    return root


def _sql(root, statement, *args):
    db = sqlite3.connect(root / ".autoresearch" / "ledger.sqlite")
    db.execute(statement, args)
    db.commit()
    db.close()


def _resume(root):
    Session(root, tag="t").run("replay", experiments=4, no_sandbox=True)


def test_an_untouched_night_verifies(night):
    assert Session(night, tag="t").verify() == []


def test_a_discarded_experiment_rewritten_as_kept_is_named_and_not_believed(night):
    session = Session(night, tag="t")
    discarded = next(r for r in session.rows(("experiment",)) if r.status == "discard")
    champion = session.champion().number
    _sql(night, "UPDATE experiments SET status='keep', metric_mean=0.5 WHERE number=?", discarded.number)
    problems = Session(night, tag="t").verify()
    assert any(f"experiment {discarded.number}: its record was changed" in p for p in problems), problems
    with pytest.raises(UserError, match=f"experiment {discarded.number}: its record was changed"):
        _resume(night)
    out = subprocess.run([sys.executable, "-m", "autoresearch", "verify", "-C", str(night)], capture_output=True, text=True)
    assert out.returncode == 1 and f"experiment {discarded.number}" in out.stdout
    # A person who made the change on purpose accepts it; the loop goes on from the ledger as it is.
    accepted = Session(night, tag="t").verify(accept=True)
    assert accepted == problems and Session(night, tag="t").verify() == []
    assert Session(night, tag="t").champion().number == discarded.number != champion
    _resume(night)
    assert Session(night, tag="t").ledger.events("records_accepted")


def test_a_deleted_row_is_named(night):
    session = Session(night, tag="t")
    victim = session.rows(("experiment",))[1].number
    _sql(night, "DELETE FROM experiments WHERE number=?", victim)
    problems = Session(night, tag="t").verify()
    assert any("a row was deleted" in p for p in problems), problems


def test_rows_removed_from_the_end_are_named_by_git(night):
    session = Session(night, tag="t")
    rows = session.ledger.rows()
    last = rows[-1]
    _sql(night, "DELETE FROM experiments WHERE number=?", last.number)
    _sql(night, "UPDATE meta SET value=? WHERE key=?", f'"{last.chain_prev}"', CHAIN_HEAD)
    problems = Session(night, tag="t").verify()
    assert any("git's record of the chain" in p or "a row was deleted" in p for p in problems), problems


def test_a_moved_archive_ref_is_named(night):
    git = Git(night)
    session = Session(night, tag="t")
    row = session.rows(("experiment",))[0]
    git.update_ref(archive_ref(row.number), git.rev("HEAD~0") if row.commit != git.head() else git.rev("HEAD~1"))
    problems = Session(night, tag="t").verify()
    assert any(archive_ref(row.number) in p for p in problems), problems


def test_a_stop_between_the_seal_and_gits_anchor_is_finished_not_reported(night):
    git = Git(night)
    session = Session(night, tag="t")
    behind = session.ledger.rows()[-2].digest
    records.anchor(git, behind)                       # as if git's copy of the head had not moved yet
    assert records.verify(session.ledger, git, repair=False)      # seen ...
    assert records.verify(session.ledger, git) == []              # ... and finished at start-up
    assert records.anchored(git) == session.ledger.get_meta(CHAIN_HEAD)


def test_a_ledger_rewritten_during_an_agents_turn_stops_the_run(tmp_path):
    """An agent that runs inside the tool and rewrites the ledger while it proposes: the loop stops after
    the turn, names the row, and records nothing on top of the forged chain."""
    from toyrepo import Vandal

    root = make_toy_repo(tmp_path / "toy", queue=QUEUE, rule="greedy")
    session = autoresearch.open(root, tag="t")
    session.run("replay", experiments=2, no_sandbox=True)
    discarded = next(r for r in session.rows(("experiment",)) if r.status == "discard")

    def forge(work):
        _sql(root, "UPDATE experiments SET status='keep' WHERE number=?", discarded.number)
        (work / "train.py").write_text((work / "train.py").read_text().replace("LR = 0.001", "LR = 0.002"))

    before = len(session.ledger.rows())
    with pytest.raises(UserError, match=f"changed during the agent's turn: experiment {discarded.number}"):
        session.run(Vandal(forge), experiments=3, no_sandbox=True)
    assert len(Session(root, tag="t").ledger.rows()) == before
