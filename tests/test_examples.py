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


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_is_valid(path):
    cfg = (load_config if _is_serve_config(path) else load_pipeline_config)(path)
    ids = {s.id for s in cfg.sources}
    assert ids and {z.source for z in cfg.zones} <= ids


def test_the_port_service_example_is_a_whole_site(capsys):
    from seawatch.cli import main

    path = Path(__file__).resolve().parents[1] / "examples" / "port-service.yaml"
    cfg = load_config(path)
    assert [w.label for w in cfg.webhooks] == ["control_room", "duty_chat"] and cfg.mqtt.enabled
    assert cfg.storage.retention.events_days_by_severity == {"critical": 730}
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "OK: 3 source(s)" in out and "webhooks control_room, duty_chat" in out and "critical 730 d" in out
    assert "REPLACE-WITH-TOKEN" not in out and "secret" not in out


def test_there_are_examples():
    assert EXAMPLES
