"""Agents read past runs' logs and facts.json (the `read_run` tool; copies for Claude Code), and nothing else
under .autoresearch: not the keys, not the query sets, not the final test's run, not a symlink a run left."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from autoresearch.agents import runview
from autoresearch.agents.base import AgentContext, Brief
from autoresearch.agents.claude_code import ClaudeCodeAgent
from autoresearch.agents.tools import Toolbox

KEY = '{"pairs": {"img1": "cap9"}}'


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "research"
    state = root / ".autoresearch"
    (state / "secret" / "keys").mkdir(parents=True)
    (state / "secret" / "keys" / "fold_0.json").write_text(KEY)
    (state / "prepared" / "queries").mkdir(parents=True)
    (state / "prepared" / "queries" / "fold_0.pt").write_text("QUERYSET")
    (state / "ledger.sqlite").write_text("LEDGER")
    for name in ("0003", "0003-confirm1", "0004-final"):
        d = state / "runs" / name
        (d / "fold0").mkdir(parents=True)
        (d / "fold0.log").write_text("# runner header\n" + "".join(f"step {i}/60 loss {3 - i / 30:.3f}\n"
                                                                  for i in range(1, 61)) + f"{name} done\n")
        (d / "fold0" / "facts.json").write_text(json.dumps({"steps": 60, "final_loss": 1.0, "run": name}))
        (d / "fold0" / "embeddings.npz").write_text("EMBEDDINGS")
    # a run that left facts.json as a link to a key, and a log folder that is a link
    (state / "runs" / "0005" / "fold0").mkdir(parents=True)
    (state / "runs" / "0005" / "fold0" / "facts.json").symlink_to(state / "secret" / "keys" / "fold_0.json")
    (state / "runs" / "0005" / "fold0.log").write_text("ok\n")
    (state / "runs" / "0006").symlink_to(state / "secret")
    (root / "train.py").write_text("LR = 1\n")
    return root


def test_read_run_shows_logs_and_facts_only(repo):
    text = runview.read_run(repo, 3)
    assert "0003/fold0.log" in text and "0003/fold0/facts.json" in text and '"run": "0003"' in text
    assert "0003-confirm1/fold0.log" in text and '"run": "0003-confirm1"' in text      # confirmation runs too
    assert "0003 done" in text and "step 1/60" not in text and "last 30 of 62 lines" in text
    assert "EMBEDDINGS" not in text and "embeddings.npz" not in text
    full = runview.read_run(repo, 3, "0003/fold0.log")
    assert "step 1/60 loss" in full and "0003 done" in full
    assert runview.read_run(repo, 3, "fold0.log") == full                 # relative to the experiment
    for bad in ("0003/fold0/embeddings.npz", "../secret/keys/fold_0.json", "0004-final/fold0.log"):
        assert runview.read_run(repo, 3, bad).startswith("error:")


def test_read_run_never_shows_the_final_run_a_link_or_a_key(repo):
    assert "never shown" in runview.read_run(repo, 4)                     # the one-time test's run
    five = runview.read_run(repo, 5)
    assert "img1" not in five and "facts.json" not in five and "0005/fold0.log" in five
    assert "no logs" in runview.read_run(repo, 6)                         # a linked run folder
    for number in range(8):
        text = runview.read_run(repo, number)
        assert "cap9" not in text and "QUERYSET" not in text and "LEDGER" not in text


def test_the_tool_and_read_file_boundaries(repo):
    box = Toolbox(AgentContext(root=repo, editable=["train.py"], denied=[repo / ".autoresearch"]))
    assert '"final_loss": 1.0' in box.call("read_run", {"number": 3}).text
    assert "step 1/60" in box.call("read_run", {"number": 3, "file": "0003/fold0.log"}).text
    assert box.call("read_run", {}).is_error
    # read_file still refuses everything under .autoresearch, logs included
    for path in (".autoresearch/runs/0003/fold0.log", ".autoresearch/secret/keys/fold_0.json"):
        assert box.call("read_file", {"path": path}).is_error


def test_claude_code_reads_copies_of_the_runs(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    listing, stdin = tmp_path / "listing.txt", tmp_path / "stdin.txt"
    result = {"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
              "result": "DESCRIPTION: d\nHYPOTHESIS: h", "usage": {"input_tokens": 1, "output_tokens": 1}}
    (tmp_path / "result.json").write_text(json.dumps(result) + "\n")
    script = tmp_path / "fake-claude"
    # the stand-in lists the folder named after --add-dir while it runs, then prints a result
    script.write_text("#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ \"$1\" = --add-dir ]; then d=$2; fi; shift; done\n"
                      f"cat > {stdin}\n(cd \"$d\" && find . -type f | sort && cat */*/facts.json) > {listing}\n"
                      f"cat {tmp_path / 'result.json'}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    context = AgentContext(root=repo, editable=["train.py"], denied=[repo / ".autoresearch"],
                           options={"claude_path": str(script), "sandbox": False})   # the jail: test_agent_jail
    agent = ClaudeCodeAgent(context, model="sonnet")
    cmd = agent.command(repo, tmp_path / "view")
    view = "//" + str((tmp_path / "view").resolve()).lstrip("/")
    allowed = cmd[cmd.index("--allowedTools") + 1].split(",")
    assert f"Read({view}/**)" in allowed and cmd[cmd.index("--add-dir") + 1] == str((tmp_path / "view").resolve())
    assert "Read(./.autoresearch/**)" in cmd[cmd.index("--disallowedTools") + 1].split(",")   # still denied
    brief = Brief(experiment=7, task="t", metric_name="m", direction="minimize", phase_title="p", phase_text="",
                  program_rules="", scratchpad="", editable=["train.py"], champion_metric=1.0, champion_std=0.0,
                  noise_sigma=None, history=[])
    proposal = agent.propose(brief, repo)
    assert proposal.description == "d"
    files = listing.read_text()
    assert "./0003/fold0.log" in files and "./0003/fold0/facts.json" in files and "./0003-confirm1/fold0.log" in files
    assert "0004-final" not in files and "embeddings" not in files and "cap9" not in files and "img1" not in files
    assert "./0005/fold0.log" in files and "./0005/fold0/facts.json" not in files
    assert "open them with Read" in stdin.read_text() and stdin.read_text().startswith("# Experiment 7")
    assert not any(Path(p).exists() for p in [line.split(" as ")[0].split("copied to ")[-1]
                                               for line in stdin.read_text().splitlines() if "copied to" in line])
