"""The loop assembled for one tag: ``Engine`` gives one name to the parts that do the work.

Contract: ``Engine`` holds a ``Loop`` (settings, ledger, git, state, agent, executor, listener) and
forwards each action to the module that owns it; it decides nothing itself.

- start-up: ``prepare`` → ``loop/recovery.py``
- the night: ``run`` → ``loop/driver.py`` (``parallel`` candidates in flight; 1 is the serial loop)
- one experiment by hand: ``experiment`` → ``loop/lifecycle.py`` (open, run, conclude), as the driver does
- the champion's own measurements: ``ensure_baseline``, ``measure_noise``, ``run_final`` → ``loop/champion.py``
- questions: ``champion``, ``phase``, ``noise``, ``base``, ``finished``, ``spent`` → ``loop/state.py``
- the brief: ``brief`` → ``loop/briefing.py``
"""

from __future__ import annotations

from typing import Callable

from autoresearch import events as ev
from autoresearch.agents.base import Agent, Brief
from autoresearch.config import Config
from autoresearch.loop import briefing, champion, recovery
from autoresearch.loop.context import Loop
from autoresearch.loop.decide import NoiseFloor
from autoresearch.loop.driver import MAX_AGENT_FAILURES, Driver, StopReason, first_job  # noqa: F401  (the engine's API)
from autoresearch.loop.ledger import Experiment, Ledger
from autoresearch.loop.lifecycle import Again, Done, Job, Lifecycle
from autoresearch.loop.phases import Phase
from autoresearch.loop.trial import TrialResult
from autoresearch.runner.executor import Executor

Reporter = ev.Listener            # gets every loop event (autoresearch.events); never decides


class Engine:
    def __init__(self, config: Config, *, tag: str, agent: Agent | None = None, sandbox: bool = True,
                 executor: Executor | None = None, reporter: Reporter | None = None,
                 ledger: Ledger | None = None, where: str = "local") -> None:
        self.loop = Loop(config, tag, ledger or open_ledger(config), agent=agent, sandbox=sandbox,
                         executor=executor, reporter=reporter or ev.ignore, where=where)

    # --- the parts, by name ------------------------------------------------------------------------
    config = property(lambda self: self.loop.config)
    tag = property(lambda self: self.loop.tag)
    ledger = property(lambda self: self.loop.ledger)
    git = property(lambda self: self.loop.git)
    state = property(lambda self: self.loop.state)

    @property
    def agent(self) -> Agent | None:
        return self.loop.agent

    @agent.setter
    def agent(self, agent: Agent | None) -> None:
        self.loop.agent = agent

    @property
    def executor(self) -> Executor:
        return self.loop.executor

    @executor.setter
    def executor(self, executor: Executor) -> None:
        self.loop.executor = executor

    @property
    def reporter(self) -> Reporter:
        return self.loop.reporter

    @property
    def notes(self) -> list[str]:
        return self.loop.notes

    # --- questions -----------------------------------------------------------------------------------
    def champion(self) -> Experiment | None:
        return self.loop.state.champion()

    def finished(self) -> list[Experiment]:
        return self.loop.state.finished()

    def phase(self) -> tuple[Phase, int]:
        return self.loop.state.phase()

    def noise(self) -> NoiseFloor | None:
        return self.loop.state.noise()

    def base(self) -> str | None:
        return self.loop.state.base()

    def spent(self) -> tuple[float, int]:
        return self.loop.state.spent()

    def brief(self, phase: Phase | None = None, *, attempt: int = 1, failure: str = "",
              agent_name: str | None = None) -> Brief:
        """What the agent is told next (``phase`` is the current one; kept for callers that pass it)."""
        name = agent_name or (self.loop.agent.name if self.loop.agent is not None else "")
        return briefing.assemble(self.loop.state, self.loop.git, self.loop.state.base(), notes=self.loop.notes,
                                 agent_name=name, attempt=attempt, failure=failure)

    # --- actions -------------------------------------------------------------------------------------
    def prepare(self) -> None:
        recovery.recover(self.loop)

    def ensure_baseline(self) -> Experiment:
        return champion.ensure_baseline(self.loop)

    def run(self, *, max_experiments: int | None = None, hours: float | None = None,
            max_cost: float | None = None, max_tokens: int | None = None,
            should_stop: Callable[[], str | None] | None = None, parallel: int = 1) -> StopReason:
        return Driver(self.loop, parallel=parallel).run(max_experiments=max_experiments, hours=hours,
                                                         max_cost=max_cost, max_tokens=max_tokens,
                                                         should_stop=should_stop)

    def experiment(self, job: Job | None = None) -> tuple[Experiment | None, TrialResult | None] | None:
        """One experiment from the agent's turn to its record, in this thread. Returns (row, first trial),
        (None, None) when nothing was recorded (a crash fix given up), or None when the agent is exhausted."""
        life = Lifecycle(self.loop)
        opened = life.open(job or first_job(self.loop), 0, [])
        if isinstance(opened, Done):
            return None if opened.exhausted else (opened.row, opened.trial)
        step = life.conclude(opened, life.run(opened))
        while isinstance(step, Again):
            life.prepare_run(opened)
            step = life.conclude(opened, life.run(opened))
        return step.row, step.trial

    def measure_noise(self, repeats: int) -> NoiseFloor:
        self.prepare()
        return champion.measure_noise(self.loop, repeats)

    def run_final(self) -> Experiment:
        self.prepare()
        return champion.run_final(self.loop)


def open_ledger(config: Config) -> Ledger:
    """The ledger of a repository, creating the state folder. The folder ignores itself in git (its own
    ``.gitignore``), so a repository whose .gitignore does not list it never looks dirty because of it."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    ignore = config.state_dir / ".gitignore"
    if not ignore.is_file():
        ignore.write_text("# the tool's state: never committed\n*\n", encoding="utf-8")
    return Ledger(config.state_dir / "ledger.sqlite")
