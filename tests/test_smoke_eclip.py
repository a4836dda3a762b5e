"""The eCLIP task honours the smoke test: ``load_run`` gives a slice (first chunk, first items, first
queries) and ``run.steps(STEPS)`` caps the template's training loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from autoresearch.hyperparams import set_constants
from eclip_fake_data import fold_env, write_fake_prepared
from test_eclip_train import TEMPLATE, TINY, TRAIN_PY, io  # noqa: F401  (io is a fixture)


@pytest.fixture
def prepared(tmp_path):
    return write_fake_prepared(tmp_path, n_items=30, image_size=32, caption_len=16, phrase_len=8)


def test_load_run_in_a_smoke_test_gives_a_slice_and_a_step_cap(io, prepared, tmp_path, monkeypatch):
    for key, value in fold_env(prepared, 0, tmp_path).items():
        monkeypatch.setenv(key, value)
    full = io.load_run()
    assert full.max_steps is None and not full.smoke and full.steps(400) == 400
    monkeypatch.setenv("AUTORESEARCH_SMOKE", "1")
    monkeypatch.setenv("AUTORESEARCH_SMOKE_STEPS", "3")
    monkeypatch.setattr(io, "SMOKE_ITEMS", 4)
    run = io.load_run()
    assert run.smoke and run.steps(400) == 3 and run.steps(2) == 2
    chunk1 = torch.load(prepared / "chunk_1.pt")          # fold 0 trains on chunks 1 and 2: the first is 1
    assert len(run.train) == 4 and torch.equal(run.train.images, chunk1["images"][:4])
    keep = chunk1["phrase_item"] < 4
    assert torch.equal(run.train.phrase_item, chunk1["phrase_item"][keep])
    assert torch.equal(run.train.phrases, chunk1["phrases"][keep])
    assert run.queries.image_ids == full.queries.image_ids[:4] and run.queries.caption_ids == full.queries.caption_ids[:4]
    assert torch.equal(run.queries.captions, full.queries.captions[:4])


@pytest.mark.slow
def test_train_py_stops_after_the_smoke_steps_and_writes_outputs(prepared, tmp_path):
    repo, out = tmp_path / "repo", tmp_path / "out"
    out.mkdir()
    (repo / "eclip").mkdir(parents=True)
    for module in (TEMPLATE / "eclip").glob("*.py"):   # the fixed package train.py imports (io, optim, weights)
        (repo / "eclip" / module.name).write_text(module.read_text())
    (repo / "eclip" / "__init__.py").write_text("")
    (repo / "train.py").write_text(set_constants(TRAIN_PY.read_text(), {**TINY, "LOG_EVERY": 1}))
    env = {**os.environ, **fold_env(prepared, 1, out), "AUTORESEARCH_SMOKE": "1", "AUTORESEARCH_SMOKE_STEPS": "2"}
    proc = subprocess.run([sys.executable, "train.py"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "step     2/6" in proc.stdout and "step     3/6" not in proc.stdout
    with np.load(out / "embeddings.npz", allow_pickle=False) as npz:
        assert npz["image_emb"].shape == (10, 16)


@pytest.mark.slow
def test_an_eclip_candidate_that_crashes_after_loading_runs_no_fold(tmp_path):
    """The real eCLIP repository of the adversarial suite (its fast baseline), with the smoke test on: a
    candidate that crashes right after loading its data is caught by the smoke run on the slice."""
    from adversarial import BASELINE, Attacker, build_repo, write_train
    from autoresearch import config as config_mod
    from autoresearch.loop import fingerprints
    from autoresearch.loop.engine import Engine, open_ledger
    from autoresearch.runner import sandbox

    config = build_repo(tmp_path / "eclip")
    toml = config.path
    toml.write_text(toml.read_text().replace("\nenabled = false\n", "\nenabled = true\n"))
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "smoke on"],
                   cwd=config.root, check=True)
    config = config_mod.load(config.root)
    fingerprints.record(config)
    assert config.smoke.enabled
    crashing = BASELINE.replace("V = int(run.meta", "print('train items', len(run.train), 'queries', "
                                "len(run.queries.image_ids), 'smoke', run.smoke, flush=True)\n"
                                "raise RuntimeError('eclip smoke marker 3b7e')\nV = int(run.meta")
    engine = Engine(config, tag="s", sandbox=sandbox.available(), ledger=open_ledger(config),
                    agent=Attacker(write_train(crashing), "crash after loading"))
    engine.run(max_experiments=1)
    row = engine.ledger.rows(tag="s", kinds=("experiment",))[0]
    assert row.status == "crash" and row.reason.startswith("smoke test: ") and "eclip smoke marker 3b7e" in row.reason
    run_dir = config.state_dir / "runs" / f"{row.number:04d}"
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["smoke.log"] and row.folds == []
    log = (run_dir / "smoke.log").read_text()
    chunk = int(json.loads((config.state_dir / "prepared" / "meta.json").read_text())["counts"]["chunks"][1])
    assert f"train items {min(chunk, 256)} queries" in log and "smoke True" in log   # the first chunk only
