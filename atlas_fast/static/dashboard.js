// atlas_fast /performance page: fetches /api/runs and draws plain SVG charts.
// Every string from the database reaches the page through textContent or an
// SVG text node, never parsed as markup: subjects and addresses stay text.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6fde", "#e8833a", "#3a9d5d", "#9b59b6", "#d9534f", "#17a2b8",
  "#c9a227", "#6c757d", "#e83e8c", "#20c997", "#795548", "#343a40"];
const POLL_MS = 2000;

const params = new URLSearchParams(window.location.search);
const pinnedRun = /^\d+$/.test(params.get("run") || "") ? Number(params.get("run")) : null;

// ---------------------------------------------------------------- helpers

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmtNum(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const d = digits === undefined ? (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2) : digits;
  return Number(v).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
}
const fmtInt = (v) => fmtNum(v, 0);
const fmtPct = (v) => (v === null || v === undefined ? "–" : fmtNum(v * 100, 1) + " %");
const mib = (b) => (b === null || b === undefined ? null : b / 1048576);

function fmtDuration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return fmtNum(s, 2) + " s";
  const m = Math.floor(s / 60);
  return m + " min " + fmtNum(s - m * 60, 0) + " s";
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 6, 8, 10]) if (m * p >= v) return m * p;  // quarters stay round
  return 10 * p;
}

// Charts are drawn at the pixel width of their panel so text keeps its size.
function chartWidth(container) {
  return Math.max(320, Math.floor(container.clientWidth || 640));
}

// 1, 2 or 5 times a power of ten, at least v.
function niceStep(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v || 1)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function noData(container, text) {
  container.replaceChildren(el("div", { class: "nodata" }, text || "no data yet"));
}

function legend(container, items) {
  const box = el("div", { class: "legend" });
  items.forEach((item) => {
    const entry = el("span");
    const sw = el("span", { class: "sw" });
    sw.style.background = item.color;
    entry.append(sw, document.createTextNode(item.name));
    box.append(entry);
  });
  container.append(box);
}

// ---------------------------------------------------------------- charts

// series: [{name, points: [[x, y], ...]}]; draws one polyline per series with
// a circle (class "pt") per data point.
function lineChart(container, series, opts) {
  const pts = series.flatMap((s) => s.points);
  if (!pts.length) return noData(container, opts.empty);
  const W = chartWidth(container), H = opts.height || 220, L = 52, R = 16, T = 12, B = 30;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) > x0 ? Math.max(...xs) : x0 + 1;
  const yMax = niceMax(Math.max(...ys, opts.minMax || 0));
  const tick = (v) => fmtNum(v, yMax >= 20 ? 0 : yMax >= 2 ? 1 : 2);
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - y / yMax) * (H - T - B);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": opts.title || "" });
  for (let i = 0; i <= 4; i++) {
    const y = (yMax * i) / 4;
    svg.append(svgEl("line", { class: "grid-line", x1: L, x2: W - R, y1: sy(y), y2: sy(y) }));
    svg.append(svgEl("text", { x: L - 6, y: sy(y) + 4, "text-anchor": "end" }, tick(y)));
  }
  const step = niceStep((x1 - x0) / 6);
  for (let x = Math.ceil(x0 / step) * step; x <= x1 + 1e-9; x += step) {
    svg.append(svgEl("text", { x: sx(x), y: H - 10, "text-anchor": "middle" }, fmtNum(x, step < 0.1 ? 2 : step < 1 ? 1 : 0) + " s"));
  }
  svg.append(svgEl("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  const dense = pts.length > 240;
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const color = s.color || COLORS[i % COLORS.length];
    const line = s.points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    if (opts.area && series.length === 1) {
      const area = `${sx(s.points[0][0]).toFixed(1)},${sy(0)} ${line} ${sx(s.points[s.points.length - 1][0]).toFixed(1)},${sy(0)}`;
      svg.append(svgEl("polygon", { class: "area", points: area, fill: color }));
    }
    svg.append(svgEl("polyline", { class: "series", points: line, stroke: color }));
    s.points.forEach((p) => {
      const c = svgEl("circle", { class: "pt", cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: dense ? 1.2 : 2.6, fill: color });
      c.append(svgEl("title", {}, `${s.name}: ${(opts.yFormat || fmtNum)(p[1])} at ${fmtNum(p[0], 1)} s`));
      svg.append(c);
    });
  });
  container.replaceChildren(svg);
  if (series.length > 1 || opts.legend) {
    legend(container, series.map((s, i) => ({ name: s.name, color: s.color || COLORS[i % COLORS.length] })));
  }
}

