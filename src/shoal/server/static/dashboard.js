// Shoal's dashboard: apps, a function's live plots and containers, a container's logs.
// It reads the server's JSON under /_shoal/api/ and its server-sent events under
// /_shoal/stream (a point a second per function); uPlot draws the plots.
"use strict";

const SPAN_S = 15 * 60; // what a plot keeps: the last 15 minutes
const view = document.getElementById("view");
const crumbs = document.getElementById("crumbs");
// What a test (or a curious user, from the console) can read back: the live plots.
window.shoal = { charts: {}, view: "" };
let closers = [];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (response.status === 401) { location.reload(); throw new Error("signed out"); }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function leave() {
  for (const close of closers) close();
  closers = [];
  window.shoal.charts = {};
  window.shoal.live = "";
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 120) return `${seconds.toFixed(0)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(0)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function mib(bytes) {
  return bytes === null || bytes === undefined ? "—" : `${(bytes / 1048576).toFixed(0)} MiB`;
}

// -- apps ---------------------------------------------------------------------

async function showApps() {
  crumbs.textContent = "Apps";
  const apps = await getJSON("/_shoal/api/apps");
  view.replaceChildren(el("h2", { text: "Apps" }));
  if (!apps.length) {
    view.append(el("p", { class: "muted", text: "No app is deployed or running yet." }));
    return;
  }
  const body = el("tbody");
  for (const app of apps) {
    const functions = el("td");
    for (const [name, key] of Object.entries(app.pools || {})) {
      functions.append(el("a", { href: `#/f/${encodeURIComponent(key)}`, text: name }), " ");
    }
    if (!Object.keys(app.pools || {}).length) functions.append(app.functions.join(", "));
    const versions = (app.versions || []).map((v) => `v${v.version}`).join(" ");
    body.append(el("tr", {},
      el("td", { text: app.name }),
      el("td", {}, el("span", { class: `state ${app.state}`, text: app.state })),
      el("td", { text: app.version ? `v${app.version}` : "—", title: versions }),
      el("td", { class: "num", text: String(app.containers) }),
      el("td", { class: "num", text: String(app.inputs) }),
      functions));
  }
  view.append(el("table", { id: "apps" },
    el("thead", {}, el("tr", {}, ...["App", "State", "Version", "Containers", "Inputs", "Functions"]
      .map((h) => el("th", { text: h })))),
    body));
  view.append(el("p", { class: "muted", text: "Versions kept: hover a version." }));
}

// -- a function -----------------------------------------------------------------

const PLOTS = {
  containers: { title: "Containers by state", series: ["starting", "idle", "busy", "draining"], colors: ["#d97706", "#94a3b8", "#0f766e", "#6366f1"] },
  inputs: { title: "Inputs queued and running", series: ["queued", "running"], colors: ["#b45309", "#0f766e"] },
  rate: { title: "Inputs a second, by outcome", series: ["success", "failure", "timeout", "crash", "init_failure", "cancelled"], colors: ["#0f766e", "#b91c1c", "#c2410c", "#7c2d12", "#9333ea", "#64748b"] },
  latency: { title: "Queue wait and run time (ms)", series: ["wait_p50", "wait_p99", "run_p50", "run_p99"], colors: ["#2563eb", "#93c5fd", "#059669", "#6ee7b7"], scale: 1000 },
};

