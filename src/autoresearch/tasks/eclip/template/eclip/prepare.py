"""The fixed preparation step: raw Ukiyo-eVG data -> tensors, folds and blind query sets. DO NOT CHANGE.

Writes under ``STATE_DIR`` (see "The eCLIP data contract" in the tool's docs/architecture.md)::

    prepared/meta.json  prepared/vocab.txt  prepared/chunk_<k>.pt  prepared/queries/fold_<k>.pt
    secret/keys/fold_<k>.json  secret/queries_test.pt  secret/keys/test.json  secret/data_report.json

Follows the seed's preparation: records without a caption or without regions dropped; images resized
bilinearly (PIL, which is what torchvision's Resize does to a PIL image); heatmaps with sigma = half the box
side (floor 0.02) on a ``linspace(0, 1, S)`` grid from unclipped boxes, max over boxes; train and val pooled,
permuted with ``np.random.RandomState(fold_seed)`` and cut into ``n_folds`` chunks of ``n // n_folds`` (the
last takes the rest); chunk k is fold k's held-out part. Where it differs on purpose (a missing image is an
error unless ``missing_images="black"``; an image in two splits is an error), see docs/seed-differences.md.

A query set shows images and captions in two independent random orders under opaque ids drawn from
``secrets`` (not from a seed, so the pairing cannot be recomputed); only the key under ``secret/`` pairs them.
Everything is written into a staging folder and swapped in whole (``staging.py``): a failure leaves the
previous preparation as it was.

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

from . import staging
from .ukiyoe import MISSING_IMAGES, DataError, Layout, ReadReport, Record, locate, read_dataset

FORMAT = 1
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MIN_VOCAB = 1000
SIGMA_FLOOR = 0.02
SOURCES = ("synthetic", "ukiyoe")
FOLD_RULE = "seed: np.random.RandomState(fold_seed).permutation(n), chunks of n // n_folds, the last takes the rest"
RESIZE = "PIL bilinear (= torchvision Resize on a PIL image), squashed to a square"
HEATMAP = "seed: sigma = half the box side (floor 0.02), linspace(0, 1, S) grid, boxes unclipped, max over boxes"
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
                        f"Pass --vocab PATH with a full BERT vocab.txt (the text tower's own, e.g. "
                        f"distilbert-base-uncased's, to tokenise as it does), or more captions to train one on")
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
    """Float32 ``[size, size]`` in 0..1: per box (normalised x1, y1, x2, y2, not clipped) a Gaussian at its
    centre with per-axis sigma = half its width/height (at least SIGMA_FLOOR), sampled on the seed's grid
    ``linspace(0, 1, size)`` (pixel i at i / (size - 1)), max-combined."""
    grid = np.linspace(0.0, 1.0, size, dtype=np.float64)
    out = np.zeros((size, size), dtype=np.float64)
    for x1, y1, x2, y2 in boxes:
        sx, sy = max((x2 - x1) / 2, SIGMA_FLOOR), max((y2 - y1) / 2, SIGMA_FLOOR)
        gx = np.exp(-0.5 * ((grid - (x1 + x2) / 2) / sx) ** 2)
        gy = np.exp(-0.5 * ((grid - (y1 + y2) / 2) / sy) ** 2)
        np.maximum(out, np.outer(gy, gx), out=out)
    return out.astype(np.float32)


def record_heatmap(rec: Record, size: int) -> np.ndarray:
    """The record's heatmap as uint8 ``[1, size, size]`` (0..255 = 0..1), boxes normalised by the declared
    width and height; all zero when it has no region."""
    boxes = [(r.bbox[0] / rec.width, r.bbox[1] / rec.height, r.bbox[2] / rec.width, r.bbox[3] / rec.height)
             for r in rec.regions]
    return np.round(heatmap(boxes, size) * 255.0).astype(np.uint8)[None]


def load_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB uint8 ``[3, size, size]`` (squashed to a square, bilinear as the seed's torchvision Resize on a PIL
    image) and the file's own (width, height). The whole file is decoded (no JPEG draft scaling), as the seed
    decodes it."""
    try:
        with Image.open(path) as im:
            native = im.size
            arr = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), native


