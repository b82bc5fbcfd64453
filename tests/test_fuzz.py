"""Every endpoint of the OpenAPI document fuzzed with schemathesis (valid and invalid values, bounded examples):
no request may answer a 5xx (issue 14). Runs with an admin token on a copy of the demo city, so that the
bodies of the write endpoints are exercised too, and once more without a token."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from civicgrid.geo.store_files import copy_store
from civicgrid.geo.users import add_user
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

#: Examples per operation and generation mode: enough to reach the edges (empty, huge, far-off values), few
#: enough that the whole document runs in minutes.
EXAMPLES = 10

#: The patrol solver may be asked for up to 120 s per plan: fuzzed plans get a 0.5 s limit, and fewer examples.
PLAN = ("POST", "/api/patrols/plan")


@pytest.fixture(scope="module")
def fuzz_env(demo_db, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "demo.duckdb"
    copy_store(demo_db, path)
    token = add_user(path, "fuzzer", role="admin")[1]
    from civicgrid.api.app import create_app

    return create_app(path), token


def _fuzz(operation, mode, headers, statuses: Counter, *, examples: int = EXAMPLES) -> list[str]:
    """Run one operation's examples of ``mode``; the 5xx answers met (at most 3), ``statuses`` counted."""
    found: list[str] = []
    plan = (operation.method.upper(), operation.path) == PLAN

    @settings(max_examples=min(3, examples) if plan else examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        options = case.body.get("options") if plan and isinstance(case.body, dict) else None
        if isinstance(options, dict) and isinstance(options.get("time_limit_s"), int | float):
            options["time_limit_s"] = min(options["time_limit_s"], 0.5)
        response = case.call(headers=headers)
        statuses[response.status_code // 100 * 100] += 1
        if response.status_code >= 500 and len(found) < 3:
            found.append(f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.200} -> "
                         f"{response.status_code} {response.text[:300]}")

    run()
    return found


def test_no_request_answers_a_server_error(fuzz_env):
    app, token = fuzz_env
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {token}"}
    failures, operations, statuses = [], 0, Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures.extend(_fuzz(operation, mode, headers, statuses))
        # without a token too: the token is checked before anything else (auth first, then the values)
        failures.extend(_fuzz(operation, GenerationMode.NEGATIVE, {}, statuses, examples=3))
    assert not failures, "\n".join(failures)
    assert operations >= 35  # every endpoint of the document (39 when written), not a schema read short
    # the token opens the endpoints (answers of 2xx) and the invalid values are refused (4xx)
    assert statuses[200] >= 50 and statuses[400] >= 200, statuses
