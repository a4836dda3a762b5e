"""The eCLIP template: run-time I/O, the editable train.py, presets, the task's config, program and queue."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from autoresearch import config as config_mod
from autoresearch.agents.base import AgentContext
from autoresearch.hyperparams import read_constants, set_constants
from autoresearch.agents.replay import load_queue
from autoresearch.errors import UserError
from autoresearch.loop.phases import load_program
from autoresearch.tasks.eclip import presets
from eclip_fake_data import fold_env, write_fake_prepared

TEMPLATE = Path(presets.__file__).parent / "template"
TRAIN_PY = TEMPLATE / "train.py"
ENV_NAMES = ("AUTORESEARCH_MODE", "AUTORESEARCH_FOLD", "AUTORESEARCH_SEED", "AUTORESEARCH_DATA",
             "AUTORESEARCH_TRAIN", "AUTORESEARCH_QUERIES", "AUTORESEARCH_OUT")
TINY = {"IMAGE_SIZE": 32, "VIT_WIDTH": 32, "VIT_DEPTH": 1, "VIT_HEADS": 2, "TEXT_WIDTH": 32, "TEXT_LAYERS": 1,
        "TEXT_HEADS": 2, "TEXT_LEN": 16, "PHRASE_LEN": 8, "PROJ_DIM": 16, "BATCH_SIZE": 8, "STEPS": 6,
        "WARMUP_STEPS": 2, "LOG_EVERY": 3}


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def io():
    return _load_module(TEMPLATE / "eclip" / "io.py", "eclip_io_under_test")


@pytest.fixture(scope="module")
def train():
    """The template train.py as a module (its `from eclip.io import ...` resolves to the template)."""
    sys.path.insert(0, str(TEMPLATE))
    try:
        module = _load_module(TRAIN_PY, "eclip_train_under_test")
    finally:
        sys.path.remove(str(TEMPLATE))
    for name, value in TINY.items():
        setattr(module, name, value)
    return module


@pytest.fixture
def prepared(tmp_path):
    return write_fake_prepared(tmp_path, n_items=30, image_size=32, caption_len=16, phrase_len=8)


# ----------------------------------------------------------------------------------------------- eclip/io.py
def test_load_run_concatenates_chunks_and_reindexes_phrases(io, prepared, tmp_path, monkeypatch):
    for key, value in fold_env(prepared, 0, tmp_path, seed=7).items():
        monkeypatch.setenv(key, value)
    run = io.load_run()
    chunks = [torch.load(prepared / f"chunk_{k}.pt") for k in (1, 2)]
    assert (run.mode, run.fold, run.seed, run.out_dir) == ("fold", 0, 7, tmp_path)
    assert len(run.train) == sum(len(c["images"]) for c in chunks) == 20
    assert torch.equal(run.train.images, torch.cat([c["images"] for c in chunks]))
    # every phrase still points at the item it belonged to in its own chunk
    n0 = len(chunks[0]["images"])
    expected = torch.cat([chunks[0]["phrase_item"], chunks[1]["phrase_item"] + n0])
    assert torch.equal(run.train.phrase_item, expected)
    assert torch.equal(run.train.captions[run.train.phrase_item[-1]], chunks[1]["captions"][chunks[1]["phrase_item"][-1]])
    assert len(run.queries.image_ids) == 10 and run.queries.images.shape == (10, 3, 32, 32)
    assert run.meta["vocab_size"] == len(run.vocab_path.read_text().splitlines())


def test_load_run_without_environment_says_how_to_run(io, monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(io.RunSetupError) as err:
        io.load_run()
    assert "AUTORESEARCH_MODE" in err.value.message and "autoresearch trial" in err.value.message


def test_load_run_names_a_missing_chunk(io, prepared, tmp_path, monkeypatch):
    for key, value in fold_env(prepared, 0, tmp_path).items():
        monkeypatch.setenv(key, value)
    (prepared / "chunk_2.pt").unlink()
    with pytest.raises(io.RunSetupError, match="chunk_2.pt does not exist"):
        io.load_run()


def test_write_outputs_is_readable_without_pickle_and_strict_json(io, tmp_path):
    queries = io.Queries(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), ["a", "b", "c"],
                         torch.zeros(3, 4, dtype=torch.int32), ["x", "y", "z"])
    img = torch.randn(3, 5, dtype=torch.float64)
    io.write_outputs(img, np.ones((3, 5)), queries, {"final_loss": float("nan"), "steps": 4}, out_dir=tmp_path)
    with np.load(tmp_path / "embeddings.npz", allow_pickle=False) as npz:
        assert list(npz["image_ids"]) == ["a", "b", "c"] and list(npz["caption_ids"]) == ["x", "y", "z"]
        assert npz["image_emb"].dtype == np.float32 and npz["caption_emb"].shape == (3, 5)
        np.testing.assert_allclose(npz["image_emb"], img.numpy(), rtol=1e-6)
    assert json.loads((tmp_path / "facts.json").read_text()) == {"final_loss": None, "steps": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings.npz", "facts.json"]   # no temp files
    with pytest.raises(ValueError, match="one row per query id"):
        io.write_outputs(np.ones((2, 5)), np.ones((3, 5)), queries, {}, out_dir=tmp_path)


# ------------------------------------------------------------------------------------------------- train.py
@pytest.mark.slow
def test_train_py_runs_end_to_end_and_writes_valid_outputs(prepared, tmp_path):
    repo, out = tmp_path / "repo", tmp_path / "out"
    out.mkdir()
    shutil.copytree(TEMPLATE / "eclip", repo / "eclip", ignore=shutil.ignore_patterns("__pycache__"))
    values = {**TINY, "EXPERT_PROB": 1.0, "WISE_FT_ALPHA": 0.5}
    (repo / "train.py").write_text(set_constants(TRAIN_PY.read_text(), values))
    env = {**os.environ, **fold_env(prepared, 1, out, seed=3), "AUTORESEARCH_CPUS": "2"}
    proc = subprocess.run([sys.executable, "train.py"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "step     6/6" in proc.stdout
    with np.load(out / "embeddings.npz", allow_pickle=False) as npz:
        query = torch.load(prepared / "queries" / "fold_1.pt")
        assert list(npz["image_ids"]) == query["image_ids"] and list(npz["caption_ids"]) == query["caption_ids"]
        for key in ("image_emb", "caption_emb"):
            emb = npz[key]
            assert emb.shape == (10, 16) and emb.dtype == np.float32 and np.isfinite(emb).all()
            np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    facts = json.loads((out / "facts.json").read_text())
    assert facts["steps"] == 6 and facts["n_params"] > 0 and facts["seconds"] > 0
    assert math.isfinite(facts["final_loss"]) and facts["peak_memory_gb"] > 0
    assert facts["final_temperature"] == pytest.approx(2.0)
    assert facts["seed"] == 3 + 1 and facts["threads"] == 2          # SEED_PER_FOLD; AUTORESEARCH_CPUS
    # facts.json rounds each time to 0.01 s, so the three may disagree by up to 0.015 s
    assert facts["setup_seconds"] <= facts["seconds"] - facts["train_seconds"] + 0.015


def test_train_py_reads_no_overrides_from_the_environment():
    source = TRAIN_PY.read_text()
    assert "os.environ.get" not in source and "getenv" not in source


def _loss_and_scale_grad(train, model):
    torch.manual_seed(0)
    images = torch.randn(4, 3, 32, 32)
    ids = torch.randint(5, 20, (4, 10))
    scale = model.temperature()
    loss = train.info_nce(model.encode_image(images), model.encode_text(ids), scale)
    model.zero_grad()
    loss.backward()
    return scale.item(), model.logit_scale.grad.item()


@pytest.mark.slow
def test_logit_scale_bounds(train, monkeypatch):
    model = train.build_model(30, 0)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    scale, grad = _loss_and_scale_grad(train, model)
    assert scale == pytest.approx(2.0) and grad == 0.0          # held at the upper bound
    monkeypatch.setattr(train, "MAX_TEMPERATURE", 100.0)
    scale, grad = _loss_and_scale_grad(train, model)
    assert scale == pytest.approx(1 / 0.07, rel=1e-5) and grad != 0.0


def test_heatmap_processor_shapes_unit_norm_and_dependence_on_heatmap(train):
    torch.manual_seed(0)
    proc = train.HeatmapProcessor(32, 4, 16)
    images = torch.randn(5, 3, 64, 64)
    out = proc(images, torch.rand(5, 1, 64, 64))
    assert out.shape == (5, 32)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))
    assert not torch.allclose(out, proc(images, torch.rand(5, 1, 64, 64)))


def test_heatmap_processor_shares_one_layernorm_like_the_seed(train):
    shared, separate = train.HeatmapProcessor(32, 4, 16), train.HeatmapProcessor(32, 4, 16, shared_norm=False)
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in shared.modules()) == 1
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in separate.modules()) == 2
    model = train.build_model(30, 0)
    assert model.image_proj.bias is not None and model.text_proj.bias is not None   # PROJ_BIAS, as the seed


def test_vit_uses_timm_names(train):
    vit = train.VisionTransformer(32, 16, 32, 2, 2, 4.0)
    names = set(vit.state_dict())
    for key in ("patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.1.norm1.weight", "blocks.1.attn.qkv.weight",
                "blocks.1.attn.proj.bias", "blocks.1.norm2.bias", "blocks.1.mlp.fc1.weight", "blocks.1.mlp.fc2.bias",
                "norm.weight"):
        assert key in names


def test_text_tower_trims_nothing_that_matters(train):
    """Padding columns are masked: cutting them off (as the training loop does) leaves the output unchanged."""
    torch.manual_seed(0)
    tower = train.TextTransformer(train.text_config(40, 0), "mean").eval()
    ids = torch.tensor([[2, 7, 9, 3, 0, 0, 0, 0, 0, 0], [2, 5, 3, 0, 0, 0, 0, 0, 0, 0]])
    lengths = train.token_lengths(ids, 0)
    assert lengths.tolist() == [4, 3] and train.trimmed(lengths, 32) == 8 and train.trimmed(lengths, 6) == 6
    torch.testing.assert_close(tower(ids), tower(ids[:, :8]), atol=1e-5, rtol=1e-5)


def test_wise_ft_interpolates_towards_the_initial_weights(train):
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    start = {k: v.clone() for k, v in layer.state_dict().items()}
    with torch.no_grad():
        layer.weight.add_(1.0)
    trained = layer.weight.detach().clone()
    train.wise_ft(layer, start, 0.25)
    torch.testing.assert_close(layer.weight.detach(), 0.75 * trained + 0.25 * start["weight"])
    torch.testing.assert_close(layer.bias.detach(), start["bias"])


def test_schedule_warms_up_from_zero_then_decays_to_zero(train, monkeypatch):
    monkeypatch.setattr(train, "STEPS", 100)
    monkeypatch.setattr(train, "WARMUP_STEPS", 10)
    assert train.lr_factor(0) == 0.0 and train.lr_factor(9) == pytest.approx(0.9)   # the seed's step / WARMUP
    assert train.lr_factor(10) == pytest.approx(1.0) and train.lr_factor(55) == pytest.approx(0.5)
    assert train.lr_factor(100) == pytest.approx(0.0, abs=1e-12)


def test_expert_sampler_draws_distinct_items_and_their_own_phrases(train):
    torch.manual_seed(0)
    phrase_item = torch.tensor([4, 0, 4, 7, 2, 2, 2, 9])
    sampler = train.ExpertSampler(phrase_item, 10)
    assert len(sampler) == 5
    for _ in range(20):
        items, phrases = sampler.sample()
        assert len(set(items.tolist())) == len(items) == 5
        assert torch.equal(phrase_item[phrases], items)
    sampler = train.ExpertSampler(phrase_item, 2)           # passes over the items, like the seed's loader
    seen = torch.cat([sampler.sample()[0] for _ in range(2)])
    assert len(set(seen.tolist())) == 4


# -------------------------------------------------------------------------------------------------- presets
def test_template_carries_the_cpu_preset_and_seed_preset_applies():
    source = TRAIN_PY.read_text()
    assert presets.apply_preset(source, "cpu") == source
    seeded = presets.apply_preset(source, "seed")
    values = read_constants(seeded)
    assert (values["VIT_WIDTH"], values["VIT_DEPTH"], values["VIT_HEADS"], values["IMAGE_SIZE"]) == (384, 12, 6, 224)
    assert (values["TEXT_WIDTH"], values["TEXT_LAYERS"], values["TEXT_HEADS"], values["TEXT_LEN"]) == (768, 6, 12, 128)
    assert re.search(r"^VIT_WIDTH = 384 +# ViT embedding width$", seeded, re.MULTILINE)     # comment kept
    assert presets.image_size("seed") == 224 and presets.image_size("cpu") == 64
    for name in ("cpu", "seed"):
        data, constants = presets.data_settings(name), presets.PRESETS[name]
        assert data["image_size"] == constants["IMAGE_SIZE"] and data["caption_len"] >= constants["TEXT_LEN"]
        assert data["phrase_len"] >= constants["PHRASE_LEN"]
    with pytest.raises(UserError, match="unknown eCLIP preset 'gpu'"):
        presets.apply_preset(source, "gpu")


def test_seed_preset_matches_the_published_constants():
    values = read_constants(TRAIN_PY.read_text())
    seed = {"PROJ_DIM": 128, "BATCH_SIZE": 48, "LR": 3e-4, "WEIGHT_DECAY": 1e-4, "STEPS": 400, "WARMUP_STEPS": 40,
            "EXPERT_PROB": 0.3, "MIXUP_ALPHA": 0.3, "AUX_LOSS_WEIGHT": 0.1, "INIT_TEMPERATURE": 0.07,
            "MIN_TEMPERATURE": 0.01, "MAX_TEMPERATURE": 2.0, "WISE_FT_ALPHA": 0.0, "PROJ_BIAS": True,
            "SHARED_QK_NORM": True, "DECAY_ALL": True, "SEED_PER_FOLD": True}
    assert {k: values[k] for k in seed} == seed
    assert {k: read_constants(presets.apply_preset(TRAIN_PY.read_text(), "seed"))[k] for k in seed} == seed
    assert presets.run_settings("seed")["seed"] == 42          # fold k trains with 42 + k


# ------------------------------------------------------------------------------- autoresearch.toml, program, queue
def test_task_config_loads_and_search_space_names_constants():
    cfg = config_mod.load(TEMPLATE)
    assert (cfg.task.name, cfg.metric.name, cfg.metric.direction, cfg.metric.source) == \
        ("eclip", "mean_rank", "minimize", "eclip")
    assert cfg.run.folds == 3 and cfg.run.timeout_s >= 2.5 * cfg.run.time_budget_s
    assert set(cfg.task.editable) == {"train.py", "scratchpad.md"}
    constants = read_constants(TRAIN_PY.read_text())
    assert {p.name for p in cfg.search_space} == {"LR", "BATCH_SIZE", "WARMUP_STEPS", "MAX_TEMPERATURE",
                                                  "EXPERT_PROB", "PROJ_DIM", "WEIGHT_DECAY"}
    assert all(p.name in constants for p in cfg.search_space)


def test_program_has_five_phases_with_budgets():
    program = load_program(TEMPLATE / "program.md")
    assert [p.number for p in program.phases] == [1, 2, 3, 4, 5]
    assert all(p.budget > 0 and p.patience > 0 for p in program.phases)
    assert [p.multi_change for p in program.phases] == [False, False, False, False, True]
    assert "one change per experiment" in program.preamble.lower()


def test_queue_applies_in_order_to_the_template_and_each_step_compiles(tmp_path):
    context = AgentContext(root=TEMPLATE, editable=["train.py", "scratchpad.md"], denied=[])
    entries = load_queue(TEMPLATE / "queue.toml", context)
    assert 12 <= len(entries) <= 14
    raw = tomllib.loads((TEMPLATE / "queue.toml").read_text())["experiment"]
    assert [e["description"] for e in raw][:2] == ["Lower LR from 3e-4 to 1e-4", "Raise MAX_TEMPERATURE from 2 to 100"]
    source = TRAIN_PY.read_text()
    for entry in entries:
        if entry.values:
            source = set_constants(source, entry.values)
        for edit in entry.replace:
            assert source.count(edit.old) == 1, f"entry {entry.index + 1}: {edit.old!r}"
            source = source.replace(edit.old, edit.new)
        compile(source, f"train.py after entry {entry.index + 1}", "exec")
    final = read_constants(source)
    assert (final["LR"], final["MAX_TEMPERATURE"], final["BATCH_SIZE"], final["PROJ_DIM"]) == (1e-3, 100.0, 64, 256)
    assert "label_smoothing=0.1" in source and "average.lerp_" in source


# -------------------------------------------------------------------------------------------- eclip/optim.py
@pytest.fixture(scope="module")
def optim():
    return _load_module(TEMPLATE / "eclip" / "optim.py", "eclip_optim_under_test")


@pytest.mark.parametrize("fused", [False, True])
def test_adamw_matches_torch_optim_step_by_step(optim, fused):
    if fused and not hasattr(torch, "_fused_adamw_"):
        pytest.skip("this torch has no fused AdamW kernel")
    torch.manual_seed(0)
    ours_params = [torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True), torch.randn(2, requires_grad=True)]
    ref_params = [p.detach().clone().requires_grad_(True) for p in ours_params]
    groups = lambda ps: [{"params": ps[:2], "weight_decay": 0.1}, {"params": ps[2:], "weight_decay": 0.0, "lr": 0.05}]
    ours = optim.AdamW(groups(ours_params), lr=0.01, fused=fused)
    ref = torch.optim.AdamW(groups(ref_params), lr=0.01, fused=fused)
    ours_sched, ref_sched = optim.LambdaLR(ours, lambda s: s / 3), torch.optim.lr_scheduler.LambdaLR(ref, lambda s: s / 3)
    for step in range(6):
        grads = [torch.randn_like(p) for p in ours_params]
        for params in (ours_params, ref_params):
            for i, (p, g) in enumerate(zip(params, grads)):
                p.grad = None if (i == 1 and step % 2) else g.clone()    # a parameter without a gradient is skipped
        ours.step()
        ref.step()
        ours_sched.step()
        ref_sched.step()
        assert ours_sched.get_last_lr() == pytest.approx(ref_sched.get_last_lr())
        for a, b in zip(ours_params, ref_params):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    ours.zero_grad()
    assert all(p.grad is None for p in ours_params)


def test_a_run_never_imports_torch_dynamo():
    """torch.optim imports torch._dynamo (1-2 s a fold); the model, the loss and eclip.optim must not."""
    code = f"""
import sys, torch
sys.path.insert(0, {str(TEMPLATE)!r})
import train
from eclip.optim import AdamW, LambdaLR
model = train.build_model(50, 0)
opt = AdamW(model.parameters(), lr=1e-3)
sched = LambdaLR(opt, train.lr_factor)
x = torch.randn(2, 3, 64, 64)
loss = train.info_nce(model.encode_image(x), model.encode_text(torch.randint(5, 50, (2, 7))), model.temperature())
loss = loss + model.heatmap(x, torch.rand(2, 1, 64, 64)).sum()
loss.backward()
torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
opt.step(); sched.step(); opt.zero_grad()
assert "torch._dynamo" not in sys.modules and "transformers" not in sys.modules, "a heavy import crept in"
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
