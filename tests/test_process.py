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
from autoresearch.runner.threads import THREAD_VARS
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
    assert set(env) <= {"OUT", "PATH", "HOME", "LANG", *INHERITED, *THREAD_VARS}
    assert {"OUT", "PATH", "HOME", "LANG", *THREAD_VARS} <= set(env)   # every run gets the thread set-up
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# --- live output ---------------------------------------------------------------------------------------

TICKER = """
    import os, sys, time
    out = os.environ["OUT"]
    open(out + "/run.pid", "w").write(str(os.getpid()))
    i = 0
    while not os.path.exists(out + "/release"):
        print(f"line {i}", flush=True)
        i += 1
        time.sleep(0.3)
    print("released", flush=True)
"""


def wait_for(predicate, what: str, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_log_holds_each_line_while_the_run_is_still_running(tmp_path):
    """Lines printed every 0.3 s are in the log file while the run goes on (not only at its end)."""
    out_dir = tmp_path / "out"
    spec = make_spec(tmp_path, TICKER, env={"OUT": str(out_dir)})
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("out", run_spec(spec)), daemon=True)
    runner.start()
    try:
        wait_for(lambda: spec.log_path.exists() and "line 2\n" in spec.log_path.read_text(), "line 2 in the log")
        assert runner.is_alive() and "out" not in result   # the run has not ended: the log filled as it printed
        log = spec.log_path.read_text()
        assert "line 0\nline 1\nline 2\n" in log and "# outcome" not in log
    finally:
        (out_dir / "release").write_text("")
        runner.join(30)
    assert result["out"].kind is ExitKind.OK
    assert spec.log_path.read_text().splitlines()[-2] == "released"


TOOL = """
    import sys
    from pathlib import Path
    from autoresearch.runner.spec import RunSpec
    from autoresearch.runner.process import run_spec
    script, out = Path(sys.argv[1]), Path(sys.argv[2])
    acks = open(out.parent / "acks", "a")      # beside the output folder, which the runner makes fresh
    def ack(spec, line):        # the tool has handed this line on: it must already be in the log
        acks.write(line + "\\n")
        acks.flush()
    spec = RunSpec(name="t", command=(sys.executable, str(script)), cwd=script.parent, env={"OUT": str(out)},
                   out_dir=out, log_path=out / "log.txt", timeout_s=120.0, grace_s=1.0, sandbox=False)
    run_spec(spec, on_line=ack)
"""


def test_a_killed_tool_keeps_the_lines_printed_before_the_kill(tmp_path):
    """SIGKILL of the tool itself (a python running run_spec) mid-run: the log keeps every line it read."""
    import subprocess

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(TICKER))
    tool_py = tmp_path / "tool.py"
    tool_py.write_text(textwrap.dedent(TOOL))
    tool = subprocess.Popen([sys.executable, str(tool_py), str(script), str(out_dir)])
    run_pid = None
    try:
        def three_acks():
            acked = (tmp_path / "acks").read_text().splitlines() if (tmp_path / "acks").exists() else []
            return len(acked) >= 3

        wait_for(three_acks, "three lines handed on by the tool")
        tool.kill()
        tool.wait(10)
        acks = (tmp_path / "acks").read_text().splitlines()
        assert acks[:3] == ["line 0", "line 1", "line 2"]
        run_pid = int((out_dir / "run.pid").read_text())
        log = (out_dir / "log.txt").read_text()
        assert log.startswith("# autoresearch run t: ")
        for line in acks:
            assert f"{line}\n" in log, f"{line!r} was handed on before the kill but is not in the log"
        assert "# outcome" not in log   # the tool really died mid-run
    finally:
        if tool.poll() is None:
            tool.kill()
        if run_pid is None and (out_dir / "run.pid").exists():
            run_pid = int((out_dir / "run.pid").read_text())
        if run_pid is not None and alive(run_pid):
            os.kill(run_pid, signal.SIGKILL)