function markersPlugin(markers) {
  return {
    hooks: {
      draw: [(u) => {
        const { ctx } = u;
        ctx.save();
        ctx.strokeStyle = "#7c3aed";
        ctx.setLineDash([4, 4]);
        for (const marker of markers) {
          const x = u.valToPos(marker.t, "x", true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
        }
        ctx.restore();
      }],
    },
  };
}

function makeChart(name, holder, points, markers) {
  const plot = PLOTS[name];
  const scale = plot.scale || 1;
  const data = [points.map((p) => p.t)];
  for (const key of plot.series) data.push(points.map((p) => (p[key] === null ? null : p[key] * scale)));
  const options = {
    width: Math.max(560, holder.clientWidth - 10),
    height: 220,
    cursor: { drag: { x: true, y: false } }, // drag to zoom; double-click to reset
    scales: { x: { time: true } },
    series: [{}, ...plot.series.map((label, i) => ({ label, stroke: plot.colors[i], width: 1.5, spanGaps: false }))],
    axes: [{}, { size: 50 }],
    plugins: [markersPlugin(markers)],
  };
  const chart = new uPlot(options, data, holder);
  chart.shoalSeries = plot.series;
  chart.shoalScale = scale;
  return chart;
}

function addPoint(chart, point) {
  const data = chart.data.map((column) => Array.from(column));
  data[0].push(point.t);
  chart.shoalSeries.forEach((key, i) => data[i + 1].push(point[key] === null ? null : point[key] * chart.shoalScale));
  const oldest = point.t - SPAN_S;
  while (data[0].length && data[0][0] < oldest) data.forEach((column) => column.shift());
  chart.setData(data, !chart.shoalZoomed);
}

function settingsBox(info) {
  const box = el("div", { class: "settings", id: "settings" });
  for (const [key, value] of Object.entries(info.scaling)) {
    box.append(el("span", {}, `${key} `, el("b", { text: value === null ? "—" : String(value) })));
  }
  box.append(el("span", {}, "timeout ", el("b", { text: `${info.timeout} s` })));
  box.append(el("span", {}, "cpu ", el("b", { text: String(info.resources.cpu) })));
  box.append(el("span", {}, "memory ", el("b", { text: `${info.resources.memory} MiB` })));
  if (info.stats.waiting_for) box.append(el("span", { class: "error", text: `waiting: ${info.stats.waiting_for}` }));
  return box;
}

function containersTable(rows) {
  const body = el("tbody");
  for (const row of rows) {
    const state = row.state === "ready" ? (row.running ? "busy" : "idle") : row.state;
    body.append(el("tr", {},
      el("td", {}, el("a", { href: `#/c/${encodeURIComponent(row.id)}`, text: row.id })),
      el("td", {}, el("span", { class: `state ${state}`, text: state })),
      el("td", { text: row.node || "this machine" }),
      el("td", { class: "num", text: String(row.running) }),
      el("td", { class: "num", text: String(row.inputs) }),
      el("td", { class: "num", text: ago(row.uptime) }),
      el("td", { class: "num", text: row.cpu_seconds === null ? "—" : `${row.cpu_seconds.toFixed(1)} s` }),
      el("td", { class: "num", text: mib(row.memory_bytes) })));
  }
  return el("table", { id: "containers" },
    el("thead", {}, el("tr", {}, ...["Container", "State", "Node", "Running", "Inputs run", "Uptime", "CPU", "Memory"]
      .map((h) => el("th", { text: h })))),
    body);
}

function failuresList(failures) {
  const list = el("div", { id: "failures" });
  if (!failures.length) list.append(el("p", { class: "muted", text: "No failures kept." }));
  for (const failure of [...failures].reverse()) {
    list.append(el("div", { class: "failure" },
      el("div", {}, el("b", { text: failure.type || "error" }), ` ${failure.message} `,
        el("span", { class: "muted", text: `(input ${failure.input_id}, ${new Date(failure.at * 1000).toLocaleTimeString()})` })),
      el("pre", { text: failure.traceback || "" })));
  }
  return list;
}

async function showFunction(key) {
  const info = await getJSON(`/_shoal/api/function?key=${encodeURIComponent(key)}`);
  crumbs.replaceChildren(el("a", { href: "#/", text: "Apps" }), ` / ${key}`);
  const plots = el("div", { class: "plots" });
  view.replaceChildren(el("h2", { text: info.name }), settingsBox(info));
  if (info.web_url) view.append(el("p", {}, "Web endpoint: ", el("a", { href: info.web_url, id: "web-url", text: info.web_url })));
  view.append(el("h3", { text: "Last 15 minutes" }), plots);
  for (const name of Object.keys(PLOTS)) {
    const holder = el("div", { class: "plot", id: `plot-${name}` }, el("h4", { text: PLOTS[name].title }));
    plots.append(holder);
    const chart = makeChart(name, holder, info.points, info.markers);
    holder.addEventListener("dblclick", () => { chart.shoalZoomed = false; });
    holder.addEventListener("mouseup", () => { chart.shoalZoomed = chart.select.width > 0 || chart.shoalZoomed; });
    window.shoal.charts[name] = chart;
  }
  const tableHolder = el("div", {}, containersTable(info.containers));
  const failuresHolder = el("div", {}, failuresList(info.failures));
  view.append(el("h3", { text: "Containers" }), tableHolder, el("h3", { text: "Recent failures" }), failuresHolder);
  view.append(whatIf(key, info.scaling));
  const stream = new EventSource(`/_shoal/stream?key=${encodeURIComponent(key)}`);
  stream.onopen = () => { window.shoal.live = key; };
  stream.onmessage = (message) => {
    const tick = JSON.parse(message.data);
    const point = tick.points[key];
    if (!point) return;
    for (const chart of Object.values(window.shoal.charts)) addPoint(chart, point);
  };
  let refreshing = false;
  const refresh = setInterval(async () => {
    if (refreshing) return;
    refreshing = true;
    try {
      const now = await getJSON(`/_shoal/api/function?key=${encodeURIComponent(key)}`);
      tableHolder.replaceChildren(containersTable(now.containers));
      failuresHolder.replaceChildren(failuresList(now.failures));
      document.getElementById("settings").replaceWith(settingsBox(now));
    } catch (error) {
      // the function went (its app stopped): keep what is shown
    } finally {
      refreshing = false;
    }
  }, 2000);
  closers.push(() => stream.close(), () => clearInterval(refresh));
}

// -- what if: the recorded traffic replayed with other settings ---------------------

const SIMULATED = ["max_inputs", "target_inputs", "scaledown_window", "buffer_containers", "min_containers", "max_containers"];

function whatIf(key, scaling) {
  const form = el("form", { id: "what-if", class: "settings" });
  for (const name of SIMULATED) {
    const value = scaling[name] === null ? "" : String(scaling[name]);
    form.append(el("label", {}, `${name} `, el("input", { name, value, size: "5", placeholder: "none" })));
  }
  form.append(el("button", { type: "submit", text: "Replay" }));
  const result = el("div", { id: "what-if-result" });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = new URLSearchParams({ key });
    for (const input of form.querySelectorAll("input")) query.set(input.name, input.value);
    result.replaceChildren(el("p", { class: "muted", text: "Replaying…" }));
    try {
      showWhatIf(result, await getJSON(`/_shoal/api/simulate?${query}`));
    } catch (error) {
      result.replaceChildren(el("p", { class: "error", text: String(error.message || error) }));
    }
  });
  return el("div", {}, el("h3", { text: "What if: the recorded traffic with other settings" }), form, result);
}

