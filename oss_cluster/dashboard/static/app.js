// The OpenSuperSampling research dashboard: plain JavaScript, no library. Pages are routes of the URL hash;
// data.json holds the runs table, tiers, sweeps, cost and claims, run/<name>.json one run's details.
"use strict";

const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#bf3989", "#1b7c83", "#57606a"];
let DATA = null;
const RUN_CACHE = {};
const SORT = { key: "name", dir: 1 };
const FILTER = { family: "", tier: "", status: "" };

// ---------- small helpers ----------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children.flat()) if (child) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}
const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const fmt = (v, digits = 3) => (isNum(v) ? v.toFixed(digits) : "–");
const money = (v) => (isNum(v) ? "$" + v.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 }) : "–");
const statusClass = (s) => "status status-" + String(s || "").replace(/\s+/g, "-");
const badge = (s, title, look) => el("span", { class: statusClass(look || s), title: title || null }, s || "–");
// Markdown's `code` spans as <code>, the rest as text.
const withCode = (text) => String(text || "").split("`").map((part, i) => (i % 2 ? el("code", {}, part) : part));
const runLink = (name) => [el("a", { href: "#/run/" + encodeURIComponent(name) }, name),
  el("a", { class: "info", href: "#/names", title: "how runs are named" }, "i")];

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}
async function loadRun(name) {
  if (!RUN_CACHE[name]) RUN_CACHE[name] = await getJSON("run/" + encodeURIComponent(name) + ".json");
  return RUN_CACHE[name];
}

// ---------- charts: SVG line charts drawn here ----------
function niceTicks(lo, hi, count) {
  if (lo === hi) { lo -= 1; hi += 1; }
  const raw = (hi - lo) / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}
function lineChart(title, series, opts = {}) {
  const W = 440, H = 230, L = 58, R = 12, T = 10, B = 34;
  const points = series.flatMap((s) => s.points).filter((p) => isNum(p[0]) && isNum(p[1]));
  const box = el("div", { class: "chart", "data-chart": title });
  box.append(el("div", { class: "title" }, title));
  if (!points.length) { box.append(el("p", { class: "muted" }, "no values yet")); return box; }
  let [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...points.map((p) => p[1])), Math.max(...points.map((p) => p[1]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { const d = Math.abs(y0) * 0.05 || 1; y0 -= d; y1 += d; }
  const pad = (y1 - y0) * 0.06; y0 -= pad; y1 += pad;
  const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const Y = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  for (const t of niceTicks(y0, y1, 5)) {
    plot.append(svg("line", { x1: L, x2: W - R, y1: Y(t), y2: Y(t), stroke: "#eaeef2" }));
    plot.append(svg("text", { x: L - 6, y: Y(t) + 4, "text-anchor": "end", "font-size": 10, fill: "#57606a" },
      Math.abs(t) >= 1e4 || (Math.abs(t) < 1e-3 && t !== 0) ? t.toExponential(1) : +t.toPrecision(4)));
  }
  for (const t of niceTicks(x0, x1, 6)) {
    plot.append(svg("text", { x: X(t), y: H - B + 14, "text-anchor": "middle", "font-size": 10, fill: "#57606a" }, t));
  }
  plot.append(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", "font-size": 10, fill: "#57606a" }, opts.xLabel || "step"));
  plot.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#d0d7de" }));
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => isNum(p[0]) && isNum(p[1]));
    if (!pts.length) return;
    const color = s.color || COLORS[i % COLORS.length];
    plot.append(svg("polyline", { points: pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" "),
      fill: "none", stroke: color, "stroke-width": 1.6, "stroke-dasharray": s.dash || "" }));
    for (const p of pts.length <= 60 ? pts : []) {
      plot.append(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.4, fill: color },
        svg("title", {}, `${s.name}: step ${p[0]}, ${+p[1].toPrecision(6)}`)));
    }
  });
  box.append(plot);
  box.append(el("div", { class: "legend" }, series.map((s, i) =>
    el("span", {}, el("i", { style: `background:${s.color || COLORS[i % COLORS.length]}` }), s.name))));
  return box;
}
const curve = (rows, key) => rows.filter((r) => isNum(r[key])).map((r) => [r.step, r[key]]);

