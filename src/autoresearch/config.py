"""The schema of ``autoresearch.toml``: every key declared once, with its type, default, bounds and help.

A section is a frozen dataclass whose fields are declared with ``setting()`` (``settings.py``); the
reader, its error messages and the reference page (docs/configuration.md, ``scripts/config_docs.py``)
derive from those declarations. Every error names the file, the section and the key, and says what would
be valid. Unknown keys and sections are errors too, so a typo (``timout_s``) never silently falls back to
a default. Rules that tie keys together (``timeout_s`` at least ``time_budget_s``, a regex with a group,
...) are the explicit checks below, run after a section is read, each naming its key.

Adding a key is one line in its section, then ``python scripts/config_docs.py`` to refresh the page::

    max_wait_s: float = setting(0.0, "how long to wait for X, seconds (0: no limit)", at_least=0)

(``above``/``below`` are strict bounds, ``at_least``/``at_most`` not; ``choices=(...)`` for a string, or
annotate with a ``StrEnum``). A new section is a dataclass of such fields and a field of ``Config`` with it
as ``default_factory``; a rule across its keys goes into ``_CHECKS``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autoresearch import settings
from autoresearch.errors import UserError
from autoresearch.settings import setting
from autoresearch.vocab import DecisionRule, Direction, ExecutorKind

CONFIG_NAME = "autoresearch.toml"
DECISION_RULES = tuple(DecisionRule)
EXECUTORS = tuple(ExecutorKind)
TOOL_CHOICES = ("auto", "required", "none", "omit")
MAX_TOKENS_PARAMS = ("auto", "max_tokens", "max_completion_tokens", "omit")

@dataclass(frozen=True)
class TaskSection:
    """The files of the research repository and what the agent may change. Paths are relative to the
    repository and stay inside it."""

    name: str = setting("task", "the task: a bundled one (eclip, toy) by name; any other name is your own repository")
    editable: tuple[str, ...] = setting(("train.py",), "the files the agent may change (at least one)")
    scratchpad: str = setting("scratchpad.md", "the agent's memory between experiments, committed with each")
    program: str = setting("program.md", "the research program: phases, rules, the metric (fixed)")
    fixed: tuple[str, ...] = setting((), "more files the agent may not change, fingerprinted like program.md")


@dataclass(frozen=True)
class RunSection:
    """One fold run of the training command."""

    command: tuple[str, ...] = setting(("python", "train.py"), "the command of one run, in the repository")
    time_budget_s: float = setting(300.0, "the time a fold is expected to take, seconds (told to the agent)",
                                   above=0)
    timeout_s: float = setting(600.0, "hard deadline of one fold run, seconds (at least time_budget_s)", above=0)
    grace_s: float = setting(10.0, "seconds between SIGTERM and SIGKILL at the deadline", at_least=0)
    folds: int = setting(1, "folds per experiment, each a run of its own", above=0)
    seed: int = setting(0, "the base seed of every run (AUTORESEARCH_SEED)")
    memory_gb: float = setting(0.0, "a run is killed above this resident memory, GB (0: no limit)", at_least=0)
    sandbox: bool = setting(True, "run under bubblewrap: no network, read-only repository, hidden keys")
    tmp_gb: float = setting(0.0, "the sandbox's /tmp and /dev/shm, each, GB, counted in memory_gb (0: as large as "
                            "memory_gb, or the kernel's default without a ceiling)", at_least=0)
    output_gb: float = setting(0.0, "quota of a run's output folder while it runs, GB (0: memory_gb, at least 1; "
                               "8 without a ceiling)", at_least=0)

    @property
    def tmp_size_gb(self) -> float:
        """The size of the sandbox's /tmp and /dev/shm (0: the kernel's default)."""
        return self.tmp_gb or self.memory_gb

    @property
    def output_quota_gb(self) -> float:
        """The output folder's quota."""
        return self.output_gb or (max(1.0, self.memory_gb) if self.memory_gb > 0 else 8.0)


