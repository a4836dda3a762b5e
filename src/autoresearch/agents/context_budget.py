"""Keep an API agent's conversation within a context budget instead of failing when it grows.

A local server has a small context (llama.cpp's default is 2,048 tokens) and a long tool-calling turn
overflows it in a few calls, which the server answers with HTTP 400. Before each call the conversation is
fitted to ``[agent] context_tokens`` (tokens estimated as characters / 4, as no tokenizer of the server's
model is at hand): first the results of old tool calls and the arguments of old calls are replaced by a
short marker (oldest first), then whole old turns are dropped (an assistant message with the results that
answer it), and the brief says how many were dropped. The first messages (system prompt, brief) and the
latest turn are never touched. Works on both message formats (OpenAI chat, Anthropic Messages).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4
TRIMMED = "[trimmed to fit the context budget: {n} characters of an earlier {what}]"
DROPPED = ("\n\n[context budget: earlier turns of this conversation were dropped to fit it; read the files "
           "again to see your edits so far]")
KEEP_CHARS = 300          # results and arguments shorter than this are left as they are


def estimate_tokens(value: Any) -> int:
    """Tokens of a message, a list of them or a request body, estimated from its JSON length."""
    return len(json.dumps(value, ensure_ascii=False, default=str)) // CHARS_PER_TOKEN + 1


@dataclass
class Fitted:
    trimmed: int = 0        # tool results and call arguments replaced by a marker
    dropped: int = 0        # whole turns removed


def _is_result(msg: dict) -> bool:
    content = msg.get("content")
    return msg.get("role") == "tool" or (msg.get("role") == "user" and isinstance(content, list)
                                         and any(isinstance(b, dict) and b.get("type") == "tool_result"
                                                 for b in content))


def _shrink(msg: dict) -> bool:
    """Replace the long parts of one old message by markers; True when something changed."""
    changed = False
    if msg.get("role") == "tool" and isinstance(msg.get("content"), str) and len(msg["content"]) > KEEP_CHARS:
        msg["content"] = TRIMMED.format(n=len(msg["content"]), what="tool result")
        changed = True
    content = msg.get("content")
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_result" and len(json.dumps(block.get("content"))) > KEEP_CHARS:
                block["content"] = TRIMMED.format(n=len(json.dumps(block.get("content"))), what="tool result")
                changed = True
            elif block.get("type") == "tool_use" and len(json.dumps(block.get("input"))) > KEEP_CHARS:
                block["input"] = {"trimmed": TRIMMED.format(n=len(json.dumps(block["input"])), what="call")}
                changed = True
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        if isinstance(fn.get("arguments"), str) and len(fn["arguments"]) > KEEP_CHARS:
            fn["arguments"] = json.dumps({"trimmed": TRIMMED.format(n=len(fn["arguments"]), what="call")})
            changed = True
    return changed


def _turns(messages: list[dict], head: int) -> list[tuple[int, int]]:
    """(start, end) of each turn after the first ``head`` messages: an assistant message and what follows it."""
    starts = [i for i in range(head, len(messages)) if messages[i].get("role") == "assistant"]
    return [(s, starts[k + 1] if k + 1 < len(starts) else len(messages)) for k, s in enumerate(starts)]


def fit(messages: list[dict], head: int, budget_tokens: int) -> Fitted:
    """Shrink ``messages`` in place until its estimate is within ``budget_tokens`` (or nothing more can go)."""
    done = Fitted()
    if budget_tokens <= 0 or estimate_tokens(messages) <= budget_tokens:
        return done
    turns = _turns(messages, head)
    old_end = turns[-1][0] if turns else len(messages)         # the latest turn stays whole
    for i in range(head, old_end):
        if (_is_result(messages[i]) or messages[i].get("role") == "assistant") and _shrink(messages[i]):
            done.trimmed += 1
            if estimate_tokens(messages) <= budget_tokens:
                return done
    while estimate_tokens(messages) > budget_tokens:
        turns = _turns(messages, head)
        if len(turns) < 2:
            break
        start, end = turns[0]
        del messages[start:end]
        done.dropped += 1
    brief = messages[head - 1] if head else {}
    if done.dropped and isinstance(brief.get("content"), str) and DROPPED not in brief["content"]:
        brief["content"] += DROPPED
    return done
