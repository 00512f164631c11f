"""Bad configuration and command-line input found by the s23 robustness audit: every case is one
``seawatch: error:`` naming the file / option and the field, a non-zero exit and no traceback; passwords in source
URLs never reach the message; ``config check`` refuses what ``run`` / ``serve`` would refuse at start; SIGTERM stops
``seawatch run`` as Ctrl-C does."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from seawatch import paths
from seawatch.cli import main
from seawatch.errors import ConfigError

SECRET = "CliSecretX"
CAM = f"rtsp://alice:{SECRET}@10.0.0.5/s"


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("seawatch: error: "), err
    return err


# ------ config files: config check refuses what run / serve would refuse at start (3, 5, 8; NUL and nesting of 4)
DRONE = "{id: d1, connection: 'udp:127.0.0.1:14571', camera: {width_px: 10, height_px: 10, hfov_deg: 40}"
CALIB = "{camera: {width_px: 1920, height_px: 1080, hfov_deg: 60}, surveyed: {lat_deg: %s, lon_deg: 8.5, alt_m: %s, " \
        "pan_deg: 10, tilt_deg: -10}}"


@pytest.mark.parametrize("text, where, words", [
    ("sources: [{id: cam1, url: a.mp4, models: [nonexistent_model]}]\n",
     "sources[0].models[0]", "no model named 'nonexistent_model' (registered: "),
    ("sources: [{id: cam1, url: a.mp4, models: ['coco_yolov5n+nonexistent_model']}]\n",
     "sources[0].models[0]", "no model named 'nonexistent_model'"),
    ("sources: [{id: cam1, url: a.mp4}]\nregistry: /nonexistent/reg.csv\n",
     "registry", "cannot read vessel registry /nonexistent/reg.csv"),
    ("sources: [{id: cam1, url: a.mp4, calibration: %s}]\n" % (CALIB % ("53", ".inf")),
     "sources[0].calibration.surveyed.alt_m", "must be a finite number, got inf"),
    ("sources: [{id: cam1, url: a.mp4, calibration: %s}]\n" % (CALIB % (".nan", "10")),
     "sources[0].calibration.surveyed.lat_deg", "not a number (NaN)"),
    ("drones: [%s, routes: {r: {type: perimeter, alt_m: 60, polygon_lonlat: [[5.7,52.8],[5.71,200.0],[5.7,52.81]]}}}]\n"
     % DRONE, "drones[0].routes.r", "outside valid lat/lon"),
    ("drones: [%s, routes: {r: {type: perimeter, alt_m: 60, polygon_lonlat: [[5.7,52.8],[5.71,52.8],[.nan,52.81]]}}}]\n"
     % DRONE, "drones[0].routes.r.polygon_lonlat[2][0]", "not a number (NaN)"),
    ("drones: [%s, routes: {r: {type: perimeter, alt_m: 60, polygon_lonlat: [[0,0],[1,1]]}}}]\n" % DRONE,
     "drones[0].routes.r", "at least 3"),
    ("sources: [{id: cam1, url: a.mp4, drone: %s, routes: {p: {type: points, alt_m: 30, "
     "points_lonlat: [[5.7, 95]]}}}}]\n" % DRONE, "sources[0].drone.routes.p", "not a valid lat/lon"),
    ("drones: [{id: d1, connection: 'garbage:::', camera: {width_px: 10, height_px: 10, hfov_deg: 40}}]\n",
     "drones[0].connection", "'garbage:::' is not a MAVLink connection"),
    ("drones: [{id: d1, connection: 'udp:127.0.0.1:99999', camera: {width_px: 10, height_px: 10, hfov_deg: 40}}]\n",
     "drones[0].connection", "expected udp:HOST:PORT"),
    ("sources: [{id: cam1, url: a.mp4, analysis_fps: .nan}]\n", "sources[0].analysis_fps", "not a number (NaN)"),
    ("sources: [{id: cam1, url: a.mp4}]\nzones: [{id: z1, source: cam1, polygon_px: [[0, 0], [.nan, 10], [10, 0]], "
     "rules: [{type: vessel_in_zone}]}]\n", "zones[0].polygon_px[1][0]", "not a number (NaN)"),
    ("sources: [{id: cam1, url: a.mp4}]\nzones: [{id: z1, source: cam1, polygon_lonlat: [[5.7, 52.8], [5.71, 52.8], "
     "[5.71, .nan]], rules: [{type: vessel_in_zone}]}]\n", "zones[0].polygon_lonlat[2][1]", "not a number (NaN)"),
    ("sources: [{id: cam1, url: \"a\\0.mp4\"}]\n", "sources[0].url", "NUL character"),
    ("sources: [{id: cam1, url: a.mp4}]\nregistry: \"r\\0x.csv\"\n", "registry", "NUL character"),
    ("sources:\n  - {id: cam1, url: a.mp4}\nzones:\n  - {id: z1, source: cam1, rules: [{type: vessel_in_zone}]}\n"
     "  - {id: z1, source: cam1, rules: [{type: fire_smoke}]}\n", "zones[1]", "zone id 'z1' appears twice"),
    ("sources: [{id: cam1, url: a.mp4}]\nais: ['']\n", "ais[0]", "an empty feed"),
    ("sources: [{id: cam1, url: a.mp4}]\nais: [/nonexistent/ais.nmea]\n", "ais[0]", "no such NMEA log file"),
])
def test_config_check_and_run_refuse(tmp_path, capsys, text, where, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == 1
    err = _error(capsys)
    assert f"c.yaml: {where}: " in err or f"c.yaml: (top level): {where}: " in err, err
    assert words in err, err
    assert main(["run", "--config", str(path)]) == 1  # the same refusal before any model loads
    err = _error(capsys)
    assert where in err and words in err, err


@pytest.mark.parametrize("text, where, words", [
    ("storage: {database_url: 'not a url://'}\n", "storage", "database_url 'not a url://' is not a database URL"),
    ("storage: {database_url: 'mysql://u:pw@h/db'}\n", "storage", "'mysql' databases are not supported"),
    ("storage: {database_url: 'postgresql+psycopg://u:Pw0rd@h:5432'}\nservice: {host: '999.1.1.1'}\n", "service",
     "host: '999.1.1.1' is not an IP address"),
    ("service: {host: 'not a host'}\n", "service", "'not a host' is not an IP address"),
    ("storage: {data_dir: \"a\\0b\"}\n", "storage.data_dir", "NUL character"),
    ("storage: {media_dir: \"m\\0x\"}\n", "storage.media_dir", "NUL character"),
])
def test_config_check_refuses_bad_service_settings(tmp_path, capsys, text, where, words):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == 1
    err = _error(capsys)
    assert f"s.yaml: {where}: " in err and words in err, err
    assert "Pw0rd" not in err


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "seawatch.example.org"])
def test_good_hosts_and_database_urls_still_load(tmp_path, host):
    from seawatch.service.config import load_config

    cfg = load_config(data={"service": {"host": host},
                            "storage": {"database_url": f"sqlite:///{tmp_path / 'x.db'}"}})
    assert cfg.service.host == host
    load_config(data={"storage": {"database_url": "postgresql+psycopg://u:pw@db.example:5432/seawatch"}})


def test_model_check_uses_the_registry_run_uses(tmp_path, capsys, monkeypatch):
    """A model registered in the cache (seawatch models register) passes, as `run` would find it; the error for an
    unknown one lists the registered models, the user's among them."""
    monkeypatch.setenv("SEAWATCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "manifests").mkdir(parents=True)
    shipped = (paths.MANIFEST_DIR / "coco_yolov5n.yaml").read_text()
    (tmp_path / "cache" / "manifests" / "my_boats.yaml").write_text(
        shipped.replace("name: coco_yolov5n", "name: my_boats", 1))
    path = tmp_path / "c.yaml"
    path.write_text("sources: [{id: cam1, url: a.mp4, models: [my_boats, coco_yolov5n]}]\n")
    assert main(["config", "check", str(path)]) == 0
    assert ": OK: 1 source(s)" in capsys.readouterr().out
    path.write_text("sources: [{id: cam1, url: a.mp4, models: [my_boat]}]\n")
    assert main(["config", "check", str(path)]) == 1
    err = _error(capsys)
    assert "sources[0].models[0]: no model named 'my_boat' (registered: " in err and "my_boats" in err


def test_registry_file_that_exists_passes(tmp_path, capsys):
    reg = tmp_path / "reg.csv"
    reg.write_text("name,hull_number\nAlpha,NL-1\n")
    path = tmp_path / "c.yaml"
    path.write_text(f"sources: [{{id: cam1, url: a.mp4}}]\nregistry: {reg}\n")
    assert main(["config", "check", str(path)]) == 0


def test_duplicate_yaml_keys_are_refused_with_their_line(tmp_path, capsys):
    from seawatch.service.config import load_config
    from seawatch.vision.pipeline import load_pipeline_config

    path = tmp_path / "dup.yaml"
    path.write_text("sources:\n  - id: cam1\n    url: a.mp4\nsources:\n  - id: cam2\n    url: b.mp4\n")
    for load in (load_config, load_pipeline_config):
        with pytest.raises(ConfigError, match=r"dup\.yaml: line 4: duplicate key 'sources' \(first given on line 1\)"):
            load(path)
    path.write_text("sources:\n  - {id: cam1, url: a.mp4, url: b.mp4}\n")
    assert main(["config", "check", str(path)]) == 1
    assert "line 2: duplicate key 'url'" in _error(capsys)


def test_yaml_merge_keys_may_still_override(tmp_path):
    from seawatch.vision.pipeline import load_pipeline_config

    path = tmp_path / "merge.yaml"
    path.write_text("sources:\n  - &cam {id: cam1, url: a.mp4, analysis_fps: 1}\n  - {<<: *cam, id: cam2}\n")
    cfg = load_pipeline_config(path)
    assert [(s.id, s.analysis_fps) for s in cfg.sources] == [("cam1", 1.0), ("cam2", 1.0)]


def test_deeply_nested_yaml_is_a_config_error(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("sources: " + "[" * 5000 + "]" * 5000 + "\n")
    assert main(["config", "check", str(path)]) == 1
    assert "deep.yaml: cannot read: nested too deeply" in _error(capsys)


def test_recursive_and_aliased_yaml_is_checked_once(tmp_path, capsys):
    path = tmp_path / "laughs.yaml"
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    path.write_text("\n".join(lines) + "\nsources: *a8\n")
    t0 = time.monotonic()
    assert main(["config", "check", str(path)]) == 1
    assert time.monotonic() - t0 < 30
    assert "unknown setting 'a0'" in _error(capsys)
    path.write_text("a: &a [*a]\n")
    assert main(["config", "check", str(path)]) == 1
    _error(capsys)


def test_scalar_problems_paths():
    from seawatch.vision.config import scalar_problems

    data = {"a": [1.0, float("nan"), {"b": float("-inf")}], "c": "x\0y", "ok": "fine", "n": 3}
    assert scalar_problems(data) == [("a[1]", "not a number (NaN): give a finite number"),
                                     ("a[2].b", "must be a finite number, got -inf"),
                                     ("c", "contains a NUL character (\\0)")]


def test_service_media_dir_that_cannot_be_created_is_a_config_error(tmp_path):
    from seawatch.service.config import load_config
    from seawatch.service.runner import Service

    afile = tmp_path / "afile"
    afile.write_text("x")
    svc = Service(load_config(data={"storage": {"data_dir": str(afile)}}))
    with pytest.raises(ConfigError, match="storage: media folder .*afile/media .*cannot be created"):
        svc.start()


def test_serve_long_source_id_gets_a_valid_zone_id():
    """The demo config gives each --source a whole-frame zone ``<id>-all``; a 64-character source id (the longest
    allowed) must not make a zone id longer than zone ids may be."""
    from seawatch.service.config import ServeConfig, default_settings_data

    sid = "c" * 64
    cfg = ServeConfig.model_validate(default_settings_data(None, sources=[(sid, "a.mp4")]))
    assert cfg.zones[0].source == sid and len(cfg.zones[0].id) <= 64


@pytest.mark.parametrize("value, words", [("nan", "analysis_fps: not a number (NaN)"),
                                          ("inf", "analysis_fps: must be a finite number, got inf")])
def test_run_analysis_fps_nan_says_not_a_number(tmp_path, capsys, value, words):
    assert main(["run", "--analysis-fps", value, str(tmp_path / "x.mp4")]) == 1
    err = _error(capsys)
    assert words in err and "less than or equal" not in err


# ------ run and serve on the command line: credentials redacted (1), SIGTERM (2), --data-dir (4), --start-utc (6)
@pytest.mark.parametrize("args, shown, words", [
    ([f"bad id!={CAM}"], "command-line source 'bad id!=rtsp://***@10.0.0.5/s'", "id: 'bad id!' is not a valid name here"),
    (["--tile", "bogus", f"cam={CAM}"], "command-line source 'cam=rtsp://***@10.0.0.5/s'", "tile spec 'bogus'"),
    (["--analysis-fps", "99", CAM], "command-line source 'rtsp://***@10.0.0.5/s'", "analysis_fps"),
])
def test_run_bad_source_argument_error_redacts_the_password(capsys, args, shown, words):
    assert main(["run", *args]) == 1
    err = _error(capsys)
    assert SECRET not in err and "alice" not in err
    assert shown in err and words in err


def test_serve_bad_source_names_the_option_redacted_not_the_default_config(tmp_path, capsys):
    assert main(["serve", "--data-dir", str(tmp_path / "d"), "--source", f"bad id={CAM}"]) == 1
    err = _error(capsys)
    assert SECRET not in err and "alice" not in err
    assert "--source 'bad id=rtsp://***@10.0.0.5/s': id:" in err
    assert "default configuration" not in err and "zones" not in err  # no zone the user never wrote
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"storage: {{data_dir: {tmp_path / 'd2'}}}\n")
    assert main(["serve", "--config", str(cfg), "--source", f"bad id={CAM}"]) == 1
    err = _error(capsys)
    assert SECRET not in err and "--source 'bad id=rtsp://***@10.0.0.5/s': id:" in err


def test_run_sigterm_closes_open_incidents(tmp_path, shared_media):
    from conftest import onnx_model

    clip = shared_media / "B_fire_smoke" / "flames_closeup.mp4"
    onnx_model("fire_smoke")  # skips (fails under CI) with the command that provisions it
    cfg = tmp_path / "fire.yaml"
    cfg.write_text(f"sources: [{{id: flames, url: {clip}, models: [fire_smoke], analysis_fps: 4}}]\n"
                   "zones: [{id: all, source: flames, rules: [{type: fire_smoke, min_duration_s: 0.5, min_hits: 2, "
                   "window_frames: 4}]}]\n")
    out = tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "seawatch", "run", "-c", str(cfg), "--realtime", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_file() and '"phase":"start"' in out.read_text():  # the sink writes compact JSON
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1]
        assert '"phase":"start"' in out.read_text(), "no incident started within 120 s"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "terminated (SIGTERM); closing open incidents" in err and "frames analysed" in err
    events = [json.loads(line) for line in out.read_text().splitlines()]
    starts = {e["id"] for e in events if e["phase"] == "start"}
    ends = {e["id"] for e in events if e["phase"] == "end"}
    assert starts and starts <= ends  # every incident that started was ended and written


