// Seawatch operator UI: login, event list with filters, the map (map.js), event detail with snapshot (the camera's
// zones, water and ignore areas and the subject's box drawn over it) and clip,
// acknowledge / dismiss (also as a false detection) / confirm with a note, "ignore this spot" (a fixed camera's false alarm becomes an ignore area,
// listed under the snapshot and removable), the event's holds with "Keep as evidence" and "Release hold" (retention
// never deletes an event with an active hold; a lifted hold stays listed; an admin lifts an evidence export's hold
// with a note), sources (cameras, drones with their patrol state and abort / restart), a warning banner while /api/health
// says the service is degraded (the media disk low above all), live updates over /api/live, a camera's recordings (any
// time window played with what was recorded and the camera's events on a bar, downloaded, and reported as an event
// at the picture shown, the spot marked in it; a drone camera's window with where its drone flew on the map, from the
// drone's flight log, and where it was at the picture shown).
// A search area drawn on the map (a polygon or a circle) limits the search and its exports to the events located in it.
// Plain ES modules, no build step, no external resources. Every datum comes from the authenticated API.
"use strict";
import { MapView, describeArea, displayText, isolated } from "./map.js";
// where the service is (every request relative to it, so a proxy's path prefix needs no setting), the framing check
// (before anything else runs: nothing is shown and no credential used inside another site's page), the tab's
// credential, the API client, the log-in form and text from outside as an isolated <bdi>: shared with /wall and
// /calibrate
import { FRAMED, ROOT, apiClient, bindLoginForm, here, readAuth, untrusted } from "./session.js";
// every time shown or typed, in the display zone the operator chose (UTC by default, or the browser's own zone)
import { formatDate, formatTime, inputValue, localZone, modeText, offsetMs, offsetText, onTimeModeChange, otherZoneTitle,
  readInput, setTimeMode, timeMode, zoneLabel } from "./timefmt.js";

const state = { auth: null, role: null, events: [], nextCursor: null, selected: null, detail: null, sources: [], vessels: [],
  seen: new Set(), ws: null, held: new Set(), health: null };
const $ = (id) => document.getElementById(id);
const PAGE = 200;  // events per list page ("Load more" fetches the next one)
let map = null;
let vesselTimer = null, healthTimer = null, reconnectTimer = null, running = null;  // one of each, whatever number of logins
const HEALTH_POLL_MS = 60000;  // /api/health (the disk, the store's retry queue) is asked this often
let selSeq = 0;  // bumped by every select(): an answer for an older selection is dropped

// Roles in rank order, as the server checks them: a viewer (a wall display) sees everything and changes nothing.
const ROLE_RANK = { viewer: -1, operator: 0, reviewer: 1, admin: 2 };
const atLeast = (role) => state.role != null && ROLE_RANK[state.role] >= ROLE_RANK[role];

const { api, json } = apiClient(() => state.auth, () => showLogin());

// The session is gone (no or a refused credential): the login form, and nothing left running in the background.
function showLogin() {
  $("login").hidden = false; $("main").hidden = true; $("logout").hidden = true;
  clearInterval(vesselTimer); vesselTimer = null;
  clearInterval(healthTimer); healthTimer = null; $("health-banner").hidden = true;
  clearTimeout(reconnectTimer); reconnectTimer = null;
  if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
  closeLive({ keepLink: true });  // #live= stays in the address: the live view opens again after the next log-in
  closeRecordings();
}

// Safe to call again after a new login: the map (and its listeners) is made once, the timers and the live socket
// are replaced, never added.
function start() {
  if (!running) running = doStart().finally(() => { running = null; });
  return running;
}

async function doStart() {
  if (FRAMED) return;
  state.auth = readAuth();
  if (!state.auth) return showLogin();
  const me = await json("api/auth/me");
  $("who").textContent = `${me.name} (${me.role})`;
  state.role = me.role;
  // the other pages keep a kiosk's credential from the address (a wall display's key opens the wall too)
  const keep = new URLSearchParams([...new URLSearchParams(location.hash.slice(1))].filter(([k]) => k === "key" || k === "token"));
  for (const [id, page] of [["to-wall", "wall"], ["to-report", "report"], ["to-calibrate", "calibrate"], ["to-audit", "audit"]]) $(id).href = here(page) + (keep.size ? "#" + keep : "");
  $("to-calibrate").hidden = !atLeast("admin");
  $("to-audit").hidden = !atLeast("admin");  // the security audit log (GET /api/admin/audit answers anyone else 403)
  $("d-export").hidden = !atLeast("reviewer");  // the evidence package is for reviewers and admins (the server checks)
  $("d-hold-bar").hidden = !atLeast("reviewer");  // holds are a reviewer's (the server answers an operator 403)
  // a viewer reviews, reports and commands nothing (the server answers 403): no note, no buttons, no report form
  $("d-note").hidden = !atLeast("operator");
  $("rec-report").hidden = !atLeast("operator");
  $("login").hidden = true; $("main").hidden = false; $("logout").hidden = false;
  clearInterval(healthTimer);
  healthTimer = setInterval(() => checkHealth(), HEALTH_POLL_MS);
  checkHealth();
  const first = !map;
  if (first) {
    const m = await json("api/map");
    map = new MapView($("map"), { tilesUrl: m.tiles_url, attribution: m.attribution, onPick: select, onPickCamera: openLive, onPickTrack: (i) => recSeekTrack(i),
      onMove: (v) => { $("map-info").textContent = `${v.lat.toFixed(4)}°, ${v.lon.toFixed(4)}° z${v.zoom.toFixed(1)}`; viewMoved(); },
      onHover: (text) => { $("map-hover").textContent = text; },
      onArea: (a) => { setHashParam("area", encodeArea(a)); showArea(); search(); }, onDrawHint: (text) => { $("area-hint").textContent = text; showArea(); } });
    layoutMap();
    if (!m.tiles_url && m.coastline) fetch(here("ui/coastline.json")).then((r) => r.json()).then((c) => map.setCoastline(c.lines)).catch(() => {});
  }
  if (!first) layoutMap();
  window.seawatch = { state, map, search, select, loadMore, checkHealth, openLive, alarm, openRecordings, closeRecordings, recTrack, layoutMap,
    closeDetail };  // for the browser tests and the console
  await refreshSources(await json("api/sources"));
  const area = decodeArea(hashParam("area"));  // a search area in the address (a shared link, a reload) is searched again
  if (area && first) map.setArea(area);
  showArea();
  await search();
  if (first && !map.touched) map.fitAll();  // again with the events (the sources alone framed it so far)
  const linked = linkedEvent();
  if (linked && linked !== state.selected) select(linked, { reveal: true });  // a link to an event (#event=ID) opens it
  openLinkedLive();  // and one to a camera's live view (#live=CAMERA)
  // a vessel table that fails to load now (a slow or restarting AIS side) must not keep the live feed unconnected
  await refreshVessels().catch((err) => console.warn("AIS vessels not loaded", err));
  clearInterval(vesselTimer);
  vesselTimer = setInterval(() => refreshVessels().catch(() => {}), 10000);
  connectLive();
}

bindLoginForm($("login-form"), $("login-error"), () => start().catch((err) => console.error(err)));
// Log out ends the token on the server too (a copy of it stops working now, not at its expiry); a wall display's
// #key= is not ended by it (an API key is revoked in the configuration).
$("logout").addEventListener("click", async () => {
  if (state.auth && state.auth.Authorization)
    await fetch(here("api/auth/logout"), { method: "POST", headers: state.auth }).catch(() => {});
  sessionStorage.removeItem("seawatch-token"); location.hash = ""; location.reload();
});
$("filters").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("f-inview").addEventListener("change", () => search());
$("load-more").addEventListener("click", () => loadMore());
$("export-geojson").addEventListener("click", () => exportSearch("geojson"));
$("export-kml").addEventListener("click", () => exportSearch("kml"));
$("export-csv").addEventListener("click", () => exportSearch("csv"));
$("d-export").addEventListener("click", () => exportEvidence());
$("map-fit").addEventListener("click", () => map && map.fitAll());
$("lv-close").addEventListener("click", () => closePanel("live-view"));
$("d-close").addEventListener("click", () => closePanel("detail"));
$("d-live").addEventListener("click", () => state.detail && openLive(state.detail.source_id));
$("lv-boxes").addEventListener("change", () => refreshLive());
for (const r of document.querySelectorAll('input[name="lv-mode"]'))
  r.addEventListener("change", () => { if (r.checked) { live.mode = r.value; if (r.value === "video") live.refused = ""; applyLiveMode(); } });
for (const cb of document.querySelectorAll("#map-bar input[data-layer]")) {
  cb.addEventListener("change", () => { if (map) { map.layers[cb.dataset.layer] = cb.checked; map.redraw(); } });
}

// The map's current view as a search bbox (south, west, north, east; west > east across the antimeridian).
function viewBox() {
  const tl = map.unproject(0, 0), br = map.unproject(map.widthPx, map.heightPx);
  const wrap = (lon) => ((((lon + 180) % 360) + 360) % 360) - 180, r6 = (x) => Math.round(x * 1e6) / 1e6;
  const whole = br.lon - tl.lon >= 360;
  return { min_lat: r6(Math.max(-90, br.lat)), max_lat: r6(Math.min(90, tl.lat)),
    min_lon: whole ? -180 : r6(wrap(tl.lon)), max_lon: whole ? 180 : r6(wrap(br.lon)) };
}

// The filter form as query parameters (the times typed in are read in the display zone and sent as UTC instants).
// A local time that does not exist (the spring-forward hour) throws, saying so; one the zone shows twice (the
// autumn hour) is read as its first reading in "from" and its second in "to", so the range holds both (the note
// beside the filters says so).
function filterParams() {
  const p = new URLSearchParams(), notes = [];
  for (const [k, v] of new FormData($("filters"))) {
    if (!v) continue;
    if (k.startsWith("start_")) {
      const r = readInput(String(v), { pick: k === "start_to" ? "second" : "first" });
      if (r && r.error) { $("f-time-note").textContent = ""; throw new Error(`${k === "start_to" ? "to" : "from"}: ${r.error}`); }
      if (r && r.ambiguous) notes.push(`${k === "start_to" ? "to" : "from"} ${String(v).replace("T", " ")} occurs twice ` +
        `(${zoneLabel(r.ambiguous[0])}, then ${zoneLabel(r.ambiguous[1])}): read as the ${k === "start_to" ? "second" : "first"}`);
      if (r) p.append(k, new Date(r.ns / 1e6).toISOString());
    } else if (k === "source" && String(v).startsWith("drone:")) p.append("drone", String(v).slice(6));
    else if (String(v).trim()) p.append(k, String(v).trim());
  }
  if ($("f-inview").checked && map) for (const [k, v] of Object.entries(viewBox())) p.set(k, String(v));
  areaParams(p);
  $("f-time-note").textContent = notes.join("; ");
  return p;
}

// The search area drawn on the map as the search API's parameters: polygon=lon lat,... or near_lat/near_lon/radius_m
// (it combines with the other filters and "only in map view": all must hold).
function areaParams(p) {
  const a = map && map.area, r6 = (x) => String(Math.round(x * 1e6) / 1e6);
  if (!a) return;
  if (a.kind === "circle") { p.set("near_lat", r6(a.lat)); p.set("near_lon", r6(a.lon)); p.set("radius_m", a.radius_m.toFixed(1)); }
  else p.set("polygon", a.points.map(([lat, lon]) => `${r6(lon)} ${r6(lat)}`).join(","));
}

// The search area in the address (#area=...), so a reload or a shared link searches the same place:
// "c:lat,lon,radius_m" for a circle, "p:lat,lon;lat,lon;..." for a polygon; junk is no area.
function encodeArea(a) {
  const r6 = (x) => String(Math.round(x * 1e6) / 1e6);
  if (!a) return null;
  return a.kind === "circle" ? `c:${r6(a.lat)},${r6(a.lon)},${a.radius_m.toFixed(1)}`
    : "p:" + a.points.map(([lat, lon]) => `${r6(lat)},${r6(lon)}`).join(";");
}
function decodeArea(text) {
  const m = /^([cp]):(.{1,20000})$/.exec(text || "");
  if (!m) return null;
  const nums = (t) => t.split(",").map(Number);
  const okLatLon = (lat, lon) => Number.isFinite(lat) && Number.isFinite(lon) && Math.abs(lat) <= 90 && Math.abs(lon) <= 180;
  if (m[1] === "c") {
    const [lat, lon, r] = nums(m[2]);
    return okLatLon(lat, lon) && Number.isFinite(r) && r > 0 && r <= 1_000_000 ? { kind: "circle", lat, lon, radius_m: r } : null;
  }
  const points = m[2].split(";").map(nums);
  return points.length >= 3 && points.length <= 500 && points.every((q) => q.length === 2 && okLatLon(q[0], q[1]))
    ? { kind: "polygon", points } : null;
}

// The area's line under the map: what is drawn (or being drawn, and what the next click does) and its buttons.
function showArea() {
  const a = map && map.area, d = map && map.drawing;
  $("area-info").textContent = a ? `search area: ${describeArea(a)}` : "";
  $("area-clear").hidden = !a && !d;
  $("area-clear").textContent = d ? "cancel" : "clear area";
  $("area-bar").hidden = !a && !d;
  for (const [id, kind] of [["area-polygon", "polygon"], ["area-circle", "circle"]]) $(id).setAttribute("aria-pressed", String(!!d && d.kind === kind));
}
for (const [id, kind] of [["area-polygon", "polygon"], ["area-circle", "circle"]]) {
  $(id).addEventListener("click", () => {
    if (!map) return;
    if (map.drawing && map.drawing.kind === kind) map.cancelDrawing(); else map.startDrawing(kind);
    showArea();
  });
}
$("area-clear").addEventListener("click", () => { if (map && map.drawing) map.cancelDrawing(); else if (map) map.clearArea(); showArea(); });
// while drawing: Enter closes the polygon, Backspace takes back the last corner, Esc stops (not while typing in a field)
document.addEventListener("keydown", (e) => {
  if (!map || !map.drawing || (e.target instanceof Element && e.target.closest("input, textarea, select"))) return;
  if (e.key === "Escape") map.cancelDrawing();
  else if (e.key === "Enter") map.finishPolygon();
  else if (e.key === "Backspace") map.undoCorner();
  else return;
  e.preventDefault();
});

// The panels an operator opens and closes (an event's detail, a camera's live view, its recordings, the snooze form),
// most recently opened last: Esc closes the topmost one still open, and the focus goes back to what opened it (the
// event's row, the "Live view" or "Recordings" button), else to the list row or sources button that opens it again.
const PANELS = {
  "detail": { close: () => closeDetail(), again: (id) => document.querySelector(`#events tbody tr[data-id="${CSS.escape(id)}"]`) },
  "live-view": { close: () => closeLive(), again: (id) => document.querySelector(`#sources tr[data-id="${CSS.escape(id)}"] .live-act`) },
  "recordings": { close: () => closeRecordings(), again: (id) => document.querySelector(`#sources tr[data-id="${CSS.escape(id)}"] .rec-act`) },
  "snooze-box": { close: () => closeSnooze(), again: (id) => document.querySelector(`#sources tr[data-id="${CSS.escape(id)}"] .snooze-act`) },
};
const openPanels = [];  // [{panel, key, opener}], the newest last
function panelOpened(panel, key) {
  const i = openPanels.findIndex((p) => p.panel === panel);
  if (i >= 0) openPanels.splice(i, 1);
  openPanels.push({ panel, key: String(key ?? ""), opener: document.activeElement });
}
function topPanel() {
  while (openPanels.length && $(openPanels[openPanels.length - 1].panel).hidden) openPanels.pop();  // closed otherwise
  return openPanels.length ? openPanels[openPanels.length - 1].panel : null;
}
// Close a panel the operator asked to close (Esc, its Close button) and give the focus back to what opened it.
function closePanel(panel) {
  const i = openPanels.findIndex((p) => p.panel === panel), entry = i >= 0 ? openPanels.splice(i, 1)[0] : null;
  PANELS[panel].close();
  if (!entry) return;
  const usable = (el) => el instanceof HTMLElement && el !== document.body && el.isConnected && !el.disabled &&
    el.getClientRects().length > 0;  // shown (not inside a panel just hidden, not a row drawn anew since)
  const to = [entry.opener, PANELS[panel].again(entry.key)].find(usable);
  if (to) to.focus();
}
// Esc closes nothing while the operator types (a text field or a list keeps its own Esc), nor while an area is drawn
// on the map (the handler above cancels the drawing first and marks the key as used)
const TYPING = "textarea, select, [contenteditable]:not([contenteditable=false]), input:not([type=checkbox], [type=radio], " +
  "[type=button], [type=submit], [type=reset], [type=range], [type=color], [type=file], [type=image])";
