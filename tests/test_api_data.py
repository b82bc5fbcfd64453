"""The data endpoints (/api/layers, /api/heatmap, /api/hotspots, /api/stats) on the demo city, checked against
independent computations."""

from __future__ import annotations

import warnings
from itertools import pairwise

import h3
import numpy as np
import pandas as pd
import pytest
from civicgrid.geo.coords import wgs84_to_gcj02
from civicgrid.geo.store import Store

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from civicgrid.api.app import create_app


@pytest.fixture(scope="module")
def client(demo_db) -> TestClient:
    return TestClient(create_app(demo_db))


@pytest.fixture(scope="module")
def events(demo_db) -> pd.DataFrame:
    ev = Store(demo_db).sql("SELECT e.*, p.major_code FROM events e JOIN problem_types p ON p.code = e.problem_type")
    ev["h3"] = ev["h3"].astype("uint64")
    return ev


def _hex_parent(cells: pd.Series, res: int) -> pd.Series:
    uniq = {c: h3.cell_to_parent(h3.int_to_str(int(c)), res) for c in cells.unique()}
    return cells.map(uniq)


def test_heatmap_cells_equal_pandas_groupby(client, events):
    r = client.get("/api/heatmap", params={"res": 9, "start": "2024-04-01", "end": "2024-09-30", "type": "02"})
    assert r.status_code == 200
    body = r.json()
    ev = events[(events.time >= "2024-04-01") & (events.time < "2024-10-01") & (events.major_code == "02")]
    want = _hex_parent(ev["h3"], 9).value_counts()
    got = dict(body["cells"])
    assert body["res"] == 9 and body["metric"] == "count"
    assert got == want.to_dict()
    assert body["n_cells"] == len(want) and body["total_events"] == len(ev) and body["max"] == want.max()


def test_heatmap_geojson_and_payload_size(client, events):
    params = {"res": 8, "source": "inspection"}
    cells = client.get("/api/heatmap", params=params)
    geo = client.get("/api/heatmap", params={**params, "format": "geojson"})
    assert geo.status_code == 200 and geo.headers["content-type"].startswith("application/geo+json")
    fc = geo.json()
    assert fc["type"] == "FeatureCollection"
    want = _hex_parent(events.loc[events.source == "inspection", "h3"], 8).value_counts()
    props = {f["properties"]["h3_hex"]: f["properties"] for f in fc["features"]}
    assert {k: v["count"] for k, v in props.items()} == want.to_dict()
    f0 = fc["features"][0]
    ring = f0["geometry"]["coordinates"][0]
    assert len(ring) == 7  # hexagon, closed
    lat, lng = h3.cell_to_latlng(f0["properties"]["h3_hex"])
    assert abs(np.mean([p[0] for p in ring[:-1]]) - lng) < 1e-3 and abs(np.mean([p[1] for p in ring[:-1]]) - lat) < 1e-3
    assert "h3" not in f0["properties"]  # uint64 ids only as hex
    assert len(cells.content) <= 0.2 * len(geo.content)
    dens = client.get("/api/heatmap", params={**params, "metric": "density"}).json()
    cell, value = dens["cells"][0]
    assert value == pytest.approx(want[cell] / h3.cell_area(cell, unit="km^2"), abs=1e-3)


def test_heatmap_gcj02_output(client):
    w = client.get("/api/heatmap", params={"res": 7, "format": "geojson"}).json()
    g = client.get("/api/heatmap", params={"res": 7, "format": "geojson", "crs": "gcj02"}).json()
    p = np.array(w["features"][0]["geometry"]["coordinates"][0])
    q = np.array(g["features"][0]["geometry"]["coordinates"][0])
    x, y = wgs84_to_gcj02(p[:, 0], p[:, 1])
    assert np.allclose(q[:, 0], x, atol=2e-6) and np.allclose(q[:, 1], y, atol=2e-6)
    assert np.abs(q - p).max() > 1e-3  # shifted by hundreds of metres


