"""Tests for the patrol endpoints: plan, stored plan across app instances, exports, the map page."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from civicgrid.geo.store_files import copy_store
from fastapi.testclient import TestClient

DAY = "2025-12-20"
STREET = "430105001"


@pytest.fixture(scope="module")
def city(demo_db: Path, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("patrol_api") / "city.duckdb"
    copy_store(demo_db, db)
    return db


@pytest.fixture(scope="module")
def tokens(city: Path) -> dict:
    from civicgrid.geo.users import add_user

    return {role: add_user(city, f"patrol-{role}", role=role)[1] for role in ("viewer", "inspector")}


@pytest.fixture(scope="module")
def client(city: Path, tokens: dict) -> TestClient:
    from civicgrid.api.app import create_app

    return TestClient(create_app(city), headers=_auth(tokens, "viewer"))  # stored plans need a viewer token


def _auth(tokens: dict, role: str = "inspector") -> dict:
    return {"Authorization": f"Bearer {tokens[role]}"}


def _body(**options) -> dict:
    from civicgrid.geo.coords import from_wgs84

    x, y = from_wgs84(np.array([112.93]), np.array([28.22]), "gcj02")
    return {"date": DAY, "crs": "gcj02",
            "inspectors": [{"name": "王伟", "start": [float(x[0]), float(y[0])], "shift_start": "14:00",
                            "shift_minutes": 180, "mode": "bike"},
                           {"name": "Li Na", "start": [float(x[0]), float(y[0])], "end": [float(x[0]), float(y[0])],
                            "shift_start": "15:00", "shift_minutes": 120, "mode": "walk"}],
            "options": {"area": STREET, "time_limit_s": 1.5, "solver": "ortools", **options}}


@pytest.fixture(scope="module")
def plan(client: TestClient, tokens: dict) -> dict:
    res = client.post("/api/patrols/plan", json=_body(coverage_days=30), headers=_auth(tokens))
    assert res.status_code == 200, res.text
    return res.json()


def test_plan_response(plan: dict) -> None:
    assert len(plan["plan_id"]) == 12
    assert plan["travel_source"] == "road network: roads table"   # the store's own streets, by default
    assert all(r["path"][0] == pytest.approx(r["start"], abs=1e-6) for r in plan["routes"])
    # GCJ-02 input converted to WGS84 (the offset near Changsha is a few hundred metres)
    for r in plan["routes"]:
        assert r["start"] == pytest.approx([112.93, 28.22], abs=1e-6)
    a, b = plan["routes"]
    assert (a["shift_start"], b["shift_start"]) == (f"{DAY}T14:00", f"{DAY}T15:00")
    assert a["stops"] and b["stops"]
    for r in plan["routes"]:
        stops = r["stops"]
        assert [s["seq"] for s in stops] == list(range(1, len(stops) + 1))
        assert [s["arrival"] for s in stops] == sorted(s["arrival"] for s in stops)
        assert r["totals"]["travel_min"] == pytest.approx(sum(s["travel_min"] for s in stops)
                                                          + r["return_travel_min"], abs=0.2)
        assert r["totals"]["shift_used_min"] <= r["shift_minutes"] + 1e-6
        for s in stops:
            assert s["reason"].startswith("风险 ")
            assert 0 <= s["risk"] <= 1 and s["service_min"] > 0
    assert plan["totals"]["risk"] == pytest.approx(sum(s["risk"] for r in plan["routes"] for s in r["stops"]),
                                                   abs=1e-3)
    assert plan["candidates"]["coverage"] > 0
    assert plan["unvisited_must"]                 # more must-visits than 5 hours can hold, each with a reason
    assert all(u["reason"] for u in plan["unvisited_must"])
    # ... planned on the next working days, or explained
    b = plan["backlog"]
    assert b["must_visits"] == len(b["items"]) == plan["candidates"]["must_visit"]
    assert all(it["planned_date"] or it["reason"] for it in b["items"])
    assert {u["site_id"] for u in plan["unvisited_must"]} == {it["site_id"] for it in b["items"]
                                                              if it["planned_date"] != DAY}


def test_stored_plan_is_read_by_another_app(plan: dict, city: Path, tokens: dict) -> None:
    from civicgrid.api.app import create_app

    other = TestClient(create_app(city), headers=_auth(tokens, "viewer"))  # a second service on the same file
    res = other.get(f"/api/patrols/{plan['plan_id']}")
    assert res.status_code == 200
    assert res.json() == plan
    listed = other.get("/api/patrols").json()
    assert plan["plan_id"] in [p["plan_id"] for p in listed]
    missing = other.get("/api/patrols/nope")
    assert missing.status_code == 404 and plan["plan_id"] in missing.json()["detail"]


def test_exports(client: TestClient, plan: dict) -> None:
    pid = plan["plan_id"]
    n = [len(r["stops"]) for r in plan["routes"]]
    res = client.get(f"/api/patrols/{pid}/export", params={"format": "geojson", "lang": "en"})
    assert res.status_code == 200 and res.headers["content-type"] == "application/geo+json"
    gj = res.json()
    stops = [f for f in gj["features"] if f["properties"]["kind"] == "stop"]
    assert len(stops) == sum(n)
    assert stops[0]["properties"]["reason"].startswith("risk ")
    first = plan["routes"][0]["stops"][0]
    assert stops[0]["geometry"]["coordinates"] == pytest.approx([first["lng"], first["lat"]])
    shifted = client.get(f"/api/patrols/{pid}/export", params={"format": "geojson", "crs": "gcj02"}).json()
    from civicgrid.geo.coords import from_wgs84

    x, y = from_wgs84(np.array([first["lng"]]), np.array([first["lat"]]), "gcj02")
    stop = next(f for f in shifted["features"] if f["properties"]["kind"] == "stop")
    assert stop["geometry"]["coordinates"] == pytest.approx([x[0], y[0]])
    gpx = client.get(f"/api/patrols/{pid}/export", params={"format": "gpx"})
    assert "attachment" in gpx.headers["content-disposition"]
    root = ET.fromstring(gpx.content)
    assert len(root.findall("{http://www.topografix.com/GPX/1/1}wpt")) == sum(n)
    html = client.get(f"/api/patrols/{pid}/export", params={"format": "html"})
    assert html.headers["content-type"].startswith("text/html") and first["name"] in html.text
    assert "路程依据: 路网：本库街道路网（roads 表）" in html.text
    assert "travel times: road network: roads table" in client.get(f"/api/patrols/{pid}/export",
                                                             params={"format": "html", "lang": "en"}).text
    xlsx = client.get(f"/api/patrols/{pid}/export", params={"format": "xlsx"})
    assert xlsx.content[:2] == b"PK"
    bad = client.get(f"/api/patrols/{pid}/export", params={"format": "kml"})
    assert bad.status_code == 422 and "geojson" in bad.json()["detail"]


def test_map_page_is_offline(client: TestClient, plan: dict, city: Path) -> None:
    from civicgrid.geo.store import Store
    from civicgrid.maps.offline import external_urls
    from civicgrid.sites.patrol.export import ROUTE_COLORS

    res = client.get(f"/map/patrol/{plan['plan_id']}")
    assert res.status_code == 200
    page = res.text
    assert external_urls(page) == []
    assert ROUTE_COLORS[0] in page and ROUTE_COLORS[1] in page
    first = plan["routes"][0]["stops"][0]
    assert first["arrival"][11:16] in page and first["name"] in page
    # a marker per stop and per start (S/E: the routes end where they start)
    assert page.count("L.marker(") == sum(len(r["stops"]) for r in plan["routes"]) + len(plan["routes"])
    assert page.count("L.polyline(") == len(plan["routes"])
    assert page.count('class=\\"cg-stop\\"') == sum(len(r["stops"]) for r in plan["routes"])
    assert "图例" in page and "出发点" in page and "_DECLUTTER" not in page and "cg-time" in page
    # the streets are drawn under the routes, and each route follows them
    assert '"kind": "arterial"' in page and '"kind": "alley"' in page
    assert all(len(r["path"]) > len(r["stops"]) + 2 for r in plan["routes"] if r["stops"])
    a = plan["routes"][0]
    assert f"{a['inspector']}（骑行）：{a['totals']['stops']} 个点位" in page    # the layer legend
    # the micro-grids around the plan as a light base (offline, no tiles): every stop's grid is drawn
    from civicgrid.sites.patrol.export import plan_grids

    grids = plan_grids(Store(city), plan)
    stop_grids = {s["grid_code"] for r in plan["routes"] for s in r["stops"] if s.get("grid_code")}
    assert stop_grids and stop_grids <= set(grids["code"])
    assert all(f'"code": "{code}"' in page for code in stop_grids)
    assert "网格名称" in page or "\\u7f51\\u683c\\u540d\\u79f0" in page  # the grid tooltip
    assert client.get("/map/patrol/nope").status_code == 404
    amap = client.get(f"/map/patrol/{plan['plan_id']}", params={"basemap": "amap", "lang": "en"})
    assert amap.status_code == 200 and "autonavi" in amap.text


def test_planning_needs_an_inspector_token(client: TestClient, tokens: dict, city: Path) -> None:
    from civicgrid.geo.store import Store
    from civicgrid.sites.patrol import list_plans

    before = len(list_plans(Store(city), limit=1000))
    anonymous = TestClient(client.app)
    res = anonymous.post("/api/patrols/plan", json=_body())
    assert res.status_code == 401 and "token" in res.json()["detail"]
    assert client.post("/api/patrols/plan", json=_body(), headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/api/patrols/plan", json=_body(), headers={"Authorization": "Basic abc"}).status_code == 401
    res = client.post("/api/patrols/plan", json=_body(), headers=_auth(tokens, "viewer"))
    assert res.status_code == 403 and "inspector" in res.json()["detail"]
    assert len(list_plans(Store(city), limit=1000)) == before          # refused requests store nothing
    # stored plans hold inspectors' names, start points and routes: reading them needs a viewer token
    pid = list_plans(Store(city), limit=1)["plan_id"].iloc[0]
    for path in ("/api/patrols", f"/api/patrols/{pid}", f"/api/patrols/{pid}/export", f"/map/patrol/{pid}"):
        assert anonymous.get(path).status_code == 401, path
        assert client.get(path).status_code == 200, path


def test_configured_road_network(city: Path, tokens: dict, shared: Path) -> None:
    from civicgrid.api.app import create_app

    futian = shared / "cn_shenzhen" / "shenzhen_futian_osm_drive_G.graphml"
    app = TestClient(create_app(city, settings={"patrol_network": str(futian)}))
    # the demo city lies near Changsha, the network covers central Shenzhen: a clear error, not a silent fallback
    res = app.post("/api/patrols/plan", json=_body(), headers=_auth(tokens))
    assert res.status_code == 422
    assert res.json()["detail"].startswith("road network: shenzhen_futian_osm_drive_G.graphml does not cover "
                                           "the points")
    # the request may opt out of the configured network
    res = app.post("/api/patrols/plan", json=_body(road_network=False), headers=_auth(tokens))
    assert res.status_code == 200 and res.json()["travel_source"] == "straight line × 1.3"


def test_bad_requests(client: TestClient, tokens: dict) -> None:
    def post(body: dict):
        return client.post("/api/patrols/plan", json=body, headers=_auth(tokens))

    body = _body()
    body["inspectors"][0]["mode"] = "horse"
    assert post(body).status_code == 422
    res = post(_body(area="nowhere"))
    assert res.status_code == 404 and "unknown area 'nowhere'" in res.json()["detail"]
    res = post(_body(must_visit=[99999999]))
    assert res.status_code == 422 and "99999999" in res.json()["detail"]
    body = _body()
    body["date"] = "someday"
    assert post(body).status_code == 422