@dataclass(frozen=True)
class MetricSection:
    """The one number an experiment is judged by, computed by the tool from what the run left behind."""

    name: str = setting("metric", "the metric's name, as reports show it")
    direction: Direction = setting(Direction.MINIMIZE, "which way the metric improves")
    source: str = setting("regex", "where the number comes from: regex (the run's log), json (a file the run "
                          "writes) or a task's own source (eclip)")   # checked against the task's sources
    file: str = setting("metrics.json", "source = \"json\": the file, in the run's output folder")
    key: str = setting("", "source = \"json\": the field holding the metric (required there)")
    pattern: str = setting("", "source = \"regex\": a regular expression with one group around the number "
                           "(required there)")


@dataclass(frozen=True)
class LoopSection:
    """The experiment loop's own limits."""

    max_crash_fixes: int = setting(2, "turns the agent gets to fix a candidate that crashed or timed out",
                                   at_least=0)
    scratchpad_max_chars: int = setting(8000, "the most characters the scratchpad may hold", above=0)
    log_tail_lines: int = setting(40, "lines of a failed run's log shown to the agent", above=0)


@dataclass(frozen=True)
class SmokeSection:
    """A few steps of each candidate on a small slice before its folds, so a crash costs seconds."""

    enabled: bool = setting(True, "run the smoke test before a candidate's folds")
    timeout_s: float = setting(0.0, "a run still alive here got past start-up and passes, seconds (0: 10% of "
                               "time_budget_s within 10..60 s)", at_least=0)
    steps: int = setting(3, "AUTORESEARCH_SMOKE_STEPS: a task that honours it stops after this many", above=0)

    def deadline(self, run: "RunSection") -> float:
        """The smoke test's deadline: ``timeout_s``, or 10% of the fold's time budget within 10..60 s,
        never past the fold's own hard deadline. A script that ignores the smoke variables runs until
        this deadline, so it is what the smoke test costs a Karpathy-style script per candidate."""
        chosen = self.timeout_s or min(60.0, max(10.0, 0.1 * run.time_budget_s))
        return min(chosen, run.timeout_s)


@dataclass(frozen=True)
class DecisionSection:
    """Keep or discard (docs/decisions.md); the defaults come from benchmarks/decision_sim.py."""

    rule: DecisionRule = setting(DecisionRule.SEQUENTIAL, "sequential: fold by fold and run by run against the "
                                 "measured seed noise, more runs while uncertain; noise: one run, a confirmation "
                                 "band; greedy: a strictly better mean over folds")
    min_delta: float = setting(0.0, "the smallest gain worth keeping, in metric units", at_least=0)
    k: float = setting(2.0, "a keep needs a gain this many standard deviations of the difference beyond "
                       "min_delta", at_least=0)
    max_runs: int = setting(4, "sequential rule: at most this many runs of a candidate (fresh seeds) before it is "
                            "discarded", at_least=2, why="a keep needs two runs under different seeds, to check "
                            "that the candidate uses its seed")
    baseline_repeats: int = setting(3, "sequential rule: runs of the baseline, the first included, measured at the "
                                    "start of a night: the first evidence of seed noise", at_least=1)
    stop_margin: float = setting(1.0, "sequential rule: after a fold, stop a run this many sd below its discard "
                                 "boundary", at_least=0)
    confirm_band: float = setting(1.0, "noise rule: a gain this many sd below the threshold is re-run to "
                                  "confirm (0: no confirmation)", at_least=0)
    confirm_repeats: int = setting(1, "confirmation runs of a close call", at_least=0)
    remeasure_after: float = setting(0.0, "re-measure the noise floor once the champion has moved this much, "
                                     "relative (0: never)", at_least=0)


