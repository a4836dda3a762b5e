"""A tiny fake eCLIP prepared dataset, written exactly per the data contract in docs/architecture.md.

Random tensors, but with the real layout: meta.json, vocab.txt, chunk_<k>.pt, queries/fold_<k>.pt and the
hidden keys. ``fold_env`` builds the AUTORESEARCH_* environment the runner would set for one fold.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["a", "woman", "man", "holding", "umbrella", "in", "the", "rain", "mount", "fuji", "boat", "on",
         "river", "bridge", "with", "kimono", "red", "blue", "tree", "snow", "##s", "##ing"]


def _tokens(gen: torch.Generator, n: int, length: int, vocab_size: int) -> torch.Tensor:
    ids = torch.zeros(n, length, dtype=torch.int32)
    for i in range(n):
        k = int(torch.randint(2, length - 1, (1,), generator=gen))
        ids[i, 0] = 2                                                         # [CLS]
        ids[i, 1:k + 1] = torch.randint(len(SPECIAL), vocab_size, (k,), generator=gen, dtype=torch.int32)
        ids[i, k + 1] = 3                                                     # [SEP]
    return ids


def write_fake_prepared(root: Path, n_items: int = 36, image_size: int = 32, caption_len: int = 16,
                        phrase_len: int = 8, n_folds: int = 3, seed: int = 0) -> Path:
    """Write a prepared folder under ``root`` and return it. Every third item has no phrase."""
    gen = torch.Generator().manual_seed(seed)
    prep = root / "prepared"
    (prep / "queries").mkdir(parents=True, exist_ok=True)
    secret = root / "secret" / "keys"
    secret.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + WORDS
    (prep / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    sizes = [n_items // n_folds + (1 if k < n_items % n_folds else 0) for k in range(n_folds)]
    for k, n in enumerate(sizes):
        items = [i for i in range(n) if i % 3 != 2]
        phrase_item = torch.tensor([i for i in items for _ in range(1 + i % 2)], dtype=torch.int64)
        chunk = {
            "images": torch.randint(0, 256, (n, 3, image_size, image_size), generator=gen, dtype=torch.uint8),
            "heatmaps": torch.randint(0, 256, (n, 1, image_size, image_size), generator=gen, dtype=torch.uint8),
            "captions": _tokens(gen, n, caption_len, len(vocab)),
            "phrases": _tokens(gen, len(phrase_item), phrase_len, len(vocab)),
            "phrase_item": phrase_item,
        }
        torch.save(chunk, prep / f"chunk_{k}.pt")
        image_order = torch.randperm(n, generator=gen).tolist()
        caption_order = torch.randperm(n, generator=gen).tolist()
        image_ids = [f"i{k}{i:05x}" for i in range(n)]
        caption_ids = [f"c{k}{i:05x}" for i in range(n)]
        torch.save({"images": chunk["images"][image_order], "image_ids": [image_ids[i] for i in image_order],
                    "captions": chunk["captions"][caption_order],
                    "caption_ids": [caption_ids[i] for i in caption_order]}, prep / "queries" / f"fold_{k}.pt")
        (secret / f"fold_{k}.json").write_text(json.dumps({"pairs": dict(zip(image_ids, caption_ids))}))
    meta = {"format": 1, "image_size": image_size, "caption_len": caption_len, "phrase_len": phrase_len,
            "n_folds": n_folds, "fold_seed": 42, "vocab_size": len(vocab), "pad_id": 0, "cls_id": 2, "sep_id": 3,
            "counts": {"pooled": n_items, "chunks": sizes}, "source": "synthetic"}
    (prep / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return prep


def fold_env(prep: Path, fold: int, out_dir: Path, seed: int = 0) -> dict[str, str]:
    """The AUTORESEARCH_* variables for training on all chunks but ``fold`` and embedding its queries."""
    n_folds = json.loads((prep / "meta.json").read_text())["n_folds"]
    train = [str(prep / f"chunk_{k}.pt") for k in range(n_folds) if k != fold]
    return {"AUTORESEARCH_MODE": "fold", "AUTORESEARCH_FOLD": str(fold), "AUTORESEARCH_SEED": str(seed),
            "AUTORESEARCH_DATA": str(prep), "AUTORESEARCH_TRAIN": os.pathsep.join(train),
            "AUTORESEARCH_QUERIES": str(prep / "queries" / f"fold_{fold}.pt"), "AUTORESEARCH_OUT": str(out_dir)}
