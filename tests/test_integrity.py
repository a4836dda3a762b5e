"""What an agent's turn may plant outside the editable files (issue 9, class 3): git control files, a
key rewritten with its old size and mtime, byte-code in ``__pycache__``. Each must be refused or removed,
and none may make the tool run something or the run execute something that is not in a commit."""

from __future__ import annotations

import importlib.util
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch import config as config_mod
from autoresearch.errors import UserError
from autoresearch.loop import editpolicy, fingerprints
from autoresearch.loop.engine import Engine, open_ledger
from autoresearch.bytecode import bytecode_files
from autoresearch.loop.gitops import Git
from autoresearch.runner import sandbox
from autoresearch import tasks
from toyrepo import Vandal, make_toy_repo

SANDBOX = sandbox.available()


def _plant_fsmonitor(root: Path, marker: Path) -> None:
    script = root / ".git" / "fsmon.sh"
    script.write_text(f"#!/bin/sh\necho ran >> {marker}\n")
    script.chmod(0o755)
    with open(root / ".git" / "config", "a") as fh:
        fh.write(f"[core]\n\tfsmonitor = {script}\n")


# -- git: the tool's own calls honour nothing an agent could plant -----------------------------------------

def test_planted_fsmonitor_and_hooks_do_not_run_in_the_tools_git_calls(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    marker = tmp_path / "ran"
    _plant_fsmonitor(root, marker)
    hook = root / ".git" / "hooks" / "post-commit"
    hook.write_text(f"#!/bin/sh\necho hook >> {marker}\n")
    hook.chmod(0o755)
    # Positive control: plain git runs the planted command on a status.
    subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, check=True)
    assert marker.is_file()
    marker.unlink()
    git = Git(root)
    (root / "train.py").write_text((root / "train.py").read_text() + "# change\n")
    assert [c.path for c in git.status()] == ["train.py"]
    git.status(ignored=True)
    git.commit(["train.py"], "a commit\n")
    git.diff("HEAD~1", "HEAD")
    git.reset_hard("HEAD~1")
    assert not marker.exists()


def test_replace_refs_and_inherited_git_variables_are_ignored(tmp_path, monkeypatch):
    root = make_toy_repo(tmp_path / "toy")
    other = make_toy_repo(tmp_path / "other")
    git = Git(root)
    head = git.head()
    blob = git("rev-parse", "HEAD:train.py").strip()
    forged = git("hash-object", "-w", "--stdin", input="print('forged')\n").strip()
    subprocess.run(["git", "replace", blob, forged], cwd=root, check=True, capture_output=True)
    assert "forged" in subprocess.run(["git", "show", "HEAD:train.py"], cwd=root, capture_output=True,
                                      text=True).stdout          # plain git honours the replace ref
    assert "forged" not in git.show(head, "train.py")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))          # e.g. inherited from a hook
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    assert git.head() == head


# -- the edit policy: any change under .git is invalid and undone ------------------------------------------



def _engine(root: Path) -> Engine:
    config = config_mod.load(root)
    engine = Engine(config, tag="t1", sandbox=SANDBOX, ledger=open_ledger(config))
    engine.prepare()
    engine.ensure_baseline()
    return engine


def _tweak(root: Path) -> None:
    """An honest edit too, so that only the planted file can make the experiment invalid."""
    (root / "train.py").write_text((root / "train.py").read_text().replace("LR = 0.01", "LR = 0.001"))


def _alternates(root: Path) -> None:
    (root / ".git" / "objects" / "info" / "alternates").write_text("/tmp/elsewhere/objects\n")


def _commondir(root: Path) -> None:
    (root / ".git" / "commondir").write_text("/tmp/elsewhere\n")


