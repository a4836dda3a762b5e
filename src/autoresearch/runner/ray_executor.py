"""Fold runs as Ray tasks: on this machine, or on any Ray cluster (``ray start --head`` / ``--address``).

What travels, and what never does (docs/parallel.md):

- To the worker: the candidate's code, i.e. the files git tracks in the run's folder (the repository or the
  candidate's worktree), read from the tree as they are; never ``.git`` and never a tracked file under a
  hidden path. The prepared data: exactly the run's read-only mounts (training chunks, the fold's query
  set), each put once into Ray's object store and cached per node. Nothing else of ``.autoresearch``: the
  keys are never mounted in a fold run, and a run of the one-time test (``AUTORESEARCH_MODE=final``) is
  refused: the test split never leaves the driver.
- On the worker: every path of the spec (folder, mounts, output folder, environment values naming them) is
  re-rooted under a private scratch folder, and the run goes through ``runner.process.run_spec`` in the
  same sandbox as a local run (bubblewrap is needed on the worker unless runs are unsandboxed).
- Back to the driver: the run's log and its output folder (at most ``[resources] max_output_mb``; more is a
  failed run), written where the spec says. Scoring stays on the driver.

A lost worker, a node that goes away, a cancelled or failed Ray task: the run comes back
``ExitKind.INTERRUPTED`` with the reason, which the loop records as ``interrupted`` (proposed again), never a
lost experiment. Ray's own retries are off (``max_retries=0``) so that this is visible.

Deviation from the executor contract, stated: once ``keep_going`` says stop, Ray cannot tell a queued task
from a started one, so every run of the batch not yet finished is cancelled and comes back SKIPPED.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from autoresearch.config import Config
from autoresearch.errors import UserError
from autoresearch.runner import storage
from autoresearch.runner.executor import KeepGoing, skipped
from autoresearch.runner.spec import ExitKind, Mount, RunOutcome, RunSpec

RAY_HINT = "install the optional extra: pip install 'autoresearch[ray]'"
LOG_CAP = 4 * 2**20          # bytes of a run's log brought back (its tail)


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("the Ray executor needs the `ray` package", hint=RAY_HINT) from None
    return ray


# ---------------------------------------------------------------------------------------------- driver side


def _within(path: Path, parent: Path) -> bool:
    try:
        return path.is_relative_to(parent)
    except ValueError:
        return False


def _tar(entries: list[tuple[str, Path]], recursive: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, path in entries:
            tar.add(str(path), arcname=name, recursive=recursive)
    return buf.getvalue()


def code_files(cwd: Path, hidden: Sequence[Path]) -> list[str]:
    """The files of the run's folder that travel: tracked by git when the folder is a repository's top (every
    file but ``.git`` otherwise: a snapshot of a commit is a plain folder), minus those under a hidden path
    that lies inside the folder."""
    inside = [h for h in hidden if _within(h, cwd) and h != cwd]
    proc = subprocess.run(["git", "ls-files", "-z", "--cached"], cwd=cwd, capture_output=True, check=False) \
        if (cwd / ".git").exists() else None
    if proc is not None and proc.returncode == 0:
        names = [n for n in proc.stdout.decode("utf-8", errors="surrogateescape").split("\0") if n]
    else:
        names = [str(p.relative_to(cwd)) for p in cwd.rglob("*") if ".git" not in p.relative_to(cwd).parts]
    out = []
    for name in names:
        path = cwd / name
        if path.is_file() and not path.is_symlink() and not any(_within(path.resolve(), h) for h in inside):
            out.append(name)
    return sorted(out)


@dataclasses.dataclass(frozen=True)
class Request:
    """What one fold run asks Ray for."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: tuple[tuple[str, float], ...] = ()


