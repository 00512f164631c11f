"""Robustness audit s27: the clips folder cannot be written (the media disk full or remounted read-only, the folder
replaced). Cutting a clip raised an OSError that no handler took: ``GET /api/sources/{id}/clip`` answered 500
"internal error" with a traceback in the log, and ``GET /api/events/{id}/evidence.zip`` failed as a whole, without
the event, its audit trail and its snapshot, which could be packed. Now the clip answers 503 saying why, and the
evidence package goes out with the clip listed as missing and why.

The real service on a generated video played as a camera; its clips folder is replaced by a file."""

from __future__ import annotations

import io
import json
import shutil
import time
import warnings
import zipfile

warnings.filterwarnings("ignore", message=".*httpx.*")
from fastapi.testclient import TestClient  # noqa: E402

from test_service_serve import KEY, file_camera_service  # noqa: E402

S = 1_000_000_000


def test_a_clips_folder_that_cannot_be_written_is_a_clear_503_and_evidence_still_goes_out(tmp_path):
    with file_camera_service(tmp_path, seconds=3.0) as svc:
        with TestClient(svc.app, raise_server_exceptions=False) as client:
            h = {"X-API-Key": KEY}
            deadline = time.monotonic() + 30
            while not (events := client.get("/api/events", headers=h).json()["events"]):
                assert time.monotonic() < deadline, "no event"
                time.sleep(0.3)
            time.sleep(2.5)  # a few seconds recorded in the ring
            clips = svc.app.state.media_dir / "clips"
            if clips.exists():
                shutil.rmtree(clips)
            clips.write_text("not a folder")

            now = time.time_ns()
            r = client.get("/api/sources/quay-1/clip", headers=h, params={"start_ns": now - 2 * S, "end_ns": now - S})
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["message"].startswith("the clip could not be written: ") and "internal error" not in err["message"]

            ev = events[0]
            r = client.get(f"/api/events/{ev['id']}/evidence.zip", headers=h)
            assert r.status_code == 200, r.text
            with zipfile.ZipFile(io.BytesIO(r.content)) as z:
                names = set(z.namelist())
                manifest = json.loads(z.read("manifest.json"))
            assert "clip.mp4" not in names and "event.json" in names and "snapshot.jpg" in names, names
            assert manifest["missing"]["clip.mp4"].startswith("the clip could not be written: "), manifest["missing"]
