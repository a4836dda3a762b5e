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
from autoresearch.scoring.sources import SOURCES, RunRecord, Score
from autoresearch.tasks.eclip import key_path

N, D = 30, 6


def eclip_config(root: Path, name: str = "mean_rank", direction: str = "minimize"):
    return parse(root, {"task": {"name": "eclip"}, "metric": {"name": name, "source": "eclip", "direction": direction}})


def score(config, run: RunRecord) -> Score:
    """What the trial does: the task's scorer for ``[metric] source``."""
    return tasks.for_config(config).scorer(config)(config, run)


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


def npy_bytes(arr=None, *, shape=None, descr="<f4", fortran=False, data=b"") -> bytes:
    """An .npy member: from an array, or a hand-written header declaring ``shape`` over ``data``."""
    import io

    if arr is not None:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=True)
        return buf.getvalue()
    header = repr({"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}).encode()
    pad = 64 - (10 + len(header) + 1) % 64
    return b"\x93NUMPY\x01\x00" + (len(header) + pad + 1).to_bytes(2, "little") + header + b" " * pad + b"\n" + data


def write_members(out: Path, members: dict[str, bytes], compression=None) -> None:
    import zipfile

    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out / "embeddings.npz", "w", compression or zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name + ".npy", data)


def valid_members(image_ids, img, caption_ids, txt) -> dict[str, bytes]:
    return {"image_ids": npy_bytes(np.array(image_ids)), "image_emb": npy_bytes(img),
            "caption_ids": npy_bytes(np.array(caption_ids)), "caption_emb": npy_bytes(txt)}


def zip_bomb(out: Path, members: dict[str, bytes], name: str, inflated: int) -> None:
    """Replace member ``name`` by a deflated run of zeros that inflates to ``inflated`` bytes (a few KB on
    disk), written by hand so that nothing of that size is ever in memory."""
    import struct
    import zlib

    out.mkdir(parents=True, exist_ok=True)
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = block.compress(bytes(1 << 20)) + block.flush(zlib.Z_FULL_FLUSH)   # repeatable: no back references
    entries, body = [], b""
    for member, data in members.items():
        if member == name:
            count = inflated >> 20
            stream = mib * count + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
            crc, zero = 0, bytes(1 << 20)
            for _ in range(count):
                crc = zlib.crc32(zero, crc)
            size, method = count << 20, 8
        else:
            stream, crc, size, method = data, zlib.crc32(data), len(data), 0
        fname = (member + ".npy").encode()
        entries.append((fname, crc, len(stream), size, method, len(body)))
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(stream), size,
                            len(fname), 0) + fname + stream
    directory = b"".join(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, csize,
                                     size, len(fname), 0, 0, 0, 0, 0, offset) + fname
                         for fname, crc, csize, size, method, offset in entries)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(directory), len(body), 0)
    (out / "embeddings.npz").write_bytes(body + directory + end)