def test_too_many_cells_names_resolution(demo_db, events):
    n11 = _hex_parent(events["h3"], 11).nunique()
    n12 = events["h3"].nunique()
    client = TestClient(create_app(demo_db, settings={"max_cells": (n11 + n12) // 2}))
    r = client.get("/api/heatmap", params={"res": 12})
    assert r.status_code == 422
    assert "res=11 or coarser fits" in r.json()["detail"]
    assert client.get("/api/heatmap", params={"res": 11}).json()["n_cells"] == n11


@pytest.mark.parametrize(("params", "status", "words"), [
    ({"type": "0299"}, 404, "0209"),
    ({"type": "暴露拉圾"}, 404, "暴露垃圾"),
    ({"category": "银行"}, 404, "银行网点"),
    ({"area": "4301059"}, 404, "430105"),
    ({"status": "late"}, 422, "overdue"),
    ({"source": "12345"}, 422, "complaint"),
    ({"res": 13}, 422, "5..12"),
    ({"metric": "sum"}, 422, "density"),
    ({"format": "png"}, 422, "geojson"),
    ({"start": "2024-05-01", "end": "2024-04-01"}, 422, "before end"),
    ({"crs": "bd09"}, 422, "gcj02"),
    ({"start": "01/07/2025"}, 422, "year first"),
    ({"start": "2025-07-01", "end": "2025-01-01"}, 422, "start=2025-07-01 is not before end=2025-01-01 (a date-only"),
    ({"rez": 8}, 422, "unknown query parameter 'rez' (did you mean 'res'?)"),
])
def test_bad_parameters(client, params, status, words):
    r = client.get("/api/heatmap", params=params)
    assert r.status_code == status, r.text[:300]
    assert words in r.json()["detail"]


def test_hotspots_endpoint(client, demo_db):
    from civicgrid.geo.hotspots import hotspots

    r = client.get("/api/hotspots", params={"res": 9})
    body = r.json()
    ref = hotspots(Store(demo_db), res=9)
    assert body["n_cells"] == len(ref) and body["n_hot"] == int(ref["hot"].sum())
    rows = {c[0]: c for c in body["cells"]}
    top = ref.sort_values("z").iloc[-1]
    assert rows[top["h3_hex"]][2] == pytest.approx(top["z"], abs=1e-4)
    assert rows[top["h3_hex"]][5] == top["cls"]
    sig = client.get("/api/hotspots", params={"res": 9, "significant": True, "format": "geojson",
                                              "lang": "en"}).json()
    assert len(sig["features"]) == int(ref["hot"].sum() + ref["cold"].sum())
    assert all(f["properties"]["label"].startswith(("Hot", "Cold")) for f in sig["features"])
    assert client.get("/api/hotspots", params={"k": 9}).status_code == 422


def test_clusters_endpoint(client):
    fc = client.get("/api/hotspots/clusters", params={"res": 9, "lang": "en"}).json()
    assert fc["n_clusters"] == len(fc["features"]) >= 2
    props = [f["properties"] for f in fc["features"]]
    assert [p["rank"] for p in props] == list(range(1, len(props) + 1))
    assert all(p["events"] >= q["events"] for p, q in pairwise(props))
    assert all(p["n_cells"] == len(p["cells"]) and p["n_sites"] == len(p["site_ids"]) for p in props)
    assert props[0]["top_type_names"][0].isascii()
    assert fc["features"][0]["geometry"]["type"] in ("Polygon", "MultiPolygon")


def test_emerging_endpoint(client):
    body = client.get("/api/hotspots/emerging", params={"res": 8, "freq": "M", "all": True}).json()
    assert body["n_slices"] == 24 and body["first_slice"].startswith("2024-01-01")
    assert sum(body["classes"].values()) == len(body["cells"])
    assert body["labels"]["new_hot"] == "新增热点"
    some = client.get("/api/hotspots/emerging", params={"res": 8, "freq": "M"}).json()
    assert len(some["cells"]) == len(body["cells"]) - body["classes"]["no_pattern"]
    r = client.get("/api/hotspots/emerging", params={"freq": "Q"})
    assert r.status_code == 422 and "W (weekly)" in r.json()["detail"]


def test_stats_areas(client, events):
    body = client.get("/api/stats/areas", params={"level": "district", "source": "complaint", "lang": "en"}).json()
    want = events[events.source == "complaint"].groupby("district_code").size()
    got = {a["code"]: a["count"] for a in body["areas"]}
    assert got == want.to_dict()
    assert all(a["label"].endswith("District") for a in body["areas"])
    assert client.get("/api/stats/areas", params={"level": "city"}).status_code == 422
    r = client.get("/api/stats/areas", params={"lang": "fr"})
    assert r.status_code == 422 and "zh or en" in r.json()["detail"]
    grids = client.get("/api/stats/areas", params={"level": "grid", "area": body["areas"][0]["code"]}).json()
    assert sum(a["count"] for a in grids["areas"]) == ((events.source.notna())
                                                       & (events.district_code == body["areas"][0]["code"])
                                                       & events.grid_code.notna()).sum()


def test_layers(client, demo_db):
    store = Store(demo_db)
    areas = client.get("/api/layers/areas", params={"level": "district", "lang": "en"}).json()
    assert len(areas["features"]) == store.sql("SELECT count(*) n FROM areas WHERE level='district'")["n"][0]
    assert all(f["properties"]["name"].endswith("District") for f in areas["features"])
    street = store.sql("SELECT code FROM areas WHERE level = 'street' ORDER BY code LIMIT 1")["code"][0]
    grids = client.get("/api/layers/grids", params={"area": street}).json()
    n = store.sql("SELECT count(*) n FROM grids WHERE street_code = ?", [street])["n"][0]
    assert len(grids["features"]) == n > 0
    assert {"leader_name", "leader_phone", "households"} <= set(grids["features"][0]["properties"])
    bbox = (112.93, 28.18, 112.97, 28.22)
    sites = client.get("/api/layers/sites", params={"category": "银行网点,14",
                                                    "bbox": ",".join(map(str, bbox))}).json()
    want = store.sql("SELECT count(*) n FROM sites WHERE active AND category_code IN ('03','14') AND "
                     "lng BETWEEN ? AND ? AND lat BETWEEN ? AND ?", [bbox[0], bbox[2], bbox[1], bbox[3]])["n"][0]
    assert len(sites["features"]) == want > 0
    assert {f["properties"]["category_code"] for f in sites["features"]} <= {"03", "14"}
    gcj = client.get("/api/layers/sites", params={"category": "03", "crs": "gcj02"}).json()
    wgs = client.get("/api/layers/sites", params={"category": "03"}).json()
    p, q = wgs["features"][0]["geometry"]["coordinates"], gcj["features"][0]["geometry"]["coordinates"]
    assert np.allclose(wgs84_to_gcj02(p[0], p[1]), q, atol=2e-6)
    cats = client.get("/api/layers/categories", params={"lang": "en"}).json()
    assert len(cats) == 38 and cats[2]["name"] == "Bank branch"
    assert sum(c["sites"] for c in cats) == store.sql("SELECT count(*) n FROM sites WHERE active")["n"][0]
    types = client.get("/api/layers/problem-types").json()
    assert len(types) == store.sql("SELECT count(*) n FROM problem_types")["n"][0]
    assert client.get("/api/layers/problem-types", params={"major": "99"}).status_code == 404
    assert client.get("/api/layers/grids", params={"area": "999"}).status_code == 404
    assert client.get("/api/layers/sites", params={"bbox": "1,2,3"}).status_code == 422


def test_openapi_lists_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/heatmap", "/api/hotspots", "/api/hotspots/clusters", "/api/hotspots/emerging",
              "/api/stats/areas", "/api/layers/areas", "/api/layers/grids", "/api/layers/sites",
              "/api/layers/categories", "/api/layers/problem-types"):
        assert p in paths
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(("path", "params", "words"), [
    # parameters another endpoint takes were silently ignored, so the answer covered more than asked
    ("/api/risk", {"as_of": "2025-07-01", "area": "430105001"}, "it takes: as_of, category, grid"),
    ("/api/layers/areas", {"area": "430105"}, "it takes: bbox, code, crs, lang, level, parent"),
    ("/api/layers/grids", {"parent": "430105001001"}, "it takes: area, bbox, code, crs"),
    ("/api/hotspots", {"k": 1, "alhpa": 0.01}, "did you mean 'alpha'?"),
    ("/api/stats/areas", {"levle": "street"}, "did you mean 'level'?"),
    # every router refuses them (api.app.create_app), not only the data ones
    ("/api/kpis", {"level": "street", "perod": "2025-03"}, "did you mean 'period'?"),
    ("/api/simulator", {"runs": 100, "treshold": 0.8}, "did you mean 'threshold'?"),
])
def test_unknown_query_parameters_are_refused(client, path, params, words):
    r = client.get(path, params=params)
    assert r.status_code == 422, r.text[:300]
    assert "unknown query parameter" in r.json()["detail"] and words in r.json()["detail"]


def test_known_query_parameters_still_pass(client, demo_db):
    r = client.get("/api/layers/areas", params={"level": "street", "parent": "430105", "lang": "en"})
    n = Store(demo_db).sql("SELECT count(*) AS n FROM areas WHERE level = 'street' AND parent_code = '430105'")
    assert r.status_code == 200 and len(r.json()["features"]) == int(n["n"].iloc[0]) > 0
    r = client.get("/api/hotspots", params={"res": 8, "k": 1, "alpha": 0.05, "significant": "true",
                                            "type": "02", "start": "2025-01-01", "end": "2025-06-30"})
    assert r.status_code == 200, r.text[:300]
