"""The MLflow export against real local MLflow stores, read back with MLflow's own client."""

from __future__ import annotations

import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import autoresearch  # noqa: E402
from autoresearch.cli import app  # noqa: E402
from autoresearch.errors import UserError  # noqa: E402
from autoresearch.runner import sandbox  # noqa: E402
from autoresearch.vocab import Kind  # noqa: E402
from findings_toy import make_findings_repo  # noqa: E402

NO_SANDBOX = not sandbox.available()


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = make_findings_repo(tmp_path_factory.mktemp("mlflow") / "toy")
    session = autoresearch.open(root, tag="n")
    session.run("replay", experiments=4, no_sandbox=NO_SANDBOX)
    yield session
    session.close()


def _runs(client: MlflowClient, experiment_id: str) -> dict[int, object]:
    return {int(r.data.tags["autoresearch.number"]): r for r in client.search_runs([experiment_id])}


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["sqlite", "file"])
def test_every_row_becomes_a_run_with_its_constants_metrics_tags_and_artifacts(night, tmp_path, scheme, monkeypatch):
    monkeypatch.chdir(tmp_path)          # MLflow's default artifact folder is relative to the working folder
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")   # MLflow 3 keeps its file store for old set-ups only
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if scheme == "sqlite" else (tmp_path / "mlruns").as_uri()
    done = night.export_mlflow(uri)
    rows = [r for r in night.ledger.rows(tag="n")]
    assert done.added == len(rows) == 5 and done.skipped == 0 and done.experiment == "n"
    client = MlflowClient(uri)
    runs = _runs(client, done.experiment_id)
    assert sorted(runs) == [r.number for r in rows]
    kept = runs[1]                                          # LR 1e-2 -> 1e-3
    row = night.experiment(1)
    assert kept.data.params == {"LR": "0.001"}
    assert kept.data.metrics["val_bpb"] == pytest.approx(row.metric_mean)
    assert kept.data.metrics["fold1/val_bpb"] == pytest.approx(row.folds[1])
    assert kept.data.metrics["delta"] == pytest.approx(row.delta)
    assert kept.data.tags["autoresearch.status"] == "keep" and kept.data.tags["autoresearch.commit"] == row.commit
    assert kept.data.tags["autoresearch.phase"].startswith("1: ") and kept.info.status == "FINISHED"
    assert kept.info.run_name == "1 LR 1e-2 -> 1e-3"
    names = {a.path for a in client.list_artifacts(kept.info.run_id)}
    assert {"diff.patch", "logs", "decision.json"} <= names
    diff = (tmp_path / "diff.patch")
    client.download_artifacts(kept.info.run_id, "diff.patch", str(tmp_path))
    assert "+LR = 0.001" in diff.read_text()
    logs = {a.path for a in client.list_artifacts(kept.info.run_id, "logs")}
    assert logs == {"logs/fold0.log", "logs/fold1.log"}
    assert runs[0].data.tags["autoresearch.kind"] == "baseline" and runs[0].data.params == {}
    assert runs[2].data.tags["autoresearch.status"] == "discard"


@pytest.mark.slow
def test_exporting_again_adds_only_what_is_new_and_redoes_a_half_written_run(night, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = night.export_mlflow(uri)
    assert night.export_mlflow(uri).added == 0
    client = MlflowClient(uri)
    half = _runs(client, first.experiment_id)[3]
    client.set_tag(half.info.run_id, "autoresearch.export", "partial")     # as an interrupted export leaves it
    night.ablate(seeds=2, only=[3], no_sandbox=NO_SANDBOX)
    again = night.export_mlflow(uri)
    findings = night.ledger.rows(tag="n", kinds=(Kind.ABLATION,))
    assert again.added == len(findings) + 1 and again.skipped == first.added - 1
    runs = _runs(client, first.experiment_id)
    assert len(runs) == first.added + len(findings)
    variant = next(r for r in findings if r.meta["findings"]["variant"] == "without #3")
    assert runs[variant.number].data.params == {"WIDTH": "4"}        # the constant it changed against the champion
    assert runs[variant.number].data.tags["autoresearch.kind"] == "ablation"


@pytest.mark.slow
def test_the_cli_exports_and_a_second_repository_with_the_same_tag_is_refused(night, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = CliRunner().invoke(app, ["export", "mlflow", "-C", str(night.root), "--tag", "n", "--tracking-uri", uri])
    assert out.exit_code == 0, out.output
    assert "run(s) added" in out.output
    other = make_findings_repo(tmp_path / "other")
    with autoresearch.open(other, tag="n") as s:
        with pytest.raises(UserError, match="mirrors another repository"):
            s.export_mlflow(uri)
