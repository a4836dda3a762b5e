"""The fixed preparation step: raw Ukiyo-eVG layout -> tensors, folds and blind query sets. DO NOT CHANGE.

Writes under ``STATE_DIR`` (see "The eCLIP data contract" in the tool's docs/architecture.md)::

    prepared/meta.json  prepared/vocab.txt  prepared/chunk_<k>.pt  prepared/queries/fold_<k>.pt
    secret/keys/fold_<k>.json  secret/queries_test.pt  secret/keys/test.json

Train and val are pooled, shuffled with ``fold_seed`` and cut into ``n_folds`` chunks; chunk k is fold k's
held-out part. A query set shows images and captions in two independent random orders under opaque ids drawn
from ``secrets`` (not from a seed, so the pairing cannot be recomputed); only the key under ``secret/``
pairs them. ``meta.json`` is written last: its presence means the rest is complete.

``python -m eclip.prepare RAW_ROOT STATE_DIR --image-size 64``
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from .ukiyoe import DataError, ReadReport, Record, read_dataset

FORMAT = 1
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MIN_VOCAB = 1000
SIGMA_FLOOR = 0.02
SOURCES = ("synthetic", "ukiyoe")
Progress = Callable[[str, int, int], None]


# ---------------------------------------------------------------- vocabulary and tokenisation

def train_vocab(texts: Iterable[str], vocab_size: int = 30000) -> list[str]:
    """A lowercase WordPiece vocabulary in BERT layout ([PAD]=0, [UNK], [CLS], [SEP], [MASK]) trained on texts."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    vocab = tok.get_vocab()
    return sorted(vocab, key=vocab.__getitem__)


def check_vocab(tokens: Sequence[str], origin: str) -> None:
    """Refuse a vocabulary that is too small or not in BERT layout; ``origin`` names it in the message."""
    if len(tokens) < MIN_VOCAB:
        raise DataError(f"{origin}: vocabulary has only {len(tokens)} entries, fewer than {MIN_VOCAB}; a tokenizer "
                        f"that silently fell back to a stub (as transformers does offline) looks like this. "
                        f"Give a full BERT vocab.txt, or more captions to train one on")
    if tokens[0] != "[PAD]":
        raise DataError(f"{origin}: line 1 must be [PAD] (id 0), found {tokens[0]!r}")
    missing = [t for t in SPECIAL_TOKENS if t not in set(tokens)]
    if missing:
        raise DataError(f"{origin}: missing special tokens {', '.join(missing)}")
    if len(set(tokens)) != len(tokens):
        raise DataError(f"{origin}: duplicate tokens in the vocabulary")


def load_vocab(path: Path | str) -> list[str]:
    """Read and check a BERT ``vocab.txt`` (one token a line, line 1 = id 0)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: vocabulary file not found")
    tokens = path.read_text(encoding="utf-8").splitlines()
    while tokens and tokens[-1] == "":
        tokens.pop()
    check_vocab(tokens, str(path))
    return tokens


def make_tokenizer(vocab: Sequence[str], length: int) -> Tokenizer:
    """BERT-uncased style tokenizer: ``[CLS] ... [SEP]``, truncated and 0-padded to exactly ``length``."""
    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    tok.enable_truncation(max_length=length)
    tok.enable_padding(length=length, pad_id=ids["[PAD]"], pad_token="[PAD]")
    return tok


def encode(tok: Tokenizer, texts: Sequence[str], length: int) -> tuple[np.ndarray, int]:
    """Token ids int32 ``[len(texts), length]`` and how many texts were cut short."""
    if not texts:
        return np.zeros((0, length), dtype=np.int32), 0
    encs = tok.encode_batch(list(texts))
    ids = np.array([e.ids for e in encs], dtype=np.int32)
    return ids, sum(1 for e in encs if e.overflowing)


# ---------------------------------------------------------------- images and heatmaps

def heatmap(boxes: Iterable[Sequence[float]], size: int) -> np.ndarray:
    """Float32 ``[size, size]`` in 0..1: per box (normalised x1, y1, x2, y2) a Gaussian at its centre with
    per-axis sigma = half its width/height (at least SIGMA_FLOOR), sampled at pixel centres, max-combined."""
    grid = (np.arange(size, dtype=np.float64) + 0.5) / size
    out = np.zeros((size, size), dtype=np.float64)
    for x1, y1, x2, y2 in boxes:
        sx, sy = max((x2 - x1) / 2, SIGMA_FLOOR), max((y2 - y1) / 2, SIGMA_FLOOR)
        gx = np.exp(-0.5 * ((grid - (x1 + x2) / 2) / sx) ** 2)
        gy = np.exp(-0.5 * ((grid - (y1 + y2) / 2) / sy) ** 2)
        np.maximum(out, np.outer(gy, gx), out=out)
    return out.astype(np.float32)


def record_heatmap(rec: Record, size: int) -> np.ndarray:
    """The record's heatmap as uint8 ``[1, size, size]`` (0..255 = 0..1); all zero when it has no region."""
    boxes = [(r.bbox[0] / rec.width, r.bbox[1] / rec.height, r.bbox[2] / rec.width, r.bbox[3] / rec.height)
             for r in rec.regions]
    return np.round(heatmap(boxes, size) * 255.0).astype(np.uint8)[None]


