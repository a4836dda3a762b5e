"""The agent's own process in its jail (``runner/jail.py``): a user's command-line agent and the real Claude
Code CLI work on a working copy (an export of the repository's files in a folder of its own) and reach
nothing else: not the repository, its ``.autoresearch`` (ledger, keys, runs), a key kept elsewhere, the raw
data, another slot's working copy, or the tool's environment. Skipped where bubblewrap does not work."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from autoresearch.agents import llm, make_agent
from autoresearch.agents.base import AgentContext, Brief
from autoresearch.agents.claude_code import ClaudeCodeAgent
from autoresearch.agents.command import CommandAgent, final_answer
from autoresearch.errors import UserError
from autoresearch.runner import jail, sandbox
from fakes.llm_servers import AnthropicFake, anthropic_message, text_block, tool_use

pytestmark = pytest.mark.skipif(not sandbox.available(), reason=f"bubblewrap: {sandbox.unavailable_reason()}")

TRAIN = "LR = 3e-4\nBATCH = 48\n"
SECRETS = ("LEDGER-ORIGINAL", "TOPSECRET-KEY", "KEY-ELSEWHERE", "RAW-PAIRING", "OTHER-SLOT", "REPO-ONLY",
           "GIT-CONFIG", "TOOL-ENV-SECRET")


class World:
    """A repository with its state, a key elsewhere, raw data, two working copies and a folder outside."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = tmp / "research"
        state = self.repo / ".autoresearch"
        (state / "secret" / "keys").mkdir(parents=True)
        (state / "runs" / "0001" / "0").mkdir(parents=True)
        (self.repo / ".git").mkdir()
        (self.repo / ".git" / "config").write_text("[core]\n# GIT-CONFIG\n")
        self.ledger = state / "ledger.sqlite"
        self.ledger.write_text("LEDGER-ORIGINAL")
        self.key = state / "secret" / "keys" / "fold_0.json"
        self.key.write_text('{"pairs": "TOPSECRET-KEY"}')
        (state / "runs" / "0001" / "fold0.log").write_text("step 1/2 loss 1.0\nRUNLOG-VISIBLE\n")
        (state / "runs" / "0001" / "0" / "facts.json").write_text('{"steps": 2}')
        for name, text in (("train.py", TRAIN), ("prepare.py", "EVAL = 'fixed'\n"), ("scratchpad.md", "# pad\n"),
                           ("notes.txt", "REPO-ONLY\n")):
            (self.repo / name).write_text(text)
        self.elsewhere = tmp / "keys" / "test.json"
        self.elsewhere.parent.mkdir()
        self.elsewhere.write_text("KEY-ELSEWHERE")
        self.raw = tmp / "datasets" / "ukiyoe"
        self.raw.mkdir(parents=True)
        (self.raw / "train.jsonl").write_text('{"caption": "RAW-PAIRING"}\n')
        self.copy = tmp / "copies" / "slot0"                 # the working copy: an export of tracked files
        self.copy.mkdir(parents=True)
        for name in ("train.py", "prepare.py", "scratchpad.md"):
            shutil.copyfile(self.repo / name, self.copy / name)
        self.other = tmp / "copies" / "slot1"
        self.other.mkdir()
        (self.other / "train.py").write_text("OTHER-SLOT\n")
        self.outside = tmp / "outside.txt"

    def context(self, **options) -> AgentContext:
        return AgentContext(root=self.repo, editable=["train.py", "scratchpad.md"],
                            denied=[self.repo / ".autoresearch" / "secret", self.raw, self.elsewhere],
                            options={"retries": 1, **options})

    def untouched(self) -> None:
        assert self.ledger.read_text() == "LEDGER-ORIGINAL"
        assert self.key.read_text() == '{"pairs": "TOPSECRET-KEY"}'
        assert self.elsewhere.read_text() == "KEY-ELSEWHERE"
        assert (self.repo / "train.py").read_text() == TRAIN and (self.other / "train.py").read_text() == "OTHER-SLOT\n"
        assert not self.outside.exists()
        assert sorted(p.name for p in self.repo.iterdir()) == [".autoresearch", ".git", "notes.txt", "prepare.py",
                                                               "scratchpad.md", "train.py"]


