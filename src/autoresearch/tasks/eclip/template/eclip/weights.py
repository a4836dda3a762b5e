"""Reading pretrained tower weights from local files (fixed: the agent cannot edit this file).

Two formats, read by key, never by position:

- an image tower in timm's ViT layout (``patch_embed.proj.weight``, ``cls_token``, ``pos_embed``,
  ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``), as a ``.safetensors`` file or a
  ``torch.save``'d state dict (``.pth``/``.pt``/``.bin``);
- a text tower in a Hugging Face ``save_pretrained`` folder: ``config.json``, ``model.safetensors`` or
  ``pytorch_model.bin``, and ``vocab.txt``. DistilBERT keys are used as they are; BERT-layout keys (BERT,
  MiniLM) are renamed to DistilBERT's, so one text tower class in ``train.py`` loads both.

``load_exact`` is the only way weights reach a model: every parameter and buffer of the model must be in the
checkpoint with the same shape, and every checkpoint key must be used or be a known head that a contrastive
tower does not need. Anything else is a ``WeightsError`` naming the key and the file, never a partial load.
Nothing here imports transformers: a run starts in well under a second.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# Checkpoint entries a contrastive tower has no use for: classifier heads and MLM/NSP/pooler heads.
VIT_HEADS = ("head.", "head_drop.", "fc_norm.")
TEXT_HEADS = ("vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "pooler.", "cls.", "qa_outputs.",
              "classifier.", "pre_classifier.", "embeddings.position_ids", "embeddings.token_type_ids")
TEXT_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# BERT names -> DistilBERT names (the layout of train.py's text tower). Applied to keys without the model prefix.
_BERT_RENAMES = (
    (r"^encoder\.layer\.(\d+)\.attention\.self\.query\.", r"transformer.layer.\1.attention.q_lin."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.key\.", r"transformer.layer.\1.attention.k_lin."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.value\.", r"transformer.layer.\1.attention.v_lin."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"transformer.layer.\1.attention.out_lin."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"transformer.layer.\1.sa_layer_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"transformer.layer.\1.ffn.lin1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"transformer.layer.\1.ffn.lin2."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"transformer.layer.\1.output_layer_norm."),
)


class WeightsError(ValueError):
    """A checkpoint that does not fit: the message names the file, the key and the fix."""


# ------------------------------------------------------------------------------------------------ reading
def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``torch.save``'d state dict (optionally under "state_dict"/"model")."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file   # imported here: runs without pretrained weights never need it
        try:
            return load_file(str(path))
        except Exception as exc:   # a torn download or another format behind the suffix: name the file
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable PyTorch state dict ({exc})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a dict of tensors (a state dict), got {type(state).__name__}")
    return state


def strip_prefix(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Remove the first of ``prefixes`` that every model key carries (``module.``, ``distilbert.``, ``bert.``)."""
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    return state


# ------------------------------------------------------------------------------------------------ loading
def check_keys(expected: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor], origin: str,
               ignore: tuple[str, ...] = (), hint: str = "") -> dict[str, torch.Tensor]:
    """The entries of ``state`` that fill ``expected`` (key -> shape); a WeightsError otherwise.

    Names the first missing key, the first key of the wrong shape, or the first key that has no place
    (unless it starts with one of ``ignore``, the heads a contrastive tower does not use).
    """
    used = {k: v for k, v in state.items() if not k.startswith(ignore)}
    fix = f"; {hint}" if hint else ""
    missing = [k for k in expected if k not in used]
    if missing:
        raise WeightsError(f"{origin}: key {missing[0]!r} is missing from the checkpoint "
                           f"({len(missing)} missing in all){fix}")
    for key, shape in expected.items():
        if tuple(used[key].shape) != tuple(shape):
            raise WeightsError(f"{origin}: key {key!r} has shape {list(used[key].shape)} in the checkpoint but "
                               f"{list(shape)} in the model{fix}")
    extra = [k for k in used if k not in expected]
    if extra:
        raise WeightsError(f"{origin}: key {extra[0]!r} has no place in the model ({len(extra)} such keys); "
                           f"the checkpoint is a different architecture{fix}")
    return used


def load_exact(module: torch.nn.Module, state: dict[str, torch.Tensor], origin: str,
               ignore: tuple[str, ...] = (), hint: str = "") -> int:
    """Copy ``state`` into ``module`` by key, every key checked first; returns how many head keys were ignored."""
    target = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    used = check_keys(target, state, origin, ignore, hint)
    module.load_state_dict(used, strict=True)
    return len(state) - len(used)


