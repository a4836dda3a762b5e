"""One row of the ledger as a value: ``Experiment``, its columns, how values are stored, and its seal.

The ledger (``loop/ledger.py``) owns the file; this module owns what a row is. Columns are the fields of
``Experiment`` (JSON columns end in ``_json`` and hold text; the properties decode them). Values are checked
and serialised on the way in (``encode``) and read leniently on the way out (``decode``): a row written by
hand or by another tool never stops a resume or a report.

The seal. When a row is finished, the ledger seals it: ``digest`` is a SHA-256 over the row's record (the
``SEALED`` columns, canonical JSON) and ``chain_prev``, the digest of the row sealed just before it. The
digests form one chain per ledger, whose head the loop also writes into git (``loop/records.py``), and a
row with a result commit carries its digest in that commit's message. A sealed row's record never changes
afterwards (the ledger refuses), so a row changed outside the tool no longer matches its seal, its
successor's ``chain_prev`` or its commit, and the next start names it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from autoresearch.vocab import Kind, Status

KINDS = tuple(Kind)
STATUSES = tuple(Status)
FAILED = tuple(s for s in Status if s.failed)      # no usable metric
CHAMPION_KINDS = (Kind.BASELINE, Kind.EXPERIMENT)


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
    digest: str | None = None          # the row's seal (set when it is finished); see the module docstring
    chain_prev: str | None = None      # the seal of the row finished before it ("" for the first)

    @property
    def folds(self) -> list[float]:
        """Per-fold metric values; a fold without a value (stored as null) or with a non-number is NaN."""
        values = loads(self.folds_json)
        return [_as_number(v) for v in values] if isinstance(values, list) else []

    @property
    def metrics(self) -> Any:
        return loads(self.metrics_json)

    @property
    def decision(self) -> dict:
        return as_object(self.decision_json)

    @property
    def hardware(self) -> dict:
        return as_object(self.hardware_json)

    @property
    def fingerprints(self) -> dict:
        return as_object(self.fingerprints_json)

    @property
    def meta(self) -> dict:
        return as_object(self.meta_json)

    @property
    def failed(self) -> bool:
        """True for crash, timeout, invalid and aborted: attempts without a usable metric."""
        return self.status in FAILED

    def to_dict(self) -> dict:
        """All columns, JSON columns decoded (what ``export_jsonl`` writes)."""
        out = dataclasses.asdict(self)
        for name in JSON_COLUMNS:
            out[name] = loads(out[name])
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
COLUMN_TYPES = {f.name: str(f.type).split(" ")[0] for f in dataclasses.fields(Experiment)}


def clean(value: Any) -> Any:
    """Make a Python object JSON-safe: NaN/inf become null, numpy scalars and arrays plain Python."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):           # numpy scalar or array
        return clean(value.tolist())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return clean(dataclasses.asdict(value))
    raise TypeError(f"cannot store {type(value).__name__} in the ledger: {value!r}")


def dumps(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError("JSON columns take Python objects, not text (the ledger serialises them)")
    return json.dumps(clean(value), allow_nan=False, sort_keys=True)


def loads(text: str | None) -> Any:
    """A JSON column's value; None for a column that does not hold valid JSON text (a row written by
    hand or by another tool must not stop a resume or a report)."""
    if not isinstance(text, (str, bytes)):
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def as_object(text: str | None) -> dict:
    value = loads(text)
    return value if isinstance(value, dict) else {}


def _as_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan


def decode(values: Sequence[Any]) -> Experiment:
    """An Experiment from one SQL row. SQLite keeps whatever type was stored, so a value that does not
    fit its column's type (text in a REAL column, say) reads as None rather than breaking the caller."""
    fixed = []
    for name, value in zip(COLUMNS, values):
        kind = COLUMN_TYPES[name]
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


def encode(fields: dict[str, Any]) -> dict[str, Any]:
    """Validate column names and values; serialise JSON columns. Raises ValueError on programming errors."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        name = _ALIASES.get(key, key)
        if name not in COLUMNS:
            raise ValueError(f"unknown ledger column {key!r}; columns are: {', '.join(COLUMNS)}")
        if name in out:
            raise ValueError(f"column {name!r} given twice (as {key!r} and its alias)")
        if name in JSON_COLUMNS:
            value = dumps(value)
        elif name == "kind" and value not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {value!r}")
        elif name == "status" and value not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {value!r}")
        elif name == "sandbox" and value is not None:
            value = int(bool(value))
        elif COLUMN_TYPES[name] == "float" and value is not None:
            value = float(value)
            value = value if math.isfinite(value) else None
        elif COLUMN_TYPES[name] == "int" and value is not None:
            if isinstance(value, float) or int(value) != value:
                raise ValueError(f"column {name!r} takes an integer, not {value!r}")
            value = int(value)
        elif COLUMN_TYPES[name] == "str" and value is not None:
            value = str(value)
        out[name] = value
    return out


# The record a seal covers: what the row says happened. Timing, hardware, usage and the agent's own meta are
# descriptive and may be filled in by readers of other versions; they are not part of the verdict.
SEALED = ("number", "tag", "kind", "status", "reason", "parent_commit", "candidate_commit", "description",
          "hypothesis", "changed", "folds_json", "metric_mean", "metric_std", "delta", "champion_metric",
          "decision_json", "phase", "attempt", "agent")


def seal(stored: dict[str, Any], chain_prev: str) -> str:
    """The digest of a row's record as stored (``encode``d values), chained to ``chain_prev``."""
    record = {name: stored.get(name) for name in SEALED}
    text = json.dumps({"prev": chain_prev, "record": record}, sort_keys=True, ensure_ascii=True,
                      separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()

