// Seawatch camera wall ("/wall"): every camera of GET /api/sources (fixed and drone cameras) in a grid that fills the
// screen, each tile its newest analysed picture (GET /api/sources/{id}/latest.jpg, with the tracked boxes, at a width
// that suits the tile), refreshed about once a second with at most one request in flight per tile, nothing fetched
// while the tab is hidden. A tile says the camera's state (an offline camera's picture is greyed out under
// "OFFLINE" and how long, never passed off as live) and the age of its picture, and is framed red with the incident
// type while the camera has an open high or critical incident (GET /api/events?open=true&min_severity=high, asked
// again on every event or review of the live feed /api/live). A click opens the operator UI on that incident, else
// on the camera's live view.
// Same log-in as "/": the session's token (sessionStorage), or #key= / #token= for a kiosk; reads only, so a
// viewer is enough. Plain ES module, no build step; every URL is relative to where the page was loaded.
"use strict";
import { displayText } from "./map.js";
import { FRAMED, ROOT, apiClient, bindLoginForm, here, signIn, untrusted } from "./session.js";
// the times in the zone chosen on the operator page ("times" in its header: UTC, or this browser's own zone)
import { formatTime, localZone, onTimeModeChange, otherZoneTitle, timeMode } from "./timefmt.js";

const REFRESH_MS = 1000;  // a tile's picture is asked this long after the previous one was asked (or on its answer when slower)
const FETCH_TIMEOUT_MS = 10000;  // a picture request that hangs longer is given up (the tile asks again)
const STALE_MS = 10000;  // an online camera whose picture has not changed for this long is marked "no new picture"
const POLL_MS = 5000;  // sources and incidents are asked this often while the live feed is not connected
const INCIDENT_POLL_MS = 30000;  // incidents are asked again this often even with the live feed (belt and braces)
const TILE_ASPECT = 16 / 9;  // the pictures the grid is laid out for (the captions lie over them)

const $ = (id) => document.getElementById(id);
const state = { auth: null, who: null, sources: [], incidents: new Map(), ws: null, tiles: new Map() };
let pollTimer = null, incidentTimer = null, reconnectTimer = null, eventsTimer = null;

const { json } = apiClient(() => state.auth, () => showLogin());

// ---- durations and times ----------------------------------------------------------------------------------------
function span(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}
const sinceNs = (ns) => span(Date.now() - ns / 1e6);
const hms = (ns) => formatTime(ns, { date: false });  // "14:13:24 UTC", "16:13:24 CEST"

// ---- session ------------------------------------------------------------------------------------------------------
function showLogin() {
  $("login").hidden = false; $("wall").hidden = true; $("empty").hidden = true;
  stopAll();
}

function stopAll() {
  clearInterval(pollTimer); pollTimer = null;
  clearInterval(incidentTimer); incidentTimer = null;
  clearTimeout(reconnectTimer); reconnectTimer = null;
  clearTimeout(eventsTimer); eventsTimer = null;
  if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
  setLive(false);
  for (const t of state.tiles.values()) dropTile(t);
  state.tiles.clear();
  $("wall").replaceChildren();
}

let running = null;
function start() {
  if (!running) running = doStart().finally(() => { running = null; });
  return running;
}

async function doStart() {
  if (!await signIn(state, json, showLogin)) return;
  $("login").hidden = true; $("wall").hidden = false;
  await Promise.all([refreshSources(), refreshIncidents()]);
  clearInterval(pollTimer);
  pollTimer = setInterval(() => {  // the live feed sends the sources every 2 s; without it they are asked
    if (!liveOn()) { refreshSources().catch(() => {}); refreshIncidents().catch(() => {}); }
  }, POLL_MS);
  clearInterval(incidentTimer);
  incidentTimer = setInterval(() => refreshIncidents().catch(() => {}), INCIDENT_POLL_MS);
  connectLive();
}

// the log-in keeps this tab's session: "/" in the same tab is then logged in too
if (!FRAMED) bindLoginForm($("login-form"), $("login-error"), () => start().catch((err) => console.error(err)));

// ---- the grid -----------------------------------------------------------------------------------------------------
// The columns that make the pictures largest: n tiles of TILE_ASPECT in the wall's width x height.
function bestColumns(n, width, height) {
  let best = 1, bestArea = -1;
  for (let cols = 1; cols <= Math.max(1, n); cols++) {
    const rows = Math.ceil(n / cols);
    const w = width / cols, h = height / rows;
    const picW = Math.min(w, h * TILE_ASPECT);
    if (picW * picW / TILE_ASPECT > bestArea + 1e-6) { bestArea = picW * picW / TILE_ASPECT; best = cols; }
  }
  return best;
}

