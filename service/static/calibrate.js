// Seawatch camera calibration ("/calibrate"): a fixed camera's newest picture beside the map. The installer marks
// control points (a pixel in the picture and the same spot on the map, in either order) and, looking out to sea,
// pixels on the horizon; "Fit" sends them to POST /api/sources/{id}/calibration/fit (admins), which answers the pan,
// tilt, roll and field of view that put the points where they are seen, each point's residual and ground error
// (also with the point left out, and under the calibration the camera runs with now), and the calibration section
// to paste into the configuration. The fitted view cone is drawn on the map beside the configured one, and where the
// fitted pose puts each point in the picture. The marks are kept per camera in this browser (localStorage) until
// cleared, so a reload or a new picture loses nothing.
// An administrator can apply the fitted section to the running service (PUT /api/sources/{id}/calibration, with a
// note): the camera's events are placed with it from the next analysed picture, and after restarts, until it is
// reverted (DELETE, "Revert to the configured calibration"). The page shows which calibration is in force (GET): the
// configured one or an operator's (by whom, when, why), and the ones applied before.
// Same log-in as "/" (the session's token, or #key= / #token=). Plain ES module, no build step; every URL is relative
// to where the page was loaded.
"use strict";
import { MapView, displayText } from "./map.js";
import { FRAMED, apiClient, bindLoginForm, here, signIn, untrusted } from "./session.js";
import { formatTime } from "./timefmt.js";  // the display zone chosen on the operator page (UTC by default)

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const MAX_POINTS = 60;  // the API's limit
const MAX_HORIZON = 20;
const MARK = "#ff00ff", FITTED = "#00c8ff";
const state = { auth: null, who: null, sources: [], source: null, map: null, picUrl: "", size: null,
  points: [], horizon: [], pending: { px: null, ll: null }, result: null, fitting: false, inForce: null, busy: false };
const { api, json } = apiClient(() => state.auth, () => showLogin());

function showLogin() { $("login").hidden = false; $("main").hidden = true; }

// ---- what is kept in this browser, per camera --------------------------------------------------------------------
const storeKey = (id) => `seawatch-calibration-${id}`;
function save() {
  if (!state.source) return;
  localStorage.setItem(storeKey(state.source.source_id), JSON.stringify({
    points: state.points, horizon: state.horizon,
    camera: { lat: $("cam-lat").value, lon: $("cam-lon").value, alt: $("cam-alt").value, surface: $("surface-alt").value,
      hfov: $("hfov").value, fitHfov: $("fit-hfov").checked, fitPosition: $("fit-position").checked } }));
}
function restore(src) {
  let kept = null;
  try { kept = JSON.parse(localStorage.getItem(storeKey(src.source_id)) || "null"); } catch { kept = null; }
  const ok = (p) => p && [p.x_px, p.y_px, p.lat_deg, p.lon_deg].every(Number.isFinite);
  state.points = kept && Array.isArray(kept.points) ? kept.points.filter(ok).slice(0, MAX_POINTS) : [];
  state.horizon = kept && Array.isArray(kept.horizon) ? kept.horizon.filter((h) => Array.isArray(h) && h.every(Number.isFinite)).slice(0, MAX_HORIZON) : [];
  const v = src.view, c = (kept && kept.camera) || {};
  const r = (x, d) => String(Number(x.toFixed(d)));  // 5.7075000000000005 from a configuration is 5.7075
  $("cam-lat").value = c.lat ?? (v ? r(v.lat_deg, 7) : "");
  $("cam-lon").value = c.lon ?? (v ? r(v.lon_deg, 7) : "");
  $("cam-alt").value = c.alt ?? (v && v.alt_m != null ? r(v.alt_m, 2) : "");
  $("surface-alt").value = c.surface ?? "0";
  $("hfov").value = c.hfov ?? (v ? v.hfov_deg : "");
  $("fit-hfov").checked = c.fitHfov ?? !v;  // a camera never calibrated: its field of view is unknown too
  $("fit-position").checked = !!c.fitPosition;
  state.pending = { px: null, ll: null };
  state.result = null;
}

