"""The ledger: one SQLite file that is the single source of truth for every attempt.

Layout: ``<repo>/.autoresearch/ledger.sqlite`` with three tables.

- ``meta``: key/value (JSON text); ``schema_version`` is 1.
- ``experiments``: one row per attempt (baseline, experiment, noise, final; ablation and transfer runs made
  after the search by ``autoresearch.findings``), keyed by ``number``.
  The first row ever is number 0 (the baseline); then 1, 2, 3... in order. Numbers are global to the file,
  shared by all tags, and never reused.
- ``events``: notable facts (test split used, noise floor measured, fingerprint mismatch...).

Durability: WAL mode with ``synchronous=FULL``. Every ``start``/``update``/``finish``/``event`` is one
transaction, so a ``kill -9`` at any moment leaves either the whole write or none of it. FULL (rather than
NORMAL) also keeps the last committed write through a power cut: we commit a few times per experiment
(minutes apart), so the extra fsync costs nothing, while a lost row would mean a kept commit without a record.

Concurrency: one writer (the engine). Readers (a report, ``autoresearch status``) may open the file at the
same time; WAL lets them read while the engine writes. Two writers are out of scope: ``start`` computes
max+1 under a write lock, so numbers cannot be duplicated, but nothing else coordinates them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from autoresearch.errors import UserError
from autoresearch.vocab import Kind, Status

SCHEMA_VERSION = 1
LEDGER_RELPATH = Path(".autoresearch") / "ledger.sqlite"

KINDS = tuple(Kind)
STATUSES = tuple(Status)
FAILED = tuple(s for s in Status if s.failed)      # no usable metric
CHAMPION_KINDS = (Kind.BASELINE, Kind.EXPERIMENT)


def ledger_path(repo: Path | str) -> Path:
    """Where the ledger of a research repository lives."""
    return Path(repo) / LEDGER_RELPATH


def utc_now() -> str:
    """The current time as ISO 8601 UTC, e.g. ``2026-03-10T21:04:05.123Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Experiment:
    """One row of ``experiments``. JSON columns hold text; the properties decode them."""

    number: int
    tag: str | None = None
    kind: str | None = None
    phase: int | None = None
    phase_title: str | None = None
    attempt: int | None = None
    parent_commit: str | None = None
    candidate_commit: str | None = None
    commit: str | None = None
    agent: str | None = None
    description: str | None = None
    hypothesis: str | None = None
    changed: str | None = None
    status: str | None = None
    reason: str | None = None
    folds_json: str | None = None
    metrics_json: str | None = None
    metric_mean: float | None = None
    metric_std: float | None = None
    delta: float | None = None
    champion_metric: float | None = None
    decision_json: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    agent_seconds: float | None = None
    train_seconds: float | None = None
    score_seconds: float | None = None
    peak_memory_gb: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    log_path: str | None = None
    hardware_json: str | None = None
    sandbox: int | None = None
    fingerprints_json: str | None = None
    meta_json: str | None = None

    @property
    def folds(self) -> list[float]:
        """Per-fold metric values; a fold without a value (stored as null) or with a non-number is NaN."""
        values = _loads(self.folds_json)
        return [_as_number(v) for v in values] if isinstance(values, list) else []

    @property
    def metrics(self) -> Any:
        return _loads(self.metrics_json)

    @property
    def decision(self) -> dict:
        return _object(self.decision_json)

    @property
    def hardware(self) -> dict:
        return _object(self.hardware_json)

    @property
    def fingerprints(self) -> dict:
        return _object(self.fingerprints_json)

    @property
    def meta(self) -> dict:
        return _object(self.meta_json)

    @property
    def failed(self) -> bool:
        """True for crash, timeout, invalid and aborted: attempts without a usable metric."""
        return self.status in FAILED

    def to_dict(self) -> dict:
        """All columns, JSON columns decoded (what ``export_jsonl`` writes)."""
        out = dataclasses.asdict(self)
        for name in JSON_COLUMNS:
            out[name] = _loads(out[name])
        return out


@dataclass(frozen=True)
class Event:
    id: int
    time: str
    kind: str
    number: int | None
    payload: dict


_SQL_TYPES = {"int": "INTEGER", "float": "REAL", "str": "TEXT"}
COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Experiment))
JSON_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c.endswith("_json"))
_COLUMN_TYPES = {f.name: str(f.type).split(" ")[0] for f in dataclasses.fields(Experiment)}


