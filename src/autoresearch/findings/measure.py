"""Running a commit: the one place where ``ablate`` and ``transfer`` turn code into recorded measurements.

``measure(bench, commit, seeds, ...)`` runs the commit's tree once per seed over every fold, through the
executor of ``[resources]`` (seeds side by side when ``--parallel`` allows; folds side by side when the
executor has slots; Ray when chosen), each run a ledger row of kind ``ablation`` or ``transfer`` started
before it runs and finished after, like the loop's noise-floor runs. The tree is exported into
``.autoresearch/snapshots/<commit>`` and run there (``run_trial(..., cwd=...)``), so the user's working tree
and branch are never touched.

Resuming: a finished row with the same tree, seed and setting is reused (whatever study recorded it: the
champion measured by ``ablate`` is the champion ``transfer`` needs under the same setting); rows left
``running`` by a kill are marked ``interrupted`` when the next ``ablate`` or ``transfer`` starts, and run
again. One ``ablate`` or ``transfer`` at a time per repository (a lock file), so a row ``running`` at
start-up is always a leftover.

When the loop's experiment lifecycle runs snapshots itself, this function is the one to point at it.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from autoresearch import events as ev
from autoresearch import hardware
from autoresearch.config import Config
from autoresearch.errors import UserError
from autoresearch.loop.gitops import Git
from autoresearch.loop.ledger import Experiment, Ledger
from autoresearch.loop.trial import TrialResult, run_trial
from autoresearch.findings.variants import export, tree_of
from autoresearch.vocab import Kind, Status, rerun_seed

# Seeds of findings runs are re-run seeds numbered from here (rerun_seed(seed, FRESH + i)): never a seed the
# loop used to choose the champion (its first runs use [run] seed; confirmations and noise runs 1, 2, ...).
FRESH = 100
REDO = (Status.RUNNING, Status.INTERRUPTED, Status.CONTENTION)


def fresh_seeds(config: Config, n: int) -> list[int]:
    if n < 1:
        raise UserError("--seeds must be at least 1", hint="use --seeds 3: three seeds give an uncertainty")
    return [rerun_seed(config.run.seed, FRESH + i) for i in range(1, n + 1)]


@dataclass
class Bench:
    """What measuring needs: the repository's ledger and git, the configuration runs use (another data set
    or preset makes it differ from the repository's), the executor, and the setting's key."""

    config: Config                 # the runs' configuration
    state_dir: Path                # the repository's state folder: run outputs, snapshots
    ledger: Ledger
    git: Git
    tag: str
    executor: Any
    sandbox: bool
    parallel: int = 1
    reporter: ev.Listener = ev.ignore
    setting: str = ""              # "" = as the loop ran; else e.g. "STEPS=800; preset=seed"
    fingerprints: dict = field(default_factory=dict)


class _Locked:
    """A listener called from several threads (seeds side by side) one event at a time."""

    def __init__(self, listener: ev.Listener) -> None:
        self.listener, self.lock = listener, threading.Lock()

    def __call__(self, event: Any) -> None:
        with self.lock:
            self.listener(event)


@contextlib.contextmanager
def bench(session: Any, *, config: Config | None = None, setting: str = "", reporter: ev.Listener | None = None,
          no_sandbox: bool = False, executor: str | None = None, ray_address: str | None = None,
          parallel: int | None = None) -> Iterator[Bench]:
    """A bench for an open ``Session``: its ledger and git, the executor of ``[resources]`` (or ``executor``),
    the fingerprints checked, the findings lock held; the executor closed at the end."""
    from autoresearch.loop import fingerprints
    from autoresearch.runner.executors import make_executor

    cfg = session.config
    sandboxed = session.sandboxed(no_sandbox)
    prints = fingerprints.verify(cfg)
    listen = _Locked(reporter or ev.ignore)
    parallel = parallel or cfg.resources.parallel
    chosen, _ = make_executor(config or cfg, kind=executor, address=ray_address, parallel=parallel,
                              on_line=lambda spec, line: listen(ev.RunLine(spec, line)))
    try:
        with exclusive(cfg.state_dir, session.ledger, session.tag):
            yield Bench(config=config or cfg, state_dir=cfg.state_dir, ledger=session.ledger, git=Git(cfg.root),
                        tag=session.tag, executor=chosen, sandbox=sandboxed, parallel=parallel, reporter=listen,
                        setting=setting, fingerprints=prints)
    finally:
        close = getattr(chosen, "close", None)
        if close is not None:
            close()


@contextlib.contextmanager
def exclusive(state_dir: Path, ledger: Ledger, tag: str) -> Iterator[None]:
    """Hold the findings lock of a repository; rows of this tag left ``running`` by an earlier kill become
    ``interrupted`` (they are measured again)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "findings.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError("another `autoresearch ablate` or `transfer` is running on this repository",
                            hint="wait for it to finish (its runs are recorded as they end), or stop it") from None
        for row in ledger.running():
            if row.tag == tag and Kind(row.kind).finding:
                ledger.finish(row.number, Status.INTERRUPTED, reason="the tool stopped while this ran; measured again")
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def recorded(ledger: Ledger, tag: str, tree: str, setting: str) -> dict[int, Experiment]:
    """Finished findings rows of ``tag`` for ``tree`` under ``setting``, by seed (the latest wins)."""
    out = {}
    for row in ledger.rows(tag=tag, kinds=(Kind.ABLATION, Kind.TRANSFER)):
        f = row.meta.get("findings") or {}
        if row.status not in REDO and f.get("tree") == tree and f.get("setting", "") == setting:
            out[f.get("seed")] = row
    return out


