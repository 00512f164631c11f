"""The display-time choice of the web UI in headless Chromium, the browser in Amsterdam (Playwright's timezone_id):
UTC by default; "times: local" in the operator page's header shows every time in Europe/Amsterdam with its zone
(CET in winter, CEST in summer, the repeated autumn hour's two readings told apart), kept across a reload and read by
the camera wall; the filters and the recordings' "from" are typed in the chosen zone and sent to the API as the right
UTC instants (a local time that the zone shows twice is read deliberately, one it skips is refused). The expected
local readings come from Python's zoneinfo, not from the page's own code."""

from __future__ import annotations

import re
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")

from conftest import serve_in_thread  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from test_service_store import make_event  # noqa: E402
from test_service_ui import _browser, _playwright, _wait  # noqa: E402
from test_wall_ui import FakeCameras  # noqa: E402
from test_recordings_ui import KEY as REC_KEY, recording_service  # noqa: E402,F401 - recording_service: a fixture

KEY = "local-time-ui-key-0123456789abcdef"
AMS = ZoneInfo("Europe/Amsterdam")
ZONE = "Europe/Amsterdam"


def _ns(iso: str) -> int:
    """'2026-01-15T12:00:00Z' as int ns UTC."""
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()) * 1_000_000_000


def _local(ns: int, ms: bool = False) -> str:
    """What the page should show for ``ns`` in Amsterdam: '2026-01-15 13:00:00 CET' (zoneinfo's reading)."""
    d = datetime.fromtimestamp(ns / 1e9, timezone.utc).astimezone(AMS)
    return d.strftime("%Y-%m-%d %H:%M:%S") + (f".{d.microsecond // 1000:03d}" if ms else "") + " " + d.tzname()


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# the events: winter, summer, both readings of 02:30 on the night the clocks go back (25 October 2026), and 03:30 CET
EVENTS = {"ev00000": _ns("2026-01-15T12:00:00Z"), "ev00001": _ns("2026-07-15T12:00:00Z"),
          "ev00002": _ns("2026-10-25T00:30:00Z"), "ev00003": _ns("2026-10-25T01:30:00Z"),
          "ev00004": _ns("2026-10-25T02:30:00Z")}
ROWS = "[...document.querySelectorAll('#events tbody tr')].map(tr => tr.dataset.id)"
CELLS = "Object.fromEntries([...document.querySelectorAll('#events tbody tr')].map(tr => [tr.dataset.id, tr.cells[0].textContent]))"


def _app(tmp_path: Path, cams: FakeCameras):
    cfg = load_config(data={"storage": {"data_dir": str(tmp_path / "data")},
                            "sources": [{"id": i, "url": f"rtsp://cam/{i}"} for i in cams.calls],
                            "auth": {"api_keys": [{"name": "desk", "role": "operator", "key_sha256": hash_api_key(KEY)}]}})
    app = create_app(cfg, source_status=cams.source_status, latest_frame=cams.latest_frame)
    return app


def _fill(app):
    for i, (eid, t) in enumerate(EVENTS.items()):
        app.state.store.put(make_event(i, type="smoke", severity="low", source_id="quay-1", start_ns=t, at_ns=t))
    assert [e for e in EVENTS] == [f"ev{i:05d}" for i in range(len(EVENTS))]


def _page(ctx, url: str):
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/" in r.url else None)
    page.goto(url)
    return page, errors, asked


def _value(page, selector: str) -> str:
    """A datetime-local input's value with its seconds (Chromium leaves off ':00')."""
    v = page.input_value(selector)
    return v + ":00" if len(v) == 16 else v


def _choose(page, mode: str):
    page.select_option("#tz-mode", mode)
    _wait(page, f"document.getElementById('tz-mode').value === '{mode}'")