document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape" || e.defaultPrevented || e.isComposing || $("main").hidden) return;
  if (e.target instanceof Element && e.target.closest(TYPING)) return;
  if (map && map.drawing) return;
  const panel = topPanel();
  if (!panel) return;
  e.preventDefault();
  closePanel(panel);
});

// The map on the screen: its canvas's own 720 x 520 on a laptop (the list beside it keeps room for its columns), the
// screen's width on a phone, and on a wide screen (a 2560 or 3840 px control-room display) as large as the window
// allows with LIST_BESIDE_PX left for the list beside it, at the same aspect, never taller than what the window shows
// under the filters. A grown map makes #main "map-wide" (app.css): the list, an event's detail, the live view and the
// recordings stack beside the map instead of under it, so opening one leaves the map in sight. Laid out again whenever
// the window's size (or the screen's pixel ratio: a zoom) changes; the map draws on devicePixelRatio canvas pixels per
// CSS pixel.
const MAP_BASE_W_PX = 720, MAP_BASE_H_PX = 520, LIST_BESIDE_PX = 640, MAP_MARGIN_PX = 12;
const PHONE = window.matchMedia("(max-width: 760px)");
function layoutMap() {
  if (!map || $("main").hidden) return;
  const panes = $("panes"), pane = $("map-pane"), canvas = $("map"), css = getComputedStyle(panes);
  let w = MAP_BASE_W_PX;
  if (PHONE.matches) w = Math.max(100, pane.clientWidth - 2);  // the pane is the screen's width (its border: 1 px each side)
  else {
    // #main's width less the panes' padding (the same whether #panes is a box or, map-wide, only its children's)
    const inner = $("main").clientWidth - parseFloat(css.paddingLeft) - parseFloat(css.paddingRight);
    const roomW = inner - (parseFloat(css.columnGap) || 0) - LIST_BESIDE_PX;
    // the height the window has under the filters, less what sits under the canvas (its bar and the legend)
    const under = pane.getBoundingClientRect().height - canvas.getBoundingClientRect().height;
    const roomH = window.innerHeight - (canvas.getBoundingClientRect().top + window.scrollY) - under - MAP_MARGIN_PX;
    w = Math.max(MAP_BASE_W_PX, Math.min(roomW, roomH * MAP_BASE_W_PX / MAP_BASE_H_PX));
  }
  map.resize(Math.floor(w), Math.floor(w * MAP_BASE_H_PX / MAP_BASE_W_PX));
  $("main").classList.toggle("map-wide", !PHONE.matches && map.widthPx > MAP_BASE_W_PX);
  // the list beside a grown map is as tall as the map's pane (its own 560 px at least)
  panes.style.setProperty("--map-pane-h", `${Math.ceil(pane.getBoundingClientRect().height)}px`);
}
let layoutFrame = 0;
function layoutMapSoon() {
  cancelAnimationFrame(layoutFrame);
  // twice: the bar under the canvas may wrap onto fewer lines once the canvas is wider, which leaves more height
  layoutFrame = requestAnimationFrame(() => { layoutMap(); layoutMap(); });
}
window.addEventListener("resize", layoutMapSoon);
PHONE.addEventListener("change", layoutMapSoon);

let searchSeq = 0, lastBox = "", moveTimer = null;
// keep: a refresh (live update, review) that keeps the pages already loaded; else the first page of new filters
async function search({ keep = false } = {}) {
  let p;
  const my = ++searchSeq;
  try { p = filterParams(); } catch (e) { $("count").textContent = e.message; return; }
  p.set("limit", String(keep ? Math.min(500, Math.max(PAGE, state.events.length)) : PAGE));
  lastBox = p.get("min_lat") !== null ? ["min_lat", "min_lon", "max_lat", "max_lon"].map((k) => p.get(k)).join(",") : "";
  try {
    const page = await json("api/events?" + p);
    if (my !== searchSeq) return;  // a newer search is under way
    state.events = page.events; state.nextCursor = page.next_cursor || null;
    noteHeld(page.events); noteSeverity(page.events);
  } catch (e) { if (my === searchSeq) $("count").textContent = e.message; return; }
  showList();
}

// the server says which listed events have a hold (evidence export, reviewer's hold): the list marks them
function noteHeld(events) {
  for (const e of events) if (e.held === true) state.held.add(e.id); else if (e.held === false) state.held.delete(e.id);
}

async function loadMore() {
  if (!state.nextCursor) return;
  let p;
  const my = searchSeq;
  try { p = filterParams(); } catch (e) { $("more-note").textContent = e.message; return; }
  p.set("limit", String(PAGE)); p.set("cursor", state.nextCursor);
  $("load-more").disabled = true;
  try {
    const page = await json("api/events?" + p);
    if (my !== searchSeq) return;  // the filters changed meanwhile
    const have = new Set(state.events.map((e) => e.id));
    state.events = state.events.concat(page.events.filter((e) => !have.has(e.id)));
    state.nextCursor = page.next_cursor || null;
    noteHeld(page.events);
  } catch (e) { $("more-note").textContent = e.message; return; } finally { $("load-more").disabled = false; }
  showList();
}

function showList() {
  const more = !!state.nextCursor;
  $("count").textContent = `${state.events.length}${more ? "+" : ""} event(s)`;
  $("more-bar").hidden = !more;
  $("more-note").textContent = more ? `${state.events.length} shown; older events match too` : "";
  renderList();
  if (map) map.setData({ events: state.events, selected: state.selected });
}

// "only in map view": a pan or zoom searches again (once the map rests)
function viewMoved() {
  if (!$("f-inview").checked || !map) return;
  const b = viewBox(), key = [b.min_lat, b.min_lon, b.max_lat, b.max_lon].join(",");
  if (key === lastBox) return;
  clearTimeout(moveTimer);
  moveTimer = setTimeout(() => search(), 600);
}

// A download through the authenticated API (a plain link would not carry the credential), saved under the
// server's file name.
async function download(path, fallback) {
  const r = await api(path);
  const cd = r.headers.get("Content-Disposition") || "";
  const m = /filename\*=UTF-8''([^;]+)/i.exec(cd) || /filename="?([^";]+)"?/i.exec(cd);
  const name = m ? decodeURIComponent(m[1]) : fallback;
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url; a.download = name; a.hidden = true;
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return name;
}

async function exportSearch(fmt) {
  $("export-error").textContent = "";
  try { const p = filterParams(); await download(`api/export/events.${fmt}?${p}`, `seawatch-events.${fmt}`); } catch (e) { $("export-error").textContent = e.message; }
}

async function exportEvidence() {
  const id = state.selected, btn = $("d-export");
  if (!id) return;
  btn.disabled = true; btn.textContent = "Exporting…"; $("d-error").textContent = "";
  try { await download(`api/events/${encodeURIComponent(id)}/evidence.zip`, `seawatch-evidence-${id}.zip`); }
  catch (e) { $("d-error").textContent = "evidence: " + e.message; }
  finally { btn.disabled = false; btn.textContent = "Export evidence"; }
  // the server put an evidence_export hold on the event before packing it (also when the download failed later)
  if (state.detail && state.detail.id === id) await loadHolds(state.detail, () => !state.detail || state.detail.id !== id);
}

function ago(ns) {  // "42 s", "12 min", "3.5 h" since a UTC ns time
  const s = Math.max(0, (Date.now() - ns / 1e6) / 1000);
  return s < 120 ? `${Math.round(s)} s` : s < 3 * 3600 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
}
// a time in the display zone, its zone written after it ("2026-09-21 14:13:24 UTC", "… 16:13:24 CEST")
const fmt = (ns) => formatTime(ns);

function renderList() {
  const tb = document.querySelector("#events tbody");
  const focused = tb.contains(document.activeElement) ? document.activeElement.dataset.id : null;  // kept over a redraw
  tb.replaceChildren();
  const first = state.seen.size === 0;
  for (const ev of state.events) {
    const tr = document.createElement("tr");
    tr.dataset.id = ev.id;
    tr.className = (state.selected === ev.id ? "sel " : "") + (!first && !state.seen.has(ev.id) ? "fresh " : "") +
      (state.held.has(ev.id) ? "held" : "");
    // the column's head names UTC; a local time carries its zone (the autumn hour's two readings: CEST, then CET)
    const start = formatTime(ev.start_ns, { zone: shownMode !== "utc" });
    for (const [text, cls] of [[start, "start"], [ev.type, ""], [ev.severity, "sev-" + ev.severity], [ev.source_id, ""], [ev.review_status, "status"]]) {
      const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td);
    }
    tr.firstChild.title = otherZoneTitle(ev.start_ns);
    if (state.held.has(ev.id)) tr.lastChild.title = "on hold: kept past the retention period";
    const snz = snoozedOf(ev);  // raised while its camera's alerts were snoozed: it alarmed nobody
    if (snz) { tr.classList.add("snoozed"); tr.children[1].append(" ", snoozeTag(snz)); }
    const vtag = vesselLinkTag(ev);  // the same vessel as another camera's alert, or seen by others too
    if (vtag) { tr.classList.add(linkOf(ev) ? "linked" : "linked-first"); tr.children[1].append(" ", vtag); }
    tr.addEventListener("click", () => select(ev.id));
    // keyboard: Tab reaches the rows, Enter or Space opens one, the arrow keys move to the next or previous row
    tr.tabIndex = 0;
    tr.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(ev.id); }
      else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        const next = e.key === "ArrowDown" ? tr.nextElementSibling : tr.previousElementSibling;
        if (next) { e.preventDefault(); next.focus(); }
      }
    });
    tb.appendChild(tr);
    if (ev.id === focused) tr.focus({ preventScroll: true });
  }
  for (const ev of state.events) state.seen.add(ev.id);
}

async function refreshSources(list) {
  state.sources = list;
  const sel = document.querySelector("#filters select[name=source]");
  const have = new Set([...sel.options].map((o) => o.value));
  // cameras (fixed and drone-borne) and each drone's video source: the sources events come from
  const ids = list.flatMap((s) => ((s.kind || "camera") === "camera" ? [s.source_id] : s.kind === "drone" && s.video_source ? [s.video_source] : []));
  for (const id of ids) if (!have.has(id)) { const o = document.createElement("option"); o.textContent = id; sel.appendChild(o); have.add(id); }
  // each drone as a whole: its own incidents (link lost) and its camera's events (sent as drone=ID)
  for (const s of list) {
    if (s.kind !== "drone" || have.has("drone:" + s.source_id)) continue;
    const o = document.createElement("option"); o.value = "drone:" + s.source_id; o.textContent = `drone ${s.source_id} (all)`;
    sel.appendChild(o); have.add(o.value);
  }
  const tb = document.querySelector("#sources tbody");
  tb.replaceChildren();
  for (const s of list) {
    const tr = document.createElement("tr");
    tr.dataset.id = s.source_id;
    let details = "";
    if (s.kind === "drone") {
      details = [s.mode && displayText(s.mode, 40), s.armed ? "armed" : s.armed === false ? "disarmed" : null,
        s.lat_deg != null ? `${s.lat_deg.toFixed(5)}, ${s.lon_deg.toFixed(5)}` : null,
        s.alt_rel_m != null ? `${s.alt_rel_m.toFixed(0)} m` : null, s.heading_deg != null ? `${s.heading_deg.toFixed(0)}°` : null,
        s.battery_pct != null ? `battery ${s.battery_pct}%` : null,
        s.patrol ? `patrol ${s.patrol} (${s.patrol_state}${s.patrol_reason ? ": " + displayText(s.patrol_reason, 300) : ""}, ` +
          `waypoint ${s.current_waypoint ?? "-"}/${s.waypoints ?? "-"})` : null,
        taskText(s), s.last_error && displayText(s.last_error, 300)].filter(Boolean).join(" · ");
    } else if (s.kind === "ais") {
      // feeds not up (silent / down / ended since when, and why), and whether unidentified-vessel alerts are held
      // (a reason that only repeats the state and its start, "silent since <UTC time>", is left out: "silent for 8 s")
      const off = (s.feed_states || []).filter((f) => f.state !== "up").map((f) => `${displayText(f.feed, 120)} ` +
        `${f.state}${f.since_ns ? " for " + ago(f.since_ns) : ""}` +
        (f.since_ns && /^(silent since|the replayed log ended)/.test(f.reason || "") ? "" : `: ${displayText(f.reason, 200)}`));
      // a recorded log (the demo's, a test set-up) must not pass for live AIS
      const replays = (s.feed_states || []).filter((f) => f.replay).map((f) => `${displayText(f.feed, 120)}: a recorded ` +
        `log replayed ${f.replay === "loop" ? "in a loop" : "by the video's clock"}, not live AIS`);
      details = [`${s.vessels} vessel(s), ${s.messages} message(s), last ${s.last_message_age_s ?? "-"} s ago`, ...replays, ...off,
        s.identity_held ? "unidentified-vessel alerts held (AIS unavailable)" : null].filter(Boolean).join(" · ");
    } else {
      // a camera that is down: for how long and how often it was tried (the server keeps it offline through retries)
      const down = s.down_since_ns ? `down for ${ago(s.down_since_ns)}, ${s.attempts} attempt(s) · ` : "";
      // how analysis keeps up: behind (the server's judgement: under 80 % of the asked rate, or of what the camera
      // delivers when that is less) is marked, as events may then come late or not at all
      const a = s.analysis;
      const an = a && a.frames ? ` · analysed ${a.analysed_fps}/${a.asked_fps} fps${a.behind ? " (behind)" : ""}` +
        (a.lag_ms != null ? `, lag ${Math.round(a.lag_ms)} ms` : "") : "";
      // rules armed only at certain times (GET /api/sources zone_rules): their schedule and whether they are on now
      const sched = (s.zone_rules || []).filter((r) => r.schedule_text)
        .map((r) => ` · ${r.type} in ${displayText(r.zone_id, 64)} ${ruleSchedule(r)}`).join("");
      // the reader keeps its last error after the camera is back: said as past, not as if it were failing now
      const err = !s.last_error ? "" : ` · ${s.state === "online" && s.since_ns ? `back ${ago(s.since_ns)} ago; its last error before: ` : ""}` +
        displayText(s.last_error, 300);
      details = `${down}${s.frames_decoded ?? 0} frames${an}${err}${s.view ? " · surveyed" : ""}${sched}`;
    }
    for (const [text, cls] of [[s.source_id, ""], [s.kind || "camera", ""], [s.state, "st-" + s.state], [details, ""]]) {
      const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td);
    }
    if (s.kind === "drone") tr.lastChild.append(...droneButtons(s));
    else if ((s.kind || "camera") === "camera") tr.lastChild.append(...viewCheckNote(s), ...recordingNote(s), ...geometryNote(s), ...liveButton(s), ...recButton(s));
    tb.appendChild(tr);
  }
  const drones = list.filter((s) => s.kind === "drone"), cams = list.filter((s) => (s.kind || "camera") === "camera");
  $("status-bar").textContent = `${cams.filter((s) => s.state === "online").length}/${cams.length} camera(s) online · ` +
    `${drones.filter((s) => s.state === "connected").length}/${drones.length} drone(s) linked`;
  // a drone on a task: its line on the map runs from the drone to the target (the patrol's route is interrupted);
  // once it flies home the target stays marked, without a line back to it from the drone
  if (map) map.setData({ cameras: cams, drones: drones.map((d) => !taskActive(d) || d.lat_deg == null ? d
    : { ...d, route: d.task.state === "returning" ? [[d.task.lat_deg, d.task.lon_deg]]
      : [[d.lat_deg, d.lon_deg], [d.task.lat_deg, d.task.lon_deg]] }) });
  recCameras(list);
  showSnoozes(list);
  if (state.detail) showSendDrone(state.detail);
}

// A scheduled rule's state: "armed Mon-Fri 07:00-19:00 Europe/Amsterdam (now off, arms 07:00)" (times on the
// schedule's own clock, as the server words them); "" for a rule that is always armed.
function ruleSchedule(r) {
  if (!r.schedule_text) return "";
  const next = r.next_change_text ? `, ${r.armed ? "disarms" : "arms"} ${displayText(r.next_change_text, 20)}` : "";
  return `armed ${displayText(r.schedule_text, 300)} (now ${r.armed ? "on" : "off"}${next})`;
}

