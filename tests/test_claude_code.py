"""The Claude Code agent: its command line and result parsing (with a stand-in script), and the real CLI
driven against the loopback fake Messages API (skipped when ``claude`` is not installed)."""

from __future__ import annotations

import json
import shutil
import stat
import time
from pathlib import Path

import pytest

from autoresearch.agents import llm
from autoresearch.agents.base import AgentContext, Brief
from autoresearch.agents.claude_code import ClaudeCodeAgent, parse_result
from autoresearch.errors import UserError
from fakes.llm_servers import AnthropicFake, Reply, anthropic_message, text_block, tool_use

KEY = "sk-ant-dummy-key-0123456789"
TRAIN = "LR = 3e-4\nBATCH = 48\n"
# What `claude -p --output-format json` printed (2.1.197), shortened; the fallback when no CLI is present.
RECORDED = {"type": "result", "subtype": "success", "is_error": False, "num_turns": 9,
            "result": "Lowered the LR.\nDESCRIPTION: LR 3e-4 -> 1e-4\nHYPOTHESIS: smaller steps",
            "stop_reason": "end_turn", "total_cost_usd": 0.0054,
            "usage": {"input_tokens": 900, "cache_creation_input_tokens": 50, "cache_read_input_tokens": 10,
                      "output_tokens": 180},
            "permission_denials": [{"tool_name": "Edit", "tool_use_id": "toolu_5",
                                    "tool_input": {"file_path": "/r/prepare.py"}}]}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "research"
    (root / ".autoresearch" / "secret").mkdir(parents=True)
    (root / ".autoresearch" / "secret" / "keys.json").write_text('{"pairs": "TOPSECRET"}')
    (root / "data" / "test").mkdir(parents=True)
    (root / "data" / "test" / "labels.txt").write_text("HIDDENLABELS")
    (root / "train.py").write_text(TRAIN)
    (root / "prepare.py").write_text("EVAL = 'fixed'\n")
    (root / "scratchpad.md").write_text("")
    return root


@pytest.fixture
def context(repo: Path) -> AgentContext:
    return AgentContext(root=repo, editable=["train.py", "scratchpad.md"],
                        denied=[repo / ".autoresearch" / "secret", Path("data/test")], options={"retries": 1})


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real user configuration or key reaches the CLI."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "home" / ".claude"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    (tmp_path / "home").mkdir()


def brief() -> Brief:
    return Brief(experiment=4, task="toy", metric_name="loss", direction="minimize", phase_title="Tuning",
                 phase_text="Tune LR.", program_rules="One change.", scratchpad="", editable=["train.py"],
                 champion_metric=1.0, champion_std=0.1, noise_sigma=0.05, history=[])


def stand_in(tmp_path: Path, body: str, context: AgentContext | None = None) -> str:
    """A fake `claude` executable (a shell script); it runs outside the jail (``sandbox`` off in ``context``):
    these tests are about the command line and the result, ``test_claude_jail.py`` about the jail."""
    if context is not None:
        context.options["sandbox"] = False
    script = tmp_path / "fake-claude"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


# -- without the CLI --------------------------------------------------------------------------------------

def test_command_line_restricts_tools_and_paths(context, repo, tmp_path):
    context.options["claude_path"] = stand_in(tmp_path, "exit 0")
    agent = ClaudeCodeAgent(context, model="claude-sonnet-4-6", max_turns=12)
    cmd = agent.command(repo)
    flag = {cmd[i]: cmd[i + 1] for i in range(1, len(cmd) - 1) if cmd[i].startswith("--")}
    assert cmd[1] == "-p" and flag["--output-format"] == "json" and flag["--model"] == "claude-sonnet-4-6"
    assert set(flag["--tools"].split(",")) == {"Read", "Glob", "Grep", "Edit", "Write"}
    assert "Edit(./train.py)" in flag["--allowedTools"] and "Edit(./scratchpad.md)" in flag["--allowedTools"]
    # Reads are confined to the repository: a bare Read or Grep would reach outside it.
    assert {"Read(./**)", "Glob(./**)", "Grep(./**)"} <= set(flag["--allowedTools"].split(","))
    assert not {"Read", "Glob", "Grep"} & set(flag["--allowedTools"].split(","))
    denied = flag["--disallowedTools"].split(",")
    secret = "//" + str((repo / ".autoresearch" / "secret").resolve()).lstrip("/")
    assert {"Bash", "Read(./.git/**)", "Read(./.autoresearch/**)", f"Read({secret}/**)",
            "Read(//" + str((repo / "data" / "test").resolve()).lstrip("/") + "/**)"} <= set(denied)
    assert flag["--permission-mode"] == "dontAsk" and flag["--max-turns"] == "12"
    assert flag["--setting-sources"] == "user"
    env = agent.environment()
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1" and env["CLAUDE_CODE_MAX_RETRIES"] == "0"


