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
from autoresearch.runner import allowlist, process, sandbox, threads
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
    def uconnect(path):  # a Unix-domain socket; "@name" is an abstract one
        def go():
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(2)
            s.connect("\\0" + path[1:] if path.startswith("@") else path)
            s.close()
        return go
    def exists(path):
        def go():
            os.stat(path)
        return go
    result = {}
    for arg in sys.argv[1:]:
        action, _, target = arg.partition(":")
        fn = {"read": read, "write": write, "connect": lambda t: connect(int(t)), "uconnect": uconnect,
              "exists": exists,
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
                f"write:{state}/runs/e1/f0/metrics.json", "write:/tmp/scratch", "write:/planted")
    for target in ("train.py", "new.py", ".git/HEAD", ".git/refs_new"):
        assert res[f"write:{repo}/{target}"] == "EROFS", target
    assert res[f"write:{state}/prepared/meta.json"] == "EROFS"
    assert res[f"write:{state}/planted"] == "EROFS"
    assert res[f"write:{state}/runs/e1/f0/metrics.json"] == "ok"
    assert res["write:/tmp/scratch"] == "ok"  # a private tmpfs
    assert res["write:/planted"] == "EROFS"  # the sandbox's own root holds mount points only
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
    setup = {*threads.THREAD_VARS, *threads.WAIT_VARS}              # the runner's thread set-up, every run
    assert set(env) == {"OUT", "PATH", "HOME", "LANG", "PWD"} | inherited | setup  # PWD: bwrap --chdir


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
@pytest.mark.slow
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
@pytest.mark.slow
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


# --------------------------------------------------------------------------------- the allow-list

# Folders a run must never see whole; they may exist inside only as the way to an allowed folder
# (/root/.pyenv/versions/X for a pyenv interpreter, /work/<project>/.venv for a venv).
FORBIDDEN = ("/home", "/root", "/run", "/var", "/srv", "/mnt", "/media", "/opt", "/work", "/boot")

WALK = """
    import json, os, sys
    stop = set(json.loads(sys.argv[1]))      # allowed folders: listed, not entered
    found = []
    def walk(folder):
        for entry in os.scandir(folder):
            if entry.path in ("/proc", "/dev", "/tmp", "/sys"):
                continue
            found.append(entry.path)
            if entry.path not in stop and entry.is_dir(follow_symlinks=False):
                walk(entry.path)
    walk("/")
    json.dump(found, open(os.environ["OUT"] + "/walk.json", "w"))
"""


