"""The AIS association gate is set from the YAML's ``identity.gate`` (it was code defaults only).

A camera on a high tower places boats well further out than the 3 km outer bound assumes; its site raises
``max_along_m`` so those boats are judged against AIS instead of being ``too far to judge``. Bad values are config
errors naming the field, as the rest of the configuration's are.
"""

from __future__ import annotations

import pytest

from seawatch.vision.config import ConfigError
from seawatch.vision.pipeline import load_pipeline_config
from seawatch.vision.vessel_identity import IdentityConfig, VesselIdentityStage

from test_fusion_ellipse import MMSI_ACROSS, T0_NS, _far, _from_track, _table


def _stage(identity: dict | None) -> VesselIdentityStage:
    data = {"identity": identity} if identity is not None else {}
    cfg = load_pipeline_config(None, data)
    return VesselIdentityStage(cfg.identity or IdentityConfig())


def test_default_gate_is_the_fusers_default():
    fuser, _ = _stage(None)._source("cam-1")
    assert (fuser.cfg.gate_sigmas, fuser.cfg.max_gate_m, fuser.cfg.max_gate_along_m) == (3.5, 500.0, 3000.0)


def test_a_higher_outer_bound_from_the_yaml_judges_a_far_boat_the_default_calls_too_far():
    """±1000 m along the line of sight: 3.5 sigma is 3500 m, beyond the default 3 km bound (too far to judge); with
    ``max_along_m: 5000`` the boat is judged, and with no AIS vessel in its gate it is unidentified (kind none)."""
    table = _table((MMSI_ACROSS, _from_track(100.0, 300.0)))  # 300 m off its bearing: not this boat
    default_fuser, _ = _stage({})._source("cam-1")
    ident = default_fuser.update([_far(semi_major_m=1000.0)], table, T0_NS)[1]
    assert ident.too_far_to_judge

    tower_fuser, _ = _stage({"gate": {"max_along_m": 5000}})._source("cam-1")
    ident = tower_fuser.update([_far(semi_major_m=1000.0)], table, T0_NS)[1]
    assert not ident.too_far_to_judge and ident.kind == "none" and ident.mmsi is None


def test_a_narrower_gate_in_sigmas_lets_a_pair_go_that_the_default_matches():
    """An AIS vessel 2000 m down the line of sight of a ±700 m track is 2.9 sigma: inside 3.5, outside 2.5."""
    table = _table((MMSI_ACROSS, _from_track(2000.0, 20.0)))
    assert _stage({})._source("c")[0].update([_far()], table, T0_NS)[1].mmsi == MMSI_ACROSS
    assert _stage({"gate": {"sigmas": 2.5}})._source("c")[0].update([_far()], table, T0_NS)[1].mmsi is None


@pytest.mark.parametrize("gate, words", [
    ({"max_along_m": 400}, "max_along_m (400 m) must be at least max_widen_m (500 m)"),
    ({"sigmas": -1}, "identity.gate.sigmas"),
    ({"max_along_m": "far"}, "identity.gate.max_along_m"),
    ({"wide": 3}, "identity.gate.wide"),
])
def test_bad_gate_settings_are_config_errors_naming_the_field(gate, words):
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(None, {"identity": {"gate": gate}})
    assert words in str(err.value), str(err.value)
