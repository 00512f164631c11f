// Seawatch operator UI: login, event list with filters, the map (map.js), event detail with snapshot (the camera's
// zones, water and ignore areas and the subject's box drawn over it) and clip,
// acknowledge / dismiss (also as a false detection) / confirm with a note, "ignore this spot" (a fixed camera's false alarm becomes an ignore area,
// listed under the snapshot and removable), sources (cameras, drones, AIS), live updates over /api/live.
// Plain ES modules, no build step, no external resources. Every datum comes from the authenticated API.
"use strict";
import { MapView } from "/ui/map.js";

const state = { auth: null, role: null, events: [], selected: null, detail: null, sources: [], vessels: [], seen: new Set(), ws: null };
const $ = (id) => document.getElementById(id);
let map = null;

function readAuth() {
  const h = new URLSearchParams(location.hash.slice(1));  // kiosk displays: #key=... or #token=... (never sent to the server)
  if (h.get("key")) return { "X-API-Key": h.get("key") };
  if (h.get("token")) return { Authorization: "Bearer " + h.get("token") };
  const t = sessionStorage.getItem("seawatch-token");
  return t ? { Authorization: "Bearer " + t } : null;
}

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: { ...(opts.headers || {}), ...state.auth } });
  if (r.status === 401) { showLogin(); throw new Error("unauthorized"); }
  if (!r.ok) { const b = await r.json().catch(() => ({})); throw new Error((b.error && b.error.message) || r.statusText); }
  return r;
}
const json = async (path, opts) => (await api(path, opts)).json();

function showLogin() {
  $("login").hidden = false; $("main").hidden = true; $("logout").hidden = true;
  if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
}

async function start() {
  state.auth = readAuth();
  if (!state.auth) return showLogin();
  const me = await json("/api/auth/me");
  $("who").textContent = `${me.name} (${me.role})`;
  state.role = me.role;
  $("login").hidden = true; $("main").hidden = false; $("logout").hidden = false;
  const m = await json("/api/map");
  map = new MapView($("map"), { tilesUrl: m.tiles_url, attribution: m.attribution, onPick: select,
    onMove: (v) => { $("map-info").textContent = `${v.lat.toFixed(4)}°, ${v.lon.toFixed(4)}° z${v.zoom.toFixed(1)}`; },
    onHover: (text) => { $("map-hover").textContent = text; } });
  if (!m.tiles_url && m.coastline) fetch("/ui/coastline.json").then((r) => r.json()).then((c) => map.setCoastline(c.lines)).catch(() => {});
  window.seawatch = { state, map, search, select };  // for the browser tests and the console
  await refreshSources(await json("/api/sources"));
  await search();
  await refreshVessels();
  setInterval(() => refreshVessels().catch(() => {}), 10000);
  connectLive();
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const r = await fetch("/api/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: f.get("username"), password: f.get("password") }) });
  const b = await r.json().catch(() => ({}));
  if (!r.ok) { $("login-error").textContent = (b.error && b.error.message) || r.statusText; return; }
  $("login-error").textContent = "";
  sessionStorage.setItem("seawatch-token", b.access_token);
  start().catch((err) => console.error(err));
});
$("logout").addEventListener("click", () => { sessionStorage.removeItem("seawatch-token"); location.hash = ""; location.reload(); });
$("filters").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("map-fit").addEventListener("click", () => map && map.fitAll());
for (const cb of document.querySelectorAll("#map-bar input[data-layer]")) {
  cb.addEventListener("change", () => { if (map) { map.layers[cb.dataset.layer] = cb.checked; map.redraw(); } });
}

async function search() {
  const p = new URLSearchParams();
  for (const [k, v] of new FormData($("filters"))) {
    if (!v) continue;
    p.append(k, k.startsWith("start_") ? new Date(v).toISOString() : v);  // datetime-local is local time
  }
  p.set("limit", "200");
  try {
    state.events = (await json("/api/events?" + p)).events;
    $("count").textContent = `${state.events.length} event(s)`;
  } catch (e) { $("count").textContent = e.message; return; }
  renderList();
  if (map) map.setData({ events: state.events, selected: state.selected });
}

function fmt(ns) { return new Date(ns / 1e6).toISOString().replace("T", " ").slice(0, 19); }

function renderList() {
  const tb = document.querySelector("#events tbody");
  tb.replaceChildren();
  const first = state.seen.size === 0;
  for (const ev of state.events) {
    const tr = document.createElement("tr");
    tr.dataset.id = ev.id;
    tr.className = (state.selected === ev.id ? "sel " : "") + (!first && !state.seen.has(ev.id) ? "fresh" : "");
    for (const [text, cls] of [[fmt(ev.start_ns), ""], [ev.type, ""], [ev.severity, "sev-" + ev.severity], [ev.source_id, ""], [ev.review_status, "status"]]) {
      const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td);
    }
    tr.addEventListener("click", () => select(ev.id));
    tb.appendChild(tr);
  }
  for (const ev of state.events) state.seen.add(ev.id);
}