@pytest.mark.parametrize("problem, reason", [
    ("missing_file", "wrote no embeddings.npz"),
    ("missing_id", "image_ids has 29 entries, but the query set has 30"),
    ("extra_id", "image_ids has 31 entries"),
    ("unknown_id", "1 missing (e.g. 'img000'), 1 not in the query set (e.g. 'zzz')"),
    ("duplicate_id", "more than once"),
    ("nan", "non-finite"),
    ("inf", "non-finite"),
    ("missing_array", "lacks caption_emb"),
    ("object_ids", "stores Python objects"),
    ("not_npz", "not a valid .npz"),
    ("dim_mismatch", "dimension"),
    ("row_count", "got 29 rows for the 30 queries"),
    ("absurd_rows", "got 1099511627776 rows"),
    ("absurd_dim", "dimension 4294967296; the scorer takes 1 to 4096"),
    ("absurd_ids", "image_ids has 4611686018427387904 entries"),
    ("long_ids", "strings of up to 100000 characters"),
    ("complex", "must be a numeric [n, d] array"),
    ("bool", "must be a numeric [n, d] array"),
    ("float128", "must be a numeric [n, d] array"),
    ("structured", "must be a numeric [n, d] array"),
    ("truncated", "declares 720 bytes of data but its entry holds 16"),
    ("bad_bytes_ids", "image_ids are not valid text"),
    ("npy_v3", "format version"),
    ("bad_header", "not a valid .npy array"),
    ("zip_bomb", "declares 2.0 GiB of uncompressed data, over the 1.0 GiB cap"),
    ("bzip2", "compression method 12"),
    ("many_members", "entries"),
    ("fifo", "embeddings.npz is a FIFO (named pipe), not a regular file"),
    ("symlink", "embeddings.npz is a symbolic link"),
    ("symlink_dir", "the output folder"),
    ("hardlink", "has 2 hard links"),
    ("directory", "embeddings.npz is a folder"),
])
def test_eclip_bad_runs_fail_with_reason(tmp_path, problem, reason):
    """Each hostile or broken submission gives its reason, read in this process (the child runs the same
    ``eclip_metrics``); none of them loads more than a few kilobytes."""
    import os
    import zipfile

    from autoresearch.scoring.paired import retrieval_metrics_of as eclip_metrics

    image_ids, caption_ids, img, txt = make_task(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    members = valid_members(image_ids, img, caption_ids, txt)
    if problem == "missing_id":
        write_npz(out, image_ids[1:], img[1:], caption_ids, txt)
    elif problem == "extra_id":
        write_npz(out, image_ids + ["zzz"], np.vstack([img, img[:1]]), caption_ids, txt)
    elif problem == "unknown_id":
        write_npz(out, ["zzz"] + image_ids[1:], img, caption_ids, txt)
    elif problem == "duplicate_id":
        write_npz(out, image_ids[:-1] + image_ids[:1], img, caption_ids, txt)
    elif problem in ("nan", "inf"):
        txt[3, 2] = np.nan if problem == "nan" else -np.inf
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
    elif problem.startswith("absurd"):
        shape = {"absurd_rows": (2 ** 40, D), "absurd_dim": (N, 2 ** 32), "absurd_ids": (2 ** 62,)}[problem]
        key = "image_ids" if problem == "absurd_ids" else "image_emb"
        members[key] = npy_bytes(shape=shape, descr="<U8" if key == "image_ids" else "<f4", data=bytes(64))
        write_members(out, members)
    elif problem == "long_ids":
        members["image_ids"] = npy_bytes(shape=(N,), descr="<U100000")
        write_members(out, members)
    elif problem in ("complex", "bool", "float128", "structured"):
        dtype = {"complex": np.complex64, "bool": bool, "float128": np.longdouble,
                 "structured": np.dtype([("a", "<f4"), ("b", "<f4")])}[problem]
        members["caption_emb"] = npy_bytes(np.zeros((N, D) if problem != "structured" else (N, D), dtype=dtype))
        if problem == "float128" and np.dtype(np.longdouble).itemsize <= 8:
            pytest.skip("long double is float64 here")
        write_members(out, members)
    elif problem == "truncated":
        members["image_emb"] = npy_bytes(shape=(N, D), data=bytes(16))
        write_members(out, members)
    elif problem == "bad_bytes_ids":
        members["image_ids"] = npy_bytes(np.array([b"\xff\xfe"] * N))
        write_members(out, members)
    elif problem == "npy_v3":
        members["image_emb"] = b"\x93NUMPY\x03\x00" + members["image_emb"][8:]
        write_members(out, members)
    elif problem == "bad_header":
        members["image_emb"] = b"\x93NUMPY\x01\x00\x10\x00{'descr': os.sy}\n"
        write_members(out, members)
    elif problem == "zip_bomb":
        zip_bomb(out, members, "caption_emb", 2 << 30)
        assert (out / "embeddings.npz").stat().st_size < 4 << 20
    elif problem == "bzip2":
        write_members(out, members, compression=zipfile.ZIP_BZIP2)
    elif problem == "many_members":
        write_members(out, {**members, **{f"pad{i}": b"" for i in range(100)}})
    elif problem == "fifo":
        os.mkfifo(out / "embeddings.npz")
    elif problem == "symlink":
        earlier = tmp_path / "runs" / "0000" / "fold1"
        write_npz(earlier, image_ids, img, caption_ids, txt)
        (out / "embeddings.npz").symlink_to(earlier / "embeddings.npz")
    elif problem == "symlink_dir":
        write_npz(tmp_path / "elsewhere", image_ids, img, caption_ids, txt)
        out.rmdir()
        out.symlink_to(tmp_path / "elsewhere")
    elif problem == "hardlink":
        write_npz(tmp_path / "elsewhere", image_ids, img, caption_ids, txt)
        os.link(tmp_path / "elsewhere" / "embeddings.npz", out / "embeddings.npz")
    elif problem == "directory":
        (out / "embeddings.npz").mkdir()
    got = eclip_metrics(out, image_ids, caption_ids)
    assert isinstance(got, str), got
    assert reason in got


def test_eclip_accepts_compressed_fortran_and_float64_submissions(tmp_path):
    from autoresearch.scoring.paired import retrieval_metrics_of as eclip_metrics

    image_ids, caption_ids, img, txt = make_task(tmp_path)
    want = retrieval_metrics(*retrieval_ranks(img, txt))
    out = tmp_path / "out"
    out.mkdir()
    np.savez_compressed(out / "embeddings.npz", image_ids=np.array(image_ids), image_emb=np.asfortranarray(img),
                        caption_ids=np.array(caption_ids, dtype="S"), caption_emb=txt.astype(np.float64))
    got = eclip_metrics(out, image_ids, caption_ids)
    assert isinstance(got, dict) and got["mean_rank"] == want["mean_rank"]


def test_a_fifo_neither_blocks_nor_crashes_the_scorer_process(tmp_path):
    """Through ``score``: the child opens without blocking and the parent gets the reason."""
    import os

    make_task(tmp_path)
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "out" / "embeddings.npz")
    s = score(eclip_config(tmp_path), run_record(tmp_path))
    assert math.isnan(s.value) and "FIFO" in s.reason


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: the pickled-ids attack."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_ids_are_never_unpickled(tmp_path):
    image_ids, caption_ids, img, txt = make_task(tmp_path)
    marker = tmp_path / "PWNED"
    ids = np.empty(N, dtype=object)
    ids[:] = [_Payload(str(marker))] * N
    np.savez(tmp_path / "out.npz", image_ids=ids)   # only to get numpy's pickled member
    (tmp_path / "out").mkdir()
    members = valid_members(image_ids, img, caption_ids, txt)
    members["image_ids"] = npy_bytes(ids)
    write_members(tmp_path / "out", members)
    s = score(eclip_config(tmp_path), run_record(tmp_path))
    assert "stores Python objects" in s.reason
    assert not marker.exists()