def test_missing_cli_is_a_user_error(context, repo):
    context.options["claude_path"] = "no-such-claude-binary"
    with pytest.raises(UserError, match="npm install -g @anthropic-ai/claude-code"):
        ClaudeCodeAgent(context, model="sonnet").propose(brief(), repo)


def test_recorded_result_through_a_stand_in(context, repo, tmp_path):
    out = tmp_path / "result.json"
    out.write_text("some banner\n" + json.dumps(RECORDED) + "\n")
    got_stdin = tmp_path / "stdin.txt"
    context.options["claude_path"] = stand_in(tmp_path, f"cat > {got_stdin}\ncat {out}", context)
    proposal = ClaudeCodeAgent(context, model="claude-sonnet-4-6").propose(brief(), repo)
    assert got_stdin.read_text().startswith("# Experiment 4")          # the brief goes in on stdin
    assert (proposal.description, proposal.hypothesis) == ("LR 3e-4 -> 1e-4", "smaller steps")
    assert (proposal.usage.input_tokens, proposal.usage.output_tokens) == (960, 180)
    assert proposal.usage.cost_usd == pytest.approx(0.0054) and proposal.usage.seconds > 0
    assert proposal.meta["permission_denials"] == ["Edit"] and proposal.meta["turns"] == 9


def test_result_variants(context):
    agent = ClaudeCodeAgent(context, model="claude-sonnet-4-6")
    ran_out = agent.proposal(dict(RECORDED, subtype="error_max_turns", result="", total_cost_usd=None), 1.0)
    assert ran_out.description == "(agent did not finish)"
    assert ran_out.usage.cost_usd == pytest.approx((960 * 3 + 180 * 15) / 1e6)   # the price table instead
    with pytest.raises(llm.AgentError, match="HTTP 401") as err:
        agent.proposal(dict(RECORDED, is_error=True, api_error_status=401, result=f"API Error: 401 {KEY}"), 1.0)
    assert KEY not in str(err.value)
    with pytest.raises(llm.AgentError, match="error_during_execution"):
        agent.proposal(dict(RECORDED, subtype="error_during_execution"), 1.0)
    assert parse_result("not json\n{broken") is None


