"""Shared parts of the eCLIP benchmarks: a synthetic prepared dataset, a research folder made from the
template with a preset applied, and one fold run the way the runner runs it (a fresh interpreter, the
AUTORESEARCH_* environment), timed from outside.

The synthetic data has the prepared layout of eclip/prepare.py (random pixels, random token ids): speed does
not depend on what the pixels show. Caption lengths are drawn between a third of the prepared length and
all of it, phrase lengths between 3 and 12 tokens, so trimming a batch to its longest text does the work a
real batch does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from autoresearch.hyperparams import set_constants
from autoresearch.tasks.eclip import presets

TEMPLATE = Path(presets.__file__).parent / "template"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
RUN_ENV: dict[str, str] = {}   # added to every run's environment (a benchmark's --threads)
PIN: set[int] | None = None    # CPUs every run is pinned to, so that train.py of any version sees that many


def _texts(gen: torch.Generator, n: int, length: int, low: int, high: int, vocab_size: int) -> torch.Tensor:
    ids = torch.zeros(n, length, dtype=torch.int32)
    lengths = torch.randint(max(1, low), max(low, min(high, length - 2)) + 1, (n,), generator=gen)
    words = torch.randint(len(SPECIAL), vocab_size, (n, length), generator=gen, dtype=torch.int32)
    for i, k in enumerate(lengths.tolist()):
        ids[i, 0], ids[i, 1:k + 1], ids[i, k + 1] = 2, words[i, :k], 3
    return ids


def write_prepared(root: Path, *, n_items: int, image_size: int, caption_len: int, phrase_len: int,
                   vocab_size: int = 30522, n_folds: int = 3, seed: int = 0) -> Path:
    """A prepared folder (meta.json, vocab.txt, chunks, query sets, keys) of random items; returns its path."""
    gen = torch.Generator().manual_seed(seed)
    prep, keys = root / "prepared", root / "secret" / "keys"
    (prep / "queries").mkdir(parents=True, exist_ok=True)
    keys.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + [f"w{i}" for i in range(vocab_size - len(SPECIAL))]
    (prep / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    sizes = [len(c) for c in np.array_split(np.arange(n_items), n_folds)]
    for k, n in enumerate(sizes):
        phrase_item = torch.repeat_interleave(torch.arange(n), torch.randint(1, 4, (n,), generator=gen))
        chunk = {
            "images": torch.randint(0, 256, (n, 3, image_size, image_size), generator=gen, dtype=torch.uint8),
            "heatmaps": torch.randint(0, 256, (n, 1, image_size, image_size), generator=gen, dtype=torch.uint8),
            "captions": _texts(gen, n, caption_len, caption_len // 3, caption_len, vocab_size),
            "phrases": _texts(gen, len(phrase_item), phrase_len, 3, 12, vocab_size),
            "phrase_item": phrase_item,
        }
        torch.save(chunk, prep / f"chunk_{k}.pt")
        image_ids, caption_ids = [f"i{k}_{i}" for i in range(n)], [f"c{k}_{i}" for i in range(n)]
        order = torch.randperm(n, generator=gen).tolist()
        torch.save({"images": chunk["images"], "image_ids": image_ids, "captions": chunk["captions"][order],
                    "caption_ids": [caption_ids[i] for i in order]}, prep / "queries" / f"fold_{k}.pt")
        (keys / f"fold_{k}.json").write_text(json.dumps({"pairs": dict(zip(image_ids, caption_ids))}))
    meta = {"format": 1, "image_size": image_size, "caption_len": caption_len, "phrase_len": phrase_len,
            "n_folds": n_folds, "fold_seed": 42, "vocab_size": vocab_size, "pad_id": 0, "cls_id": 2, "sep_id": 3,
            "counts": {"pooled": n_items, "chunks": sizes}, "source": "benchmark"}
    (prep / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return prep


def make_repo(root: Path, preset: str, constants: dict | None = None, train_source: str | None = None) -> Path:
    """A folder with train.py (the template under ``preset`` plus ``constants``, or ``train_source`` as is)
    and the fixed eclip/ package."""
    root.mkdir(parents=True, exist_ok=True)
    if root.joinpath("eclip").exists():
        shutil.rmtree(root / "eclip")
    shutil.copytree(TEMPLATE / "eclip", root / "eclip", ignore=shutil.ignore_patterns("__pycache__"))
    if train_source is None:
        source = presets.apply_preset((TEMPLATE / "train.py").read_text(encoding="utf-8"), preset)
        train_source = set_constants(source, constants or {})
    (root / "train.py").write_text(train_source, encoding="utf-8")
    return root


def run_fold(repo: Path, prepared: Path, out: Path, *, fold: int = 0, seed: int = 0, env: dict | None = None,
             timeout: float = 3600) -> dict:
    """Run train.py for one fold in a fresh interpreter; returns facts.json plus ``wall_s`` and ``stdout``."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    n_folds = json.loads((prepared / "meta.json").read_text())["n_folds"]
    train = [str(prepared / f"chunk_{k}.pt") for k in range(n_folds) if k != fold]
    run_env = {**os.environ, "AUTORESEARCH_MODE": "fold", "AUTORESEARCH_FOLD": str(fold),
               "AUTORESEARCH_SEED": str(seed), "AUTORESEARCH_DATA": str(prepared),
               "AUTORESEARCH_TRAIN": os.pathsep.join(train),
               "AUTORESEARCH_QUERIES": str(prepared / "queries" / f"fold_{fold}.pt"),
               "AUTORESEARCH_OUT": str(out), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **RUN_ENV, **(env or {})}
    t0 = time.perf_counter()
    pin = (lambda: os.sched_setaffinity(0, PIN)) if PIN else None
    proc = subprocess.run([sys.executable, "train.py"], cwd=repo, env=run_env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=pin)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    facts = json.loads((out / "facts.json").read_text())
    return {**facts, "wall_s": wall, "stdout": proc.stdout}


def score_fold(out: Path, key_path: Path) -> dict:
    """mean_rank and R@K of a fold's embeddings against its key (what the tool's scorer computes)."""
    from autoresearch.scoring.retrieval import score_embeddings

    pairs = json.loads(key_path.read_text())["pairs"]
    with np.load(out / "embeddings.npz") as npz:
        image_row = {str(i): r for r, i in enumerate(npz["image_ids"])}
        caption_row = {str(c): r for r, c in enumerate(npz["caption_ids"])}
        image_ids = sorted(pairs)
        img = npz["image_emb"][[image_row[i] for i in image_ids]]
        cap = npz["caption_emb"][[caption_row[pairs[i]] for i in image_ids]]
    return score_embeddings(img, cap)


def interpreter_seconds(repeats: int = 3) -> dict:
    """Wall seconds of an empty interpreter, and of one that imports what train.py imports (best of repeats)."""
    def best(code: str) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - t0)
        return min(times)
    return {"python_s": best("pass"), "imports_s": best("import numpy, torch, torch.nn.functional")}


def use_threads(n: int) -> None:
    """Give every later run ``n`` threads: AUTORESEARCH_CPUS for this train.py, and an affinity mask of the
    first ``n`` CPUs for versions that count the CPUs they may run on."""
    RUN_ENV["AUTORESEARCH_CPUS"] = str(n)
    global PIN
    PIN = set(sorted(os.sched_getaffinity(0))[:n]) if hasattr(os, "sched_setaffinity") else None
