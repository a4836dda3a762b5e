"""Progress lines into curves, the abort rule, and an aborted run in the runner and in the loop."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import pytest

from autoresearch import config as config_mod
from autoresearch.runner.curves import AbortRule, AbortWatch, Point, curve_from_log, parse_progress, points_from_dicts
from autoresearch.runner.spec import ExitKind, RunSpec
from autoresearch.runner.process import run_spec
from toyrepo import DIVERGE, make_toy_repo


def test_progress_lines_are_parsed():
    p = parse_progress("step   50/400  loss 3.1234  temperature 14.286  lr 2.98e-04  elapsed 12.3s")
    assert p == Point(50, 400, {"loss": 3.1234, "temperature": 14.286, "lr": 2.98e-4, "elapsed": 12.3})
    assert parse_progress("step 1/2 loss 1.000") == Point(1, 2, {"loss": 1.0})
    nan = parse_progress("Step: 3/10 loss=nan acc: 50% grad_norm=inf")
    assert nan.step == 3 and math.isnan(nan.values["loss"]) and nan.values["acc"] == 50
    assert nan.values["grad_norm"] == math.inf
    assert parse_progress("val_bpb: 1.23") is None
    assert parse_progress("train 0: 360 items, 0.52M parameters") is None
    assert parse_progress("step 5/10") == Point(5, 10, {})


def test_curve_from_log_skips_the_runners_lines(tmp_path):
    log = tmp_path / "fold0.log"
    log.write_text("# autoresearch run fold0: step 1/1 loss 9\nstep 1/4 loss 2.0\nnoise\nstep 2/4 loss 1.5\n"
                   "# outcome: ok\n")
    assert curve_from_log(log) == [Point(1, 4, {"loss": 2.0}), Point(2, 4, {"loss": 1.5})]
    assert curve_from_log(tmp_path / "missing.log") == []
    stored = [p.to_dict() for p in curve_from_log(log)] + [{"step": 3, "total": 4, "loss": None}, "junk"]
    back = points_from_dicts(stored)
    assert back[:2] == curve_from_log(log) and math.isnan(back[2].values["loss"])


CHAMPION = [Point(s, 400, {"loss": v}) for s, v in ((50, 4.0), (100, 3.0), (200, 2.0), (400, 1.0))]


def test_champion_value_is_interpolated_never_extrapolated():
    rule = AbortRule.against(CHAMPION)
    assert rule.champion_at(100) == 3.0 and rule.champion_at(150) == 2.5 and rule.champion_at(300) == 1.5
    assert rule.champion_at(10) is None and rule.champion_at(800) is None


def _feed(rule, values, total=400):
    watch = AbortWatch(rule)
    for step, value in values:
        if reason := watch.feed(Point(step, total, {"loss": value})):
            return step, reason, watch
    return None, "", watch


def test_nan_or_inf_aborts_at_once_even_without_a_champion():
    step, reason, _ = _feed(AbortRule(), [(10, 5.0), (20, math.nan)])
    assert step == 20 and reason == "loss is nan at step 20/400"
    step, _, _ = _feed(AbortRule(), [(10, math.inf)])
    assert step == 10


def test_far_worse_for_long_enough_aborts_and_a_dip_resets_patience():
    rule = AbortRule.against(CHAMPION, ratio=1.5, patience=2, min_fraction=0.25)
    # 100 is the first step at 25%; 50 is too early to count even at 10x
    step, reason, watch = _feed(rule, [(50, 40.0), (100, 4.6), (200, 3.1)])
    assert step == 200 and "1.55x the champion's 2 at the same step" in reason
    assert [c["step"] for c in watch.compared] == [100, 200]
    step, _, _ = _feed(rule, [(100, 4.6), (200, 2.9), (300, 2.3), (400, 1.6)])   # 1.45x at 200 resets it
    assert step == 400
    assert _feed(rule, [(100, 4.6), (200, 2.9), (300, 2.2), (400, 1.4)])[0] is None
    # no champion value at that step (beyond its curve, or not positive): nothing is compared
    assert _feed(rule, [(500, 99.0), (600, 99.0)], total=800)[0] is None
    assert _feed(AbortRule.against(CHAMPION, patience=1), [(200, -1.0)])[0] is None


def test_a_run_that_stops_making_progress_aborts_and_a_shifted_loss_does_not():
    """min_progress compares how far each run came since its first line, not where it stands: a run stuck
    at its starting loss is stopped; one whose loss sits higher (label smoothing, a larger batch) but falls
    at the champion's pace is not, and neither is a slower start that catches up."""
    rule = AbortRule.against(CHAMPION, ratio=3, patience=2, min_fraction=0.25, min_progress=0.1)
    stuck = [(50, 3.9), (100, 3.95), (200, 3.88), (300, 3.9)]      # the champion: 4 at 50, 3 at 100, 2 at 200
    step, reason, watch = _feed(rule, stuck)
    assert step == 200 and "went from 3.9 to 3.88 by step 200/400, 0.01 of the champion's progress" in reason
    assert [c["progress"] for c in watch.compared] == [-0.05, 0.01]
    shifted = [(s, v + 0.9) for s, v in ((50, 4.0), (100, 3.0), (200, 2.0), (300, 1.5), (400, 1.0))]
    assert _feed(rule, shifted)[0] is None                           # up to 1.9x the champion, progress 1.0
    slow_start = [(50, 4.0), (100, 3.95), (200, 2.3), (300, 1.6)]     # one strike at 100, then it caught up
    assert _feed(rule, slow_start)[0] is None
    off = AbortRule.against(CHAMPION, ratio=3, patience=2, min_fraction=0.25)      # min_progress 0: off
    assert _feed(off, stuck)[0] is None and all("progress" not in c for c in _feed(off, stuck)[2].compared)
    both = AbortRule.against(CHAMPION, ratio=1.5, patience=2, min_fraction=0.25, min_progress=0.1)
    reason = _feed(both, stuck)[1]                                   # both rules fire: the reason names both
    assert "1.94x the champion's 2" in reason and "0.01 of the champion's progress" in reason
    flat = AbortRule.against([Point(s, 400, {"loss": 2.0}) for s in (50, 100, 200, 300)], ratio=3,
                             min_progress=0.5, patience=1)          # a champion that never moved: no progress to compare
    assert all("progress" not in c for c in _feed(flat, stuck)[2].compared) and _feed(flat, stuck)[0] is None


