"""Run-time I/O of an eCLIP run (fixed: the agent cannot edit this file).

``load_run()`` reads the environment that ``autoresearch trial`` / ``autoresearch run`` sets, loads the
prepared training chunks and the blind query set into memory; ``write_outputs()`` writes the embeddings the
tool scores and a few facts about the run. Nothing here computes or prints the metric.

Environment (set by the runner):
  AUTORESEARCH_MODE     fold | final
  AUTORESEARCH_FOLD     the fold index (fold mode)
  AUTORESEARCH_SEED     integer seed
  AUTORESEARCH_DATA     the prepared folder (meta.json, vocab.txt)
  AUTORESEARCH_TRAIN    os.pathsep-joined chunk files to train on
  AUTORESEARCH_QUERIES  the query set to embed
  AUTORESEARCH_OUT      the output folder, the only place a run may write
  AUTORESEARCH_CPUS     CPU threads the run is given: the runner sets it from the cores it may use and
                        those free when it starts (default when absent: the CPUs it may run on)
  AUTORESEARCH_SMOKE    "1" for the tool's smoke test: a small slice of the data (the first training chunk,
                        SMOKE_ITEMS items and queries) so that the whole run takes seconds
  AUTORESEARCH_SMOKE_STEPS  the smoke test's step count: ``run.steps(STEPS)`` caps the training loop
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 1
CHUNK_KEYS = ("images", "heatmaps", "captions", "phrases", "phrase_item")
QUERY_KEYS = ("images", "image_ids", "captions", "caption_ids")
SMOKE_ITEMS = 256          # training items and queries of a smoke test: more than any sensible batch


class RunSetupError(SystemExit):
    """The run cannot start: missing environment or malformed prepared data.

    A ``SystemExit`` so that running ``python train.py`` by hand prints one clear line, not a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")
        self.message = message


@dataclass
class TrainData:
    """Training items held in memory; images and heatmaps stay uint8 until a batch is drawn."""

    images: torch.Tensor       # uint8 [n, 3, S, S]
    heatmaps: torch.Tensor     # uint8 [n, 1, S, S], 0..255 = 0..1
    captions: torch.Tensor     # int32 [n, Lc], CLS ... SEP, 0-padded
    phrases: torch.Tensor      # int32 [m, Lp]
    phrase_item: torch.Tensor  # int64 [m], index into the items above

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class Queries:
    """The blind query set: images and captions in two independent orders, with opaque ids."""

    images: torch.Tensor       # uint8 [n, 3, S, S]
    image_ids: list[str]
    captions: torch.Tensor     # int32 [n, Lc]
    caption_ids: list[str]


@dataclass
class Run:
    train: TrainData
    queries: Queries
    meta: dict[str, Any]
    seed: int
    out_dir: Path
    mode: str                  # "fold" or "final"
    fold: int | None
    data_dir: Path
    cpus: int = 1              # threads for torch.set_num_threads: the cores this run is given
    max_steps: int | None = None   # the smoke test's cap on training steps (None: a real run)

    @property
    def vocab_path(self) -> Path:
        return self.data_dir / "vocab.txt"

    @property
    def smoke(self) -> bool:
        return self.max_steps is not None

    def steps(self, steps: int) -> int:
        """The number of training steps to run: ``steps``, or fewer in the tool's smoke test."""
        return steps if self.max_steps is None else min(steps, self.max_steps)


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise RunSetupError(
            f"{name} is not set. train.py is meant to be run by `autoresearch trial` or `autoresearch run`, "
            "which prepare the data and set the AUTORESEARCH_* environment; run one of those instead.")
    return value


def _int_env(name: str) -> int:
    value = _env(name)
    try:
        return int(value)
    except ValueError:
        raise RunSetupError(f"{name} must be an integer, got {value!r}") from None