def runs(rows: dict[int, Experiment], seeds: list[int]) -> dict[int, list[float]]:
    """seed -> per-fold values of the rows that ran fine (a failed run has nothing to pair)."""
    return {s: rows[s].folds for s in seeds if s in rows and rows[s].status == Status.KEEP}


def failure(rows: dict[int, Experiment], seeds: list[int]) -> str:
    """Why the code failed under some seed ('' when every recorded run is fine)."""
    bad = [rows[s] for s in seeds if s in rows and rows[s].status != Status.KEEP]
    return f"{bad[0].status}: {bad[0].reason}" if bad else ""


def measure(bench: Bench, commit: str, seeds: list[int], *, kind: Kind, description: str, source: str,
            meta: dict) -> list[Experiment]:
    """``commit`` run once per seed over every fold; one finished ledger row per seed, in seed order.
    ``source``: the commit it stands for (recorded as the row's parent); ``meta``: what the study needs to
    find the row again (the variant and change), stored under ``meta["findings"]``."""
    tree = tree_of(bench.git, commit)
    done = recorded(bench.ledger, bench.tag, tree, bench.setting)
    todo: list[tuple[int, int]] = []
    for seed in seeds:
        if seed in done:
            continue
        f = {**meta, "tree": tree, "seed": seed, "setting": bench.setting}
        number = bench.ledger.start(
            tag=bench.tag, kind=kind, phase=0, phase_title=str(kind), attempt=1, parent_commit=source,
            candidate_commit=commit, commit=commit, agent="", description=f"{description}, seed {seed}",
            meta_json={"findings": f}, hardware_json=hardware.describe(), sandbox=int(bench.sandbox),
            fingerprints_json=bench.fingerprints)
        bench.git.update_ref(f"refs/autoresearch/findings/{number}", commit)   # the commit outlives gc
        todo.append((seed, number))
    if todo:
        snapshot = export(bench.git, commit, bench.state_dir / "snapshots" / commit[:16])
        try:
            _run(bench, todo, snapshot)
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)
        done = recorded(bench.ledger, bench.tag, tree, bench.setting)
    missing = [s for s in seeds if s not in done]
    if missing:   # contention: not the code's verdict, and nothing to pair
        rows = {r.number: r for r in bench.ledger.rows(tag=bench.tag)}
        why = "; ".join(f"seed {s}: {rows[n].status} ({rows[n].reason})" for s, n in todo if s in missing)
        raise UserError(f"{description}: not measured: {why}",
                        hint="free the machine and run the same command again: finished runs are kept")
    return [done[s] for s in seeds]


def _run(bench: Bench, todo: list[tuple[int, int]], snapshot: Path) -> None:
    def one(seed: int, number: int) -> TrialResult:
        run_dir = bench.state_dir / "runs" / f"{number:04d}"
        return run_trial(bench.config, run_dir, seed=seed, sandbox=bench.sandbox, executor=bench.executor,
                         on_fold=lambda f: bench.reporter(ev.FoldFinished(number, f)), cwd=snapshot)

    def record(number: int, trial: TrialResult) -> None:
        status = Status.KEEP if trial.status == "ok" else trial.status
        bench.ledger.finish(number, status, reason=trial.reason or "measured", **trial.ledger_fields())
        bench.reporter(ev.ExperimentFinished(bench.ledger.get(number)))

    for _, number in todo:
        row = bench.ledger.get(number)
        bench.reporter(ev.ExperimentStarted(number, row.description or "", str(row.kind)))
    if bench.parallel <= 1 or len(todo) == 1:
        for seed, number in todo:
            try:
                trial = one(seed, number)
            except KeyboardInterrupt:
                trial = TrialResult("interrupted", "interrupted by Ctrl-C")
            record(number, trial)
            if trial.status == "interrupted":
                _interrupt_rest(bench, todo)
                raise KeyboardInterrupt
        return
    with cf.ThreadPoolExecutor(max_workers=min(bench.parallel, len(todo))) as pool:
        futures = {pool.submit(one, seed, number): number for seed, number in todo}
        try:
            for fut in cf.as_completed(futures):
                record(futures[fut], fut.result())
        except KeyboardInterrupt:
            cancel = getattr(bench.executor, "cancel_all", None)
            if cancel is not None:
                cancel()
            for fut, number in futures.items():
                try:
                    trial = fut.result()
                except BaseException:   # noqa: BLE001 - the run was cut off: recorded as interrupted
                    trial = TrialResult("interrupted", "interrupted by Ctrl-C")
                if bench.ledger.get(number).status == Status.RUNNING:
                    record(number, trial)
            raise


def _interrupt_rest(bench: Bench, todo: list[tuple[int, int]]) -> None:
    for _, number in todo:
        if bench.ledger.get(number).status == Status.RUNNING:
            bench.ledger.finish(number, Status.INTERRUPTED, reason="not run: interrupted by Ctrl-C")