def _spec(tmp_path: Path, body: str, rule: AbortRule | None) -> RunSpec:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(body))
    return RunSpec(name="fold0", command=(sys.executable, str(script)), cwd=tmp_path, env={},
                   out_dir=tmp_path / "out", log_path=tmp_path / "fold0.log", timeout_s=120, grace_s=1,
                   sandbox=False, abort=rule)


DIVERGING = """
    import time
    for step in range(1, 1000):
        print(f"step {step * 100}/1000 loss {float(step * 10)}", flush=True)
        time.sleep(0.2)
"""


def test_the_runner_stops_a_doomed_run_like_a_deadline(tmp_path):
    champion = [Point(s, 1000, {"loss": 1.0}) for s in range(100, 1001, 100)]
    spec = _spec(tmp_path, DIVERGING, AbortRule.against(champion, ratio=1.5, patience=2, min_fraction=0.25))
    out = run_spec(spec)
    assert out.kind is ExitKind.ABORTED and out.reason.startswith("stopped early: loss 40 at step 400/1000")
    assert "exited on SIGTERM" in out.reason
    assert out.extra["last_step"] >= 400 and out.extra["total_steps"] == 1000   # lines read with it may follow
    assert out.extra["abort"]["champion"][:2] == [[100, 1.0], [200, 1.0]]
    assert [c["step"] for c in out.extra["abort"]["compared"]] == [300, 400]
    assert "# outcome: aborted" in spec.log_path.read_text()


def test_without_a_rule_the_same_run_is_not_stopped(tmp_path):
    spec = _spec(tmp_path, "print('step 1/2 loss nan', flush=True)\nprint('step 2/2 loss nan')\n", None)
    out = run_spec(spec)
    assert out.kind is ExitKind.OK and len(out.extra["curve"]) == 2 and "abort" not in out.extra


def test_abort_settings_are_validated_naming_the_key():
    base = {"metric": {"pattern": "(x)"}}
    cfg = config_mod.parse(Path("/tmp"), {**base, "abort": {"ratio": 3, "patience": 4, "min_fraction": 0.5,
                                                            "min_progress": 0}})
    assert (cfg.abort.ratio, cfg.abort.patience, cfg.abort.min_fraction, cfg.abort.min_progress) == (3.0, 4, 0.5, 0)
    assert config_mod.parse(Path("/tmp"), base).abort.min_progress == 0.1
    for bad, key in (({"ratio": 1.0}, "ratio"), ({"patience": 0}, "patience"), ({"min_fraction": 1.5}, "min_fraction"),
                     ({"min_progress": -0.1}, "min_progress"), ({"min_progress": 2}, "min_progress"),
                     ({"key": "two words"}, "key"), ({"enabled": "yes"}, "enabled"), ({"pateince": 2}, "pateince")):
        with pytest.raises(Exception, match=rf"\[abort\] {key}"):
            config_mod.parse(Path("/tmp"), {**base, "abort": bad})
    with pytest.raises(Exception, match=r"\[contention\] pause_max_s"):
        config_mod.parse(Path("/tmp"), {**base, "contention": {"pause_s": 10, "pause_max_s": 5}})