// ---- start -------------------------------------------------------------------------------------------------------
async function start() {
  const me = await signIn(state, json, showLogin);
  if (!me) return;
  $("login").hidden = true; $("main").hidden = false;
  if (me.role !== "admin") $("fit-error").textContent = "fitting needs an administrator's log-in; you can mark points";
  const m = await json("api/map");
  if (!state.map) {
    state.map = new MapView($("map"), { tilesUrl: m.tiles_url, attribution: m.attribution, onDraw: drawMapMarks,
      onHover: (t) => { $("map-note").textContent = t; } });
    if (!m.tiles_url && m.coastline) fetch(here("ui/coastline.json")).then((r) => r.json()).then((c) => state.map.setCoastline(c.lines)).catch(() => {});
  }
  const list = await json("api/sources");
  state.sources = list.filter((s) => s.kind === "camera" && !s.drone_id);  // a drone's camera is located from its pose
  const sel = $("source");
  sel.replaceChildren(...state.sources.map((s) => { const o = document.createElement("option"); o.value = s.source_id; o.textContent = displayText(s.source_id, 60); return o; }));
  if (!state.sources.length) { $("pic-note").textContent = "no fixed cameras are configured"; return; }
  const wanted = new URLSearchParams(location.hash.slice(1)).get("source");
  sel.value = state.sources.some((s) => s.source_id === wanted) ? wanted : state.sources[0].source_id;
  await chooseSource(sel.value);
}

async function chooseSource(id) {
  state.source = state.sources.find((s) => s.source_id === id) || null;
  if (!state.source) return;
  restore(state.source);
  state.inForce = null;
  $("in-force-text").textContent = "";
  $("apply-status").textContent = ""; $("apply-error").textContent = ""; $("revert-error").textContent = "";
  const h = new URLSearchParams(location.hash.slice(1));
  h.set("source", id);
  history.replaceState(null, "", "#" + h.toString());
  const v = state.source.view;
  state.map.setData({ cameras: v ? [{ source_id: `${id} (now)`, state: "", view: v }] : [], events: [] });
  const pts = state.points.map((p) => [p.lat_deg, p.lon_deg]).concat(v ? [[v.lat_deg, v.lon_deg]] : []);
  if (pts.length >= 2) state.map.fit(pts, 60);
  else if (pts.length === 1) { state.map.view = { lat: pts[0][0], lon: pts[0][1], zoom: 16 }; state.map.redraw(); }
  render();
  await Promise.all([loadPicture(), loadInForce()]);
}

// ---- the calibration in force ------------------------------------------------------------------------------------
const isAdmin = () => !!state.who && state.who.role === "admin";
const when = (ns) => formatTime(ns, { seconds: false });  // "2026-09-21 14:13 UTC", "… 16:13 CEST"
const poseText = (c) => (c && c.surveyed ? `pan ${c.surveyed.pan_deg.toFixed(2)}°, tilt ${c.surveyed.tilt_deg.toFixed(2)}°` +
  (c.camera && c.camera.hfov_deg ? `, field of view ${c.camera.hfov_deg.toFixed(2)}°` : "") : "ground control points");

async function loadInForce() {
  const id = state.source.source_id;
  try {
    const got = await json(`api/sources/${encodeURIComponent(id)}/calibration`);
    if (state.source && state.source.source_id === id) state.inForce = got;
  } catch (e) {
    state.inForce = null;
    $("in-force-text").textContent = `the calibration in force: ${e.message}`;
  }
  renderInForce();
}

// the camera's view for the map follows the calibration in force (the sources' list gives it)
async function reloadSource() {
  const list = await json("api/sources");
  state.sources = list.filter((s) => s.kind === "camera" && !s.drone_id);
  state.source = state.sources.find((s) => s.source_id === (state.source && state.source.source_id)) || state.source;
  render();
}

