"""The `openai` agent against a real local server (llama.cpp through llama-cpp-python, SmolLM2-135M-Instruct):
whatever a weak model sends (malformed or refused tool calls, empty edits, plain text), the loop records each
experiment as what it was and goes on. Skipped when the server package or the model is not installed
(`.ci/run` does not build it: about 7 minutes); `benchmarks/local_llm.py` measures more experiments."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import autoresearch
from autoresearch.runner import sandbox
from llama_server import LlamaServer, available, smollm2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytestmark = [pytest.mark.slow, pytest.mark.skipif(available() is not None, reason=str(available()))]
NAMED = {"keep", "discard", "crash", "timeout", "invalid", "aborted", "agent_error"}


@pytest.mark.parametrize("tools", [(), ("set_constant", "finish")], ids=["all-tools", "set_constant-only"])
def test_a_weak_local_model_through_the_loop(tmp_path, tools):
    from local_llm import agent_section, make_repo

    with LlamaServer(smollm2(), n_ctx=4096, log=tmp_path / "server.log") as server:
        root = tmp_path / "toy"
        make_repo(root, agent_section(server.base_url, max_tokens=128, n_ctx=4096, max_turns=3, tools=tools))
        session = autoresearch.open(root, tag="local")
        stop = session.run(experiments=2, no_sandbox=not sandbox.available())
        rows = session.rows(kinds=("experiment",))
    assert "2 experiments" in stop.why or "the agent failed 3 times" in stop.why, stop.why
    assert rows and all(r.status in NAMED for r in rows), [(r.status, r.reason) for r in rows]
    for r in rows:
        assert r.status in ("keep", "discard") or r.reason, r      # a failure always says why
        assert r.tokens_in and r.meta["api_calls"] >= 1            # the server's calls were counted
    # the agent was given the tools with tool_choice "auto", so the server put them in the prompt
    assert any(r.meta.get("tool_calls") for r in rows if r.status != "agent_error")
    assert not session.ledger.running()
    for r in rows:          # an edit, if any, went through the offered tools to the editable file only
        assert set(r.meta.get("edited", [])) <= {"train.py", "scratchpad.md"}, r.meta
