"""An agent that runs the Claude Code CLI headless (``claude -p``) on its working copy, inside a jail.

The CLI runs in the agent jail (``runner/jail.py``) when bubblewrap works here: it sees the system
folders, its own installation, the working copy (writable), a copy of past runs' logs and facts
(read-only) and a private HOME, and keeps the network for its API; the repository, ``.git``,
``.autoresearch`` (ledger, keys, runs), other slots and the raw dataset are not in its world at all.
Without bubblewrap it refuses to start (``UserError``) unless ``[agent] sandbox = false`` (or the CLI's
``--no-sandbox``, which the session passes as ``options["sandbox"]``) says to run it as the user, with its
permission rules as the only fence. The private HOME holds ``.claude/`` and a ``.claude.json`` with only
the account fields of the user's own (``CLAUDE_KEYS``), and the user's ``.credentials.json`` (a
subscription login) copied in when no key or token is in the environment; nothing is written back. The
user's settings, hooks, MCP servers, project history and other files are never shown.

The permission rules below stay as a second layer, inside the jail.

The CLI gets the brief on stdin and only these built-in tools: Read, Glob, Grep (reading) and Edit, Write
(editing), with permission rules that allow reads inside the repository and edits of the editable files
alone, and deny reads of ``.git``, ``.autoresearch`` and the context's denied paths (absolute: the raw
dataset folder may be anywhere). Past runs' logs and facts.json are readable as copies in a temporary
folder outside the repository (``--add-dir``; a deny rule cannot have an allowed exception).
``--permission-mode dontAsk`` refuses anything not allowed up front, so a shell call, a read outside the
repository or an edit elsewhere comes back to the model as an error. Project settings and MCP servers of
the repository are ignored (``--setting-sources user``, ``--strict-mcp-config``).

Why reads are allowed as ``Read(./**)``, ``Glob(./**)``, ``Grep(./**)`` and not as bare tool names: with a
bare ``Grep`` allowed, a Grep whose path is a *parent* of a denied folder searches the denied folder too
(2.1.197 checks deny rules against the path argument only), so the raw dataset next to the repository
could be read. Inside the working directory the CLI applies deny rules to Grep and Glob results as well.
The engine checks the tree after every proposal whatever the CLI did.

Tested with Claude Code 2.1.197 (``npm install -g @anthropic-ai/claude-code@2.1.197``, Node >= 18).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from autoresearch.agents import llm, runview
from autoresearch.agents.base import AgentContext, Brief, Proposal, Usage
from autoresearch.agents.tools import HIDDEN_DIRS, parse_final_text, rooted
from autoresearch.errors import UserError
from autoresearch.runner import jail

NOT_FINISHED = "(agent did not finish)"
TOOLS = ("Read", "Glob", "Grep", "Edit", "Write")
REFUSED = ("Bash", "WebFetch", "WebSearch", "NotebookEdit", "Agent")
QUIET_ENV = {                 # no auto-update, telemetry, error reports or other non-essential traffic
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
}
APPEND_PROMPT = (
    "You are one step of an automated research loop. You cannot run commands or experiments: edit only "
    "the editable files named in the brief, with the Edit or Write tool. When done, end your reply with "
    "two lines: 'DESCRIPTION: <one line>' and 'HYPOTHESIS: <why it should improve the metric>'."
)

# The tool's environment a jailed CLI gets: these names and prefixes (its key or token, its API address,
# a proxy and its CA), nothing else (other services' keys stay with the tool).
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "NO_COLOR", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY",
              "ALL_PROXY", "https_proxy", "http_proxy", "no_proxy", "all_proxy", "NODE_EXTRA_CA_CERTS",
              "SSL_CERT_FILE", "SSL_CERT_DIR")
PASSED_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_", "DISABLE_")
AUTH_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
CLAUDE_KEYS = ("oauthAccount", "userID", "hasCompletedOnboarding", "primaryApiKey", "customApiKeyResponses")
MAX_CONFIG_BYTES = 1 << 20

RUNS_NOTE = ("\n(For Claude Code: the tools `read_run`, `show_experiment`, `list_experiments` and `check_run` "
             "named above are not yours. The logs and facts.json of past experiments are copied to {dir} as "
             "<nnnn>/<name>, e.g. {example}: open them with Read.)\n")


class ClaudeCodeAgent:
    """``claude -p`` with a restricted tool set; usage and cost come from its JSON result."""

    name = "claude-code"

    def __init__(self, context: AgentContext, model: str, base_url: str | None = None, max_turns: int = 30,
                 prices: dict | str | Path | None = None) -> None:
        self.context = context
        self.model = model or "sonnet"
        self.base_url = base_url or None
        self.max_turns = max_turns
        self.prices = llm.load_prices(prices if prices is not None else context.options.get("prices"))
        self.timeout_s = float(context.options.get("timeout_s", 1800.0))
        self.executable = str(context.options.get("claude_path") or "claude")
        self.max_budget_usd = context.options.get("max_budget_usd")
        self.retries = max(0, int(context.options.get("retries", llm.RetryPolicy.tries)) - 1)
        self.sandbox = bool(context.options.get("sandbox", True))

    def command(self, root: Path, runs_view: Path | None = None) -> list[str]:
        """The command line (the brief goes to stdin). ``runs_view``: a folder outside the repository with
        copies of the past runs' logs and facts (``runview.copy_runs``), which Read may open."""
        exe = shutil.which(self.executable)
        if exe is None:
            raise UserError(f"the Claude Code CLI ({self.executable!r}) is not on PATH",
                            hint="install Node.js >= 18 and `npm install -g @anthropic-ai/claude-code@2.1.197` "
                                 "(see docs/agents.md), or set [agent] claude_path")
        ctx = rooted(self.context, root)
        root = Path(ctx.root).resolve()
        allowed = ["Read(./**)", "Glob(./**)", "Grep(./**)"] + [f"Edit(./{Path(p).as_posix()})" for p in ctx.editable]
        if runs_view is not None:   # deny beats allow, so the runs are read from copies, not .autoresearch
            allowed.append(f"Read(//{Path(runs_view).resolve().as_posix().lstrip('/')}/**)")
        denied = list(REFUSED)
        for hidden in sorted(HIDDEN_DIRS):
            denied += [f"Read(./{hidden}/**)", f"Edit(./{hidden}/**)"]
        for path in ctx.denied:
            p = Path(path) if Path(path).is_absolute() else root / path
            rule = "//" + p.resolve().as_posix().lstrip("/")
            for r in [rule] if p.is_file() else [rule, rule + "/**"]:
                denied += [f"Read({r})", f"Edit({r})"]
        cmd = [exe, "-p", "--output-format", "json", "--model", self.model,
               "--tools", ",".join(TOOLS),
               "--allowedTools", ",".join(allowed),
               "--disallowedTools", ",".join(denied),
               "--permission-mode", "dontAsk",
               "--setting-sources", "user",
               "--strict-mcp-config",
               "--no-session-persistence",
               "--max-turns", str(self.max_turns),
               "--append-system-prompt", APPEND_PROMPT]
        if self.max_budget_usd is not None:
            cmd += ["--max-budget-usd", str(float(self.max_budget_usd))]
        if runs_view is not None:
            cmd += ["--add-dir", str(Path(runs_view).resolve())]
        return cmd

    def environment(self, home: Path | None = None) -> dict[str, str]:
        """The CLI's environment: with ``home`` (jailed), only ``PASSED_ENV``/``PASSED_PREFIXES`` of the tool's
        and HOME, CLAUDE_CONFIG_DIR and TMPDIR inside the jail; without, the tool's whole environment."""
        if home is None:
            env = dict(os.environ)
        else:
            env = {k: v for k, v in os.environ.items() if k in PASSED_ENV or k.startswith(PASSED_PREFIXES)}
            env.update(HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"), TMPDIR="/tmp")
            env.setdefault("PATH", os.defpath)
            env.setdefault("LANG", "C.UTF-8")
        env.update(QUIET_ENV)
        env["CLAUDE_CODE_MAX_RETRIES"] = str(self.retries)   # its default (10, even on a 401) takes minutes
        if self.base_url:
            env["ANTHROPIC_BASE_URL"] = self.base_url
        return env

    def turn_jail(self, workdir: Path, home: Path, view: Path) -> jail.AgentJail:
        """The jail of one turn: the working copy, the private HOME, the runs view (``jail.for_agent``)."""
        return jail.for_agent(self.context.root, self.context.denied, workdir, home, (view,))

    def propose(self, brief: Brief, workdir: Path) -> Proposal:
        root = Path(workdir)
        with tempfile.TemporaryDirectory(prefix="autoresearch-agent-") as scratch:
            view = Path(scratch) / "runs"
            view.mkdir()
            copied = runview.copy_runs(Path(self.context.root), view)
            cmd = self.command(root, view)
            stdin = brief.render() + RUNS_NOTE.format(dir=view.resolve(), example=copied[0] if copied
                                                      else "0001/fold0.log")
            if self.sandbox:
                home = Path(scratch) / "home"
                claude_home(home)
                env = self.environment(home)
                cmd = jail.wrap_agent(cmd, env, self.turn_jail(root, home, view))
                outer = {"PATH": os.environ.get("PATH", os.defpath)}
            else:
                outer = self.environment()
            done = jail.run(cmd, root, outer, stdin, self.timeout_s)
        if done.timed_out:
            raise llm.AgentError(f"claude-code did not finish within {self.timeout_s:.0f} s")
        result = parse_result(done.stdout)
        if result is None:
            tail = llm.redact((done.stderr or done.stdout)[-1500:])
            raise llm.AgentError(f"claude-code exited {done.returncode} without a JSON result: {tail}")
        return self.proposal(result, done.seconds, done.returncode or 0)

    def proposal(self, result: dict[str, Any], seconds: float, code: int = 0) -> Proposal:
        """A Proposal from the CLI's JSON result (``--output-format json``)."""
        subtype = str(result.get("subtype", ""))
        usage = result.get("usage") or {}
        inp = sum(int(usage.get(k) or 0)
                  for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        out = int(usage.get("output_tokens") or 0)
        cost = result.get("total_cost_usd")
        cost = float(cost) if isinstance(cost, (int, float)) else llm.cost_usd(self.model, inp, out, self.prices)
        denials = result.get("permission_denials") or []
        meta = {"model": self.model, "turns": result.get("num_turns"), "subtype": subtype, "exit_code": code,
                "permission_denials": [d.get("tool_name", "?") if isinstance(d, dict) else str(d) for d in denials]}
        text = str(result.get("result") or "")
        stopped = subtype in ("error_max_turns", "error_max_budget_usd")    # ran out: keep its edits
        if not stopped and (subtype != "success" or result.get("is_error")):
            status = result.get("api_error_status")
            raise llm.AgentError(llm.redact(f"claude-code failed ({subtype or 'error'}"
                                            f"{', HTTP ' + str(status) if status else ''}): {text[:500]}"))
        answer = parse_final_text(text) if subtype == "success" else None
        meta["finished"] = answer is not None
        description, hypothesis = answer or (NOT_FINISHED, "")
        return Proposal(description, hypothesis, Usage(inp, out, cost, seconds), meta=meta)

    def observe(self, number: int, status: str, metric: float | None, meta: dict) -> None:
        """Nothing to learn between experiments: the brief carries the history."""


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The last JSON object of type ``result`` on stdout, or None."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and value.get("type") == "result":
            return value
    return None


def _user_claude_dir() -> Path:
    return Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude")


def claude_home(home: Path, source: Path | None = None) -> None:
    """Fill a private HOME for a jailed CLI: ``.claude/`` (its config folder), a ``.claude.json`` with only
    the account fields (``CLAUDE_KEYS``) of the user's own, and, when no key or token is in the
    environment, a copy of the user's ``.credentials.json`` (a subscription login). Copies, never links:
    nothing the CLI writes reaches the user's files."""
    source = Path(source) if source is not None else _user_claude_dir()
    config = home / ".claude"
    config.mkdir(parents=True, mode=0o700, exist_ok=True)
    home.chmod(0o700)
    account: dict[str, Any] = {}
    for candidate in (source / ".claude.json", source.parent / ".claude.json"):
        data = _small_json(candidate)
        if isinstance(data, dict):
            account = {k: data[k] for k in CLAUDE_KEYS if k in data}
            break
    for where in (home / ".claude.json", config / ".claude.json"):
        where.write_text(json.dumps(account), encoding="utf-8")
        where.chmod(0o600)
    if not any(os.environ.get(k) for k in AUTH_ENV):
        creds = source / ".credentials.json"
        if isinstance(_small_json(creds), dict):
            shutil.copyfile(creds, config / ".credentials.json", follow_symlinks=True)
            (config / ".credentials.json").chmod(0o600)


def _small_json(path: Path) -> Any:
    try:
        if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
