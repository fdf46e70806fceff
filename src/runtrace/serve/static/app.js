// The runtrace page: upload, follow a scan, show its record, list earlier scans.  No libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
let current = null; // id of the scan on show
let pollTimer = null;
let batchTimer = null;

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

// Digits enough to tell a probability from 0 or 1 (an n-gram model's threshold can be 0.999975).
function fmtP(p) {
  if (p === null || p === undefined) return "–";
  const tail = Math.min(p, 1 - p);
  return p.toFixed(tail >= 0.001 ? 4 : tail > 0 ? Math.min(8, 1 + Math.ceil(-Math.log10(tail))) : 8);
}
function fmtTime(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
function fmtDelta(c) {
  if (c.contribution === null) return "≈" + c.estimate.toFixed(3);
  const v = c.contribution;
  const text = Math.abs(v) >= 0.001 || v === 0 ? v.toFixed(4) : v.toExponential(1);
  return (v >= 0 ? "+" : "") + text;
}

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
    if (body.ids.length > 1) showBatch(body.batch); else $("batch").hidden = true;
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

// --- one upload's scans (a zip archive of samples) ----------------------------------------------------
async function showBatch(id) {
  clearTimeout(batchTimer);
  try {
    const b = await api("/batches/" + encodeURIComponent(id));
    $("batch").hidden = false;
    $("batch-name").textContent = b.name;
    $("batch-status").textContent = b.status;
    $("batch-counts").textContent = Object.entries(b.counts).filter(([, n]) => n).map(([k, n]) => n + " " + k).join(", ");
    const body = $("batch-scans").querySelector("tbody");
    body.replaceChildren();
    for (const s of b.scans) {
      const tr = el("tr");
      tr.append(el("td", s.name), el("td", s.status), el("td", s.verdict || "", s.verdict ? "verdict-" + s.verdict : ""),
        el("td", s.sha256.slice(0, 16) + "…", "mono"));
      tr.addEventListener("click", () => show(s.id));
      body.append(tr);
    }
    if (b.status !== "done") batchTimer = setTimeout(() => showBatch(id), POLL_MS);
  } catch (e) {
    $("message").textContent = e.message;
  }
}

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
  // `unknown` has no probability: the model was not asked about a trace shorter than it was trained on.
  $("probability").textContent = r ? (r.verdict === "unknown" ? "not judged" : fmtP(r.probability)) : "";
  $("threshold").textContent = r && r.decision ? fmtP(r.decision.threshold) : "";
  $("reason").textContent = r ? [r.reason, ...(r.warnings || []).map((w) => "warning: " + w)].filter(Boolean).join(" ") : "";
  const done = scan.status === "done";
  $("downloads").hidden = !done;
  for (const fmt of ["native", "x64dbg", "text"]) {
    $("download-" + fmt).href = "/api/v1/scans/" + encodeURIComponent(scan.id) + "/trace?format=" + fmt;
  }
  $("details").hidden = !(r && r.trace && r.explanation);
  if (r && r.trace) {
    traceSummary(r);
    if (r.explanation) {
      plot(r.trace, r.decision ? r.decision.threshold : null);
      explanation(r.explanation);
    }
  }
  neighbours(r ? r.neighbours : null);
  behaviour(r ? r.behaviour : null);
  calls(r ? r.api_calls : null);
}

