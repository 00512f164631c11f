"""The ``seawatch serve`` configuration: validation, field-path error messages, ``seawatch config check``."""

from __future__ import annotations

import re

import pytest
import yaml

from seawatch.cli import main
from seawatch.errors import ConfigError
from seawatch.service import config as service_config
from seawatch.service.auth import hash_api_key, hash_password
from seawatch.service.config import ServeConfig, load_config

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def test_defaults_are_valid_and_closed():
    cfg = load_config()
    assert cfg.service.host == "127.0.0.1"
    assert cfg.service.cors_origins == ()
    assert cfg.auth.users == () and cfg.auth.api_keys == ()
    assert cfg.storage.resolved_database_url().startswith("sqlite:///")
    assert cfg.storage.resolved_database_url().endswith("seawatch-data/seawatch.db")
    assert cfg.storage.resolved_media_dir().name == "media"


def test_docstring_example_validates():
    text = service_config.__doc__.split("Example (YAML)::", 1)[1]
    cfg = load_config(data=yaml.safe_load(text))
    assert [s.id for s in cfg.sources] == ["quay-1"]
    assert cfg.auth.users[0].role == "admin"
    assert cfg.auth.api_keys[0].key_sha256.get_secret_value() == hash_api_key("demo-key-change-me")
    assert cfg.pipeline.zones[0].id == "yard"


@pytest.mark.parametrize(
    "data, path, words",
    [
        ({"service": {"port": 0}}, "service.port", "greater than or equal to 1"),
        ({"service": {"port": 65536}}, "service.port", "less than or equal to 65535"),
        ({"service": {"bogus": 1}}, "service.bogus", "unknown setting 'bogus'; the settings here: host, port,"),
        ({"bogus_section": {}}, "bogus_section", "unknown setting 'bogus_section'; the settings here: sources,"),
        ({"storage": {"data_dir": ""}}, "storage.data_dir", "at least 1"),
        ({"storage": {"retention": {"clips_max_age_days": 365}}}, "storage.retention", "longer than events are kept (90 days)"),
        ({"storage": {"retention": {"min_free_disk_pct": -1}}}, "storage.retention.min_free_disk_pct", "greater than or equal to 0"),
        ({"storage": {"retention": {"events_days_by_severity": {"severe": 9}}}}, "storage.retention.events_days_by_severity.severe",
         "'low', 'medium', 'high' or 'critical'"),
        ({"auth": {"users": [{"name": "bob", "role": "king", "password_hash": HASH}]}}, "auth.users[0].role", "'operator', 'reviewer' or 'admin'"),
        ({"auth": {"users": [{"name": "bob", "role": "admin", "password_hash": "hunter2"}]}}, "auth.users[0]", "argon2 hash"),
        ({"auth": {"users": [{"name": "../x", "role": "admin", "password_hash": HASH}]}}, "auth.users[0].name", "'../x' is not a valid name here: start with a letter or digit"),
        ({"auth": {"users": [{"name": "a", "role": "admin", "password_hash": HASH}, {"name": "a", "role": "operator", "password_hash": HASH}]}},
         "auth", "unique"),
        ({"auth": {"api_keys": [{"name": "k", "role": "operator", "key_sha256": "abc"}]}}, "auth.api_keys[0]", "64 lower-case hex"),
        ({"auth": {"token_secret": "short"}}, "auth", "at least 32"),
        ({"auth": {"token_ttl_s": 1}}, "auth.token_ttl_s", "greater than or equal to 60"),
        ({"mqtt": {"port": -1}}, "mqtt.port", "greater than or equal to 1"),
        ({"mqtt": {"topic_prefix": "a b#"}}, "mqtt.topic_prefix", "pattern"),
        ({"sources": [{"id": "a", "url": "x.mp4", "analysis_fps": 0}]}, "sources[0].analysis_fps", "greater than 0"),
        ({"sources": [{"id": "a", "url": "x.mp4"}, {"id": "a", "url": "y.mp4"}]}, "(top level)", "unique"),
        ({"sources": [{"id": "a", "url": "x.mp4"}], "zones": [{"id": "z", "source": "b", "rules": [{"type": "fire_smoke"}]}]},
         "(top level)", "not configured: ['b']"),
        ({"zones": [{"id": "z", "source": "a", "rules": [{"type": "nope"}]}]}, "zones[0].rules[0]", "unknown type 'nope'; the types: fire_smoke,"),
    ],
)
def test_errors_name_the_field(data, path, words):
    with pytest.raises(ConfigError) as info:
        load_config("site.yaml", data=data)
    msg = str(info.value)
    assert f"site.yaml: {path}" in msg, msg
    assert words in msg, msg