def _image_for(rec: Record, size: int, missing: str, report: ReadReport) -> tuple[np.ndarray, tuple | None]:
    """The record's image; a missing (already listed) or unreadable one is black when ``missing == "black"``."""
    black = np.zeros((3, size, size), dtype=np.uint8)
    if rec.image_path is None:
        return black, None
    try:
        return load_image(rec.image_path, size)
    except DataError as exc:
        if missing == "error":
            raise DataError(f"{rec.where}: {exc}; replace the file, or pass --missing-images black to use a black "
                            f"image as the seed did") from None
        report.unreadable_images.append(f"{rec.where}: {rec.filename}")
        return black, None


# ---------------------------------------------------------------- folds and blind query sets

def fold_chunks(n_items: int, n_folds: int, fold_seed: int) -> list[np.ndarray]:
    """Indices of the pooled items in each chunk, by the seed's rule: ``np.random.RandomState(fold_seed)
    .permutation(n_items)`` cut into ``n_folds`` chunks of ``n_items // n_folds``, the last taking the rest
    (9,893 items: 3,297 / 3,297 / 3,299)."""
    if n_items < n_folds:
        raise DataError(f"train+val hold {n_items} images, fewer than n_folds={n_folds}")
    perm = np.random.RandomState(fold_seed).permutation(n_items)
    size = n_items // n_folds
    return [perm[k * size:(k + 1) * size] if k < n_folds - 1 else perm[k * size:] for k in range(n_folds)]


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

