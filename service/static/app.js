// Seawatch operator UI: event list with filters, a map (coordinate grid; tiles when configured), detail with
// snapshot and clip, acknowledge / dismiss / confirm, live updates over /api/live. No external resources.
"use strict";
const SEV_COLOUR = { low: "#2c7bb6", medium: "#b8860b", high: "#e66101", critical: "#d7191c" };
const state = { auth: null, events: [], selected: null };

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

function showLogin() { document.getElementById("login").hidden = false; document.getElementById("main").hidden = true; }

async function start() {
  state.auth = readAuth();
  if (!state.auth) return showLogin();
  const me = await (await api("/api/auth/me")).json();
  document.getElementById("who").textContent = `${me.name} (${me.role})`;
  document.getElementById("login").hidden = true;
  document.getElementById("main").hidden = false;
  await search();
  connectLive();
}

document.getElementById("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const r = await fetch("/api/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: f.get("username"), password: f.get("password") }) });
  const b = await r.json();
  if (!r.ok) { document.getElementById("login-error").textContent = b.error.message; return; }
  sessionStorage.setItem("seawatch-token", b.access_token);
  start();
});

document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); search(); });

async function search() {
  const p = new URLSearchParams();
  for (const [k, v] of new FormData(document.getElementById("filters"))) if (v) p.append(k, v);
  p.set("limit", "200");
  state.events = (await (await api("/api/events?" + p)).json()).events;
  renderList(); drawMap();
}

function fmt(ns) { return new Date(ns / 1e6).toISOString().replace("T", " ").slice(0, 19); }

function renderList() {
  const tb = document.querySelector("#events tbody");
  tb.innerHTML = "";
  for (const ev of state.events) {
    const tr = document.createElement("tr");
    tr.dataset.id = ev.id;
    if (state.selected === ev.id) tr.className = "sel";
    for (const [text, cls] of [[fmt(ev.start_ns), ""], [ev.type, ""], [ev.severity, "sev-" + ev.severity], [ev.source_id, ""], [ev.review_status, ""]]) {
      const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td);
    }
    tr.addEventListener("click", () => select(ev.id));
    tb.appendChild(tr);
  }
}

function mapBounds(located) {
  if (!located.length) return { minLat: 50, maxLat: 58, minLon: 0, maxLon: 10 };  // North Sea when nothing is located
  let b = { minLat: 90, maxLat: -90, minLon: 180, maxLon: -180 };
  for (const ev of located) {
    b.minLat = Math.min(b.minLat, ev.geo.lat_deg); b.maxLat = Math.max(b.maxLat, ev.geo.lat_deg);
    b.minLon = Math.min(b.minLon, ev.geo.lon_deg); b.maxLon = Math.max(b.maxLon, ev.geo.lon_deg);
  }
  const padLat = Math.max(0.01, (b.maxLat - b.minLat) * 0.15), padLon = Math.max(0.01, (b.maxLon - b.minLon) * 0.15);
  return { minLat: b.minLat - padLat, maxLat: b.maxLat + padLat, minLon: b.minLon - padLon, maxLon: b.maxLon + padLon };
}

function niceStep(span) { const p = Math.pow(10, Math.floor(Math.log10(span / 4))); return [1, 2, 5, 10].map((m) => m * p).find((s) => span / s <= 6); }

