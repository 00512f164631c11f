"""Bad input on the command line is one clear ``seawatch: error:`` line and a non-zero exit, never a traceback, and
nothing already recorded is lost (the s17 CLI audit: config files, ``run``, ``evaluate``, the event store, AIS
times, ``drone patrol``)."""

from __future__ import annotations

import json
import random

import pytest

from seawatch.cli import main
from seawatch.errors import ConfigError, InputError
from seawatch.streams import ais
from test_ais import _cs

T0_S = 1_700_000_000  # 2023-11-14T22:13:20Z
GOOD_A = "!AIVDM,1,1,,B,13aDp<PP000IwSlN?Wm@0?wN2<1T,0*29"  # MMSI 244660274
GOOD_B = "!AIVDM,1,1,,A,13RlIW?04F1beOVEFLB9bRvH0L0L,0*6C"  # MMSI 237836700
ZONE_RULES = [{"type": "vessel_in_zone"}]


def _tagged(sentence: str, c: str) -> str:
    body = f"c:{c}"
    return f"\\{body}*{_cs(body)}\\{sentence}"


def _rmc(hms: str, dmy: str = "070420") -> str:
    body = f"GPRMC,{hms},A,5250.53669,N,00542.34920,E,0.020,,{dmy},,,A"
    return f"${body}*{_cs(body)}"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("seawatch: error: "), err
    return err


# ------------------------------------------------------------------------------------------- 1: not UTF-8
@pytest.mark.parametrize("content, byte", [
    (b"\x8c\x00\xff" + bytes(range(256)) * 4, "0x8c at offset 0"),  # a binary file
    (b"sources: [{id: cam1, url: a.mp4}]\nzones: []\n# \xff\xfe bad\n", "0xff at offset 46"),  # one Latin-1 byte
])
def test_config_not_utf8_is_a_config_error_naming_the_file(tmp_path, capsys, content, byte):
    from seawatch.service.config import load_config
    from seawatch.vision.pipeline import load_pipeline_config

    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    for load in (load_config, load_pipeline_config):
        with pytest.raises(ConfigError, match=rf"bad\.yaml: cannot read: not UTF-8 text \(byte {byte}\)"):
            load(path)
    assert main(["config", "check", str(path)]) == 1
    assert "not UTF-8" in _error_line(capsys)
    assert main(["run", "--config", str(path), str(tmp_path / "x.mp4")]) == 1
    assert "bad.yaml: cannot read: not UTF-8" in _error_line(capsys)


# ------------------------------------------------------------------------------ 2: zone polygons at load time
@pytest.mark.parametrize("key, polygon, why", [
    ("polygon_px", [[0, 0], [10, 10], [10, 0], [0, 10]], "polygon is invalid (Self-intersection"),  # bow tie
    ("polygon_px", [[0, 0], [10, 10]], "at least 3 distinct vertices"),
    ("polygon_lonlat", [[5.7, 52.8], [5.71, 52.8], [5.71, 95.0]], "lat in [-90, 90]"),
])
def test_config_check_reports_bad_zone_polygons(tmp_path, capsys, key, polygon, why):
    from seawatch.service.config import load_config

    data = {"sources": [{"id": "cam1", "url": "a.mp4"}],
            "zones": [{"id": "z1", "source": "cam1", key: polygon, "rules": ZONE_RULES}]}
    with pytest.raises(ConfigError, match=r"zones\[0\]: zone 'z1': ") as exc:
        load_config(data=data)
    assert why in str(exc.value)
    path = tmp_path / "zones.yaml"
    path.write_text(json.dumps(data).replace("NaN", ".nan"))  # JSON is YAML; YAML spells NaN .nan
    assert main(["config", "check", str(path)]) == 1
    err = _error_line(capsys)
    assert "zone 'z1'" in err and why in err


