"""What a technician copies from the documentation must be what Seawatch takes.

Every ```yaml block of README.md and service/README.md is a fragment of a Seawatch configuration and goes through
the real loader (``load_config``), unless its first line says it is another program's file ("not Seawatch's": Home
Assistant's ``configuration.yaml``, ``prometheus.yml``). The root README's command table names every subcommand the
CLI has. And the mistakes a technician makes when writing a site's file (a typo in a key, one address where a list
belongs, ``home_assistant: true``, a rule type misspelt) are answered with what to write instead.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from seawatch.errors import ConfigError
from seawatch.service.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "service/README.md")
FOREIGN = "not Seawatch's"  # the first line of a block that is another program's configuration says so


def _yaml_blocks() -> list[tuple[str, int, str]]:
    """(document, line of the opening fence, text) of every ```yaml block of DOCS."""
    blocks = []
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.S | re.M):
            blocks.append((doc, text.count("\n", 0, m.start()) + 1, m.group(1)))
    return blocks


BLOCKS = _yaml_blocks()
SEAWATCH_BLOCKS = [b for b in BLOCKS if FOREIGN not in b[2].splitlines()[0]]


def _with_its_sources(fragment: dict) -> dict:
    """The fragment as a whole file: where it shows no ``sources``, a camera for every source id it refers to (zones,
    per-camera retention), as the site it was written for has them."""
    data = dict(fragment)
    if "sources" not in data:
        ids = {z.get("source") for z in data.get("zones", []) if isinstance(z, dict)}
        ids |= set(((data.get("storage") or {}).get("retention") or {}).get("sources") or {})
        ids = sorted(i for i in ids if i) or ["cam"]
        data["sources"] = [{"id": i, "url": f"rtsp://camera.example/{i}"} for i in ids]
    return data


def test_the_documents_have_configuration_blocks():
    assert len(SEAWATCH_BLOCKS) >= 7, [(d, n) for d, n, _ in SEAWATCH_BLOCKS]
    foreign = [b[2].splitlines()[0] for b in BLOCKS if b not in SEAWATCH_BLOCKS]
    assert len(foreign) == 2 and any("prometheus.yml" in f for f in foreign) and any(
        "Home Assistant" in f for f in foreign), foreign


@pytest.mark.parametrize("doc, line, text", SEAWATCH_BLOCKS, ids=[f"{d}:{n}" for d, n, _ in SEAWATCH_BLOCKS])
def test_every_configuration_block_of_the_docs_is_taken_by_the_loader(doc, line, text):
    fragment = yaml.safe_load(text)
    assert isinstance(fragment, dict), f"{doc}:{line}: not a mapping of sections"
    try:
        load_config(data=_with_its_sources(fragment))
    except ConfigError as exc:
        pytest.fail(f"{doc}:{line}: the configuration shown is refused:\n{exc}")


def test_the_command_table_names_every_subcommand():
    """A row `seawatch GROUP a|b|c` of the root README lists exactly the subcommands `seawatch GROUP --help` offers."""
    from seawatch.cli import build_parser

    groups = {}
    for action in build_parser()._subparsers._group_actions:  # the top-level commands
        for name, sub in action.choices.items():
            inner = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
            if inner:
                groups[name] = set(inner[0].choices)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `seawatch (\w+) ((?:\w+\\\|)+\w+)", text, re.M)
    assert rows, "no `seawatch GROUP a|b` row in the command table"
    for group, listed in rows:
        assert set(listed.split("\\|")) == groups[group], (group, listed, sorted(groups[group]))
    table = text[text.index("## Command line"):text.index("## Layout")]
    for name in build_parser()._subparsers._group_actions[0].choices:
        for sub in sorted(groups.get(name, {""})):
            assert re.search(rf"`seawatch {name}{' [^`]*' + sub if sub else ''}\b", table), f"seawatch {name} {sub}"


