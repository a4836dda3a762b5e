"""LLM agents driving the real loop through the command line, against the loopback fake APIs.

`autoresearch run --agent openai --base-url <fake>` on the Karpathy-style toy repository (val_bpb =
(log10(LR) + 3)² + 1, optimum LR = 1e-3). A responder plays the model: it reads the brief of each request
and answers with tool calls, so the whole path runs for real: the OpenAI client library, our tools
editing train.py, the engine's checks, the sandboxed runs, the decisions, git and the ledger, and
`autoresearch report`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autoresearch import config as config_mod
from autoresearch.agents import llm
from autoresearch.cli import app
from autoresearch.loop.engine import open_ledger
from autoresearch.loop.gitops import Git
from autoresearch.runner import sandbox
from fakes.llm_servers import (AnthropicFake, OpenAIFake, Reply, Request, anthropic_message, openai_message,
                               tool_call, tool_use)
from toyrepo import make_toy_repo

runner = CliRunner()
FLAGS = [] if sandbox.available() else ["--no-sandbox"]
OPENAI_KEY = "sk-loop-test-OPENAI-SECRET-4f1c9d2e7a"
ANTHROPIC_KEY = "sk-ant-loop-test-ANTHROPIC-SECRET-b83e"
MODEL = "gpt-4.1"                  # $2 / $8 per million tokens in llm.DEFAULT_PRICES
USAGE = (12_000, 800)              # tokens in / out of every fake response: $0.0304 a call with gpt-4.1
CRASH_MARK = "toy crash marker 7f3a: loss is nan"
CRASH = f"print({CRASH_MARK!r}, flush=True)\nraise SystemExit(3)\n"
# train.py prints the key if a run could see it; the runner must not pass it on.
SPY = 'print("env key:", os.environ.get("OPENAI_API_KEY"), os.environ.get("ANTHROPIC_API_KEY"))\n'


def toy_repo(root: Path) -> Path:
    """The toy repository without a replay queue, with a train.py that prints the keys it can see."""
    make_toy_repo(root, queue="# not used: an LLM agent proposes\n")
    train = root / "train.py"
    train.write_text(train.read_text().replace("for step in", SPY + "for step in"))
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "spy on the env"],
                   cwd=root, check=True)
    return root


# -- the scripted model -------------------------------------------------------------------------------------

def replace(old: str, new: str) -> tuple[str, dict]:
    return "replace_in_file", {"path": "train.py", "old": old, "new": new}


def finish(description: str, hypothesis: str) -> tuple[str, dict]:
    return "finish", {"description": description, "hypothesis": hypothesis}


# One list of turns per experiment; each turn is a list of tool calls.
SCRIPTS: dict[str, list[list[tuple[str, dict]]]] = {
    "lower LR": [[("read_file", {"path": "train.py"})],
                 [replace("LR = 0.01  #", "LR = 0.001  #")],
                 [finish("LR 1e-2 -> 1e-3", "the toy optimum is lower")]],
    "high LR": [[replace("LR = 0.001  #", "LR = 0.1  #")],
                [finish("LR 1e-3 -> 1e-1", "bigger steps")]],
    "crash": [[replace("LR = 0.001  #", "LR = 0.002  #"), replace("val = (math", CRASH + "val = (math")],
              [finish("LR 1e-3 -> 2e-3 with a guard", "slightly larger steps")]],
    "fix": [[("read_file", {"path": "train.py"})],
            [replace(CRASH, "")],
            [finish("LR 1e-3 -> 2e-3 (guard removed)", "slightly larger steps")]],
}
ORDER = ["lower LR", "high LR", "crash"]


class Model:
    """Plays the model: picks the script from the brief (which experiment, and whether it is a fix)."""

    def __init__(self, make_reply):
        self.make_reply = make_reply      # (tool calls, usage) -> a response body in the API's format
        self.briefs: dict[str, str] = {}  # scenario -> the brief it was given
        self.problems: list[str] = []     # tool errors and surprises, asserted empty by the tests
        self.calls: dict[str, int] = {}   # scenario -> API calls

    def scenario(self, request: Request, brief: str) -> str:
        if "(attempt 2" in brief.splitlines()[0]:
            return "fix"
        attempt1 = [s for s in self.briefs if s != "fix"]
        # a new experiment: the next scenario, unless this brief was seen already (a later turn)
        for name, seen in self.briefs.items():
            if seen == brief:
                return name
        return ORDER[len(attempt1) % len(ORDER)]

    def __call__(self, request: Request, brief: str, turn: int, tool_results: list[str]):
        name = self.scenario(request, brief)
        self.briefs.setdefault(name, brief)
        self.calls[name] = self.calls.get(name, 0) + 1
        for text in tool_results:
            if text.startswith("error"):
                self.problems.append(f"{name} turn {turn}: {text}")
        script = SCRIPTS[name]
        if turn >= len(script):
            self.problems.append(f"{name}: turn {turn} past the script")
            return self.make_reply([finish("(over)", "")], USAGE)
        return self.make_reply(script[turn], USAGE)


def openai_responder(model: Model):
    def respond(request: Request):
        msgs = request.messages()
        brief = next(m["content"] for m in msgs if m["role"] == "user")
        turn = sum(1 for m in msgs if m["role"] == "assistant")
        results = [r["content"] for r in request.tool_results()]
        return model(request, brief, turn, results)

    return respond


def openai_reply(calls, usage):
    return openai_message(tool_calls=[tool_call(n, a) for n, a in calls], usage=usage, model=MODEL)


def run_cli(args: list[str], env: dict[str, str]):
    return runner.invoke(app, [*args, *FLAGS], env=env)


def all_text(root: Path, output: str, report: Path | None = None) -> list[tuple[str, bytes]]:
    """Every place a key could end up: the tool's state (ledger, WAL, logs, run outputs), the report,
    the git history (commit messages and diffs), and what the command printed."""
    places = [(str(p), p.read_bytes()) for p in (root / ".autoresearch").rglob("*") if p.is_file()]
    if report is not None:
        places += [(str(p), p.read_bytes()) for p in report.rglob("*") if p.is_file()]
    places += [(p.name, p.read_bytes()) for p in root.glob("*") if p.is_file()]
    history = subprocess.run(["git", "log", "--all", "-p"], cwd=root, capture_output=True, check=True).stdout
    return places + [("git log", history), ("output", output.encode())]


# -- tests --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def openai_run(tmp_path_factory):
    """Three experiments with the OpenAI agent: keep, discard, crash + fix; then the report."""
    root = toy_repo(tmp_path_factory.mktemp("agentloop") / "toy")
    model = Model(openai_reply)
    env = {"OPENAI_API_KEY": OPENAI_KEY}
    with OpenAIFake(openai_responder(model)) as server:
        # The engine counts finished experiments, the crash row included: 4 = keep, discard, crash, fix.
        result = run_cli(["run", "-C", str(root), "--agent", "openai", "--base-url", server.base_url,
                          "--model", MODEL, "--tag", "llm", "--experiments", "4"], env)
        report = run_cli(["report", "-C", str(root)], env)
    return root, model, server, result, report


@pytest.mark.slow
def test_openai_agent_keeps_discards_and_fixes_a_crash(openai_run):
    root, model, server, result, _ = openai_run
    assert result.exit_code == 0, result.output
    assert "reached 4 experiments" in result.output
    assert not server.errors and not model.problems, (server.errors, model.problems)
    assert all(r.path == "/v1/chat/completions" for r in server.requests)
    assert {r.body["model"] for r in server.requests} == {MODEL}
    ledger = open_ledger(config_mod.load(root))
    rows = ledger.rows(tag="llm", kinds=("experiment",))
    assert [(r.status, r.attempt) for r in rows] == [("keep", 1), ("discard", 1), ("crash", 1), ("discard", 2)]
    keep, discard, crash, fix = rows
    assert keep.description == "LR 1e-2 -> 1e-3" and keep.changed == "LR=0.001 (was 0.01)"
    assert abs(keep.metric_mean - 1.0) < 0.05
    assert discard.metric_mean > 4.5 and "LR=0.1" in discard.changed
    assert crash.metric_mean is None and "exit code 3" in crash.reason
    # the fix is scored: the raise is gone and the LR change stays (val_bpb = 0.301² + 1 = 1.09)
    assert fix.metric_mean == pytest.approx(1.0906, abs=0.05) and fix.changed == "LR=0.002 (was 0.001)"
    assert fix.agent == "openai" and fix.hypothesis == "slightly larger steps"
    # the fix brief carried the crash's reason and log tail (what the crashed run printed)
    fix_brief = model.briefs["fix"]
    assert "## The previous attempt failed" in fix_brief and "--- log tail ---" in fix_brief
    assert CRASH_MARK in fix_brief and "exit code 3" in fix_brief
    assert CRASH_MARK not in model.briefs["crash"]
    # the fix started from the crashed candidate: its read_file saw the inserted raise
    fix_reads = [r for r in server.requests if "(attempt 2" in r.messages()[1]["content"].splitlines()[0]]
    assert any("raise SystemExit(3)" in t["content"] for r in fix_reads for t in r.tool_results())
    # tokens and cost per experiment, from the API's usage and the price table
    for row, name in zip(rows, ["lower LR", "high LR", "crash", "fix"]):
        calls = model.calls[name]
        assert (row.tokens_in, row.tokens_out) == (calls * USAGE[0], calls * USAGE[1]), name
        assert row.cost_usd == pytest.approx(llm.cost_usd(MODEL, *(calls * u for u in USAGE), llm.DEFAULT_PRICES))
        assert row.cost_usd == pytest.approx(calls * 0.0304)
        assert row.meta["api_calls"] == calls and row.meta["finished"] is True
    # git: the branch carries the kept LR; the tree is clean
    assert "LR = 0.001  #" in (root / "train.py").read_text() and "raise SystemExit" not in (root / "train.py").read_text()
    assert [c.path for c in Git(root).status() if not c.path.startswith("report/")] == []   # report/: the report


def test_report_shows_the_agent_cost(openai_run):
    root, model, _, _, report = openai_run
    assert report.exit_code == 0, report.output
    page = (root / "report" / "index.html").read_text(encoding="utf-8")
    total = sum(model.calls.values()) * 0.0304          # 10 calls = $0.304
    assert sum(model.calls.values()) == 10
    assert f"<div class='k'>agent cost</div><div class='big'>${total:.3g}" in page
    # cost per kept improvement: the whole cost over the one kept experiment
    assert f"<div class='k'>cost per kept improvement</div><div class='big'>${total:.3g}<br>" in page
    tokens = sum(model.calls.values()) * sum(USAGE)
    assert f"<div class='k'>tokens</div><div class='big'>{tokens:,}<br>" in page
    for calls in model.calls.values():   # the per-experiment cost column
        assert f"<td class='n'>{calls * 0.0304:.3g}</td>" in page


def test_the_api_key_is_never_written(openai_run):
    root, _, server, result, report = openai_run
    # the key was in use: the client sent it to the fake
    assert all(r.headers.get("authorization") == f"Bearer {OPENAI_KEY}" for r in server.requests)
    places = all_text(root, result.output + report.output, root / "report")
    assert any(name.endswith(".log") for name, _ in places), "no run logs were found to search"
    assert any(b"env key: None None" in data for _, data in places)   # the runs did not see the key
    for name, data in places:
        assert OPENAI_KEY.encode() not in data, name
        assert b"OPENAI-SECRET" not in data, name


def test_a_key_echoed_by_the_api_is_redacted(tmp_path):
    """A 401 whose message repeats the key (as OpenAI's does) is recorded as an agent failure with the key
    masked; three agent failures in a row end the run."""
    root = toy_repo(tmp_path / "toy")
    env = {"OPENAI_API_KEY": OPENAI_KEY}
    refusal = Reply(401, {"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}.",
                                    "type": "invalid_request_error", "code": "invalid_api_key"}})
    with OpenAIFake(lambda request: refusal) as server:
        result = run_cli(["run", "-C", str(root), "--agent", "openai", "--base-url", server.base_url,
                          "--model", MODEL, "--tag", "denied", "--experiments", "5"], env)
        report = run_cli(["report", "-C", str(root)], env)
    assert result.exit_code == 0, result.output
    assert "the agent failed 3 times in a row" in result.output
    rows = open_ledger(config_mod.load(root)).rows(tag="denied", kinds=("experiment",))
    assert [r.status for r in rows] == ["agent_error"] * 3 and len(server.requests) == 3
    assert all("HTTP 401" in r.reason and "[redacted]" in r.reason for r in rows), rows[0].reason
    for name, data in all_text(root, result.output + report.output, root / "report"):
        assert OPENAI_KEY.encode() not in data, name


def test_max_cost_stops_the_loop_cleanly(tmp_path):
    root = toy_repo(tmp_path / "toy")
    model = Model(openai_reply)
    env = {"OPENAI_API_KEY": OPENAI_KEY}
    with OpenAIFake(openai_responder(model)) as server:
        # experiment 1 costs 3 calls ($0.0912), experiment 2 two more ($0.152 in all): past $0.10
        result = run_cli(["run", "-C", str(root), "--agent", "openai", "--base-url", server.base_url,
                          "--model", MODEL, "--tag", "budget", "--experiments", "10", "--max-cost", "0.1"], env)
        assert result.exit_code == 0, result.output
        assert "reached the cost budget: $0.15 of $0.10" in result.output
        assert len(server.requests) == 5 and not model.problems
        ledger = open_ledger(config_mod.load(root))
        rows = ledger.rows(tag="budget", kinds=("experiment",))
        assert [r.status for r in rows] == ["keep", "discard"]
        assert sum(r.cost_usd for r in rows) == pytest.approx(0.152)
        assert not ledger.running() and Git(root).status() == []
        # resuming under the same budget proposes nothing: the budget counts the whole tag
        again = run_cli(["run", "-C", str(root), "--agent", "openai", "--base-url", server.base_url,
                         "--model", MODEL, "--tag", "budget", "--max-cost", "0.1"], env)
        assert again.exit_code == 0 and "reached the cost budget" in again.output
        assert len(server.requests) == 5
    for name, data in all_text(root, result.output + again.output):
        assert OPENAI_KEY.encode() not in data, name


@pytest.mark.slow
def test_anthropic_agent_through_the_loop(tmp_path):
    root = toy_repo(tmp_path / "toy")

    def reply(calls, usage):
        return anthropic_message(*[tool_use(n, a) for n, a in calls], usage=usage, model="claude-haiku-4-5")

    model = Model(reply)

    def respond(request: Request):
        msgs = request.messages()
        first = msgs[0]["content"]
        brief = first if isinstance(first, str) else first[0]["text"]
        turn = sum(1 for m in msgs if m["role"] == "assistant")
        return model(request, brief, turn, [r["content"] for r in request.tool_results() if not r["is_error"]]
                     + [f"error: {r['content']}" for r in request.tool_results() if r["is_error"]])

    env = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "OPENAI_API_KEY": ""}
    with AnthropicFake(respond) as server:
        result = run_cli(["run", "-C", str(root), "--agent", "anthropic", "--base-url", server.base_url,
                          "--model", "claude-haiku-4-5", "--tag", "claude", "--experiments", "1"], env)
        report = run_cli(["report", "-C", str(root)], env)
    assert result.exit_code == 0, result.output
    assert not server.errors and not model.problems, (server.errors, model.problems)
    # the key was in use (this client version sends it as a bearer token, older ones as x-api-key)
    assert all(ANTHROPIC_KEY in (r.headers.get("x-api-key"), r.headers.get("authorization", "")[7:])
               for r in server.requests)
    rows = open_ledger(config_mod.load(root)).rows(tag="claude", kinds=("experiment",))
    assert [(r.status, r.agent, r.description) for r in rows] == [("keep", "anthropic", "LR 1e-2 -> 1e-3")]
    row = rows[0]
    assert (row.tokens_in, row.tokens_out) == (3 * USAGE[0], 3 * USAGE[1])
    assert row.cost_usd == pytest.approx((3 * USAGE[0] * 1.0 + 3 * USAGE[1] * 5.0) / 1e6)   # haiku: $1 / $5
    assert report.exit_code == 0
    page = (root / "report" / "index.html").read_text(encoding="utf-8")
    assert f"<div class='k'>agent cost</div><div class='big'>${row.cost_usd:.3g}" in page
    for name, data in all_text(root, result.output + report.output, root / "report"):
        assert ANTHROPIC_KEY.encode() not in data, name


def test_the_report_survives_a_resumed_run(tmp_path):
    root = toy_repo(tmp_path / "toy")
    env = {"OPENAI_API_KEY": OPENAI_KEY}
    with OpenAIFake(openai_responder(Model(openai_reply))) as server:
        args = ["run", "-C", str(root), "--agent", "openai", "--base-url", server.base_url, "--model", MODEL,
                "--tag", "r", "--experiments", "1"]
        assert run_cli(args, env).exit_code == 0
        assert run_cli(["report", "-C", str(root)], env).exit_code == 0
        assert (root / "report" / "index.html").is_file()
        assert run_cli(args, env).exit_code == 0     # resumes, finds 1 experiment done, stops
    assert (root / "report" / "index.html").is_file()