// ---- "send a drone to look" (POST /api/drones/{id}/investigate): a task the drone flies instead of its patrol
const TASK_ACTIVE = ["starting", "flying", "holding", "returning"];
const taskActive = (d) => !!(d.task && TASK_ACTIVE.includes(d.task.state));

// Great-circle distance in metres (a display figure; the service checks the range with a geodesic).
function distanceM(lat1, lon1, lat2, lon2) {
  const r = Math.PI / 180, dLat = (lat2 - lat1) * r, dLon = (lon2 - lon1) * r;
  const a = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * r) * Math.cos(lat2 * r) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371008.8 * Math.asin(Math.min(1, Math.sqrt(a)));
}
const fmtDistance = (m) => (m >= 1000 ? `${(m / 1000).toFixed(1)} km` : `${Math.round(m)} m`);

// The task in the sources table: "task investigate holding, 120 m to go (event ID) by user olga: reason"
function taskText(s) {
  const t = s.task;
  if (!t) return null;
  const togo = taskActive(s) && s.lat_deg != null ? `, ${fmtDistance(distanceM(s.lat_deg, s.lon_deg, t.lat_deg, t.lon_deg))} to the target` : "";
  return `task ${t.kind} ${t.state} at ${t.lat_deg.toFixed(5)}, ${t.lon_deg.toFixed(5)}${togo}` +
    (t.held_s != null ? `, held ${Math.round(t.held_s)}/${Math.round(t.hold_s)} s` : "") +
    (t.event_id ? ` (event ${displayText(t.event_id, 64)})` : "") +
    (t.requested_by ? ` by ${displayText(t.requested_by, 100)}` : "") + (t.reason ? `: ${displayText(t.reason, 300)}` : "");
}

// The event detail's "Send drone": operators and above (the server checks), for an event with a position, when the
// service has drones; a select of them (nearest first, with the distance) when there are several. Called again with
// each sources refresh: the options' texts follow the drones, the choice stays.
function showSendDrone(ev) {
  const drones = state.sources.filter((s) => s.kind === "drone");
  const box = $("d-send"), sel = $("d-drone");
  box.hidden = !atLeast("operator") || !ev.geo || !drones.length;
  if (box.hidden) return;
  const dist = (d) => (d.lat_deg != null ? distanceM(d.lat_deg, d.lon_deg, ev.geo.lat_deg, ev.geo.lon_deg) : Infinity);
  const label = (d) => `${d.drone_id} · ${d.lat_deg != null ? fmtDistance(dist(d)) + " away" : "position unknown"}` +
    (d.state !== "connected" ? ` (${d.state})` : "") + (taskActive(d) ? ` (on a task: ${d.task.state})` : "");
  const ids = [...sel.options].map((o) => o.value).sort().join("\n");
  if (ids !== drones.map((d) => d.drone_id).sort().join("\n")) {  // another set of drones: new options, nearest first
    const keep = sel.value;
    sel.replaceChildren(...[...drones].sort((a, b) => dist(a) - dist(b)).map((d) => {
      const o = document.createElement("option"); o.value = d.drone_id; return o;
    }));
    if (keep && drones.some((d) => d.drone_id === keep)) sel.value = keep;
  }
  for (const o of sel.options) { const d = drones.find((x) => x.drone_id === o.value); o.textContent = label(d); }
  sel.hidden = drones.length < 2;
  $("d-send-info").textContent = drones.length < 2 ? label(drones[0]) : "";
  // a drone sent to this event: its task as it is flown (holding, returning, complete), not the send's answer alone
  const note = $("d-send-note"), sent = drones.find((d) => d.task && d.task.event_id === ev.id);
  if (sent && note.className !== "error") note.textContent = sendNoteText(sent);
}

// "patrol-1: task holding, held 12/60 s, patrol interrupted": what a drone sent to look is doing
function sendNoteText(d) {
  const t = d.task;
  return `${d.drone_id}: task ${t ? t.state : "?"}` +
    (t && t.held_s != null ? `, held ${Math.round(t.held_s)}/${Math.round(t.hold_s)} s` : "") +
    (d.patrol_state && d.patrol_state !== "none" ? `, patrol ${d.patrol_state}` : "") +
    (t && t.reason ? `: ${displayText(t.reason, 300)}` : "");
}

$("d-send-btn").addEventListener("click", async () => {
  const ev = state.detail, id = $("d-drone").value;
  if (!ev || !ev.geo || !id) return;
  // what the drone is doing now decides what sending it ends: a task under way is replaced, a patrol left
  const src = state.sources.find((s) => s.kind === "drone" && s.drone_id === id), t = src && src.task;
  const now = t && ["starting", "flying", "holding", "returning"].includes(t.state)
    ? `It is on a task now (${t.state}${t.event_id ? ", event " + t.event_id : ""}): that task ends and this one replaces it.`
    : src && src.patrol_state && !["none", "interrupted", "aborted", "complete"].includes(src.patrol_state) ? "It leaves its patrol." : "";
  if (!confirm(`Send drone ${id} to look at this ${ev.type} at ${ev.geo.lat_deg.toFixed(5)}, ${ev.geo.lon_deg.toFixed(5)}? ` +
    `${now ? now + " " : ""}It holds over the event, then flies home.`)) return;
  const note = $("d-send-note");
  note.className = ""; note.textContent = `sending ${id}…`;
  try {
    const d = await json(`api/drones/${encodeURIComponent(id)}/investigate`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ event_id: ev.id }) });
    note.textContent = sendNoteText({ ...d, drone_id: d.drone_id || id });
  } catch (e) { note.className = "error"; note.textContent = `${id} not sent: ${e.message}`; }
  try { await refreshSources(await json("api/sources")); } catch (e) { /* the live feed refreshes it again */ }
});

// The live view: the camera's video, or its newest analysed picture with what is tracked in it ("video / analysed").
// The video (the default) comes over a WebSocket (api/sources/{id}/video: the camera's H.264 as fragmented MP4, a
// "video" message with the codec first) into Media Source Extensions, kept near the live edge (more than
// LIVE_EDGE_S behind the newest picture: a jump ahead) with LIVE_KEEP_S of it kept behind the playing position. Where
// the video cannot be had (a camera that does not send H.264, too many viewers, offline, a dropped connection) the
// analysed pictures show instead, with the reason on the status line, and a connection that may work later is tried
// again. The analysed picture (GET /api/sources/{id}/latest.jpg) is fetched every second while it shows (one request
// at a time, an answer for a camera no longer shown is dropped).
const LIVE_REFRESH_MS = 1000;
const LIVE_EDGE_S = 1.5, LIVE_KEEP_S = 10;
const VIDEO_RETRY_MS = 3000, VIDEO_QUIET_MS = 5000;
const VIDEO_FINAL = new Set([4401, 4404, 4415, 4503]);  // refusals trying again cannot change
const live = { id: null, timer: null, url: "", busy: false, mode: "video", video: null, playing: false, refused: "", retry: null };
function liveButton(s) {
  if (!state.role) return [];
  const b = document.createElement("button");
  b.type = "button"; b.className = "live-act"; b.textContent = "Live";
  b.title = "the camera's live video, or its newest analysed picture with what is tracked in it";
  b.addEventListener("click", () => openLive(s.source_id));
  return [b];
}
function openLive(id) {
  panelOpened("live-view", id);
  closeLive();
  live.id = id; setHashParam("live", id); $("lv-title").textContent = `Live: ${id}`; $("lv-note").textContent = "loading…"; $("live-view").hidden = false;
  live.mode = "video"; live.refused = ""; $("lv-mode-video").checked = true;
  applyLiveMode();
  // in sight: it sits under the map, the list and an event's detail, off a laptop screen when opened from the map,
  // the detail or a wall tile's link (as the detail is brought into sight when opened)
  const top = $("live-view").getBoundingClientRect().top;
  if (top < 0 || top > window.innerHeight - 160) $("live-view").scrollIntoView({ block: "start" });
}
function closeLive({ keepLink = false } = {}) {
  if (live.id && !keepLink) setHashParam("live", null);
  stopVideo();
  clearInterval(live.timer); live.timer = null; live.id = null;
  $("live-view").hidden = true; $("lv-img").removeAttribute("src");
  if (live.url) URL.revokeObjectURL(live.url);
  live.url = "";
}
function liveStatus(text, error = false) { const el = $("lv-status"); el.textContent = text; el.className = error ? "error" : ""; }
// the video connection runs while "video" is chosen (and not refused for good); the picture shown is the video once
// it plays, else the analysed one (fetched only while it shows)
function applyLiveMode() {
  if (!live.id) return;
  const wantVideo = live.mode === "video" && !live.refused;
  if (wantVideo && !live.video && !live.retry) startVideo(live.id);
  if (!wantVideo) { stopVideo(); if (live.mode === "analysed") liveStatus(""); }
  renderLiveMode();
}
function renderLiveMode() {
  const showVideo = live.mode === "video" && live.playing;
  $("lv-video").hidden = !showVideo; $("lv-img").hidden = showVideo; $("lv-note").hidden = showVideo; $("lv-boxes-label").hidden = showVideo;
  if (!showVideo && !live.timer && live.id) { refreshLive(); live.timer = setInterval(refreshLive, LIVE_REFRESH_MS); }
  if (showVideo && live.timer) { clearInterval(live.timer); live.timer = null; }
}
function stopVideo() {
  clearTimeout(live.retry); live.retry = null;
  const v = live.video;
  live.video = null; live.playing = false;
  if (!v) return;
  clearInterval(v.tick);
  v.ws.onclose = null; v.ws.onmessage = null; v.ws.close();
  const el = $("lv-video");
  el.pause(); el.removeAttribute("src"); el.load();
  if (v.url) URL.revokeObjectURL(v.url);
}
function startVideo(id) {
  const url = new URL(`api/sources/${encodeURIComponent(id)}/video`, ROOT);  // under the page's own prefix too
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url.href);
  ws.binaryType = "arraybuffer";
  const v = { id, ws, ms: null, sb: null, url: "", queue: [], info: null, jump: true, trimTo: 0, lastData: Date.now(), tick: null, clocks: [] };
  live.video = v;
  liveStatus("video: connecting…");
  ws.onopen = () => {
    const a = state.auth;
    ws.send(JSON.stringify(a["X-API-Key"] ? { api_key: a["X-API-Key"] } : { token: a.Authorization.slice(7) }));
  };
  ws.onmessage = (m) => {
    if (live.video !== v) return;
    v.lastData = Date.now();
    if (typeof m.data === "string") {
      const msg = JSON.parse(m.data);
      if (msg.kind === "video") videoBegins(v, msg);
      if (msg.kind === "clock") { v.clocks.push(msg); if (v.clocks.length > 64) v.clocks.shift(); }
      if (msg.kind === "resync") {
        v.jump = true; v.noteUntil = Date.now() + 5000;
        liveStatus(`${videoLine(v)} (this connection fell behind: ${msg.dropped} pictures skipped)`);
      }
      return;
    }
    v.queue.push(m.data);
    videoPump(v);
  };
  ws.onclose = (ev) => {
    if (live.video !== v) return;
    const reason = ev.reason || (ev.code === 1006 ? "the connection was lost" : `closed (${ev.code})`);
    stopVideo();
    videoUnavailable(reason, VIDEO_FINAL.has(ev.code), ev.code === 4409 ? 0 : VIDEO_RETRY_MS);
  };
  v.tick = setInterval(() => {  // a camera that stopped sending: say so (the connection stays; it may come back)
    if (live.video !== v || !live.playing) return;
    if (Date.now() - v.lastData > VIDEO_QUIET_MS)
      liveStatus(`video: no picture for ${Math.round((Date.now() - v.lastData) / 1000)} s (camera offline?)`, true);
    else if (v.info && !(v.noteUntil > Date.now())) liveStatus(videoLine(v));  // how far behind, once a second
  }, 1000);
}
function videoUnavailable(reason, final, retryMs) {
  const id = live.id;
  if (final) live.refused = reason;
  liveStatus(`video unavailable: ${reason}, showing analysed pictures${final ? "" : "; trying again"}`, true);
  if (!final) live.retry = setTimeout(() => { live.retry = null; if (live.id === id) applyLiveMode(); }, retryMs);
  renderLiveMode();
}
// what the operator needs: that it is live, and how far behind the newest picture received it plays (the codec,
// for whoever sets cameras up, in the line's tooltip)
function videoLine(v) {
  const el = $("lv-video"), b = v.sb && v.sb.buffered;
  const behind = b && b.length && !el.paused ? Math.max(0, b.end(b.length - 1) - el.currentTime) : null;
  $("lv-status").title = `${v.info.codec}, ${v.info.mime}`;
  const shot = behind == null ? null : videoCaptureNs(v, el.currentTime);
  return `live video ${v.info.width_px}×${v.info.height_px}` + (v.info.note ? ` (${v.info.note})` : "") + (shot == null ? "" : `, picture of ${fmt(shot)} (${shortAgo(shot)} ago)`) +
    (behind == null ? "" : `, ${behind.toFixed(1)} s behind the newest picture`);
}
// "1.3 s" under 10 s (a live picture's age), else as ago()
const shortAgo = (ns) => { const s = Math.max(0, (Date.now() - ns / 1e6) / 1000); return s < 10 ? `${s.toFixed(1)} s` : ago(ns); };
// the capture time (UTC ns) of the picture at ``t_s`` on the video's timeline: from the newest "clock" message (sent
// with each keyframe: its capture time and presentation time) at or before it, plus the time played since; null
// before the first
function videoCaptureNs(v, t_s) {
  let c = null;
  for (const k of v.clocks) if (k.media_s <= t_s + 0.001 && (!c || k.media_s >= c.media_s)) c = k;
  return c && Number.isFinite(c.capture_ns) ? c.capture_ns + Math.round((t_s - c.media_s) * 1e9) : null;
}
function videoBegins(v, msg) {
  if (!window.MediaSource || !MediaSource.isTypeSupported(msg.mime)) {
    stopVideo();
    return videoUnavailable(`this browser cannot play ${msg.codec || "the camera's video"}`, true, 0);
  }
  v.info = msg;
  v.ms = new MediaSource();
  v.url = URL.createObjectURL(v.ms);
  v.ms.addEventListener("sourceopen", () => {
    if (live.video !== v) return;
    v.sb = v.ms.addSourceBuffer(msg.mime);
    v.sb.mode = "segments";
    v.sb.addEventListener("updateend", () => videoAppended(v));
    v.sb.addEventListener("error", () => { if (live.video === v) { stopVideo(); videoUnavailable("the browser could not decode the video", false, VIDEO_RETRY_MS); } });
    videoPump(v);
  }, { once: true });
  $("lv-video").src = v.url;
}
function videoPump(v) {
  if (live.video !== v || !v.sb || v.sb.updating) return;
  if (v.trimTo) { const t = v.trimTo; v.trimTo = 0; v.sb.remove(0, t); return; }
  if (!v.queue.length) return;
  try { v.sb.appendBuffer(v.queue.shift()); } catch (e) {
    stopVideo(); videoUnavailable(`the browser refused the video (${e.name})`, false, VIDEO_RETRY_MS);
  }
}
// how far behind its newest picture the video is put by a jump: the browser plays (after a start or a seek) only once
// it has a few pictures decoded ahead (Chromium: 4), so at 2 pictures a second a jump to 0.3 s from the end never
// finished, and the next jump came before it could (a harbour camera stayed blank). The picture interval is the
// camera's declared rate's, or the one its pictures show (each fragment is one), when longer: a camera may declare
// none, or 25 a second and send 2.
const LIVE_AHEAD_FRAMES = 4.5;
const liveLead = (v) => Math.max(0.3, LIVE_AHEAD_FRAMES * Math.max(v.frameS || 0, 1 / ((v.info && v.info.rate_fps) || 25)));
function videoAppended(v) {
  if (live.video !== v) return;
  const el = $("lv-video"), b = v.sb.buffered;
  if (b.length) {
    const start = b.start(b.length - 1), end = b.end(b.length - 1);
    if (v.lastEnd && end > v.lastEnd && end - v.lastEnd < 5) v.frameS = end - v.lastEnd;  // one picture appended
    v.lastEnd = end;
    // at the newest pictures: after a start, a resync (a gap before this range), or when playing fell behind
    const lead = liveLead(v);
    if (v.jump || el.currentTime < start || end - el.currentTime > Math.max(LIVE_EDGE_S, 2 * lead)) { el.currentTime = Math.max(start, end - lead); v.jump = false; }
    if (el.currentTime - b.start(0) > 2 * LIVE_KEEP_S) v.trimTo = el.currentTime - LIVE_KEEP_S;  // memory stays bounded
    if (el.paused) el.play().catch(() => {});
    if (!live.playing) { live.playing = true; renderLiveMode(); }
    if (!$("lv-status").textContent.startsWith("live video") || $("lv-status").className) liveStatus(videoLine(v));
  }
  videoPump(v);
}
async function refreshLive() {
  const id = live.id;
  if (!id || live.busy) return;
  live.busy = true;
  const note = $("lv-note");
  try {
    const r = await api(`api/sources/${encodeURIComponent(id)}/latest.jpg?width=960&boxes=${$("lv-boxes").checked}`);
    const captureNs = Number(BigInt(r.headers.get("X-Capture-Time-Ns") || "0"));
    const url = URL.createObjectURL(await r.blob());
    if (live.id !== id) { URL.revokeObjectURL(url); return; }
    if (live.url) URL.revokeObjectURL(live.url);
    live.url = url; $("lv-img").src = url;
    note.className = ""; note.textContent = `captured ${fmt(captureNs)}, ${ago(captureNs)} ago`;
  } catch (e) {
    if (live.id !== id) return;
    note.className = "error"; note.textContent = e.status === 404 ? "no analysed picture yet" : `failed: ${e.message}`;
  } finally { live.busy = false; }
}

