"""The bubblewrap command line that confines one run.

Inside the sandbox a run sees an ALLOW-LIST of paths and nothing else: the system folders, the interpreter
and its libraries (derived from the running Python and the run's command, see ``allowlist.py``), the
repository read-only, the run's read-only mounts, its own empty ``/tmp`` and ``/dev/shm`` (tmpfs of
``spec.tmp_gb`` each, whose contents the runner counts against the memory ceiling), a minimal read-only
``/dev`` (plus the NVIDIA nodes on a CUDA machine) and its own ``/proc``. There is no ``/home``, ``/root`` (beyond the
interpreter's own folder), ``/run``, ``/var``, ``/srv``, ``/mnt``, ``/media``, ``/opt`` or other project
folder, so no dataset kept there and no Unix socket of the host. It has its own PID, network (loopback only),
IPC and UTS namespaces, no capabilities (also when the tool runs as root), exactly the environment of its
``RunSpec``, and one writable place: ``spec.out_dir``. Every path in ``spec.hidden`` is covered by an empty
read-only tmpfs (a hidden file by ``/dev/null``), so the keys and the test split cannot be read; the root
itself is made read-only last. ``docs/threat-model.md`` says what this does and does not protect against.

Mount order matters when paths nest (``<repo>/.autoresearch`` hidden, ``.autoresearch/prepared`` read-only,
``.autoresearch/runs/<exp>/<fold>`` writable): mounts are applied parent first, so a deeper mount lands on
top of a shallower one, and bubblewrap creates the mount points it needs on the (still writable) tmpfs. The
hiding tmpfs mounts are made read-only at the very end.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

from autoresearch.errors import UserError
from autoresearch.runner import allowlist
from autoresearch.runner.spec import RunSpec

INSTALL_HINT = "install bubblewrap (`apt-get install bubblewrap`) or pass --no-sandbox to run without it"


class SandboxUnavailable(UserError):
    """bubblewrap is missing or cannot create namespaces on this machine."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the sandbox (bubblewrap) is not usable here: {detail}", INSTALL_HINT)


# What every confined process gets, a run or an agent (``jail.py``), besides its namespaces.
CONFINE = (
    "--die-with-parent",   # if bwrap dies, everything in the sandbox is killed with it
    "--new-session",       # setsid inside: no access to a controlling terminal (TIOCSTI)
    "--cap-drop", "ALL",   # as root, bwrap would otherwise keep every capability (and could umount)
)
# The options every run gets, before any path-specific mount: user (when possible), ipc, pid, net, uts,
# cgroup namespaces, so only loopback inside.
_BASE = ("--unshare-all", *CONFINE)


def system_args(allow: allowlist.AllowList, tmp_bytes: int = 0) -> list[str]:
    """The system folders (as links or read-only binds), then /dev, /proc and the private /tmp and /dev/shm
    (each ``tmp_bytes`` large when that is above 0 and bubblewrap can size a tmpfs)."""
    args: list[str] = []
    for path in allow.system:
        args += ["--ro-bind", str(path), str(path)]
    for target, link in allow.symlinks:
        args += ["--symlink", target, str(link)]
    size = ["--size", str(tmp_bytes)] if tmp_bytes > 0 and _sizes() else []
    return args + ["--dev", "/dev", "--proc", "/proc", *size, "--tmpfs", "/tmp", *size, "--tmpfs", "/dev/shm"]


