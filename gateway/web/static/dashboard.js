// The live dashboard. Server data only ever goes into the page as text (textContent,
// attributes set one by one): never through innerHTML, so a job named <img onerror=...>
// is shown, not run. Served with a Content-Security-Policy that allows no inline script.
// The verdicts are the taxonomy's, as /api/statistics lists them (name, label, code, count):
// a verdict added to taxonomy.yaml gets its card here without an edit. Code 0 passes a board.
let verdicts = [];
const seen = [];       // recent events: {t, latency}
const recent = [];     // last 24 shown
let total = 0;

function color(v) { return getComputedStyle(document.documentElement).getPropertyValue("--" + v) || "#888"; }

// el("td", {class: "x", dataset: {job: id}, style: {width: "5%"}}, "text", child, ...)
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null) continue;
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style") Object.assign(node.style, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}
function fill(id, nodes) { document.getElementById(id).replaceChildren(...nodes); }

function renderCounts() {
  fill("counts", verdicts.map(v =>
    el("div", {class: "card", dataset: {verdict: v.name}, style: {borderTop: `4px solid ${color(v.name)}`}},
       el("div", {class: "k"}, `${v.label} · ${v.name}`),
       el("div", {class: "v", id: `count-${v.name}`}, v.count))));
  document.getElementById("total").textContent = total;
  const defects = verdicts.filter(v => v.code !== 0).reduce((n, v) => n + v.count, 0);
  document.getElementById("defect-rate").textContent = total ? (100 * defects / total).toFixed(1) + " %" : "–";
}

function renderKpis() {
  const now = Date.now();
  const lastMin = seen.filter(e => now - e.t < 60000 && e.board);
  document.getElementById("throughput").textContent = lastMin.length;
  const lat = seen.slice(-50).map(e => e.latency).filter(x => x != null).sort((a, b) => a - b);
  document.getElementById("latency").textContent = lat.length
    ? `${lat[Math.floor(lat.length / 2)].toFixed(0)} / ${lat[lat.length - 1].toFixed(0)} ms` : "–";
}

function renderRecent() {
  fill("recent", recent.map(e => {
    const side = e.side === "both" ? "left" : e.side;
    // with the anomaly model served, the stored image has its map: shown as a heat map
    const overlay = e.anomaly_score != null ? "&overlay=anomaly" : "";
    const img = e.has_image
      ? el("img", {alt: e.board_id, class: overlay ? "heat" : null,
                   src: `/api/defect-images/${encodeURIComponent(e.id)}?side=${encodeURIComponent(side)}&annotated=true${overlay}`})
      : el("div", {class: "ph"}, "no image kept");
    const v = e.board_verdict || e.verdict;
    const meta = `board ${e.board_id} · ${e.side} · ${e.detections} det · ${e.pairing}` +
                 (e.gpio_pin ? " · GPIO " + e.gpio_pin : "") +
                 (e.anomaly_score != null ? ` · anomaly ${Number(e.anomaly_score).toFixed(2)}` : "");
    return el("div", {class: "item", dataset: {id: e.id}, style: {borderLeftColor: color(v)}}, img,
              el("div", {class: "meta"}, el("span", {class: "badge", style: {background: color(v)}}, e.label), " ", meta,
                 " ", el("button", {class: "mark", type: "button", onclick: () => openBoard(e)}, "mark wrong")));
  }));
}

// The board view: an operator marks a verdict wrong (POST /api/inspections/{id}/feedback,
// the operator role). The labels must hold every defect on the image, so the detector's own
// boxes are pre-filled (click one to remove it) and a missed or misnamed defect is dragged
// on the image, in the image's own pixels. A dual row picks its side. It lives outside
// #recent, so the live feed re-rendering the list never wipes a half-drawn correction.
const board = {e: null, row: null, side: "left", boxes: [], start: null};
const $ = id => document.getElementById(id);
const needsBoxes = () => $("bv-kind").value !== "false_reject";