function renderInForce() {
  const f = state.inForce, box = $("in-force"), text = $("in-force-text");
  $("revert").hidden = !f || f.origin !== "operator" || !isAdmin();
  $("revert").disabled = state.busy;
  box.classList.toggle("operator", !!f && f.origin === "operator");
  if (!f) return;
  if (f.origin === "operator") {
    const parts = ["In force: the calibration applied by ", untrusted(f.applied_by, 60), ` on ${when(f.applied_ns)} (${poseText(f.calibration)})`];
    if (f.note) parts.push(": “", untrusted(f.note, 200), "”");
    parts.push(". It overrides the configured one until reverted.");
    if (f.config_changed_since) {
      const b = document.createElement("span");
      b.className = "changed";
      b.textContent = " The configured calibration was changed in the configuration since it was applied; this one is still in force.";
      parts.push(b);
    }
    if (f.config_matches) parts.push(" The configuration now holds the same calibration: reverting changes nothing.");
    text.replaceChildren(...parts);
  } else if (f.origin === "config") {
    text.replaceChildren(`In force: the configured calibration (${poseText(f.calibration)}).`);
  } else {
    text.replaceChildren("No calibration in force: this camera's events have no position.");
  }
  const hist = f.history || [];
  $("history").hidden = !hist.length;
  $("history-list").replaceChildren(...hist.map((h) => {
    const li = document.createElement("li");
    li.className = h.status;
    li.append(`${when(h.created_ns)}, `, untrusted(h.created_by, 60), `: ${poseText(h.calibration)}`);
    if (h.note) li.append(" “", untrusted(h.note, 200), "”");
    li.append(h.status === "in_force" ? " (in force)" : h.status === "superseded" ? " (superseded)" : "");
    if (h.status === "reverted") li.append(" (reverted by ", untrusted(h.reverted_by || "", 60), ` on ${when(h.reverted_ns)})`);
    return li;
  }));
}

// the fit's summary kept with an applied calibration (FitSummaryIn)
function fitSummary(fit) {
  const med = (xs) => median(xs.filter((v) => v != null));
  return { points: fit.points.length, horizon_points: fit.horizon_residual_px.length, rms_px: fit.rms_px,
    median_ground_error_m: med(fit.points.map((p) => p.ground_error_m)),
    median_left_out_ground_error_m: med(fit.points.map((p) => p.left_out_ground_error_m)),
    median_current_ground_error_m: fit.current ? med(fit.current.ground_error_m) : null,
    fitted: fit.fitted.slice(0, 10), warnings: fit.warnings.slice(0, 20) };
}

