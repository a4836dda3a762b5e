"""The tools our own LLM agents (OpenAI-compatible, Anthropic) may call, and their dispatcher.

Every tool returns text for the model. A bad call (unknown tool, arguments that are not JSON, a missing
field, a path outside the repository, an old text that is not unique) is answered with an error text the
model can act on, never an exception: the loop goes on and the model gets a chance to correct itself.

Boundaries, checked after resolving symlinks: reads stay inside ``context.root`` and never touch
``.git``, ``.autoresearch`` or anything under ``context.denied``; writes go to ``context.editable`` only.
The engine checks the tree again afterwards; these checks keep an honest model from wasting turns.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoresearch import hyperparams
from autoresearch.agents import runview
from autoresearch.agents.base import AgentContext

HIDDEN_DIRS = frozenset({".git", ".autoresearch"})
SKIPPED_IN_LISTING = frozenset({"__pycache__", ".venv", "node_modules"})
MAX_READ_CHARS = 40_000
MAX_WRITE_CHARS = 200_000
MAX_LISTED = 300
MAX_FIELD_CHARS = {"description": 200, "hypothesis": 1000}


def _obj(props: dict[str, dict], required: list[str]) -> dict:
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


# maxLength on the short fields: llama.cpp's server generates tool arguments under a grammar made from this
# schema and ignores max_tokens there, so a weak model's runaway path or description would run to the end
# of the context; the bound keeps such a call short.
_PATH = {"type": "string", "maxLength": 300, "description": "path relative to the repository root, e.g. train.py"}

SPECS: list[dict[str, Any]] = [
    {"name": "read_file",
     "description": "Read a text file of the research repository. Long files come in pieces: "
                    "pass offset (a character position) to read further.",
     "parameters": _obj({"path": _PATH, "offset": {"type": "integer", "minimum": 0}}, ["path"])},
    {"name": "list_files",
     "description": "List the files under a directory of the repository (recursively, with sizes).",
     "parameters": _obj({"dir": {"type": "string", "maxLength": 300, "description": "directory relative to "
                                 "the root; '.' for the root"}}, ["dir"])},
    {"name": "list_experiments",
     "description": "A table of all past experiments: number, status, metric, delta, description.",
     "parameters": _obj({}, [])},
    {"name": "show_experiment",
     "description": "One past experiment in detail: its diff, metrics and log tail.",
     "parameters": _obj({"number": {"type": "integer", "minimum": 0}}, ["number"])},
    {"name": "read_run",
     "description": "The logs and each fold's facts.json (steps, time, memory, final loss, temperature) of a "
                    "past experiment; with file (a name it lists, e.g. 0003/fold0.log), that file in full.",
     "parameters": _obj({"number": {"type": "integer", "minimum": 0},
                         "file": {"type": "string", "maxLength": 200,
                                  "description": "optional: one file of that experiment"}},
                        ["number"])},
    {"name": "check_run",
     "description": "Run the editable script as it is now for a few training steps on a small slice of "
                    "the data, in the same sandbox as the real runs, and see its log: a crash shows up here "
                    "in seconds. Not scored. Use it before finish when you changed code.",
     "parameters": _obj({"steps": {"type": "integer", "minimum": 1,
                                   "description": "training steps to run (1 to 50; 3 is usually enough)"}}, [])},
    {"name": "replace_in_file",
     "description": "Replace one exact occurrence of old with new in an editable file. old must occur "
                    "exactly once (copy it from read_file, whitespace included).",
     "parameters": _obj({"path": _PATH, "old": {"type": "string"}, "new": {"type": "string"}},
                        ["path", "old", "new"])},
    {"name": "set_constant",
     "description": "Set one UPPER_CASE constant at the top of an editable Python script (a hyperparameter "
                    "such as LR or BATCH_SIZE) to a new value, e.g. name LR, value 1e-4. Only that value "
                    "changes; the rest of the file stays as it is.",
     "parameters": _obj({"name": {"type": "string", "maxLength": 80, "description": "the constant's name"},
                         "value": {"type": "string", "maxLength": 200,
                                   "description": "the new value, written as in Python, e.g. 0.001"}},
                        ["name", "value"])},
    {"name": "write_file",
     "description": "Replace the whole content of an editable file.",
     "parameters": _obj({"path": _PATH, "content": {"type": "string"}}, ["path", "content"])},
    {"name": "finish",
     "description": "Call once your edits are done: a one-line description of the change and the "
                    "hypothesis why it should improve the metric. Ends your turn.",
     "parameters": _obj({"description": {"type": "string", "maxLength": MAX_FIELD_CHARS["description"]},
                         "hypothesis": {"type": "string", "maxLength": MAX_FIELD_CHARS["hypothesis"]}},
                        ["description", "hypothesis"])},
]
_BY_NAME = {s["name"]: s for s in SPECS}
_JSON_TYPES = {"string": str, "integer": int, "object": dict}
_WRITE_TOOLS = ("replace_in_file", "write_file")
EDIT_TOOLS = ("replace_in_file", "set_constant", "write_file")


def check_offered(names: list[str] | tuple[str, ...]) -> str | None:
    """What is wrong with ``[agent] tools`` (a subset of the tools to offer), or None."""
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        return f"names no tool {unknown[0]!r}; the tools are: {', '.join(_BY_NAME)}"
    if names and not set(names) & set(EDIT_TOOLS):
        return f"offers no tool that edits a file; include one of: {', '.join(EDIT_TOOLS)}"
    return None


def specs_for(editable: list[str], constants: list[str], offered: list[str] | None = None) -> list[dict[str, Any]]:
    """The tool specs for one proposal: the write tools' ``path`` limited to the editable files and
    ``set_constant``'s ``name`` to the constants they define (an ``enum``: a server that binds arguments by a
    grammar, like llama.cpp's, can then only produce those), and no ``set_constant`` without constants.
    The tools themselves still check every value: a hosted API may not enforce an enum, and ``./train.py``
    names the same file as ``train.py``. ``offered``: only these tools (``[agent] tools``)."""
    out = []
    for spec in SPECS:
        if (spec["name"] == "set_constant" and not constants) or (offered and spec["name"] not in offered):
            continue
        spec = json.loads(json.dumps(spec))
        props = spec["parameters"]["properties"]
        if spec["name"] in _WRITE_TOOLS and editable:
            props["path"] = {**props["path"], "enum": sorted(editable)}
        if spec["name"] == "set_constant":
            props["name"] = {**props["name"], "enum": constants}
        out.append(spec)
    return out


def rooted(context: AgentContext, workdir: Path) -> AgentContext:
    """``context`` with its root set to ``workdir`` (the engine normally passes the same directory)."""
    work, old = Path(workdir).resolve(), Path(context.root).resolve()
    if work == old:
        return context
    # A candidate's worktree (several in flight) lies inside the tool's state folder: a denied folder that
    # holds the whole worktree would deny everything, and reads stay inside the root anyway. A denied path
    # of the repository (the replay plan) is denied at the same place in the worktree too.
    denied: list[Path] = []
    for raw in context.denied:
        path = Path(raw) if Path(raw).is_absolute() else old / raw
        if work.is_relative_to(path.resolve()):
            continue
        denied.append(path)
        if path.resolve().is_relative_to(old):
            denied.append(work / path.resolve().relative_to(old))
    return dataclasses.replace(context, root=Path(workdir), denied=denied)


def openai_tools(specs: list[dict] | None = None) -> list[dict]:
    """The tool list in the chat-completions format (``specs``: a toolbox's, default the generic ones)."""
    return [{"type": "function", "function": dict(s)} for s in (SPECS if specs is None else specs)]


def anthropic_tools(specs: list[dict] | None = None) -> list[dict]:
    """The tool list in the Messages API format."""
    return [{"name": s["name"], "description": s["description"], "input_schema": s["parameters"]}
            for s in (SPECS if specs is None else specs)]


@dataclass
class ToolResult:
    text: str
    is_error: bool = False


class ToolCallError(Exception):
    """A call the model made wrongly; the message is returned to it as the tool's result."""


@dataclass
class Toolbox:
    """Executes tool calls for one proposal, remembering edits and the final answer."""

    context: AgentContext
    max_read_chars: int = MAX_READ_CHARS
    finished: tuple[str, str] | None = None
    edited: list[str] = field(default_factory=list)
    calls: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        self.root = Path(self.context.root).resolve()
        self.denied = [Path(d).resolve() if Path(d).is_absolute() else (self.root / d).resolve()
                       for d in self.context.denied]
        self.editable = {self._relative((self.root / p).resolve()) for p in self.context.editable}
        self.specs = specs_for(sorted(self.editable), sorted(self._constants()), self.context.options.get("tools"))
        self.by_name = {s["name"]: s for s in self.specs}

    # -- dispatch ---------------------------------------------------------------------------------------

    def call(self, name: str, arguments: str | dict | None) -> ToolResult:
        """Run one tool call; ``arguments`` is a JSON string (OpenAI) or a dict (Anthropic)."""
        self.calls += 1
        try:
            spec = self.by_name.get(name)
            if spec is None:
                what = "not offered in this session" if name in _BY_NAME else "unknown"
                raise ToolCallError(f"{what} tool {name!r}; the tools are: {', '.join(self.by_name)}")
            args = self._validate(spec, self._parse(name, arguments))
            text = getattr(self, "_" + name)(**args)
            return ToolResult(text)
        except ToolCallError as exc:
            self.errors += 1
            return ToolResult(f"error: {exc}", is_error=True)
        except (OSError, UnicodeError) as exc:
            self.errors += 1
            return ToolResult(f"error: {type(exc).__name__}: {exc.strerror if isinstance(exc, OSError) else exc}",
                              is_error=True)

    @staticmethod
    def _parse(name: str, arguments: str | dict | None) -> dict:
        if arguments is None or arguments == "":
            return {}
        if isinstance(arguments, dict):
            return arguments
        try:       # strict=False: raw newlines and tabs inside strings, as small models send them
            value = json.loads(arguments, strict=False)
        except json.JSONDecodeError as exc:
            raise ToolCallError(f"the arguments of {name} are not valid JSON ({exc.msg} at position "
                                f"{exc.pos}); send one JSON object, e.g. {_example(name)}") from None
        if not isinstance(value, dict):
            raise ToolCallError(f"the arguments of {name} must be a JSON object, e.g. {_example(name)}")
        return value

    @staticmethod
    def _validate(spec: dict, args: dict) -> dict:
        props, required = spec["parameters"]["properties"], spec["parameters"]["required"]
        name = spec["name"]
        missing = [k for k in required if k not in args]
        if missing:
            raise ToolCallError(f"{name} is missing the field(s) {', '.join(missing)}; e.g. {_example(name)}")
        unknown = [k for k in args if k not in props]
        if unknown:
            raise ToolCallError(f"{name} has no field(s) {', '.join(unknown)}; its fields are: "
                                f"{', '.join(props) or '(none)'}")
        for key, value in args.items():
            want = _JSON_TYPES[props[key]["type"]]
            if want is int and isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = args[key] = int(value)        # small models often quote numbers
            if (name, key) == ("set_constant", "value") and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                value = args[key] = repr(value)         # ... or send a number where a literal's text is asked
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ToolCallError(f"{name}: field {key} must be a {props[key]['type']}, "
                                    f"got {type(value).__name__}")
            if want is int and value < props[key].get("minimum", value):
                raise ToolCallError(f"{name}: field {key} must be >= {props[key]['minimum']}")
        return args

    # -- paths ------------------------------------------------------------------------------------------

    def _relative(self, resolved: Path) -> str:
        return resolved.relative_to(self.root).as_posix() if resolved != self.root else "."

    def _is_hidden(self, resolved: Path) -> bool:
        try:
            parts = resolved.relative_to(self.root).parts
        except ValueError:
            return True
        if HIDDEN_DIRS.intersection(parts):
            return True
        return any(resolved == d or d in resolved.parents for d in self.denied)

    def _resolve(self, path: str, *, for_write: bool = False) -> Path:
        if not path.strip():
            raise ToolCallError("the path is empty; give a path relative to the repository root")
        if "\x00" in path:
            raise ToolCallError("the path contains a NUL character")
        resolved = (self.root / path).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise ToolCallError(f"{path} is outside the repository; use a path relative to its root")
        if self._is_hidden(resolved):
            raise ToolCallError(f"{path} is not accessible to agents")
        if for_write and self._relative(resolved) not in self.editable:
            raise ToolCallError(f"{path} is not editable; the editable files are: "
                                f"{', '.join(sorted(self.editable))}")
        return resolved

    # -- the tools --------------------------------------------------------------------------------------

    def _read_file(self, path: str, offset: int = 0) -> str:
        target = self._resolve(path)
        if not target.is_file():
            raise ToolCallError(f"{path} is not a file" + ("" if target.exists() else " (it does not exist)"))
        size = target.stat().st_size
        if offset > size:      # a character offset is never past the byte size (and a huge one must not allocate)
            raise ToolCallError(f"offset {offset} is past the end of {path} ({size} bytes)")
        with open(target, "rb") as fh:
            raw = fh.read(min(size, (offset + self.max_read_chars) * 4 + 4))   # utf-8: at most 4 bytes a character
        if b"\x00" in raw[:8192]:
            raise ToolCallError(f"{path} is a binary file ({size} bytes); only text files can be read")
        text = raw.decode("utf-8", errors="replace")
        if offset > len(text):
            raise ToolCallError(f"offset {offset} is past the end of {path} ({len(text)} characters)")
        piece = text[offset: offset + self.max_read_chars]
        end = offset + len(piece)
        if end < len(text) or len(raw) < size:
            piece += f"\n[... truncated at character {end}; call read_file with offset={end} for more]"
        return piece

    def _list_files(self, dir: str) -> str:
        base = self._resolve(dir)
        if not base.is_dir():
            raise ToolCallError(f"{dir} is not a directory")
        rows: list[str] = []
        for current, dirs, files in os.walk(base):
            here = Path(current)
            dirs[:] = sorted(d for d in dirs
                             if d not in SKIPPED_IN_LISTING and not self._is_hidden((here / d).resolve()))
            for f in sorted(files):
                p = here / f
                if self._is_hidden(p.resolve()) or len(rows) > MAX_LISTED:
                    continue
                size = p.stat().st_size if p.exists() else 0
                mark = " (editable)" if self._relative(p.resolve()) in self.editable else ""
                rows.append(f"{p.relative_to(self.root).as_posix()}  {size} bytes{mark}")
        if len(rows) > MAX_LISTED:
            rows = rows[:MAX_LISTED] + [f"[... more than {MAX_LISTED} files; list a subdirectory]"]
        return "\n".join(rows) or "(no files)"

    def _list_experiments(self) -> str:
        return self.context.list_experiments() or "(no experiments yet)"

    def _show_experiment(self, number: int) -> str:
        return self.context.show_experiment(number) or f"(no experiment {number})"

    def _read_run(self, number: int, file: str = "") -> str:
        return runview.read_run(self.root, number, file)

    def _check_run(self, steps: int = 3) -> str:
        return self.context.check_run(steps, Path(self.context.root)) or "(check_run is not available in this session)"

    def _replace_in_file(self, path: str, old: str, new: str) -> str:
        target = self._resolve(path, for_write=True)
        if not target.is_file():
            raise ToolCallError(f"{path} does not exist; use write_file to create it")
        if not old:
            raise ToolCallError("old is empty; copy the exact text to replace from read_file")
        text = target.read_text(encoding="utf-8")
        count = text.count(old)
        if count == 0:
            hint = " (it differs only in whitespace: copy it exactly)" if _squash(old) in _squash(text) else ""
            raise ToolCallError(f"old text found 0 times in {path}{hint}; read the file and copy the exact "
                                "text, whitespace included")
        if count > 1:
            raise ToolCallError(f"old text found {count} times in {path}; include more surrounding lines so "
                                "that it occurs exactly once")
        self._write(target, text.replace(old, new, 1))
        line = text[: text.index(old)].count("\n") + 1
        return f"replaced 1 occurrence in {path} at line {line}"

    def _constants(self) -> dict[str, Path]:
        """Name -> the editable Python script defining it (the first, in sorted order, when several do)."""
        found: dict[str, Path] = {}
        for rel in sorted(self.editable):
            target = self.root / rel
            if not rel.endswith(".py") or not target.is_file():
                continue
            try:
                names = hyperparams.read_constants(target.read_text(encoding="utf-8"))
            except (SyntaxError, ValueError, UnicodeError, OSError):
                continue                     # a script broken by an earlier edit has no constants to offer
            for constant in names:
                found.setdefault(constant, target)
        return found

    def _set_constant(self, name: str, value: str) -> str:
        target = self._constants().get(name)
        if target is None:
            known = ", ".join(sorted(self._constants())) or "none"
            raise ToolCallError(f"{name} is not an UPPER_CASE constant of an editable script (known: {known})")
        if len(value) > 200:
            raise ToolCallError(f"value is {len(value)} characters; a constant's value is at most 200 (use "
                                "replace_in_file for more)")
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ToolCallError(f"value {value!r} is not a Python literal; e.g. 1e-4, 64, True, 'cosine'") from None
        text = target.read_text(encoding="utf-8")
        old = hyperparams.read_constants(text)[name]
        if not _same_kind(old, parsed):
            raise ToolCallError(f"{name} is {type(old).__name__} ({old!r}); {value.strip()!r} is "
                                f"{type(parsed).__name__}: set_constant keeps a constant's kind (use "
                                "replace_in_file to change more than a value)")
        try:
            new_text = hyperparams.set_constants(text, {name: parsed})
        except (ValueError, SyntaxError) as exc:
            raise ToolCallError(f"{name} cannot be set to {value!r}: {exc}") from None
        self._write(target, new_text)
        new = hyperparams.read_constants(new_text)[name]
        return f"{name}: {old!r} -> {new!r} in {self._relative(target)}"

    def _write_file(self, path: str, content: str) -> str:
        target = self._resolve(path, for_write=True)
        if not content.strip():
            raise ToolCallError(f"content is empty: write_file replaces the whole of {path}; send the file's "
                                "complete new text, or use replace_in_file for a part")
        if len(content) > MAX_WRITE_CHARS:
            raise ToolCallError(f"content is {len(content)} characters; the limit is {MAX_WRITE_CHARS}")
        if not target.parent.is_dir():
            raise ToolCallError(f"the directory of {path} does not exist")
        self._write(target, content)
        return f"wrote {len(content)} characters to {path}"

    def _finish(self, description: str, hypothesis: str) -> str:
        description = " ".join(description.split())[: MAX_FIELD_CHARS["description"]]
        if not description:
            raise ToolCallError("description is empty; say in one line what you changed")
        self.finished = (description, hypothesis.strip()[: MAX_FIELD_CHARS["hypothesis"]])
        return "recorded; the experiment will now run"

    def _write(self, target: Path, content: str) -> None:
        target.write_text(content, encoding="utf-8")
        rel = self._relative(target)
        if rel not in self.edited:
            self.edited.append(rel)


def _same_kind(old: Any, new: Any) -> bool:
    """A value may replace another of its type, a number another number, and None either way."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return old is None or new is None or type(old) is type(new) or (number(old) and number(new))


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _example(name: str) -> str:
    examples = {"read_file": {"path": "train.py"}, "list_files": {"dir": "."}, "list_experiments": {},
                "show_experiment": {"number": 3}, "check_run": {"steps": 3},
                "read_run": {"number": 3},
                "replace_in_file": {"path": "train.py", "old": "LR = 3e-4", "new": "LR = 1e-4"},
                "set_constant": {"name": "LR", "value": "1e-4"},
                "write_file": {"path": "scratchpad.md", "content": "..."},
                "finish": {"description": "LR 3e-4 -> 1e-4", "hypothesis": "training is unstable"}}
    return json.dumps(examples.get(name, {}))


def parse_final_text(text: str) -> tuple[str, str] | None:
    """``DESCRIPTION: ...`` / ``HYPOTHESIS: ...`` lines in a plain-text answer, or None."""
    desc = re.search(r"^\W*DESCRIPTION\W*:\s*(.+)$", text, re.MULTILINE | re.IGNORECASE)
    if not desc:
        return None
    hyp = re.search(r"^\W*HYPOTHESIS\W*:\s*(.+(?:\n(?!\W*[A-Z]+\W*:).+)*)", text, re.MULTILINE | re.IGNORECASE)
    description = " ".join(desc.group(1).strip(" *`").split())[: MAX_FIELD_CHARS["description"]]
    hypothesis = " ".join(hyp.group(1).strip(" *`").split())[: MAX_FIELD_CHARS["hypothesis"]] if hyp else ""
    return (description, hypothesis) if description else None
