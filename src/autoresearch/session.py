"""The library entry point: one object that opens a research repository and answers every question about it.

    import autoresearch
    s = autoresearch.open("my-research", tag="night1")
    s.run(agent="replay", experiments=5)
    print(s.status().champion.metric_mean)

``Session`` owns the configuration, the ledger, the tag, the task, the sandbox choice and the agent's
context (with its history and show tools written once, here). The CLI, the dashboard, a Ray driver and
a notebook all go through it; none of them assembles the system by hand. ``create`` makes a new
repository from a bundled task. ``Session`` never decides anything: the engine does.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from autoresearch import config as config_mod
from autoresearch import events as ev
from autoresearch import tasks
from autoresearch.agents import make_agent
from autoresearch.agents.base import Agent, AgentContext
from autoresearch.agents.brief import Brief
from autoresearch.errors import UserError
from autoresearch.loop import briefing, decide, fingerprints
from autoresearch.loop.engine import Engine, StopReason, open_ledger
from autoresearch.loop.gitops import Git, validate_tag
from autoresearch.loop.ledger import Experiment, Ledger
from autoresearch.loop.phases import Phase
from autoresearch.loop.state import CONTROLS, LoopState
from autoresearch.loop.trial import TrialResult, check_run, run_trial, tail
from autoresearch.runner import sandbox as sandbox_mod
from autoresearch.runner.executor import LocalExecutor
from autoresearch.runviews import RunViews
from autoresearch.text import NOTE_CHARS, stored
from autoresearch.vocab import Direction, Kind



def fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or x != x else f"{x:.{digits}f}"


@dataclass
class StatusView:
    """Where a tag stands: what `autoresearch status` prints and the dashboard's overview shows."""

    tag: str
    metric: str
    direction: Direction
    champion: Experiment | None
    phase: Phase
    phase_used: int
    counts: dict[str, int]
    noise: decide.NoiseFloor | None
    cost_usd: float
    tokens: int
    running: list[Experiment]
    control: str
    recent: list[Experiment] = field(default_factory=list)
    warning: str | None = None       # e.g. the synthetic data was made from a public seed
    in_flight: dict[int, str] = field(default_factory=dict)   # running experiment -> where (docs/parallel.md)