async function changeCalibration(method, body) {
  const id = state.source.source_id;
  state.busy = true; render();
  try {
    const opts = { method };
    if (body) Object.assign(opts, { headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    state.inForce = await json(`api/sources/${encodeURIComponent(id)}/calibration`, opts);
    await reloadSource();
    return true;
  } finally {
    state.busy = false; render(); renderInForce();
  }
}

async function applyFit() {
  $("apply-error").textContent = ""; $("apply-status").textContent = "";
  const fit = state.result;
  if (!fit) return;
  try {
    await changeCalibration("PUT", { calibration: fit.calibration, note: $("apply-note").value.trim(), fit: fitSummary(fit) });
    fit.applied = true;
    showResult();
    $("apply-status").textContent = "applied: the camera's next events are placed with it";
    $("apply-note").value = "";
  } catch (e) {
    $("apply-error").textContent = e.message;
  }
}

async function revert() {
  $("revert-error").textContent = ""; $("apply-status").textContent = "";
  try {
    await changeCalibration("DELETE");
  } catch (e) {
    $("revert-error").textContent = e.message;
  }
}

// a button that acts on a second click within 3 s (applying and reverting change where every event is placed)
function confirmTwice(button, again, action) {
  const label = button.textContent;
  let armed = null;
  button.addEventListener("click", () => {
    if (!armed) { button.textContent = again; armed = setTimeout(() => { armed = null; button.textContent = label; }, 3000); return; }
    clearTimeout(armed); armed = null; button.textContent = label;
    action();
  });
}

async function loadPicture() {
  const id = state.source.source_id;
  $("pic-note").textContent = "loading the camera's picture…";
  try {
    const r = await api(`api/sources/${encodeURIComponent(id)}/latest.jpg?boxes=false`);
    const url = URL.createObjectURL(await r.blob());
    if (!state.source || state.source.source_id !== id) { URL.revokeObjectURL(url); return; }
    const img = $("pic");
    await new Promise((ok, bad) => { img.onload = ok; img.onerror = bad; img.src = url; });
    if (state.picUrl) URL.revokeObjectURL(state.picUrl);
    state.picUrl = url;
    state.size = [img.naturalWidth, img.naturalHeight];
    $("pic-overlay").setAttribute("viewBox", `0 0 ${state.size[0]} ${state.size[1]}`);
    $("pic-note").textContent = `${state.size[0]} x ${state.size[1]} px, as the camera sends it`;
  } catch (e) {
    $("pic-note").textContent = e.status === 404 ? "no picture from this camera yet (is it online?)" : `picture: ${e.message}`;
  }
  render();
}

// ---- marking -----------------------------------------------------------------------------------------------------
const mode = () => document.querySelector("input[name=mode]:checked").value;

function pictureClick(e) {
  if (!state.size) return;
  const r = $("pic-overlay").getBoundingClientRect();
  const x = Math.round(((e.clientX - r.left) / r.width) * state.size[0] * 10) / 10;
  const y = Math.round(((e.clientY - r.top) / r.height) * state.size[1] * 10) / 10;
  if (x < 0 || y < 0 || x > state.size[0] || y > state.size[1]) return;
  if (mode() === "horizon") {
    if (state.horizon.length >= MAX_HORIZON) { $("pending").textContent = `at most ${MAX_HORIZON} horizon pixels`; return; }
    state.horizon.push([x, y]);
    changed();
    return;
  }
  state.pending.px = [x, y];
  completePending();
}

function mapClick(lat, lon) {
  if (mode() === "horizon") { $("pending").textContent = "the horizon is marked in the picture only"; return; }
  state.pending.ll = [Math.round(lat * 1e7) / 1e7, Math.round(lon * 1e7) / 1e7];
  completePending();
}

function completePending() {
  const p = state.pending;
  if (p.px && p.ll) {
    if (state.points.length >= MAX_POINTS) { $("pending").textContent = `at most ${MAX_POINTS} points`; return; }
    state.points.push({ x_px: p.px[0], y_px: p.px[1], lat_deg: p.ll[0], lon_deg: p.ll[1], alt_m: null, name: "" });
    state.pending = { px: null, ll: null };
    changed();
    return;
  }
  render();
}

function changed() {
  state.result = null;  // the fit was for other points
  save();
  render();
}

// a click (not a drag) on the map: the spot under it (the map pans on a drag)
(() => {
  const c = $("map");
  let down = null;
  c.addEventListener("pointerdown", (e) => { down = { x: e.clientX, y: e.clientY }; });
  c.addEventListener("pointerup", (e) => {
    if (!down || !state.map || Math.abs(e.clientX - down.x) + Math.abs(e.clientY - down.y) >= 4) { down = null; return; }
    down = null;
    const r = c.getBoundingClientRect();
    const ll = state.map.unproject((e.clientX - r.left) * (c.width / r.width), (e.clientY - r.top) * (c.height / r.height));
    mapClick(ll.lat, ll.lon);
  });
})();

// ---- drawing -----------------------------------------------------------------------------------------------------
function drawMapMarks(g, map) {
  const fitted = state.result && state.result.view;
  if (fitted) {  // the fitted camera's view cone, over the configured one (drawn by the map as the camera)
    const pts = map._cone(fitted).map(([la, lo]) => map.project(la, lo));
    g.strokeStyle = FITTED; g.lineWidth = 2; g.setLineDash([7, 4]);
    g.beginPath(); pts.forEach((q, i) => (i ? g.lineTo(q.x, q.y) : g.moveTo(q.x, q.y))); g.closePath(); g.stroke();
    g.setLineDash([]);
    g.font = "bold 11px sans-serif"; g.fillStyle = "#006d8f"; g.fillText("fitted", pts[0].x + 8, pts[0].y + 14);
  }
  g.font = "bold 12px sans-serif";
  state.points.forEach((p, i) => {
    const q = map.project(p.lat_deg, p.lon_deg);
    g.strokeStyle = "#fff"; g.lineWidth = 4; g.beginPath(); g.arc(q.x, q.y, 6, 0, 2 * Math.PI); g.stroke();
    g.strokeStyle = MARK; g.lineWidth = 2; g.beginPath(); g.arc(q.x, q.y, 6, 0, 2 * Math.PI); g.stroke();
    g.fillStyle = "#1d2733"; g.fillText(String(i + 1), q.x + 8, q.y - 6);
  });
  if (state.pending.ll) {
    const q = map.project(state.pending.ll[0], state.pending.ll[1]);
    g.setLineDash([3, 3]); g.strokeStyle = MARK; g.lineWidth = 2; g.beginPath(); g.arc(q.x, q.y, 9, 0, 2 * Math.PI); g.stroke();
    g.setLineDash([]);
  }
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

function drawPictureMarks() {
  const o = $("pic-overlay");
  o.replaceChildren();
  if (!state.size) return;
  const s = Math.max(state.size[0], state.size[1]) / 800;  // marks of the same size on screen whatever the picture
  const fit = state.result;
  state.points.forEach((p, i) => {
    const g = svg("g", { class: "pt" });
    g.append(svg("path", { d: `M${p.x_px - 7 * s} ${p.y_px}h${14 * s}M${p.x_px} ${p.y_px - 7 * s}v${14 * s}`, class: "cross", "stroke-width": 2 * s }));
    g.append(svg("text", { x: p.x_px + 6 * s, y: p.y_px - 6 * s, "font-size": 14 * s, "stroke-width": 3 * s }, String(i + 1)));
    const pr = fit && fit.points[i] && fit.points[i].projected_px;
    if (pr && pr[0] != null && pr[1] != null) {  // where the fitted pose puts it: the residual as a line
      g.append(svg("line", { x1: p.x_px, y1: p.y_px, x2: pr[0], y2: pr[1], class: "resid", "stroke-width": 1.5 * s }));
      g.append(svg("circle", { cx: pr[0], cy: pr[1], r: 4 * s, class: "proj", "stroke-width": 1.5 * s }));
    }
    o.append(g);
  });
  if (state.horizon.length) {
    const pts = [...state.horizon].sort((a, b) => a[0] - b[0]);
    o.append(svg("polyline", { points: pts.map((h) => h.join(",")).join(" "), class: "horizon", "stroke-width": 1.5 * s }));
    for (const h of state.horizon) o.append(svg("rect", { x: h[0] - 4 * s, y: h[1] - 4 * s, width: 8 * s, height: 8 * s, class: "horizon-pt", "stroke-width": 1.5 * s }));
  }
  if (state.pending.px) {
    o.append(svg("circle", { cx: state.pending.px[0], cy: state.pending.px[1], r: 9 * s, class: "pending", "stroke-width": 2 * s }));
  }
}

const fmtM = (v) => (v == null ? "—" : v >= 100 ? `${Math.round(v)} m` : `${v.toFixed(1)} m`);
const fmtPx = (v) => (v == null ? "—" : `${v.toFixed(1)} px`);

function render() {
  const p = state.pending;
  $("pending").textContent = mode() === "horizon" ? "click points on the sea horizon in the picture"
    : p.px && !p.ll ? `pixel ${p.px[0]}, ${p.px[1]} marked: now click the same spot on the map`
    : p.ll && !p.px ? `map spot ${p.ll[0].toFixed(6)}, ${p.ll[1].toFixed(6)} marked: now click it in the picture`
    : `click a point you know in the picture, then on the map (${state.points.length} marked)`;
  const fit = state.result, now = fit && fit.current;
  const tb = $("points").tBodies[0];
  tb.replaceChildren();
  state.points.forEach((pt, i) => {
    const tr = document.createElement("tr");
    const cell = (x) => { const td = document.createElement("td"); td.append(x); return td; };
    const name = document.createElement("input");
    name.value = pt.name || ""; name.maxLength = 64; name.size = 14; name.setAttribute("aria-label", `point ${i + 1} name`);
    name.addEventListener("change", () => { pt.name = name.value; save(); });
    const alt = document.createElement("input");
    alt.type = "number"; alt.step = "any"; alt.size = 5; alt.value = pt.alt_m ?? ""; alt.setAttribute("aria-label", `point ${i + 1} height`);
    alt.addEventListener("change", () => { pt.alt_m = alt.value === "" ? null : Number(alt.value); changed(); });
    const del = document.createElement("button");
    del.type = "button"; del.textContent = "remove"; del.addEventListener("click", () => { state.points.splice(i, 1); changed(); });
    const r = fit ? fit.points[i] : null;
    tr.append(cell(String(i + 1)), cell(name), cell(`${pt.x_px}, ${pt.y_px}`), cell(`${pt.lat_deg.toFixed(6)}, ${pt.lon_deg.toFixed(6)}`),
      cell(alt), cell(r ? fmtPx(r.residual_px) : ""), cell(r ? (r.ground_error_m == null ? "above horizon" : fmtM(r.ground_error_m)) : ""),
      cell(r ? fmtM(r.left_out_ground_error_m) : ""), cell(now ? fmtM(now.ground_error_m[i]) : ""), cell(del));
    if (r && r.residual_px != null && fit.rms_px != null && r.residual_px > Math.max(8, 4 * fit.rms_px)) tr.className = "off";
    tb.append(tr);
  });
  const hl = $("horizon-list");
  hl.replaceChildren();
  if (state.horizon.length) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = "clear the horizon"; b.addEventListener("click", () => { state.horizon = []; changed(); });
    hl.append(`${state.horizon.length} horizon pixel(s)` + (fit && fit.horizon_residual_px.length ?
      `, at most ${Math.max(...fit.horizon_residual_px.map((v) => v ?? 0)).toFixed(1)} px from the fitted horizon` : "") + " ", b);
  }
  $("fit").disabled = state.fitting || !state.points.length || !isAdmin();
  $("apply-box").hidden = !state.result || !isAdmin();
  $("apply").disabled = state.busy || !state.result || !state.result.ok;
  showResult();
  drawPictureMarks();
  if (state.map) {
    const v = state.source && state.source.view;
    state.map.setData({ cameras: v ? [{ source_id: `${state.source.source_id} (now)`, state: "", view: v }] : [] });
  }
}

function median(xs) { const s = xs.filter((x) => x != null).sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)] : null; }