def _durable(path: Path, write: Callable[[Path], None]) -> None:
    """Write a file and flush it to disk: the staging folder is only marked complete after all of them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _save_pt(obj: dict, path: Path) -> None:
    _durable(path, lambda p: torch.save(obj, p))


def _save_text(text: str, path: Path) -> None:
    _durable(path, lambda p: p.write_text(text, encoding="utf-8"))


def _build(records: list[Record], size: int, cap_tok, cap_len, phr_tok, phr_len, tick, missing: str,
           report: ReadReport) -> tuple[dict, dict]:
    """Arrays for a list of records, plus counters."""
    n = len(records)
    images = np.zeros((n, 3, size, size), dtype=np.uint8)
    heatmaps = np.zeros((n, 1, size, size), dtype=np.uint8)
    mismatched = 0
    for i, rec in enumerate(records):
        images[i], native = _image_for(rec, size, missing, report)
        mismatched += native is not None and native != (rec.width, rec.height)
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


def _check_settings(image_size, n_folds, caption_len, phrase_len, source, missing_images) -> None:
    for name, value, low in (("image_size", image_size, 16), ("n_folds", n_folds, 2),
                             ("caption_len", caption_len, 8), ("phrase_len", phrase_len, 4)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: must be one of {', '.join(SOURCES)}")
    if missing_images not in MISSING_IMAGES:
        raise ValueError(f"missing_images={missing_images!r}: must be one of {', '.join(MISSING_IMAGES)}")


def prepare(raw_root: Path | str | None, state_dir: Path | str, image_size: int = 64, n_folds: int = 3,
            fold_seed: int = 42, caption_len: int = 64, phrase_len: int = 32, vocab_path: Path | str | None = None,
            source: str = "synthetic", progress: Progress | None = None, *,
            annotations: Path | str | None = None, images: Path | str | None = None,
            missing_images: str = "error") -> dict:
    """Prepare Ukiyo-eVG data for training; returns the meta dict written to ``prepared/meta.json`` plus
    ``seconds`` and ``details`` (the layout read and the names behind the counts, also written to
    ``secret/data_report.json``). ``raw_root`` is a folder in the flat or the seed's layout, or None with
    ``annotations`` (and ``images``) given. ``progress(stage, done, total)`` is called as images are processed.
    Nothing under ``state_dir`` changes unless the whole preparation succeeds."""
    t0 = time.perf_counter()
    _check_settings(image_size, n_folds, caption_len, phrase_len, source, missing_images)
    state = Path(state_dir)
    layout: Layout = locate(raw_root, annotations=annotations, images=images)
    report = ReadReport()
    splits = read_dataset(layout=layout, report=report, missing=missing_images)
    pooled = splits["train"] + splits["val"]
    chunks = fold_chunks(len(pooled), n_folds, fold_seed)
    if not splits["test"]:
        raise DataError(f"{layout.files['test']}: the test split is empty (after dropping records without a "
                        f"caption or regions)")

    if vocab_path is not None:
        vocab = load_vocab(vocab_path)
    else:
        texts = [r.caption for r in splits["train"]] + [g.phrase for r in splits["train"] for g in r.regions]
        vocab = train_vocab(texts)
        check_vocab(vocab, f"WordPiece trained on {len(splits['train'])} train captions")
    ids = {t: i for i, t in enumerate(vocab)}
    cap_tok, phr_tok = make_tokenizer(vocab, caption_len), make_tokenizer(vocab, phrase_len)

    total, done = len(pooled) + len(splits["test"]), 0
    stage = "images"

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None and (done % 25 == 0 or done == total):
            progress(stage, done, total)

    stats = {"size_mismatch": 0, "captions_truncated": 0, "phrases_truncated": 0}
    n_phrases = 0
    with staging.staged(state) as sg:
        prepared, secret = sg / "prepared", sg / "secret"
        _save_text("\n".join(vocab) + "\n", prepared / "vocab.txt")
        for k, idx in enumerate(chunks):
            stage = f"fold {k}"
            arrays, counts = _build([pooled[i] for i in idx], image_size, cap_tok, caption_len, phr_tok,
                                    phrase_len, tick, missing_images, report)
            for key in stats:
                stats[key] += counts[key]
            n_phrases += len(arrays["phrase_item"])
            _save_pt({key: torch.from_numpy(value) for key, value in arrays.items()}, prepared / f"chunk_{k}.pt")
            query, key_pairs = blind_query_set(arrays["images"], arrays["captions"])
            _save_pt(query, prepared / "queries" / f"fold_{k}.pt")
            _save_text(json.dumps(key_pairs, sort_keys=True), secret / "keys" / f"fold_{k}.json")
            del arrays, query
        stage = "test"
        arrays, counts = _build(splits["test"], image_size, cap_tok, caption_len, phr_tok, phrase_len, tick,
                                missing_images, report)
        for key in stats:
            stats[key] += counts[key]
        query, key_pairs = blind_query_set(arrays["images"], arrays["captions"])
        _save_pt(query, secret / "queries_test.pt")
        _save_text(json.dumps(key_pairs, sort_keys=True), secret / "keys" / "test.json")

        found = report.counts()
        meta = {
            "format": FORMAT, "image_size": image_size, "caption_len": caption_len, "phrase_len": phrase_len,
            "n_folds": n_folds, "fold_seed": fold_seed, "fold_rule": FOLD_RULE, "resize": RESIZE,
            "heatmap": HEATMAP, "vocab_size": len(vocab), "pad_id": ids["[PAD]"], "cls_id": ids["[CLS]"],
            "sep_id": ids["[SEP]"], "unk_id": ids["[UNK]"], "mask_id": ids["[MASK]"],
            "counts": {
                "train": len(splits["train"]), "val": len(splits["val"]), "test": len(splits["test"]),
                "pooled": len(pooled), "chunks": [len(c) for c in chunks], "phrases": n_phrases,
                "regions": found["regions"], "boxes_outside": found["outside"],
                "boxes_degenerate": found["degenerate"], "dropped_no_caption": found["no_caption"],
                "dropped_no_regions": found["no_regions"], "duplicate_filenames": found["duplicates"],
                "missing_images": len(report.missing_images), "unreadable_images": len(report.unreadable_images),
                **stats,
            },
            "source": source, "layout": layout.kind, "missing_images": missing_images,
        }
        details = {"layout": layout.describe(), "files": {s: str(p) for s, p in layout.files.items()},
                   "missing_images": report.missing_images, "unreadable_images": report.unreadable_images,
                   "duplicate_filenames": report.duplicate_lines}
        _save_text(json.dumps(details, indent=2) + "\n", secret / "data_report.json")
        _save_text(json.dumps(meta, indent=2) + "\n", prepared / "meta.json")
    return {**meta, "seconds": round(time.perf_counter() - t0, 3), "details": details}


def _total(table: dict[str, int]) -> int:
    return sum(table.values())


def _named(names: list[str], limit: int = 3) -> str:
    shown = "; ".join(names[:limit])
    return shown + (f"; and {len(names) - limit} more" if len(names) > limit else "")


def summary(result: dict) -> list[str]:
    """Human lines saying what preparation kept, dropped, left as given and truncated (``prepare``'s result)."""
    c, details = result["counts"], result.get("details", {})
    lines = [f"{c['train']} train / {c['val']} val / {c['test']} test records ({result.get('layout', '?')} layout), "
             f"{len(c['chunks'])} folds of {'/'.join(str(n) for n in c['chunks'])}, "
             f"vocabulary {result['vocab_size']}"]
    dropped = _total(c["dropped_no_caption"]) + _total(c["dropped_no_regions"])
    if dropped:
        lines.append(f"dropped {dropped} records as the seed does: {_total(c['dropped_no_caption'])} without a "
                     f"caption, {_total(c['dropped_no_regions'])} without regions")
    outside, degenerate = _total(c["boxes_outside"]), _total(c["boxes_degenerate"])
    if outside or degenerate:
        lines.append(f"boxes kept as given (not clipped, as the seed): {outside} reach outside the image, "
                     f"{degenerate} have no area (drawn at the sigma floor)")
    if _total(c["duplicate_filenames"]):
        lines.append(f"{_total(c['duplicate_filenames'])} filenames repeated within a split (kept): "
                     + _named(details.get("duplicate_filenames", [])))
    if c["missing_images"]:
        lines.append(f"{c['missing_images']} images not found, used as black images: "
                     + _named(details.get("missing_images", [])))
    if c["unreadable_images"]:
        lines.append(f"{c['unreadable_images']} images unreadable, used as black images: "
                     + _named(details.get("unreadable_images", [])))
    if c["captions_truncated"] or c["phrases_truncated"]:
        lines.append(f"truncated: {c['captions_truncated']} captions at {result['caption_len']} tokens, "
                     f"{c['phrases_truncated']} phrases at {result['phrase_len']}")
    if c["size_mismatch"]:
        lines.append(f"{c['size_mismatch']} image files differ in size from their record's width/height "
                     f"(boxes are scaled by the record's)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eclip.prepare", description=__doc__.splitlines()[0])
    ap.add_argument("raw_root", type=Path, nargs="?", help="folder in the flat or the seed's Ukiyo-eVG layout")
    ap.add_argument("state_dir", type=Path, help="where prepared/ and secret/ are written")
    ap.add_argument("--annotations", type=Path, default=None, help="folder with the split files (instead of raw_root)")
    ap.add_argument("--images", type=Path, default=None, help="folder with the images")
    ap.add_argument("--missing-images", choices=MISSING_IMAGES, default="error",
                    help="a missing or unreadable image: stop (default) or use a black image as the seed did")
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
        result = prepare(args.raw_root, args.state_dir, image_size=args.image_size, n_folds=args.n_folds,
                         fold_seed=args.fold_seed, caption_len=args.caption_len, phrase_len=args.phrase_len,
                         vocab_path=args.vocab, source=args.source, progress=show, annotations=args.annotations,
                         images=args.images, missing_images=args.missing_images)
    except (ValueError, staging.BusyError) as exc:  # DataError included
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    for line in summary(result):
        print(line, file=sys.stderr)
    print(json.dumps({"vocab_size": result["vocab_size"], "counts": result["counts"], "seconds": result["seconds"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
