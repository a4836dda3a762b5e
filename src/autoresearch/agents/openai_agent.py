"""An agent on any OpenAI-compatible chat-completions endpoint with tools (OpenAI, vLLM, Ollama, llama.cpp).

The conversation: a system prompt, the rendered brief, then turns of tool calls and their results until
the model calls ``finish`` or ``max_turns`` is reached. The model edits files only through ``tools.py``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from autoresearch.agents import llm
from autoresearch.agents.base import Brief, Proposal
from autoresearch.agents.tools import Toolbox, openai_tools, parse_final_text, rooted

log = logging.getLogger("autoresearch.agents")


class OpenAIAgent(llm.ApiAgent):
    """Chat completions with function tools; ``base_url`` points it at a local server."""

    name = "openai"
    key_env = "OPENAI_API_KEY"
    default_model = "gpt-5"

    def client(self) -> Any:
        if self._client is None:
            import openai

            # A local server (base_url) needs no key; the hosted API does.
            key = llm.api_key(self.key_env, required=self.base_url is None) or "not-needed"
            self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0,
                                         timeout=self.timeout_s)
        return self._client

    def propose(self, brief: Brief, workdir: Path) -> Proposal:
        import openai

        toolbox = Toolbox(rooted(self.context, workdir))
        meter = llm.Meter(self.model, self.prices)
        client = self.client()
        messages: list[dict[str, Any]] = [{"role": "system", "content": llm.SYSTEM_PROMPT},
                                          {"role": "user", "content": brief.render()}]
        tools = openai_tools()
        turns = 0
        while turns < self.max_turns and toolbox.finished is None:
            turns += 1
            response = llm.call_with_retries(
                lambda: client.chat.completions.create(model=self.model, messages=messages, tools=tools),
                policy=self.policy, meter=meter, what=f"openai {self.model} turn {turns}",
                connection_errors=(openai.APIConnectionError,))
            usage = getattr(response, "usage", None)
            meter.add(getattr(usage, "prompt_tokens", 0), getattr(usage, "completion_tokens", 0))
            if not response.choices:
                raise llm.AgentError(f"openai {self.model}: a response with no choices")
            message = response.choices[0].message
            calls = list(message.tool_calls or [])
            messages.append(_assistant_message(message.content, calls))
            if not calls:
                answer = parse_final_text(message.content or "")
                if answer:
                    toolbox.finished = answer
                    break
                messages.append({"role": "user", "content": llm.NUDGE})
                continue
            for call in calls:
                result = toolbox.call(call.function.name, call.function.arguments)
                log.info("openai tool %s -> %s", call.function.name, llm.redact(result.text[:200]))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result.text})
        description, hypothesis = toolbox.finished or (llm.NOT_FINISHED, "")
        meta = {"model": self.model, "turns": turns, "api_calls": meter.calls, "retries": meter.retries,
                "tool_calls": toolbox.calls, "tool_errors": toolbox.errors, "edited": list(toolbox.edited),
                "finished": toolbox.finished is not None}
        return Proposal(description, hypothesis, meter.usage(), meta=meta)

    def observe(self, number: int, status: str, metric: float | None, meta: dict) -> None:
        """Nothing to learn between experiments: the brief carries the history."""


def _assistant_message(content: str | None, calls: list[Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content or ""}
    if calls:
        message["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.function.name,
                                               "arguments": _as_text(c.function.arguments)}}
                                 for c in calls]
    return message


def _as_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)