def usable_cpus() -> int:
    """The CPU threads a run should use: AUTORESEARCH_CPUS when the runner sets it, else the CPUs this
    process may run on (its affinity mask, which a runner that pins runs to cores narrows).

    Oversubscription is the failure this prevents: two runs of 2 threads each on 2 cores made one of
    them 28x slower in our measurement, because intra-op threads spin-wait on each other. The runner also
    sets OMP_WAIT_POLICY=PASSIVE before this process starts, so torch's OpenMP workers sleep while they
    wait; the variable must be in the environment before torch loads, which is why it is not set here.
    """
    value = os.environ.get("AUTORESEARCH_CPUS", "")
    if value:
        try:
            cpus = int(value)
        except ValueError:
            raise RunSetupError(f"AUTORESEARCH_CPUS must be a positive integer, got {value!r}") from None
        if cpus < 1:
            raise RunSetupError(f"AUTORESEARCH_CPUS must be a positive integer, got {value!r}")
        return cpus
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _load_pt(path: Path, keys: tuple[str, ...], what: str, mmap: bool = False) -> dict[str, Any]:
    if not path.is_file():
        raise RunSetupError(f"{what} {path} does not exist; re-run `autoresearch data prepare`")
    try:   # mmap (smoke test): only the pages of the slice taken are read
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # a torn or foreign file: say which one
        raise RunSetupError(f"{what} {path} cannot be read ({exc}); re-run `autoresearch data prepare`") from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise RunSetupError(f"{what} {path} lacks {', '.join(missing)}; re-run `autoresearch data prepare`")
    return data


def load_meta(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "meta.json"
    if not path.is_file():
        raise RunSetupError(f"{path} does not exist; AUTORESEARCH_DATA must be the prepared folder")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise RunSetupError(f"{path}: format {meta.get('format')!r} is not {FORMAT}; re-run `autoresearch data prepare`")
    for key in ("image_size", "caption_len", "phrase_len", "vocab_size", "pad_id", "cls_id", "sep_id"):
        if key not in meta:
            raise RunSetupError(f"{path}: key {key!r} is missing; re-run `autoresearch data prepare`")
    return meta


def _check_images(t: torch.Tensor, channels: int, size: int, where: str) -> None:
    if t.dtype != torch.uint8 or t.ndim != 4 or tuple(t.shape[1:]) != (channels, size, size):
        raise RunSetupError(f"{where}: expected uint8 [n,{channels},{size},{size}], "
                            f"got {t.dtype} {list(t.shape)}; re-run `autoresearch data prepare`")


def load_train(paths: list[Path], meta: dict[str, Any], limit: int | None = None) -> TrainData:
    """Load and concatenate training chunks, shifting ``phrase_item`` to index the concatenation;
    ``limit`` (smoke test) keeps the first items of the first chunk only."""
    size = int(meta["image_size"])
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in CHUNK_KEYS}
    offset = 0
    for path in paths[:1] if limit else paths:
        chunk = _load_pt(path, CHUNK_KEYS, "training chunk", mmap=bool(limit))
        if limit:
            chunk = _first_items(chunk, limit)
        n = int(chunk["images"].shape[0])
        _check_images(chunk["images"], 3, size, str(path))
        _check_images(chunk["heatmaps"], 1, size, str(path))
        item = chunk["phrase_item"].long()
        if chunk["captions"].shape[0] != n or chunk["heatmaps"].shape[0] != n:
            raise RunSetupError(f"{path}: images, heatmaps and captions differ in length")
        if item.shape[0] != chunk["phrases"].shape[0] or (item.numel() and (item.min() < 0 or item.max() >= n)):
            raise RunSetupError(f"{path}: phrase_item does not index this chunk's {n} items")
        for key in ("images", "heatmaps", "captions", "phrases"):
            parts[key].append(chunk[key])
        parts["phrase_item"].append(item + offset)
        offset += n
    if not paths or offset == 0:
        raise RunSetupError("AUTORESEARCH_TRAIN names no training items")
    return TrainData(**{k: torch.cat(v) for k, v in parts.items()})


