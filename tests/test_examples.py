"""Every example configuration validates."""

from pathlib import Path

import pytest

from seawatch.vision.pipeline import load_pipeline_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_is_valid(path):
    cfg = load_pipeline_config(path)
    ids = {s.id for s in cfg.sources}
    assert ids and {z.source for z in cfg.zones} <= ids


def test_there_are_examples():
    assert EXAMPLES
