"""What every LLM agent shares: capped retries, the price table, usage accounting, key handling.

Retries: only ours (the client libraries are built with ``max_retries=0``). Rate limits (429), overload
and server errors (408, 409, 5xx), timeouts and connection errors are retried with exponential backoff
and full jitter, at most ``tries`` attempts and ``max_total_sleep`` seconds of waiting; anything else, or
the last failure, becomes an ``AgentError`` that the engine records as a crashed experiment.

Keys: read from the environment only (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``), never stored in
files or written to logs: everything this package logs passes through ``redact``.
"""

from __future__ import annotations

import abc
import logging
import os
import random
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from autoresearch.agents import context_budget
from autoresearch.agents.base import Proposal, Usage
from autoresearch.agents.tools import Toolbox, parse_final_text, rooted
from autoresearch.errors import UserError

log = logging.getLogger("autoresearch.agents")
T = TypeVar("T")

KEY_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")

# USD per million tokens (input, output), list prices. Override with prices={...} or a TOML file.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-opus-4-5": (5.00, 25.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4-6": (3.00, 15.00),
    "claude-opus-4-6": (5.00, 25.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-haiku": (0.80, 4.00),
}
_DATED = re.compile(r"(-\d{8}|-\d{4}-\d{2}-\d{2}|-latest)$")


class AgentError(Exception):
    """The agent could not produce a proposal (API down, rate limited too long, bad key, CLI failed).

    The engine records the experiment as a crash with ``str(error)`` as the reason.
    """


# -- keys and redaction -----------------------------------------------------------------------------------

def api_key(env_name: str, *, required: bool = True) -> str | None:
    """The key from the environment; a ``UserError`` naming the variable when it is required and unset."""
    value = os.environ.get(env_name, "").strip()
    if not value and required:
        raise UserError(f"{env_name} is not set", hint=f"export {env_name}=... in the shell that runs "
                                                        "autoresearch (keys are never read from files)")
    return value or None


