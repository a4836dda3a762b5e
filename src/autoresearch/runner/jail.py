"""The bubblewrap command line for an agent's own process (Claude Code, a user's command-line agent).

A run is confined by ``sandbox.py``; an agent that runs as a process of its own gets the same treatment,
with two differences: it keeps the host's network (it talks to its API), and it writes to its working
copy. Inside the jail the agent sees an ALLOW-LIST and nothing else:

- the system folders and the few ``/etc`` files of a run (``allowlist.py``), read-only, plus what name
  resolution and TLS need: ``resolv.conf`` (its target when it is a link), ``hosts``, ``gai.conf``,
  ``host.conf``, ``services``, ``protocols``, the CA certificates (``ssl/certs``, ``ca-certificates``,
  ``pki/tls/certs``, ``pki/ca-trust``), ``ssl/openssl.cnf`` and a generated ``nsswitch.conf`` that asks
  DNS (never ``ssl/private``);
- the program and what it needs, derived from the command, never listed: every hop of its symlinks, its
  installation folder, for a script its interpreter's (``#!/usr/bin/env node`` is looked up on the jail's
  ``PATH``), for a Node.js package the ``node_modules`` folder holding it, for a Python the interpreter's
  folders (as a run gets them); and the folder of every absolute path among its arguments (a user's agent
  script) — all read-only;
- the WORKING COPY (``workdir``), writable, its working folder; the agent's private ``home``, writable;
  the ``readonly`` extras (the past runs' logs copied for it, a copy of the brief), read-only;
- its own ``/proc`` (own PID namespace), a minimal ``/dev``, a private ``/tmp`` and ``/dev/shm`` of at most
  ``tmp_bytes`` each (memory-backed: bounded so an agent cannot fill the host's memory there).

It has its own PID, IPC, UTS and cgroup namespaces (and user namespace when possible), no capabilities,
``--new-session`` (no terminal to inject keystrokes into), ``--die-with-parent`` (when the tool kills the
jail's bwrap, everything inside dies, daemons included), exactly the environment it is given
(``--clearenv``), and a read-only root. NOT visible: the repository, its ``.git`` and ``.autoresearch``
(ledger, keys, runs), other slots' working copies, the raw dataset, the host's ``/home``, ``/root``,
``/run``, ``/var``, ``/tmp``. Paths in ``forbidden`` are checked: a derived folder that contains one or
lies inside one is left out (the program then refused if it needs it), and a workdir or extra that
overlaps one is refused. When the workdir is the repository itself (an engine from before working
copies), its ``.git``, ``.autoresearch`` and the paths of ``hidden`` are covered by empty read-only tmpfs.

``run`` runs the jailed command with stdin, a deadline (the whole process group killed, which takes the
PID namespace with it) and bounded output. ``docs/threat-model.md`` says what this does not cover.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from autoresearch.errors import UserError
from autoresearch.runner import allowlist, sandbox

TMP_BYTES = 512 << 20          # the jail's /tmp and /dev/shm, each
OUTPUT_BYTES = 8 << 20         # the end of stdout kept (the result is printed last)
ERROR_BYTES = 64 << 10         # the end of stderr kept
KILL_WAIT_S = 5.0
NET_ETC = ("hosts", "host.conf", "gai.conf", "services", "protocols", "ssl/certs", "ssl/openssl.cnf",
           "ca-certificates", "ca-certificates.conf", "pki/tls/certs", "pki/ca-trust")
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
ALWAYS_HIDDEN = (".git", ".autoresearch")


@dataclass(frozen=True)
class AgentJail:
    """Where a jailed agent may look and write (see the module docstring)."""

    workdir: Path                                  # the working copy: writable, the working folder
    home: Path                                     # the agent's private HOME: writable
    readonly: tuple[Path, ...] = ()                # read-only extras at the same path (runs view, brief)
    forbidden: tuple[Path, ...] = ()               # never visible: repository, state, raw data, other slots
    hidden: tuple[Path, ...] = ()                  # inside the workdir: covered (legacy: workdir = repo)
    tmp_bytes: int = TMP_BYTES
    extra_roots: tuple[Path, ...] = field(default=())   # more read-only folders the program needs


# ---------------------------------------------------------------------------------------------- the program


def _shebang(path: Path) -> list[str]:
    """The interpreter line of a script (``["/usr/bin/env", "node"]``), or [] for a binary."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return []
    if not head.startswith(b"#!"):
        return []
    return head[2:].split(b"\n", 1)[0].decode("utf-8", errors="replace").split()