def _replace_ref(root: Path) -> None:
    git = Git(root)
    blob = git("rev-parse", "HEAD:train.py").strip()
    forged = git("hash-object", "-w", "--stdin", input="print('forged')\n").strip()
    (root / ".git" / "refs" / "replace").mkdir(parents=True, exist_ok=True)
    (root / ".git" / "refs" / "replace" / blob).write_text(forged + "\n")


def _lock(root: Path) -> None:
    (root / ".git" / "index.lock").write_text("")


def _info_attributes(root: Path) -> None:
    (root / ".git" / "info" / "attributes").write_text("*.py filter=evil\n")


def _archive_ref(root: Path) -> None:
    ref = root / ".git" / "refs" / "autoresearch" / "archive" / "0"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text("0" * 40 + "\n")


@pytest.mark.parametrize("plant, path", [
    (_alternates, ".git/objects/info/alternates"),
    (_commondir, ".git/commondir"),
    (_replace_ref, ".git/refs/replace/"),
    (_lock, ".git/index.lock"),
    (_info_attributes, ".git/info/attributes"),
    (_archive_ref, ".git/refs/autoresearch/archive/0"),
])
def test_planted_git_control_files_are_invalid_and_removed(tmp_path, plant, path):
    root = make_toy_repo(tmp_path / "toy")
    engine = _engine(root)
    before = editpolicy.Snapshot.take(engine.git)
    # An agent that reaches outside its working copy (one running inside the tool could): the repository's .git
    engine.agent = Vandal(lambda w: (plant(root), _tweak(w)))
    row, trial = engine.experiment()
    assert row.status == "invalid" and "git metadata was changed" in row.reason and path in row.reason, row.reason
    assert trial is None
    # Everything is back but what the restoring `git reset --hard` itself writes, and the tool's own record of
    # the invalid row (the chain's anchor: a new blob and its ref).
    changed = {c for c in editpolicy.git_metadata_changes(engine.git, before) if not c.startswith(".git/objects/")}
    assert changed <= {".git/index", ".git/ORIG_HEAD", ".git/refs/autoresearch/records"}
    assert not (root / ".git" / "refs" / "replace").exists()
    assert engine.git.status() == [] and "LR = 0.01" in (root / "train.py").read_text()