@dataclass(frozen=True)
class AbortSection:
    """Early abort of doomed runs (docs/early-abort.md); the defaults come from benchmarks/early_abort.py."""

    enabled: bool = setting(True, "stop a run early that is clearly worse than the champion")
    key: str = setting("loss", "the progress-line value compared with the champion's (a name such as loss)")
    ratio: float = setting(1.5, "abort above this many times the champion's value at the same step...",
                           above=1, why="1 would abort every run worse than the champion")
    patience: int = setting(2, "...on this many progress lines in a row...", above=0)
    min_fraction: float = setting(0.25, "...from this fraction of the run's steps on (NaN/inf aborts at any step)",
                                  at_least=0, at_most=1)
    min_progress: float = setting(0.1, "or below this share of the champion's progress since the first line "
                                  "(0: off)", at_least=0, at_most=1)
    fold_margin: float = setting(0.0, "skip the later folds once a fold scores this share worse than the "
                                 "champion's (0: off)", at_least=0)


@dataclass(frozen=True)
class ContentionSection:
    """A deadline hit on a busy machine is not the candidate's fault (docs/contention.md, runner/load.py)."""

    enabled: bool = setting(True, "tell runs starved by other work from timeouts, and pause on a busy machine")
    busy_other: float = setting(0.5, "other work kept at least this fraction of the run's cores busy...",
                                above=0, at_most=1)
    min_share: float = setting(0.5, "...and the run got less than this fraction of the CPU it asked for",
                               above=0, at_most=1)
    pause_after: int = setting(3, "this many such runs in a row: pause instead of spending the budget", above=0)
    pause_s: float = setting(60.0, "first pause, seconds; doubles each time the champion is still starved",
                             at_least=0)
    pause_max_s: float = setting(1800.0, "longest single pause, seconds (at least pause_s)", at_least=0)
    deadline_cap: float = setting(3.0, "a run slowed by other work but on the champion's pace may run up to this "
                                  "many times timeout_s (1: the deadline never moves)", at_least=1)
    pace_tolerance: float = setting(1.5, "CPU seconds per step up to this many times the champion's count as on "
                                    "pace", at_least=1)


@dataclass(frozen=True)
class AgentSection:
    """The agent that proposes changes (docs/agents.md)."""

    name: str = setting("replay", "replay, optuna, openai, anthropic, claude-code or command")
    queue: str = setting("queue.toml", "replay: the research plan it plays back")
    model: str = setting("", "the model an LLM agent calls")
    base_url: str = setting("", "openai: an OpenAI-compatible server (vLLM, Ollama, llama.cpp)")
    max_turns: int = setting(30, "tool-calling turns per proposal", above=0)
    prices: str = setting("", "a TOML file of USD per million tokens, overriding the built-in table "
                          "(relative to the repository)")
    timeout_s: float = setting(0.0, "one API call, or one Claude Code invocation, seconds (0: the agent's own "
                               "default)", at_least=0)
    retries: int = setting(4, "tries per API call on rate limits, server errors and timeouts", above=0)
    backoff_s: float = setting(1.0, "first backoff, seconds; doubles with jitter", at_least=0)
    max_tokens: int = setting(8192, "output tokens per API call", above=0)
    claude_path: str = setting("", "the Claude Code executable (default: claude on PATH)")
    max_cost_usd: float = setting(0.0, "stop the run once the agent has cost this much (0: no limit)",
                                  at_least=0)
    max_total_tokens: int = setting(0, "stop the run once the agent has used this many tokens (0: no limit)",
                                    at_least=0)
    max_budget_usd: float = setting(0.0, "Claude Code only: the CLI's own cap per invocation (0: none)",
                                    at_least=0)
    tool_choice: str = setting("auto", "openai: sent with the tools (omit: not sent; llama.cpp's server needs "
                               "auto)", choices=TOOL_CHOICES)
    max_tokens_param: str = setting("auto", "openai: the field max_tokens is sent as (omit: not sent); auto: by "
                                    "base_url", choices=MAX_TOKENS_PARAMS)
    context_tokens: int = setting(0, "API agents: fit the conversation into this many tokens (0: no limit)",
                                  at_least=0)
    tools: tuple[str, ...] = setting((), "API agents: offer only these tools (empty: all), e.g. a small "
                                     "model's few")
    command: tuple[str, ...] = setting((), 'name = "command": the program and its arguments (the brief on stdin)')
    env: tuple[str, ...] = setting((), 'name = "command": the names of the tool\'s environment variables it gets '
                                   "(its API key)")
    sandbox: bool = setting(True, "claude-code, command: run the agent's own process in its jail (runner/jail.py)")

    def options(self) -> dict:
        """The settings LLM agents read from ``AgentContext.options``."""
        out: dict = {"retries": self.retries, "backoff_s": self.backoff_s, "max_tokens": self.max_tokens,
                     "tool_choice": self.tool_choice, "max_tokens_param": self.max_tokens_param,
                     "context_tokens": self.context_tokens}
        if self.tools:
            out["tools"] = list(self.tools)
        if self.timeout_s:
            out["timeout_s"] = self.timeout_s
        if self.prices:
            out["prices"] = self.prices
        if self.claude_path:
            out["claude_path"] = self.claude_path
        if self.max_budget_usd:
            out["max_budget_usd"] = self.max_budget_usd
        if self.command:
            out["command"] = list(self.command)
        if self.env:
            out["env"] = list(self.env)
        out["sandbox"] = self.sandbox
        return out


