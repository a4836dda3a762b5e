"""How fast the dashboard serves its two heaviest pages with 2,000 experiments in the ledger.

Writes a ledger of the toy task with 2,000 rows (through ``Ledger`` directly: statuses, metrics, folds,
decisions and descriptions like a long night's), starts ``autoresearch dashboard`` on loopback in its own
process (uvicorn, as a user runs it), and times the overview (``/api/overview``: the summary, counts, time,
the progress plot's 2,000 points, notes) and the experiments table (``/api/experiments``: every row) through
a real HTTP client. Prints the median and the 90th percentile of ``--requests`` requests each, "cold" (a
write to the ledger before each request, as the loop makes, so nothing is served from the cache) and
"cached" (the ledger unchanged since the last answer), with the server's own CPU time per answer (from its
Server-Timing header: what the answer costs on an idle core, whatever else the machine is doing).
Target: each median under 200 ms on 2 cores, cold.

    python benchmarks/dashboard_bench.py [--experiments 2000] [--requests 15]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import autoresearch
from autoresearch.loop.gitops import Git
from autoresearch.session import Session

STATUSES = ["discard"] * 12 + ["keep"] + ["crash", "timeout", "invalid"]
TARGET_MS = 200.0


def fill(root: Path, n: int, tag: str = "bench") -> None:
    """A ledger with a baseline and ``n - 1`` finished experiments, each row as full as the engine's."""
    rng = random.Random(0)
    commit = Git(root).head()
    best = 2.0
    with Session(root, tag=tag) as s:
        led = s.ledger
        led.start(number=0, tag=tag, kind="baseline", phase=0, phase_title="baseline", parent_commit=commit,
                  candidate_commit=commit, description="baseline")
        led.finish(0, "keep", commit=commit, folds=[2.0, 2.01], metric_mean=2.005, metric_std=0.007, reason="baseline")
        for i in range(1, n):
            status = rng.choice(STATUSES)
            value = best + rng.gauss(0.05, 0.05)
            if status == "keep":
                value = best = best - abs(rng.gauss(0.01, 0.005))
            ok = status in ("keep", "discard")
            led.start(number=i, tag=tag, kind="experiment", phase=1 + i // 400, phase_title=f"phase {1 + i // 400}",
                      parent_commit=commit, candidate_commit=commit, agent=rng.choice(["openai", "replay"]),
                      description=f"experiment {i}: LR x {rng.uniform(0.5, 2):.2f}, WIDTH {rng.randint(8, 128)} "
                                  f"and a longer explanation of the idea behind it " * 2,
                      hypothesis="the optimum is nearby", tokens_in=rng.randint(2000, 9000), tokens_out=800,
                      cost_usd=0.01, agent_seconds=20.0, started_at="2026-03-10T21:04:05.123Z")
            led.finish(i, status, commit=commit if ok else None, folds=[value, value + 0.01] if ok else [None, None],
                       metric_mean=value if ok else None, metric_std=0.007 if ok else None,
                       delta=value - best if ok else None, reason=f"{status}: improvement vs threshold",
                       train_seconds=60.0, score_seconds=1.0, ended_at="2026-03-10T21:05:30.000Z",
                       decision={"status": status, "reason": "…", "numbers": {"threshold": 0.02, "sigma_d": 0.01,
                                                                            "improvement": best - value}} if ok else None)
        s.note("a note for the agent")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(client: httpx.Client, path: str, n: int, touch=None) -> tuple[list[float], list[float], int]:
    """``n`` timed requests: (wall ms, the server's CPU ms from its Server-Timing header, size); ``touch(i)``
    before each one writes to the ledger, so no answer comes from the cache."""
    times, cpu, size = [], [], 0
    for i in range(n):
        if touch is not None:
            touch(i)
        t0 = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        cpu.append(float(r.headers.get("server-timing", "cpu;dur=nan").split("dur=")[1]))
        size = len(r.content)
    return times, cpu, size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "toy"
        autoresearch.create("toy", root, say=lambda text: None)
        t0 = time.perf_counter()
        fill(root, args.experiments)
        print(f"ledger: {args.experiments} experiments written in {time.perf_counter() - t0:.1f} s; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; medians of {args.requests} requests")
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "autoresearch", "dashboard", "-C", str(root), "--tag", "bench",
                                   "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            server.stdout.readline()
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                for _ in range(50):
                    try:
                        client.get("/api/summary").raise_for_status()
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                failed = False
                with Session(root, tag="bench") as s:
                    def touch(i: int) -> None:
                        s.ledger.set_meta("bench:touch", i)       # what the loop's every write does
                        time.sleep(0.05)

                    paths = ("/api/overview", "/api/experiments", "/api/summary", f"/api/experiments/{args.experiments // 2}")
                    for path in paths:
                        timed(client, path, 2)                 # thread sessions opened
                        for label, hook in (("cold", touch), ("cached", None)):
                            if label == "cached" and path not in paths[:3]:
                                continue
                            times, cpu, size = timed(client, path, args.requests, hook)
                            median = statistics.median(times)
                            p90 = sorted(times)[int(0.9 * (len(times) - 1))]
                            verdict = ""
                            if path in paths[:2]:
                                failed |= median >= TARGET_MS
                                verdict = "ok" if median < TARGET_MS else f"OVER the {TARGET_MS:.0f} ms target"
                            print(f"{path:<26} {label:<7} median {median:6.1f} ms  p90 {p90:6.1f} ms  "
                                  f"server CPU {statistics.median(cpu):6.1f} ms  {size / 1024:7.1f} KiB  {verdict}")
        finally:
            server.terminate()
            server.wait(10)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
