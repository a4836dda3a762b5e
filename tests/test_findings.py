"""What the night found: ablation, transfer, the final branch and summary.md on a toy night whose changes'
contributions are known (tests/findings_toy.py), and the pieces (paired statistics, variants) alone."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import autoresearch
from autoresearch.cli import app
from autoresearch.errors import UserError
from autoresearch.findings import stats
from autoresearch.findings.changes import History, KeptChange
from autoresearch.findings.variants import blob, merge3, without
from autoresearch.loop.gitops import Git
from autoresearch.loop.ledger import Experiment
from autoresearch.runner import sandbox
from autoresearch.vocab import Direction, Kind, Status
from findings_toy import KNOWN, make_findings_repo

NO_SANDBOX = not sandbox.available()


# --- a night, then the findings (shared by the slow tests of this module) ------------------------------------
@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = make_findings_repo(tmp_path_factory.mktemp("night") / "toy")
    session = autoresearch.open(root, tag="n")
    session.run("replay", experiments=4, no_sandbox=NO_SANDBOX)
    session.ablate(seeds=3, no_sandbox=NO_SANDBOX)
    yield session
    session.close()


def _by_description(ablation):
    return {line.change.description: line for line in ablation.lines}


@pytest.mark.slow
def test_ablation_finds_each_kept_changes_known_contribution_and_flags_the_one_that_no_longer_matters(night):
    table = night.ablation()
    lines = _by_description(table)
    assert set(lines) == set(KNOWN)
    for description, known in KNOWN.items():
        p = lines[description].contribution
        assert p is not None and p.n_seeds == 3 and p.n_folds == 2 and p.se > 0
        assert p.low <= known <= p.high, f"{description}: {p.text()} does not cover {known}"
    assert lines["LR 1e-2 -> 1e-3"].verdict == stats.MATTERS
    assert lines["width at least 32 in code"].verdict == stats.MATTERS
    assert lines["WIDTH 4 -> 16"].verdict == stats.NO_LONGER
    # the order-of-keeping path beside it: WIDTH gained about 0.53 when kept, nothing at the champion
    assert lines["WIDTH 4 -> 16"].change.gain == pytest.approx(0.528, abs=0.02)
    assert all(line.how == "reverted from the champion" for line in lines.values())
    # the champion re-measured with the same seeds, which are none of the loop's
    assert len(table.champion_rows) == 3 and len(set(table.seeds)) == 3
    assert night.config.run.seed not in table.seeds


@pytest.mark.slow
def test_findings_rows_have_their_own_kind_name_their_variant_and_stay_out_of_results_tsv(night, tmp_path):
    rows = night.ledger.rows(tag="n", kinds=(Kind.ABLATION,))
    assert len(rows) == 4 * 3 and all(r.status == Status.KEEP for r in rows)
    champion = night.champion()
    assert {r.parent_commit for r in rows} == {champion.commit}
    variants = {r.meta["findings"]["variant"] for r in rows}
    assert variants == {"champion", "without #1", "without #3", "without #4"}
    without_lr = next(r for r in rows if r.meta["findings"]["variant"] == "without #1")
    assert "LR = 0.01" in Git(night.root).show(without_lr.candidate_commit, "train.py")
    assert night.champion().number == 4            # findings rows never become the champion
    tsv = night.ledger.export_tsv(tmp_path / "results.tsv", tag="n", metric_name="val_bpb")
    assert len(tsv.read_text().splitlines()) == 1 + len(night.rows())


@pytest.mark.slow
def test_ablate_again_reuses_finished_runs_and_redoes_one_a_kill_left_running(night):
    from autoresearch.findings.measure import fresh_seeds

    before = night.ledger.rows(tag="n", kinds=(Kind.ABLATION,))
    night.ablate(seeds=3, no_sandbox=NO_SANDBOX)
    assert len(night.ledger.rows(tag="n", kinds=(Kind.ABLATION,))) == len(before)
    # a kill -9 after a fourth seed's row was started: the row stays running
    fourth = fresh_seeds(night.config, 4)[-1]
    model = next(r for r in before if r.meta["findings"]["variant"] == "without #3")
    victim = night.ledger.start(tag="n", kind=Kind.ABLATION, parent_commit=model.parent_commit,
                                candidate_commit=model.candidate_commit, description="killed",
                                meta_json={"findings": {**model.meta["findings"], "seed": fourth}})
    table = night.ablate(seeds=4, no_sandbox=NO_SANDBOX)
    after = night.ledger.rows(tag="n", kinds=(Kind.ABLATION,))
    assert night.ledger.get(victim).status == Status.INTERRUPTED
    assert len(after) == len(before) + 1 + 4            # the killed row, then the fourth seed of four variants
    assert all(line.contribution.n_seeds == 4 for line in table.lines)


@pytest.mark.slow
def test_the_final_branch_applied_to_the_baseline_gives_the_champions_tree(night):
    final, summary = night.finalize()
    git = Git(night.root)
    base, champion = night.kept_changes().baseline.commit, night.champion().commit
    log = git("log", "--format=%H %s", f"{base}..{final.branch}").splitlines()
    assert [line.split(" ", 1)[1] for line in reversed(log)] == list(KNOWN)
    # replay the branch's commits onto the baseline in a scratch clone: the champion's tree but the scratchpad
    scratch = night.root.parent / "replay"
    subprocess.run(["git", "clone", "-q", str(night.root), str(scratch)], check=True)
    env = {**os.environ, "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "checkout", "-q", base], cwd=scratch, check=True)
    for sha in reversed([line.split()[0] for line in log]):
        subprocess.run(["git", "cherry-pick", sha], cwd=scratch, check=True, env=env, capture_output=True)
    differ = subprocess.run(["git", "diff", "--name-only", "HEAD", champion], cwd=scratch, check=True,
                            capture_output=True, text=True).stdout.split()
    assert differ == ["scratchpad.md"]
    assert git.show(final.branch, "scratchpad.md") == git.show(base, "scratchpad.md")
    # each message carries its evidence
    message = git.message(final.commits[1][0])
    assert message.startswith("WIDTH 4 -> 16\n\nKept in experiment 3")
    assert "gain +0.5" in message and "Ablation at champion 4" in message and "no longer matters" in message
    assert "Changed: WIDTH=16 (was 4)" in message and "refs/autoresearch/archive/3" in message
    # built again from the same records: the same commits
    again, _ = night.finalize()
    assert again.head == final.head and again.replaced is None
    text = summary.read_text()
    assert "## What worked" in text and "no longer matters" in text and "| LR | 1 | 1 discard |" in text
    assert "## Ablation" in text and "## Lessons in the scratchpad" in text and "autoresearch/n-final" in text


@pytest.mark.slow
def test_transfer_to_an_overridden_constant_measures_what_is_left_of_the_gain(night):
    t = night.transfer(seeds=2, overrides={"LR": 0.01}, each=True, no_sandbox=NO_SANDBOX)
    # LR is reset to the baseline's everywhere: only the width changes remain, worth (4 - 32)^2 / 1000
    assert t.gain.low <= 0.784 <= t.gain.high and t.verdict == "holds"
    assert t.tuned_gain == pytest.approx(1.784, abs=0.03)
    assert any("overrides LR" in w and "#1" in w for w in t.warnings)
    by_name = {line.name: line for line in t.lines}
    assert by_name["without #1"].verdict == stats.NO_LONGER     # its LR is overridden anyway
    assert by_name["without #4"].vs.low <= 0.256 <= by_name["without #4"].vs.high
    assert t in night.transfers() or any(x.setting == t.setting for x in night.transfers())


@pytest.mark.slow
def test_transfer_with_fresh_seeds_only_reuses_the_champion_runs_of_the_ablation(night):
    champion_runs = len([r for r in night.ledger.rows(tag="n", kinds=(Kind.ABLATION, Kind.TRANSFER))])
    t = night.transfer(seeds=3, no_sandbox=NO_SANDBOX)
    added = night.ledger.rows(tag="n", kinds=(Kind.TRANSFER,))
    new = [r for r in added if r.meta["findings"]["setting"] == ""]
    assert {r.meta["findings"]["variant"] for r in new} == {"baseline"} and len(new) == 3
    assert t.setting == "" and t.gain.low <= 1.784 <= t.gain.high
    assert len(night.ledger.rows(tag="n", kinds=(Kind.ABLATION, Kind.TRANSFER))) == champion_runs + 3


@pytest.mark.slow
def test_the_cli_prints_the_ablation_and_the_final_branch(night):
    runner = CliRunner()
    args = ["-C", str(night.root), "--tag", "n"] + (["--no-sandbox"] if NO_SANDBOX else [])
    out = runner.invoke(app, ["ablate", *args])
    assert out.exit_code == 0, out.output
    assert "no longer matters" in out.output and "#3 WIDTH 4 -> 16" in out.output
    out = runner.invoke(app, ["transfer", *args, "--set", "LR=0.01", "--seeds", "2"])
    assert out.exit_code == 0, out.output
    assert "holds" in out.output and "overrides LR" in out.output
    out = runner.invoke(app, ["finalize", "-C", str(night.root), "--tag", "n"])
    assert out.exit_code == 0, out.output
    assert "autoresearch/n-final: 3 commit(s)" in out.output and "summary.md" in out.output


# --- the pieces ----------------------------------------------------------------------------------------------
def test_a_paired_gain_has_the_standard_error_of_its_per_seed_differences():
    champion = {1: [1.0, 2.0], 2: [1.1, 2.1], 3: [0.9, 1.9]}
    variant = {1: [1.5, 2.5], 2: [1.5, 2.7], 3: [1.5, 2.4]}
    p = stats.paired(champion, variant, Direction.MINIMIZE)
    seed_gains = [0.5, 0.5, 0.55]
    assert p.gain == pytest.approx(sum(seed_gains) / 3)
    assert p.seed_gains == pytest.approx(seed_gains)
    sd = math.sqrt(sum((g - p.gain) ** 2 for g in seed_gains) / 2)
    assert p.se >= sd / math.sqrt(3) - 1e-12 and p.n_seeds == 3 and p.n_folds == 2
    assert p.dof in (2, 4)      # the per-seed estimate (S - 1) or the within-fold one (K(S - 1)), the larger
    t = stats.t975(p.dof)
    assert p.low == pytest.approx(p.gain - t * p.se) and p.high == pytest.approx(p.gain + t * p.se)
    # higher is better: the same numbers read the other way round
    assert stats.paired(champion, variant, Direction.MAXIMIZE).gain == pytest.approx(-p.gain)


def test_one_seed_falls_back_to_the_fold_differences_and_unpaired_seeds_are_left_out():
    p = stats.paired({1: [1.0, 2.0, 3.0], 2: [9.0, 9.0, 9.0]}, {1: [1.5, 2.4, 3.7], 5: [0, 0, 0]}, "minimize")
    assert p.n_seeds == 1 and p.dof == 2 and "rough" in p.source
    assert p.gain == pytest.approx(0.5333333)
    assert stats.paired({1: [math.nan]}, {1: [1.0]}, "minimize") is None


@pytest.mark.parametrize("gain, se, verdict", [(1.0, 0.1, stats.MATTERS), (0.15, 0.1, stats.NO_LONGER),
                                               (-0.15, 0.1, stats.NO_LONGER), (-0.5, 0.1, stats.HURTS)])
def test_a_contribution_is_judged_with_the_loops_own_bar(gain, se, verdict):
    p = stats.Paired(gain=gain, se=se, dof=2, n_seeds=3, n_folds=2, source="")
    assert stats.verdict(p, k=2.0, min_delta=0.0) == verdict


def test_student_t_quantiles():
    assert stats.t975(1) == 12.706 and stats.t975(30) == 2.042 and stats.t975(100) == 1.96
    assert math.isnan(stats.t975(0))


# --- variants, on a hand-made history -----------------------------------------------------------------------
SOURCE = "LR = 0.01  # learning rate\nWIDTH = 4  # width\nDEPTH = 2\n\nprint(LR * WIDTH)\n"


def _repo(tmp_path: Path) -> tuple[Git, list[str]]:
    """A repository with a baseline and three commits changing train.py (each the next one's parent)."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    root = tmp_path / "r"
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    commits = []
    texts = [SOURCE, SOURCE.replace("LR = 0.01", "LR = 0.001"),                      # 1: LR
             SOURCE.replace("LR = 0.01", "LR = 0.001").replace("WIDTH = 4", "WIDTH = 8"),   # 2: WIDTH (next line)
             SOURCE.replace("LR = 0.01", "LR = 0.0003").replace("WIDTH = 4", "WIDTH = 8")]  # 3: LR again
    for i, text in enumerate(texts):
        (root / "train.py").write_text(text)
        (root / "scratchpad.md").write_text(f"notes {i}\n")
        subprocess.run(["git", "add", "-A"], cwd=root, check=True)
        subprocess.run(["git", "commit", "-qm", f"c{i}"], cwd=root, check=True, env=env)
        commits.append(subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                                      text=True).stdout.strip())
    return Git(root), commits


