"""The eCLIP task's fixed data side: Ukiyo-eVG reader, synthetic generator and preparation."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoresearch.tasks.eclip.template.eclip import prepare as P
from autoresearch.tasks.eclip.template.eclip import synth
from autoresearch.tasks.eclip.template.eclip.ukiyoe import (
    SPLIT_FILES, DataError, ReadReport, Record, Region, locate, read_dataset, read_split)
from ukiyoe_raw import hand_vocab, handwritten_copy

TEMPLATE = Path(P.__file__).resolve().parents[1]


CRANE = [{"bbox": [10, 10, 50, 40], "phrase": "a crane"}]


def _line(filename="a.png", width=100, height=80, caption="a crane", regions=None, **extra):
    obj = {"filename": filename, "width": width, "height": height,
           "grounding": {"caption": caption, "regions": regions if regions is not None else CRANE}}
    obj.update(extra)
    return json.dumps(obj, ensure_ascii=False)


def _write(tmp_path, lines, images=("a.png",), image_dir="images"):
    path = tmp_path / "split.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if image_dir is not None:
        folder = tmp_path / image_dir
        folder.mkdir(exist_ok=True)
        for name in images:
            Image.new("RGB", (10, 10), (200, 30, 30)).save(folder / name)
    return path


# ---------------------------------------------------------------- reader

def test_malformed_json_names_file_and_line(tmp_path):
    path = _write(tmp_path, [_line(), "", '{"filename": "a.png", "width": 10,'])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:3: malformed JSON"):
        read_split(path)


def test_missing_image_names_file_line_and_searched_folders(tmp_path):
    path = _write(tmp_path, [_line(), _line(filename="gone.jpg")])
    with pytest.raises(DataError) as err:
        read_split(path)
    msg = str(err.value)
    assert f"{path}:2" in msg and "gone.jpg" in msg
    assert str(tmp_path / "images") in msg and f"{tmp_path}," not in msg.split("searched")[0]
    assert str(tmp_path) in msg.split("searched")[1]


def test_images_next_to_the_jsonl_are_found(tmp_path):
    path = _write(tmp_path, [_line()], image_dir=".")
    [rec] = read_split(path)
    assert rec.image_path == tmp_path / "a.png"


@pytest.mark.parametrize("line, what", [
    (json.dumps({"filename": "a.png", "height": 80, "grounding": {"caption": "x", "regions": []}}),
     "missing required field 'width'"),
    (json.dumps({"filename": "a.png", "width": 100, "height": 80, "grounding": {"regions": []}}),
     "missing required field 'grounding.caption'"),
    (json.dumps({"filename": "a.png", "width": "100", "height": 80, "grounding": {"caption": "x", "regions": []}}),
     "'width' must be int"),
    (json.dumps({"filename": "a.png", "width": True, "height": 80, "grounding": {"caption": "x", "regions": []}}),
     "'width' must be int"),
    (_line(regions=[{"bbox": [1, 2, 3], "phrase": "p"}]), r"regions\[0\].bbox must be four finite numbers"),
    (_line(regions=[{"bbox": [1, 2, 30, 40]}]), r"missing required field 'grounding.regions\[0\].phrase'"),
    ("[1, 2]", "must be a JSON object"),
])
def test_bad_records_name_file_line_and_field(tmp_path, line, what):
    path = _write(tmp_path, [_line(), line])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:2: .*{what}"):
        read_split(path)


def test_boxes_kept_as_given_and_records_dropped_as_the_seed(tmp_path):
    regions = [{"bbox": [-10, 5, 500, 50], "phrase": "a boat", "logit": 0.3},   # reaches outside: kept as is
               {"bbox": [120, 10, 150, 20], "phrase": "outside"},                # wholly outside: kept
               {"bbox": [30, 30, 30, 60], "phrase": "zero width"},               # no area: kept, counted
               {"bbox": [10.5, 20, 40, 60.25], "phrase": "芸者 in a kimono"}]
    path = _write(tmp_path, [_line(regions=regions, score=1, tags=["x"]), "   ",
                             _line(caption="Fuji — 富士", regions=[]),               # no regions: dropped
                             _line(caption=""),                                     # no caption: dropped
                             _line(caption="Fuji — 富士 again")])
    report = ReadReport()
    recs = read_split(path, report=report, split="train")
    assert [r.caption for r in recs] == ["a crane", "Fuji — 富士 again"]
    assert recs[0].regions == [Region((-10.0, 5.0, 500.0, 50.0), "a boat"), Region((120.0, 10.0, 150.0, 20.0), "outside"),
                               Region((30.0, 30.0, 30.0, 60.0), "zero width"),
                               Region((10.5, 20.0, 40.0, 60.25), "芸者 in a kimono")]
    assert recs[0].where == f"{path}:1" and recs[1].where == f"{path}:5"
    assert report.outside == {"train": 2} and report.degenerate == {"train": 1}
    assert report.no_caption == {"train": 1} and report.no_regions == {"train": 1}
    assert report.regions == {"train": 5} and report.records == {"train": 2}
    assert report.duplicates == {"train": 1} and report.duplicate_lines == [f"{path}:5: a.png"]


def test_a_byte_that_is_not_utf8_names_file_line_and_column(tmp_path):
    path = _write(tmp_path, [_line()])
    path.write_bytes(path.read_bytes() + _line(caption="caf\u00e9").encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:2: byte 0xe9 at column \d+ is not UTF-8"):
        read_split(path)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = _write(tmp_path, [_line(caption="Fuji — 富士")])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    [rec] = read_split(path)
    assert rec.caption == "Fuji — 富士" and rec.filename == "a.png"


def test_missing_image_can_be_black_as_the_seed(tmp_path):
    path = _write(tmp_path, [_line(), _line(filename="gone.jpg")])
    report = ReadReport()
    recs = read_split(path, missing="black", report=report)
    assert [r.image_path is None for r in recs] == [False, True]
    assert report.missing_images == [f"{path}:2: gone.jpg"]


def _raw_files(folder, splits=("train", "val", "test"), rows=None):
    """Write the named split files into ``folder`` (one record each unless ``rows`` says otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        lines = (rows or {}).get(split, [_line(filename=f"{split}.png")])
        (folder / SPLIT_FILES[split]).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _images(folder, names=("train.png", "val.png", "test.png")):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (10, 10), (200, 30, 30)).save(folder / name)