def test_good_zone_polygons_still_load():
    from seawatch.service.config import load_config

    cfg = load_config(data={"sources": [{"id": "cam1", "url": "a.mp4"}], "zones": [
        {"id": "box", "source": "cam1", "polygon_px": [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], "rules": ZONE_RULES},
        {"id": "sea", "source": "cam1", "polygon_lonlat": [[5.7, 52.8], [5.71, 52.8], [5.71, 52.81]], "rules": ZONE_RULES},
        {"id": "all", "source": "cam1", "rules": ZONE_RULES}]})
    assert [z.id for z in cfg.zones] == ["box", "sea", "all"]


# ----------------------------------------------------------------------------------- 3: run source options
@pytest.mark.parametrize("args, words", [
    (["--tile", "bogus", "short.mp4"], ["command-line source 'short.mp4'", "tile spec 'bogus'"]),
    (["bad id!=short.mp4"], ["command-line source 'bad id!=short.mp4'", "id: 'bad id!' is not a valid name here: start with a letter or digit"]),
    (["--analysis-fps", "-1", "short.mp4"], ["analysis_fps: Input should be greater than 0"]),
    (["--analysis-fps", "0", "short.mp4"], ["analysis_fps: Input should be greater than 0"]),  # not "the default"
    (["--analysis-fps", "nan", "short.mp4"], ["analysis_fps"]),
    (["--models", "a+", "short.mp4"], ["model group 'a+' has an empty member"]),
    (["--models", ",", "short.mp4"], ["models: "]),
])
def test_run_bad_source_options_are_config_errors(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)  # the video is never opened: the options are refused first
    assert main(["run", *args]) == 1
    err = _error_line(capsys)
    assert "invalid configuration (1 error)" in err
    for w in words:
        assert w in err


# ------------------------------------------------------------------------------------- 4: run --out keeps data
def test_run_out_never_destroys_recorded_events(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text('{"event": "previous run, precious"}\n')
    # the run fails loading its model: the file is as it was
    assert main(["run", "--models", "no_such_model", "--out", str(events), str(tmp_path / "x.mp4")]) == 1
    assert "no model named 'no_such_model'" in _error_line(capsys)
    assert events.read_text() == '{"event": "previous run, precious"}\n'
    # ... and no empty file is left where there was none
    new = tmp_path / "new.jsonl"
    assert main(["run", "--models", "no_such_model", "--out", str(new), str(tmp_path / "x.mp4")]) == 1
    _error_line(capsys)
    assert not new.exists()


def test_run_out_unwritable_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["run", "--out", str(tmp_path / "afile" / "x.jsonl"), str(tmp_path / "x.mp4")]) == 1
    assert "cannot open event file" in _error_line(capsys)


def test_run_out_appends_to_an_events_log(tmp_path, capsys, monkeypatch):
    """Two runs into one --out file: the first run's events are still there after the second."""
    from seawatch.vision import pipeline as pipeline_mod
    from seawatch.vision.events import Event

    events = tmp_path / "events.jsonl"
    events.write_text('{"event": "previous run"}\n')

    class OneEvent:  # a pipeline that emits one event and reads no video
        def __init__(self, cfg, sinks, **_):
            self.sinks, self.frames, self.seconds, self.workers = sinks, 0, 0.0, 1

        def close(self, *_):
            ev = Event(id="e1", type="test", severity="low", phase="end", source_id="missing", start_ns=0, at_ns=0,
                       end_ns=0)
            for s in self.sinks:
                s.emit(ev)
            return [ev]

    monkeypatch.setattr(pipeline_mod, "Pipeline", OneEvent)
    rc = main(["run", "--out", str(events), str(tmp_path / "missing.mp4")])
    assert rc == 1  # the missing video is a per-source error; the events file is appended to all the same
    lines = events.read_text().splitlines()
    assert lines[0] == '{"event": "previous run"}' and json.loads(lines[1])["id"] == "e1"
    assert len(lines) == 2


