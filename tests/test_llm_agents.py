"""LLM agents: the tool set, retries and prices, and both agents driven through the official client
libraries against the loopback fake servers in tests/fakes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from autoresearch.agents import llm
from autoresearch.agents.anthropic_agent import AnthropicAgent
from autoresearch.agents.base import AgentContext, Brief
from autoresearch.agents.openai_agent import OpenAIAgent
from autoresearch.agents.tools import Toolbox, anthropic_tools, openai_tools, parse_final_text, specs_for
from autoresearch.errors import UserError
from fakes.llm_servers import (AnthropicFake, OpenAIFake, Reply, anthropic_message, openai_message,
                               text_block, tool_call, tool_use)

OPENAI_KEY = "sk-test-openai-SECRET-0123456789"
ANTHROPIC_KEY = "sk-ant-test-SECRET-9876543210"
TRAIN = "LR = 3e-4  # learning rate\nBATCH = 48\n\n\ndef main():\n    print(LR, BATCH)\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "research"
    (root / ".autoresearch" / "secret").mkdir(parents=True)
    (root / ".autoresearch" / "secret" / "keys.json").write_text('{"pairs": {"a": "b"}}')
    (root / ".autoresearch" / "ledger.sqlite").write_text("state")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]")
    (root / "data" / "test").mkdir(parents=True)
    (root / "data" / "test" / "labels.txt").write_text("hidden labels")
    (root / "data" / "train.txt").write_text("visible")
    (root / "train.py").write_text(TRAIN)
    (root / "scratchpad.md").write_text("notes\n")
    (root / "prepare.py").write_text("EVAL = 'fixed'\n")
    (root / "leak.json").symlink_to(root / ".autoresearch" / "secret" / "keys.json")
    (root / "train_link.py").symlink_to(root / "prepare.py")
    (tmp_path / "outside.txt").write_text("outside")
    (root / "out_link.txt").symlink_to(tmp_path / "outside.txt")
    return root


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def context(repo: Path, sleeps: list[float]) -> AgentContext:
    return AgentContext(root=repo, editable=["train.py", "scratchpad.md"],
                        denied=[repo / ".autoresearch" / "secret", Path("data/test")],
                        list_experiments=lambda: "| 1 | kept | 10.0 |", show_experiment=lambda n: f"diff of {n}",
                        options={"sleep": sleeps.append, "timeout_s": 5})


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)


def brief() -> Brief:
    return Brief(experiment=3, task="toy", metric_name="loss", direction="minimize", phase_title="Tuning",
                 phase_text="Tune LR.", program_rules="One change.", scratchpad="", editable=["train.py"],
                 champion_metric=1.0, champion_std=0.1, noise_sigma=0.05, history=[])


# -- tools ------------------------------------------------------------------------------------------------

def test_tool_schemas_in_both_formats():
    names = [t["function"]["name"] for t in openai_tools()]
    assert names == [t["name"] for t in anthropic_tools()]
    assert {"read_file", "list_files", "list_experiments", "show_experiment", "read_run", "check_run",
            "replace_in_file", "set_constant", "write_file", "finish"} == set(names)
    for t in anthropic_tools():
        assert t["input_schema"]["type"] == "object"


def test_read_and_list_stay_inside_allowed_files(context, repo):
    box = Toolbox(context)
    assert box.call("read_file", {"path": "train.py"}).text == TRAIN
    assert box.call("read_file", {"path": "./data/../prepare.py"}).text == "EVAL = 'fixed'\n"
    for bad in [".autoresearch/secret/keys.json", ".autoresearch/ledger.sqlite", ".git/config", "leak.json",
                "data/test/labels.txt", "../outside.txt", str(repo.parent / "outside.txt"), "out_link.txt",
                "/etc/passwd"]:
        result = box.call("read_file", {"path": bad})
        assert result.is_error, bad
        assert "hidden" not in result.text and "pairs" not in result.text
    listing = box.call("list_files", {"dir": "."}).text
    assert "train.py" in listing and "(editable)" in listing and "data/train.txt" in listing
    for hidden in [".git", ".autoresearch", "labels.txt", "leak.json", "out_link.txt"]:
        assert hidden not in listing
    assert box.call("list_files", {"dir": "data/test"}).is_error
    assert box.call("list_experiments", None).text == "| 1 | kept | 10.0 |"
    assert box.call("show_experiment", '{"number": "2"}').text == "diff of 2"   # quoted ints are accepted


def test_read_is_bounded(context, repo):
    (repo / "big.txt").write_text("a" * 100 + "b" * 100)
    box = Toolbox(context, max_read_chars=120)
    first = box.call("read_file", {"path": "big.txt"}).text
    assert first.startswith("a" * 100) and "offset=120" in first
    assert box.call("read_file", {"path": "big.txt", "offset": 120}).text == "b" * 80
    (repo / "blob.bin").write_bytes(b"\x00\x01" * 10)
    assert "binary" in box.call("read_file", {"path": "blob.bin"}).text


def test_edits_only_editable_files(context, repo):
    box = Toolbox(context)
    result = box.call("replace_in_file", {"path": "train.py", "old": "LR = 1e-3", "new": "LR = 1e-4"})
    assert result.is_error and "old text found 0 times" in result.text
    (repo / "scratchpad.md").write_text("x\nx\n")
    result = box.call("replace_in_file", {"path": "scratchpad.md", "old": "x", "new": "y"})
    assert result.is_error and "found 2 times" in result.text
    ok = box.call("replace_in_file", {"path": "train.py", "old": "LR = 3e-4", "new": "LR = 1e-4"})
    assert not ok.is_error and "line 1" in ok.text
    assert (repo / "train.py").read_text().startswith("LR = 1e-4  #")
    for path in ["prepare.py", "train_link.py", ".autoresearch/x.py", "../train.py"]:
        res = box.call("write_file", {"path": path, "content": "pwned"})
        assert res.is_error, path
    assert (repo / "prepare.py").read_text() == "EVAL = 'fixed'\n"
    assert not box.call("write_file", {"path": "scratchpad.md", "content": "new notes"}).is_error
    assert box.edited == ["train.py", "scratchpad.md"]


def test_set_constant_changes_one_value_and_nothing_else(context, repo):
    box = Toolbox(context)
    result = box.call("set_constant", {"name": "LR", "value": "1e-4"})
    assert not result.is_error and result.text == "LR: 0.0003 -> 0.0001 in train.py"
    assert (repo / "train.py").read_text() == TRAIN.replace("3e-4", "0.0001")
    assert box.call("set_constant", {"name": "LR", "value": "3e-4"}).text == "LR: 0.0001 -> 0.0003 in train.py"
    assert box.call("set_constant", '{"name": "BATCH", "value": 64}').text == "BATCH: 48 -> 64 in train.py"
    assert box.call("set_constant", {"name": "BATCH", "value": "64.0"}).text == "BATCH: 64 -> 64 in train.py"
    raw_newline = '{"name": "BATCH", "value": "32\n"}'         # a control character inside a JSON string
    assert box.call("set_constant", raw_newline).text == "BATCH: 64 -> 32 in train.py"
    assert box.edited == ["train.py"]
    before = (repo / "train.py").read_text()
    for args, expected in [({"name": "EVAL", "value": "'x'"}, "known: BATCH, LR"),   # prepare.py: not editable
                           ({"name": "LR", "value": "__import__('os')"}, "not a Python literal"),
                           ({"name": "LR", "value": "1e-4; import os"}, "not a Python literal"),
                           ({"name": "LR", "value": "float('nan')"}, "not a Python literal"),
                           ({"name": "LR", "value": ""}, "not a Python literal"),
                           ({"name": "LR", "value": "(0.0001, 6.25, False)"}, "LR is float (0.0003); '(0.0001, "
                                                                              "6.25, False)' is tuple"),
                           ({"name": "BATCH", "value": "'64'"}, "set_constant keeps a constant's kind"),
                           ({"name": "BATCH", "value": "1" * 300}, "at most 200")]:
        result = box.call("set_constant", args)
        assert result.is_error and expected in result.text, (args, result.text)
    assert (repo / "train.py").read_text() == before


def test_tool_specs_name_the_editable_files_and_constants(context, repo):
    specs = {s["name"]: s["parameters"]["properties"] for s in Toolbox(context).specs}
    assert specs["replace_in_file"]["path"]["enum"] == specs["write_file"]["path"]["enum"] == \
        ["scratchpad.md", "train.py"]
    assert specs["set_constant"]["name"]["enum"] == ["BATCH", "LR"]
    assert "enum" not in specs["read_file"]["path"]                  # reads may go anywhere allowed
    assert "set_constant" not in {s["name"] for s in specs_for(["notes.md"], [])}
    box = Toolbox(context)                   # an equivalent spelling of an editable path is still accepted
    assert not box.call("replace_in_file", {"path": "./train.py", "old": "BATCH = 48", "new": "BATCH = 8"}).is_error
    (repo / "train.py").write_text("LR = (\n")          # a script an earlier edit broke offers no constants
    assert "set_constant" not in {s["name"] for s in Toolbox(context).specs}


def test_only_the_offered_tools_are_sent_and_served(context, repo):
    context.options["tools"] = ["set_constant", "finish"]
    box = Toolbox(context)
    assert [s["name"] for s in box.specs] == ["set_constant", "finish"]
    refused = box.call("write_file", {"path": "train.py", "content": "x = 1\n"})
    assert refused.is_error and "not offered in this session" in refused.text and "set_constant, finish" in refused.text
    assert (repo / "train.py").read_text() == TRAIN
    with OpenAIFake([openai_message(tool_calls=[tool_call("set_constant", {"name": "LR", "value": "1e-3"})]),
                     openai_message(tool_calls=[tool_call("finish", {"description": "d", "hypothesis": "h"})])]) as server:
        proposal = OpenAIAgent(context, model="m", base_url=server.base_url).propose(brief(), repo)
    assert [t["function"]["name"] for t in server.requests[0].body["tools"]] == ["set_constant", "finish"]
    assert proposal.meta["edited"] == ["train.py"] and "LR = 0.001  #" in (repo / "train.py").read_text()


def test_offered_tools_are_checked_when_the_agent_is_made(tmp_path):
    from autoresearch import config as config_mod
    from autoresearch.agents import make_agent

    base = {"metric": {"pattern": "(x)"}}
    for tools, expected in ((["read_file", "finish"], "offers no tool that edits a file"),
                            (["set_constant", "rm_rf"], "names no tool 'rm_rf'")):
        cfg = config_mod.parse(tmp_path, {**base, "agent": {"name": "openai", "tools": tools}})
        with pytest.raises(UserError, match=rf"\[agent\] tools {expected}"):
            make_agent("openai", cfg, AgentContext(root=tmp_path, editable=["train.py"], denied=[]), tag="t")
    with pytest.raises(UserError, match=r"\[agent\] tools must be a list of strings"):
        config_mod.parse(tmp_path, {**base, "agent": {"tools": "set_constant"}})


def test_write_file_refuses_empty_content(context, repo):
    result = Toolbox(context).call("write_file", {"path": "train.py", "content": " \n"})
    assert result.is_error and "content is empty" in result.text and (repo / "train.py").read_text() == TRAIN


def test_dispatcher_answers_malformed_calls(context):
    box = Toolbox(context)
    cases = [("delete_file", '{"path": "a"}', "unknown tool 'delete_file'"),
             ("read_file", '{"path": "train.py"', "not valid JSON"),
             ("read_file", '["train.py"]', "must be a JSON object"),
             ("replace_in_file", {"path": "train.py", "old": "LR"}, "missing the field(s) new"),
             ("read_file", {"path": 3}, "field path must be a string"),
             ("read_file", {"path": "train.py", "mode": "r"}, "has no field(s) mode"),
             ("finish", {"description": "  ", "hypothesis": "h"}, "description is empty")]
    for name, args, expected in cases:
        result = box.call(name, args)
        assert result.is_error and expected in result.text, (name, result.text)
    assert box.errors == len(cases) and box.finished is None
    assert not box.call("finish", {"description": "LR\n3e-4 -> 1e-4", "hypothesis": "stabler"}).is_error
    assert box.finished == ("LR 3e-4 -> 1e-4", "stabler")


def test_parse_final_text():
    text = "I changed it.\n**DESCRIPTION:** LR 3e-4 -> 1e-4\nHYPOTHESIS: lower LR\nis more stable\n"
    assert parse_final_text(text) == ("LR 3e-4 -> 1e-4", "lower LR is more stable")
    assert parse_final_text("no answer here") is None


# -- prices, keys, retries --------------------------------------------------------------------------------

def test_prices(tmp_path):
    prices = llm.load_prices({"my-model": [1.0, 2.0]})
    assert llm.cost_usd("my-model", 1_000_000, 500_000, prices) == pytest.approx(2.0)
    assert llm.cost_usd("claude-sonnet-4-5-20250929", 1_000_000, 0, prices) == pytest.approx(3.0)
    assert llm.cost_usd("unknown-model", 10, 10, prices) is None
    f = tmp_path / "prices.toml"
    f.write_text('"gpt-4o" = [1.0,\n')
    with pytest.raises(UserError, match="not valid TOML"):
        llm.load_prices(f)
    f.write_text('"gpt-4o" = [1.0, 1.0]\n[models]\nlocal = {input = 0, output = 0}\n')
    table = llm.load_prices(f)
    assert table["gpt-4o"] == (1.0, 1.0) and table["local"] == (0.0, 0.0)
    with pytest.raises(UserError, match="'bad'.*USD per million"):
        llm.load_prices({"bad": [1.0]})


def test_redact_and_missing_key(monkeypatch):
    text = f"key={OPENAI_KEY} auth=Bearer abcdefghijk12345 {ANTHROPIC_KEY} x-api-key: zzzzzzzz"
    clean = llm.redact(text)
    assert OPENAI_KEY not in clean and ANTHROPIC_KEY not in clean and "abcdefghijk12345" not in clean
    assert "zzzzzzzz" not in clean
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(UserError, match="ANTHROPIC_API_KEY is not set"):
        llm.api_key("ANTHROPIC_API_KEY")


class StatusError(Exception):
    def __init__(self, status):
        super().__init__(f"status {status}")
        self.status_code = status


def test_retry_policy():
    sleeps: list[float] = []
    policy = llm.RetryPolicy(tries=4, base_s=1.0, cap_s=3.0, max_total_sleep_s=100, sleep=sleeps.append)
    meter = llm.Meter("m", {})
    failures = iter([StatusError(429), ConnectionError("reset"), StatusError(503)])

    def flaky():
        exc = next(failures, None)
        if exc:
            raise exc
        return "ok"

    assert llm.call_with_retries(flaky, policy=policy, meter=meter, what="t",
                                 connection_errors=(ConnectionError,)) == "ok"
    assert meter.retries == 3 and len(sleeps) == 3 and all(0 <= s <= 3.0 for s in sleeps)
    with pytest.raises(llm.AgentError, match="HTTP 400"):
        llm.call_with_retries(lambda: (_ for _ in ()).throw(StatusError(400)), policy=policy, meter=meter,
                              what="t", connection_errors=())
    assert len(sleeps) == 3                                  # a client error is not retried
    with pytest.raises(llm.AgentError, match="gave up after 4 tries"):
        llm.call_with_retries(lambda: (_ for _ in ()).throw(StatusError(500)), policy=policy, meter=meter,
                              what="t", connection_errors=())
    tight = llm.RetryPolicy(tries=10, base_s=5, cap_s=5, max_total_sleep_s=6, sleep=sleeps.append)
    with pytest.raises(llm.AgentError, match="s of backoff"):
        llm.call_with_retries(lambda: (_ for _ in ()).throw(StatusError(429)), policy=tight, meter=meter,
                              what="t", connection_errors=())


# -- the OpenAI agent against the fake server -------------------------------------------------------------

def test_openai_agent_full_conversation(context, repo, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    script = [
        openai_message(tool_calls=[tool_call("read_file", {"path": "train.py"})], usage=(1000, 50)),
        openai_message(tool_calls=[tool_call("replace_in_file", '{"path": "train.py", "old": ')], usage=(1100, 40)),
        openai_message(tool_calls=[tool_call("read_file", {"path": ".autoresearch/secret/keys.json"}),
                                   tool_call("replace_in_file", {"path": "train.py", "old": "LR=3e-4", "new": "x"})],
                       usage=(1200, 60)),
        Reply(429, {"error": {"message": "rate limited", "type": "rate_limit"}}, headers={"retry-after": "0"}),
        openai_message(tool_calls=[tool_call("replace_in_file", {"path": "train.py", "old": "LR = 3e-4",
                                                                 "new": "LR = 1e-4"}),
                                   tool_call("finish", {"description": "LR 3e-4 -> 1e-4",
                                                        "hypothesis": "the baseline LR overshoots"})],
                       usage=(1300, 70)),
    ]
    with OpenAIFake(script) as server:
        agent = OpenAIAgent(context, model="gpt-4o", base_url=server.base_url)
        proposal = agent.propose(brief(), repo)
    assert server.errors == []
    assert agent.name == "openai"
    assert proposal.description == "LR 3e-4 -> 1e-4" and proposal.hypothesis == "the baseline LR overshoots"
    assert (repo / "train.py").read_text().startswith("LR = 1e-4")
    # what the model was sent back, turn by turn
    first = server.requests[0]
    assert first.body["model"] == "gpt-4o" and "# Experiment 3" in first.messages()[1]["content"]
    assert {t["function"]["name"] for t in first.body["tools"]} >= {"read_file", "finish"}
    assert server.requests[1].tool_results()[0]["content"] == TRAIN
    assert "not valid JSON" in server.requests[2].tool_results()[0]["content"]
    third = server.requests[3].tool_results()
    assert "not accessible" in third[0]["content"] and "pairs" not in server.requests[3].text()
    assert "old text found 0 times" in third[1]["content"]
    assert server.requests[3].body == server.requests[4].body            # the 429 was retried as is
    assert server.requests[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"   # key from the environment
    # usage: four successful calls and the failed one (the 429 carried no usage: its prompt is estimated)
    assert proposal.meta["retries"] == 1 and len(sleeps) == 1 and proposal.meta["api_calls"] == 5
    assert proposal.meta["failed_calls"] == 1
    estimated = proposal.meta["tokens_estimated"]
    assert estimated == pytest.approx(len(json.dumps(server.requests[3].body)) / 4, rel=0.2)
    assert proposal.usage.input_tokens == 4600 + estimated and proposal.usage.output_tokens == 220
    assert proposal.usage.cost_usd == pytest.approx(((4600 + estimated) * 2.5 + 220 * 10.0) / 1e6)
    assert proposal.usage.seconds > 0
    assert proposal.meta["tool_errors"] == 3 and proposal.meta["edited"] == ["train.py"]
    assert OPENAI_KEY not in caplog.text and "openai tool" in caplog.text


def test_openai_agent_that_never_finishes(context, repo):
    script = [openai_message(tool_calls=[tool_call("write_file", {"path": "train.py", "content": "LR = 1\n"})])]
    script += [openai_message(text="Thinking about it...")] * 2
    with OpenAIFake(script) as server:
        agent = OpenAIAgent(context, model="local-gguf", base_url=server.base_url, max_turns=3)
        proposal = agent.propose(brief(), repo)
    assert proposal.description == "(agent did not finish)" and proposal.meta["turns"] == 3
    assert (repo / "train.py").read_text() == "LR = 1\n"         # its edits stay; the engine validates them
    assert proposal.usage.cost_usd is None                      # unknown model: no price
    assert "call finish" in server.requests[2].messages()[-1]["content"]   # a nudge after a text answer


def test_openai_agent_accepts_a_plain_text_answer_without_a_key(context, repo, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")                        # local servers need none
    with OpenAIFake([openai_message(text="Done.\nDESCRIPTION: nothing\nHYPOTHESIS: none")]) as server:
        proposal = OpenAIAgent(context, model="m", base_url=server.base_url).propose(brief(), repo)
    assert proposal.description == "nothing" and proposal.meta["finished"]


def test_openai_agent_gives_up_on_server_errors(context, repo, sleeps):
    with OpenAIFake([Reply(500, {"error": {"message": "boom"}})] * 4) as server:
        agent = OpenAIAgent(context, model="gpt-4o", base_url=server.base_url)
        with pytest.raises(llm.AgentError, match="gave up after 4 tries: HTTP 500") as err:
            agent.propose(brief(), repo)
    assert len(server.requests) == 4 and len(sleeps) == 3
    assert OPENAI_KEY not in str(err.value)


def test_openai_agent_does_not_retry_a_bad_key(context, repo, sleeps):
    with OpenAIFake([Reply(401, {"error": {"message": f"bad key {OPENAI_KEY}"}})]) as server:
        with pytest.raises(llm.AgentError, match="HTTP 401.*check the API key") as err:
            OpenAIAgent(context, model="gpt-4o", base_url=server.base_url).propose(brief(), repo)
    assert sleeps == [] and OPENAI_KEY not in str(err.value)


def test_openai_agent_retries_a_timeout(context, repo, sleeps):
    context.options["timeout_s"] = 0.3
    finish = tool_call("finish", {"description": "d", "hypothesis": "h"})
    with OpenAIFake([Reply(200, openai_message(tool_calls=[finish]), delay_s=2.0),
                     openai_message(tool_calls=[finish])]) as server:
        proposal = OpenAIAgent(context, model="gpt-4o", base_url=server.base_url).propose(brief(), repo)
    assert proposal.description == "d" and proposal.meta["retries"] == 1 and len(server.requests) == 2


def test_fake_server_responder_callable(context, repo):
    seen = []

    def responder(request):
        seen.append(request.brief_experiment())
        return openai_message(tool_calls=[tool_call("finish", {"description": "from responder", "hypothesis": ""})])

    with OpenAIFake(responder) as server:
        proposal = OpenAIAgent(context, model="m", base_url=server.base_url).propose(brief(), repo)
    assert proposal.description == "from responder" and seen == [3]


# -- the Anthropic agent against the fake server ----------------------------------------------------------

def test_anthropic_agent_full_conversation(context, repo, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    script = [
        anthropic_message(text_block("Let me look."), tool_use("read_file", {"path": "train.py"}), usage=(900, 30)),
        anthropic_message(tool_use("replace_in_file", {"path": "train.py", "old": "BATCH = 48"}),
                          tool_use("write_file", {"path": "prepare.py", "content": "EVAL = 'mine'"}), usage=(1000, 40)),
        Reply(529, {"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}}),
        anthropic_message(tool_use("replace_in_file", {"path": "train.py", "old": "BATCH = 48", "new": "BATCH = 64"}),
                          tool_use("finish", {"description": "batch 48 -> 64", "hypothesis": "less noise"}),
                          usage=(1100, 50)),
    ]
    with AnthropicFake(script) as server:
        agent = AnthropicAgent(context, model="claude-sonnet-4-6", base_url=server.base_url)
        proposal = agent.propose(brief(), repo)
    assert server.errors == [] and agent.name == "anthropic"
    assert proposal.description == "batch 48 -> 64" and "BATCH = 64" in (repo / "train.py").read_text()
    assert (repo / "prepare.py").read_text() == "EVAL = 'fixed'\n"
    sent = server.requests[0].headers
    assert ANTHROPIC_KEY in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))
    assert server.requests[1].tool_results()[0]["content"] == TRAIN
    bad = server.requests[2].tool_results()
    assert bad[0]["is_error"] and "missing the field(s) new" in bad[0]["content"]
    assert bad[1]["is_error"] and "not editable" in bad[1]["content"]
    assert proposal.meta["retries"] == 1 and len(sleeps) == 1
    estimated = proposal.meta["tokens_estimated"]          # the 529's prompt, estimated: it had no usage
    assert proposal.meta["failed_calls"] == 1 and estimated > 1000
    assert (proposal.usage.input_tokens, proposal.usage.output_tokens) == (3000 + estimated, 120)
    assert proposal.usage.cost_usd == pytest.approx(((3000 + estimated) * 3 + 120 * 15) / 1e6)
    assert ANTHROPIC_KEY not in caplog.text


def test_anthropic_agent_needs_a_key(context, repo, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(UserError, match="ANTHROPIC_API_KEY"):
        AnthropicAgent(context, model="claude-sonnet-4-6").propose(brief(), repo)


def test_anthropic_fake_streams_when_asked():
    import anthropic

    message = anthropic_message(text_block("hi"), tool_use("read_file", {"path": "train.py"}))
    with AnthropicFake([message]) as server:
        client = anthropic.Anthropic(api_key="k", base_url=server.base_url, max_retries=0)
        with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as s:
            final = s.get_final_message()
    assert final.content[0].text == "hi" and final.content[1].input == {"path": "train.py"}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 20
    assert json.loads(json.dumps(server.requests[0].body))["stream"] is True
    assert os.environ["ANTHROPIC_API_KEY"] == ANTHROPIC_KEY
