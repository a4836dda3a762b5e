"""Metric sources: the eclip scorer aligns by id against the hidden key; bad runs fail with a reason."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from autoresearch.config import parse
from autoresearch.errors import UserError
from autoresearch.scoring.retrieval import retrieval_metrics, retrieval_ranks
from autoresearch import tasks
from autoresearch.scoring.sources import SOURCES, RunRecord, Score, key_path, score

N, D = 30, 6


def eclip_config(root: Path, name: str = "mean_rank", direction: str = "minimize"):
    return parse(root, {"metric": {"name": name, "source": "eclip", "direction": direction}})


def make_task(tmp_path: Path, seed: int = 0):
    """A hidden key for fold 1 and reference embeddings in key order (image i pairs with caption i)."""
    rng = np.random.default_rng(seed)
    image_ids = [f"img{i:03d}" for i in range(N)]
    caption_ids = [f"cap{(i * 7) % N:03d}" for i in range(N)]
    keys = tmp_path / ".autoresearch" / "secret" / "keys"
    keys.mkdir(parents=True)
    (keys / "fold_1.json").write_text(json.dumps({"pairs": dict(zip(image_ids, caption_ids))}))
    img = rng.standard_normal((N, D)).astype(np.float32)
    txt = (img + rng.standard_normal((N, D))).astype(np.float32)
    return image_ids, caption_ids, img, txt


def write_npz(out: Path, image_ids, img, caption_ids, txt) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "embeddings.npz", image_ids=np.array(image_ids), image_emb=img,
             caption_ids=np.array(caption_ids), caption_emb=txt)


def run_record(tmp_path: Path, fold=1, mode="fold") -> RunRecord:
    return RunRecord(out_dir=tmp_path / "out", log_path=tmp_path / "run.log", fold=fold, mode=mode)


def test_registry_names_match_config_choices():

    assert {"json", "regex"} <= set(SOURCES) and "eclip" in tasks.get("eclip").sources


def test_eclip_aligns_shuffled_rows_by_id(tmp_path):
    image_ids, caption_ids, img, txt = make_task(tmp_path)
    want = retrieval_metrics(*retrieval_ranks(img, txt))
    rng = np.random.default_rng(5)
    pi, pc = rng.permutation(N), rng.permutation(N)   # images and captions shuffled independently
    write_npz(tmp_path / "out", [image_ids[i] for i in pi], img[pi], [caption_ids[i] for i in pc], txt[pc])
    s = score(eclip_config(tmp_path), run_record(tmp_path))
    assert s.ok and s.reason == ""
    assert s.value == pytest.approx(want["mean_rank"])
    assert s.metrics["i2t_r5"] == pytest.approx(want["i2t_r5"])
    assert s.metrics["n"] == N
    # a mis-aligned submission (captions in the wrong order) scores worse, so alignment matters
    write_npz(tmp_path / "out", image_ids, img, caption_ids[::-1], txt)
    assert score(eclip_config(tmp_path), run_record(tmp_path)).value > want["mean_rank"] + 1


def test_eclip_value_follows_metric_name_and_final_key(tmp_path):
    image_ids, caption_ids, img, txt = make_task(tmp_path)
    keys = tmp_path / ".autoresearch" / "secret" / "keys"
    (keys / "test.json").write_text((keys / "fold_1.json").read_text())
    write_npz(tmp_path / "out", image_ids, img, caption_ids, txt)
    cfg = eclip_config(tmp_path, name="median_rank")
    final = run_record(tmp_path, fold=None, mode="final")
    assert key_path(cfg, final).name == "test.json"
    s = score(cfg, final)
    assert s.value == s.metrics["median_rank"]


@pytest.mark.parametrize("problem, reason", [
    ("missing_file", "wrote no embeddings.npz"),
    ("missing_id", "1 missing"),
    ("extra_id", "not in the query set"),
    ("duplicate_id", "more than once"),
    ("nan", "non-finite"),
    ("missing_array", "lacks caption_emb"),
    ("object_ids", "string arrays"),
    ("not_npz", "not a valid .npz"),
    ("dim_mismatch", "dimension"),
    ("row_count", "one row per entry"),
])
def test_eclip_bad_runs_fail_with_reason(tmp_path, problem, reason):
    image_ids, caption_ids, img, txt = make_task(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    if problem == "missing_id":
        write_npz(out, image_ids[1:], img[1:], caption_ids, txt)
    elif problem == "extra_id":
        write_npz(out, image_ids + ["zzz"], np.vstack([img, img[:1]]), caption_ids, txt)
    elif problem == "duplicate_id":
        write_npz(out, image_ids[:-1] + image_ids[:1], img, caption_ids, txt)
    elif problem == "nan":
        txt[3, 2] = np.nan
        write_npz(out, image_ids, img, caption_ids, txt)
    elif problem == "missing_array":
        np.savez(out / "embeddings.npz", image_ids=np.array(image_ids), image_emb=img,
                 caption_ids=np.array(caption_ids))
    elif problem == "object_ids":
        np.savez(out / "embeddings.npz", image_ids=np.array(image_ids, dtype=object), image_emb=img,
                 caption_ids=np.array(caption_ids), caption_emb=txt)
    elif problem == "not_npz":
        (out / "embeddings.npz").write_text("print('mean_rank: 0')")
    elif problem == "dim_mismatch":
        write_npz(out, image_ids, img, caption_ids, txt[:, :3])
    elif problem == "row_count":
        write_npz(out, image_ids, img[:-1], caption_ids, txt)
    s = score(eclip_config(tmp_path), run_record(tmp_path))
    assert isinstance(s, Score) and math.isnan(s.value) and not s.ok
    assert s.metrics == {}
    assert reason in s.reason


def test_eclip_setup_problems_are_user_errors(tmp_path):
    image_ids, caption_ids, img, txt = make_task(tmp_path)
    write_npz(tmp_path / "out", image_ids, img, caption_ids, txt)
    with pytest.raises(UserError, match="fold_4.json is missing"):
        score(eclip_config(tmp_path), run_record(tmp_path, fold=4))
    with pytest.raises(UserError, match="not computed by the eclip source"):
        score(eclip_config(tmp_path, name="accuracy"), run_record(tmp_path))
    keys = tmp_path / ".autoresearch" / "secret" / "keys"
    (keys / "fold_2.json").write_text(json.dumps({"pairs": {"a": "x", "b": "x"}}))
    with pytest.raises(UserError, match="same caption"):
        score(eclip_config(tmp_path), run_record(tmp_path, fold=2))
    (keys / "fold_3.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot be read"):
        score(eclip_config(tmp_path), run_record(tmp_path, fold=3))


def test_check_config_catches_wrong_direction(tmp_path):
    tasks.get("eclip").check(eclip_config(tmp_path, "i2t_r5", "maximize"))
    with pytest.raises(UserError, match="should be maximized"):
        tasks.get("eclip").check(eclip_config(tmp_path, "i2t_r5", "minimize"))
    with pytest.raises(UserError, match="should be minimized"):
        tasks.get("eclip").check(eclip_config(tmp_path, "mean_rank", "maximize"))


def json_config(root: Path, key: str):
    return parse(root, {"metric": {"name": "acc", "source": "json", "file": "m.json", "key": key,
                                   "direction": "maximize"}})


def test_json_source_reads_plain_and_dotted_keys(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.json").write_text(json.dumps({"val": {"acc": 0.75, "loss": 1.5}, "top.level": 3, "steps": 10}))
    s = score(json_config(tmp_path, "val.acc"), run_record(tmp_path))
    assert s.ok and s.value == 0.75
    assert s.metrics["val.loss"] == 1.5 and s.metrics["steps"] == 10
    assert score(json_config(tmp_path, "top.level"), run_record(tmp_path)).value == 3


@pytest.mark.parametrize("content, key, reason", [
    (None, "acc", "wrote no m.json"),
    ("{broken", "acc", "not valid JSON"),
    ('{"acc": 1}', "val.acc", "no key 'val.acc'"),
    ('{"acc": "high"}', "acc", "not a number"),
    ('{"acc": true}', "acc", "not a number"),
    ('{"acc": NaN}', "acc", "not a finite number"),
    ('{"acc": Infinity}', "acc", "not a finite number"),
])
def test_json_source_bad_runs(tmp_path, content, key, reason):
    out = tmp_path / "out"
    out.mkdir()
    if content is not None:
        (out / "m.json").write_text(content)
    s = score(json_config(tmp_path, key), run_record(tmp_path))
    assert math.isnan(s.value) and s.metrics == {} and reason in s.reason


def regex_config(root: Path, pattern: str = r"^val_bpb:\s*(\S+)"):
    return parse(root, {"metric": {"name": "val_bpb", "source": "regex", "pattern": pattern}})


def test_regex_source_uses_last_match(tmp_path):
    (tmp_path / "run.log").write_text("step 1\nval_bpb: 1.50\nnot val_bpb: 0.1\nval_bpb: 0.997\nbye\n")
    s = score(regex_config(tmp_path), run_record(tmp_path))
    assert s.ok and s.value == 0.997 and s.metrics == {"val_bpb": 0.997}


@pytest.mark.parametrize("log, reason", [
    (None, "cannot read the log"),
    ("nothing here\n", "does not occur"),
    ("val_bpb: 1.0\nval_bpb: oops\n", "not a number"),
    ("val_bpb: nan\n", "not a finite number"),
])
def test_regex_source_bad_runs(tmp_path, log, reason):
    if log is not None:
        (tmp_path / "run.log").write_text(log)
    s = score(regex_config(tmp_path), run_record(tmp_path))
    assert math.isnan(s.value) and reason in s.reason
