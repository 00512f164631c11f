"""The operator UI on a tablet-sized or laptop-sized screen and without a mouse (Chromium): the event list never
shrinks to a sliver beside the map, the rows can be reached and opened from the keyboard, and an incident still open
can be found under a stream of newer ones."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from contextlib import contextmanager  # noqa: E402

from seawatch.service.app import create_app  # noqa: E402


@contextmanager
def _ui_with(tmp_path, events):
    """The service with ``events`` stored, and Chromium logged in on its UI with the whole list shown:
    ``(page, errors)``; the browser is closed after, with no script error allowed."""
    from conftest import serve_in_thread
    from test_live_view import _settings, _ui
    from test_service_ui import _playwright, _wait

    app = create_app(_settings(tmp_path))
    with serve_in_thread(app) as port:
        for ev in events:
            app.state.store.put(ev)
        with _playwright() as p:
            browser, page, errors = _ui(p, port)
            _wait(page, f"document.querySelectorAll('#events tbody tr').length === {len(events)}", 10)
            yield page, errors
            assert not errors, errors
            browser.close()


def _three():
    from test_service_store import make_event

    return [make_event(i, source_id="quay") for i in range(3)]


def _rects(page) -> dict:
    return page.evaluate("""() => {
        const r = (id) => { const b = document.getElementById(id).getBoundingClientRect();
                            return {left: b.left, right: b.right, top: b.top, bottom: b.bottom, width: b.width}; };
        return {map: r('map'), list: r('list-pane'), page: document.documentElement.scrollWidth,
                view: document.documentElement.clientWidth}; }""")


@pytest.mark.slow
@pytest.mark.parametrize("width", [800, 1024, 1280, 600])
def test_event_list_keeps_its_columns_beside_or_below_the_map(tmp_path, width):
    """At every width the list is either beside the map with room for its five columns (at least 440 px) or below
    it at full width; at 600 px the map shrinks to the screen instead of making the page scroll sideways."""
    with _ui_with(tmp_path, _three()) as (page, errors):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(100)  # laid out again
        r = _rects(page)
        beside = r["list"]["left"] >= r["map"]["right"] - 1 and r["list"]["top"] < r["map"]["bottom"]
        below = r["list"]["top"] >= r["map"]["bottom"] - 1
        assert beside or below, r
        if beside:
            assert r["list"]["width"] >= 440, r
        else:
            assert r["list"]["width"] >= r["view"] - 40, r
        assert r["page"] <= r["view"], r  # no sideways scrolling
        # every column of the first row is inside the list's box (nothing cut off)
        cut = page.evaluate("""() => { const list = document.getElementById('list-pane').getBoundingClientRect();
            return [...document.querySelectorAll('#events tbody tr:first-child td')]
                .filter((td) => td.getBoundingClientRect().right > list.right + 1).length; }""")
        assert cut == 0, r
        if width == 1280:  # a laptop keeps the list beside the map
            assert beside, r
        if width <= 800:
            assert below, r


@pytest.mark.slow
def test_event_rows_open_from_the_keyboard(tmp_path):
    """Tab reaches the event rows, Enter opens the focused one, the arrow keys move between rows, and the focus stays
    on its row when the list is drawn again."""
    from test_service_ui import _wait

    with _ui_with(tmp_path, _three()) as (page, errors):
        rows = page.evaluate("[...document.querySelectorAll('#events tbody tr')].map((tr) => tr.dataset.id)")
        assert page.evaluate("[...document.querySelectorAll('#events tbody tr')].every((tr) => tr.tabIndex === 0)")
        # Tab through the page until a row has the focus (the filters and buttons come first)
        for _ in range(60):
            page.keyboard.press("Tab")
            if page.evaluate("!!document.activeElement.closest('#events tbody tr')"):
                break
        assert page.evaluate("document.activeElement.dataset.id") == rows[0]
        page.keyboard.press("ArrowDown")
        assert page.evaluate("document.activeElement.dataset.id") == rows[1]
        page.keyboard.press("Enter")
        _wait(page, f"window.seawatch.state.selected === {rows[1]!r} && !document.getElementById('detail').hidden", 5)
        page.evaluate("window.seawatch.search()")  # the list drawn anew: the focus stays on its row
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 3", 5)
        page.wait_for_timeout(200)
        assert page.evaluate("document.activeElement.dataset.id") == rows[1]
        page.keyboard.press("ArrowUp")
        page.keyboard.press(" ")
        _wait(page, f"window.seawatch.state.selected === {rows[0]!r}", 5)


@pytest.mark.slow
def test_open_incidents_filter_keeps_a_long_fire_in_sight(tmp_path):
    """A critical fire still burning under a stream of newer, ended lane alerts: "still open" lists it (and only the
    open ones), "ended" the rest."""
    from test_service_store import make_event
    from test_service_ui import _wait

    events = [make_event(0, type="fire", severity="critical", source_id="quay")]  # open: no end
    for i in range(1, 30):  # ended lane alerts, each newer than the fire
        start_ns = make_event(i).start_ns
        events.append(make_event(i, type="fire_lane_blocked", source_id="gate", phase="end", end_ns=start_ns + 3 * 10**9))
    with _ui_with(tmp_path, events) as (page, errors):
        rows = page.evaluate("[...document.querySelectorAll('#events tbody tr')].map((tr) => tr.dataset.id)")
        assert rows[-1] == "ev00000"  # the oldest: at the bottom, under 29 newer alerts
        page.select_option('#filters select[name="open"]', "true")
        page.click("#filters button:not([type])")
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 1", 10)
        assert page.evaluate("document.querySelector('#events tbody tr').dataset.id") == "ev00000"
        page.select_option('#filters select[name="open"]', "false")
        page.click("#filters button:not([type])")
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 29", 10)
        assert "ev00000" not in page.evaluate("[...document.querySelectorAll('#events tbody tr')].map((tr) => tr.dataset.id)")


@pytest.mark.slow
def test_an_event_open_is_in_the_address_and_a_link_reopens_it(tmp_path):
    """The event open is in the address (#event=ID beside the kiosk key): a reload reopens it, and a link to another
    event (pasted, or sent by a colleague) opens that one."""
    from test_live_view import KEY
    from test_service_ui import _wait

    with _ui_with(tmp_path, _three()) as (page, errors):
        page.click('#events tr[data-id="ev00001"]')
        _wait(page, "document.getElementById('detail').dataset.id === 'ev00001'", 5)
        assert page.evaluate("location.hash") == f"#key={KEY}&event=ev00001"
        page.reload()
        _wait(page, "document.getElementById('detail').dataset.id === 'ev00001' && "
                    "!document.getElementById('detail').hidden", 10)
        assert page.evaluate("window.seawatch.state.selected") == "ev00001"
        page.evaluate(f"location.hash = 'key={KEY}&event=ev00002'")
        _wait(page, "document.getElementById('detail').dataset.id === 'ev00002'", 5)
        # a link to an event that is not there: said so, nothing else breaks
        page.evaluate(f"location.hash = 'key={KEY}&event=nope'")
        _wait(page, "document.getElementById('d-error').textContent !== ''", 5)
