"""``seawatch models soup``: the uniform weight average of checkpoints of one architecture; clear errors otherwise."""

from __future__ import annotations

import pytest

from conftest import has_module, missing
from seawatch.errors import ModelError


def _checkpoints(tmp_path):
    if not (has_module("torch") and has_module("ultralytics")):
        missing("torch and ultralytics are needed for soups (pip install -e '.[export]')")
    import torch

    from seawatch.vision.export.loaders import prepare_ultralytics_env

    prepare_ultralytics_env()
    from ultralytics import YOLO

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    yolo = YOLO("yolov5n.yaml")  # built from ultralytics' own architecture file: no download
    yolo.save(str(a))
    ck = torch.load(a, map_location="cpu", weights_only=False)
    sd = ck["model"].float().state_dict()
    ck["model"].load_state_dict({k: v + 1.0 if v.dtype.is_floating_point else v for k, v in sd.items()})
    ck["model"].half()
    torch.save(ck, b)
    return a, b


def test_soup_is_the_mean_of_the_weights(tmp_path):
    import torch

    from seawatch.vision.export.soup import average_checkpoints

    a, b = _checkpoints(tmp_path)
    facts = average_checkpoints([a, b], tmp_path / "soup.pt")
    load = lambda p: torch.load(p, map_location="cpu", weights_only=False)["model"].float().state_dict()  # noqa: E731
    sa, sb, ss = load(a), load(b), load(tmp_path / "soup.pt")
    floats = [k for k, v in sa.items() if v.dtype.is_floating_point and v.numel() > 1]
    assert floats and all(torch.allclose(ss[k], (sa[k] + sb[k]) / 2, atol=2e-3) for k in floats)
    assert not torch.allclose(ss[floats[0]], sa[floats[0]], atol=0.1)
    assert [f["file"] for f in facts["soup_of"]] == [str(a), str(b)] and all(len(f["sha256"]) == 64 for f in facts["soup_of"])


def test_soup_refuses_other_architectures_and_foreign_files(tmp_path):
    from seawatch.vision.export.soup import average_checkpoints

    a, _ = _checkpoints(tmp_path)
    from ultralytics import YOLO

    other = tmp_path / "v8.pt"
    YOLO("yolov8n.yaml").save(str(other))
    with pytest.raises(ModelError, match="not the architecture"):
        average_checkpoints([a, other], tmp_path / "x.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not an ultralytics checkpoint"):
        average_checkpoints([a, junk], tmp_path / "x.pt")
    with pytest.raises(ModelError, match="two or more"):
        average_checkpoints([a], tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_soup_command_names_what_it_cannot_mix(tmp_path, monkeypatch, capsys):
    from seawatch import cli

    monkeypatch.setenv("SEAWATCH_CACHE", str(tmp_path / "cache"))
    assert cli.main(["models", "soup", "no_such_model", "other", "--name", "s"]) == 1
    assert "no model named 'no_such_model'" in capsys.readouterr().err
    assert cli.main(["models", "soup", str(tmp_path / "missing.pt"), "x.pt", "--name", "s"]) == 1
    assert "no such file" in capsys.readouterr().err