def test_the_documented_api_key_hash_is_the_one_the_service_checks():
    """service/README.md: `printf %s "$KEY" | sha256sum` gives auth.api_keys[].key_sha256."""
    from seawatch.service.auth import hash_api_key

    assert 'printf %s "$KEY" | sha256sum' in (ROOT / "service/README.md").read_text(encoding="utf-8")
    key = "k3y-Ümlaut_0123456789"
    out = subprocess.run(["sh", "-c", 'printf %s "$KEY" | sha256sum'], env={"KEY": key, "LC_ALL": "C.UTF-8"},
                         capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == hash_api_key(key)


# ---- what a technician gets told about a mistake -------------------------------------------------------------------
def _refusal(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_config("site.yaml", data={"sources": [{"id": "quay", "url": "rtsp://camera.example/quay"}], **data})
    return str(info.value)


@pytest.mark.parametrize("data, says", [
    ({"sources": [{"id": "quay", "url": "rtsp://c/q", "fps": 2}]},
     "site.yaml: sources[0].fps: unknown setting 'fps' (did you mean analysis_fps?); the settings here: id, url,"),
    ({"mqtt": {"enabled": True, "hostname": "broker"}},
     "mqtt.hostname: unknown setting 'hostname' (did you mean host or username?); the settings here: enabled, host,"),
    ({"email": {"smtp_host": "mail.port.example", "from": "a@port.example", "password": "x",
                "recipients": [{"name": "duty", "to": ["duty@port.example"]}]}},
     "email.password: unknown setting 'password' (did you mean password_env?)"),
    ({"storage": {"retention": {"events_max_age": 30}}},
     "storage.retention.events_max_age: unknown setting 'events_max_age' (did you mean events_max_age_days"),
    ({"zones": [{"id": "lane", "source": "quay", "rules": [{"type": "fire_lane_blocked", "min_duration": 60}]}]},
     "zones[0].rules[0].fire_lane_blocked.min_duration: unknown setting 'min_duration' (did you mean min_duration_s?)"),
    ({"mqtt": {"enabled": True, "home_assistant": True}},
     "mqtt.home_assistant: must be a section of settings, e.g. {enabled: true}, not true"),
    ({"email": {"smtp_host": "mail.port.example", "from": "a@port.example",
                "recipients": [{"name": "duty", "to": "duty@port.example"}]}},
     "email.recipients[0].to: must be a list, e.g. [duty@port.example], not 'duty@port.example'"),
    ({"sources": [{"id": "quay", "url": "rtsp://c/q", "models": "helmet"}]},
     "sources[0].models: must be a list, e.g. [helmet], not 'helmet'"),
    ({"zones": [{"id": "lane", "source": "quay", "rules": [{"type": "fire_lane"}]}]},
     "zones[0].rules[0]: unknown type 'fire_lane' (did you mean fire_lane_blocked?); the types: fire_smoke, no_hard_hat,"),
    ({"zones": [{"id": "lane", "source": "quay", "rules": []}]}, "zones[0].rules: must not be empty: at least 1 is needed"),
    ({"sources": [{"id": "quay west", "url": "rtsp://c/q"}]},
     "sources[0].id: 'quay west' is not a valid name here: start with a letter or digit, then only letters, digits, "
     "'_', '.', '-' (no spaces), at most 64 characters"),
    ({"sources": [{"id": "quay", "url": "rtsp://c/q", "analysis_fps": "2 fps"}]},
     "sources[0].analysis_fps: must be a number, not '2 fps'"),
    ({"service": {"port": "80a"}}, "service.port: must be a whole number, not '80a'"),
    ({"sources": [{"id": "quay", "url": "rtsp://c/q", "calibration": {"surveyed": {"lat_deg": 52.8, "lon_deg": 5.7,
                                                                              "alt_m": 10, "pan_deg": 200}}}]},
     "sources[0].calibration.surveyed.tilt_deg: missing: this setting is required here"),
])
def test_a_mistake_is_answered_with_what_to_write(data, says):
    msg = _refusal(data)
    assert says in msg, msg
    assert "Extra inputs are not permitted" not in msg and "Input should be a valid" not in msg, msg


def test_a_misspelt_rule_type_is_one_error_not_two():
    """pydantic adds "at least 1 item ... not 0" for the rules list whose only rule failed: noise, left out."""
    msg = _refusal({"zones": [{"id": "lane", "source": "quay", "rules": [{"type": "fire_lane"}]}]})
    assert "(1 error)" in msg and "at least 1 item" not in msg, msg


def test_a_wrong_value_is_named_short_never_dumped():
    """A list or mapping where a section belongs is named by its kind: a YAML alias bomb would print gigabytes."""
    msg = _refusal({"sources": [[["x"] * 50] * 50]})
    assert "sources[0]: must be a section of settings (key: value, ...), not a list" in msg and len(msg) < 600, msg
    msg = _refusal({"sources": [{"id": "quay", "url": "rtsp://c/q", "models": "m" * 500}]})
    assert "'mmm" in msg and "..." in msg and len(msg) < 300, msg


def test_config_check_warns_of_a_zone_its_camera_cannot_serve(tmp_path, capsys, monkeypatch):
    """A hard-hat zone on a camera that runs only COCO (the default model) is valid but never raises anything: config
    check still passes, and says which model the camera lacks. The shipped port example draws no such warning."""
    from seawatch.cli import main

    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({
        "sources": [{"id": "quay", "url": "rtsp://camera.example/quay"},
                    {"id": "yard", "url": "rtsp://camera.example/yard", "models": ["coco_yolov5n", "fire_smoke"]}],
        "zones": [{"id": "cranes", "source": "quay", "rules": [{"type": "no_hard_hat"}]},
                  {"id": "lane", "source": "yard", "rules": [{"type": "fire_lane_blocked"}, {"type": "fire_smoke"}]}]}))
    assert main(["config", "check", str(site)]) == 0
    err = capsys.readouterr().err
    assert ("warning: zone cranes: rule no_hard_hat needs a model detecting no_helmet, and camera quay runs "
            "coco_yolov5n: it can never raise anything (add helmet to the camera's models)") in err, err
    assert "zone lane" not in err, err
    monkeypatch.setenv("SEAWATCH_SMTP_PASSWORD", "x")
    assert main(["config", "check", str(ROOT / "examples" / "port-service.yaml")]) == 0
    assert "warning: zone" not in capsys.readouterr().err


def test_config_check_warns_of_a_model_missing_from_the_cache(tmp_path, capsys, monkeypatch):
    """Run before `seawatch models fetch`, or as another user (another SEAWATCH_CACHE), config check passed while
    serve refused to start ("not provisioned"): it now says which camera's model is missing where, and the fix."""
    from seawatch.cli import main

    monkeypatch.setenv("SEAWATCH_CACHE", str(tmp_path / "empty-cache"))
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"sources": [{"id": "quay", "url": "rtsp://camera.example/quay",
                                                 "models": ["helmet", "coco_yolov5n"]},
                                                {"id": "yard", "url": "rtsp://camera.example/yard"}]}))
    assert main(["config", "check", str(site)]) == 0
    err = capsys.readouterr().err
    assert (f"warning: model helmet (camera(s) quay) is not provisioned in {tmp_path / 'empty-cache'}: seawatch serve "
            "will refuse to start; run `seawatch models fetch helmet`") in err, err
    assert "model coco_yolov5n (camera(s) quay, yard) is not provisioned" in err, err