def _history(commits: list[str], upto: int) -> History:
    changes = [KeptChange(number=i, description=f"c{i}", parent=commits[i - 1], commit=commits[i], paths=("train.py",),
                          changed="", mean=None, prev=None, gain=None, sd=None, threshold=None, confirm_runs=[],
                          reason="", hypothesis="", phase_title="") for i in range(1, upto + 1)]
    return History(baseline=Experiment(0, commit=commits[0]), champion=Experiment(upto, commit=commits[upto]),
                   changes=changes, scratchpad="scratchpad.md")


def test_a_constant_change_is_reverted_even_when_its_neighbour_line_changed_later(tmp_path):
    git, commits = _repo(tmp_path)
    hist = _history(commits, 2)
    v = without(git, hist, hist.changes[0])         # LR back to 0.01; WIDTH = 8 (the next line) stays
    assert v.how == "reverted from the champion"
    text = git.show(v.commit, "train.py")
    assert "LR = 0.01  # learning rate" in text and "WIDTH = 8" in text
    assert git.show(v.commit, "scratchpad.md") == "notes 0\n"     # the baseline's: the code alone decides


def test_a_change_whose_constant_was_changed_again_is_replayed_or_reported_entangled(tmp_path):
    git, commits = _repo(tmp_path)
    hist = _history(commits, 3)
    first = without(git, hist, hist.changes[0])     # change 3 set LR again: no revert, and no replay either
    assert first.commit is None and first.how == "entangled" and "LR was changed again later" in first.why
    second = without(git, hist, hist.changes[1])    # WIDTH alone: reverted, LR stays 0.0003
    assert second.how == "reverted from the champion"
    assert "LR = 0.0003" in git.show(second.commit, "train.py") and "WIDTH = 4" in git.show(second.commit, "train.py")