function drawMap() {
  const c = document.getElementById("map"), g = c.getContext("2d");
  const located = state.events.filter((e) => e.geo);
  const b = mapBounds(located);
  // equirectangular with the longitude scaled by cos(latitude): fine for a port or a wind farm
  const kLon = Math.cos(((b.minLat + b.maxLat) / 2) * Math.PI / 180);
  const sx = c.width / ((b.maxLon - b.minLon) * kLon), sy = c.height / (b.maxLat - b.minLat), s = Math.min(sx, sy);
  const x = (lon) => (lon - b.minLon) * kLon * s, y = (lat) => c.height - (lat - b.minLat) * s;
  g.fillStyle = "#dfe9f2"; g.fillRect(0, 0, c.width, c.height);
  g.strokeStyle = "#9fb3c4"; g.fillStyle = "#4a6275"; g.font = "10px sans-serif"; g.lineWidth = 1;
  const stepLat = niceStep(b.maxLat - b.minLat), stepLon = niceStep(b.maxLon - b.minLon);
  for (let lat = Math.ceil(b.minLat / stepLat) * stepLat; lat <= b.maxLat; lat += stepLat) {
    g.beginPath(); g.moveTo(0, y(lat)); g.lineTo(c.width, y(lat)); g.stroke(); g.fillText(lat.toFixed(3) + "°", 2, y(lat) - 2);
  }
  for (let lon = Math.ceil(b.minLon / stepLon) * stepLon; lon <= b.maxLon; lon += stepLon) {
    g.beginPath(); g.moveTo(x(lon), 0); g.lineTo(x(lon), c.height); g.stroke(); g.fillText(lon.toFixed(3) + "°", x(lon) + 2, c.height - 2);
  }
  const mPerDeg = 111320;
  for (const ev of located) {
    const px = x(ev.geo.lon_deg), py = y(ev.geo.lat_deg);
    const r = Math.max(6, (ev.geo.semi_major_m / mPerDeg) * s);  // 1-sigma uncertainty, at least a visible dot
    g.globalAlpha = 0.25; g.fillStyle = SEV_COLOUR[ev.severity]; g.beginPath(); g.arc(px, py, r, 0, 2 * Math.PI); g.fill();
    g.globalAlpha = 1; g.beginPath(); g.arc(px, py, 5, 0, 2 * Math.PI); g.fill();
    if (ev.id === state.selected) { g.strokeStyle = "#000"; g.lineWidth = 2; g.stroke(); g.lineWidth = 1; }
  }
}

async function blobUrl(path) { return URL.createObjectURL(await (await api(path)).blob()); }

async function select(id) {
  state.selected = id; renderList(); drawMap();
  const ev = await (await api("/api/events/" + encodeURIComponent(id))).json();
  document.getElementById("detail").hidden = false;
  document.getElementById("d-title").textContent = `${ev.type} (${ev.severity}) on ${ev.source_id}`;
  document.getElementById("d-meta").textContent = `started ${fmt(ev.start_ns)} UTC, ${ev.phase}, ${ev.review_status}` +
    (ev.geo ? `, at ${ev.geo.lat_deg.toFixed(5)}, ${ev.geo.lon_deg.toFixed(5)} ± ${ev.geo.semi_major_m.toFixed(0)} m` : `, ${ev.geo_reason}`);
  const img = document.getElementById("d-snapshot"), vid = document.getElementById("d-clip");
  img.hidden = !ev.snapshot_url; vid.hidden = !ev.clip_url;
  if (ev.snapshot_url) img.src = await blobUrl(ev.snapshot_url).catch(() => "");
  if (ev.clip_url) vid.src = await blobUrl(ev.clip_url).catch(() => { vid.hidden = true; return ""; });
}

for (const btn of document.querySelectorAll("#detail button[data-act]")) {
  btn.addEventListener("click", async () => {
    const note = document.getElementById("d-note").value;
    try {
      await api(`/api/events/${encodeURIComponent(state.selected)}/${btn.dataset.act}`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ note }) });
      document.getElementById("d-error").textContent = "";
      await search(); await select(state.selected);
    } catch (e) { document.getElementById("d-error").textContent = e.message; }
  });
}

function connectLive() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/live");
  const el = document.getElementById("live");
  ws.onopen = () => {
    const a = state.auth;
    ws.send(JSON.stringify(a["X-API-Key"] ? { api_key: a["X-API-Key"] } : { token: a.Authorization.slice(7) }));
  };
  let pending = null;
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.kind === "hello") { el.textContent = "live: on"; el.className = "on"; }
    if (msg.kind === "event" || msg.kind === "review") { clearTimeout(pending); pending = setTimeout(search, 300); }
  };
  ws.onclose = () => { el.textContent = "live: off"; el.className = "off"; setTimeout(connectLive, 3000); };
}

start().catch((e) => console.error(e));