function showResult() {
  const fit = state.result;
  $("result").hidden = !fit;
  if (!fit) return;
  const c = fit.calibration, sv = c.surveyed;
  const loo = fit.points.map((p) => p.left_out_ground_error_m).filter((v) => v != null);
  const now = fit.current ? median(fit.current.ground_error_m) : null;
  $("summary").textContent = `pan ${sv.pan_deg.toFixed(2)}°, tilt ${sv.tilt_deg.toFixed(2)}°, roll ${sv.roll_deg.toFixed(2)}°, ` +
    `field of view ${c.camera.hfov_deg.toFixed(2)}°; ${fit.points.length} points, RMS ${fit.rms_px.toFixed(1)} px; ` +
    (loo.length ? `ground error with each point left out: median ${fmtM(median(loo))}, worst ${fmtM(Math.max(...loo))}` :
      `ground error: median ${fmtM(median(fit.points.map((p) => p.ground_error_m)))} (4 points or more to check it)`) +
    (now != null ? `; with the calibration ${fit.applied ? "before it was applied" : "now"}: median ${fmtM(now)}` : "") + ".";
  const ul = $("warnings");
  ul.replaceChildren(...fit.warnings.concat(fit.current && fit.current.note ? [fit.current.note] : []).map((w) => {
    const li = document.createElement("li"); li.textContent = w; return li;
  }));
  $("yaml").textContent = toYaml(c);
}