def test_the_seeds_layout_is_detected_and_read(tmp_path):
    root = tmp_path / "ukiyoe"
    ann = root / "annotations" / "Ukiyo-eVG"
    _raw_files(ann / "refined", ("train", "val"))
    _raw_files(ann, ("test",))
    # unrefined train/val beside the test file: the seed reads the refined ones, and so must we
    _raw_files(ann, ("train", "val"), rows={"train": ["not json"], "val": ["not json"]})
    _images(root / "images")
    layout = locate(root)
    assert layout.kind == "seed"
    assert layout.files == {"train": ann / "refined" / SPLIT_FILES["train"], "val": ann / "refined" / SPLIT_FILES["val"],
                            "test": ann / SPLIT_FILES["test"]}
    data = read_dataset(root)
    assert {s: [r.image_path for r in v] for s, v in data.items()} == \
        {s: [root / "images" / f"{s}.png"] for s in ("train", "val", "test")}
    # the same files given as separate folders
    sep = read_dataset(annotations=root / "annotations", images=root / "images")
    assert {s: [r.where for r in v] for s, v in sep.items()} == {s: [r.where for r in v] for s, v in data.items()}
    assert locate(annotations=ann, images=root / "images").kind == "separate"


def test_flat_layout_and_the_error_naming_both_layouts(tmp_path):
    _raw_files(tmp_path / "flat")
    _images(tmp_path / "flat" / "images")
    assert locate(tmp_path / "flat").kind == "flat"
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / SPLIT_FILES["train"]).write_text("")
    with pytest.raises(DataError) as err:
        locate(tmp_path / "half")
    msg = str(err.value)
    assert str(tmp_path / "half" / SPLIT_FILES["val"]) in msg and str(tmp_path / "half" / SPLIT_FILES["test"]) in msg
    assert "annotations/Ukiyo-eVG/refined/" in msg and "images/" in msg   # the seed's layout is named too
    seedish = tmp_path / "seedish" / "annotations" / "Ukiyo-eVG"
    _raw_files(seedish / "refined", ("train", "val"))
    with pytest.raises(DataError, match=r"seed's layout .*/ukiyoe_vg_test_annotated.jsonl is missing"):
        locate(tmp_path / "seedish")
    with pytest.raises(DataError, match="no ukiyoe_vg_train_pgt_odvg.jsonl"):
        locate(annotations=tmp_path / "half")