def load_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB uint8 ``[3, size, size]`` (squashed to a square, bicubic) and the file's own (width, height)."""
    try:
        with Image.open(path) as im:
            native = im.size
            im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale still >= size
            arr = np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), native


# ---------------------------------------------------------------- folds and blind query sets

def fold_chunks(n_items: int, n_folds: int, fold_seed: int) -> list[np.ndarray]:
    """Indices of the pooled items in each chunk: one seeded permutation cut into sizes differing by at most 1."""
    if n_items < n_folds:
        raise DataError(f"train+val hold {n_items} images, fewer than n_folds={n_folds}")
    perm = np.random.default_rng(fold_seed).permutation(n_items)
    return list(np.array_split(perm, n_folds))


def _fresh_ids(n: int) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        token = secrets.token_hex(8)
        if token not in seen:
            seen.add(token)
            ids.append(token)
    return ids


def blind_query_set(images: np.ndarray, captions: np.ndarray) -> tuple[dict, dict]:
    """Query dict (images and captions in independent secret orders, opaque ids) and its key
    ``{"pairs": {image_id: caption_id}}``. Item i's image pairs with item i's caption."""
    n = len(images)
    if len(captions) != n:
        raise ValueError(f"{n} images but {len(captions)} captions")
    rng = np.random.default_rng(secrets.randbits(128))
    image_order, caption_order = rng.permutation(n), rng.permutation(n)
    ids = _fresh_ids(2 * n)
    image_id, caption_id = ids[:n], ids[n:]
    query = {
        "images": torch.from_numpy(np.ascontiguousarray(images[image_order])),
        "image_ids": [image_id[i] for i in image_order],
        "captions": torch.from_numpy(np.ascontiguousarray(captions[caption_order])),
        "caption_ids": [caption_id[i] for i in caption_order],
    }
    return query, {"pairs": {image_id[i]: caption_id[i] for i in range(n)}}


# ---------------------------------------------------------------- writing

def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_pt(obj: dict, path: Path) -> None:
    _atomic(path, lambda p: torch.save(obj, p))


def _save_text(text: str, path: Path) -> None:
    _atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def _clear_stale(prepared: Path, secret: Path) -> None:
    """Remove a previous preparation's outputs (meta.json first, so a half-written state is never complete)."""
    (prepared / "meta.json").unlink(missing_ok=True)
    for pattern, folder in (("chunk_*.pt", prepared), ("fold_*.pt", prepared / "queries"),
                            ("fold_*.json", secret / "keys")):
        if folder.is_dir():
            for f in folder.glob(pattern):
                f.unlink()


def _build(records: list[Record], size: int, cap_tok, cap_len, phr_tok, phr_len, tick) -> tuple[dict, dict]:
    """Arrays for a list of records, plus counters."""
    n = len(records)
    images = np.zeros((n, 3, size, size), dtype=np.uint8)
    heatmaps = np.zeros((n, 1, size, size), dtype=np.uint8)
    mismatched = 0
    for i, rec in enumerate(records):
        images[i], native = load_image(rec.image_path, size)
        mismatched += native != (rec.width, rec.height)
        heatmaps[i] = record_heatmap(rec, size)
        tick()
    captions, cut_captions = encode(cap_tok, [r.caption for r in records], cap_len)
    phrase_texts = [reg.phrase for r in records for reg in r.regions]
    phrase_item = np.array([i for i, r in enumerate(records) for _ in r.regions], dtype=np.int64)
    phrases, cut_phrases = encode(phr_tok, phrase_texts, phr_len)
    arrays = {"images": images, "heatmaps": heatmaps, "captions": captions, "phrases": phrases,
              "phrase_item": phrase_item}
    return arrays, {"size_mismatch": mismatched, "captions_truncated": cut_captions,
                    "phrases_truncated": cut_phrases}