// ---- recordings: any time window of a camera's continuous recording (GET /api/sources/{id}/recordings: what is
// recorded; /clip: the window as MP4, its first picture's capture time in X-Clip-First-Ns), played, downloaded, and
// reported as an event (POST /api/events) at the picture shown, with the spot marked in it. Times are typed in the display zone.
const REC_TICKS = 200;  // the camera's events marked on the bar (one search page)
const TICK_GAP_PX = 6, TICK_SPAN_PX = 24;  // ticks nearer than this share the height ticks span (the bar and 3 px each side)
const REC_LIVE_NS = 60e9;  // a newest recorded picture this recent: the camera is still being recorded
const rec = { seq: 0, id: null, startNs: 0, endNs: 0, firstNs: null, covered: [], partial: false, cutNs: null,
  infoP: null, retry: null, point: null, track: null, trackFitKey: null };
const wholeS = (ns) => Math.floor(ns / 1e9) * 1e9;  // whole seconds: exact as a double, and what the form shows
const fmtMs = (ns) => formatTime(ns, { ms: true });
const hms = (ns, zone = true) => formatTime(ns, { date: false, zone });
const headerNs = (r, name) => { const v = r.headers.get(name); return v && /^-?[0-9]+$/.test(v) ? Number(BigInt(v)) : null; };

function recButton(s) {
  if (!state.role) return [];
  const b = document.createElement("button");
  b.type = "button"; b.className = "rec-act"; b.textContent = "Recordings";
  b.title = "the camera's recorded video: any time window, to play, download or report";
  b.addEventListener("click", () => {
    const lenS = Number($("rec-len").value) || 300;
    openRecordings(s.source_id, wholeS(Date.now() * 1e6) - lenS * 1e9, lenS);
  });
  return [b];
}

// the cameras (the sources whose video is recorded) in the panel's camera list, the one chosen kept
function recCameras(list) {
  const sel = $("rec-source"), have = new Set([...sel.options].map((o) => o.value));
  for (const s of list) {
    if ((s.kind || "camera") !== "camera" || have.has(s.source_id)) continue;
    const o = document.createElement("option"); o.value = o.textContent = s.source_id; sel.appendChild(o); have.add(s.source_id);
  }
}

// Open the panel on a camera with the window [fromNs, fromNs + lenS) (fromNs: UTC ns, taken to the whole second).
function openRecordings(sourceId, fromNs, lenS = 300) {
  recCameras(state.sources);
  const sel = $("rec-source");
  if (![...sel.options].some((o) => o.value === sourceId)) {  // a camera not (yet) listed: asked for by name
    const o = document.createElement("option"); o.value = o.textContent = sourceId; sel.appendChild(o);
  }
  sel.value = sourceId;
  const len = $("rec-len"), v = String(Math.round(lenS));
  if (![...len.options].some((o) => o.value === v)) {
    const o = document.createElement("option"); o.value = v; o.textContent = `${+(lenS / 60).toFixed(2)} min`; len.appendChild(o);
  }
  len.value = v;
  setRecFrom(wholeS(fromNs));
  panelOpened("recordings", sourceId);
  $("recordings").hidden = false;
  const top = $("recordings").getBoundingClientRect().top;  // beside a grown map: scrolled to only when out of sight
  if (!$("main").classList.contains("map-wide") || top < 0 || top > window.innerHeight - 160) $("recordings").scrollIntoView({ block: "start", behavior: "smooth" });
  return showRecordings();
}

function closeRecordings() {
  rec.seq++; clearTimeout(rec.retry); rec.retry = null; rec.id = null; rec.firstNs = null;
  const v = $("rec-video");
  v.pause(); setMedia(v, null);
  clearMark(); $("rec-mark").checked = false;
  clearRecTrack();
  $("recordings").hidden = true;
}

// The window's start in the form, in the display zone (whole seconds). In the autumn hour, which the zone shows twice,
// "rec-fold" offers the first and the second reading (CEST, then CET) and is set to the one meant.
const offsetOf = (ns) => offsetText(offsetMs(ns / 1e6, localZone()));  // "UTC+2"
function setRecFrom(ns) {
  const { value, fold } = inputValue(ns);
  $("rec-from").value = value;
  showRecFold(fold);
}
function showRecFold(fold = null) {
  const sel = $("rec-fold"), r = readInput($("rec-from").value);
  const two = !!(r && r.ambiguous);
  if (two) {
    sel.options[0].textContent = `the first (${zoneLabel(r.ambiguous[0])}, ${offsetOf(r.ambiguous[0])})`;
    sel.options[1].textContent = `the second (${zoneLabel(r.ambiguous[1])}, ${offsetOf(r.ambiguous[1])})`;
  }
  if (fold) sel.value = fold; else if (!two || sel.hidden) sel.value = "first";
  sel.hidden = !two;
  timeLabels();
}

// the window the form asks for, or a message saying what is wrong with it
function recWindow() {
  const id = $("rec-source").value, lenS = Number($("rec-len").value), raw = $("rec-from").value;
  if (!id) return { error: "choose a camera" };
  // typed in the display zone; a reading the zone shows twice: the one "rec-fold" says (offered only then)
  const r = readInput(raw, { pick: $("rec-fold").hidden ? "first" : $("rec-fold").value });
  if (!r) return { error: `give the window's start (${zoneLabel()})` };
  if (r.error) return { error: r.error };
  if (!(lenS > 0)) return { error: "choose a length" };
  const startNs = wholeS(r.ns);
  return { id, startNs, endNs: startNs + lenS * 1e9, lenS };
}
const recQuery = (w) => `start_ns=${BigInt(w.startNs)}&end_ns=${BigInt(w.endNs)}`;
const recPath = (w, what) => `api/sources/${encodeURIComponent(w.id)}/${what}?${recQuery(w)}`;

async function showRecordings() {
  const w = recWindow(), my = ++rec.seq;
  clearTimeout(rec.retry); rec.retry = null;
  $("rec-error").textContent = ""; $("rec-reported").textContent = ""; $("rec-report-error").textContent = "";
  const v = $("rec-video"), note = $("rec-note");
  v.pause(); setMedia(v, null);
  rec.firstNs = null; rec.covered = []; rec.partial = false;
  clearMark(); $("rec-mark").checked = false;
  clearRecTrack();
  if (w.error) { $("rec-error").textContent = w.error; rec.id = null; return; }
  Object.assign(rec, { id: w.id, startNs: w.startNs, endNs: w.endNs, bar: null });
  recTitles(w);
  $("rec-cover").textContent = "";
  drawRecBar([], []);
  note.className = ""; note.textContent = "loading…";
  await Promise.all([loadRecBar(w, my), loadRecClip(w, my, true), loadRecTrack(w, my)]);
}

function recTitles(w) {
  $("rec-title").textContent = `Recordings: ${w.id}, ${fmt(w.startNs)} – ${fmt(w.endNs)}`;
  $("rec-scale-from").textContent = fmt(w.startNs); $("rec-scale-to").textContent = fmt(w.endNs);
  $("rec-title").title = otherZoneTitle(w.startNs);
}

// The part of a window that can be cut now: a window reaching past the newest recorded picture (one that ends in the
// future: "Recordings around" a recent event, the last minutes) up to that picture, instead of waiting for the rest.
async function recClipWindow(w) {
  const info = await (rec.infoP || Promise.resolve(null));
  if (info && !info.error && info.newest_ns != null && info.newest_ns > w.startNs && info.newest_ns < w.endNs)
    return { ...w, endNs: info.newest_ns, cut: true };
  return w;
}

// what is recorded in the window and the camera's events in it, on the bar (rec.infoP: the recordings answer)
async function loadRecBar(w, my) {
  rec.infoP = json(recPath(w, "recordings")).catch((e) => ({ error: e.message }));
  // the incidents of the window: started before its end and still going at its start (a long one from before too)
  const ticks = json(`api/events?${new URLSearchParams({ source: w.id, active_from: new Date(w.startNs / 1e6).toISOString(),
    start_to: new Date(w.endNs / 1e6).toISOString(), limit: String(REC_TICKS) })}`).then((p) => p.events).catch(() => []);
  const [info, events] = await Promise.all([rec.infoP, ticks]);
  if (my !== rec.seq || $("recordings").hidden) return;
  rec.bar = { w, info, events };  // drawn again when the display zone changes
  drawRecBar(info.error ? [] : info.spans, events);
  $("rec-cover").textContent = recCoverText(w, info);
  recNote();
}

function recCoverText(w, info) {
  if (info.error) return `recordings: ${info.error}`;
  if (info.recording === false) return "this service records no video";
  const got = info.spans.reduce((a, s) => a + (Math.min(s.end_ns, w.endNs) - Math.max(s.start_ns, w.startNs)), 0) / 1e9;
  return `${Math.round(got)} s of ${Math.round((w.endNs - w.startNs) / 1e9)} s recorded` +
    (info.oldest_ns != null ? `; ${w.id} is recorded from ${fmt(info.oldest_ns)} to ${fmt(info.newest_ns)}` : `; nothing of ${w.id} is recorded`);
}

// the window's recorded spans as filled blocks, gaps empty, the camera's events as ticks (a click opens one)
function drawRecBar(spans, events) {
  const bar = $("rec-bar"), len = rec.endNs - rec.startNs;
  bar.replaceChildren();
  if (!(len > 0)) return;
  const pct = (ns) => `${(Math.min(1, Math.max(0, (ns - rec.startNs) / len)) * 100).toFixed(3)}%`;
  for (const s of spans) {
    const el = document.createElement("div");
    el.className = "rec-span"; el.dataset.startNs = String(s.start_ns); el.dataset.endNs = String(s.end_ns);
    el.style.left = pct(s.start_ns);
    el.style.width = `${(Math.max(0, Math.min(s.end_ns, rec.endNs) - Math.max(s.start_ns, rec.startNs)) / len * 100).toFixed(3)}%`;
    el.title = `recorded ${fmt(s.start_ns)} – ${fmt(s.end_ns)}`;
    bar.appendChild(el);
  }
  // ticks closer than TICK_GAP_PX share the bar's height in lanes, so each can still be clicked
  const shown = events.filter((ev) => ev.start_ns <= rec.endNs).sort((a, b) => a.start_ns - b.start_ns);
  const gapNs = TICK_GAP_PX / Math.max(1, bar.clientWidth) * len, laneEnd = [], lanes = [];
  for (const ev of shown) {
    const t = Math.max(ev.start_ns, rec.startNs);
    let lane = laneEnd.findIndex((end) => t - end >= gapNs);
    if (lane < 0) lane = laneEnd.length;
    laneEnd[lane] = t; lanes.push(lane);
  }
  const laneH = TICK_SPAN_PX / Math.max(1, laneEnd.length);
  shown.forEach((ev, i) => {
    const before = ev.start_ns < rec.startNs;  // still going when the window starts: marked at its left edge
    const el = document.createElement("div");
    el.className = "rec-tick sev-" + ev.severity + (before ? " before" : ""); el.dataset.id = ev.id; el.style.left = pct(ev.start_ns);
    if (laneEnd.length > 1) { el.style.top = `${-3 + lanes[i] * laneH}px`; el.style.bottom = "auto"; el.style.height = `${laneH}px`; }
    el.title = `${ev.type} (${ev.severity}) ${fmt(ev.start_ns)}${before ? " (started before this window)" : ""}: click to open`;
    el.addEventListener("click", (e) => { e.stopPropagation(); select(ev.id); });
    bar.appendChild(el);
  });
  const pos = document.createElement("div");
  pos.id = "rec-pos"; pos.hidden = true; bar.appendChild(pos);
}

// The window's clip: a window still being recorded (409, Retry-After) is asked for once more then, saying so.
async function loadRecClip(w, my, retry) {
  const stale = () => my !== rec.seq || $("recordings").hidden;
  const note = $("rec-note"), v = $("rec-video");
  let r, url, cw = w;
  try {
    cw = await recClipWindow(w);
    if (stale()) return;
    r = await api(recPath(cw, "clip"));
    url = URL.createObjectURL(await blobWithProgress(r, (mb) => {
      if (!stale()) { note.className = ""; note.textContent = `loading the video… ${mb.toFixed(1)} MB`; }
    }));
  } catch (e) {
    if (stale()) return;
    note.className = "error";
    if (e.status === 409 && retry && e.retryAfterS > 0) {
      const wait_s = Math.min(e.retryAfterS, 300);
      note.className = "";
      note.textContent = `the end of this window is still being recorded: trying again in ${wait_s} s`;
      rec.retry = setTimeout(() => { if (!stale()) { loadRecBar(w, my); loadRecClip(w, my, false); } }, wait_s * 1000);
    } else if (e.status === 404) {
      const info = await rec.infoP;
      if (stale()) return;
      note.className = "error";
      note.textContent = `no recording of ${w.id} between ${fmt(w.startNs)} and ${fmt(w.endNs)}` +
        (info && info.recording === false ? ": this service records no video" :
          info && info.oldest_ns != null ? `; recorded video of ${w.id} exists from ${fmt(info.oldest_ns)} to ${fmt(info.newest_ns)}` :
            info && !info.error ? `; nothing of ${w.id} is recorded` : "");
    } else if (e.status === 409) note.textContent = `still being recorded: ${e.message} (press Show again later)`;
    else if (e.status === 422) note.textContent = `this window cannot be shown: ${e.message}`;
    else note.textContent = `video: ${e.message}`;
    return;
  }
  if (stale()) { URL.revokeObjectURL(url); return; }
  rec.firstNs = headerNs(r, "X-Clip-First-Ns");
  rec.partial = (r.headers.get("X-Clip-Coverage") || "") === "partial";
  rec.cutNs = cw.cut ? cw.endNs : null;
  rec.covered = (r.headers.get("X-Clip-Covered-Ns") || "").split(",").map((p) => /^([0-9]+)-([0-9]+)$/.exec(p.trim()))
    .filter(Boolean).map((m) => [Number(BigInt(m[1])), Number(BigInt(m[2]))]);
  setMedia(v, url);
  recNote();
  v.play().catch(() => {});
}

// the recorded spans of a partial window: "12:00:00–12:01:30, 12:03:00–12:05:00 (UTC)", each span with its own zone
// label when they differ (a window across a daylight saving change)
function coveredText(spans) {
  const labels = new Set(spans.flat().map((ns) => zoneLabel(ns)));
  if (labels.size > 1) return spans.map(([a, b]) => `${hms(a)}–${hms(b)}`).join(", ");
  return `${spans.map(([a, b]) => `${hms(a, false)}–${hms(b, false)}`).join(", ")} (${[...labels][0]})`;
}

// the capture time (UTC) of the picture shown: the clip's first picture's plus the video's position
function recShownNs() {
  const v = $("rec-video");
  return rec.firstNs == null || !v.getAttribute("src") ? null : Math.round(rec.firstNs + v.currentTime * 1e9);
}