def redact(text: Any, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every API key from the environment (and any in ``secrets``) replaced by ``[redacted]``.

    Also masks things that look like keys (``sk-...``, ``Bearer ...``, ``x-api-key: ...``).
    """
    out = str(text)
    values = [os.environ.get(k, "") for k in KEY_ENV] + list(secrets)
    for value in sorted({v for v in values if len(v) >= 6}, key=len, reverse=True):
        out = out.replace(value, "[redacted]")
    out = re.sub(r"\bsk-[A-Za-z0-9_\-]{8,}", "sk-[redacted]", out)
    out = re.sub(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}", r"\1[redacted]", out)
    out = re.sub(r"(?i)(x-api-key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]{6,}", r"\1[redacted]", out)
    return out


# -- prices -----------------------------------------------------------------------------------------------

def load_prices(override: Mapping[str, Any] | str | Path | None = None) -> dict[str, tuple[float, float]]:
    """The default table updated by ``override``: a dict ``{model: [in, out]}`` or a TOML file of the same.

    In TOML, ``"gpt-4o" = [2.5, 10.0]`` or ``[models."gpt-4o"] input = 2.5  output = 10.0``.
    """
    table = dict(DEFAULT_PRICES)
    if override is None:
        return table
    source = "prices"
    if isinstance(override, (str, Path)):
        path = Path(override)
        source = str(path)
        try:
            data: Mapping[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"price file {path} does not exist", hint="give an existing TOML file") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{path}: not valid TOML ({exc})", hint="fix the syntax of the price file") from None
        models = data.get("models", {})
        data = {**{k: v for k, v in data.items() if k != "models"},
                **(models if isinstance(models, Mapping) else {"models": models})}
    else:
        data = override
    for model, value in data.items():
        table[str(model)] = _price_pair(source, str(model), value)
    return table


def _price_pair(source: str, model: str, value: Any) -> tuple[float, float]:
    if isinstance(value, Mapping) and set(value) == {"input", "output"}:
        value = (value["input"], value["output"])
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value)):
        return float(value[0]), float(value[1])
    raise UserError(f"{source}: price of {model!r} must be [input, output] in USD per million tokens, "
                    f"got {value!r}", hint=f'write e.g. "{model}" = [3.0, 15.0]')


def price_of(model: str, prices: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    """The model's price, also for dated names (``claude-sonnet-4-5-20250929``); None when unknown."""
    if model in prices:
        return prices[model]
    return prices.get(_DATED.sub("", model))


def cost_usd(model: str, input_tokens: int, output_tokens: int,
             prices: Mapping[str, tuple[float, float]]) -> float | None:
    price = price_of(model, prices)
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1e6


@dataclass
class Meter:
    """Tokens, calls, retries and wall time of one proposal."""

    model: str
    prices: Mapping[str, tuple[float, float]]
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    retries: int = 0
    failed_calls: int = 0          # calls that got an error; their tokens count too
    estimated_tokens: int = 0      # of the tokens above, those estimated (no usage came back)
    started: float = field(default_factory=time.monotonic)

    def add(self, input_tokens: int | None, output_tokens: int | None, *, estimated: bool = False) -> None:
        self.calls += 1
        self.input_tokens += int(input_tokens or 0)
        self.output_tokens += int(output_tokens or 0)
        if estimated:
            self.estimated_tokens += int(input_tokens or 0) + int(output_tokens or 0)

    def add_failed(self, input_tokens: int, output_tokens: int = 0, *, estimated: bool = True) -> None:
        """A call that failed: the server may still have read (and billed) the whole prompt."""
        self.add(input_tokens, output_tokens, estimated=estimated)
        self.failed_calls += 1

    def meta(self) -> dict:
        return {"api_calls": self.calls, "retries": self.retries, "failed_calls": self.failed_calls,
                "tokens_estimated": self.estimated_tokens}

    def usage(self) -> Usage:
        return Usage(self.input_tokens, self.output_tokens,
                     cost_usd(self.model, self.input_tokens, self.output_tokens, self.prices),
                     time.monotonic() - self.started)


# -- retries ----------------------------------------------------------------------------------------------

RETRY_STATUS = frozenset({408, 409, 429})


@dataclass
class RetryPolicy:
    """Capped exponential backoff with full jitter. ``sleep`` and ``rng`` are injectable for tests."""

    tries: int = 4
    base_s: float = 1.0
    cap_s: float = 20.0
    max_total_sleep_s: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        d = self.rng.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))
        if retry_after is not None:
            d = max(d, min(retry_after, self.cap_s))
        return d


def status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def is_transient(exc: BaseException, connection_errors: tuple[type[BaseException], ...]) -> bool:
    """Worth another try: a connection error or timeout, a rate limit, overload or a server error."""
    if isinstance(exc, connection_errors):
        return True
    status = status_of(exc)
    return status is not None and (status in RETRY_STATUS or status >= 500)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        return float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


def describe(exc: BaseException) -> str:
    status = status_of(exc)
    head = f"HTTP {status}" if status is not None else type(exc).__name__
    return redact(f"{head}: {exc}")[:500]


def error_usage(exc: BaseException) -> tuple[int, int] | None:
    """The usage an error response carries, if any (input, output tokens)."""
    body = getattr(exc, "body", None)          # the clients keep only the "error" part here
    response = getattr(exc, "response", None)
    try:
        whole = response.json() if response is not None else None
    except Exception:  # noqa: BLE001 - not JSON, or no body: no usage
        whole = None
    usage = next((b["usage"] for b in (whole, body) if isinstance(b, dict) and "usage" in b), None)
    if not isinstance(usage, dict):
        return None
    inp = usage.get("prompt_tokens", usage.get("input_tokens"))
    out = usage.get("completion_tokens", usage.get("output_tokens"))
    if not isinstance(inp, int):
        return None
    return inp, out if isinstance(out, int) else 0


