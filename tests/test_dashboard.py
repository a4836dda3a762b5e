"""The dashboard without a browser: its JSON over a real loop's ledger, the live curve parser, the
event stream, steering, and who may ask (loopback, token, Host, CSRF). The browser tests are in
test_dashboard_browser.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from autoresearch.dashboard.app import STATIC, create_app  # noqa: E402
from autoresearch.dashboard.security import Guard, host_name, is_loopback  # noqa: E402
from autoresearch.runner import sandbox  # noqa: E402
from autoresearch.curves import parse_curve, parse_curve_line  # noqa: E402
from autoresearch.session import Session  # noqa: E402
from dashboard_fixtures import Server, hostile, make_hostile_repo, wait_for  # noqa: E402
from toyrepo import make_toy_repo  # noqa: E402

LOCAL = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def looped(tmp_path_factory):
    """A toy repository after a baseline and three replayed experiments (one kept, one discarded, one crash)."""
    root = make_toy_repo(tmp_path_factory.mktemp("dash") / "toy")
    with Session(root, tag="d") as s:
        s.run("replay", experiments=3, no_sandbox=not sandbox.available())
    return root


def client(root: Path, *, tag: str = "d", host: str = "127.0.0.1", token: str | None = None,
           base: str = LOCAL) -> TestClient:
    guard = Guard.for_bind(host, 8765, token)
    return TestClient(create_app(root, tag=tag, guard=guard, poll_s=0.1), base_url=base)


def csrf_of(c: TestClient, **kw) -> str:
    page = c.get("/", **kw).text
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


# --- live curves ---------------------------------------------------------------------------------------
def test_curve_lines_of_the_eclip_and_toy_formats_parse_to_points():
    assert parse_curve_line("step    50/400  loss 3.1234  temperature 0.070  lr 1.00e-04  elapsed 12.3s") == \
        {"step": 50, "total": 400, "loss": 3.1234, "temperature": 0.07, "lr": 1e-4, "elapsed": 12.3}
    assert parse_curve_line("Step 10/20: loss=2.5, acc: 93.1%") == {"step": 10, "total": 20, "loss": 2.5, "acc": 93.1}
    assert parse_curve_line("step 3/4 loss nan") == {"step": 3, "total": 4}
    assert parse_curve_line("# autoresearch run fold0: step 1/2 loss 1") is None   # the runner's own line
    assert parse_curve_line("val_bpb: 1.23") is None


def test_a_long_curve_is_thinned_and_keeps_its_last_point():
    text = "\n".join(f"step {i}/5000 loss {1 / i:.5f}" for i in range(1, 5001))
    points = parse_curve(text, max_points=100)
    assert len(points) == 100
    assert points[0]["step"] == 1 and points[-1]["step"] == 5000
    assert [p["step"] for p in points] == sorted(p["step"] for p in points)


# --- reading a real loop's ledger --------------------------------------------------------------------------
def test_overview_and_table_show_the_loop(looped):
    with client(looped) as c:
        ov = c.get("/api/overview").json()
        table = c.get("/api/experiments").json()
    assert ov["tag"] == "d" and ov["metric"] == "val_bpb" and ov["direction"] == "minimize"
    assert ov["champion"]["number"] == 1 and ov["n_experiments"] == 3
    assert ov["counts"].get("keep") == 1 and ov["counts"].get("discard") == 1
    assert [p["n"] for p in ov["plot"]["points"]] == [0, 1, 2, 3]
    assert [n for n, _ in ov["plot"]["steps"]] == [0, 1]
    assert ov["phase"] == {"label": "2: everything else", "used": 0, "budget": 20}   # phase 1 spent its 3
    assert [r["number"] for r in table["rows"]] == [0, 1, 2, 3]
    assert table["rows"][1]["description"] == "LR 1e-2 -> 1e-3" and table["rows"][1]["agent"] == "replay"


def test_one_experiment_has_diff_folds_decision_logs_curves_and_scratchpad(looped):
    with client(looped) as c:
        e = c.get("/api/experiments/1").json()
        missing = c.get("/api/experiments/999")
    assert "-LR = 0.01" in e["diff"] and "+LR = 0.001" in e["diff"]
    assert len(e["folds"]) == 2 and e["status"] == "keep"
    assert e["decision"]["numbers"]["threshold"] is not None
    assert e["git"]["archive_ref"] == "refs/autoresearch/archive/1" and e["git"]["commit"]
    assert set(e["logs"]) == {"smoke", "fold0", "fold1"} and "val_bpb:" in e["logs"]["fold0"]   # the smoke test too
    assert [p["step"] for p in e["curves"]["fold0"]] == [1, 2] and e["curves"]["fold0"][0]["loss"] == 1.0
    assert e["scratchpad"] is not None and e["scratchpad"].startswith("# Scratchpad")
    assert missing.status_code == 404


def test_compare_gives_both_sides_and_the_diff_between_them(looped):
    with client(looped) as c:
        cmp = c.get("/api/compare?a=1&b=2").json()
        bad = c.get("/api/compare?a=1")
    assert cmp["a"]["number"] == 1 and cmp["b"]["number"] == 2
    assert "-LR = 0.001" in cmp["diff"] and "+LR = 0.1" in cmp["diff"]
    assert bad.status_code == 400


def test_now_shows_the_running_experiment_with_its_live_curve_over_the_champions(looped, tmp_path):
    with Session(looped, tag="d") as s:
        number = s.ledger.start(tag="d", kind="experiment", phase=1, phase_title="learning rate",
                                parent_commit=s.champion().commit, agent="replay", description="a running one",
                                hypothesis="it runs")
        run = s.config.state_dir / "runs" / f"{number:04d}"
        run.mkdir(parents=True)
        (run / "fold0.log").write_text("# autoresearch run fold0\nstep 1/2 loss 0.9\nval_bpb: 1.0\n# outcome: ok\n")
        (run / "fold1.log").write_text("# autoresearch run fold1\nstep 1/2 loss 0.8\n")
        try:
            with client(looped) as c:
                now = c.get("/api/now").json()
        finally:
            s.ledger.finish(number, "interrupted", reason="test")
    [r] = now["running"]
    assert r["number"] == number and r["description"] == "a running one" and r["hypothesis"] == "it runs"
    assert r["curves"]["fold1"] == [{"step": 1, "total": 2, "loss": 0.8}]
    assert r["runs"]["fold0"]["finished"] and not r["runs"]["fold1"]["finished"]
    assert r["running_runs"] == ["fold1"] and r["run_elapsed_s"] is not None
    assert now["champion"]["number"] == 1 and [p["step"] for p in now["champion_curves"]["fold1"]] == [1, 2]
    assert now["timeout_s"] == 30


# --- steering ------------------------------------------------------------------------------------------
def test_pause_resume_stop_and_a_note_go_through_the_ledger_with_the_csrf_token(looped):
    with client(looped) as c:
        token = csrf_of(c)
        head = {"X-CSRF-Token": token}
        assert c.post("/api/control", json={"action": "pause"}, headers=head).json() == {"control": "pause"}
        with Session(looped, tag="d") as s:
            assert s.control() == "pause"
        assert c.post("/api/control", json={"action": "stop"}, headers=head).json() == {"control": "stop"}
        assert c.post("/api/control", json={"action": "resume"}, headers=head).json() == {"control": "run"}
        assert c.post("/api/control", json={"action": "explode"}, headers=head).status_code == 400
        note = c.post("/api/notes", json={"text": "try WIDTH 32 next"}, headers=head).json()
        assert c.post("/api/notes", json={"text": "   "}, headers=head).status_code == 400
        listed = c.get("/api/notes").json()["notes"]
    assert any(n["id"] == note["id"] and n["delivered_to"] is None for n in listed)
    with Session(looped, tag="d") as s:
        assert "a note from the researcher: try WIDTH 32 next" in s.brief().render()
        assert [e.payload["value"] for e in s.ledger.events("control")][-3:] == ["pause", "stop", "run"]


def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(looped):
    with client(looped) as c:
        token = csrf_of(c)
        assert c.post("/api/control", json={"action": "pause"}).status_code == 403
        assert c.post("/api/control", json={"action": "pause"}, headers={"X-CSRF-Token": "guess"}).status_code == 403
        foreign = {"X-CSRF-Token": token, "Origin": "http://evil.example"}
        assert c.post("/api/control", json={"action": "pause"}, headers=foreign).status_code == 403
        assert c.post("/api/notes", content="text=hi", headers={"X-CSRF-Token": token,
                      "Content-Type": "application/x-www-form-urlencoded"}).status_code == 400
    with Session(looped, tag="d") as s:
        assert s.control() == "run"


# --- who may ask -----------------------------------------------------------------------------------------
def test_off_loopback_every_request_without_the_token_gets_401_including_the_event_stream(looped):
    guard = Guard.for_bind("0.0.0.0", 8765)
    assert guard.token and guard.generated and guard.token in guard.link()
    app = create_app(looped, tag="d", guard=guard, poll_s=0.1)
    with TestClient(app, base_url="http://192.0.2.10:8765") as c:
        for path in ("/", "/api/overview", "/api/experiments", "/api/experiments/1", "/api/now", "/api/notes",
                     "/static/app.js", "/events", "/nope"):
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.text.startswith("unauthorized"), path   # and nothing of the repository
        assert c.post("/api/control", json={"action": "stop"}).status_code == 401
        assert c.get("/events", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/overview?token=wrong").status_code == 401
        ok = {"Authorization": f"Bearer {guard.token}"}
        assert c.get("/api/overview", headers=ok).json()["tag"] == "d"
        # the printed link: the token moves into an HttpOnly cookie, out of the address bar
        r = c.get(f"/?token={guard.token}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
        assert c.get("/api/summary").status_code == 200           # the client kept the cookie
    with Session(looped, tag="d") as s:
        assert s.control() == "run"


def test_a_given_token_is_enforced_on_loopback_too_and_the_host_must_be_loopback(looped):
    with client(looped, token="s3cret") as c:
        assert c.get("/api/summary").status_code == 401
        assert c.get("/api/summary", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    with client(looped, base="http://attacker.example:8765") as c:
        r = c.get("/api/summary")
        assert r.status_code == 403 and "loopback" in r.text        # DNS rebinding
    with client(looped, base="http://localhost:8765") as c:
        assert c.get("/api/summary").status_code == 200


def test_loopback_rules():
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")
    assert host_name("127.0.0.1:8765") == "127.0.0.1" and host_name("[::1]:80") == "::1"
    assert Guard.for_bind("127.0.0.1", 1).token is None and Guard.for_bind("::", 1).token


def test_every_response_carries_the_security_headers(looped):
    with client(looped) as c:
        for path in ("/", "/api/summary", "/static/app.js"):
            headers = c.get(path).headers
            assert "script-src 'self'" in headers["content-security-policy"], path
            assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"


# --- escaping --------------------------------------------------------------------------------------------
def test_agent_and_run_text_travels_as_json_text_and_the_page_never_parses_it_as_html(tmp_path):
    root = make_hostile_repo(tmp_path / "hostile")
    with client(root, tag="x") as c:
        e = c.get("/api/experiments/1")
        page = c.get("/").text
    assert e.headers["content-type"].startswith("application/json")
    data = e.json()
    assert data["description"] == hostile("desc") and hostile("diff") in data["diff"]
    assert hostile("log") in data["logs"]["fold0"] and hostile("pad") in data["scratchpad"]
    assert "__pwned" not in page       # the only server-rendered HTML carries no agent text
    for script in STATIC.glob("*.js"):
        code = script.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in code, f"{script.name} uses {sink}"


# --- the event stream --------------------------------------------------------------------------------------
def test_the_event_stream_pushes_a_change_when_the_ledger_changes(looped):
    with Server(looped, "d", poll_s=0.1) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        with http.stream("GET", "/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            first = _next_event(lines)
            assert first["summary"]["tag"] == "d" and first["summary"]["control"] == "run"
            with Session(looped, tag="d") as s:
                s.pause()
            second = _next_event(lines)
            assert second["ledger_seq"] > first["ledger_seq"] and second["summary"]["control"] == "pause"
            with Session(looped, tag="d") as s:
                s.resume()
            wait_for(lambda: _next_event(lines)["summary"]["control"] == "run", 10, "the resume to be pushed")


def _next_event(lines) -> dict:
    for line in lines:
        if line.startswith("data: "):
            return json.loads(line[len("data: "):])
    raise AssertionError("the event stream ended")


# --- the command ---------------------------------------------------------------------------------------------
def test_the_command_names_a_port_in_use_and_a_folder_that_is_no_repository(looped, tmp_path):
    import socket

    from typer.testing import CliRunner

    from autoresearch.cli import app

    runner = CliRunner()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["dashboard", "-C", str(looped), "--port", str(port)])
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "--port" in result.output
    result = runner.invoke(app, ["dashboard", "-C", str(tmp_path)])
    assert result.exit_code == 2 and "autoresearch.toml" in result.output