def test_a_planted_fsmonitor_never_runs_and_is_removed(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    engine = _engine(root)
    config_before = (root / ".git" / "config").read_bytes()
    marker = tmp_path / "ran"
    engine.agent = Vandal(lambda w: (_plant_fsmonitor(root, marker), _tweak(w)))
    row, _ = engine.experiment()
    assert row.status == "invalid" and ".git/config" in row.reason and ".git/fsmon.sh" in row.reason
    assert not marker.exists()                      # neither the check nor the restore ran it
    assert (root / ".git" / "config").read_bytes() == config_before
    assert not (root / ".git" / "fsmon.sh").exists()
    subprocess.run(["git", "status"], cwd=root, capture_output=True, check=True)
    assert not marker.exists()                      # gone for plain git too


def test_new_objects_are_removed_and_a_rewritten_object_stops_the_run(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    engine = _engine(root)
    engine.agent = Vandal(lambda w: (Git(root)("hash-object", "-w", "--stdin", input="planted\n"), _tweak(w)))
    row, _ = engine.experiment()
    assert row.status == "invalid" and ".git/objects/" in row.reason
    assert Git(root).run("cat-file", "-e", Git(root)("hash-object", "--stdin", input="planted\n").strip()).returncode != 0

    git = Git(root)
    blob = git("rev-parse", "HEAD:train.py").strip()
    loose = root / ".git" / "objects" / blob[:2] / blob[2:]
    assert loose.is_file()

    def rewrite(w: Path) -> None:
        data = loose.read_bytes()
        loose.chmod(0o644)
        loose.write_bytes(data)                     # same bytes, but a rewrite the tool cannot undo
        _tweak(w)
    engine.agent = Vandal(rewrite)
    with pytest.raises(UserError, match="rewrote or removed git objects"):
        engine.experiment()


# -- fingerprints: a rewrite with the old size and mtime put back is seen -------------------------------

def test_fingerprints_see_a_rewrite_with_size_and_mtime_restored(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    config = config_mod.load(root)
    key = config.state_dir / "secret" / "keys" / "fold_0.json"
    key.parent.mkdir(parents=True)
    key.write_text('{"pairs": {"a": "b"}}')
    fingerprints.record(config)
    fingerprints.verify(config)                     # fills the in-process cache
    st = key.stat()
    key.write_text('{"pairs": {"a": "c"}}')         # same size
    os.utime(key, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (key.stat().st_size, key.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    with pytest.raises(UserError, match=r"fold_0\.json \(modified\)"):
        fingerprints.verify(config)


# -- byte-code: hidden from sandboxed runs, refused in a turn, removed by every reset -----------------------

def _plant_pyc(source: Path, modified_source: str) -> Path:
    """A .pyc for ``source`` compiled from ``modified_source``, with a header naming the real source's mtime
    and size, so that Python's staleness check accepts it."""
    st = source.stat()
    code = compile(modified_source, str(source), "exec")
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little") \
        + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    pyc = Path(importlib.util.cache_from_source(str(source)))
    pyc.parent.mkdir(exist_ok=True)
    pyc.write_bytes(header + marshal.dumps(code))
    return pyc


@pytest.mark.skipif(not SANDBOX, reason="bubblewrap is not usable here")
def test_a_planted_pyc_runs_under_plain_python_but_never_in_a_sandboxed_run(tmp_path):
    from autoresearch.loop.trial import run_trial

    root = make_toy_repo(tmp_path / "toy")
    (root / "helper.py").write_text("VALUE = 'real'\n")
    (root / "train.py").write_text((root / "train.py").read_text().replace(
        "import time\n", "import time\nimport helper\nprint('helper says', helper.VALUE)\n", 1))
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "helper"], cwd=root, check=True)
    pyc = _plant_pyc(root / "helper.py", "VALUE = 'planted'\n")
    plain = subprocess.run([sys.executable, "-c", "import helper; print(helper.VALUE)"], cwd=root,
                           capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert plain.stdout.strip() == "planted"       # positive control: the header passes Python's check
    assert pyc.is_file()
    config = config_mod.load(root)
    plan = tasks.for_config(config).plan(config, fold=0, mode="fold", seed=0, out_dir=tmp_path / "out")
    assert pyc.parent in plan.hidden and config.state_dir in plan.hidden
    result = run_trial(config, config.state_dir / "runs" / "t", seed=0, sandbox=True)
    assert result.status == "ok", result.reason
    logs = "".join(f.outcome.spec.log_path.read_text() for f in result.folds)
    assert "helper says real" in logs and "helper says planted" not in logs
    assert pyc.is_file()                            # hidden from the run; the next reset removes it
    Git(root).reset_hard("HEAD")
    assert not pyc.exists() and bytecode_files(root) == set()


def test_new_bytecode_in_a_turn_is_invalid_and_removed_but_venvs_are_left_alone(tmp_path):
    root = make_toy_repo(tmp_path / "toy")
    venv_cache = root / "venv" / "lib" / "__pycache__" / "x.cpython-311.pyc"
    venv_cache.parent.mkdir(parents=True)
    (root / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    venv_cache.write_bytes(b"venv")
    (root / ".gitignore").write_text((root / ".gitignore").read_text() + "venv/\n")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "ignore venv"], cwd=root, check=True)
    engine = _engine(root)
    engine.agent = Vandal(lambda w: (_plant_pyc(w / "train.py", "print('val_bpb: 0.0')\n"), _tweak(w)))
    row, _ = engine.experiment()
    assert row.status == "invalid" and "new folder __pycache__" in row.reason, row.reason
    assert bytecode_files(root) == set()
    assert venv_cache.read_bytes() == b"venv"
