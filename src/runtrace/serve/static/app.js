// The runtrace page: upload, follow a scan, show its record, list earlier scans.  No libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
let current = null; // id of the scan on show
let pollTimer = null;

function token() { return localStorage.getItem("runtrace-token") || ""; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch("/api/v1" + path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    $("token-box").hidden = false;
    throw new Error("this service needs an API token");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
    throw new Error(detail || response.statusText);
  }
  return body;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function fmtP(p) { return p === null || p === undefined ? "–" : p.toFixed(4); }
function fmtTime(t) { return t ? new Date(t * 1000).toLocaleString() : ""; }

// --- uploading -------------------------------------------------------------------------------------
async function upload(file) {
  $("message").textContent = "";
  if (!file) { $("message").textContent = "choose a file first"; return; }
  const form = new FormData();
  form.append("file", file, file.name);
  if ($("password").value) form.append("password", $("password").value);
  $("submit").disabled = true;
  try {
    const body = await api("/scans", { method: "POST", body: form });
    show(body.id);
    refreshHistory();
  } catch (e) {
    $("message").textContent = e.message;
  } finally {
    $("submit").disabled = false;
  }
}

$("upload").addEventListener("submit", (event) => {
  event.preventDefault();
  upload($("file").files[0]);
});

const drop = $("drop");
["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (event) => {
  event.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((name) => drop.addEventListener(name, () => drop.classList.remove("over")));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) upload(file);
});

$("token-save").addEventListener("click", () => {
  localStorage.setItem("runtrace-token", $("token").value);
  $("token-box").hidden = true;
  loadModel();
  refreshHistory();
});

// --- one scan --------------------------------------------------------------------------------------
async function show(id) {
  current = id;
  clearTimeout(pollTimer);
  try {
    const scan = await api("/scans/" + encodeURIComponent(id));
    if (id !== current) return;
    render(scan);
    if (scan.status === "queued" || scan.status === "running") {
      pollTimer = setTimeout(() => show(id), POLL_MS);
    } else {
      refreshHistory();
    }
  } catch (e) {
    $("message").textContent = e.message;
  }
}

function render(scan) {
  $("scan").hidden = false;
  $("scan-name").textContent = scan.name;
  $("status").textContent = scan.status;
  const r = scan.result;
  const verdict = r ? (r.verdict || r.status) : "";
  $("verdict").textContent = verdict;
  $("verdict").className = r && r.verdict ? "verdict-" + r.verdict : "";
  $("probability").textContent = r ? fmtP(r.probability) : "";
  $("threshold").textContent = r && r.decision ? fmtP(r.decision.threshold) : "";
  $("reason").textContent = r && r.reason ? r.reason : "";
  $("details").hidden = !(r && r.trace);
  if (r && r.trace) {
    traceSummary(r);
    plot(r.trace, r.decision ? r.decision.threshold : null);
    explanation(r.explanation);
  }
}

function traceSummary(r) {
  const t = r.trace;
  const rows = [
    ["sha256", r.sha256],
    ["architecture", t.arch],
    ["instructions executed", t.instructions.toLocaleString()],
    ["basic blocks (distinct / executed)", t.blocks.toLocaleString() + " / " + t.visits.toLocaleString()],
    ["API calls (distinct functions)", t.api_calls.toLocaleString() + " (" + t.distinct_apis + ")"],
    ["most called APIs", t.top_apis.map((a) => a.name + " ×" + a.calls).join(", ") || "none"],
    ["stopped", t.stop_reason + (t.stop_detail ? ": " + t.stop_detail : "")],
    ["emulation", t.emulation_s.toFixed(2) + " s (tracer " + t.tracer_version + ")"],
    ["windows scored", t.windows + " over " + t.sequence_length.toLocaleString() + " sequence items"],
  ];
  const table = $("trace-summary");
  table.replaceChildren();
  for (const [k, v] of rows) {
    const tr = el("tr");
    tr.append(el("th", k), el("td", v));
    table.append(tr);
  }
}

