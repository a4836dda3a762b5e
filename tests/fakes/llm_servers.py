"""Loopback fake LLM APIs: OpenAI chat completions and Anthropic Messages, real HTTP on 127.0.0.1.

Each server runs ``http.server`` in a thread on a random port, records every request it gets, and answers
from a *script*: either a list of replies consumed in order, or a callable ``responder(request) -> reply``
that looks at the request (its model, its messages, the tool results in it) and picks the answer.

A reply is a ``Reply`` (status, body, headers, delay) or a plain dict (a 200 JSON body). Build bodies with
``openai_message(...)`` / ``anthropic_message(...)``. The Anthropic fake answers ``"stream": true``
requests with server-sent events made from the same message, so one script serves both the Python
client and the Claude Code CLI.

Usage in a test::

    from fakes.llm_servers import OpenAIFake, openai_message, tool_call, Reply

    with OpenAIFake([openai_message(tool_calls=[tool_call("read_file", {"path": "train.py"})]),
                     Reply(429, {"error": {"message": "slow down"}}),
                     openai_message(tool_calls=[tool_call("finish", {"description": "d", "hypothesis": "h"})])]
                    ) as server:
        agent = OpenAIAgent(context, model="gpt-4o", base_url=server.base_url)
        ...
        server.requests[-1].tool_results()   # what the agent sent back

For an end-to-end loop (``autoresearch run --agent openai``), pass a responder that keeps its own state,
e.g. one script per experiment keyed by the "# Experiment N" line of the brief
(``request.brief_experiment()``), and export ``base_url`` through the agent's configuration.
Requests to paths the fake does not serve get a 404 JSON error and are listed in ``server.paths``.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Union

_ids = itertools.count(1)


@dataclass
class Reply:
    status: int = 200
    body: Any = None                     # dict -> JSON; str -> sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0                 # wait before answering (to provoke client timeouts)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any                            # parsed JSON, or None

    def messages(self) -> list[dict]:
        return list((self.body or {}).get("messages", []))

    def tool_results(self) -> list[dict]:
        """Tool results the client sent in this request (OpenAI ``role: tool`` messages since the last
        assistant message, or Anthropic ``tool_result`` blocks of the last user message), as dicts with
        ``id``, ``content`` (text) and ``is_error`` (Anthropic only, else None)."""
        msgs = self.messages()
        out: list[dict] = []
        if not msgs:
            return out
        if msgs[-1].get("role") == "tool":
            for m in reversed(msgs):
                if m.get("role") != "tool":
                    break
                out.insert(0, {"id": m.get("tool_call_id"), "content": _text(m.get("content")), "is_error": None})
            return out
        content = msgs[-1].get("content")
        if msgs[-1].get("role") == "user" and isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    out.append({"id": block.get("tool_use_id"), "content": _text(block.get("content")),
                                "is_error": bool(block.get("is_error", False))})
        return out

    def text(self) -> str:
        """All message text of the request (handy for 'is X in what the model was told')."""
        return json.dumps(self.body) if self.body is not None else ""

    def brief_experiment(self) -> int | None:
        """The N of the '# Experiment N' line in the first user message, if any."""
        for m in self.messages():
            if m.get("role") == "user":
                first = _text(m.get("content"))
                if first.startswith("# Experiment "):
                    digits = first[len("# Experiment "):].split()[0]
                    return int(digits) if digits.isdigit() else None
                return None
        return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(b.get("text", b.get("content", ""))) if isinstance(b, dict) else str(b)
                         for b in content)
    return "" if content is None else str(content)


Script = Union[Iterable[Union[Reply, dict]], Callable[[Request], Union[Reply, dict]]]


class FakeServer:
    """A scripted HTTP server on 127.0.0.1 (random port). Use as a context manager or call ``close()``."""

    endpoint = "/"

    def __init__(self, script: Script) -> None:
        self.responder = script if callable(script) else None
        self.script = [] if callable(script) else list(script)
        self.requests: list[Request] = []      # requests to the endpoint
        self.paths: list[str] = []             # every "METHOD path" received, in order
        self.errors: list[str] = []            # problems of the fake itself (script exhausted, ...)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=type(self).__name__,
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- what to answer ---------------------------------------------------------------------------------

    def answer(self, request: Request) -> Reply:
        """The reply to one request; subclasses add endpoints besides the scripted one."""
        if request.method != "POST" or request.path.split("?")[0] != self.endpoint:
            return Reply(404, {"error": {"type": "not_found_error",
                                         "message": f"fake server: no {request.method} {request.path}"}})
        with self._lock:
            self.requests.append(request)
            if self.responder is not None:
                reply = self.responder(request)
            elif self.script:
                reply = self.script.pop(0)
            else:
                self.errors.append(f"script exhausted at request {len(self.requests)}")
                reply = Reply(500, {"error": {"type": "api_error", "message": "fake server: script exhausted"}})
        return reply if isinstance(reply, Reply) else Reply(200, reply)

    def encode(self, request: Request, reply: Reply) -> tuple[bytes, str]:
        body = reply.body
        if isinstance(body, (bytes, str)):
            return (body.encode() if isinstance(body, str) else body), "text/plain"
        return json.dumps(body if body is not None else {}).encode(), "application/json"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:   # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = None
                request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with server._lock:
                    server.paths.append(f"{self.command} {self.path}")
                try:
                    reply = server.answer(request)
                except Exception as exc:  # noqa: BLE001 - a broken responder must show up in the test
                    server.errors.append(f"responder failed: {exc!r}")
                    reply = Reply(500, {"error": {"type": "api_error", "message": f"fake server: {exc!r}"}})
                if reply.delay_s and server._closing.wait(reply.delay_s):
                    return
                data, ctype = server.encode(request, reply)
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", ctype)
                    self.send_header("content-length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass    # the client gave up (timeout tests)

            do_POST = do_GET = do_HEAD = do_PUT = _serve

        return Handler


# -- OpenAI chat completions ------------------------------------------------------------------------------

class OpenAIFake(FakeServer):
    """``POST /v1/chat/completions``; point the client at ``base_url``."""

    endpoint = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


def tool_call(name: str, arguments: dict | str, id: str | None = None) -> dict:
    """One OpenAI tool call; a str ``arguments`` is sent verbatim (to script malformed JSON)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": id or f"call_{next(_ids)}", "type": "function", "function": {"name": name, "arguments": args}}


