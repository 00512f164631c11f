// Seawatch display times: every time shown to a person, and every time a person types, goes through here.
// The service keeps and sends UTC (int ns); the operator chooses whether the pages show UTC (the default: what the
// evidence, the exports and the logs say) or the browser's own time zone ("local"). The choice is kept in the browser
// (localStorage "seawatch-times") and shared by every page of this origin (/, /wall, /calibrate); a change in one tab
// reaches the others through the storage event.
//
// Local times carry their zone in the text ("2026-10-25 02:30:00 CEST"), so the two readings of the repeated autumn
// hour stay distinguishable (CEST, then CET; a zone without a letter abbreviation gets its offset: "UTC+5:30").
// Offsets come from Intl.DateTimeFormat with the browser's IANA zone, so daylight saving time follows the zone's
// rules at each instant, not today's offset.
//
// A wall-clock time typed in the local zone (a datetime-local input) can be
//   - skipped (the spring-forward hour, 02:30 in Amsterdam on the last Sunday of March): it is refused with a message
//     saying so (readInput's `error`), never moved by an hour silently;
//   - ambiguous (the autumn hour, 02:30 twice): readInput gives both instants (`ambiguous: [first, second]`) and
//     `ns` is the one the caller asked for (`pick`: "first" or "second"); the caller says which it used.
// UTC input is never either.
"use strict";

export const TIMES_KEY = "seawatch-times";
const MODES = new Set(["utc", "local"]);
const listeners = new Set();

/** "utc" (the default) or "local": the display zone chosen in this browser. */
export function timeMode() {
  let v = null;
  try { v = localStorage.getItem(TIMES_KEY); } catch (e) { /* storage blocked: the default */ }
  return MODES.has(v) ? v : "utc";
}

/** Choose the display zone ("utc" / "local"), kept in the browser; every listener is told. */
export function setTimeMode(mode) {
  if (!MODES.has(mode)) throw new Error(`unknown time mode ${mode}`);
  try { localStorage.setItem(TIMES_KEY, mode); } catch (e) { /* not kept, still applied to this page */ }
  memo = mode;
  for (const f of listeners) f(mode);
}
let memo = null;
// the mode in force on this page: what setTimeMode set, else what the browser keeps (read once, then on changes)
const mode = () => (memo ??= timeMode());

/** Call f(mode) when the display zone changes, here or in another tab of this origin. */
export function onTimeModeChange(f) { listeners.add(f); }
window.addEventListener("storage", (e) => {
  if (e.key !== TIMES_KEY && e.key !== null) return;
  const m = timeMode();
  if (m === memo) return;
  memo = m;
  for (const f of listeners) f(m);
});

/** The browser's IANA time zone ("Europe/Amsterdam"); "UTC" when it does not say. */
export function localZone() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (e) { return "UTC"; }
}

// ---- offsets ------------------------------------------------------------------------------------------------------
const partsFmt = new Map(), nameFmt = new Map();
function wallParts(ms, zone) {
  let f = partsFmt.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", { timeZone: zone, hourCycle: "h23", year: "numeric", month: "numeric",
      day: "numeric", hour: "numeric", minute: "numeric", second: "numeric", era: "short" });
    partsFmt.set(zone, f);
  }
  const p = {};
  for (const { type, value } of f.formatToParts(ms)) p[type] = value;
  return p;
}

/** The zone's offset from UTC at the instant `ms` (ms since the epoch), in ms (Amsterdam in winter: 3600000). */
export function offsetMs(ms, zone = localZone()) {
  if (zone === "UTC") return 0;
  const s = Math.floor(ms / 1000) * 1000;  // offsets change on whole seconds; the parts have no milliseconds
  const p = wallParts(s, zone);
  let year = Number(p.year);
  if (p.era && /^B/.test(p.era)) year = 1 - year;
  const d = new Date(0);
  d.setUTCFullYear(year, Number(p.month) - 1, Number(p.day));  // not Date.UTC: it maps years 0-99 to 1900-1999
  d.setUTCHours(Number(p.hour) % 24, Number(p.minute), Number(p.second), 0);
  return d.getTime() - s;
}

/** An offset in ms as "UTC+1", "UTC-3:30", "UTC+0". */
export function offsetText(off) {
  const m = Math.round(Math.abs(off) / 60000), h = Math.floor(m / 60), mm = m % 60;
  return `UTC${off < 0 ? "-" : "+"}${h}${mm ? ":" + String(mm).padStart(2, "0") : ""}`;
}

// The zone's abbreviation at ms ("CET", "CEST", "GMT", "BST") where ICU has a letter one, else the offset.
function zoneName(ms, zone) {
  const off = offsetMs(ms, zone);
  let f = nameFmt.get(zone);
  if (!f) { f = new Intl.DateTimeFormat("en-GB", { timeZone: zone, timeZoneName: "short" }); nameFmt.set(zone, f); }
  const n = (f.formatToParts(ms).find((p) => p.type === "timeZoneName") || {}).value || "";
  return /^[A-Z]{2,5}$/.test(n) && n !== "UTC" ? n : off === 0 && zone === "UTC" ? "UTC" : offsetText(off);
}

// ---- showing times ------------------------------------------------------------------------------------------------
const zoneOf = (m) => (m === "utc" ? "UTC" : localZone());

/** The IANA zone of a display mode (default: the chosen one): "UTC", or the browser's ("Europe/Amsterdam"); what a
 * page asks the service to count days and hours in (GET /api/report?tz=). */
export function displayZone(m = mode()) { return zoneOf(m); }

