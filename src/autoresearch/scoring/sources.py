"""Metric sources: turn what a finished run left behind into one number, or a failure with a reason.

``[metric] source`` in autoresearch.toml names one entry of ``SOURCES``:

- ``eclip``: the tool's own scorer. It reads the embeddings the run wrote and the hidden key the run
  never saw, aligns them by id and computes retrieval metrics itself. A script cannot print this
  metric into existence: it has to produce embeddings that actually retrieve.
- ``json``: a number in a JSON file the run wrote (``[metric] file`` / ``key``, dotted keys allowed).
- ``regex``: the last match of ``[metric] pattern`` in the run's log.

``json`` and ``regex`` TRUST THE SCRIPT: whatever train.py writes or prints is taken as the metric, so
an agent that edits train.py can fake it. Use them for tasks whose evaluation the agent cannot reach
by other means, and prefer a scorer like ``eclip`` wherever the metric matters.

Contract: ``score(config, run)`` never raises, hangs or runs out of memory because of what a run did
or failed to do; a missing file, bad JSON, a missing key or NaN become ``Score(nan, {}, reason)``. A
broken *setup* (the hidden key missing or malformed, a metric name the source does not compute) is a
``UserError``: every run would fail the same way, so the loop should stop and say so.

Everything a run wrote is hostile input (see ``safeio``): files are opened without following links and
must be regular files of bounded size; ``embeddings.npz`` is checked member by member before its data is
read (``npz``) and scored in a child process with a deadline and a memory ceiling (``worker``); the json
source reads at most ``MAX_JSON_BYTES`` and the regex source the last ``MAX_LOG_BYTES`` of the log.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from autoresearch.config import Config
from autoresearch.errors import UserError
from autoresearch.scoring import worker
from autoresearch.vocab import Direction
from autoresearch.scoring.safeio import MiB, UnsafeOutput, read_output, read_tail, relative_parts

RETRIEVAL_METRICS = (
    "mean_rank", "median_rank", "mean_rank_frac", "median_rank_frac",
    "i2t_mean_rank", "t2i_mean_rank", "i2t_median_rank", "t2i_median_rank",
    "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10",
)
# Recall@K improves upward, every rank downward.
RETRIEVAL_DIRECTIONS = {m: Direction.MAXIMIZE if m.startswith(("i2t_r", "t2i_r")) else Direction.MINIMIZE
                        for m in RETRIEVAL_METRICS}
_MAX_METRICS = 200   # a json source keeps at most this many numeric fields as side metrics
MAX_JSON_BYTES = 4 * MiB
MAX_LOG_BYTES = 4 * MiB


@dataclass(frozen=True)
class RunRecord:
    """Where one finished run left its outputs."""

    out_dir: Path
    log_path: Path
    fold: int | None = None
    mode: Literal["fold", "final"] = "fold"


@dataclass
class Score:
    """The metric of one run: ``value`` is NaN and ``reason`` says why when the run cannot be scored."""

    value: float
    metrics: dict = field(default_factory=dict)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason and math.isfinite(self.value)


def _fail(reason: str) -> Score:
    return Score(math.nan, {}, reason)


def _finite(value: float, what: str, metrics: dict) -> Score:
    if not math.isfinite(value):
        return _fail(f"{what} is {value!r}, not a finite number")
    return Score(float(value), metrics, "")


# ---------------------------------------------------------------- paired retrieval (a hidden key pairs the ids)

def load_key(path: Path) -> dict[str, str]:
    """Read ``{"pairs": {image_id: caption_id}}``; a missing or malformed key is a UserError."""
    hint = "re-create the prepared data (`autoresearch data prepare`) so the hidden keys are written again"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"hidden key {path} is missing", hint=hint) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"hidden key {path} cannot be read: {exc}", hint=hint) from None
    pairs = data.get("pairs") if isinstance(data, dict) else None
    if not isinstance(pairs, dict) or not pairs or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in pairs.items()):
        raise UserError(f"hidden key {path} must hold a non-empty {{\"pairs\": {{image_id: caption_id}}}}",
                        hint=hint)
    if len(set(pairs.values())) != len(pairs):
        raise UserError(f"hidden key {path} maps two images to the same caption id", hint=hint)
    return pairs


def _check_retrieval_name(config: Config) -> None:
    if config.metric.name not in RETRIEVAL_METRICS:
        raise UserError(f"{config.path}: [metric] name = {config.metric.name!r} is not a retrieval metric",
                        hint=f"use one of {', '.join(RETRIEVAL_METRICS)}")


def score_retrieval(config: Config, run: RunRecord, key: Path) -> Score:
    """Retrieval metrics of the run's ``embeddings.npz`` against the hidden ``key`` (``{"pairs": {image_id:
    caption_id}}``, a file the run never saw); value = [metric] name.

    The key is read here (a bad key is the setup's fault: UserError); the embeddings are read and
    scored in a child process (``worker.run_isolated``), so no output can hang or exhaust the tool.
    """
    name = config.metric.name
    _check_retrieval_name(config)
    pairs = load_key(key)
    image_ids = list(pairs)
    answer = worker.run_isolated({"source": "retrieval", "out_dir": str(run.out_dir), "image_ids": image_ids,
                                  "caption_ids": [pairs[i] for i in image_ids]})
    if "reason" in answer:
        return _fail(answer["reason"])
    metrics = answer["metrics"]
    value = metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _fail(f"the scorer returned no {name}")
    return _finite(float(value), name, metrics)


# ---------------------------------------------------------------- json

def _lookup(data, key: str):
    """``data[key]``, else follow ``a.b.c`` through nested objects; raises KeyError naming the part."""
    if isinstance(data, dict) and key in data:
        return data[key]
    node = data
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(part)
    return node


def _as_float(value) -> float | None:
    """A JSON number as a float (inf for integers beyond the float range), None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _numeric_leaves(data) -> dict:
    """Numeric leaves of nested objects as ``{"a.b": x}``, at most ``_MAX_METRICS``, without recursion
    (a run can nest its JSON as deep as the parser allows)."""
    out: dict[str, float] = {}
    stack = [("", data)]
    while stack and len(out) < _MAX_METRICS:
        prefix, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{prefix}{k}.", v) for k, v in reversed(list(node.items())))
        elif prefix and (number := _as_float(node)) is not None:
            out[prefix[:-1]] = number
    return out


def json_file(config: Config) -> str:
    try:
        relative_parts(config.metric.file)
    except ValueError as exc:
        raise UserError(f"{config.path}: [metric] file = {config.metric.file!r}: {exc}") from None
    return config.metric.file


def score_json(config: Config, run: RunRecord) -> Score:
    """``[metric] key`` of the JSON file ``[metric] file`` in the run's output folder (trusts the script)."""
    file = json_file(config)
    try:
        data = json.loads(read_output(run.out_dir, file, MAX_JSON_BYTES).decode("utf-8"))
    except FileNotFoundError:
        return _fail(f"the run wrote no {file} in {run.out_dir}")
    except UnsafeOutput as exc:
        return _fail(str(exc))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:   # ValueError: bad JSON, huge ints
        return _fail(f"{file} is not valid JSON: {str(exc)[:200]}")
    try:
        value = _lookup(data, config.metric.key)
    except KeyError as exc:
        return _fail(f"{file} has no key {config.metric.key!r} (missing part {exc.args[0]!r})")
    number = _as_float(value)
    if number is None:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        return _fail(f"{file}: {config.metric.key} is {shown}, not a number")
    metrics = _numeric_leaves(data)
    metrics[config.metric.name] = number
    return _finite(number, f"{file}: {config.metric.key}", metrics)


# ---------------------------------------------------------------- regex

def score_regex(config: Config, run: RunRecord) -> Score:
    """First group of the LAST match of ``[metric] pattern`` in the last ``MAX_LOG_BYTES`` of the run's
    log (trusts the script)."""
    try:
        pattern = re.compile(config.metric.pattern, re.MULTILINE)
    except re.error as exc:
        raise UserError(f"{config.path}: [metric] pattern is not a valid regular expression: {exc}") from None
    try:
        text = read_tail(run.log_path, MAX_LOG_BYTES).decode("utf-8", errors="replace")
    except UnsafeOutput as exc:
        return _fail(f"cannot read the log: {exc}")
    except OSError as exc:
        return _fail(f"cannot read the log {run.log_path}: {exc.strerror or exc}")
    last = None
    for last in pattern.finditer(text):
        pass
    if last is None:
        return _fail(f"the pattern {config.metric.pattern!r} does not occur in the log")
    if pattern.groups < 1 or last.group(1) is None:
        return _fail(f"the pattern {config.metric.pattern!r} matched, but its first group is empty")
    raw = last.group(1).strip()
    try:
        value = float(raw)
    except ValueError:
        return _fail(f"the log's last match {raw[:60]!r} is not a number")
    return _finite(value, f"the logged {config.metric.name}", {config.metric.name: value})


# ---------------------------------------------------------------- registry

SOURCES: dict[str, Callable[[Config, RunRecord], Score]] = {
    "json": score_json,
    "regex": score_regex,
}


def score(config: Config, run: RunRecord) -> Score:
    """Score one run with the source that ``[metric] source`` names."""
    try:
        fn = SOURCES[config.metric.source]
    except KeyError:
        raise UserError(f"{config.path}: [metric] source = {config.metric.source!r} is not known",
                        hint=f"use one of {', '.join(SOURCES)}") from None
    return fn(config, run)
