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

Contract: ``score(config, run)`` never raises because of what a run did or failed to do; a missing
file, bad JSON, a missing key or NaN become ``Score(nan, {}, reason)``. A broken *setup* (the hidden
key missing or malformed, a metric name the source does not compute) is a ``UserError``: every run
would fail the same way, so the loop should stop and say so.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from autoresearch.config import Config
from autoresearch.errors import UserError
from autoresearch.scoring.retrieval import EmbeddingError, retrieval_metrics, retrieval_ranks

ECLIP_METRICS = (
    "mean_rank", "median_rank", "mean_rank_frac", "median_rank_frac",
    "i2t_mean_rank", "t2i_mean_rank", "i2t_median_rank", "t2i_median_rank",
    "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10",
)
EMBEDDINGS_FILE = "embeddings.npz"
_MAX_METRICS = 200   # a json source keeps at most this many numeric fields as side metrics


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


# ---------------------------------------------------------------- eclip

def key_path(config: Config, run: RunRecord) -> Path:
    """The hidden key for this run: ``secret/keys/fold_<k>.json``, or ``test.json`` in final mode."""
    keys = config.state_dir / "secret" / "keys"
    if run.mode == "final":
        return keys / "test.json"
    if run.fold is None:
        raise ValueError("a fold-mode run needs a fold index")
    return keys / f"fold_{run.fold}.json"


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


def _index(ids: np.ndarray, what: str) -> dict[str, int] | str:
    """Row of each id, or a reason string when the ids are not unique."""
    index: dict[str, int] = {}
    for row, value in enumerate(ids.tolist()):
        if value in index:
            return f"{what} {value!r} appears more than once in {EMBEDDINGS_FILE}"
        index[value] = row
    return index


def _compare_ids(found: dict[str, int], wanted: list[str], what: str) -> str:
    missing = [i for i in wanted if i not in found]
    extra = sorted(set(found) - set(wanted))
    if not missing and not extra:
        return ""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
    if extra:
        parts.append(f"{len(extra)} not in the query set (e.g. {extra[0]!r})")
    return f"{what} in {EMBEDDINGS_FILE} do not match the query set: " + ", ".join(parts)


def read_embeddings(path: Path) -> dict[str, np.ndarray] | str:
    """The four arrays of ``embeddings.npz``, or a reason why they cannot be used."""
    names = ("image_ids", "image_emb", "caption_ids", "caption_emb")
    if path.is_file() and not zipfile.is_zipfile(path):
        return f"{path.name} is not a valid .npz file (not a zip archive)"
    try:
        with np.load(path, allow_pickle=False) as npz:
            absent = [n for n in names if n not in npz.files]
            if absent:
                return f"{path.name} lacks {', '.join(absent)} (has {', '.join(npz.files) or 'nothing'})"
            arrays = {n: npz[n] for n in names}
    except FileNotFoundError:
        return f"the run wrote no {path.name} in {path.parent}"
    except ValueError as exc:
        if "pickle" in str(exc):
            return f"{path.name} stores Python objects; ids must be saved as string arrays, not dtype=object"
        return f"{path.name} is not a valid .npz file: {exc}"
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        return f"{path.name} is not a valid .npz file: {exc}"
    for n in ("image_ids", "caption_ids"):
        if arrays[n].ndim != 1 or arrays[n].dtype.kind not in "US":
            return f"{n} must be a 1-D array of strings, got {arrays[n].dtype} with shape {arrays[n].shape}"
        arrays[n] = arrays[n].astype(str)
    for n, ids in (("image_emb", "image_ids"), ("caption_emb", "caption_ids")):
        a = arrays[n]
        if a.ndim != 2 or a.dtype.kind not in "fiu" or a.shape[0] != len(arrays[ids]):
            return (f"{n} must be a numeric [n, d] array with one row per entry of {ids}; "
                    f"got {a.dtype} {a.shape} for {len(arrays[ids])} ids")
    if arrays["image_emb"].shape[1] != arrays["caption_emb"].shape[1]:
        return (f"image_emb has dimension {arrays['image_emb'].shape[1]} but caption_emb "
                f"{arrays['caption_emb'].shape[1]}")
    return arrays