// int ns (a double here: within ~256 ns) to whole ms, truncated (a picture at .250999 s is "…:00.250"); rounded to the
// microsecond first, so the double's error never turns .250 into .249
const toMs = (ns) => Math.floor(Math.round(Number(ns) / 1e3) / 1e3);

/** The zone label of the instant `ns` (UTC ns) in the display zone: "UTC", "CET", "CEST". */
export function zoneLabel(ns = Date.now() * 1e6, m = mode()) {
  return m === "utc" ? "UTC" : zoneName(ns / 1e6, localZone());
}

/**
 * The instant `ns` (int ns UTC) as text in the display zone: "2026-09-21 14:13:24 UTC", "2026-09-21 16:13:24 CEST".
 * opts: ms (milliseconds: "…:24.250"), date (false: the time of day only), seconds (false: "14:13"), zone (false: no
 * label, where the text around it names the zone), mode ("utc" / "local": another zone than the one chosen).
 */
export function formatTime(ns, { ms = false, date = true, seconds = true, zone = true, mode: m = mode() } = {}) {
  const t = toMs(ns);
  if (!Number.isFinite(t)) return "—";
  const z = zoneOf(m), off = offsetMs(t, z);
  const iso = new Date(t + off).toISOString();  // the wall-clock reading, written with the ISO layout
  const hms = iso.slice(11, ms ? 23 : seconds ? 19 : 16);
  const text = date ? `${iso.slice(0, 10)} ${hms}` : hms;
  return zone ? `${text} ${m === "utc" ? "UTC" : zoneName(t, z)}` : text;
}

/** The calendar date of `ns` in the display zone: "2026-09-21". */
export function formatDate(ns, m = mode()) {
  const t = toMs(ns);
  return Number.isFinite(t) ? new Date(t + offsetMs(t, zoneOf(m))).toISOString().slice(0, 10) : "—";
}

/** The same instant in the zone not chosen (for a tooltip): "= 2026-09-21 14:13:24 UTC". */
export function otherZoneTitle(ns, opts = {}) {
  const other = mode() === "utc" ? "local" : "utc";
  if (other === "local" && localZone() === "UTC") return "";
  return "= " + formatTime(ns, { ...opts, mode: other });
}

/** What the header says of a mode: "UTC", "local (Europe/Amsterdam, UTC+1)" (the offset now). */
export function modeText(m) {
  return m === "utc" ? "UTC" : `local (${localZone()}, ${offsetText(offsetMs(Date.now(), localZone()))})`;
}

// ---- typed times --------------------------------------------------------------------------------------------------
const INPUT_RE = /^(\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,3}))?)?$/;

/**
 * A datetime-local value ("2026-10-25T02:30" or with seconds) read in the display zone. Returns null for an empty
 * value; {error} for one that is malformed or does not exist in the zone (skipped by a spring-forward change);
 * else {ns, label} (label: the zone's label at that instant), with ambiguous: [firstNs, secondNs] when the zone
 * shows that reading twice (the autumn change), ns being the `pick` one ("first" or "second").
 */
export function readInput(value, { pick = "first", mode: m = mode() } = {}) {
  if (!value) return null;
  const g = INPUT_RE.exec(value);
  if (!g) return { error: `not a date and time: ${value}` };
  const d = new Date(0);
  d.setUTCFullYear(Number(g[1]), Number(g[2]) - 1, Number(g[3]));
  d.setUTCHours(Number(g[4]), Number(g[5]), Number(g[6] || 0), Number((g[7] || "0").padEnd(3, "0")));
  const wall = d.getTime();
  if (!Number.isFinite(wall)) return { error: `not a date and time: ${value}` };
  if (m === "utc") return { ns: wall * 1e6, label: "UTC" };
  const z = localZone();
  // the offsets in force within a day either side (a zone changes at most once in that time, in practice), and the
  // instants among `wall - offset` whose reading in the zone is `wall`
  const offs = new Set([-86400e3, -43200e3, 0, 43200e3, 86400e3].map((dt) => offsetMs(wall + dt, z)));
  const hits = [...offs].map((o) => wall - o).filter((t) => offsetMs(t, z) === wall - t).sort((a, b) => a - b);
  const shown = value.replace("T", " ");
  if (!hits.length) {
    const before = offsetMs(wall - 86400e3, z), after = offsetMs(wall + 86400e3, z);
    return { error: `${shown} does not exist in ${z}: the clocks were put forward there` +
      (after !== before ? ` (${zoneName(wall - before - 86400e3, z)} to ${zoneName(wall - after + 86400e3, z)})` : "") +
      "; give a time before or after the change" };
  }
  if (hits.length === 1) return { ns: hits[0] * 1e6, label: zoneName(hits[0], z) };
  const [a, b] = [hits[0], hits[hits.length - 1]], t = pick === "second" ? b : a;
  return { ns: t * 1e6, label: zoneName(t, z), ambiguous: [a * 1e6, b * 1e6] };
}

/**
 * The instant `ns` as a datetime-local value in the display zone ("2026-10-25T02:30:00", whole seconds), with
 * fold: null, or "first" / "second" when that reading occurs twice in the zone (which of them `ns` is).
 */
export function inputValue(ns, m = mode()) {
  const t = Math.floor(ns / 1e9) * 1000, z = zoneOf(m);
  const value = new Date(t + offsetMs(t, z)).toISOString().slice(0, 19);
  const r = m === "utc" ? null : readInput(value, { mode: m });
  const fold = r && r.ambiguous ? (r.ambiguous[0] === t * 1e6 ? "first" : "second") : null;
  return { value, fold };
}