// items: [{label, value, text, color}]; horizontal bars (class "bar").
function barChart(container, items, opts) {
  if (!items.length) return noData(container, opts.empty);
  const W = chartWidth(container), rowH = 24, L = opts.labelWidth || 170, R = 120, T = 4;
  const H = T * 2 + rowH * items.length;
  const max = opts.max || Math.max(...items.map((d) => d.value), 1e-9);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": opts.title || "" });
  items.forEach((d, i) => {
    const y = T + i * rowH;
    const w = Math.max(1, ((W - L - R) * d.value) / max);
    const label = svgEl("text", { x: L - 8, y: y + rowH / 2 + 4, "text-anchor": "end" }, d.label);
    label.append(svgEl("title", {}, d.label));
    svg.append(label);
    const bar = svgEl("rect", { class: "bar", x: L, y: y + 4, width: w.toFixed(1), height: rowH - 8, rx: 3,
      fill: d.color || opts.color || COLORS[0] });
    bar.append(svgEl("title", {}, `${d.label}: ${d.text}`));
    svg.append(bar);
    svg.append(svgEl("text", { class: "value", x: L + w + 6, y: y + rowH / 2 + 4 }, d.text));
  });
  container.replaceChildren(svg);
}

// ---------------------------------------------------------------- tables

function fillTable(table, columns, rows, rowClass) {
  const head = el("tr");
  columns.forEach((c) => head.append(el("th", c.num ? { class: "num" } : {}, c.title)));
  const body = [el("thead"), el("tbody")];
  body[0].append(head);
  if (!rows.length) {
    const tr = el("tr");
    tr.append(el("td", { colspan: columns.length, class: "muted" }, "none yet"));
    body[1].append(tr);
  }
  rows.forEach((row) => {
    const tr = el("tr", rowClass ? { class: rowClass(row) } : {});
    columns.forEach((c) => {
      const td = el("td", c.cls ? { class: c.cls } : c.num ? { class: "num" } : {});
      const v = c.get(row);
      if (v instanceof Node) td.append(v); else td.textContent = v === null || v === undefined ? "–" : String(v);
      if (c.extraClass) { const extra = c.extraClass(row); if (extra) td.classList.add(extra); }
      tr.append(td);
    });
    body[1].append(tr);
  });
  table.replaceChildren(...body);
}

// ---------------------------------------------------------------- render