class Session(RunViews):
    """An open research repository and one tag of it (the branch ``autoresearch/<tag>``)."""

    def __init__(self, root: Path | str = ".", *, tag: str | None = None) -> None:
        self.config = config_mod.load(root)
        self.root = self.config.root
        self.task = tasks.for_config(self.config)
        self.ledger: Ledger = open_ledger(self.config)
        self.tag = validate_tag(tag or self.ledger.get_meta("tag") or datetime.now().strftime("%b%d").lower())
        self.state = LoopState(self.config, self.ledger, self.tag)

    def close(self) -> None:
        self.ledger.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- assembling the loop ---------------------------------------------------------------------------
    def sandboxed(self, no_sandbox: bool = False) -> bool:
        """Whether runs are sandboxed: yes unless the user says otherwise; without a working bubblewrap
        that is an error, never a silent downgrade."""
        if no_sandbox or not self.config.run.sandbox:
            return False
        if not sandbox_mod.available():
            raise UserError(f"bubblewrap (bwrap) is not usable, so experiments cannot be sandboxed: "
                            f"{sandbox_mod.unavailable_reason()}",
                            hint="install it (`apt-get install bubblewrap`) or pass --no-sandbox to run unprotected")
        return True

    def agent_context(self, queue: Path | None = None, *, no_sandbox: bool = False) -> AgentContext:
        """What an agent may use besides its brief. ``no_sandbox``: an agent with a process of its own
        (claude-code, command) runs it outside its jail, as runs go outside their sandbox."""
        cfg = self.config
        options = {**cfg.agent.options(), "queue": str(queue) if queue else None}
        if no_sandbox:
            options["sandbox"] = False
        return AgentContext(
            root=cfg.root, editable=list(dict.fromkeys([*cfg.task.editable, cfg.task.scratchpad])),
            # the tool's state (keys, raw data) and the replay plan, which would give the answers away
            denied=[*self.task.agent_denied(cfg), cfg.root / cfg.agent.queue],
            list_experiments=self.history_text, show_experiment=self.show_text, check_run=self.check_run,
            options=options)

    def agent(self, name: str | None = None, *, model: str = "", base_url: str = "",
              queue: Path | None = None, no_sandbox: bool = False) -> Agent:
        return make_agent(name or self.config.agent.name, self.config, self.agent_context(queue, no_sandbox=no_sandbox),
                          tag=self.tag, model=model, base_url=base_url)

    def engine(self, *, agent: Agent | None = None, reporter: ev.Listener | None = None,
               no_sandbox: bool = False, executor: str | None = None, ray_address: str | None = None,
               parallel: int | None = None) -> Engine:
        """The engine, with the executor of ``[resources]`` unless told otherwise (docs/parallel.md)."""
        from autoresearch.runner.executors import make_executor

        self.ledger.set_meta("tag", self.tag)
        self._no_sandbox = no_sandbox     # the agent's check_run runs as the engine's runs do
        listen = ev.Locked(reporter or ev.ignore)   # runs' lines may come from several threads
        chosen, where = make_executor(self.config, kind=executor, address=ray_address, parallel=parallel,
                                      on_line=lambda spec, line: listen(ev.RunLine(spec, line)))
        return Engine(self.config, tag=self.tag, agent=agent, sandbox=self.sandboxed(no_sandbox),
                      reporter=listen, ledger=self.ledger, executor=chosen, where=where)

    # --- doing things ------------------------------------------------------------------------------------
    def run(self, agent: str | Agent | None = None, *, experiments: int | None = None, hours: float | None = None,
            max_cost: float | None = None, max_tokens: int | None = None, reporter: ev.Listener | None = None,
            no_sandbox: bool = False, model: str = "", base_url: str = "", queue: Path | None = None,
            parallel: int | None = None, executor: str | None = None, ray_address: str | None = None) -> StopReason:
        """Run the loop until a stop condition; resumes after any stop. ``parallel`` candidates in flight
        (default ``[resources] parallel``) on ``executor`` (``local`` or ``ray``); see docs/parallel.md."""
        chosen = agent if agent is not None and not isinstance(agent, str) else \
            self.agent(agent, model=model, base_url=base_url, queue=queue, no_sandbox=no_sandbox)
        parallel = parallel or self.config.resources.parallel
        engine = self.engine(agent=chosen, reporter=reporter, no_sandbox=no_sandbox, executor=executor,
                             ray_address=ray_address, parallel=parallel)
        try:
            return engine.run(max_experiments=experiments, hours=hours, max_cost=max_cost, max_tokens=max_tokens,
                              parallel=parallel)
        finally:
            close = getattr(engine.executor, "close", None)
            if close is not None:
                close()

    def trial(self, *, seed: int | None = None, reporter: ev.Listener | None = None,
              no_sandbox: bool = False) -> TrialResult:
        """The current train.py once per fold, scored by the tool; recorded nowhere (a dry run)."""
        sandboxed = self.sandboxed(no_sandbox)
        fingerprints.verify(self.config)
        self.task.check(self.config)
        listen = reporter or ev.ignore
        run_dir = self.config.state_dir / "runs" / time.strftime("trial-%Y%m%d-%H%M%S")
        return run_trial(self.config, run_dir, seed=self.config.run.seed if seed is None else seed,
                         sandbox=sandboxed,
                         executor=LocalExecutor(on_line=lambda spec, line: listen(ev.RunLine(spec, line))),
                         on_fold=lambda f: listen(ev.FoldFinished(0, f)))

    def check_run(self, steps: int, tree: Path | None = None) -> str:
        """The agent's ``check_run`` tool: the agent's working copy (``tree``; default the repository) run
        for a few steps, sandboxed like a trial."""
        runs, stamp = self.config.state_dir / "runs", time.strftime("check-%Y%m%d-%H%M%S")
        run_dir, n = runs / stamp, 1
        while run_dir.exists():      # two checks within one second keep their own logs
            n += 1
            run_dir = runs / f"{stamp}-{n}"
        return check_run(self.config, run_dir, steps, seed=self.config.run.seed, cwd=tree,
                         sandbox=self.sandboxed(getattr(self, "_no_sandbox", False)))

    def measure_noise(self, repeats: int = 3, *, reporter: ev.Listener | None = None,
                      no_sandbox: bool = False) -> decide.NoiseFloor:
        return self.engine(reporter=reporter, no_sandbox=no_sandbox).measure_noise(repeats)

    def final(self, *, reporter: ev.Listener | None = None, no_sandbox: bool = False) -> Experiment:
        # On this machine whatever [resources] executor says: the test split never leaves it.
        return self.engine(reporter=reporter, no_sandbox=no_sandbox, executor="local").run_final()

    def prepare(self, *, say=print, **options: Any) -> dict:
        """Prepare the task's data again (e.g. on the real dataset) and accept the result's fingerprints.
        The task prepares atomically: a failure leaves the previous data and keys as they were."""
        facts = self.task.prepare(self.root, say=say, again=True, **options)
        fingerprints.record(self.config)
        self.ledger.set_meta("data_warning", facts.get("warning") or "")
        self.ledger.event("prepare", options={k: str(v) for k, v in options.items() if v is not None})
        return facts

    def rehash(self) -> int:
        """Accept the current fixed files and data as the new fingerprints (after an intended change)."""
        prints = fingerprints.record(self.config)
        self.ledger.event("rehash", files=len(prints))
        return len(prints)

    def verify(self, *, accept: bool = False) -> list[str]:
        """Where the ledger and git disagree (a record changed outside the tool); with ``accept``, a person
        accepts the ledger as it is now (sealed again, recorded as an event). The problems found either way."""
        from autoresearch.loop import records

        git = Git(self.root)
        found = records.accept(self.ledger, git) if accept else records.verify(self.ledger, git, repair=False)
        return [str(p) for p in found]

    def test_uses(self) -> int:
        return len(self.ledger.events("test_used"))

    def report(self, out: Path | None = None) -> Path:
        """Write index.html, progress.png, results.tsv and results.jsonl; returns the page."""
        from autoresearch.report.html import write_report

        target = Path(out or self.root / "report").resolve()
        _exclude_from_git(self.root, target)
        noise = self.noise()
        return write_report(self.ledger, target, tag=self.tag, metric_name=self.config.metric.name,
                            direction=self.config.metric.direction, noise_sigma=noise.sigma if noise else None,
                            ablation=self.ablation(), transfers=self.transfers())

    # --- what the night found (autoresearch.findings; docs/findings.md) ---------------------------------------
    def kept_changes(self):
        """The baseline, the champion and the kept changes between them (``findings.changes.History``)."""
        from autoresearch.findings.changes import history

        return history(self.ledger, Git(self.root), tag=self.tag, direction=self.config.metric.direction,
                       scratchpad=self.config.task.scratchpad)

    def ablate(self, *, seeds: int = 3, only: list[int] | None = None, reporter: ev.Listener | None = None,
               no_sandbox: bool = False, executor: str | None = None, ray_address: str | None = None,
               parallel: int | None = None):
        """Run the champion without each kept change, paired with the champion (``seeds`` fresh seeds, every
        fold); resumes after any stop. Returns the table (``ablation()``)."""
        from autoresearch.findings import ablate, measure

        hist = self._with_changes("ablate")
        with measure.bench(self, reporter=reporter, no_sandbox=no_sandbox, executor=executor,
                           ray_address=ray_address, parallel=parallel) as bench:
            ablate.run(bench, hist, measure.fresh_seeds(self.config, seeds), only=only)
        return self.ablation()

    def ablation(self):
        """The ablation table of the current champion (``findings.ablate.Ablation``), None when not run."""
        from autoresearch.findings import ablate

        hist = self._history_or_none()
        return None if hist is None else ablate.table(
            self.ledger, Git(self.root), hist, tag=self.tag, metric=self.config.metric.name,
            direction=self.config.metric.direction, k=self.config.decision.k, min_delta=self.config.decision.min_delta)

    def transfer(self, *, seeds: int = 3, overrides: dict | None = None, preset: str | None = None,
                 data: Path | None = None, each: bool = False, reporter: ev.Listener | None = None,
                 no_sandbox: bool = False, executor: str | None = None, ray_address: str | None = None,
                 parallel: int | None = None):
        """The baseline and the champion (with ``each``, the champion without each kept change) under a
        setting the loop did not tune on; returns its table (``findings.transfer.Transfer``)."""
        from autoresearch.findings import measure, transfer

        hist = self._with_changes("transfer")
        run_config, setting, constants = transfer.configure(self.config, self.task, overrides=overrides or {},
                                                            preset=preset, data=data)
        editable = [p for p in self.config.task.editable if p != self.config.task.scratchpad]
        with measure.bench(self, config=run_config, setting=setting.key, reporter=reporter, no_sandbox=no_sandbox,
                           executor=executor, ray_address=ray_address, parallel=parallel) as bench:
            transfer.run(bench, hist, setting, constants, measure.fresh_seeds(self.config, seeds), editable=editable,
                         each=each)
        return next(t for t in self.transfers() if t.setting == setting.key)

    def transfers(self) -> list:
        """Every setting the current champion was moved to (``findings.transfer.Transfer``)."""
        from autoresearch.findings import transfer

        hist = self._history_or_none()
        return [] if hist is None else transfer.tables(
            self.ledger, Git(self.root), hist, tag=self.tag, direction=self.config.metric.direction,
            k=self.config.decision.k, min_delta=self.config.decision.min_delta)

    def finalize(self, out: Path | None = None):
        """The branch ``autoresearch/<tag>-final`` (one commit per kept change) and ``summary.md`` in the
        report folder; returns (``findings.finalize.Final``, the summary's path)."""
        from autoresearch.findings import finalize, summary

        hist = self.kept_changes()
        ablation = self.ablation()
        final = finalize.build(Git(self.root), hist, tag=self.tag, metric=self.config.metric.name, ablation=ablation)
        target = Path(out or self.root / "report").resolve()
        _exclude_from_git(self.root, target)
        path = summary.write(self, hist, target / "summary.md", final=final, ablation=ablation,
                             transfers=self.transfers())
        self.ledger.event("finalize", tag=self.tag, branch=final.branch, head=final.head, summary=str(path))
        return final, path

    def export_mlflow(self, tracking_uri: str | None = None, *, experiment: str | None = None, say=None):
        """Every finished row of this tag as an MLflow run (``export.mlflow``); only what is new."""
        from autoresearch.export.mlflow import export

        return export(self, tracking_uri=tracking_uri, experiment=experiment, say=say)

    def _with_changes(self, what: str):
        hist = self.kept_changes()
        if not hist.changes:
            raise UserError(f"tag {self.tag!r} has no kept change: the champion is the baseline, nothing to {what}",
                            hint="run the loop until it keeps a change (`autoresearch run`)")
        return hist

    def _history_or_none(self):
        try:
            return self.kept_changes()
        except UserError:
            return None

    # --- steering (read by the engine between experiments) --------------------------------------------------
    def control(self) -> str:
        return self.ledger.get_meta(f"control:{self.tag}") or "run"

    def set_control(self, value: str) -> None:
        if value not in CONTROLS:
            raise UserError(f"unknown control {value!r}", hint=f"use one of {', '.join(CONTROLS)}")
        self.ledger.set_meta(f"control:{self.tag}", value)
        self.ledger.event("control", tag=self.tag, value=value)

    def pause(self) -> None:
        """Pause after the current experiment (the loop waits until resumed or stopped)."""
        self.set_control("pause")

    def resume(self) -> None:
        self.set_control("run")

    def stop(self) -> None:
        """Stop after the current experiment; `autoresearch run` starts it again."""
        self.set_control("stop")

    def note(self, text: str) -> int:
        """A note from the researcher, added to the next brief (and recorded, as text fit to store)."""
        text = stored(text, NOTE_CHARS).strip()
        if not text:
            raise UserError("the note is empty")
        return self.ledger.event("note", tag=self.tag, text=text)

    def notes(self) -> list[dict]:
        """Every note of this tag, with the experiment it was delivered to (None while pending)."""
        delivered = {e.payload.get("note"): e.number for e in self.ledger.events("note_delivered")}
        return [{"id": e.id, "time": e.time, "text": e.payload.get("text", ""), "delivered_to": delivered.get(e.id)}
                for e in self.ledger.events("note") if e.payload.get("tag") == self.tag]

    # --- reading -------------------------------------------------------------------------------------------
    def rows(self, kinds: tuple[str, ...] = (Kind.BASELINE, Kind.EXPERIMENT)) -> list[Experiment]:
        return self.ledger.rows(tag=self.tag, kinds=kinds)

    def experiment(self, number: int) -> Experiment | None:
        return self.ledger.get(number)

    def champion(self) -> Experiment | None:
        return self.ledger.champion(self.tag)

    def phase(self) -> tuple[Phase, int]:
        return self.state.phase()

    def noise(self) -> decide.NoiseFloor | None:
        return self.state.noise()

    def spent(self) -> tuple[float, int]:
        return self.state.spent()

    def status(self, recent: int = 15) -> StatusView:
        rows = self.rows()
        counts: dict[str, int] = {}
        for r in rows:
            if r.kind == Kind.EXPERIMENT:
                counts[r.status] = counts.get(r.status, 0) + 1
        phase, used = self.phase()
        cost, tokens = self.spent()
        return StatusView(tag=self.tag, metric=self.config.metric.name, direction=self.config.metric.direction,
                          champion=self.champion(), phase=phase, phase_used=used, counts=counts,
                          noise=self.noise(), cost_usd=cost, tokens=tokens,
                          running=[r for r in self.ledger.running() if r.tag == self.tag], control=self.control(),
                          recent=rows[-recent:] if recent else rows, warning=self.ledger.get_meta("data_warning"),
                          in_flight=self.in_flight())

    def in_flight(self) -> dict[int, str]:
        """Experiments running now and where: the worktree and executor of each candidate in flight (as
        the driver recorded them)."""
        recorded = self.ledger.get_meta(f"inflight:{self.tag}") or {}
        out = {}
        for r in self.ledger.running():
            if r.tag != self.tag or r.kind != Kind.EXPERIMENT:
                continue
            info = recorded.get(str(r.number))
            out[r.number] = (f"{info['executor']}, slot {info.get('slot', '?')}, from champion {info['parent']}"
                             + (f", re-applied {info['reapplied']}x" if info.get("reapplied") else "")
                             if info else "a snapshot of its candidate commit")
        return out

    def brief(self, agent: str | None = None) -> Brief:
        """Exactly what the agent would be told for the next experiment."""
        return briefing.assemble(self.state, Git(self.root), self.state.base(), notes=[],
                                 agent_name=agent or self.config.agent.name)

    def history_text(self) -> str:
        """The compact table of experiments that agents get from their ``list_experiments`` tool."""
        lines = ["number  status       mean ± std        delta     description"]
        for r in self.rows():
            lines.append(f"{r.number:>6}  {r.status:<11}  {fmt(r.metric_mean):>8} ± {fmt(r.metric_std):<6}  "
                         f"{fmt(r.delta):>7}   {r.description or ''}")
        return "\n".join(lines)

    def show_text(self, number: int) -> str:
        """One experiment as text: what it changed, its metrics and decision, its diff and log tail."""
        row = self.ledger.get(number)
        if row is None or row.kind == Kind.FINAL:
            return f"no experiment {number}"
        parts = [f"experiment {row.number} [{row.status}] {row.description or ''}",
                 f"phase: {row.phase_title}   changed: {row.changed or '—'}",
                 f"{self.config.metric.name}: {fmt(row.metric_mean)} ± {fmt(row.metric_std)}  delta {fmt(row.delta)}  "
                 f"folds {[fmt(v) for v in row.folds]}",
                 f"reason: {row.reason or '—'}", f"hypothesis: {row.hypothesis or '—'}"]
        commit = row.commit or row.candidate_commit
        if commit and row.parent_commit:
            try:
                parts.append(Git(self.root).diff(row.parent_commit, commit))
            except Exception as exc:  # a pruned commit should not break `show`
                parts.append(f"(diff unavailable: {exc})")
        if row.log_path:
            parts.append("--- log tail ---\n" + tail(Path(row.log_path), 25))
        return "\n".join(parts)


