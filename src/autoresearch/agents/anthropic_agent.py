"""An agent on the Anthropic Messages API with tools.

Same loop as the OpenAI agent: the brief, then turns of ``tool_use`` blocks answered by ``tool_result``
blocks (``is_error`` set for a bad call) until the model calls ``finish`` or ``max_turns`` is reached.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from autoresearch.agents import llm
from autoresearch.agents.base import Brief, Proposal
from autoresearch.agents.tools import Toolbox, anthropic_tools, parse_final_text, rooted

log = logging.getLogger("autoresearch.agents")


class AnthropicAgent(llm.ApiAgent):
    """Messages API with client tools; ``base_url`` points it at a proxy or a compatible server."""

    name = "anthropic"
    key_env = "ANTHROPIC_API_KEY"
    default_model = "claude-sonnet-4-6"

    def client(self) -> Any:
        if self._client is None:
            import anthropic

            key = llm.api_key(self.key_env)
            self._client = anthropic.Anthropic(api_key=key, base_url=self.base_url, max_retries=0,
                                               timeout=self.timeout_s)
        return self._client

    def propose(self, brief: Brief, workdir: Path) -> Proposal:
        import anthropic

        toolbox = Toolbox(rooted(self.context, workdir))
        meter = llm.Meter(self.model, self.prices)
        client = self.client()
        messages: list[dict[str, Any]] = [{"role": "user", "content": brief.render()}]
        tools = anthropic_tools()
        turns = 0
        while turns < self.max_turns and toolbox.finished is None:
            turns += 1
            response = llm.call_with_retries(
                lambda: client.messages.create(model=self.model, max_tokens=self.max_tokens,
                                               system=llm.SYSTEM_PROMPT, tools=tools, messages=messages),
                policy=self.policy, meter=meter, what=f"anthropic {self.model} turn {turns}",
                connection_errors=(anthropic.APIConnectionError,))
            meter.add(*_tokens(getattr(response, "usage", None)))
            blocks = [b for b in map(_block_param, response.content) if b.get("text", "x")]
            messages.append({"role": "assistant", "content": blocks or [{"type": "text", "text": "(empty)"}]})
            uses = [b for b in response.content if b.type == "tool_use"]
            if not uses:
                text = "\n".join(b.text for b in response.content if b.type == "text")
                answer = parse_final_text(text)
                if answer:
                    toolbox.finished = answer
                    break
                messages.append({"role": "user", "content": llm.NUDGE})
                continue
            results = []
            for use in uses:
                result = toolbox.call(use.name, use.input if isinstance(use.input, dict) else None)
                log.info("anthropic tool %s -> %s", use.name, llm.redact(result.text[:200]))
                results.append({"type": "tool_result", "tool_use_id": use.id, "content": result.text,
                                "is_error": result.is_error})
            messages.append({"role": "user", "content": results})
        description, hypothesis = toolbox.finished or (llm.NOT_FINISHED, "")
        meta = {"model": self.model, "turns": turns, "api_calls": meter.calls, "retries": meter.retries,
                "tool_calls": toolbox.calls, "tool_errors": toolbox.errors, "edited": list(toolbox.edited),
                "finished": toolbox.finished is not None}
        return Proposal(description, hypothesis, meter.usage(), meta=meta)

    def observe(self, number: int, status: str, metric: float | None, meta: dict) -> None:
        """Nothing to learn between experiments: the brief carries the history."""


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