def prepare(raw_root: Path | str, state_dir: Path | str, image_size: int = 64, n_folds: int = 3,
            fold_seed: int = 42, caption_len: int = 64, phrase_len: int = 32, vocab_path: Path | str | None = None,
            source: str = "synthetic", progress: Progress | None = None) -> dict:
    """Prepare a Ukiyo-eVG folder for training; returns the meta dict written to ``prepared/meta.json``
    (plus ``seconds``). ``progress(stage, done, total)`` is called as images are processed."""
    t0 = time.perf_counter()
    for name, value, low in (("image_size", image_size, 16), ("n_folds", n_folds, 2),
                             ("caption_len", caption_len, 8), ("phrase_len", phrase_len, 4)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: must be one of {', '.join(SOURCES)}")
    state = Path(state_dir)
    prepared, secret = state / "prepared", state / "secret"
    report = ReadReport()
    splits = read_dataset(raw_root, report)
    pooled = splits["train"] + splits["val"]
    chunks = fold_chunks(len(pooled), n_folds, fold_seed)
    if not splits["test"]:
        raise DataError(f"{raw_root}: the test split is empty")

    if vocab_path is not None:
        vocab = load_vocab(vocab_path)
    else:
        texts = [r.caption for r in splits["train"]] + [g.phrase for r in splits["train"] for g in r.regions]
        vocab = train_vocab(texts)
        check_vocab(vocab, f"WordPiece trained on {len(splits['train'])} train captions")
    ids = {t: i for i, t in enumerate(vocab)}
    cap_tok, phr_tok = make_tokenizer(vocab, caption_len), make_tokenizer(vocab, phrase_len)

    _clear_stale(prepared, secret)
    _save_text("\n".join(vocab) + "\n", prepared / "vocab.txt")
    total, done = len(pooled) + len(splits["test"]), 0
    stage = "images"

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None and (done % 25 == 0 or done == total):
            progress(stage, done, total)

    stats = {"size_mismatch": 0, "captions_truncated": 0, "phrases_truncated": 0}
    n_phrases = 0
    for k, idx in enumerate(chunks):
        stage = f"fold {k}"
        arrays, counts = _build([pooled[i] for i in idx], image_size, cap_tok, caption_len, phr_tok,
                                phrase_len, tick)
        for key in stats:
            stats[key] += counts[key]
        n_phrases += len(arrays["phrase_item"])
        _save_pt({key: torch.from_numpy(value) for key, value in arrays.items()}, prepared / f"chunk_{k}.pt")
        query, key_pairs = blind_query_set(arrays["images"], arrays["captions"])
        _save_pt(query, prepared / "queries" / f"fold_{k}.pt")
        _save_text(json.dumps(key_pairs, sort_keys=True), secret / "keys" / f"fold_{k}.json")
        del arrays, query
    stage = "test"
    arrays, counts = _build(splits["test"], image_size, cap_tok, caption_len, phr_tok, phrase_len, tick)
    for key in stats:
        stats[key] += counts[key]
    query, key_pairs = blind_query_set(arrays["images"], arrays["captions"])
    _save_pt(query, secret / "queries_test.pt")
    _save_text(json.dumps(key_pairs, sort_keys=True), secret / "keys" / "test.json")

    meta = {
        "format": FORMAT, "image_size": image_size, "caption_len": caption_len, "phrase_len": phrase_len,
        "n_folds": n_folds, "fold_seed": fold_seed, "vocab_size": len(vocab), "pad_id": ids["[PAD]"],
        "cls_id": ids["[CLS]"], "sep_id": ids["[SEP]"], "unk_id": ids["[UNK]"], "mask_id": ids["[MASK]"],
        "counts": {
            "train": len(splits["train"]), "val": len(splits["val"]), "test": len(splits["test"]),
            "pooled": len(pooled), "chunks": [len(c) for c in chunks], "phrases": n_phrases,
            "regions": report.regions, "clipped_boxes": report.clipped, "dropped_boxes": report.dropped,
            **stats,
        },
        "source": source,
    }
    _save_text(json.dumps(meta, indent=2) + "\n", prepared / "meta.json")
    return {**meta, "seconds": round(time.perf_counter() - t0, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eclip.prepare", description=__doc__.splitlines()[0])
    ap.add_argument("raw_root", type=Path, help="folder in the Ukiyo-eVG layout")
    ap.add_argument("state_dir", type=Path, help="where prepared/ and secret/ are written")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--n-folds", type=int, default=3)
    ap.add_argument("--fold-seed", type=int, default=42)
    ap.add_argument("--caption-len", type=int, default=64)
    ap.add_argument("--phrase-len", type=int, default=32)
    ap.add_argument("--vocab", type=Path, default=None, help="a BERT vocab.txt to use instead of training one")
    ap.add_argument("--source", choices=SOURCES, default="synthetic")
    args = ap.parse_args(argv)

    def show(stage: str, done: int, total: int) -> None:
        print(f"\r{stage}: {done}/{total} images", end="", file=sys.stderr, flush=True)

    try:
        meta = prepare(args.raw_root, args.state_dir, image_size=args.image_size, n_folds=args.n_folds,
                       fold_seed=args.fold_seed, caption_len=args.caption_len, phrase_len=args.phrase_len,
                       vocab_path=args.vocab, source=args.source, progress=show)
    except ValueError as exc:  # DataError included
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    print(json.dumps({"vocab_size": meta["vocab_size"], "counts": meta["counts"], "seconds": meta["seconds"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
