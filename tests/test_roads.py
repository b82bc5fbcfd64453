"""Roads for placing rows that have only an address (issue 13, part 2: ``civicgrid import roads``): the real
OSMnx graph of central Futian (Chinese names) and the Helsinki OSM extract (house numbers), checked against
independent computations (networkx reading the graph, geopandas/shapely in a metric CRS, GDAL's OSM layers)."""

from __future__ import annotations

import ast
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
import shapely.ops
from civicgrid.api.cli import main
from civicgrid.geo.store import Store
from civicgrid.grids.areas import import_areas
from civicgrid.grids.roads import import_roads
from civicgrid.sites.events import import_events
from civicgrid.sites.import_log import undo_import
from click.testing import CliRunner

nx = pytest.importorskip("networkx")

GRAPH = "cn_shenzhen/shenzhen_futian_osm_drive_G.graphml"


def _metres(a, b) -> float:
    """Distance in metres between two (lng, lat) points (UTM 50N, independent of the product's scale)."""
    pts = gpd.GeoSeries([shapely.Point(a), shapely.Point(b)], crs=4326).to_crs(32650)
    return float(pts.iloc[0].distance(pts.iloc[1]))


@pytest.fixture(scope="module")
def futian_edges(shared) -> gpd.GeoDataFrame:
    """The graph's named edges read by networkx, one row per (edge, name), both directions."""
    g = nx.read_graphml(shared / GRAPH)
    rows = []
    for u, v, d in g.edges(data=True):
        line = shapely.from_wkt(d["geometry"]) if "geometry" in d else shapely.LineString(
            [(float(g.nodes[u]["x"]), float(g.nodes[u]["y"])), (float(g.nodes[v]["x"]), float(g.nodes[v]["y"]))])
        name = d.get("name")
        names = ast.literal_eval(name) if isinstance(name, str) and name.startswith("[") else (
            [name] if name else [])
        rows += [{"name": n, "geometry": line} for n in names]
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)


@pytest.fixture(scope="module")
def futian(tmp_path_factory, shared):
    """A store with Shenzhen's 10 districts and the Futian roads."""
    db = tmp_path_factory.mktemp("roads") / "sz.duckdb"
    import_areas(shared / "cn_shenzhen" / "shenzhen_districts_transbigdata_sz.json", db=db, level="district",
                 mapping={"code": "qh", "name": "qh"}, progress=False)
    rep = import_roads(shared / GRAPH, db=db, progress=False)
    return db, rep


def _one_road(edges: gpd.GeoDataFrame) -> pd.Series:
    """Each name's roads, dissolved; names whose pieces lie together (one blob of 100 m buffers in UTM)."""
    merged = edges.dissolve("name").geometry
    blobs = merged.to_crs(32650).buffer(100).map(lambda g: len(shapely.get_parts(g)))
    return merged[blobs == 1]


def _events(tmp_path, db, addresses, *, area=None, name="a.csv"):
    frame = pd.DataFrame({"编号": [f"{tmp_path.name}-{name}-{i}" for i in range(len(addresses))],
                          "受理时间": "2025-03-01 10:00", "诉求地址": addresses})
    mapping = {"id": "编号", "time": "受理时间", "address": "诉求地址"}
    if area is not None:
        frame["所属区"] = area
        mapping["area"] = "所属区"
    f = tmp_path / name
    frame.to_csv(f, index=False)
    rep = import_events(f, db=db, mapping=mapping, progress=False)
    ev = Store(db).sql(f"SELECT external_id, lng, lat, h3, grid_code, district_code, located_by, location_precision, "
                       f"location_confidence FROM events WHERE import_id = {rep.import_id}")
    return rep, ev.set_index("external_id").loc[frame["编号"]].reset_index()


