"""The /map page and offline assets: vendored files, CDN rewriting, packed hexagons, filters, GCJ-02, languages."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import eviltransform
import folium
import folium.plugins
import h3
import numpy as np
import pandas as pd
import pytest
import shapely
from civicgrid.api.app import create_app
from civicgrid.geo.aggregate import heatmap
from civicgrid.geo.hotspots import hotspot_clusters
from civicgrid.geo.store import Store
from civicgrid.maps.basemaps import TILES
from civicgrid.maps.layers import HexagonLayer
from civicgrid.maps.legend import HEAT_COLORS, class_breaks, class_colors, legend_values
from civicgrid.maps.offline import VENDOR_FILES, OfflineAssetError, external_urls, render_offline, vendor_path
from click.testing import CliRunner
from fastapi.testclient import TestClient

URL_RE = re.compile(r"https?://[^\s\"'<>)\\]+")


@pytest.fixture(scope="module")
def store(demo_db) -> Store:
    return Store(demo_db)


@pytest.fixture(scope="module")
def client(demo_db) -> TestClient:
    return TestClient(create_app(demo_db))


@pytest.fixture(scope="module")
def events(store) -> pd.DataFrame:
    """Raw events for independent counts (lng/lat re-indexed with the h3 library, not the stored cells)."""
    return store.sql("SELECT e.event_id, e.source, e.problem_type, e.time, e.lng, e.lat, e.district_code "
                     "FROM events e WHERE e.h3 IS NOT NULL")


def _page(client, query: str = "") -> str:
    r = client.get("/map" + (f"?{query}" if query else ""))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    return r.text


def _hex_data(html: str) -> dict:
    m = re.search(r"var d = (\{\"n\":.*?\});\n", html)
    assert m, "packed hexagon data not found in the page"
    return json.loads(m.group(1))


def _arr(b64: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=dtype)


def _decode_hexagons(d: dict) -> list[np.ndarray]:
    """Rebuild each hexagon's (lng, lat) vertices from the page's packed arrays, as the page's JS does."""
    ref, off = _arr(d["ref"], "<i4").reshape(-1, 2), _arr(d["off"], "<i2").reshape(-1, 2)
    nv = _arr(d["nv"], "u1").astype(int)
    out, k = [], 0
    for i in range(d["n"]):
        x0, y0 = ref[i] / 1e6
        pts = [(x0, y0)] + [(x0 + off[k + j, 0] * d["scale"], y0 + off[k + j, 1] * d["scale"])
                            for j in range(nv[i] - 1)]
        k += nv[i] - 1
        out.append(np.array(pts))
    return out


def _geojson_layers(html: str) -> list[dict]:
    return [json.loads(m.group(1)) for m in re.finditer(r"geo_json_\w+_add\((\{.*?\})\);\n", html)]


def _grid_layer(html: str) -> dict:
    layers = [g for g in _geojson_layers(html) if g["features"] and "leader_name" in g["features"][0]["properties"]]
    assert len(layers) == 1
    return layers[0]


# ---------------------------------------------------------------------------------------------------------
# Offline assets
# ---------------------------------------------------------------------------------------------------------

def test_vendored_files_served_from_installed_packages(client):
    for name in VENDOR_FILES:
        r = client.get(f"/static/vendor/{name}")
        assert r.status_code == 200, name
        assert r.content == vendor_path(name).read_bytes()
    assert b"Leaflet 1.9.3" in client.get("/static/vendor/leaflet.js").content
    assert b"markerClusterGroup" in client.get("/static/vendor/leaflet.markercluster.js").content
    assert client.get("/static/vendor/nothing.js").status_code == 404
    assert client.get("/static/vendor/../offline.py").status_code == 404
    assert client.get("/favicon.ico").status_code == 200