def _node_modules(real: Path) -> list[Path]:
    """The ``node_modules`` folder a Node.js package lies in (its dependencies sit beside it)."""
    for parent in real.parents:
        if parent.name == "node_modules":
            return [parent]
    return []


def program_roots(program: Path, env: Mapping[str, str], depth: int = 0) -> list[Path]:
    """The folders ``program`` needs to start, derived from its path (see the module docstring)."""
    program = Path(os.path.abspath(program))
    if allowlist.is_python(program):
        return (allowlist.running_python_roots() if allowlist.is_running_python(program)
                else allowlist.python_roots(program))
    real = Path(os.path.realpath(program))
    roots = [p.parent for p in allowlist.symlink_chain(program)]
    roots += [allowlist.program_folder(program)] + _node_modules(real)
    line = _shebang(real)
    if line and depth < 2:
        interpreter = line[0]
        if Path(interpreter).name == "env":
            rest = [a for a in line[1:] if not a.startswith("-")]
            interpreter = (shutil.which(rest[0], path=env.get("PATH", os.defpath)) or "") if rest else ""
            roots += [Path(os.path.abspath(line[0])).parent]
        if interpreter and os.path.isabs(interpreter):
            roots += program_roots(Path(interpreter), env, depth + 1)
    return roots


def _argument_roots(command: Sequence[str]) -> list[Path]:
    """The folder of every absolute path among the arguments (a script the interpreter runs)."""
    roots = []
    for arg in command[1:]:
        if os.path.isabs(arg) and os.path.exists(arg):
            roots.append(Path(arg) if os.path.isdir(arg) else Path(arg).parent)
    return roots


# ---------------------------------------------------------------------------------------------- /etc


_GENERATED: dict[str, Path] = {}


def _nsswitch() -> Path:
    """A generated nsswitch.conf that resolves host names with DNS (a run's says files only)."""
    folder = _GENERATED.get("etc")
    if folder is None or not (folder / "nsswitch.conf").is_file():
        folder = Path(tempfile.mkdtemp(prefix="autoresearch-agent-etc-"))
        folder.chmod(0o755)
        (folder / "nsswitch.conf").write_text(NSSWITCH, encoding="utf-8")
        (folder / "nsswitch.conf").chmod(0o644)
        if "etc" not in _GENERATED:
            atexit.register(lambda: shutil.rmtree(_GENERATED.get("etc", ""), ignore_errors=True))
        _GENERATED["etc"] = folder
    return folder / "nsswitch.conf"


def _network_etc(etc: Path = Path("/etc")) -> list[allowlist.Bind]:
    """What name resolution and TLS read from ``/etc``, bound read-only (links resolved to their target)."""
    binds = []
    resolv = etc / "resolv.conf"
    if resolv.exists():
        binds.append(allowlist.Bind(Path(os.path.realpath(resolv)), resolv))
    for name in NET_ETC:
        path = etc / name
        if path.exists():
            binds.append(allowlist.Bind(Path(os.path.realpath(path)), path))
    binds.append(allowlist.Bind(_nsswitch(), etc / "nsswitch.conf"))
    return binds


# ---------------------------------------------------------------------------------------------- the jail


def _overlaps(path: Path, forbidden: Sequence[Path]) -> Path | None:
    for f in forbidden:
        if path == f or path.is_relative_to(f) or f.is_relative_to(path):
            return f
    return None


