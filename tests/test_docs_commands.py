"""What the documentation shows must run as shown: a numeric tile size in YAML, southern/western coordinates on the
command line (ArduPilot SITL's home is at -35.36), the demo's password line."""

from __future__ import annotations

from types import SimpleNamespace

from seawatch.cli import build_parser, join_coordinate_values
from seawatch.vision.pipeline import load_pipeline_config


def test_a_numeric_tile_size_in_yaml_is_taken():
    cfg = load_pipeline_config(None, {"sources": [{"id": "quay", "url": "rtsp://cam/quay", "models": ["coco_yolov5n"],
                                                    "tile": 384}]})
    assert cfg.sources[0].tile == "384"


def test_negative_coordinates_after_an_option_are_its_value():
    argv = ["drone", "patrol", "udp:127.0.0.1:14550", "--points", "-35.3632,149.1652;-35.3640,149.1660",
            "--alt", "30", "--start"]
    args = build_parser().parse_args(join_coordinate_values(argv))
    assert args.points == "-35.3632,149.1652;-35.3640,149.1660" and args.alt == 30.0 and args.start
    args = build_parser().parse_args(join_coordinate_values(["drone", "sim", "--home", "-35.363,149.165,584"]))
    assert args.home == "-35.363,149.165,584"
    # plain negative numbers and values already joined are left as they are
    assert join_coordinate_values(["--heading", "-45", "--points=-1,2;3,4"]) == ["--heading", "-45", "--points=-1,2;3,4"]


def test_the_demo_says_the_password_is_new_each_start_only_when_it_is(monkeypatch, capsys):
    from seawatch.service.cmd_serve import _announce_default

    cfg = SimpleNamespace(service=SimpleNamespace(host="127.0.0.1", port=8080), sources=[], drones=[], ais=[],
                          storage=SimpleNamespace(data_dir="seawatch-data"))
    monkeypatch.delenv("SEAWATCH_ADMIN_PASSWORD", raising=False)
    _announce_default(cfg, "generated-pw")
    assert "a new password each start" in capsys.readouterr().err
    monkeypatch.setenv("SEAWATCH_ADMIN_PASSWORD", "chosen-pw-123")
    _announce_default(cfg, "chosen-pw-123")
    err = capsys.readouterr().err
    assert "password chosen-pw-123" in err and "a new password each start" not in err