@pytest.fixture
def world(tmp_path, monkeypatch) -> World:
    monkeypatch.setenv("TOOL_SECRET", "TOOL-ENV-SECRET")      # in the tool's environment, never the agent's
    monkeypatch.setenv("HOME", str(tmp_path / "realhome"))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "realhome" / ".claude"))
    (tmp_path / "realhome").mkdir()
    return World(tmp_path)


def brief() -> Brief:
    return Brief(experiment=4, task="toy", metric_name="loss", direction="minimize", phase_title="Tuning",
                 phase_text="Tune LR.", program_rules="One change.", scratchpad="", editable=["train.py"],
                 champion_metric=1.0, champion_std=0.1, noise_sigma=0.05, history=[])


# -- the command agent: a Python script that tries everything ------------------------------------------------

ATTACKER = '''\
import json, os, socket, sys, time
w = json.loads(os.environ["WORLD"])
found = {}

def attempt(name, fn):
    try:
        found[name] = ["ok", repr(fn())[:200]]
    except Exception as exc:
        found[name] = ["refused", type(exc).__name__]

def read(path):
    with open(path) as fh:
        return fh.read()

def write(path, text="pwned"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)
    return path

attempt("stdin_is_the_brief", lambda: sys.stdin.read().startswith("# Experiment 4"))
attempt("brief_file", lambda: read(os.environ["AUTORESEARCH_BRIEF"]).startswith("# Experiment 4"))
attempt("write_brief", lambda: write(os.environ["AUTORESEARCH_BRIEF"]))
attempt("runs_view", lambda: read(os.path.join(os.environ["AUTORESEARCH_RUNS"], "0001", "fold0.log")))
attempt("write_runs_view", lambda: write(os.path.join(os.environ["AUTORESEARCH_RUNS"], "0001", "x.log")))
attempt("read_ledger", lambda: read(w["ledger"]))
attempt("read_key", lambda: read(w["key"]))
attempt("read_elsewhere", lambda: read(w["elsewhere"]))
attempt("read_raw", lambda: read(w["raw"] + "/train.jsonl"))
attempt("read_repo", lambda: read(w["repo"] + "/notes.txt"))
attempt("read_git", lambda: read(w["repo"] + "/.git/config"))
attempt("read_other_slot", lambda: read(w["other"] + "/train.py"))
attempt("list_home", lambda: os.listdir("/home") + os.listdir("/root"))
attempt("write_ledger", lambda: write(w["ledger"]))
attempt("write_outside", lambda: write(w["outside"]))
attempt("write_other_slot", lambda: write(w["other"] + "/train.py"))
attempt("hardlink_key", lambda: os.link(w["key"], "linked_key.json"))
attempt("hardlink_elsewhere", lambda: os.link(w["elsewhere"], "linked_elsewhere"))
attempt("hardlink_runs_view", lambda: os.link(os.path.join(os.environ["AUTORESEARCH_RUNS"], "0001", "fold0.log"), "l"))
attempt("symlink_key", lambda: (os.symlink(w["key"], "key_link"), read("key_link")))
attempt("tool_env", lambda: os.environ["TOOL_SECRET"])
attempt("passed_env", lambda: os.environ["AGENT_KEY"])
attempt("home_writable", lambda: write(os.path.join(os.environ["HOME"], "x", "y")))
attempt("tmp_writable", lambda: write("/tmp/scratch/x"))
attempt("pids", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
attempt("network", lambda: socket.create_connection(("127.0.0.1", w["port"]), timeout=5).close())
if os.fork() == 0:                                   # a daemon that outlives the agent, if it can
    os.setsid()
    if os.fork() == 0:
        time.sleep(1.5)
        write("daemon.txt", "still alive")
    os._exit(0)
with open("train.py") as fh:
    code = fh.read()
with open("train.py", "w") as fh:
    fh.write(code.replace("LR = 3e-4", "LR = 1e-4"))
with open("findings.json", "w") as fh:
    json.dump(found, fh)
print("DESCRIPTION: an early line, not the answer")
print("noise")
print("DESCRIPTION: LR 3e-4 -> 1e-4")
print("HYPOTHESIS: smaller steps")
'''