def _schema_sql() -> str:
    cols = ["number INTEGER PRIMARY KEY"]
    cols += [f'"{name}" {_SQL_TYPES[_COLUMN_TYPES[name]]}' for name in COLUMNS if name != "number"]
    return (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
        f"CREATE TABLE experiments ({', '.join(cols)});\n"
        "CREATE INDEX experiments_tag ON experiments (tag, kind, status);\n"
        "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, kind TEXT NOT NULL,"
        " number INTEGER, payload_json TEXT NOT NULL);\n"
        "CREATE INDEX events_kind ON events (kind);\n"
    )


def _names(names: Iterable[str]) -> str:
    """Quoted, comma-separated column names (``commit`` is an SQL keyword)."""
    return ", ".join(f'"{n}"' for n in names)


def _clean(value: Any) -> Any:
    """Make a Python object JSON-safe: NaN/inf become null, numpy scalars and arrays plain Python."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):           # numpy scalar or array
        return _clean(value.tolist())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _clean(dataclasses.asdict(value))
    raise TypeError(f"cannot store {type(value).__name__} in the ledger: {value!r}")


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError("JSON columns take Python objects, not text (the ledger serialises them)")
    return json.dumps(_clean(value), allow_nan=False, sort_keys=True)


def _loads(text: str | None) -> Any:
    """A JSON column's value; None for a column that does not hold valid JSON text (a row written by
    hand or by another tool must not stop a resume or a report)."""
    if not isinstance(text, (str, bytes)):
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _object(text: str | None) -> dict:
    value = _loads(text)
    return value if isinstance(value, dict) else {}


def _as_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan


def _row(values: Sequence[Any]) -> "Experiment":
    """An Experiment from one SQL row. SQLite keeps whatever type was stored, so a value that does not
    fit its column's type (text in a REAL column, say) reads as None rather than breaking the caller."""
    fixed = []
    for name, value in zip(COLUMNS, values):
        kind = _COLUMN_TYPES[name]
        if value is not None and name != "number":
            if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
                value = None
            elif kind == "float":
                value = float(value)
            elif kind == "int" and not isinstance(value, int):
                value = None
            elif kind == "str" and not isinstance(value, str):
                value = str(value) if isinstance(value, (int, float)) else None
        fixed.append(value)
    return Experiment(*fixed)


