"""The camera wall's header on a narrow screen (800 px, a tablet or half a control-room monitor): everything in it
stays on the screen, above all the link back to the operator UI, the clock and the live state (the header used to
stay on one line and cut them off at the right edge, unreachable as the page does not scroll)."""

from __future__ import annotations

from conftest import serve_in_thread
from test_service_ui import _browser, _playwright, _wait, open_page  # noqa: F401
from test_wall_ui import TILES, VIEWER_KEY, FakeCameras, _app

ON_SCREEN = """(() => { const w = document.documentElement.clientWidth, out = [];
  for (const el of document.querySelectorAll('#bar > *')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0) continue;  // not shown (an empty status)
    if (r.left < 0 || r.right > w + 0.5) out.push(`${el.id || el.tagName}: ${Math.round(r.left)}..${Math.round(r.right)} of ${w}`);
  }
  return out; })()"""


def test_wall_header_fits_a_narrow_screen(tmp_path):
    cams = FakeCameras(("quay-1", "quay-2", "east-gate"))
    cams.go_offline("east-gate", minutes=3, attempts=7)  # "1 offline" makes the summary longer
    with serve_in_thread(_app(tmp_path, cams)) as port, _playwright() as p:
        browser = _browser(p)
        for width in (800, 640):
            page, errors = open_page(browser, f"http://127.0.0.1:{port}/wall#key={VIEWER_KEY}", width=width, height=900)
            _wait(page, f"{TILES}.length === 3 && document.getElementById('clock').textContent !== ''")
            assert page.evaluate(ON_SCREEN) == [], width
            link = page.locator("#to-ui").bounding_box()
            assert link is not None and link["x"] + link["width"] <= width, (width, link)
            # the wall still fills what the header leaves, without a scroll bar
            assert page.evaluate("document.documentElement.scrollHeight <= window.innerHeight"), width
            assert errors == []
            page.close()
