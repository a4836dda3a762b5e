"""Size presets of the eCLIP task: the model constants of ``train.py`` and the matching data settings.

``cpu`` (the default, and the values written in the template) trains one fold in about a minute on two
CPU cores, so a 3-fold experiment takes a few minutes. ``seed`` is the seed's experiment: ViT-S/16 at 224 px
and DistilBERT-base sizes, 400 steps at batch 48 (the seed's baseline before it raised steps to 800), fold k
seeded 42 + k. Its towers start from random weights unless ``init`` is given ``--image-weights`` and
``--text-weights`` (the seed used ImageNet-pretrained ViT-S/16 and pretrained DistilBERT); those options
write ``PRETRAINED_IMAGE``/``PRETRAINED_TEXT`` and the checkpoint's sizes over the preset's.

Both presets follow the seed's model details (``SEED_DETAILS``); docs/seed-differences.md lists where the
code differs from the seed's on purpose.
"""

from __future__ import annotations

from typing import Any

from autoresearch.hyperparams import UnknownConstant, read_constants, set_constants
from autoresearch.errors import UserError

DEFAULT_PRESET = "cpu"

# The seed's choices where ours once differed: one LayerNorm for the heatmap processor's queries and keys,
# projections with a bias, weight decay on every parameter, LR = step / WARMUP_STEPS (0 at the first step),
# fold k seeded seed + k. Nothing argued for the other choice on the cpu preset, so it follows them too.
SEED_DETAILS: dict[str, Any] = {"SHARED_QK_NORM": True, "PROJ_BIAS": True, "DECAY_ALL": True, "SEED_PER_FOLD": True}

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "IMAGE_SIZE": 64, "PATCH_SIZE": 16, "VIT_WIDTH": 96, "VIT_DEPTH": 3, "VIT_HEADS": 3,
        "TEXT_WIDTH": 96, "TEXT_LAYERS": 1, "TEXT_HEADS": 3, "TEXT_LEN": 32, "PHRASE_LEN": 16,
        "HEATMAP_PATCH": 16, "BATCH_SIZE": 48, "STEPS": 400, "WARMUP_STEPS": 40,
        "PRETRAINED_IMAGE": "", "PRETRAINED_TEXT": "", **SEED_DETAILS,
    },
    "seed": {
        "IMAGE_SIZE": 224, "PATCH_SIZE": 16, "VIT_WIDTH": 384, "VIT_DEPTH": 12, "VIT_HEADS": 6,
        "TEXT_WIDTH": 768, "TEXT_LAYERS": 6, "TEXT_HEADS": 12, "TEXT_LEN": 128, "PHRASE_LEN": 64,
        "HEATMAP_PATCH": 16, "BATCH_SIZE": 48, "STEPS": 400, "WARMUP_STEPS": 40,
        "PRETRAINED_IMAGE": "", "PRETRAINED_TEXT": "", **SEED_DETAILS,
    },
}

# What `eclip/prepare.py` should produce for each preset. Captions are prepared longer than the cpu
# preset's TEXT_LEN (32) so that using more of each caption is a change an experiment can make.
DATA: dict[str, dict[str, int]] = {
    "cpu": {"image_size": 64, "caption_len": 64, "phrase_len": 16},
    "seed": {"image_size": 224, "caption_len": 128, "phrase_len": 64},
}

# [run] settings per fold: the expected time, the hard deadline at about three times that, a memory ceiling;
# the seed preset also the seed's seed (42, so that fold k trains with 42 + k).
RUN: dict[str, dict[str, float]] = {
    "cpu": {"time_budget_s": 60.0, "timeout_s": 180.0, "memory_gb": 4.0},
    "seed": {"time_budget_s": 300.0, "timeout_s": 900.0, "memory_gb": 24.0, "seed": 42},
}


def _check(name: str) -> str:
    if name not in PRESETS:
        raise UserError(f"unknown eCLIP preset {name!r} (known: {', '.join(PRESETS)})",
                        hint=f"use --preset {' or --preset '.join(PRESETS)}")
    return name


def image_size(preset: str) -> int:
    """Side in pixels of the prepared images for ``preset``."""
    return DATA[_check(preset)]["image_size"]


def data_settings(preset: str) -> dict[str, int]:
    """``image_size``, ``caption_len`` and ``phrase_len`` the data preparation should use."""
    return dict(DATA[_check(preset)])


def run_settings(preset: str) -> dict[str, float]:
    """``time_budget_s``, ``timeout_s``, ``memory_gb`` (and ``seed`` where a preset fixes it) for ``[run]``."""
    return dict(RUN[_check(preset)])


def apply_preset(train_py_source: str, name: str, overrides: dict[str, Any] | None = None) -> str:
    """``train_py_source`` with the preset's constants (then ``overrides``, e.g. local weight paths) set.

    Only the values that differ are rewritten, each in its source span; comments and the rest stay as they were.
    """
    wanted = {**PRESETS[_check(name)], **(overrides or {})}
    current = read_constants(train_py_source)
    values = {k: v for k, v in wanted.items() if k not in current or repr(current[k]) != repr(v)}
    try:
        return set_constants(train_py_source, values)
    except UnknownConstant as exc:
        raise UserError(f"cannot apply preset {name!r} to train.py: {exc}",
                        hint="start from the task template (`autoresearch init eclip DIR`)") from None
