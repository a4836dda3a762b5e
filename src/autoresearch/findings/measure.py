"""Running a commit: the one place where ``ablate`` and ``transfer`` turn code into recorded measurements.

``measure(bench, commit, seeds, ...)`` runs the commit's tree once per seed over every fold, each run a
ledger row of kind ``ablation`` or ``transfer`` started before it runs and sealed after it
(``Loop.start_row``/``Loop.finish``, like the loop's noise-floor runs). Runs go through the loop's own
``loop.runs.measure``: a read-only snapshot of the commit, a fresh run folder ``.autoresearch/runs/<number>``,
the executor of ``[resources]`` (seeds side by side when ``--parallel`` allows; folds side by side when the
executor has slots; Ray when chosen). The user's working tree and branch are never touched. Under another
data set (``transfer --data``) the snapshot and run folders stay this repository's, and only the trial's
configuration (which prepared data and keys score it) is the other one's.

Resuming: a finished row with the same tree, seed and setting is reused (whatever study recorded it: the
champion measured by ``ablate`` is the champion ``transfer`` needs under the same setting); rows left
``running`` by a kill are sealed ``interrupted`` when the next ``ablate`` or ``transfer`` starts (or when the
loop starts), and run again. One ``ablate`` or ``transfer`` at a time per repository (a lock file).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from autoresearch import events as ev
from autoresearch.config import Config
from autoresearch.errors import UserError
from autoresearch.loop import runs as loop_runs
from autoresearch.loop.context import Loop
from autoresearch.loop.ledger import Experiment, Ledger, SealedRow
from autoresearch.loop.trial import TrialResult, run_trial
from autoresearch.findings.variants import tree_of
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
    """What measuring needs: the loop's shared parts (``Loop``: this repository's configuration, ledger, git,
    sandbox choice, executor, listener, fingerprints), the configuration the trials use (another data set or
    preset makes it differ from the repository's), how many seeds run side by side, the setting's key."""

    loop: Loop
    run_config: Config
    parallel: int = 1
    setting: str = ""              # "" = as the loop ran; else e.g. "STEPS=800; preset=seed"

    @property
    def ledger(self) -> Ledger:
        return self.loop.ledger

    @property
    def git(self):
        return self.loop.git

    @property
    def tag(self) -> str:
        return self.loop.tag


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
    listen = ev.Locked(reporter or ev.ignore)     # seeds side by side report from several threads
    parallel = parallel or cfg.resources.parallel
    chosen, where = make_executor(config or cfg, kind=executor, address=ray_address, parallel=parallel,
                                  on_line=lambda spec, line: listen(ev.RunLine(spec, line)))
    loop = Loop(config=cfg, tag=session.tag, ledger=session.ledger, sandbox=sandboxed, executor=chosen,
                reporter=listen, where=where, fingerprints=prints)
    try:
        with exclusive(loop):
            yield Bench(loop=loop, run_config=config or cfg, parallel=parallel, setting=setting)
    finally:
        close = getattr(chosen, "close", None)
        if close is not None:
            close()


@contextlib.contextmanager
def exclusive(loop: Loop) -> Iterator[None]:
    """Hold the findings lock of a repository; rows of this tag left ``running`` by an earlier kill are
    sealed ``interrupted`` (they are measured again)."""
    loop.state_dir.mkdir(parents=True, exist_ok=True)
    with open(loop.state_dir / "findings.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError("another `autoresearch ablate` or `transfer` is running on this repository",
                            hint="wait for it to finish (its runs are recorded as they end), or stop it") from None
        for row in loop.ledger.running():
            if row.tag == loop.tag and Kind(row.kind).finding:
                loop.finish(row.number, Status.INTERRUPTED, reason="the tool stopped while this ran; measured again")
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
    loop = bench.loop
    tree = tree_of(loop.git, commit)
    done = recorded(loop.ledger, loop.tag, tree, bench.setting)
    todo: list[tuple[int, int]] = []
    for seed in seeds:
        if seed in done:
            continue
        f = {**meta, "tree": tree, "seed": seed, "setting": bench.setting}
        number = loop.start_row(kind=kind, phase=0, phase_title=str(kind), parent_commit=source,
                                candidate_commit=commit, commit=commit, agent="",
                                description=f"{description}, seed {seed}", meta_json={"findings": f})
        loop.git.update_ref(f"refs/autoresearch/findings/{number}", commit)   # the commit outlives gc
        todo.append((seed, number))
    if todo:
        _run(bench, commit, todo)
        done = recorded(loop.ledger, loop.tag, tree, bench.setting)
    missing = [s for s in seeds if s not in done]
    if missing:   # contention, or the loop interrupted it: not the code's verdict, and nothing to pair
        rows = {n: loop.ledger.get(n) for _, n in todo}
        why = "; ".join(f"seed {s}: {rows[n].status} ({rows[n].reason})" for s, n in todo if s in missing)
        raise UserError(f"{description}: not measured: {why}",
                        hint="free the machine and run the same command again: finished runs are kept")
    return [done[s] for s in seeds]


def _run(bench: Bench, commit: str, todo: list[tuple[int, int]]) -> None:
    loop = bench.loop

    def one(seed: int, number: int) -> TrialResult:
        def trial(run_dir: Path, cwd: Path) -> TrialResult:
            return run_trial(bench.run_config, run_dir, seed=seed, sandbox=loop.sandbox, executor=loop.executor,
                             on_fold=lambda f: loop.reporter(ev.FoldFinished(number, f)), cwd=cwd)

        return loop_runs.measure(loop, commit, f"{number:04d}", trial)

    def record(number: int, trial: TrialResult) -> None:
        status = Status.KEEP if trial.status == "ok" else Status(trial.status)
        try:
            loop.finish(number, status, reason=trial.reason or "measured", **trial.ledger_fields())
        except SealedRow:       # the loop started meanwhile and sealed it interrupted: measured again next time
            return
        loop.reporter(ev.ExperimentFinished(loop.ledger.get(number)))

    for _, number in todo:
        row = loop.ledger.get(number)
        loop.reporter(ev.ExperimentStarted(number, row.description or "", str(row.kind)))
    if bench.parallel <= 1 or len(todo) == 1:
        for seed, number in todo:
            try:
                trial = one(seed, number)
            except KeyboardInterrupt:
                trial = TrialResult(Status.INTERRUPTED, "interrupted by Ctrl-C")
            record(number, trial)
            if trial.status == Status.INTERRUPTED:
                _interrupt_rest(loop, todo)
                raise KeyboardInterrupt
        return
    with cf.ThreadPoolExecutor(max_workers=min(bench.parallel, len(todo))) as pool:
        futures = {pool.submit(one, seed, number): number for seed, number in todo}
        try:
            for fut in cf.as_completed(futures):
                record(futures[fut], fut.result())
        except KeyboardInterrupt:
            cancel = getattr(loop.executor, "cancel_all", None)
            if cancel is not None:
                cancel()
            for fut, number in futures.items():
                try:
                    trial = fut.result()
                except BaseException:   # noqa: BLE001 - the run was cut off: recorded as interrupted
                    trial = TrialResult(Status.INTERRUPTED, "interrupted by Ctrl-C")
                if loop.ledger.get(number).status == Status.RUNNING:
                    record(number, trial)
            raise


def _interrupt_rest(loop: Loop, todo: list[tuple[int, int]]) -> None:
    for _, number in todo:
        if loop.ledger.get(number).status == Status.RUNNING:
            loop.finish(number, Status.INTERRUPTED, reason="not run: interrupted by Ctrl-C")