# --- in the loop -------------------------------------------------------------------------------------------

LOOP_QUEUE = DIVERGE + """
[[experiment]]
description = "nan at the first step"
[[experiment.replace]]
file = "train.py"
old = 'loss {1.0 / step:.3f}", flush=True)'
new = '''loss nan", flush=True)
    time.sleep(60)'''

[[experiment]]
description = "LR 1e-2 -> 1e-3"
set = { LR = 0.001 }
"""


def _replay_engine(config):
    """An engine over a toy repository with the replay agent (its queue), unsandboxed, tag "t"."""
    from autoresearch.agents import make_agent
    from autoresearch.agents.base import AgentContext
    from autoresearch.loop.engine import Engine, open_ledger

    context = AgentContext(root=config.root, editable=["train.py", "scratchpad.md"], denied=[config.state_dir])
    engine = Engine(config, tag="t", sandbox=False, ledger=open_ledger(config))
    engine.agent = make_agent("replay", config, context, tag="t")
    return engine


@pytest.mark.slow
def test_an_aborted_candidate_is_recorded_with_its_evidence_and_briefed(tmp_path):
    root = make_toy_repo(tmp_path / "toy", rule="greedy", queue=LOOP_QUEUE)
    config = config_mod.load(root)
    assert config.run.folds == 2 and config.loop.max_crash_fixes == 1
    engine = _replay_engine(config)
    assert "nothing more" in engine.run().why
    rows = [r for r in engine.ledger.rows(tag="t") if r.kind == "experiment"]
    assert [(r.description, r.status, r.attempt) for r in rows] == [
        ("diverge", "aborted", 1), ("nan at the first step", "aborted", 1), ("LR 1e-2 -> 1e-3", "keep", 1)]
    diverge, nan = rows[0], rows[1]
    found = diverge.decision["abort"]
    assert found["fold"] == 0 and found["key"] == "loss"
    assert found["candidate"] == [[1, 10.0], [2, 5.0]] and found["champion"] == [[1, 1.0], [2, 0.5]]
    assert "10.00x the champion's" in diverge.reason
    # A NaN at the first step is caught by the smoke test, before any fold runs.
    assert nan.reason.startswith("smoke test: stopped early: loss is nan at step 1/2")
    nan_dir = config.state_dir / "runs" / f"{nan.number:04d}"
    assert (nan_dir / "smoke.log").is_file() and not (nan_dir / "fold0.log").exists() and nan.failed
    run_dir = config.state_dir / "runs" / f"{diverge.number:04d}"   # the later fold of an aborted candidate never ran
    assert (run_dir / "fold0.log").is_file() and not (run_dir / "fold1.log").exists()
    assert [r["fold"] for r in diverge.decision["runs"]] == [0] and diverge.failed
    # aborted counts as a spent experiment (unlike contention) and is not a crash to fix
    assert len(engine.finished()) == 3
    assert any("stopped early" in h.reason for h in engine.brief(engine.phase()[0]).history)


@pytest.mark.slow
def test_the_next_brief_says_why_a_candidate_was_aborted(tmp_path):
    root = make_toy_repo(tmp_path / "toy", rule="greedy", queue=LOOP_QUEUE)
    config = config_mod.load(root)
    engine = _replay_engine(config)
    engine.run(max_experiments=1)
    note = [n for n in engine.notes if "stopped early" in n]
    assert len(note) == 1 and note[0].startswith("experiment 1 was stopped early at fold 0 and discarded")
    assert "its 1 later fold(s) were not run" in note[0]
    assert "stopped early" in engine.brief(engine.phase()[0]).render()


