"""The data a run sees cannot be derived by the run (issue 9, class 1): a secret generator seed kept with
the keys, a recorded raw folder that every agent is denied, and a warning wherever a public seed was used."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # builds three 200-print eCLIP repositories
from typer.testing import CliRunner

from autoresearch import config as config_mod
from autoresearch import provenance
from autoresearch.cli import app
from autoresearch.loop.engine import open_ledger
from autoresearch.report.html import write_report
from autoresearch.session import Session, create
from autoresearch.tasks.eclip import prepare_data
from autoresearch.tasks.eclip.template.eclip import synth

N = 200


def _first_print(seed: int) -> bytes:
    img, _ = synth.render(seed, 0, clean=False)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _strings(value) -> list:
    """Every key and scalar in a JSON value, flattened."""
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in [k, *_strings(v)]]
    if isinstance(value, list):
        return [x for v in value for x in _strings(v)]
    return [value]


@pytest.fixture(scope="module")
def secret_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prov") / "secret"
    create("eclip", root, n=N, say=lambda s: None)
    return root


def test_default_seed_is_secret_and_kept_only_with_the_keys(secret_repo):
    state = secret_repo / ".autoresearch"
    record = provenance.load(state)
    assert record["source"] == "synthetic" and record["seed_public"] is False
    assert record["raw"] == "raw" and provenance.private_paths(state) == [(state / "raw").resolve()]
    seed = record["seed"]
    assert isinstance(seed, int) and seed not in (0, 1, 42)
    # The recorded seed is the one the prints were made from, and the public default is not.
    raw_first = (state / "raw" / synth.IMAGE_DIR / "ukiyoe_synth_00000.jpg").read_bytes()
    assert raw_first == _first_print(seed) and raw_first != _first_print(0)
    # Nothing a run can read names the seed: not meta.json, not the config.
    meta = json.loads((state / "prepared" / "meta.json").read_text())
    assert not [k for k in meta if "seed" in k and k != "fold_seed"]
    assert seed not in _strings(meta) and str(seed) not in (secret_repo / "autoresearch.toml").read_text()
    assert (state / provenance.FILE).parent == state / "secret"
    assert open_ledger(config_mod.load(secret_repo)).get_meta(provenance.WARNING_KEY) is None


def test_data_prepare_again_keeps_the_recorded_seed(secret_repo):
    state = secret_repo / ".autoresearch"
    before = provenance.load(state)
    prepare_data(secret_repo, preset="cpu", n=0, seed=None, ukiyoe=None, vocab=None, say=lambda s: None)
    assert provenance.load(state)["seed"] == before["seed"]


def test_explicit_seed_is_reproducible_and_flagged_in_ledger_status_and_report(tmp_path):
    root = tmp_path / "public"
    create("eclip", root, n=N, seed=7, say=lambda s: None)
    state = root / ".autoresearch"
    record = provenance.load(state)
    assert (record["seed"], record["seed_public"]) == (7, True)
    assert (state / "raw" / synth.IMAGE_DIR / "ukiyoe_synth_00000.jpg").read_bytes() == _first_print(7)
    ledger = open_ledger(config_mod.load(root))
    warning = ledger.get_meta(provenance.WARNING_KEY)
    assert "explicit seed 7" in warning and "not protected against regeneration" in warning
    out = CliRunner().invoke(app, ["status", "-C", str(root)])
    assert out.exit_code == 0, out.output
    assert "not protected against regeneration" in " ".join(out.output.split())
    page = write_report(ledger, tmp_path / "report", tag="t", metric_name="mean_rank", direction="minimize")
    assert "not protected against regeneration" in page.read_text()


def test_the_ukiyoe_folder_is_recorded_and_denied_to_agents(tmp_path):
    raw = tmp_path / "datasets" / "ukiyoe"          # outside the repository, as --ukiyoe usually is
    synth.generate(raw, n=N, seed=3)
    root = tmp_path / "real"
    create("eclip", root, n=N, ukiyoe=raw, say=lambda s: None)
    record = provenance.load(root / ".autoresearch")
    assert record == {"source": "ukiyoe", "raw": str(raw.resolve())}
    assert provenance.private_paths(root / ".autoresearch") == [raw.resolve()]
    denied = {Path(p).resolve() for p in Session(root, tag="t").agent_context().denied}
    assert raw.resolve() in denied and (root / ".autoresearch").resolve() in denied
