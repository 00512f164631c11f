// Seawatch incident report ("/report"): a shift leader's handover and a reviewer's weekly filing. Pick a period (the
// last 8 or 12 h shift, 24 h, 7 days, or from / to) and filters; GET /api/report answers the counts, which are shown as
// tables and plain SVG bar charts, with the confirmed, high / critical and held incidents listed, each linked into
// the operator UI (./#event=ID). "Print / Save as PDF" prints the report alone on A4 (report.css's print rules hide
// the controls) with the period, the filters, when and by whom it was made.
// Same log-in as "/" (the tab's session, or #key= / #token=); a viewer is enough. Plain ES module, no build step,
// nothing from elsewhere; every URL is relative to where the page was loaded. Times, the per-day and the hour-of-day
// counts in the chosen zone (the header's "times", shared with the operator page: timefmt.js).
"use strict";
import { ROOT, apiClient, bindLoginForm, signIn, untrusted } from "./session.js";
import { displayZone, formatTime, inputValue, modeText, onTimeModeChange, readInput, setTimeMode, timeMode,
  zoneLabel } from "./timefmt.js";

const SEVERITIES = ["low", "medium", "high", "critical"];
const STATUSES = [["new", "new (not reviewed)"], ["acknowledged", "acknowledged"], ["dismissed", "dismissed"],
  ["confirmed", "confirmed"]];
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
// preset: the instants [from, to] (ms) of a "last N h" period, sent as they are (its inputs only show them)
const state = { auth: null, who: null, report: null, drones: new Set(), preset: null };
const { json } = apiClient(() => state.auth, () => showLogin());