def test_scoring_child_has_a_deadline_and_a_memory_ceiling(tmp_path):
    from autoresearch.scoring import worker

    image_ids, caption_ids, img, txt = make_task(tmp_path)
    write_npz(tmp_path / "out", image_ids, img, caption_ids, txt)
    request = {"source": "retrieval", "out_dir": str(tmp_path / "out"), "image_ids": image_ids,
               "caption_ids": caption_ids}
    assert "metrics" in worker.run_isolated(request)
    slow = worker.run_isolated(request, timeout_s=0.01)   # the interpreter alone takes longer to start
    assert "did not finish within its 0.01 s deadline" in slow["reason"]
    # 2,000 x 1,024 float32 inputs need ~100 MB while scoring; a 10 MB ceiling stops it inside the child
    n, d = 2000, 1024
    big_ids = [f"i{i}" for i in range(n)]
    emb = np.ones((n, d), dtype=np.float32)
    write_npz(tmp_path / "big", big_ids, emb, big_ids, emb)
    request = {**request, "out_dir": str(tmp_path / "big"), "image_ids": big_ids, "caption_ids": big_ids}
    starved = worker.run_isolated(request, memory_bytes=10 << 20)
    if "metrics" in starved:
        pytest.skip("RLIMIT_AS is not enforced here")
    assert "memory ceiling" in starved["reason"] or "MemoryError" in starved["reason"], starved


