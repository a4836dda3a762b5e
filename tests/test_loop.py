"""The loop end to end on a Karpathy-style toy repository (only a configuration file added)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from autoresearch import config as config_mod
from autoresearch.agents import make_agent
from autoresearch.agents.base import AgentContext
from autoresearch.loop.engine import Engine, open_ledger
from autoresearch.loop.gitops import Git, archive_ref
from autoresearch.runner import sandbox
from toyrepo import Vandal, make_toy_repo

SANDBOX = sandbox.available()


def _engine(root: Path, agent_name: str = "replay", tag: str = "t1") -> Engine:
    config = config_mod.load(root)
    ledger = open_ledger(config)
    context = AgentContext(root=config.root, editable=["train.py", "scratchpad.md"], denied=[config.state_dir])
    engine = Engine(config, tag=tag, sandbox=SANDBOX, ledger=ledger)
    engine.agent = make_agent(agent_name, config, context, tag=tag)
    return engine


@pytest.mark.slow
def test_toy_repository_runs_under_the_loop(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    engine = _engine(root)
    stop = engine.run()
    assert "nothing more" in stop.why
    rows = engine.ledger.rows(tag="t1")
    by_desc = {r.description: r for r in rows if r.kind == "experiment"}
    # baseline, keep, discard, crash then fix, seed-only
    assert rows[0].kind == "baseline" and rows[0].status == "keep"
    assert by_desc["LR 1e-2 -> 1e-3"].status == "keep"
    assert by_desc["LR 1e-3 -> 1e-1"].status == "discard"
    crash = [r for r in rows if r.description.startswith("halve LR")]
    assert [r.status for r in crash][:1] == ["crash"] and "exit code 3" in crash[0].reason
    assert crash[1].attempt == 2 and crash[1].status == "discard" and crash[1].metric_mean > 1.05
    seed = by_desc["a different seed"]
    assert seed.status == "discard" and "seed" in seed.reason
    # The champion is the LR change; its metric is recorded in its commit message.
    git = Git(root)
    champ = engine.ledger.champion("t1")
    assert champ.description == "LR 1e-2 -> 1e-3" or champ.description.startswith("print the metric")
    message = git.message(champ.commit)
    assert re.search(rf"val_bpb: {champ.metric_mean:.2f} ± ", message)
    assert "changed: LR=0.001 (was 0.01)" in git.message(by_desc["LR 1e-2 -> 1e-3"].commit)
    # Every attempt survives in git under refs/autoresearch/archive/<n>.
    for r in rows[1:]:
        if r.kind == "experiment" and r.status != "invalid":
            assert git.rev(archive_ref(r.number)) == r.commit

    # The branch head carries the champion's code; the discarded LR=0.1 is not in it.
    assert "LR = 0.001" in (root / "train.py").read_text()
    assert git.current_branch() == "autoresearch/t1"
    assert git.status() == []
    # The scratchpad kept notes from discarded experiments too.
    assert "LR 1e-3 -> 1e-1" in (root / "scratchpad.md").read_text()
    # Exports
    tsv = root / "results.tsv"
    engine.ledger.export_tsv(tsv, tag="t1", metric_name="val_bpb")
    lines = tsv.read_text().splitlines()
    assert lines[0].split("\t") == ["commit", "val_bpb", "memory_gb", "status", "description"]
    assert len(lines) == 1 + len(rows)




@pytest.mark.parametrize("action, reason", [
    (lambda w: (w / "program.md").write_text("new rules"), "not editable"),
    (lambda w: (w / "evil.py").write_text("x = 1"), "new file"),
    (lambda w: (w / "queue.toml").unlink(), "deleted"),
    (lambda w: ((w / ".git" / "hooks").mkdir(parents=True),
                (w / ".git" / "hooks" / "post-commit").write_text("#!/bin/sh\necho pwned\n")), "new folder .git"),
    (lambda w: (w / "train.py").write_text("def broken(:\n"), "does not compile"),
    (lambda w: None, "nothing changed"),
    (lambda w: ((w / "train.py").unlink(), (w / "train.py").symlink_to("/etc/passwd")), "symbolic link"),
    (lambda w: (w / "train.py").chmod(0o755), "mode"),
])
def test_forbidden_edits_are_invalid_and_undone(tmp_path, action, reason):
    root = make_toy_repo(tmp_path / "toy")
    engine = _engine(root)
    engine.prepare()
    champ = engine.ensure_baseline()
    before = (root / "train.py").read_text()
    engine.agent = Vandal(action)
    row, trial = engine.experiment()
    assert row.status == "invalid" and reason in row.reason, row.reason
    assert trial is None
    assert (root / "train.py").read_text() == before
    assert (root / "program.md").read_text().startswith("# Toy program")
    assert (root / "queue.toml").is_file() and not (root / "evil.py").exists()
    assert not (root / ".git" / "hooks" / "post-commit").exists()
    assert Git(root).status() == []
    assert engine.ledger.champion("t1").number == champ.number
    # The next brief tells the agent what happened.
    assert any("invalid" in note for note in engine.brief(engine.phase()[0]).notes)


def test_phases_advance_from_the_ledger(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    engine = _engine(root)
    engine.run(max_experiments=3)
    phases = [r.phase for r in engine.ledger.rows(tag="t1", kinds=("experiment",))]
    assert phases[0] == 1
    # Phase 1 has a budget of 3 experiments: the next one is in phase 2.
    assert engine.phase()[0].number == 2


def test_interrupted_experiment_is_recorded_and_proposed_again(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    engine = _engine(root)
    engine.prepare()
    engine.ensure_baseline()
    # Simulate the tool dying mid-run: a row left running and a candidate in the tree.
    number = engine.ledger.start(tag="t1", kind="experiment", phase=1, description="LR 1e-2 -> 1e-3",
                                 meta_json={"queue_index": 0})
    (root / "train.py").write_text((root / "train.py").read_text().replace("LR = 0.01", "LR = 0.5"))
    engine2 = _engine(root)
    engine2.run(max_experiments=1)
    assert engine2.ledger.get(number).status == "interrupted"
    done = [r for r in engine2.ledger.rows(tag="t1", kinds=("experiment",)) if r.status != "interrupted"]
    assert done[0].description == "LR 1e-2 -> 1e-3" and done[0].status == "keep"
    assert Git(root).status() == []


@pytest.mark.slow
def test_optuna_agent_drives_the_loop(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    engine = _engine(root, agent_name="optuna")
    engine.run(max_experiments=4)
    rows = engine.ledger.rows(tag="t1", kinds=("experiment",))
    assert len([r for r in rows if r.status != "interrupted"]) == 4
    assert all("trial" in r.meta for r in rows)
    assert (root / ".autoresearch" / "optuna.db").is_file()
    lines = [json.loads(x) for x in engine.ledger.export_jsonl(tmp_path / "all.jsonl").read_text().splitlines()]
    assert len(lines) == len(engine.ledger.rows())


def test_a_lucky_seed_change_is_recorded_and_reverted(tmp_path):
    """A change of the random seed alone is never an improvement, even when its number is better."""
    queue = '[[experiment]]\ndescription = "try seed 5"\nset = { SEED = 5 }\n'
    root = make_toy_repo(tmp_path / "toy", queue=queue)
    train = root / "train.py"
    # The toy's metric depends on the seed constant: seed 5 happens to score 0.3 better.
    train.write_text(train.read_text().replace('print(f"val_bpb', 'val -= 0.3 if SEED == 5 else 0.0\nprint(f"val_bpb'))
    git = Git(root)
    git("commit", "-qam", "lucky seed toy")
    engine = _engine(root)
    engine.run()
    row = [r for r in engine.ledger.rows(tag="t1") if r.kind == "experiment"][0]
    champ = engine.ledger.champion("t1")
    assert row.metric_mean < champ.metric_mean - 0.25          # it did score better...
    assert row.status == "discard" and "seed" in row.reason     # ...and was still reverted
    assert champ.kind == "baseline"
    assert "SEED = 0" in train.read_text()