def test_an_image_in_two_splits_is_an_error_naming_both_lines(tmp_path):
    rows = {"train": [_line(filename="a.png"), _line(filename="b.png"), _line(filename="b.png")],
            "val": [_line(filename="v.png")],
            "test": [_line(filename="t.png"), _line(filename="b.png"), _line(filename="a.png")]}
    _raw_files(tmp_path, rows=rows)
    _images(tmp_path / "images", ("a.png", "b.png", "v.png", "t.png"))
    with pytest.raises(DataError) as err:
        read_dataset(tmp_path)
    msg = str(err.value)
    train, test = tmp_path / SPLIT_FILES["train"], tmp_path / SPLIT_FILES["test"]
    assert msg.startswith(f"{train}:2 and {test}:2 both name image 'b.png'")
    assert "and 1 more filenames shared between splits" in msg
    rows["test"] = [_line(filename="t.png")]            # within a split only: read, counted, named
    _raw_files(tmp_path, rows=rows)
    report = ReadReport()
    data = read_dataset(tmp_path, report)
    assert len(data["train"]) == 3 and report.duplicates == {"train": 1, "val": 0, "test": 0}
    assert report.duplicate_lines == [f"{train}:3: b.png"]


# ---------------------------------------------------------------- generator

@pytest.fixture(scope="module")
def synth_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_raw")
    counts = synth.generate(root, n=200, seed=0)
    return root, counts


def test_split_sizes_match_ukiyoe_vg():
    assert synth.split_sizes(10993) == (8794, 1099, 1100)
    assert synth.split_sizes(3000) == (2400, 300, 300)
    for n in (10, 11, 57, 999, 10001):
        tr, va, te = synth.split_sizes(n)
        assert tr + va + te == n and abs(va - n / 10) < 1 and abs(te - n / 10) < 1
    with pytest.raises(ValueError):
        synth.split_sizes(5)


