"""An agent on the Anthropic Messages API with tools.

The same loop as the OpenAI agent (``llm.ApiAgent.propose``): the brief, then turns of ``tool_use`` blocks
answered by ``tool_result`` blocks (``is_error`` set for a bad call) until the model calls ``finish`` or
``max_turns`` is reached. This module only translates to and from the Messages format.
"""

from __future__ import annotations

from typing import Any

from autoresearch.agents import context_budget, llm
from autoresearch.agents.tools import anthropic_tools


class AnthropicAgent(llm.ApiAgent):
    """Messages API with client tools; ``base_url`` points it at a proxy or a compatible server."""

    name = "anthropic"
    provider = "anthropic"
    key_env = "ANTHROPIC_API_KEY"
    default_model = "claude-sonnet-4-6"

    def client(self) -> Any:
        if self._client is None:
            import anthropic

            key = llm.api_key(self.key_env)
            self._client = anthropic.Anthropic(api_key=key, base_url=self.base_url, max_retries=0,
                                               timeout=self.timeout_s)
            self.connection_errors = (anthropic.APIConnectionError,)
        return self._client

    def first_messages(self, brief_text: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": brief_text}]

    def request(self, client: Any, messages: list[dict[str, Any]]) -> Any:
        return client.messages.create(model=self.model, max_tokens=self.max_tokens, system=llm.SYSTEM_PROMPT,
                                      tools=anthropic_tools(self.specs), messages=messages)

    def request_tokens(self, messages: list[dict[str, Any]]) -> int:
        return context_budget.estimate_tokens({"system": llm.SYSTEM_PROMPT, "tools": anthropic_tools(self.specs),
                                               "messages": messages})

    def read(self, response: Any) -> llm.Turn:
        blocks = [b for b in map(_block_param, response.content) if b.get("text", "x")]
        uses = [b for b in response.content if b.type == "tool_use"]
        calls = [llm.ToolCall(u.id, u.name, u.input if isinstance(u.input, dict) else None) for u in uses]
        text = "\n".join(b.text for b in response.content if b.type == "text")
        return llm.Turn(*_tokens(getattr(response, "usage", None)), text, calls,
                        {"role": "assistant", "content": blocks or [{"type": "text", "text": "(empty)"}]})

    def answers(self, results: list[tuple[llm.ToolCall, Any]]) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": result.text,
                                              "is_error": result.is_error} for call, result in results]}]


def _tokens(usage: Any) -> tuple[int, int]:
    """Input tokens include cache reads and writes (they are billed as input, at other rates)."""
    if usage is None:
        return 0, 0
    inp = sum(int(getattr(usage, k, 0) or 0)
              for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    return inp, int(getattr(usage, "output_tokens", 0) or 0)


def _block_param(block: Any) -> dict[str, Any]:
    """A response content block as a request content block (text and tool_use; others dropped)."""
    if block.type == "text":
        return {"type": "text", "text": block.text}
    if block.type == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    if block.type == "thinking":
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    return {"type": "text", "text": f"[{block.type}]"}