class RayExecutor:
    """Runs each spec as a Ray task with ``request``; see the module docstring."""

    def __init__(self, request: Request = Request(), *, address: str = "", max_output_mb: float = 512.0,
                 init: bool = True) -> None:
        ray = _ray()
        self.ray = ray
        self.request = request
        self.address = address
        self.max_output_bytes = int(max_output_mb * 2**20)
        self._started_ray = False
        if init and not ray.is_initialized():
            try:
                ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except ConnectionError as exc:
                raise UserError(f"could not reach the Ray cluster at {address!r}: {exc}",
                                hint="start it (`ray start --head`) or check --ray-address / [resources] ray_address") \
                    from None
            self._started_ray = True
        self._task = ray.remote(execute).options(
            num_cpus=request.num_cpus, num_gpus=request.num_gpus, resources=dict(request.resources) or None,
            max_retries=0, retry_exceptions=False)
        self._objects: dict[tuple, Any] = {}     # (path, size, mtime) -> object ref of its bytes
        self._lock = threading.Lock()
        self._live: dict[Any, str] = {}          # ref -> why it would be cancelled ("" while not)

    @classmethod
    def from_config(cls, config: Config, *, address: str = "") -> "RayExecutor":
        res = config.resources
        return cls(Request(num_cpus=res.cpus or 1.0, num_gpus=float(res.gpus), resources=res.custom),
                   address=address, max_output_mb=res.max_output_mb)

    def describe(self) -> str:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        return f"ray ({self.address or 'started here'}, {len(nodes)} node(s))"

    def close(self) -> None:
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False

    # --- shipping --------------------------------------------------------------------------------------
    def _object(self, path: Path) -> Any:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            ref = self._objects.get(key)
            if ref is None:
                ref = self.ray.put(path.read_bytes() if path.is_file() else _tar([(".", path)], recursive=True))
                self._objects[key] = ref
        return ref

    def _payload(self, spec: RunSpec) -> dict:
        if spec.env.get("AUTORESEARCH_MODE") == "final":
            raise UserError("the one-time test is never run on Ray: the test split stays on the driver",
                            hint="run `autoresearch final` with the local executor (the default)")
        cwd = Path(spec.cwd).resolve()
        hidden = [(cwd / h).resolve() for h in spec.hidden]
        names = code_files(cwd, hidden)
        mounts = []
        for m in spec.readonly:
            path = Path(m.path).resolve()
            if not path.exists():
                raise UserError(f"run {spec.name!r}: the path to mount does not exist: {path}",
                                hint="create it first (for prepared data: run the task's prepare step)")
            st = path.stat()
            mounts.append({"path": str(path), "dir": path.is_dir(), "key": f"{path}:{st.st_size}:{st.st_mtime_ns}",
                           "ref": self._object(path)})
        return {"spec": spec, "python": sys.executable, "code": self.ray.put(_tar([(n, cwd / n) for n in names])),
                "code_names": names, "mounts": mounts, "max_output_bytes": self.max_output_bytes,
                "num_cpus": max(1.0, float(self.request.num_cpus))}

    # --- the batch -----------------------------------------------------------------------------------
    def cancel_all(self) -> None:
        """Stop every run now going (from any thread); they come back INTERRUPTED."""
        with self._lock:
            refs = [r for r, why in self._live.items() if not why]
            for r in refs:
                self._live[r] = "stopped by the tool (Ctrl-C or stop)"
        for r in refs:
            self.ray.cancel(r, force=False)

    def run(self, specs: Sequence[RunSpec], *, keep_going: KeepGoing = None) -> list[RunOutcome]:
        refs = [self._task.remote(self._payload(spec)) for spec in specs]
        index = {ref: i for i, ref in enumerate(refs)}
        with self._lock:
            self._live.update({r: "" for r in refs})
        results: list[RunOutcome | None] = [None] * len(specs)
        waiting = list(refs)
        try:
            while waiting:
                ready, waiting = self.ray.wait(waiting, num_returns=1, timeout=0.5)
                for ref in ready:
                    i = index[ref]
                    results[i] = self._outcome(specs[i], ref)
                    if results[i].kind == ExitKind.SKIPPED or keep_going is None or keep_going(results[i]):
                        continue
                    with self._lock:
                        for r in waiting:
                            self._live[r] = self._live[r] or "skip"
                    for r in waiting:
                        self.ray.cancel(r, force=False)
        except KeyboardInterrupt:
            for r in waiting:
                self.ray.cancel(r, force=False)
            self.ray.wait(waiting, num_returns=len(waiting), timeout=30)
            raise
        finally:
            with self._lock:
                for r in refs:
                    self._live.pop(r, None)
        return [r if r is not None else skipped(s) for r, s in zip(results, specs)]

    def _outcome(self, spec: RunSpec, ref: Any) -> RunOutcome:
        ex = self.ray.exceptions
        try:
            got = self.ray.get(ref)
        except ex.TaskCancelledError:
            with self._lock:
                why = self._live.get(ref, "")
            if why == "skip":
                return skipped(spec)
            return RunOutcome(spec, ExitKind.INTERRUPTED, None, 0.0, reason=why or "the Ray task was cancelled",
                              extra={"where": {"executor": "ray"}})
        except ex.RayError as exc:   # worker or node lost, object lost, the task itself failed
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            return RunOutcome(spec, ExitKind.INTERRUPTED, None, 0.0,
                              reason=f"the Ray run was lost ({type(exc).__name__}): {first}",
                              extra={"where": {"executor": "ray"}})
        if got.get("user_error"):
            raise UserError(f"run {spec.name!r} could not start on the Ray worker: {got['user_error']}",
                            hint=got.get("hint") or "")
        log_path, out_dir = Path(spec.log_path), Path(spec.out_dir)
        with storage.fresh_file(log_path) as fh:      # never through a link planted meanwhile
            fh.buffer.write(got.get("log", b""))
        storage.fresh_dir(out_dir)
        if got.get("outputs"):
            with tarfile.open(fileobj=io.BytesIO(got["outputs"]), mode="r:gz") as tar:
                tar.extractall(out_dir, filter="data")
        extra = {**got.get("extra", {}), "where": got["where"], "received": got["received"]}
        return RunOutcome(spec, ExitKind(got["kind"]), got["returncode"], got["seconds"],
                          peak_rss_gb=got["peak_rss_gb"], reason=got["reason"], extra=extra)


