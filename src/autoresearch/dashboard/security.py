"""Who may talk to the dashboard, checked on every request (page, API, static file and event stream).

The dashboard can pause and stop a night's run and shows everything an agent wrote, so:

- **Loopback by default.** Bound to a loopback address, only this machine can connect. The ``Host``
  header must then name a loopback host too: otherwise a web page on another site could point a name it
  controls at 127.0.0.1 (DNS rebinding) and read the dashboard as same-origin.
- **A token off loopback.** Any other bind address needs a token (given, or generated here and printed).
  It is accepted as ``Authorization: Bearer``, as ``?token=`` (the link that is printed; the page then
  sets an HttpOnly cookie and redirects to drop it from the address bar), or as that cookie, which is
  what the page's own requests and its ``EventSource`` send. A token given on loopback is enforced too.
- **CSRF.** Every state-changing request (any method but GET/HEAD) must carry ``X-CSRF-Token``, a random
  value of this server process that only the dashboard's own page can read (it is written into the page,
  and no CORS header ever lets another origin read a response); a foreign ``Origin`` is refused as well.
- **Headers.** A Content-Security-Policy that allows only the dashboard's own scripts (so text that
  slipped through escaping still could not run), no referrer (the token never leaks in a Referer), no
  framing, no MIME sniffing, no caching.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlencode

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]

SAFE_METHODS = ("GET", "HEAD")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any loopback IP (127.0.0.0/8, ::1), with or without [brackets]."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost.") or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host part of a ``Host`` header: ``127.0.0.1:8765`` -> ``127.0.0.1``, ``[::1]:80`` -> ``::1``."""
    header = header.strip()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


@dataclass
class Guard:
    """The rules of one server: where it is bound, its token (None: none needed) and its CSRF value."""

    bind_host: str
    port: int
    token: str | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    generated: bool = False          # the token was made here (so it must be printed)

    @classmethod
    def for_bind(cls, host: str, port: int, token: str | None = None) -> "Guard":
        """Loopback needs no token unless one is given; any other address gets a generated one if none is."""
        token = token or None
        generated = token is None and not is_loopback(host)
        if generated:
            token = secrets.token_urlsafe(24)
        return cls(bind_host=host, port=port, token=token, generated=generated)

    @property
    def cookie(self) -> str:
        # cookies ignore ports: two dashboards on one machine must not share (or clobber) one cookie
        return f"autoresearch_token_{self.port}"

    def link(self, host: str | None = None) -> str:
        shown = host or self.bind_host
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        query = f"/?{urlencode({'token': self.token})}" if self.token else "/"
        return f"http://{shown}:{self.port}{query}"

    def token_ok(self, given: str | None) -> bool:
        return self.token is None or (given is not None and secrets.compare_digest(given.encode(), self.token.encode()))


def _headers(scope: dict) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _given_token(headers: dict[str, str], query: dict[str, list[str]], cookie_name: str) -> tuple[str | None, str]:
    """The token a request carries and where it came from."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), "header"
    if query.get("token"):
        return query["token"][0], "query"
    if "cookie" in headers:
        jar = SimpleCookie()
        try:
            jar.load(headers["cookie"])
        except Exception:   # a malformed cookie header from some other site's cookie: ignore it
            jar = SimpleCookie()
        if cookie_name in jar:
            return jar[cookie_name].value, "cookie"
    return None, ""


async def _plain(send: Callable[[dict], Awaitable[None]], status: int, text: str,
                 extra: list[tuple[bytes, bytes]] = ()) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS, *extra]})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """ASGI middleware applying a ``Guard`` to every HTTP request, streaming ones included."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        g = self.guard
        headers = _headers(scope)
        host = host_name(headers.get("host", ""))
        if is_loopback(g.bind_host) and not is_loopback(host):
            await _plain(send, 403, f"forbidden: this dashboard answers to a loopback host name, not {host!r}")
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given, source = _given_token(headers, query, g.cookie)
        if not g.token_ok(given):
            await _plain(send, 401, "unauthorized: this dashboard needs its token (open the link it printed, "
                                    "or send Authorization: Bearer <token>)",
                         [(b"www-authenticate", b'Bearer realm="autoresearch"')])
            return
        method = scope.get("method", "GET")
        if method not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and origin != f"{scope.get('scheme', 'http')}://{headers.get('host', '')}":
                await _plain(send, 403, f"forbidden: a request from another origin ({origin})")
                return
            sent = headers.get("x-csrf-token", "")
            if not secrets.compare_digest(sent.encode(), g.csrf.encode()):
                await _plain(send, 403, "forbidden: missing or wrong X-CSRF-Token (reload the dashboard page)")
                return
        if g.token and source == "query" and method == "GET" and scope.get("path") == "/":
            # the printed link: keep the token in an HttpOnly cookie and take it out of the address bar
            cookie = f"{g.cookie}={g.token}; HttpOnly; SameSite=Strict; Path=/"
            await _plain(send, 303, "see /", [(b"location", b"/"), (b"set-cookie", cookie.encode())])
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *((k, v) for k, v in SECURITY_HEADERS if k not in present)]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