@pytest.mark.slow
def test_stand_in_that_hangs_is_killed(context, repo, tmp_path):
    marker = tmp_path / "still-running"
    context.options.update(claude_path=stand_in(tmp_path, f"(sleep 3; touch {marker}) & sleep 30", context),
                           timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(llm.AgentError, match="did not finish within"):
        ClaudeCodeAgent(context, model="m").propose(brief(), repo)
    assert time.monotonic() - started < 10
    time.sleep(3.5)
    assert not marker.exists()              # the whole process group died, children included


# -- the real CLI against the fake Messages API -----------------------------------------------------------

needs_cli = pytest.mark.skipif(shutil.which("claude") is None,
                               reason="Claude Code CLI not installed (npm install -g @anthropic-ai/claude-code)")


@needs_cli
@pytest.mark.slow
def test_real_cli_edits_train_and_is_refused_shell_and_outside_edits(context, repo, tmp_path):
    pwned = tmp_path / "pwned"
    steps = [
        tool_use("Read", {"file_path": str(repo / "train.py")}),
        tool_use("Read", {"file_path": str(repo / "prepare.py")}),   # read first, so a refusal is the rule's
        tool_use("Edit", {"file_path": str(repo / "train.py"), "old_string": "LR = 3e-4", "new_string": "LR = 1e-4"}),
        tool_use("Bash", {"command": f"touch {pwned}", "description": "try a shell"}),
        tool_use("Edit", {"file_path": str(repo / "prepare.py"), "old_string": "'fixed'", "new_string": "'mine'"}),
        tool_use("Write", {"file_path": str(repo / "new_file.py"), "content": "x = 1\n"}),
        tool_use("Read", {"file_path": str(repo / ".autoresearch" / "secret" / "keys.json")}),
        tool_use("Read", {"file_path": str(repo / "data" / "test" / "labels.txt")}),
    ]
    results: list[dict] = []

    def responder(request):
        if not request.body.get("tools"):               # a side request (titles, summaries): plain text
            return anthropic_message(text_block("ok"), usage=(5, 1))
        results.extend(request.tool_results())
        step = sum(1 for m in request.messages() if m.get("role") == "assistant")
        if step < len(steps):
            return anthropic_message(steps[step], usage=(1000, 30))
        return anthropic_message(text_block("Done.\nDESCRIPTION: LR 3e-4 -> 1e-4\nHYPOTHESIS: less overshoot"),
                                 usage=(1000, 40))

    with AnthropicFake(responder) as server:
        agent = ClaudeCodeAgent(context, model="claude-sonnet-4-6", base_url=server.base_url)
        proposal = agent.propose(brief(), repo)
    main = [r for r in server.requests if r.body.get("tools")]
    assert server.errors == [], server.errors
    assert all(p.split("?")[0] in ("HEAD /", "POST /v1/messages") for p in server.paths), server.paths
    assert "# Experiment 4" in main[0].text() and KEY not in main[0].text()
    assert {t["name"] for t in main[0].body["tools"]} == {"Read", "Glob", "Grep", "Edit", "Write"}
    by_id = {r["id"]: r for r in results}
    outcome = [by_id[s["id"]] for s in steps]
    assert [o["is_error"] for o in outcome] == [False, False, False, True, True, True, True, True], outcome
    assert "LR = 3e-4" in outcome[0]["content"]
    assert "Bash" in outcome[3]["content"] and not pwned.exists()
    assert (repo / "prepare.py").read_text() == "EVAL = 'fixed'\n" and not (repo / "new_file.py").exists()
    assert all("TOPSECRET" not in r.text() and "HIDDENLABELS" not in r.text() for r in server.requests)
    assert (repo / "train.py").read_text() == TRAIN.replace("3e-4", "1e-4")
    assert (proposal.description, proposal.hypothesis) == ("LR 3e-4 -> 1e-4", "less overshoot")
    assert proposal.usage.output_tokens >= 30 * len(steps) + 40
    assert proposal.usage.input_tokens >= 1000 * (len(steps) + 1)
    assert proposal.usage.cost_usd and proposal.usage.cost_usd > 0
    assert proposal.meta["turns"] == len(steps) + 1


@needs_cli
@pytest.mark.slow
def test_real_cli_cannot_read_the_raw_dataset_outside_the_repository(context, repo, tmp_path):
    """The --ukiyoe folder (outside the repository, denied by absolute path) pairs every image with its
    caption: every way the CLI's tools could read it is refused, and its content never reaches the model."""
    raw = tmp_path / "datasets" / "ukiyoe"
    (raw / "images").mkdir(parents=True)
    (raw / "ukiyoe_vg_train_pgt_odvg.jsonl").write_text('{"filename": "a.jpg", "caption": "RAW-PAIRING-1"}\n')
    (raw / "images" / "a.txt").write_text("caption RAW-PAIRING-2\n")
    (tmp_path / "elsewhere.txt").write_text("caption OUTSIDE-3\n")       # not denied, but not the repo's
    context.denied.append(raw)
    context.options["retries"] = 3     # a connection the CLI reuses after the fake closed it is retried
    secrets_ = ("RAW-PAIRING-1", "RAW-PAIRING-2", "OUTSIDE-3", "TOPSECRET", "HIDDENLABELS")
    steps = [
        tool_use("Read", {"file_path": str(raw / "ukiyoe_vg_train_pgt_odvg.jsonl")}),
        tool_use("Glob", {"pattern": "**/*", "path": str(raw)}),
        tool_use("Grep", {"pattern": "caption", "path": str(raw), "output_mode": "content"}),
        tool_use("Grep", {"pattern": "caption", "path": str(tmp_path), "output_mode": "content"}),   # a parent
        tool_use("Grep", {"pattern": "caption", "path": str(repo / ".." / "datasets"), "output_mode": "content"}),
        tool_use("Read", {"file_path": str(tmp_path / "elsewhere.txt")}),
        tool_use("Grep", {"pattern": "pairs|labels|caption", "output_mode": "content"}),   # the repo itself
        tool_use("Read", {"file_path": str(repo / "train.py")}),                          # still allowed
    ]
    results: list[dict] = []

    def responder(request):
        if not request.body.get("tools"):
            return anthropic_message(text_block("ok"), usage=(5, 1))
        results.extend(request.tool_results())
        step = sum(1 for m in request.messages() if m.get("role") == "assistant")
        if step < len(steps):
            return anthropic_message(steps[step], usage=(100, 10))
        return anthropic_message(text_block("DESCRIPTION: nothing\nHYPOTHESIS: none"), usage=(100, 10))

    with AnthropicFake(responder) as server:
        ClaudeCodeAgent(context, model="claude-sonnet-4-6", base_url=server.base_url).propose(brief(), repo)
    by_id = {r["id"]: r for r in results}
    outcome = [by_id[s["id"]] for s in steps]
    assert [o["is_error"] for o in outcome[:6]] == [True] * 6, outcome
    assert outcome[6]["content"].startswith("No matches") and "LR = 3e-4" in outcome[7]["content"], outcome
    leaked = [k for k in secrets_ for r in server.requests if k in r.text()]
    assert leaked == [], leaked


@needs_cli
@pytest.mark.slow
def test_real_cli_api_error_becomes_agent_error(context, repo):
    error = Reply(401, {"type": "error", "error": {"type": "authentication_error", "message": f"bad {KEY}"}})
    with AnthropicFake(lambda request: error) as server:
        with pytest.raises(llm.AgentError, match="401") as err:
            ClaudeCodeAgent(context, model="claude-sonnet-4-6", base_url=server.base_url).propose(brief(), repo)
    assert KEY not in str(err.value)
    assert len(server.requests) == 1               # retries=1 in the options: the CLI does not retry