def test_render_offline_rewrites_cdn_links():
    m = folium.Map(tiles=None)
    folium.plugins.MarkerCluster().add_to(m)
    folium.plugins.HeatMap([[28.2, 112.9, 1.0]]).add_to(m)
    folium.CircleMarker([28.2, 112.9]).add_to(m)
    raw = m.get_root().render()
    assert "cdn.jsdelivr.net" in raw and "cdnjs.cloudflare.com" in raw  # what folium would load
    html = render_offline(m)
    assert URL_RE.findall(html) == []
    srcs = re.findall(r"<script src=\"([^\"]+)\"", html)
    links = re.findall(r"<link rel=\"stylesheet\" href=\"([^\"]+)\"", html)
    assert set(srcs) == {"/static/vendor/leaflet.js", "/static/vendor/jquery.min.js",
                         "/static/vendor/leaflet.markercluster.js", "/static/vendor/leaflet_heat.min.js"}
    assert set(links) == {"/static/vendor/leaflet.css", "/static/vendor/MarkerCluster.css",
                          "/static/vendor/MarkerCluster.Default.css"}
    assert external_urls(html) == []


def test_render_offline_fails_loudly_on_unvendored_assets():
    m = folium.Map(tiles=None)
    folium.Marker([28.2, 112.9], icon=folium.Icon(color="red")).add_to(m)
    with pytest.raises(OfflineAssetError, match="awesome-markers"):
        render_offline(m)
    m = folium.Map(tiles=None)
    folium.plugins.Fullscreen().add_to(m)
    with pytest.raises(OfflineAssetError, match=r"https://.*fullscreen"):
        render_offline(m)


def test_docs_pages_need_no_cdn(client):
    for path in ("/docs", "/redoc"):
        html = client.get(path).text
        assert URL_RE.findall(html) == [], path
        for url in re.findall(r"(?:src|href)=['\"]([^'\"]+)", html):
            assert url.startswith("/"), (path, url)
            assert client.get(url).status_code == 200, url
    assert "/static/vendor/swagger-ui-bundle.js" in client.get("/docs").text
    assert client.get("/openapi.json").json()["paths"]["/map"]["get"]


# ---------------------------------------------------------------------------------------------------------
# The map page
# ---------------------------------------------------------------------------------------------------------

def test_map_page_loads_nothing_from_outside(client):
    html = _page(client)
    assert URL_RE.findall(html) == [], "basemap=none must reference no internet URL at all"
    for url in re.findall(r"<(?:script|link)[^>]+(?:src|href)=\"([^\"]+)\"", html):
        assert url.startswith("/static/vendor/"), url
        assert client.get(url).status_code == 200


@pytest.mark.parametrize("basemap", ["osm", "tianditu", "amap"])
def test_map_page_only_reaches_the_chosen_tiles(client, basemap):
    html = _page(client, f"basemap={basemap}")
    allowed = {urlparse(u.replace("{s}", "a")).hostname for u, _, _ in TILES[basemap]}
    allowed |= {"www.openstreetmap.org"} if basemap == "osm" else set()
    hosts = {urlparse(u.replace("{s}", "a")).hostname for u in URL_RE.findall(html)}
    hosts = {h.replace("t{s}", "ta").replace("webrd0{s}", "webrd0a") if h else h for h in hosts}
    allowed = {h.replace("t{s}", "ta").replace("webrd0{s}", "webrd0a") for h in allowed}
    assert hosts and hosts <= allowed, hosts - allowed
    for url in re.findall(r"<(?:script|link)[^>]+(?:src|href)=\"([^\"]+)\"", html):
        assert url.startswith("/static/vendor/"), url


def test_heat_hexagons_match_h3_and_independent_counts(client, store, events):
    html = _page(client)
    d = _hex_data(html)
    want = heatmap(store, res=9)
    assert d["n"] == len(want)
    # every hexagon as h3 (the C library's bindings) draws it, to 0.2 m
    cells = want["h3"].to_numpy()
    ours = shapely.polygons(_decode_hexagons(d))
    theirs = shapely.polygons([[(lng, lat) for lat, lng in h3.cell_to_boundary(h3.int_to_str(int(c)))]
                               for c in cells])
    assert float(shapely.hausdorff_distance(ours, theirs).max()) < 2e-6
    # counts per cell: the events re-indexed from their coordinates with h3 (resolution-12 cell, then its
    # parent: the stored semantics), counted by pandas
    ids = [h3.str_to_int(h3.cell_to_parent(h3.latlng_to_cell(lat, lng, 12), 9))
           for lat, lng in zip(events.lat, events.lng, strict=True)]
    brute = pd.Series(1, index=np.array(ids, dtype="uint64")).groupby(level=0).sum()
    labels = [label for label, _ in d["info"]]
    counts = _arr(d["info"][labels.index("事件数")][1], "<f4")
    np.testing.assert_array_equal(counts.astype("int64"), brute.reindex(cells).to_numpy())
    # colour classes: head/tail breaks (maps/legend.py), darker for more events
    cls = _arr(d["cls"], "u1")
    breaks = class_breaks(counts)
    np.testing.assert_array_equal(cls, np.searchsorted(breaks, counts, side="left"))
    assert d["colors"] == class_colors(len(breaks))
    assert d["colors"][0] == HEAT_COLORS[0]
    assert d["colors"][cls[np.argmax(counts)]] == HEAT_COLORS[-1]
    summary = re.search(r'id="cg-summary">([^<]*)<', html).group(1)
    assert f"{len(events):,} 件事件" in summary and f"{len(want):,} 个单元" in summary