# short names accepted for JSON columns: folds=[...] is folds_json=[...]
_ALIASES = {c[: -len("_json")]: c for c in JSON_COLUMNS}


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    """Validate column names and values; serialise JSON columns. Raises ValueError on programming errors."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        name = _ALIASES.get(key, key)
        if name not in COLUMNS:
            raise ValueError(f"unknown ledger column {key!r}; columns are: {', '.join(COLUMNS)}")
        if name in out:
            raise ValueError(f"column {name!r} given twice (as {key!r} and its alias)")
        if name in JSON_COLUMNS:
            value = _dumps(value)
        elif name == "kind" and value not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {value!r}")
        elif name == "status" and value not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {value!r}")
        elif name == "sandbox" and value is not None:
            value = int(bool(value))
        elif _COLUMN_TYPES[name] == "float" and value is not None:
            value = float(value)
            value = value if math.isfinite(value) else None
        elif _COLUMN_TYPES[name] == "int" and value is not None:
            if isinstance(value, float) or int(value) != value:
                raise ValueError(f"column {name!r} takes an integer, not {value!r}")
            value = int(value)
        elif _COLUMN_TYPES[name] == "str" and value is not None:
            value = str(value)
        out[name] = value
    return out


class Ledger:
    """The SQLite ledger. Rows come back as frozen ``Experiment`` objects ordered by number."""

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        """Open (or, with ``create``, make) the ledger at ``path``. UserError for a missing file when
        ``create`` is False, for a file that is not a ledger, and for another schema version."""
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise UserError(f"no ledger at {self.path}",
                            "run autoresearch in the research repository (the folder with autoresearch.toml)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._open_schema()
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:     # locked, I/O...: not about the file's content
                raise
            raise UserError(
                f"{self.path} is not an autoresearch ledger ({exc})",
                "move the file away; autoresearch creates a new ledger at this path",
            ) from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------------------

    def _open_schema(self) -> None:
        with self._tx():
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                for statement in _schema_sql().strip().split(";\n"):
                    self._db.execute(statement.rstrip(";"))
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                self._db.execute("INSERT INTO meta VALUES ('created_at', ?)", (json.dumps(utc_now()),))
                return
            row = None
            if "meta" in tables:
                row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                raise UserError(
                    f"{self.path} is an SQLite file but not an autoresearch ledger (no schema_version)",
                    "move it away; autoresearch creates a new ledger at this path",
                )
        found = row[0]
        try:
            version = int(found)
        except ValueError:
            version = None
        if version == SCHEMA_VERSION:
            return
        if version is not None and version > SCHEMA_VERSION:
            raise UserError(
                f"{self.path} has ledger schema version {version}; this autoresearch reads version {SCHEMA_VERSION}",
                "the ledger was written by a newer autoresearch: upgrade it (pip install -U autoresearch)",
            )
        raise UserError(
            f"{self.path} has ledger schema version {found!r}; this autoresearch reads version {SCHEMA_VERSION}"
            f" and no earlier version ever existed",
            "the file was not written by autoresearch: move it away and start again",
        )

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock before any read."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- experiments ----------------------------------------------------------------------------------

    def next_number(self) -> int:
        """The number the next ``start`` without an explicit number gets: 0 on an empty ledger, else max+1."""
        (top,) = self._db.execute("SELECT MAX(number) FROM experiments").fetchone()
        return 0 if top is None else top + 1

    def start(self, **fields: Any) -> int:
        """Insert a row with status 'running' and ``started_at`` now (unless given); return its number.
        ``kind`` is required; ``number`` defaults to ``next_number()``."""
        values = _encode(fields)
        if values.get("kind") is None:
            raise ValueError(f"start needs a kind, one of {', '.join(KINDS)}")
        values.setdefault("status", "running")
        values.setdefault("started_at", utc_now())
        with self._tx():
            if values.get("number") is None:
                values["number"] = self.next_number()
            elif values["number"] < 0:
                raise ValueError(f"experiment numbers start at 0, not {values['number']}")
            elif self._db.execute("SELECT 1 FROM experiments WHERE number=?", (values["number"],)).fetchone():
                raise ValueError(f"experiment {values['number']} is already in the ledger")
            names = list(values)
            self._db.execute(
                f"INSERT INTO experiments ({_names(names)}) VALUES ({', '.join('?' * len(names))})",
                [values[n] for n in names],
            )
        return values["number"]

    def update(self, number: int, **fields: Any) -> None:
        """Set some columns of one row, in one transaction. KeyError if the row does not exist."""
        values = _encode(fields)
        if "number" in values:
            raise ValueError("the number of an experiment cannot change")
        if not values:
            return
        with self._tx():
            assignments = ", ".join(f"{_names([n])}=?" for n in values)
            cur = self._db.execute(
                f"UPDATE experiments SET {assignments} WHERE number=?",
                [*values.values(), number],
            )
            if cur.rowcount != 1:
                raise KeyError(f"no experiment {number} in {self.path}")

    def finish(self, number: int, status: str, **fields: Any) -> None:
        """Set the final status (not 'running'), ``ended_at`` now (unless given) and any other columns."""
        if status == "running" or status not in STATUSES:
            raise ValueError(f"finish needs a final status, one of {', '.join(STATUSES[1:])}, not {status!r}")
        fields.setdefault("ended_at", utc_now())
        self.update(number, status=status, **fields)

    def get(self, number: int) -> Experiment | None:
        rows = self._select("WHERE number=?", (number,))
        return rows[0] if rows else None

    def rows(self, tag: str | None = None, kinds: Sequence[str] | None = None) -> list[Experiment]:
        """All rows (of one tag, of some kinds), ordered by number."""
        where, args = [], []
        if tag is not None:
            where.append("tag=?")
            args.append(tag)
        if kinds is not None:
            kinds = list(kinds)
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args.extend(kinds)
        return self._select(("WHERE " + " AND ".join(where)) if where else "", args)

    def running(self) -> list[Experiment]:
        """Rows still marked 'running': after a crash of the tool, those the engine must mark interrupted."""
        return self._select("WHERE status='running'", ())

    def champion(self, tag: str) -> Experiment | None:
        """The current champion of a tag: the row of kind baseline or experiment most recently finished
        with status 'keep' (by ``ended_at``, then number: one after another that is the highest number; with
        several candidates in flight a lower number can be kept later). The engine finishes its baseline
        with status 'keep'; confirm, noise and final rows never become champions themselves."""
        rows = self._select(
            "WHERE tag=? AND status='keep' AND kind IN ('baseline', 'experiment') "
            "ORDER BY ended_at DESC, number DESC LIMIT 1",
            (tag,), order=False,
        )
        return rows[0] if rows else None

    def _select(self, clause: str, args: Iterable[Any], order: bool = True) -> list[Experiment]:
        sql = f"SELECT {_names(COLUMNS)} FROM experiments {clause}" + (" ORDER BY number" if order else "")
        return [_row(r) for r in self._db.execute(sql, list(args))]

    # -- events and meta ------------------------------------------------------------------------------

    def event(self, kind: str, number: int | None = None, **payload: Any) -> int:
        """Record a notable fact; returns the event id."""
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO events (time, kind, number, payload_json) VALUES (?, ?, ?, ?)",
                (utc_now(), kind, number, _dumps(payload)),
            )
        return int(cur.lastrowid)

    def events(self, kind: str | None = None) -> list[Event]:
        sql = "SELECT id, time, kind, number, payload_json FROM events"
        cur = self._db.execute(sql + " WHERE kind=? ORDER BY id", (kind,)) if kind else self._db.execute(sql + " ORDER BY id")
        return [Event(i, t, k, n, _object(p)) for i, t, k, n, p in cur]

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under a key (``schema_version`` is reserved)."""
        if key == "schema_version":
            raise ValueError("schema_version is managed by the ledger")
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(_clean(value))))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def version(self) -> tuple[int, int]:
        """Changes whenever the file changes: a commit by another connection (another process, another
        thread's ledger: SQLite's ``data_version``) or a write through this one (``total_changes``). What a
        reader (the dashboard) compares to learn cheaply that something changed, or that a cached answer
        still holds. Only values from the same ``Ledger`` object are comparable."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0]), self._db.total_changes

    def tags(self) -> list[str]:
        """Every tag with a row, in the order of each tag's first row."""
        sql = "SELECT tag FROM experiments WHERE tag IS NOT NULL GROUP BY tag ORDER BY MIN(number)"
        return [r[0] for r in self._db.execute(sql)]

    # -- exports --------------------------------------------------------------------------------------

    def export_tsv(self, path: Path | str, tag: str | None = None, metric_name: str = "metric") -> Path:
        """Karpathy's ``results.tsv``: ``commit <metric> memory_gb status description``, one line per
        validation attempt of the search (every kind but 'final', the test score, and the findings kinds
        'ablation' and 'transfer', measured after it), crashes included, in number order.

        The commit is the candidate commit (else the result commit), 7 characters; the metric has 6
        significant digits (``0.997900``), 0.0 when the attempt failed or has no metric; memory in GB, one
        decimal; the description on one line without tabs.
        """
        lines = ["\t".join(("commit", _flat(metric_name), "memory_gb", "status", "description"))]
        for e in self.rows(tag=tag, kinds=[k for k in KINDS if k != Kind.FINAL and not k.finding]):
            commit = (e.candidate_commit or e.commit or "")[:7]
            metric = "0.0" if e.failed or e.metric_mean is None else f"{e.metric_mean:#.6g}"
            memory = f"{e.peak_memory_gb or 0.0:.1f}"
            lines.append("\t".join((commit, metric, memory, e.status or "", _flat(e.description or ""))))
        return _write_atomic(Path(path), "\n".join(lines) + "\n")

    def export_jsonl(self, path: Path | str) -> Path:
        """Everything: one JSON object a line, ``{"record": "experiment", ...columns}`` for each row
        (JSON columns decoded), then ``{"record": "event", ...}`` for each event."""
        lines = [json.dumps({"record": "experiment", **e.to_dict()}, sort_keys=True) for e in self.rows()]
        lines += [json.dumps({"record": "event", **dataclasses.asdict(ev)}, sort_keys=True) for ev in self.events()]
        return _write_atomic(Path(path), "".join(line + "\n" for line in lines))


def _flat(text: str) -> str:
    """One line of text without tabs: whitespace runs (tabs, newlines) become one space."""
    return " ".join(text.split())


def _write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


__all__ = ["Ledger", "Experiment", "Event", "ledger_path", "SCHEMA_VERSION", "KINDS", "STATUSES"]