@functools.lru_cache(maxsize=1)
def _sizes() -> bool:
    """Whether this bubblewrap sizes a tmpfs (``--size``, bubblewrap 0.5 and later)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--size" in (done.stdout + done.stderr)


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[bool, str]:
    """Try bwrap once with the options a run uses; (works, why not)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False, "the `bwrap` program is not on PATH"
    allow = allowlist.compute(["true"], {"PATH": "/usr/bin:/bin"}, Path("/nonexistent-repository"))
    cmd = [exe, *_BASE, *system_args(allow), "--remount-ro", "/dev", "--remount-ro", "/", "true"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"`{exe}` could not be started: {exc}"
    if done.returncode != 0:
        msg = (done.stderr or done.stdout).strip().splitlines()
        return False, f"`bwrap` failed a trial run (exit {done.returncode}): {msg[-1] if msg else 'no message'}"
    return True, ""


def available() -> bool:
    """True when bubblewrap is installed and works here (tried once per process, then cached)."""
    return _probe()[0]


def unavailable_reason() -> str:
    """Why ``available()`` is false ('' when it is true)."""
    return _probe()[1]


def require() -> str:
    """The bwrap program, or ``SandboxUnavailable`` saying why it cannot be used here."""
    ok, why = _probe()
    if not ok:
        raise SandboxUnavailable(why)
    return shutil.which("bwrap") or "bwrap"


def _depth(path: Path) -> int:
    return len(path.parts)


def _covers(parent: Path, path: Path, shown: list[Path]) -> bool:
    """True if hiding ``parent`` already hides ``path`` (no mount in between shows it again)."""
    if not (parent.is_dir() and path.is_relative_to(parent)):
        return False
    return not any(m != parent and m.is_relative_to(parent) and path.is_relative_to(m) for m in shown)


def _mount_ops(spec: RunSpec, out_dir: Path, cwd: Path,
               allow: allowlist.AllowList) -> list[tuple[Path, list[str]]]:
    """(destination, bwrap options) for every path-specific mount, in the order they must be applied."""
    ops: list[tuple[int, int, Path, list[str]]] = []  # (depth, rank at equal depth, path, args)
    for target, link in allow.etc_links:
        ops.append((_depth(link), 0, link, ["--symlink", target, str(link)]))
    for bind in allow.etc:
        ops.append((_depth(bind.dest), 0, bind.dest, ["--ro-bind", str(bind.src), str(bind.dest)]))
    if allow.cuda.sysfs:
        ops.append((1, 0, Path("/sys"), ["--ro-bind", "/sys", "/sys"]))
    for node in allow.cuda.devices:  # after --dev /dev; a plain bind would be nodev
        ops.append((_depth(node), 0, node, ["--dev-bind", str(node), str(node)]))
    ops.append((_depth(cwd), 0, cwd, ["--ro-bind", str(cwd), str(cwd)]))  # the repo, also when under /tmp
    for bind in allow.roots:  # the interpreter and its libraries (a venv under /tmp included)
        ops.append((_depth(bind.dest), 0, bind.dest, ["--ro-bind", str(bind.src), str(bind.dest)]))
    hidden = list(dict.fromkeys((cwd / raw).resolve() for raw in spec.hidden))  # relative: inside the repo
    shown = [cwd, out_dir, *(Path(m.path).resolve() for m in spec.readonly)]
    for path in hidden:
        if not path.exists():
            continue  # nothing to hide (and no mount point to hide it on)
        if any(_covers(parent, path, shown) for parent in hidden if parent != path):
            continue  # already hidden by a parent: a mount point would only reveal its name
        if path.is_dir():
            ops.append((_depth(path), 1, path, ["--tmpfs", str(path)]))
        else:
            ops.append((_depth(path), 1, path, ["--ro-bind", "/dev/null", str(path)]))
    for mount in spec.readonly:
        path = Path(mount.path).resolve()
        if not path.exists():
            raise UserError(
                f"run {spec.name!r}: the path to mount in the sandbox does not exist: {path}",
                "create it first (for prepared data: run the task's prepare step) or remove it from the run",
            )
        flag = "--bind" if mount.writable else "--ro-bind"
        ops.append((_depth(path), 2, path, [flag, str(path), str(path)]))
    ops.append((_depth(out_dir), 3, out_dir, ["--bind", str(out_dir), str(out_dir)]))
    ops.sort(key=lambda op: (op[0], op[1]))
    return [(path, args) for _, _, path, args in ops]


def _check_program(spec: RunSpec, cwd: Path, allow: allowlist.AllowList) -> None:
    """Refuse, with the reason, a run whose program the allow-list leaves out (a hop of its symlinks, or a
    Python's installation): inside, it would fail with a bare exec or encodings error."""
    program = allowlist.program_path(spec.command, spec.env)
    if program is None:
        return  # not found at all: the run fails and its log says so, as without a sandbox
    visible = [cwd, *(b.dest for b in allow.roots), *(Path(d) for d in allowlist.SYSTEM_DIRS),
               *(Path(m.path).resolve() for m in spec.readonly)]
    for hop in allowlist.needed_paths(program):
        if not any(hop == v or hop.is_relative_to(v) for v in visible):
            raise UserError(
                f"run {spec.name!r}: the program {program} would not be visible in the sandbox ({hop} is outside "
                "its allow-list: a folder that contains the repository, or /, is never mounted whole)",
                "install the interpreter outside the folder that holds the repository (or inside the repository), "
                "or pass --no-sandbox to run without the sandbox")


def wrap(spec: RunSpec) -> list[str]:
    """The bubblewrap command line that runs ``spec.command`` confined (see the module docstring).

    ``spec.out_dir`` must exist (the runner creates it); relative ``spec.hidden`` paths are taken inside
    ``spec.cwd``, and hidden paths that do not exist are skipped. The environment inside is exactly ``spec.env``
    (``--clearenv`` then one ``--setenv`` per variable); bwrap adds only ``PWD``. Raises
    ``SandboxUnavailable`` when bubblewrap does not work here, ``UserError`` for a missing read-only mount or
    for a program that the allow-list would leave out.
    """
    exe = require()
    out_dir = Path(spec.out_dir).resolve()
    cwd = Path(spec.cwd).resolve()
    allow = allowlist.compute(spec.command, spec.env, cwd)
    _check_program(spec, cwd, allow)
    args = [exe, *_BASE, *system_args(allow, int(spec.tmp_gb * 2**30))]
    ops = _mount_ops(spec, out_dir, cwd, allow)
    for _, op in ops:
        args += op
    for path, op in ops:  # the hiding tmpfs mounts become read-only once everything is mounted on them
        if op[0] == "--tmpfs":
            args += ["--remount-ro", str(path)]
    args += ["--remount-ro", "/dev"]  # its own mount only (not recursive): /dev/shm stays writable, nodes work
    args += ["--remount-ro", "/"]  # the root tmpfs holds only mount points: nothing may be written there
    args += ["--chdir", str(cwd), "--clearenv"]
    for key, value in spec.env.items():
        args += ["--setenv", key, value]
    args += ["--", *spec.command]
    return args
