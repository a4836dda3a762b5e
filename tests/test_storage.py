"""What a run may store: a fresh output folder and log, the sandbox's tmpfs counted as memory, the output
folder's quota enforced while the run runs."""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
from pathlib import Path

import pytest

from autoresearch import config as config_mod
from autoresearch.errors import UserError
from autoresearch.loop.runfacts import limits
from autoresearch.loop.trial import _status, fold_specs, run_trial
from autoresearch.runner import sandbox, storage
from autoresearch.runner.process import run_spec
from autoresearch.runner.spec import ExitKind, RunOutcome, RunSpec
from autoresearch.scoring.sources import Score

needs_bwrap = pytest.mark.skipif(not sandbox.available(),
                                 reason=f"bubblewrap does not work here: {sandbox.unavailable_reason()}")
MB = 2**20


def _spec(tmp_path: Path, body: str, **kw) -> RunSpec:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    script = code / "script.py"
    script.write_text(textwrap.dedent(body))
    out = tmp_path / "out"
    base = dict(name="fold0", command=(sys.executable, str(script)), cwd=code, env={"OUT": str(out)}, out_dir=out,
                log_path=tmp_path / "logs" / "fold0.log", timeout_s=60.0, grace_s=1.0, sandbox=False)
    return RunSpec(**{**base, **kw})


# --- a fresh output folder and log ---------------------------------------------------------------------

LIST = "import json, os; print('listing', json.dumps(sorted(os.listdir(os.environ['OUT']))))"


def _listing(spec: RunSpec) -> list[str]:
    line = next(ln for ln in Path(spec.log_path).read_text().splitlines() if ln.startswith("listing "))
    return json.loads(line[len("listing "):])


@pytest.mark.parametrize("sandboxed", [False, pytest.param(True, marks=needs_bwrap)])
def test_files_planted_in_the_output_folder_are_gone_before_the_run_starts(tmp_path, sandboxed):
    spec = _spec(tmp_path, LIST, sandbox=sandboxed)
    out = Path(spec.out_dir)
    (out / "deep").mkdir(parents=True)
    (out / "embeddings.npz").write_bytes(b"planted")
    (out / "metrics.json").write_text('{"m": 0.0}')
    (out / "deep" / "facts.json").write_text("{}")
    assert run_spec(spec).kind is ExitKind.OK
    assert _listing(spec) == [] and sorted(os.listdir(out)) == []


