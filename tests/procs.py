"""Seeing processes from the test: is a pid alive, which live processes carry a token in their command line."""

from __future__ import annotations

import os


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