@pytest.fixture
def outside(tmp_path):
    """A folder outside the repository and outside /tmp (as a dataset or a daemon's socket would be)."""
    import shutil
    import tempfile

    base = next((d for d in ("/var/tmp", "/srv", str(Path.home())) if os.path.isdir(d) and os.access(d, os.W_OK)), None)
    if base is None:
        pytest.skip("no writable folder outside /tmp to put the raw data in")
    folder = Path(tempfile.mkdtemp(dir=base, prefix="ar-outside-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class UnixServer:
    """A listening Unix-domain socket on the host (a database's or a container engine's, say)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind("\0" + path[1:] if path.startswith("@") else path)
        self.sock.listen(8)

    def close(self) -> None:
        self.sock.close()


def _ancestor_or_inside(path: Path, allowed: list[Path]) -> bool:
    return any(path == a or a.is_relative_to(path) or path.is_relative_to(a) for a in allowed)


@needs_bwrap
def test_a_run_sees_the_allow_list_and_nothing_else(repo, outside):
    raw = outside / "ukiyoe"
    (raw / "images").mkdir(parents=True)
    (raw / "ukiyoe_vg_train_pgt_odvg.jsonl").write_text('{"filename": "a.jpg"}\n')
    (raw / "images" / "a.jpg").write_bytes(b"\xff\xd8 raw image bytes")
    spec = spec_for(repo)
    allow = sandbox.allowlist.compute(spec.command, spec.env, repo.resolve())
    roots = [b.dest for b in allow.roots]
    # what the allow-list is made of: never a forbidden folder whole, never the raw data, never a home
    for root in roots:
        assert str(root) not in FORBIDDEN and root != Path("/") and root != Path.home(), root
        assert not raw.resolve().is_relative_to(root) and not repo.resolve().is_relative_to(root), root
    allowed = [Path(p) for p in allow.system] + roots + [repo.resolve(), Path("/etc")]
    (repo / "walk.py").write_text(textwrap.dedent(WALK))
    script = spec_for(repo, command=(sys.executable, str(repo / "walk.py"), json.dumps([str(p) for p in allowed])))
    assert run_spec(script).kind is ExitKind.OK, script.log_path.read_text()
    seen = [Path(p) for p in json.loads((script.out_dir / "walk.json").read_text())]
    links = [link for _, link in allow.symlinks]
    stray = [p for p in seen if p not in links and not _ancestor_or_inside(p, allowed)]
    assert stray == [], f"visible outside the allow-list: {stray[:20]}"
    assert str(repo.resolve() / "probe.py") not in map(str, seen)  # the repo is listed, not entered
    assert any(p.is_relative_to(Path(sys.base_prefix).resolve()) or p == Path(sys.base_prefix)
               for p in seen) or allowlist.covered_by_system(sys.base_prefix)
    # and each forbidden folder, where it exists inside, only leads to an allowed folder
    res = probe(repo, *(f"exists:{d}" for d in FORBIDDEN), f"exists:{raw}", f"exists:{outside}",
                f"read:{raw}/ukiyoe_vg_train_pgt_odvg.jsonl", f"read:{raw}/images/a.jpg", "list:/etc")
    for d in FORBIDDEN:
        if res[f"exists:{d}"] == "ok":
            assert any(r.is_relative_to(d) for r in roots + [repo.resolve()]), d
    assert res[f"exists:{raw}"] == res[f"exists:{outside}"] == "ENOENT"
    assert res[f"read:{raw}/images/a.jpg"] == "ENOENT"
    assert set(res["listing:/etc"]) == {b.dest.name for b in allow.etc} | {link.name for _, link in allow.etc_links}
    assert "passwd" in res["listing:/etc"] and "shadow" not in res["listing:/etc"]
    # without the sandbox the raw data is right there: the test is able to fail
    assert probe(repo, f"read:{raw}/images/a.jpg", sandboxed=False)[f"read:{raw}/images/a.jpg"] == "ok"


@needs_bwrap
def test_host_unix_sockets_cannot_be_reached(repo, outside):
    import tempfile

    host_tmp = Path(tempfile.mkdtemp(dir="/tmp", prefix="ar-sock-"))
    servers = [UnixServer(str(outside / "engine.sock")), UnixServer(str(host_tmp / "db.sock")),
               UnixServer(f"@ar-test-{os.getpid()}-{time.monotonic_ns()}")]
    try:
        targets = [f"uconnect:{s.path}" for s in servers]
        plain = probe(repo, *targets, sandboxed=False)
        assert all(plain[t] == "ok" for t in targets), plain  # reachable from the host: the test can fail
        boxed = probe(repo, *targets)
        assert boxed[targets[0]] == "ENOENT"          # its folder is not in the allow-list
        assert boxed[targets[1]] == "ENOENT"          # the host's /tmp is not the run's /tmp
        assert boxed[targets[2]] == "ECONNREFUSED"    # abstract sockets belong to the network namespace
    finally:
        for s in servers:
            s.close()
        import shutil

        shutil.rmtree(host_tmp, ignore_errors=True)


@needs_bwrap
@pytest.mark.skipif(not os.path.isfile("/usr/bin/python3"), reason="no system Python at /usr/bin/python3")
def test_the_system_python_runs_in_the_sandbox(repo):
    spec = spec_for(repo, command=("/usr/bin/python3", str(repo / "probe.py"), f"exists:{sys.prefix}"))
    out = run_spec(spec)
    assert out.kind is ExitKind.OK, spec.log_path.read_text()
    res = json.loads((spec.out_dir / "result.json").read_text())
    if not allowlist.covered_by_system(sys.prefix) and not allowlist.is_running_python(Path("/usr/bin/python3")):
        assert res[f"exists:{sys.prefix}"] == "ENOENT"  # the tool's own environment is not the run's


def test_wrap_mounts_no_whole_root_and_makes_the_root_read_only(repo, monkeypatch):
    monkeypatch.setattr(sandbox, "_probe", lambda: (True, ""))
    argv = sandbox.wrap(spec_for(repo))
    pairs = list(zip(argv, argv[1:], argv[2:]))
    assert ("--ro-bind", "/", "/") not in pairs and ("--bind", "/", "/") not in pairs
    dests = [c for a, b, c in pairs if a in ("--ro-bind", "--bind", "--dev-bind")]
    assert not set(dests) & set(FORBIDDEN)
    ro_root = max(i for i, a in enumerate(argv) if a == "--remount-ro" and argv[i + 1] == "/")
    last_mount = max(i for i, a in enumerate(argv) if a in ("--ro-bind", "--bind", "--dev-bind", "--tmpfs"))
    assert ro_root > last_mount


def _touch_exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    path.chmod(0o755)
    return path


def test_another_interpreter_is_derived_from_its_path_alone(tmp_path):
    """A venv of another Python: its root, the base install (pyvenv.cfg's home), .pth folders and editable
    finders' package folders; never run, never the folder that holds the repository."""
    base = tmp_path / "pyenv" / "versions" / "3.12.1"
    real = _touch_exe(base / "bin" / "python3.12")
    (base / "bin" / "python3").symlink_to("python3.12")
    base_site = base / "lib" / "python3.12" / "site-packages"
    base_site.mkdir(parents=True)
    extra, rel, pkg = tmp_path / "extra", base_site / "rel", tmp_path / "pkgsrc" / "pkg"
    for d in (extra, rel, pkg):
        d.mkdir(parents=True)
    (base_site / "a.pth").write_text(f"# comment\n{extra}\nrel\nimport os\n{tmp_path}/missing\n")
    (base_site / "__editable___pkg_1_0_finder.py").write_text(f"import sys\nMAPPING = {{'pkg': {str(pkg)!r}}}\n")
    venv = tmp_path / "home" / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(base / "bin" / "python3")
    (venv / "pyvenv.cfg").write_text(f"home = {base / 'bin'}\ninclude-system-site-packages = false\n")
    venv_site = venv / "lib" / "python3.12" / "site-packages"
    venv_site.mkdir(parents=True)
    (venv_site / "b.pth").write_text(f"{tmp_path / 'home'}\n")   # a .pth naming the folder above the repo
    exe = venv / "bin" / "python"
    assert allowlist.venv_root(exe) == venv and not allowlist.is_running_python(exe)
    roots = {Path(p) for p in allowlist.python_roots(exe)}
    assert {venv, base, extra, rel, pkg} <= roots and real.parent in roots
    binds = allowlist.minimal_binds(roots, repo=tmp_path / "home" / "repo")
    dests = {b.dest for b in binds}
    assert {venv, base, extra, pkg} <= dests
    assert rel not in dests                           # inside the base install, which is bound whole
    assert tmp_path / "home" not in dests             # it holds the repository: never mounted whole
    # the command's program decides: this venv's python gets this venv, not the tool's own
    roots = allowlist.command_roots([str(exe)], {})
    dests = {b.dest for b in allowlist.minimal_binds(roots, repo=tmp_path / "home" / "repo")}
    assert {venv, base} <= dests and Path(sys.prefix) not in dests


def test_mapped_libraries_count_only_executable_mappings():
    maps = ("7f00-7f01 r-xp 00000000 00:00 1 /opt/conda/lib/libpython3.11.so.1.0\n"
            "7f01-7f02 rw-s 00000000 00:00 2 /srv/repo/.autoresearch/ledger.sqlite-shm\n"
            "7f02-7f03 r-xp 00000000 00:00 3 /tmp/old/libx.so (deleted)\n"
            "7f03-7f04 r-xp 00000000 00:00 0 [vdso]\n")
    assert allowlist.mapped_library_dirs(maps) == [Path("/opt/conda/lib")]


def test_cuda_allow_list_from_fake_inputs():
    ldconfig = textwrap.dedent("""\
        1234 libs found in cache `/etc/ld.so.cache'
        \tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1
        \tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1
        \tlibcudadebugger.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcudadebugger.so.1
        \tlibnvidia-ml.so.1 (libc6,x86-64) => /run/nvidia/driver/usr/lib64/libnvidia-ml.so.1
        \tlibnvidia-ptxjitcompiler.so.1 (libc6,x86-64) => /run/nvidia/driver/usr/lib64/libnvidia-ptxjitcompiler.so.1
        \tlibcuda.so.1 (libc6) => /usr/lib/i386-linux-gnu/libcuda.so.1
        \tlibcudart.so.12 (libc6,x86-64) => /opt/cuda/lib64/libcudart.so.12
    """)
    covered = lambda p: str(p).startswith(("/usr/", "/lib/"))  # noqa: E731 (the system folders)
    cuda = allowlist.cuda_allowance(["null", "nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools",
                                     "nvidia-modeset", "nvidia-caps", "tty", "dri"], ldconfig, covered)
    assert cuda.devices == tuple(Path("/dev") / n for n in ("nvidia-caps", "nvidia-modeset", "nvidia-uvm",
                                                            "nvidia-uvm-tools", "nvidia0", "nvidia1", "nvidiactl"))
    # only the driver's libraries, only outside the system folders; the CUDA runtime comes with torch
    assert cuda.libdirs == (Path("/run/nvidia/driver/usr/lib64"),)
    assert cuda.sysfs
    assert allowlist.cuda_allowance(["null", "tty"], ldconfig, covered) == allowlist.Cuda()


def test_wrap_binds_the_cuda_nodes_with_dev_bind(repo, monkeypatch):
    monkeypatch.setattr(sandbox, "_probe", lambda: (True, ""))
    fake = allowlist.Cuda((Path("/dev/nvidia0"), Path("/dev/nvidiactl")), (Path("/opt/nvidia-driver/lib"),), True)
    monkeypatch.setattr(allowlist, "cuda_on_this_machine", lambda: fake)
    real = allowlist.minimal_binds  # the fake driver folder does not exist here: add it by hand
    monkeypatch.setattr(allowlist, "minimal_binds", lambda roots, repo: real(roots, repo) + [
        allowlist.Bind(Path(r), Path(r)) for r in roots if str(r).startswith("/opt/nv")])
    argv = sandbox.wrap(spec_for(repo))
    triples = list(zip(argv, argv[1:], argv[2:]))
    assert ("--dev-bind", "/dev/nvidia0", "/dev/nvidia0") in triples
    assert ("--dev-bind", "/dev/nvidiactl", "/dev/nvidiactl") in triples
    assert ("--ro-bind", "/opt/nvidia-driver/lib", "/opt/nvidia-driver/lib") in triples
    assert ("--ro-bind", "/sys", "/sys") in triples
    assert argv.index("--dev") < argv.index("/dev/nvidia0")  # on top of the minimal /dev, not under it


def test_a_program_the_allow_list_leaves_out_is_a_user_error(tmp_path, monkeypatch):
    """An interpreter installed in the folder that holds the repository: that folder is never mounted whole,
    so the run would fail with a bare exec error inside; the tool says why before it starts."""
    monkeypatch.setattr(sandbox, "_probe", lambda: (True, ""))
    home = tmp_path / "home"
    exe = _touch_exe(home / "bin" / "python3.99")
    repo = home / "repo"
    (repo / "out").mkdir(parents=True)
    spec = RunSpec(name="fold0", command=(str(exe), "train.py"), cwd=repo, env={}, out_dir=repo / "out",
                   log_path=repo / "log.txt", timeout_s=5)
    with pytest.raises(UserError, match="would not be visible in the sandbox") as info:
        sandbox.wrap(spec)
    assert "--no-sandbox" in info.value.hint


def test_a_non_python_program_brings_its_installation_but_never_a_home(tmp_path, monkeypatch):
    tool = _touch_exe(tmp_path / "opt" / "tool" / "bin" / "tool")
    assert tmp_path / "opt" / "tool" in allowlist.command_roots([str(tool)], {})
    home = tmp_path / "home" / "alice"
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    script = _touch_exe(home / "bin" / "train.sh")
    roots = allowlist.command_roots([str(script)], {})
    assert home / "bin" in roots and home not in roots