# ------------------------------------------------------------------------------------ 5: evaluate --out
def test_evaluate_out_folder_is_checked_before_the_evaluation(tmp_path, capsys, monkeypatch):
    from seawatch.vision import evaluate

    manifest = tmp_path / "m.json"
    manifest.write_text("[]")
    monkeypatch.setattr(evaluate, "evaluate_manifest", lambda *a, **k: pytest.fail("evaluated before checking --out"))
    assert main(["evaluate", "--no-clips", "--out", str(tmp_path / "nodir" / "r.json"), str(manifest)]) == 1
    assert "no such folder" in _error_line(capsys)
    assert main(["evaluate", "--no-clips", "--out", str(tmp_path), str(manifest)]) == 1
    assert "is a folder" in _error_line(capsys)


def test_evaluate_summary_survives_a_failed_report_write(tmp_path, capsys, monkeypatch):
    from seawatch.vision import evaluate

    manifest = tmp_path / "m.json"
    manifest.write_text("[]")
    out_dir = tmp_path / "reports"
    out_dir.mkdir()

    def long_evaluation(*_a, **_k):  # the report folder goes away while the evaluation runs
        out_dir.rmdir()
        return {"manifest": "m.json", "images": 3, "clips": 0, "seconds": 1.5}

    monkeypatch.setattr(evaluate, "evaluate_manifest", long_evaluation)
    assert main(["evaluate", "--no-clips", "--out", str(out_dir / "r.json"), str(manifest)]) == 1
    cap = capsys.readouterr()
    assert "m.json: 3 images, 0 clips, 1.5 s" in cap.out  # the result is on screen
    assert cap.err.startswith("seawatch: error: --out ") and "cannot write the report" in cap.err
    assert "Traceback" not in cap.err


# ---------------------------------------------------------------------------------- 6: malformed manifests
@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe\x00garbage\x80\x81", "cannot read manifest"),
    (b'[{"file": 5}]', "entry 0: 'file' must be a file name"),
    (b'[{"file": ""}]', "entry 0: 'file' must be a file name"),
    (b'[{"file": "a.jpg"}, {"file": "b.jpg", "ground_truth": ["fire"]}]', "entry 1 (b.jpg): 'ground_truth' must be"),
    (b'[{"file": "a.jpg", "ground_truth": "fire"}]', "entry 0 (a.jpg): 'ground_truth' must be"),
    (b'[{"file": "a.jpg", "ground_truth": {"without_helmet": "two"}}]', "entry 0 (a.jpg): 'without_helmet' counts"),
    (b'[{"file": "a.jpg", "ground_truth": {"without_helmet": -1}}]', "entry 0 (a.jpg): 'without_helmet' counts"),
])
def test_malformed_manifest_is_an_input_error_naming_the_entry(tmp_path, capsys, content, words):
    from seawatch.vision.groundtruth import load_manifest

    path = tmp_path / "m.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"m\.json: ") as exc:
        load_manifest(path)
    assert words in str(exc.value)
    assert main(["evaluate", "--no-clips", str(path)]) == 1
    assert words in _error_line(capsys)


# ------------------------------------------------------------------------------------ 7: corrupt database
def test_corrupt_sqlite_file_is_a_config_error(tmp_path):
    from seawatch.service.store import EventStore

    db = tmp_path / "garbage.db"
    junk = random.Random(17).randbytes(8192)
    db.write_bytes(junk)
    with pytest.raises(ConfigError, match="storage: cannot open/migrate the database .*garbage.db: file is not a database"):
        EventStore.open(f"sqlite:///{db}")
    assert db.read_bytes() == junk  # nothing was written over it


# -------------------------------------------------------------------------------------------- 8: RMC times
@pytest.mark.parametrize("hms, dmy", [("2139inf", "070420"), ("2139nan", "070420"), ("213975", "070420"),
                                      ("256000", "070420"), ("213900", "310220"), ("21-900", "070420")])