def test_calibrate_says_what_the_named_source_lacks(tmp_path, capsys):
    """`seawatch calibrate POINTS --config FILE --source ID` for a camera not surveyed yet (the first calibration of
    a new site): the error names the source and the section it lacks, and what to give instead."""
    from seawatch.cli import main

    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"sources": [{"id": "quay-west", "url": "rtsp://camera.example/quay"}]}))
    points = tmp_path / "gcps.csv"
    points.write_text("x_px,y_px,lat_deg,lon_deg,alt_m,name\n400,800,52.8405,5.699,,quay corner\n"
                      "1500,760,52.841,5.701,,bollard\n960,700,52.8415,5.7005,,beacon\n")
    assert main(["calibrate", str(points), "--config", str(site), "--source", "quay-west"]) == 1
    err = capsys.readouterr().err
    assert "give --at LAT,LON,ALT" in err and "source 'quay-west' has no calibration.surveyed" in err, err
    argv = ["calibrate", str(points), "--config", str(site), "--source", "quay-west", "--at", "52.838,5.700,14"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "give --size WxH" in err and "source 'quay-west' has no calibration.camera" in err, err


def test_service_readme_names_every_section_of_the_configuration():
    """service/README.md's one sentence on what the file holds lists every top-level section the loader takes."""
    from seawatch.service.config import ServeConfig

    text = (ROOT / "service/README.md").read_text(encoding="utf-8")
    sentence = text[text.index("The configuration is `ServeConfig`"):]
    sentence = " ".join(sentence[:sentence.index(". With no `storage`")].split())
    named = set(re.findall(r"`(\w+)`", sentence))
    assert set(ServeConfig.model_fields) <= named, sorted(set(ServeConfig.model_fields) - named)


def test_run_given_a_whole_site_file_says_it_runs_with_serve(tmp_path, capsys):
    """`seawatch run --config site.yaml` on the file written for `seawatch serve` (README: run takes the pipeline
    part): each serve section is named, and the fix is given, instead of "Extra inputs are not permitted" five times."""
    from seawatch.cli import main

    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"sources": [{"id": "quay", "url": str(tmp_path / "none.mp4")}],
                                    "storage": {"data_dir": str(tmp_path / "data")}, "mqtt": {"enabled": True}}))
    assert main(["run", "--config", str(site)]) == 1
    err = capsys.readouterr().err
    assert f"{site}: storage: unknown setting 'storage'; the settings here: sources, tracker, events, zones" in err, err
    assert "a whole site's file (storage, auth, mqtt, email, ...) runs with `seawatch serve --config FILE`" in err, err


def test_run_says_what_a_misspelt_rule_setting_should_be(tmp_path, capsys):
    """The same words for `seawatch run --config` as for serve: its zones are checked by the rules loader."""
    from seawatch.cli import main

    site = tmp_path / "quay.yaml"
    site.write_text(yaml.safe_dump({"sources": [{"id": "quay", "url": str(tmp_path / "none.mp4")}], "zones": [
        {"id": "lane", "source": "quay", "rules": [{"type": "fire_lane_blocked", "min_duration": 60}]}]}))
    assert main(["run", "--config", str(site)]) == 1
    err = capsys.readouterr().err
    assert "zones.0.rules.0.fire_lane_blocked.min_duration: unknown setting 'min_duration' (did you mean " \
           "min_duration_s?)" in err, err