def test_the_default_rule_on_the_recorded_curves_stops_no_kept_candidate():
    """The recorded eCLIP curves (benchmarks/data/curves) replayed through the default [abort]: no kept
    candidate is stopped, and the collapsed runs (learning rates of 1e-2 and 1.0) are."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import early_abort

    runs, candidates = early_abort.load(early_abort.DATA)
    d = config_mod.AbortSection()
    res = early_abort.evaluate(runs, candidates, d.ratio, d.min_progress, d.patience, d.min_fraction)
    assert res["n_kept"] >= 10 and res["false"] == []
    stopped = {r.description for r in res["hits"]}
    assert {"LR 3e-4 -> 1e-2", "LR 3e-4 -> 1.0"} <= stopped and res["saved_steps"] > 0.1


FOLD_QUEUE = """
[[experiment]]
description = "evaluate worse (training unchanged)"
[[experiment.replace]]
file = "train.py"
old = 'print(f"val_bpb: {val:.6f}")'
new = 'print(f"val_bpb: {val + 5.0:.6f}")'

[[experiment]]
description = "LR 1e-2 -> 1e-3"
set = { LR = 0.001 }
"""


@pytest.mark.slow
def test_a_fold_far_worse_than_the_champions_stops_the_later_folds(tmp_path):
    """[abort] fold_margin: a candidate whose training curve is the champion's but whose first fold scores
    far worse is stopped after that fold, recorded as aborted with both scores, and briefed; a better one
    runs every fold and is decided as usual."""
    import subprocess

    root = make_toy_repo(tmp_path / "toy", rule="greedy", queue=FOLD_QUEUE)
    with open(root / "autoresearch.toml", "a", encoding="utf-8") as fh:
        fh.write("\n[abort]\nfold_margin = 0.5\n")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "fold rule"], cwd=root,
                   check=True)
    config = config_mod.load(root)
    assert config.abort.fold_margin == 0.5 and config.run.folds == 2
    engine = _replay_engine(config)
    assert "nothing more" in engine.run().why
    worse, better = [r for r in engine.ledger.rows(tag="t") if r.kind == "experiment"]
    assert (worse.status, better.status) == ("aborted", "keep")
    found = worse.decision["abort"]
    assert found["kind"] == "fold" and found["fold"] == 0 and found["not_run"] == [1]
    assert found["value"] == pytest.approx(found["champion"] + 5.0, abs=0.1) and found["worse"] > 1.5
    assert worse.reason.startswith("fold0: stopped after this fold: val_bpb") and "not run" in worse.reason
    assert worse.metric_mean is None and len(worse.folds) == 1 and worse.failed   # a part is no metric
    from autoresearch.runviews import result_text
    assert result_text(worse).startswith("stopped after fold 0 (scored ")     # how `status` shows it
    run_dir = config.state_dir / "runs" / f"{worse.number:04d}"
    assert (run_dir / "fold0.log").is_file() and not (run_dir / "fold1.log").exists()
    assert len(better.folds) == 2 and better.metric_mean is not None
    assert any("stopped after this fold" in h.reason for h in engine.brief(engine.phase()[0]).history)
    from autoresearch.loop import abort as abort_mod
    assert abort_mod.note(worse.number, found, 2).startswith(
        f"experiment {worse.number} was stopped after fold 0 and discarded: val_bpb")


def test_the_fold_rule_follows_the_metric_direction_and_can_be_off():
    from autoresearch.loop.evidence import fold_margin as fold_stop

    def cfg(direction, **abort):
        return config_mod.parse(Path("/tmp"), {"metric": {"pattern": "(x)", "direction": direction, "name": "m"},
                                               "abort": abort})

    low, high = cfg("minimize", fold_margin=0.25), cfg("maximize", fold_margin=0.25)
    assert fold_stop(low, 0, 130.0, {0: 100.0})["worse"] == 0.3
    assert fold_stop(low, 0, 120.0, {0: 100.0}) is None and fold_stop(low, 0, 50.0, {0: 100.0}) is None
    assert fold_stop(high, 0, 0.5, {0: 0.8})["reason"].startswith("m 0.5 against the champion's 0.8")
    assert fold_stop(high, 0, 0.9, {0: 0.8}) is None
    assert fold_stop(low, 1, 130.0, {0: 100.0}) is None          # no champion score for that fold
    assert fold_stop(low, 0, math.nan, {0: 100.0}) is None
    assert fold_stop(cfg("minimize"), 0, 1e9, {0: 100.0}) is None            # off by default
    assert fold_stop(cfg("minimize", fold_margin=0.1), 0, 111.0, {0: 100.0})["margin"] == 0.1
    assert fold_stop(cfg("minimize", fold_margin=0.25, enabled=False), 0, 1e9, {0: 100.0}) is None