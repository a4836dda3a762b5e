"""What the OpenAI-compatible agent sends and how it copes with a small server (the fixes a real llama.cpp
server showed): tool_choice, the output cap and its field, a conversation kept within a context budget,
and the tokens of failed calls counted. Against the fake server."""

from __future__ import annotations

import json

import pytest

from autoresearch.agents import context_budget, llm
from autoresearch.agents.openai_agent import OpenAIAgent
from fakes.llm_servers import OpenAIFake, Reply, openai_message, tool_call
from test_llm_agents import brief, context, keys, repo, sleeps  # noqa: F401  (fixtures)

FINISH = openai_message(tool_calls=[tool_call("finish", {"description": "d", "hypothesis": "h"})])


@pytest.mark.parametrize("options, base_url, want, absent", [
    ({}, True, {"tool_choice": "auto", "max_tokens": 8192}, ["max_completion_tokens"]),
    ({"max_tokens": 512, "max_tokens_param": "max_completion_tokens", "tool_choice": "required"}, True,
     {"tool_choice": "required", "max_completion_tokens": 512}, ["max_tokens"]),
    ({"max_tokens_param": "omit", "tool_choice": "omit"}, True, {}, ["max_tokens", "max_completion_tokens",
                                                                     "tool_choice"]),
])
def test_tool_choice_and_the_output_cap_are_sent(context, repo, options, base_url, want, absent):
    context.options.update(options)
    with OpenAIFake([FINISH]) as server:
        OpenAIAgent(context, model="m", base_url=server.base_url).propose(brief(), repo)
    body = server.requests[0].body
    assert {k: body.get(k) for k in want} == want and not any(k in body for k in absent)
    assert body["tools"]


def test_the_hosted_api_gets_max_completion_tokens(context):
    body = OpenAIAgent(context, model="gpt-5").body([])               # no base_url: the hosted API
    assert body["max_completion_tokens"] == 8192 and "max_tokens" not in body and body["tool_choice"] == "auto"


def test_the_conversation_is_kept_within_the_context_budget(context, repo):
    """Eight turns of reading a 6,000-character file: about 13,000 tokens unbounded; with a budget of 5,000
    (the tool schemas and the 256-token answer included) the old results are trimmed, every request stays
    within it, and the proposal finishes."""
    (repo / "notes.txt").write_text("lorem ipsum dolor " * 340)
    context.options.update({"context_tokens": 5000, "max_tokens": 256})
    reads = [openai_message(tool_calls=[tool_call("read_file", {"path": "notes.txt"})]) for _ in range(8)]
    with OpenAIFake([*reads, FINISH]) as server:
        agent = OpenAIAgent(context, model="m", base_url=server.base_url)
        proposal = agent.propose(brief(), repo)
    assert proposal.meta["finished"] and proposal.meta["context_trimmed"] >= 6
    assert proposal.meta["context_dropped_turns"] == 0
    sizes = [agent.request_tokens(r.body["messages"]) for r in server.requests]
    assert 3500 < max(sizes) <= 5000 - 256                        # filled (the tool schemas take ~1,100), never past it
    last = server.requests[-1].messages()
    assert "lorem ipsum" in last[-1]["content"]                        # the latest result is whole
    assert any("trimmed to fit the context budget" in str(m.get("content")) for m in last)
    assert [m["role"] for m in last[:2]] == ["system", "user"] and last[1]["content"].startswith("# Experiment")
    _assert_paired(last)


def _assert_paired(messages):
    """Every tool message answers a call of the assistant message before it."""
    pending: set[str] = set()
    for m in messages:
        if m["role"] == "assistant":
            assert not pending
            pending = {c["id"] for c in m.get("tool_calls") or []}
        elif m["role"] == "tool":
            assert m["tool_call_id"] in pending
            pending.discard(m["tool_call_id"])


def test_fit_drops_whole_old_turns_when_trimming_is_not_enough():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "# brief"}]
    for i in range(6):
        msgs.append({"role": "assistant", "content": "x" * 900,
                     "tool_calls": [{"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
        msgs.append({"role": "tool", "tool_call_id": f"c{i}", "content": "ok"})
    fitted = context_budget.fit(msgs, 2, 700)
    assert fitted.dropped >= 3 and context_budget.estimate_tokens(msgs) <= 700
    assert msgs[-1]["tool_call_id"] == "c5" and context_budget.DROPPED in msgs[1]["content"]
    _assert_paired(msgs)
    anthropic = [{"role": "user", "content": "# brief"}]
    for i in range(4):
        anthropic.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "f",
                                                             "input": {"content": "y" * 2000}}]})
        anthropic.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}",
                                                        "content": "z" * 2000}]})
    fitted = context_budget.fit(anthropic, 1, 1500)
    assert fitted.trimmed > 0 and context_budget.estimate_tokens(anthropic) <= 1500
    assert anthropic[-1]["content"][0]["content"] == "z" * 2000 and anthropic[1]["content"][0]["input"] != \
        {"content": "y" * 2000}
    assert all(a["role"] != b["role"] for a, b in zip(anthropic, anthropic[1:]))   # user/assistant alternate


def test_a_failed_call_counts_its_tokens_and_the_error_keeps_them(context, repo):
    """An HTTP 400 (a context overflow, say) with no usage: its prompt is estimated, marked estimated, and
    carried by the AgentError so the engine records it."""
    overflow = Reply(400, {"error": {"message": "the request exceeds the available context size",
                                     "type": "invalid_request_error"}})
    first = openai_message(tool_calls=[tool_call("read_file", {"path": "train.py"})], usage=(900, 30))
    with OpenAIFake([first, overflow]) as server:
        with pytest.raises(llm.AgentError, match="HTTP 400") as err:
            OpenAIAgent(context, model="gpt-4o", base_url=server.base_url).propose(brief(), repo)
    usage, meta = err.value.usage, err.value.meta
    estimate = meta["tokens_estimated"]
    assert estimate == pytest.approx(len(json.dumps(server.requests[1].body)) / 4, rel=0.2)
    assert (usage.input_tokens, usage.output_tokens) == (900 + estimate, 30)
    assert meta["api_calls"] == 2 and meta["failed_calls"] == 1 and usage.cost_usd > 900 * 2.5 / 1e6


def test_a_usage_in_an_error_body_is_taken_as_given(context, repo):
    refused = Reply(400, {"error": {"message": "bad"}, "usage": {"prompt_tokens": 4321, "completion_tokens": 0}})
    with OpenAIFake([refused]) as server:
        with pytest.raises(llm.AgentError) as err:
            OpenAIAgent(context, model="m", base_url=server.base_url).propose(brief(), repo)
    assert err.value.usage.input_tokens == 4321 and err.value.meta["tokens_estimated"] == 0


def test_a_huge_read_offset_is_refused_not_allocated(context, repo):
    """SmolLM2 sent one through llama.cpp: reading offset + 160,000 bytes raised MemoryError."""
    from autoresearch.agents.tools import Toolbox

    result = Toolbox(context).call("read_file", {"path": "train.py", "offset": 10 ** 18})
    assert result.is_error and "past the end of train.py" in result.text
