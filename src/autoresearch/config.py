"""The schema of ``autoresearch.toml`` and its error messages.

Every default lives here. Every error names the file and the key, and says what would be valid.
Unknown keys are errors too, so a typo (``timout_s``) never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoresearch.errors import UserError
from autoresearch.vocab import Direction

CONFIG_NAME = "autoresearch.toml"
DECISION_RULES = ("noise", "greedy")
EXECUTORS = ("local", "ray")
TOOL_CHOICES = ("auto", "required", "none", "omit")
MAX_TOKENS_PARAMS = ("auto", "max_tokens", "max_completion_tokens", "omit")


@dataclass(frozen=True)
class TaskSection:
    name: str = "task"
    editable: tuple[str, ...] = ("train.py",)
    scratchpad: str = "scratchpad.md"
    program: str = "program.md"
    fixed: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunSection:
    command: tuple[str, ...] = ("python", "train.py")
    time_budget_s: float = 300.0
    timeout_s: float = 600.0
    grace_s: float = 10.0
    folds: int = 1
    seed: int = 0
    memory_gb: float = 0.0
    sandbox: bool = True
    tmp_gb: float = 0.0       # the sandbox's /tmp and /dev/shm, each (counted in memory_gb); default: memory_gb
    output_gb: float = 8.0    # quota of a run's output folder while it runs; default: memory_gb (at least 1)

    @staticmethod
    def storage_defaults(memory_gb: float) -> tuple[float, float]:
        """(tmp_gb, output_gb) when ``[run]`` does not set them: the tmpfs as large as the memory ceiling
        (0, the kernel's default of half the RAM, without one); the output quota the ceiling, at least
        1 GB (8 GB without a ceiling)."""
        return (memory_gb, max(1.0, memory_gb)) if memory_gb > 0 else (0.0, 8.0)


@dataclass(frozen=True)
class MetricSection:
    name: str = "metric"
    direction: Direction = Direction.MINIMIZE
    source: str = "regex"
    file: str = "metrics.json"
    key: str = ""
    pattern: str = ""


@dataclass(frozen=True)
class LoopSection:
    max_crash_fixes: int = 2
    scratchpad_max_chars: int = 8000
    log_tail_lines: int = 40


@dataclass(frozen=True)
class SmokeSection:
    """A few steps of each candidate on a small slice before its folds, so a crash costs seconds."""

    enabled: bool = True
    timeout_s: float = 0.0       # a run still alive here got past start-up and passes; 0 = automatic
    steps: int = 3               # AUTORESEARCH_SMOKE_STEPS: a task that honours it stops after this many

    def deadline(self, run: "RunSection") -> float:
        """The smoke test's deadline: ``timeout_s``, or 10% of the fold's time budget within 10..60 s,
        never past the fold's own hard deadline. A script that ignores the smoke variables runs until
        this deadline, so it is what the smoke test costs a Karpathy-style script per candidate."""
        chosen = self.timeout_s or min(60.0, max(10.0, 0.1 * run.time_budget_s))
        return min(chosen, run.timeout_s)


@dataclass(frozen=True)
class DecisionSection:
    rule: str = "noise"
    min_delta: float = 0.0
    k: float = 2.0
    confirm_band: float = 1.0
    confirm_repeats: int = 1
    remeasure_after: float = 0.0


@dataclass(frozen=True)
class AbortSection:
    """Early abort of doomed runs (docs/early-abort.md); the defaults come from benchmarks/early_abort.py."""
    enabled: bool = True
    key: str = "loss"            # the progress-line value compared with the champion's
    ratio: float = 1.5           # abort above this many times the champion's value at the same step...
    patience: int = 2            # ...on this many progress lines in a row...
    min_fraction: float = 0.25   # ...from this fraction of the run's steps on (NaN/inf aborts at any step)
    min_progress: float = 0.1    # or below this share of the champion's progress since the first line (0: off)
    fold_margin: float = 0.0     # skip the later folds once a fold scores this share worse than the champion's (0: off)


@dataclass(frozen=True)
class ContentionSection:
    """A deadline hit on a busy machine is not the candidate's fault (runner/load.py)."""
    enabled: bool = True
    busy_other: float = 0.5      # other work kept at least this fraction of the run's cores busy...
    min_share: float = 0.5       # ...and the run got less than this fraction of the CPU it asked for
    pause_after: int = 3         # this many such runs in a row: pause instead of spending the budget
    pause_s: float = 60.0        # first pause; doubles each time the champion is still starved
    pause_max_s: float = 1800.0  # longest single pause
    deadline_cap: float = 3.0    # a starved run still on pace may run up to this × timeout_s (1 = never moved)
    pace_tolerance: float = 1.5  # CPU per step up to this × the champion's counts as on pace


@dataclass(frozen=True)
class AgentSection:
    name: str = "replay"
    queue: str = "queue.toml"
    model: str = ""
    base_url: str = ""
    max_turns: int = 30
    prices: str = ""             # a TOML file of USD per million tokens, overriding the built-in table
    timeout_s: float = 0.0       # one API call, or one Claude Code invocation (0 = the agent's own default)
    retries: int = 4             # tries per API call on rate limits, server errors and timeouts
    backoff_s: float = 1.0       # first backoff; doubles with jitter
    max_tokens: int = 8192       # output tokens per API call
    claude_path: str = ""        # the Claude Code executable (default: `claude` on PATH)
    max_cost_usd: float = 0.0    # stop the run once the agent has cost this much (0 = no limit)
    max_total_tokens: int = 0    # stop the run once the agent has used this many tokens (0 = no limit)
    max_budget_usd: float = 0.0  # Claude Code only: the CLI's own cap per invocation (0 = none)
    tool_choice: str = "auto"    # openai: sent with the tools ("omit": not sent; llama.cpp's server needs "auto")
    max_tokens_param: str = "auto"   # openai: max_tokens | max_completion_tokens | omit; auto: by base_url
    context_tokens: int = 0      # API agents: fit the conversation into this many tokens (0 = no limit)
    tools: tuple[str, ...] = ()  # API agents: offer only these tools (empty: all), e.g. a small model's few

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
        return out


@dataclass(frozen=True)
class ResourcesSection:
    """What one fold run needs and how much runs at once (docs/parallel.md). The defaults are today's
    behaviour: one candidate at a time, its folds one after another, nothing pinned."""

    cpus: float = 0.0             # CPU cores per fold run (0 = not pinned: folds run one after another)
    gpus: int = 0                 # GPUs per fold run (0 = CUDA_VISIBLE_DEVICES left as it is)
    gpu_ids: tuple[str, ...] = () # the GPUs to share out (default: CUDA_VISIBLE_DEVICES, else nvidia-smi)
    parallel: int = 1             # candidates in flight at once
    pin_cpus: bool = True         # bind each run to its own cores (sched_setaffinity) when cpus is whole
    executor: str = "local"       # local | ray
    ray_address: str = ""         # "" = start Ray on this machine; "auto" or host:port = join a cluster
    custom: tuple[tuple[str, float], ...] = ()   # Ray custom resources per fold run, e.g. {accel = 1}
    max_output_mb: float = 512.0  # Ray: the most a run's output folder may bring back to the driver
    threads: int = 0              # exact thread count of every run (0 = chosen from its cores and the load)


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



class _Section:
    """Reads one TOML table, remembering which keys were used, so leftovers can be reported."""

    def __init__(self, file: Path, name: str, table: Any) -> None:
        self.file, self.name = file, name
        if not isinstance(table, dict):
            raise self.error(None, f"must be a table ([{name}]), got {type(table).__name__}")
        self.table = table
        self.used: set[str] = set()

    def error(self, key: str | None, message: str) -> UserError:
        where = f"[{self.name}]" if key is None else f"[{self.name}] {key}"
        return UserError(f"{self.file}: {where} {message}", hint=f"fix `{where}` in {self.file.name}")

    def get(self, key: str, default: Any, kind: str) -> Any:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if kind == "str" and isinstance(value, str):
            return value
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind == "strs" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        if kind == "table" and isinstance(value, dict):
            return value
        wanted = {"str": "a string", "bool": "true or false", "int": "an integer",
                  "float": "a number", "strs": "a list of strings", "table": "a table such as { name = 1 }"}[kind]
        raise self.error(key, f"must be {wanted}, got {value!r}")

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        value = self.get(key, default, "str")
        if value not in options:
            raise self.error(key, f"must be one of {', '.join(options)}; got {value!r}")
        return value

    def positive(self, key: str, default: float, kind: str = "float", allow_zero: bool = False) -> Any:
        value = self.get(key, default, kind)
        if value < 0 or (value == 0 and not allow_zero):
            raise self.error(key, f"must be {'zero or more' if allow_zero else 'positive'}, got {value!r}")
        return value

    def finish(self) -> None:
        extra = sorted(set(self.table) - self.used)
        if extra:
            raise self.error(extra[0], f"is not a known key (known: {', '.join(sorted(self.used))})")


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


def parse(root: Path, data: dict[str, Any], file: Path | None = None) -> Config:
    """Validate a parsed TOML document into a Config; every error names the key."""
    file = file or root / CONFIG_NAME
    known = {"task", "run", "metric", "loop", "smoke", "decision", "agent", "resources", "search_space", "abort",
             "contention"}
    for key in data:
        if key not in known:
            raise UserError(f"{file}: [{key}] is not a known section (known: {', '.join(sorted(known))})")

    s = _Section(file, "task", data.get("task", {}))
    task = TaskSection(
        name=s.get("name", TaskSection.name, "str"),
        editable=s.get("editable", TaskSection.editable, "strs"),
        scratchpad=s.get("scratchpad", TaskSection.scratchpad, "str"),
        program=s.get("program", TaskSection.program, "str"),
        fixed=s.get("fixed", (), "strs"),
    )
    s.finish()
    if not task.editable:
        raise s.error("editable", "must name at least one file the agent may change")
    for rel in (*task.editable, task.scratchpad, task.program, *task.fixed):
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise s.error("editable", f"paths must be relative and inside the repository, got {rel!r}")

    s = _Section(file, "run", data.get("run", {}))
    command = s.get("command", RunSection.command, "strs")
    memory_gb = s.positive("memory_gb", RunSection.memory_gb, allow_zero=True)
    tmp_gb, output_gb = RunSection.storage_defaults(memory_gb)
    run = RunSection(
        command=command,
        time_budget_s=s.positive("time_budget_s", RunSection.time_budget_s),
        timeout_s=s.positive("timeout_s", RunSection.timeout_s),
        grace_s=s.positive("grace_s", RunSection.grace_s, allow_zero=True),
        folds=s.positive("folds", RunSection.folds, "int"),
        seed=s.get("seed", RunSection.seed, "int"),
        memory_gb=memory_gb,
        sandbox=s.get("sandbox", RunSection.sandbox, "bool"),
        tmp_gb=s.positive("tmp_gb", tmp_gb, allow_zero=True),
        output_gb=s.positive("output_gb", output_gb, allow_zero=True),
    )
    s.finish()
    if not run.command:
        raise s.error("command", "must not be empty, for example [\"python\", \"train.py\"]")
    if run.timeout_s < run.time_budget_s:
        raise s.error("timeout_s", f"({run.timeout_s}) must be at least time_budget_s ({run.time_budget_s})")

    s = _Section(file, "metric", data.get("metric", {}))
    metric = MetricSection(
        name=s.get("name", MetricSection.name, "str"),
        direction=Direction(s.choice("direction", MetricSection.direction, tuple(Direction))),
        source=s.get("source", MetricSection.source, "str"),   # checked against the task's sources
        file=s.get("file", MetricSection.file, "str"),
        key=s.get("key", "", "str"),
        pattern=s.get("pattern", "", "str"),
    )
    s.finish()
    if metric.source == "regex":
        if not metric.pattern:
            raise s.error("pattern", "is required when source = \"regex\", e.g. '^val_bpb:\\s*([-+0-9.eE]+)'")
        try:
            compiled = re.compile(metric.pattern, re.MULTILINE)
        except re.error as exc:
            raise s.error("pattern", f"is not a valid regular expression: {exc}") from None
        if compiled.groups < 1:
            raise s.error("pattern", "needs one capturing group around the number")
    if metric.source == "json" and not metric.key:
        raise s.error("key", "is required when source = \"json\" (the field holding the metric)")

    s = _Section(file, "loop", data.get("loop", {}))
    loop = LoopSection(
        max_crash_fixes=s.positive("max_crash_fixes", LoopSection.max_crash_fixes, "int", allow_zero=True),
        scratchpad_max_chars=s.positive("scratchpad_max_chars", LoopSection.scratchpad_max_chars, "int"),
        log_tail_lines=s.positive("log_tail_lines", LoopSection.log_tail_lines, "int"),
    )
    s.finish()

    s = _Section(file, "smoke", data.get("smoke", {}))
    smoke = SmokeSection(
        enabled=s.get("enabled", SmokeSection.enabled, "bool"),
        timeout_s=s.positive("timeout_s", SmokeSection.timeout_s, allow_zero=True),
        steps=s.positive("steps", SmokeSection.steps, "int"),
    )
    s.finish()

    s = _Section(file, "decision", data.get("decision", {}))
    decision = DecisionSection(
        rule=s.choice("rule", DecisionSection.rule, DECISION_RULES),
        min_delta=s.positive("min_delta", DecisionSection.min_delta, allow_zero=True),
        k=s.positive("k", DecisionSection.k, allow_zero=True),
        confirm_band=s.positive("confirm_band", DecisionSection.confirm_band, allow_zero=True),
        confirm_repeats=s.positive("confirm_repeats", DecisionSection.confirm_repeats, "int", allow_zero=True),
        remeasure_after=s.positive("remeasure_after", DecisionSection.remeasure_after, allow_zero=True),
    )
    s.finish()

    s = _Section(file, "agent", data.get("agent", {}))
    agent = AgentSection(
        name=s.get("name", AgentSection.name, "str"),
        queue=s.get("queue", AgentSection.queue, "str"),
        model=s.get("model", "", "str"),
        base_url=s.get("base_url", "", "str"),
        max_turns=s.positive("max_turns", AgentSection.max_turns, "int"),
        prices=s.get("prices", "", "str"),
        timeout_s=s.positive("timeout_s", AgentSection.timeout_s, allow_zero=True),
        retries=s.positive("retries", AgentSection.retries, "int"),
        backoff_s=s.positive("backoff_s", AgentSection.backoff_s, allow_zero=True),
        max_tokens=s.positive("max_tokens", AgentSection.max_tokens, "int"),
        claude_path=s.get("claude_path", "", "str"),
        max_cost_usd=s.positive("max_cost_usd", 0.0, allow_zero=True),
        max_total_tokens=s.positive("max_total_tokens", 0, "int", allow_zero=True),
        max_budget_usd=s.positive("max_budget_usd", 0.0, allow_zero=True),
        tool_choice=s.choice("tool_choice", AgentSection.tool_choice, TOOL_CHOICES),
        max_tokens_param=s.choice("max_tokens_param", AgentSection.max_tokens_param, MAX_TOKENS_PARAMS),
        context_tokens=s.positive("context_tokens", 0, "int", allow_zero=True),
        tools=s.get("tools", (), "strs"),
    )
    if agent.prices and not Path(agent.prices).is_absolute():
        agent = dataclasses.replace(agent, prices=str(root / agent.prices))
    s.finish()

    resources = _resources(_Section(file, "resources", data.get("resources", {})))

    space = _search_space(file, data["search_space"]) if "search_space" in data else ()
    return Config(root=root, task=task, run=run, metric=metric, loop=loop, smoke=smoke, decision=decision,
                  agent=agent, resources=resources, search_space=space, abort=_abort(file, data),
                  contention=_contention(file, data))


def _resources(s: _Section) -> ResourcesSection:
    d = ResourcesSection
    custom_raw = s.get("custom", {}, "table")
    custom = []
    for name, amount in custom_raw.items():
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            raise s.error("custom", f"{name} must be a number of zero or more, got {amount!r}")
        custom.append((str(name), float(amount)))
    section = ResourcesSection(
        cpus=s.positive("cpus", d.cpus, allow_zero=True),
        gpus=s.positive("gpus", d.gpus, "int", allow_zero=True),
        gpu_ids=s.get("gpu_ids", (), "strs"),
        parallel=s.positive("parallel", d.parallel, "int"),
        pin_cpus=s.get("pin_cpus", d.pin_cpus, "bool"),
        executor=s.choice("executor", d.executor, EXECUTORS),
        ray_address=s.get("ray_address", d.ray_address, "str"),
        custom=tuple(custom),
        max_output_mb=s.positive("max_output_mb", d.max_output_mb),
        threads=s.positive("threads", d.threads, "int", allow_zero=True),
    )
    s.finish()
    if section.gpu_ids and section.gpus == 0:
        raise s.error("gpu_ids", "is set but gpus (GPUs per fold run) is 0; set gpus = 1 (or more)")
    if section.gpu_ids and section.gpus > len(section.gpu_ids):
        raise s.error("gpus", f"({section.gpus}) is more than the {len(section.gpu_ids)} GPUs in gpu_ids")
    return section


def _fraction(s: _Section, key: str, default: float, allow_zero: bool = False) -> float:
    value = s.positive(key, default, allow_zero=allow_zero)
    if value > 1:
        raise s.error(key, f"is a fraction and must be at most 1, got {value!r}")
    return value


def _abort(file: Path, data: dict[str, Any]) -> AbortSection:
    s = _Section(file, "abort", data.get("abort", {}))
    section = AbortSection(
        enabled=s.get("enabled", AbortSection.enabled, "bool"),
        key=s.get("key", AbortSection.key, "str"),
        ratio=s.positive("ratio", AbortSection.ratio),
        patience=s.positive("patience", AbortSection.patience, "int"),
        min_fraction=_fraction(s, "min_fraction", AbortSection.min_fraction, allow_zero=True),
        min_progress=_fraction(s, "min_progress", AbortSection.min_progress, allow_zero=True),
        fold_margin=s.positive("fold_margin", AbortSection.fold_margin, allow_zero=True),
    )
    s.finish()
    if not re.fullmatch(r"[A-Za-z_]\w*", section.key):
        raise s.error("key", f"must be the name a progress line gives the value (like \"loss\"), got {section.key!r}")
    if section.ratio <= 1:
        raise s.error("ratio", f"must be above 1 (1 would abort every run worse than the champion), got {section.ratio!r}")
    return section


def _contention(file: Path, data: dict[str, Any]) -> ContentionSection:
    s = _Section(file, "contention", data.get("contention", {}))
    section = ContentionSection(
        enabled=s.get("enabled", ContentionSection.enabled, "bool"),
        busy_other=_fraction(s, "busy_other", ContentionSection.busy_other),
        min_share=_fraction(s, "min_share", ContentionSection.min_share),
        pause_after=s.positive("pause_after", ContentionSection.pause_after, "int"),
        pause_s=s.positive("pause_s", ContentionSection.pause_s, allow_zero=True),
        pause_max_s=s.positive("pause_max_s", ContentionSection.pause_max_s, allow_zero=True),
        deadline_cap=s.positive("deadline_cap", ContentionSection.deadline_cap),
        pace_tolerance=s.positive("pace_tolerance", ContentionSection.pace_tolerance),
    )
    s.finish()
    if section.deadline_cap < 1:
        raise s.error("deadline_cap", f"is a multiple of [run] timeout_s and must be at least 1 (1: the deadline "
                                      f"never moves), got {section.deadline_cap!r}")
    if section.pace_tolerance < 1:
        raise s.error("pace_tolerance", f"is a multiple of the champion's CPU per step and must be at least 1, "
                                        f"got {section.pace_tolerance!r}")
    if section.pause_max_s < section.pause_s:
        raise s.error("pause_max_s", f"({section.pause_max_s:g}) must be at least pause_s ({section.pause_s:g})")
    return section


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