// The known files whose executed code is most like this one's, and a warning when most of them carry
// the other label than the verdict.
function neighbours(n) {
  $("neighbours-box").hidden = !n;
  $("neighbours-disagree").hidden = !(n && n.note);
  $("neighbours-disagree").textContent = n && n.note ? n.note : "";
  if (!n) return;
  $("neighbours-note").textContent = n.nearest.length
    ? `${n.nearest.length} of at most ${n.k}: ${n.malicious} malicious, ${n.benign} benign; ` +
      `this file executed ${n.blocks.toLocaleString()} distinct blocks (MinHash estimates)`
    : (n.blocks ? "no known file executed code alike" : "it executed no code to compare");
  const body = $("neighbours").querySelector("tbody");
  body.replaceChildren();
  n.nearest.forEach((f, i) => {
    const tr = el("tr");
    tr.append(el("td", i + 1), el("td", f.label, "verdict-" + f.label), el("td", (f.same_file ? "this file: " : "") + (f.family || f.origin || f.file_name || "")),
      el("td", f.jaccard.toFixed(2), "mono"), el("td", "~" + f.shared_blocks.toLocaleString(), "mono"),
      el("td", f.api_jaccard.toFixed(2), "mono"), el("td", f.sha256.slice(0, 16) + "…", "mono"));
    body.append(tr);
  });
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
    add("text", { x: W - R, y: y(threshold) - 4, "text-anchor": "end" }, "threshold " + fmtP(threshold));
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
  const share = ex.shown_share === null ? "" : `; the rows shown account for ${Math.round(ex.shown_share * 100)} % of the score`;
  $("explanation-note").textContent =
    `occlusion: each block (or API function) replaced by ${ex.baseline}; ΔP is how much P(malicious) drops without it` +
    `${share} (P with every block masked: ${fmtP(ex.reference_probability)}); ${ex.units_exact} of ${ex.units_total} units measured exactly`;
  $("explanation-weak").hidden = !ex.weak;
  $("explanation-weak").textContent = ex.note || "";
  rows($("explanation"), ex.towards_malicious);
  rows($("explanation-benign"), ex.towards_benign,
       ex.evidence_only ? "none by design: this model counts evidence of malice only" : "none");
}

function rows(table, contributions, empty = "none") {
  const body = table.querySelector("tbody");
  body.replaceChildren();
  if (!contributions.length) {
    const tr = el("tr");
    const td = el("td", empty, "muted");
    td.colSpan = 6;
    tr.append(td);
    body.append(tr);
  }
  for (const c of contributions) {
    const tr = el("tr");
    const code = el("td");
    code.append(el("pre", c.instructions.join("\n")));
    const nearby = el("td");
    nearby.append(el("pre", c.nearby_api_calls.join("\n")));
    tr.append(el("td", c.rank), el("td", c.address || c.api, "mono"), el("td", fmtDelta(c), "mono"),
      el("td", c.occurrences + " in " + c.windows + " windows"), code, nearby);
    body.append(tr);
  }
}

function behaviour(b) {
  const box = $("behaviour");
  box.replaceChildren();
  const kinds = b ? Object.entries(b).filter(([, items]) => items.length) : [];
  $("behaviour-box").hidden = !kinds.length;
  for (const [kind, items] of kinds) {
    box.append(el("h4", `${kind} (${items.length})`));
    const table = el("table");
    for (const item of items) {
      const tr = el("tr");
      if (typeof item === "string") {
        tr.append(el("td", item, "mono"));
      } else {
        const { event, ...rest } = item;
        tr.append(el("td", event || ""), el("td", Object.values(rest).join("  "), "mono"));
      }
      table.append(tr);
    }
    box.append(table);
  }
}

function signature(call) {
  const args = call.args.map((a) => (typeof a === "string" ? JSON.stringify(a) : (a > 9 || a < 0 ? "0x" + a.toString(16) : String(a))));
  const text = call.args.length ? `${call.name}(${args.join(", ")})` : call.name;
  return call.result === null ? text : `${text} = 0x${call.result.toString(16)}`;
}

function calls(log) {
  const body = $("calls").querySelector("tbody");
  body.replaceChildren();
  $("calls-box").hidden = !(log && log.total);
  if (!log) return;
  $("calls-note").textContent = log.calls.length < log.total
    ? `the first ${log.calls.length} of ${log.total.toLocaleString()} calls` : `${log.total.toLocaleString()} calls`;
  for (const c of log.calls) {
    const tr = el("tr");
    tr.append(el("td", c.visit), el("td", signature(c) + (c.stubbed ? "  (stubbed)" : "")), el("td", c.return_address, "mono"));
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
    const { model, decision, tracer_version, warnings } = await api("/model");
    $("model").textContent = `model ${model.kind} ${model.version || ""} (weights ${model.weights_sha256.slice(0, 12)}…), threshold ${decision.threshold.toFixed(3)}; tracer ${tracer_version}`;
    $("model-warnings").textContent = (warnings || []).map((w) => "warning: " + w).join(" ");
  } catch (e) {
    $("model").textContent = e.message;
  }
}

loadModel();
refreshHistory();
setInterval(refreshHistory, 10000);