def test_times_default_to_utc_and_local_shows_amsterdam_time_everywhere(tmp_path):
    """The default is UTC (no zone choice kept yet), also in a browser in Amsterdam. "local" shows the winter event
    in CET, the summer one in CEST and the autumn hour's two events as two different readings; the header names the
    zone and its offset now; the detail and a tooltip follow; the choice survives a reload and the camera wall (same
    browser) shows its clock and its tiles' capture times in local time with the zone; back to UTC, UTC again."""
    cams = FakeCameras(("quay-1",))
    app = _app(tmp_path, cams)
    with serve_in_thread(app) as port, _playwright() as p:
        _fill(app)
        browser = _browser(p)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id=ZONE)
        base = f"http://127.0.0.1:{port}"
        page, errors, _ = _page(ctx, f"{base}/#key={KEY}")
        _wait(page, f"{ROWS}.length === 5")
        # ---- the default: UTC, whatever the browser's zone
        assert page.evaluate("document.getElementById('tz-mode').value") == "utc"
        assert page.evaluate(CELLS) == {eid: _utc(t) for eid, t in EVENTS.items()}
        assert page.text_content("#th-start") == "start (UTC)"
        assert "(UTC)" in page.text_content("#filters label:has(#f-from)")
        page.click('#events tr[data-id="ev00003"]')
        _wait(page, "document.getElementById('detail').dataset.id === 'ev00003'")
        assert page.text_content("#d-meta").startswith("started 2026-10-25 01:30:00 UTC")

        # ---- local: the header says which zone and its offset now (from zoneinfo)
        off_h = datetime.now(AMS).utcoffset().total_seconds() / 3600
        assert page.evaluate("document.getElementById('tz-mode').options[1].textContent") == f"local ({ZONE}, UTC+{off_h:g})"
        _choose(page, "local")
        _wait(page, f"{CELLS}['ev00000'] !== '{_utc(EVENTS['ev00000'])}'")
        cells = page.evaluate(CELLS)
        assert cells == {eid: _local(t) for eid, t in EVENTS.items()}, cells
        assert cells["ev00000"] == "2026-01-15 13:00:00 CET" and cells["ev00001"] == "2026-07-15 14:00:00 CEST"
        # the repeated hour: the same clock reading twice, told apart by the zone (summer time first)
        assert cells["ev00002"] == "2026-10-25 02:30:00 CEST" and cells["ev00003"] == "2026-10-25 02:30:00 CET"
        assert page.text_content("#th-start") == "start (local)"
        # the other zone in the tooltip
        assert page.evaluate("document.querySelector('#events tr[data-id=\"ev00003\"] td').title") == "= 2026-10-25 01:30:00 UTC"
        # the open detail is drawn again in the new zone
        _wait(page, "document.getElementById('d-meta').textContent.startsWith('started 2026-10-25 02:30:00 CET')")
        # the typed-time labels name the zone of now (nothing typed yet)
        now_name = datetime.now(AMS).tzname()
        assert f"({now_name})" in page.text_content("#filters label:has(#f-from)")
        # milliseconds kept (the recordings' capture time is shown to the millisecond): the module the pages share
        shown = page.evaluate("import('./ui/timefmt.js').then(m => m.formatTime(1784116800250000000, { ms: true }))")
        assert shown == _local(1784116800250000000, ms=True) == "2026-07-15 14:00:00.250 CEST"

        # ---- kept across a reload
        page.reload()
        _wait(page, f"{ROWS}.length === 5")
        assert page.evaluate("document.getElementById('tz-mode').value") == "local"
        assert page.evaluate(CELLS) == {eid: _local(t) for eid, t in EVENTS.items()}

        # ---- the camera wall in the same browser: the clock and the tiles in local time, with the zone
        wall, wall_errors, _ = _page(ctx, f"{base}/wall#key={KEY}")
        _wait(wall, "window.seawatchWall.state.tiles.get('quay-1') && window.seawatchWall.state.tiles.get('quay-1').captureNs")
        _wait(wall, "/ CES?T$/.test(document.getElementById('clock').textContent)")
        clock = wall.text_content("#clock")
        assert re.fullmatch(r"\d\d:\d\d:\d\d (CET|CEST)", clock) and clock.endswith(" " + datetime.now(AMS).tzname())
        h, m, s = map(int, clock[:8].split(":"))
        local_now = datetime.now(AMS)
        assert abs((local_now.hour * 3600 + local_now.minute * 60 + local_now.second) - (h * 3600 + m * 60 + s)) % 86400 < 5
        cap = wall.evaluate("window.seawatchWall.state.tiles.get('quay-1').captureNs")
        age = wall.text_content('#wall .tile[data-id="quay-1"] .age')
        assert age.startswith(_local(int(cap))[11:] + ", "), (age, cap)
        # ---- back to UTC on the operator page: the wall follows (the browser's storage event), the list too
        _choose(page, "utc")
        _wait(page, f"{CELLS}['ev00000'] === '{_utc(EVENTS['ev00000'])}'")
        _wait(wall, "/^\\d\\d:\\d\\d:\\d\\d UTC$/.test(document.getElementById('clock').textContent)")
        _wait(wall, "/UTC, \\d+ s ago/.test(document.querySelector('#wall .tile[data-id=\"quay-1\"] .age').textContent)")
        _wait(page, "document.getElementById('d-meta').textContent.startsWith('started 2026-10-25 01:30:00 UTC')")
        assert errors == [] and wall_errors == []
        browser.close()