def test_filters_change_the_page(client, events):
    html = _page(client, "source=complaint&type=02&start=2024-03-01&end=2024-08-31&res=8")
    sel = events[(events.source == "complaint") & events.problem_type.str.startswith("02")
                 & (events.time >= "2024-03-01") & (events.time < "2024-09-01")]
    counts = _arr(_hex_data(html)["info"][0][1], "<f4")
    assert int(counts.sum()) == len(sel) > 100
    ids = {h3.cell_to_parent(h3.latlng_to_cell(lat, lng, 12), 8) for lat, lng in zip(sel.lat, sel.lng, strict=True)}
    assert _hex_data(html)["n"] == len(ids)
    # the form shows the current filters
    assert re.search(r'<option value="complaint"\s+selected', html)
    assert re.search(r'<option value="02"\s+selected', html)
    assert 'name="start" value="2024-03-01"' in html
    assert re.search(r'<option value="8"\s+selected>H3 8', html)


def test_area_filter_limits_grids_and_cells(client, store, events):
    district = "430103"
    html = _page(client, f"area={district}")
    grids = _grid_layer(html)
    want = set(store.sql("SELECT code FROM grids WHERE district_code = ?", [district])["code"])
    assert {f["properties"]["code"] for f in grids["features"]} == want
    counts = _arr(_hex_data(html)["info"][0][1], "<f4")
    assert int(counts.sum()) == int((events.district_code == district).sum())
    # grid popups: name, code, leader and this grid's events for the filters
    per_grid = store.sql("SELECT grid_code, count(*) AS n FROM events WHERE district_code = ? GROUP BY 1",
                         [district]).set_index("grid_code")["n"]
    for f in grids["features"]:
        p = f["properties"]
        assert p["leader_name"] and p["name"]
        assert p["events"] == int(per_grid.get(p["code"], 0))


def test_hotspot_clusters_outlined_and_listed(client, store):
    html = _page(client)
    clusters = hotspot_clusters(store, res=9)
    assert len(clusters) > 0
    items = re.findall(r"<li data-bounds=\"([^\"]+)\"[^>]*>\s*<b>热点 #(\d+)</b> · ([\d,]+) 件", html)
    assert [int(r) for _, r, _ in items] == clusters["rank"].tolist()
    assert [int(e.replace(",", "")) for _, _, e in items] == clusters["events"].tolist()
    outlined = [g for g in _geojson_layers(html) if g["features"] and "label" in g["features"][0]["properties"]]
    assert len(outlined) == 1 and len(outlined[0]["features"]) == len(clusters)
    first = shapely.geometry.shape(outlined[0]["features"][0]["geometry"])
    assert first.equals_exact(clusters.geometry.iloc[0], 1e-6) or \
        first.symmetric_difference(clusters.geometry.iloc[0]).area < 1e-9
    assert clusters["top_type_names"].iloc[0][0] in html


