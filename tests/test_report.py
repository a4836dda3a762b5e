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

CONFIRMED = {"EXPERT_PROB 0.3 -> 0.8": 1, "SigLIP loss": 2}   # confirmation runs spent on these


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
                          folds=[mean - 1, mean, mean + 1],
                          decision={"status": status, "numbers": {"sigma_d": 1.25,
                                                                  "confirmation_runs": CONFIRMED.get(desc, 0)}})
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


def _page(tmp_path: Path, led: Ledger, tag: str = "mar10") -> str:
    return write_report(led, tmp_path / "report", tag=tag, metric_name="mean_rank",
                        direction="minimize").read_text(encoding="utf-8")


def _card_value(page: str, key: str) -> str:
    """The value of the headline card named ``key`` (its HTML)."""
    match = re.search(rf"<div class='k'>{re.escape(key)}</div><div class='big'>(.*?)</div></div>", page)
    assert match, f"no card {key!r}"
    return match.group(1)


def test_report_shows_cost_tokens_and_confirmations(tmp_path: Path) -> None:
    led = build_sample(ledger_path(tmp_path))
    page = _page(tmp_path, led)
    # 13 experiments at $0.02 each; 5 kept -> $0.052 per kept improvement
    assert _card_value(page, "agent cost").startswith("$0.26")
    assert _card_value(page, "cost per kept improvement").startswith("$0.052")
    assert "5 kept" in _card_value(page, "cost per kept improvement")
    tokens = _card_value(page, "tokens")
    assert tokens.startswith("15,600") and "13,000 in, 2,600 out" in tokens
    assert _card_value(page, "confirmation runs").startswith("3<")
    # cost and tokens per experiment in the table of all experiments
    header = re.search(r"<h2>All experiments</h2><table><thead><tr>(.*?)</tr>", page).group(1)
    cols = re.findall(r"<th>(.*?)</th>", header)
    assert cols[cols.index("tokens") + 1] == "cost $"
    row = re.search(r"<tr class='keep'><td class='n'>3</td>(.*?)</tr>", page.split("<h2>All experiments</h2>")[1])
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0))
    assert cells[cols.index("tokens")] == "1,200" and cells[cols.index("cost $")] == "0.02"
    assert cells[cols.index("description")] == "MAX_TEMPERATURE 2 -&gt; 100"
    # each kept change's delta with its uncertainty (numbers.sigma_d of the decision)
    kept = page.split("<h2>Kept changes</h2>")[1].split("<h2>")[0]
    assert "-113.2 ± 1.25" in kept and "-4.6 ± 1.25" in kept


def _ledger(path: Path, experiments: list[tuple[str, dict]]) -> Ledger:
    led = Ledger(path)
    b = led.start(tag="t", kind="baseline", description="baseline")
    led.finish(b, "keep", metric_mean=10.0, metric_std=0.1)
    for status, usage in experiments:
        n = led.start(tag="t", kind="experiment", description=status, agent="openai", **usage)
        led.finish(n, status, metric_mean=9.0 if status == "keep" else 11.0)
    return led


def test_cost_per_kept_is_a_dash_when_nothing_kept_or_unpriced(tmp_path: Path) -> None:
    priced = dict(tokens_in=2_000_000, tokens_out=10_000, cost_usd=4.08)
    page = _page(tmp_path / "a", _ledger(tmp_path / "a.sqlite", [("discard", priced), ("crash", priced)]), "t")
    assert _card_value(page, "agent cost").startswith("$8.16")
    assert _card_value(page, "cost per kept improvement").startswith("—")
    # a model missing from the price table: tokens known, cost unknown
    unpriced = dict(tokens_in=500, tokens_out=50, cost_usd=None)
    page = _page(tmp_path / "b", _ledger(tmp_path / "b.sqlite", [("keep", unpriced), ("discard", unpriced)]), "t")
    assert _card_value(page, "agent cost").startswith("unknown")
    assert _card_value(page, "cost per kept improvement").startswith("—")
    assert _card_value(page, "tokens").startswith("1,100")
    # some priced, some not: the total says what it leaves out; tiny costs keep their digits
    mixed = [("keep", dict(tokens_in=1000, tokens_out=100, cost_usd=0.0000315)), ("keep", unpriced)]
    page = _page(tmp_path / "c", _ledger(tmp_path / "c.sqlite", mixed), "t")
    total = _card_value(page, "agent cost")
    assert total.startswith("$0.0000315<")
    assert "1 experiment(s) with no price" in total
    # an agent without usage (replay, optuna): no cost cards at all
    page = _page(tmp_path / "d", _ledger(tmp_path / "d.sqlite", [("keep", {}), ("discard", {})]), "t")
    assert "agent cost" not in page and "cost per kept" not in page
    assert _card_value(page, "confirmation runs").startswith("0<")


def test_plot_with_only_the_baseline_measured(tmp_path: Path) -> None:
    """Every attempt failed: one value on the plot, and a sensible y-range around it (no singular limits)."""
    import warnings

    led = Ledger(ledger_path(tmp_path))
    led.finish(led.start(tag="t", kind="baseline"), "keep", metric_mean=2.0)
    for _ in range(3):
        led.finish(led.start(tag="t", kind="experiment", description="agent error"), "crash")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = progress_png(led.rows(), tmp_path / "one.png", metric_name="val_bpb", direction="minimize")
    assert png.read_bytes().startswith(PNG_MAGIC)
    from autoresearch.report.plot import _y_window

    lo, hi = _y_window([2.0], [2.0], None, 2.0)
    assert lo < 2.0 < hi and hi - lo == pytest.approx(0.2)
    lo, hi = _y_window([2.0], [2.0], 0.05, 2.0)
    assert hi - lo == pytest.approx(0.4)     # 4kσ: the noise band (±2σ = 0.2 wide) fits twice over