function recNote() {
  const note = $("rec-note"), t = recShownNs();
  recTrackShow(t);
  if (t == null) return;
  note.className = "";
  note.textContent = `picture of ${fmtMs(t)}` + (rec.partial ? ` · partial: recorded ${rec.covered.length ?
    coveredText(rec.covered) : "only part of the window"}` : "") +
    (rec.cutNs == null ? "" : Date.now() * 1e6 - rec.cutNs < REC_LIVE_NS ? ` · recorded up to ${hms(rec.cutNs)} so far (Show again for more)`
      : ` · nothing recorded after ${hms(rec.cutNs)}`);
  note.title = otherZoneTitle(t, { ms: true });
  const pos = $("rec-pos");
  if (pos) { pos.hidden = false; pos.style.left = `${(Math.min(1, Math.max(0, (t - rec.startNs) / (rec.endNs - rec.startNs))) * 100).toFixed(3)}%`; }
}

// ---- a drone camera's window: where its drone flew then (GET /api/drones/{id}/track: the drone's flight log, kept as
// long as its video), drawn on the map, with a marker where the drone was at the picture shown (interpolated between
// the logged positions around its capture time) and the position said under the video.
const TRACK_POINTS = 2000;  // the track's points at most (the server thins the log evenly)
const TRACK_LEAD_NS = 30e9;  // the track is fetched from this long before the window (the clip's lead-in pictures)
const TRACK_NEAR_NS = 5e9;  // no marker for a picture further than this from every logged position (a gap in the log)

// the drone carrying a camera (GET /api/sources: a camera's drone_id), or null for a fixed camera
function recDroneOf(sourceId) {
  const s = state.sources.find((x) => x.source_id === sourceId && (x.kind || "camera") === "camera");
  return (s && s.drone_id) || null;
}

function clearRecTrack() {
  rec.track = null;
  const el = $("rec-drone");
  el.className = ""; el.textContent = "";
  if (map) map.setRecTrack(null);
}

async function loadRecTrack(w, my) {
  const droneId = recDroneOf(w.id);
  if (!droneId) return;
  const tr = { droneId, points: [], all: [], loaded: false, error: null, marker: null, atNs: null };
  rec.track = tr;
  $("rec-drone").textContent = `drone ${droneId}: loading its flight log…`;
  try {
    // from a little before the window: the clip starts at the keyframe before it, and those pictures have a pose too
    const got = await json(`api/drones/${encodeURIComponent(droneId)}/track?${recQuery({ ...w, startNs: w.startNs - TRACK_LEAD_NS })}&max_points=${TRACK_POINTS}`);
    // all: with the lead-in (where the drone was at the clip's first pictures); points: the window's, drawn and clicked
    tr.all = got.points.filter((p) => Array.isArray(p) && p.length >= 4 && p.every(Number.isFinite));
    tr.points = tr.all.filter((p) => p[0] >= w.startNs);
  } catch (e) { tr.error = e.message; }
  if (my !== rec.seq || $("recordings").hidden || rec.track !== tr) return;  // a newer window (or none) is shown
  tr.loaded = true;
  const latLon = tr.points.map((p) => [p[1], p[2]]);
  if (map) {
    map.setRecTrack(droneId, latLon);
    const key = `${droneId} ${w.startNs} ${w.endNs}`;  // framed once per window, never after the user moved the map
    if (latLon.length && rec.trackFitKey !== key) {
      rec.trackFitKey = key;
      if (!map.touched && map.layers.track) { map.fit(latLon); map.fitted = true; }
    }
  }
  recTrackShow(recShownNs());
}

// [lat, lon, alt] of the track at t (UTC ns), interpolated between the logged positions around it; null outside the
// track or in a gap of the log (more than TRACK_NEAR_NS from any position)
function trackAt(points, t) {
  const n = points.length;
  if (!n || t == null || t < points[0][0] || t > points[n - 1][0]) return null;
  let lo = 0, hi = n - 1;  // the last point at or before t
  while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (points[mid][0] <= t) lo = mid; else hi = mid - 1; }
  const a = points[lo], b = points[Math.min(n - 1, lo + 1)];
  if (Math.min(t - a[0], b[0] - t) > TRACK_NEAR_NS) return null;
  const f = b[0] > a[0] ? (t - a[0]) / (b[0] - a[0]) : 0;
  let dLon = b[2] - a[2];
  if (Math.abs(dLon) > 180) dLon -= Math.sign(dLon) * 360;  // across the antimeridian
  const lon = a[2] + dLon * f;
  return [a[1] + (b[1] - a[1]) * f, lon > 180 ? lon - 360 : lon < -180 ? lon + 360 : lon, a[3] + (b[3] - a[3]) * f];
}

// the marker and the line under the video for the picture shown (t: its capture time, UTC ns, or null: none)
function recTrackShow(t) {
  const tr = rec.track, el = $("rec-drone");
  if (!tr || !tr.loaded) return;
  const at = tr.error ? null : trackAt(tr.all, t);
  tr.marker = at; tr.atNs = at ? t : null;
  if (map) map.setRecMarker(at);
  el.className = tr.error ? "error" : "";
  if (tr.error) el.textContent = `flight log of ${tr.droneId}: ${tr.error}`;
  else if (!tr.points.length) el.textContent = `no flight log of ${tr.droneId} for this window`;
  else if (at) el.textContent = `drone ${tr.droneId} at ${at[0].toFixed(5)}, ${at[1].toFixed(5)}, ${Math.round(at[2])} m`;
  else if (t == null) el.textContent = `drone ${tr.droneId}: its track in this window on the map (${tr.points.length} positions)`;
  else el.textContent = `drone ${tr.droneId}: no logged position within ${TRACK_NEAR_NS / 1e9} s of the picture shown`;
}

// a click on the recorded track: the video goes to when the drone was at that point
function recSeekTrack(i) {
  const tr = rec.track, v = $("rec-video"), note = $("rec-note");
  if (!tr || !tr.points[i] || rec.firstNs == null) return;
  const t = tr.points[i][0];
  v.pause();
  if (recSeekTo(t)) return;
  note.className = "error"; note.textContent = `no video of the drone at ${fmtMs(t)} in this window`;
}

// for the browser tests and the console: the recorded track shown (null: none, a fixed camera or the panel closed)
function recTrack() {
  const tr = rec.track;
  return tr ? { drone_id: tr.droneId, points: tr.points.length, loaded: tr.loaded, error: tr.error,
    marker: tr.marker ? [tr.marker[0], tr.marker[1]] : null, alt_m: tr.marker ? tr.marker[2] : null, at_ns: tr.atNs } : null;
}

// a click on the bar: the video goes to that time when the clip holds it
function recBarClick(e) {
  const bar = $("rec-bar"), box = bar.getBoundingClientRect();
  if (rec.firstNs == null || !box.width) return;
  const t = rec.startNs + (e.clientX - box.left) / box.width * (rec.endNs - rec.startNs);
  if (!recSeekTo(t)) { const note = $("rec-note"); note.className = "error"; note.textContent = `no video at ${fmt(t)} in this window`; }
}

// the video to the picture captured at t (UTC ns); false when the clip has none there (outside it, or an outage)
function recSeekTo(t) {
  const v = $("rec-video"), s = (t - rec.firstNs) / 1e9;
  const recorded = !rec.covered.length || rec.covered.some(([a, b]) => t >= a - 0.5e9 && t <= b + 0.5e9);
  if (rec.firstNs == null || !recorded || !(s >= 0 && Number.isFinite(v.duration) && s <= v.duration)) return false;
  v.currentTime = s;
  return true;
}

// The displayed picture inside the video element's box: object-fit contain letterboxes it (bars left and right, or
// above and below, when the box's aspect ratio is not the video's). {scale, x0, y0} maps video pixels to box pixels.
function recFit() {
  const v = $("rec-video"), w = v.clientWidth, h = v.clientHeight, vw = v.videoWidth, vh = v.videoHeight;
  if (!vw || !vh || !w || !h) return null;
  const scale = Math.min(w / vw, h / vh);
  return { scale, x0: (w - vw * scale) / 2, y0: (h - vh * scale) / 2, vw, vh };
}

function clearMark() {
  rec.point = null;
  $("rec-pick").hidden = true;
  for (const m of document.querySelectorAll("#rec-view .rec-marker")) m.remove();
}

function placeMarker() {
  for (const m of document.querySelectorAll("#rec-view .rec-marker")) m.remove();
  const f = recFit();
  if (!rec.point || !f) return;
  if (rec.point.box) {
    const [x0, y0, x1, y1] = rec.point.box, b = document.createElement("div");
    b.className = "rec-marker rec-box";
    b.style.left = `${f.x0 + x0 * f.scale}px`; b.style.top = `${f.y0 + y0 * f.scale}px`;
    b.style.width = `${(x1 - x0) * f.scale}px`; b.style.height = `${(y1 - y0) * f.scale}px`;
    $("rec-view").appendChild(b);
  }
  const m = document.createElement("div");
  m.className = "rec-marker";
  m.style.left = `${f.x0 + rec.point.x * f.scale}px`; m.style.top = `${f.y0 + rec.point.y * f.scale}px`;
  m.title = `spot marked: (${rec.point.x}, ${rec.point.y}) px in the picture of ${fmtMs(rec.point.atNs)}`;
  $("rec-view").appendChild(m);
}

$("rec-mark").addEventListener("change", () => {
  clearMark();
  const note = $("rec-reported");
  $("rec-report-error").textContent = "";
  if (!$("rec-mark").checked) { note.textContent = ""; return; }
  if (recShownNs() == null) { $("rec-mark").checked = false; $("rec-report-error").textContent = "no video shown"; return; }
  $("rec-video").pause();
  $("rec-pick").hidden = false;
  note.textContent = "click the spot in the picture, or drag a box around the subject";
});

// On the paused picture: a click marks the spot, a drag draws the subject's box (its bottom centre, where it meets the
// ground or water, is then the spot located); both in the recorded frame's pixels (videoWidth x videoHeight).
const DRAG_MIN_PX = 6;  // a pointer moved less than this (screen px) between press and release is a click
let recDrag = null;  // {x, y}: where the press was (the pick layer's px)
function recPx(f, ox, oy) { return [(ox - f.x0) / f.scale, (oy - f.y0) / f.scale]; }
function recInside(f, x, y) { return x >= 0 && y >= 0 && x <= f.vw && y <= f.vh; }
$("rec-pick").addEventListener("pointerdown", (e) => {
  $("rec-video").pause();
  recDrag = { x: e.offsetX, y: e.offsetY };
  $("rec-pick").setPointerCapture(e.pointerId);
});
$("rec-pick").addEventListener("pointermove", (e) => {
  if (!recDrag) return;
  const box = $("rec-drag-box");
  const x0 = Math.min(recDrag.x, e.offsetX), y0 = Math.min(recDrag.y, e.offsetY);
  box.hidden = Math.abs(e.offsetX - recDrag.x) < DRAG_MIN_PX && Math.abs(e.offsetY - recDrag.y) < DRAG_MIN_PX;
  box.style.left = `${x0}px`; box.style.top = `${y0}px`;
  box.style.width = `${Math.abs(e.offsetX - recDrag.x)}px`; box.style.height = `${Math.abs(e.offsetY - recDrag.y)}px`;
});
$("rec-pick").addEventListener("pointerup", (e) => {
  const start = recDrag, f = recFit();
  recDrag = null; $("rec-drag-box").hidden = true;
  if (!start || !f) return;
  const err = $("rec-report-error"), atNs = recShownNs();
  const [ax, ay] = recPx(f, start.x, start.y), [bx, by] = recPx(f, e.offsetX, e.offsetY);
  const dragged = Math.abs(e.offsetX - start.x) >= DRAG_MIN_PX || Math.abs(e.offsetY - start.y) >= DRAG_MIN_PX;
  if (!dragged) {
    if (!recInside(f, bx, by)) { err.textContent = "that is outside the picture: click inside it"; return; }
    rec.point = { x: Math.min(f.vw - 1, Math.round(bx)), y: Math.min(f.vh - 1, Math.round(by)), atNs, box: null };
  } else {  // the box, cut to the picture
    const cl = (v, hi) => Math.min(hi, Math.max(0, Math.round(v)));
    const bb = [cl(Math.min(ax, bx), f.vw), cl(Math.min(ay, by), f.vh), cl(Math.max(ax, bx), f.vw), cl(Math.max(ay, by), f.vh)];
    if (bb[2] - bb[0] < 2 || bb[3] - bb[1] < 2) { err.textContent = "that box is outside the picture: draw it on the subject"; return; }
    rec.point = { x: Math.round((bb[0] + bb[2]) / 2), y: bb[3], atNs, box: bb };
  }
  $("rec-pick").hidden = true; err.textContent = "";
  const p = rec.point;
  $("rec-reported").textContent = (p.box ? `box drawn (${p.box.join(", ")}) px` : `spot marked at (${p.x}, ${p.y}) px`) +
    `, ${fmtMs(p.atNs)}`;
  placeMarker();
});