function detected(row, side) {  // the row's detections on ``side`` as editable boxes
  const boxes = !row ? [] : Array.isArray(row.boxes) ? row.boxes : ((row.boxes || {})[side] || []);
  return boxes.map(d => ({box: d.box.map(Math.round), class: d.class}));
}

function showSide() {
  const e = board.e;
  $("bv-title").textContent = `· board ${e.board_id} · ${board.side}`;
  board.boxes = detected(board.row, board.side);
  $("bv-img").hidden = !e.has_image;
  if (e.has_image) {
    $("bv-img").src = `/api/defect-images/${encodeURIComponent(e.id)}?side=${encodeURIComponent(board.side)}&annotated=false`;
  }
  renderBoard();
}

async function openBoard(e) {
  Object.assign(board, {e, row: null, side: e.side === "both" ? "left" : e.side, boxes: [], start: null});
  $("bv-side").hidden = e.side !== "both";
  $("bv-side").value = board.side;
  $("bv-status").textContent = "";
  $("board-view").hidden = false;
  showSide();
  $("board-view").scrollIntoView();
  try {
    board.row = await getJson(`/api/inspections/${encodeURIComponent(e.id)}`);
    if (board.e === e) showSide();
  } catch (err) {
    $("bv-status").textContent = "the detector's boxes could not be read: draw every defect";
  }
}

function renderBoard() {
  const img = $("bv-img"), w = img.naturalWidth || 1, h = img.naturalHeight || 1;
  $("bv-class").hidden = $("bv-clear").hidden = !needsBoxes();
  $("bv-hint").textContent = !needsBoxes() ? "the board is good: no boxes"
    : board.e && board.e.has_image ? `every defect on this image: the detector's boxes are in (remove a wrong ` +
      `one below), drag to add (${board.boxes.length} boxes)`
    : "no image kept for this board: boxes cannot be drawn";
  fill("bv-boxes", board.boxes.map(b => el("div", {class: "box", style: {
    left: `${100 * b.box[0] / w}%`, top: `${100 * b.box[1] / h}%`,
    width: `${100 * (b.box[2] - b.box[0]) / w}%`, height: `${100 * (b.box[3] - b.box[1]) / h}%`}}, b.class)));
  // one button per box to take it out (the boxes on the image let drags through)
  fill("bv-list", !needsBoxes() ? [] : board.boxes.map(b => el("button", {type: "button", class: "boxdel",
    title: `remove this ${b.class} box`, onclick: () => { board.boxes = board.boxes.filter(x => x !== b); renderBoard(); }},
    `✕ ${b.class} ${b.box.join(",")}`)));
}

function imagePixel(ev) {  // the pointer in the image's own pixels (it is shown scaled)
  const img = $("bv-img"), r = img.getBoundingClientRect(), s = img.naturalWidth / r.width;
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  return [clamp((ev.clientX - r.left) * s, img.naturalWidth), clamp((ev.clientY - r.top) * s, img.naturalHeight)];
}

$("bv-img").addEventListener("mousedown", ev => { ev.preventDefault(); if (needsBoxes()) board.start = imagePixel(ev); });
$("bv-img").addEventListener("mouseup", ev => {
  if (!board.start) return;
  const [x0, y0] = board.start, [x1, y1] = imagePixel(ev);
  board.start = null;
  if (Math.abs(x1 - x0) < 3 || Math.abs(y1 - y0) < 3) return;  // a click, not a box
  board.boxes.push({box: [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)].map(Math.round),
                    class: $("bv-class").value});
  renderBoard();
});
$("bv-img").addEventListener("load", renderBoard);
$("bv-kind").addEventListener("change", renderBoard);
$("bv-side").addEventListener("change", () => { board.side = $("bv-side").value; showSide(); });
$("bv-clear").addEventListener("click", () => { board.boxes = []; renderBoard(); });
$("bv-close").addEventListener("click", () => { $("board-view").hidden = true; });
$("bv-send").addEventListener("click", sendFeedback);

