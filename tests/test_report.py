"""The report: progress plot and the self-contained HTML page, built from a sample ledger."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from autoresearch.loop.ledger import Ledger, ledger_path
from autoresearch.report.html import write_report
from autoresearch.report.plot import champion_steps, direction_label, ellipsise, progress_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (description, mean or None, status): the shape of the eCLIP run, shortened
SAMPLE = [
    ("LR 3e-4 -> 1e-4", 324.6, "keep"),
    ("label smoothing 0.1", 371.0, "discard"),
    ("MAX_TEMPERATURE 2 -> 100", 211.4, "keep"),
    ("LR 1e-3", 1541.5, "discard"),
    ("separate backbone LR", None, "crash"),
    ("EXPERT_PROB 0.3 -> 0.8", 206.8, "keep"),
    ("freeze ViT blocks 0-7", None, "timeout"),
    ("PROJ_DIM <256> & \"more\"", 199.0, "keep"),
    ("SigLIP loss", 213.0, "discard"),
    ("prints a fake metric", None, "invalid"),
    ("WiSE-FT <script>alert(1)</script>", 197.5, "keep"),
    ("dropout 0.1", 209.0, "discard"),
    ("killed by ctrl-c", None, "interrupted"),
]


def build_sample(path: Path, tag: str = "mar10") -> Ledger:
    led = Ledger(path)
    b = led.start(tag=tag, kind="baseline", description="baseline", commit="a1b2c3d4e5")
    led.finish(b, "keep", metric_mean=344.68, metric_std=3.1, folds=[341.0, 345.0, 348.0],
               hardware={"gpu": "NVIDIA H100", "cpus": 16}, train_seconds=180.0)
    champion = 344.68
    for desc, mean, status in SAMPLE:
        n = led.start(tag=tag, kind="experiment", description=desc, candidate_commit=f"c{len(desc):06d}",
                      tokens_in=1000, tokens_out=200, cost_usd=0.02, agent="replay")
        fields = {}
        if mean is not None:
            fields = dict(metric_mean=mean, metric_std=0.8, delta=mean - champion, champion_metric=champion,
                          folds=[mean - 1, mean, mean + 1], decision={"status": status, "numbers": {"sigma_d": 1.25}})
        led.finish(n, status, train_seconds=170.0, reason=f"{status}: <why>", **fields)
        champion = mean if status == "keep" else champion
    f = led.start(tag=tag, kind="final", description="final test on train+val")
    led.finish(f, "keep", metric_mean=34.3, metrics={"mean_rank": 34.3, "i2t_R@5": 0.53})
    led.event("test_used", f, tag=tag)
    return led


def test_helpers() -> None:
    assert direction_label("mean_rank", "minimize") == "mean_rank (lower is better)"
    assert direction_label("acc", "maximize") == "acc (higher is better)"
    with pytest.raises(ValueError):
        direction_label("acc", "up")
    assert ellipsise("a\tb\nc") == "a b c"
    cut = ellipsise("x" * 100, 20)
    assert len(cut) == 20 and cut.endswith("…")


def test_champion_steps(tmp_path: Path) -> None:
    led = build_sample(ledger_path(tmp_path))
    steps = champion_steps(led.rows(tag="mar10"))
    assert [m for _, m in steps] == [344.68, 324.6, 211.4, 206.8, 199.0, 197.5]


def test_write_report_files_and_escaping(tmp_path: Path) -> None:
    led = build_sample(ledger_path(tmp_path))
    out = tmp_path / "report"
    index = write_report(led, out, tag="mar10", metric_name="mean_rank", direction="minimize", noise_sigma=1.2,
                         extra={"agent": "replay <v1>"})
    assert index == out / "index.html"
    for name in ("index.html", "progress.png", "results.tsv", "results.jsonl"):
        assert (out / name).stat().st_size > 0, name
    png = (out / "progress.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 20_000
    page = index.read_text(encoding="utf-8")
    # self-contained: the plot embedded, nothing fetched from elsewhere
    embedded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1)
    assert base64.b64decode(embedded) == png
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)
    # agent text escaped, never raw
    assert "<script>" not in page
    assert "WiSE-FT &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "PROJ_DIM &lt;256&gt; &amp; &quot;more&quot;" in page
    assert "&lt;why&gt;" in page and "replay &lt;v1&gt;" in page
    # headline, kept table with uncertainty, final test labelled, hardware
    assert "344.68 ± 3.1 → 197.5 ± 0.8" in page
    assert "-113.2 ± 1.25" in page
    assert "One-time test score" in page and "used <b>1</b> time" in page
    assert "NVIDIA H100" in page
    assert "5 keep, 4 discard, 1 crash, 1 timeout, 1 invalid, 1 interrupted" in page
    tsv = (out / "results.tsv").read_text().splitlines()
    assert tsv[0] == "commit\tmean_rank\tmemory_gb\tstatus\tdescription" and len(tsv) == 1 + 1 + len(SAMPLE)


def test_plot_edge_cases(tmp_path: Path) -> None:
    empty = progress_png([], tmp_path / "empty.png", metric_name="m", direction="minimize")
    assert empty.read_bytes().startswith(PNG_MAGIC)
    led = Ledger(ledger_path(tmp_path))
    for i in range(3):
        led.finish(led.start(tag="t", kind="experiment", description=f"e{i}"), "crash")
    rows = led.rows()
    crashes = progress_png(rows, tmp_path / "crashes.png", metric_name="acc", direction="maximize")
    assert crashes.stat().st_size > 5_000
    b = led.start(tag="t", kind="baseline")
    led.finish(b, "keep", metric_mean=0.5)
    for i, acc in enumerate([0.55, 0.52, 0.6]):
        led.finish(led.start(tag="t", kind="experiment", description=f"long description {i} " * 5),
                   "keep" if acc != 0.52 else "discard", metric_mean=acc, delta=acc - 0.5)
    up = progress_png(led.rows(), tmp_path / "up.png", metric_name="acc", direction="maximize", noise_sigma=0.01)
    assert up.stat().st_size > 20_000