@dataclass(frozen=True)
class ResourcesSection:
    """What one fold run needs and how much runs at once (docs/parallel.md). The defaults are today's
    behaviour: one candidate at a time, its folds one after another, nothing pinned."""

    cpus: float = setting(0.0, "CPU cores per fold run (0: not pinned, folds run one after another; a "
                          "fraction for runs that mostly wait; Ray: num_cpus, 1 when 0)", at_least=0)
    gpus: int = setting(0, "GPUs per fold run (0: CUDA_VISIBLE_DEVICES left as it is; Ray: num_gpus)",
                        at_least=0)
    gpu_ids: tuple[str, ...] = setting((), "the GPUs to share out (default: CUDA_VISIBLE_DEVICES, else "
                                       "nvidia-smi -L)")
    parallel: int = setting(1, "candidates in flight at once (--parallel)", above=0)
    pin_cpus: bool = setting(True, "bind each run to its own cores (sched_setaffinity) when cpus is whole")
    executor: ExecutorKind = setting(ExecutorKind.LOCAL, "where fold runs go (--executor)")
    ray_address: str = setting("", "empty: start Ray on this machine; \"auto\" or host:port: join a cluster")
    custom: tuple[tuple[str, float], ...] = setting((), "Ray custom resources per fold run, e.g. { a100 = 1 }")
    threads: int = setting(0, "the exact thread count of every run (0: chosen from the cores it is given and "
                           "those free when it starts; docs/contention.md)", at_least=0)
    max_output_mb: float = setting(512.0, "Ray: the most a run's output folder may bring back to the driver; "
                                   "more is a crashed run", above=0)


@dataclass(frozen=True)
class SearchParam:
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Config:
    root: Path
    task: TaskSection = field(default_factory=TaskSection)
    run: RunSection = field(default_factory=RunSection)
    metric: MetricSection = field(default_factory=MetricSection)
    loop: LoopSection = field(default_factory=LoopSection)
    smoke: SmokeSection = field(default_factory=SmokeSection)
    decision: DecisionSection = field(default_factory=DecisionSection)
    agent: AgentSection = field(default_factory=AgentSection)
    resources: ResourcesSection = field(default_factory=ResourcesSection)
    search_space: tuple[SearchParam, ...] = ()
    abort: AbortSection = field(default_factory=AbortSection)
    contention: ContentionSection = field(default_factory=ContentionSection)

    @property
    def path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def state_dir(self) -> Path:
        """Where the tool keeps its own state: ledger, prepared data, hidden keys, run outputs."""
        return self.root / ".autoresearch"



