"""One consistency check over a repository the loop has worked in: the ledger, the branch, the archive refs
and the scratchpad agree, and nothing was lost or duplicated. Used after kill -9 storms and parallel runs."""

from __future__ import annotations

import re
from pathlib import Path

from autoresearch import config as config_mod
from autoresearch.loop import records
from autoresearch.loop.engine import open_ledger
from autoresearch.loop.gitops import Git, archive_ref
from autoresearch.loop.state import LoopState

NOT_RESULTS = ("interrupted", "contention", "agent_error")


def check_consistent(root: Path, tag: str, queue_size: int) -> list:
    """Assert everything the loop promises after any stop; returns the tag's experiment rows."""
    config = config_mod.load(root)
    ledger = open_ledger(config)
    git = Git(root)
    state = LoopState(config, ledger, tag)
    rows = ledger.rows(tag=tag, kinds=("experiment",))
    assert not ledger.running()
    assert records.verify(ledger, git, repair=False) == []          # every seal holds, git agrees
    finished = [r for r in rows if r.status not in NOT_RESULTS]
    # Each queue entry ran to a result exactly once: nothing lost, nothing duplicated.
    assert sorted(r.meta["queue_index"] for r in finished) == list(range(queue_size))
    # Every attempt is in git: a result's archive ref is its result commit; a cut-off one keeps its candidate.
    for r in rows:
        want = r.commit if r.status not in ("interrupted",) or r.commit else r.candidate_commit
        if want:
            assert git.rev(archive_ref(r.number)) == want, (r.number, r.status)
    # The branch is the recorded base, the tree is clean, the champion's message carries its metric.
    assert git.current_branch() == f"autoresearch/{tag}"
    assert git.head() == state.base() and git.status() == []
    champ = ledger.champion(tag)
    if champ.kind == "experiment":
        assert re.search(rf"val_bpb: {champ.metric_mean:.2f} ± ", git.message(champ.commit))
    # Each keep was decided against the champion of its moment.
    kept = sorted((r for r in ledger.rows(tag=tag) if r.status == "keep" and r.kind in ("baseline", "experiment")),
                  key=lambda r: (r.ended_at, r.number))
    assert kept[-1].number == champ.number
    for older, newer in zip(kept, kept[1:]):
        assert newer.parent_commit == older.commit and git.is_ancestor(older.commit, newer.commit)
    # Every finished candidate's notes reached the branch, kept or not, exactly once.
    pad = (root / config.task.scratchpad).read_text()
    for r in finished:
        line = f"- Exp {r.number} (plan #{r.meta['queue_index'] + 1})"
        assert pad.count(line) == 1, (line, r.status)
    return rows