function layout() {
  const wall = $("wall"), n = state.tiles.size;
  if (!n) return;
  const cols = bestColumns(n, wall.clientWidth || window.innerWidth, wall.clientHeight || window.innerHeight);
  wall.style.setProperty("--cols", String(cols));  // CSSOM, not a style attribute: allowed by style-src 'self'
  wall.style.setProperty("--rows", String(Math.ceil(n / cols)));
}
window.addEventListener("resize", () => layout());

function el(tag, cls, ...children) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  e.append(...children);
  return e;
}

function makeTile(s) {
  const a = el("a", "tile");
  a.dataset.id = s.source_id;
  const img = el("img", "pic");
  img.alt = "";
  const veil = el("div", "veil");
  const name = el("span", "name", untrusted(s.source_id, 60));
  const kind = el("span", "kind");
  const st = el("span", "state");
  const alert = el("span", "alert");
  const age = el("span", "age");
  a.append(img, veil, el("div", "cap top", name, kind, st), el("div", "cap bottom", alert, age));
  const t = { id: s.source_id, a, img, veil, kind, st, alert, age, src: s, url: "", timer: null, busy: false,
    ctrl: null, captureNs: null, changedAt: 0, lastAsk: 0, missing: false, error: "" };
  return t;
}

function dropTile(t) {
  clearTimeout(t.timer); t.timer = null;
  if (t.ctrl) t.ctrl.abort();
  if (t.url) URL.revokeObjectURL(t.url);
  t.url = "";
}

async function refreshSources() {
  applySources(await json("api/sources"));
}

// The cameras (kind "camera", a drone's camera among them) as tiles, in the order the service lists them.
function applySources(list) {
  const cams = list.filter((s) => s.kind === "camera");
  state.sources = cams;
  const wall = $("wall");
  const want = new Set(cams.map((s) => s.source_id));
  let changed = false;
  for (const [id, t] of state.tiles) if (!want.has(id)) { dropTile(t); t.a.remove(); state.tiles.delete(id); changed = true; }
  cams.forEach((s, i) => {
    let t = state.tiles.get(s.source_id);
    if (!t) { t = makeTile(s); state.tiles.set(s.source_id, t); changed = true; }
    t.src = s;
    if (wall.children[i] !== t.a) wall.insertBefore(t.a, wall.children[i] || null);
  });
  $("empty").hidden = cams.length > 0 || $("login").hidden === false;
  if (changed) layout();
  for (const t of state.tiles.values()) {
    render(t);
    if (!t.timer && !t.busy && (isOnline(t.src) || t.lastAsk === 0)) schedule(t, 0);
  }
  renderSummary();
}

const isOnline = (s) => s.state === "online";

// A tile's captions and marks from what is known now: the camera's state, its picture's age, its open incident.
function render(t) {
  const s = t.src, now = Date.now();
  const online = isOnline(s);
  t.kind.textContent = s.drone_id ? `drone ${displayText(s.drone_id, 30)}` : "";
  let veil = "";
  if (s.state === "offline") {
    const down = s.down_since_ns || s.since_ns;
    t.st.textContent = down ? `offline for ${sinceNs(down)}` : "offline";
    veil = "OFFLINE" + (down ? `\nfor ${sinceNs(down)}` : "") + (s.attempts ? `, ${s.attempts} attempt(s)` : "");
  } else if (online) {
    t.st.textContent = "online";
  } else {
    t.st.textContent = s.state === "connecting" ? "connecting…" : s.state === "not_running" ? "not running" : displayText(s.state, 20);
    veil = s.state === "connecting" ? "CONNECTING…" : "NO VIDEO\n" + t.st.textContent;
  }
  const stale = online && t.captureNs !== null && now - t.changedAt > STALE_MS;
  if (!veil && online && t.captureNs === null) veil = t.error ? `NO PICTURE\n${t.error}` : t.missing ? "NO PICTURE YET" : "";
  if (t.captureNs !== null) {
    t.age.textContent = (online ? "" : "last picture ") + `${hms(t.captureNs)}, ${sinceNs(t.captureNs)} ago` +
      (stale ? " (no new picture)" : "");
  } else t.age.textContent = "";
  t.veil.textContent = veil;
  t.veil.hidden = !veil;
  t.a.classList.toggle("offline", !online);
  t.a.classList.toggle("stale", stale);
  t.a.dataset.state = s.state;
  // an operator snoozed its alerts (maintenance): its incidents meanwhile leave the tile calm, and it says so
  if (s.snooze) t.st.textContent += ` · alerts snoozed until ${hms(s.snooze.until_ns)}`;
  // the camera's open high / critical incident (its own, or its drone's), the newest of them
  const inc = state.incidents.get(t.id) || (s.drone_id ? state.incidents.get(s.drone_id) : null) || [];
  const top = inc[0];
  t.a.classList.toggle("incident", !!top);
  t.a.classList.toggle("critical", !!top && inc.some((e) => e.severity === "critical"));
  if (top) {
    t.alert.textContent = `${displayText(top.type, 40)} · ${top.severity}` +
      (top.review_status === "acknowledged" ? " · acknowledged" : "") + (inc.length > 1 ? ` (+${inc.length - 1})` : "");
    t.alert.title = `since ${hms(top.start_ns)} (${sinceNs(top.start_ns)})`;
  } else { t.alert.textContent = ""; t.alert.removeAttribute("title"); }
  t.alert.hidden = !top;
  t.a.href = link(top ? { event: top.id } : { live: t.id });
  t.a.title = top ? "open the incident in the operator UI" : "open the camera's live view in the operator UI";
}

