"""One vessel, one alert, in the operator UI (headless Chromium against a real service: the API, its live feed and
the service's own sink path): the same boat's alerts on two cameras arrive, the later one linked to the first.

The unidentified_vessel pair comes from the two-camera pipeline of ``test_vessel_alert_link`` (the identity stage's
real events): the list marks the linked alert "same vessel as quay" and the first "also seen by pier", the linked
one's detail says "same vessel as <link to the first> seen by quay, 60 m apart", the link opens the first, whose
detail names the pier's alert; a text search for the first alert's id finds both. Alarms: a high ``ais_dark`` on the
quay alarms (tone, tab title, desktop notification), the same MMSI's ``ais_dark`` on the pier, linked to it by the
linker, does not; an unrelated high incident after it still alarms.
"""

from __future__ import annotations

import re
import time
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
from conftest import serve_in_thread  # noqa: E402
from seawatch.service.app import create_app  # noqa: E402
from seawatch.service.auth import hash_api_key  # noqa: E402
from seawatch.service.config import load_config  # noqa: E402
from seawatch.service.snooze import SnoozingSink  # noqa: E402
from seawatch.vision.events import Event, GeoPosition  # noqa: E402
from seawatch.vision.identity.link import VesselAlertLinker  # noqa: E402
from test_live_view import _FAKE_NOTIFICATIONS  # noqa: E402
from test_service_store import make_event  # noqa: E402
from test_service_ui import _browser, _playwright, _wait  # noqa: E402
from test_vessel_alert_link import PIER, _ahead, _beyond, _run  # noqa: E402

KEY = "vessel-link-ui-operator-0123456789"
ROW = "document.querySelector('#events tr[data-id=\"%s\"]')"


def _dark_pair() -> list[Event]:
    """A high ais_dark on the quay camera and the same MMSI's on the pier camera 20 s later, 40 m away: the second
    linked to the first by the identity stage's linker (its attributes and the first's update, as the stage adds them)."""
    linker = VesselAlertLinker()
    out = []
    for i, (eid, source, where) in enumerate([("dark-quay", "quay", _ahead(400.0, 0.0)),
                                              ("dark-pier", "pier", _ahead(440.0, 0.0))]):
        ev = make_event(10 + i * 20, id=eid, type="ais_dark", severity="high", source_id=source, zone_id="fairway",
                        labels=("vessel",), clip=None, geo=GeoPosition(where[0], where[1], 30.0, 2.0, 30.0),
                        attributes={"condition_key": "211000001", "mmsi": 211000001,
                                    "reason": "MMSI 211000001 (NORDWIND) silent for 200 s while seen by camera"})
        link = linker.link(ev)
        if link is None:
            out.append(ev)
            continue
        out.append(Event.from_dict(ev.to_dict() | {"attributes": {**ev.attributes, **link.attributes}}))
        first = out[0]
        out.append(Event.from_dict(first.to_dict() | {"phase": "update", "seq": 1, "at_ns": ev.at_ns, "attributes": {
            **first.attributes, "also_seen_by": [link.also_seen_by], "vessel_link": link.vessel_link}}))
    return out


