"""What the agent jail costs per agent turn: starting a program in it against starting it plainly.

    python benchmarks/isolation_cost.py [--runs 20] [--no-cli]

Builds a working copy, a private HOME and a runs view in a temporary folder (beside a repository with its
``.autoresearch``, which the jail forbids) and, alternating plain and jailed runs so that a shared
machine's noise falls on both, times through ``jail.run`` (the same supervision either way):

- ``true``: the fixed cost of the jail (bubblewrap, namespaces, mounts) around a program that does nothing;
- ``claude --version`` (when the CLI is installed; ``--no-cli`` skips it): the Claude Code CLI's start-up;
- a Python interpreter that imports nothing (``python -c pass``), as a command agent written in Python.

It also times what the tool does before each jailed turn: deriving the jail's command line
(``jail.wrap_agent``: the allow-list, the program's folders) and filling the private HOME
(``claude_code.claude_home``). Prints per program the median and mean wall seconds of each mode, their
difference and ratio.

And what the loop's isolation costs on a real eCLIP repository (``--repo DIR``, else one made with 300
synthetic prints): per agent turn, the working copy exported from the base commit and taken back
(``workspace.WorkingCopy``); per run, the read-only snapshot of the commit, the check that it did not
change, and its removal (``workspace.snapshot``). Exits 2 if bubblewrap is not usable here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from autoresearch.agents.claude_code import claude_home
from autoresearch.runner import jail, sandbox


def _world(tmp: Path) -> tuple[Path, Path, Path, Path]:
    repo, copy, home, view = tmp / "repo", tmp / "copy", tmp / "home", tmp / "runs"
    (repo / ".autoresearch" / "secret").mkdir(parents=True)
    (repo / ".autoresearch" / "secret" / "key.json").write_text("{}")
    for folder in (copy, home, view):
        folder.mkdir()
    (copy / "train.py").write_text("LR = 0.01\n")
    return repo, copy, home, view


def _time(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    done = jail.run(cmd, cwd, env, "", 120)
    if done.returncode != 0:
        raise SystemExit(f"{cmd[-1]!r} failed ({done.returncode}): {done.stderr[-500:]}")
    return done.seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per mode and program (default 20)")
    parser.add_argument("--no-cli", action="store_true", help="skip `claude --version`")
    parser.add_argument("--repo", type=Path, default=None, help="an eCLIP repository (default: one made with 300 prints)")
    args = parser.parse_args()
    if not sandbox.available():
        print(f"bubblewrap does not work here: {sandbox.unavailable_reason()}", file=sys.stderr)
        return 2
    programs = {"true": ["true"], "python -c pass": [sys.executable, "-c", "pass"]}
    if not args.no_cli and shutil.which("claude"):
        programs["claude --version"] = ["claude", "--version"]
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}
    with tempfile.TemporaryDirectory(prefix="isolation-cost-") as tmp:
        repo, copy, home, view = _world(Path(tmp))
        cage = jail.for_agent(repo, [repo / ".autoresearch" / "secret"], copy, home, (view,))
        env["HOME"] = str(home)
        prep = {"wrap_agent": [], "claude_home": []}
        rows = []
        for name, cmd in programs.items():
            times: dict[str, list[float]] = {"plain": [], "jail": []}
            for i in range(-2, args.runs * 2):      # -2 and -1 warm the caches and are not counted
                boxed = i % 2 == 1
                if boxed:
                    started = time.perf_counter()
                    wrapped = jail.wrap_agent(cmd, env, cage)
                    prep["wrap_agent"].append(time.perf_counter() - started)
                    seconds = _time(wrapped, copy, {"PATH": env["PATH"]})
                else:
                    seconds = _time(cmd, copy, env)
                if i >= 0:
                    times["jail" if boxed else "plain"].append(seconds)
            rows.append((name, times))
        for i in range(args.runs):
            fresh = Path(tmp) / f"home{i}"
            started = time.perf_counter()
            claude_home(fresh)
            prep["claude_home"].append(time.perf_counter() - started)
    _loop_costs(args.repo, args.runs)
    print(f"per agent turn, {args.runs} runs per mode, alternating (wall seconds, through jail.run):")
    print(f"{'program':<18} {'plain median':>12} {'jail median':>12} {'plain mean':>11} {'jail mean':>10} "
          f"{'jail - plain':>13} {'ratio':>7}")
    for name, times in rows:
        pm, jm = statistics.median(times["plain"]), statistics.median(times["jail"])
        pa, ja = statistics.mean(times["plain"]), statistics.mean(times["jail"])
        print(f"{name:<18} {pm:>12.4f} {jm:>12.4f} {pa:>11.4f} {ja:>10.4f} {jm - pm:>+13.4f} {jm / pm:>7.2f}")
    for part, values in prep.items():
        print(f"before each jailed turn, {part}: median {statistics.median(values) * 1000:.1f} ms, "
              f"mean {statistics.mean(values) * 1000:.1f} ms")
    return 0


def _loop_costs(repo: Path | None, runs: int) -> None:
    """The working copy (per agent turn) and the snapshot (per run) on an eCLIP repository."""
    import autoresearch
    from autoresearch.loop import workspace
    from autoresearch.loop.gitops import Git

    with tempfile.TemporaryDirectory(prefix="isolation-loop-") as tmp:
        if repo is None:
            repo = Path(tmp) / "eclip"
            autoresearch.create("eclip", repo, say=lambda *a: None, n=300)
        git = Git(repo)
        head = git.head()
        editable = ["train.py", "scratchpad.md"]
        turn, snap = [], []
        for i in range(runs):
            started = time.perf_counter()
            copy = workspace.WorkingCopy.create(git, head, Path(tmp) / "copy")
            (copy.path / "train.py").write_text((copy.path / "train.py").read_text() + f"# {i}\n")
            taken = copy.take_back(editable)
            workspace.remove(copy.path)
            turn.append(time.perf_counter() - started)
            assert taken.ok and taken.changed == ["train.py"], taken.problems
            started = time.perf_counter()
            made = workspace.snapshot(git, head, Path(tmp) / "snap")
            assert made.changes() == []
            workspace.remove(made.path)
            snap.append(time.perf_counter() - started)
        files = len(workspace.tree(git, head))
    print(f"the loop's isolation on an eCLIP repository ({files} tracked files), {runs} times each:")
    print(f"  per agent turn, working copy made and taken back: median {statistics.median(turn) * 1000:.1f} ms, "
          f"mean {statistics.mean(turn) * 1000:.1f} ms")
    print(f"  per run, snapshot made, checked and removed:      median {statistics.median(snap) * 1000:.1f} ms, "
          f"mean {statistics.mean(snap) * 1000:.1f} ms")


if __name__ == "__main__":
    raise SystemExit(main())