// ---- times: in the zone chosen in the header (timefmt.js, shared with the operator page: UTC by default, or the
// browser's), the zone written with each time. The report is asked for its per-day and hour-of-day counts in that zone
// too (tz=, the IANA name: local days of 23 or 25 hours at a daylight saving change), and its charts name it.
function fmtTime(ns, { seconds = false } = {}) {
  if (ns === null || ns === undefined) return "";
  return formatTime(ns, { seconds });
}
// <input type="datetime-local"> values read and written in that zone, as the operator page's filters are (the label
// beside each names the zone at the instant typed: CET or CEST); a reading the autumn change repeats is taken as its
// first for "from" and its second for "to" (both covered, the note beside says so), a skipped one is refused with the
// reason
const PICK = { from: "first", to: "second" };
const toInput = (ms, m) => inputValue(ms * 1e6, m).value.slice(0, 16);
function readPeriod() {
  const notes = [], out = {};
  for (const [id, pick] of Object.entries(PICK)) {
    const v = $(id).value, r = readInput(v, { pick });
    if (!r) throw new Error("give the period's from and to");
    if (r.error) throw new Error(`${id}: ${r.error}`);
    if (r.ambiguous) notes.push(`${id} ${v.replace("T", " ")} occurs twice (${zoneLabel(r.ambiguous[0])}, then ` +
      `${zoneLabel(r.ambiguous[1])}): read as the ${pick}`);
    out[id] = Math.round(r.ns / 1e6);
  }
  $("time-note").textContent = notes.join("; ");
  return out;
}
function showZone() {
  for (const el of document.querySelectorAll(".tz[data-for]")) {
    const r = readInput($(el.dataset.for).value, { pick: PICK[el.dataset.for] });
    el.textContent = r && !r.error ? r.label : zoneLabel();
  }
  $("period-legend").textContent = `Period (incidents that started in it, times in ${zoneLabel()})`;
  $("tz-mode").value = shownMode;
  $("tz-mode").options[1].textContent = modeText("local");
}
// A change of zone (here or in another tab): the typed period keeps its instants (read in the zone it was typed in,
// written in the new one), and a report made is made again, so that its days and hours are the new zone's.
let shownMode = timeMode();
function applyTimeMode(m) {
  const old = shownMode;
  if (m === old) return;
  for (const [id, pick] of Object.entries(PICK)) {
    const r = readInput($(id).value, { pick, mode: old });
    if (r && !r.error) $(id).value = toInput(r.ns / 1e6, m);
  }
  shownMode = m;
  showZone();
  if (state.report) make();
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

// ---- session ------------------------------------------------------------------------------------------------------
function showLogin() { $("login").hidden = false; $("main").hidden = true; }

async function start() {
  if (!await signIn(state, json, showLogin)) return;
  $("login").hidden = true; $("main").hidden = false;
  showZone();
  setPeriod();
  await loadChoices();
  await make();
}

async function loadChoices() {
  const [sources, drones] = await Promise.all([json("api/sources").catch(() => []), json("api/drones").catch(() => [])]);
  const sel = $("source");
  // cameras only: /api/sources also lists each drone (the drone choice below) and the AIS feeds, never an event's camera
  for (const s of sources.filter((s) => (s.kind || "camera") === "camera")) {
    const o = document.createElement("option");
    o.value = s.source_id; o.append(untrusted(s.source_id, 40));
    sel.append(o);
  }
  for (const d of drones) addDrone(d.drone_id || d.id);
}

function addDrone(id) {
  if (!id || state.drones.has(id)) return;
  state.drones.add(id);
  const o = document.createElement("option");
  o.value = id; o.append(untrusted(id, 40));
  $("drone").append(o);
}

// ---- the period and the filters -----------------------------------------------------------------------------------
function setPeriod() {
  const p = $("period").value;
  const custom = p === "custom";
  $("from").readOnly = $("to").readOnly = !custom;
  if (custom) return;
  const now = Math.floor(Date.now() / 60000) * 60000;  // to the minute: the inputs show minutes
  state.preset = { from: now - Number(p) * 3600000, to: now };
  $("to").value = toInput(state.preset.to);
  $("from").value = toInput(state.preset.from);
  $("time-note").textContent = "";
  showZone();
}

function params() {
  const custom = $("period").value === "custom" || !state.preset;
  const { from, to } = custom ? readPeriod() : state.preset;
  if (to <= from) throw new Error("'to' must be after 'from'");
  const q = new URLSearchParams({ start_from: new Date(from).toISOString(), start_to: new Date(to).toISOString(),
    tz: displayZone() });
  if ($("source").value) q.set("source", $("source").value);
  if ($("drone").value) q.set("drone", $("drone").value);
  if ($("type").value.trim()) q.set("type", $("type").value.trim());
  if ($("min-severity").value) q.set("min_severity", $("min-severity").value);
  return q;
}

async function make() {
  const status = $("status");
  showZone();
  let q;
  try { q = params(); } catch (e) { status.textContent = e.message; status.className = "error"; return; }
  status.textContent = "making the report…"; status.className = "";
  $("make").disabled = true;
  try {
    const rep = await json("api/report?" + q.toString());
    state.report = rep;
    render(rep);
    status.textContent = ""; $("print").disabled = false;
  } catch (e) {
    if (e.status !== 401) { status.textContent = e.message; status.className = "error"; }
  } finally { $("make").disabled = false; }
}

// ---- building blocks ----------------------------------------------------------------------------------------------
function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, v);
  e.append(...kids.filter((k) => k !== null && k !== undefined));
  return e;
}
function svg(tag, attrs = {}, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...kids);
  return e;
}

