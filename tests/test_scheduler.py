"""Several candidates in flight on the toy task: working copies, serial decisions, the stale rule, resume."""

from __future__ import annotations

import pytest

import random
import re
from datetime import datetime

from autoresearch import config as config_mod
from autoresearch.loop import rebase
from autoresearch.loop.engine import open_ledger
from autoresearch.loop.gitops import Git, archive_ref
from autoresearch.session import Session
from consistency import check_consistent
from procs import run_cli
from toyrepo import DIVERGE, make_toy_repo

LRS = [0.005, 0.002, 0.001, 0.0005, 0.003, 0.0001]
QUEUE = "".join(f'[[experiment]]\ndescription = "LR -> {lr}"\nset = {{ LR = {lr} }}\n\n' for lr in LRS)


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _check_consistent(root, tag: str) -> list:
    return check_consistent(root, tag, len(LRS))


@pytest.mark.slow
def test_three_candidates_in_flight_decided_one_at_a_time(tmp_path):
    root = make_toy_repo(tmp_path / "toy", sleep=0.6, queue=QUEUE, rule="greedy")
    stop = Session(root, tag="p").run("replay", experiments=len(LRS), parallel=3, no_sandbox=True)
    assert stop.why == f"reached {len(LRS)} experiments"
    rows = _check_consistent(root, "p")
    # They really ran at once: some experiment started before another one ended.
    assert any(_t(a.started_at) < _t(b.ended_at) and _t(b.started_at) < _t(a.ended_at)
               for a in rows for b in rows if a.number < b.number)
    # The stale rule was exercised and recorded its evidence.
    stale = [r for r in rows if r.decision.get("numbers", {}).get("stale")]
    assert stale
    for r in stale:
        info = r.decision["numbers"]["stale"]
        assert info["parent"] != info["champion_then"] and info["values_on_parent"]


