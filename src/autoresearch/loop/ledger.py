"""The ledger: one SQLite file that is the single source of truth for every attempt.

Layout: ``<repo>/.autoresearch/ledger.sqlite`` with three tables.

- ``meta``: key/value (JSON text); ``schema_version`` is 2.
- ``experiments``: one row per attempt (baseline, experiment, noise, final; ablation and transfer runs made after
  the search by ``autoresearch.findings``), keyed by ``number``; the
  row type and its columns are ``loop/rows.py``'s. The first row ever is number 0 (the baseline); then 1, 2,
  3... in order. Numbers are global to the file, shared by all tags, and never reused.
- ``events``: notable facts (test split used, noise floor measured, fingerprint mismatch...).

Durability: WAL mode with ``synchronous=FULL``. Every ``start``/``update``/``finish``/``event`` is one
transaction, so a ``kill -9`` at any moment leaves either the whole write or none of it; ``finish`` takes
the meta keys that must change with the row (the next base) into the same transaction. FULL (rather than
NORMAL) also keeps the last committed write through a power cut.

Seals (schema 2): ``finish`` seals the row (``rows.seal``: a digest of its record chained to the row
finished before it; the chain's head is meta ``chain_head``) and from then on refuses any change to the
record's columns. ``loop/records.py`` checks the seals against git at start-up. A version-1 file is
upgraded in place on open (two columns added; its old rows stay unsealed).

Concurrency: one writer (the loop's thread). Readers (a report, ``autoresearch status``, the dashboard)
may open the file at the same time; WAL lets them read while the loop writes. Two writers are out of
scope: ``start`` computes max+1 under a write lock, so numbers cannot be duplicated, but nothing else
coordinates them.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from autoresearch.errors import UserError
from autoresearch.vocab import Kind
from autoresearch.loop.rows import (CHAMPION_KINDS, COLUMN_TYPES, COLUMNS, FAILED, KINDS, SEALED, STATUSES,  # noqa: F401
                                    Event, Experiment, as_object, clean, decode, dumps, encode, seal, utc_now)
from autoresearch.text import stored

SCHEMA_VERSION = 2
LEDGER_RELPATH = Path(".autoresearch") / "ledger.sqlite"
CHAIN_HEAD = "chain_head"
_SQL_TYPES = {"int": "INTEGER", "float": "REAL", "str": "TEXT"}
_ADDED_IN_2 = ("digest", "chain_prev")


def ledger_path(repo: Path | str) -> Path:
    """Where the ledger of a research repository lives."""
    return Path(repo) / LEDGER_RELPATH


def _schema_sql() -> str:
    cols = ["number INTEGER PRIMARY KEY"]
    cols += [f'"{name}" {_SQL_TYPES[COLUMN_TYPES[name]]}' for name in COLUMNS if name != "number"]
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


class SealedRow(ValueError):
    """An attempt to change the record of a finished (sealed) row."""


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
        if version == 1:
            self._upgrade_from_1()
            return
        if version is not None and version > SCHEMA_VERSION:
            raise UserError(
                f"{self.path} has ledger schema version {version}; this autoresearch reads version {SCHEMA_VERSION}",
                "the ledger was written by a newer autoresearch: upgrade it (pip install -U autoresearch)",
            )
        raise UserError(
            f"{self.path} has ledger schema version {found!r}; this autoresearch reads versions 1 and "
            f"{SCHEMA_VERSION}, and no other version ever existed",
            "the file was not written by autoresearch: move it away and start again",
        )

    def _upgrade_from_1(self) -> None:
        """Schema 1 → 2: the seal columns, added in place (old rows stay unsealed, and are reported so)."""
        with self._tx():
            have = {r[1] for r in self._db.execute("PRAGMA table_info(experiments)")}
            for name in _ADDED_IN_2:
                if name not in have:
                    self._db.execute(f'ALTER TABLE experiments ADD COLUMN "{name}" TEXT')
            self._db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

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
        values = encode(fields)
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
        """Set some columns of one row, in one transaction. KeyError if the row does not exist;
        ``SealedRow`` for a change to the record of a finished row (``rows.SEALED``, its commit, its seal)."""
        values = encode(fields)
        if "number" in values:
            raise ValueError("the number of an experiment cannot change")
        if not values:
            return
        with self._tx():
            self._write(number, values)

    def _write(self, number: int, values: dict[str, Any]) -> None:
        sealed = self._db.execute("SELECT digest FROM experiments WHERE number=?", (number,)).fetchone()
        if sealed is None:
            raise KeyError(f"no experiment {number} in {self.path}")
        touched = set(values) & {*SEALED, "commit", "digest", "chain_prev"}
        if sealed[0] is not None and touched:
            raise SealedRow(f"experiment {number} is finished and sealed; its {', '.join(sorted(touched))} "
                            "cannot change")
        assignments = ", ".join(f"{_names([n])}=?" for n in values)
        self._db.execute(f"UPDATE experiments SET {assignments} WHERE number=?", [*values.values(), number])

    def finish(self, number: int, status: str, *, meta: dict[str, Any] | None = None, **fields: Any) -> str:
        """Set the final status (not 'running'), ``ended_at`` now (unless given) and any other columns, seal
        the row, and set ``meta`` keys, all in one transaction; returns the row's seal."""
        if status == "running" or status not in STATUSES:
            raise ValueError(f"finish needs a final status, one of {', '.join(STATUSES[1:])}, not {status!r}")
        fields.setdefault("ended_at", utc_now())
        values = encode({**fields, "status": status})
        with self._tx():
            self._write(number, values)
            stored = self._stored(number)
            prev = self._head()
            digest = seal(stored, prev)
            self._db.execute("UPDATE experiments SET digest=?, chain_prev=? WHERE number=?", (digest, prev, number))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (CHAIN_HEAD, json.dumps(digest)))
            for key, value in (meta or {}).items():
                self._check_meta_key(key)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(clean(value))))
        return digest

    def preview_seal(self, number: int, status: str, **fields: Any) -> str:
        """The seal ``finish(number, status, **fields)`` would give the row now (the loop writes it into the
        result commit's message before it finishes the row; one writer, so nothing seals in between)."""
        stored = {**self._stored(number), **encode({**fields, "status": status})}
        return seal(stored, self._head())

    def _stored(self, number: int) -> dict[str, Any]:
        row = self._db.execute(f"SELECT {_names(COLUMNS)} FROM experiments WHERE number=?", (number,)).fetchone()
        if row is None:
            raise KeyError(f"no experiment {number} in {self.path}")
        return dict(zip(COLUMNS, row))

    def _head(self) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (CHAIN_HEAD,)).fetchone()
        return json.loads(row[0]) if row else ""

    def reseal(self) -> str:
        """Seal every finished row again, in the order they were finished, as they are now (a person
        accepting changes made outside the tool: ``records.accept``); returns the new head."""
        with self._tx():
            rows = self._db.execute("SELECT number FROM experiments WHERE status IS NOT NULL AND status != 'running' "
                                    "ORDER BY ended_at, number").fetchall()
            prev = ""
            for (number,) in rows:
                digest = seal(self._stored(number), prev)
                self._db.execute("UPDATE experiments SET digest=?, chain_prev=? WHERE number=?", (digest, prev, number))
                prev = digest
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (CHAIN_HEAD, json.dumps(prev)))
        return prev

    def stored_rows(self) -> list[dict[str, Any]]:
        """Every row's columns exactly as stored (what ``loop/records.py`` checks the seals on)."""
        cur = self._db.execute(f"SELECT {_names(COLUMNS)} FROM experiments ORDER BY number")
        return [dict(zip(COLUMNS, r)) for r in cur]

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
        return [decode(r) for r in self._db.execute(sql, list(args))]

    # -- events and meta ------------------------------------------------------------------------------

    def event(self, kind: str, number: int | None = None, **payload: Any) -> int:
        """Record a notable fact; returns the event id."""
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO events (time, kind, number, payload_json) VALUES (?, ?, ?, ?)",
                (utc_now(), kind, number, dumps(payload)),
            )
        return int(cur.lastrowid)

    def events(self, kind: str | None = None) -> list[Event]:
        sql = "SELECT id, time, kind, number, payload_json FROM events"
        cur = self._db.execute(sql + " WHERE kind=? ORDER BY id", (kind,)) if kind else self._db.execute(sql + " ORDER BY id")
        return [Event(i, t, k, n, as_object(p)) for i, t, k, n, p in cur]

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under a key (``schema_version`` is reserved)."""
        self._check_meta_key(key)
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(clean(value))))

    @staticmethod
    def _check_meta_key(key: str) -> None:
        if key in ("schema_version", CHAIN_HEAD):
            raise ValueError(f"{key} is managed by the ledger")

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
    """One line of text without tabs: whitespace runs (tabs, newlines) become one space; controls and
    escape sequences removed (``text.stored``: a terminal that prints the file must not obey them)."""
    return " ".join(stored(text, None).split())


def _write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


__all__ = ["Ledger", "Experiment", "Event", "ledger_path", "SCHEMA_VERSION", "KINDS", "STATUSES"]
