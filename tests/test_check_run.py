"""The ``check_run`` tool: an LLM agent runs its edit for a few steps in the sandbox before finishing, sees
the crash's traceback in the tool's result, fixes it, checks again and finishes; the experiment that runs
is the fixed one (the OpenAI agent through `autoresearch run`, against the fake server)."""

from __future__ import annotations

from pathlib import Path

from autoresearch import config as config_mod
from autoresearch.agents.base import AgentContext
from autoresearch.agents.tools import Toolbox
from autoresearch.loop.engine import open_ledger
from fakes.llm_servers import OpenAIFake, Request, openai_message, tool_call
from test_agent_loop import MODEL, OPENAI_KEY, run_cli, toy_repo

BUG = "val = (math.log10(LR) + 3) ** 2 + 1.0 + rng.gauss(0, 0.01)"
CRASHING = "val = (math.log10(LR) + 3) ** 2 + 1.0 + rng.gauss(0, 0.01) + {}['check marker 5e1d']"
TURNS = [
    [("replace_in_file", {"path": "train.py", "old": "LR = 0.01  #", "new": "LR = 0.001  #"}),
     ("replace_in_file", {"path": "train.py", "old": BUG, "new": CRASHING})],
    [("check_run", {"steps": 2})],
    [("replace_in_file", {"path": "train.py", "old": CRASHING, "new": BUG})],
    [("check_run", {})],
    [("finish", {"description": "LR 1e-2 -> 1e-3", "hypothesis": "the toy optimum is lower"})],
]


def test_an_agent_sees_its_crash_through_check_run_and_fixes_it(tmp_path):
    root = toy_repo(tmp_path / "toy")
    results: list[str] = []

    def respond(request: Request):
        turn = sum(1 for m in request.messages() if m["role"] == "assistant")
        results.extend(r["content"] for r in request.tool_results())
        calls = TURNS[min(turn, len(TURNS) - 1)]
        return openai_message(tool_calls=[tool_call(n, a) for n, a in calls], model=MODEL)

    with OpenAIFake(respond) as server:
        result = run_cli(["run", "-C", str(root), "--agent", "openai", "--base-url", server.base_url,
                          "--model", MODEL, "--tag", "check", "--experiments", "1"], {"OPENAI_API_KEY": OPENAI_KEY})
    assert result.exit_code == 0, result.output
    assert "check_run" in {t["function"]["name"] for t in server.requests[0].body["tools"]}
    first, second = [r for r in results if r.startswith("check_run")]
    # the crash, with its traceback, came back to the model as the tool's result
    assert "FAILED" in first and "Traceback (most recent call last)" in first
    assert "KeyError: 'check marker 5e1d'" in first and "2 steps" in first
    # after the fix, the check passes (the toy ignores the step count and simply runs to the end)
    assert "passed" in second and "val_bpb:" in second and "3 steps" in second
    row = open_ledger(config_mod.load(root)).rows(tag="check", kinds=("experiment",))[0]
    assert row.status == "keep" and row.attempt == 1 and row.meta["tool_errors"] == 0
    runs = root / ".autoresearch" / "runs"
    assert len(list(runs.glob("check-*"))) >= 1 and (runs / f"{row.number:04d}" / "fold0.log").is_file()


def test_check_run_without_a_runner_says_so(tmp_path):
    box = Toolbox(AgentContext(root=tmp_path, editable=["train.py"], denied=[]))
    result = box.call("check_run", '{"steps": 3}')
    assert not result.is_error and "not available" in result.text
    assert box.call("check_run", '{"steps": 0}').is_error          # at least one step
    seen: list[int] = []
    box = Toolbox(AgentContext(root=tmp_path, editable=["train.py"], denied=[],
                               check_run=lambda n, tree: seen.append((n, tree)) or f"ran {n}"))
    assert box.call("check_run", "{}").text == "ran 3" and box.call("check_run", '{"steps": "5"}').text == "ran 5"
    assert seen == [(3, tmp_path), (5, tmp_path)]          # the agent's own working copy is what runs


def test_check_runs_of_one_second_share_no_folder(tmp_path):
    """Two checks in the same second must not mix their logs."""
    from autoresearch.session import Session
    from toyrepo import make_toy_repo

    root = make_toy_repo(tmp_path / "toy")
    session = Session(root, tag="c")
    session._no_sandbox = True
    a, b = session.check_run(1), session.check_run(1)
    assert "passed" in a and "passed" in b
    assert len(list((root / ".autoresearch" / "runs").glob("check-*"))) == 2
    assert Path(root / ".autoresearch" / "runs").is_dir()
