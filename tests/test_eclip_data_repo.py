"""Preparing a research repository's data safely: the atomic swap, what `init` and `data prepare` print, and
their data options and errors through the command line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # trains for real or runs whole loops: deselect with -m 'not slow'
from typer.testing import CliRunner

from autoresearch import config as config_mod
from autoresearch.cli import app
from autoresearch.loop import fingerprints
from autoresearch.session import create
from autoresearch.tasks.eclip import preset_of, presets
from autoresearch.tasks.eclip.template.eclip import io as eclip_io
from autoresearch.tasks.eclip.template.eclip import staging
from autoresearch.tasks.eclip.template.eclip.ukiyoe import SPLIT_FILES
from ukiyoe_raw import hand_vocab, handwritten_copy

runner = CliRunner()


def _tree(state: Path) -> dict[str, str]:
    """sha256 of every file under prepared/ and secret/, by relative path."""
    return {str(p.relative_to(state)): hashlib.sha256(p.read_bytes()).hexdigest()
            for part in staging.PARTS for p in sorted((state / part).rglob("*")) if p.is_file()}


@pytest.fixture
def repo(tmp_path):
    dest = tmp_path / "repo"
    create("eclip", dest, n=200, say=lambda s: None)
    return dest


def test_a_failing_prepare_leaves_the_previous_data_and_keys_untouched(repo):
    state = repo / ".autoresearch"
    before = _tree(state)
    assert {"secret/keys/test.json", "secret/queries_test.pt", "prepared/meta.json"} <= set(before)
    # the last test image (prepared last, after every fold was written to staging) is corrupt
    bad = state / "raw" / "images" / "ukiyoe_synth_00199.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    result = runner.invoke(app, ["data", "prepare", "-C", str(repo)])
    assert result.exit_code == 2, result.output
    test_file = state / "raw" / SPLIT_FILES["test"]
    assert f"{test_file}:20: {bad}: cannot read image" in result.output
    assert "--missing-images black" in result.output
    assert "run `autoresearch data prepare` again; the previous prepared data is unchanged" in result.output
    assert _tree(state) == before                        # byte for byte, keys and test split included
    assert not (state / staging.STAGING).exists() and not (state / staging.REPLACED).exists()
    config = config_mod.load(repo)
    fingerprints.verify(config)                          # still the recorded state: usable as it is
    meta = eclip_io.load_meta(state / "prepared")
    train = eclip_io.load_train([state / "prepared" / f"chunk_{k}.pt" for k in (1, 2)], meta)
    queries = eclip_io.load_queries(state / "prepared" / "queries" / "fold_0.pt", meta)
    assert len(train) == 120 and len(queries.image_ids) == 60

    # the seed's behaviour on request: the unreadable image becomes black, counted and named
    result = runner.invoke(app, ["data", "prepare", "-C", str(repo), "--missing-images", "black"])
    assert result.exit_code == 0, result.output
    assert f"1 images unreadable, used as black images: {test_file}:20: ukiyoe_synth_00199.jpg" in result.output
    after = _tree(state)
    assert set(after) == set(before)
    assert after["secret/keys/test.json"] != before["secret/keys/test.json"]   # a new blind query set, swapped in whole
    assert json.loads((state / "prepared" / "meta.json").read_text())["counts"]["unreadable_images"] == 1
    fingerprints.verify(config)                          # `data prepare` recorded the new state


def test_an_interrupted_swap_is_finished_and_an_unfinished_staging_discarded(tmp_path):
    state = tmp_path
    for part, text in (("prepared", "old p"), ("secret", "old s")):
        (state / part).mkdir()
        (state / part / "f.txt").write_text(text)

    with pytest.raises(KeyboardInterrupt):               # a preparation cut short: nothing changes
        with staging.staged(state) as sg:
            (sg / "prepared").mkdir()
            (sg / "prepared" / "f.txt").write_text("half")
            raise KeyboardInterrupt
    assert (state / "prepared" / "f.txt").read_text() == "old p" and not (state / staging.STAGING).exists()

    # a crash between the renames: prepared already swapped, secret not yet
    sg, old = state / staging.STAGING, state / staging.REPLACED
    for part in staging.PARTS:
        (sg / part).mkdir(parents=True)
        (sg / part / "f.txt").write_text(f"new {part[0]}")
    (sg / staging.COMPLETE).write_bytes(b"")
    old.mkdir()
    (state / "prepared").rename(old / "prepared")
    (sg / "prepared").rename(state / "prepared")
    assert staging.recover(state) is True
    assert [(state / p / "f.txt").read_text() for p in staging.PARTS] == ["new p", "new s"]
    assert not sg.exists() and not old.exists()

    (sg / "prepared").mkdir(parents=True)                # staging without the marker: discarded
    assert staging.recover(state) is False and not sg.exists()
    assert (state / "secret" / "f.txt").read_text() == "new s"


def test_two_preparations_of_one_repository_exclude_each_other(tmp_path):
    with staging.locked(tmp_path):
        with pytest.raises(staging.BusyError, match="another data preparation is running"):
            with staging.staged(tmp_path):
                pass


def test_init_from_the_seeds_layout_prints_what_was_dropped_and_kept(tmp_path):
    raw = handwritten_copy(tmp_path, layout="seed")
    hand_vocab(raw, tmp_path / "vocab.txt")
    dest = tmp_path / "repo"
    result = runner.invoke(app, ["init", "eclip", str(dest), "--ukiyoe", str(raw), "--vocab", str(tmp_path / "vocab.txt")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "2 train / 1 val / 2 test records (seed layout), 3 folds of 1/1/1" in out
    assert "dropped 1 records as the seed does: 0 without a caption, 1 without regions" in out
    assert "2 reach outside the image" in out
    meta = json.loads((dest / ".autoresearch" / "prepared" / "meta.json").read_text())
    assert meta["layout"] == "seed" and meta["source"] == "ukiyoe"
    # the same files given as two folders, through `data prepare`
    result = runner.invoke(app, ["data", "prepare", "-C", str(dest), "--annotations", str(raw / "annotations"),
                                 "--images", str(raw / "images"), "--vocab", str(tmp_path / "vocab.txt")])
    assert result.exit_code == 0, result.output
    assert "(separate layout)" in result.output and "preset cpu" in result.output


def test_a_failed_init_says_to_run_init_again_and_names_vocab(tmp_path):
    raw = handwritten_copy(tmp_path)
    dest = tmp_path / "repo"
    result = runner.invoke(app, ["init", "eclip", str(dest), "--ukiyoe", str(raw)])
    assert result.exit_code == 2
    assert "fewer than 1000" in result.output and "--vocab PATH" in result.output
    assert "run `autoresearch init` again (nothing was created)" in result.output
    assert "data prepare" not in result.output
    assert not dest.exists() and not (tmp_path / ".repo.partial").exists()


def test_data_options_are_checked_with_clear_messages(tmp_path):
    result = runner.invoke(app, ["data", "synth", str(tmp_path / "s"), "--n", "5"])
    assert result.exit_code == 2 and "--n 5: need at least 10 images" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "s").exists()
    result = runner.invoke(app, ["init", "eclip", str(tmp_path / "r"), "--n", "3"])
    assert result.exit_code == 2 and "--n 3: need at least 10 images" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["init", "eclip", str(tmp_path / "r"), "--ukiyoe", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert SPLIT_FILES["test"] in result.output and "annotations/Ukiyo-eVG/refined/" in result.output
    result = runner.invoke(app, ["init", "eclip", str(tmp_path / "r"), "--ukiyoe", str(tmp_path / "empty"),
                                 "--annotations", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "--ukiyoe and --annotations both given" in result.output
    result = runner.invoke(app, ["init", "eclip", str(tmp_path / "r"), "--missing-images", "grey"])
    assert result.exit_code == 2 and "--missing-images grey" in result.output
    assert not (tmp_path / "r").exists()


def test_data_prepare_keeps_the_preset_of_the_current_data(tmp_path):
    state = tmp_path / ".autoresearch"
    assert preset_of(state) == "cpu"                     # nothing prepared yet
    (state / "prepared").mkdir(parents=True)
    (state / "prepared" / "meta.json").write_text(json.dumps({"format": 1, **presets.data_settings("seed")}))
    assert preset_of(state) == "seed"