async function refreshSources(list) {
  state.sources = list;
  const sel = document.querySelector("#filters select[name=source]");
  const have = new Set([...sel.options].map((o) => o.value));
  for (const s of list) if (s.kind === "camera" && !have.has(s.source_id)) { const o = document.createElement("option"); o.textContent = s.source_id; sel.appendChild(o); }
  const tb = document.querySelector("#sources tbody");
  tb.replaceChildren();
  for (const s of list) {
    const tr = document.createElement("tr");
    tr.dataset.id = s.source_id;
    let details = "";
    if (s.kind === "drone") {
      details = [s.mode, s.armed ? "armed" : s.armed === false ? "disarmed" : null,
        s.lat_deg != null ? `${s.lat_deg.toFixed(5)}, ${s.lon_deg.toFixed(5)}` : null,
        s.alt_rel_m != null ? `${s.alt_rel_m.toFixed(0)} m` : null, s.heading_deg != null ? `${s.heading_deg.toFixed(0)}°` : null,
        s.battery_pct != null ? `battery ${s.battery_pct}%` : null,
        s.patrol ? `patrol ${s.patrol} (${s.patrol_state}, waypoint ${s.current_waypoint ?? "-"}/${s.waypoints ?? "-"})` : null,
        s.last_error].filter(Boolean).join(" · ");
    } else if (s.kind === "ais") {
      details = `${s.vessels} vessel(s), ${s.messages} message(s), last ${s.last_message_age_s ?? "-"} s ago`;
    } else {
      details = `${s.frames_decoded ?? 0} frames${s.last_error ? " · " + s.last_error : ""}${s.view ? " · surveyed" : ""}`;
    }
    for (const [text, cls] of [[s.source_id, ""], [s.kind || "camera", ""], [s.state, "st-" + s.state], [details, ""]]) {
      const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td);
    }
    tb.appendChild(tr);
  }
  const drones = list.filter((s) => s.kind === "drone"), cams = list.filter((s) => (s.kind || "camera") === "camera");
  $("status-bar").textContent = `${cams.filter((s) => s.state === "online").length}/${cams.length} camera(s) online · ` +
    `${drones.filter((s) => s.state === "connected").length}/${drones.length} drone(s) linked`;
  if (map) map.setData({ cameras: cams, drones });
}

async function refreshVessels() {
  state.vessels = (await json("/api/ais/vessels?limit=2000")).vessels;
  if (map) map.setData({ vessels: state.vessels });
}

async function blobUrl(path) { return URL.createObjectURL(await (await api(path)).blob()); }

async function select(id) {
  state.selected = id; renderList();
  if (map) map.setData({ selected: id });
  const ev = await json("/api/events/" + encodeURIComponent(id));
  state.detail = ev;
  $("detail").hidden = false;
  $("detail").dataset.id = ev.id;
  $("d-title").textContent = `${ev.type} (${ev.severity}) on ${ev.source_id}`;
  $("d-meta").textContent = `started ${fmt(ev.start_ns)} UTC${ev.end_ns ? ", ended " + fmt(ev.end_ns) : ""}, ${ev.phase}, ` +
    `status: ${ev.review_status}` +
    (ev.geo ? `, at ${ev.geo.lat_deg.toFixed(5)}, ${ev.geo.lon_deg.toFixed(5)} ± ${ev.geo.semi_major_m.toFixed(0)} m` : `, no position: ${ev.geo_reason || "unknown"}`) +
    (ev.attributes && ev.attributes.vessel_name ? `, vessel ${ev.attributes.vessel_name}` : "");
  const audit = $("d-audit");
  audit.replaceChildren();
  for (const r of ev.review_history || []) {
    const li = document.createElement("li");
    li.textContent = `${r.status}${r.reason ? " (" + r.reason.replace("_", " ") + ")" : ""} by ${r.by || r.actor || "?"}${r.note ? ": " + r.note : ""}`;
    audit.appendChild(li);
  }
  const src = state.sources.find((s) => s.source_id === ev.source_id);
  // a fixed camera's event with a subject box can become an ignore area, once (reviewers; the server checks again)
  const made = ((src && src.areas) || []).some((a) => a.origin === "operator" && a.event_id === ev.id);
  $("d-ignore").hidden = !(ev.snapshot && src && (src.kind || "camera") === "camera" && !src.drone_id) || state.role === "operator" || made;
  renderIgnored(ev);
  const img = $("d-snapshot"), vid = $("d-clip"), note = $("d-clip-note");
  img.hidden = !ev.snapshot_url; vid.hidden = !ev.clip_url;
  note.textContent = ev.clip_url ? "" : "clip: the incident is still open";
  drawOverlay(null);
  if (ev.snapshot_url) {
    img.onload = () => { if (state.selected === ev.id) drawOverlay(ev); };
    img.src = await blobUrl(ev.snapshot_url).catch(() => "");
  }
  if (ev.clip_url) {
    try {
      vid.src = await blobUrl(ev.clip_url);
      vid.play().catch(() => {});
    } catch (e) { vid.hidden = true; note.textContent = "clip: " + e.message; }
  }
}

