"""The /map page on a real city's own files: New York's ZIP areas and 311 complaints, no micro-grids, no sites,
labels no taxonomy knows (what a city has on its first day, before any grid or mapping exists)."""

from __future__ import annotations

import json
import re

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely
from civicgrid.api.app import create_app
from civicgrid.geo.hotspots import hotspot_clusters
from civicgrid.geo.store import Store
from civicgrid.grids.areas import import_areas
from civicgrid.maps.layers import label_min_zooms, rounded_geojson
from civicgrid.sites.events import import_events
from fastapi.testclient import TestClient

from conftest import build_toronto


@pytest.fixture(scope="module")
def nyc(tmp_path_factory, shared):
    db = tmp_path_factory.mktemp("nyc") / "nyc.duckdb"
    import_areas(shared / "us_nyc311_small" / "nyc_zipcodes.shp", db=db, level="district",
                 mapping={"code": "ZIPCODE", "name": "PO_NAME"}, progress=False)
    import_events(shared / "us_nyc311_small" / "nyc311_2023-12_sample.csv", db=db, source="complaint",
                  tz="America/New_York", date_order="mdy", progress=False)
    return db


def test_map_of_a_city_without_micro_grids(nyc):
    """No micro-grids yet: the page renders (it answered 500 before), without a grid layer or its legend line."""
    client = TestClient(create_app(nyc))
    r = client.get("/map?lang=en")
    assert r.status_code == 200, r.text
    page = r.text
    assert "grid-popups" not in page
    legend = re.search(r'<div class="cg-legend" id="cg-legend">(.*?)</div>\s*</div>', page, re.S).group(1)
    assert "Micro-grids" not in legend
    clusters = re.search(r'<ol class="cg-clusters" id="cg-clusters">(.*?)</ol>', page, re.S).group(1)
    assert "Noise - " in clusters and "None" not in clusters and "Grids:" not in clusters
    # the ZIP areas' outlines, simplified: the page is a fraction of the 140,000 surveyed vertices
    assert len(page) < 2_500_000
    # the district labels carry the zoom they appear from; the page gates them
    zooms = [int(z) for z in re.findall(r'class=\\"cg-label\\" data-minzoom=\\"(\d+)\\"', page)]
    assert len(zooms) == Store(nyc).sql("SELECT count(*) AS n FROM areas WHERE level = 'district'")["n"][0]
    assert min(zooms) < max(zooms)
    assert '.cg-label[data-minzoom]' in page


def test_hotspot_clusters_name_the_citys_own_labels(nyc):
    """Events with labels no taxonomy knows: a cluster's main problems are those labels (it said "None 53")."""
    store = Store(nyc)
    clusters = hotspot_clusters(store, res=9, lang="en")
    assert len(clusters)
    first = clusters.iloc[0]
    assert None not in first["top_type_names"] and "None" not in first["top_type_names"]
    # independent count: the events of the cluster's cells by their own label
    ev = store.sql("SELECT source_type, h3_hex(h3_parent(h3, 9)) AS cell FROM events WHERE h3 IS NOT NULL")
    ev = ev[ev["cell"].isin(first["cells"])]
    want = ev["source_type"].value_counts()
    assert first["top_type_names"][0] == first["top_types"][0] and first["top_types"][0] in want.index
    assert first["top_type_counts"][0] == want.max() == want[first["top_types"][0]]


def test_label_min_zooms_against_web_mercator(shared):
    """The zoom from which a label fits its area, checked with pyproj's Web Mercator: at that zoom the area is at
    least as wide on screen as the label, one zoom less it is narrower."""
    zips = gpd.read_file(shared / "us_nyc311_small" / "nyc_zipcodes.shp").to_crs(4326)
    names = zips["PO_NAME"].astype(str)
    zooms = label_min_zooms(zips.geometry.to_numpy(), names)
    to_merc = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
    x0, _ = to_merc.transform(zips.bounds["minx"].to_numpy(), zips.bounds["miny"].to_numpy())
    x1, _ = to_merc.transform(zips.bounds["maxx"].to_numpy(), zips.bounds["miny"].to_numpy())
    world = 2 * np.pi * 6378137.0
    label_px = np.array([sum(14 if ord(c) >= 0x2E80 else 8 for c in n) + 8 for n in names])
    width_at = lambda z: (x1 - x0) / world * 256 * 2.0 ** z  # noqa: E731
    inside = zooms < 18  # 18, the most: areas too small for their label at any zoom of the map
    assert inside.sum() > 200
    assert (width_at(zooms) >= label_px * (1 - 1e-9))[inside].all()
    assert (width_at(zooms - 1) < label_px)[zooms > 0].all()
    assert label_min_zooms(np.array([shapely.Point(1, 1)]), ["深圳"]).tolist() == [18]