def _search_params(asked: list[str], since: int) -> dict:
    """The query of the last event search the page sent after ``asked[since:]``."""
    hits = [u for u in asked[since:] if urlsplit(u).path.endswith("/api/events") and "sort=" not in u]
    assert hits, asked[since:]
    return {k: v[0] for k, v in parse_qs(urlsplit(hits[-1]).query).items()}


def test_filters_typed_in_local_time_send_the_right_instants(tmp_path):
    """With local times chosen, "from" / "to" are read in Amsterdam time: a summer and a winter time are sent as the
    UTC instants an hour or two earlier, and find the right event; 02:30 on the night the clocks go back reads as
    its first occurrence in "from" and its second in "to" (both events found, the note says so); 02:30 on the night
    they go forward does not exist and is refused, no search sent. In UTC the same typing means UTC, and switching
    the zone keeps the instant typed."""
    cams = FakeCameras(("quay-1",))
    app = _app(tmp_path, cams)
    with serve_in_thread(app) as port, _playwright() as p:
        _fill(app)
        browser = _browser(p)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id=ZONE)
        page, errors, asked = _page(ctx, f"http://127.0.0.1:{port}/#key={KEY}")
        _wait(page, f"{ROWS}.length === 5")

        def search(frm: str, to: str) -> dict:
            n = len(asked)
            page.fill("#f-from", frm)
            page.fill("#f-to", to)
            page.click("#filters button:text-is('Search')")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any("/api/events?" in u for u in asked[n:]):
                time.sleep(0.05)
            page.wait_for_timeout(300)
            return _search_params(asked, n)

        # ---- UTC (the default): typed as UTC
        q = search("2026-07-15T12:00:00", "2026-07-15T12:00:01")  # "to" is exclusive
        assert (q["start_from"], q["start_to"]) == ("2026-07-15T12:00:00.000Z", "2026-07-15T12:00:01.000Z")
        _wait(page, f"JSON.stringify({ROWS}) === '[\"ev00001\"]'")
        # ---- switching to local keeps the instants typed: the inputs now say 14:00 (CEST)
        _choose(page, "local")
        assert _value(page, "#f-from") == "2026-07-15T14:00:00" and _value(page, "#f-to") == "2026-07-15T14:00:01"
        assert "(CEST)" in page.text_content("#filters label:has(#f-from)")
        # ---- summer and winter, typed in local time
        q = search("2026-07-15T14:00:00", "2026-07-15T14:00:01")
        assert (q["start_from"], q["start_to"]) == ("2026-07-15T12:00:00.000Z", "2026-07-15T12:00:01.000Z")
        _wait(page, f"JSON.stringify({ROWS}) === '[\"ev00001\"]'")
        q = search("2026-01-15T13:00:00", "2026-01-15T13:00:01")
        assert (q["start_from"], q["start_to"]) == ("2026-01-15T12:00:00.000Z", "2026-01-15T12:00:01.000Z")
        _wait(page, f"JSON.stringify({ROWS}) === '[\"ev00000\"]'")
        assert "(CET)" in page.text_content("#filters label:has(#f-from)")
        # ---- the repeated hour: from its first reading (CEST) to its second (CET); 03:30 CET is outside
        q = search("2026-10-25T02:30:00", "2026-10-25T02:30:01")
        assert (q["start_from"], q["start_to"]) == ("2026-10-25T00:30:00.000Z", "2026-10-25T01:30:01.000Z")
        _wait(page, f"JSON.stringify({ROWS}.sort()) === '[\"ev00002\",\"ev00003\"]'")
        note = page.text_content("#f-time-note")
        assert "occurs twice" in note and "CEST, then CET" in note, note
        # ---- the skipped hour: refused, saying why, and nothing asked of the API
        n = len(asked)
        page.fill("#f-from", "2026-03-29T02:30:00")
        page.fill("#f-to", "")
        page.click("#filters button:text-is('Search')")
        _wait(page, "document.getElementById('count').textContent.includes('does not exist')")
        page.wait_for_timeout(300)
        assert not [u for u in asked[n:] if "/api/events?" in u and "start_from" in u]
        assert errors == []
        browser.close()


