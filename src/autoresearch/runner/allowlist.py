"""What a sandboxed run may see besides its repository: the allow-list, derived from this machine.

The sandbox starts from an empty root. Every path a run can see is one of these (read-only unless said):

- **the system**: ``/usr`` and the top-level ``/bin``, ``/sbin``, ``/lib``, ``/lib32``, ``/lib64``, ``/libx32``
  (recreated as the symlinks they are on a merged-``/usr`` system, bound read-only where they are folders);
- **a few files of /etc** that the dynamic loader and the C library read (``ld.so.cache``, ``ld.so.conf``,
  ``ld.so.conf.d``, ``localtime``, ``os-release``, ``alternatives``), and generated minimal ``passwd``,
  ``group``, ``hosts`` and ``nsswitch.conf`` (the run's own user, root and nobody; ``localhost``; files only);
- **the interpreter**, derived, not listed: for the Python the tool runs in, ``sys.prefix``,
  ``sys.base_prefix`` and the exec prefixes, its site-packages folders and the folders their ``.pth`` files
  and setuptools' editable finders add, the folders of every shared library the process has mapped
  (``/proc/self/maps``), and the folders on the interpreter's symlink chain; for a run command whose program
  is another Python (a second venv, conda, ``/usr/bin/python3``), the same derived statically from its path
  (venv root, ``pyvenv.cfg``'s ``home``, its install prefix, site-packages and ``.pth`` files); the folder
  of a non-Python program that lives outside the system folders; folders named by ``PYTHONPATH`` in the
  run's own environment;
- **CUDA**, only when ``/dev/nvidia*`` nodes exist: those nodes (``--dev-bind``: a plain bind would carry
  ``nodev``), the folders of the NVIDIA driver libraries that ``ldconfig -p`` lists (``libcuda*``,
  ``libnvidia*``) when they lie outside the system folders, and ``/sys`` read-only (the driver's
  initialisation reads ``/sys/module/nvidia`` and ``/sys/bus/pci``; sysfs describes hardware and holds no
  user files or sockets).

Never mounted whole, whatever the interpreter says: ``/`` itself, and any folder that contains the
repository (a ``.pth`` line naming a home folder would otherwise expose everything beside the repository).
A folder on the list is visible whole: data kept inside a virtual environment or under ``/usr`` is visible.
``sandbox.py`` adds the repository, the run's own mounts, ``/dev``, ``/proc`` and a private ``/tmp``.
"""

from __future__ import annotations

import ast
import atexit
import functools
import os
import grp
import pwd
import re
import shutil
import site
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Read by the dynamic loader (ld.so.*), the C library's time functions (localtime), platform and
# distro probes (os-release) and Debian's alternatives symlinks (/usr/bin/awk -> /etc/alternatives/awk).
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "os-release", "alternatives")
_PYTHON = re.compile(r"(python|pypy)[0-9.]*")
# The driver's user-space libraries (libcuda, libnvidia-*, the video and OptiX ones), not the CUDA runtime
# (libcudart, libcublas...), which a framework ships in its own site-packages.
_NVIDIA_LIB = re.compile(r"^\s*(lib(?:cuda|cudadebugger|nvidia-[^\s.]+|nvcuvid|nvoptix)\.so\S*)\s+"
                         r"\(([^)]*)\)\s+=>\s+(\S.*?)\s*$")


@dataclass(frozen=True)
class Bind:
    """``src`` made visible at ``dest`` (the same path unless a symlinked folder is on the way)."""

    src: Path
    dest: Path


@dataclass(frozen=True)
class Cuda:
    """The CUDA part of the allow-list: device nodes to ``--dev-bind``, driver library folders to bind
    read-only (only those outside the system folders), and whether ``/sys`` is needed."""

    devices: tuple[Path, ...] = ()
    libdirs: tuple[Path, ...] = ()
    sysfs: bool = False


@dataclass(frozen=True)
class AllowList:
    symlinks: tuple[tuple[str, Path], ...]   # (target, link): /lib -> usr/lib on a merged-/usr system
    system: tuple[Path, ...]                 # system folders bound read-only at the same path
    etc: tuple[Bind, ...]                    # /etc files (some generated), read-only
    etc_links: tuple[tuple[str, Path], ...]  # /etc entries that are symlinks into the system folders
    roots: tuple[Bind, ...]                  # interpreter and library folders, read-only, none nested
    cuda: Cuda = Cuda()


# ---------------------------------------------------------------------------------------------- paths


def _inside(path: Path, parents: Iterable[Path]) -> bool:
    return any(path == p or path.is_relative_to(p) for p in parents)


