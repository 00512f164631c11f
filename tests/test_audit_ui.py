"""The audit log page ("/audit", administrators) in headless Chromium against an API-only service over a store of
known audit entries: served like "/report" (the same CSP header, nothing inline, relative URLs, its files on the UI's
allow-list); with an admin key it lists the entries newest first with their times in UTC (timefmt.js), filters them
(an action prefix, an actor, a time range typed in the display zone), follows the cursor ("Older entries"), shows
hostile text as text, and downloads the CSV (formula cells neutralised); the operator page's header links to it for
an admin only, and a viewer is told the log is for administrators (and the service records the refused read)."""

from __future__ import annotations

import re
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import serve_in_thread  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.store import AuditEntry, AuditQuery, EventStore  # noqa: E402
from test_audit_log import ADMIN_KEY, VIEWER_KEY, _settings  # noqa: E402
from test_service_ui import _browser, _playwright, _wait, open_page  # noqa: E402

T0 = 1_790_000_000 * 10**9  # 2026-09-21 14:13:20 UTC
HOSTILE = '<img src=x id=pwned>=cmd|"/c calc"'


@pytest.fixture
def served(tmp_path):
    store = EventStore.open(f"sqlite:///{tmp_path / 'events.db'}")
    # 205 logins a minute apart (more than a page of 200), then an export, a refused drone abort and a hostile name
    for i in range(205):
        store.add_audit(AuditEntry(time_ns=T0 + i * 60 * 10**9, action="auth.login", outcome="ok", status=200,
                                   actor="ada", actor_kind="user", role="admin", client="198.51.100.1", target="ada"))
    t = T0 + 205 * 60 * 10**9
    store.add_audit(AuditEntry(time_ns=t, action="export.evidence", outcome="ok", status=200, actor="rita",
                               actor_kind="key", role="reviewer", client="203.0.113.7", target="ev42",
                               details={"missing": ["clip.mp4"], "clip": False}))
    store.add_audit(AuditEntry(time_ns=t + 10**9, action="drone.abort", outcome="refused", status=409, actor="desk",
                               actor_kind="key", role="operator", client="2001:db8::7", target="patrol-1",
                               details={"mode": "RTL", "error": "no link"}))
    store.add_audit(AuditEntry(time_ns=t + 2 * 10**9, action="auth.login_failed", outcome="refused", status=401,
                               actor=HOSTILE, client="192.0.2.9", details={"reason": "wrong user name or password"}))
    try:
        with serve_in_thread(create_app(_settings(tmp_path), store=store)) as port:
            yield f"http://127.0.0.1:{port}", store
    finally:
        store.close()


def test_audit_page_is_served_like_the_report(tmp_path):
    with TestClient(create_app(_settings(tmp_path))) as c:
        root, page = c.get("/"), c.get("/audit")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == root.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        html = page.text
        assert '<script type="module" src="ui/audit.js"></script>' in html and 'href="ui/audit.css"' in html
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html, re.I), "an inline style or handler"
        assert not re.search(r"""(?:src|href|action)=["']/""", html), "a URL from the host's root"
        assert c.get("/ui/audit.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/ui/audit.css").headers["content-type"].startswith("text/css")
        assert c.get("/ui/audit.html").status_code == 404  # the page only as "/audit", with its header
        js = c.get("/ui/audit.js").text
        assert "http://" not in js and "https://" not in js  # nothing from elsewhere
        assert 'id="to-audit" hidden' in root.text  # the operator page's link, shown to admins by app.js


def _rows(page) -> list[list[str]]:
    return page.evaluate("[...document.querySelectorAll('#rows tr')].map(r => [...r.cells].map(c => c.textContent))")


def test_audit_page_lists_filters_pages_and_downloads(served, tmp_path):
    base, store = served
    with _playwright() as p:
        browser = _browser(p)
        page, errors = open_page(browser, f"{base}/audit#key={ADMIN_KEY}", width=1280, height=900)
        _wait(page, "document.querySelectorAll('#rows tr').length === 200")
        assert page.text_content("#who").startswith("installer")
        rows = _rows(page)
        # newest first, in UTC; hostile text shown as text (no element made of it)
        assert rows[0][0] == "2026-09-21 17:38:22 UTC" and rows[0][1] == HOSTILE and rows[0][6] == "refused 401"
        assert page.evaluate("document.getElementById('pwned')") is None
        assert rows[1][1:7] == ["desk (key)", "operator", "2001:db8::7", "drone.abort", "patrol-1", "refused 409"]
        assert '"error":"no link"' in rows[1][7]
        assert page.evaluate("document.querySelector('#rows tr:nth-child(2)').className") == "refused"
        assert rows[2][4:6] == ["export.evidence", "ev42"]
        assert rows[-1][0] == "2026-09-21 14:21:20 UTC"  # the 200th: the logins 204 down to 8 minutes after T0
        # the cursor: the older entries come below, each once
        assert page.is_visible("#more")
        page.click("#more")
        _wait(page, "document.querySelectorAll('#rows tr').length === 208")
        rows = _rows(page)
        assert rows[-1][0] == "2026-09-21 14:13:20 UTC" and page.is_hidden("#more")
        assert len({r[0] + r[4] for r in rows}) == 208

        # filters: an action prefix, an actor, a time range (typed in UTC, the display zone)
        page.fill("#action", "export")
        page.click("#search")
        _wait(page, "document.querySelectorAll('#rows tr').length === 1")
        assert _rows(page)[0][4] == "export.evidence"
        page.fill("#action", "")
        page.fill("#actor", "ada")
        page.fill("#from", "2026-09-21T14:15:00")
        page.fill("#to", "2026-09-21T14:20:00")
        page.click("#search")
        _wait(page, "document.querySelectorAll('#rows tr').length === 5")
        assert [r[0] for r in _rows(page)] == [f"2026-09-21 14:{m}:20 UTC" for m in (19, 18, 17, 16, 15)]
        assert page.text_content(".tz[data-for=from]") == "UTC"

        # CSV of what the filters find, through the API with the page's credential
        with page.expect_download() as dl:
            page.click("#csv")
        path = tmp_path / "audit.csv"
        dl.value.save_as(path)
        text = path.read_bytes().decode("utf-8")
        assert text.startswith("\ufeff") and text.count("\r\n") == 6 and "auth.login" in text
        assert errors == [], errors

        # the reads and the export were recorded, by the admin
        reads = store.audit_log(AuditQuery(action="audit", limit=50))[0]
        assert {e.action for e in reads} == {"audit.read", "audit.export"} and {e.actor for e in reads} == {"installer"}
        export = next(e for e in reads if e.action == "audit.export")
        assert export.details["filters"] == {"actor": "ada", "from": "2026-09-21T14:15:00Z", "to": "2026-09-21T14:20:00Z"}

        # the operator page: the header's link for an admin, keeping the kiosk's key
        page.goto(f"{base}/#key={ADMIN_KEY}")
        _wait(page, "!document.getElementById('main').hidden")
        assert page.is_visible("#to-audit") and page.get_attribute("#to-audit", "href") == f"{base}/audit#key={ADMIN_KEY}"

        # a viewer: no link, and the page says the log is for administrators
        viewer, errors = open_page(browser, f"{base}/#key={VIEWER_KEY}")
        _wait(viewer, "!document.getElementById('main').hidden")
        assert viewer.is_hidden("#to-audit")
        viewer.goto(f"{base}/audit#key={VIEWER_KEY}")
        _wait(viewer, "document.getElementById('status').textContent.includes('for administrators')")
        assert _rows(viewer) == [] and viewer.is_disabled("#search")
        assert errors == [], errors
