"""An agent on any OpenAI-compatible chat-completions endpoint with tools (OpenAI, vLLM, Ollama, llama.cpp).

The conversation (``llm.ApiAgent.propose``): a system prompt, the rendered brief, then turns of tool calls
and their results until the model calls ``finish`` or ``max_turns`` is reached. The model edits files only
through ``tools.py``. This module only translates to and from the chat-completions format.
"""

from __future__ import annotations

import json
from typing import Any

from autoresearch.agents import context_budget, llm
from autoresearch.agents.tools import openai_tools


class OpenAIAgent(llm.ApiAgent):
    """Chat completions with function tools; ``base_url`` points it at a local server."""

    name = "openai"
    provider = "openai"
    key_env = "OPENAI_API_KEY"
    default_model = "gpt-5"

    def client(self) -> Any:
        if self._client is None:
            import openai

            # A local server (base_url) needs no key; the hosted API does.
            key = llm.api_key(self.key_env, required=self.base_url is None) or "not-needed"
            self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0,
                                         timeout=self.timeout_s)
            self.connection_errors = (openai.APIConnectionError,)
        return self._client

    def first_messages(self, brief_text: str) -> list[dict[str, Any]]:
        return [{"role": "system", "content": llm.SYSTEM_PROMPT}, {"role": "user", "content": brief_text}]

    def request(self, client: Any, messages: list[dict[str, Any]]) -> Any:
        return client.chat.completions.create(**self.body(messages))

    def body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The request's fields. ``tool_choice`` is sent with the tools: llama.cpp's server leaves the tools
        out of the prompt without it. The output cap goes in the field the server accepts: the hosted API
        wants ``max_completion_tokens`` (its newer models refuse ``max_tokens``), compatible servers
        (llama.cpp, vLLM, Ollama) read ``max_tokens``."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "tools": openai_tools(self.specs)}
        choice = self.context.options.get("tool_choice", "auto")
        if choice != "omit":
            body["tool_choice"] = choice
        param = self.context.options.get("max_tokens_param", "auto")
        if param == "auto":
            param = "max_completion_tokens" if self.base_url is None else "max_tokens"
        if param != "omit" and self.max_tokens:
            body[param] = self.max_tokens
        return body

    def request_tokens(self, messages: list[dict[str, Any]]) -> int:
        return context_budget.estimate_tokens({"messages": messages, "tools": openai_tools(self.specs)})

    def read(self, response: Any) -> llm.Turn:
        usage = getattr(response, "usage", None)
        if not response.choices:
            raise llm.AgentError(f"openai {self.model}: a response with no choices")
        message = response.choices[0].message
        calls = [llm.ToolCall(c.id, c.function.name, c.function.arguments) for c in (message.tool_calls or [])]
        echoed: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
        if calls:
            echoed["tool_calls"] = [{"id": c.id, "type": "function",
                                     "function": {"name": c.name, "arguments": _as_text(c.arguments)}} for c in calls]
        return llm.Turn(getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0,
                        message.content or "", calls, echoed, estimated=usage is None)

    def answers(self, results: list[tuple[llm.ToolCall, Any]]) -> list[dict[str, Any]]:
        return [{"role": "tool", "tool_call_id": call.id, "content": result.text} for call, result in results]


def _as_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)