def test_graphml_roads_load_whole(futian, futian_edges, shared):
    db, rep = futian
    # every edge read once (a two-way street's two directions are one piece): counted by networkx
    g = nx.read_graphml(shared / GRAPH)
    pieces = {(frozenset((u, v)), shapely.normalize(shapely.from_wkt(d["geometry"])).wkb if "geometry" in d else None,
               d.get("name")) for u, v, d in g.edges(data=True)}
    assert rep.rows_read == rep.loaded + rep.duplicates + rep.rejected
    assert rep.rejected == sum(1 for p in pieces if not p[2])
    assert all(r["reason"].startswith("no road name") for r in rep.rejects)
    stored = Store(db).sql("SELECT name, count(*) AS n, sum(length_m) AS m FROM roads GROUP BY name")
    assert set(stored["name"]) == set(futian_edges["name"])
    # lengths: the product's against UTM lengths of the same pieces (each once)
    once = futian_edges.assign(w=futian_edges.geometry.map(lambda x: shapely.normalize(x).wkb)).drop_duplicates(
        ["name", "w"])
    utm = once.to_crs(32650).assign(m=lambda d: d.length).groupby("name")["m"].sum()
    got = stored.set_index("name")["m"]
    assert np.allclose(got.loc[utm.index], utm, rtol=5e-3)
    assert set(Store(db).sql("SELECT DISTINCT district_code FROM roads")["district_code"]) == {"福田"}
    # importing it again loads nothing new
    again = import_roads(shared / GRAPH, db=db, progress=False)
    assert (again.loaded, again.duplicates, again.rejected) == (0, rep.loaded, rep.rejected)


def test_addresses_are_placed_at_their_road_middle(futian, futian_edges, tmp_path):
    db, _ = futian
    roads = _one_road(futian_edges)
    roads = roads[[len(n) >= 3 for n in roads.index]][:40]
    expected = {n: shapely.ops.nearest_points(g, g.centroid)[0] for n, g in roads.items()}
    lengths = roads.to_crs(32650).length
    # the district written first (福田区…, 深圳市福田区…), a number the data has no house number for
    addresses = [f"深圳市福田区{n}{i + 1}号" if i % 2 else f"福田区{n}" for i, n in enumerate(roads.index)]
    rep, ev = _events(tmp_path, db, addresses)
    assert rep.located_by_address == len(roads) and rep.unlocated == 0
    assert rep.address_precision == {"road": len(roads)}
    for (name, p), r in zip(expected.items(), ev.itertuples(), strict=True):
        assert _metres((r.lng, r.lat), (p.x, p.y)) < 1.0, name
        assert r.location_precision == "road" and r.location_confidence == 0.6 and r.district_code == "福田"
        # a long road's middle is not a place on the H3 map: only the areas that hold all of it
        long = lengths[name] > 300
        assert pd.isna(r.h3) == long, (name, lengths[name])


def test_intersections_where_two_roads_cross(futian, futian_edges, tmp_path):
    db, _ = futian
    roads = _one_road(futian_edges)
    pairs = []
    names = list(roads.index)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            inter = roads[a].intersection(roads[b])
            if inter.geom_type in ("Point", "MultiPoint"):
                pts = shapely.get_parts(inter)
                c = shapely.MultiPoint(pts).centroid
                if max(_metres((c.x, c.y), (p.x, p.y)) for p in pts) < 150:
                    pairs.append((a, b, c))
    assert len(pairs) >= 20
    pairs = pairs[:30]
    forms = ["{a}与{b}交叉口", "福田区{a}和{b}交汇处", "{a}/{b}路口", "{b}与{a}交叉口"]
    addresses = [forms[i % 4].format(a=a, b=b) for i, (a, b, _) in enumerate(pairs)]
    rep, ev = _events(tmp_path, db, addresses)
    assert rep.address_precision == {"intersection": len(pairs)} and rep.unlocated == 0
    for (a, b, c), r in zip(pairs, ev.itertuples(), strict=True):
        assert _metres((r.lng, r.lat), (c.x, c.y)) < 1.0, (a, b)
        assert r.location_precision == "intersection" and not pd.isna(r.h3)
    # two roads that never meet (parallel: 深南大道, 滨河大道), two roads without a word joining them: not guessed
    rep, ev = _events(tmp_path, db, ["深南大道与滨河大道交叉口", "红荔路农园路", "无名路1号"], name="b.csv")
    assert (rep.located_by_address, rep.unlocated, rep.addresses_ambiguous) == (0, 3, 2)
    assert ev["located_by"].isna().all() and ev["lng"].isna().all()