// The camera's areas (its pixel zones, water, ignore areas: from /api/sources) and the event's subject box, drawn
// over the snapshot in the frame's own pixels (the snapshot is the whole frame), scaled with the image.
const SVG = "http://www.w3.org/2000/svg";
function drawOverlay(ev) {
  const svg = $("d-overlay"), img = $("d-snapshot");
  svg.replaceChildren();
  if (!ev || img.hidden || !img.naturalWidth) { svg.removeAttribute("viewBox"); return; }
  svg.setAttribute("viewBox", `0 0 ${img.naturalWidth} ${img.naturalHeight}`);
  svg.setAttribute("width", img.clientWidth); svg.setAttribute("height", img.clientHeight);
  const stroke = Math.max(1, img.naturalWidth / Math.max(1, img.clientWidth)) * 2;
  const add = (tag, attrs, text) => {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text) el.textContent = text;
    svg.appendChild(el); return el;
  };
  const src = state.sources.find((s) => s.source_id === ev.source_id);
  if ($("d-areas").checked) {
    for (const a of (src && src.areas) || []) {
      const cls = a.kind + (a.kind === "zone" && a.id === ev.zone_id ? " hit" : "") + (a.origin === "operator" ? " operator" : "");
      const p = add("polygon", { points: a.polygon_px.map((q) => q.join(",")).join(" "), class: cls, "data-kind": a.kind,
        "data-id": a.id, "stroke-width": stroke });
      const t = document.createElementNS(SVG, "title");
      t.textContent = a.kind === "zone" ? `zone ${a.id}: ${(a.rules || []).join(", ")}` :
        a.kind === "ignore" ? `ignored (${(a.labels || []).join(", ")})${a.note ? ": " + a.note : ""}` : "water";
      p.appendChild(t);
      if (a.kind !== "water") add("text", { x: a.polygon_px[0][0] + 3, y: a.polygon_px[0][1] + 14 }, a.kind === "zone" ? a.id : (a.note || "ignore"));
    }
  }
  const b = ev.snapshot && ev.snapshot.xyxy_px;
  if (b && b.length === 4) add("rect", { x: b[0], y: b[1], width: Math.max(1, b[2] - b[0]), height: Math.max(1, b[3] - b[1]),
    class: "subject", "stroke-width": stroke });
}
$("d-areas").addEventListener("change", () => drawOverlay(state.detail));

// The ignore areas added from the review desk on the event's camera, each removable by reviewers.
function renderIgnored(ev) {
  const ul = $("d-ignored");
  ul.replaceChildren();
  const src = state.sources.find((s) => s.source_id === ev.source_id);
  for (const a of ((src && src.areas) || []).filter((x) => x.origin === "operator")) {
    const li = document.createElement("li");
    li.dataset.areaId = a.area_id;
    li.textContent = `ignore area ${a.area_id} (${(a.labels || []).join(", ")}) by ${a.created_by}${a.note ? ": " + a.note : ""}` +
      (a.event_id === ev.id ? " (from this event)" : "");
    if (state.role !== "operator") {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = "remove";
      b.addEventListener("click", () => reviewDesk(`/api/sources/${encodeURIComponent(ev.source_id)}/ignore-areas/${a.area_id}`, { method: "DELETE" }));
      li.appendChild(b);
    }
    ul.appendChild(li);
  }
}

async function reviewDesk(path, opts) {
  try {
    await api(path, opts);
    $("d-error").textContent = ""; $("d-note").value = "";
    await refreshSources(await json("/api/sources"));
    await search(); await select(state.selected);
  } catch (e) { $("d-error").textContent = e.message; }
}
$("d-ignore").addEventListener("click", () => reviewDesk(`/api/events/${encodeURIComponent(state.selected)}/ignore-spot`, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ note: $("d-note").value }) }));

for (const btn of document.querySelectorAll("#detail button[data-act]")) {
  btn.addEventListener("click", async () => {
    await reviewDesk(`/api/events/${encodeURIComponent(state.selected)}/${btn.dataset.act}`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ note: $("d-note").value }, btn.dataset.reason ? { reason: btn.dataset.reason } : {})) });
  });
}

function connectLive() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/live");
  state.ws = ws;
  const el = $("live");
  ws.onopen = () => {
    const a = state.auth;
    ws.send(JSON.stringify(a["X-API-Key"] ? { api_key: a["X-API-Key"] } : { token: a.Authorization.slice(7) }));
  };
  let pending = null;
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.kind === "hello") { el.textContent = "live: on"; el.className = "on"; }
    if (msg.kind === "sources") refreshSources(msg.sources);
    if (msg.kind === "event" || msg.kind === "review") { clearTimeout(pending); pending = setTimeout(search, 300); }
  };
  ws.onclose = () => { el.textContent = "live: off"; el.className = "off"; if (state.ws === ws) setTimeout(connectLive, 3000); };
}

start().catch((e) => console.error(e));
