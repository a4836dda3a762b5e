"""The bubblewrap sandbox, one attack per test, on the layout a research repository really has.

    repo/train.py, repo/.git/...                      read-only
    repo/.autoresearch/ledger.sqlite, runs/e0/...     hidden (the tool's state, other runs)
    repo/.autoresearch/secret/keys/test.json          hidden (keys and test split)
    repo/.autoresearch/prepared/meta.json             read-only (mounted back in)
    repo/.autoresearch/runs/e1/f0/                    the run's out_dir: the only writable place
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from autoresearch.errors import UserError
from autoresearch.runner import process, sandbox
from autoresearch.runner.spec import ExitKind, Mount, RunSpec
from autoresearch.runner.process import run_spec
from procs import alive, procs_running


needs_bwrap = pytest.mark.skipif(not sandbox.available(),
                                 reason=f"bubblewrap does not work here: {sandbox.unavailable_reason()}")

PROBE = """
    import errno, json, os, socket, sys
    out = os.environ["OUT"]
    def attempt(fn):
        try:
            fn()
            return "ok"
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc))
    def read(path):
        return lambda: open(path, "rb").read()
    def write(path):
        return lambda: open(path, "a").write("x")
    def connect(port):
        def go():
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.close()
        return go
    result = {}
    for arg in sys.argv[1:]:
        action, _, target = arg.partition(":")
        fn = {"read": read, "write": write, "connect": lambda t: connect(int(t)),
              "list": lambda t: (lambda: result.__setitem__("listing:" + t, sorted(os.listdir(t))))}[action]
        result[arg] = attempt(fn(target))
    result["env"] = dict(os.environ)
    json.dump(result, open(out + "/result.json", "w"))
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    state = repo / ".autoresearch"
    for sub in ("secret/keys", "prepared", "runs/e0/f0", "runs/e1/f0", "../.git"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (repo / "train.py").write_text("LR = 1e-3\n")
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (state / "ledger.sqlite").write_text("ledger")
    (state / "secret" / "keys" / "test.json").write_text('{"pairs": {}}')
    (state / "prepared" / "meta.json").write_text('{"format": 1}')
    (state / "runs" / "e0" / "f0" / "log.txt").write_text("another run")
    (repo / "probe.py").write_text(textwrap.dedent(PROBE))
    return repo


def spec_for(repo: Path, args=(), script: str | None = None, sandboxed=True, **kw) -> RunSpec:
    state = repo / ".autoresearch"
    out_dir = state / "runs" / "e1" / "f0"
    if script is not None:
        (repo / "probe.py").write_text(textwrap.dedent(script))
    defaults = dict(name="fold0", command=(sys.executable, str(repo / "probe.py"), *args), cwd=repo,
                    env={"OUT": str(out_dir)}, out_dir=out_dir, log_path=out_dir / "log.txt", timeout_s=20.0,
                    grace_s=1.0, sandbox=sandboxed, readonly=(Mount(state / "prepared"),),
                    hidden=(state / "secret", state))
    defaults.update(kw)
    return RunSpec(**defaults)


def probe(repo: Path, *args: str, sandboxed=True) -> dict:
    spec = spec_for(repo, args, sandboxed=sandboxed)
    out = run_spec(spec)
    assert out.kind is ExitKind.OK, spec.log_path.read_text()
    return json.loads((spec.out_dir / "result.json").read_text())


# --------------------------------------------------------------------------------- the command line


def test_wrap_orders_nested_mounts_parent_first(repo, monkeypatch):
    monkeypatch.setattr(sandbox, "_probe", lambda: (True, ""))
    state_dir = repo / ".autoresearch"
    (state_dir / "prepared" / "private").mkdir()
    hidden = (state_dir / "secret", state_dir / "prepared" / "private", state_dir)
    spec = spec_for(repo, env={"A": "1"}, hidden=hidden)
    argv = sandbox.wrap(spec)
    state = str((repo / ".autoresearch").resolve())
    out_dir = str(spec.out_dir.resolve())

    def at(*seq):
        for i in range(len(argv) - len(seq) + 1):
            if tuple(argv[i:i + len(seq)]) == seq:
                return i
        raise AssertionError(f"{seq} not in {argv}")

    assert ("--tmpfs", state + "/secret") not in zip(argv, argv[1:])  # inside a hidden parent already
    assert at("--tmpfs", state) < at("--ro-bind", state + "/prepared", state + "/prepared")
    # hidden inside a mount that shows part of a hidden parent again: applied after that mount
    assert at("--ro-bind", state + "/prepared", state + "/prepared") < at("--tmpfs", state + "/prepared/private")
    assert at("--ro-bind", state + "/prepared", state + "/prepared") < at("--bind", out_dir, out_dir)
    assert at("--bind", out_dir, out_dir) < at("--remount-ro", state)
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in argv
    assert at("--cap-drop", "ALL") < at("--", *spec.command)
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--setenv"] == ["A"]


def test_unavailable_sandbox_is_a_user_error_with_the_fix(repo, monkeypatch):
    monkeypatch.setattr(sandbox, "_probe", lambda: (False, "the `bwrap` program is not on PATH"))
    with pytest.raises(sandbox.SandboxUnavailable) as info:
        run_spec(spec_for(repo))
    assert isinstance(info.value, UserError)
    assert "apt-get install bubblewrap" in str(info.value) and "--no-sandbox" in str(info.value)


def test_missing_readonly_mount_is_a_user_error(repo, monkeypatch):
    monkeypatch.setattr(sandbox, "_probe", lambda: (True, ""))
    with pytest.raises(UserError, match="does not exist"):
        sandbox.wrap(spec_for(repo, readonly=(Mount(repo / "nowhere"),)))


# --------------------------------------------------------------------------------- attacks


@needs_bwrap
def test_hidden_files_cannot_be_read(repo):
    state = repo / ".autoresearch"
    res = probe(repo, f"read:{state}/secret/keys/test.json", f"read:{state}/ledger.sqlite",
                f"read:{state}/runs/e0/f0/log.txt", f"list:{state}", f"read:{state}/prepared/meta.json")
    assert res[f"read:{state}/secret/keys/test.json"] == "ENOENT"
    assert res[f"read:{state}/ledger.sqlite"] == "ENOENT"
    assert res[f"read:{state}/runs/e0/f0/log.txt"] == "ENOENT"
    assert res[f"listing:{state}"] == ["prepared", "runs"]
    assert res[f"read:{state}/prepared/meta.json"] == "ok"
    # without the sandbox the same reads work: the test is able to fail
    assert probe(repo, f"read:{state}/secret/keys/test.json", sandboxed=False)[
        f"read:{state}/secret/keys/test.json"] == "ok"


@needs_bwrap
def test_repository_git_and_data_are_read_only_out_dir_is_writable(repo):
    state = repo / ".autoresearch"
    res = probe(repo, f"write:{repo}/train.py", f"write:{repo}/new.py", f"write:{repo}/.git/HEAD",
                f"write:{repo}/.git/refs_new", f"write:{state}/prepared/meta.json", f"write:{state}/planted",
                f"write:{state}/runs/e1/f0/metrics.json", "write:/tmp/scratch")
    for target in ("train.py", "new.py", ".git/HEAD", ".git/refs_new"):
        assert res[f"write:{repo}/{target}"] == "EROFS", target
    assert res[f"write:{state}/prepared/meta.json"] == "EROFS"
    assert res[f"write:{state}/planted"] == "EROFS"
    assert res[f"write:{state}/runs/e1/f0/metrics.json"] == "ok"
    assert res["write:/tmp/scratch"] == "ok"  # a private tmpfs
    assert (state / "runs" / "e1" / "f0" / "metrics.json").read_text() == "x"
    assert (repo / "train.py").read_text() == "LR = 1e-3\n"
    assert not (repo / "new.py").exists()


@needs_bwrap
def test_no_network_inside_but_loopback_works_outside(repo):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        target = f"connect:{listener.getsockname()[1]}"
        assert probe(repo, target)[target] == "ECONNREFUSED"
        assert probe(repo, target, sandboxed=False)[target] == "ok"


@needs_bwrap
def test_environment_does_not_leak(repo, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "sk-secret")
    env = probe(repo)["env"]
    assert "FAKE_API_KEY" not in env
    inherited = {k for k in process.INHERITED if k in os.environ}  # device, thread and BLAS settings only
    assert set(env) == {"OUT", "PATH", "HOME", "LANG", "PWD"} | inherited  # PWD is set by bwrap --chdir


DAEMON = """
    import os, sys, time
    out = os.environ["OUT"]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            open(out + "/ready", "w").write(str(os.getpid()))
            time.sleep(120)
        os._exit(0)
    while not os.path.exists(out + "/ready"):
        time.sleep(0.02)
"""


@needs_bwrap
def test_daemon_does_not_outlive_the_run(repo):
    spec = spec_for(repo, script=DAEMON)
    out = run_spec(spec)
    assert out.kind is ExitKind.OK, spec.log_path.read_text()
    assert (spec.out_dir / "ready").exists()
    time.sleep(0.2)
    assert procs_running(str(repo / "probe.py")) == []


FORKS = """
    import os, signal, time
    for i in range(200):                    # bounded: 200 sleeping children that escape the group
        if os.fork() == 0:
            os.setsid()
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(120)
            os._exit(0)
    open(os.environ["OUT"] + "/forked", "w").write("200")
    time.sleep(120)
"""


@needs_bwrap
def test_many_children_all_die_at_the_deadline(repo):
    spec = spec_for(repo, script=FORKS, timeout_s=3.0, grace_s=0.5)
    out = run_spec(spec)
    assert out.kind is ExitKind.TIMEOUT
    assert (spec.out_dir / "forked").read_text() == "200"
    time.sleep(0.2)
    assert procs_running(str(repo / "probe.py")) == []


@needs_bwrap
def test_grace_period_reaches_the_program_inside(repo):
    script = """
        import os, signal, sys, time
        def bye(*_):
            open(os.environ["OUT"] + "/handled", "w").write("yes")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        while True:
            time.sleep(0.05)
    """
    spec = spec_for(repo, script=script, timeout_s=1.0, grace_s=5.0)
    out = run_spec(spec)
    assert out.kind is ExitKind.TIMEOUT and "within the 5 s grace" in out.reason
    assert (spec.out_dir / "handled").read_text() == "yes"


@needs_bwrap
def test_memory_ceiling_and_signal_deaths_inside(repo):
    script = """
        import os, signal, time
        blocks = []
        for _ in range(16):                  # up to 1 GiB in 64 MiB steps
            blocks.append(b"x" * (64 << 20))
            time.sleep(0.03)
        os.kill(os.getpid(), signal.SIGKILL)
    """
    out = run_spec(spec_for(repo, script=script, memory_gb=0.3))
    assert out.kind is ExitKind.MEMORY and 0.3 < out.peak_rss_gb < 1.0
    out = run_spec(spec_for(repo, script=script))
    assert out.kind is ExitKind.ERROR and out.reason.startswith("killed by signal 9")
    assert out.peak_rss_gb > 0.8


@needs_bwrap
def test_keyboard_interrupt_in_a_sandbox_leaves_no_child(repo):
    spec = spec_for(repo, script=FORKS, grace_s=30)

    def interrupt():
        end = time.monotonic() + 10
        while not (spec.out_dir / "forked").exists() and time.monotonic() < end:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    with pytest.raises(KeyboardInterrupt):
        run_spec(spec)
    thread.join()
    time.sleep(0.2)
    assert procs_running(str(repo / "probe.py")) == []
    assert alive(os.getpid())


@needs_bwrap
def test_root_inside_cannot_unmount_the_hiding_tmpfs(repo):
    state = repo / ".autoresearch"
    script = f"""
        import ctypes, errno, os
        libc = ctypes.CDLL(None, use_errno=True)
        codes = []
        for path in ({str(state)!r}, {str(state / "prepared")!r}):
            rc = libc.umount2(path.encode(), 2)          # MNT_DETACH
            codes.append(errno.errorcode.get(ctypes.get_errno(), "?") if rc else "unmounted")
        try:
            open({str(state / "secret" / "keys" / "test.json")!r}).read()
            codes.append("read")
        except OSError as exc:
            codes.append(errno.errorcode[exc.errno])
        open(os.environ["OUT"] + "/result.json", "w").write(",".join(codes))
    """
    spec = spec_for(repo, script=script)
    assert run_spec(spec).kind is ExitKind.OK, spec.log_path.read_text()
    assert (spec.out_dir / "result.json").read_text() == "EPERM,EPERM,ENOENT"


@needs_bwrap
def test_an_interpreter_in_a_virtual_environment_under_tmp_stays_visible(repo, tmp_path_factory):
    """CI clones into /tmp: the sandbox's private /tmp must not hide the clone's virtual environment."""
    import subprocess
    import tempfile

    venv = Path(tempfile.mkdtemp(dir="/tmp", prefix="ar-venv-"))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                       check=True)
        spec = spec_for(repo, script="import os, sys; open(os.environ['OUT'] + '/who', 'w').write(sys.prefix)",
                        command=(str(venv / "bin" / "python"), str(repo / "probe.py")))
        out = run_spec(spec)
        assert out.kind is ExitKind.OK, spec.log_path.read_text()
        assert (spec.out_dir / "who").read_text() == str(venv)
    finally:
        import shutil

        shutil.rmtree(venv, ignore_errors=True)
