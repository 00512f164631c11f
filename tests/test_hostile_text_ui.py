"""Text the site does not control in the operator UI, in Chromium (security audit s24/sec).

A vessel name (AIS, the registry), a note, who wrote it: shown without control or invisible characters (a bidi
override, a zero-width space), isolated (a right-to-left override cannot reorder the text after it) and wrapped (a
10 000-character name does not make the page scroll sideways).
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from contextlib import contextmanager  # noqa: E402

from seawatch.service.app import create_app  # noqa: E402

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: what follows it is drawn reversed, up to the end of the paragraph
ZWSP = "\u200b"  # ZERO WIDTH SPACE: "NOORD<ZWSP>ZEE" looks like "NOORDZEE" and is another name


@contextmanager
def _served(tmp_path):
    from conftest import serve_in_thread
    from test_live_view import _settings
    import shutil

    from test_service_ui import ARGS, _playwright

    if shutil.which("chromium") is None:
        from conftest import missing

        missing("Debian's chromium is not installed (bash scripts/setup.sh)")
    # the suite's browser resolves no name and reaches 127.0.0.1 only; 127.0.0.2 is "another site" here
    args = [a + " , EXCLUDE 127.0.0.2" if a.startswith("--host-resolver-rules=") else a for a in ARGS]
    app = create_app(_settings(tmp_path))
    with serve_in_thread(app) as port, _playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=args)
        try:
            yield app, port, browser
        finally:
            browser.close()


def _open(browser, url):
    from test_service_ui import open_page

    return open_page(browser, url)


def test_display_text_makes_invisible_characters_visible_and_cuts_long_text(tmp_path):
    from test_live_view import KEY
    from test_service_ui import _wait

    with _served(tmp_path) as (_, port, browser):
        page, errors = _open(browser, f"http://127.0.0.1:{port}/#key={KEY}")
        _wait(page, "window.seawatch !== undefined", 10)
        got = page.evaluate("""async () => {
            const m = await import('/ui/map.js');
            return [m.displayText('EVIL\\u202eSSAP'), m.displayText('NOORD\\u200bZEE'), m.displayText('a\\tb\\nc\\u0000d'),
                    m.displayText('W'.repeat(10000), 100).length, m.displayText('\\u{1F600}'.repeat(5), 2),
                    m.displayText(null), m.isolated('x')]; }""")
        assert got == ["EVIL\ufffdSSAP", "NOORD\ufffdZEE", "a b c\ufffdd", 101, "\U0001F600\U0001F600…", "", "\u2068x\u2069"]
        assert not errors, errors


@pytest.mark.slow
def test_hostile_names_and_notes_neither_widen_the_page_nor_reorder_what_follows(tmp_path):
    """A 10 000-character vessel name, a name with a right-to-left override, notes with one and a 2000-character
    note without a space: no sideways scrolling, the name cut to 100 characters (the whole in its tooltip), no
    control character left in what is shown, and the words after a note (the hold's "lifted by") outside its
    isolate."""
    from test_live_view import KEY
    from test_service_store import make_event
    from test_service_ui import _wait

    with _served(tmp_path) as (app, port, browser):
        st = app.state.store
        st.put(make_event(1, source_id="quay", attributes={"vessel_name": "W" * 10_000}))
        st.put(make_event(2, source_id="quay", attributes={"vessel_name": f"EVIL{RLO}SSAP NOORD{ZWSP}ZEE"}))
        st.review("ev00001", "acknowledged", "ops", note="N" * 2000)
        st.review("ev00002", "dismissed", "ops", note=f"harmless {RLO}nimda yb")
        st.hold("ev00002", "manual", "user:rita", note=f"case 7 {RLO}")
        st.release_holds("ev00002", "user:rita", note=f"closed {RLO}")
        page, errors = _open(browser, f"http://127.0.0.1:{port}/#key={KEY}")
        _wait(page, "document.querySelectorAll('#events tbody tr').length === 2", 15)

        page.evaluate("window.seawatch.select('ev00001')")
        _wait(page, "document.getElementById('d-meta').textContent.includes('vessel WWW') && "
                    "document.querySelectorAll('#d-audit li').length === 1", 10)
        page.wait_for_timeout(200)  # laid out
        r = page.evaluate("""() => ({page: document.documentElement.scrollWidth, view: document.documentElement.clientWidth,
            name: document.querySelector('#d-meta bdi').textContent, tip: document.querySelector('#d-meta bdi').title,
            ack: document.querySelector('#d-actions button[data-act=acknowledge]').getBoundingClientRect().right})""")
        assert r["page"] <= r["view"], r  # no sideways scrolling
        assert r["ack"] <= r["view"], r
        assert r["name"] == "W" * 100 + "…" and r["tip"] == "W" * 2000 + "…"

        page.evaluate("window.seawatch.select('ev00002')")
        _wait(page, "document.getElementById('d-meta').textContent.includes('vessel EVIL') && "
                    "document.querySelector('#d-holds li.released') !== null && "
                    "document.querySelectorAll('#d-audit li').length === 1", 10)
        shown = page.evaluate("""() => ['d-meta', 'd-audit', 'd-holds'].map((id) => document.getElementById(id).textContent)""")
        for text in shown:
            assert RLO not in text and ZWSP not in text, shown
        assert shown[0].endswith(", vessel EVIL\ufffdSSAP NOORD\ufffdZEE"), shown
        assert shown[1] == "dismissed by ops: harmless \ufffdnimda yb", shown
        hold = page.evaluate("""() => { const li = document.querySelector('#d-holds li');
            return {bdis: [...li.querySelectorAll('bdi')].map((b) => b.textContent),
                    outside: [...li.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent)}; }""")
        assert "case 7 \ufffd" in hold["bdis"] and "closed \ufffd" in hold["bdis"], hold
        assert any(t.startswith(" (lifted by ") for t in hold["outside"]) and hold["outside"][-1] == ")", hold
        assert not errors, errors