// ---------- lightbox: strip zoom and a model / ground-truth slider ----------
const LIGHTBOX = { zoom: 2 };
function openLightbox(title, strip) {
  const view = document.getElementById("lightbox-view");
  const slider = document.getElementById("lightbox-slider");
  const note = document.getElementById("lightbox-note");
  view.replaceChildren();
  document.getElementById("lightbox-title").textContent = title;
  const panels = strip.panels || {};
  const frame = el("div", { class: "compare" });
  if (panels.model && panels.GT) {
    const top = el("img", { class: "top", src: panels.model, alt: "model" });
    const bottom = el("img", { class: "bottom", src: panels.GT, alt: "ground truth" });
    const divider = el("div", { class: "divider" });
    frame.append(bottom, top, divider);
    slider.disabled = false;
    const apply = () => {
      const v = Number(slider.value);
      top.style.clipPath = `inset(0 ${100 - v}% 0 0)`;  // model left of the divider, ground truth right
      divider.style.left = v + "%";
    };
    slider.oninput = apply;
    apply();
    note.textContent = "Left of the line: the model; right: the ground truth. Drag the slider; +/− or the wheel zoom.";
  } else {
    frame.append(el("img", { src: strip.url, alt: title }));
    slider.disabled = true;
    note.textContent = "This strip was written before strips recorded their panel layout: zoom only, no slider.";
  }
  view.append(frame);
  const base = frame.querySelector("img");
  const zoom = (z) => {
    LIGHTBOX.zoom = Math.min(16, Math.max(0.5, z));
    // Sized, not transformed: the view scrolls over the enlarged picture (pixels stay square: pixelated).
    if (base.naturalWidth) frame.style.width = base.naturalWidth * LIGHTBOX.zoom + "px";
    document.getElementById("zoom-level").textContent = LIGHTBOX.zoom + "×";
  };
  base.addEventListener("load", () => zoom(LIGHTBOX.zoom));
  document.getElementById("zoom-in").onclick = () => zoom(LIGHTBOX.zoom * 2);
  document.getElementById("zoom-out").onclick = () => zoom(LIGHTBOX.zoom / 2);
  view.onwheel = (event) => { event.preventDefault(); zoom(LIGHTBOX.zoom * (event.deltaY < 0 ? 2 : 0.5)); };
  zoom(LIGHTBOX.zoom);
  document.getElementById("lightbox").hidden = false;
}
function closeLightbox() { document.getElementById("lightbox").hidden = true; }
document.getElementById("lightbox-close").onclick = closeLightbox;
document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeLightbox(); });

function stripFigure(title, strip) {
  return el("figure", {},
    el("img", { class: "strip", src: strip.url, alt: title, title: "open the compare view",
      onclick: () => openLightbox(title, strip) }),
    el("figcaption", {}, title, " — LR · bicubic · model · GT · |error| · features"));
}
function clipFigure(caption, url, kind) {
  return el("figure", {}, el("video", { src: url, controls: true, muted: true, loop: true, autoplay: true,
    playsinline: true, preload: "auto", class: kind || "clip" }), el("figcaption", {}, caption));
}

// ---------- pages ----------
function waitingOrError() {
  if (DATA.error) return el("div", { class: "error" }, el("strong", {}, "Storage cannot be read. "),
    DATA.error, el("p", {}, "The page retries on every rebuild; check the --runs location and credentials."));
  if (!DATA.runs.length) return el("div", { class: "waiting" }, el("h2", {}, "Waiting for runs"),
    el("p", {}, "No run under ", el("code", {}, DATA.storage), " yet. Start one, and it appears here:"),
    el("pre", {}, "python jobs/train_heavy.py --smoke"));
  return null;
}

