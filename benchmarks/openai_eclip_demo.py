"""`autoresearch run --agent openai` on the eCLIP task, against the loopback fake OpenAI server.

A scripted "model" (a responder reading each request's brief) proposes three experiments through our
tools, and the real loop does everything else: the sandboxed 3-fold runs, the scoring, keep/revert in
git, the ledger and the report.

  1. MAX_TEMPERATURE 2.0 -> 100.0            expected: keep (the logit scale is no longer capped low)
  2. LR 3e-4 -> 3e-2                         expected: discard (training diverges)
  3. WARMUP_STEPS 40 -> 80, with a typo       crash (NameError); the brief of attempt 2 carries the
     (`WARMUP_STEP * 2`)                      traceback, the agent fixes it (`WARMUP_STEPS = 80`): scored

Every fake response reports 9,000 input and 400 output tokens, so the ledger has usage and, with a
priced model (gpt-4.1: $2 / $8 per million), a cost. Run from the repository root:

    python benchmarks/openai_eclip_demo.py [--dest DIR] [--n 3000] [--keep]

It takes several minutes on 2 cores (each experiment trains 3 folds of about a minute). Prints the
ledger rows (status, metric, tokens, cost) and the report's path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakes.llm_servers import OpenAIFake, Request, openai_message, tool_call  # noqa: E402

MODEL = "gpt-4.1"
USAGE = (9_000, 400)
KEY = "sk-demo-not-a-real-key-0000000000"   # a dummy: the fake does not check it; must not reach any file
TYPO = "WARMUP_STEPS = WARMUP_STEP * 2"


def replace(old: str, new: str) -> tuple[str, dict]:
    return "replace_in_file", {"path": "train.py", "old": old, "new": new}


def finish(description: str, hypothesis: str) -> tuple[str, dict]:
    return "finish", {"description": description, "hypothesis": hypothesis}


SCRIPTS = {
    "temperature": [[("read_file", {"path": "train.py"})],
                    [replace("MAX_TEMPERATURE = 2.0 ", "MAX_TEMPERATURE = 100.0 ")],
                    [finish("MAX_TEMPERATURE 2 -> 100",
                            "a logit scale capped at 2 keeps the contrastive softmax nearly flat")]],
    "high LR": [[replace("LR = 3e-4 ", "LR = 3e-2 ")],
                [finish("LR 3e-4 -> 3e-2", "faster learning in the short budget")]],
    "crash": [[replace("WARMUP_STEPS = 40 ", f"{TYPO} ")],
              [finish("WARMUP_STEPS 40 -> 80", "a longer warmup steadies the higher temperature")]],
    "fix": [[replace(f"{TYPO} ", "WARMUP_STEPS = 80 ")],
            [finish("WARMUP_STEPS 40 -> 80 (typo fixed)", "a longer warmup steadies the higher temperature")]],
}
ORDER = ["temperature", "high LR", "crash"]


class Model:
    """Picks the script from the brief: attempt 2 is the fix, otherwise the next experiment in ORDER."""

    def __init__(self) -> None:
        self.briefs: dict[str, str] = {}
        self.problems: list[str] = []

    def __call__(self, request: Request) -> dict:
        msgs = request.messages()
        brief = next(m["content"] for m in msgs if m["role"] == "user")
        turn = sum(1 for m in msgs if m["role"] == "assistant")
        if "(attempt 2" in brief.splitlines()[0]:
            name = "fix"
        else:
            name = next((n for n, b in self.briefs.items() if b == brief), None)
            name = name or ORDER[len([n for n in self.briefs if n != "fix"]) % len(ORDER)]
        self.briefs.setdefault(name, brief)
        for result in request.tool_results():
            if result["content"].startswith("error"):
                self.problems.append(f"{name} turn {turn}: {result['content'][:200]}")
        script = SCRIPTS[name]
        calls = script[min(turn, len(script) - 1)]
        return openai_message(tool_calls=[tool_call(n, a) for n, a in calls], usage=USAGE, model=MODEL)


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "autoresearch", *args]
    print("$ autoresearch " + " ".join(args), flush=True)
    done = subprocess.run(cmd, env=env, text=True, capture_output=True)
    print(done.stdout[-3000:], done.stderr[-2000:], sep="\n", flush=True)
    if done.returncode != 0:
        raise SystemExit(f"autoresearch {args[0]} failed with exit code {done.returncode}")
    return done


def adjust(args: argparse.Namespace, env: dict) -> None:
    """Fewer steps or a later deadline for a slow or shared machine, committed before the baseline."""
    import re

    from autoresearch.hyperparams import set_constants
    from autoresearch.loop.gitops import Git

    git = Git(args.dest)
    if args.steps:
        train = args.dest / "train.py"
        train.write_text(set_constants(train.read_text(encoding="utf-8"), {"STEPS": args.steps}), encoding="utf-8")
        git.commit(["train.py"], f"demo: STEPS = {args.steps}\n")
    if args.timeout_s:
        toml = args.dest / "autoresearch.toml"
        text, n = re.subn(r"(?m)^timeout_s\s*=\s*[0-9.]+", f"timeout_s = {args.timeout_s:g}",
                          toml.read_text(encoding="utf-8"), count=1)
        assert n == 1, "no timeout_s line in autoresearch.toml"
        toml.write_text(text, encoding="utf-8")
        git.commit(["autoresearch.toml"], f"demo: timeout_s = {args.timeout_s:g}\n")
        cli("rehash", "-C", str(args.dest), env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=None, help="where to create the eCLIP repository")
    parser.add_argument("--n", type=int, default=3000, help="synthetic images (smaller folds make the clamp change too noisy to keep)")
    parser.add_argument("--keep", action="store_true", help="keep the repository (a temporary one is removed)")
    parser.add_argument("--no-sandbox", action="store_true")
    parser.add_argument("--steps", type=int, default=None,
                        help="set STEPS in train.py before the baseline (a loaded machine: fewer steps)")
    parser.add_argument("--timeout-s", type=float, default=None,
                        help="set [run] timeout_s (the hard deadline per fold) and accept it with `rehash`")
    args = parser.parse_args()

    from autoresearch import config as config_mod
    from autoresearch.loop.engine import open_ledger
    from autoresearch.session import create

    tmp = None
    if args.dest is None:
        tmp = Path(tempfile.mkdtemp(prefix="openai-eclip-"))
        args.dest = tmp / "eclip"
    t0 = time.perf_counter()
    create("eclip", args.dest, preset="cpu", n=args.n, say=lambda s: print(f"  {s}", flush=True))
    print(f"created {args.dest} in {time.perf_counter() - t0:.0f} s", flush=True)

    env = {**os.environ, "OPENAI_API_KEY": KEY}
    adjust(args, env)
    extra = ["--no-sandbox"] if args.no_sandbox else []
    model = Model()
    t1 = time.perf_counter()
    with OpenAIFake(model) as server:
        # The engine counts finished experiments, the crash included: keep, discard, crash, fix = 4.
        cli("run", "-C", str(args.dest), "--agent", "openai", "--base-url", server.base_url, "--model", MODEL,
            "--tag", "openai-demo", "--experiments", "4", *extra, env=env)
        requests = len(server.requests)
        errors = list(server.errors)
    run_s = time.perf_counter() - t1
    cli("report", "-C", str(args.dest), "--tag", "openai-demo", env=env)

    config = config_mod.load(args.dest)
    ledger = open_ledger(config)
    rows = ledger.rows(tag="openai-demo", kinds=("baseline", "experiment"))
    print(f"\nledger of tag openai-demo ({requests} API calls to the fake, {run_s / 60:.1f} min for the run):")
    print(f"{'#':>3} {'attempt':>7} {'status':<8} {'mean_rank':>16} {'delta':>8} {'tokens in/out':>14} "
          f"{'cost $':>8} {'train s':>7}  description")
    for r in rows:
        metric = f"{r.metric_mean:.2f} ± {r.metric_std:.2f}" if r.metric_mean is not None else "—"
        delta = f"{r.delta:+.2f}" if r.delta is not None else ""
        tokens = f"{r.tokens_in}/{r.tokens_out}" if r.tokens_in else ""
        cost = f"{r.cost_usd:.4f}" if r.cost_usd is not None else ""
        train = f"{r.train_seconds:.0f}" if r.train_seconds else ""
        print(f"{r.number:>3} {r.attempt or '':>7} {r.status:<8} {metric:>16} {delta:>8} {tokens:>14} {cost:>8} "
              f"{train:>7}  {r.description}")
        if r.status in ("crash", "timeout"):
            print(f"{'':>21}reason: {r.reason}")
    fix_brief = model.briefs.get("fix", "")
    print("\nthe fix brief carried the traceback:", "NameError" in fix_brief and "WARMUP_STEP" in fix_brief)
    total = sum(r.cost_usd or 0 for r in rows)
    kept = sum(1 for r in rows if r.kind == "experiment" and r.status == "keep")
    print(f"total agent cost ${total:.4f}; per kept improvement "
          f"{'$%.4f' % (total / kept) if kept else '—'}")
    leaks = [str(p) for p in [*(args.dest / ".autoresearch").rglob("*"), *(args.dest / "report").rglob("*")]
             if p.is_file() and KEY.encode() in p.read_bytes()]
    print("key found in files:", leaks or "none")
    if model.problems or errors:
        print("problems:", model.problems, errors)
    print(f"report: {args.dest / 'report' / 'index.html'}")
    statuses = [(r.status, r.attempt) for r in rows if r.kind == "experiment"]
    expected = [("keep", 1), ("discard", 1), ("crash", 1)]
    ok = statuses[:3] == expected and len(statuses) == 4 and statuses[3][1] == 2 and statuses[3][0] in ("keep", "discard")
    print("as scripted (keep, discard, crash, fix scored):", ok)
    if tmp is not None and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    raise SystemExit(0 if ok and not leaks and not model.problems and not errors else 1)


if __name__ == "__main__":
    main()