def test_two_roads_of_one_name_are_told_apart_or_left_unlocated(futian, tmp_path, shared):
    db, _ = futian
    # a 香梅路 in 南山 too (a line layer, with house-number ranges)
    nanshan = gpd.read_file(shared / "cn_shenzhen" / "shenzhen_districts_transbigdata_sz.json")
    inside = nanshan.loc[nanshan["qh"] == "南山", "geometry"].iloc[0].representative_point()
    line = shapely.LineString([(inside.x - 0.001, inside.y), (inside.x + 0.001, inside.y)])
    layer = gpd.GeoDataFrame({"路名": ["香梅路"], "起": [1], "止": [99]}, geometry=[line], crs=4326)
    f = tmp_path / "nanshan_roads.geojson"
    layer.to_file(f, driver="GeoJSON")
    rep = import_roads(f, db=db, mapping={"name": "路名", "number_from": "起", "number_to": "止"}, progress=False)
    assert (rep.loaded, rep.rejected) == (1, 0)
    rep, ev = _events(tmp_path, db, ["香梅路", "福田区香梅路", "香梅路", "南山区香梅路50号", "香梅路25号"],
                      area=["", "", "南山", "", "南山"])
    # 0: two roads of the name, nothing picks one; 1: the district written; 2: the row's area column;
    # 3: the number interpolated on the Nanshan piece's range 1..99; 4: the same by the area column
    assert ev["located_by"].fillna("-").tolist() == ["-", "address", "address", "address", "address"]
    assert rep.addresses_ambiguous == 1
    assert ev.loc[1, "district_code"] == "福田" and ev.loc[2, "district_code"] == "南山"
    mid = line.interpolate(0.5, normalized=True)
    assert _metres((ev.loc[2, "lng"], ev.loc[2, "lat"]), (mid.x, mid.y)) < 0.5
    at50 = line.interpolate((50 - 1) / 98, normalized=True)
    at25 = line.interpolate((25 - 1) / 98, normalized=True)
    assert ev.loc[3, "location_precision"] == "number"
    assert _metres((ev.loc[3, "lng"], ev.loc[3, "lat"]), (at50.x, at50.y)) < 0.5
    assert _metres((ev.loc[4, "lng"], ev.loc[4, "lat"]), (at25.x, at25.y)) < 0.5
    # undoing the line layer's import: 香梅路 is one road again
    assert undo_import(db, rep.import_id - 1)["roads"] == 1
    _, ev = _events(tmp_path, db, ["香梅路"], name="c.csv")
    assert ev.loc[0, "district_code"] == "福田"


def test_helsinki_extract_house_numbers(tmp_path, shared):
    db = tmp_path / "hel.duckdb"
    pbf = shared / "osm" / "Helsinki.osm.pbf"
    rep = import_roads(pbf, db=db, progress=False)
    # independently: GDAL's OSM layers read here, the named highway lines and the addr:* points and buildings
    lines = pyogrio.read_dataframe(pbf, layer="lines")
    lines = lines[lines["highway"].notna()]
    assert rep.rows_read == len(lines) and rep.loaded == int(lines["name"].notna().sum())
    pts = pyogrio.read_dataframe(pbf, layer="points")
    tags = pts["other_tags"].fillna("")
    numbered = pts[tags.str.contains('"addr:housenumber"') & tags.str.contains('"addr:street"')].copy()
    numbered["street"] = numbered["other_tags"].str.extract(r'"addr:street"=>"([^"]*)"', expand=False)
    numbered["number"] = numbered["other_tags"].str.extract(r'"addr:housenumber"=>"([^"]*)"', expand=False)
    assert rep.road_numbers >= numbered[["street", "number"]].drop_duplicates().shape[0]
    # numbers with one point only, written both ways round: placed at that point
    one = numbered.groupby(["street", "number"]).filter(lambda g: len(g) == 1)
    one = one[one["number"].str.fullmatch(r"\d+(?: ?[A-Za-z])?")]  # not "2, 2. krs./Floor 2": no house number
    stored = Store(db).sql("SELECT name, number, count(*) AS n FROM road_numbers GROUP BY 1, 2")
    single = set(map(tuple, stored.loc[stored["n"] == 1, ["name", "number"]].to_numpy()))
    one = one[[(s, n) in single for s, n in zip(one["street"], one["number"], strict=True)]].head(20)
    addresses = [f"{r.street} {r.number}, Helsinki" for r in one.itertuples()]
    rep, ev = _events(tmp_path, db, addresses)
    assert rep.address_precision == {"number": len(one)} and rep.unlocated == 0
    for r, e in zip(one.itertuples(), ev.itertuples(), strict=True):
        assert _metres((e.lng, e.lat), (r.geometry.x, r.geometry.y)) < 0.5
        assert e.location_confidence == 0.9 and not pd.isna(e.h3)


