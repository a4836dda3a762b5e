"""Make docs/dashboard.png: the dashboard's overview after a short replayed run of the toy task.

    .venv/bin/python scripts/dashboard_screenshot.py [OUT.png]

Creates the toy task in a temporary folder, measures its noise floor, replays a dozen experiments, leaves
a note, serves the dashboard on a free loopback port and photographs the overview in Debian's chromium
(driven by Playwright; never Playwright's own browser download), with the mouse over one point.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

import autoresearch
from autoresearch.dashboard.app import create_app
from autoresearch.dashboard.security import Guard
from autoresearch.runner import sandbox

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
PLAN = [("LR 1e-2 -> 1e-3", {"LR": 0.001}), ("LR 1e-3 -> 1e-1", {"LR": 0.1}), ("WIDTH 4 -> 16", {"WIDTH": 16}),
        ("LR 1e-3 -> 3e-3", {"LR": 0.003}), ("WIDTH 16 -> 32", {"WIDTH": 32}), ("a different seed", {"SEED": 5}),
        ("WIDTH 32 -> 64", {"WIDTH": 64}), ("LR 1e-3 -> 8e-4", {"LR": 0.0008}), ("WIDTH 32 -> 28", {"WIDTH": 28}),
        ("LR 8e-4 -> 1.1e-3", {"LR": 0.0011})]


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "toy"
        autoresearch.create("toy", root, say=lambda text: None)
        queue = Path(tmp) / "queue.toml"
        queue.write_text("".join(f'[[experiment]]\ndescription = "{d}"\nset = {{ {", ".join(f"{k} = {v}" for k, v in s.items())} }}\n\n'
                                 for d, s in PLAN), encoding="utf-8")
        no_sandbox = not sandbox.available()
        with autoresearch.open(root, tag="demo") as s:
            s.measure_noise(3, no_sandbox=no_sandbox)
            s.run("replay", queue=queue, experiments=len(PLAN), no_sandbox=no_sandbox)
            s.note("the width matters less than the learning rate: try a cosine schedule next")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        app = create_app(root, tag="demo", guard=Guard.for_bind("127.0.0.1", port))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_selector("svg.plot circle")
                page.hover('svg.plot [data-n="5"]')
                page.wait_for_timeout(300)
                page.screenshot(path=str(out), full_page=True)
                browser.close()
        finally:
            server.should_exit = True
            thread.join(5)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"))