def test_serve_data_dir_that_cannot_be_a_folder(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["serve", "--data-dir", str(afile)]) == 1
    assert f"--data-dir {afile}: is a file, not a folder" in _error(capsys)
    assert main(["serve", "--data-dir", str(afile / "sub")]) == 1
    assert "cannot create the folder" in _error(capsys)


@pytest.mark.parametrize("when", ["1969-12-31T23:59:00Z", "1000-01-01", "2263-01-01T00:00:00Z",
                                  "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00"])
def test_run_start_utc_outside_the_recordable_range(tmp_path, capsys, monkeypatch, when):
    from seawatch.vision import pipeline

    monkeypatch.setattr(pipeline, "Pipeline", lambda *a, **k: pytest.fail("models loaded before --start-utc checked"))
    assert main(["run", "--start-utc", when, str(tmp_path / "x.mp4")]) == 1
    assert f"--start-utc: {when!r} is outside the times Seawatch can record (1970-01-01 to 2262-04-11 UTC)" in \
        _error(capsys)


def test_start_utc_edges_parse():
    from seawatch.streams.clock import parse_utc_ns

    assert parse_utc_ns("1970-01-01T00:00:00Z", "--start-utc") == 0
    assert parse_utc_ns("2262-04-11T00:00:00Z", "--start-utc") < 2**63