def test_reapply_text_constants_and_conflicts(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    git = Git(root)
    git.init()
    (root / "train.py").write_text("LR = 0.01\nWIDTH = 4\n\ndef f():\n    return LR\n")
    (root / "notes.md").write_text("# notes\n")
    base = git.commit(["train.py", "notes.md"], "base\n")

    def commit_on(parent, text, msg):
        return rebase.overlay(root, parent, {"train.py": text.encode()}, msg)

    width = commit_on(base, "LR = 0.01\nWIDTH = 8\n\ndef f():\n    return LR\n", "width\n")
    lr = commit_on(base, "LR = 0.001\nWIDTH = 4\n\ndef f():\n    return LR\n", "lr\n")
    other_lr = commit_on(base, "LR = 0.005\nWIDTH = 4\n\ndef f():\n    return LR\n", "lr2\n")
    code = commit_on(base, "LR = 0.01\nWIDTH = 4\n\ndef f():\n    return LR * 2\n", "code\n")
    code2 = commit_on(base, "LR = 0.01\nWIDTH = 4\n\ndef f():\n    return LR / 2\n", "code2\n")
    # A text patch that applies: both changes end up in the new commit, on the new base.
    moved = rebase.reapply(root, base, lr, width, ["train.py"], "moved\n")
    assert rebase.show(root, moved, "train.py").decode().startswith("LR = 0.001\nWIDTH = 8\n")
    assert git("rev-parse", f"{moved}^").strip() == width
    # The same constant changed on both sides: the candidate's value is set on the new champion.
    again = rebase.reapply(root, base, lr, other_lr, ["train.py"], "again\n")
    assert rebase.show(root, again, "train.py").decode().startswith("LR = 0.001\n")
    # Code changed on both sides at the same place: a conflict.
    assert rebase.reapply(root, base, code, code2, ["train.py"], "x\n") is None
    assert git.status() == []   # no tree was touched


def test_merge_notes():
    assert rebase.merge_notes("a\n", "a\nmine\n", "a\ntheirs\n") == "a\ntheirs\nmine\n"
    assert rebase.merge_notes("a\n", "a\n", "a\ntheirs\n") == "a\ntheirs\n"
    assert rebase.merge_notes("a\n", "a\nmine\n", "a\n") == "a\nmine\n"
    assert rebase.merge_notes("a\nb\n", "b\nmine\n", "a\nb\nt\n") == "a\nb\nt\nmine\n"   # cut copy


def _run(root, *, kill_after: float | None):
    run_cli(["run", "-C", str(root), "--experiments", str(len(LRS)), "--tag", "k", "--parallel", "3", "--no-sandbox"], kill_after=kill_after)


@pytest.mark.slow
def test_kill_nine_with_candidates_in_flight_loses_and_duplicates_nothing(tmp_path):
    root = make_toy_repo(tmp_path / "toy", sleep=0.8, queue=QUEUE, rule="greedy")
    rng = random.Random(99)
    for _ in range(4):
        _run(root, kill_after=rng.uniform(1.5, 5.0))
    _run(root, kill_after=None)
    rows = _check_consistent(root, "k")
    assert any(r.status == "interrupted" for r in rows)   # some were cut off in flight and re-proposed


@pytest.mark.slow
def test_report_marks_concurrent_and_stale_experiments(tmp_path):
    root = make_toy_repo(tmp_path / "toy", sleep=0.6, queue=QUEUE, rule="greedy")
    session = Session(root, tag="p")
    session.run("replay", experiments=4, parallel=3, no_sandbox=True)
    page = session.report().read_text()
    assert "∥ " in page
    from autoresearch.report.html import parallel_marks

    marks = parallel_marks(session.rows())
    rows = {r.number: r for r in session.rows()}
    assert marks and all(rows[n].kind == "experiment" for n in marks)
    for n, text in marks.items():
        for other in text.split(";")[0].removeprefix("∥ ").split(", "):
            if other.strip().isdigit():
                assert "∥ " in marks.get(int(other), "")   # overlap is mutual
    if any(r.decision.get("numbers", {}).get("stale") for r in rows.values()):
        assert "re-run on the new champion" in page or "stale" in page


CONFLICT_QUEUE = '''\
[[experiment]]
description = "offset 1.0 -> 0.5"
replace = [{ file = "train.py", old = "+ 1.0 + rng", new = "+ 0.5 + rng" }]

[[experiment]]
description = "offset 1.0 -> 0.7"
replace = [{ file = "train.py", old = "+ 1.0 + rng", new = "+ 0.7 + rng" }]
'''


@pytest.mark.slow
def test_a_stale_candidate_whose_code_conflicts_is_recorded_stale(tmp_path):
    # Both start from the baseline and both beat it; whichever is decided second finds the other kept,
    # and its edit of the same line no longer applies.
    root = make_toy_repo(tmp_path / "toy", sleep=1.0, queue=CONFLICT_QUEUE, rule="greedy")
    session = Session(root, tag="c")
    session.run("replay", experiments=2, parallel=2, no_sandbox=True)
    rows = {r.status: r for r in session.rows(kinds=("experiment",))}
    assert set(rows) == {"keep", "stale"}
    stale = rows["stale"]
    assert "conflicts with the new champion" in stale.reason
    assert stale.decision["numbers"]["stale"]["parent"] == 0
    git = Git(root)
    assert git.rev(archive_ref(stale.number)) == stale.commit
    assert "status: stale" in git.message(stale.commit)
    kept_line = "+ 0.5 + rng" if "0.5" in rows["keep"].description else "+ 0.7 + rng"
    assert kept_line in (root / "train.py").read_text() and git.status() == []


CRASH_QUEUE = """\
[[experiment]]
description = "halve LR in code (crashes first)"
replace = [{ file = "train.py", old = "val = (math", new = "LR = LR / 2\\nraise SystemExit(3)\\nval = (math" }]
fix = [{ file = "train.py", old = "raise SystemExit(3)\\n", new = "" }]

[[experiment]]
description = "LR -> 0.001"
set = { LR = 0.001 }

""" + DIVERGE


@pytest.mark.slow
def test_candidates_in_flight_get_the_smoke_test_and_the_champions_curves(tmp_path):
    """With several candidates in flight each still runs its smoke test first (a crash costs no fold), gets
    its crash-fix turn, and is compared with the curves and fold scores of the champion it was proposed from."""
    root = make_toy_repo(tmp_path / "toy", sleep=0.2, queue=CRASH_QUEUE, rule="greedy")
    Session(root, tag="p").run("replay", experiments=4, parallel=2, no_sandbox=True)
    ledger = open_ledger(config_mod.load(root))
    rows = ledger.rows(tag="p", kinds=("experiment",))
    crash = next(r for r in rows if r.status == "crash")
    assert crash.reason.startswith("smoke test: exit code 3"), crash.reason
    run_dir = root / ".autoresearch" / "runs" / f"{crash.number:04d}"
    assert (run_dir / "smoke.log").is_file() and not (run_dir / "fold0.log").exists()
    fixed = next(r for r in rows if r.description.endswith("(crash fix)"))
    assert fixed.attempt == 2 and fixed.status in ("keep", "discard") and fixed.meta["fix"] is True
    other = next(r for r in rows if r.description == "LR -> 0.001")
    assert other.status == "keep" and len(other.folds) == 2
    assert (root / ".autoresearch" / "runs" / f"{other.number:04d}" / "smoke.log").is_file()
    diverged = next(r for r in rows if r.description == "diverge")
    assert diverged.status == "aborted" and "10.00x the champion's" in diverged.reason
    assert diverged.decision["abort"]["champion"] == [[1, 1.0], [2, 0.5]]