// the calibration section as YAML: flow mappings of plain numbers, as the configuration examples write them
function toYaml(c) {
  const flow = (o) => `{${Object.entries(o).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(", ")}}`;
  return `calibration:\n  camera: ${flow(c.camera)}\n  surveyed: ${flow(c.surveyed)}\n  surface_alt_m: ${JSON.stringify(c.surface_alt_m)}\n`;
}

async function fit() {
  $("fit-error").textContent = "";
  const num = (id) => ($(id).value === "" ? NaN : Number($(id).value));
  const cam = { lat_deg: num("cam-lat"), lon_deg: num("cam-lon"), alt_m: num("cam-alt") };
  if (!Object.values(cam).every(Number.isFinite)) { $("fit-error").textContent = "give the camera's latitude, longitude and height"; return; }
  if (!state.size) { $("fit-error").textContent = "no picture of the camera: its size is not known"; return; }
  const hfov = num("hfov");
  if (!$("fit-hfov").checked && !Number.isFinite(hfov)) { $("fit-error").textContent = "give the field of view, or fit it"; return; }
  const body = { points: state.points.map((p) => ({ x_px: p.x_px, y_px: p.y_px, lat_deg: p.lat_deg, lon_deg: p.lon_deg, alt_m: p.alt_m ?? null, name: p.name || "" })),
    horizon_px: state.horizon, width_px: state.size[0], height_px: state.size[1], camera: cam,
    hfov_deg: $("fit-hfov").checked ? null : hfov, fit_position: $("fit-position").checked,
    surface_alt_m: Number.isFinite(num("surface-alt")) ? num("surface-alt") : 0 };
  state.fitting = true; $("fit").textContent = "Fitting…"; render();
  try {
    state.result = await json(`api/sources/${encodeURIComponent(state.source.source_id)}/calibration/fit`,
      { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (e) {
    state.result = null;
    $("fit-error").textContent = e.message;
  } finally {
    state.fitting = false; $("fit").textContent = "Fit";
  }
  render();
}

// ---- wiring ------------------------------------------------------------------------------------------------------
if (!FRAMED) {
  bindLoginForm($("login-form"), $("login-error"), () => start().catch((err) => { $("fit-error").textContent = err.message; }));
  $("pic-overlay").addEventListener("click", pictureClick);
  $("source").addEventListener("change", (e) => chooseSource(e.target.value));
  $("reload-pic").addEventListener("click", () => state.source && loadPicture());
  for (const r of document.querySelectorAll("input[name=mode]")) r.addEventListener("change", () => { state.pending = { px: null, ll: null }; render(); });
  for (const id of ["cam-lat", "cam-lon", "cam-alt", "surface-alt", "hfov", "fit-hfov", "fit-position"]) $(id).addEventListener("change", () => changed());
  $("fit").addEventListener("click", () => fit());
  confirmTwice($("apply"), "click again to apply it now", () => applyFit());
  confirmTwice($("revert"), "click again to revert", () => revert());
  let armed = null;
  $("clear").addEventListener("click", () => {  // twice within 3 s: marks are work
    if (!armed) { $("clear").textContent = "click again to clear"; armed = setTimeout(() => { armed = null; $("clear").textContent = "clear all points"; }, 3000); return; }
    clearTimeout(armed); armed = null; $("clear").textContent = "clear all points";
    state.points = []; state.horizon = []; state.pending = { px: null, ll: null }; changed();
  });
  $("copy-yaml").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText($("yaml").textContent); $("copied").textContent = "copied"; }
    catch {  // no clipboard (plain http to another host): the text is selected for Ctrl+C
      const r = document.createRange(); r.selectNodeContents($("yaml"));
      const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(r);
      $("copied").textContent = "selected: press Ctrl+C";
    }
  });
  window.seawatchCalibration = { state };  // for the browser tests and the console
  start().catch((err) => { if (err.status !== 401) $("fit-error").textContent = err.message; });
}
