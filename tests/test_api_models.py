"""Response models of the main endpoints (``civicgrid.api.models``): ``/openapi.json`` shows them, and the answers
fit them, every member documented."""

from __future__ import annotations

import pytest
from civicgrid.api import models as m
from civicgrid.api.errors import status_for
from civicgrid.geo.errors import CivicgridError, OfflineAssetError
from civicgrid.geo.store_files import copy_store
from civicgrid.geo.users import add_user
from fastapi.testclient import TestClient
from pydantic import BaseModel

#: (method, path, status) -> the models its answer's schema names.
DOCUMENTED = {
    ("get", "/api/heatmap", "200"): {"HeatmapCells", "HeatmapGeoJSON"},
    ("get", "/api/stats/areas", "200"): {"AreaStats"},
    ("get", "/api/hotspots", "200"): {"HotspotCells", "HotspotGeoJSON"},
    ("get", "/api/events", "200"): {"EventsPage"},
    ("get", "/api/risk", "200"): {"RiskList"},
    ("get", "/api/risk/{site_id}", "200"): {"SiteRiskDetail"},
    ("get", "/api/cases", "200"): {"CaseList"},
    ("post", "/api/cases", "201"): {"CaseDetail"},
    ("get", "/api/cases/{case_id}", "200"): {"CaseDetail"},
    ("get", "/api/kpis", "200"): {"KpiTable"},
    ("get", "/api/kpis/flags", "200"): {"SiteFlags"},
    ("get", "/api/simulator", "200"): {"Assessment"},
    ("post", "/api/patrols/plan", "200"): {"PatrolPlan"},
    ("get", "/api/users", "200"): {"UserList"},
    ("post", "/api/imports/{layer}", "201"): {"ImportResult"},
    ("get", "/api/imports", "200"): {"ImportList"},
    ("post", "/api/imports/{import_id}/undo", "200"): {"ImportUndone"},
}