def test_a_symlink_planted_as_the_output_folder_is_removed_never_its_target(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    spec = _spec(tmp_path, LIST + "\nopen(os.environ['OUT'] + '/metrics.json', 'w').write('{}')")
    Path(spec.out_dir).symlink_to(target, target_is_directory=True)
    assert run_spec(spec).kind is ExitKind.OK
    out = Path(spec.out_dir)
    assert out.is_dir() and not out.is_symlink() and _listing(spec) == []
    assert sorted(os.listdir(target)) == ["precious.txt"] and (target / "precious.txt").read_text() == "keep me"
    # a file planted where the folder goes is replaced too
    out_file = tmp_path / "as_file"
    out_file.write_text("x")
    spec2 = _spec(tmp_path, LIST, out_dir=out_file, env={"OUT": str(out_file)})
    assert run_spec(spec2).kind is ExitKind.OK and out_file.is_dir()


def test_a_symlink_planted_as_the_log_is_replaced_and_its_target_is_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("do not truncate")
    spec = _spec(tmp_path, "print('hello')")
    Path(spec.log_path).parent.mkdir(parents=True)
    Path(spec.log_path).symlink_to(victim)
    assert run_spec(spec).kind is ExitKind.OK
    assert victim.read_text() == "do not truncate"
    assert not Path(spec.log_path).is_symlink() and "hello" in Path(spec.log_path).read_text()


def test_an_output_folder_that_holds_the_run_itself_is_refused(tmp_path):
    spec = _spec(tmp_path, "print('x')")
    with pytest.raises(UserError, match="empties the output folder"):
        run_spec(RunSpec(**{**spec.__dict__, "out_dir": Path(spec.cwd).parent}))
    assert Path(spec.command[1]).is_file()      # nothing was removed


def test_a_run_that_writes_nothing_is_not_scored_from_planted_files(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "train.py").write_text("print('I write nothing')\n")
    config = config_mod.parse(root, {"metric": {"source": "json", "key": "m", "file": "metrics.json"},
                                     "run": {"command": ["python", "train.py"], "timeout_s": 60,
                                             "time_budget_s": 30}})
    run_dir = config.state_dir / "runs" / "0001"
    planted = run_dir / "fold0"
    planted.mkdir(parents=True)
    (planted / "metrics.json").write_text('{"m": 0.001}')
    trial = run_trial(config, run_dir, seed=0, sandbox=False)
    assert trial.status == "crash" and "wrote no metrics.json" in trial.reason


# --- memory-backed folders in the sandbox ---------------------------------------------------------------

FILL = """
    import os, sys, time
    path = sys.argv[1]
    chunk = b"x" * (8 << 20)
    written = 0
    try:
        with open(path, "wb") as fh:
            while written < {mb} << 20:
                fh.write(chunk)
                fh.flush()
                written += len(chunk)
    except OSError as exc:
        print("write failed:", exc.strerror, flush=True)
        sys.exit(3)
    print("wrote", written >> 20, "MB", flush=True)
    time.sleep(30)
"""


@needs_bwrap
@pytest.mark.parametrize("where", ["/tmp", "/dev/shm"])
def test_what_a_sandboxed_run_keeps_in_its_tmpfs_counts_against_its_memory_ceiling(tmp_path, where):
    spec = _spec(tmp_path, FILL.format(mb=320), sandbox=True, memory_gb=0.25, tmp_gb=1.0)
    spec = RunSpec(**{**spec.__dict__, "command": (*spec.command, f"{where}/fill")})
    out = run_spec(spec)
    assert out.kind is ExitKind.MEMORY, (out.kind, out.reason)
    assert "held in the sandbox's /tmp and /dev/shm" in out.reason and "0.25 GB memory ceiling" in out.reason
    assert out.peak_rss_gb > 0.25 and out.extra["peak_tmpfs_gb"] > 0.2
    assert out.seconds < 30
    status, reason = _status(out, Score(math.nan, {}, ""), config_mod.parse(tmp_path, {"metric": {"pattern": "(x)"}}))
    assert status == "crash" and "/tmp and /dev/shm" in reason


@needs_bwrap
def test_the_sandboxs_tmp_and_shm_are_bounded_and_dev_is_read_only(tmp_path):
    spec = _spec(tmp_path, FILL.format(mb=64), sandbox=True, tmp_gb=0.03)
    for where in ("/tmp", "/dev/shm"):
        one = RunSpec(**{**spec.__dict__, "command": (*spec.command, f"{where}/fill")})
        out = run_spec(one)
        assert out.kind is ExitKind.ERROR and out.returncode == 3, (where, out.reason)
        assert "write failed: No space left on device" in Path(one.log_path).read_text()
    probe = RunSpec(**{**spec.__dict__, "command": (*spec.command, "/dev/planted")})
    out = run_spec(probe)
    assert out.returncode == 3 and "Read-only file system" in Path(probe.log_path).read_text()
    assert "tmpfs, 0.03 GB each" in Path(probe.log_path).read_text().splitlines()[1]


# --- the output folder's quota ----------------------------------------------------------------------------

WRITE = """
    import os, sys, time
    for i in range({files}):
        with open(os.path.join(os.environ["OUT"], f"part{{i}}.bin"), "wb") as fh:
            fh.write(os.urandom({size}))
    print("written", flush=True)
    time.sleep({sleep})
"""


@pytest.mark.parametrize("sandboxed", [False, pytest.param(True, marks=needs_bwrap)])
def test_a_run_past_its_output_quota_is_stopped_while_it_runs(tmp_path, sandboxed):
    spec = _spec(tmp_path, WRITE.format(files=5, size=8 * MB, sleep=60), sandbox=sandboxed, output_gb=0.02)
    out = run_spec(spec)
    assert out.kind is ExitKind.OUTPUT and out.seconds < 30, (out.kind, out.reason)
    assert "0.02 GB quota ([run] output_gb)" in out.reason and out.extra["output_gb"] > 0.02
    status, reason = _status(out, Score(math.nan, {}, ""), config_mod.parse(tmp_path, {"metric": {"pattern": "(x)"}}))
    assert status == "crash" and "[run] output_gb" in reason


def test_a_run_that_writes_past_its_quota_and_exits_at_once_is_still_caught(tmp_path):
    out = run_spec(_spec(tmp_path, WRITE.format(files=5, size=8 * MB, sleep=0), output_gb=0.02))
    assert out.kind is ExitKind.OUTPUT and out.returncode == 0


def test_a_run_within_its_quota_is_left_alone(tmp_path):
    out = run_spec(_spec(tmp_path, WRITE.format(files=2, size=MB, sleep=0), output_gb=0.02))
    assert out.kind is ExitKind.OK and 0.0015 < out.extra["output_gb"] < 0.003


def test_too_many_files_in_the_output_folder_is_past_the_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "MAX_ENTRIES", 50)
    out = run_spec(_spec(tmp_path, WRITE.format(files=80, size=10, sleep=0), output_gb=1.0))
    assert out.kind is ExitKind.OUTPUT and "more than 50 files" in out.reason