def test_a_three_way_merge_applies_a_text_change_or_says_its_lines_changed_again():
    ours, base, theirs = b"a\nb\nc\n", b"a\nB\nc\n", b"a\nb\nc\n"
    assert merge3("f.txt", b"a\nB\nc\nd\n", base, theirs, None) == b"a\nb\nc\nd\n"   # clean 3-way
    with pytest.raises(Exception, match="changed again later"):
        merge3("f.txt", b"a\nX\nc\n", base, theirs, None)
    assert merge3("f.txt", ours, base, base, None) == ours


def test_a_missing_file_of_a_commit_reads_as_none(tmp_path):
    git, commits = _repo(tmp_path)
    assert blob(git, commits[0], "missing.py") is None and blob(git, commits[1], "train.py").startswith(b"LR = 0.001")


def test_ablate_without_a_night_says_what_to_do(tmp_path):
    root = make_findings_repo(tmp_path / "toy")
    with pytest.raises(UserError, match="no measured baseline"):
        autoresearch.open(root, tag="x").ablate()


@pytest.mark.slow
def test_ablate_and_transfer_refuse_a_night_that_kept_nothing(tmp_path):
    root = make_findings_repo(tmp_path / "toy")
    (root / "queue.toml").write_text('[[experiment]]\ndescription = "LR 1e-1"\nset = { LR = 0.1 }\n')
    subprocess.run(["git", "commit", "-qam", "one bad idea"], cwd=root, check=True, env={
        **os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t"})
    with autoresearch.open(root, tag="x") as s:
        s.run("replay", experiments=1, no_sandbox=NO_SANDBOX)
        for action in (s.ablate, s.transfer):
            with pytest.raises(UserError, match="no kept change"):
                action()
        final, summary = s.finalize()
        assert final.commits == [] and final.head == s.kept_changes().baseline.commit
        assert "No change was kept" in summary.read_text()


# --- where the findings are shown ---------------------------------------------------------------------------
@pytest.mark.slow
def test_the_report_shows_the_ablation_table_and_its_picture(night):
    page = night.report().read_text()
    assert "Ablation: what still matters" in page and "no longer matters (candidate for removal)" in page
    assert "contribution of each kept change" in page          # the bars, embedded
    png = night.root / "report" / "ablation.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    night.transfer(seeds=2, overrides={"LR": 0.01}, no_sandbox=NO_SANDBOX)      # reused: nothing runs
    assert "Transfer: does the gain hold?" in night.report().read_text()


@pytest.mark.slow
def test_the_dashboard_serves_the_tables_as_json_and_draws_them_as_text(night):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from autoresearch.dashboard.app import create_app
    from autoresearch.dashboard.security import Guard

    app = create_app(night.root, tag="n", guard=Guard.for_bind("127.0.0.1", 8765, None), poll_s=0.1)
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        data = c.get("/api/findings").json()
    verdicts = {cell["change"]: cell["verdict"] for cell in data["ablation"]["cells"]}
    assert verdicts["#3 WIDTH 4 -> 16"] == stats.NO_LONGER
    assert data["ablation"]["lines"][0]["contribution"]["se"] > 0
    assert any(t["setting"] == "LR=0.01" and t["verdict"] == "holds" for t in data["transfers"])
    chromium = Path("/usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not chromium.is_file():
        pytest.skip("chromium is not installed")
    from dashboard_fixtures import Server

    errors: list[str] = []
    with Server(night.root, "n") as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/#/findings")
            page.wait_for_selector("#ablation tbody tr")
            text = page.inner_text("#ablation")
            assert "no longer matters" in text and "WIDTH 4 -> 16" in text
            assert "holds" in page.inner_text("#view")
        finally:
            browser.close()
    assert not errors


@pytest.mark.slow
def test_seeds_run_side_by_side_with_parallel_slots(night):
    t = night.transfer(seeds=2, overrides={"SLEEP": 0.0}, parallel=2, no_sandbox=NO_SANDBOX)
    assert t.setting == "SLEEP=0.0" and t.verdict == "holds"
    rows = [r for r in night.ledger.rows(tag="n", kinds=(Kind.TRANSFER,)) if r.meta["findings"]["setting"] == t.setting]
    assert len(rows) == 4 and all(r.status == Status.KEEP for r in rows)


def test_a_preset_sets_its_constants_and_limits_only_on_data_made_for_it(tmp_path):
    import json

    from autoresearch.config import Config
    from autoresearch.tasks.eclip import TASK as ECLIP
    from autoresearch.tasks.eclip import presets

    config = Config(root=tmp_path)
    (config.state_dir / "prepared").mkdir(parents=True)
    (config.state_dir / "prepared" / "meta.json").write_text(json.dumps(presets.data_settings("cpu")))
    constants, limits = ECLIP.preset(config, "cpu")
    assert constants["STEPS"] == 400 and constants["VIT_WIDTH"] == 96 and "PRETRAINED_IMAGE" not in constants
    assert limits == {"time_budget_s": 60.0, "timeout_s": 180.0, "memory_gb": 4.0}
    with pytest.raises(UserError, match="made for the 'cpu' preset") as err:
        ECLIP.preset(config, "seed")
    assert "--data" in err.value.hint


def test_a_setting_names_what_it_changes_and_refuses_data_of_another_kind(tmp_path):
    from autoresearch import config as config_mod
    from autoresearch.findings.transfer import Setting, configure, parse_overrides

    assert parse_overrides(["STEPS=800", "LR=3e-4", "NAME=adamw"]) == {"STEPS": 800, "LR": 0.0003, "NAME": "adamw"}
    with pytest.raises(UserError, match="NAME=VALUE"):
        parse_overrides(["steps=800"])
    assert Setting({"STEPS": 800}, preset="seed").key == "STEPS=800; preset=seed" and Setting().key == ""
    root = make_findings_repo(tmp_path / "a")
    other = make_findings_repo(tmp_path / "b")
    cfg = config_mod.load(root)
    with pytest.raises(UserError, match="no prepared data"):
        configure(cfg, None, overrides={}, preset=None, data=other)
    with pytest.raises(UserError, match="no size presets"):
        autoresearch.open(root).task.preset(cfg, "seed")


@pytest.mark.slow
def test_code_that_fails_under_a_setting_is_the_transfers_verdict(night):
    t = night.transfer(seeds=1, overrides={"LR": 0}, no_sandbox=NO_SANDBOX)      # log10(0): every variant crashes
    assert t.gain is None and t.verdict.startswith("the baseline fails there (crash")
    assert {line.name: bool(line.failed) for line in t.lines} == {"baseline": True, "champion": True}