def test_malformed_rmc_time_is_counted_and_skipped(tmp_path, capsys, hms, dmy):
    dec = ais.AisDecoder(use_rmc_time=True)
    assert dec.feed_line(_rmc(hms, dmy)) is None
    assert dec.stats.malformed == {"rmc_time": 1}
    assert dec.feed_line(_rmc("213900.00")) is None  # a good fix after it is used
    m = dec.feed_line(GOOD_B)
    assert m.time_source == "gnss_rmc" and m.time_ns == 1586295540 * 10**9
    path = tmp_path / "rmc.nmea"
    path.write_text(f"{_rmc(hms, dmy)}\n{GOOD_B}\n")
    assert main(["ais", "show", "--rmc-time", str(path)]) == 0
    assert "1 malformed {'rmc_time': 1}" in capsys.readouterr().out


def test_rmc_without_a_fix_is_not_malformed():
    dec = ais.AisDecoder(use_rmc_time=True)
    body = "GPRMC,,V,,,,,,,,,,N"
    assert dec.feed_line(f"${body}*{_cs(body)}") is None
    assert dec.stats.malformed_total == 0 and dec.stats.non_ais_lines == 1


# ------------------------------------------------------------------------------------ 9: implausible times
@pytest.mark.parametrize("c", ["4102444800", "1e30", "1e999999999", "4102444800000", "5", "946684799"])
def test_implausible_tag_block_time_is_a_malformed_tag_block(c):
    dec = ais.AisDecoder(clock_ns=lambda: T0_S * 10**9)
    assert dec.feed_line(_tagged(GOOD_A, c)) is None
    assert dec.stats.malformed == {"tag_block": 1}
    m = dec.feed_line(_tagged(GOOD_A, str(T0_S)))  # the decoder keeps working
    assert m.time_ns == T0_S * 10**9 and m.time_source == "tag_block"


def test_tag_block_time_window_edges():
    recv_ns = T0_S * 10**9
    assert ais.plausible_time_ns(ais.EARLIEST_TIME_NS, recv_ns)
    assert not ais.plausible_time_ns(ais.EARLIEST_TIME_NS - 1, recv_ns)
    # the later of the receive clock and the wall clock, plus a day of clock skew
    far = recv_ns + 10 * 365 * 86_400 * 10**9  # a simulated receive clock ten years ahead
    assert ais.plausible_time_ns(far + ais.FUTURE_SLACK_NS, far)
    assert not ais.plausible_time_ns(far + ais.FUTURE_SLACK_NS + 1, far)
    # a real time under a receive clock of 0 (tests, a simulation) is still taken: the wall clock bounds it
    assert ais.plausible_time_ns(recv_ns, 0)


def test_one_far_future_line_does_not_hide_every_vessel(tmp_path, capsys):
    path = tmp_path / "log.nmea"
    path.write_text("\n".join([_tagged(GOOD_A, str(T0_S)), _tagged(GOOD_B, str(T0_S + 1)),
                               _tagged(GOOD_B, "4102444800")]) + "\n")  # year 2100
    assert main(["ais", "show", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["time_ns"] == (T0_S + 1) * 10**9
    assert sorted(v["mmsi"] for v in doc["vessels"]) == [237836700, 244660274]
    assert doc["stats"]["malformed"] == {"tag_block": 1}


# ---------------------------------------------------------------------------------------- 10: drone patrol
@pytest.mark.parametrize("option, text, words", [
    ("--lawnmower", "1,2;3", "point 2 '3' is not lat,lon"),
    ("--perimeter", "52.8,5.7;52.81,5.7,9;52.81,5.71", "point 2 '52.81,5.7,9' is not lat,lon"),
    ("--points", "52.8", "point 1 '52.8' is not lat,lon"),
    ("--points", "52.8,x", "cannot read '52.8,x' as lat,lon pairs"),
])
def test_patrol_points_need_lat_lon_pairs(capsys, option, text, words):
    assert main(["drone", "patrol", option, text, "--alt", "40"]) == 1
    err = _error_line(capsys)
    assert err.startswith(f"seawatch: error: {option}: ") and words in err


def test_patrol_good_inline_points_still_plan(capsys):
    assert main(["drone", "patrol", "--points", "52.8,5.7; 52.81,5.71", "--alt", "40"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(w["lat_deg"], w["lon_deg"]) for w in doc["waypoints"]][:2] == [(52.8, 5.7), (52.81, 5.71)]