// Report what the picture shown (or the one the spot was marked on) shows as an event: its window the minute
// around it, inside the shown window.
async function reportRecording() {
  const err = $("rec-report-error"), done = $("rec-reported");
  err.textContent = "";
  const at = rec.point ? rec.point.atNs : recShownNs();
  if (!rec.id || at == null) { err.textContent = "no video shown: show a window with recorded video first"; return; }
  if ($("rec-mark").checked && !rec.point) { err.textContent = "click the spot in the picture first (or untick \"mark the spot\")"; return; }
  // the picture marked, as it is: the clip starts at the keyframe before the window, so a picture shown before the
  // window's start is reported at its own time (its snapshot and, for a drone, the pose are those of that picture)
  // the minute around it, inside the window shown (reaching back to a lead-in picture)
  const atNs = Math.round(at);
  const s = Math.min(atNs, Math.max(rec.startNs, atNs - 30e9)), e = Math.max(atNs, Math.min(rec.endNs, atNs + 30e9));
  const body = { source: rec.id, start_ns: Math.round(s), end_ns: Math.round(e), at_ns: Math.round(atNs), type: $("rec-type").value,
    severity: $("rec-severity").value, note: $("rec-report-note").value };
  if (rec.point && rec.point.box) body.box_px = rec.point.box;  // the server locates its bottom centre
  else if (rec.point) body.point_px = [rec.point.x, rec.point.y];
  if ($("rec-label").value) body.label = $("rec-label").value;
  const btn = $("rec-report-btn");
  btn.disabled = true; done.textContent = "reporting…";
  let ev;
  try {
    ev = await json("api/events", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (e2) { done.textContent = ""; err.textContent = "report: " + e2.message; return; } finally { btn.disabled = false; }
  done.textContent = `reported: ${ev.type} ${ev.id}`;
  $("rec-report-note").value = ""; $("rec-mark").checked = false; clearMark();
  await search({ keep: true });
  await select(ev.id);
}

$("rec-window").addEventListener("submit", (e) => { e.preventDefault(); showRecordings(); });
for (const [btn, dir] of [["rec-prev", -1], ["rec-next", 1]]) {
  $(btn).addEventListener("click", () => {
    const w = recWindow();
    if (w.error) { $("rec-error").textContent = w.error; return; }
    setRecFrom(w.startNs + dir * w.lenS * 1e9);
    showRecordings();
  });
}
$("rec-download").addEventListener("click", async () => {
  const w = recWindow(), btn = $("rec-download");
  $("rec-error").textContent = w.error || "";
  if (w.error) return;
  btn.disabled = true;
  try { await download(`${recPath(w.id === rec.id ? await recClipWindow(w) : w, "clip")}&download=true`, `${w.id}_${new Date(w.startNs / 1e6).toISOString().slice(0, 19).replaceAll(":", "")}Z.mp4`); }
  catch (e) { $("rec-error").textContent = "download: " + e.message; }
  finally { btn.disabled = false; }
});
$("rec-close").addEventListener("click", () => closePanel("recordings"));
$("rec-bar").addEventListener("click", (e) => recBarClick(e));
$("rec-report").addEventListener("submit", (e) => { e.preventDefault(); reportRecording(); });
// what the subject is, as a detector label, preset from the type (a confirmed report with a drawn box of a vessel is a
// training label of this camera: seawatch reviews export)
const REC_TYPE_LABEL = { fire: "fire", smoke: "smoke", no_hard_hat: "person", fire_lane_blocked: "car",
  unidentified_vessel: "vessel", vessel_in_zone: "vessel" };
$("rec-type").addEventListener("change", () => { $("rec-label").value = REC_TYPE_LABEL[$("rec-type").value] || ""; });
for (const ev of ["timeupdate", "seeked", "loadeddata"]) $("rec-video").addEventListener(ev, () => recNote());
$("rec-video").addEventListener("loadedmetadata", () => placeMarker());
window.addEventListener("resize", () => placeMarker());
// from 2 minutes before the event, or half the window before it when that is shorter than 4 minutes (the 1-minute
// window the length select may keep from the last one shown): the window always holds the event's start
$("d-recordings").addEventListener("click", () => {
  if (!state.detail) return;
  const lenS = Number($("rec-len").value) || 300;
  openRecordings(state.detail.source_id, wholeS(state.detail.start_ns) - Math.min(120, lenS / 2) * 1e9, lenS);
});

// A camera whose recording fails (GET /api/sources recording: folder gone or unwritable, disk full): in red, with
// why and for how long. It is still analysed, but no video is kept for its clips and evidence. Nothing otherwise.
// Zones, ignore areas or water drawn in pixels of another picture than the camera sends (GET /api/sources
// geometry_problem): they never hold a detection there, so its rules are silent; said in red until redrawn.
function geometryNote(s) {
  if (!s.geometry_problem) return [];
  const sp = document.createElement("span");
  sp.className = "geometry-problem error";
  sp.textContent = ` · zones off the picture: ${displayText(s.geometry_problem, 300)}`;
  sp.title = "a zone's polygon_px (or an ignore area's, the water's) lies outside the pictures this camera sends: " +
    "its rules cannot fire there (see the service log)";
  return [sp];
}
function recordingNote(s) {
  const r = s.recording;
  if (!r || r.state !== "failing") return [];
  const sp = document.createElement("span");
  sp.className = "recording-failing error";
  sp.textContent = ` · not recording${r.since_ns ? " for " + ago(r.since_ns) : ""}: ${displayText(r.reason || "", 200)}`;
  sp.title = "its recording fails: no video is kept for clips and evidence until segments are written again " +
    "(a recording_failed incident is raised after a while; the service log has the details)";
  return [sp];
}

// A fixed camera's view check (GET /api/sources view_check), when it has something to say: moved / covered /
// blurred (raised: red, with the finding, e.g. "moved by 23 px (pan +0.52 deg, ...)"), a change held but not raised
// yet, or still learning its reference view. Nothing while the view matches its reference.
const LEARNING_LONG_MS = 5 * 60e3;  // learning longer than this, its picture moving: said so in red
function viewCheckNote(s) {
  const v = s.view_check;
  if (!v || v.state === "ok") return [];
  const sp = document.createElement("span");
  sp.className = "view-check";
  if (["moved", "covered", "blurred"].includes(v.state)) {
    sp.classList.add("error");
    sp.textContent = ` · view ${v.state}${v.finding ? ": " + displayText(v.finding, 200) : ""}`;
    sp.title = "the camera's view check: its picture no longer matches its reference view (an incident is open; an " +
      "administrator who re-aimed it on purpose resets the reference)";
  } else if (v.state === "checking") {
    const since = Math.min(...Object.values(v.pending || {}));
    sp.textContent = ` · view changed${Number.isFinite(since) ? " " + ago(since) + " ago" : ""}, checking: ` +
      displayText(v.finding || "", 200);
  } else if (v.state === "learning") {
    sp.textContent = " · learning its reference view";
    // still learning long after it began because the picture keeps moving: this camera is not being checked at all
    const since = v.learning_since_ns, long = since && v.learning_restarts > 0 && Date.now() - since / 1e6 > LEARNING_LONG_MS;
    if (long) {
      sp.classList.add("error");
      sp.textContent += ` for ${ago(since)}: no steady picture yet (it moved ${v.learning_restarts} time(s)), so not checked for a moved, covered or blurred view`;
      sp.title = "the view check learns a reference from a steady minute of the picture; a picture that moves all over (a close-up of " +
        "flames or water, a camera panning) never gives one: a fixed camera's view of quays or buildings does";
    }
  } else return [];
  return [sp];
}

// Abort / restart of a drone's patrol: operators and above (drone crews are operators; the server checks).
function droneButtons(s) {
  if (!atLeast("operator")) return [];
  const mk = (act, text, title) => {
    const b = document.createElement("button");
    b.type = "button"; b.className = "drone-act"; b.dataset.act = act; b.textContent = text; b.title = title;
    b.addEventListener("click", () => droneAction(s.drone_id, act));
    return b;
  };
  // on the ground (it reports itself disarmed) there is nothing to fly home: the button only keeps the patrol from
  // being flown again (repeat), so it says so, and does nothing when there is no patrol left to stop
  const onGround = s.armed === false;
  const abort = onGround
    ? mk("abort", "Stop patrol", "on the ground: the patrol is not flown again (repeat) until restarted")
    : mk("abort", "Abort (RTL)", "stop the patrol or task (it does not start again by itself) and fly home");
  if (onGround && (!s.patrol || ["none", "aborted"].includes(s.patrol_state))) {
    abort.disabled = true;
    abort.title = s.patrol ? "on the ground, patrol stopped: nothing to abort" : "on the ground: nothing to abort";
  }
  const out = [abort];
  if (s.patrol) {
    const r = mk("restart", "Restart patrol", "fly the patrol again (battery and failsafe checks still apply)");
    r.disabled = s.patrol_state === "flying";
    out.push(r);
  }
  return out;
}

async function droneAction(id, act) {
  const onGround = act === "abort" && (state.sources || []).some(s => s.drone_id === id && s.armed === false);
  if (act === "abort" && !confirm(onGround ? `Stop the patrol of ${id}? It is on the ground and is not flown again until restarted.`
    : `Abort the patrol of ${id} and send it home (RTL)?`)) return;
  const note = $("sources-note");
  note.className = ""; note.textContent = `${id}: ${act === "abort" ? (onGround ? "stopping its patrol" : "sending RTL") : "restart requested"}…`;
  try {
    const d = await json(`api/drones/${encodeURIComponent(id)}/${act}`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: act === "abort" ? JSON.stringify({ mode: "RTL" }) : undefined });
    note.textContent = `${id}: patrol ${d.patrol_state}${d.mode ? ", mode " + d.mode : ""}`;
  } catch (e) { note.className = "error"; note.textContent = `${id}: ${act} failed: ${e.message}`; }
  try { await refreshSources(await json("api/sources")); } catch (e) { /* the live feed refreshes it again */ }
}

async function refreshVessels() {
  state.vessels = (await json("api/ais/vessels?limit=2000")).vessels;
  if (map) map.setData({ vessels: state.vessels });
}

async function blobUrl(path) { return URL.createObjectURL(await (await api(path)).blob()); }

// An event's snapshot or clip (when its snapshot_url / clip_url says there is one). Those URLs are for API clients:
// "<root>/api/events/ID/snapshot" with the root as the service knows it (service.root_path or a trusted proxy's
// X-Forwarded-Prefix, else ""), which need not be where this page reached it; the UI asks under its own ROOT.
const eventMedia = (ev, what) => `api/events/${encodeURIComponent(ev.id)}/${what}`;

// A response's body as a Blob, telling ``onMb`` the megabytes received so far (a long window's clip is tens of MB)
async function blobWithProgress(r, onMb) {
  if (!r.body || !r.body.getReader) return r.blob();
  const reader = r.body.getReader(), parts = [];
  let got = 0, shown = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value); got += value.length;
    if (got - shown >= 1 << 20) { shown = got; onMb(got / 1048576); }
  }
  return new Blob(parts, { type: r.headers.get("Content-Type") || "video/mp4" });
}

// Point a media element at a new blob URL (or at nothing) and free the one it showed before.
function setMedia(el, url) {
  const old = el.getAttribute("src");
  if (url) el.src = url; else { el.removeAttribute("src"); if (el.load) el.load(); }
  if (old && old.startsWith("blob:") && old !== url) URL.revokeObjectURL(old);
}

// Show an event's detail. refresh: the same event again (a live update): the typed note and a clip already
// loaded for the same clip URL stay, and the page does not scroll.
// A link to an event: #event=ID in the address (beside a kiosk's #key=...), kept in step with the event open, so the
// address bar can be shared and a reload reopens it.
// A camera's live view is linked the same way: #live=CAMERA (the camera wall's tiles link to it).
const hashParam = (name) => new URLSearchParams(location.hash.slice(1)).get(name);
function linkedEvent() { return hashParam("event"); }
function setHashParam(name, value) {
  const h = new URLSearchParams(location.hash.slice(1));
  if (value) h.set(name, value); else h.delete(name);
  const hash = h.toString();
  if (hash !== location.hash.slice(1)) history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
}
function linkEvent(id) { setHashParam("event", id); }
// the live view a link asks for (#live=CAMERA), when that camera is one of the sources
function openLinkedLive() {
  const id = hashParam("live");
  if (id && id !== live.id && state.sources.some((s) => s.source_id === id && (s.kind || "camera") === "camera")) openLive(id);
}
window.addEventListener("hashchange", () => {
  if (!state.auth || $("main").hidden) return;
  const id = linkedEvent();
  if (id && id !== state.selected) select(id, { reveal: true });
  openLinkedLive();
});

// The vessel as the search finds it (the store's identity columns, as the CSV and the report show them): its name
// (vessel_name, else the AIS name), MMSI and hull text: ", vessel GERO-B, MMSI 244820279"; none of them: nothing.
function vesselParts(a) {
  if (!a) return [];
  const name = a.vessel_name || a.ais_name, out = [];
  if (name) out.push(untrusted(name, 100));
  if (a.mmsi != null && a.mmsi !== "") out.push(out.length ? ", MMSI " : "MMSI ", untrusted(String(a.mmsi), 16));
  if (a.hull_text) out.push(out.length ? ", hull text " : "hull text ", untrusted(a.hull_text, 64));
  return out.length ? [", vessel ", ...out] : [];
}

// The detail closed: no event selected (list and map unmark it, the address drops it), its clip stopped, and an
// answer still on its way for it opens nothing.
function closeDetail() {
  selSeq++;
  state.selected = null; state.detail = null;
  $("detail").hidden = true; delete $("detail").dataset.id;
  $("d-clip").pause();
  renderList();
  if (map) map.setData({ selected: null });
  linkEvent(null);
}

async function select(id, { refresh = false, reveal = false } = {}) {
  const my = ++selSeq;
  const stale = () => my !== selSeq;  // another select() started since: this one's answers are dropped
  if (!refresh) { panelOpened("detail", id); state.selected = id; renderList(); if (map) map.setData({ selected: id }); linkEvent(id); }
  let ev;
  try { ev = await json("api/events/" + encodeURIComponent(id)); }
  catch (e) { if (!stale()) $("d-error").textContent = e.message; return; }
  if (stale()) return;
  const prev = state.detail && state.detail.id === ev.id ? state.detail : null;
  state.detail = ev;
  const shown = !$("detail").hidden;
  $("detail").hidden = false;
  $("detail").dataset.id = ev.id;
  if (!refresh) {
    $("d-error").textContent = "";
    if (!prev) {  // a note typed for another event must not be saved against this one, nor its holds shown
      $("d-note").value = ""; $("d-hold-note").value = "";
      $("d-holds").replaceChildren(); $("d-kept").textContent = "holds: loading…"; $("d-kept").className = "";
    }
    // the review buttons in sight (they sit under the map and list on a laptop screen)
    const top = $("detail").getBoundingClientRect().top;
    // reveal: opened from a link (the camera wall, a shared address): the detail is what was asked for, brought to the top
    // (beside a grown map, map-wide, it is scrolled to only when out of sight: the map stays in view)
    const away = top < 0 || top > window.innerHeight - 160;
    if (away || (!$("main").classList.contains("map-wide") && (reveal || !shown))) $("detail").scrollIntoView({ block: "start", behavior: reveal ? "auto" : "smooth" });
  }
  $("d-title").textContent = `${ev.type} (${ev.severity}) on ${ev.source_id}`;
  $("d-meta").replaceChildren(`started ${fmt(ev.start_ns)}${ev.end_ns ? ", ended " + fmt(ev.end_ns) : ""}, ${ev.phase}, ` +
    `status: ${ev.review_status}` +
    (ev.geo ? `, at ${ev.geo.lat_deg.toFixed(5)}, ${ev.geo.lon_deg.toFixed(5)} ± ${ev.geo.semi_major_m.toFixed(0)} m` : `, no position: ${ev.geo_reason || "unknown"}`),
    ...vesselParts(ev.attributes));
  // why the system raised it, in its words (an unidentified vessel: the nearest AIS report and the gate, or that it was
  // held while AIS was down and since when; a feed or camera outage: what failed)
  const why = ev.attributes && typeof ev.attributes.reason === "string" && ev.attributes.reason;
  if (why) { const d = document.createElement("div"); d.id = "d-why"; d.append("why: ", untrusted(why, 600)); $("d-meta").append(d); }
  const snz = snoozedOf(ev);
  if (snz) {
    const d = document.createElement("div"); d.id = "d-snoozed"; d.className = "snoozed-note";
    d.append("no alarm: ", ...snoozeLine(snz)); $("d-meta").append(d);
  }
  const vlinks = vesselLinkLines(ev);
  if (vlinks.length) { const d = document.createElement("div"); d.id = "d-linked"; d.append(...vlinks); $("d-meta").append(d); }
  const audit = $("d-audit");
  audit.replaceChildren();
  for (const r of ev.review_history || []) {
    const li = document.createElement("li");
    li.replaceChildren(`${r.status}${r.reason ? " (" + r.reason.replaceAll("_", " ") + ")" : ""} by `, untrusted(r.by || r.actor || "?", 100),
      ...(r.note ? [": ", untrusted(r.note)] : []));
    audit.appendChild(li);
  }
  const src = state.sources.find((s) => s.source_id === ev.source_id);
  // a fixed camera's event with a subject box can become an ignore area, once (reviewers; the server checks again)
  const made = ((src && src.areas) || []).some((a) => a.origin === "operator" && a.event_id === ev.id);
  $("d-ignore").hidden = !(ev.snapshot && src && (src.kind || "camera") === "camera" && !src.drone_id) || !atLeast("reviewer") || made;
  // the event's camera now (is the boat still there, is the smoke gone): its live view
  $("d-live").hidden = !(src && (src.kind || "camera") === "camera");
  // what the camera recorded around the event (before it, after it): its recordings
  $("d-recordings").hidden = $("d-live").hidden;
  // operators review what no reviewer has confirmed; confirming, and changing a confirmed verdict, are a reviewer's
  // (the server checks too)
  for (const b of document.querySelectorAll("#d-actions button[data-act]"))
    b.hidden = !atLeast("operator") || (!atLeast("reviewer") && (b.dataset.act === "confirm" || ev.review_status === "confirmed"));
  renderIgnored(ev);
  if (!prev) { $("d-send-note").textContent = ""; $("d-send-note").className = ""; }
  showSendDrone(ev);
  const img = $("d-snapshot"), vid = $("d-clip"), note = $("d-clip-note");
  const sameSnap = prev && img.dataset.for === ev.id && img.dataset.url === (ev.snapshot_url || "");
  const sameClip = prev && vid.dataset.for === ev.id && vid.dataset.url === (ev.clip_url || "");
  if (sameSnap) drawOverlay(ev);  // the picture is already there (areas may have changed)
  else {
    img.hidden = !ev.snapshot_url; img.dataset.for = ev.id; img.dataset.url = "";  // set once loaded
    drawOverlay(null);
    setMedia(img, null);
  }
  if (!sameClip) {
    vid.pause(); setMedia(vid, null);
    vid.hidden = !ev.clip_url; vid.dataset.for = ev.id; vid.dataset.url = "";  // set once loaded
    note.textContent = ev.clip_url ? "" : "clip: the incident is still open";
  }
  const loads = [];
  if (!sameSnap && ev.snapshot_url) loads.push((async () => {
    const url = await blobUrl(eventMedia(ev, "snapshot")).catch(() => "");
    if (stale()) { if (url) URL.revokeObjectURL(url); return; }
    img.onload = () => { if (state.selected === ev.id && !stale()) drawOverlay(ev); };
    setMedia(img, url);
    if (url) img.dataset.url = ev.snapshot_url;
  })());
  // a clip still being recorded answers 409 with Retry-After: said so, and asked once more then (if still selected)
  const loadClip = async (retry) => {
    let url;
    try { url = await blobUrl(eventMedia(ev, "clip")); }
    catch (e) {
      if (stale()) return;
      if (retry && e.status === 409 && e.retryAfterS > 0) {
        const wait_s = Math.min(e.retryAfterS, 300);
        note.textContent = `clip: ${e.message} (trying again in ${wait_s} s)`;
        setTimeout(() => { if (!stale()) loadClip(false); }, wait_s * 1000);
      } else { vid.hidden = true; note.textContent = "clip: " + e.message; }
      return;
    }
    if (stale()) { URL.revokeObjectURL(url); return; }
    note.textContent = "";
    setMedia(vid, url);
    vid.dataset.url = ev.clip_url;
    vid.play().catch(() => {});
  };
  if (!sameClip && ev.clip_url) loads.push(loadClip(true));
  loads.push(loadHolds(ev, stale));
  await Promise.all(loads);
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
      t.textContent = a.kind === "zone" ? `zone ${a.id}: ${(a.rule_states || (a.rules || []).map((type) => ({ type })))
        .map((r) => r.type + (r.schedule_text ? " " + ruleSchedule(r) : "")).join(", ")}` :
        a.kind === "ignore" ? `ignored (${(a.labels || []).join(", ")})${a.note ? ": " + isolated(a.note, 500) : ""}` : "water";
      p.appendChild(t);
      if (a.kind !== "water") add("text", { x: a.polygon_px[0][0] + 3, y: a.polygon_px[0][1] + 14 }, a.kind === "zone" ? a.id : (a.note ? isolated(a.note, 40) : "ignore"));
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
    li.replaceChildren(`ignore area ${a.area_id} (${(a.labels || []).join(", ")}) by `, untrusted(a.created_by, 100),
      ...(a.note ? [": ", untrusted(a.note)] : []), a.event_id === ev.id ? " (from this event)" : "");
    if (atLeast("reviewer")) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = "remove";
      b.addEventListener("click", () => reviewDesk(`api/sources/${encodeURIComponent(ev.source_id)}/ignore-areas/${a.area_id}`, { method: "DELETE" }));
      li.appendChild(b);
    }
    ul.appendChild(li);
  }
}