def call_with_retries(fn: Callable[[], T], *, policy: RetryPolicy, meter: Meter, what: str,
                      connection_errors: tuple[type[BaseException], ...],
                      on_failure: Callable[[BaseException], None] | None = None) -> T:
    """``fn()``, retried on transient failures; ``AgentError`` when it cannot succeed. ``on_failure`` is
    told of every failed attempt (to count its tokens)."""
    slept = 0.0
    for attempt in range(1, policy.tries + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below; anything else is not ours to retry
            if on_failure is not None:
                on_failure(exc)
            transient = is_transient(exc, connection_errors)
            if not transient:
                hint = " (check the API key in the environment)" if status_of(exc) in (401, 403) else ""
                raise AgentError(f"{what}: {describe(exc)}{hint}") from None
            if attempt == policy.tries:
                raise AgentError(f"{what}: gave up after {attempt} tries: {describe(exc)}") from None
            delay = policy.delay(attempt, _retry_after(exc))
            if slept + delay > policy.max_total_sleep_s:
                raise AgentError(f"{what}: gave up after {attempt} tries ({slept:.0f} s of backoff): "
                                 f"{describe(exc)}") from None
            meter.retries += 1
            log.warning("%s: attempt %d failed (%s); retrying in %.1f s", what, attempt, describe(exc), delay)
            policy.sleep(delay)
            slept += delay
    raise AssertionError("unreachable")  # pragma: no cover


def options_policy(options: Mapping[str, Any]) -> RetryPolicy:
    """A retry policy from ``[agent]`` options (``retries``, ``backoff_s``); tests pass ``sleep``."""
    policy = RetryPolicy()
    if "retries" in options:
        policy.tries = max(1, int(options["retries"]))
    if "backoff_s" in options:
        policy.base_s = float(options["backoff_s"])
    if "sleep" in options and callable(options["sleep"]):
        policy.sleep = options["sleep"]
    return policy


SYSTEM_PROMPT = (
    "You are a careful ML research engineer running one experiment of an automated research loop. "
    "Read the brief, inspect the code with the tools, make the change the brief asks for by editing "
    "only the editable files (set_constant changes one hyperparameter), then call finish with a one-line "
    "description and your hypothesis. "
    "You cannot run the experiment yourself: check_run runs your edit for a few steps on a small slice "
    "(use it to catch a crash before you finish); the tool runs and scores the experiment after you finish."
)
NUDGE = ("Use the tools to edit the editable files. When your edit is done, call finish(description, "
         "hypothesis).")


NOT_FINISHED = "(agent did not finish)"


class ApiAgent(abc.ABC):
    """What the OpenAI-compatible and Anthropic agents share: settings, prices, retries, a lazy client."""

    default_model = ""

    def __init__(self, context: Any, model: str, base_url: str | None = None, max_turns: int = 30,
                 prices: Mapping[str, Any] | str | Path | None = None) -> None:
        self.context = context
        self.model = model or self.default_model
        self.base_url = base_url or None
        self.max_turns = max_turns
        self.prices = load_prices(prices if prices is not None else context.options.get("prices"))
        self.timeout_s = float(context.options.get("timeout_s", 300.0))
        self.max_tokens = int(context.options.get("max_tokens", 8192))
        self.context_tokens = int(context.options.get("context_tokens", 0) or 0)
        self.policy = options_policy(context.options)
        self._client: Any = None
        self.specs: list[dict[str, Any]] | None = None   # this proposal's tools (its toolbox's), set by propose

    # --- the tool-calling loop, shared by every API agent --------------------------------------------------
    provider = ""                       # for messages: "openai", "anthropic"
    connection_errors: tuple[type[BaseException], ...] = ()

    @abc.abstractmethod
    def client(self) -> Any:
        """The provider's client, made once (the API key is read here)."""

    @abc.abstractmethod
    def first_messages(self, brief_text: str) -> list[dict[str, Any]]:
        """The conversation before the first call."""

    @abc.abstractmethod
    def request(self, client: Any, messages: list[dict[str, Any]]) -> Any:
        """One API call with the conversation so far."""

    @abc.abstractmethod
    def read(self, response: Any) -> "Turn":
        """What one response said: tokens, text, tool calls, and the message to append to the conversation."""

    @abc.abstractmethod
    def answers(self, results: list[tuple["ToolCall", Any]]) -> list[dict[str, Any]]:
        """The messages that carry the tools' results back to the model."""

    def request_tokens(self, messages: list[dict[str, Any]]) -> int:
        """The estimated input tokens of one request with ``messages`` (a failed call's count)."""
        return context_budget.estimate_tokens(messages)

    def fit_context(self, messages: list[dict[str, Any]], head: int, fitted: "context_budget.Fitted") -> None:
        """Trim the conversation to ``[agent] context_tokens``, keeping room for the answer (the output cap,
        at most a quarter of the context) and the tool schemas."""
        if not self.context_tokens:
            return
        room = self.context_tokens - min(self.max_tokens, self.context_tokens // 4) \
            - (self.request_tokens([]) - context_budget.estimate_tokens([]))
        got = context_budget.fit(messages, head, room)
        fitted.trimmed += got.trimmed
        fitted.dropped += got.dropped

    def propose(self, brief: Any, workdir: Path) -> Any:
        meter = Meter(self.model, self.prices)
        toolbox = Toolbox(rooted(self.context, workdir))
        self.specs = toolbox.specs      # proposals are made one at a time (the scheduler's thread)
        try:
            return self._propose(brief, toolbox, meter)
        except Exception as exc:      # the tokens spent before the failure still count
            exc.usage = meter.usage()
            exc.meta = {"model": self.model, **meter.meta(), "tool_calls": toolbox.calls,
                        "edited": list(toolbox.edited)}
            raise

    def _propose(self, brief: Any, toolbox: Toolbox, meter: Meter) -> Any:
        client = self.client()
        messages = self.first_messages(brief.render())
        head, fitted = len(messages), context_budget.Fitted()
        turns = text_turns = 0

        def failed(exc: BaseException) -> None:
            usage = error_usage(exc)
            if usage is not None:
                meter.add_failed(*usage, estimated=False)
            else:
                meter.add_failed(self.request_tokens(messages))

        while turns < self.max_turns and toolbox.finished is None:
            turns += 1
            self.fit_context(messages, head, fitted)
            response = call_with_retries(lambda: self.request(client, messages), policy=self.policy, meter=meter,
                                         what=f"{self.provider} {self.model} turn {turns}",
                                         connection_errors=self.connection_errors, on_failure=failed)
            turn = self.read(response)
            if turn.estimated:    # the server sent no usage: estimate from what went and came back
                meter.add(self.request_tokens(messages), context_budget.estimate_tokens(turn.message), estimated=True)
            else:
                meter.add(turn.input_tokens, turn.output_tokens)
            messages.append(turn.message)
            if not turn.calls:
                text_turns += 1
                answer = parse_final_text(turn.text)
                if answer:
                    toolbox.finished = answer
                    break
                messages.append({"role": "user", "content": NUDGE})
                continue
            results = []
            for call in turn.calls:
                result = toolbox.call(call.name, call.arguments)
                log.info("%s tool %s -> %s", self.provider, call.name, redact(result.text[:200]))
                results.append((call, result))
            messages.extend(self.answers(results))
        description, hypothesis = toolbox.finished or (NOT_FINISHED, "")
        meta = {"model": self.model, "turns": turns, **meter.meta(),
                "tool_calls": toolbox.calls, "tool_errors": toolbox.errors, "edited": list(toolbox.edited),
                "finished": toolbox.finished is not None, "text_turns": text_turns, "context_trimmed": fitted.trimmed,
                "context_dropped_turns": fitted.dropped}
        return Proposal(description, hypothesis, meter.usage(), meta=meta)

    def observe(self, number: int, status: str, metric: float | None, meta: dict) -> None:
        """Nothing to learn between experiments: the brief carries the history."""


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: Any           # a JSON string or an already-parsed dict, as the provider gives it


@dataclass
class Turn:
    input_tokens: int
    output_tokens: int
    text: str
    calls: list[ToolCall]
    message: dict[str, Any]  # the assistant's message, as the provider wants it echoed back
    estimated: bool = False  # the response carried no usage
