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
    assert "Extra inputs are not permitted" in _error(capsys)
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