def test_rounded_geojson_simplifies_within_its_tolerance(shared):
    """Simplified outlines stay within twice the tolerance of the surveyed ones (Hausdorff distance; GEOS's
    topology-preserving simplifier may move a ring a little further to keep it valid: 2.5e-5° ≈ 2.8 m seen),
    keep every shape valid and drop most vertices."""
    zips = gpd.read_file(shared / "us_nyc311_small" / "nyc_zipcodes.shp").to_crs(4326)[["ZIPCODE", "geometry"]]
    gj = rounded_geojson(zips, tolerance=1.5e-5)
    out = gpd.GeoDataFrame.from_features(gj["features"], crs=4326)
    d = shapely.hausdorff_distance(zips.geometry.to_numpy(), out.geometry.to_numpy())
    assert d.max() <= 3e-5 and np.median(d) <= 1.5e-5
    assert shapely.is_valid(out.geometry.to_numpy()).all()
    before = shapely.get_num_coordinates(zips.geometry.to_numpy()).sum()
    after = shapely.get_num_coordinates(out.geometry.to_numpy()).sum()
    assert after < before / 3
    assert len(json.dumps(rounded_geojson(zips, tolerance=0))) > 3 * len(json.dumps(gj))


def _fitted(page: str) -> list[list[float]]:
    """The bounds the page fits the map to (``PanelFit``)."""
    return json.loads(re.search(r"map\.fitBounds\((\[\[.*?\]\]), phone", page).group(1))


def test_map_opens_on_a_city_with_only_community_areas_or_only_events(shared, tmp_path):
    """San Francisco's census tracts loaded as communities, no districts, no micro-grids: the map opens on the
    tracts and outlines them (it opened on the demo city's coordinates, an empty map); with events and no areas at
    all, it opens on the events' cells."""
    f = shared / "us_sf311" / "sf311_cases_sample_10000.csv"
    mapping = {"id": "CaseID", "time": "Opened", "type": "Category"}
    only_events = tmp_path / "events.duckdb"
    import_events(f, db=only_events, progress=False, point="Point", mapping=mapping, cases=False)
    db = tmp_path / "sf.duckdb"
    tracts = shared / "us_sf311" / "sf_census_tracts_with_neighborhood.geojson"
    import_areas(tracts, db=db, level="community", mapping={"code": "geoid", "name": "nhood"}, progress=False)
    import_events(f, db=db, progress=False, point="Point", mapping=mapping, cases=False)

    page = TestClient(create_app(db)).get("/map?lang=en").text
    (y0, x0), (y1, x1) = _fitted(page)
    want = gpd.read_file(tracts).total_bounds
    assert [x0, y0, x1, y1] == pytest.approx(list(want), abs=1e-6)
    assert "Community outlines" in page
    labels = re.findall(r'class=\\"cg-label\\" data-minzoom=\\"\d+\\"\\u003e(.+?)\\u003c', page)
    assert len(labels) == 195 and "Golden Gate Park" in labels

    page = TestClient(create_app(only_events)).get("/map?lang=en").text
    (y0, x0), (y1, x1) = _fitted(page)
    points = Store(only_events).sql("SELECT min(lng) AS x0, min(lat) AS y0, max(lng) AS x1, max(lat) AS y1 "
                                    "FROM events").iloc[0]
    # the cells (H3 9, about 200 m across) hold every point and reach less than a cell beyond them
    assert x0 <= points["x0"] < x0 + 0.005 and y0 <= points["y0"] < y0 + 0.005
    assert x1 - 0.005 < points["x1"] <= x1 and y1 - 0.005 < points["y1"] <= y1
    assert -123 < x0 < -122 and 37 < y0 < 38


