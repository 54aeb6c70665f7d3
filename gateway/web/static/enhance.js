const $ = (id) => document.getElementById(id);
const MAX_FILES = 20;
let chosen = [];   // File objects, in upload order
let cards = [];    // index -> card element
let batch = null;

function pick(list) {
  chosen = [...list].filter(f => /^image\/(jpeg|png)$/.test(f.type) || /\.(jpe?g|png)$/i.test(f.name));
  if (chosen.length > MAX_FILES) {
    $("summary").textContent = `${chosen.length} photos chosen: at most ${MAX_FILES} per batch, the first ${MAX_FILES} are kept.`;
    chosen = chosen.slice(0, MAX_FILES);
  } else {
    $("summary").textContent = `${chosen.length} photo(s) ready.`;
  }
  $("items").replaceChildren();
  cards = chosen.map((f, i) => card(f, i));
  $("start").disabled = chosen.length === 0;
  $("zip").classList.add("hidden");
}

function card(file, i) {
  const el = document.createElement("div");
  el.className = "item"; el.dataset.index = i; el.dataset.state = "ready";
  // built node by node: no markup from strings on this page
  const make = (tag, cls, text) => { const n = document.createElement(tag); if (cls) n.className = cls;
                                     if (text) n.textContent = text; return n; };
  const bar = make("div", "bar"); bar.append(make("div"));
  const figure = (cls, caption) => { const f = make("figure"); const img = make("img", cls); img.alt = caption;
                                     f.append(img, make("figcaption", null, caption)); return f; };
  const pair = make("div", "pair"); pair.append(figure("before", "before"), figure("after", "after"));
  el.append(make("div", "name"), make("div", "state", "ready"), bar, pair);
  el.querySelector(".name").textContent = file.name;
  el.querySelector(".before").src = URL.createObjectURL(file);
  $("items").appendChild(el);
  return el;
}

function show(item) {
  const el = cards[item.index];
  if (!el) return;
  el.dataset.state = item.state;
  el.dataset.task = item.task_id;
  let text = item.state;
  if (item.state === "completed") text += ` - ${item.faces} face(s)` + (item.info && item.info.no_face ? " (no face: background only)" : "");
  if (item.state === "failed" && item.error) text += ` - ${item.error.code}: ${item.error.message}`;
  el.querySelector(".state").textContent = text;
  el.querySelector(".bar div").style.width = `${Math.round(item.progress * 100)}%`;
  if (item.state === "completed" && item.download_url && !el.querySelector(".after").src) {
    el.querySelector(".after").src = item.download_url;
  }
}

function summary(s) {
  $("summary").textContent = `${s.completed} completed, ${s.failed} failed, ${s.cancelled} cancelled, ` +
    `${s.processing} processing, ${s.queued} queued of ${s.total} - ${Math.round(s.progress * 100)}%`;
}

async function start() {
  $("start").disabled = true;
  const form = new FormData();
  chosen.forEach(f => form.append("files", f, f.name));
  form.append("quality", $("quality").value);
  form.append("tile_size", $("tile").value);
  form.append("upscale", $("upscale").value);
  const r = await fetch("/api/v1/enhance/batch", {method: "POST", body: form});
  const body = await r.json();
  if (!r.ok) {
    $("summary").textContent = `refused: ${body.code}: ${body.message}`;
    $("start").disabled = false;
    return;
  }
  batch = body;
  $("cancel").classList.remove("hidden");
  const es = new EventSource(body.events_url);
  es.addEventListener("item", e => show(JSON.parse(e.data)));
  es.addEventListener("batch", e => summary(JSON.parse(e.data)));
  es.addEventListener("done", e => {
    summary(JSON.parse(e.data));
    es.close();
    $("cancel").classList.add("hidden");
    $("zip").href = body.download_url;
    $("zip").classList.remove("hidden");
    document.body.dataset.done = "1";
  });
}

$("drop").addEventListener("click", () => $("files").click());
$("files").addEventListener("change", e => pick(e.target.files));
["dragenter", "dragover"].forEach(t => $("drop").addEventListener(t, e => { e.preventDefault(); $("drop").classList.add("over"); }));
["dragleave", "drop"].forEach(t => $("drop").addEventListener(t, e => { e.preventDefault(); $("drop").classList.remove("over"); }));
$("drop").addEventListener("drop", e => pick(e.dataTransfer.files));
$("start").addEventListener("click", start);
$("cancel").addEventListener("click", () => batch && fetch(`/api/v1/batch/${batch.batch_id}/cancel`, {method: "POST"}));