def test_the_folder_size_counts_blocks_once_and_follows_no_link(tmp_path):
    (tmp_path / "a.bin").write_bytes(os.urandom(MB))
    os.link(tmp_path / "a.bin", tmp_path / "b.bin")             # the same file twice
    big = tmp_path.parent / f"{tmp_path.name}-outside.bin"
    big.write_bytes(os.urandom(4 * MB))
    (tmp_path / "link").symlink_to(big)                         # not followed
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.bin").write_bytes(os.urandom(MB))
    size, entries = storage.folder_size(tmp_path)
    assert 2 * MB <= size < 2 * MB + 64 * 1024 and entries == 5
    big.unlink()


# --- settings ----------------------------------------------------------------------------------------------


def test_storage_limits_default_from_the_memory_ceiling_and_reach_every_spec(tmp_path):
    base = {"metric": {"source": "json", "key": "m"}}
    run = config_mod.parse(tmp_path, {**base, "run": {"memory_gb": 4.0}}).run
    assert (run.tmp_size_gb, run.output_quota_gb) == (4.0, 4.0)
    run = config_mod.parse(tmp_path, {**base, "run": {"memory_gb": 0.5}}).run
    assert (run.tmp_size_gb, run.output_quota_gb) == (0.5, 1.0)
    run = config_mod.parse(tmp_path, base).run
    assert (run.tmp_size_gb, run.output_quota_gb) == (0.0, 8.0)
    config = config_mod.parse(tmp_path, {**base, "run": {"memory_gb": 4.0, "tmp_gb": 1, "output_gb": 2}})
    assert (config.run.tmp_size_gb, config.run.output_quota_gb) == (1.0, 2.0)
    spec = fold_specs(config, tmp_path / "runs", seed=0)[0][1]
    assert (spec.tmp_gb, spec.output_gb, spec.memory_gb) == (1.0, 2.0, 4.0)
    for key in ("tmp_gb", "output_gb"):
        with pytest.raises(UserError, match=rf"\[run\] {key}"):
            config_mod.parse(tmp_path, {**base, "run": {key: -1}})


def test_the_brief_states_the_storage_limits(tmp_path):
    config = config_mod.parse(tmp_path, {"metric": {"source": "json", "key": "m"}, "run": {"memory_gb": 2.0}})
    text = "\n".join(limits(config, [], None))
    assert "/tmp and /dev/shm are in memory (2 GB each, [run] tmp_gb) and count against the memory ceiling" in text
    assert "the output folder may hold 2 GB ([run] output_gb)" in text
    assert "up to 1800 s ([contention] deadline_cap)" in text


def test_a_new_exit_kind_is_a_crash_with_its_reason(tmp_path):
    spec = _spec(tmp_path, "")
    outcome = RunOutcome(spec, ExitKind.OUTPUT, -9, 3.0, reason="the run wrote 2.00 GB to its output folder, over "
                         "its 1 GB quota ([run] output_gb)")
    status, reason = _status(outcome, Score(math.nan, {}, ""), config_mod.parse(tmp_path, {"metric": {"pattern": "(x)"}}))
    assert (status, reason) == ("crash", outcome.reason)


def test_a_process_whose_root_is_the_hosts_is_never_read_as_the_sandboxs_tmpfs():
    """bwrap before it has set the sandbox up (or any process outside it) sees the host's /tmp: not counted."""
    assert storage.tmpfs_used(os.getpid()) is None
    assert storage.tmpfs_used(2**22 + 12345) is None        # no such process
