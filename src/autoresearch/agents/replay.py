"""The replay agent: plays a research plan written in TOML, one entry per experiment.

It needs no LLM and no network, so the whole loop (commit, revert, crash fix, resume, report) can run on
a CPU with a scripted agent. The queue is validated when the agent is built; see ``load_queue``.

Position in the queue is derived, never stored: the next entry is the first one that no proposal in
``brief.past_meta`` (the engine's record of finished proposals, plus those in flight when several run at
once) took as its ``meta["queue_index"]`` or skipped, so after a crash or an interrupted experiment the
same entry is replayed. Indices are 0-based in meta; messages
count entries from 1, as a person reads the file.

An entry that no longer applies is normal in a replay: a ``replace`` whose ``old`` text is not found
exactly once (say, because the change it builds on was reverted) makes the agent skip that entry and
try the next; the skipped entries and why are listed in ``Proposal.meta["skipped"]``. ``set`` always
applies, since it only sets a value, unless the constant is gone from the file (also a skip).

A crash-fix turn (``brief.attempt > 1``) concerns the entry that crashed: ``brief.fixing`` (the crashed
proposal's meta) names it; without it, the highest index in ``past_meta``. The engine puts the crashed candidate's files back, and the entry's ``fix`` replacements
are applied to them. An entry without a fix, whose fix does not match, or whose fix was already tried
(a meta with ``"fix": True`` for it) returns a proposal with no change and ``meta["no_fix"] = True``,
which tells the engine to give up on the candidate.
"""

from __future__ import annotations

import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoresearch.agents.base import AgentContext, Brief, Proposal, Usage
from autoresearch.hyperparams import (UnknownConstant, describe_changes, diff_constants, read_constants,
                                           render_value, set_constants)
from autoresearch.errors import UserError

ENTRY_KEYS = ("description", "hypothesis", "phase", "set", "file", "replace", "fix", "scratchpad")
EDIT_KEYS = ("file", "old", "new")


@dataclass(frozen=True)
class Replacement:
    file: str
    old: str
    new: str


@dataclass(frozen=True)
class Entry:
    """One ``[[experiment]]`` of the queue."""

    index: int                                   # 0-based position in the file
    description: str
    hypothesis: str = ""
    phase: int | None = None
    file: str = ""                               # the file ``values`` applies to
    values: dict[str, Any] = field(default_factory=dict)
    replace: tuple[Replacement, ...] = ()
    fix: tuple[Replacement, ...] = ()
    scratchpad: str = ""


class _Skip(Exception):
    """This entry does not apply to the current tree; the message says why."""


def _editable_file(where: str, value: Any, editable: list[str], path: Path) -> str:
    if not isinstance(value, str) or not value:
        raise UserError(f"{path}: {where} must be a file name (a string)", hint=f"fix {where} in {path.name}")
    if value not in editable:
        raise UserError(f"{path}: {where} = {value!r} is not an editable file (editable: {', '.join(editable)})",
                        hint=f"name one of the editable files in {where}, or add it to [task] editable")
    return value


