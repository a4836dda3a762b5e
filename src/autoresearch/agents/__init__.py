"""Agents propose changes; the engine does everything else. ``make_agent`` builds one by name."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from autoresearch.agents.base import Agent, AgentContext
from autoresearch.config import Config
from autoresearch.errors import UserError


def _replay(config: Config, context: AgentContext, tag: str, model: str, base_url: str) -> Agent:
    from autoresearch.agents.replay import ReplayAgent

    queue = Path(context.options.get("queue") or config.root / config.agent.queue)
    if not queue.is_file():
        raise UserError(f"replay queue {queue} not found", hint="set [agent] queue in autoresearch.toml or pass --queue")
    return ReplayAgent(queue, context, scratchpad=config.task.scratchpad)


def _optuna(config: Config, context: AgentContext, tag: str, model: str, base_url: str) -> Agent:
    from autoresearch.agents.optuna_agent import OptunaAgent

    if not config.search_space:
        raise UserError(f"{config.path}: the optuna agent needs a [search_space] table",
                        hint="add e.g. [search_space] LR = { low = 1e-5, high = 1e-3, log = true }")
    return OptunaAgent(config, context, config.state_dir / "optuna.db", study_name=tag)


def _check_tools(config: Config) -> None:
    from autoresearch.agents.tools import check_offered

    if why := check_offered(config.agent.tools):
        raise UserError(f"{config.path}: [agent] tools {why}", hint="fix `[agent] tools` in autoresearch.toml")


def _openai(config: Config, context: AgentContext, tag: str, model: str, base_url: str) -> Agent:
    from autoresearch.agents.openai_agent import OpenAIAgent

    _check_tools(config)
    return OpenAIAgent(context, model or config.agent.model, base_url or config.agent.base_url or None,
                       max_turns=config.agent.max_turns, prices=context.options.get("prices"))


def _anthropic(config: Config, context: AgentContext, tag: str, model: str, base_url: str) -> Agent:
    from autoresearch.agents.anthropic_agent import AnthropicAgent

    _check_tools(config)
    return AnthropicAgent(context, model or config.agent.model,
                          base_url or config.agent.base_url or None, max_turns=config.agent.max_turns,
                          prices=context.options.get("prices"))


def _claude_code(config: Config, context: AgentContext, tag: str, model: str, base_url: str) -> Agent:
    from autoresearch.agents.claude_code import ClaudeCodeAgent

    return ClaudeCodeAgent(context, model or config.agent.model, base_url or config.agent.base_url or None,
                           max_turns=config.agent.max_turns, prices=context.options.get("prices"))


def _command(config: Config, context: AgentContext, tag: str, model: str, base_url: str) -> Agent:
    from autoresearch.agents.command import CommandAgent

    if not context.options.get("command"):
        raise UserError(f"{config.path}: [agent] command is not set, so the command agent has nothing to run",
                        hint='set [agent] command = ["my-agent", "--flag"] in autoresearch.toml')
    return CommandAgent(context)


AGENTS: dict[str, Callable[..., Agent]] = {
    "replay": _replay, "optuna": _optuna, "openai": _openai, "anthropic": _anthropic, "claude-code": _claude_code,
    "command": _command,
}


def make_agent(name: str, config: Config, context: AgentContext, *, tag: str, model: str = "",
               base_url: str = "") -> Agent:
    if name not in AGENTS:
        raise UserError(f"unknown agent {name!r}", hint=f"choose one of: {', '.join(AGENTS)}")
    return AGENTS[name](config, context, tag, model, base_url)
