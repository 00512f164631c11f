"""Schemathesis against the app's own OpenAPI schema: every operation, valid and invalid requests, an authenticated
admin client, a SQLite store with a few events. No answer may be a 5xx, and every answer must match the schema
(status codes documented, content type, body shape). Fixed seed (derandomized), about 30 s on 2 cores.

Not checked: ``positive_data_acceptance``. Some search rules span several parameters (a bbox needs all four edges,
a radius search needs its centre, a polygon must be a simple ring) and OpenAPI cannot state them, so a
"schema-valid" request may rightly get a 422; ``negative_data_rejection`` likewise (the query model accepts
unknown-but-harmless encodings schemathesis counts as invalid). The hand-written tests in test_service_api.py and
test_service_geo.py pin those rules down.
"""

from __future__ import annotations

import warnings

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*")
schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

from seawatch.service.app import create_app  # noqa: E402
from seawatch.vision.events import GeoPosition  # noqa: E402
from test_service_api import PASSWORDS, hashes, seed, settings_for  # noqa: E402,F401
from test_service_store import make_event  # noqa: E402

EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 12, schemathesis.GenerationMode.NEGATIVE: 6}


@pytest.fixture
def fuzz_env(tmp_path, hashes):
    app = create_app(settings_for(tmp_path, hashes))
    with TestClient(app) as client:
        seed(app, app.state.media_dir)
        for i in range(4, 12):
            app.state.store.put(make_event(i, geo=GeoPosition(54.0 + i / 100, 6.5, 10.0, 5.0), type="vessel_in_zone"))
        tok = client.post("/api/auth/login", json={"username": "adam", "password": PASSWORDS["adam"]}).json()["access_token"]
        headers = {"Authorization": f"Bearer {tok}"}
        schema = schemathesis.openapi.from_asgi("/api/openapi.json", app, headers=headers)
        yield app, schema, headers


def test_every_operation_answers_within_its_schema_and_never_5xx(fuzz_env):
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    app, schema, headers = fuzz_env
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              response_headers_conformance]
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 15 and any(op.label == "GET /api/events" for op in operations)
    calls: dict[str, int] = {}
    unsatisfiable: list[str] = []

    for op in operations:
        strategies = [op.as_strategy(mode) for mode in EXAMPLES]
        if "{event_id}" in op.path:  # also on stored events, not only on random ids (404)
            strategies.append(op.as_strategy(path_parameters={"event_id": "ev00002"}))
        for k, strategy in enumerate(strategies):
            n = list(EXAMPLES.values())[k] if k < len(EXAMPLES) else 6

            @settings(max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(strategy)
            def check(case):
                response = case.call(headers=headers)
                calls[op.label] = calls.get(op.label, 0) + 1
                case.validate_response(response, checks=checks)

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (no parameters): only the positive cases run
                assert k == 1, op.label
                unsatisfiable.append(op.label)
    assert len(calls) == len(operations), set(o.label for o in operations) - set(calls)
    assert sum(calls.values()) >= 200
    # the fuzzing did not destroy the store, and the server still answers normally
    assert app.state.store.get("ev00002") is not None
