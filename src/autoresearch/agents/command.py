"""A user's own command-line agent (``[agent] name = "command"``), run in the agent jail like Claude Code.

Configured in ``autoresearch.toml``::

    [agent]
    name = "command"
    command = ["my-agent", "--flag"]     # the program and its arguments
    env = ["OPENAI_API_KEY"]             # the tool's variables it gets (nothing else of the tool's env)
    timeout_s = 900                      # its deadline per turn (default 1800 s)

Each turn the program starts in the working copy (its working folder; the only place it can write besides
its private HOME and ``/tmp``), with the brief on stdin and these variables:

- ``AUTORESEARCH_BRIEF``: a read-only copy of the brief (the same text);
- ``AUTORESEARCH_RUNS``: a read-only folder with the past runs' logs and facts, ``<nnnn>/<name>``;
- ``AUTORESEARCH_EDITABLE``: the editable files, relative to the working folder, ``os.pathsep``-joined;
- ``HOME`` (private, empty), ``TMPDIR=/tmp``, ``PATH``, ``LANG``, and the names listed in ``[agent] env``.

It edits the editable files and ends its output with ``DESCRIPTION: <one line>`` and ``HYPOTHESIS: ...``
lines (``tools.parse_final_text``); without them the turn is "did not finish" and its edits are still
checked and tried. At the deadline its whole process group (and the jail's PID namespace) is killed and the
turn is an ``AgentError``; so is a non-zero exit. Only the end of its output is kept. Usage is unknown
(zero tokens, no cost). ``runner/jail.py`` says what the jail shows; without bubblewrap the agent refuses
to start unless ``[agent] sandbox = false``.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from autoresearch.agents import llm, runview
from autoresearch.agents.base import AgentContext, Brief, Proposal, Usage
from autoresearch.agents.tools import parse_final_text
from autoresearch.errors import UserError
from autoresearch.runner import allowlist, jail

NOT_FINISHED = "(agent did not finish)"
DEFAULT_TIMEOUT_S = 1800.0
BASE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
TAIL_CHARS = 1500


class CommandAgent:
    """Runs ``command`` once per turn (see the module docstring)."""

    name = "command"

    def __init__(self, context: AgentContext, command: list[str] | tuple[str, ...] | None = None) -> None:
        self.context = context
        self.command = list(command if command is not None else context.options.get("command") or [])
        if not self.command or not str(self.command[0]).strip():
            raise UserError("the command agent has no command",
                            hint='set [agent] command = ["my-agent", "--flag"] in autoresearch.toml')
        self.timeout_s = float(context.options.get("timeout_s") or DEFAULT_TIMEOUT_S)
        self.passed = list(context.options.get("env") or [])
        self.sandbox = bool(context.options.get("sandbox", True))

    def environment(self, home: Path, brief: Path, runs: Path) -> dict[str, str]:
        env = {k: os.environ[k] for k in (*BASE_ENV, *self.passed) if k in os.environ}
        env.setdefault("PATH", os.defpath)
        env.setdefault("LANG", "C.UTF-8")
        editable = os.pathsep.join(Path(p).as_posix() for p in self.context.editable)
        env.update(HOME=str(home), TMPDIR="/tmp" if self.sandbox else tempfile.gettempdir(),
                   AUTORESEARCH_BRIEF=str(brief), AUTORESEARCH_RUNS=str(runs), AUTORESEARCH_EDITABLE=editable)
        return env

    def propose(self, brief: Brief, workdir: Path) -> Proposal:
        root = Path(workdir)
        text = brief.render()
        with tempfile.TemporaryDirectory(prefix="autoresearch-agent-") as scratch:
            view, home, shared = Path(scratch) / "runs", Path(scratch) / "home", Path(scratch) / "brief"
            for folder in (view, home, shared):
                folder.mkdir(mode=0o700)
            runview.copy_runs(Path(self.context.root), view)
            (shared / "brief.md").write_text(text, encoding="utf-8")
            (shared / "brief.md").chmod(0o444)
            env = self.environment(home, shared / "brief.md", view)
            cmd = list(self.command)
            if allowlist.program_path(cmd, env) is None:
                raise UserError(f"the command agent's program {cmd[0]!r} is not found on its PATH",
                                hint="give its absolute path in [agent] command")
            if self.sandbox:
                cmd = jail.wrap_agent(cmd, env, jail.for_agent(self.context.root, self.context.denied, root, home,
                                                            (view, shared)))
                outer = {"PATH": os.environ.get("PATH", os.defpath)}
            else:
                outer = env
            done = jail.run(cmd, root, outer, text, self.timeout_s)
        if done.timed_out:
            raise llm.AgentError(f"the command agent did not finish within {self.timeout_s:.0f} s (killed)")
        if done.returncode != 0:
            tail = llm.redact((done.stderr or done.stdout)[-TAIL_CHARS:])
            raise llm.AgentError(f"the command agent exited {done.returncode}: {tail}")
        answer = final_answer(done.stdout)
        description, hypothesis = answer or (NOT_FINISHED, "")
        meta = {"command": self.command[0], "exit_code": done.returncode, "finished": answer is not None,
                "sandbox": self.sandbox}
        return Proposal(description, hypothesis, Usage(0, 0, None, done.seconds), meta=meta)

    def observe(self, number: int, status: str, metric: float | None, meta: dict) -> None:
        """Nothing to learn between experiments: the brief carries the history."""


_LAST = re.compile(r"^\W*DESCRIPTION\W*:", re.MULTILINE | re.IGNORECASE)


def final_answer(output: str) -> tuple[str, str] | None:
    """The last ``DESCRIPTION:`` (and its ``HYPOTHESIS:``) of ``output``, or None."""
    starts = [m.start() for m in _LAST.finditer(output)]
    return parse_final_text(output[starts[-1]:]) if starts else None