def _search_space(file: Path, table: Any) -> tuple[SearchParam, ...]:
    if not isinstance(table, dict):
        raise UserError(f"{file}: [search_space] must be a table of NAME = {{...}} entries")
    params = []
    for name, spec in table.items():
        where = f"[search_space] {name}"
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
            raise UserError(f"{file}: {where}: names must be UPPER_CASE constants of the editable file")
        if not isinstance(spec, dict):
            raise UserError(f"{file}: {where} must be a table such as {{ low = 1e-5, high = 1e-3, log = true }}")
        unknown = set(spec) - {"low", "high", "log", "int", "choices"}
        if unknown:
            raise UserError(f"{file}: {where}: unknown key {sorted(unknown)[0]!r} (known: low, high, log, int, choices)")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise UserError(f"{file}: {where} choices must be a non-empty list")
            params.append(SearchParam(name, choices=tuple(spec["choices"])))
            continue
        low, high = spec.get("low"), spec.get("high")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise UserError(f"{file}: {where} needs numeric low and high, or choices")
        if not low < high:
            raise UserError(f"{file}: {where} needs low < high, got {low} and {high}")
        if spec.get("log") and low <= 0:
            raise UserError(f"{file}: {where} log scale needs low > 0")
        params.append(SearchParam(name, float(low), float(high), bool(spec.get("log", False)),
                                  bool(spec.get("int", False))))
    return tuple(params)


SEARCH_SPACE_DOC = """\
The optuna agent's search space: one entry per UPPER_CASE constant of the editable file, either a range
or a list of choices. `low` and `high` (numbers, `low < high`), `log = true` for a log scale (`low > 0`),
`int = true` for whole numbers; or `choices = [...]`, a non-empty list.

```toml
[search_space]
LR = { low = 1e-5, high = 1e-2, log = true }
DEPTH = { low = 2, high = 8, int = true }
ACTIVATION = { choices = ["gelu", "relu"] }
```
"""


# Rules across keys, after a section is read: each takes the section, a function making the error for a
# key, and the repository root; it returns the section (changed only to resolve a path).

Error = Callable[[str, str], UserError]


def _check_task(task: TaskSection, error: Error, root: Path) -> TaskSection:
    if not task.editable:
        raise error("editable", "must name at least one file the agent may change")
    for rel in (*task.editable, task.scratchpad, task.program, *task.fixed):
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise error("editable", f"paths must be relative and inside the repository, got {rel!r}")
    return task


def _check_run(run: RunSection, error: Error, root: Path) -> RunSection:
    if not run.command:
        raise error("command", "must not be empty, for example [\"python\", \"train.py\"]")
    if run.timeout_s < run.time_budget_s:
        raise error("timeout_s", f"({run.timeout_s}) must be at least time_budget_s ({run.time_budget_s})")
    return run


def _check_metric(metric: MetricSection, error: Error, root: Path) -> MetricSection:
    # ``source`` is checked against the task's sources when scoring (scoring/sources.py)
    if metric.source == "regex":
        if not metric.pattern:
            raise error("pattern", "is required when source = \"regex\", e.g. '^val_bpb:\\s*([-+0-9.eE]+)'")
        try:
            compiled = re.compile(metric.pattern, re.MULTILINE)
        except re.error as exc:
            raise error("pattern", f"is not a valid regular expression: {exc}") from None
        if compiled.groups < 1:
            raise error("pattern", "needs one capturing group around the number")
    if metric.source == "json" and not metric.key:
        raise error("key", "is required when source = \"json\" (the field holding the metric)")
    return metric