# ---------------------------------------------------------------------------------------------- worker side


def _cache_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "autoresearch-ray-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _materialise(ray: Any, mount: dict, dest: Path) -> None:
    """Put a shipped mount at ``dest``, from this node's cache when another run brought it already."""
    cached = _cache_dir() / hashlib.sha256(mount["key"].encode()).hexdigest()
    if not cached.exists():
        data = ray.get(mount["ref"])
        tmp = Path(tempfile.mkdtemp(dir=_cache_dir(), prefix="partial-"))
        if mount["dir"]:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.extractall(tmp / "d", filter="data")
            (tmp / "d").rename(cached) if not cached.exists() else None
        else:
            (tmp / "f").write_bytes(data)
            try:
                os.rename(tmp / "f", cached)
            except OSError:
                pass   # another run on this node won the race: same content
        shutil.rmtree(tmp, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mount["dir"]:
        shutil.copytree(cached, dest, copy_function=_link_or_copy)
    else:
        _link_or_copy(cached, dest)


def _link_or_copy(src: Any, dst: Any) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _rewrite(value: str, roots: list[Path], fs: Path) -> str:
    """Re-root every absolute path in ``value`` (``os.pathsep``-joined lists too) that lies under one of ``roots``."""
    parts = []
    for part in value.split(os.pathsep):
        p = Path(part)
        if p.is_absolute() and any(_within(p, r) for r in roots):
            part = str(fs / p.relative_to(p.anchor))
        parts.append(part)
    return os.pathsep.join(parts)


def execute(payload: dict) -> dict:
    """The Ray task: unpack the code and data under a scratch folder, run the spec there, pack the outputs."""
    import ray

    from autoresearch.runner.process import run_spec

    spec: RunSpec = payload["spec"]
    scratch = Path(tempfile.mkdtemp(prefix="autoresearch-ray-run-"))
    fs = scratch / "fs"
    try:
        cwd = Path(spec.cwd).resolve()
        roots = [cwd, Path(spec.out_dir).resolve(), Path(spec.log_path).resolve().parent,
                 *((cwd / h).resolve() for h in spec.hidden), *(Path(m["path"]) for m in payload["mounts"])]
        local = lambda p: fs / Path(p).resolve().relative_to(Path(p).resolve().anchor)  # noqa: E731
        local(cwd).mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(ray.get(payload["code"])), mode="r:gz") as tar:
            tar.extractall(local(cwd), filter="data")
        for mount in payload["mounts"]:
            _materialise(ray, mount, local(mount["path"]))
        received = sorted(str(p.relative_to(fs)) for p in fs.rglob("*") if p.is_file())
        env = {k: _rewrite(v, roots, fs) for k, v in spec.env.items()}
        ctx = ray.get_runtime_context()
        gpus = ctx.get_accelerator_ids().get("GPU", [])
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        env["AUTORESEARCH_NODE"] = ctx.get_node_id()   # a run may say where it ran (logs, tests)
        # The task's CPUs are the run's share; the runner's thread set-up (runner/threads.py) does the rest.
        share = spec.cpus or payload.get("num_cpus") or 1.0
        command = list(spec.command)
        if command and command[0] == payload["python"]:
            command[0] = sys.executable   # the same interpreter role on this node
        command = [_rewrite(c, roots, fs) for c in command]
        there = dataclasses.replace(
            spec, command=tuple(command), cwd=local(cwd), env=env, out_dir=local(spec.out_dir), cpus=share,
            log_path=scratch / "run.log", hidden=tuple(local(cwd / h) for h in spec.hidden),
            readonly=tuple(Mount(local(m["path"])) for m in payload["mounts"]))
        try:
            outcome = run_spec(there)
        except UserError as exc:
            return {"user_error": exc.message, "hint": exc.hint}
        out_dir = Path(there.out_dir)
        size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
        kind, reason, outputs = outcome.kind.value, outcome.reason, None
        if size > payload["max_output_bytes"]:
            kind = ExitKind.OUTPUT.value
            reason = (f"the run wrote {size / 2**20:.0f} MB to its output folder, over the "
                      f"{payload['max_output_bytes'] / 2**20:.0f} MB a Ray run may bring back ([resources] max_output_mb)")
        else:
            outputs = _tar([(str(p.relative_to(out_dir)), p) for p in sorted(out_dir.rglob("*"))])
        log = there.log_path.read_bytes() if there.log_path.is_file() else b""
        return {"kind": kind, "returncode": outcome.returncode, "seconds": outcome.seconds,
                "peak_rss_gb": outcome.peak_rss_gb, "reason": reason, "extra": outcome.extra,
                "log": log[-LOG_CAP:], "outputs": outputs, "received": received,
                "where": {"executor": "ray", "node": ctx.get_node_id()[:12], "ip": ray.util.get_node_ip_address(),
                          "gpus": [str(g) for g in gpus], "at": time.time()}}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