def _system_real() -> list[Path]:
    """Where the system folders really are (``/lib`` may be ``/usr/lib``)."""
    return [Path(os.path.realpath(d)) for d in SYSTEM_DIRS if os.path.isdir(d)]


def covered_by_system(path: Path | str) -> bool:
    """True if ``path`` resolves into a system folder, which every run sees anyway."""
    return _inside(Path(os.path.realpath(path)), _system_real())


def symlink_chain(exe: Path) -> list[Path]:
    """``exe`` and every path its symlinks lead through, absolute (a venv's python -> the base python)."""
    chain, seen = [], set()
    current = Path(os.path.abspath(exe))
    while current not in seen and len(chain) < 40:
        seen.add(current)
        chain.append(current)
        if not current.is_symlink():
            break
        target = Path(os.readlink(current))
        current = Path(os.path.abspath(current.parent / target)) if not target.is_absolute() else target
    return chain


def venv_root(exe: Path) -> Path | None:
    """The virtual environment ``exe`` belongs to (the folder holding ``pyvenv.cfg``), without resolving
    the symlink that points the venv's python at its base interpreter."""
    exe = Path(os.path.abspath(exe))
    for folder in (exe.parent.parent, exe.parent):
        if (folder / "pyvenv.cfg").is_file():
            return folder
    return None


def _pyvenv_home(root: Path) -> Path | None:
    try:
        text = (root / "pyvenv.cfg").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "home" and value.strip():
            return Path(value.strip())
    return None


def _site_dirs(prefix: Path) -> list[Path]:
    found = []
    for lib in ("lib", "lib64"):
        for name in ("site-packages", "dist-packages"):
            found += sorted((prefix / lib).glob(f"python3*/{name}"))
    return [p for p in found if p.is_dir()]


def pth_dirs(site_dirs: Iterable[Path]) -> list[Path]:
    """Folders that the ``.pth`` files of these site folders put on ``sys.path`` (editable installs), and
    the package folders of setuptools' editable finders (``__editable___*_finder.py``, ``MAPPING``)."""
    found: list[Path] = []
    for folder in site_dirs:
        folder = Path(folder)
        for pth in sorted(folder.glob("*.pth")):
            try:
                lines = pth.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if not line or line.startswith("#") or line.startswith(("import ", "import\t")):
                    continue  # what site.addpackage skips or executes: no path
                path = Path(line) if os.path.isabs(line) else folder / line
                if path.is_dir():
                    found.append(Path(os.path.abspath(path)))
        for finder in sorted(folder.glob("__editable___*_finder.py")):
            found += _finder_mapping(finder)
    return found


def _finder_mapping(path: Path) -> list[Path]:
    """The package folders in an editable finder's ``MAPPING = {...}`` (read, never executed)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "MAPPING" for t in node.targets):
            try:
                mapping = ast.literal_eval(node.value)
            except ValueError:
                return []
            if isinstance(mapping, dict):
                return [Path(v) for v in mapping.values() if isinstance(v, str) and os.path.isdir(v)]
    return []


def mapped_library_dirs(maps: str | None = None) -> list[Path]:
    """Folders of the files this process has mapped executable (its shared libraries), from /proc/self/maps.

    Only executable mappings count: a data file the tool maps (SQLite's WAL index) is not a library."""
    if maps is None:
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
                maps = fh.read()
        except OSError:
            return []
    found = set()
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1]:
            continue
        path = parts[5].strip()
        if path.startswith("/") and not path.endswith(" (deleted)") and not path.startswith(("/dev/", "/memfd:")):
            found.add(Path(path).parent)
    return sorted(found)


# ---------------------------------------------------------------------------------------------- interpreters


def running_python_roots() -> list[Path]:
    """What the Python the tool runs in needs: prefixes, site folders, .pth folders, mapped libraries."""
    roots = [Path(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}]
    try:
        sites = [Path(p) for p in site.getsitepackages()]
    except AttributeError:  # an old virtualenv's site module
        sites = []
    sites += _site_dirs(Path(sys.prefix))
    sites = [s for s in dict.fromkeys(sites) if s.is_dir()]
    roots += sites + pth_dirs(sites) + mapped_library_dirs()
    roots += [p.parent for p in symlink_chain(Path(sys.executable))]
    return roots


def install_prefix(exe: Path) -> Path:
    """Where the program's installation lives: ``/x/bin/prog`` -> ``/x`` (of the real file, links followed)."""
    real = Path(os.path.realpath(exe))
    return real.parent.parent if real.parent.name == "bin" else real.parent


def is_python(exe: Path) -> bool:
    return _PYTHON.fullmatch(Path(os.path.realpath(exe)).name) is not None