def _rec_params(asked: list[str], since: int) -> dict:
    hits = [u for u in asked[since:] if re.search(r"/api/sources/quay-1/recordings\?", u)]
    assert hits, asked[since:]
    q = parse_qs(urlsplit(hits[-1]).query)
    return {"start_ns": int(q["start_ns"][0]), "end_ns": int(q["end_ns"][0])}


def test_recordings_from_in_local_time_asks_for_the_right_window(tmp_path):
    """The recordings panel in local time: a window opened at an instant of the repeated hour shows it as its local
    reading with "the second" chosen; a summer time typed asks for the window two hours earlier in UTC (the title in
    CEST); 02:30 of the autumn night offers both readings and asks for the one chosen; ◀ keeps the reading; the skipped
    spring hour is refused."""
    cams = FakeCameras(("quay-1",))
    app = _app(tmp_path, cams)
    with serve_in_thread(app) as port, _playwright() as p:
        _fill(app)
        browser = _browser(p)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id=ZONE)
        page, errors, asked = _page(ctx, f"http://127.0.0.1:{port}/#key={KEY}")
        _wait(page, f"{ROWS}.length === 5")
        _choose(page, "local")

        def shown(since: int) -> dict:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any("/recordings?" in u for u in asked[since:]):
                time.sleep(0.05)
            return _rec_params(asked, since)

        # ---- opened at 01:30 UTC on 25 October (02:30 CET, the second 02:30 of that night)
        n = len(asked)
        page.evaluate(f"window.seawatch.openRecordings('quay-1', {EVENTS['ev00003']}, 300)")
        assert shown(n) == {"start_ns": EVENTS["ev00003"], "end_ns": EVENTS["ev00003"] + 300 * 10**9}
        assert _value(page, "#rec-from") == "2026-10-25T02:30:00"
        assert page.is_visible("#rec-fold") and page.input_value("#rec-fold") == "second"
        assert "(CET)" in page.text_content("#recordings label:has(#rec-from)")
        assert page.text_content("#rec-title") == "Recordings: quay-1, 2026-10-25 02:30:00 CET – 2026-10-25 02:35:00 CET"
        # ---- ◀: the previous 5 minutes, 02:25 CET (still the second reading)
        n = len(asked)
        page.click("#rec-prev")
        assert shown(n)["start_ns"] == EVENTS["ev00003"] - 300 * 10**9
        assert _value(page, "#rec-from") == "2026-10-25T02:25:00" and page.input_value("#rec-fold") == "second"
        # ---- a summer time typed: 14:00 CEST is 12:00 UTC
        n = len(asked)
        page.fill("#rec-from", "2026-07-15T14:00:00")
        assert page.is_hidden("#rec-fold")
        page.click("#rec-show")
        assert shown(n) == {"start_ns": EVENTS["ev00001"], "end_ns": EVENTS["ev00001"] + 300 * 10**9}
        assert page.text_content("#rec-title") == "Recordings: quay-1, 2026-07-15 14:00:00 CEST – 2026-07-15 14:05:00 CEST"
        assert page.text_content("#rec-scale-from") == "2026-07-15 14:00:00 CEST"
        # ---- 02:30 typed on the autumn night: both readings offered, the first by default, then the second
        page.fill("#rec-from", "2026-10-25T02:30:00")
        _wait(page, "!document.getElementById('rec-fold').hidden")
        options = page.evaluate("[...document.getElementById('rec-fold').options].map(o => o.textContent)")
        assert options == ["the first (CEST, UTC+2)", "the second (CET, UTC+1)"]
        n = len(asked)
        page.click("#rec-show")
        assert shown(n)["start_ns"] == EVENTS["ev00002"]
        n = len(asked)
        page.select_option("#rec-fold", "second")
        page.click("#rec-show")
        assert shown(n)["start_ns"] == EVENTS["ev00003"]
        # ---- back to UTC: the same instant in the input, no choice to make in UTC
        _choose(page, "utc")
        assert _value(page, "#rec-from") == "2026-10-25T01:30:00" and page.is_hidden("#rec-fold")
        _choose(page, "local")
        # ---- the skipped hour: refused with the reason, nothing asked
        n = len(asked)
        page.fill("#rec-from", "2026-03-29T02:30:00")
        page.click("#rec-show")
        _wait(page, "document.getElementById('rec-error').textContent.includes('does not exist')")
        page.wait_for_timeout(300)
        assert not [u for u in asked[n:] if "/recordings?" in u]
        assert errors == []
        browser.close()


