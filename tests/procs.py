"""Processes from the test: is a pid alive, which live processes carry a token in their command line, and
the CLI run to its end or killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def alive(pid: int) -> bool:
    """True if pid is a live process (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2:].split()[0] != b"Z"


def procs_running(token: str) -> list[int]:
    """Live processes whose command line contains ``token`` (seen from outside any PID namespace)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    if token.encode() in fh.read() and alive(int(name)):
                        found.append(int(name))
            except OSError:
                pass
    return found


def run_cli(args: list[str], *, kill_after: float | None) -> None:
    """``python -m autoresearch ARGS`` in its own session: to the end (it must succeed), or SIGKILLed with
    everything it started after ``kill_after`` seconds, as a power cut would."""
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    if kill_after is None:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()
        return
    time.sleep(kill_after)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