async function reviewDesk(path, opts) {
  try {
    await api(path, opts);
    $("d-error").textContent = ""; $("d-note").value = "";
    await refreshSources(await json("api/sources"));
    await search({ keep: true }); await select(state.selected, { refresh: true });
  } catch (e) { $("d-error").textContent = e.message; }
}
$("d-ignore").addEventListener("click", () => reviewDesk(`api/events/${encodeURIComponent(state.selected)}/ignore-spot`, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ note: $("d-note").value }) }));

for (const btn of document.querySelectorAll("#detail button[data-act]")) {
  btn.addEventListener("click", async () => {
    await reviewDesk(`api/events/${encodeURIComponent(state.selected)}/${btn.dataset.act}`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ note: $("d-note").value }, btn.dataset.reason ? { reason: btn.dataset.reason } : {})) });
  });
}

// ---- retention: the open event's holds, and whether the site keeps it past its retention period

async function loadHolds(ev, stale) {
  let holds = null, err = "";
  try { holds = await json(`api/events/${encodeURIComponent(ev.id)}/holds`); } catch (e) { err = e.message; }
  if (!stale()) showHolds(ev, holds, err);
}

function holdBy(by) {  // "user:ops" / "key:wall" (the server's principal kind and name)
  const i = (by || "").indexOf(":");
  if (i < 0) return by || "?";
  return by.slice(0, i) === "key" ? `${by.slice(i + 1)} (API key)` : by.slice(i + 1);
}

function showHolds(ev, holds, err = "") {
  // lifted holds stay listed (the audit trail) but keep nothing; an old server's holds have no `active`: all active
  const active = (holds || []).filter((h) => h.active !== false);
  if (holds) {  // what the list marks as held follows what the detail learnt
    const had = state.held.has(ev.id);
    if (active.length) state.held.add(ev.id); else state.held.delete(ev.id);
    if (had !== state.held.has(ev.id)) renderList();
  }
  const ul = $("d-holds");
  ul.replaceChildren();
  for (const h of holds || []) {
    const li = document.createElement("li");
    li.dataset.reason = h.reason; li.dataset.holdId = h.id;
    li.replaceChildren(`${h.reason === "evidence_export" ? "evidence package exported" : "kept as evidence"} by `,
      untrusted(holdBy(h.by), 100), `, ${fmt(h.at_ns)}`, ...(h.note ? [": ", untrusted(h.note)] : []));
    if (h.active === false) {
      li.className = "released";
      li.append(" (lifted by ", untrusted(holdBy(h.released_by), 100), `, ${fmt(h.released_ns)}`,
        ...(h.release_note ? [": ", untrusted(h.release_note)] : []), ")");
    } else if (h.reason === "evidence_export" && state.role === "admin") {
      // an exported package is checked against the stored original: only an admin lifts its hold, saying why
      const b = document.createElement("button");
      b.type = "button"; b.textContent = "lift"; b.className = "lift";
      b.title = "lift this evidence export's hold (the note says why; required)";
      b.addEventListener("click", () => releaseHold({ hold_id: h.id }));
      li.appendChild(b);
    }
    ul.appendChild(li);
  }
  // "Release hold": reviewers' holds of the open event (an evidence export's is an admin's, above)
  $("d-release").hidden = !atLeast("reviewer") || !active.some((h) => h.reason === "manual");
  const kept = [];
  if (active.length) kept.push(`on hold (${active.length})`);
  if (ev.review_status === "confirmed") kept.push("confirmed");
  if (ev.end_ns == null) kept.push("incident still open");
  const r = state.health && state.health.retention, el = $("d-kept");
  el.className = kept.length ? "kept" : "";
  if (r && r.enabled === false) el.textContent = "Retention is off on this site: no event expires.";
  else if (kept.length) el.textContent = `Kept past the retention period (${kept.join(", ")}), with its snapshot and clip.`;
  else if (err) el.textContent = `holds: ${err}`;
  else el.textContent = expiryText(ev, r && r.policy, r && r.grace) + " Held, confirmed and open events are kept.";
}

// When an unheld event goes, from the site's policy (health's retention.policy): its camera's ages when the site set
// them, else its severity's; a false detection (training data) at least false_detections_days; days after its last
// phase (or after it was stored, if later: the server's rule, which the UI cannot see, so "about"). While an upgraded
// store's grace runs (health's retention.grace), events from before it started are kept until its end.
function expiryText(ev, policy, grace) {
  const src = policy && policy.sources && Object.hasOwn(policy.sources, ev.source_id) ? policy.sources[ev.source_id] : undefined;
  const table = src ? src.events_days : policy && policy.events_days;
  let days = table ? table[ev.severity] : undefined;
  const clipDays = src ? src.clips_days : policy && policy.clips_days;
  const hist = ev.review_history || [];
  const fd = ev.review_status === "dismissed" && hist.length > 0 && hist[hist.length - 1].reason === "false_detection";
  if (fd && days !== undefined && policy.false_detections_days !== undefined)
    days = days === null || policy.false_detections_days === null ? null : Math.max(days, policy.false_detections_days);
  if (days === undefined) return "Not held: expires per the site's retention policy (its clip may go sooner when the media disk runs low).";
  const what = fd ? "false detections (training data)" : `${ev.severity} events${src ? " of " + ev.source_id : ""}`;
  if (days === null) return `Not held, but this site keeps ${what} for good` +
    (clipDays ? ` (its clip goes after about ${clipDays} days).` : ".");
  const at = (ns, d) => formatDate(ns + d * 86400e9);
  let text = `Not held: expires about ${at(ev.at_ns, days)} (${days} days after its last update${fd ? ", kept longer as a false detection" : ""})`;
  if (clipDays && clipDays < days) text += `, its clip about ${at(ev.at_ns, clipDays)}`;
  text += "; sooner for its clip when the media disk runs low.";
  if (grace && grace.active && ev.at_ns < grace.protect_before_ns)
    text += ` Retention started on this site on ${formatDate(grace.enabled_ns)}: nothing stored before then is deleted before ${formatDate(grace.until_ns)}.`;
  return text;
}

async function holdEvent() {
  const id = state.selected, btn = $("d-hold");
  if (!id) return;
  btn.disabled = true; $("d-error").textContent = "";
  try {
    const holds = await json(`api/events/${encodeURIComponent(id)}/hold`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ note: $("d-hold-note").value }) });
    if (state.detail && state.detail.id === id) { $("d-hold-note").value = ""; showHolds(state.detail, holds); }
    else if (holds.length && !state.held.has(id)) { state.held.add(id); renderList(); }
  } catch (e) { $("d-error").textContent = "hold: " + e.message; }
  finally { btn.disabled = false; }
}
$("d-hold").addEventListener("click", () => holdEvent());

// Lift holds of the open event: its reviewers' holds, or one hold ({hold_id}: an evidence export's, admins only, with a
// note); the note field says why. The server answers the event's holds, the lifted ones included.
async function releaseHold(extra = {}) {
  const id = state.selected, note = $("d-hold-note").value;
  if (!id) return;
  if (extra.hold_id && !note.trim()) { $("d-error").textContent = "lift: say why in the note field (an exported package's hold)"; return; }
  const btn = $("d-release");
  btn.disabled = true; $("d-error").textContent = "";
  try {
    const holds = await json(`api/events/${encodeURIComponent(id)}/hold`, { method: "DELETE",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ note, ...extra }) });
    if (state.detail && state.detail.id === id) { $("d-hold-note").value = ""; showHolds(state.detail, holds); }
    else if (!holds.some((h) => h.active !== false) && state.held.has(id)) { state.held.delete(id); renderList(); }
  } catch (e) { $("d-error").textContent = "release: " + e.message; }
  finally { btn.disabled = false; }
}
$("d-release").addEventListener("click", () => releaseHold());

// ---- service health: a banner while the service is degraded (the media disk low, database writes queued or lost)

