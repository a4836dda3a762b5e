"""One declaration per configuration key; the reader, its errors and the reference page derive from it.

A section of ``autoresearch.toml`` is a frozen dataclass, and each of its keys one field declared with
:func:`setting`: the annotation gives the type, the call the default, the bounds or choices and one line
of help::

    @dataclass(frozen=True)
    class RunSection:
        timeout_s: float = setting(600.0, "hard deadline of one fold run, seconds", above=0)

As click declares a parameter's type once (``IntRange``, ``Choice``), nothing else repeats it:
:func:`read_section` checks a TOML table against the declarations (type, bounds, choices, unknown keys;
every error names the file, the section and the key, and says what would be valid) and returns the
section; :func:`markdown` writes the reference (docs/configuration.md). The types understood are ``str``,
``bool``, ``int``, ``float``, ``tuple[str, ...]`` (a list of strings), a ``StrEnum`` (its values are the
choices) and ``tuple[tuple[str, float], ...]`` (a table of numbers, zero or more). Rules that tie two keys
together are not declarations: they stay explicit checks after the reading (``config.py``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoresearch.errors import UserError

_META = "setting"


@dataclass(frozen=True)
class Setting:
    """What one key allows besides its type: bounds (``exclusive_*`` makes one strict), choices, help."""

    help: str
    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False
    exclusive_max: bool = False
    choices: tuple[str, ...] = ()
    why: str = ""   # added to a bound's error message: why the bound is where it is

    def bounds_text(self) -> str:
        """The bounds in words, as an error message says them: "positive", "zero or more", "at most 1"."""
        low = None if self.min is None else (
            ("positive" if self.exclusive_min else "zero or more") if self.min == 0
            else f"{'above' if self.exclusive_min else 'at least'} {self.min:g}")
        high = None if self.max is None else f"{'below' if self.exclusive_max else 'at most'} {self.max:g}"
        if low and high:
            if self.min == 0 and not self.exclusive_min and self.max == 1 and not self.exclusive_max:
                return "a fraction from 0 to 1"
            return f"{low} and {high}"
        return low or high or ""

    def in_bounds(self, value: float) -> bool:
        if self.min is not None and (value < self.min or (self.exclusive_min and value == self.min)):
            return False
        return self.max is None or not (value > self.max or (self.exclusive_max and value == self.max))

    def bounds_math(self) -> str:
        """The bounds for the reference table: "> 0", "≥ 0", "0 … 1"."""
        if self.min is not None and self.max is not None:
            left = f"{self.min:g} <" if self.exclusive_min else f"{self.min:g} ≤"
            right = f"< {self.max:g}" if self.exclusive_max else f"≤ {self.max:g}"
            return f"{left} x {right}"
        if self.min is not None:
            return f"{'>' if self.exclusive_min else '≥'} {self.min:g}"
        if self.max is not None:
            return f"{'<' if self.exclusive_max else '≤'} {self.max:g}"
        return ""


def setting(default: Any, help: str, *, above: float | None = None, at_least: float | None = None,
            below: float | None = None, at_most: float | None = None, choices: tuple[str, ...] = (),
            why: str = "") -> Any:
    """Declare one key of a section: its default, one line of help, its bounds (numbers: ``above`` and
    ``below`` are strict) or choices (strings; a ``StrEnum`` annotation brings its own). The type is the
    field's annotation."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("a setting's default must be immutable: use a tuple")
    if above is not None and at_least is not None or below is not None and at_most is not None:
        raise TypeError("one lower bound (above or at_least) and one upper bound (below or at_most)")
    meta = Setting(help, min=above if above is not None else at_least,
                   max=below if below is not None else at_most,
                   exclusive_min=above is not None, exclusive_max=below is not None, choices=tuple(choices), why=why)
    return dataclasses.field(default=default, metadata={_META: meta})


class Invalid(Exception):
    """A value the declaration refuses; the message follows the key's name ("must be a number, got 'x'")."""


# The types: each converts a TOML value or raises Invalid; ``name`` is how the reference writes it.

@dataclass(frozen=True)
class Kind:
    name: str
    wanted: str
    accepts: Any                      # value -> bool
    convert: Any = None               # value -> the section's value (default: as read)
    choices: tuple[str, ...] = ()

    def read(self, value: Any) -> Any:
        if not self.accepts(value):
            raise Invalid(f"must be {self.wanted}, got {value!r}")
        return self.convert(value) if self.convert else value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _table_of_numbers(value: Any) -> tuple[tuple[str, float], ...]:
    out = []
    for name, amount in value.items():
        if not _number(amount) or amount < 0:
            raise Invalid(f"{name} must be a number of zero or more, got {amount!r}")
        out.append((str(name), float(amount)))
    return tuple(out)