def _first_items(chunk: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` items of a chunk with their phrases (copied out of the memory map)."""
    keep = chunk["phrase_item"].long() < n
    return {"images": chunk["images"][:n].clone(), "heatmaps": chunk["heatmaps"][:n].clone(),
            "captions": chunk["captions"][:n].clone(), "phrases": chunk["phrases"][keep].clone(),
            "phrase_item": chunk["phrase_item"][keep].clone()}


def load_queries(path: Path, meta: dict[str, Any], limit: int | None = None) -> Queries:
    q = _load_pt(path, QUERY_KEYS, "query set", mmap=bool(limit))
    if limit:
        q = {"images": q["images"][:limit].clone(), "image_ids": list(q["image_ids"])[:limit],
             "captions": q["captions"][:limit].clone(), "caption_ids": list(q["caption_ids"])[:limit]}
    _check_images(q["images"], 3, int(meta["image_size"]), str(path))
    if len(q["image_ids"]) != q["images"].shape[0] or len(q["caption_ids"]) != q["captions"].shape[0]:
        raise RunSetupError(f"{path}: ids and tensors differ in length")
    return Queries(q["images"], [str(i) for i in q["image_ids"]], q["captions"], [str(i) for i in q["caption_ids"]])


def load_run() -> Run:
    """Read the AUTORESEARCH_* environment and load everything a run needs into memory."""
    mode = _env("AUTORESEARCH_MODE")
    if mode not in ("fold", "final"):
        raise RunSetupError(f"AUTORESEARCH_MODE must be 'fold' or 'final', got {mode!r}")
    fold = _int_env("AUTORESEARCH_FOLD") if mode == "fold" else None
    seed = _int_env("AUTORESEARCH_SEED")
    data_dir = Path(_env("AUTORESEARCH_DATA"))
    train_paths = [Path(p) for p in _env("AUTORESEARCH_TRAIN").split(os.pathsep) if p]
    queries_path = Path(_env("AUTORESEARCH_QUERIES"))
    out_dir = Path(_env("AUTORESEARCH_OUT"))
    if not out_dir.is_dir():
        raise RunSetupError(f"AUTORESEARCH_OUT {out_dir} is not a folder")
    meta = load_meta(data_dir)
    max_steps = _int_env("AUTORESEARCH_SMOKE_STEPS") if os.environ.get("AUTORESEARCH_SMOKE") == "1" else None
    limit = SMOKE_ITEMS if max_steps is not None else None
    return Run(load_train(train_paths, meta, limit), load_queries(queries_path, meta, limit), meta, seed, out_dir,
               mode, fold, data_dir, usable_cpus(), max_steps)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _as_matrix(x: Any, rows: int, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != rows:
        raise ValueError(f"{name} must be [{rows}, d] (one row per query id), got {list(arr.shape)}")
    return arr


def _json_safe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN; a missing value reads as "not finite"
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_outputs(image_emb: Any, caption_emb: Any, queries: Queries, facts: dict[str, Any],
                  out_dir: Path | None = None) -> None:
    """Write ``embeddings.npz`` and ``facts.json`` atomically into AUTORESEARCH_OUT (or ``out_dir``)."""
    out = Path(out_dir) if out_dir is not None else Path(_env("AUTORESEARCH_OUT"))
    img = _as_matrix(image_emb, len(queries.image_ids), "image_emb")
    cap = _as_matrix(caption_emb, len(queries.caption_ids), "caption_emb")
    if img.shape[1] != cap.shape[1]:
        raise ValueError(f"image_emb and caption_emb differ in width: {img.shape[1]} vs {cap.shape[1]}")
    arrays = {"image_ids": np.array(queries.image_ids, dtype=str), "image_emb": img,
              "caption_ids": np.array(queries.caption_ids, dtype=str), "caption_emb": cap}
    _atomic_write(out / "embeddings.npz", lambda fh: np.savez(fh, **arrays))
    text = json.dumps(_json_safe(facts), indent=2, sort_keys=True, allow_nan=False) + "\n"
    _atomic_write(out / "facts.json", lambda fh: fh.write(text.encode("utf-8")))