# ----------------------------- detect and evaluate: --imgsz bounded, nested manifests (4), nothing to analyse (7)
def test_evaluate_deeply_nested_manifest(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100000 + "]" * 100000)
    assert main(["evaluate", "--no-clips", str(path)]) == 1
    assert "deep.json: cannot read manifest: nested too deeply" in _error(capsys)


@pytest.mark.parametrize("imgsz, words", [(100000, "--imgsz must be at most 8192 px, got 100000"),
                                          (0, "--imgsz must be >= 1")])
def test_detect_imgsz_is_bounded_before_any_model_loads(tmp_path, capsys, monkeypatch, imgsz, words):
    from seawatch.vision import detector

    monkeypatch.setattr(detector, "load_detector", lambda *a, **k: pytest.fail("a model was loaded"))
    img = tmp_path / "img.png"
    img.write_bytes(b"not read")
    assert main(["detect", "--models", "coco_yolov5n", "--imgsz", str(imgsz), str(img)]) == 1
    assert words in _error(capsys)


def test_detect_empty_folder_is_an_error(tmp_path, capsys, monkeypatch):
    from seawatch.vision import detector

    monkeypatch.setattr(detector, "load_detector", lambda *a, **k: pytest.fail("a model was loaded"))
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no media here")
    assert main(["detect", "--models", "coco_yolov5n", str(empty)]) == 1
    err = _error(capsys)
    assert "nothing to analyse" in err and str(empty) in err


@pytest.mark.parametrize("option, value", [("--max-age", "-5"), ("--max-age", "nan"), ("--seconds", "inf"),
                                           ("--seconds", "0")])
def test_ais_show_durations_must_be_positive_and_finite(tmp_path, capsys, option, value):
    log = tmp_path / "a.nmea"
    log.write_text("")
    with pytest.raises(SystemExit) as exc:
        main(["ais", "show", str(log), option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and option in err and "positive, finite" in err, err


@pytest.mark.parametrize("argv, words", [(["--imgsz", "100000"], "--imgsz must be at most 8192 px, got 100000"),
                                         (["--imgsz", "0"], "--imgsz must be >= 1"),
                                         (["--rounds", "0"], "--rounds must be >= 1")])
def test_bench_sizes_are_bounded_before_any_model_loads(capsys, monkeypatch, argv, words):
    from seawatch.vision import cmd_bench

    monkeypatch.setattr(cmd_bench, "bench_model", lambda *a, **k: pytest.fail("a model was benchmarked"))
    assert main(["bench", "--models", "coco_yolov5n", *argv]) == 1
    assert words in _error(capsys)
