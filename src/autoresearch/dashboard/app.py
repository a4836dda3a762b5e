"""The dashboard's routes, and ``serve`` behind ``autoresearch dashboard``.

Pages are one static shell (``static/index.html``, with this process's CSRF value written in) and the
JSON of ``views``; the page draws everything with plain JS. ``/events`` is a server-sent event stream fed
by ``watch.Watcher``. Steering (``/api/control``, ``/api/notes``) calls ``Session.pause``/``resume``/
``stop``/``note``, which the loop reads from the ledger between experiments. ``security.GuardMiddleware``
wraps everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import socket
import time
from pathlib import Path
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from autoresearch.dashboard import views
from autoresearch.dashboard.security import Guard, GuardMiddleware, is_loopback
from autoresearch.dashboard.watch import Sessions, Watcher
from autoresearch.errors import UserError
from autoresearch.session import Session
from autoresearch.text import stored

STATIC = Path(__file__).parent / "static"
KEEPALIVE_S = 15.0
MAX_NOTE_CHARS = 4000
ACTIONS = {"pause": Session.pause, "resume": Session.resume, "stop": Session.stop}


def _dumps(content: Any) -> bytes:
    """JSON as UTF-8. A lone surrogate (text recorded before ``text.stored`` existed, or a file read
    leniently) becomes "?" instead of failing the response."""
    text = json.dumps(content, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", errors="replace")


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _dumps(content)


def _problem(status: int, message: str) -> JSON:
    return JSON({"error": message}, status_code=status)


async def _body(request: Request) -> dict:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ValueError("send JSON (Content-Type: application/json)")
    try:
        data = json.loads(await request.body())
    except ValueError:
        raise ValueError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def create_app(root: Path | str, *, tag: str, guard: Guard, poll_s: float = 1.0, workers: int = 4) -> Starlette:
    """The ASGI app for one repository and tag. ``guard`` holds the bind address, token and CSRF value."""
    root = Path(root)
    sessions = Sessions(root, tag, workers=workers)
    watcher = Watcher(root, tag, views.summary, poll_s=poll_s)
    shell = (STATIC / "index.html").read_text(encoding="utf-8").replace("__CSRF__", html.escape(guard.csrf))

    async def read(fn: Callable[..., Any], *args: Any, cache: bool = False) -> Response:
        """``fn(session, *args)`` as JSON, made on a worker thread (a table of thousands of rows is
        megabytes of JSON: not work for the event loop); with ``cache``, kept until the ledger changes."""
        def render(s: Session, *a: Any) -> bytes | None:
            data = fn(s, *a)
            return None if data is None else _dumps(data)

        def work(s: Session, *a: Any) -> tuple[bytes | None, float]:
            cpu = time.thread_time()
            body = sessions.remember(s, fn.__name__, render, *a) if cache else render(s, *a)
            return body, time.thread_time() - cpu

        body, cpu = await sessions.call(work, *args)
        if body is None:
            return _problem(404, "not found")
        # the CPU time this answer took here (on a busy machine, wall time says little)
        return Response(body, media_type="application/json", headers={"server-timing": f"cpu;dur={cpu * 1000:.1f}"})

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(shell)

    async def overview(request: Request) -> JSON:
        return await read(views.overview, cache=True)

    async def summary(request: Request) -> JSON:
        return await read(views.summary, cache=True)

    async def experiments(request: Request) -> JSON:
        return await read(views.table, cache=True)

    async def experiment(request: Request) -> JSON:
        return await read(views.experiment, request.path_params["number"])

    async def now(request: Request) -> JSON:
        return await read(views.now)

    async def findings(request: Request) -> JSON:
        return await read(views.findings, cache=True)

    async def compare(request: Request) -> JSON:
        try:
            a, b = int(request.query_params["a"]), int(request.query_params["b"])
        except (KeyError, ValueError):
            return _problem(400, "give two experiment numbers: /api/compare?a=3&b=7")
        return await read(views.compare, a, b)

    async def notes(request: Request) -> JSON:
        if request.method == "GET":
            return await read(lambda s: {"notes": s.notes()})
        try:
            text = stored((await _body(request)).get("text", ""), None).strip()   # no NUL or escape recorded
        except ValueError as exc:
            return _problem(400, str(exc))
        if not text:
            return _problem(400, "the note is empty")
        if len(text) > MAX_NOTE_CHARS:
            return _problem(400, f"the note is longer than {MAX_NOTE_CHARS} characters")
        note_id = await sessions.call(lambda s: s.note(text))
        return JSON({"id": note_id, "notes": await sessions.call(lambda s: s.notes())})

    async def control(request: Request) -> JSON:
        try:
            action = (await _body(request)).get("action")
        except ValueError as exc:
            return _problem(400, str(exc))
        if action not in ACTIONS:
            return _problem(400, f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
        await sessions.call(ACTIONS[action])
        return JSON({"control": await sessions.call(lambda s: s.control())})

    async def events(request: Request) -> StreamingResponse:
        async def stream():
            seq = 0
            yield "retry: 2000\n\n"
            while not watcher.closed:
                message = await watcher.next(seq, KEEPALIVE_S)
                if message is None:
                    yield ": keepalive\n\n"      # lets proxies and the browser see the stream is alive
                    continue
                seq = message["seq"]
                yield f"id: {seq}\nevent: change\ndata: {json.dumps(message, allow_nan=False)}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        watcher.start()
        try:
            yield
        finally:
            await watcher.stop()
            sessions.close()

    routes = [
        Route("/", index),
        Route("/api/summary", summary),
        Route("/api/overview", overview),
        Route("/api/experiments", experiments),
        Route("/api/experiments/{number:int}", experiment),
        Route("/api/now", now),
        Route("/api/findings", findings),
        Route("/api/compare", compare),
        Route("/api/notes", notes, methods=["GET", "POST"]),
        Route("/api/control", control, methods=["POST"]),
        Route("/events", events),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(GuardMiddleware, guard=guard)], lifespan=lifespan)
    app.state.guard = guard
    app.state.watcher = watcher
    return app


def resolve_tag(root: Path | str, tag: str | None) -> str:
    """The tag a Session would pick (given, else the ledger's last, else today's), fixed once for the server;
    also checks that ``root`` is a research repository (UserError otherwise)."""
    with Session(root, tag=tag) as session:
        return session.tag


def serve(root: Path | str, *, tag: str | None = None, host: str = "127.0.0.1", port: int = 8765,
          token: str | None = None, say: Callable[[str], None] = print, poll_s: float = 1.0) -> None:
    """Run the dashboard until Ctrl-C. Off loopback a token is required: the given one, or a generated one
    that is printed in the link."""
    import uvicorn

    tag = resolve_tag(root, tag)
    guard = Guard.for_bind(host, port, token)
    app = create_app(root, tag=tag, guard=guard, poll_s=poll_s)
    if not is_loopback(host):
        say(f"warning: listening on {host}, reachable from other machines; every request needs the token")
    say(f"autoresearch dashboard for tag {tag}: {guard.link('127.0.0.1' if host in ('0.0.0.0', '::') else host)}")
    if guard.generated:
        say(f"token (generated): {guard.token}")
    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            watcher.end_streams()          # open event streams end, so shutdown need not wait for them
            super().handle_exit(sig, frame)

    watcher: Watcher = app.state.watcher
    sock = _listen(host, port)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, access_log=False)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Server(config).serve(sockets=[sock]))


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, made here so that a port in use is one clear message (uvicorn would exit)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # small answers (the summary) are written as headers then body: without NODELAY, Nagle holds the body
    # until the client's delayed ACK, ~40 ms (accepted sockets inherit the option on Linux)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                        hint="choose another port with --port, or another address with --host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