def test_the_city_named_by_its_office_titles_its_map(nyc, tmp_path):
    """A real city's store has no name (only the demo wrote one): the map was titled " problem hotspot map", lower
    case after a blank. It now reads "Problem hotspot map", and ``civicgrid info --name`` names the city: the map's
    title in both languages, the scorecard's and ``info`` itself show it."""
    import shutil

    from civicgrid.api.cli import main
    from click.testing import CliRunner

    db = tmp_path / "nyc.duckdb"  # a copy: the module's store stays unnamed for the other tests
    shutil.copytree(nyc.parent, tmp_path, dirs_exist_ok=True)
    title = re.compile(r"<title>(.*?)</title>")
    client = TestClient(create_app(db))
    assert title.search(client.get("/map?lang=en").text).group(1) == "Problem hotspot map"
    assert title.search(client.get("/map").text).group(1) == "问题热点地图"

    res = CliRunner().invoke(main, ["info", "--db", str(db), "--name", "纽约市", "--name-en", "New York"])
    assert res.exit_code == 0, res.output
    assert "  city: 纽约市 / New York" in res.output
    client = TestClient(create_app(db))
    assert title.search(client.get("/map?lang=en").text).group(1) == "New York problem hotspot map"
    assert title.search(client.get("/map").text).group(1) == "纽约市 问题热点地图"
    card = client.get("/api/reports/2023-12/scorecard?lang=en").text
    assert "<title>New York Campaign scorecard 2023-12</title>" in card
    res = CliRunner().invoke(main, ["info", "--db", str(db), "--name-en", ""])  # the English name removed
    assert res.exit_code == 0 and "  city: 纽约市\n" in res.output
    assert title.search(TestClient(create_app(db)).get("/map?lang=en").text).group(1) == "纽约市 problem hotspot map"


def test_hotspots_of_grids_without_names_are_listed_by_code(shared, tmp_path):
    """Shenzhen's grid file has geometry and no names: the map's hotspot list read "Grids: None、None、None and 274
    more". A grid without a name is named by its code."""
    from civicgrid.grids.areas import import_grids

    db = tmp_path / "sz.duckdb"
    import_grids(shared / "cn_shenzhen" / "grid.shp", db=db, progress=False)
    import_events(shared / "cn_shenzhen" / "shenzhen_taxi_trips_2020-01.csv", db=db,
                  mapping={"time": "Stime", "id": "orderid"}, progress=False)
    store = Store(db)
    assert store.sql("SELECT count(name) AS n FROM grids")["n"][0] == 0
    clusters = hotspot_clusters(store, res=9)
    assert len(clusters) and all(len(names) for names in clusters["grid_names"])
    assert (clusters["grid_names"] == clusters["grid_codes"]).all()
    page = TestClient(create_app(db)).get("/map").text
    listed = re.search(r'<ol class="cg-clusters" id="cg-clusters">(.*?)</ol>', page, re.S).group(1)
    assert "None" not in listed and clusters["grid_codes"].iloc[0][0] in listed


def test_map_of_a_city_with_its_sample_frame_alone(tmp_path):
    """Toronto's restaurants and their inspections, no areas, no complaints: the map opened on the demo city's
    coordinates (an empty grey page), with the sites layer off until zoom 14 and the city's own categories listed
    as "nan". It now opens on the sites, shows them at once, says why there is no heat, lists their categories
    under the city's own heading and offers no area outlines it does not have."""
    db = build_toronto(tmp_path / "tor.duckdb")
    page = TestClient(create_app(db)).get("/map?lang=en").text
    (y0, x0), (y1, x1) = _fitted(page)
    box = Store(db).sql("SELECT min(lng) AS x0, min(lat) AS y0, max(lng) AS x1, max(lat) AS y1 FROM sites "
                        "WHERE active AND lng IS NOT NULL").iloc[0]
    assert [x0, y0, x1, y1] == pytest.approx([box.x0, box.y0, box.x1, box.y1], abs=1e-9)
    assert -80 < x0 < x1 < -79 and 43 < y0 < y1 < 44
    assert "the map shows the sample frame&#39;s sites" in page and "No events match these filters" not in page
    cluster = re.search(r"var (marker_cluster_\w+) = L\.markerClusterGroup", page).group(1)
    assert f"{cluster}.addTo(" in page  # shown at once, no zoom gate
    legend = re.search(r'<div class="cg-legend" id="cg-legend">(.*?)</div>\s*</div>', page, re.S).group(1)
    assert "nan" not in legend and "The city&#39;s own site categories" in legend
    assert "outlines" not in re.search(r"L\.control\.layers\((.*?)\)\.addTo", page, re.S).group(1)
