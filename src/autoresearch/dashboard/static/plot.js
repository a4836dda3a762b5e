// autoresearch dashboard: DOM helpers and the SVG plots (progress plot, training curves). Plain JS.
// Every piece of text goes into the page as a text node or an attribute value (never parsed as
// markup): descriptions, logs and diffs come from agents and runs. Text nodes go through `visible`: control
// characters, bidi overrides and isolates, and lone surrogates are shown as such (as `text.shown` does on
// the server), so an agent's text cannot reorder or hide what the page says.
"use strict";

const AR = (() => {
  const SVGNS = "http://www.w3.org/2000/svg";

  // C0/C1 controls but tab and newline, DEL, bidi controls, invisible marks, lone surrogates.
  const HIDDEN = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ufeff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
  function visible(text) {
    return text.replace(HIDDEN, (c) => {
      const code = c.charCodeAt(0);
      if (code < 0x20) return String.fromCharCode(0x2400 + code);
      if (code === 0x7f) return "\u2421";
      return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
    });
  }

  function fill(e, attrs, kids) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.setAttribute("class", v);
      else if (k === "style") Object.assign(e.style, v);   // through the CSSOM: the CSP forbids style attributes
      else if (k === "text") e.textContent = visible(String(v));
      else if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(visible(String(kid))));
    }
    return e;
  }
  const h = (tag, attrs, ...kids) => fill(document.createElement(tag), attrs, kids);
  const s = (tag, attrs, ...kids) => fill(document.createElementNS(SVGNS, tag), attrs, kids);

  const finite = (x) => typeof x === "number" && Number.isFinite(x);
  function fmt(x, digits = 4) {
    if (!finite(x)) return "—";
    if (x === 0) return "0";
    const a = Math.abs(x);
    if (a >= 1e5 || a < 1e-3) return x.toExponential(2);
    return String(Number(x.toPrecision(digits)));
  }
  function duration(sec) {
    if (!finite(sec)) return "—";
    sec = Math.max(0, Math.round(sec));
    if (sec < 60) return `${sec} s`;
    const m = Math.floor(sec / 60), ss = sec % 60;
    if (m < 60) return `${m} min ${String(ss).padStart(2, "0")} s`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
  }

  const tip = () => document.getElementById("tooltip");
  function showTip(ev, lines) {
    const t = tip();
    t.replaceChildren(...lines.map((line, i) => h("div", { class: i ? "" : "st" }, line)));
    t.hidden = false;
    const x = Math.min(ev.clientX + 14, window.innerWidth - 390);
    t.style.left = `${x}px`;
    t.style.top = `${ev.clientY + 14}px`;
  }
  function hideTip() { tip().hidden = true; }

  const COLOURS = { keep: "#2ca02c", discard: "#98a2b3", baseline: "#1f77b4" };

  function ticks(lo, hi, n) {
    const span = hi - lo || 1, raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((v) => span / v <= n) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  function frame(W, H, m, xs, ys, xlabel, ylabel) {
    const g = s("g", { class: "axis" });
    const [x0, x1] = xs.domain, [y0, y1] = ys.domain;
    for (const v of ticks(y0, y1, 5)) {
      const y = ys(v);
      g.append(s("line", { class: "grid", x1: m.l, x2: W - m.r, y1: y, y2: y }),
               s("text", { x: m.l - 6, y: y + 4, "text-anchor": "end" }, fmt(v, 3)));
    }
    for (const v of ticks(x0, x1, 8)) {
      if (xs.integer && v !== Math.round(v)) continue;
      const x = xs(v);
      g.append(s("line", { x1: x, x2: x, y1: H - m.b, y2: H - m.b + 4 }),
               s("text", { x, y: H - m.b + 16, "text-anchor": "middle" }, fmt(v, 4)));
    }
    g.append(s("path", { d: `M${m.l},${m.t}V${H - m.b}H${W - m.r}`, fill: "none" }),
             s("text", { x: (m.l + W - m.r) / 2, y: H - 4, "text-anchor": "middle" }, xlabel),
             s("text", { x: 12, y: (m.t + H - m.b) / 2, transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})`,
                         "text-anchor": "middle" }, ylabel));
    return g;
  }

  function scale(d0, d1, r0, r1) {
    if (d0 === d1) { d0 -= 1; d1 += 1; }
    const f = (v) => r0 + ((v - d0) / (d1 - d0)) * (r1 - r0);
    f.domain = [d0, d1];
    return f;
  }

  // The progress plot: every attempt a point (kept green, discarded grey, failed a red cross on the
  // bottom edge), the champion as a step line, the noise band around it; hover shows the description,
  // a click opens the experiment. Values far outside the bulk are clipped to the edge as triangles.
  function progress(data, { metric, direction, sigma, sigmaLabel, onOpen }) {
    const W = 960, H = 380, m = { l: 64, r: 16, t: 14, b: 40 };
    const pts = data.points, steps = data.steps;
    const svg = s("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "progress plot" });
    if (!pts.length) {
      svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no experiments yet"));
      return svg;
    }
    // The report's rule (report/plot.py _y_window): the champion's values, plus any other value within
    // one champion span of them; a collapsed run further out is clipped to the edge.
    const others = pts.filter((p) => finite(p.mean) && !p.failed).map((p) => p.mean);
    const core = steps.length ? steps.map(([, v]) => v) : others;
    let lo = core.length ? Math.min(...core) : 0, hi = core.length ? Math.max(...core) : 1;
    let span = hi - lo;
    if (finite(sigma) && sigma > 0) span = Math.max(span, 8 * sigma);
    if (span === 0) span = Math.abs(hi) * 0.1 || 1;
    for (const v of others) if (v >= lo - span && v <= hi + span) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (hi === lo) { lo -= span / 2; hi += span / 2; }
    const pad = 0.12 * (hi - lo);
    lo -= pad; hi += pad;
    const nMin = Math.min(...pts.map((p) => p.n)), nMax = Math.max(...pts.map((p) => p.n));
    const xs = scale(nMin - 0.5, nMax + 0.5, m.l, W - m.r); xs.integer = true;
    const ys = scale(lo, hi, H - m.b, m.t);
    const clampY = (v) => Math.max(m.t, Math.min(H - m.b, ys(v)));
    svg.append(frame(W, H, m, xs, ys, "experiment #", `${metric} (${direction})`));

    if (steps.length) {
      const xEnd = xs(nMax + 0.5);
      let d = "", band = [], bandBack = [];
      steps.forEach(([n, v], i) => {
        const x = xs(n), next = i + 1 < steps.length ? xs(steps[i + 1][0]) : xEnd;
        d += `${i ? "L" : "M"}${x},${ys(v)}H${next}`;
        if (i + 1 < steps.length) d += `V${ys(steps[i + 1][1])}`;
        if (finite(sigma)) {
          band.push(`${x},${clampY(v + 2 * sigma)}`, `${next},${clampY(v + 2 * sigma)}`);
          bandBack.unshift(`${next},${clampY(v - 2 * sigma)}`, `${x},${clampY(v - 2 * sigma)}`);
        }
      });
      if (band.length) {
        svg.append(s("polygon", { class: "band", points: band.concat(bandBack).join(" ") },
                     s("title", {}, `noise band: champion ± 2σ (${sigmaLabel})`)));
      }
      svg.append(s("path", { class: "step", d }));
    }

    const layer = s("g", {});
    for (const p of pts) {
      const x = xs(p.n);
      const lines = [`#${p.n} ${p.status}${p.kind === "baseline" ? " (baseline)" : ""} · ${metric} ${fmt(p.mean)}` +
                     (finite(p.std) ? ` ± ${fmt(p.std, 2)}` : ""), p.description];
      let shape;
      if (p.failed || !finite(p.mean)) {
        const y = H - m.b - 6;
        shape = s("path", { class: "pt", d: `M${x - 4},${y - 4}L${x + 4},${y + 4}M${x - 4},${y + 4}L${x + 4},${y - 4}`,
                            stroke: "#d62728", "stroke-width": 2 });
      } else if (p.mean < lo || p.mean > hi) {
        const top = p.mean > hi, y = top ? m.t + 6 : H - m.b - 6;
        shape = s("path", { class: "pt", fill: COLOURS[p.status] || "#98a2b3",
                            d: top ? `M${x},${y - 6}L${x - 5},${y + 3}L${x + 5},${y + 3}Z`
                                   : `M${x},${y + 6}L${x - 5},${y - 3}L${x + 5},${y - 3}Z` });
      } else {
        const colour = p.kind === "baseline" ? COLOURS.baseline : (COLOURS[p.status] || "#98a2b3");
        shape = s("circle", { class: "pt", cx: x, cy: ys(p.mean), r: p.kept ? 5 : 3.5, fill: colour });
      }
      shape.dataset.n = p.n;
      shape.addEventListener("mousemove", (ev) => showTip(ev, lines));
      shape.addEventListener("mouseleave", hideTip);
      shape.addEventListener("click", () => { hideTip(); onOpen(p.n); });
      layer.append(shape);
    }
    svg.append(layer);
    return svg;
  }

  // One training curve (a value against step) of the running experiment, over the champion's at the
  // same steps (dashed).
  function curve(points, champion, key, { width = 420, height = 220 } = {}) {
    const W = width, H = height, m = { l: 52, r: 10, t: 10, b: 32 };
    const svg = s("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${key} against step` });
    const series = [points || [], champion || []].map((ps) => ps.filter((p) => finite(p[key]) && finite(p.step)));
    const all = series.flat();
    if (!all.length) {
      svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, `no ${key} yet`));
      return svg;
    }
    const steps = all.map((p) => p.step), vals = all.map((p) => p[key]);
    const total = Math.max(...all.map((p) => (finite(p.total) ? p.total : p.step)));
    const xs = scale(Math.min(0, ...steps), Math.max(total, ...steps), m.l, W - m.r); xs.integer = true;
    let lo = Math.min(...vals), hi = Math.max(...vals);
    const pad = (hi - lo || Math.abs(hi) || 1) * 0.08;
    const ys = scale(lo - pad, hi + pad, H - m.b, m.t);
    svg.append(frame(W, H, m, xs, ys, "step", key));
    series.forEach((ps, i) => {
      if (!ps.length) return;
      const d = ps.map((p, j) => `${j ? "L" : "M"}${xs(p.step)},${ys(p[key])}`).join("");
      svg.append(s("path", { class: i ? "curve champ" : "curve", d }));
      if (!i) {
        const last = ps[ps.length - 1];
        svg.append(s("circle", { cx: xs(last.step), cy: ys(last[key]), r: 3, fill: "#1f77b4" },
                     s("title", {}, `step ${last.step}: ${key} ${fmt(last[key])}`)));
      }
    });
    return svg;
  }

  function curveKeys(...lists) {
    const keys = new Set();
    for (const ps of lists) for (const p of ps || []) for (const k of Object.keys(p)) if (k !== "step" && k !== "total") keys.add(k);
    const out = [...keys];
    out.sort((a, b) => (a === "loss" ? -1 : b === "loss" ? 1 : 0));
    return out;
  }

  return { h, s, fmt, duration, finite, progress, curve, curveKeys, showTip, hideTip, visible };
})();