function runsPage() {
  const empty = waitingOrError();
  if (empty) return empty;
  const options = (key) => ["", ...new Set(DATA.runs.map((r) => r[key]).filter(Boolean))].sort();
  const select = (key, label) => el("label", {}, label + " ",
    el("select", { "data-filter": key, onchange: (e) => { FILTER[key] = e.target.value; render(); } },
      options(key).map((v) => el("option", { value: v, selected: FILTER[key] === v }, v || "all"))));
  const columns = [
    ["name", "run", (r) => runLink(r.name)], ["family", "family"], ["version", "version"], ["tier", "tier"],
    ["status", "status", (r) => badge(r.status, r.status_detail)],
    ["step", "step / steps", (r) => `${r.step ?? 0} / ${r.steps ?? "?"}`, true],
    ["psnr", "PSNR model", (r) => fmt(r.metrics["model/psnr_rgb"], 2), true],
    ["psnr_bicubic", "bicubic", (r) => fmt(r.metrics["bicubic/psnr_rgb"], 2), true],
    ["psnr_taau", "TAAU", (r) => fmt(r.metrics["taau/psnr_rgb"], 2), true],
    ["flip", "FLIP model", (r) => fmt(r.metrics["model/flip"], 4), true],
    ["flip_bicubic", "bicubic", (r) => fmt(r.metrics["bicubic/flip"], 4), true],
    ["flip_taau", "TAAU", (r) => fmt(r.metrics["taau/flip"], 4), true],
    ["canvas_contribution", "canvas contrib.", (r) => fmt(r.canvas_contribution, 5), true],
    ["spend_usd", "spend so far", (r) => money(r.spend_usd) + (r.spend_unpriced && r.spend_unpriced.length ? " *" : ""), true],
  ];
  const value = (r, key) => ({ psnr: r.metrics["model/psnr_rgb"], psnr_bicubic: r.metrics["bicubic/psnr_rgb"],
    psnr_taau: r.metrics["taau/psnr_rgb"], flip: r.metrics["model/flip"], flip_bicubic: r.metrics["bicubic/flip"],
    flip_taau: r.metrics["taau/flip"] }[key] ?? r[key]);
  const rows = DATA.runs.filter((r) => Object.entries(FILTER).every(([k, v]) => !v || r[k] === v));
  rows.sort((a, b) => {
    const x = value(a, SORT.key), y = value(b, SORT.key);
    if (x === y) return 0;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * SORT.dir;
  });
  const head = el("tr", {}, columns.map(([key, label, , num]) => el("th", {
    class: "sortable" + (num ? " num" : "") + (SORT.key === key ? (SORT.dir > 0 ? " sorted-asc" : " sorted-desc") : ""),
    "data-sort": key, onclick: () => { SORT.dir = SORT.key === key ? -SORT.dir : 1; SORT.key = key; render(); },
  }, label)));
  const body = rows.map((r) => el("tr", { "data-run": r.name }, columns.map(([key, , cell, num]) =>
    el("td", { class: num ? "num" : null }, cell ? cell(r) : (r[key] ?? "–")))));
  return el("section", {}, el("h2", {}, "Runs"),
    el("div", { class: "filters" }, select("family", "family"), select("tier", "tier"), select("status", "status")),
    el("table", { id: "runs-table" }, el("thead", {}, head), el("tbody", {}, body)),
    el("p", { class: "muted" }, `${rows.length} of ${DATA.runs.length} runs. PSNR (dB, RGB) and FLIP are the steady state of the `,
      "latest evaluation on held-out sequences. A run marked running whose process is gone shows as lost. ",
      "* spend leaves out node types with no catalog price."));
}

