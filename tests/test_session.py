"""The library API: the README's Python example, the read views, steering, and a newcomer's own repository."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

import autoresearch
from autoresearch import events as ev
from autoresearch.errors import UserError
from autoresearch.runner import sandbox
from autoresearch.vocab import Direction, Kind, Status
from toyrepo import make_toy_repo

README = Path(__file__).resolve().parents[1] / "README.md"
NO_SANDBOX = not sandbox.available()


def _readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _readme_example()
    if NO_SANDBOX:
        code = code.replace('experiments=3)', 'experiments=3, no_sandbox=True)')
    exec(compile(code, "README.md", "exec"), {})
    session = autoresearch.open(tmp_path / "toy-research", tag="first")
    assert [r.kind for r in session.rows()] == [Kind.BASELINE] + [Kind.EXPERIMENT] * 3
    assert session.notes()[0]["text"] == "try WIDTH 64 next"


@pytest.fixture
def toy(tmp_path):
    autoresearch.create("toy", tmp_path / "toy")
    return autoresearch.open(tmp_path / "toy", tag="t")


@pytest.mark.slow
def test_status_history_and_show_come_from_the_ledger(toy):
    toy.run("replay", experiments=2, no_sandbox=NO_SANDBOX)
    view = toy.status()
    assert view.tag == "t" and view.metric == "val_bpb" and view.direction == Direction.MINIMIZE
    assert sum(view.counts.values()) == 2 and view.champion is not None
    history = toy.history_text()
    assert "baseline" in history and "LR 1e-2 -> 1e-3" in history
    first = toy.rows((Kind.EXPERIMENT,))[0].number       # after the baseline and its repeats (noise rows)
    assert "+LR = 0.001" in toy.show_text(first)
    assert toy.show_text(999) == "no experiment 999"


@pytest.mark.slow
def test_an_llm_agent_built_from_python_sees_the_history(toy):
    """Its list_experiments tool is the session's, not a stand-in answering '(no experiments yet)'."""
    toy.run("replay", experiments=1, no_sandbox=NO_SANDBOX)
    context = toy.agent_context()
    assert "LR 1e-2 -> 1e-3" in context.list_experiments()
    assert "val_bpb" in context.show_experiment(1)
    assert toy.config.state_dir in context.denied


def test_pause_waits_and_stop_ends_the_loop_between_experiments(toy):
    from autoresearch.loop.driver import steer

    engine = toy.engine(no_sandbox=NO_SANDBOX)
    toy.stop()
    assert steer(engine.loop) is not None                  # a stop is obeyed ...
    assert toy.control() == "run"                          # ... and consumed
    toy.pause()
    seen = []

    def resume_on_pause(event):
        seen.append(event)
        if isinstance(event, ev.Paused):
            toy.resume()

    engine.loop.reporter = resume_on_pause
    assert steer(engine.loop, poll_s=0.01) is None         # waited while paused, went on when resumed
    assert [type(e) for e in seen] == [ev.Paused, ev.Notice]


@pytest.mark.slow
def test_a_note_reaches_the_next_brief_once(toy):
    toy.run("replay", experiments=1, no_sandbox=NO_SANDBOX)
    toy.note("look at the <b>width</b> next")
    assert "a note from the researcher: look at the <b>width</b> next" in toy.brief().render()
    toy.run("replay", experiments=2, no_sandbox=NO_SANDBOX)
    delivered = toy.notes()[0]["delivered_to"]
    second = toy.rows((Kind.EXPERIMENT,))[1].number
    assert delivered == second                              # the experiment whose brief carried it
    assert "look at the" not in toy.brief().render()       # delivered once
    page = toy.report(toy.root / "report").read_text()
    assert "look at the &lt;b&gt;width&lt;/b&gt; next" in page and f"brief of experiment {second}" in page


def test_dispatcher_refuses_a_listener_without_a_handler():
    class Partial(ev.Dispatcher):
        handles = (ev.ExperimentStarted,)

    with pytest.raises(TypeError, match="on_experiment_started"):
        Partial()
    with pytest.raises(TypeError, match="not a loop event"):
        ev.Dispatcher.__call__(type("L", (ev.Dispatcher,), {"handles": ()})(), "experiment_start")


def test_vocabularies_keep_the_stored_strings():
    assert Status("keep") is Status.KEEP and f"{Status.KEEP}" == "keep"
    assert Direction.MINIMIZE.gain(1.0, 3.0) == 2.0 and Direction.MAXIMIZE.gain(1.0, 3.0) == -2.0
    assert Direction.MAXIMIZE.better(2.0, 1.0) and not Direction.MINIMIZE.better(float("nan"), 1.0)
    with pytest.raises(ValueError, match="minimize, maximize"):
        Direction.parse("sideways")


# --- a newcomer's own repository -------------------------------------------------------------------------

def _git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@u", "GIT_COMMITTER_NAME": "u",
           "GIT_COMMITTER_EMAIL": "u@u"}
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True, env=env).stdout


def _karpathy_repo(root: Path) -> Path:
    """The README's 'your own repository' example, followed to the letter: no .gitignore, no scratchpad."""
    make_toy_repo(root)
    for name in ("scratchpad.md", ".gitignore"):
        _git(root, "rm", "-q", name)
    _git(root, "commit", "-q", "-m", "my project")
    return root


def test_a_fresh_repository_without_scratchpad_or_gitignore_runs(tmp_path):
    root = _karpathy_repo(tmp_path / "mine")
    session = autoresearch.open(root, tag="n")
    stop = session.run("replay", experiments=1, no_sandbox=NO_SANDBOX)
    assert "1 experiments" in stop.why
    assert (root / ".autoresearch" / ".gitignore").read_text().strip().endswith("*")
    assert "scratchpad.md" in _git(root, "ls-files")
    assert _git(root, "status", "--porcelain") == ""


