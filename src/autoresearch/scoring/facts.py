"""``facts.json``: what a run says about itself (steps, seconds, peak memory...), validated field by field.

The facts are the script's own claims and never decide anything; they are shown and the largest of the
claimed and the measured peak memory is recorded. A run may still write anything there, so they go
through ``read_facts``, the one function that parses them: the file must be a small regular file
reached without links, hold a JSON object, and each field must be a plain value; the fields the tool
uses as numbers must be finite numbers in range. A bad field is dropped and named in a note; a bad file
gives no facts and a note. Nothing here raises because of what the run wrote.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from autoresearch.scoring.safeio import UnsafeOutput, read_output

FACTS_FILE = "facts.json"
MAX_FACTS_BYTES = 64 * 1024
MAX_FIELDS = 100
MAX_TEXT = 200

# Fields the tool reads as numbers: (lowest, highest) allowed; None is always allowed ("not measured").
NUMERIC_FIELDS: dict[str, tuple[float, float]] = {
    "peak_memory_gb": (0.0, 1e6),
    "seconds": (0.0, 1e9),
    "steps": (0.0, 1e12),
    "n_params": (0.0, 1e15),
    "final_loss": (-math.inf, math.inf),
    "final_temperature": (-math.inf, math.inf),
}


def _finite_number(value) -> float | None:
    """``value`` as a finite float, or None when it is not a finite number (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:            # an integer beyond the float range
        return None
    return number if math.isfinite(number) else None


def _field(key: str, value) -> tuple[object, str]:
    """``(kept value, "")`` or ``(None, why it was dropped)``."""
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if key in NUMERIC_FIELDS:
        if value is None:
            return None, ""
        number = _finite_number(value)
        low, high = NUMERIC_FIELDS[key]
        if number is None:
            return None, f"{key} = {shown} is not a finite number"
        if not low <= number <= high:
            return None, f"{key} = {shown} is out of range [{low:g}, {high:g}]"
        return value, ""
    if value is None or isinstance(value, bool):
        return value, ""
    if isinstance(value, (int, float)):
        return (value, "") if _finite_number(value) is not None else (None, f"{key} = {shown} is not finite")
    if isinstance(value, str):
        return (value, "") if len(value) <= MAX_TEXT else (None, f"{key} is text longer than {MAX_TEXT} characters")
    return None, f"{key} is a {type(value).__name__}, not a plain value"


def parse_facts(data: bytes) -> tuple[dict, list[str]]:
    """The valid fields of a ``facts.json`` text and notes naming what was dropped."""
    try:
        loaded = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:   # ValueError: JSON, huge integers
        return {}, [f"{FACTS_FILE} is not valid JSON ({str(exc)[:80]}); no facts recorded"]
    if not isinstance(loaded, dict):
        return {}, [f"{FACTS_FILE} holds a {type(loaded).__name__}, not an object; no facts recorded"]
    facts, dropped = {}, []
    for i, (key, value) in enumerate(loaded.items()):
        if i >= MAX_FIELDS:
            dropped.append(f"{len(loaded) - MAX_FIELDS} fields beyond the first {MAX_FIELDS}")
            break
        if len(key) > MAX_TEXT:
            dropped.append(f"a field name of {len(key)} characters")
            continue
        kept, why = _field(key, value)
        if why:
            dropped.append(why)
        else:
            facts[key] = kept
    notes = [f"{FACTS_FILE}: dropped {'; '.join(dropped)}"] if dropped else []
    return facts, notes


def read_facts(out_dir: Path) -> tuple[dict, list[str]]:
    """The run's facts (``{}`` when it wrote none) and notes about anything refused or dropped."""
    try:
        data = read_output(Path(out_dir), FACTS_FILE, MAX_FACTS_BYTES)
    except FileNotFoundError:
        return {}, []
    except UnsafeOutput as exc:
        return {}, [f"{exc}; no facts recorded"]
    except OSError as exc:
        return {}, [f"{FACTS_FILE} cannot be read ({exc.strerror or exc}); no facts recorded"]
    return parse_facts(data)


def number(facts: dict, key: str) -> float:
    """A numeric fact as a float, 0.0 when absent or not a finite number (for sums and maxima)."""
    value = _finite_number(facts.get(key)) if isinstance(facts, dict) else None
    return 0.0 if value is None else value