function table(head, rows, cls = "") {
  const t = el("table", { class: cls });
  t.append(el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", class: h.cls }, h.text ?? h)))));
  const body = el("tbody");
  for (const r of rows) body.append(el("tr", {}, ...r.map((c) => (c instanceof Node ? el("td", {}, c)
    : el("td", { class: typeof c === "number" ? "num" : null }, String(c))))));
  t.append(body);
  return t;
}
const num = (n) => ({ text: n, cls: "num" });

// The operator UI on an event ("./#event=ID", relative: under a proxy's prefix too), with a kiosk's own credential
// from this page's hash so that the page it opens is logged in too.
function eventLink(id) {
  const h = new URLSearchParams();
  const mine = new URLSearchParams(location.hash.slice(1));
  for (const k of ["key", "token"]) if (mine.get(k)) h.set(k, mine.get(k));
  h.set("event", id);
  const a = el("a", { href: new URL("./#" + h.toString(), ROOT).href, class: "event-link" });
  a.append(untrusted(id, 14));
  return a;
}

function sevTag(sev) { return el("span", { class: `sev sev-${sev}` }, sev); }

// A stacked bar chart of items [{label, low, medium, high, critical, total}] (plain SVG: no library); every bar has
// its numbers as a tooltip, and the scale's top is written at the left.
function barChart(items, { labelEvery = 1, height = 150 } = {}) {
  const w = 720, left = 34, bottom = 20, top = 14;  // top: room for the tallest bar's count above it (9 px text)
  const max = Math.max(1, ...items.map((i) => i.total));
  const bw = (w - left) / Math.max(1, items.length);
  const plotH = height - bottom - top;
  const g = svg("svg", { viewBox: `0 0 ${w} ${height}`, class: "bars", role: "img",
    "aria-label": items.map((i) => `${i.label}: ${i.total}`).join(", ") });
  g.append(svg("line", { x1: left, y1: top + plotH, x2: w, y2: top + plotH, class: "axis" }));
  g.append(svg("text", { x: left - 4, y: top + 8, class: "scale", "text-anchor": "end" }, String(max)));
  g.append(svg("text", { x: left - 4, y: top + plotH, class: "scale", "text-anchor": "end" }, "0"));
  items.forEach((it, i) => {
    const bwi = Math.min(bw * 0.76, 56), x = left + i * bw + (bw - bwi) / 2;
    let y = top + plotH;
    const bar = svg("g", { class: "bar", "data-label": it.label, "data-total": it.total });
    bar.append(svg("title", {}, `${it.label}: ${it.total}` + SEVERITIES.filter((s) => it[s]).map((s) => `, ${s} ${it[s]}`).join("")));
    for (const s of SEVERITIES) {
      if (!it[s]) continue;
      const h = (it[s] / max) * plotH;
      y -= h;
      bar.append(svg("rect", { x: x.toFixed(1), y: y.toFixed(1), width: bwi.toFixed(1), height: h.toFixed(1), class: `fill-${s}` }));
    }
    if (it.total && items.length <= 31) {
      bar.append(svg("text", { x: (x + bwi / 2).toFixed(1), y: (y - 2).toFixed(1), class: "value", "text-anchor": "middle" }, String(it.total)));
    }
    if (i % labelEvery === 0) {
      bar.append(svg("text", { x: (x + bwi / 2).toFixed(1), y: height - 6, class: "label", "text-anchor": "middle" }, it.short ?? it.label));
    }
    g.append(bar);
  });
  return g;
}

// A horizontal bar in a table cell: share of the largest value
function hbar(value, max) {
  const pct = max ? (value / max) * 100 : 0;
  return svg("svg", { viewBox: "0 0 100 8", preserveAspectRatio: "none", class: "hbar", "aria-hidden": "true" },
    svg("rect", { x: 0, y: 0, width: pct.toFixed(2), height: 8 }));
}

function legend() {
  return el("p", { class: "legend" }, ...SEVERITIES.map((s) => el("span", { class: `lg fill-${s}` }, s)));
}

// ---- the report ---------------------------------------------------------------------------------------------------
function filtersText(f) {
  const parts = [];
  const names = { source: "camera", drone: "drone", type: "type", severity: "severity", min_severity: "severity at least",
    zone: "zone", has_geo: "located" };
  for (const [k, v] of Object.entries(f)) {
    const label = names[k] || k;
    parts.push(`${label}: ${Array.isArray(v) ? v.join(", ") : v}`);
  }
  return parts.length ? untrusted(parts.join("; "), 300) : "none (every incident)";
}

// How long the period is: "2 days" when it is whole days of the report's zone (a day of 23 or 25 hours at a daylight
// saving change counted as one: "1 day, 25 h") or a multiple of 24 h, else its hours
function periodLength(rep) {
  const h = Math.round(rep.period.hours * 10) / 10;
  const whole = rep.per_day.reduce((a, d) => a + d.hours, 0) === rep.period.hours;
  const n = whole ? rep.per_day.length : h / 24;
  if (!Number.isInteger(n)) return `${h} h`;
  return `${n} day${n === 1 ? "" : "s"}${h === 24 * n ? "" : `, ${h} h`}`;
}

function render(rep) {
  $("meta-period").textContent = `${fmtTime(rep.period.start_from_ns)} to ${fmtTime(rep.period.start_to_ns)} ` +
    `(${periodLength(rep)})`;
  $("meta-filters").replaceChildren(filtersText(rep.filters));
  $("meta-made").replaceChildren(`${fmtTime(rep.generated_ns, { seconds: true })} by `,
    untrusted(rep.generated_by.name, 60), ` (${rep.generated_by.role})`);
  for (const d of rep.by_drone) addDrone(d.drone_id);
  const types = $("types");
  const have = new Set([...types.options].map((o) => o.value));
  for (const c of rep.by_type_severity) if (!have.has(c.type)) types.append(el("option", { value: c.type }));

  const st = rep.by_status, resp = rep.response;
  const card = (id, n, label, cls = "") => el("div", { class: "card " + cls, id }, el("b", {}, String(n)), el("span", {}, label));
  $("summary").replaceChildren(
    card("n-total", rep.total, "incidents"),
    card("n-open", rep.open, "still open", rep.open ? "warn" : ""),
    card("n-new", st.new, "not reviewed", st.new ? "warn" : ""),
    card("n-confirmed", st.confirmed, "confirmed"),
    card("n-false", st.false_detection, "false detections"),
    card("n-high", rep.high_severity.total, "high or critical", rep.high_severity.total ? "alarm" : ""),
    card("n-held", rep.held.total, "on hold"),
    card("n-response", duration(resp.first_action.median_s), "median response", "time"));

  const sevHead = SEVERITIES.map((s) => num(s));
  $("by-type").replaceChildren(rep.by_type_severity.length ? table(
    ["type", ...sevHead, num("total")],
    [...rep.by_type_severity.map((c) => [untrusted(c.type, 40), ...SEVERITIES.map((s) => c[s]), c.total]),
      [el("b", {}, "all"), ...SEVERITIES.map((s) => rep.by_severity[s]), rep.total]], "counts")
    : el("p", { class: "none" }, "No incidents in this period."));

  const maxStatus = Math.max(0, ...STATUSES.map(([k]) => st[k]));
  $("by-status").replaceChildren(table(["status", num("incidents"), ""], [
    ...STATUSES.map(([k, label]) => [label, st[k], hbar(st[k], maxStatus)]),
    ["of the dismissed: false detection", st.false_detection, hbar(st.false_detection, maxStatus)]], "status"));

  const statRow = (label, s) => [label, s.n, duration(s.median_s), duration(s.p90_s), duration(s.max_s), s.without];
  $("response").replaceChildren(table(["from the incident's start to", num("incidents"), num("median"), num("90 %"),
    num("longest"), num("not yet")], [
    statRow("the first review action (operators' response)", resp.first_action),
    statRow("a verdict (dismissed or confirmed)", resp.verdict)], "response"));
  if (resp.reported_by_people) {  // acknowledged by their reporter as they were made: no response to time
    const note = document.createElement("p");
    note.className = "note";
    note.textContent = `${resp.reported_by_people} incident(s) reported by people from recordings are not counted here.`;
    $("response").append(note);
  }

  // the days and hours of the zone the report was made in (rep.tz), named in each chart's title; a day the clocks
  // changed in says how long it was (the hour they repeat is counted in its local hour, the one they skip is empty)
  $("per-day-title").textContent = `Per day (${rep.tz})`;
  $("by-hour-title").textContent = `By hour of day (${rep.tz})`;
  const odd = rep.per_day.filter((d) => d.hours !== 24);
  const note = (text) => (odd.length ? [el("p", { class: "zone-note" }, text)] : []);
  $("per-day").replaceChildren(barChart(rep.per_day.map((d) => ({ ...d, short: d.day.slice(5),
    label: d.day + (d.hours !== 24 ? ` (${d.hours} h)` : "") })), { labelEvery: Math.ceil(rep.per_day.length / 16) }),
  legend(), ...note(`The clocks changed in ${rep.tz}: ${odd.map((d) => `${d.day} had ${d.hours} hours`).join(", ")}.`));
  $("by-hour").replaceChildren(barChart(rep.by_hour_of_day.map((h) => ({ ...h, label: `${String(h.hour).padStart(2, "0")}:00`,
    short: String(h.hour).padStart(2, "0") }))), legend(),
  ...note("The hour the clocks repeat is counted (twice as long) in its local hour; the hour they skip has none."));

  const maxSrc = Math.max(0, ...rep.busiest_sources.map((s) => s.total));
  $("busiest").replaceChildren(rep.busiest_sources.length ? table(["camera", num("incidents"), "", num("high+"), num("open")],
    rep.busiest_sources.map((s) => [untrusted(s.source_id, 40), s.total, hbar(s.total, maxSrc), s.high + s.critical, s.open]),
    "busiest") : el("p", { class: "none" }, "None."));

  const srcRows = rep.by_source.map((s) => [untrusted(s.source_id, 40), s.drone_id ? untrusted(s.drone_id, 30) : "",
    ...SEVERITIES.map((k) => s[k]), s.total, s.open, s.confirmed, s.dismissed, s.new]);
  for (const d of rep.by_drone) {
    srcRows.push([el("b", {}, "drone ", untrusted(d.drone_id, 30)), `${d.sources.length} source(s)`,
      ...SEVERITIES.map((k) => d[k]), d.total, d.open, "", "", ""]);
  }
  $("by-source").replaceChildren(srcRows.length ? table(["camera", "drone", ...sevHead, num("total"), num("open"),
    num("confirmed"), num("dismissed"), num("new")], srcRows, "by-source") : el("p", { class: "none" }, "None."));

  $("list-confirmed").replaceChildren(eventList(rep.confirmed));
  $("list-severe").replaceChildren(eventList(rep.high_severity));
  $("list-held").replaceChildren(eventList(rep.held, true));
  $("report").hidden = false;
}

function eventList(list, holds = false) {
  const frag = document.createDocumentFragment();
  if (!list.events.length) { frag.append(el("p", { class: "none" }, "None.")); return frag; }
  const rows = list.events.map((e) => {
    const where = e.lat_deg !== null ? `${e.lat_deg.toFixed(5)}, ${e.lon_deg.toFixed(5)}` : "";
    const vessel = el("span", {}, e.vessel_name ? untrusted(e.vessel_name, 30) : "", e.mmsi ? el("small", {}, " MMSI ", untrusted(e.mmsi, 12)) : "");
    const review = el("span", {}, el("span", { class: `status st-${e.review_status}` }, e.review_status),
      e.reviewed_by ? el("small", {}, " by ", untrusted(e.reviewed_by, 30)) : "",
      e.review_reason === "false_detection" ? el("small", {}, " (false detection)") : "");
    const note = el("span", {}, e.review_note ? untrusted(e.review_note, 120) : "");
    if (holds) for (const h of e.holds || []) {
      note.append(el("div", { class: "hold" }, `${h.reason === "evidence_export" ? "evidence export" : "hold"} by `,
        untrusted(h.by, 30), ` ${fmtTime(h.at_ns)}`, h.note ? ": " : "", h.note ? untrusted(h.note, 120) : ""));
    }
    return [eventLink(e.id), untrusted(e.type, 30), sevTag(e.severity), fmtTime(e.start_ns),
      untrusted(e.source_id, 30), where, vessel, review, note];
  });
  frag.append(table(["event", "type", "severity", "start", "camera", "position", "vessel", "review", holds ? "note / holds" : "note"],
    rows, "events"));
  if (list.truncated) frag.append(el("p", { class: "truncated" }, `The first ${list.events.length} of ${list.total} are listed.`));
  else frag.append(el("p", { class: "count" }, `${list.total} incident(s).`));
  return frag;
}

// ---- wiring -------------------------------------------------------------------------------------------------------
$("period").addEventListener("change", () => { setPeriod(); if ($("period").value !== "custom") make(); });
for (const id of ["from", "to"]) {
  $(id).addEventListener("change", () => { $("period").value = "custom"; setPeriod(); });
  $(id).addEventListener("input", () => showZone());
}
$("tz-mode").addEventListener("change", () => setTimeMode($("tz-mode").value));
$("tz-mode").addEventListener("focus", () => { $("tz-mode").options[1].textContent = modeText("local"); });  // the offset now
onTimeModeChange(applyTimeMode);
$("controls").addEventListener("submit", (e) => { e.preventDefault(); if ($("period").value !== "custom") setPeriod(); make(); });
$("print").addEventListener("click", () => window.print());
bindLoginForm($("login-form"), $("login-error"), () => start().catch(() => {}));
window.seawatchReport = { state, fmtTime, make };
start().catch(() => {});
