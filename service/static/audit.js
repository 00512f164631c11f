// Seawatch audit log ("/audit", administrators): who logged in (and who failed to), exported, held, reviewed,
// calibrated or commanded a drone, from which address and with what outcome (GET /api/admin/audit, newest first).
// Filters: action (a prefix of the dotted name: "export" finds every export), actor, target, from / to (typed in the
// zone chosen in the header's "times", timefmt.js, as the operator page's filters are); "Older entries" follows the
// API's cursor; CSV downloads every entry the filters find. Reading the log is itself recorded by the service.
// Same log-in as "/" (the tab's session, or #key= / #token=); anyone but an admin is told it is for administrators.
// Plain ES module, no build step, nothing from elsewhere; every URL is relative to where the page was loaded.
"use strict";
import { apiClient, bindLoginForm, signIn, untrusted } from "./session.js";
import { formatTime, inputValue, modeText, onTimeModeChange, otherZoneTitle, readInput, setTimeMode, timeMode,
  zoneLabel } from "./timefmt.js";

// the actions the service records (service/audit.py), offered in the action filter with their families
const ACTIONS = ["auth", "auth.login", "auth.login_failed", "auth.logout", "auth.forbidden", "export", "export.evidence",
  "export.csv", "export.geojson", "export.kml", "export.recording", "hold", "hold.add", "hold.release", "ignore_area",
  "ignore_area.add", "ignore_area.remove", "calibration", "calibration.apply", "calibration.revert",
  "view_reference.reset", "camera", "camera.snooze", "camera.snooze_end", "drone", "drone.abort", "drone.restart", "drone.investigate", "event.report", "review",
  "review.acknowledge", "review.dismiss", "review.confirm", "audit", "audit.read", "audit.export"];
const PAGE = 200;
const PICK = { from: "first", to: "second" };  // a reading the autumn change repeats: both covered

const $ = (id) => document.getElementById(id);
const state = { auth: null, who: null, entries: [], cursor: null, query: null };
const { api, json } = apiClient(() => state.auth, () => showLogin());

function showLogin() { $("login").hidden = false; $("main").hidden = true; }
function say(text, cls = "") { $("status").textContent = text; $("status").className = cls; }

async function start() {
  if (!await signIn(state, json, showLogin)) return;
  $("login").hidden = true; $("main").hidden = false;
  showZone();
  if (state.who.role !== "admin") {  // the service answers anyone else 403 (and records the attempt)
    for (const el of $("filters").elements) el.disabled = true;
    say(`The audit log is for administrators; ${state.who.name} is ${state.who.role}.`, "error");
    return;
  }
  await load(true);
}

// ---- the filters --------------------------------------------------------------------------------------------------
function showZone() {
  for (const el of document.querySelectorAll(".tz[data-for]")) {
    const r = readInput($(el.dataset.for).value, { pick: PICK[el.dataset.for] });
    el.textContent = r && !r.error ? r.label : zoneLabel();
  }
  $("tz-mode").value = shownMode;
  $("tz-mode").options[1].textContent = modeText("local");
}

function params() {
  const q = new URLSearchParams();
  for (const id of ["action", "actor", "target"]) if ($(id).value.trim()) q.set(id, $(id).value.trim());
  const notes = [];
  for (const [id, pick] of Object.entries(PICK)) {
    const r = readInput($(id).value, { pick });
    if (!r) continue;
    if (r.error) throw new Error(`${id}: ${r.error}`);
    if (r.ambiguous) notes.push(`${id} ${$(id).value.replace("T", " ")} occurs twice: read as the ${pick}`);
    q.set(id, new Date(r.ns / 1e6).toISOString());
  }
  $("time-note").textContent = notes.join("; ");
  return q;
}

// ---- the table ----------------------------------------------------------------------------------------------------
function cell(cls, ...kids) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.append(...kids);
  return td;
}

function row(e) {
  const tr = document.createElement("tr");
  tr.className = e.outcome;
  tr.dataset.id = e.id;
  const time = cell("time", formatTime(e.time_ns));
  time.title = otherZoneTitle(e.time_ns);
  const actor = e.actor ? untrusted(e.actor, 40) : document.createTextNode("(unknown)");
  const details = Object.keys(e.details || {}).length ? untrusted(JSON.stringify(e.details), 300) : "";
  tr.append(time, cell("actor", actor, e.actor_kind ? ` (${e.actor_kind})` : ""), cell("role", e.role || ""),
    cell("client", untrusted(e.client, 64)), cell("action", untrusted(e.action, 64)),
    cell("target", e.target ? untrusted(e.target, 64) : ""),
    cell("outcome", `${e.outcome} ${e.status}`), cell("details", details));
  return tr;
}

function render() {
  $("rows").replaceChildren(...state.entries.map(row));
  $("empty").hidden = state.entries.length > 0;
  $("more").hidden = !state.cursor;
}

async function load(reset) {
  let q;
  try { q = reset ? params() : new URLSearchParams(state.query); } catch (e) { say(e.message, "error"); return; }
  if (reset) { state.query = q.toString(); state.cursor = null; }
  const page = new URLSearchParams(state.query);
  page.set("limit", String(PAGE));
  if (!reset && state.cursor) page.set("cursor", state.cursor);
  say("loading…");
  try {
    const got = await json("api/admin/audit?" + page.toString());
    state.entries = reset ? got.entries : state.entries.concat(got.entries);
    state.cursor = got.next_cursor;
    render();
    say(`${state.entries.length} entr${state.entries.length === 1 ? "y" : "ies"}${state.cursor ? " (older ones: below)" : ""}`);
  } catch (e) {
    if (e.status !== 401) say(e.message, "error");
  }
}

// Every entry the filters find, as CSV, through the authenticated API (a plain link would carry no credential).
async function downloadCsv() {
  let q;
  try { q = params(); } catch (e) { say(e.message, "error"); return; }
  q.set("format", "csv");
  try {
    const r = await api("api/admin/audit?" + q.toString());
    const url = URL.createObjectURL(await r.blob());
    const a = document.createElement("a");
    a.href = url; a.download = "seawatch-audit.csv"; a.hidden = true;
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    say(r.headers.get("X-Seawatch-Truncated") === "true" ? "CSV saved: the first 50 000 entries only" : "CSV saved");
  } catch (e) {
    if (e.status !== 401) say(e.message, "error");
  }
}

// A change of zone (here or in another tab): the typed times keep their instants, the table is written again.
let shownMode = timeMode();
function applyTimeMode(m) {
  if (m === shownMode) return;
  for (const [id, pick] of Object.entries(PICK)) {
    const r = readInput($(id).value, { pick, mode: shownMode });
    if (r && !r.error) $(id).value = inputValue(r.ns, m).value;
  }
  shownMode = m;
  showZone();
  render();
}

// ---- wiring -------------------------------------------------------------------------------------------------------
$("actions").append(...ACTIONS.map((a) => Object.assign(document.createElement("option"), { value: a })));
$("filters").addEventListener("submit", (e) => { e.preventDefault(); load(true); });
$("csv").addEventListener("click", () => downloadCsv());
$("more").addEventListener("click", () => load(false));
for (const id of Object.keys(PICK)) $(id).addEventListener("input", () => showZone());
$("tz-mode").addEventListener("change", () => setTimeMode($("tz-mode").value));
$("tz-mode").addEventListener("focus", () => { $("tz-mode").options[1].textContent = modeText("local"); });
onTimeModeChange(applyTimeMode);
bindLoginForm($("login-form"), $("login-error"), () => start().catch(() => {}));
window.seawatchAudit = { state, load };
start().catch(() => {});