@pytest.mark.slow
def test_ui_a_linked_alert_sounds_no_alarm_and_links_to_the_first(tmp_path):
    boat = _ahead(500.0, 0.0)
    (tmp_path / "run").mkdir()
    events = _run(tmp_path / "run", [boat], [_beyond(PIER, boat, 60.0)])
    unident = [e for e in events if e.type == "unidentified_vessel"]
    first = next(e for e in unident if e.source_id == "quay")
    second = next(e for e in unident if e.source_id == "pier")
    assert second.attributes["same_vessel_as"]["event_id"] == first.id
    dark = _dark_pair()
    assert dark[1].attributes["same_vessel_as"]["event_id"] == "dark-quay"

    cfg = load_config(data={
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"api_keys": [{"name": "alice", "role": "operator", "key_sha256": hash_api_key(KEY)}]},
        "sources": [{"id": "quay", "url": "rtsp://cam/quay"}, {"id": "pier", "url": "rtsp://cam/pier"}]})
    app = create_app(cfg)
    with serve_in_thread(app) as port, _playwright() as p:
        sink = SnoozingSink(app.state.snoozes, app.state.store, cfg.storage.resolved_media_dir(),
                            [app.state.live.publish_event])
        browser = _browser(p)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        ctx.add_init_script("localStorage.setItem('test-permission', 'granted'); "
                            "localStorage.setItem('seawatch-notify', 'on');" + _FAKE_NOTIFICATIONS)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{port}/#key={KEY}")
        _wait(page, "document.getElementById('live').textContent === 'live: on'", 10)
        page.click("#status-bar")  # a click on the page: browsers allow sound from then on
        _wait(page, "window.seawatch.alarm.ctx && window.seawatch.alarm.ctx.state === 'running'", 5)

        # ---- alarms: the operator looks at another window; the first dark transponder alarms, its linked twin not
        page.evaluate("window.__focused = false")
        for ev in dark:
            sink.emit(ev)
        sink.emit(make_event(60, id="fire-after", severity="high", type="fire", source_id="quay", clip=None))
        _wait(page, "window.__alarms.length >= 2", 5)
        time.sleep(0.5)  # nothing more comes
        assert page.evaluate("window.__alarms.map(a => a.id)") == ["dark-quay", "fire-after"]
        assert page.evaluate("window.__notes.map(n => n.opts.tag)") == ["dark-quay", "fire-after"]
        assert page.title() == "(2) Seawatch"  # the unseen count: two alarms, not three
        page.evaluate("window.__focused = true")

        # ---- the identity stage's unidentified_vessel pair: listed, marked both ways
        for ev in events:
            sink.emit(ev)
        _wait(page, f"{ROW % first.id} && {ROW % second.id} && {ROW % second.id}.querySelector('.linked-tag')", 10)
        assert page.text_content(f'#events tr[data-id="{second.id}"] .linked-tag') == "same vessel as quay"
        assert page.text_content(f'#events tr[data-id="{first.id}"] .linked-tag') == "also seen by pier"
        assert page.text_content('#events tr[data-id="dark-pier"] .linked-tag') == "same vessel as quay"
        assert page.evaluate("document.querySelector('#events tr[data-id=\"fire-after\"] .linked-tag')") is None
        assert page.evaluate(f"{ROW % second.id}.classList.contains('linked')")

        # ---- the linked alert's detail: "same vessel as <first> seen by quay, 60 m apart"; the link opens the first
        page.click(f'#events tr[data-id="{second.id}"]')
        _wait(page, "document.getElementById('d-linked')", 5)
        text = page.text_content("#d-linked")
        assert re.fullmatch(r"same vessel as unidentified vessel of 2026-01-01 00:00:0\d UTC seen by quay, 60 m apart "
                            r"\(combined uncertainty ±\d+ m\); no alarm sounded for this one", text), text
        page.click("#d-linked a.vessel-link")
        _wait(page, f"document.getElementById('detail').dataset.id === '{first.id}' && "
                    "document.getElementById('d-linked')", 5)
        assert f"event={first.id}" in page.evaluate("location.hash") and f"key={KEY}" in page.evaluate("location.hash")
        assert page.text_content("#d-linked") == "also seen by pier: its alert, 60 m apart"
        page.click("#d-linked a.vessel-link")
        _wait(page, f"document.getElementById('detail').dataset.id === '{second.id}'", 5)

        # ---- a text search for the first alert's id finds both of the vessel's alerts
        page.fill("#filters input[name=q]", first.id)
        page.press("#filters input[name=q]", "Enter")
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 2", 5)
        assert sorted(page.evaluate("[...document.querySelectorAll('#events tbody tr')].map(tr => tr.dataset.id)")) == \
            sorted([first.id, second.id])
        assert not errors, errors
        sink.close()
        browser.close()