function card(label, value) {
  const c = el("div", { class: "card" });
  c.append(el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  return c;
}

function renderRun(report) {
  const run = report.run;
  const counters = report.counters || {};
  const title = document.getElementById("run-title");
  title.replaceChildren(document.createTextNode(`Run ${run.run_id}`),
    el("span", { class: `badge ${run.status}` }, run.status));
  document.getElementById("run-source").textContent =
    `${run.source}  ·  started ${run.started_at || "–"}${run.finished_at ? "  ·  finished " + run.finished_at : ""}`;
  const elapsed = run.elapsed_s;
  const rate = run.msgs_per_sec;
  document.getElementById("cards").replaceChildren(
    card("messages", fmtInt(run.messages)),
    card("spam", fmtInt(run.spam)),
    card("ham", fmtInt(run.ham)),
    card("errors", fmtInt(run.errors)),
    card("input", run.bytes ? fmtNum(mib(run.bytes), 1) + " MiB" : "–"),
    card("elapsed", fmtDuration(elapsed)),
    card("messages/s", fmtNum(rate, 0)),
    card("bulk writes/s", fmtNum(counters.bulk_writes_per_s, 0)),
    card("cache hit rate", fmtPct(counters.cache_hit_rate)),
    card("peak RSS", counters.peak_rss_bytes ? fmtNum(mib(counters.peak_rss_bytes), 1) + " MiB" : "–"),
    card("read by processes", counters.read_chars ? fmtNum(mib(counters.read_chars), 1) + " MiB" : "–"),
    card("peak messages/s", fmtNum(counters.peak_msgs_per_s, 0)),
  );

  lineChart(document.getElementById("chart-throughput"),
    [{ name: "messages/s", points: report.throughput.map((p) => [p.t, p.msgs_per_s]) }],
    { area: true, title: "throughput", empty: "no throughput samples for this run yet" });

  const totalStage = report.stages.reduce((a, s) => a + s.total_ms, 0) || 1;
  barChart(document.getElementById("chart-stages"), report.stages.map((s, i) => ({
    label: `${s.category}.${s.operation}`, value: s.total_ms,
    text: `${fmtNum(s.total_ms, 0)} ms · ${fmtNum((100 * s.total_ms) / totalStage, 1)} %`,
    color: COLORS[i % COLORS.length],
  })), { title: "time per stage", empty: "stage timings are stored when the run ends" });

  const verdicts = report.verdicts.map((v) => ({
    label: v.label === "ham" ? "ham" : v.label ? `${v.label} · ${v.category || "uncategorised"}` : "error / no label",
    value: v.messages, text: fmtInt(v.messages),
    color: v.label === "ham" ? "#3a9d5d" : v.label === "spam" ? "#d9534f" : "#8a93a0",
  }));
  barChart(document.getElementById("chart-verdicts"), verdicts, { title: "verdicts", labelWidth: 210 });

  const byPid = new Map();
  report.resources.forEach((r) => {
    if (!byPid.has(r.pid)) byPid.set(r.pid, { name: `${r.role} ${r.pid}`, rss: [], cpu: [] });
    const s = byPid.get(r.pid);
    s.rss.push([r.t, mib(r.rss_bytes) || 0]);
    s.cpu.push([r.t, r.cpu_percent || 0]);
  });
  const procs = [...byPid.values()];
  lineChart(document.getElementById("chart-rss"), procs.map((p) => ({ name: p.name, points: p.rss })),
    { legend: true, title: "RSS", empty: "no resource samples yet" });
  lineChart(document.getElementById("chart-cpu"), procs.map((p) => ({ name: p.name, points: p.cpu })),
    { legend: true, minMax: 100, yFormat: (v) => fmtNum(v, 0), title: "CPU", empty: "no resource samples yet" });

  barChart(document.getElementById("chart-cache"), report.cache.map((c) => ({
    label: c.namespace, value: c.hit_rate || 0,
    text: `${fmtPct(c.hit_rate)} of ${fmtInt(c.hits + c.misses)}`, color: "#17a2b8",
  })), { max: 1, title: "cache", empty: "no cache lookups recorded" });

  barChart(document.getElementById("chart-decided"), report.decided_by.map((d, i) => ({
    label: d.decided_by || "undecided", value: d.messages, text: fmtInt(d.messages), color: COLORS[(i + 3) % COLORS.length],
  })), { title: "decided by" });

  fillTable(document.getElementById("table-stages"), [
    { title: "stage", get: (s) => `${s.category}.${s.operation}` },
    { title: "count", num: true, get: (s) => fmtInt(s.count) },
    { title: "total ms", num: true, get: (s) => fmtNum(s.total_ms, 1) },
    { title: "mean", num: true, get: (s) => fmtNum(s.mean_ms, 2) },
    { title: "p50", num: true, get: (s) => fmtNum(s.p50_ms, 2) },
    { title: "p95", num: true, get: (s) => fmtNum(s.p95_ms, 2) },
    { title: "max", num: true, get: (s) => fmtNum(s.max_ms, 2) },
  ], report.stages);

  fillTable(document.getElementById("table-recent"), [
    { title: "offset", num: true, get: (m) => fmtInt(m.offset) },
    { title: "from", get: (m) => m.from_addr, cls: "subject" },
    { title: "subject", get: (m) => m.subject, cls: "subject" },
    { title: "label", get: (m) => m.label, extraClass: (m) => (m.label ? "label-" + m.label : null) },
    { title: "category", get: (m) => m.category },
    { title: "score", num: true, get: (m) => fmtNum(m.score, 2) },
    { title: "decided by", get: (m) => m.decided_by },
    { title: "rule", get: (m) => m.rule_id },
    { title: "error", get: (m) => m.error },
  ], report.recent);
}

function renderHistory(runs, currentId) {
  const ordered = runs.slice().reverse();
  barChart(document.getElementById("chart-history"), ordered.map((r) => ({
    label: `run ${r.run_id}`, value: r.msgs_per_sec || 0, text: `${fmtNum(r.msgs_per_sec, 0)} msg/s`,
    color: r.run_id === currentId ? "#2f6fde" : "#9bb7ea",
  })).slice(-12), { title: "messages/s per run", labelWidth: 90, empty: "no runs" });
  fillTable(document.getElementById("table-runs"), [
    { title: "run", get: (r) => { const a = el("a", { href: "?run=" + Number(r.run_id) }, r.run_id); return a; } },
    { title: "status", get: (r) => r.status },
    { title: "source", get: (r) => r.source, cls: "subject" },
    { title: "started", get: (r) => r.started_at },
    { title: "messages", num: true, get: (r) => fmtInt(r.messages) },
    { title: "spam", num: true, get: (r) => fmtInt(r.spam) },
    { title: "errors", num: true, get: (r) => fmtInt(r.errors) },
    { title: "elapsed", num: true, get: (r) => fmtDuration(r.elapsed_s) },
    { title: "messages/s", num: true, get: (r) => fmtNum(r.msgs_per_sec, 0) },
  ], runs, (r) => (r.run_id === currentId ? "current" : ""));
}

// ---------------------------------------------------------------- polling

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function setLive(state, text) {
  document.getElementById("live-dot").className = "dot " + state;
  document.getElementById("live-text").textContent = text;
}

async function refresh() {
  try {
    const { runs } = await getJSON("/api/runs?limit=50");
    const empty = !runs.length;
    document.getElementById("empty").hidden = !empty;
    if (empty) { setLive("", "waiting for a run · " + new Date().toLocaleTimeString()); return; }
    const report = await getJSON(pinnedRun === null ? "/api/runs/latest" : `/api/runs/${pinnedRun}`);
    renderRun(report);
    renderHistory(runs, report.run.run_id);
    const running = report.run.status === "running";
    setLive(running ? "running" : "", (running ? "live · " : "updated ") + new Date().toLocaleTimeString());
    document.body.dataset.rendered = "1";
  } catch (err) {
    setLive("error", String(err.message || err));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  refresh();
  setInterval(refresh, POLL_MS);
});