def _edits(where: str, value: Any, default_file: str, editable: list[str], path: Path) -> tuple[Replacement, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise UserError(f"{path}: {where} must be an array of tables ([[...]] with old and new)",
                        hint=f"write it as [[{where.split()[-1]}]] with file, old and new keys")
    out = []
    for k, item in enumerate(value, 1):
        here = f"{where} #{k}"
        unknown = sorted(set(item) - set(EDIT_KEYS))
        if unknown:
            raise UserError(f"{path}: {here}: unknown key {unknown[0]!r} (known: {', '.join(EDIT_KEYS)})",
                            hint=f"fix {here} in {path.name}")
        for key in ("old", "new"):
            if not isinstance(item.get(key), str):
                raise UserError(f"{path}: {here}: `{key}` is required and must be a string",
                                hint=f"fix {here} in {path.name}")
        if not item["old"]:
            raise UserError(f"{path}: {here}: `old` must not be empty", hint="quote the exact text to replace")
        file = _editable_file(f"{here} file", item.get("file", default_file), editable, path)
        out.append(Replacement(file, item["old"], item["new"]))
    return tuple(out)


def load_queue(path: Path, context: AgentContext, scratchpad: str = "scratchpad.md") -> list[Entry]:
    """Read and validate a queue file; every error names the file, the entry (from 1) and the key."""
    if not path.is_file():
        raise UserError(f"replay queue {path} not found", hint="create it, or set [agent] queue in autoresearch.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}", hint="fix the syntax at the line named") from None
    extra = sorted(set(data) - {"experiment"})
    if extra:
        raise UserError(f"{path}: unknown top-level key {extra[0]!r}", hint="entries are [[experiment]] tables")
    raw = data.get("experiment")
    if not isinstance(raw, list) or not raw or not all(isinstance(e, dict) for e in raw):
        raise UserError(f"{path}: no [[experiment]] entries", hint="add at least one [[experiment]] table")
    code_files = [f for f in context.editable if f != scratchpad] or list(context.editable)
    if not code_files:
        raise UserError("the replay agent needs at least one editable file")
    known_cache: dict[str, set[str] | None] = {}
    entries = []
    for i, item in enumerate(raw):
        where = f"experiment #{i + 1}"
        unknown = sorted(set(item) - set(ENTRY_KEYS))
        if unknown:
            raise UserError(f"{path}: {where}: unknown key {unknown[0]!r} (known: {', '.join(ENTRY_KEYS)})",
                            hint=f"fix {where} in {path.name}")
        description = item.get("description")
        if not isinstance(description, str) or not description.strip():
            raise UserError(f"{path}: {where}: `description` is required (one line saying what changes)",
                            hint=f"add description = \"...\" to {where}")
        for key in ("hypothesis", "scratchpad"):
            if not isinstance(item.get(key, ""), str):
                raise UserError(f"{path}: {where}: `{key}` must be a string", hint=f"fix {where} in {path.name}")
        phase = item.get("phase")
        if phase is not None and (not isinstance(phase, int) or isinstance(phase, bool)):
            raise UserError(f"{path}: {where}: `phase` must be an integer, got {phase!r}",
                            hint=f"fix {where} in {path.name}")
        file = _editable_file(f"{where} file", item.get("file", code_files[0]), list(context.editable), path)
        values = item.get("set", {})
        if not isinstance(values, dict):
            raise UserError(f"{path}: {where}: `set` must be a table such as {{ LR = 0.0001 }}",
                            hint=f"fix {where} in {path.name}")
        if file not in known_cache:
            target = context.root / file
            try:
                known_cache[file] = set(read_constants(target.read_text(encoding="utf-8")))
            except (OSError, SyntaxError, ValueError):
                known_cache[file] = None   # missing or unparsable now: checked again when applied
        known = known_cache[file]
        for name, value in values.items():
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                raise UserError(f"{path}: {where}: set.{name}: names must be UPPER_CASE constants",
                                hint=f"fix {where} in {path.name}")
            if known is not None and name not in known:
                raise UserError(f"{path}: {where}: set.{name} is not a constant of {file} "
                                f"(known: {', '.join(sorted(known)) or 'none'})",
                                hint=f"fix the name in {where}, or set file = \"...\"")
            try:
                render_value(value)
            except ValueError as exc:
                raise UserError(f"{path}: {where}: set.{name}: {exc}", hint="use a number, string, boolean or list")
        entries.append(Entry(
            index=i, description=description.strip(), hypothesis=item.get("hypothesis", "").strip(), phase=phase,
            file=file, values=dict(values),
            replace=_edits(f"{where} replace", item.get("replace", []), file, list(context.editable), path),
            fix=_edits(f"{where} fix", item.get("fix", []), file, list(context.editable), path),
            scratchpad=item.get("scratchpad", "").strip(),
        ))
    return entries


def _replace_once(texts: dict[str, str], edit: Replacement, workdir: Path) -> None:
    text = texts.get(edit.file)
    if text is None:
        target = workdir / edit.file
        if not target.is_file():
            raise _Skip(f"{edit.file} does not exist")
        text = target.read_text(encoding="utf-8")
    count = text.count(edit.old)
    if count != 1:
        first = edit.old.strip().splitlines()[0][:60] if edit.old.strip() else edit.old
        raise _Skip(f"replace text {first!r} found {count} times in {edit.file}, expected exactly once")
    texts[edit.file] = text.replace(edit.old, edit.new, 1)


def _apply_entry(entry: Entry, texts: dict[str, str], workdir: Path) -> None:
    """Apply ``set`` then ``replace`` to the in-memory ``texts`` (read from ``workdir`` on first use)."""
    if entry.values:
        target = workdir / entry.file
        if entry.file not in texts:
            if not target.is_file():
                raise _Skip(f"{entry.file} does not exist")
            texts[entry.file] = target.read_text(encoding="utf-8")
        try:
            texts[entry.file] = set_constants(texts[entry.file], entry.values)
        except UnknownConstant as exc:
            raise _Skip(str(exc)) from None
        except SyntaxError as exc:
            raise _Skip(f"{entry.file} does not parse: {exc}") from None
    for edit in entry.replace:
        _replace_once(texts, edit, workdir)


class ReplayAgent:
    """Replays ``queue.toml``; see the module docstring for position, skips and fixes."""

    name = "replay"

    def __init__(self, queue_path: Path | str, context: AgentContext, scratchpad: str = "scratchpad.md") -> None:
        path = Path(queue_path)
        self.queue_path = path if path.is_absolute() else context.root / path
        self.context = context
        self.scratchpad = scratchpad
        self.entries = load_queue(self.queue_path, context, scratchpad)

    def propose(self, brief: Brief, workdir: Path) -> Proposal:
        start = time.monotonic()
        done = [m["queue_index"] for m in brief.past_meta
                if isinstance(m, dict) and isinstance(m.get("queue_index"), int)]
        fixing = brief.fixing.get("queue_index") if isinstance(brief.fixing, dict) else None
        if brief.attempt > 1 and (isinstance(fixing, int) or done):
            index = fixing if isinstance(fixing, int) else max(done)
            proposal = self._fix(self.entries[min(index, len(self.entries) - 1)], brief, workdir)
        else:
            # The first entry no finished (or in-flight) proposal took or skipped: one after another this is
            # max + 1; with several candidates in flight, an entry whose run was lost is replayed, not lost.
            consumed = set(done) | {s["index"] for m in brief.past_meta if isinstance(m, dict)
                                    for s in (m.get("skipped") or []) if isinstance(s, dict) and isinstance(s.get("index"), int)}
            proposal = self._next(consumed, brief, workdir)
        proposal.usage = Usage(seconds=time.monotonic() - start)
        return proposal

    def observe(self, number: int, status: str, metric: float | None, meta: dict) -> None:
        """The replay plan does not adapt to results."""

    def _next(self, consumed: set[int], brief: Brief, workdir: Path) -> Proposal:
        skipped: list[dict] = []
        for entry in self.entries:
            if entry.index in consumed:
                continue
            texts: dict[str, str] = {}
            try:
                _apply_entry(entry, texts, workdir)
            except _Skip as why:
                skipped.append({"index": entry.index, "reason": str(why)})
                continue
            changes = ""
            original = workdir / entry.file
            if entry.file in texts and original.is_file():
                try:
                    changes = describe_changes(diff_constants(original.read_text(encoding="utf-8"),
                                                              texts[entry.file]))
                except SyntaxError:
                    changes = ""
            self._write(texts, workdir)
            self._log(workdir, brief, entry, changes)
            meta: dict[str, Any] = {"queue_index": entry.index}
            if entry.phase is not None:
                meta["phase"] = entry.phase
            if skipped:
                meta["skipped"] = skipped
            return Proposal(description=entry.description, hypothesis=entry.hypothesis, meta=meta)
        return Proposal(description="queue exhausted", exhausted=True, meta={"skipped": skipped} if skipped else {})

    def _fix(self, entry: Entry, brief: Brief, workdir: Path) -> Proposal:
        meta: dict[str, Any] = {"queue_index": entry.index}
        if not entry.fix:
            return Proposal(description=f"no fix planned for: {entry.description}", meta={**meta, "no_fix": True})
        if any(m.get("queue_index") == entry.index and m.get("fix") for m in brief.past_meta if isinstance(m, dict)):
            return Proposal(description=f"the planned fix was already tried: {entry.description}",
                            meta={**meta, "no_fix": True, "reason": "the fix crashed too"})
        texts: dict[str, str] = {}
        try:
            for edit in entry.fix:
                _replace_once(texts, edit, workdir)
        except _Skip as why:
            return Proposal(description=f"planned fix does not apply: {entry.description}",
                            meta={**meta, "no_fix": True, "reason": str(why)})
        self._write(texts, workdir)
        self._log(workdir, brief, entry, "", fixing=True)
        return Proposal(description=f"{entry.description} (crash fix)", hypothesis=entry.hypothesis,
                        meta={**meta, "fix": True})

    def _write(self, texts: dict[str, str], workdir: Path) -> None:
        for rel, text in texts.items():
            target = workdir / rel
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                target.write_text(text, encoding="utf-8")

    def _log(self, workdir: Path, brief: Brief, entry: Entry, changes: str, fixing: bool = False) -> None:
        """Append one research-log line (and the entry's own note) to the scratchpad."""
        pad = workdir / self.scratchpad
        pad.parent.mkdir(parents=True, exist_ok=True)
        old = pad.read_text(encoding="utf-8") if pad.is_file() else ""
        phase = f", phase {entry.phase}" if entry.phase is not None else ""
        if fixing:
            line = f"- Exp {brief.experiment} (plan #{entry.index + 1}{phase}): crashed; applying the planned fix."
        else:
            line = f"- Exp {brief.experiment} (plan #{entry.index + 1}{phase}): {entry.description.rstrip('.')}."
            if changes:
                line += f" Changed: {changes}."
            if entry.hypothesis:
                line += f" Hypothesis: {entry.hypothesis}"
        note = f"\n  {entry.scratchpad}" if entry.scratchpad and not fixing else ""
        sep = "" if not old or old.endswith("\n") else "\n"
        pad.write_text(f"{old}{sep}{line}{note}\n", encoding="utf-8")