function size(bytes) {  // binary units, like storage.retention.min_free_disk_gb
  if (typeof bytes !== "number") return "?";
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

// [kind, text, severe] for each problem /api/health reports (with credentials it has `delivery` and `retention`)
function healthProblems(h) {
  const out = [], r = h.retention || {}, d = r.disk || {}, g = r.disk_guard || {};
  if (d.low || g.low) {
    out.push(["disk-low", `Media disk low: ${size(d.free_bytes)} free (${d.free_pct ?? "?"} %), below the ${size(d.threshold_bytes)} ` +
      "to keep free. " + (g.low ? "Only held evidence, the newest recordings and the database are left: free space on the disk " +
      "now, or new events, snapshots and clips will not be stored." : "The oldest recordings and unheld clips are being " +
      "deleted to make room; held evidence is kept."), true]);
  } else if (d.error) out.push(["disk-error", `The media disk cannot be checked: ${d.error}`, false]);
  if (h.database === "error") out.push(["database", "The database check failed: events may not be stored or found.", true]);
  const s = (h.delivery && h.delivery.store_sink) || {};
  if (s.pending) out.push(["pending", `${s.pending} event update(s) wait to be written to the database.`, false]);
  if (s.dropped) out.push(["dropped", `${s.dropped} event update(s) were lost since the service started (the database did not take them).`, true]);
  if (h.status !== "ok" && !out.length) out.push(["degraded", `The service reports itself ${h.status}.`, true]);
  return out;
}

function showHealth(h, err = "") {
  const el = $("health-banner");
  if ($("main").hidden) { el.hidden = true; return; }  // an answer arriving after a logout
  const problems = h ? healthProblems(h) : [["unreachable", `The service health check did not answer: ${err}`, false]];
  el.replaceChildren();
  for (const [kind, text] of problems) {
    const div = document.createElement("div");
    div.dataset.kind = kind; div.textContent = "⚠ " + text;
    el.appendChild(div);
  }
  el.className = problems.some((p) => p[2]) ? "severe" : "";
  el.title = `checked ${fmt(Date.now() * 1e6)}, every ${HEALTH_POLL_MS / 1000} s`;
  el.hidden = !problems.length;
}

async function checkHealth() {
  let h;
  try { h = await json("api/health"); } catch (e) { if (e.message !== "unauthorized") showHealth(null, e.message); return; }
  const first = !state.health;
  state.health = h;
  showHealth(h);
  if (first && state.detail && !$("detail").hidden) showHoldsAgain();
}

// the retention wording of the open detail depends on health (retention off); shown again once health is known
function showHoldsAgain() {
  const ev = state.detail, my = selSeq;
  loadHolds(ev, () => my !== selSeq || !state.detail || state.detail.id !== ev.id);
}

// ---- snoozed cameras (api/sources/{id}/snooze): an operator silences one camera's alarms for a while (crane
// maintenance, a van in the fire lane, a lens being cleaned). Its events are still stored and listed, marked
// "snoozed" (attributes.snoozed: who, until when, why); they sound no alarm, show no notification and leave the
// wall's tile calm. The sources table says "snoozed until 16:00 UTC by alice: crane maintenance"; operators get
// "Snooze" / "End snooze", which open a form under the table (a duration and a note; the server keeps the record).
const snoozedOf = (ev) => (ev && ev.attributes && ev.attributes.snoozed && typeof ev.attributes.snoozed === "object"
  ? ev.attributes.snoozed : null);
const byName = (by) => String(by || "?").replace(/^user:/, "");
// "16:00 UTC" today (in the display zone), "2026-12-02 04:00 UTC" on another day
const untilText = (ns) => formatTime(ns, { date: formatDate(ns) !== formatDate(Date.now() * 1e6), seconds: false });
function snoozeLine(sn) {  // text and isolated nodes (who and why are typed by people)
  return [`snoozed until ${untilText(sn.until_ns)} by `, untrusted(byName(sn.by), 100), ": ", untrusted(sn.note || "", 300),
    ...(sn.types && sn.types.length ? [` (${displayText(sn.types.join(", "), 200)} only)`] : [])];
}
function snoozeTag(sn) {  // the event list's mark on a snoozed event
  const sp = document.createElement("span");
  sp.className = "snoozed-tag"; sp.textContent = "snoozed";
  sp.title = `raised while its camera's alerts were snoozed by ${displayText(byName(sn.by), 100)} until ` +
    `${fmt(sn.until_ns)}: ${displayText(sn.note, 300)} (no alarm was sounded)`;
  return sp;
}
// each camera's row of the sources table: its snooze and, for operators, the button (called after the rows are made)
function showSnoozes(list) {
  const rows = new Map([...document.querySelectorAll("#sources tbody tr")].map((tr) => [tr.dataset.id, tr]));
  for (const s of list) {
    const tr = rows.get(s.source_id);
    if ((s.kind || "camera") !== "camera" || !tr) continue;
    if (s.snooze) {
      const sp = document.createElement("span");
      sp.className = "snooze-state"; sp.append(" · ", ...snoozeLine(s.snooze));
      sp.title = `since ${fmt(s.snooze.since_ns)}: its events are still stored and listed, marked snoozed, and sound no alarm`;
      tr.lastChild.append(sp);
    }
    if (!atLeast("operator")) continue;
    const b = document.createElement("button");
    b.type = "button"; b.className = "snooze-act"; b.textContent = s.snooze ? "End snooze" : "Snooze";
    b.title = s.snooze ? "end the snooze now: the camera's alerts alarm again" : "silence this camera's alarms for a while " +
      "(maintenance): its events are still detected, stored and listed, marked snoozed";
    b.addEventListener("click", () => openSnooze(s.source_id, !!s.snooze));
    tr.lastChild.append(b);
  }
}
const snoozeForm = { id: null, ending: false };
function openSnooze(id, ending) {
  Object.assign(snoozeForm, { id, ending });
  $("sz-title").textContent = ending ? `End the snooze of ${id}` : `Snooze the alerts of ${id} for`;
  $("sz-len-bar").hidden = ending;
  $("sz-note").value = ""; $("sz-msg").textContent = ""; $("sz-msg").className = "";
  $("sz-note").placeholder = ending ? "why it ends early (optional)" : "why (required): crane maintenance, lens cleaning…";
  $("sz-go").textContent = ending ? "End snooze" : "Snooze";
  panelOpened("snooze-box", id);
  $("snooze-box").hidden = false;
  $("sz-note").focus();
}
function closeSnooze() { $("snooze-box").hidden = true; snoozeForm.id = null; }
$("sz-len").addEventListener("change", () => { $("sz-min").hidden = $("sz-len").value !== "custom"; });
$("sz-cancel").addEventListener("click", () => closePanel("snooze-box"));
// the keyboard, as in the other forms: Enter in the note or the minutes sends it, Esc anywhere in it cancels
$("snooze-box").addEventListener("keydown", (e) => {
  if (e.key === "Escape") { e.preventDefault(); closePanel("snooze-box"); }
  else if (e.key === "Enter" && e.target instanceof HTMLInputElement) { e.preventDefault(); $("sz-go").click(); }
});
$("sz-go").addEventListener("click", async () => {
  const { id, ending } = snoozeForm, msg = $("sz-msg"), note = $("sz-note").value.trim();
  if (!id) return;
  const minutes = Number($("sz-len").value === "custom" ? $("sz-min").value : $("sz-len").value);
  const refuse = (text, el) => { msg.className = "error"; msg.textContent = text; el.focus(); };
  if (!ending && !(minutes > 0)) return refuse("how many minutes?", $("sz-min"));
  if (!ending && !note) return refuse("a note saying why is required", $("sz-note"));
  msg.className = ""; msg.textContent = ending ? "ending…" : "snoozing…";
  try {
    await json(`api/sources/${encodeURIComponent(id)}/snooze`, { method: ending ? "DELETE" : "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(ending ? { note } : { minutes, note }) });
  } catch (e) { return refuse(`${ending ? "not ended" : "not snoozed"}: ${e.message}`, $("sz-note")); }
  closeSnooze();
  try { await refreshSources(await json("api/sources")); } catch (e) { /* the live feed refreshes it again */ }
});

// ---- one vessel, one alert (vision/identity/README.md): a boat seen by two cameras (or a camera and a drone) raises
// an unidentified_vessel / ais_dark on each; the identity stage links the later one to the first (attributes
// same_vessel_as: the first's event id, source, type, start, distance; vessel_link: the first's id, so searching for it
// finds both) and gives the first an update listing it in also_seen_by. A linked alert sounds no alarm and shows no
// desktop notification (the operator was alarmed for this boat already); the list marks it, the detail links to the first.
const linkOf = (ev) => {
  const l = ev && ev.attributes && ev.attributes.same_vessel_as;
  return l && typeof l === "object" && typeof l.event_id === "string" ? l : null;
};
const seenByOf = (ev) => {
  const s = ev && ev.attributes && ev.attributes.also_seen_by;
  return Array.isArray(s) ? s.filter((x) => x && typeof x === "object" && typeof x.event_id === "string") : [];
};
const metres = (m) => (Number.isFinite(Number(m)) ? `${Math.round(Number(m))} m` : "? m");
function eventAnchor(id, text) {  // a link to another event: opens it here (the address keeps its other parameters)
  const a = document.createElement("a"), h = new URLSearchParams(location.hash.slice(1));
  h.set("event", id);
  a.href = "#" + h.toString(); a.className = "vessel-link"; a.dataset.id = id; a.textContent = text;
  a.addEventListener("click", (e) => { e.preventDefault(); select(id, { reveal: true }); });
  return a;
}
function vesselLinkTag(ev) {  // the event list's mark
  const l = linkOf(ev), seen = seenByOf(ev);
  if (!l && !seen.length) return null;
  const sp = document.createElement("span");
  sp.className = "linked-tag";
  sp.style.cssText = "margin-left:4px;padding:0 4px;font-size:10px;border:1px solid #9ab;border-radius:3px";
  if (l) {
    sp.textContent = `same vessel as ${displayText(String(l.source_id || "?"), 60)}`;
    sp.title = `the same vessel as the ${displayText(String(l.type || "alert"), 40)} seen by ` +
      `${displayText(String(l.source_id || "?"), 60)}, ${metres(l.distance_m)} apart (no alarm was sounded for this one)`;
  } else {
    const by = [...new Set(seen.map((x) => displayText(String(x.source_id || "?"), 60)))].join(", ");
    sp.textContent = `also seen by ${by}`;
    sp.title = `the same vessel raised an alert on ${by} too (linked there; it sounded no second alarm)`;
  }
  return sp;
}
function vesselLinkLines(ev) {  // the detail's lines: "same vessel as <first> seen by quay, 85 m apart"
  const out = [], l = linkOf(ev);
  if (l) {
    const first = `${String(l.type || "alert").replaceAll("_", " ")}${Number.isFinite(l.start_ns) ? " of " + fmt(l.start_ns) : ""}`;
    const line = document.createElement("div");
    line.className = "vessel-same";
    line.append("same vessel as ", eventAnchor(l.event_id, first), ` seen by ${displayText(String(l.source_id || "?"), 60)}, ` +
      `${metres(l.distance_m)} apart (combined uncertainty ±${metres(l.sigma_m)}); no alarm sounded for this one`);
    out.push(line);
    for (const o of Array.isArray(l.others) ? l.others : []) {
      if (!o || typeof o.event_id !== "string") continue;
      const alt = document.createElement("div");
      alt.className = "vessel-other";
      alt.append("or perhaps ", eventAnchor(o.event_id, "the alert"), ` seen by ${displayText(String(o.source_id || "?"), 60)}, ` +
        `${metres(o.distance_m)} apart (less likely)`);
      out.push(alt);
    }
  }
  for (const x of seenByOf(ev)) {
    const line = document.createElement("div");
    line.className = "vessel-seen";
    line.append("also seen by ", displayText(String(x.source_id || "?"), 60), ": ", eventAnchor(x.event_id, "its alert"),
      `, ${metres(x.distance_m)} apart`);
    out.push(line);
  }
  return out;
}

// The alarm: a new high or critical incident (its start phase on the live feed) sounds a tone, two for critical,
// unless "alarm sound" is off (kept in this browser), and marks the tab's title until the page is looked at again.
// So does an open incident whose update raises it to high or critical (a fire that spreads: the rules raise an
// incident's severity as it grows, never lower it), once per level, when this page had seen it lower.
// Browsers let a page make sound only after a click or key press on it; the audio is set up at the first one.
const ALARM_SEVERITIES = { high: 1, critical: 2 };
const SEV_RANK = { low: 0, medium: 1, high: 2, critical: 3 };
const alarm = { ctx: null, unseen: 0, rank: new Map() };  // rank: each open incident's highest severity seen here
function noteSeverity(events) {  // the list's and the live feed's severities: what a later update is compared with
  for (const e of events) if (e.id && e.severity in SEV_RANK) alarm.rank.set(e.id, Math.max(alarm.rank.get(e.id) ?? -1, SEV_RANK[e.severity]));
}
window.__alarms = [];  // what the alarm went off for (the browser tests read it; the console too)
$("alarm-on").checked = localStorage.getItem("seawatch-alarm") !== "off";
$("alarm-on").addEventListener("change", () => localStorage.setItem("seawatch-alarm", $("alarm-on").checked ? "on" : "off"));
for (const type of ["pointerdown", "keydown"]) {
  document.addEventListener(type, () => {
    if (!alarm.ctx && window.AudioContext) alarm.ctx = new AudioContext();
    if (alarm.ctx && alarm.ctx.state === "suspended") alarm.ctx.resume();
  }, { capture: true });
}
document.addEventListener("visibilitychange", () => { if (!document.hidden) markUnseen(0); });
window.addEventListener("focus", () => markUnseen(0));
function markUnseen(n) {
  alarm.unseen = n;
  document.title = n ? `(${n}) Seawatch` : "Seawatch";
}
// Desktop notifications: the same incidents, while the tab is not looked at (the control room's screen shows another
// tool, the UI sits in a background tab). Off until asked for; the browser asks its user once (and allows it on https
// or localhost only). A click on one brings the tab forward with the incident open; critical ones stay until then.
const notifyOk = () => "Notification" in window && Notification.permission === "granted";
function showNotifyState() {
  const cb = $("notify-on"), bar = $("notify-bar");
  cb.checked = localStorage.getItem("seawatch-notify") === "on" && notifyOk();
  if (!("Notification" in window)) { cb.disabled = true; bar.title = "this browser shows no notifications from this page (it needs https or localhost)"; }
  else if (Notification.permission === "denied") { cb.disabled = true; bar.title = "notifications are blocked for this site in the browser's settings"; }
}
showNotifyState();
$("notify-on").addEventListener("change", async () => {
  const want = $("notify-on").checked;
  if (want && "Notification" in window && Notification.permission === "default") {
    try { await Notification.requestPermission(); } catch (e) { /* an old browser: the permission stays as it was */ }
  }
  localStorage.setItem("seawatch-notify", want && notifyOk() ? "on" : "off");
  showNotifyState();
});
function notifyIncident(ev) {
  if (!$("notify-on").checked || !notifyOk() || (!document.hidden && document.hasFocus())) return;
  const where = [ev.source_id, ev.zone_id && "zone " + ev.zone_id].filter(Boolean).join(" · ");
  const who = (ev.attributes && (ev.attributes.vessel_name || ev.attributes.ais_name || ev.attributes.hull_text)) || "";
  try {
    const n = new Notification(`Seawatch: ${ev.severity.toUpperCase()} ${ev.type.replaceAll("_", " ")}`, {
      body: displayText(`${where}${who ? " · " + who : ""} · ${fmt(ev.start_ns)}`, 200), tag: ev.id,
      requireInteraction: ev.severity === "critical" });
    n.onclick = () => { window.focus(); select(ev.id); n.close(); };
  } catch (e) { console.warn("notification:", e.message); }
}

function soundAlarm(ev) {
  const tones = ALARM_SEVERITIES[ev.severity], before = alarm.rank.get(ev.id);
  if (ev.phase === "end") alarm.rank.delete(ev.id); else noteSeverity([ev]);
  // an update that raised the incident since this page saw it (not one seen first now: opened before this page)
  const raised = ev.phase === "update" && before !== undefined && SEV_RANK[ev.severity] > before;
  if (!tones || !(ev.phase === "start" || raised)) return;
  // raised after someone dismissed it (the list's status): they looked and called it nothing
  if (raised && state.events.some((e) => e.id === ev.id && e.review_status === "dismissed")) return;
  if (snoozedOf(ev)) return;  // its camera's alerts are snoozed (maintenance): stored and listed, marked; no alarm
  if (linkOf(ev)) return;  // the same vessel as an alert another camera raised: alarmed for already; listed, marked
  const sound = $("alarm-on").checked;
  window.__alarms.push({ id: ev.id, severity: ev.severity, sound });
  if (document.hidden || !document.hasFocus()) markUnseen(alarm.unseen + 1);
  notifyIncident(ev);
  if (!sound || !alarm.ctx || alarm.ctx.state !== "running") return;
  const t0 = alarm.ctx.currentTime;
  for (let i = 0; i < tones; i++) {  // 880 Hz for 0.25 s, again after a 0.1 s pause for critical
    const osc = alarm.ctx.createOscillator(), gain = alarm.ctx.createGain();
    osc.frequency.value = 880; gain.gain.value = 0.2;
    osc.connect(gain).connect(alarm.ctx.destination);
    osc.start(t0 + i * 0.35); osc.stop(t0 + i * 0.35 + 0.25);
  }
}

function connectLive() {
  clearTimeout(reconnectTimer); reconnectTimer = null;
  if (state.ws) { state.ws.onclose = null; state.ws.close(); }
  const url = new URL("api/live", ROOT);  // under the page's own prefix too
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url.href);
  state.ws = ws;
  const el = $("live");
  ws.onopen = () => {
    const a = state.auth;
    ws.send(JSON.stringify(a["X-API-Key"] ? { api_key: a["X-API-Key"] } : { token: a.Authorization.slice(7) }));
  };
  let pending = null, touched = false;
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.kind === "hello") {
      el.textContent = "live: on"; el.className = "on";
      if (!$("health-banner").hidden) checkHealth();  // back after an outage: the banner need not wait for the next poll
      if (feedLostMs !== null) catchUp(feedLostMs);  // back after a drop: what came meanwhile
    }
    if (msg.kind === "sources") refreshSources(msg.sources);
    if (msg.kind === "hold" && msg.event) {  // held: false once its last active hold was lifted (null: an old server, held)
      const held = msg.event.held !== false, had = state.held.has(msg.event.id);
      if (held) state.held.add(msg.event.id); else state.held.delete(msg.event.id);
      if (had !== held) renderList();
    }
    if (msg.kind === "event" && msg.event) soundAlarm(msg.event);
    if (msg.kind === "event" || msg.kind === "review" || msg.kind === "hold") {
      // a message about the open event (a review from elsewhere, its end, its clip): its detail is reloaded too
      if (state.selected && (!msg.event || msg.event.id === state.selected)) touched = true;
      clearTimeout(pending);
      pending = setTimeout(async () => {
        const again = touched; touched = false;
        await search({ keep: true });
        if (again && state.selected && !$("detail").hidden) await select(state.selected, { refresh: true });
      }, 300);
    }
  };
  ws.onclose = (ev) => {
    el.textContent = "live: off"; el.className = "off";
    if (ev.code === 4401 && state.ws === ws) {  // the session expired or was revoked: log in again, no retry loop
      sessionStorage.removeItem("seawatch-token"); state.ws = null; feedLostMs = null; return showLogin();
    }
    if (state.ws === ws) {
      if (feedLostMs === null) feedLostMs = Date.now();
      clearTimeout(reconnectTimer); reconnectTimer = setTimeout(connectLive, 3000);
    }
  };
}

// Back after the live feed dropped (a network blip, the service restarting): nothing that was sent meanwhile comes
// again, so the list is searched at once (it waited for the next message before) and the high or critical incidents
// that came meanwhile sound the alarm they missed: listed now, not before the drop, started at most CATCH_UP_MS
// before it (a start can be dated back by a rule's dwell), not dismissed; the alarm's own checks (snoozed, linked)
// apply. Incidents the list's filters leave out are not searched for.
let feedLostMs = null;  // when the live feed dropped (ms), until it is back
const CATCH_UP_MS = 10 * 60e3;
async function catchUp(sinceMs) {
  feedLostMs = null;
  const known = new Set(state.events.map((e) => e.id));
  await search({ keep: true });
  for (const ev of state.events) {
    if (known.has(ev.id) || ev.start_ns / 1e6 < sinceMs - CATCH_UP_MS || ev.review_status === "dismissed") continue;
    soundAlarm({ ...ev, phase: "start" });
  }
}

// ---- the display zone: UTC (the default) or the browser's own, chosen in the header ("times"), kept in the browser
// and shared with /wall and /calibrate (timefmt.js). A change redraws every time shown; the times typed in the
// filters and the recordings' "from" keep their instants (read in the zone they were typed in, written in the new one).
let shownMode = timeMode();
function timeLabels() {
  const local = shownMode !== "utc";
  // each typed time's label names the zone it is read in: at the instant typed (CET or CEST), else now
  for (const el of document.querySelectorAll("span.tz[data-for]")) {
    const input = $(el.dataset.for);
    const pick = input.id === "f-to" ? "second" : input.id === "rec-from" && !$("rec-fold").hidden ? $("rec-fold").value : "first";
    const r = readInput(input.value, { pick });
    el.textContent = r && !r.error ? r.label : zoneLabel();
    input.title = local ? `typed in local time (${localZone()}, daylight saving time followed), like every time shown`
      : "typed in UTC, like every time shown";
  }
  $("th-start").textContent = `start (${local ? "local" : "UTC"})`;
  $("tz-mode").value = shownMode;
  $("tz-mode").options[1].textContent = modeText("local");
}
function applyTimeMode(m) {
  const old = shownMode;
  if (m === old) return;
  for (const [id, pick] of [["f-from", "first"], ["f-to", "second"]]) {
    const r = readInput($(id).value, { pick, mode: old });
    if (r && !r.error) $(id).value = inputValue(r.ns, m).value;
  }
  const rf = readInput($("rec-from").value, { pick: $("rec-fold").hidden ? "first" : $("rec-fold").value, mode: old });
  shownMode = m;
  if (rf && !rf.error) setRecFrom(rf.ns);
  timeLabels();
  renderList();
  if (state.selected && state.detail && !$("detail").hidden) select(state.selected, { refresh: true });
  if (rec.id) {
    recTitles(rec);
    if (rec.bar) { drawRecBar(rec.bar.info.error ? [] : rec.bar.info.spans, rec.bar.events); $("rec-cover").textContent = recCoverText(rec.bar.w, rec.bar.info); }
    recNote(); placeMarker();
  }
  if (state.health) showHealth(state.health);
}
$("tz-mode").addEventListener("change", () => setTimeMode($("tz-mode").value));
$("tz-mode").addEventListener("focus", () => { $("tz-mode").options[1].textContent = modeText("local"); });  // the offset now
onTimeModeChange(applyTimeMode);
for (const id of ["f-from", "f-to"]) $(id).addEventListener("input", () => timeLabels());
$("rec-from").addEventListener("input", () => showRecFold());
$("rec-fold").addEventListener("change", () => timeLabels());
timeLabels();

start().catch((e) => console.error(e));
