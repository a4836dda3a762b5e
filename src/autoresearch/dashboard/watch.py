"""Sessions for the server's threads, and the watcher that turns ledger changes into pushed events.

An SQLite connection belongs to the thread that opened it, and a ``Session`` holds one. ``Sessions`` runs
every read on a small pool of worker threads, each with its own Session (opened on first use), so the
event loop never blocks on SQLite or git and no connection crosses threads. The loop in the other process
keeps writing as usual: WAL lets these readers read while it writes.

``Watcher`` polls ``Session.change_key`` (the ledger's data version and the size of the running
experiment's logs) about once a second on one dedicated thread (data versions are only comparable on
one connection) and, when it changes, publishes a message: counters of ledger and log changes, and the
header summary. Each event-stream client waits for the next message; a slow client skips straight to the
latest, and the counters tell it whether it missed a ledger change.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from autoresearch.session import Session

log = logging.getLogger("autoresearch.dashboard")


class Sessions:
    """Runs ``fn(session, *args)`` on a worker thread with that thread's own Session."""

    def __init__(self, root: Path, tag: str, workers: int = 4, name: str = "dashboard") -> None:
        self.root, self.tag = root, tag
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    def _session(self) -> Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = Session(self.root, tag=self.tag)
        return session

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._session(), *args))

    def remember(self, session: Session, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(session, *args)``, kept per thread until the ledger changes (``Ledger.version``: any commit,
        from this process or the loop's). For reads that depend on the ledger alone; call on a worker."""
        cache = self._local.__dict__.setdefault("cache", {})
        version = session.ledger.version()
        hit = cache.get((name, args))
        if hit is not None and hit[0] == version:
            return hit[1]
        value = fn(session, *args)
        cache[(name, args)] = (version, value)
        return value

    def close(self) -> None:
        # The threads end here; their Sessions' connections close when the thread-locals are collected
        # (an SQLite connection cannot be closed from another thread).
        self._pool.shutdown(wait=True, cancel_futures=True)


class Watcher:
    """Polls for changes and publishes the latest message; ``next`` waits for one newer than a sequence."""

    def __init__(self, root: Path, tag: str, summary: Callable[[Session], dict], poll_s: float = 1.0) -> None:
        self.sessions = Sessions(root, tag, workers=1, name="dashboard-watch")
        self.summary = summary
        self.poll_s = poll_s
        self.seq = self.ledger_seq = self.logs_seq = 0
        self.message: dict | None = None
        self._key: tuple | None = None
        self._summary: dict | None = None
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.closed = False

    def _poll(self, session: Session) -> tuple[bool, bool, dict | None]:
        """(ledger changed, logs changed, new summary or None) since the last poll."""
        version, logs = session.change_key()
        old = self._key
        self._key = (version, logs)
        ledger_changed = old is None or old[0] != version
        logs_changed = old is not None and old[1] != logs
        return ledger_changed, logs_changed, self.summary(session) if ledger_changed else None

    async def _run(self) -> None:
        while not self.closed:
            try:
                ledger_changed, logs_changed, summary = await self.sessions.call(self._poll)
            except Exception as exc:  # noqa: BLE001 - a locked or half-written ledger: try again next poll
                log.warning("dashboard: could not poll the ledger: %s", exc)
                ledger_changed = logs_changed = False
                summary = None
            if ledger_changed or logs_changed:
                self.ledger_seq += ledger_changed
                self.logs_seq += logs_changed
                self._summary = summary or self._summary
                self._publish({"ledger_seq": self.ledger_seq, "logs_seq": self.logs_seq, "summary": self._summary})
            await asyncio.sleep(self.poll_s)

    def _publish(self, message: dict) -> None:
        self.seq += 1
        self.message = {"seq": self.seq, **message}
        event, self._changed = self._changed, asyncio.Event()
        if event is not None:
            event.set()

    def start(self) -> None:
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def end_streams(self) -> None:
        """End every event stream now (at Ctrl-C: an open browser must not hold the server's shutdown).
        Call from the event loop's thread."""
        self.closed = True
        if self._changed is not None:
            self._changed.set()      # wake every stream so that it sees ``closed`` and ends

    async def stop(self) -> None:
        self.end_streams()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        self.sessions.close()

    async def next(self, after: int, timeout: float) -> dict | None:
        """The latest message if it is newer than ``after``; else wait up to ``timeout`` s for one (None)."""
        if self.message is not None and self.seq > after:
            return self.message
        event = self._changed
        if event is None or self.closed:
            return None
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        return self.message if self.seq > after else None