# ------------------------------------------------------------------------------------------------ the ViT
def vit_dims(state: dict[str, torch.Tensor], origin: str) -> dict[str, Any]:
    """Width, depth, patch size, MLP ratio and heads of a timm ViT checkpoint (heads = width / 64, timm's
    convention for every ViT size from Ti to L: the weights themselves do not record the head count)."""
    for key in ("patch_embed.proj.weight", "pos_embed", "cls_token", "blocks.0.mlp.fc1.weight"):
        if key not in state:
            raise WeightsError(f"{origin}: key {key!r} is missing; not a timm VisionTransformer checkpoint "
                               "(ViT-S/16 is `vit_small_patch16_224`)")
    width, _, patch, _ = state["patch_embed.proj.weight"].shape
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    return {"VIT_WIDTH": int(width), "VIT_DEPTH": max(blocks) + 1, "PATCH_SIZE": int(patch),
            "VIT_HEADS": max(1, int(width) // 64),
            "VIT_MLP_RATIO": state["blocks.0.mlp.fc1.weight"].shape[0] / int(width)}


def vit_keys(width: int, depth: int, patch: int, mlp_ratio: float, tokens: int) -> dict[str, tuple[int, ...]]:
    """Every key and shape of a timm VisionTransformer with a CLS token and ``tokens`` positions (no head)."""
    hidden = int(width * mlp_ratio)
    keys: dict[str, tuple[int, ...]] = {"cls_token": (1, 1, width), "pos_embed": (1, tokens, width),
                                        "patch_embed.proj.weight": (width, 3, patch, patch),
                                        "patch_embed.proj.bias": (width,)}
    for i in range(depth):
        b = f"blocks.{i}."
        keys.update({b + "norm1.weight": (width,), b + "norm1.bias": (width,),
                     b + "attn.qkv.weight": (3 * width, width), b + "attn.qkv.bias": (3 * width,),
                     b + "attn.proj.weight": (width, width), b + "attn.proj.bias": (width,),
                     b + "norm2.weight": (width,), b + "norm2.bias": (width,),
                     b + "mlp.fc1.weight": (hidden, width), b + "mlp.fc1.bias": (hidden,),
                     b + "mlp.fc2.weight": (width, hidden), b + "mlp.fc2.bias": (width,)})
    keys.update({"norm.weight": (width,), "norm.bias": (width,)})
    return keys


def resample_pos_embed(state: dict[str, torch.Tensor], tokens: int) -> bool:
    """Bicubically resize the patch grid of ``pos_embed`` to ``tokens`` (CLS + a square grid); True if resized.

    A checkpoint trained at 224 px serves a model at another resolution; this is the one shape change that
    is made on purpose, and the caller says so.
    """
    pos = state["pos_embed"]
    if pos.shape[1] == tokens:
        return False
    old, new = math.isqrt(pos.shape[1] - 1), math.isqrt(tokens - 1)
    if old * old != pos.shape[1] - 1 or new * new != tokens - 1:
        return False   # not a square grid plus CLS: load_exact reports the shape mismatch
    grid = pos[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    state["pos_embed"] = torch.cat([pos[:, :1].float(), grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)], 1)
    return True


# ------------------------------------------------------------------------------------------------ text
def text_files(folder: Path | str) -> dict[str, Path]:
    """``config``, ``weights`` and ``vocab`` paths of a save_pretrained folder; a WeightsError names what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"{folder}: not a folder; the text tower needs a Hugging Face save_pretrained "
                           "folder (config.json, model.safetensors or pytorch_model.bin, vocab.txt)")
    files = {"config": folder / "config.json", "vocab": folder / "vocab.txt"}
    weights = [folder / name for name in TEXT_WEIGHT_FILES if (folder / name).is_file()]
    for name, path in files.items():
        if not path.is_file():
            raise WeightsError(f"{folder}: {path.name} is missing (a save_pretrained folder has config.json, "
                               "the weights and vocab.txt; a WordPiece model is needed, its vocab.txt tokenises)")
    if not weights:
        raise WeightsError(f"{folder}: no {' or '.join(TEXT_WEIGHT_FILES)}")
    return {**files, "weights": weights[0]}


def text_config(folder: Path | str) -> dict[str, Any]:
    """The text tower's architecture from config.json, in one vocabulary for DistilBERT and BERT layouts."""
    files = text_files(folder)
    try:
        cfg = json.loads(files["config"].read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{files['config']}: not readable JSON ({exc})") from None
    kind = cfg.get("model_type")
    try:
        if kind == "distilbert":
            out = {"layout": "distilbert", "width": cfg["dim"], "layers": cfg["n_layers"], "heads": cfg["n_heads"],
                   "ffn": cfg["hidden_dim"], "dropout": cfg.get("dropout", 0.1),
                   "attention_dropout": cfg.get("attention_dropout", 0.1), "activation": cfg.get("activation", "gelu"),
                   "type_vocab_size": 0, "eps": 1e-12}
            if cfg.get("sinusoidal_pos_embds"):
                raise WeightsError(f"{files['config']}: sinusoidal_pos_embds is not supported (learned positions only)")
        elif kind == "bert":
            out = {"layout": "bert", "width": cfg["hidden_size"], "layers": cfg["num_hidden_layers"],
                   "heads": cfg["num_attention_heads"], "ffn": cfg["intermediate_size"],
                   "dropout": cfg.get("hidden_dropout_prob", 0.1),
                   "attention_dropout": cfg.get("attention_probs_dropout_prob", 0.1),
                   "activation": cfg.get("hidden_act", "gelu"), "type_vocab_size": cfg.get("type_vocab_size", 2),
                   "eps": cfg.get("layer_norm_eps", 1e-12)}
            if cfg.get("position_embedding_type", "absolute") != "absolute":
                raise WeightsError(f"{files['config']}: position_embedding_type "
                                   f"{cfg['position_embedding_type']!r} is not supported (absolute only)")
        else:
            raise WeightsError(f"{files['config']}: model_type {kind!r} is not supported; the text tower loads "
                               "DistilBERT (model_type \"distilbert\") or BERT-layout models such as MiniLM (\"bert\")")
        out.update(vocab_size=cfg["vocab_size"], max_positions=cfg["max_position_embeddings"],
                   pad_id=cfg.get("pad_token_id", 0) or 0)
    except KeyError as exc:
        raise WeightsError(f"{files['config']}: key {exc.args[0]!r} is missing") from None
    if out["activation"] != "gelu":
        raise WeightsError(f"{files['config']}: activation {out['activation']!r} is not supported (gelu only)")
    return out


def read_vocab(path: Path | str) -> list[str]:
    tokens = Path(path).read_text(encoding="utf-8").splitlines()
    while tokens and tokens[-1] == "":
        tokens.pop()
    return tokens


def check_vocab(folder: Path | str, cfg: dict[str, Any]) -> list[str]:
    """The folder's vocab.txt, which must have exactly the config's vocab_size entries.

    A mismatch is what transformers offline produces when it silently falls back to a stub tokenizer, and
    what a vocab.txt from another model looks like: token ids would index the wrong embedding rows.
    """
    files = text_files(folder)
    tokens = read_vocab(files["vocab"])
    if len(tokens) != cfg["vocab_size"]:
        raise WeightsError(f"{files['vocab']}: {len(tokens)} tokens but config.json says vocab_size "
                           f"{cfg['vocab_size']}; the vocabulary must be the model's own")
    return tokens


def text_keys(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the text tower ``cfg`` describes, under DistilBERT names (no heads)."""
    w, f = cfg["width"], cfg["ffn"]
    keys: dict[str, tuple[int, ...]] = {"embeddings.word_embeddings.weight": (cfg["vocab_size"], w),
                                        "embeddings.position_embeddings.weight": (cfg["max_positions"], w)}
    if cfg["type_vocab_size"]:
        keys["embeddings.token_type_embeddings.weight"] = (cfg["type_vocab_size"], w)
    keys.update({"embeddings.LayerNorm.weight": (w,), "embeddings.LayerNorm.bias": (w,)})
    for i in range(cfg["layers"]):
        b = f"transformer.layer.{i}."
        for lin in ("q_lin", "k_lin", "v_lin", "out_lin"):
            keys.update({f"{b}attention.{lin}.weight": (w, w), f"{b}attention.{lin}.bias": (w,)})
        keys.update({b + "sa_layer_norm.weight": (w,), b + "sa_layer_norm.bias": (w,),
                     b + "ffn.lin1.weight": (f, w), b + "ffn.lin1.bias": (f,),
                     b + "ffn.lin2.weight": (w, f), b + "ffn.lin2.bias": (w,),
                     b + "output_layer_norm.weight": (w,), b + "output_layer_norm.bias": (w,)})
    return keys


def text_state(folder: Path | str, cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The text checkpoint's tensors under DistilBERT names (prefix removed, BERT layout renamed)."""
    state = strip_prefix(read_state_dict(text_files(folder)["weights"]), ("distilbert.", "bert.", "model."))
    # Checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta.
    state = {re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)): v
             for k, v in state.items()}
    if cfg["layout"] == "bert":
        renamed = {}
        for key, value in state.items():
            for pattern, repl in _BERT_RENAMES:
                key = re.sub(pattern, repl, key)
            renamed[key] = value
        state = renamed
    return state