def test_a_repository_with_only_its_config_and_script_runs(tmp_path):
    """The README's promise: nothing but an autoresearch.toml (and the script). The loop writes and commits a
    default program.md and scratchpad, and a night runs."""
    root = _karpathy_repo(tmp_path / "mine")
    config = root / "autoresearch.toml"
    config.write_text(config.read_text().replace('fixed = ["program.md", "queue.toml"]', 'fixed = []'))
    queue = (root / "queue.toml").read_text()
    _git(root, "rm", "-q", "program.md", "queue.toml")
    _git(root, "commit", "-qam", "only the config and the script")
    plan = tmp_path / "queue.toml"
    plan.write_text(queue)
    session = autoresearch.open(root, tag="n")
    stop = session.run("replay", experiments=1, no_sandbox=NO_SANDBOX, queue=plan)
    assert "1 experiments" in stop.why, stop.why
    assert {"program.md", "scratchpad.md"} <= set(_git(root, "ls-files").split())
    assert "## Phase 1: Research" in (root / "program.md").read_text()
    assert session.phase()[0].title == "Research" and _git(root, "status", "--porcelain") == ""


def test_uncommitted_work_is_never_thrown_away(tmp_path):
    root = _karpathy_repo(tmp_path / "mine")
    session = autoresearch.open(root, tag="n")
    session.run("replay", experiments=1, no_sandbox=NO_SANDBOX)
    config = root / "autoresearch.toml"
    config.write_text(config.read_text() + "\n# my edit\n")
    with pytest.raises(UserError, match="uncommitted changes: autoresearch.toml"):
        session.run("replay", experiments=2, no_sandbox=NO_SANDBOX)
    assert config.read_text().endswith("# my edit\n")          # still there
    assert len(session.rows()) == 2                           # nothing recorded


def test_an_agent_edit_cut_off_at_start_up_is_stashed_not_lost(tmp_path):
    root = _karpathy_repo(tmp_path / "mine")
    session = autoresearch.open(root, tag="n")
    session.run("replay", experiments=1, no_sandbox=NO_SANDBOX)
    (root / "train.py").write_text((root / "train.py").read_text() + "\n# half an edit\n")
    session.run("replay", experiments=2, no_sandbox=NO_SANDBOX)
    assert "uncommitted edits found at start-up" in _git(root, "stash", "list")


def test_a_users_commit_on_the_loop_branch_is_not_thrown_away(tmp_path):
    root = _karpathy_repo(tmp_path / "mine")
    session = autoresearch.open(root, tag="n")
    session.run("replay", experiments=1, no_sandbox=NO_SANDBOX)
    (root / "notes.txt").write_text("mine\n")
    _git(root, "add", "notes.txt")
    _git(root, "commit", "-q", "-m", "my own commit")
    mine = _git(root, "rev-parse", "HEAD").strip()
    with pytest.raises(UserError, match="a commit the loop did not make"):
        session.run("replay", experiments=2, no_sandbox=NO_SANDBOX)
    assert _git(root, "rev-parse", "HEAD").strip() == mine


def test_a_commit_on_the_loops_branch_is_a_persons_whatever_its_subject(tmp_path):
    """The loop moves its branch only after the ledger recorded where to (``base_after``), so a commit above
    the recorded base is never the loop's own, however its subject reads: the run stops and names it."""
    root = _karpathy_repo(tmp_path / "mine")
    session = autoresearch.open(root, tag="n")
    session.run("replay", experiments=1, no_sandbox=NO_SANDBOX)
    for subject in ("experiment 1 (running): not running any more", "notes after experiment 3", "my own work"):
        head = _git(root, "rev-parse", "HEAD").strip()
        (root / "train.py").write_text((root / "train.py").read_text() + "\n# mine\n")
        _git(root, "commit", "-qam", subject)
        mine = _git(root, "rev-parse", "HEAD").strip()
        with pytest.raises(UserError, match="a commit the loop did not make"):
            session.run("replay", experiments=2, no_sandbox=NO_SANDBOX)
        assert _git(root, "rev-parse", "HEAD").strip() == mine
        _git(root, "reset", "-q", "--hard", head)


def test_a_stop_after_the_record_but_before_the_branch_moved_resumes_forward(tmp_path):
    """kill -9 after the ledger sealed an experiment but before git's branch moved: start-up moves the
    branch to the recorded base, and the experiment's notes are on it."""
    root = _karpathy_repo(tmp_path / "mine")
    session = autoresearch.open(root, tag="n")
    session.run("replay", experiments=1, no_sandbox=NO_SANDBOX)
    recorded = _git(root, "rev-parse", "HEAD").strip()
    parent = _git(root, "rev-parse", "HEAD~1").strip()
    _git(root, "update-ref", "refs/heads/autoresearch/n", parent)       # as if the branch had not moved yet
    _git(root, "reset", "-q", "--hard", parent)
    session.run("replay", experiments=2, no_sandbox=NO_SANDBOX)
    assert _git(root, "merge-base", "--is-ancestor", recorded, "HEAD") == ""


def test_a_missing_editable_file_is_an_error_before_anything_is_recorded(tmp_path):
    root = _karpathy_repo(tmp_path / "mine")
    config = root / "autoresearch.toml"
    config.write_text(config.read_text().replace('editable = ["train.py"]', 'editable = ["model.py"]'))
    _git(root, "commit", "-qam", "typo")
    session = autoresearch.open(root, tag="n")
    with pytest.raises(UserError, match="model.py, which does not exist"):
        session.measure_noise(2, no_sandbox=NO_SANDBOX)      # starts with the baseline: nothing to run yet
    assert session.rows() == []