async function sendFeedback() {
  const e = board.e, status = $("bv-status");
  const body = {kind: $("bv-kind").value};
  if (e.side === "both") body.side = board.side;
  if (needsBoxes()) body.boxes = board.boxes;
  if ($("bv-note").value.trim()) body.note = $("bv-note").value.trim();
  status.textContent = "sending…";
  try {
    const r = await fetch(`/api/inspections/${encodeURIComponent(e.id)}/feedback`, {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const answer = await r.json().catch(() => ({}));
    if (r.status === 401) { location.href = "/login?next=/"; return; }
    status.textContent = r.status === 201 ? `saved: ${answer.kind}, marked by ${answer.principal}`
      : r.status === 403 ? `not allowed: ${answer.message || "marking a verdict needs the operator role"}`
      : `refused (${r.status}): ${answer.message || ""}`;
  } catch (err) {
    status.textContent = "not sent: the gateway did not answer";
  }
}

async function loadClasses() {
  const t = await getJson("/v1/taxonomy");
  fill("bv-class", t.classes.map(c => el("option", {value: c.name}, c.name)));
}

function onInspection(e) {
  const isBoard = e.gpio_pin != null;   // the row that carried the board's GPIO decision
  if (isBoard) {
    const name = e.board_verdict || e.verdict;
    const v = verdicts.find(x => x.name === name);
    if (v) v.count += 1;
    total += 1;
  }
  seen.push({t: Date.now(), latency: e.latency_ms, board: isBoard});
  if (seen.length > 2000) seen.splice(0, seen.length - 2000);
  recent.unshift(e);
  recent.splice(24);
  renderCounts(); renderKpis(); renderRecent();
}

async function getJson(url) {
  const r = await fetch(url);
  if (r.status === 401) { location.href = "/login?next=/"; throw new Error("signed out"); }
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

async function loadStats() {
  try {
    const s = await getJson("/api/statistics");
    verdicts = s.verdicts.map(v => ({name: v.name, label: v.label, code: v.code, count: v.count}));
    total = s.total_inspections;
  } catch (err) {  // the database is away: the taxonomy's cards, counted from the live feed
    const t = await getJson("/v1/taxonomy");
    verdicts = t.verdicts.map(v => ({name: v.code, label: v.label, code: v.severity, count: 0}));
  }
  renderCounts();
}

async function loadRecent() {
  const page = await getJson("/api/inspections?page=1&page_size=24");
  recent.splice(0, recent.length, ...page.items.map(i => ({
    id: i.id, board_id: i.board_id, side: i.camera_side, verdict: i.verdict, board_verdict: i.board_verdict,
    label: i.verdict_label, detections: Array.isArray(i.boxes) ? i.boxes.length
      : Object.values(i.boxes || {}).reduce((n, b) => n + b.length, 0),
    pairing: i.pairing, gpio_pin: i.gpio_pin, has_image: i.has_image, latency_ms: i.latency_ms })));
  renderRecent();
}

async function loadStatus() {
  try {
    const s = await getJson("/api/system-status");
    const row = (k, v) => el("tr", {}, el("td", {}, k), el("td", {class: v === false ? "offline" : ""}, v));
    fill("status", [row("Triton", s.triton), row("database", s.database), row("Redis", s.redis ?? "not used"),
                    row("outbox backlog", s.outbox_depth), row("CPU", s.cpu_percent + " %"),
                    row("memory", s.memory_percent + " %"),
                    row("GPU", s.gpu ? s.gpu.map(g => g.utilization_percent + " %").join(", ") : "none")]);
    fill("devices", s.devices.map(d =>
      el("tr", {dataset: {device: d.device_id}}, el("td", {}, d.device_id), el("td", {}, d.side),
         el("td", {}, d.drives_gpio ? "drives" : "–"),
         el("td", {class: d.online ? "online" : "offline"}, d.online ? "online" : "offline"))));
  } catch (err) { /* next poll */ }
}

const PRIORITIES = ["low", "normal", "high", "urgent"];
async function loadJobs() {
  try {
    const jobs = await getJson("/api/v1/jobs?limit=10");
    const rows = jobs.map(j => {
      const c = j.counts, left = c.pending + c.processing;
      const ok = j.total ? 100 * c.completed / j.total : 100, bad = j.total ? 100 * c.failed / j.total : 0;
      const cancel = j.state === "running"
        ? el("button", {class: "cancel", onclick: () => cancelJob(j.job_id)}, "cancel") : "";
      return el("tr", {dataset: {job: j.job_id, state: j.state}},
        el("td", {title: j.job_id}, j.name || j.job_id.slice(0, 8)),
        el("td", {}, j.kind), el("td", {}, PRIORITIES[j.priority]), el("td", {class: "state"}, j.state),
        el("td", {}, el("span", {class: "bar"}, el("span", {class: "failed", style: {width: `${bad}%`}}),
                                                 el("span", {style: {width: `${ok}%`}})),
                     el("span", {class: "pct"}, `${j.percent}%`)),
        el("td", {}, `${c.completed} / ${c.failed} / ${left}`), el("td", {}, j.items_per_s),
        el("td", {}, j.eta_s == null ? "–" : Math.round(j.eta_s) + " s"), el("td", {}, cancel));
    });
    fill("jobs", rows.length ? rows
      : [el("tr", {}, el("td", {colspan: 9, class: "empty"}, "no jobs (python -m batch run DIR, or POST /api/v1/jobs)"))]);
  } catch (err) { /* next poll */ }
}
async function cancelJob(id) { await fetch(`/api/v1/jobs/${encodeURIComponent(id)}/cancel`, {method: "POST"}); loadJobs(); }

function connect() {
  const es = new EventSource("/api/live");
  const conn = document.getElementById("conn");
  es.onopen = () => { conn.textContent = "live"; conn.className = "live"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = ""; };
  es.addEventListener("inspection", m => onInspection(JSON.parse(m.data)));
}

renderCounts();
// The shadow report (admins only: GET /admin/models/pcb_detector/shadow): shown while a shadow
// version is loaded, or while its comparisons are the newest; anyone else never sees the panel.
async function loadShadow() {
  const r = await fetch("/admin/models/pcb_detector/shadow").catch(() => null);
  const section = $("shadow-section");
  if (!r || !r.ok) { section.hidden = true; return; }
  const rep = await r.json();
  section.hidden = rep.version == null;
  if (rep.version == null) return;
  const m = rep.mirror, lat = rep.latency_ms;
  $("shadow-title").textContent = `· version ${rep.version}` + (m.active_version === rep.version ? " (running)" : " (stopped)");
  const agree = rep.agreement == null ? "–" : (100 * rep.agreement).toFixed(1) + " %";
  $("shadow-summary").textContent = `${rep.samples} sides compared · verdict agreement ${agree} · ` +
    `latency p50 served ${lat.served_p50 ?? "–"} ms, shadow ${lat.shadow_p50 ?? "–"} ms · ` +
    `mirrored ${m.mirrored}, dropped ${m.dropped} (line first)` +
    (rep.disagreements.length ? " · disagree: " +
      rep.disagreements.slice(0, 4).map(d => `${d.served}→${d.shadow} ×${d.count}`).join(", ") : "");
  fill("shadow-classes", rep.classes.map(c => el("tr", {}, el("td", {}, c.class), el("td", {}, c.served),
    el("td", {}, c.shadow), el("td", {class: c.difference ? "offline" : ""}, (c.difference > 0 ? "+" : "") + c.difference))));
}

Promise.all([loadStats(), loadRecent(), loadStatus(), loadJobs(), loadClasses(), loadShadow()]).finally(connect);
setInterval(loadShadow, 5000);
setInterval(loadStatus, 3000);
setInterval(loadJobs, 1000);
setInterval(renderKpis, 1000);
