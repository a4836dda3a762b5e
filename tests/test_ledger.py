"""The ledger: schema, WAL, row life cycle, champion, exports, version errors, kill -9 safety."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoresearch.errors import UserError
from autoresearch.loop.ledger import COLUMNS, SCHEMA_VERSION, Ledger, SealedRow, ledger_path


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(ledger_path(tmp_path))
    yield led
    led.close()


def test_schema_created_in_wal_mode(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    Ledger(path).close()
    assert path == tmp_path / ".autoresearch" / "ledger.sqlite" and path.is_file()
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "experiments", "events"} <= tables
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    cols = [r[1] for r in db.execute("PRAGMA table_info(experiments)")]
    assert cols == list(COLUMNS)
    db.close()


def test_synchronous_full(ledger: Ledger) -> None:
    assert ledger._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_start_update_finish(ledger: Ledger) -> None:
    assert ledger.next_number() == 0
    n0 = ledger.start(tag="t", kind="baseline", description="baseline", commit="abc")
    assert n0 == 0
    row = ledger.get(0)
    assert row.status == "running" and row.started_at.endswith("Z") and row.ended_at is None
    assert [r.number for r in ledger.running()] == [0]

    ledger.update(0, train_seconds=12.5, folds=[1.0, float("nan"), 3.0], metrics_json=[{"a": 1.0}],
                  hardware={"gpu": "none"}, sandbox=True, meta={"trial": 3})
    ledger.finish(0, "keep", metric_mean=2.0, metric_std=float("nan"), decision={"rule": "noise", "x": math.inf})
    row = ledger.get(0)
    assert row.status == "keep" and row.ended_at is not None
    assert row.train_seconds == 12.5 and row.sandbox == 1
    assert row.folds_json == "[1.0, null, 3.0]"
    assert row.folds[0] == 1.0 and math.isnan(row.folds[1]) and row.folds[2] == 3.0
    assert row.metrics == [{"a": 1.0}] and row.hardware == {"gpu": "none"} and row.meta == {"trial": 3}
    assert row.decision == {"rule": "noise", "x": None}
    assert row.metric_mean == 2.0 and row.metric_std is None
    assert ledger.running() == []

    assert ledger.start(tag="t", kind="experiment") == 1
    assert ledger.next_number() == 2
    assert ledger.get(99) is None


def test_programming_errors(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="unknown ledger column 'colour'"):
        ledger.start(tag="t", kind="experiment", colour="red")
    with pytest.raises(ValueError, match="kind"):
        ledger.start(tag="t", kind="nope")
    with pytest.raises(ValueError, match="needs a kind"):
        ledger.start(tag="t")
    n = ledger.start(tag="t", kind="experiment")
    with pytest.raises(ValueError, match="unknown ledger column"):
        ledger.update(n, metric=1.0)
    with pytest.raises(ValueError, match="final status"):
        ledger.finish(n, "running")
    with pytest.raises(ValueError, match="status"):
        ledger.update(n, status="kept")
    with pytest.raises(ValueError, match="integer"):
        ledger.update(n, phase=1.5)
    with pytest.raises(TypeError, match="Python objects"):
        ledger.update(n, folds_json="[1, 2]")
    with pytest.raises(KeyError):
        ledger.update(42, reason="x")
    with pytest.raises(ValueError, match="already in the ledger"):
        ledger.start(number=n, tag="t", kind="experiment")
    assert [r.number for r in ledger.rows()] == [n]      # failed calls left nothing behind


def test_explicit_number_and_next(ledger: Ledger) -> None:
    assert ledger.start(number=5, tag="t", kind="experiment") == 5
    assert ledger.next_number() == 6
    assert ledger.start(tag="t", kind="experiment") == 6


def test_champion_selection(ledger: Ledger) -> None:
    assert ledger.champion("t") is None
    b = ledger.start(tag="t", kind="baseline")
    ledger.finish(b, "keep", metric_mean=10.0)
    assert ledger.champion("t").number == b
    e1 = ledger.start(tag="t", kind="experiment")
    ledger.finish(e1, "keep", metric_mean=9.0)
    e2 = ledger.start(tag="t", kind="experiment")
    ledger.finish(e2, "discard", metric_mean=8.0)
    c = ledger.start(tag="t", kind="noise")
    ledger.finish(c, "keep", metric_mean=7.0)
    o = ledger.start(tag="other", kind="experiment")
    ledger.finish(o, "keep", metric_mean=1.0)
    running = ledger.start(tag="t", kind="experiment")
    assert ledger.champion("t").number == e1
    assert ledger.champion("other").number == o
    assert [r.number for r in ledger.rows(tag="t", kinds=["experiment"])] == [e1, e2, running]


def test_events_and_meta(ledger: Ledger) -> None:
    ledger.event("test_used", 3, tag="t", split="test")
    ledger.event("noise_floor", sigma=0.5)
    assert [e.kind for e in ledger.events()] == ["test_used", "noise_floor"]
    (ev,) = ledger.events("test_used")
    assert ev.number == 3 and ev.payload == {"tag": "t", "split": "test"} and ev.time.endswith("Z")
    ledger.set_meta("champion_commit", {"t": "abc"})
    assert ledger.get_meta("champion_commit") == {"t": "abc"}
    assert ledger.get_meta("missing", 7) == 7
    assert ledger.get_meta("schema_version") == SCHEMA_VERSION
    with pytest.raises(ValueError):
        ledger.set_meta("schema_version", 3)


def test_reopen_keeps_rows(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    with pytest.raises(UserError, match="no ledger at"):
        Ledger(path, create=False)
    assert not path.parent.exists()
    with Ledger(path) as led:
        led.finish(led.start(tag="t", kind="baseline", description="b"), "keep", metric_mean=1.5)
    with Ledger(path, create=False) as led:
        assert led.get(0).metric_mean == 1.5 and led.next_number() == 1


def _set_version(path: Path, version: str) -> None:
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (version,))
    db.commit()
    db.close()


def test_newer_schema_version_says_upgrade(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    Ledger(path).close()
    _set_version(path, "3")
    with pytest.raises(UserError) as info:
        Ledger(path)
    text = str(info.value)
    assert str(path) in text and "version 3" in text and "version 2" in text and "upgrade" in text


def test_older_schema_version_is_not_ours(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    Ledger(path).close()
    _set_version(path, "0")
    with pytest.raises(UserError, match="not written by autoresearch") as info:
        Ledger(path)
    assert str(path) in str(info.value)


def test_foreign_files_are_user_errors(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(UserError, match="not an autoresearch ledger"):
        Ledger(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(UserError, match="not an autoresearch ledger"):
        Ledger(junk)


def test_tsv_exact_format(ledger: Ledger, tmp_path: Path) -> None:
    b = ledger.start(tag="t", kind="baseline", description="baseline", commit="a1b2c3d4e5f60718")
    ledger.finish(b, "keep", metric_mean=0.9979, peak_memory_gb=44.04)
    e = ledger.start(tag="t", kind="experiment", description="LR\t1e-4\nand warmup", candidate_commit="ffeeddccbb")
    ledger.finish(e, "discard", metric_mean=344.6812345, peak_memory_gb=3.25)
    c = ledger.start(tag="t", kind="experiment", description="bigger model", candidate_commit="0123456789")
    ledger.finish(c, "crash", metric_mean=12.0, peak_memory_gb=None, reason="OOM")
    f = ledger.start(tag="t", kind="final", description="test")
    ledger.finish(f, "keep", metric_mean=34.3)
    ledger.finish(ledger.start(tag="other", kind="experiment", description="x"), "discard", metric_mean=1.0)
    out = ledger.export_tsv(tmp_path / "results.tsv", tag="t", metric_name="val_bpb")
    assert out.read_text() == (
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
        "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n"
        "ffeeddc\t344.681\t3.2\tdiscard\tLR 1e-4 and warmup\n"
        "0123456\t0.0\t0.0\tcrash\tbigger model\n"
    )


def test_jsonl_round_trip(ledger: Ledger, tmp_path: Path) -> None:
    n = ledger.start(tag="t", kind="baseline", description='quote " and \n newline')
    ledger.finish(n, "keep", metric_mean=1.0, folds=[1.0, float("nan")], decision={"delta_sigma": 0.1})
    ledger.start(tag="t", kind="experiment", hardware={"gpu": "H100"}, tokens_in=10)
    ledger.event("test_used", n, tag="t")
    out = ledger.export_jsonl(tmp_path / "results.jsonl")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    experiments = [r for r in records if r.pop("record") == "experiment"]
    assert experiments == [row.to_dict() for row in ledger.rows()]
    assert experiments[0]["folds_json"] == [1.0, None]
    assert experiments[1]["hardware_json"] == {"gpu": "H100"}
    assert records[-1]["kind"] == "test_used" and records[-1]["payload"] == {"tag": "t"}


_WRITER = """
import sys
from autoresearch.loop.ledger import Ledger
led = Ledger(sys.argv[1])
i = 0
while True:
    n = led.start(tag="t", kind="experiment", description="exp %d" % i, folds=[i, i + 0.5])
    led.update(n, train_seconds=float(i), metrics={"fold": [i] * 50})
    led.finish(n, "discard", metric_mean=float(i), reason="r" * 200)
    print(n, flush=True)
    i += 1