_KINDS: dict[Any, Kind] = {
    str: Kind("string", "a string", lambda v: isinstance(v, str)),
    bool: Kind("boolean", "true or false", lambda v: isinstance(v, bool)),
    int: Kind("integer", "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: Kind("number", "a number", _number, float),
    tuple[str, ...]: Kind("list of strings", "a list of strings",
                          lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), tuple),
    tuple[tuple[str, float], ...]: Kind("table of numbers", "a table such as { name = 1 }",
                                        lambda v: isinstance(v, dict), _table_of_numbers),
}


def _choice(options: tuple[str, ...], convert: Any = None) -> Kind:
    def read(value: Any) -> Any:
        if value not in options:
            raise Invalid(f"must be one of {', '.join(options)}; got {value!r}")
        return convert(value) if convert else value
    return Kind("string", "a string", lambda v: isinstance(v, str), read, options)


@dataclass(frozen=True)
class Key:
    """One declared key: its name, type, default and what else it allows."""

    name: str
    kind: Kind
    default: Any
    setting: Setting

    def read(self, value: Any) -> Any:
        out = self.kind.read(value)
        if (self.setting.min is not None or self.setting.max is not None) and not self.setting.in_bounds(out):
            why = f" ({self.setting.why})" if self.setting.why else ""
            raise Invalid(f"must be {self.setting.bounds_text()}{why}, got {value!r}")
        return out

    @property
    def type_name(self) -> str:
        return self.kind.name

    def default_text(self) -> str:
        return toml_value(self.default, table=self.kind is _KINDS[tuple[tuple[str, float], ...]])

    def allowed(self) -> str:
        """Bounds or choices for the reference table."""
        if self.kind.choices:
            return ", ".join(f"`{c}`" for c in self.kind.choices)
        return self.setting.bounds_math()


@functools.cache
def keys(section: type) -> tuple[Key, ...]:
    """The declared keys of a section dataclass, in declaration order."""
    hints = typing.get_type_hints(section)
    out = []
    for f in dataclasses.fields(section):
        meta = f.metadata.get(_META)
        if meta is None:
            raise TypeError(f"{section.__name__}.{f.name} is not declared with setting()")
        annotation = hints[f.name]
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            kind = _choice(tuple(m.value for m in annotation), annotation)
        elif meta.choices:
            if annotation is not str:
                raise TypeError(f"{section.__name__}.{f.name}: choices need a str or StrEnum annotation")
            kind = _choice(meta.choices)
        elif annotation in _KINDS:
            kind = _KINDS[annotation]
        else:
            raise TypeError(f"{section.__name__}.{f.name}: no reader for the type {annotation!r}")
        if (meta.min is not None or meta.max is not None) and annotation not in (int, float):
            raise TypeError(f"{section.__name__}.{f.name}: bounds need an int or float annotation")
        out.append(Key(f.name, kind, f.default, meta))
    return tuple(out)


def key_error(file: Path, section: str, key: str | None, message: str) -> UserError:
    """The one form of a configuration error: ``FILE: [section] key message``, and where to fix it."""
    where = f"[{section}]" if key is None else f"[{section}] {key}"
    return UserError(f"{file}: {where} {message}", hint=f"fix `{where}` in {file.name}")


def read_section(file: Path, name: str, section: type, table: Any) -> Any:
    """Read the TOML table of section ``name`` into the dataclass ``section``: every key checked against
    its declaration, a missing key its default, an unknown key an error listing the known ones."""
    if not isinstance(table, dict):
        raise key_error(file, name, None, f"must be a table ([{name}]), got {type(table).__name__}")
    declared = keys(section)
    values = {}
    for key in declared:
        if key.name in table:
            try:
                values[key.name] = key.read(table[key.name])
            except Invalid as exc:
                raise key_error(file, name, key.name, str(exc)) from None
    extra = sorted(set(table) - {k.name for k in declared})
    if extra:
        known = ", ".join(sorted(k.name for k in declared))
        raise key_error(file, name, extra[0], f"is not a known key (known: {known})")
    return section(**values)


def toml_value(value: Any, table: bool = False) -> str:
    """A default as it would be written in ``autoresearch.toml``; ``table``: pairs written as a table."""
    if table:
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):   # a StrEnum member too
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(sections: dict[str, type], *, title: str, intro: str, extra: dict[str, str] | None = None) -> str:
    """The reference page: per section, its docstring and a table of key, type, default, allowed, meaning.
    ``extra`` gives the text of sections that have a format of their own rather than keys."""
    out = [f"# {title}", "", intro.strip(), ""]
    for name, section in sections.items():
        out += [f"## `[{name}]`", ""]
        doc = (section.__doc__ or "").strip()
        if doc and not doc.startswith(section.__name__ + "("):   # a dataclass's generated signature
            out += [" ".join(doc.split()), ""]
        out += ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        for key in keys(section):
            out.append(f"| `{key.name}` | {key.type_name} | `{_cell(key.default_text())}` | "
                       f"{_cell(key.allowed())} | {_cell(key.setting.help)} |")
        out.append("")
    for name, text in (extra or {}).items():
        out += [f"## `[{name}]`", "", text.strip(), ""]
    return "\n".join(out)