@pytest.fixture
def listener():
    """A TCP server on the host's loopback: the jail keeps the network, so the agent reaches it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@pytest.mark.slow
def test_a_command_agent_edits_its_working_copy_and_reaches_nothing_else(world, listener, monkeypatch):
    script = world.tmp / "agentbin" / "agent.py"           # outside everything: its folder is shown read-only
    script.parent.mkdir()
    script.write_text(ATTACKER)
    command = [sys.executable, str(script)]
    monkeypatch.setenv("WORLD", json.dumps({"ledger": str(world.ledger), "key": str(world.key), "port": listener,
                                            "elsewhere": str(world.elsewhere), "raw": str(world.raw),
                                            "repo": str(world.repo), "other": str(world.other),
                                            "outside": str(world.outside)}))
    monkeypatch.setenv("AGENT_KEY", "passed-on-purpose")
    agent = CommandAgent(world.context(command=command, env=["WORLD", "AGENT_KEY"], timeout_s=120))
    proposal = agent.propose(brief(), world.copy)
    assert (proposal.description, proposal.hypothesis) == ("LR 3e-4 -> 1e-4", "smaller steps")
    assert (world.copy / "train.py").read_text() == TRAIN.replace("3e-4", "1e-4")      # its edit is there
    found = json.loads((world.copy / "findings.json").read_text())
    ok = {k for k, (verdict, _) in found.items() if verdict == "ok"}
    assert found["runs_view"][1].count("RUNLOG-VISIBLE") == 1
    assert found["passed_env"][1] == "'passed-on-purpose'"
    assert ok == {"stdin_is_the_brief", "brief_file", "runs_view", "passed_env", "home_writable", "tmp_writable",
                  "pids", "network",
                  # these land in the jail's own /tmp, which vanishes with it (checked below on the host)
                  "write_ledger", "write_outside", "write_other_slot"}, found
    assert found["stdin_is_the_brief"][1] == found["brief_file"][1] == "True"
    assert len(json.loads(found["pids"][1].replace("'", '"'))) <= 4                   # its own PID namespace
    assert found["hardlink_runs_view"][1] == "OSError"                                # EXDEV: another mount
    world.untouched()
    time.sleep(2.5)
    assert not (world.copy / "daemon.txt").exists()            # the daemon died with the jail
    assert not (world.copy / "linked_key.json").exists()
    assert os.path.islink(world.copy / "key_link")             # a dangling link: the take-back refuses links


@pytest.mark.slow
def test_a_command_agent_is_killed_at_its_deadline_with_its_children(world):
    script = world.tmp / "agentbin" / "slow.py"
    script.parent.mkdir()
    script.write_text(textwrap.dedent('''\
        import os, subprocess, time
        subprocess.Popen(["sh", "-c", "sleep 2; echo late > late.txt"])
        time.sleep(60)
    '''))
    agent = CommandAgent(world.context(command=[sys.executable, str(script)], timeout_s=1))
    started = time.monotonic()
    with pytest.raises(llm.AgentError, match="did not finish within 1 s"):
        agent.propose(brief(), world.copy)
    assert time.monotonic() - started < 10
    time.sleep(2.5)
    assert not (world.copy / "late.txt").exists()


def test_a_failing_command_agent_is_an_agent_error_and_its_last_answer_counts(world):
    script = world.tmp / "agentbin" / "fails.py"
    script.parent.mkdir()
    script.write_text("import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)\n")
    with pytest.raises(llm.AgentError, match="exited 3: boom"):
        CommandAgent(world.context(command=[sys.executable, str(script)])).propose(brief(), world.copy)
    assert final_answer("DESCRIPTION: a\nHYPOTHESIS: b\nlater\nDESCRIPTION: c\nHYPOTHESIS: d\n") == ("c", "d")
    assert final_answer("no answer") is None


def test_the_command_agent_needs_a_command_and_names_the_key(world, tmp_path):
    from autoresearch import config as config_mod

    with pytest.raises(UserError, match=r"\[agent\] command"):
        CommandAgent(world.context())
    root = tmp_path / "cfg"
    root.mkdir()
    base = ('[task]\nname = "toy"\neditable = ["train.py"]\n[run]\ncommand = ["python", "train.py"]\n'
            '[metric]\nname = "m"\ndirection = "minimize"\nsource = "regex"\npattern = "m: (.*)"\n')
    for agent, error in (('name = "command"', r"\[agent\] command must name"),
                         ('name = "command"\ncommand = ["ok", ""]', r"\[agent\] command must not hold"),
                         ('name = "command"\ncommand = ["a"]\nenv = ["A=B"]', r"\[agent\] env must list"),
                         ('name = "command"\ncommand = "a"', r"\[agent\] command must be a list")):
        (root / "autoresearch.toml").write_text(base + "[agent]\n" + agent + "\n")
        with pytest.raises(UserError, match=error):
            config_mod.load(root)
    (root / "autoresearch.toml").write_text(base + '[agent]\nname = "command"\ncommand = ["my-agent", "-x"]\n'
                                            'env = ["OPENAI_API_KEY"]\ntimeout_s = 60\n')
    cfg = config_mod.load(root)
    agent = make_agent("command", cfg, world.context(**cfg.agent.options()), tag="t")
    assert isinstance(agent, CommandAgent) and agent.command == ["my-agent", "-x"] and agent.timeout_s == 60
    assert agent.passed == ["OPENAI_API_KEY"] and agent.sandbox


def test_the_jail_refuses_a_working_copy_inside_the_repository_and_a_hidden_program(world):
    inside = world.repo / "copy"
    inside.mkdir()
    home = world.tmp / "h"
    home.mkdir()
    with pytest.raises(UserError, match="overlaps"):
        jail.wrap_agent(["true"], {"PATH": "/usr/bin:/bin"},
                        jail.AgentJail(inside, home, forbidden=(world.repo,)))
    program = world.repo / "tools" / "agent"                 # an agent installed inside the repository
    program.parent.mkdir()
    program.write_text("#!/bin/sh\necho hi\n")
    program.chmod(0o755)
    with pytest.raises(UserError, match="would not be visible"):
        jail.wrap_agent([str(program)], {"PATH": "/usr/bin:/bin"},
                        jail.for_agent(world.repo, [], world.copy, home))


def test_the_jails_tmp_is_bounded(world):
    home = world.tmp / "h"
    home.mkdir()
    cmd = jail.wrap_agent(["sh", "-c", "head -c 3000000 /dev/zero > /tmp/fill; echo rc=$?; "
                                       "head -c 3000000 /dev/zero > /dev/shm/fill; echo rc=$?"],
                          {"PATH": "/usr/bin:/bin"},
                          jail.AgentJail(world.copy, home, tmp_bytes=1 << 20))
    done = jail.run(cmd, world.copy, {"PATH": "/usr/bin:/bin"}, "", 30)
    assert done.stdout.split() == ["rc=1", "rc=1"], (done.stdout, done.stderr)


def test_without_bubblewrap_the_jailed_agents_refuse_with_the_way_out(world, monkeypatch):
    monkeypatch.setattr(sandbox, "_probe", lambda: (False, "the `bwrap` program is not on PATH"))
    agent = CommandAgent(world.context(command=["true"]))
    with pytest.raises(UserError, match="not usable here") as err:
        agent.propose(brief(), world.copy)
    assert "--no-sandbox" in err.value.hint
    unjailed = CommandAgent(world.context(command=["sh", "-c", "echo 'DESCRIPTION: x'"], sandbox=False))
    assert unjailed.propose(brief(), world.copy).description == "x"
    with pytest.raises(UserError, match="not found on its PATH"):
        CommandAgent(world.context(command=["no-such-agent-program"], sandbox=False)).propose(brief(), world.copy)


# -- the real Claude Code CLI on a working copy -----------------------------------------------------------------

needs_cli = pytest.mark.skipif(shutil.which("claude") is None,
                               reason="Claude Code CLI not installed (scripts/setup.sh installs it)")


def _drive(agent: ClaudeCodeAgent, world: World, steps: list[dict]) -> tuple[list[dict], AnthropicFake]:
    """Run the agent against the fake API scripted with ``steps`` (the agent's context has ``retries=3``: a
    connection the CLI reuses after the fake closed it is retried, as in test_claude_code)."""
    results: list[dict] = []

    def responder(request):
        if not request.body.get("tools"):
            return anthropic_message(text_block("ok"), usage=(5, 1))
        results.extend(request.tool_results())
        step = sum(1 for m in request.messages() if m.get("role") == "assistant")
        if step < len(steps):
            return anthropic_message(steps[step], usage=(100, 10))
        return anthropic_message(text_block("DESCRIPTION: LR 3e-4 -> 1e-4\nHYPOTHESIS: less overshoot"),
                                 usage=(100, 10))

    with AnthropicFake(responder) as server:
        agent.base_url = server.base_url
        proposal = agent.propose(brief(), world.copy)
    assert server.errors == [], server.errors
    assert proposal.description == "LR 3e-4 -> 1e-4"
    by_id = {r["id"]: r for r in results}
    return [by_id[s["id"]] for s in steps], server


class Viewing(ClaudeCodeAgent):
    """Points the scripted read of the runs view at this turn's (a new temporary folder each turn)."""

    step: dict = {}

    def command(self, root, runs_view=None):
        self.step["input"]["file_path"] = str(Path(runs_view).resolve() / "0001" / "fold0.log")
        return super().command(root, runs_view)