"""


def test_kill_minus_nine_leaves_committed_rows_intact(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for round_ in range(3):
        child = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                                 env=env)
        done: list[int] = []
        deadline = time.monotonic() + 30
        while len(done) < 20 + 7 * round_ and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            done.append(int(line))
        os.kill(child.pid, signal.SIGKILL)   # at whatever point it has reached mid-transaction
        child.wait()
        child.stdout.close()
        assert len(done) >= 20, "the writer did not get going"
        with Ledger(path) as led:
            assert led._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            for n in done:
                row = led.get(n)
                i = int(row.description.split()[1])
                assert row.status == "discard" and row.metric_mean == float(i) and row.train_seconds == float(i)
                assert row.folds == [i, i + 0.5] and row.metrics == {"fold": [i] * 50} and row.reason == "r" * 200
            numbers = [r.number for r in led.rows()]
            assert numbers == list(range(len(numbers)))            # no gaps, no duplicates
            assert len(led.running()) <= 1                         # at most the row it was writing
            for r in led.running():                                # what the engine does on resume
                led.finish(r.number, "interrupted")


def test_rows_with_odd_values_still_load(ledger: Ledger, tmp_path: Path) -> None:
    """A row written by hand or by another tool (bad JSON, text in a REAL column) must not stop a
    resume, a report or an export: each odd value reads as absent."""
    n = ledger.start(tag="t", kind="experiment", description="odd")
    ledger.finish(n, "keep", metric_mean=1.0, folds=[1.0, 2.0])
    with sqlite3.connect(ledger.path) as db:
        db.execute("UPDATE experiments SET metrics_json='{not json', folds_json='[1, \"x\", {}]', "
                   "decision_json='[1, 2]', meta_json='\"text\"', hardware_json=x'ff', "
                   "metric_mean='lots', peak_memory_gb='high', tokens_in=2.5, description=7 WHERE number=?", (n,))
        db.execute("INSERT INTO events (time, kind, number, payload_json) VALUES ('now', 'odd', ?, '{bad')", (n,))
    row = ledger.get(n)
    assert row.metrics is None and row.decision == {} and row.meta == {} and row.hardware == {}
    assert row.folds[0] == 1.0 and math.isnan(row.folds[1]) and math.isnan(row.folds[2])
    assert row.metric_mean is None and row.peak_memory_gb is None and row.tokens_in is None
    assert row.description == "7"
    assert ledger.champion("t").number == n
    assert ledger.events("odd")[0].payload == {}
    ledger.export_jsonl(tmp_path / "all.jsonl")
    ledger.export_tsv(tmp_path / "results.tsv", tag="t")
    assert (tmp_path / "results.tsv").read_text().splitlines()[1].split("\t")[1:4] == ["0.0", "0.0", "keep"]


def test_a_version_1_ledger_is_upgraded_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    old_columns = [c for c in COLUMNS if c not in ("number", "digest", "chain_prev")]
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                     f"CREATE TABLE experiments (number INTEGER PRIMARY KEY, {', '.join(repr(c) for c in old_columns)});"
                     "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, kind TEXT NOT NULL,"
                     " number INTEGER, payload_json TEXT NOT NULL);"
                     "INSERT INTO meta VALUES ('schema_version', '1');"
                     "INSERT INTO experiments (number, tag, kind, status, metric_mean) VALUES (0, 't', 'baseline', 'keep', 2.5);")
    db.commit()
    db.close()
    with Ledger(path) as led:
        assert led.get_meta("schema_version") == SCHEMA_VERSION == 2
        old = led.get(0)
        assert old.metric_mean == 2.5 and old.digest is None
        led.finish(led.start(tag="t", kind="experiment"), "discard", metric_mean=3.0)
        assert led.get(1).digest.startswith("sha256:") and led.get(1).chain_prev == ""


def test_a_finished_row_is_sealed_and_its_record_cannot_change(ledger: Ledger) -> None:
    n = ledger.start(tag="t", kind="experiment", description="a")
    preview = ledger.preview_seal(n, "discard", metric_mean=1.0, reason="not better")
    digest = ledger.finish(n, "discard", metric_mean=1.0, reason="not better", meta={"base:t": "abc"})
    assert digest == preview == ledger.get(n).digest and ledger.get_meta("base:t") == "abc"
    with pytest.raises(SealedRow, match="status"):
        ledger.update(n, status="keep")
    with pytest.raises(SealedRow, match="commit"):
        ledger.update(n, commit="f" * 40)
    ledger.update(n, hardware_json={"where": "here"})      # descriptive columns may still be filled in
    m = ledger.start(tag="t", kind="experiment", description="b")
    assert ledger.finish(m, "keep", metric_mean=0.5) != digest and ledger.get(m).chain_prev == digest


def test_the_chain_head_is_the_ledgers_own(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="managed by the ledger"):
        ledger.set_meta("chain_head", "forged")