def test_roads_through_the_cli_and_the_api(tmp_path, shared):
    from civicgrid.api.app import create_app
    from civicgrid.geo.users import add_user
    from fastapi.testclient import TestClient

    db = tmp_path / "api.duckdb"
    res = CliRunner().invoke(main, ["import", "roads", "--help"])
    assert res.exit_code == 0 and "graphml" in res.output
    layer = gpd.GeoDataFrame({"name": ["Main Street", None]},
                             geometry=[shapely.LineString([(24.94, 60.17), (24.95, 60.17)]),
                                       shapely.LineString([(24.94, 60.171), (24.95, 60.171)])], crs=4326)
    f = tmp_path / "roads.geojson"
    layer.to_file(f, driver="GeoJSON")
    res = CliRunner().invoke(main, ["import", "roads", str(f), "--db", str(db), "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert (report["rows_read"], report["loaded"], report["rejected"]) == (2, 1, 1)
    _, admin = add_user(db, "adm", role="admin")
    client = TestClient(create_app(db))
    with open(shared / GRAPH, "rb") as fh:
        r = client.post("/api/imports/roads", files={"file": ("futian.graphml", fh)},
                        headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["layer"] == "roads" and body["rows_read"] == body["loaded"] + body["duplicates"] + body["rejected"]
    assert body["loaded"] > 1000 and body["road_numbers"] == 0
    r = client.post("/api/imports/roads", files={"file": ("x.graphml", b"<not xml")},
                    headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 422 and "x.graphml" in r.json()["detail"]


def test_address_parsing_on_a_small_gazetteer():
    """Names inside numbers are no roads; a number before or after an English street name; 1-5 and 1 B."""
    from civicgrid.grids.road_places import RoadGazetteer, road_key

    line = shapely.LineString([(114.0, 22.5), (114.001, 22.5)])
    far = shapely.LineString([(114.0, 22.6), (114.001, 22.6)])
    roads = pd.DataFrame({"name_key": [road_key(n) for n in ("四号", "深南大道", "Main St", "Main Street")],
                          "geom": [line, line, far, far], "length_m": 103.0, "district_code": "D",
                          "street_code": None, "community_code": None, "number_from": None, "number_to": None})
    numbers = pd.DataFrame({"name_key": [road_key("Main Street")] * 3, "number": ["21", "1-5", "1 B"],
                            "lng": [114.0002, 114.0004, 114.0006], "lat": 22.6, "district_code": "D",
                            "street_code": None})
    g = RoadGazetteer(roads, numbers, pd.DataFrame({"code": ["D"], "name": ["福田"], "level": ["district"]}))
    assert g.place("福田区十四号楼").precision is None  # 四号 inside 十四号 is no road
    assert g.place("四号").precision == "road"
    assert g.place("21 Main St., Springfield").lng == pytest.approx(114.0002)
    assert g.place("Main Street 1-5").lng == pytest.approx(114.0004)
    assert g.place("Main St 1 B").lng == pytest.approx(114.0006)
    p = g.place("Main Street 7")  # a number the data lacks: the road, its middle
    assert p.precision == "road" and p.lng == pytest.approx(114.0005) and p.lat == pytest.approx(22.6)
    assert g.place("深南大道与四号交叉口").precision == "intersection"  # the same line: they share it


def test_a_gcj02_line_layer_is_stored_in_wgs84(tmp_path):
    """Roads drawn on AMap tiles (GCJ-02, no .prj) with --crs gcj02: stored in WGS84 (eviltransform, independent)."""
    eviltransform = pytest.importorskip("eviltransform")
    wgs = [(114.05, 22.54), (114.06, 22.545)]
    gcj = [eviltransform.wgs2gcj(lat, lng)[::-1] for lng, lat in wgs]
    layer = gpd.GeoDataFrame({"路名": ["测试大道"]}, geometry=[shapely.LineString(gcj)])
    f = tmp_path / "gcj.shp"
    layer.to_file(f, encoding="utf-8")
    (tmp_path / "gcj.prj").unlink(missing_ok=True)
    db = tmp_path / "g.duckdb"
    rep = import_roads(f, db=db, crs="gcj02", progress=False)
    assert (rep.loaded, rep.crs) == (1, "gcj02")
    xy = shapely.get_coordinates(shapely.from_wkb(bytes(Store(db).sql(
        "SELECT ST_AsWKB(geom) AS w FROM roads")["w"][0])))
    for (x, y), p in zip(xy, wgs, strict=True):
        assert _metres((x, y), p) < 1.0
    assert _metres(tuple(xy[0]), gcj[0]) > 300  # the offset removed
