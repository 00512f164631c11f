"""Every example configuration validates: pipeline examples (``seawatch run``) as pipeline configs, and the
whole-service ones (``seawatch serve``: with storage, auth, MQTT, webhooks...) as serve configs."""

from pathlib import Path

import pytest
import yaml

from seawatch.service.config import load_config
from seawatch.vision.pipeline import PipelineConfig, load_pipeline_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def _is_serve_config(path: Path) -> bool:
    return bool(set(yaml.safe_load(path.read_text())) - set(PipelineConfig.model_fields))


def _trained_vessel(cache: Path) -> None:
    """A model cache where `vessel` is registered, as on a site that trained it (the examples that use it are
    written for such a site; a fresh machine has only the downloaded models)."""
    from seawatch import paths

    (cache / "manifests").mkdir(parents=True, exist_ok=True)
    shipped = (paths.MANIFEST_DIR / "coco_yolov5n.yaml").read_text()
    (cache / "manifests" / "vessel.yaml").write_text(shipped.replace("name: coco_yolov5n", "name: vessel", 1))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_is_valid(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SEAWATCH_CACHE", str(tmp_path / "cache"))
    _trained_vessel(tmp_path / "cache")
    cfg = (load_config if _is_serve_config(path) else load_pipeline_config)(path)
    ids = {s.id for s in cfg.sources}
    assert ids and {z.source for z in cfg.zones} <= ids


def test_the_port_service_example_is_a_whole_site(capsys, monkeypatch):
    from seawatch.cli import main

    monkeypatch.setenv("SEAWATCH_SMTP_PASSWORD", "x")  # its e-mail login's password: config check refuses it unset

    path = Path(__file__).resolve().parents[1] / "examples" / "port-service.yaml"
    cfg = load_config(path)
    assert [w.label for w in cfg.webhooks] == ["control_room", "duty_chat"] and cfg.mqtt.enabled
    assert cfg.storage.retention.events_days_by_severity == {"critical": 730}
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "OK: 3 source(s)" in out and "webhooks control_room, duty_chat" in out and "critical 730 d" in out
    assert "with Home Assistant discovery" in out
    drone = cfg.drones[0]  # "send drone" bounded to the port's airspace
    assert drone.operating_area() is not None and drone.max_task_range_m == 2500
    assert "REPLACE-WITH-TOKEN" not in out and "secret" not in out


def test_there_are_examples():
    assert EXAMPLES


def test_an_example_using_vessel_before_it_is_trained_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    """On a machine that has not trained `vessel`, config check refuses the harbour example as run would, and says
    the model is trained, not downloaded, and what to use meanwhile."""
    from seawatch.cli import main

    monkeypatch.setenv("SEAWATCH_CACHE", str(tmp_path / "cache"))
    path = Path(__file__).resolve().parents[1] / "examples" / "harbour-camera.yaml"
    assert main(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "no model named 'vessel'" in err and "seawatch models train vessels" in err and "coco_yolov5n meanwhile" in err
    _trained_vessel(tmp_path / "cache")
    assert main(["config", "check", str(path)]) == 0
