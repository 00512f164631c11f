// What every Seawatch page (the operator UI, the camera wall, the calibration page) shares: where the service is as
// this browser reaches it, whether the page is framed, the log-in, and how text from outside is shown.
// Plain ES module, no build step.
"use strict";
import { displayText } from "./map.js";

// The folder above this module ("ui/session.js"): "https://host/" at a host's root and
// "https://ops.port.example/seawatch/" behind a reverse proxy that serves the service under a path prefix (and strips
// it). Every request a page makes is relative to it ("api/events", "ui/coastline.json"), never to the host's root,
// so the service need not know the prefix for the pages to work.
export const ROOT = new URL("../", import.meta.url);
export const here = (path) => new URL(path, ROOT).href;

// Never inside another site's page (clickjacking: a page in a hidden frame under a decoy button): the pages say so
// in their CSP header (frame-ancestors 'none'), but a copy served from elsewhere carries no such header. Checked as
// this module loads, before a page's own script runs: nothing is shown, and a page uses no credential when FRAMED.
export const FRAMED = (() => { try { return window.top !== window.self; } catch { return true; } })();
if (FRAMED) document.body.replaceChildren("Seawatch is not shown inside another page: open it in its own tab.");

// Text the service does not control (a vessel's name from AIS or the registry, a note, who wrote it, a camera id) as
// a <bdi>: shown by map.js's displayText (invisible and bidi control characters visible, at most `max` characters,
// the whole in the tooltip when cut) and isolated, so it cannot reorder or hide the text around it.
export function untrusted(text, max = 0) {
  const b = document.createElement("bdi");
  b.textContent = displayText(text, max);
  if (max && b.textContent !== displayText(text)) b.title = displayText(text, 2000);
  return b;
}

// The credential of this tab: a kiosk's #key= or #token= in the address (never sent to the server as part of a URL),
// else the token of this tab's log-in; null when there is none.
export function readAuth() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.get("key")) return { "X-API-Key": h.get("key") };
  if (h.get("token")) return { Authorization: "Bearer " + h.get("token") };
  const t = sessionStorage.getItem("seawatch-token");
  return t ? { Authorization: "Bearer " + t } : null;
}

// A page's start: the tab's credential into state.auth, and who it is (GET api/auth/me) into state.who and the header's
// #who; null, after onNone() (the page's log-in form), when the tab has no credential (or the page is framed).
export async function signIn(state, json, onNone) {
  state.auth = FRAMED ? null : readAuth();
  if (!state.auth) { if (!FRAMED) onNone(); return null; }
  const me = await json("api/auth/me");
  state.who = me;
  document.getElementById("who").replaceChildren(untrusted(me.name, 40), ` (${me.role})`);
  return me;
}

// Requests to the API with the credential getAuth() gives: a 401 calls onUnauthorized (the page's log-in form) and
// throws; another failure throws an Error with the service's message, its `status` and `retryAfterS` (Retry-After).
export function apiClient(getAuth, onUnauthorized) {
  async function api(path, opts = {}) {
    const r = await fetch(here(path), { ...opts, headers: { ...(opts.headers || {}), ...getAuth() } });
    if (r.status === 401) { onUnauthorized(); throw Object.assign(new Error("unauthorized"), { status: 401 }); }
    if (!r.ok) {
      const b = await r.json().catch(() => ({}));
      throw Object.assign(new Error((b.error && b.error.message) || r.statusText),
        { status: r.status, retryAfterS: parseInt(r.headers.get("Retry-After") || "", 10) || 0 });
    }
    return r;
  }
  const json = async (path, opts) => (await api(path, opts)).json();
  return { api, json };
}

// A log-in form (user name and password): posted as JSON by the script, never by the browser (the pages' CSP has
// form-action 'none', so a form sent before the script has taken it goes nowhere, a password never into a URL). The
// token is kept for this tab's session (every Seawatch page in the tab is then logged in); then onLoggedIn().
export function bindLoginForm(form, errorEl, onLoggedIn) {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const r = await fetch(here("api/auth/login"), { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: f.get("username"), password: f.get("password") }) });
    const b = await r.json().catch(() => ({}));
    if (!r.ok) { errorEl.textContent = (b.error && b.error.message) || r.statusText; return; }
    errorEl.textContent = "";
    sessionStorage.setItem("seawatch-token", b.access_token);
    onLoggedIn();
  });
}
