"""The report folder: ``index.html`` (self-contained), ``progress.png``, ``results.tsv``, ``results.jsonl``.

Everything on the page comes from the ledger; every piece of text goes through ``_e``: its control
characters, bidi controls and lone surrogates made visible (``text.shown``) and then HTML-escaped
(descriptions, reasons and hypotheses are written by agents). The one-time test score (a row of kind 'final') is shown apart from the
validation results, with the number of times the test split was used (events of kind 'test_used').
"""

from __future__ import annotations

import base64
import html
import math
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from autoresearch.loop.ledger import Experiment, Ledger
from autoresearch.report.plot import contributions_png, direction_label, progress_png
from autoresearch.text import shown
from autoresearch.vocab import Direction, Status


def _e(value: Any, quote: bool = True) -> str:
    """Agent or run text for the page: controls visible, then HTML-escaped."""
    return html.escape(shown(value, multiline=True), quote=quote)


def delta_sd(decision: dict) -> float | None:
    """One standard deviation of the delta, as ``loop.decide`` records it (``numbers.sigma_d``)."""
    numbers = decision.get("numbers")
    value = numbers.get("sigma_d") if isinstance(numbers, dict) else None
    return value if _finite(value) else None


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1280px;padding:0 16px;color:#1a1a1a}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#666} .big{font-size:20px;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:150px}
.card .k{color:#666;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f6f6} td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.keep td{background:#eef8ee} tr.crash td,tr.timeout td,tr.invalid td,tr.aborted td{background:#fdf0f0} tr.stale td{background:#fff6e0}
tr.interrupted td,tr.running td,tr.contention td{color:#888}
img{max-width:100%;border:1px solid #eee}
.test{border:2px solid #b8860b;border-radius:6px;padding:10px 16px;background:#fffaf0}
.good{color:#1a7f37} .bad{color:#b42318}
"""


def write_report(ledger: Ledger, out_dir: Path, *, tag: str, metric_name: str, direction: Direction,
                 noise_sigma: float | None = None, extra: dict | None = None, ablation: Any = None,
                 transfers: Iterable[Any] = ()) -> Path:
    """Write the four report files for one tag into ``out_dir`` (and ``ablation.png`` when the champion has
    been ablated: ``findings.ablate.Ablation``; ``transfers``: ``findings.transfer.Transfer``); return the path
    of ``index.html``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = ledger.rows(tag=tag)
    png = progress_png(rows, out_dir / "progress.png", metric_name=metric_name, direction=direction,
                       noise_sigma=noise_sigma, title=f"{tag}: {direction_label(metric_name, direction)}")
    ledger.export_tsv(out_dir / "results.tsv", tag=tag, metric_name=metric_name)
    ledger.export_jsonl(out_dir / "results.jsonl")
    test_uses = [e for e in ledger.events("test_used") if e.payload.get("tag", tag) == tag]
    delivered = {ev.payload.get("note"): ev.number for ev in ledger.events("note_delivered")}
    notes = [(ev.time, ev.payload.get("text", ""), delivered.get(ev.id)) for ev in ledger.events("note")
             if ev.payload.get("tag") == tag]
    bars = contributions_png(ablation, out_dir / "ablation.png").read_bytes() if ablation is not None else None
    page = render_page(rows, tag=tag, metric_name=metric_name, direction=direction, noise_sigma=noise_sigma,
                       png=png.read_bytes(), test_uses=len(test_uses), extra=extra or {}, notes=notes,
                       warning=ledger.get_meta("data_warning") or "", ablation=ablation, ablation_png=bars,
                       transfers=list(transfers))
    index = out_dir / "index.html"
    tmp = index.with_name("index.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(index)
    return index


def render_page(rows: list[Experiment], *, tag: str, metric_name: str, direction: Direction,
                noise_sigma: float | None, png: bytes, test_uses: int, extra: dict,
                notes: list[tuple[str, str, int | None]] = (), warning: str = "", ablation: Any = None,
                ablation_png: bytes | None = None, transfers: list | None = None) -> str:
    """The HTML text of the report (pure function of its arguments)."""
    e = _e
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>autoresearch: {e(tag)}</title><style>{_CSS}</style></head><body>",
        f"<h1>autoresearch report: {e(tag)}</h1>",
        f"<div class='sub'>{e(direction_label(metric_name, direction))}, validation"
        f"{'' if not noise_sigma else f'; noise σ = {_num(noise_sigma)}'}</div>",
        f"<p class='bad'><b>Warning:</b> {e(warning)}</p>" if warning else "",
        _headline(rows, metric_name, direction),
        f"<h2>Progress</h2><img alt='progress plot' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode('ascii')}'>",
        _final_section(rows, metric_name, test_uses),
        _kept_table(rows, metric_name),
        _ablation_section(ablation, ablation_png),
        _transfer_section(transfers or []),
        _all_table(rows, metric_name),
        _notes_section(notes),
        _kv_section("Hardware", _hardware(rows)),
        _kv_section("Run", extra),
        "<p class='sub'>Files: progress.png, results.tsv, results.jsonl (everything in the ledger).</p>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _ablation_section(ablation: Any, png: bytes | None) -> str:
    """Each kept change's contribution at the champion beside its gain when kept (``autoresearch ablate``)."""
    if ablation is None:
        return ""
    from autoresearch.findings.ablate import describe

    e = _e
    body = [_tr(Status.KEEP if cells["verdict"] == "matters" else "", [e(cells["change"]), e(cells["changed"]),
                e(cells["kept"]), e(cells["now"]), e(cells["verdict"]), e(cells["how"])], numeric={2, 3})
            for cells in describe(ablation)]
    mean = f"; the champion re-measured: {_num(ablation.champion_mean)}" if ablation.champion_mean is not None else ""
    picture = (f"<img alt='contribution of each kept change' src='data:image/png;base64,"
               f"{base64.b64encode(png).decode('ascii')}'>") if png else ""
    return (f"<h2>Ablation: what still matters</h2><p class='sub'>Champion #{ablation.champion} without each kept "
            f"change, paired with the champion ({len(ablation.seeds)} fresh seeds × every fold{e(mean)}). "
            f"{e(ablation.rule)}.</p>" + picture
            + _table(["kept change", "changed", "gain when kept ± sd", "contribution now (95% CI)", "verdict", "variant"],
                     body))


def _transfer_section(transfers: list) -> str:
    """The baseline and the champion under settings the loop did not tune on (``autoresearch transfer``)."""
    if not transfers:
        return ""
    e = _e
    body = []
    for t in transfers:
        body.append(_tr(Status.KEEP if t.verdict == "holds" else "", [
            e(t.words), str(len(t.seeds)), _num(t.tuned_gain, signed=True), e(t.gain.text() if t.gain else "—"),
            e(t.verdict), e("; ".join(f"{x.name} {_num(x.mean)}" for x in t.lines if x.mean is not None)),
            e("; ".join(f"{x.name}: {x.vs.text() if x.vs else '—'} ({x.verdict})" for x in t.lines if x.change is not None)),
            e(" ".join(t.warnings))], numeric={1, 2}))
    return ("<h2>Transfer: does the gain hold?</h2><p class='sub'>The baseline and the champion under a setting the "
            "loop did not tune on, paired (same seeds, same folds); the gain is the champion's over the baseline.</p>"
            + _table(["setting", "seeds", "gain when tuned", "gain there (95% CI)", "verdict", "means there",
                      "each kept change there", "notes"], body))


def _notes_section(notes) -> str:
    """The researcher's notes to the agent (from the dashboard or ``Session.note``), and where each went."""
    if not notes:
        return ""
    e = _e
    items = "".join(f"<tr><td>{e(time)}</td><td>{e(text)}</td>"
                    f"<td>{'pending' if number is None else f'brief of experiment {number}'}</td></tr>"
                    for time, text, number in notes)
    return f"<h2>Notes to the agent</h2><table><tr><th>when</th><th>note</th><th>delivered</th></tr>{items}</table>"


def _headline(rows: list[Experiment], metric_name: str, direction: Direction) -> str:
    e = _e
    trials = [r for r in rows if r.kind in ("baseline", "experiment")]
    base = next((r for r in trials if r.kind == "baseline" and _finite(r.metric_mean)), None)
    champions = sorted((r for r in trials if r.status == Status.KEEP and _finite(r.metric_mean)),
                       key=lambda r: (r.ended_at or "", r.number))   # decided last (several may run at once)
    best = champions[-1] if champions else None
    cards = []
    if base is not None and best is not None:
        gain = Direction.parse(direction).gain(best.metric_mean, base.metric_mean)
        pct = f" ({100 * gain / abs(base.metric_mean):.1f}%)" if base.metric_mean else ""
        cls = "good" if gain > 0 else ("bad" if gain < 0 else "")
        cards.append(_card(f"{e(metric_name)}: baseline → champion",
                           f"{_pm(base)} → {_pm(best)}"))
        cards.append(_card("improvement", f"<span class='{cls}'>{_num(gain)}{pct}</span>"))
    elif base is not None:
        cards.append(_card(f"{e(metric_name)}: baseline", _pm(base)))
    counts = Counter(r.status for r in rows if r.kind == "experiment")
    order = (Status.KEEP, Status.DISCARD, Status.CRASH, Status.TIMEOUT, Status.ABORTED, Status.INVALID, Status.STALE,
             Status.INTERRUPTED, Status.CONTENTION, Status.AGENT_ERROR, Status.RUNNING)
    cards.append(_card(f"{sum(counts.values())} experiments",
                       ", ".join(f"{counts[s]} {s}" for s in order if counts[s]) or "none yet"))
    other = Counter(r.kind for r in rows if r.kind in ("noise", "ablation", "transfer"))
    if other:
        cards.append(_card("extra runs", ", ".join(f"{n} {k}" for k, n in sorted(other.items()))))
    hours = _hours(rows)
    if hours is not None:
        train = sum(r.train_seconds or 0 for r in rows) / 3600
        agent = sum(r.agent_seconds or 0 for r in rows) / 3600
        cards.append(_card("time", f"{hours:.2f} h wall<br><span class='sub'>{train:.2f} h training, "
                                   f"{agent:.2f} h agent</span>"))
    confirmations = confirmation_runs(rows)
    if confirmations or counts:
        cards.append(_card("confirmation runs", f"{confirmations}<br><span class='sub'>re-runs of candidates "
                                                f"near the threshold</span>"))
    cards += _cost_cards(rows, counts[Status.KEEP])
    return "<div class='cards'>" + "".join(cards) + "</div>"


def confirmation_runs(rows: list[Experiment]) -> int:
    """Confirmation runs spent: the sum of ``numbers.confirmation_runs`` over the rows' decisions."""
    total = 0
    for r in rows:
        numbers = r.decision.get("numbers")
        value = numbers.get("confirmation_runs") if isinstance(numbers, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            total += value
    return total


def agent_cost(rows: list[Experiment]) -> tuple[float | None, int, int, int]:
    """(total USD or None when unknown, input tokens, output tokens, rows whose cost is unknown).

    The cost is unknown when no row has one although the agent used tokens, i.e. the model is not in the
    price table; with some rows priced and some not, the total covers the priced ones only."""
    used = [r for r in rows if r.kind == "experiment" and (r.tokens_in or r.tokens_out or r.cost_usd is not None)]
    known = [r.cost_usd for r in used if _finite(r.cost_usd)]
    unknown = len(used) - len(known)
    tokens_in = sum(r.tokens_in or 0 for r in used)
    tokens_out = sum(r.tokens_out or 0 for r in used)
    return (sum(known) if known else None), tokens_in, tokens_out, unknown


def _cost_cards(rows: list[Experiment], kept: int) -> list[str]:
    """Total agent cost, cost per kept improvement and tokens; nothing for agents without usage."""
    total, tokens_in, tokens_out, unknown = agent_cost(rows)
    if total is None and not (tokens_in or tokens_out):
        return []
    note = (f"<br><span class='sub'>{unknown} experiment(s) with no price: not counted</span>"
            if unknown and total is not None else "")
    cards = [_card("agent cost", (_usd(total) if total is not None else "unknown") + note)]
    per_kept = _usd(total / kept) if total is not None and kept else "—"
    cards.append(_card("cost per kept improvement",
                       f"{per_kept}<br><span class='sub'>{kept} kept</span>"))
    cards.append(_card("tokens", f"{tokens_in + tokens_out:,}<br><span class='sub'>{tokens_in:,} in, "
                                 f"{tokens_out:,} out</span>"))
    return cards


def _usd(x: float | None, sign: bool = True) -> str:
    """Dollars: cents above $1, three significant digits below (API calls cost fractions of a cent)."""
    if not _finite(x):
        return ""
    if abs(x) >= 1:
        text = f"{x:,.2f}"
    elif x == 0:
        text = "0"
    else:
        text = f"{x:.{2 - math.floor(math.log10(abs(x)))}f}".rstrip("0")
    return ("$" if sign else "") + text


def _final_section(rows: list[Experiment], metric_name: str, test_uses: int) -> str:
    finals = [r for r in rows if r.kind == "final"]
    if not finals:
        return ""
    e = _e
    out = ["<h2>Final test result</h2><div class='test'>",
           "<p><b>One-time test score</b>: the champion retrained on train+val and scored once on the "
           f"held-out test split. The test split was used <b>{test_uses}</b> time(s) in this run.</p>"]
    for r in finals:
        out.append(f"<p>#{r.number} {e(r.description or '')}: <span class='big'>{e(metric_name)} = "
                   f"{_num(r.metric_mean)}</span> <span class='sub'>({e(r.status or '')})</span></p>")
        metrics = r.metrics
        if isinstance(metrics, list) and len(metrics) == 1:
            metrics = metrics[0]
        if isinstance(metrics, dict) and metrics:
            out.append(_kv_table(metrics))
    out.append("</div>")
    return "".join(out)


def _kept_table(rows: list[Experiment], metric_name: str) -> str:
    kept = [r for r in rows if r.kind == "experiment" and r.status == Status.KEEP]
    e = _e
    head = ["#", "description", "changed", f"{metric_name} mean ± std", "delta", "hypothesis"]
    body = []
    for r in kept:
        sigma = delta_sd(r.decision)
        delta = _num(r.delta, signed=True) + (f" ± {_num(sigma, digits=3)}" if sigma is not None else "")
        body.append(_tr(r.status, [str(r.number), e(r.description or ""), e(r.changed or ""), _pm(r), delta,
                                   e(r.hypothesis or "")], numeric={0, 3, 4}))
    if not body:
        return "<h2>Kept changes</h2><p class='sub'>No experiment has been kept yet.</p>"
    return "<h2>Kept changes</h2>" + _table(head, body)


def _all_table(rows: list[Experiment], metric_name: str) -> str:
    e = _e
    head = ["#", "kind", "status", "attempt", "description", f"{metric_name} mean ± std", "delta", "train s",
            "tokens", "cost $", "reason"]
    body = []
    marks = parallel_marks(rows)
    for r in rows:
        tokens = f"{(r.tokens_in or 0) + (r.tokens_out or 0):,}" if (r.tokens_in or r.tokens_out) else ""
        attempt = str(r.attempt) if r.kind == "experiment" and r.attempt else ""
        status = e(r.status or "") + (f" <span class='sub'>{e(marks[r.number])}</span>" if r.number in marks else "")
        body.append(_tr(r.status, [str(r.number), e(r.kind or ""), status, attempt,
                                   e(r.description or ""), _pm(r), _num(r.delta, signed=True),
                                   _num(r.train_seconds, digits=4), tokens, _usd(r.cost_usd, sign=False),
                                   e(r.reason or "")], numeric={0, 3, 5, 6, 7, 8, 9}))
    return "<h2>All experiments</h2>" + _table(head, body)


def parallel_marks(rows: list[Experiment]) -> dict[int, str]:
    """What the table says about candidates run side by side (docs/parallel.md): "∥ 3, 4" for an
    experiment whose run overlapped experiments 3 and 4, and what the stale rule did to it."""
    spans = [(r, _time(r.started_at or ""), _time(r.ended_at or "")) for r in rows if r.kind == "experiment"]
    out: dict[int, list[str]] = {}
    for r, a0, a1 in spans:
        if a0 is None or a1 is None:
            continue
        others = [o.number for o, b0, b1 in spans if o is not r and b0 and b1 and a0 < b1 and b0 < a1]
        if others:
            out.setdefault(r.number, []).append("∥ " + ", ".join(map(str, others[:6])) + (" …" if len(others) > 6 else ""))
        stale = (r.decision.get("numbers") or {}).get(Status.STALE)
        if stale and r.status != Status.STALE:
            out.setdefault(r.number, []).append(
                "re-run on the new champion" if "re-applied" in stale.get("rule", "")
                else f"stale: judged against its parent {stale.get('parent')}")
    return {n: "; ".join(v) for n, v in out.items()}


def _hardware(rows: list[Experiment]) -> dict:
    """The hardware of the latest row that recorded one (runs of one tag normally share a machine)."""
    for r in reversed(rows):
        if r.hardware:
            return r.hardware
    return {}


def _kv_section(title: str, values: dict) -> str:
    return f"<h2>{_e(title)}</h2>{_kv_table(values)}" if values else ""


def _kv_table(values: dict) -> str:
    body = [f"<tr><th>{_e(str(k))}</th><td>{_e(_plain(v))}</td></tr>" for k, v in values.items()]
    return "<table>" + "".join(body) + "</table>"


def _table(head: list[str], body: list[str]) -> str:
    return ("<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(body) + "</tbody></table>")


def _tr(status: str | None, cells: list[str], numeric: Iterable[int]) -> str:
    """A row whose cells are already escaped HTML; the status becomes a CSS class."""
    num = set(numeric)
    cls = _e(status or "", quote=True)
    return f"<tr class='{cls}'>" + "".join(
        f"<td class='n'>{c}</td>" if i in num else f"<td>{c}</td>" for i, c in enumerate(cells)) + "</tr>"


def _card(key: str, value: str) -> str:
    return f"<div class='card'><div class='k'>{key}</div><div class='big'>{value}</div></div>"


def _pm(r: Experiment) -> str:
    if not _finite(r.metric_mean):
        return "—"
    return _num(r.metric_mean) + (f" ± {_num(r.metric_std, digits=3)}" if _finite(r.metric_std) else "")


def _num(x: Any, signed: bool = False, digits: int = 5) -> str:
    if not _finite(x):
        return ""
    return f"{x:+.{digits}g}" if signed else f"{x:.{digits}g}"


def _plain(v: Any) -> str:
    if isinstance(v, float):
        return _num(v, digits=6)
    if isinstance(v, (list, tuple)):
        return ", ".join(_plain(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_plain(x)}" for k, x in v.items())
    return str(v)


def _hours(rows: list[Experiment]) -> float | None:
    starts = [_time(r.started_at) for r in rows if r.started_at]
    ends = [_time(r.ended_at) for r in rows if r.ended_at]
    starts = [t for t in starts if t]
    ends = [t for t in ends if t]
    if not starts or not ends:
        return None
    return max(0.0, (max(ends) - min(starts)).total_seconds() / 3600)


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
