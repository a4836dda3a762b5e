"""Which machine a result came from, recorded with every experiment."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess


@functools.lru_cache(maxsize=1)
def describe() -> dict:
    """A small, JSON-ready description of this machine: host, CPU, cores, memory, GPU, versions."""
    info = {
        "host": socket.gethostname(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "gpu": _gpus(),
    }
    try:
        from importlib.metadata import version

        info["torch"] = version("torch")
    except Exception:  # torch is optional for non-eCLIP tasks
        info["torch"] = None
    return info


def summary(info: dict | None = None) -> str:
    info = info or describe()
    gpu = ", ".join(info.get("gpu") or []) or "no GPU"
    return f"{info.get('cpu') or 'CPU'} ×{info.get('cores')}, {info.get('memory_gb')} GB, {gpu}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _gpus() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
