"""Read and rewrite the UPPER_CASE constants at the top level of a Python source file.

Parsed with ``ast``, never by string search: only the value's exact source span is replaced, so
comments, spacing and everything else in the file stay byte for byte as they were.

    >>> set_constants("LR = 3e-4  # learning rate\\n", {"LR": 1e-4})
    'LR = 0.0001  # learning rate\\n'
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any

CONSTANT_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


class _Missing:
    """Marks the absent side of an added or removed constant in ``diff_constants``."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


class UnknownConstant(KeyError):
    """A name given to ``set_constants`` is not a top-level UPPER_CASE literal of the file."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        known = ", ".join(self.known) if self.known else "none"
        return f"{self.name} is not a top-level UPPER_CASE constant of the file (known: {known})"


def _constant_nodes(tree: ast.Module) -> dict[str, tuple[ast.expr, Any]]:
    """Name -> (value node, value) for every literal constant; a later assignment wins, as in Python."""
    found: dict[str, tuple[ast.expr, Any]] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, node = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None and stmt.simple:
            target, node = stmt.target, stmt.value
        else:
            continue
        if not isinstance(target, ast.Name) or not CONSTANT_NAME.fullmatch(target.id):
            continue
        try:
            value = ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            found.pop(target.id, None)     # reassigned to a non-literal: no longer a constant
            continue
        found.pop(target.id, None)         # keep file order of the last assignment
        found[target.id] = (node, value)
    return found


def read_constants(source: str) -> dict[str, object]:
    """Top-level ``NAME = literal`` (or ``NAME: type = literal``) constants, in file order."""
    return {name: value for name, (_, value) in _constant_nodes(ast.parse(source)).items()}


def render_value(value: Any, like: Any = MISSING) -> str:
    """Python source for ``value`` that evaluates back to it, keeping the type of ``like``.

    A float constant stays a float (``100.0``, not ``100``); an int constant given an integral float
    stays an int. Non-finite floats have no literal and are refused.
    """
    if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif (isinstance(like, int) and not isinstance(like, bool) and isinstance(value, float)
          and math.isfinite(value) and value.is_integer()):
        value = int(value)
    text = repr(value)
    try:
        back = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"{value!r} cannot be written as a Python literal") from exc
    if repr(back) != text:
        raise ValueError(f"{value!r} does not survive a round trip as a Python literal")
    return text


def _line_starts(data: bytes) -> list[int]:
    """Byte offset of the start of each line (1-based line n starts at ``starts[n - 1]``)."""
    starts, pos = [], 0
    for line in data.splitlines(keepends=True):
        starts.append(pos)
        pos += len(line)
    starts.append(pos)
    return starts


def set_constants(source: str, values: dict[str, Any]) -> str:
    """Return ``source`` with each named constant's value replaced; all other text is unchanged.

    Raises ``UnknownConstant`` for a name that is not a literal constant of the file.
    """
    nodes = _constant_nodes(ast.parse(source))
    for name in values:
        if name not in nodes:
            raise UnknownConstant(name, list(nodes))
    # ast columns are UTF-8 byte offsets, so splice in bytes.
    data = source.encode("utf-8")
    starts = _line_starts(data)
    edits = []
    for name, value in values.items():
        node, old = nodes[name]
        begin = starts[node.lineno - 1] + node.col_offset
        end = starts[node.end_lineno - 1] + node.end_col_offset
        edits.append((begin, end, render_value(value, like=old).encode("utf-8")))
    for begin, end, text in sorted(edits, reverse=True):
        data = data[:begin] + text + data[end:]
    result = data.decode("utf-8")
    ast.parse(result)   # a bad splice must fail here, not in the experiment
    return result


def diff_constants(old_source: str, new_source: str) -> list[tuple[str, Any, Any]]:
    """(name, old, new) for each changed, added (old is MISSING) or removed (new is MISSING) constant."""
    old, new = read_constants(old_source), read_constants(new_source)
    changes = []
    for name, value in new.items():
        if name not in old:
            changes.append((name, MISSING, value))
        elif type(old[name]) is not type(value) or repr(old[name]) != repr(value):
            changes.append((name, old[name], value))
    changes.extend((name, value, MISSING) for name, value in old.items() if name not in new)
    return changes


def describe_changes(changes: list[tuple[str, Any, Any]]) -> str:
    """``LR=0.0001 (was 0.0003), STEPS=800 (was 400)``: the ``changed:`` line of a commit message."""
    parts = []
    for name, old, new in changes:
        if old is MISSING:
            parts.append(f"{name}={render_value(new)} (added)")
        elif new is MISSING:
            parts.append(f"{name} removed (was {render_value(old)})")
        else:
            parts.append(f"{name}={render_value(new)} (was {render_value(old)})")
    return ", ".join(parts)
