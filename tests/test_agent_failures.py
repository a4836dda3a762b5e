"""An agent failure (an HTTP error before any edit) is not an experiment: it is recorded with its tokens as
``agent_error``, the same experiment is asked again with the same brief (not as a crash to fix), and no
phase budget is used; and a user's uncommitted edit of a fixed file is never wiped at start-up."""

from __future__ import annotations

import pytest

import subprocess

from autoresearch import config as config_mod
from autoresearch.loop.engine import open_ledger
from fakes.llm_servers import OpenAIFake, Reply, Request, openai_message, tool_call
from test_agent_loop import MODEL, OPENAI_KEY, run_cli, toy_repo

OVERFLOW = Reply(400, {"error": {"message": "the request exceeds the available context size, try increasing it",
                                 "type": "invalid_request_error"}})
GOOD = [[("replace_in_file", {"path": "train.py", "old": "LR = 0.01  #", "new": "LR = 0.001  #"})],
        [("finish", {"description": "LR 1e-2 -> 1e-3", "hypothesis": "the toy optimum is lower"})]]


@pytest.mark.slow
def test_an_agent_failure_is_asked_again_as_the_same_experiment(tmp_path):
    root = toy_repo(tmp_path / "toy")
    briefs: list[str] = []
    failures = iter([OVERFLOW, OVERFLOW])

    def respond(request: Request):
        msgs = request.messages()
        briefs.append(msgs[1]["content"])
        turn = sum(1 for m in msgs if m["role"] == "assistant")
        if turn == 1 and (bad := next(failures, None)):        # fails after the model's first edit
            return bad
        return openai_message(tool_calls=[tool_call(n, a) for n, a in GOOD[min(turn, 1)]], model=MODEL)

    with OpenAIFake(respond) as server:
        result = run_cli(["run", "-C", str(root), "--agent", "openai", "--base-url", server.base_url,
                          "--model", MODEL, "--tag", "retry", "--experiments", "1"], {"OPENAI_API_KEY": OPENAI_KEY})
    assert result.exit_code == 0, result.output
    assert "reached 1 experiments" in result.output
    rows = open_ledger(config_mod.load(root)).rows(tag="retry", kinds=("experiment",))
    assert [(r.status, r.attempt) for r in rows] == [("agent_error", 1), ("agent_error", 1), ("keep", 1)]
    for row in rows[:2]:
        assert "HTTP 400" in row.reason and "context size" in row.reason
        # the tokens of the failed call (estimated: the error had no usage) and of the call before it count
        assert row.tokens_in > 1000 and row.meta["failed_calls"] == 1 and row.meta["tokens_estimated"] > 0
    # every brief is the first one: no "fix the previous attempt", no failure section, no extra history row
    firsts = [b for b in briefs if b.startswith("# Experiment")]
    assert all("(attempt" not in b.splitlines()[0] and "previous attempt failed" not in b for b in firsts)
    assert all("agent error" not in b and "agent_error" not in b for b in firsts)
    assert len({b.split("\n", 1)[1] for b in firsts}) == 1               # the same brief, bar its number
    # no phase budget used: the kept experiment is still in phase 1, which it opened
    assert rows[-1].phase == 1 and "opens phase 1" in firsts[-1]
    assert "LR = 0.001  #" in (root / "train.py").read_text()


def test_a_fixed_file_edited_and_rehashed_but_not_committed_is_never_wiped(tmp_path):
    """The fingerprint error's hint, followed (edit autoresearch.toml, rehash, run): the run refuses to start
    rather than reset the edit away; committed and rehashed, it runs with the new setting."""
    root = toy_repo(tmp_path / "toy")
    env = {"OPENAI_API_KEY": OPENAI_KEY}
    assert run_cli(["rehash", "-C", str(root)], env).exit_code == 0     # as `autoresearch init` leaves it
    toml = root / "autoresearch.toml"
    edited = toml.read_text().replace("max_crash_fixes = 1", "max_crash_fixes = 2")
    toml.write_text(edited)
    trial = run_cli(["trial", "-C", str(root)], env)          # where the fingerprint error is met first
    assert trial.exit_code == 2 and "autoresearch.toml (modified)" in trial.output
    assert "commit the change" in trial.output and "autoresearch rehash" in trial.output
    assert run_cli(["rehash", "-C", str(root)], env).exit_code == 0
    with OpenAIFake([openai_message(tool_calls=[tool_call(*GOOD[1][0])], model=MODEL)] * 4) as server:
        args = ["run", "-C", str(root), "--agent", "openai", "--base-url", server.base_url, "--model", MODEL,
                "--tag", "fp", "--experiments", "1"]
        refused = run_cli(args, env)
        assert refused.exit_code == 2 and "uncommitted changes: autoresearch.toml" in refused.output
        assert toml.read_text() == edited                              # the edit is still there
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two fixes"],
                       cwd=root, check=True)
        ran = run_cli(args, env)
    assert ran.exit_code == 0, ran.output
    assert toml.read_text() == edited and config_mod.load(root).loop.max_crash_fixes == 2
