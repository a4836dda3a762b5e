// autoresearch dashboard: the pages. Hash routes (#/, #/now, #/experiments, #/e/12, #/compare/3/7,
// #/steer); live updates from the server's event stream (/events). Text is only ever set as text.
"use strict";

(() => {
  const { h, fmt, duration, finite } = AR;
  const view = document.getElementById("view");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const state = { summary: null, ledgerSeq: -1, logsSeq: -1, page: null, tableFilters: { q: "", status: "", phase: "", agent: "" },
                  sort: { key: "number", dir: -1 }, curveKey: {} };

  // --- talking to the server -------------------------------------------------------------------------
  async function api(path) {
    const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(`${path}: ${r.status} ${(await r.text()).slice(0, 200)}`);
    return r.json();
  }
  async function post(path, body) {
    const r = await fetch(path, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body) });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || `${r.status}`);
    return data;
  }

  // --- small pieces ----------------------------------------------------------------------------------
  const status = (st) => h("span", { class: `st st-${st}` }, st);
  const pm = (mean, std) => (finite(mean) ? `${fmt(mean)}${finite(std) ? ` ± ${fmt(std, 2)}` : ""}` : "—");
  const signed = (x) => (finite(x) ? (x > 0 ? "+" : "") + fmt(x, 3) : "—");
  const link = (n, text) => h("a", { href: `#/e/${Number(n)}`, class: "num" }, text ?? `#${n}`);
  const card = (k, v, sub) => h("div", { class: "card" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v),
                                sub ? h("div", { class: "s" }, sub) : null);
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
  // the ledger's control: "run" only means nobody asked for a pause or a stop (the loop may not be running)
  const CONTROL = { run: "not paused", pause: "paused after the current experiment", stop: "stop requested" };
  const usd = (x) => (finite(x) ? `$${x >= 1 ? x.toFixed(2) : x.toPrecision(3)}` : "—");

  function diffBlock(text) {
    if (text === null || text === undefined) return h("p", { class: "muted" }, "no commit, so no diff (an invalid edit is undone before any commit)");
    if (!text.trim()) return h("p", { class: "muted" }, "no difference");
    const pre = h("pre", { class: "diff" });
    for (const line of text.replace(/\n$/, "").split("\n")) {
      let cls = "";
      if (line.startsWith("diff --git") || line.startsWith("+++") || line.startsWith("---") || line.startsWith("index ")) cls = "file";
      else if (line.startsWith("@@")) cls = "hunk";
      else if (line.startsWith("+")) cls = "add";
      else if (line.startsWith("-")) cls = "del";
      pre.append(h("span", { class: cls }, line || " "));
    }
    return pre;
  }

  function kvTable(obj) {
    const t = h("table", { class: "kv" });
    for (const [k, v] of Object.entries(obj || {})) {
      let text;
      if (typeof v === "number") text = fmt(v);
      else if (Array.isArray(v)) text = v.map((x) => (Array.isArray(x) ? `[${x.map((y) => fmt(y)).join(", ")}]` : typeof x === "number" ? fmt(x) : String(x))).join(", ");
      else if (v && typeof v === "object") text = JSON.stringify(v);
      else text = v === null || v === undefined ? "—" : String(v);
      t.append(h("tr", {}, h("td", {}, k), h("td", {}, text)));
    }
    return t;
  }

  function curvesPanel(curves, championCurves, id) {
    const labels = Object.keys(curves || {});
    if (!labels.some((l) => curves[l].length)) return h("p", { class: "muted" }, "no training lines yet (lines like “step 50/400 loss 3.12” are plotted)");
    const keys = AR.curveKeys(...labels.map((l) => curves[l]));
    if (!keys.length) return h("p", { class: "muted" }, "the log has step lines but no values to plot");
    const key = keys.includes(state.curveKey[id]) ? state.curveKey[id] : keys[0];
    const select = h("select", { onchange: (ev) => { state.curveKey[id] = ev.target.value; refresh(true); } },
                     keys.map((k) => h("option", { value: k, selected: k === key ? "" : null }, k)));
    const charts = h("div", { class: "charts" });
    for (const label of labels) {
      const champ = (championCurves || {})[label.split("/").pop()];
      charts.append(h("div", { class: "chart" }, h("h4", {}, label, champ ? h("span", { class: "muted" }, "  (dashed: the champion)") : null),
                      AR.curve(curves[label], champ, key)));
    }
    return h("div", {}, h("div", { class: "filters" }, "value: ", select), charts);
  }

  // Elapsed times go on counting between updates (a quiet training run prints nothing for minutes).
  const ticker = (sec) => (finite(sec) ? h("span", { class: "tick", "data-base": sec, "data-at": Date.now() }, duration(sec)) : "—");
  setInterval(() => {
    for (const e of document.querySelectorAll(".tick")) {
      const sec = Number(e.dataset.base) + (Date.now() - Number(e.dataset.at)) / 1000;
      e.textContent = duration(sec);
      const bar = e.dataset.limit && document.getElementById(e.dataset.bar);
      if (bar) bar.style.width = `${Math.min(100, (100 * sec) / Number(e.dataset.limit)).toFixed(1)}%`;
    }
  }, 1000);

  // --- header and live updates -------------------------------------------------------------------------
  function renderHeader() {
    const sm = state.summary;
    if (!sm) return;
    document.getElementById("tag").textContent = sm.tag;
    const c = sm.champion;
    const running = sm.running.length ? ` · running #${sm.running.map((r) => r.number).join(", #")}` : "";
    document.getElementById("headline").textContent = AR.visible(
      (c ? `champion #${c.number}: ${sm.metric} ${pm(c.mean, c.std)} (${sm.direction_words})` : "no champion yet") +
      ` · phase ${sm.phase.label}${running}`);
    const badge = document.getElementById("control-badge");
    badge.className = `badge ${sm.control}`;
    badge.textContent = CONTROL[sm.control] || sm.control;
    document.title = `autoresearch ${sm.tag}`;
  }

  function connect() {
    const live = document.getElementById("live");
    const source = new EventSource("/events");
    source.addEventListener("open", () => { live.className = "live on"; live.textContent = "live"; });
    source.addEventListener("error", () => { live.className = "live off"; live.textContent = "reconnecting…"; });
    source.addEventListener("change", (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.summary) { state.summary = msg.summary; renderHeader(); }
      const ledger = msg.ledger_seq !== state.ledgerSeq, logs = msg.logs_seq !== state.logsSeq;
      state.ledgerSeq = msg.ledger_seq; state.logsSeq = msg.logs_seq;
      if (ledger || (logs && state.page && state.page.live)) refresh(false);
    });
  }

  // --- pages -------------------------------------------------------------------------------------------
  // Each page: {tab, live (refresh on log growth too), load(): data, render(data)}. A refresh re-renders
  // only when the data changed, so reading a page is not disturbed by updates elsewhere.
  const pages = {};

  function wallTime(t) {
    if (!finite(t.first_started)) return "—";
    return t.running ? ticker(Date.now() / 1000 - t.first_started) : duration((t.last_ended ?? t.first_started) - t.first_started);
  }

  pages.overview = () => ({
    tab: "overview", live: false,
    load: () => api("/api/overview"),
    render(d) {
      const c = d.champion;
      const counts = Object.entries(d.counts).sort().map(([k, v]) => `${v} ${k}`).join(", ") || "none yet";
      const sigma = d.noise ? d.noise.sigma : c && c.std;
      const sigmaLabel = d.noise ? `noise floor σ ${fmt(d.noise.sigma, 3)}` : "no noise floor measured: the champion's σ between folds";
      const plot = AR.progress(d.plot, { metric: d.metric, direction: d.direction_words, sigma, sigmaLabel,
                                         onOpen: (n) => { location.hash = `#/e/${n}`; } });
      const nowLine = d.running.length
        ? h("p", {}, "Running: ", d.running.map((r) => [link(r.number), " ", r.description, " "]), h("a", { href: "#/now" }, "watch it live →"))
        : h("p", { class: "muted" }, d.control === "pause" ? "Paused: nothing running." : "Nothing running right now.");
      return [
        h("div", { class: "cards" },
          card("champion", c ? `${pm(c.mean, c.std)}` : "—", c ? [link(c.number), " ", c.description] : "no champion yet"),
          card("phase", d.phase.label, d.phase.budget ? `${d.phase.used} used, budget ${d.phase.budget}` : `${d.phase.used} used, no budget`),
          card("experiments", String(d.n_experiments), counts),
          card("time", wallTime(d.time), `${duration(d.time.train_s)} training, ${duration(d.time.agent_s)} agent`),
          card("agent cost", usd(d.cost_usd), `${(d.tokens || 0).toLocaleString()} tokens`),
          card("noise", d.noise ? `σ ${fmt(d.noise.sigma, 3)}` : "not measured", d.noise ? `${d.noise.n_repeats} runs of the champion` : "`autoresearch baseline` measures it"),
          card("control", CONTROL[d.control] || d.control, h("a", { href: "#/steer" }, "steer →"))),
        nowLine,
        h("div", { class: "panel" }, h("h3", {}, `Progress: ${d.metric}, ${d.direction_words}`),
          h("div", { class: "legend" }, h("span", {}, h("i", { class: "dot keep" }), "kept"),
            h("span", {}, h("i", { class: "dot discard" }), "discarded"),
            h("span", {}, h("i", { class: "dot champ" }), "baseline / champion"),
            h("span", {}, h("i", { class: "dot fail" }), "failed (×, bottom edge)"),
            h("span", {}, `band: champion ± 2σ (${sigmaLabel})`), h("span", {}, "hover a point, click to open")),
          plot),
        notesList(d.notes.slice(-5).reverse(), "Latest notes for the agent"),
      ];
    },
  });

  function runTick(sec, limit, bar) {
    const e = ticker(sec);
    if (typeof e !== "string" && limit) { e.dataset.limit = limit; e.dataset.bar = bar; }
    return e;
  }

  pages.now = () => ({
    tab: "now", live: true,
    load: () => api("/api/now"),
    render(d) {
      if (!d.running.length) {
        return [h("h2", {}, "Now"), h("p", { class: "muted" },
          d.control === "pause" ? "The loop is paused: nothing is running. Resume it from Steer." : "Nothing is running right now.")];
      }
      return d.running.flatMap((r) => {
        const limit = d.timeout_s, el = r.run_elapsed_s;
        const frac = finite(el) && limit ? Math.min(1, el / limit) : 0;
        const runs = Object.entries(r.runs).map(([k, v]) => `${k}: ${v.finished ? v.outcome : "in progress"}`).join(" · ");
        return [
          h("h2", {}, "Now: ", link(r.number), " ", status(r.status)),
          h("div", { class: "desc" }, r.description),
          r.hypothesis ? h("p", {}, h("b", {}, "hypothesis: "), r.hypothesis) : null,
          h("p", { class: "muted" }, `phase ${r.phase_title || "—"} · agent ${r.agent || "—"} · ${r.changed || ""}`),
          h("div", { class: "panel" },
            h("div", {}, "this run: ", runTick(el, limit, `bar-${r.number}`), ` of its ${duration(limit)} limit · experiment `,
              ticker(r.elapsed_s), ` so far · ${runs || "starting"}`),
            h("div", { class: frac > 0.9 ? "bar late" : "bar" }, h("div", { id: `bar-${r.number}`, style: { width: `${(100 * frac).toFixed(1)}%` } }))),
          h("h3", {}, "Training curves"),
          curvesPanel(r.curves, d.champion_curves, "now"),
          h("h3", {}, "Diff against the champion"), diffBlock(r.diff),
        ];
      });
    },
  });

  pages.experiments = () => {
    let rows = [], metric = "metric", tbody, counter, selects = {};
    const cols = [["number", "#", "n"], ["status", "status"], ["mean", "", "n"], ["delta", "Δ", "n"], ["phase", "phase", "n"],
                  ["agent", "agent"], ["description", "description"], ["started_at", "started"], ["cost_usd", "cost", "n"]];
    function visible() {
      const f = state.tableFilters, q = f.q.toLowerCase();
      const out = rows.filter((r) => (!f.status || r.status === f.status) && (!f.phase || String(r.phase) === f.phase) &&
        (!f.agent || r.agent === f.agent) && (!q || r.description.toLowerCase().includes(q) || String(r.number) === q));
      const { key, dir } = state.sort;
      out.sort((a, b) => {
        const x = a[key], y = b[key];
        if (x === y) return (a.number - b.number) * dir;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * dir;
      });
      return out;
    }
    function fillBody() {
      const shown = visible();
      const frag = document.createDocumentFragment();
      for (const r of shown) {
        const tr = h("tr", { class: `click row-${r.status}`, "data-n": r.number, onclick: () => { location.hash = `#/e/${r.number}`; } },
          h("td", { class: "n" }, link(r.number, String(r.number))), h("td", {}, status(r.status)),
          h("td", { class: "n" }, pm(r.mean, r.std)), h("td", { class: "n" }, signed(r.delta)),
          h("td", { class: "n", title: r.phase_title || "" }, r.phase ?? ""), h("td", {}, r.agent),
          h("td", {}, r.description), h("td", {}, when(r.started_at)), h("td", { class: "n" }, usd(r.cost_usd)));
        frag.append(tr);
      }
      tbody.replaceChildren(frag);
      counter.textContent = `${shown.length} of ${rows.length} shown`;
    }
    function options(select, values, current) {
      select.replaceChildren(h("option", { value: "" }, "all"), ...values.map((v) => h("option", { value: v, selected: v === current ? "" : null }, v)));
    }
    return {
      tab: "experiments", live: false,
      load: () => api("/api/experiments"),
      render(d) {
        rows = d.rows; metric = d.metric;
        if (!tbody) {
          const f = state.tableFilters;
          const search = h("input", { type: "search", placeholder: "search descriptions", value: f.q,
                                      oninput: (ev) => { f.q = ev.target.value; fillBody(); } });
          for (const k of ["status", "phase", "agent"]) selects[k] = h("select", { onchange: (ev) => { f[k] = ev.target.value; fillBody(); } });
          counter = h("span", { class: "muted" });
          const head = h("tr", {}, cols.map(([key, label, cls]) => h("th", { class: `sortable ${cls || ""}`, "data-key": key,
            onclick: () => { state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : (key === "number" ? -1 : 1) }; renderHead(); fillBody(); } }, label || metric)));
          tbody = h("tbody");
          this.nodes = [h("h2", {}, "Experiments"),
            h("div", { class: "filters" }, search, "status", selects.status, "phase", selects.phase, "agent", selects.agent, counter),
            h("table", { id: "experiments" }, h("thead", {}, head), tbody)];
          this.head = head;
        }
        const uniq = (k) => [...new Set(rows.map((r) => r[k]).filter((v) => v !== null && v !== ""))].map(String).sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
        for (const k of ["status", "phase", "agent"]) options(selects[k], uniq(k), state.tableFilters[k]);
        const renderHead = () => {
          for (const th of this.head.children) {
            const [key, label] = cols.find((c) => c[0] === th.dataset.key);
            th.textContent = (label || metric) + (state.sort.key === key ? (state.sort.dir > 0 ? " ▲" : " ▼") : "");
          }
        };
        renderHead();
        fillBody();
        return this.nodes;
      },
    };
  };

  pages.experiment = (n) => ({
    tab: "experiments", live: true,
    load: () => api(`/api/experiments/${n}`),
    render(d) {
      const git = d.git;
      const decision = d.decision || {};
      const foldRows = (d.folds || []).map((v, i) => {
        const m = Array.isArray(d.metrics) ? d.metrics[i] || {} : {};
        return [i, v, m];
      });
      const mkeys = [...new Set(foldRows.flatMap(([, , m]) => Object.keys(m || {}).filter((k) => typeof m[k] === "number" && k !== d.metric_name)))];
      const cmp = d.champion_number !== null && d.champion_number !== d.number
        ? h("a", { href: `#/compare/${d.champion_number}/${d.number}` }, `compare with the champion #${d.champion_number}`) : null;
      return [
        h("p", {}, h("a", { href: `#/e/${d.number - 1}` }, "← previous"), "  ", h("a", { href: `#/e/${d.number + 1}` }, "next →"), "   ", cmp),
        h("h2", {}, `Experiment ${d.number} `, status(d.status), h("span", { class: "muted" }, `  ${d.kind} · tag ${d.tag}`)),
        h("div", { class: "desc", id: "description" }, d.description),
        d.hypothesis ? h("p", {}, h("b", {}, "hypothesis: "), d.hypothesis) : null,
        h("p", {}, h("b", {}, "decision: "), d.reason || "—"),
        h("div", { class: "cards" },
          card(d.metric_name, pm(d.mean, d.std), `Δ ${signed(d.delta)} vs champion ${fmt(d.champion_metric)}`),
          card("phase", d.phase_title || "—", `attempt ${d.attempt ?? "—"} · agent ${d.agent || "—"}`),
          card("time", duration(d.seconds), `agent ${duration(d.agent_seconds)} · training ${duration(d.train_seconds)} · scoring ${duration(d.score_seconds)}`),
          card("cost", usd(d.cost_usd), `${(d.tokens_in || 0).toLocaleString()} in, ${(d.tokens_out || 0).toLocaleString()} out`),
          card("memory", finite(d.peak_memory_gb) ? `${fmt(d.peak_memory_gb, 3)} GB` : "—", d.sandbox === null ? "" : d.sandbox ? "sandboxed" : "NOT sandboxed"),
          card("started", when(d.started_at), `ended ${when(d.ended_at)}`)),
        h("div", { class: "two" },
          h("div", {}, h("h3", {}, "Per fold"),
            h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "fold"), h("th", { class: "n" }, d.metric_name), mkeys.map((k) => h("th", { class: "n" }, k)))),
              h("tbody", {}, foldRows.map(([i, v, m]) => h("tr", {}, h("td", {}, i), h("td", { class: "n" }, fmt(v)), mkeys.map((k) => h("td", { class: "n" }, fmt(m[k])))))))),
          h("div", {}, h("h3", {}, "Decision evidence"),
            decision.numbers ? kvTable(decision.numbers) : h("p", { class: "muted" }, "no decision recorded (the run failed or was undone)"))),
        h("h3", {}, "Git"),
        kvTable({ "archive ref": git.archive_ref || "—", commit: git.commit || "—", candidate: git.candidate || "—", parent: git.parent || "—",
                  "to look at it": git.archive_ref ? `git show ${git.archive_ref}` : git.commit ? `git show ${git.commit}` : "—" }),
        h("h3", {}, "Diff"), diffBlock(d.diff),
        h("h3", {}, "Training curves"), curvesPanel(d.curves, {}, `e${d.number}`),
        h("h3", {}, "Log tail"),
        Object.keys(d.logs).length ? Object.entries(d.logs).map(([k, v]) => [h("h4", {}, k), h("pre", { class: "log" }, v)])
          : h("p", { class: "muted" }, "no logs"),
        h("h3", {}, "Scratchpad after this experiment"),
        d.scratchpad === null ? h("p", { class: "muted" }, "no commit, so no scratchpad") : h("pre", { class: "pad" }, d.scratchpad),
      ];
    },
  });

  pages.compare = (a, b) => ({
    tab: "compare", live: false,
    load: async () => ({ cmp: a !== undefined && b !== undefined ? await api(`/api/compare?a=${Number(a)}&b=${Number(b)}`) : null,
                         tags: (await api("/api/overview")).tags }),
    render(d) {
      const ia = h("input", { type: "number", min: 0, value: a ?? "", placeholder: "#" });
      const ib = h("input", { type: "number", min: 0, value: b ?? "", placeholder: "#" });
      const go = () => { if (ia.value !== "" && ib.value !== "") location.hash = `#/compare/${Number(ia.value)}/${Number(ib.value)}`; };
      const tagPick = (input) => h("select", { onchange: (ev) => { input.value = ev.target.value; } },
        h("option", { value: "" }, "or a tag's champion"), d.tags.map((t) => h("option", { value: t.number }, `${t.tag}: #${t.number} (${fmt(t.mean)})`)));
      const out = [h("h2", {}, "Compare"),
        h("div", { class: "filters" }, "experiment ", ia, tagPick(ia), " with ", ib, tagPick(ib), h("button", { class: "primary", onclick: go }, "compare"))];
      if (!d.cmp) return out.concat(h("p", { class: "muted" }, "Pick two experiments (from any tags)."));
      const { a: x, b: y, metric } = d.cmp;
      const row = (label, f) => h("tr", {}, h("td", {}, label), h("td", {}, f(x)), h("td", {}, f(y)));
      const folds = Math.max(x.folds.length, y.folds.length);
      const foldRows = [];
      for (let i = 0; i < folds; i++) foldRows.push(row(`fold ${i}`, (r) => fmt(r.folds[i])));
      out.push(h("table", { class: "kv" },
        h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, link(x.number)), h("th", {}, link(y.number)))),
        h("tbody", {}, row("tag", (r) => r.tag), row("status", (r) => status(r.status)), row("description", (r) => r.description),
          row("hypothesis", (r) => r.hypothesis || "—"), row(metric, (r) => pm(r.mean, r.std)), row("Δ vs its champion", (r) => signed(r.delta)),
          foldRows, row("phase", (r) => r.phase_title || "—"), row("agent", (r) => r.agent || "—"), row("cost", (r) => usd(r.cost_usd)),
          row("commit", (r) => (r.commit || "—").slice(0, 12)))),
        h("h3", {}, `Diff from #${x.number} to #${y.number}`), diffBlock(d.cmp.diff));
      return out;
    },
  });

  // What `autoresearch ablate` and `transfer` found about the champion (the same tables as the report).
  pages.findings = () => ({
    tab: "findings", live: false,
    load: () => api("/api/findings"),
    render(d) {
      const out = [h("h2", {}, "Findings")];
      const a = d.ablation;
      if (!a) {
        out.push(h("p", { class: "muted", id: "no-ablation" }, "The champion has not been ablated: `autoresearch ablate` runs it without each kept change, paired with the champion on fresh seeds."));
      } else {
        out.push(h("h3", {}, `Ablation of champion #${a.champion}`),
          h("p", { class: "muted" }, `${a.seeds.length} fresh seeds × every fold, paired · ${d.metric} (${d.direction_words}) · ${a.rule}`),
          h("table", { id: "ablation" },
            h("thead", {}, h("tr", {}, ["kept change", "changed", "gain when kept", "contribution now (95% CI)", "verdict", "variant"].map((c) => h("th", {}, c)))),
            h("tbody", {}, a.cells.map((c) => h("tr", {},
              h("td", {}, c.change), h("td", {}, c.changed), h("td", { class: "n" }, c.kept), h("td", { class: "n" }, c.now),
              h("td", { class: c.verdict === "matters" ? "st-keep" : "" }, c.verdict), h("td", { class: "muted" }, c.how))))));
      }
      if (!d.transfers.length) {
        out.push(h("p", { class: "muted" }, "No transfer yet: `autoresearch transfer --seeds 3 [--set NAME=VALUE] [--preset P] [--data DIR]`."));
      }
      for (const t of d.transfers) {
        out.push(h("h3", {}, `Transfer: ${t.words}`),
          h("p", {}, `gain when tuned ${signed(t.tuned_gain)} · there ${t.gain_text || "—"} · `, h("b", {}, t.verdict)),
          h("table", { class: "transfer" },
            h("thead", {}, h("tr", {}, ["code", `${d.metric} there`, "champion's gain over it", "verdict"].map((c) => h("th", {}, c)))),
            h("tbody", {}, t.lines.map((l) => h("tr", {}, h("td", {}, l.name), h("td", { class: "n" }, fmt(l.mean)),
              h("td", { class: "n" }, l.name === "baseline" ? (t.gain_text || "—") : (l.vs_text || "")),
              h("td", {}, l.failed || (l.name === "baseline" ? t.verdict : l.verdict)))))),
          t.warnings.length ? h("ul", {}, t.warnings.map((w) => h("li", { class: "muted" }, w))) : null);
      }
      return out;
    },
  });

  function notesList(notes, title) {
    return h("div", { class: "panel" }, h("h3", {}, title),
      notes.length ? h("ul", { class: "notes", id: "notes" }, notes.map((n) => h("li", {}, h("span", { class: "muted" }, `${when(n.time)} · `),
        n.delivered_to === null ? h("b", {}, "pending (goes into the next brief) ") : ["delivered to ", link(n.delivered_to), " "], h("span", { class: "note-text" }, n.text))))
        : h("p", { class: "muted" }, "no notes yet"));
  }

  pages.steer = () => ({
    tab: "steer", live: false,
    load: async () => ({ summary: await api("/api/summary"), notes: (await api("/api/notes")).notes }),
    render(d) {
      const msg = h("p", { class: "muted", id: "steer-message" });
      const act = (action) => async () => {
        try { const r = await post("/api/control", { action }); msg.textContent = `control: ${r.control}`; msg.className = "muted"; refresh(true); }
        catch (e) { msg.textContent = e.message; msg.className = "error"; }
      };
      const box = h("textarea", { id: "note-text", maxlength: 4000, placeholder: "e.g. try a cosine schedule before touching the width" });
      const send = async () => {
        try { await post("/api/notes", { text: box.value }); box.value = ""; msg.textContent = "note recorded: it goes into the next brief"; msg.className = "muted"; refresh(true); }
        catch (e) { msg.textContent = e.message; msg.className = "error"; }
      };
      const c = d.summary.control;
      const running = d.summary.running.map((r) => `#${r.number}`).join(", ");
      return [
        h("h2", {}, "Steer"),
        h("p", {}, "The loop reads these between experiments: a pause or stop takes effect once the current experiment ",
          "has finished (", running ? `now running: ${running}` : "none running now", "); `autoresearch run` resumes after a stop."),
        h("div", { class: "filters" },
          h("button", { id: "btn-pause", onclick: act("pause"), disabled: c === "pause" ? "" : null }, "Pause after this experiment"),
          h("button", { id: "btn-resume", class: "primary", onclick: act("resume"), disabled: c === "run" ? "" : null }, "Resume"),
          h("button", { id: "btn-stop", class: "danger", onclick: act("stop"), disabled: c === "stop" ? "" : null }, "Stop after this experiment"),
          h("span", { id: "control-state" }, `now: ${CONTROL[c] || c}`)),
        msg,
        h("h3", {}, "A note for the agent"),
        h("p", { class: "muted" }, "Added to the next brief as “a note from the researcher: …” and recorded in the ledger (`autoresearch brief` shows a pending one)."),
        box, h("p", {}, h("button", { id: "btn-note", class: "primary", onclick: send }, "Add the note")),
        notesList(d.notes.slice().reverse(), "Notes"),
      ];
    },
  });

  // --- routing -----------------------------------------------------------------------------------------
  function route() {
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
    const [name, a, b] = parts;
    if (name === "e" && a !== undefined) return pages.experiment(Number(a));
    if (name === "compare") return pages.compare(a === undefined ? undefined : Number(a), b === undefined ? undefined : Number(b));
    return (pages[name] || pages.overview)();
  }

  let loading = null, again = null;
  async function refresh(force) {
    if (loading) { again = again === "force" || force ? "force" : "changed"; return loading; }
    const page = state.page;
    loading = (async () => {
      try {
        const data = await page.load();
        const text = JSON.stringify(data);
        if (page !== state.page) return;
        if (!force && text === page.last) return;
        page.last = text;
        const nodes = page.render(data);
        if (page.nodes !== nodes || !view.contains(nodes[0])) view.replaceChildren(...[nodes].flat(Infinity).filter(Boolean));
      } catch (e) {
        if (page === state.page) view.replaceChildren(h("p", { class: "error" }, `could not load: ${e.message}`));
      }
    })();
    await loading;
    loading = null;
    if (again) { const forced = again === "force"; again = null; refresh(forced); }
  }

  function navigate() {
    state.page = route();
    for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === state.page.tab);
    AR.hideTip();
    view.replaceChildren(h("p", { class: "muted" }, "loading…"));
    refresh(true);
  }

  window.addEventListener("hashchange", navigate);
  api("/api/summary").then((sm) => { state.summary = sm; renderHeader(); }).catch(() => {});
  navigate();
  connect();
})();