def open(path: Path | str = ".", *, tag: str | None = None) -> Session:  # noqa: A001  (autoresearch.open)
    """Open the research repository at ``path`` (its ``autoresearch.toml``) for one tag."""
    return Session(path, tag=tag)


def create(task: str, dest: Path | str, *, say=print, **options: Any) -> dict:
    """Create a research repository of a bundled task at ``dest`` and prepare its data.

    Built next to the destination and moved into place at the end, so a failure (bad data, Ctrl-C)
    leaves nothing behind and the same command can simply be run again. Returns the task's facts."""
    chosen = tasks.creatable(task)
    known = chosen.options()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(f"task {task!r} has no option {unknown[0]!r}",
                        hint=f"its options: {', '.join(known) or 'none'}")
    settings = {**known, **options}
    dest = Path(dest).resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"{dest} exists and is not empty", hint="choose a new folder for the research repository")
    partial = dest.with_name(f".{dest.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        chosen.write(partial, say=say, **settings)
        git = Git(partial)
        git.init()
        git.commit(["."], f"{task} research task\n\nCreated by `autoresearch init {task}`.\n")
        facts = chosen.prepare(partial, say=say, **settings)
        if dest.exists():
            dest.rmdir()   # empty, checked above
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    config = config_mod.load(dest)
    fingerprints.record(config)
    if facts.get("warning"):   # e.g. synthetic data from a public seed: shown by `status` and the report
        with open_ledger(config) as ledger:
            ledger.set_meta("data_warning", facts["warning"])
    facts["description"] = chosen.describe(facts)
    return facts


def _exclude_from_git(root: Path, target: Path) -> None:
    """A report written inside the repository must survive the loop's resets (which clean untracked files)."""
    try:
        rel = target.relative_to(root)
    except ValueError:
        return
    exclude = root / ".git" / "info" / "exclude"
    line = f"/{rel.as_posix()}/"
    if exclude.parent.is_dir() and line not in (exclude.read_text() if exclude.is_file() else "").splitlines():
        with exclude.open("a", encoding="utf-8") as fh:
            fh.write(f"\n{line}\n")