def openai_message(text: str | None = None, tool_calls: list[dict] | None = None, usage: tuple[int, int] = (100, 20),
                   model: str = "fake-model") -> dict:
    """A ``chat.completion`` body with one choice."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}


# -- Anthropic Messages -----------------------------------------------------------------------------------

class AnthropicFake(FakeServer):
    """``POST /v1/messages`` (JSON or SSE when the request asks to stream) and ``/v1/messages/count_tokens``;
    point the client (or ``ANTHROPIC_BASE_URL``) at ``base_url``."""

    endpoint = "/v1/messages"

    @property
    def base_url(self) -> str:
        return self.url

    def answer(self, request: Request) -> Reply:
        if request.method == "POST" and request.path.split("?")[0] == "/v1/messages/count_tokens":
            return Reply(200, {"input_tokens": max(1, len(request.text()) // 4)})
        return super().answer(request)

    def encode(self, request: Request, reply: Reply) -> tuple[bytes, str]:
        body = reply.body
        wants_stream = isinstance(request.body, dict) and request.body.get("stream") is True
        if reply.status == 200 and wants_stream and isinstance(body, dict) and body.get("type") == "message":
            return sse_events(body), "text/event-stream"
        return super().encode(request, reply)


def text_block(text: str) -> dict:
    return {"type": "text", "text": text}


def tool_use(name: str, input: dict, id: str | None = None) -> dict:
    return {"type": "tool_use", "id": id or f"toolu_{next(_ids):06d}", "name": name, "input": input}


def anthropic_message(*blocks: dict, usage: tuple[int, int] = (100, 20), model: str = "fake-model",
                      stop_reason: str | None = None) -> dict:
    """A Messages API ``message`` body; ``stop_reason`` defaults to tool_use when a block uses a tool."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    return {"id": f"msg_{next(_ids):06d}", "type": "message", "role": "assistant", "model": model,
            "content": list(blocks), "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}


def sse_events(message: dict) -> bytes:
    """The streaming form of a message: message_start, content blocks with deltas, message_delta, stop."""
    def event(name: str, data: dict) -> str:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"

    usage = message["usage"]
    start = dict(message, content=[], stop_reason=None,
                 usage=dict(usage, output_tokens=1))
    out = [event("message_start", {"type": "message_start", "message": start}), event("ping", {"type": "ping"})]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            out.append(event("content_block_start", {"type": "content_block_start", "index": i,
                                                     "content_block": {"type": "text", "text": ""}}))
            out.append(event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                     "delta": {"type": "text_delta", "text": block["text"]}}))
        elif block["type"] == "tool_use":
            out.append(event("content_block_start", {"type": "content_block_start", "index": i,
                                                     "content_block": dict(block, input={})}))
            out.append(event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                     "delta": {"type": "input_json_delta",
                                                               "partial_json": json.dumps(block["input"])}}))
        else:
            raise ValueError(f"fake server cannot stream a {block['type']!r} block")
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(event("message_delta", {"type": "message_delta",
                                       "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                       "usage": {"output_tokens": usage["output_tokens"]}}))
    out.append(event("message_stop", {"type": "message_stop"}))
    return "".join(out).encode()
