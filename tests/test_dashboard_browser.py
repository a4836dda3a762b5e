"""The dashboard in a real headless browser (Debian's chromium driven by Playwright's Python package; never
Playwright's own browser download). Skipped when chromium or Playwright is missing.

- the live test: a loop runs in another process on the toy task; the page shows a new experiment without
  a reload, opens it with its diff, pauses the loop after its experiment, leaves a note that reaches the
  next brief, resumes and stops it;
- the escaping test: ``<script>`` and an ``onerror`` image in a description, a hypothesis, a reason, a
  diff, a log line, the scratchpad and a note are shown as text and never run.

``AUTORESEARCH_DASHBOARD_SCREENSHOT=path`` also saves the live test's overview there; docs/dashboard.png
is made that way:
    AUTORESEARCH_DASHBOARD_SCREENSHOT=docs/dashboard.png .venv/bin/python -m pytest -q \
        tests/test_dashboard_browser.py -k live
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
playwright = pytest.importorskip("playwright.sync_api")

import autoresearch  # noqa: E402
from autoresearch.config import DecisionSection  # noqa: E402
from autoresearch.runner import sandbox  # noqa: E402
from autoresearch.session import Session  # noqa: E402
from dashboard_fixtures import Server, free_port, git_commit_all, hostile, make_hostile_repo, wait_for  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="chromium is not installed (apt-get install chromium)")

QUEUE = "\n".join(f'[[experiment]]\ndescription = "LR -> {lr}"\nhypothesis = "step {i}"\nset = {{ LR = {lr} }}\n'
                  for i, lr in enumerate((0.001, 0.003, 0.0005, 0.002, 0.0008, 0.0015, 0.0012, 0.0009), 1))


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def _page(browser, errors: list[str]):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.set_default_timeout(20_000)
    return page


@pytest.mark.slow
def test_markup_from_agents_and_runs_is_shown_as_text_and_never_runs(browser, tmp_path):
    root = make_hostile_repo(tmp_path / "hostile")
    errors: list[str] = []
    with Server(root, "x") as srv:
        page = _page(browser, errors)
        page.goto(srv.url + "/#/e/1")
        page.wait_for_selector("#description")
        assert page.text_content("#description") == hostile("desc")
        body = page.text_content("main")
        for where in ("hyp", "reason", "diff", "log", "pad", "num"):
            assert hostile(where) in body, where
        assert hostile("diff") in page.text_content("pre.diff")
        assert hostile("log") in page.text_content("pre.log")
        page.goto(srv.url + "/#/experiments")
        page.wait_for_selector('tr[data-n="1"]')
        assert hostile("desc") in page.text_content('tr[data-n="1"]')
        rows = lambda: page.eval_on_selector_all("#experiments tbody tr", "rs => rs.map(r => r.dataset.n)")  # noqa: E731
        assert rows() == ["1", "0"]                                   # newest first
        page.click('th[data-key="number"]')
        assert rows() == ["0", "1"]
        page.select_option("select >> nth=0", "discard")              # the status filter
        assert rows() == ["1"]
        page.select_option("select >> nth=0", "")
        page.fill("input[type=search]", "baseline")
        assert rows() == ["0"]
        page.goto(srv.url + "/#/compare/0/1")
        page.wait_for_selector("pre.diff")
        assert hostile("diff") in page.text_content("pre.diff") and hostile("desc") in page.text_content("main")
        page.goto(srv.url + "/#/now")
        page.wait_for_selector("text=Nothing is running right now.")
        page.goto(srv.url + "/#/")
        page.hover('svg.plot [data-n="1"]')
        assert hostile("desc") in page.text_content("#tooltip")
        page.goto(srv.url + "/#/steer")
        page.wait_for_selector(".note-text")
        assert page.text_content(".note-text") == hostile("note")
        page.wait_for_timeout(300)
        assert page.evaluate("window.__pwned") is None
        assert page.query_selector_all("main img, main script, #tooltip img") == []
    assert errors == []


@pytest.mark.slow
def test_off_loopback_the_printed_link_opens_the_page_and_its_event_stream(browser, tmp_path):
    root = make_hostile_repo(tmp_path / "repo")
    errors: list[str] = []
    with Server(root, "x", host="0.0.0.0") as srv:                  # the rules of a non-loopback bind
        token = srv.guard.token
        page = _page(browser, errors)
        denied = page.goto(srv.url + "/")
        assert denied.status == 401
        page.goto(f"{srv.url}/?token={token}")
        page.wait_for_selector("#live.on")                           # the event stream got in (by the cookie)
        assert page.url == srv.url + "/" and token not in page.url   # the token left the address bar
        page.wait_for_selector("svg.plot circle")
    assert errors == [] or all("401" in e for e in errors)


def test_watch_a_live_loop_open_an_experiment_pause_note_resume_stop(browser, tmp_path):
    root = tmp_path / "toy"
    autoresearch.create("toy", root, say=lambda text: None)
    train = root / "train.py"
    train.write_text(train.read_text(encoding="utf-8").replace("SLEEP = 0.2", "SLEEP = 1.2"), encoding="utf-8")
    git_commit_all(root, "slower toy runs, so a person can watch them")
    queue = tmp_path / "queue.toml"
    queue.write_text(QUEUE, encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    flags = [] if sandbox.available() else ["--no-sandbox"]
    loop_log = (tmp_path / "loop.log").open("w")
    port = free_port()
    # the dashboard first, on an empty ledger: the page is open before the loop has done anything
    dash = subprocess.Popen([sys.executable, "-m", "autoresearch", "dashboard", "-C", str(root), "--tag", "live",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    loop = None
    errors: list[str] = []
    try:
        banner = dash.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in banner, banner
        page = _page(browser, errors)
        page.goto(f"http://127.0.0.1:{port}/#/experiments")
        page.wait_for_selector("#experiments")
        page.wait_for_selector("#live.on")
        assert page.query_selector("tr[data-n]") is None
        page.evaluate("window.__sameDocument = 'yes'")
        loop = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", "-C", str(root), "--agent", "replay",
                                 "--tag", "live", "--queue", str(queue), *flags], stdout=loop_log,
                                stderr=subprocess.STDOUT, env=env)
        # the first experiment comes after the baseline and its two repeats (the night's evidence of seed noise)
        first = DecisionSection().baseline_repeats
        page.wait_for_selector(f'tr[data-n="{first}"]', timeout=90_000)     # pushed by the event stream
        assert page.evaluate("window.__sameDocument") == "yes"        # no reload happened
        assert page.text_content("#live") == "live"

        page.click(f'tr[data-n="{first}"]')
        page.wait_for_selector("pre.diff")
        assert "+LR = 0.001" in page.text_content("pre.diff") and "-LR = 0.01" in page.text_content("pre.diff")
        assert page.text_content("#description") == "LR -> 0.001"

        page.click('#tabs a[data-tab="steer"]')
        page.click("#btn-pause")
        page.wait_for_selector("#control-badge.pause")      # the click's request has landed (a busy machine is slow)
        with Session(root, tag="live") as s:
            at_pause = s.ledger.next_number()
            assert s.control() == "pause"
            settled = wait_for(lambda: _quiet_for(s, 3.0), 60, "the loop to pause (no experiment for 3 s)")
            # only the experiment under way when the button was pressed (its row may not exist yet) finished
            assert settled <= at_pause + 1 and not s.ledger.running()
            assert loop.poll() is None                               # paused, not stopped

        page.fill("#note-text", "try WIDTH 32 next")
        page.click("#btn-note")
        page.wait_for_selector("text=pending (goes into the next brief)")
        with Session(root, tag="live") as s:
            assert "a note from the researcher: try WIDTH 32 next" in s.brief().render()
            [note] = [n for n in s.notes() if n["text"] == "try WIDTH 32 next"]

        page.click("#btn-resume")
        with Session(root, tag="live") as s:
            delivered = wait_for(lambda: [e for e in s.ledger.events("note_delivered")
                                          if e.payload.get("note") == note["id"]], 60, "the note to reach a brief")
            assert delivered[0].number == settled                     # the very next experiment got it
            wait_for(lambda: s.ledger.get(settled), 30, f"experiment {settled} to start")   # the brief comes first
        page.click('#tabs a[data-tab="steer"]')
        page.click("#btn-stop")
        assert loop.wait(timeout=90) == 0
        assert "stopped on request" in (tmp_path / "loop.log").read_text()

        page.click('#tabs a[data-tab="overview"]')
        page.wait_for_selector("svg.plot circle")
        page.wait_for_timeout(500)
        shot = tmp_path / "overview.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        if os.environ.get("AUTORESEARCH_DASHBOARD_SCREENSHOT"):
            shutil.copy(shot, os.environ["AUTORESEARCH_DASHBOARD_SCREENSHOT"])
    finally:
        for proc in (loop, dash):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        loop_log.close()
    assert errors == []


def _quiet_for(s: Session, seconds: float) -> int | None:
    """The next experiment number if nothing ran and no experiment started for ``seconds`` (longer than
    one experiment of this toy, and far longer than the gap between two), else None."""
    before = s.ledger.next_number()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if s.ledger.running() or s.ledger.next_number() != before:
            return None
        time.sleep(0.1)
    return before


test_watch_a_live_loop_open_an_experiment_pause_note_resume_stop = pytest.mark.slow(
    test_watch_a_live_loop_open_an_experiment_pause_note_resume_stop)
