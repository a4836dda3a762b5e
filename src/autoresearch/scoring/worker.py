"""Scoring in a child process, with a deadline and a memory ceiling.

The checks in ``npz`` and ``safeio`` refuse every hostile input we know of before it costs anything;
this is the backstop for the ones we do not know of. ``run_isolated(request)`` starts a fresh
interpreter (isolated mode: no current folder, no ``PYTHON*`` variables, so nothing in the research
repository can shadow a module), sends it the request as JSON, and waits at most ``timeout_s``; past
that the child's whole process group is killed. The child caps its own address space (RLIMIT_AS)
at what it uses after numpy and BLAS have started plus ``memory_bytes``, so an allocation beyond the
ceiling fails inside it as a ``MemoryError``, never on the host.

The answer is ``{"metrics": {...}}`` or ``{"reason": "..."}``; the parent turns any other ending (a
signal, a traceback, no answer) into a reason too. Not covered: a machine without ``/proc`` or
``RLIMIT_AS`` (macOS) runs the child without the memory ceiling (the deadline still holds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from autoresearch.scoring.npz import Limits

SCORE_TIMEOUT_S = 600.0           # scoring 10,000 queries at width 4,096 takes well under a minute
MEMORY_BYTES = 6 << 30            # four times the largest accepted input, plus 2 GiB
_BOOT = ("import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
         "from autoresearch.scoring.worker import main; main()")
_ANSWER_MAX = 1 << 20


def _import_paths() -> list[str]:
    """Where the child finds autoresearch and its dependencies: the parent's path minus the cwd."""
    package_parent = str(Path(__file__).resolve().parents[2])
    cwd = os.getcwd()
    rest = [p for p in sys.path if p and os.path.isabs(p) and p != cwd and p != package_parent]
    return [package_parent, *rest]


def run_isolated(request: dict, *, timeout_s: float = SCORE_TIMEOUT_S,
                 memory_bytes: int = MEMORY_BYTES) -> dict:
    """Run ``compute(request)`` in a child process; always returns a dict with metrics or a reason."""
    payload = json.dumps({**request, "memory_bytes": int(memory_bytes)}).encode("utf-8")
    cmd = [sys.executable, "-I", "-c", _BOOT, json.dumps(_import_paths())]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd="/", start_new_session=True)
    try:
        out, err = proc.communicate(payload, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        return {"reason": f"scoring did not finish within its {timeout_s:g} s deadline; the outputs were "
                          "not scored"}
    except BaseException:             # Ctrl-C: leave no child behind
        _kill_group(proc)
        proc.communicate()
        raise
    answer = _parse(out)
    if answer is not None and proc.returncode == 0:
        return answer
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else "?"
        return {"reason": f"the scorer was killed by signal {-proc.returncode} ({name}) {tail[0][:200]}".strip()}
    return {"reason": f"the scorer failed (exit {proc.returncode}): {tail[0][:300]}"}


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _parse(out: bytes) -> dict | None:
    if len(out) > _ANSWER_MAX:
        return None
    try:
        answer = json.loads(out.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(answer, dict) and (isinstance(answer.get("reason"), str) or isinstance(answer.get("metrics"), dict)):
        return answer
    return None


# ---------------------------------------------------------------- the child side

def _vm_size() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def limit_memory(extra_bytes: int) -> int | None:
    """Cap the address space at its current size plus ``extra_bytes``; returns the cap (None if unsupported).

    numpy is imported and BLAS run once first, so its threads and buffers are inside the baseline.
    """
    import numpy as np

    a = np.ones((512, 512))
    a @ a                                               # starts the BLAS threads
    try:
        import resource
    except ImportError:
        return None
    base = _vm_size()
    if base is None:
        return None
    cap = base + int(extra_bytes)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (ValueError, OSError):
        return None
    return cap


def compute(request: dict) -> dict:
    """The work itself, in whatever process calls it (tests call it directly)."""
    from autoresearch.scoring import paired

    if request.get("source") != "retrieval":
        return {"reason": f"the scorer has no source {request.get('source')!r}"}
    limits = Limits(**request.get("limits", {}))
    try:
        metrics = paired.retrieval_metrics_of(Path(request["out_dir"]), request["image_ids"], request["caption_ids"],
                                        limits)
    except MemoryError:
        ceiling = int(request.get("memory_bytes", MEMORY_BYTES))
        shown = f"{ceiling / (1 << 30):.1f} GiB" if ceiling >= 1 << 30 else f"{ceiling >> 20} MiB"
        return {"reason": f"scoring the embeddings needed more than its memory ceiling ({shown} above "
                          "the scorer's own)"}
    if isinstance(metrics, str):
        return {"reason": metrics}
    return {"metrics": metrics}


def main() -> None:
    request = json.loads(sys.stdin.buffer.read(64 << 20))
    limit_memory(int(request.get("memory_bytes", MEMORY_BYTES)))
    answer = compute(request)
    sys.stdout.write(json.dumps(answer, allow_nan=True))
    sys.stdout.flush()