def needed_paths(program: Path) -> list[Path]:
    """Paths that must be visible for ``program`` to start: every hop of its symlinks and, for a Python,
    its installation (the standard library lives there)."""
    return symlink_chain(program) + ([install_prefix(program)] if is_python(program) else [])


def python_roots(exe: Path) -> list[Path]:
    """What another Python needs, derived from its path alone (it is never executed to find out)."""
    roots = [p.parent for p in symlink_chain(exe)]
    prefixes = [install_prefix(exe)]
    venv = venv_root(exe)
    if venv is not None:
        prefixes.append(venv)
        home = _pyvenv_home(venv)
        if home is not None:
            prefixes.append(home.parent if home.name == "bin" else home)
    roots += prefixes
    for prefix in prefixes:
        sites = _site_dirs(prefix)
        roots += sites + pth_dirs(sites)
    return roots


def is_running_python(exe: Path) -> bool:
    """True if ``exe`` starts the same environment as the Python the tool runs in."""
    exe = Path(os.path.abspath(exe))
    if exe == Path(os.path.abspath(sys.executable)):
        return True
    venv = venv_root(exe)
    if venv is not None:
        return os.path.realpath(venv) == os.path.realpath(sys.prefix)
    return os.path.realpath(exe) == os.path.realpath(sys.executable) and sys.prefix == sys.base_prefix


def program_path(command: Sequence[str], env: Mapping[str, str]) -> Path | None:
    """The program a command runs: absolute as given, else looked up on the run's own PATH."""
    if not command:
        return None
    if os.path.isabs(command[0]):
        return Path(command[0])
    found = shutil.which(command[0], path=env.get("PATH", os.defpath))
    return Path(os.path.abspath(found)) if found else None


def command_roots(command: Sequence[str], env: Mapping[str, str]) -> list[Path]:
    """The folders the run's program needs, beyond the system folders and the repository."""
    program = program_path(command, env)
    roots: list[Path] = []
    if program is not None and is_python(program) and not is_running_python(program):
        roots += python_roots(program)     # another interpreter: only what it needs
    else:
        roots += running_python_roots()    # the tool's Python, or a script that will likely call it
        if program is not None:
            roots.append(program_folder(program))
    for entry in env.get("PYTHONPATH", "").split(os.pathsep):
        if entry and os.path.isabs(entry) and os.path.isdir(entry):
            roots.append(Path(entry))
    return roots


def program_folder(program: Path) -> Path:
    """A non-Python program's installation (``/opt/tool`` for ``/opt/tool/bin/tool``), or only its own folder
    when that installation would be a home folder or a top-level one (``~/bin/tool``, ``/opt/bin/tool``)."""
    prefix = install_prefix(program)
    broad = len(prefix.parts) <= 2 or prefix == Path.home() or (len(prefix.parts) == 3 and prefix.parts[1] == "home")
    return Path(os.path.realpath(program)).parent if broad else prefix


def minimal_binds(roots: Iterable[Path], repo: Path) -> list[Bind]:
    """Binds for ``roots``: each at its real path and at the path as given (a symlinked folder on the way),
    without "/", folders containing the repository, folders inside the repository or a system folder,
    or folders inside another bind."""
    repo = Path(os.path.realpath(repo))
    system = _system_real()
    binds: dict[Path, Bind] = {}
    for root in roots:
        given = Path(os.path.abspath(root))
        real = Path(os.path.realpath(given))
        if not real.is_dir() or real == Path("/") or repo.is_relative_to(real):
            continue
        if _inside(real, system) or real.is_relative_to(repo):
            continue  # already visible (system folders, the repository) or hidden on purpose (its state)
        for dest in dict.fromkeys((real, given)):
            if dest == Path("/") or repo.is_relative_to(dest) or dest.is_relative_to(repo):
                continue
            binds.setdefault(dest, Bind(real, dest))
    ordered = sorted(binds.values(), key=lambda b: len(b.dest.parts))
    kept: list[Bind] = []
    for b in ordered:
        # inside another bind, and the same files there (a venv's lib64 -> lib link resolves alike inside)
        if not any(b.dest.is_relative_to(k.dest) and os.path.realpath(k.src / b.dest.relative_to(k.dest)) == str(b.src)
                   for k in kept):
            kept.append(b)
    return kept


# ---------------------------------------------------------------------------------------------- CUDA