def test_eclip_setup_problems_are_user_errors(tmp_path):
    image_ids, caption_ids, img, txt = make_task(tmp_path)
    write_npz(tmp_path / "out", image_ids, img, caption_ids, txt)
    with pytest.raises(UserError, match="fold_4.json is missing"):
        score(eclip_config(tmp_path), run_record(tmp_path, fold=4))
    with pytest.raises(UserError, match="not a retrieval metric"):
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


# ---------------------------------------------------------------- hostile outputs for json, regex, facts

@pytest.mark.parametrize("problem, reason", [
    ("symlink", "m.json is a symbolic link"),
    ("fifo", "m.json is a FIFO"),
    ("huge", "over the 4.0 MiB the tool reads"),
    ("deep", "not valid JSON"),
    ("big_int", "not a finite number"),
    ("huge_int_text", "not valid JSON"),
])
def test_json_source_refuses_hostile_files(tmp_path, problem, reason):
    import os

    out = tmp_path / "out"
    out.mkdir()
    target = out / "m.json"
    if problem == "symlink":
        (tmp_path / "old.json").write_text('{"acc": 0.99}')
        target.symlink_to(tmp_path / "old.json")
    elif problem == "fifo":
        os.mkfifo(target)
    elif problem == "huge":
        target.write_text('{"acc": 0.5, "pad": "' + "x" * (5 << 20) + '"}')
    elif problem == "deep":
        target.write_text('{"acc": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif problem == "big_int":
        target.write_text('{"acc": 1' + "0" * 400 + "}")
    elif problem == "huge_int_text":
        target.write_text('{"acc": ' + "9" * 5000 + "}")
    s = score(json_config(tmp_path, "acc"), run_record(tmp_path))
    assert math.isnan(s.value) and s.metrics == {} and reason in s.reason


def test_json_side_metrics_survive_deep_nesting_and_huge_numbers(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    nested = {"acc": 0.5, "big": 10 ** 400}
    node = nested
    for i in range(900):          # deeper than a recursive walk of the default recursion limit allows
        node["x"] = {}
        node = node["x"]
    node["leaf"] = 1
    (out / "m.json").write_text(__import__("json").dumps(nested))
    s = score(json_config(tmp_path, "acc"), run_record(tmp_path))
    assert s.ok and s.value == 0.5 and s.metrics["big"] == math.inf


def test_json_file_outside_the_output_folder_is_a_setup_error(tmp_path):
    cfg = parse(tmp_path, {"metric": {"name": "acc", "source": "json", "file": "../secret.json", "key": "acc",
                                      "direction": "maximize"}})
    with pytest.raises(UserError, match="without '..'"):
        tasks.for_config(cfg).check(cfg)
    with pytest.raises(UserError, match="without '..'"):
        score(cfg, run_record(tmp_path))


def test_regex_source_reads_only_the_end_of_a_huge_log(tmp_path):
    from autoresearch.scoring.sources import MAX_LOG_BYTES

    with open(tmp_path / "run.log", "w") as fh:
        fh.write("val_bpb: 0.001\n")                          # early: beyond the cap from the end
        fh.write(("noise " * 20 + "\n") * (MAX_LOG_BYTES // 120 + 10))
        fh.write("val_bpb: 0.75\n")
    s = score(regex_config(tmp_path), run_record(tmp_path))
    assert s.ok and s.value == 0.75
    with open(tmp_path / "run.log", "a") as fh:
        fh.write(("noise " * 20 + "\n") * (MAX_LOG_BYTES // 120 + 10))
    s = score(regex_config(tmp_path), run_record(tmp_path))
    assert "does not occur" in s.reason                     # the early 0.001 was never read


def test_regex_source_refuses_a_log_that_is_a_link(tmp_path):
    (tmp_path / "other.log").write_text("val_bpb: 0.1\n")
    (tmp_path / "run.log").symlink_to(tmp_path / "other.log")
    s = score(regex_config(tmp_path), run_record(tmp_path))
    assert math.isnan(s.value) and "cannot read the log" in s.reason


@pytest.mark.parametrize("text, kept, note", [
    ('{"steps": 5, "peak_memory_gb": "lots", "device": "cpu"}', {"steps": 5, "device": "cpu"},
     "peak_memory_gb = 'lots' is not a finite number"),
    ('{"peak_memory_gb": -3, "seconds": Infinity, "final_loss": NaN}', {}, "out of range"),
    ('{"steps": true, "n_params": 1' + "0" * 400 + '}', {}, "n_params = 1000"),
    ('{"nested": {"a": 1}, "list": [1], "final_loss": null}', {"final_loss": None}, "nested is a dict"),
    ('{"note": "' + "x" * 300 + '"}', {}, "longer than 200"),
    ('[1, 2]', {}, "holds a list, not an object"),
    ('{"steps": ', {}, "not valid JSON"),
    ('{"a": ' + "9" * 5000 + '}', {}, "not valid JSON"),
    ("[" * 100_000, {}, "not valid JSON"),
])
def test_facts_are_validated_field_by_field(text, kept, note):
    from autoresearch.scoring.facts import parse_facts

    facts, notes = parse_facts(text.encode())
    assert facts == kept
    assert len(notes) == 1 and note in notes[0], notes


def test_facts_file_must_be_a_small_regular_file(tmp_path):
    import os

    from autoresearch.scoring.facts import number, read_facts

    out = tmp_path / "out"
    out.mkdir()
    assert read_facts(out) == ({}, [])
    (tmp_path / "elsewhere.json").write_text('{"steps": 1}')
    (out / "facts.json").symlink_to(tmp_path / "elsewhere.json")
    facts, notes = read_facts(out)
    assert facts == {} and "symbolic link" in notes[0]
    (out / "facts.json").unlink()
    os.mkfifo(out / "facts.json")
    facts, notes = read_facts(out)
    assert facts == {} and "FIFO" in notes[0]
    (out / "facts.json").unlink()
    (out / "facts.json").write_text('{"steps": 1, "pad": "' + "x" * 100_000 + '"}')
    assert "over the" in read_facts(out)[1][0]
    (out / "facts.json").write_text('{"peak_memory_gb": 2.5}')
    facts, notes = read_facts(out)
    assert number(facts, "peak_memory_gb") == 2.5 and notes == []
    assert number({"peak_memory_gb": "lots"}, "peak_memory_gb") == 0.0


def test_a_trial_with_bad_facts_is_scored_and_notes_what_it_dropped(tmp_path):
    """The crash of issue 9: a string where a number belongs made ``run`` fail on every resume."""
    from autoresearch.loop import trial
    from autoresearch.runner.spec import ExitKind, RunOutcome, RunSpec

    image_ids, caption_ids, img, txt = make_task(tmp_path)
    out = tmp_path / "out"
    write_npz(out, image_ids, img, caption_ids, txt)
    (out / "facts.json").write_text('{"peak_memory_gb": "lots", "steps": 3}')
    (tmp_path / "run.log").write_text("training\n")
    spec = RunSpec(name="fold1", command=("true",), cwd=tmp_path, env={}, out_dir=out,
                   log_path=tmp_path / "run.log", timeout_s=10)
    cfg = eclip_config(tmp_path)
    fold = trial._score(cfg, tasks.for_config(cfg), RunOutcome(spec, ExitKind.OK, 0, 1.0, peak_rss_gb=0.5), 1, "fold")
    result = trial.TrialResult("ok", "", [fold])
    assert fold.score.ok and fold.facts == {"steps": 3}
    assert result.peak_memory_gb == 0.5
    assert "peak_memory_gb = 'lots' is not a finite number" in fold.notes[0]
    assert "# facts.json: dropped peak_memory_gb" in (tmp_path / "run.log").read_text()
    assert trial._status(fold.outcome, fold.score, cfg) == ("ok", "")