class Unfenced(ClaudeCodeAgent):
    """The CLI with every Read, Glob, Grep, Edit and Write allowed anywhere: only the jail is left."""

    def command(self, root, runs_view=None):
        cmd = super().command(root, runs_view)
        cmd[cmd.index("--allowedTools") + 1] = "Read,Glob,Grep,Edit,Write"
        cmd[cmd.index("--disallowedTools") + 1] = "Bash,WebFetch,WebSearch,NotebookEdit,Agent"
        return cmd


@needs_cli
@pytest.mark.slow
def test_real_cli_edits_its_working_copy_and_reads_the_runs_view_but_not_the_repository(world, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-dummy-key-0123456789")
    steps = [
        tool_use("Read", {"file_path": str(world.copy / "train.py")}),
        tool_use("Edit", {"file_path": str(world.copy / "train.py"), "old_string": "LR = 3e-4",
                          "new_string": "LR = 1e-4"}),
        tool_use("Read", {"file_path": str(world.ledger)}),
        tool_use("Read", {"file_path": str(world.repo / "notes.txt")}),
        tool_use("Read", {"file_path": str(world.elsewhere)}),
        tool_use("Write", {"file_path": str(world.outside), "content": "pwned"}),
        tool_use("Read", {"file_path": "RUNS VIEW/0001/fold0.log"}),    # a copy of the runs' logs, read-only
    ]
    agent = Viewing(world.context(retries=3), model="claude-sonnet-4-6")
    agent.step = steps[-1]
    outcome, server = _drive(agent, world, steps)
    assert [o["is_error"] for o in outcome] == [False, False, True, True, True, True, False], outcome
    assert "RUNLOG-VISIBLE" in outcome[6]["content"]
    assert (world.copy / "train.py").read_text() == TRAIN.replace("3e-4", "1e-4")
    world.untouched()
    leaked = [s for s in SECRETS for r in server.requests if s in r.text()]
    assert leaked == [], leaked


@needs_cli
@pytest.mark.slow
def test_real_cli_with_every_permission_still_cannot_reach_outside_its_jail(world, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-dummy-key-0123456789")
    steps = [
        tool_use("Read", {"file_path": str(world.repo / ".autoresearch" / "runs" / "0001" / "fold0.log")}),
        tool_use("Read", {"file_path": str(world.key)}),
        tool_use("Read", {"file_path": str(world.repo / "notes.txt")}),
        tool_use("Read", {"file_path": str(world.repo / ".git" / "config")}),
        tool_use("Read", {"file_path": str(world.elsewhere)}),
        tool_use("Read", {"file_path": str(world.raw / "train.jsonl")}),
        tool_use("Read", {"file_path": str(world.other / "train.py")}),
        tool_use("Grep", {"pattern": "|".join(s[:-1] + f"[{s[-1]}]" for s in SECRETS), "path": str(world.tmp),
                          "output_mode": "content"}),          # the pattern does not hold the secrets itself
        tool_use("Write", {"file_path": str(world.outside), "content": "pwned"}),
        tool_use("Write", {"file_path": str(world.ledger), "content": "rewritten"}),
        tool_use("Write", {"file_path": str(world.other / "train.py"), "content": "rewritten"}),
        tool_use("Read", {"file_path": str(world.copy / "train.py")}),
        tool_use("Edit", {"file_path": str(world.copy / "train.py"), "old_string": "LR = 3e-4",
                          "new_string": "LR = 1e-4"}),
    ]
    agent = Unfenced(world.context(retries=3), model="claude-sonnet-4-6")
    outcome, server = _drive(agent, world, steps)
    assert [o["is_error"] for o in outcome[:7]] == [True] * 7, outcome       # nothing there to read
    assert all("File does not exist" in o["content"] for o in outcome[:7]), outcome
    assert outcome[7]["content"].startswith("No matches"), outcome[7]
    assert [o["is_error"] for o in outcome[8:11]] == [False] * 3        # written, into the jail's own /tmp
    assert not outcome[12]["is_error"] and (world.copy / "train.py").read_text() == TRAIN.replace("3e-4", "1e-4")
    world.untouched()                  # writes outside landed in the jail's own /tmp, gone with it
    leaked = [s for s in SECRETS for r in server.requests if s in r.text()]
    assert leaked == [], leaked


# -- what the jail derives and prepares ---------------------------------------------------------------------------

def test_a_node_cli_installed_under_a_home_folder_is_visible_with_its_interpreter_and_nothing_beside(world):
    """An nvm-style install: ``bin/claude -> ../lib/node_modules/@x/cli/cli.js`` run by ``#!/usr/bin/env node``."""
    prefix = world.tmp / "realhome" / ".nvm" / "versions" / "node" / "v20"
    package = prefix / "lib" / "node_modules" / "@x" / "cli"
    package.mkdir(parents=True)
    (package / "cli.js").write_text("#!/usr/bin/env node\n")
    (package / "cli.js").chmod(0o755)
    (prefix / "bin").mkdir()
    (prefix / "bin" / "node").write_text('#!/bin/sh\necho "node ran $1"\n')
    (prefix / "bin" / "node").chmod(0o755)
    (prefix / "bin" / "claude").symlink_to("../lib/node_modules/@x/cli/cli.js")
    (world.tmp / "realhome" / "private.txt").write_text("HOME-FILE")
    env = {"PATH": f"{prefix / 'bin'}:/usr/bin:/bin"}
    roots = jail.program_roots(prefix / "bin" / "claude", env)
    assert {prefix / "bin", package, prefix / "lib" / "node_modules", prefix} <= set(roots)
    home = world.tmp / "h"
    home.mkdir()
    cmd = jail.wrap_agent(["claude"], env, jail.for_agent(world.repo, [], world.copy, home))
    done = jail.run(cmd, world.copy, {"PATH": os.defpath}, "", 30)
    assert done.returncode == 0 and done.stdout.strip() == f"node ran {prefix / 'bin' / 'claude'}", done
    probe = jail.wrap_agent(["sh", "-c", f"cat {world.tmp / 'realhome' / 'private.txt'} || echo hidden"], env,
                            jail.for_agent(world.repo, [], world.copy, home))
    assert jail.run(probe, world.copy, {"PATH": os.defpath}, "", 30).stdout.strip().endswith("hidden")


def test_the_private_home_holds_the_account_fields_and_a_login_only_without_a_key(world, tmp_path, monkeypatch):
    from autoresearch.agents.claude_code import claude_home

    real = tmp_path / "realhome"
    (real / ".claude").mkdir()
    (real / ".claude.json").write_text(json.dumps({"userID": "u1", "oauthAccount": {"email": "a@b"},
                                                   "projects": {"/secret/project": {}}, "mcpServers": {"x": {}}}))
    (real / ".claude" / ".credentials.json").write_text('{"claudeAiOauth": {"accessToken": "tok"}}')
    (real / ".claude" / "settings.json").write_text('{"hooks": {}}')
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    home = tmp_path / "jailhome"
    claude_home(home, real / ".claude")
    assert json.loads((home / ".claude.json").read_text()) == {"userID": "u1", "oauthAccount": {"email": "a@b"}}
    assert sorted(p.name for p in (home / ".claude").iterdir()) == [".claude.json", ".credentials.json"]
    assert not (home / ".claude" / ".credentials.json").is_symlink()
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    other = tmp_path / "jailhome2"
    claude_home(other, real / ".claude")
    assert not (other / ".claude" / ".credentials.json").exists()
    agent = ClaudeCodeAgent(world.context(), model="m", base_url="http://127.0.0.1:9")
    env = agent.environment(other)
    assert env["HOME"] == str(other) and env["CLAUDE_CONFIG_DIR"] == str(other / ".claude")
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-x" and env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert "TOOL_SECRET" not in env and "WORLD" not in env
