"""Repositories and servers for the dashboard tests: a toy repository after a short loop, one whose
agent text, log and diff carry ``<script>``, and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

from autoresearch.dashboard.app import create_app
from autoresearch.dashboard.security import Guard
from autoresearch.loop.gitops import Git, archive_ref
from autoresearch.session import Session

HOSTILE = '<script>window.__pwned = "{where}"</script><img src=x onerror="window.__pwned=\'{where}-img\'">'


def hostile(where: str) -> str:
    return HOSTILE.format(where=where)


def make_hostile_repo(root: Path, tag: str = "x") -> Path:
    """A toy repository with a baseline and one experiment whose description, hypothesis, reason, diff,
    log, scratchpad and a note all carry markup that would run if it were ever parsed as HTML."""
    from toyrepo import make_toy_repo

    make_toy_repo(root)
    git = Git(root)
    base = git.head()
    train = (root / "train.py").read_text(encoding="utf-8")
    (root / "train.py").write_text(train.replace("LR = 0.01", f"LR = 0.001  # {hostile('diff')}"), encoding="utf-8")
    (root / "scratchpad.md").write_text(f"# Scratchpad\n\n{hostile('pad')}\n", encoding="utf-8")
    commit = git.commit(["train.py", "scratchpad.md"], "experiment 1")
    git.update_ref(archive_ref(1), commit)
    run = root / ".autoresearch" / "runs" / "0001"
    run.mkdir(parents=True)
    log = run / "fold0.log"
    log.write_text(f"# autoresearch run fold0: python train.py\nstep 1/2 loss 2.5\n{hostile('log')}\n"
                   f"step 2/2 loss 1.5\nval_bpb: 1.2\n# outcome: ok: exit code 0\n", encoding="utf-8")
    with Session(root, tag=tag) as s:
        s.ledger.start(number=0, tag=tag, kind="baseline", phase=0, phase_title="baseline", parent_commit=base,
                       candidate_commit=base, description="baseline")
        s.ledger.finish(0, "keep", commit=base, folds=[2.0, 2.0], metric_mean=2.0, metric_std=0.0, reason="baseline")
        s.ledger.start(number=1, tag=tag, kind="experiment", phase=1, phase_title="learning rate",
                       parent_commit=base, candidate_commit=commit, agent="replay", description=hostile("desc"),
                       hypothesis=hostile("hyp"))
        s.ledger.finish(1, "discard", commit=commit, folds=[1.2, 1.2], metric_mean=1.2, metric_std=0.0, delta=-0.8,
                        reason=hostile("reason"), log_path=str(log),
                        decision={"status": "discard", "reason": "x", "numbers": {"threshold": 0.1, "note": hostile("num")}})
        s.ledger.set_meta("tag", tag)
        s.note(hostile("note"))
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The dashboard app under a real uvicorn in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, root: Path, tag: str, *, token: str | None = None, host: str = "127.0.0.1",
                 poll_s: float = 0.2) -> None:
        import uvicorn

        self.port = free_port()
        self.guard = Guard.for_bind(host, self.port, token)
        self.app = create_app(root, tag=tag, guard=self.guard, poll_s=poll_s)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=1, access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def wait_for(predicate, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def git_commit_all(root: Path, message: str) -> None:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    import os

    subprocess.run(["git", "commit", "-qam", message], cwd=root, check=True, env={**os.environ, **env})