def wrap_agent(command: Sequence[str], env: Mapping[str, str], jail: AgentJail) -> list[str]:
    """The bubblewrap command line running ``command`` in ``jail`` with exactly ``env``.

    Raises ``SandboxUnavailable`` when bubblewrap does not work here, ``UserError`` when the program is not
    found, when the workdir or an extra overlaps a forbidden path, or when the program would be invisible."""
    try:
        exe = sandbox.require()
    except sandbox.SandboxUnavailable as exc:
        raise UserError(f"the agent's jail (bubblewrap) is not usable here: {sandbox.unavailable_reason()}",
                        hint="install bubblewrap (`apt-get install bubblewrap`), or set [agent] sandbox = false "
                             "(or pass --no-sandbox) to run the agent unconfined") from exc
    program = allowlist.program_path(command, env)
    if program is None:
        raise UserError(f"the agent's program {command[0]!r} is not found on its PATH",
                        hint="give its absolute path, or fix [agent] command / claude_path")
    workdir = Path(os.path.realpath(jail.workdir))
    home = Path(os.path.realpath(jail.home))
    forbidden = [Path(os.path.realpath(f)) for f in jail.forbidden]
    readonly = [Path(os.path.realpath(p)) for p in jail.readonly]
    for what, path in [("working copy", workdir), ("home", home), *(("read-only path", p) for p in readonly)]:
        if (hit := _overlaps(path, forbidden)) is not None:
            raise UserError(f"the agent's {what} {path} overlaps {hit}, which an agent must never see",
                            hint="give the agent a working copy outside the repository and its state folder")
    allow = allowlist.compute(["true"], {"PATH": "/usr/bin:/bin"}, workdir)   # system folders and /etc
    roots = program_roots(program, env) + _argument_roots(command) + list(jail.extra_roots)
    binds = [b for b in allowlist.minimal_binds(roots, workdir)
             if _overlaps(b.src, forbidden) is None and _overlaps(b.dest, forbidden) is None
             and not home.is_relative_to(b.dest) and not b.dest.is_relative_to(home)]
    visible = [workdir, home, *readonly, *(b.dest for b in binds), *(Path(d) for d in allowlist.SYSTEM_DIRS)]
    needed = [(f"program {program}", hop) for hop in allowlist.needed_paths(program)]
    needed += [(f"argument {arg}", Path(os.path.realpath(arg))) for arg in command[1:]
               if os.path.isabs(arg) and os.path.exists(arg)]
    for what, path in needed:
        if not any(path == v or path.is_relative_to(v) for v in visible):
            raise UserError(f"the agent's {what} would not be visible in its jail ({path} is left out: a folder "
                            "holding the repository, its state or the raw data is never shown)",
                            hint="install the agent and its files outside the folders that hold the repository")
    ops: list[tuple[int, int, Path, list[str]]] = []
    for target, link in allow.etc_links:
        ops.append((len(link.parts), 0, link, ["--symlink", target, str(link)]))
    etc = {b.dest: b for b in allow.etc if b.dest.name not in ("hosts", "nsswitch.conf")}
    etc.update({b.dest: b for b in _network_etc()})
    for bind in etc.values():
        ops.append((len(bind.dest.parts), 0, bind.dest, ["--ro-bind", str(bind.src), str(bind.dest)]))
    for bind in binds:
        ops.append((len(bind.dest.parts), 0, bind.dest, ["--ro-bind", str(bind.src), str(bind.dest)]))
    for path in readonly:
        ops.append((len(path.parts), 1, path, ["--ro-bind", str(path), str(path)]))
    ops.append((len(home.parts), 1, home, ["--bind", str(home), str(home)]))
    ops.append((len(workdir.parts), 1, workdir, ["--bind", str(workdir), str(workdir)]))
    covered = []
    for raw in (*ALWAYS_HIDDEN, *jail.hidden):
        path = Path(os.path.realpath(workdir / raw))
        if path != workdir and path.is_relative_to(workdir) and os.path.lexists(path):
            flag = ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
            ops.append((len(path.parts), 2, path, flag))
            covered.append(path)
    ops.sort(key=lambda op: (op[0], op[1]))
    args = [exe, "--unshare-all", "--share-net", *sandbox.CONFINE, *sandbox.system_args(allow, jail.tmp_bytes)]
    for _, _, _, op in ops:
        args += op
    for path in covered:
        if path.is_dir():
            args += ["--remount-ro", str(path)]
    args += ["--remount-ro", "/", "--chdir", str(workdir), "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return [*args, "--", *command]


def for_agent(repo: Path, denied: Sequence[Path], workdir: Path, home: Path,
              readonly: Sequence[Path] = ()) -> AgentJail:
    """The jail of an agent process working on ``workdir``: the repository ``repo``, its state folder and
    every ``denied`` path (relative ones taken in ``repo``) outside the working copy are forbidden; those
    inside it (an engine that still passes the repository itself, or a worktree inside it) are covered."""
    work = Path(os.path.realpath(workdir))
    repo = Path(os.path.realpath(repo))
    forbidden, hidden = [], []
    for raw in [repo, repo / ".autoresearch", *denied]:
        path = Path(os.path.realpath(raw if Path(raw).is_absolute() else repo / raw))
        if path.is_relative_to(work):
            hidden.append(path)
        elif not work.is_relative_to(path):
            forbidden.append(path)
    return AgentJail(workdir=work, home=Path(home), readonly=tuple(Path(p) for p in readonly),
                     forbidden=tuple(forbidden), hidden=tuple(hidden))


# ---------------------------------------------------------------------------------------------- running


@dataclass
class Finished:
    """How a jailed (or plain) agent process ended."""

    stdout: str
    stderr: str
    returncode: int | None
    seconds: float
    timed_out: bool = False


def _drain(stream, keep: int, out: list[bytes]) -> None:
    """Read ``stream`` to its end, keeping only its last ``keep`` bytes."""
    buf = bytearray()
    while chunk := stream.read(65536):
        buf += chunk
        if len(buf) > 2 * keep:
            del buf[:-keep]
    out.append(bytes(buf[-keep:]))


def _feed(stream, data: bytes) -> None:
    try:
        stream.write(data)
        stream.close()
    except (BrokenPipeError, OSError):       # the agent did not read its stdin: not our failure
        pass


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (a jail's bwrap takes its PID namespace with it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(cmd: Sequence[str], cwd: Path, env: Mapping[str, str], stdin: str, timeout_s: float) -> Finished:
    """Run ``cmd`` in its own session and process group with ``stdin``; at ``timeout_s`` kill the whole
    group. Output is decoded leniently, and only its end is kept (``OUTPUT_BYTES``, ``ERROR_BYTES``)."""
    started = time.monotonic()
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    out: list[bytes] = []
    err: list[bytes] = []
    threads = [threading.Thread(target=_feed, args=(proc.stdin, stdin.encode("utf-8", errors="replace")),
                                daemon=True),
               threading.Thread(target=_drain, args=(proc.stdout, OUTPUT_BYTES, out), daemon=True),
               threading.Thread(target=_drain, args=(proc.stderr, ERROR_BYTES, err), daemon=True)]
    for t in threads:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout=max(0.0, timeout_s))
    except subprocess.TimeoutExpired:
        timed_out = True
    except BaseException:
        kill_group(proc)
        proc.wait()
        raise
    kill_group(proc)             # whatever the agent left in its group dies with it
    if timed_out:
        proc.wait()
    for t in threads[1:]:
        t.join(KILL_WAIT_S)
    text = lambda parts: (parts[0] if parts else b"").decode("utf-8", errors="replace")  # noqa: E731
    return Finished(text(out), text(err), proc.returncode, time.monotonic() - started, timed_out)
