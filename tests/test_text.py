"""Text from agents and runs as hostile input, at every boundary: recorded safely (ledger, git), shown safely
(terminal, HTML, dashboard, the brief), and never stopping the loop or replaying a crash on resume."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from autoresearch import config as config_mod
from autoresearch import events as ev
from autoresearch.agents.base import Proposal, Usage, recordable
from autoresearch.agents.brief import Brief, HistoryRow
from autoresearch.cli import app
from autoresearch.loop import scratchpad
from autoresearch.loop.engine import Engine, open_ledger
from autoresearch.loop.gitops import Git, format_message
from autoresearch.progress import ConsoleReporter
from autoresearch.report.html import render_page
from autoresearch.runner import sandbox
from autoresearch.session import Session
from autoresearch.text import shown, stored, stored_meta
from toyrepo import make_toy_repo

# Every kind of hostile text at once: NUL, C0 controls, a CR that rewrites the line, CSI (clear screen,
# cursor up, colour), OSC (window title, hyperlink), a C1 CSI, a bidi override, a lone surrogate.
HOSTILE = ("LR\x00 down\x07\x08 \x1b[2J\x1b[1A\x1b[31mred\x1b[0m \x1b]0;owned\x07 \x1b]8;;http://x\x1b\\link"
           "\x1b]8;;\x1b\\ \x9b2J\rkeep: forged \u202eevil\u202c \udcff end")
RAW = ("\x00", "\x07", "\x08", "\x1b", "\x9b", "\r", "\u202e", "\u202c", "\udcff")


def _no_raw(text: str) -> bool:
    return not any(c in text for c in RAW)


# -- the two functions --------------------------------------------------------------------------------------

def test_stored_text_has_no_nul_control_escape_bidi_override_or_surrogate():
    out = stored(HOSTILE)
    assert _no_raw(out)
    assert "[2J" not in out and "]0;" not in out and "owned" not in out     # sequences removed whole
    assert out.startswith("LR down") and "red" in out and "link" in out and "evil" in out and out.endswith("end")
    assert "\n" in out                          # a lone CR is a line break, not a rewrite of the line
    out.encode("utf-8")                         # valid UTF-8
    assert stored(b"caf\xe9 \xff\xfe ok") == "caf\ufffd \ufffd\ufffd ok"
    assert stored("tab\tand\nnewline kept") == "tab\tand\nnewline kept"
    assert stored(None) == "" and stored(12) == "12"


def test_stored_text_is_capped_with_a_mark_and_storing_twice_changes_nothing():
    once = stored(HOSTILE * 100, 300)
    assert len(once) == 300 and "[cut:" in once
    assert stored(once, 300) == once
    assert stored(stored(HOSTILE)) == stored(HOSTILE)


def test_shown_text_makes_every_control_visible_and_drops_nothing():
    out = shown(HOSTILE)
    assert _no_raw(out) and "\n" not in out
    assert "␀" in out and "␛[2J" in out and "␛]0;owned␇" in out and "\\x9b" in out and "␍" in out
    assert "\\u202e" in out and "\\udcff" in out
    assert shown("a\nb") == "a␤b" and shown("a\nb\r\n", multiline=True) == "a\nb\n"
    assert shown("x" * 50, limit=10) == "x" * 9 + "…"
    out.encode("utf-8")


def test_an_agents_meta_is_stored_as_plain_json_whatever_it_holds():
    meta = stored_meta({"k\x00": ["a\x1b[2J", float("nan"), {"deep": "\udcff"}], "n": 3, "ok": True,
                        "obj": object(), "long": "x" * 10_000})
    json.dumps(meta, allow_nan=False).encode("utf-8")
    assert meta["k"][0] == "a" and meta["k"][1] is None and meta["k"][2] == {"deep": "\ufffd"}
    assert meta["n"] == 3 and meta["ok"] is True and len(meta["long"]) <= 2000


def test_a_proposal_is_recordable_in_sqlite_and_git_whatever_its_agent_wrote(tmp_path):
    p = recordable(Proposal(HOSTILE, HOSTILE, Usage(5, -2, float("nan"), float("inf")), {"note": HOSTILE}))
    assert _no_raw(p.description) and _no_raw(p.hypothesis) and _no_raw(p.meta["note"])
    assert (p.usage.input_tokens, p.usage.output_tokens, p.usage.cost_usd, p.usage.seconds) == (5, 0, None, 0.0)
    assert recordable(Proposal("  \x00\x1b[2J ")).description == "(no description)"
    db = sqlite3.connect(":memory:")
    db.execute("create table t (d text, h text, m text)")
    db.execute("insert into t values (?, ?, ?)", (p.description, p.hypothesis, json.dumps(p.meta)))
    with pytest.raises(UnicodeEncodeError):     # what the raw text does to the ledger
        db.execute("insert into t values (?, ?, ?)", (HOSTILE, "", ""))


# -- git ----------------------------------------------------------------------------------------------------

def test_git_never_sees_a_nul_or_an_escape_in_a_commit_message(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    git = Git(root)
    (root / "train.py").write_text("LR = 0.5\n")
    commit = git.commit(["train.py"], f"experiment 1 (running): {HOSTILE}\n")
    message = git.message(commit)
    assert _no_raw(message.replace("\n", " ")) and "LR down" in message
    tree = git.tree_of(commit)
    other = git.commit_tree(tree, commit, f"notes {HOSTILE}\n")
    assert _no_raw(git.message(other).replace("\n", " "))


def test_a_commit_message_keeps_one_key_per_line_whatever_the_agent_wrote():
    msg = format_message(number=4, description=f"{HOSTILE}\nstatus: keep", metric_name="m", mean=1.0, std=0.1,
                         prev=2.0, delta=-1.0, folds=[1.0], peak_memory_gb=0.1, phase="p",
                         changed="LR\nstatus: keep", status="discard", hypothesis="h\nstatus: keep",
                         reason="crash\nstatus: keep\x1b[2J")
    lines = msg.splitlines()
    assert [ln for ln in lines if ln.startswith("status:")] == ["status: discard"]
    assert "\x00" not in msg and "\x1b" not in msg and lines[0].startswith("experiment 4: LR down")


def test_git_show_and_diff_survive_a_file_that_is_not_utf8(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    git = Git(root)
    base = git.head()
    (root / "scratchpad.md").write_bytes(b"# Scratchpad\n\xff\xfe latin-1: caf\xe9\n")
    commit = git.commit(["scratchpad.md"], "notes")
    assert "caf\ufffd" in git.show(commit, "scratchpad.md")
    assert "caf\ufffd" in git.diff(base, commit)


# -- the scratchpad -------------------------------------------------------------------------------------------

def test_a_scratchpad_that_is_not_utf8_is_read_leniently_and_named_as_a_problem(tmp_path):
    pad = tmp_path / "scratchpad.md"
    pad.write_bytes(b"# notes\n\xff\xfe caf\xe9\n")
    assert scratchpad.read(pad) == "# notes\n\ufffd\ufffd caf\ufffd\n"
    assert "not valid UTF-8" in scratchpad.problem(pad)
    pad.write_text("# fine\n")
    assert scratchpad.problem(pad) is None and scratchpad.problem(tmp_path / "missing.md") is None
    assert scratchpad.read(tmp_path / "missing.md") == ""
    pad.write_bytes(b"# notes\n" + b"\xff" * 20_000)
    assert scratchpad.bound_file(pad, 1_000, 7) > 0                 # bounded, not crashed
    assert len(pad.read_text(encoding="utf-8")) <= 1_000


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_the_scratchpad_readers_never_follow_a_link_to_a_key_and_bounding_never_writes_through_one(tmp_path, link):
    key = tmp_path / "secret" / "key.json"
    key.parent.mkdir()
    key.write_text('{"pairs": "TOPSECRET"}' + " " * 20_000)
    before = key.read_bytes()
    pad = tmp_path / "repo" / "scratchpad.md"
    pad.parent.mkdir()
    (os.symlink if link == "symlink" else os.link)(key, pad)
    assert "TOPSECRET" not in scratchpad.read(pad)
    assert scratchpad.problem(pad) in ("a symbolic link", "a file with 2 hard links")
    assert scratchpad.bound_file(pad, 1_000, 3) == 0
    assert key.read_bytes() == before


def test_bounding_replaces_the_file_instead_of_writing_into_it(tmp_path):
    pad = tmp_path / "scratchpad.md"
    pad.write_text("# Scratchpad\n" + "".join(f"note {i}\n" for i in range(2_000)))
    inode = pad.stat().st_ino
    assert scratchpad.bound_file(pad, 500, 9) > 0
    text = pad.read_text()
    assert len(text) <= 500 and text.startswith("# Scratchpad\n[autoresearch: ") and "note 1999" in text
    assert pad.stat().st_ino != inode and not list(tmp_path.glob(".scratchpad.md.*"))


# -- what is shown: the brief, the terminal, the report, the dashboard ----------------------------------------

def test_the_brief_an_agent_reads_has_no_control_character_or_surrogate():
    brief = Brief(experiment=3, task="toy", metric_name="loss", direction="minimize", phase_title=HOSTILE,
                  phase_text="t", program_rules="r", scratchpad=HOSTILE, editable=["train.py"],
                  champion_metric=1.0, champion_std=0.1, noise_sigma=None, failure=HOSTILE,
                  history=[HistoryRow(2, "discard", HOSTILE, 1.0, 0.1, 0.0, reason=HOSTILE)], notes=[HOSTILE])
    text = brief.render()
    assert _no_raw(text) and "LR down" in text
    text.encode("utf-8")


def test_the_terminal_listener_never_passes_an_escape_sequence_through():
    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out, force_terminal=True, width=300), metric="m")
    reporter(ev.ExperimentStarted(5, HOSTILE, f"1 {HOSTILE}"))
    reporter(ev.Notice(HOSTILE))
    reporter(ev.Paused(HOSTILE))
    reporter.close()
    printed = out.getvalue()
    for raw in ("\x00", "\x07", "\x1b[2J", "\x1b[1A", "\x1b[31mred", "\x1b]", "\x9b", "\r", "\u202e", "\udcff"):
        assert raw not in printed, repr(raw)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", printed)          # Rich's own styling
    assert "␛[2J" in plain and "LR␀ down" in plain and "␛]0;owned␇" in plain


@pytest.fixture
def hostile_repo(tmp_path):
    """A toy repository whose ledger holds an experiment with hostile text in every field, recorded raw (as
    a ledger written before ``text.stored`` existed would hold it, lone surrogate aside: SQLite refuses it)."""
    root = make_toy_repo(tmp_path / "toy")
    raw = HOSTILE.replace("\udcff", "")
    git = Git(root)
    base = git.head()
    log = root / ".autoresearch" / "runs" / "0001" / "fold0.log"
    log.parent.mkdir(parents=True)
    log.write_text(f"step 1/2 loss 1.0\n{raw}\n")
    with Session(root, tag="h") as s:
        s.ledger.start(number=0, tag="h", kind="baseline", phase=0, phase_title="baseline", parent_commit=base,
                       candidate_commit=base, description="baseline")
        s.ledger.finish(0, "keep", commit=base, folds=[2.0], metric_mean=2.0, metric_std=0.0, reason="baseline")
        s.ledger.start(number=1, tag="h", kind="experiment", phase=1, phase_title="p", parent_commit=base,
                       candidate_commit=base, agent="x", description=raw, hypothesis=raw)
        s.ledger.finish(1, "discard", commit=base, folds=[2.1], metric_mean=2.1, metric_std=0.0, delta=0.1,
                        reason=raw, log_path=str(log))
    return root


def test_status_and_show_print_agent_text_with_its_controls_visible(hostile_repo):
    runner = CliRunner()
    for args in (["status", "-C", str(hostile_repo), "--tag", "h"], ["show", "1", "-C", str(hostile_repo)]):
        result = runner.invoke(app, args, color=True)
        assert result.exit_code == 0, result.output
        for raw in ("\x00", "\x07", "\x1b[2J", "\x1b[1A", "\x1b]0;", "\x9b", "\u202e"):
            assert raw not in result.output, (args[0], repr(raw))
        assert "␛[2J" in result.output, args[0]


def test_the_html_report_shows_controls_as_text(hostile_repo):
    with Session(hostile_repo, tag="h") as s:
        rows = s.rows()
    page = render_page(rows, tag="h", metric_name="m", direction="minimize", noise_sigma=None, png=b"",
                       test_uses=0, extra={"agent": HOSTILE}, notes=[("t", HOSTILE, None)], warning=HOSTILE)
    assert _no_raw(page) and "␛[2J" in page and "\\u202e" in page and "\\udcff" in page
    page.encode("utf-8")


def test_the_dashboards_json_survives_a_lone_surrogate_and_a_posted_note_is_stored_clean(hostile_repo):
    from autoresearch.dashboard.app import _dumps

    assert json.loads(_dumps({"d": HOSTILE}))["d"].endswith(" ? end")
    from starlette.testclient import TestClient

    from autoresearch.dashboard.app import create_app
    from autoresearch.dashboard.security import Guard

    app_ = create_app(hostile_repo, tag="h", guard=Guard.for_bind("127.0.0.1", 8765, None), poll_s=0.1)
    with TestClient(app_, base_url="http://127.0.0.1:8765") as client:
        csrf = client.get("/").text.split('name="csrf-token" content="')[1].split('"')[0]
        got = client.post("/api/notes", content=json.dumps({"text": HOSTILE}),     # \udcff escaped, as a page sends it
                          headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"})
        assert got.status_code == 200, got.text
        assert client.get("/api/experiments/1").status_code == 200
    with Session(hostile_repo, tag="h") as s:
        assert all(_no_raw(n["text"]) for n in s.notes()) and s.notes()


needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@needs_node
def test_the_dashboard_page_makes_controls_visible_before_they_reach_the_dom():
    plot = Path(__file__).resolve().parents[1] / "src/autoresearch/dashboard/static/plot.js"
    script = plot.read_text() + "\nprocess.stdout.write(JSON.stringify(AR.visible(JSON.parse(process.argv[1]))));"
    sample = HOSTILE.replace("\udcff", "\\udcff")
    done = subprocess.run(["node", "-e", script, json.dumps(HOSTILE, ensure_ascii=True)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert _no_raw(out) and "␛[2J" in out and "\\u202e" in out and "\\udcff" in out and sample


# -- the loop -------------------------------------------------------------------------------------------------

class _Says:
    """An honest edit (LR down) described with hostile text."""

    name = "says"

    def __init__(self, description: str) -> None:
        self.description = description

    def propose(self, brief, workdir):
        path = Path(workdir) / "train.py"
        path.write_text(path.read_text().replace("LR = 0.01", "LR = 0.001"))
        return Proposal(self.description, self.description, meta={"raw": self.description})

    def observe(self, *a):
        pass


def _engine(root: Path) -> Engine:
    config = config_mod.load(root)
    engine = Engine(config, tag="t", sandbox=sandbox.available(), ledger=open_ledger(config))
    engine.prepare()
    engine.ensure_baseline()
    return engine


@pytest.mark.slow
def test_a_nul_and_escapes_in_a_description_neither_stop_the_loop_nor_replay_on_resume(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    engine = _engine(root)
    engine.agent = _Says(HOSTILE.replace("\udcff", ""))
    row, _ = engine.experiment()
    assert row.status == "keep", (row.status, row.reason)
    message = Git(root).message(row.commit)
    assert "\x00" not in message and "\x1b" not in message and "LR down" in message
    again = _engine(root)                       # a resume finds nothing running and nothing to replay
    assert again.ledger.running() == [] and again.ledger.get(row.number).status == "keep"


@pytest.mark.slow
def test_a_lone_surrogate_in_a_description_is_recorded_as_a_replacement_character(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    engine = _engine(root)
    engine.agent = _Says(HOSTILE)
    row, _ = engine.experiment()
    assert row.status == "keep" and "\ufffd" in row.description and _no_raw(row.description)


@pytest.mark.slow
def test_a_scratchpad_that_is_not_utf8_is_an_invalid_edit_and_the_loop_goes_on(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    engine = _engine(root)

    class Bytes(_Says):
        def propose(self, brief, workdir):
            (Path(workdir) / "scratchpad.md").write_bytes(b"# notes\n\xff\xfe\n")
            return super().propose(brief, workdir)

    engine.agent = Bytes("LR down")
    row, _ = engine.experiment()
    assert row.status == "invalid" and "UTF-8" in row.reason
    engine.agent = _Says("LR down")
    row, _ = engine.experiment()
    assert row.status == "keep"
