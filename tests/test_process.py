"""The process runner without a sandbox: exit codes, log, environment, deadline, grace, memory, cleanup."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from autoresearch.errors import UserError
from autoresearch.runner.spec import ExitKind, RunSpec
from autoresearch.runner.process import INHERITED, run_spec
from procs import alive


def make_spec(tmp_path: Path, body: str, **kw) -> RunSpec:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    defaults = dict(name="t", command=(sys.executable, str(script)), cwd=tmp_path, env={},
                    out_dir=tmp_path / "out", log_path=tmp_path / "out" / "log.txt", timeout_s=20.0,
                    grace_s=2.0, sandbox=False)
    defaults.update(kw)
    return RunSpec(**defaults)


def read_pids(path: Path, count: int, timeout: float = 5.0) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            pids = [int(x) for x in path.read_text().split()]
            if len(pids) >= count:
                return pids
        time.sleep(0.05)
    raise AssertionError(f"{path} did not get {count} pids")


def test_exit_code_and_log_hold_both_streams(tmp_path):
    spec = make_spec(tmp_path, """
        import sys
        print("to stdout", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        sys.exit(7)
    """)
    lines = []
    out = run_spec(spec, on_line=lambda s, line: lines.append(line))
    assert (out.kind, out.returncode, out.reason) == (ExitKind.ERROR, 7, "exit code 7")
    log = spec.log_path.read_text()
    assert "to stdout\n" in log and "to stderr\n" in log
    assert log.startswith("# autoresearch run t: ") and "script.py" in log.splitlines()[0]
    assert log.splitlines()[-1].startswith("# outcome: error: exit code 7")
    assert lines == ["to stdout", "to stderr"]


def test_success_and_killed_by_signal(tmp_path):
    ok = run_spec(make_spec(tmp_path, "print('fine')"))
    assert (ok.kind, ok.returncode) == (ExitKind.OK, 0)
    killed = run_spec(make_spec(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    assert killed.kind is ExitKind.ERROR and killed.reason == "killed by signal 9"


def test_env_is_only_what_is_passed(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "sk-secret")
    body = "import json, os; json.dump(dict(os.environ), open(os.environ['OUT'] + '/env.json', 'w'))"
    spec = make_spec(tmp_path, body, env={"OUT": str(tmp_path / "out")})
    assert run_spec(spec).kind is ExitKind.OK
    env = json.loads((tmp_path / "out" / "env.json").read_text())
    assert "FAKE_API_KEY" not in env
    assert set(env) <= {"OUT", "PATH", "HOME", "LANG", *INHERITED}
    assert {"OUT", "PATH", "HOME", "LANG"} <= set(env)
    spec = make_spec(tmp_path, body, env={"OUT": str(tmp_path / "out"), "FAKE_API_KEY": "given"})
    run_spec(spec)
    assert json.loads((tmp_path / "out" / "env.json").read_text())["FAKE_API_KEY"] == "given"


TREE = textwrap.dedent("""
    import os, signal, sys, time
    out = sys.argv[1]
    if os.fork() == 0:                       # child
        if os.fork() == 0:                   # grandchild: ignores SIGTERM, needs SIGKILL
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open(out + "/pids", "a").write(f"{os.getpid()}\\n")
            time.sleep(120)
            os._exit(0)
        open(out + "/pids", "a").write(f"{os.getpid()}\\n")
        time.sleep(120)
        os._exit(0)
    open(out + "/pids", "a").write(f"{os.getpid()}\\n")
""")


def test_timeout_kills_loop_and_descendants(tmp_path):
    out_dir = tmp_path / "out"
    spec = make_spec(tmp_path, TREE + "while True:\n    pass\n", timeout_s=1.5, grace_s=0.5,
                     out_dir=out_dir)
    spec = RunSpec(**{**spec.__dict__, "command": (*spec.command, str(out_dir))})
    t0 = time.monotonic()
    out = run_spec(spec)
    assert out.kind is ExitKind.TIMEOUT
    assert out.reason.startswith("killed at the 1.5 s deadline")
    assert time.monotonic() - t0 < 6
    pids = read_pids(out_dir / "pids", 3)
    assert not [pid for pid in pids if alive(pid)]


def test_grace_period_lets_the_handler_finish(tmp_path):
    spec = make_spec(tmp_path, """
        import os, signal, sys, time
        def bye(*_):
            time.sleep(0.3)   # some cleanup work, well within the grace period
            open(os.environ["OUT"] + "/handled", "w").write("yes")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        while True:
            time.sleep(0.05)
    """, env={"OUT": str(tmp_path / "out")}, timeout_s=1.0, grace_s=5.0)
    t0 = time.monotonic()
    out = run_spec(spec)
    assert out.kind is ExitKind.TIMEOUT and "within the 5 s grace" in out.reason
    assert (tmp_path / "out" / "handled").read_text() == "yes"
    assert time.monotonic() - t0 < 4  # did not sit out the whole grace period


def test_leftover_group_members_die_with_the_run(tmp_path):
    spec = make_spec(tmp_path, """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open(os.environ["OUT"] + "/pids", "w").write(str(child.pid))
    """, env={"OUT": str(tmp_path / "out")})
    assert run_spec(spec).kind is ExitKind.OK
    (pid,) = read_pids(tmp_path / "out" / "pids", 1)
    assert not alive(pid)


ALLOCATE = """
    import os, sys, time
    blocks = []
    for _ in range(int(float(sys.argv[1]) * 16)):    # 64 MiB at a time, touched so that it is resident
        blocks.append(b"x" * (64 << 20))
        time.sleep(0.03)
    time.sleep(float(sys.argv[2]))
"""


def test_memory_ceiling_kills_a_2gb_allocation(tmp_path):
    spec = make_spec(tmp_path, ALLOCATE, memory_gb=0.5)
    spec = RunSpec(**{**spec.__dict__, "command": (*spec.command, "2", "0")})
    out = run_spec(spec)
    assert out.kind is ExitKind.MEMORY
    assert out.reason.startswith("exceeded the 0.5 GB memory ceiling")
    assert 0.5 < out.peak_rss_gb < 1.5
    assert "# outcome: memory" in spec.log_path.read_text()


def test_peak_rss_is_measured(tmp_path):
    spec = make_spec(tmp_path, ALLOCATE)
    spec = RunSpec(**{**spec.__dict__, "command": (*spec.command, "0.25", "0.6")})
    out = run_spec(spec)
    assert out.kind is ExitKind.OK
    assert 0.22 < out.peak_rss_gb < 0.6


def test_keyboard_interrupt_leaves_no_child(tmp_path):
    out_dir = tmp_path / "out"
    spec = make_spec(tmp_path, TREE + "time.sleep(120)\n", out_dir=out_dir, grace_s=30)
    spec = RunSpec(**{**spec.__dict__, "command": (*spec.command, str(out_dir))})

    def interrupt():
        read_pids(out_dir / "pids", 3)
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Thread(target=interrupt, daemon=True)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_spec(spec)
    timer.join()
    assert time.monotonic() - t0 < 10  # a short grace, not the spec's 30 s
    assert not [pid for pid in read_pids(out_dir / "pids", 3) if alive(pid)]
    assert "# outcome: interrupted" in spec.log_path.read_text()


def test_broken_progress_callback_does_not_break_the_run(tmp_path):
    def boom(spec, line):
        raise RuntimeError("display gone")

    out = run_spec(make_spec(tmp_path, "print('a'); print('b')"), on_line=boom)
    assert out.kind is ExitKind.OK
    assert "progress callback failed" in (tmp_path / "out" / "log.txt").read_text()


def test_bad_specs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="command is empty"):
        run_spec(make_spec(tmp_path, "", command=()))
    with pytest.raises(UserError, match="deadline must be positive"):
        run_spec(make_spec(tmp_path, "", timeout_s=0))
    missing = run_spec(make_spec(tmp_path, "", command=(str(tmp_path / "nope"),)))
    assert missing.kind is ExitKind.ERROR and "could not start" in missing.reason