def cuda_allowance(dev_entries: Iterable[str], ldconfig_output: str,
                   covered: Callable[[Path], bool] = covered_by_system, dev: Path = Path("/dev")) -> Cuda:
    """The CUDA part of the allow-list from what ``/dev`` holds and what ``ldconfig -p`` prints.

    Nothing when there is no ``nvidia*`` entry in ``dev_entries``. Otherwise every such node (and the
    ``nvidia-caps`` folder, MIG's capability nodes) is device-bound, ``/sys`` is needed, and the folder of
    each ``libcuda*``/``libnvidia*`` library that ``covered`` (the system folders) does not already show is
    bound. All of them are bound, whatever ``CUDA_VISIBLE_DEVICES`` says: CUDA's device order is not the
    order of the ``/dev/nvidiaN`` minors, so the variable selects among them at run time as before."""
    devices = tuple(dev / name for name in sorted(set(dev_entries)) if name.startswith("nvidia"))
    if not devices:
        return Cuda()
    libdirs: dict[Path, None] = {}
    for line in ldconfig_output.splitlines():
        match = _NVIDIA_LIB.match(line)
        if match:
            folder = Path(match.group(3)).parent
            if folder.is_absolute() and not covered(folder):
                libdirs[folder] = None
    return Cuda(devices, tuple(libdirs), True)


@functools.lru_cache(maxsize=1)
def cuda_on_this_machine() -> Cuda:
    """``cuda_allowance`` for this machine (``ldconfig -p`` runs only when NVIDIA nodes exist)."""
    try:
        entries = [name for name in os.listdir("/dev") if name.startswith("nvidia")]
    except OSError:
        return Cuda()
    if not entries:
        return Cuda()
    ldconfig = shutil.which("ldconfig", path="/sbin:/usr/sbin:/usr/bin:/bin") or "ldconfig"
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""  # no driver libraries found: the nodes alone, CUDA then says what it misses
    return cuda_allowance(entries, out)


# ---------------------------------------------------------------------------------------------- /etc


_GENERATED: dict[str, Path] = {}


def _generated_etc() -> Path:
    """A private folder holding minimal passwd, group, hosts and nsswitch.conf for the sandbox's /etc.

    The host's files name every user (and their home folders); a run needs only its own uid to resolve
    (getpass, torch's cache folders). Made once per process, remade if a /tmp cleaner removed it."""
    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = "user"
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = "user"
    users = {0: "root", uid: user, 65534: "nobody"}
    groups = {0: "root", gid: group, 65534: "nogroup"}
    files = {
        "passwd": "".join(f"{name}:x:{u}:{gid if u == uid else u}::/tmp:/bin/sh\n" for u, name in users.items()),
        "group": "".join(f"{name}:x:{g}:\n" for g, name in groups.items()),
        "hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    }
    folder = _GENERATED.get("etc")
    if folder is None or not all((folder / n).is_file() for n in files):
        folder = Path(tempfile.mkdtemp(prefix="autoresearch-etc-"))
        folder.chmod(0o755)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
            (folder / name).chmod(0o644)
        if "etc" not in _GENERATED:
            atexit.register(lambda: shutil.rmtree(_GENERATED.get("etc", ""), ignore_errors=True))
        _GENERATED["etc"] = folder
    return folder


def _etc(system: list[Path]) -> tuple[list[Bind], list[tuple[str, Path]]]:
    binds, links = [], []
    for name in ETC_FILES:
        path = Path("/etc") / name
        if not os.path.lexists(path):
            continue
        if path.is_symlink() and _inside(Path(os.path.realpath(path)), system):
            links.append((os.readlink(path), path))  # keep it a link: tzlocal reads the zone from its target
        elif path.exists():
            binds.append(Bind(path, path))
    generated = _generated_etc()
    binds += [Bind(generated / name, Path("/etc") / name) for name in ("passwd", "group", "hosts", "nsswitch.conf")]
    return binds, links


# ---------------------------------------------------------------------------------------------- together


def compute(command: Sequence[str], env: Mapping[str, str], repo: Path) -> AllowList:
    """The allow-list of one run (see the module docstring); ``repo`` is the run's working folder."""
    symlinks, system = [], []
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            target = os.readlink(path)
            if os.path.isdir(path) and _inside(Path(os.path.realpath(path)), [Path("/usr")]):
                symlinks.append((target, path))  # merged /usr: /lib -> usr/lib stays a link
            elif os.path.isdir(path):
                system.append(path)
        elif path.is_dir():
            system.append(path)
    cuda = cuda_on_this_machine()
    roots = command_roots(command, env) + list(cuda.libdirs)
    etc, etc_links = _etc(_system_real())
    return AllowList(tuple(symlinks), tuple(system), tuple(etc), tuple(etc_links),
                     tuple(minimal_binds(roots, repo)), cuda)