def test_generation_is_deterministic_per_seed(tmp_path):
    a, b, c = (synth.generate(tmp_path / name, n=12, seed=seed) for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    assert a == b and (a["train"], a["val"], a["test"]) == (9, 1, 2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 15
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert (tmp_path / "a" / SPLIT_FILES["train"]).read_bytes() != (tmp_path / "c" / SPLIT_FILES["train"]).read_bytes()
    img = "images/ukiyoe_synth_00000.jpg"
    assert (tmp_path / "a" / img).read_bytes() != (tmp_path / "c" / img).read_bytes()


def test_generated_layout_reads_back(synth_raw):
    root, counts = synth_raw
    report = ReadReport()
    data = read_dataset(root, report)
    assert {k: len(v) for k, v in data.items()} == {"train": 160, "val": 20, "test": 20}
    assert counts["train_regions"] == report.regions["train"]
    assert report.no_regions == {"train": 0, "val": 0, "test": 0}       # every print keeps at least one box
    assert report.outside["test"] == 0 and report.degenerate["test"] == 0  # test boxes are clean
    assert report.outside["train"] > 0                                    # pseudo labels reach outside
    for rec in data["test"]:
        assert 1 <= len(rec.regions) <= 5
    sizes = set()
    for rec in data["train"][:20] + data["test"]:
        with Image.open(rec.image_path) as im:
            assert im.format == "JPEG" and im.size == (rec.width, rec.height)
        assert 300 <= rec.width <= 400 and 300 <= rec.height <= 400
        sizes.add((rec.width, rec.height))
    assert len(sizes) > 10
    captions = [r.caption for r in data["train"]]
    assert len(set(captions)) == len(captions)
    kinds = ("woman", "samurai", "boat", "crane", "lantern")
    assert all(sum(k in c for c in captions) >= 5 for k in kinds)  # many images share object types


def test_pseudo_labels_are_noisy_versions_of_clean_boxes():
    changed = 0
    for i in range(30):
        img_clean, clean = synth.render(5, i, clean=True)
        img_noisy, noisy = synth.render(5, i, clean=False)
        assert np.array_equal(np.asarray(img_clean), np.asarray(img_noisy))
        assert clean["grounding"]["caption"] == noisy["grounding"]["caption"]
        changed += clean["grounding"]["regions"] != noisy["grounding"]["regions"]
        for reg in clean["grounding"]["regions"]:
            x1, y1, x2, y2 = reg["bbox"]
            assert 0 <= x1 < x2 <= clean["width"] and 0 <= y1 < y2 <= clean["height"]
            assert reg["phrase"].lower() in clean["grounding"]["caption"].lower()
    assert changed >= 25


def test_caption_vocabulary_is_rich(synth_raw):
    root, _ = synth_raw
    recs = read_split(root / SPLIT_FILES["train"])
    vocab = P.train_vocab([r.caption for r in recs] + [g.phrase for r in recs for g in r.regions])
    assert len(vocab) >= P.MIN_VOCAB
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# ---------------------------------------------------------------- heatmaps, folds, query sets

def test_heatmap_peak_sigma_floor_and_max_on_the_seeds_grid():
    S = 65                                  # linspace(0, 1, 65): pixel i sits at i / 64
    c = 20 / 64
    h = P.heatmap([(c - 8 / 64, c - 4 / 64, c + 8 / 64, c + 4 / 64)], S)   # sigma_x = 8 px, sigma_y = 4 px
    assert h[20, 20] == pytest.approx(1.0) and h.max() == pytest.approx(1.0)
    assert h[20, 28] == pytest.approx(math.exp(-0.5), rel=1e-5)
    assert h[24, 20] == pytest.approx(math.exp(-0.5), rel=1e-5)
    assert h[20, 12] == pytest.approx(h[20, 28])
    S = 101                                 # sigma floor 0.02 = 2 px
    tiny = P.heatmap([(0.499, 0.499, 0.501, 0.501)], S)
    assert tiny[50, 52] == pytest.approx(math.exp(-0.5), rel=1e-5)
    assert tiny[52, 50] == pytest.approx(math.exp(-0.5), rel=1e-5)
    boxes = [(0.1, 0.1, 0.3, 0.5), (0.5, 0.4, 0.9, 0.6)]
    both = P.heatmap(boxes, S)
    assert np.allclose(both, np.maximum(P.heatmap(boxes[:1], S), P.heatmap(boxes[1:], S)))
    assert not P.heatmap([], S).any()
    wide = P.heatmap([(-0.2, 0.1, 0.4, 0.5)], S)   # not clipped: centre x 0.1, sigma_x 0.3
    assert wide[30, 10] == pytest.approx(1.0) and wide[30, 40] == pytest.approx(math.exp(-0.5), rel=1e-5)


def _seed_heatmap(boxes, size):
    """The seed's heatmap as SEED-FACTS describes it, in torch float32: an oracle for ours."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = torch.zeros(size, size)
    for x1, y1, x2, y2 in boxes:
        sx, sy = max((x2 - x1) / 2, 0.02), max((y2 - y1) / 2, 0.02)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        out = torch.maximum(out, torch.exp(-((xx - cx) ** 2 / (2 * sx ** 2) + (yy - cy) ** 2 / (2 * sy ** 2))))
    return out.numpy()


def test_heatmap_matches_the_seeds_formula_for_any_boxes():
    rng = np.random.default_rng(3)
    for _ in range(20):   # boxes inside, reaching outside, wholly outside and reversed
        boxes = [tuple(rng.uniform(-0.3, 1.3, 4)) for _ in range(rng.integers(1, 5))]
        assert np.abs(P.heatmap(boxes, 56) - _seed_heatmap(boxes, 56)).max() < 1e-5
    rec = Record("x.png", 200, 100, "c", [Region((-20.0, 10.0, 60.0, 90.0), "p")])   # pixels, unclipped
    expected = _seed_heatmap([(-0.1, 0.1, 0.3, 0.9)], 32)
    assert np.abs(P.record_heatmap(rec, 32)[0] / 255.0 - expected).max() <= 0.5 / 255 + 1e-6


def test_folds_are_the_seeds_on_9893_items():
    """Membership and order: np.random.RandomState(42).permutation(9893) cut 3297 / 3297 / 3299."""
    perm = np.random.RandomState(42).permutation(9893)
    chunks = P.fold_chunks(9893, 3, 42)
    assert [len(c) for c in chunks] == [3297, 3297, 3299]
    for got, want in zip(chunks, (perm[:3297], perm[3297:6594], perm[6594:])):
        assert np.array_equal(got, want)
    assert [len(c) for c in P.fold_chunks(10, 4, 0)] == [2, 2, 2, 4]   # floor division, the last takes the rest
    assert not np.array_equal(chunks[0], P.fold_chunks(9893, 3, 7)[0])
    with pytest.raises(DataError, match="fewer than n_folds"):
        P.fold_chunks(2, 3, 42)


def test_blind_query_set_hides_the_pairing():
    n = 60
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 3, 4, 4), dtype=np.uint8)
    captions = np.arange(n, dtype=np.int32)[:, None] * np.ones((1, 5), dtype=np.int32)
    query, key = P.blind_query_set(images, captions)
    assert set(query) == {"images", "image_ids", "captions", "caption_ids"}
    img_item = query["images"][:, 0, 0, 0].tolist()
    cap_item = query["captions"][:, 0].tolist()
    assert sorted(img_item) == list(range(n)) and sorted(cap_item) == list(range(n))
    assert img_item != list(range(n)) and cap_item != list(range(n)) and img_item != cap_item
    ids = query["image_ids"] + query["caption_ids"]
    assert len(set(ids)) == 2 * n and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    # ids do not follow the order: sorting ids does not sort the items
    assert [img_item[query["image_ids"].index(i)] for i in sorted(query["image_ids"])] != list(range(n))
    caption_of = dict(zip(query["caption_ids"], cap_item))
    image_of = dict(zip(query["image_ids"], img_item))
    assert set(key["pairs"]) == set(query["image_ids"])
    assert all(image_of[i] == caption_of[c] for i, c in key["pairs"].items())
    query2, _ = P.blind_query_set(images, captions)
    assert query2["images"][:, 0, 0, 0].tolist() != img_item and not set(query2["image_ids"]) & set(ids)


# ---------------------------------------------------------------- vocabulary guard

def test_vocabulary_guard(tmp_path):
    small = tmp_path / "vocab.txt"
    small.write_text("\n".join(P.SPECIAL_TOKENS + ["crane", "moon"]) + "\n")
    with pytest.raises(DataError, match="only 7 entries, fewer than 1000"):
        P.load_vocab(small)
    with pytest.raises(DataError, match="line 1 must be \\[PAD\\]"):
        P.check_vocab(["[UNK]", "[PAD]"] + [f"w{i}" for i in range(1200)], "x")
    with pytest.raises(DataError, match="missing special tokens \\[MASK\\]"):
        P.check_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(1200)], "x")


# ---------------------------------------------------------------- prepare

def _load(path):
    return torch.load(path, weights_only=True)


def test_prepare_synthetic(synth_raw, tmp_path):
    root, _ = synth_raw
    calls = []
    meta = P.prepare(root, tmp_path, image_size=32, caption_len=48, phrase_len=16,
                     progress=lambda stage, done, total: calls.append((stage, done, total)))
    prepared, secret = tmp_path / "prepared", tmp_path / "secret"
    on_disk = json.loads((prepared / "meta.json").read_text())
    assert {k: v for k, v in meta.items() if k not in ("seconds", "details")} == on_disk
    assert on_disk["format"] == 1 and on_disk["image_size"] == 32 and on_disk["source"] == "synthetic"
    assert on_disk["layout"] == "flat" and on_disk["fold_rule"].startswith("seed: np.random.RandomState")
    assert on_disk["missing_images"] == "error" and on_disk["counts"]["missing_images"] == 0
    report = json.loads((secret / "data_report.json").read_text())
    assert report["files"]["test"] == str(root / SPLIT_FILES["test"]) and report["missing_images"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".prepare.lock", "prepared", "secret"]  # staging gone
    assert (on_disk["pad_id"], on_disk["cls_id"], on_disk["sep_id"]) == (0, 2, 3)
    vocab = (prepared / "vocab.txt").read_text().splitlines()
    assert len(vocab) == on_disk["vocab_size"] >= 1000
    assert calls[-1] == ("test", 200, 200)
    expected = [len(c) for c in P.fold_chunks(180, 3, 42)]
    assert on_disk["counts"]["chunks"] == expected == [60, 60, 60]
    pooled = read_split(root / SPLIT_FILES["train"]) + read_split(root / SPLIT_FILES["val"])
    for k, idx in enumerate(P.fold_chunks(180, 3, 42)):
        chunk = _load(prepared / f"chunk_{k}.pt")
        n = len(idx)
        assert chunk["images"].shape == (n, 3, 32, 32) and chunk["images"].dtype == torch.uint8
        assert chunk["heatmaps"].shape == (n, 1, 32, 32) and chunk["heatmaps"].dtype == torch.uint8
        assert chunk["captions"].shape == (n, 48) and chunk["captions"].dtype == torch.int32
        assert chunk["phrases"].shape[1] == 16 and chunk["phrases"].dtype == torch.int32
        assert chunk["phrase_item"].dtype == torch.int64
        assert chunk["phrase_item"].tolist() == [j for j, i in enumerate(idx) for _ in pooled[i].regions]
        assert (chunk["captions"][:, 0] == 2).all() and ((chunk["captions"] == 3).sum(1) == 1).all()
        for j in (0, n - 1):  # rows follow the seeded permutation
            rec = pooled[idx[j]]
            assert np.array_equal(chunk["heatmaps"][j].numpy(), P.record_heatmap(rec, 32))
            assert np.array_equal(chunk["images"][j].numpy(), P.load_image(rec.image_path, 32)[0])
        query = _load(prepared / "queries" / f"fold_{k}.pt")
        pairs = json.loads((secret / "keys" / f"fold_{k}.json").read_text())["pairs"]
        assert set(query) == {"images", "image_ids", "captions", "caption_ids"}
        row_of_image = {bytes(img.numpy()): j for j, img in enumerate(chunk["images"])}
        cap_pos = {c: p for p, c in enumerate(query["caption_ids"])}
        for p, image_id in enumerate(query["image_ids"]):
            j = row_of_image[bytes(query["images"][p].numpy())]
            assert torch.equal(query["captions"][cap_pos[pairs[image_id]]], chunk["captions"][j])
    test_q = _load(secret / "queries_test.pt")
    assert test_q["images"].shape == (20, 3, 32, 32) and len(test_q["caption_ids"]) == 20
    assert len(json.loads((secret / "keys" / "test.json").read_text())["pairs"]) == 20
    assert not list(prepared.rglob("*test*")) and not list(tmp_path.rglob("*.tmp*"))
    # preparing again with fewer folds leaves no stale chunk behind
    P.prepare(root, tmp_path, image_size=16, n_folds=2, caption_len=16, phrase_len=8)
    assert sorted(p.name for p in prepared.glob("chunk_*.pt")) == ["chunk_0.pt", "chunk_1.pt"]
    assert sorted(p.name for p in (secret / "keys").iterdir()) == ["fold_0.json", "fold_1.json", "test.json"]


def test_handwritten_dataset_through_prepare(tmp_path):
    raw = handwritten_copy(tmp_path)
    with pytest.raises(DataError, match="fewer than 1000"):  # 3 train captions cannot make a real vocabulary
        P.prepare(raw, tmp_path / "state")
    tokens = hand_vocab(raw, tmp_path / "vocab.txt")
    meta = P.prepare(raw, tmp_path / "state", image_size=32, vocab_path=tmp_path / "vocab.txt", source="ukiyoe")
    c = meta["counts"]
    assert (c["train"], c["val"], c["test"], c["pooled"]) == (2, 1, 2, 3)
    assert c["chunks"] == [1, 1, 1] and c["phrases"] == 5
    assert c["boxes_outside"] == {"train": 2, "val": 0, "test": 0}       # kept unclipped, as the seed
    assert c["dropped_no_regions"] == {"train": 1, "val": 0, "test": 0}  # hw_crane, as the seed drops it
    assert meta["vocab_size"] == len(tokens) and meta["source"] == "ukiyoe"
    lines = P.summary(meta)
    assert "dropped 1 records as the seed does: 0 without a caption, 1 without regions" in lines
    assert "boxes kept as given (not clipped, as the seed): 2 reach outside the image, 0 have no area " \
           "(drawn at the sigma floor)" in lines
    ids = {t: i for i, t in enumerate(tokens)}
    pooled = read_split(raw / SPLIT_FILES["train"]) + read_split(raw / SPLIT_FILES["val"])
    seen = set()
    for k, idx in enumerate(P.fold_chunks(3, 3, 42)):
        chunk = _load(tmp_path / "state" / "prepared" / f"chunk_{k}.pt")
        for j, i in enumerate(idx):
            rec, hm = pooled[i], chunk["heatmaps"][j, 0].numpy()
            seen.add(rec.filename)
            row = chunk["captions"][j].tolist()
            first = rec.caption.split()[0].lower()
            assert row[:2] == [ids["[CLS]"], ids[first]] and row[-1] == 0
            if rec.filename == "hw_fuji_boat.png":  # box centre (80, 175) of 320x240
                y, x = np.unravel_index(hm.argmax(), hm.shape)
                assert hm.max() >= 245
                assert abs(x / 31 - 80 / 320) <= 1 / 62 and abs(y / 31 - 175 / 240) <= 1 / 62   # linspace grid
                assert row[:6] == [ids[w] for w in ("[CLS]", "a", "small", "brown", "boat", "sails")]
            if rec.filename == "hw_two_women.png":
                assert ids["[UNK]"] in row  # "geisha" was left out of the vocabulary
                phrases = chunk["phrases"][chunk["phrase_item"] == j]
                assert len(phrases) == 3 and ids["芸"] in phrases[1].tolist()
    assert seen == {r.filename for r in pooled}


def test_cli_reports_bad_input(tmp_path, capsys):
    assert P.main([str(tmp_path / "nowhere"), str(tmp_path / "state")]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_template_imports_as_a_top_level_package(tmp_path):
    """A research repo holds eclip/ at its root: the relative imports must work there, with no autoresearch."""
    shutil.copytree(TEMPLATE / "eclip", tmp_path / "eclip", ignore=shutil.ignore_patterns("__pycache__"))
    code = "import eclip.prepare, eclip.synth, sys; assert 'autoresearch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