function showWhatIf(holder, answer) {
  const replay = answer.runs[0].outcome;
  const rows = [["recorded", answer.recorded], ["replayed", replay]];
  const body = el("tbody");
  for (const [label, o] of rows) {
    body.append(el("tr", {},
      el("td", { text: label }),
      el("td", { class: "num", text: o.container_seconds.toFixed(1) }),
      el("td", { class: "num", text: `${(o.wait_p50 * 1000).toFixed(0)} ms` }),
      el("td", { class: "num", text: `${(o.wait_p99 * 1000).toFixed(0)} ms` }),
      el("td", { class: "num", text: String(o.cold_starts) }),
      el("td", { class: "num", text: String(o.peak_containers) })));
  }
  const table = el("table", { id: "what-if-table" },
    el("thead", {}, el("tr", {}, ...["Run", "Container-seconds", "Wait p50", "Wait p99", "Cold starts", "Peak"]
      .map((h) => el("th", { text: h })))),
    body);
  // Containers over time, both runs as steps on one time axis (seconds from the first input).
  const times = [...new Set([...answer.recorded.containers, ...replay.containers].map(([t]) => t))].sort((a, b) => a - b);
  const at = (series) => {
    let i = 0, value = 0;
    return times.map((t) => { while (i < series.length && series[i][0] <= t) value = series[i++][1]; return value; });
  };
  const plot = el("div", { class: "plot", id: "plot-what-if" }, el("h4", { text: "Containers: recorded and replayed" }));
  holder.replaceChildren(table, plot);
  window.shoal.charts.whatIf = new uPlot({
    width: Math.max(560, plot.clientWidth - 10), height: 220, scales: { x: { time: false } },
    series: [{ label: "s" }, { label: "recorded", stroke: "#64748b", width: 1.5, paths: uPlot.paths.stepped({ align: 1 }) },
      { label: "replayed", stroke: "#7c3aed", width: 1.5, paths: uPlot.paths.stepped({ align: 1 }) }],
    axes: [{}, { size: 40 }],
  }, [times, at(answer.recorded.containers), at(replay.containers)], plot);
}

// -- a container's logs ---------------------------------------------------------

async function showContainer(id) {
  const found = await getJSON(`/_shoal/api/container?id=${encodeURIComponent(id)}`);
  const pool = id.replace(/-c\d+$/, "");
  crumbs.replaceChildren(el("a", { href: "#/", text: "Apps" }), " / ",
    el("a", { href: `#/f/${encodeURIComponent(pool)}`, text: pool }), ` / ${id}`);
  const log = el("pre", { class: "log", id: "log" });
  const add = (lines) => {
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    for (const line of lines) {
      log.append(el("span", { class: line.stream, text: `${line.text}\n` }));
    }
    while (log.childNodes.length > 5000) log.firstChild.remove();
    if (stick) log.scrollTop = log.scrollHeight;
  };
  view.replaceChildren(el("h2", { text: `Logs of ${id}` }), el("p", { class: "muted", text: "Following live." }), log);
  add(found.lines);
  const stream = new EventSource(`/_shoal/stream/logs?id=${encodeURIComponent(id)}`);
  stream.onmessage = (message) => add(JSON.parse(message.data).lines);
  closers.push(() => stream.close());
}

// -- routing ------------------------------------------------------------------

async function route() {
  leave();
  const hash = location.hash.replace(/^#/, "") || "/";
  window.shoal.view = hash;
  try {
    if (hash.startsWith("/f/")) await showFunction(decodeURIComponent(hash.slice(3)));
    else if (hash.startsWith("/c/")) await showContainer(decodeURIComponent(hash.slice(3)));
    else await showApps();
  } catch (error) {
    view.replaceChildren(el("p", { class: "error", text: String(error.message || error) }));
  }
  window.shoal.ready = hash;
}

window.addEventListener("hashchange", route);
route();