// The operator UI ("./", relative: under the proxy's prefix too) with #event=ID or #live=CAMERA, and a kiosk's own
// credential in the hash (never sent to the server) so that the page it opens is logged in too.
function link(params) {
  const h = new URLSearchParams();
  const mine = new URLSearchParams(location.hash.slice(1));
  for (const k of ["key", "token"]) if (mine.get(k)) h.set(k, mine.get(k));
  for (const [k, v] of Object.entries(params)) h.set(k, v);
  return new URL("./#" + h.toString(), ROOT).href;
}

function renderSummary() {
  const cams = state.sources;
  const off = cams.filter((s) => s.state === "offline").length;
  let alerts = 0;
  for (const t of state.tiles.values()) if (t.a.classList.contains("incident")) alerts++;
  $("summary").textContent = `${cams.length} camera(s)` + (off ? `, ${off} offline` : "") +
    (alerts ? `, ${alerts} with an open high/critical incident` : "");
  $("summary").className = alerts ? "alarm" : off ? "warn" : "";
}

// ---- pictures -----------------------------------------------------------------------------------------------------
// One chain per tile: the next request is scheduled when the previous one has ended, never beside it; none while the
// tab is hidden (visibilitychange starts them again), and none while the camera is not online (its newest picture
// stays what it was: a new tile asks once, for the last picture to show greyed out; the chain starts again when the
// camera's state says online).
function schedule(t, delayMs) {
  clearTimeout(t.timer);
  t.timer = null;
  if (document.hidden || !state.tiles.has(t.id) || state.tiles.get(t.id) !== t) return;
  t.timer = setTimeout(() => { t.timer = null; fetchPicture(t); }, Math.max(0, delayMs));
}

function widthFor(t) {
  // the tile's width in device pixels, in steps of 160 (fewer distinct sizes for the service to encode)
  const px = (t.a.clientWidth || 320) * (window.devicePixelRatio || 1);
  return Math.min(1920, Math.max(160, Math.ceil(px / 160) * 160));
}

