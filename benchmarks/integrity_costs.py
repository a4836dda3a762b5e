"""What two integrity choices of issue 9 cost: re-hashing the fingerprinted data, and an empty byte-code cache.

    python benchmarks/integrity_costs.py REPO [--repeats 3]

1. ``fingerprints.verify`` on REPO (an eCLIP research repository, e.g. ``autoresearch init eclip REPO --n 3000``)
   with the in-process cache cleared (a full re-hash of fixed code, configuration, prepared data and keys)
   and with it warm (the cache is keyed on inode, size, mtime and ctime, so only stat calls remain).
2. The CPU seconds a run's imports (torch, numpy, tokenizers, transformers' DistilBERT) take with the normal
   byte-code caches and with ``PYTHONPYCACHEPREFIX`` set to an empty folder, the other way to keep runs off
   the repository's ``__pycache__`` (it recompiles every library from source in every run).

CPU seconds, not wall seconds, so that a busy machine changes the numbers less.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autoresearch import config as config_mod
from autoresearch.loop import fingerprints

IMPORTS = "import torch, numpy, tokenizers; from transformers import DistilBertConfig, DistilBertModel"


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_child(env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", IMPORTS], env=env, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    config = config_mod.load(args.repo)
    size = sum(p.stat().st_size for sub in ("prepared", "secret") for p in (config.state_dir / sub).rglob("*")
               if p.is_file())
    print(f"fingerprinted data: {size / 1e6:.0f} MB under {config.state_dir}")
    for _ in range(args.repeats):
        fingerprints._cache.clear()
        w, c = time.perf_counter(), _cpu_self()
        fingerprints.verify(config)
        full = (time.perf_counter() - w, _cpu_self() - c)
        w, c = time.perf_counter(), _cpu_self()
        fingerprints.verify(config)
        warm = (time.perf_counter() - w, _cpu_self() - c)
        print(f"verify: full re-hash {full[1]:.3f} s CPU ({full[0]:.3f} s wall); cached {warm[1]:.4f} s CPU")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    _cpu_child(env)   # warm the page cache
    for i in range(args.repeats):
        normal = _cpu_child(env)
        with tempfile.TemporaryDirectory() as empty:
            prefixed = _cpu_child({**env, "PYTHONPYCACHEPREFIX": empty})
        print(f"run imports: {normal:.2f} s CPU with byte-code caches, {prefixed:.2f} s with an empty prefix "
              f"(+{prefixed - normal:.2f} s a run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