def _check_agent(agent: AgentSection, error: Error, root: Path) -> AgentSection:
    """A command agent names its program; env lists names; a relative prices file is the repository's."""
    if agent.name == "command" and not (agent.command and agent.command[0].strip()):
        raise error("command", 'must name the agent\'s program when name = "command", '
                               'e.g. command = ["my-agent", "--flag"]')
    if any(not c or "\0" in c for c in agent.command):
        raise error("command", f"must not hold an empty string or a NUL, got {list(agent.command)!r}")
    if bad := [v for v in agent.env if not v or "=" in v or "\0" in v]:
        raise error("env", f"must list variable names (no '=' or NUL), got {bad[0]!r}")
    if agent.prices and not Path(agent.prices).is_absolute():
        agent = dataclasses.replace(agent, prices=str(root / agent.prices))
    return agent


def _check_resources(res: ResourcesSection, error: Error, root: Path) -> ResourcesSection:
    if res.gpu_ids and res.gpus == 0:
        raise error("gpu_ids", "is set but gpus (GPUs per fold run) is 0; set gpus = 1 (or more)")
    if res.gpu_ids and res.gpus > len(res.gpu_ids):
        raise error("gpus", f"({res.gpus}) is more than the {len(res.gpu_ids)} GPUs in gpu_ids")
    return res


def _check_abort(abort: AbortSection, error: Error, root: Path) -> AbortSection:
    if not re.fullmatch(r"[A-Za-z_]\w*", abort.key):
        raise error("key", f"must be the name a progress line gives the value (like \"loss\"), got {abort.key!r}")
    return abort


def _check_contention(section: ContentionSection, error: Error, root: Path) -> ContentionSection:
    if section.pause_max_s < section.pause_s:
        raise error("pause_max_s", f"({section.pause_max_s:g}) must be at least pause_s ({section.pause_s:g})")
    return section


# The sections with keys, in the order of Config: every field of Config with a section as its default.
SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)
                             if f.default_factory is not dataclasses.MISSING}
_CHECKS: dict[type, Callable[[Any, Error, Path], Any]] = {   # by section type: a name is written once
    TaskSection: _check_task, RunSection: _check_run, MetricSection: _check_metric, AgentSection: _check_agent,
    ResourcesSection: _check_resources, AbortSection: _check_abort, ContentionSection: _check_contention,
}


def parse(root: Path, data: dict[str, Any], file: Path | None = None) -> Config:
    """Validate a parsed TOML document into a Config; every error names the key."""
    file = file or root / CONFIG_NAME
    known = {*SECTIONS, "search_space"}
    for key in data:
        if key not in known:
            raise UserError(f"{file}: [{key}] is not a known section (known: {', '.join(sorted(known))})")
    read: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        section = settings.read_section(file, name, cls, data.get(name, {}))
        check = _CHECKS.get(cls)
        read[name] = check(section, functools.partial(settings.key_error, file, name), root) if check else section
    space = _search_space(file, data["search_space"]) if "search_space" in data else ()
    return Config(root=root, search_space=space, **read)


def reference() -> str:
    """docs/configuration.md: every section and key, derived from the declarations above."""
    intro = ("Every key of `autoresearch.toml`, generated from the declarations in `src/autoresearch/config.py` "
             "by `python scripts/config_docs.py` (a test fails when this page is out of date). A key left out "
             "takes its default; an unknown key or section, a value of the wrong type, out of bounds or not "
             "among the choices is an error naming the file, the section and the key.")
    return settings.markdown(SECTIONS, title="Configuration: `autoresearch.toml`", intro=intro,
                             extra={"search_space": SEARCH_SPACE_DOC})


def load(root: Path | str) -> Config:
    """Load and validate ``autoresearch.toml`` from a research repository."""
    root = Path(root).resolve()
    file = root / CONFIG_NAME
    if not file.is_file():
        raise UserError(f"no {CONFIG_NAME} in {root}",
                        hint="run this inside a research repository, or create one with `autoresearch init eclip DIR`")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{file}: not valid TOML: {exc}", hint="fix the syntax at the line named") from None
    return parse(root, data, file)