@pytest.fixture(scope="module")
def env(demo_db, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "demo.duckdb"
    copy_store(demo_db, path)
    _user, token = add_user(path, "models_admin", role="admin")
    from civicgrid.api.app import create_app

    return TestClient(create_app(path)), {"Authorization": f"Bearer {token}"}


def _refs(schema) -> set[str]:
    if isinstance(schema, dict):
        own = {schema["$ref"].rsplit("/", 1)[-1]} if "$ref" in schema else set()
        return own.union(*(_refs(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_refs(v) for v in schema))
    return set()


def test_openapi_shows_the_response_models(env):
    client, _ = env
    spec = client.get("/openapi.json").json()
    for (method, path, status), names in DOCUMENTED.items():
        schema = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        assert _refs(schema) == names, (method, path)
        assert names <= set(spec["components"]["schemas"])
    props = spec["components"]["schemas"]["SiteRisk"]["properties"]
    assert {"risk", "rank", "reason", "components"} <= set(props)
    # the import endpoint's docs list every layer of the importer registry
    assert all(f"`{layer}`" in spec["paths"]["/api/imports/{layer}"]["post"]["description"]
               for layer in ("areas", "grids", "sites", "events", "inspections"))


def _documented(rows: list[dict], model: type[BaseModel], what: str) -> None:
    """Every member of ``rows`` is a field of ``model`` (the docs miss none)."""
    for row in rows:
        assert set(row) <= set(model.model_fields), f"{what}: undocumented {set(row) - set(model.model_fields)}"


@pytest.mark.parametrize(("path", "params", "model", "rows"), [
    ("/api/heatmap", {"res": 8}, m.HeatmapCells, None),
    ("/api/heatmap", {"res": 8, "metric": "density"}, m.HeatmapCells, None),
    ("/api/heatmap", {"res": 7, "format": "geojson", "crs": "gcj02"}, m.HeatmapGeoJSON, None),
    ("/api/stats/areas", {"level": "street", "lang": "en"}, m.AreaStats, ("areas", m.AreaStat)),
    ("/api/stats/areas", {"level": "grid"}, m.AreaStats, ("areas", m.AreaStat)),
    ("/api/hotspots", {"res": 8}, m.HotspotCells, None),
    ("/api/hotspots", {"res": 8, "format": "geojson", "significant": "true"}, m.HotspotGeoJSON, None),
    ("/api/events", {"limit": 50}, m.EventsPage, None),
    ("/api/risk", {"limit": 10}, m.RiskList, ("sites", m.SiteRisk)),
    ("/api/risk", {"limit": 3, "model": "default", "lang": "en"}, m.RiskList, ("sites", m.SiteRisk)),
    ("/api/cases", {"limit": 50}, m.CaseList, ("cases", m.Case)),
    ("/api/kpis", {"period": "2025-03"}, m.KpiTable, ("rows", m.KpiRow)),
    ("/api/kpis", {"start": "2025-01-01", "end": "2025-03-31", "level": "category"}, m.KpiTable, ("rows", m.KpiRow)),
    ("/api/kpis/flags", {"as_of": "2025-06-30"}, m.SiteFlags, ("sites", m.SiteFlag)),
    ("/api/simulator", {"runs": 200, "as_of": "2025-06-30"}, m.Assessment, ("fix", m.FixSite)),
    ("/api/users", {}, m.UserList, ("users", m.User)),
])
def test_answers_fit_their_models(env, path, params, model, rows):
    client, headers = env
    r = client.get(path, params=params, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    model.model_validate(body)
    if isinstance(body, dict) and "features" in body:
        assert body["features"], path
        if model is m.EventsPage:
            _documented([f["properties"] for f in body["features"]], m.EventProperties, path)
    if rows:
        key, row_model = rows
        assert body[key], path
        _documented(body[key], row_model, path)
    if model is m.Assessment:
        _documented([body["overall"]], m.RateSummary, path)
        _documented(body["categories"], m.CategoryRate, path)
    if model is m.RiskList:
        _documented([c for s in body["sites"] for c in s["components"]], m.RiskComponent, path)


def test_one_case_one_site_and_a_plan_fit_their_models(env):
    client, headers = env
    case_id = client.get("/api/cases", params={"limit": 1, "state": "closed"}, headers=headers).json()["cases"][0][
        "case_id"]
    case = client.get(f"/api/cases/{case_id}", headers=headers).json()
    m.CaseDetail.model_validate(case)
    _documented([case], m.CaseDetail, "case")
    _documented(case["log"], m.CaseLogEntry, "case log")
    m.CaseLog.model_validate(client.get(f"/api/cases/{case_id}/log", headers=headers).json())
    site = client.get("/api/risk/1", headers=headers).json()
    m.SiteRiskDetail.model_validate(site)
    _documented([site], m.SiteRiskDetail, "site risk")
    r = client.post("/api/patrols/plan", headers=headers, json={
        "date": "2025-07-01", "inspectors": [{"name": "甲", "start": [112.94, 28.23], "shift_minutes": 90}],
        "options": {"time_limit_s": 1, "max_candidates": 15, "road_network": False}})
    assert r.status_code == 200, r.text
    plan = r.json()
    m.PatrolPlan.model_validate(plan)
    _documented([plan], m.PatrolPlan, "plan")
    _documented(plan["routes"], m.PatrolRoute, "route")
    _documented([s for route in plan["routes"] for s in route["stops"]], m.PatrolStop, "stop")
    assert client.get(f"/api/patrols/{plan['plan_id']}", headers=headers).json() == plan


def test_offline_asset_error_is_a_civicgrid_error_answered_500():
    from civicgrid.maps import offline

    assert offline.OfflineAssetError is OfflineAssetError
    assert issubclass(OfflineAssetError, CivicgridError) and issubclass(OfflineAssetError, RuntimeError)
    assert status_for(OfflineAssetError("x")) == 500
    with pytest.raises(OfflineAssetError, match="not a vendored file"):
        offline.vendor_url("nothing.js")