def _check_eclip_name(config: Config) -> None:
    if config.metric.name not in ECLIP_METRICS:
        raise UserError(f"{config.path}: [metric] name = {config.metric.name!r} is not computed by the eclip source",
                        hint=f"use one of {', '.join(ECLIP_METRICS)}")


def score_eclip(config: Config, run: RunRecord) -> Score:
    """Retrieval metrics of the run's embeddings against the hidden key; value = [metric] name."""
    name = config.metric.name
    _check_eclip_name(config)
    pairs = load_key(key_path(config, run))
    arrays = read_embeddings(run.out_dir / EMBEDDINGS_FILE)
    if isinstance(arrays, str):
        return _fail(arrays)
    image_index = _index(arrays["image_ids"], "image id")
    caption_index = _index(arrays["caption_ids"], "caption id")
    for found in (image_index, caption_index):
        if isinstance(found, str):
            return _fail(found)
    image_ids = list(pairs)
    caption_ids = [pairs[i] for i in image_ids]
    for found, wanted, what in ((image_index, image_ids, "image ids"), (caption_index, caption_ids, "caption ids")):
        problem = _compare_ids(found, wanted, what)
        if problem:
            return _fail(problem)
    img = arrays["image_emb"][[image_index[i] for i in image_ids]]
    txt = arrays["caption_emb"][[caption_index[c] for c in caption_ids]]
    try:
        metrics = retrieval_metrics(*retrieval_ranks(img, txt))
    except EmbeddingError as exc:
        return _fail(f"embeddings cannot be scored: {exc}")
    return _finite(metrics[name], name, metrics)


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


def _numeric_leaves(data, prefix: str = "", out: dict | None = None) -> dict:
    out = {} if out is None else out
    if isinstance(data, dict):
        for k, v in data.items():
            if len(out) >= _MAX_METRICS:
                break
            _numeric_leaves(v, f"{prefix}{k}.", out)
    elif isinstance(data, (int, float)) and not isinstance(data, bool) and prefix:
        out[prefix[:-1]] = float(data)
    return out


def score_json(config: Config, run: RunRecord) -> Score:
    """``[metric] key`` of the JSON file ``[metric] file`` in the run's output folder (trusts the script)."""
    path = run.out_dir / config.metric.file
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _fail(f"the run wrote no {config.metric.file} in {run.out_dir}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _fail(f"{config.metric.file} is not valid JSON: {exc}")
    try:
        value = _lookup(data, config.metric.key)
    except KeyError as exc:
        return _fail(f"{config.metric.file} has no key {config.metric.key!r} (missing part {exc.args[0]!r})")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _fail(f"{config.metric.file}: {config.metric.key} is {value!r}, not a number")
    metrics = _numeric_leaves(data)
    metrics[config.metric.name] = float(value)
    return _finite(float(value), f"{config.metric.file}: {config.metric.key}", metrics)


# ---------------------------------------------------------------- regex

def score_regex(config: Config, run: RunRecord) -> Score:
    """First group of the LAST match of ``[metric] pattern`` in the run's log (trusts the script)."""
    try:
        text = run.log_path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return _fail(f"cannot read the log {run.log_path}: {exc}")
    try:
        pattern = re.compile(config.metric.pattern, re.MULTILINE)
    except re.error as exc:
        raise UserError(f"{config.path}: [metric] pattern is not a valid regular expression: {exc}") from None
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
        return _fail(f"the log's last match {raw!r} is not a number")
    return _finite(value, f"the logged {config.metric.name}", {config.metric.name: value})


# ---------------------------------------------------------------- registry

SOURCES: dict[str, Callable[[Config, RunRecord], Score]] = {
    "eclip": score_eclip,
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