async function fetchPicture(t) {
  if (t.busy || document.hidden || !state.auth) return;
  t.busy = true;
  const asked = Date.now();
  t.lastAsk = asked;
  const ctrl = new AbortController();
  t.ctrl = ctrl;
  const timeout = setTimeout(() => ctrl.abort(), FETCH_TIMEOUT_MS);
  try {
    const r = await fetch(here(`api/sources/${encodeURIComponent(t.id)}/latest.jpg?width=${widthFor(t)}`),
      { headers: { ...state.auth }, signal: ctrl.signal, cache: "no-store" });
    if (r.status === 401) { showLogin(); return; }
    if (r.status === 404) { t.missing = true; t.error = ""; return; }
    if (!r.ok) { t.error = `${r.status} ${r.statusText}`; return; }
    const v = r.headers.get("X-Capture-Time-Ns");
    const captureNs = v && /^[0-9]+$/.test(v) ? Number(BigInt(v)) : null;
    const blob = await r.blob();
    if (state.tiles.get(t.id) !== t) return;  // the camera left the wall meanwhile
    t.missing = false; t.error = "";
    if (captureNs !== null && captureNs !== t.captureNs) {
      t.changedAt = Date.now();
      const url = URL.createObjectURL(blob);
      const old = t.url;
      t.url = url; t.img.src = url;
      if (old) URL.revokeObjectURL(old);
      t.captureNs = captureNs;
    }
  } catch (e) {
    if (state.tiles.get(t.id) === t) t.error = e.name === "AbortError" ? "no answer" : "not reachable";
  } finally {
    clearTimeout(timeout);
    t.ctrl = null;
    t.busy = false;
    if (state.tiles.get(t.id) === t) {
      render(t);
      if (isOnline(t.src)) schedule(t, REFRESH_MS - (Date.now() - asked));
    }
  }
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    for (const t of state.tiles.values()) { clearTimeout(t.timer); t.timer = null; }
    return;
  }
  for (const t of state.tiles.values()) if (!t.busy && (isOnline(t.src) || t.lastAsk === 0)) schedule(t, 0);
  if (state.auth && !$("wall").hidden) { refreshSources().catch(() => {}); refreshIncidents().catch(() => {}); }
});

// ---- incidents ----------------------------------------------------------------------------------------------------
let incidentSeq = 0;
async function refreshIncidents() {
  const my = ++incidentSeq;
  const page = await json("api/events?open=true&min_severity=high&sort=-start_ns&limit=500");
  if (my !== incidentSeq) return;  // a newer answer is coming
  const by = new Map();
  for (const ev of page.events) {
    if (ev.review_status === "dismissed") continue;  // someone looked and called it nothing: no red frame
    if (ev.attributes && ev.attributes.snoozed) continue;  // raised while an operator snoozed the camera (maintenance)
    if (!by.has(ev.source_id)) by.set(ev.source_id, []);
    by.get(ev.source_id).push(ev);  // newest first (the search's order)
  }
  state.incidents = by;
  for (const t of state.tiles.values()) render(t);
  renderSummary();
}

// ---- the live feed (as app.js: the credential in a first message) ----------------------------------------------
const liveOn = () => !!state.ws && state.ws.readyState === WebSocket.OPEN && $("live").classList.contains("on");
function setLive(on) { $("live").textContent = on ? "live: on" : "live: off"; $("live").className = on ? "on" : "off"; }

function connectLive() {
  clearTimeout(reconnectTimer); reconnectTimer = null;
  if (state.ws) { state.ws.onclose = null; state.ws.close(); }
  const url = new URL("api/live", ROOT);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url.href);
  state.ws = ws;
  ws.onopen = () => {
    const a = state.auth;
    ws.send(JSON.stringify(a["X-API-Key"] ? { api_key: a["X-API-Key"] } : { token: a.Authorization.slice(7) }));
  };
  ws.onmessage = (m) => {
    let msg;
    try { msg = JSON.parse(m.data); } catch { return; }
    if (msg.kind === "hello") { setLive(true); refreshIncidents().catch(() => {}); }
    if (msg.kind === "sources" && Array.isArray(msg.sources)) applySources(msg.sources);
    if (msg.kind === "event" || msg.kind === "review") {  // a start, an end, a review: the open incidents again
      clearTimeout(eventsTimer);
      eventsTimer = setTimeout(() => refreshIncidents().catch(() => {}), 300);
    }
  };
  ws.onclose = (ev) => {
    setLive(false);
    if (state.ws !== ws) return;
    if (ev.code === 4401) {  // the session expired or was revoked: log in again, no retry loop
      if (state.auth && state.auth.Authorization) sessionStorage.removeItem("seawatch-token");
      state.ws = null;
      return showLogin();
    }
    reconnectTimer = setTimeout(connectLive, 3000);
  };
}

// The ages and durations move on between answers.
function tick() {
  const now = Date.now() * 1e6;
  $("clock").textContent = hms(now);  // with the zone: "14:13:24 UTC", "16:13:24 CEST"
  $("clock").title = (timeMode() === "utc" ? "UTC" : `local time, ${localZone()}`) +
    " (chosen under \"times\" on the operator page) " + otherZoneTitle(now, { date: false });
  for (const t of state.tiles.values()) render(t);
}
if (!FRAMED) { setInterval(tick, 1000); tick(); onTimeModeChange(() => tick()); }

window.seawatchWall = { state, bestColumns, refreshIncidents, refreshSources };  // for the browser tests and the console
start().catch((e) => console.error(e));