def _amsterdam_text_ns(text: str) -> int:
    """'2026-01-15 13:00:00.250 CET' (the zone name picking the reading) as int ns UTC, through zoneinfo."""
    day, clock, name = text.split(" ")
    naive = datetime.fromisoformat(f"{day}T{clock}")
    for fold in (0, 1):
        d = naive.replace(tzinfo=AMS, fold=fold)
        if d.tzname() == name:
            return round(d.timestamp() * 1000) * 1_000_000
    raise AssertionError(f"{text}: not a reading in {ZONE}")


@pytest.mark.slow
def test_recordings_capture_time_in_local_time_to_the_millisecond(recording_service):
    """Against the real service recording a camera: with local times chosen, the panel opened from the sources table
    has its "from" in Amsterdam time (the last minute), and the picture shown is named to the millisecond in CET /
    CEST, its tooltip the same instant in UTC; back in UTC the note names that instant."""
    _svc, base, port = recording_service
    with _playwright() as p:
        browser = _browser(p)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id=ZONE)
        page, errors, _ = _page(ctx, f"{base}/#key={REC_KEY}")
        page.wait_for_selector('#sources tr[data-id="quay-1"] .rec-act')
        _choose(page, "local")
        page.click('#sources tr[data-id="quay-1"] .rec-act')
        page.select_option("#rec-len", "60")
        opened_ns = time.time_ns()
        page.click('#sources tr[data-id="quay-1"] .rec-act')
        start_ns = _amsterdam_text_ns(_value(page, "#rec-from").replace("T", " ") + " " + datetime.now(AMS).tzname())
        assert abs(start_ns + 60 * 10**9 - opened_ns) < 2 * 10**9, (_value(page, "#rec-from"), opened_ns)
        _wait(page, "(() => { const v = document.getElementById('rec-video'); return v.readyState >= 2 && v.currentTime > 0.5; })()", 40)
        page.evaluate("document.getElementById('rec-video').pause()")
        page.wait_for_timeout(300)
        note, title = page.text_content("#rec-note"), page.evaluate("document.getElementById('rec-note').title")
        m = re.match(r"picture of (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (?:CET|CEST))", note)
        assert m, note
        shown_ns = _amsterdam_text_ns(m.group(1))
        assert start_ns - 5 * 10**9 <= shown_ns <= start_ns + 62 * 10**9, (note, start_ns)
        mu = re.fullmatch(r"= (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC", title)
        assert mu, title
        assert _ns(mu.group(1).replace(" ", "T") + "Z") + int(mu.group(1)[-3:]) * 10**6 == shown_ns
        if "partial" in note:  # the recorded spans, named in the zone
            assert re.search(r"partial: recorded \d\d:\d\d:\d\d–\d\d:\d\d:\d\d.*\((CET|CEST)\)", note), note
        _choose(page, "utc")
        _wait(page, f"document.getElementById('rec-note').textContent.startsWith('picture of {mu.group(1)} UTC')", 10)
        assert errors == []
        browser.close()