def test_every_error_is_listed():
    with pytest.raises(ConfigError) as info:
        load_config(data={"service": {"port": 0, "host": ""}, "mqtt": {"port": 0}})
    msg = str(info.value)
    assert "(3 errors)" in msg
    assert "service.port" in msg and "service.host" in msg and "mqtt.port" in msg


def test_secrets_never_printed():
    cfg = ServeConfig.model_validate({"auth": {"token_secret": "s" * 40, "users": [{"name": "a", "role": "admin", "password_hash": HASH}]}})
    text = repr(cfg) + str(cfg.model_dump())
    assert "s" * 40 not in text and HASH not in text


def test_password_hash_roundtrip_in_config():
    h = hash_password("correct horse")
    cfg = load_config(data={"auth": {"users": [{"name": "alice", "role": "reviewer", "password_hash": h}]}})
    assert cfg.auth.users[0].password_hash.get_secret_value() == h


def test_config_check_cli(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("service: {port: 9000}\nstorage: {data_dir: " + str(tmp_path / "d") + "}\n")
    assert main(["config", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "127.0.0.1:9000" in out
    assert "cameras down 60 s -> source_offline (high)" in out and "drone_link_lost (critical)" in out
    assert "proxies believed 127.0.0.1, ::1" in out
    assert "analysis worker" not in out  # no cameras
    cams = tmp_path / "cams.yaml"
    cams.write_text("analysis_workers: 3\nsources: [{id: a, url: a.mp4}, {id: b, url: b.mp4}]\n"
                    "storage: {data_dir: " + str(tmp_path / "d") + "}\n")
    assert main(["config", "check", str(cams)]) == 0
    assert "; 2 analysis worker(s) here (analysis_workers 3)" in capsys.readouterr().out  # one camera per worker
    quiet = tmp_path / "quiet.yaml"
    quiet.write_text("source_alerts: {offline_after_s: null, drone_link_lost_after_s: null}\n"
                     "service: {trusted_proxies: []}\nstorage: {data_dir: " + str(tmp_path / "d") + "}\n")
    assert main(["config", "check", str(quiet)]) == 0
    out = capsys.readouterr().out
    assert "no camera-down incidents; no drone-link incidents" in out and "no proxy headers believed" in out

    bad = tmp_path / "bad.yaml"
    bad.write_text("service: {port: 70000}\nauth:\n  users:\n    - {name: bob, role: king, password_hash: x}\n")
    assert main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"bad\.yaml: service\.port: .*65535", err)
    assert "auth.users[0].role" in err
    assert "Traceback" not in err

    notyaml = tmp_path / "broken.yaml"
    notyaml.write_text("service: {port: [\n")
    assert main(["config", "check", str(notyaml)]) == 1
    assert "not valid YAML" in capsys.readouterr().err

    assert main(["config", "check", str(tmp_path / "absent.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err

    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    assert main(["config", "check", str(lst)]) == 1
    assert "top level must be a mapping" in capsys.readouterr().err


def test_pipeline_part_carries_every_pipeline_field():
    from seawatch.vision.pipeline import PipelineConfig

    cfg = load_config(data={"sources": [{"id": "quay-1", "url": "/a.mp4"}], "ais": ["/data/ais.nmea"], "registry": "/data/reg.csv",
                            "zones": [{"id": "yard", "source": "quay-1", "rules": [{"type": "fire_smoke"}]}]})
    part = cfg.pipeline
    assert isinstance(part, PipelineConfig) and not isinstance(part, ServeConfig)
    for name in PipelineConfig.model_fields:
        assert getattr(part, name) == getattr(cfg, name), name
    assert part.ais == ("/data/ais.nmea",) and part.registry == "/data/reg.csv"