def test_amap_basemap_shifts_every_overlay_to_gcj02(client, store):
    plain, amap = _page(client), _page(client, "basemap=amap")
    hex_w, hex_g = _decode_hexagons(_hex_data(plain)), _decode_hexagons(_hex_data(amap))
    for w, g in zip(hex_w[:50], hex_g[:50], strict=True):
        want = np.array([eviltransform.wgs2gcj(lat, lng)[::-1] for lng, lat in w])
        np.testing.assert_allclose(g, want, atol=2e-6)
        assert np.abs(g - w).max() > 1e-3  # a few hundred metres
    gw, gg = _grid_layer(plain)["features"][0], _grid_layer(amap)["features"][0]
    lng, lat = gw["geometry"]["coordinates"][0][0]
    glat, glng = eviltransform.wgs2gcj(lat, lng)
    np.testing.assert_allclose(gg["geometry"]["coordinates"][0][0], [glng, glat], atol=2e-6)
    bounds = [json.loads(b.replace("&#34;", '"')) for b in re.findall(r'data-bounds="([^"]+)"', amap)]
    wb = [json.loads(b.replace("&#34;", '"')) for b in re.findall(r'data-bounds="([^"]+)"', plain)]
    assert bounds and bounds != wb


def test_languages(client):
    zh, en = _page(client), _page(client, "lang=en")
    assert "微网格" in zh and "热点区域" in zh and "<title>示范市 问题热点地图</title>" in zh
    assert "Micro-grids" in en and "Hotspot clusters" in en and "<title>Demo City problem hotspot map</title>" in en
    for label in ("微网格", "热点区域", "筛选", "图例", "应用"):
        assert label not in en
    assert "Furong District" in en and "芙蓉区" in zh


def test_tianditu_key_from_settings(demo_db):
    html = TestClient(create_app(demo_db, settings={"tianditu_key": "abc123"})).get("/map?basemap=tianditu").text
    assert "tk=abc123" in html and "CIVICGRID_TIANDITU_KEY" not in html
    html = TestClient(create_app(demo_db)).get("/map?basemap=tianditu").text
    assert "CIVICGRID_TIANDITU_KEY" in html  # the page says a key is missing


@pytest.mark.parametrize(("query", "status", "words"), [
    ("basemap=google", 422, ["none, osm, tianditu, amap"]),
    ("metric=mean", 422, ["count, density, sites"]),
    ("type=占道经", 404, ["占道经营"]),
    ("area=4301", 404, ["closest"]),
    ("res=12", 422, ["res=11"]),
    ("lang=fr", 422, ["zh or en"]),
])
def test_bad_parameters(client, query, status, words):
    r = client.get(f"/map?{query}")
    assert r.status_code == status, r.text
    for w in words:
        assert w in r.json()["detail"]


