// The page of `rmac-native serve`: plain JavaScript, no library, no network
// beyond this server. A query is an image (dropped or chosen) or a path in the
// index; `#path=P&k=K` in the address runs a path query on load, so a result
// can be linked to.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { objectUrl: null };

async function api(url, options = {}) {
  const response = await fetch(url, { credentials: "same-origin", ...options });
  const text = await response.text();
  let body;
  try { body = JSON.parse(text); } catch (_) { body = { error: text || response.statusText }; }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function thumbUrl(path, size) {
  return `/api/thumb?path=${encodeURIComponent(path)}&size=${size}`;
}

function say(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

function number(id, fallback) {
  const n = parseInt($(id).value, 10);
  return Number.isFinite(n) && n >= 0 ? n : fallback;
}

function params() {
  const k = Math.max(1, number("k", 20));
  const qe = number("qe", 0);
  return `k=${k}&qe=${qe}`;
}

function showQuery(label, src) {
  $("query-shown").hidden = false;
  $("query-label").textContent = label;
  $("query-image").src = src;
}

function tile(hit) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "hit";
  button.dataset.path = hit.path;
  button.title = `search from ${hit.path}`;
  const box = document.createElement("span");
  box.className = "thumb";
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = hit.path;
  img.addEventListener("load", () => { img.dataset.loaded = "1"; });
  img.addEventListener("error", () => { box.classList.add("missing"); });
  img.src = thumbUrl(hit.path, 320);
  box.append(img);
  const meta = document.createElement("span");
  meta.className = "meta";
  const rank = document.createElement("span");
  rank.className = "rank";
  rank.textContent = hit.rank !== undefined ? `#${hit.rank}` : "";
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score.toFixed(4);
  meta.append(rank, score);
  const path = document.createElement("span");
  path.className = "path";
  path.textContent = hit.path;
  button.append(box, meta, path);
  button.addEventListener("click", () => searchPath(hit.path));
  li.append(button);
  return li;
}

function render(answer) {
  const list = $("results");
  list.replaceChildren(...answer.results.map(tile));
  list.dataset.query = answer.query;
  const n = answer.results.length;
  say(`${n} result${n === 1 ? "" : "s"} for ${answer.query_kind} ${answer.query} in ${answer.took_ms.toFixed(1)} ms`);
}

async function run(label, src, request) {
  say(`searching (${label})…`);
  showQuery(label, src);
  try {
    render(await request());
  } catch (e) {
    $("results").replaceChildren();
    say(e.message, true);
  }
}

function searchPath(path) {
  path = path.trim();
  if (!path) { say("type a path that is in the index, or drop an image", true); return; }
  $("path").value = path;
  const hash = `#path=${encodeURIComponent(path)}&k=${number("k", 20)}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
  showSearch();
  return run(path, thumbUrl(path, 240), () => api(`/api/search?${params()}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ path }),
  }));
}

function searchFile(file) {
  if (!file) return;
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = URL.createObjectURL(file);
  history.replaceState(null, "", location.pathname);
  showSearch();
  return run(file.name, state.objectUrl, () => api(`/api/search?${params()}`, {
    method: "POST",
    headers: { "Content-Type": file.type || "application/octet-stream" },
    body: file,
  }));
}

function showSearch() {
  $("view-search").hidden = false;
  $("view-dedup").hidden = true;
  $("tab-search").setAttribute("aria-pressed", "true");
  $("tab-dedup").setAttribute("aria-pressed", "false");
}

async function showDedup() {
  $("view-search").hidden = true;
  $("view-dedup").hidden = false;
  $("tab-search").setAttribute("aria-pressed", "false");
  $("tab-dedup").setAttribute("aria-pressed", "true");
  if ($("groups").childElementCount) return;
  try {
    const d = await api("/api/dedup");
    const s = d.summary || {};
    $("dedup-summary").textContent = `${d.groups.length} groups at threshold ${s.threshold ?? "?"}; ` +
      `${s.droppable ?? "?"} copies could be dropped, ${s.kept ?? "?"} images kept. The keeper comes first.`;
    $("groups").replaceChildren(...d.groups.map((g, i) => {
      const box = document.createElement("section");
      box.className = "group";
      const h = document.createElement("h2");
      h.textContent = `group ${i + 1}: ${g.size} copies, keep ${g.keeper}`;
      const list = document.createElement("ol");
      list.className = "grid";
      list.append(...g.members.map(([path, score]) => tile({ path, score })));
      box.append(h, list);
      return box;
    }));
  } catch (e) {
    $("dedup-summary").textContent = e.message;
  }
}

// Arrow keys move between result tiles.
function moveFocus(event) {
  const tiles = [...document.querySelectorAll("main section:not([hidden]) .hit")];
  const i = tiles.indexOf(document.activeElement);
  if (i < 0) return;
  const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
  if (!step) return;
  event.preventDefault();
  tiles[Math.min(tiles.length - 1, Math.max(0, i + step))].focus();
}

function fromHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.get("k")) $("k").value = h.get("k");
  if (h.get("qe")) $("qe").value = h.get("qe");
  if (h.get("path")) searchPath(h.get("path"));
}

async function start() {
  $("query").addEventListener("submit", (e) => { e.preventDefault(); searchPath($("path").value); });
  $("file").addEventListener("change", () => searchFile($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
  drop.addEventListener("click", (e) => { if (e.target === drop) $("file").click(); });
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("over"); });
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) searchFile(file);
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && document.activeElement.tagName !== "INPUT") { e.preventDefault(); $("path").focus(); }
    moveFocus(e);
  });
  $("tab-search").addEventListener("click", showSearch);
  $("tab-dedup").addEventListener("click", showDedup);
  window.addEventListener("hashchange", fromHash);
  try {
    const info = await api("/api/info");
    $("facts").textContent = `${info.index}: ${info.vectors} vectors of ${info.dimension} floats` +
      (info.model ? `; image queries on ${info.model}` : `; no image queries (${info.model_note})`) +
      (info.settings ? `; max-size ${info.settings.max_size}, levels ${info.settings.levels}` : "");
    $("k").max = info.max_k;
    $("qe").max = info.max_k;
    $("tab-dedup").hidden = !info.dedup;
    if (!info.model) $("drop").hidden = true;
  } catch (e) {
    $("facts").textContent = e.message;
  }
  fromHash();
}

start();
