"""Every endpoint of the OpenAPI document fuzzed with schemathesis (valid and invalid values, bounded examples):
no request may answer a 5xx (issue 14). Runs with an admin token on a copy of the demo city, so that the
bodies of the write endpoints are exercised too."""

from __future__ import annotations

import pytest
import schemathesis
from civicgrid.geo.store_files import copy_store
from civicgrid.geo.users import add_user
from hypothesis import HealthCheck, settings

#: Examples per operation: enough to hit the edges (empty, huge, far-off values), few enough for minutes.
EXAMPLES = 12


@pytest.fixture(scope="module")
def fuzz_env(demo_db, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "demo.duckdb"
    copy_store(demo_db, path)
    token = add_user(path, "fuzzer", role="admin")[1]
    from civicgrid.api.app import create_app

    return create_app(path), token


@pytest.fixture(scope="module")
def api_schema(fuzz_env):
    app, _ = fuzz_env
    # the patrol solver may be asked for up to 120 s per plan: planning is fuzzed with tiny time limits in
    # tests/test_hardening.py instead
    return schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path="/api/patrols/plan")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error(case, fuzz_env):
    _, token = fuzz_env
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    assert response.status_code < 500, (f"{case.method} {case.formatted_path} {case.query} {case.body!r:.300}"
                                        f" -> {response.status_code} {response.text[:500]}")