@pytest.mark.parametrize(("query", "status", "words"), [
    ("res=12", 422, ["res=11 or coarser fits", "?res=11"]),
    ("start=2025-07-01&end=2025-01-01&lang=en", 422, ["wrong way round", "Back to the map"]),
    ("area=4301", 404, ["closest", "无法显示此页面"]),
    ("res=abc", 422, ["res=", "integer"]),
    ("rez=8", 422, ["did you mean", "res"]),
])
def test_bad_parameters_in_a_browser_give_a_page(client, query, status, words):
    # a browser showed the raw JSON error, in English, with no way back to the map
    r = client.get(f"/map?{query}", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"].startswith("text/html")
    assert '<a href="/map?lang=' in r.text
    for w in words:
        assert w in r.text, w


def test_legend_classes_print_distinct_ranges(client, store):
    # densities of one-event cells differ only by cell area (72.52, 72.53 …) and gave classes printed 72.5 – 72.5
    raw = heatmap(store, res=10, metric="density")["value"].to_numpy()
    assert len(np.unique(raw[raw < raw.min() * 1.01])) > 1   # the trap is there: near-equal values
    values = legend_values(raw)
    assert np.all(np.abs(values - raw) <= np.where(raw >= 100, 0.5, 0.05) + 1e-9)
    page = client.get("/map?res=10&metric=density").text
    block = page[page.index('id="cg-legend"'):]
    block = block[:block.index("</div>\n")] if "</div>\n" in block else block
    labels = re.findall(r'<span class="cg-swatch" style="background: [^"]+"></span>([^<]+)<span class="cg-count">',
                        block)
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    bounds = [lab.split("–")[-1].strip() for lab in labels]
    assert len(set(bounds)) == len(bounds), labels


def test_class_colors_span_the_palette():
    assert class_colors(7) == list(HEAT_COLORS)
    assert class_colors(3) == [HEAT_COLORS[0], HEAT_COLORS[3], HEAT_COLORS[6]]
    assert class_colors(1) == [HEAT_COLORS[-1]] and class_colors(0) == []


def test_empty_view(client):
    html = _page(client, "start=2026-06-01")  # after the demo's events, inside the plausible window
    assert _hex_data(html)["n"] == 0
    assert 'id="cg-empty"' in html


def test_twenty_thousand_cells_fit_in_two_megabytes():
    """The packed heat layer keeps a 20k-cell page small (bench/map_bench.py compares with folium's way)."""
    base = h3.latlng_to_cell(28.23, 112.94, 9)
    cells = np.array([h3.str_to_int(c) for c in h3.grid_disk(base, 82)][:20_000], dtype="uint64")
    assert len(cells) == 20_000
    rng = np.random.default_rng(0)
    values = rng.pareto(1.5, len(cells)) * 10
    m = folium.Map(tiles=None, prefer_canvas=True)
    breaks = class_breaks(values)
    HexagonLayer(cells, np.searchsorted(breaks, values), HEAT_COLORS, {"n": values}).add_to(m)
    html = render_offline(m)
    assert len(html.encode()) < 1_200_000
    d = _hex_data(html)
    assert d["n"] == 20_000
    ours = shapely.polygons(_decode_hexagons({**d, "n": 200}))
    theirs = shapely.polygons([[(lng, lat) for lat, lng in h3.cell_to_boundary(h3.int_to_str(int(c)))]
                               for c in cells[:200]])
    assert float(shapely.hausdorff_distance(ours, theirs).max()) < 2e-6


# ---------------------------------------------------------------------------------------------------------
# civicgrid serve
# ---------------------------------------------------------------------------------------------------------

def test_serve_command_help_and_bad_database(tmp_path):
    from civicgrid.api.cli import main

    r = CliRunner().invoke(main, ["serve", "--help"])
    assert r.exit_code == 0 and "--port" in r.output and "/map" in r.output
    r = CliRunner().invoke(main, ["serve", "--db", str(tmp_path / "missing.duckdb")])
    assert r.exit_code == 2
    assert "no civicgrid database" in r.output


def test_serve_runs_uvicorn_on_the_app(monkeypatch, demo_db):
    import uvicorn
    from civicgrid.api.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    r = CliRunner().invoke(main, ["serve", "--db", str(demo_db), "--port", "8799", "--max-cells", "1234",
                                  "--workers", "1", "--maintain-hours", "0"])
    assert r.exit_code == 0, r.output
    assert seen["port"] == 8799 and seen["host"] == "127.0.0.1"
    assert seen["app"].state.settings["max_cells"] == 1234
    assert Path(seen["app"].state.store.path) == Path(demo_db)
    # by default one service process per core, each building the app from the environment
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    monkeypatch.setenv("CIVICGRID_DB", "unset")  # serve sets these for its workers: restored after the test
    monkeypatch.setenv("CIVICGRID_MAX_CELLS", "50000")
    monkeypatch.setenv("CIVICGRID_LOG_LEVEL", "WARNING")
    seen.clear()
    r = CliRunner().invoke(main, ["--log-level", "error", "serve", "--db", str(demo_db), "--maintain-hours", "0"])
    assert r.exit_code == 0, r.output
    assert seen["workers"] == 3 and seen["factory"] and seen["app"] == "civicgrid.api.commands.serve:worker_app"
    assert os.environ["CIVICGRID_DB"] == str(demo_db) and os.environ["CIVICGRID_LOG_LEVEL"] == "ERROR"
    # what a worker process runs: civicgrid's log at the command's level, then the app of the environment's store
    import logging

    from civicgrid.api.commands.serve import worker_app
    from civicgrid.geo.logs import configure_logging

    configure_logging("WARNING")  # a new process: not the command's level, until worker_app sets it
    try:
        app = worker_app()
        assert Path(app.state.store.path) == Path(demo_db)
        assert logging.getLogger("civicgrid").level == logging.ERROR
    finally:
        configure_logging("WARNING")


def test_map_pages_cached_per_view_layers_and_version(demo_db, tmp_path, monkeypatch):
    """The same view asked again is not rendered again until a write commits; another view, or a caller who
    may see other layers, is rendered apart; callers who see the same layers share one rendering (the page
    shows nothing else of the caller: rendered without the cache, their pages are the same)."""
    from civicgrid.api.routers import pages
    from civicgrid.geo.store_files import copy_store
    from civicgrid.geo.users import add_user

    db = tmp_path / "c.duckdb"
    copy_store(demo_db, db)
    viewer1 = {"Authorization": f"Bearer {add_user(db, 'viewer1', role='viewer')[1]}"}
    viewer2 = {"Authorization": f"Bearer {add_user(db, 'viewer2', role='viewer')[1]}"}
    admin = {"Authorization": f"Bearer {add_user(db, 'admin1', role='admin')[1]}"}
    rendered = []
    real = pages.hotspot_map
    monkeypatch.setattr(pages, "hotspot_map", lambda *a, **k: rendered.append(k["query"]) or real(*a, **k))
    off = TestClient(create_app(db, settings={"map_cache_pages": 0}))
    uncached = {who: _same_ids(off.get("/map?res=8", headers=h).text)
                for who, h in (("anonymous", {}), ("viewer1", viewer1), ("admin", admin))}
    assert len(rendered) == 3 and len(set(uncached.values())) == 1  # every layer public: the same page
    off.get("/map?res=8")
    assert len(rendered) == 4  # no cache: rendered each time
    rendered.clear()

    c = TestClient(create_app(db))
    first = c.get("/map?res=8")
    assert first.status_code == 200 and len(rendered) == 1
    assert c.get("/map?res=8").text == first.text and len(rendered) == 1  # cached
    for h in (viewer1, viewer2, admin):  # the same layers: the same page, not rendered again
        assert c.get("/map?res=8", headers=h).text == first.text
    assert _same_ids(first.text) == uncached["viewer1"]
    assert len(rendered) == 1
    assert c.get("/map?res=8", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    c.get("/map?res=8&lang=en")
    assert len(rendered) == 2  # another view
    add_user(db, "viewer3", role="viewer")  # a committed write: a new version of the store
    c.get("/map?res=8")
    assert len(rendered) == 3

    # micro-grids not public: an anonymous caller's page leaves them out, a viewer's has them
    rendered.clear()
    c = TestClient(create_app(db, settings={"public_layers": "areas,sites"}))
    anonymous = c.get("/map?res=8").text
    signed_in = [c.get("/map?res=8", headers=h).text for h in (viewer1, viewer2)]
    assert len(rendered) == 2 and anonymous != signed_in[0] == signed_in[1]
    assert _same_ids(signed_in[0]) == uncached["viewer1"] != _same_ids(anonymous)


def _same_ids(page: str) -> str:
    """The page with folium's random element ids (``map_<32 hex digits>``) made equal."""
    return re.sub(r"_[0-9a-f]{32}(?![0-9a-f])", "_ID", page)


def test_district_names_sit_above_the_site_clusters(client, store):
    """The district labels are in a pane above Leaflet's marker pane (600), so site clusters do not hide them,
    and the pane lets clicks through."""
    page = _page(client)
    pane = re.search(r'(\w+) = map_\w+\.createPane\(\s*"cg-labels"\);\s*\1\.style\.zIndex = (\d+);\s*'
                     r"\1\.style\.pointerEvents = 'none';", page)
    assert pane and 600 < int(pane.group(2)) < 650, "label pane above the markers, below tooltips"
    names = store.sql("SELECT name FROM areas WHERE level = 'district'")["name"].tolist()
    labels = re.findall(r'L\.marker\(\s*\[[^\]]*\],\s*\{[^}]*"pane": "cg-labels"[^}]*\}', page)
    assert len(labels) == len(names) and all(n in page for n in names)


def test_map_lists_a_citys_own_site_categories_once_under_their_own_heading(small_city, tmp_path):
    """Sites of a category the city's file brought (Toronto's "Bakery": its label is its code) and of a known one:
    the map's category filter lists "Bakery" once (it read "Bakery Bakery", first, under a blank heading) under
    the city's own categories, after the 38 by group; a city without events renders without numpy warnings."""
    import warnings

    from civicgrid.sites.frame import import_sites
    from fastapi.testclient import TestClient

    sites = pd.DataFrame({"id": ["S1", "S2"], "name": ["a", "b"], "category": ["Bakery", "餐馆、餐饮店"],
                          "lng": [112.905, 112.915], "lat": [28.205, 28.215]})
    sites.to_csv(tmp_path / "sites.csv", index=False)
    import_sites(tmp_path / "sites.csv", db=small_city, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        page = TestClient(create_app(small_city)).get("/map?lang=en").text
    part = page[page.index('id="cg-category"'):]
    part = part[:part.index("</select>")]
    groups = re.findall(r'<optgroup label="([^"]*)">', part)
    assert groups[-1] == "The city&#39;s own site categories" and "" not in groups and len(groups) == 9
    shown = dict(re.findall(r'<option value="([^"]+)"[^>]*>([^<]*)<', part))
    assert shown["Bakery"] == "Bakery" and shown["14"] == "14 Restaurant"
    assert list(shown)[-1] == "Bakery"
    # a city with sites and no events yet (Toronto's inspections): the hotspot statistics of no cell are empty,
    # not numpy's warnings (a 500 where warnings are errors)
    only_sites = tmp_path / "sites_only.duckdb"
    import_sites(tmp_path / "sites.csv", db=only_sites, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert len(hotspot_clusters(Store(only_sites), res=9, lang="en")) == 0
        assert TestClient(create_app(only_sites)).get("/map?lang=en").status_code == 200


def test_thousands_of_micro_grids_are_outlined_from_the_zoom_they_can_be_seen(client, tmp_path, shared):
    """Shenzhen's real ~500 m analysis grid (9,005 cells) as micro-grids: outlined at city zoom they drew a mesh over
    the whole city that hid the heat layer. Past GRID_OUTLINE_GATE grids the outlines are drawn from the zoom at
    which the median grid is GRID_OUTLINE_MIN_PX pixels wide (12 px: zoom 12 for 0.0049° cells; checked by the
    Web Mercator formula); the demo's 460 stay always drawn."""
    import geopandas as gpd
    from civicgrid.grids.areas import import_areas, import_grids
    from civicgrid.maps import hotspot

    db = tmp_path / "sz.duckdb"
    sz = shared / "cn_shenzhen"
    import_areas(sz / "shenzhen_districts_transbigdata_sz.json", db=db, level="district",
                 mapping={"code": "qh", "name": "qh"}, progress=False)
    import_grids(sz / "grid.shp", db=db, progress=False)
    grids = gpd.read_file(sz / "grid.shp")
    b = grids.bounds
    width = float((b.maxx - b.minx).median())
    zoom = hotspot.grid_outline_min_zoom(grids.set_crs(4326, allow_override=True))
    assert width * 256 * 2 ** zoom / 360 >= hotspot.GRID_OUTLINE_MIN_PX > width * 256 * 2 ** (zoom - 1) / 360
    assert zoom == 12
    page = TestClient(create_app(db)).get("/map").text
    gate = re.findall(r"var want = map\.getZoom\(\) >= (\d+);", page)
    assert "12" in gate and len(grids) > hotspot.GRID_OUTLINE_GATE
    demo = _page(client)
    assert [z for z in re.findall(r"var want = map\.getZoom\(\) >= (\d+);", demo)] == [str(hotspot.SITES_MIN_ZOOM)]


def test_answers_are_compressed_for_clients_that_accept_it(client):
    """Pages and answers of 1 KB and more travel gzip-compressed to a client that accepts it (browsers do): the
    demo's map page to under a third; the same page to a client that does not; small answers as they are."""
    import gzip

    zipped = client.get("/map", headers={"Accept-Encoding": "gzip"})
    plain = client.get("/map", headers={"Accept-Encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert zipped.text == plain.text and zipped.num_bytes_downloaded < len(plain.content) / 3
    assert zipped.num_bytes_downloaded < len(gzip.compress(plain.content, compresslevel=1))
    small = client.get("/api/no-such-answer", headers={"Accept-Encoding": "gzip"})
    assert small.status_code == 404 and len(small.content) < 1024 and "content-encoding" not in small.headers