// P(malicious) of each window against its position in the trace, drawn as SVG.
function plot(trace, threshold) {
  const ns = "http://www.w3.org/2000/svg";
  const box = $("plot");
  box.replaceChildren();
  const ps = trace.window_probabilities || [];
  if (!ps.length) { box.append(el("p", "no per-window probabilities in this result", "muted")); return; }
  const starts = trace.window_starts && trace.window_starts.length === ps.length ? trace.window_starts : ps.map((_, i) => i);
  const W = 1000, H = 220, L = 46, R = 12, T = 10, B = 32;
  const xMax = Math.max(1, starts[starts.length - 1]);
  const x = (v) => L + (ps.length === 1 ? (W - L - R) / 2 : (v / xMax) * (W - L - R));
  const y = (p) => T + (1 - p) * (H - T - B);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "P(malicious) per window");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    add("line", { x1: L, x2: W - R, y1: y(p), y2: y(p), class: p === 0 ? "axis" : "grid" });
    add("text", { x: L - 6, y: y(p) + 4, "text-anchor": "end" }, p.toFixed(2));
  }
  add("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" });
  add("text", { x: L, y: H - 8 }, "0");
  add("text", { x: W - R, y: H - 8, "text-anchor": "end" }, "sequence position " + xMax.toLocaleString());
  if (threshold !== null) {
    add("line", { x1: L, x2: W - R, y1: y(threshold), y2: y(threshold), class: "threshold" });
    add("text", { x: W - R, y: y(threshold) - 4, "text-anchor": "end" }, "threshold " + threshold.toFixed(2));
  }
  const points = ps.map((p, i) => `${x(starts[i]).toFixed(1)},${y(p).toFixed(1)}`).join(" ");
  add("polyline", { points, class: "series" });
  ps.forEach((p, i) => {
    const dot = add("circle", { cx: x(starts[i]), cy: y(p), r: ps.length > 60 ? 1.5 : 3, class: "dot" });
    const title = document.createElementNS(ns, "title");
    title.textContent = `window ${i + 1} (from position ${starts[i]}): P = ${p.toFixed(4)}`;
    dot.append(title);
  });
  box.append(svg);
}

function explanation(ex) {
  const body = $("explanation").querySelector("tbody");
  body.replaceChildren();
  if (!ex) { $("explanation-note").textContent = "no explanation for this result"; return; }
  $("explanation-note").textContent =
    `occlusion: each block (or API function) replaced by ${ex.baseline}; ${ex.units_exact} of ${ex.units_total} units measured exactly`;
  for (const c of ex.contributions) {
    const tr = el("tr");
    const delta = c.contribution === null ? "≈" + c.estimate.toFixed(3) : (c.contribution >= 0 ? "+" : "") + c.contribution.toFixed(4);
    const code = el("td");
    code.append(el("pre", c.instructions.join("\n")));
    tr.append(el("td", c.rank), el("td", c.address || c.api, "mono"), el("td", delta, "mono"),
      el("td", c.occurrences + " in " + c.windows + " windows"), code, el("td", c.nearby_api_calls.join(", ")));
    body.append(tr);
  }
}

// --- the rest of the page ---------------------------------------------------------------------------
async function refreshHistory() {
  try {
    const { scans } = await api("/scans?limit=50");
    const body = $("history").querySelector("tbody");
    body.replaceChildren();
    for (const s of scans) {
      const r = s.result;
      const tr = el("tr");
      tr.dataset.id = s.id;
      const verdict = el("td", r ? (r.verdict || r.status) : "", r && r.verdict ? "verdict-" + r.verdict : "");
      tr.append(el("td", fmtTime(s.created)), el("td", s.name), el("td", s.status), verdict,
        el("td", r ? fmtP(r.probability) : ""), el("td", s.sha256.slice(0, 16) + "…", "mono"));
      tr.addEventListener("click", () => show(s.id));
      body.append(tr);
    }
  } catch (e) {
    $("message").textContent = e.message;
  }
}

async function loadModel() {
  try {
    const { model, decision } = await api("/model");
    $("model").textContent = `model ${model.kind} ${model.version || ""} (weights ${model.weights_sha256.slice(0, 12)}…), threshold ${decision.threshold.toFixed(3)}`;
  } catch (e) {
    $("model").textContent = e.message;
  }
}

loadModel();
refreshHistory();
setInterval(refreshHistory, 10000);