function factsTable(run) {
  const groups = (run.worker_groups || []).map((g) => `${g.started_at}: ${Object.entries(g.node_types || {}).map(([k, v]) => `${k} x${v}`).join(", ")}` +
    (g.world_size ? `, ${g.world_size} workers` : "") + (g.resumed_from_step !== undefined ? `, resumed from step ${g.resumed_from_step}` : ""));
  const rows = [
    ["status", [badge(run.status), " ", run.status_detail]], ["model", run.model], ["tier", run.tier],
    ["steps", `${run.step} / ${run.steps ?? "?"}`], ["started", run.started_at], ["ended", run.ended_at || "–"],
    ["node types", Object.entries(run.node_types || {}).map(([k, v]) => `${k} x${v}`).join(", ") || "–"],
    ["worker groups", groups.length ? groups.map((g) => el("div", {}, g)) : "–"],
    ["attempts", (run.attempts || []).map((a) => el("div", {}, `${a.started_at} on ${a.host}${a.pid ? " (pid " + a.pid + ")" : ""}`))],
    ["checkpoints", run.checkpoints.length ? run.checkpoints.map((c) => el("div", {}, `step ${c.step ?? "?"}: ${c.key}`)) : "none"],
    ["spend so far", money(run.spend_usd)],
    ["supersedes", run.supersedes ? runLink(run.supersedes) : "–"],
    ["TensorBoard", run.tensorboard ? `tensorboard --logdir ${DATA.storage}/runs (folder ${run.name}/tensorboard)` : "no event files"],
  ];
  return el("table", { class: "facts" }, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
}

function runCharts(runs) {
  // One run: its own series; several (compare): one colour per run, each metric overlaid.
  const many = runs.length > 1;
  const pick = (label, rows, key, i, dash) => ({ name: many ? `${runs[i].name}${label ? " " + label : ""}` : label || key,
    points: curve(rows, key), color: COLORS[(many ? i : 0) % COLORS.length], dash });
  const charts = [];
  const per = (title, key, source) => charts.push(lineChart(title, runs.map((r, i) => pick("", r.curves[source], key, i))));
  per("training loss", "loss", "train");
  per("learning rate", "lr", "train");
  per("throughput (windows/s)", "samples_per_s", "train");
  if (many) {
    per("PSNR RGB, model (dB)", "model/psnr_rgb", "eval");
    per("FLIP, model", "model/flip", "eval");
  } else {
    const ev = runs[0].curves.eval;
    charts.push(lineChart("PSNR RGB, steady state (dB)", ["model", "bicubic", "taau"].map((who, i) =>
      ({ name: who, points: curve(ev, `${who}/psnr_rgb`), color: COLORS[i], dash: who === "model" ? "" : "4 3" }))));
    charts.push(lineChart("FLIP, steady state (lower is better)", ["model", "bicubic", "taau"].map((who, i) =>
      ({ name: who, points: curve(ev, `${who}/flip`), color: COLORS[i], dash: who === "model" ? "" : "4 3" }))));
  }
  if (runs.some((r) => r.curves.eval.some((e) => isNum(e["model/canvas_contribution"])))) {
    per("canvas contribution", "model/canvas_contribution", "eval");
    per("OSS-FX vs SR / motion at alpha 0.5", "extrapolation/a0.5/fx_vs_sr_over_motion", "eval");
  }
  return el("div", { class: "charts" }, charts);
}

function evaluationSection(run) {
  if (!run.evaluations.length) return el("p", { class: "muted" }, "No evaluations yet: python -m oss_cluster.evaluate --run " + run.name);
  return run.evaluations.map((ev) => {
    if (ev.error) return el("p", { class: "error" }, ev.error);
    const metrics = ["psnr_rgb", "psnr_y", "ssim_y", "flip", "warp_error", "flicker"];
    const table = el("table", {}, el("tr", {}, el("th", {}, "method"), metrics.map((m) => el("th", { class: "num" }, m))),
      Object.entries(ev.steady).map(([method, values]) => el("tr", {}, el("td", {}, method),
        metrics.map((m) => el("td", { class: "num" }, fmt(values[m], 4))))));
    const fx = Object.entries(ev.extrapolation || {});
    const fxTable = fx.length ? el("table", {}, el("tr", {}, el("th", {}, "alpha"), el("th", {}, "method"),
      el("th", { class: "num" }, "PSNR all"), el("th", { class: "num" }, "PSNR disoccluded"), el("th", { class: "num" }, "FLIP")),
      fx.flatMap(([alpha, methods]) => Object.entries(methods).filter(([, v]) => v && typeof v === "object").map(([method, v]) =>
        el("tr", {}, el("td", {}, alpha.slice(1)), el("td", {}, method), el("td", { class: "num" }, fmt(v.psnr_rgb, 3)),
          el("td", { class: "num" }, fmt(v.disoccluded_psnr_rgb, 3)), el("td", { class: "num" }, fmt(v.flip, 4)))))) : null;
    const media = ev.media.map((m) => el("div", { class: "clips" },
      m.strip ? stripFigure(`${ev.label}: ${m.sequence}`, m.strip) : null,
      m.clip ? clipFigure(`ground truth | TAAU | model — ${m.sequence}`, m.clip) : null,
      m.sr_fx_clip ? clipFigure(`continuous SR + OSS-FX stream (frames at t, t + 0.5, t + 1, …) — ${m.sequence}`, m.sr_fx_clip, "clip-fx") : null));
    return el("div", { class: "evaluation", "data-eval": ev.label },
      el("h4", {}, `${ev.label} (${ev.created_at || "?"})`), el("div", { class: "muted" }, "steady state"), table,
      fxTable ? [el("div", { class: "muted" }, "OSS-FX against the true frame at t + alpha"), fxTable] : null, media);
  });
}

async function runPage(name) {
  const run = await loadRun(name);
  const others = DATA.runs.map((r) => r.name).filter((n) => n !== name);
  const compare = el("select", { id: "compare-with" }, others.map((n) => el("option", { value: n, selected: n === run.supersedes }, n)));
  const strips = run.strips.slice().reverse();
  return el("section", {},
    el("h2", {}, runLink(run.name)),
    factsTable(run),
    others.length ? el("p", {}, "Compare with ", compare, " ",
      el("button", { type: "button", onclick: () => { location.hash = `#/compare/${encodeURIComponent(name)}/${encodeURIComponent(compare.value)}`; } }, "compare")) : null,
    el("h3", {}, "Curves"), runCharts([run]),
    el("h3", {}, "Comparison strips"),
    strips.length ? el("div", { class: "strips" }, strips.map((s) => stripFigure(`${run.name} step ${s.step}`, s)))
      : el("p", { class: "muted" }, "no strips yet (written at every evaluation)"),
    el("h3", {}, "Evaluations and clips"), evaluationSection(run),
    el("h3", {}, "Config"), el("details", {}, el("summary", {}, "the run's full config"), el("pre", {}, JSON.stringify(run.config, null, 2))));
}

async function comparePage(a, b) {
  const runs = [await loadRun(a), await loadRun(b)];
  const keys = ["model/psnr_rgb", "bicubic/psnr_rgb", "taau/psnr_rgb", "model/flip", "taau/flip"];
  const table = el("table", {}, el("tr", {}, el("th", {}, "metric"), runs.map((r) => el("th", { class: "num" }, r.name)), el("th", { class: "num" }, "difference")),
    keys.map((k) => el("tr", {}, el("td", {}, k), runs.map((r) => el("td", { class: "num" }, fmt(r.metrics[k], 4))),
      el("td", { class: "num" }, isNum(runs[0].metrics[k]) && isNum(runs[1].metrics[k]) ? (runs[0].metrics[k] - runs[1].metrics[k]).toFixed(4) : "–"))),
    el("tr", {}, el("td", {}, "step"), runs.map((r) => el("td", { class: "num" }, `${r.step} / ${r.steps ?? "?"}`)), el("td", {})),
    el("tr", {}, el("td", {}, "spend"), runs.map((r) => el("td", { class: "num" }, money(r.spend_usd))), el("td", {})));
  return el("section", {}, el("h2", {}, "Compare ", runLink(a), " with ", runLink(b)),
    el("p", { class: "muted" }, "Latest steady-state evaluation of each; difference = first − second."), table,
    runCharts(runs));
}

function tiersPage() {
  const rows = DATA.tiers.map((t) => el("tr", { "data-tier": t.tier }, el("td", {}, t.tier), el("td", {}, t.teacher),
    el("td", {}, `${t.student} (≤ ${(t.student_cap / 1e6).toFixed(1)}M params)`), el("td", {}, t.hardware),
    el("td", {}, `< ${t.latency_ms} ms at ${t.sizes}`),
    el("td", {}, t.training.length ? t.training.map((n) => el("div", {}, runLink(n))) : "–"),
    el("td", {}, t.best_teacher ? runLink(t.best_teacher) : "not yet trained"),
    el("td", {}, t.best_student ? runLink(t.best_student) : "not yet trained"),
    el("td", {}, t.latency ? `p50 ${fmt(t.latency.in_process_ms.p50, 2)} / p99 ${fmt(t.latency.in_process_ms.p99, 2)} ms in-process, ${t.latency.verdict} (${t.latency.backend}, ${t.latency.render_size.join("x")}, ${t.latency.measured_at})` : "no latency test yet")));
  return el("section", {}, el("h2", {}, "Tiers"),
    el("p", {}, "Every tier trains a transformer teacher for quality and ships a small CNN student distilled from it."),
    el("table", { id: "tiers-table" }, el("tr", {}, ["tier", "teacher", "student", "target hardware", "ship target", "training now", "best finished teacher", "best finished student", "latency (newest test)"].map((h) => el("th", {}, h))), rows),
    el("p", { class: "muted" }, "Best = highest steady-state PSNR among finished runs. Latency rows come from jobs/latency_test.py (kept under latency/ in storage)."));
}

function sweepsPage() {
  if (!DATA.sweeps.length) return el("section", {}, el("h2", {}, "Sweeps"), el("p", { class: "waiting" }, "No Tune sweep in this storage yet: python jobs/tune_sweep.py --smoke"));
  return el("section", {}, el("h2", {}, "Sweeps"), DATA.sweeps.map((s) => el("div", { class: "sweep" },
    el("h3", {}, s.name), s.error ? el("p", { class: "error" }, s.error) : null,
    s.plot ? el("img", { src: s.plot, alt: "metric vs fusion magnitude", style: "max-width:640px" }) : null,
    el("table", {}, el("tr", {}, s.columns.map((c) => el("th", {}, c))),
      s.rows.map((row) => el("tr", {}, s.columns.map((c) => el("td", {}, DATA.runs.some((r) => r.name === row[c]) ? runLink(row[c]) : (isNum(row[c]) ? +row[c].toPrecision(6) : row[c] ?? "–")))))),
    s.best_config ? el("details", {}, el("summary", {}, "best config"), el("pre", {}, s.best_config)) : null)));
}

function costPage() {
  const c = DATA.cost;
  if (c.error) return el("section", {}, el("h2", {}, "Cost"), el("p", { class: "error" }, c.error));
  return el("section", {}, el("h2", {}, "Cost"), el("p", {}, el("strong", {}, c.bottom_line)),
    el("p", { class: "muted" }, `plan ${c.plan}; the same figures as python -m oss_cluster.cost estimate / report / memo`),
    el("h3", {}, "Estimate (on demand)"), el("pre", {}, c.estimate), el("h3", {}, "Estimate (spot)"), el("pre", {}, c.estimate_spot),
    el("h3", {}, "Assumptions"), el("ul", {}, c.assumptions.map((a) => el("li", {}, a))),
    el("h3", {}, "Actual spend per run"), el("pre", {}, c.actuals), el("h3", {}, "Per cycle"), el("pre", {}, c.cycles),
    el("h3", {}, "Memo"), el("details", {}, el("summary", {}, "the cost memo (Markdown)"), el("pre", {}, c.memo)));
}

function claimsPage() {
  const claims = DATA.claims || { hypotheses: [], discoveries: [] };
  const hyp = claims.hypotheses.map((h) => el("div", { class: "claim", id: h.id, "data-claim": h.id },
    el("h4", {}, `${h.id} — ${h.title} `, badge(h.status, "what its gate computed now"),
      h.recorded_status !== h.status ? el("span", { class: "muted" }, ` (registry file says ${h.recorded_status})`) : null),
    el("div", {}, el("strong", {}, "Gate: "), withCode(h.acceptance_gate)),
    el("div", { class: "gate-result" }, el("strong", {}, "Result: "), h.reason),
    h.linked_runs.length ? el("div", {}, el("strong", {}, "Linked runs: "), h.linked_runs.map((n) => DATA.runs.some((r) => r.name === n) ? el("span", {}, runLink(n), " ") : el("span", {}, n + " "))) : null,
    el("details", {}, el("summary", {}, "test plan and notes"), el("pre", {}, h.test_plan + "\n" + h.body), el("div", { class: "muted" }, h.file))));
  const disc = claims.discoveries.map((d) => el("div", { class: "claim", id: d.id, "data-claim": d.id },
    el("h4", {}, `${d.id} — ${d.title} `, badge(d.backed ? "backed" : "not backed", d.backed ? "every file and figure found" : d.problems.join("; "),
      d.backed ? "validated" : "refuted")),
    el("p", {}, withCode(d.text)), el("div", {}, el("strong", {}, "Data: "), d.data.map((p) => el("code", {}, p + " "))),
    d.figures.length ? el("ul", {}, d.figures.map((f) => el("li", {}, el("code", {}, f)))) : null,
    d.backed ? null : el("p", { class: "error" }, d.problems.join("; "))));
  return el("section", {}, el("h2", {}, "Claims"),
    claims.error ? el("p", { class: "error" }, "The claims registry cannot be read: " + claims.error) : null,
    el("p", {}, "Hypotheses (docs/research/hypotheses/H###.md) each carry a gate that runs on the runs in this storage; ",
      "`python -m oss_cluster.claims check` runs them and writes their statuses. Discoveries (docs/research/discoveries.md) name the data on disk that backs them."),
    el("div", { class: "grid2" }, el("div", {}, el("h3", {}, "Hypotheses"), hyp.length ? hyp : el("p", { class: "muted" }, "none")),
      el("div", {}, el("h3", {}, "Discoveries"), disc.length ? disc : el("p", { class: "muted" }, "none"))));
}

function namesPage() {
  return el("section", {}, el("h2", {}, "Run names"),
    el("p", {}, "A run name is ", el("code", {}, "<family>-v<major>.<minor>-<tier>-<NNN>"), ", e.g. ", el("code", {}, "srcnn-v6.2-pico-002"), ":"),
    el("ul", {}, el("li", {}, el("strong", {}, "family"), ": the model family (hat teachers, student, canvas, …);"),
      el("li", {}, el("strong", {}, "v<major>.<minor>"), ": the project version and architecture iteration the run belongs to;"),
      el("li", {}, el("strong", {}, "tier"), ": pico, standard or heavy — the product tier it trains for;"),
      el("li", {}, el("strong", {}, "NNN"), ": the run number in that series, handed out atomically.")),
    el("p", {}, "Names are frozen: never reused and never overwritten, so a name in a note or a claim always means the same run. ",
      "A run is superseded by the next number of its series (or a newer version); the compare view starts from that pair."));
}

// ---------- routing ----------
const PAGES = { "": runsPage, tiers: tiersPage, sweeps: sweepsPage, cost: costPage, claims: claimsPage, names: namesPage };
async function render() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const page = document.getElementById("page");
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === (parts[0] || "runs")));
  try {
    let node;
    if (parts[0] === "run" && parts[1]) node = DATA.error ? waitingOrError() : await runPage(parts[1]);
    else if (parts[0] === "compare" && parts[2]) node = await comparePage(parts[1], parts[2]);
    else node = (PAGES[parts[0]] || runsPage)();
    page.replaceChildren(node);
  } catch (err) {
    page.replaceChildren(el("div", { class: "error" }, "Cannot show this page: " + err.message));
  }
}
async function refresh(first) {
  try {
    const data = await getJSON("data.json");
    const changed = !DATA || data.generated_at !== DATA.generated_at;
    DATA = data;
    document.getElementById("meta").textContent = `${DATA.storage} · built ${DATA.generated_at}`;
    if (changed) { for (const k of Object.keys(RUN_CACHE)) delete RUN_CACHE[k]; }
    if (first || (changed && document.getElementById("lightbox").hidden && !document.querySelector("video"))) await render();
  } catch (err) {
    if (first) document.getElementById("page").replaceChildren(el("div", { class: "error" }, "Cannot load data.json: " + err.message));
  }
}
window.addEventListener("hashchange", render);
refresh(true);
setInterval(() => refresh(false), 30000);
