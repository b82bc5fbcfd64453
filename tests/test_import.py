"""Importers on real public files and on generated bad input: counts, rejects, CRS, idempotence."""

from __future__ import annotations

import csv
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from civicgrid.api.cli import main
from civicgrid.geo.errors import ImportFileError
from civicgrid.geo.store import Store
from civicgrid.geo.store_files import copy_store
from civicgrid.grids.areas import import_areas, import_grids
from civicgrid.sites.events import import_events
from civicgrid.sites.frame import import_sites
from civicgrid.sites.inspections import import_inspections
from click.testing import CliRunner

from conftest import store_digest


def _digest(path) -> str:
    return store_digest(path)


def _balanced(report):
    assert report.rows_read == report.loaded + report.duplicates + report.rejected
    assert report.rejected == len(report.rejects)


# --- Shenzhen: districts, the no-.prj grid, GCJ-02 districts, taxi events -------------------------------


@pytest.fixture(scope="module")
def shenzhen(tmp_path_factory, shared):
    """A store with the 10 real Shenzhen districts and the real ~500 m grid (no .prj) as micro-grids."""
    db = tmp_path_factory.mktemp("sz") / "sz.duckdb"
    sz = shared / "cn_shenzhen"
    districts = import_areas(sz / "shenzhen_districts_transbigdata_sz.json", db=db, level="district",
                             mapping={"code": "qh", "name": "qh"}, progress=False)
    grids = import_grids(sz / "grid.shp", db=db, progress=False)
    return db, districts, grids


def test_districts_and_grid_without_prj(shenzhen):
    db, districts, grids = shenzhen
    assert (districts.rows_read, districts.loaded, districts.rejected) == (10, 10, 0)
    assert districts.crs == "EPSG:4326"
    assert grids.rows_read == 9005 and grids.loaded + grids.duplicates == 9005
    _balanced(grids)
    assert any("assumed WGS84" in w for w in grids.warnings)
    assert any("codes were made" in w for w in grids.warnings)
    store = Store(db)
    areas = store.sql("SELECT name, area_km2 FROM areas ORDER BY area_km2 DESC")
    assert set(areas["name"]) >= {"福田", "南山", "罗湖", "宝安", "龙岗"}
    # Shenzhen's land area is about 1,997 km²; the district polygons should sum close to it.
    assert 1800 < areas["area_km2"].sum() < 2200
    # Grid cells are ~500 m squares.
    med = store.sql("SELECT median(area_km2) AS m FROM grids")["m"][0]
    assert 0.2 < med < 0.35
    # Each grid got its district from containment, checked independently with geopandas.
    g = store.sql("SELECT code, district_code, ST_AsWKB(geom) AS wkb FROM grids")
    pts = gpd.GeoDataFrame(g, geometry=shapely.point_on_surface(shapely.from_wkb(g["wkb"].map(bytes))), crs=4326)
    dist = store.sql("SELECT code AS area, ST_AsWKB(geom) AS wkb FROM areas")
    dist = gpd.GeoDataFrame(dist[["area"]], geometry=shapely.from_wkb(dist["wkb"].map(bytes)), crs=4326)
    joined = gpd.sjoin(pts, dist, predicate="within", how="left")
    joined = joined[~joined.index.duplicated()]
    assert (joined["area"].fillna("-") == joined["district_code"].fillna("-")).mean() > 0.999


def test_grid_reimport_is_idempotent(shenzhen, shared):
    db, _, first = shenzhen
    before = Store(db).sql("SELECT count(*) AS n FROM grids")["n"][0]
    again = import_grids(shared / "cn_shenzhen" / "grid.shp", db=db, progress=False)
    assert again.loaded == 0 and again.duplicates == 9005
    assert Store(db).sql("SELECT count(*) AS n FROM grids")["n"][0] == before == first.loaded


def test_taxi_trips_as_events(shenzhen, shared):
    db, _, _ = shenzhen
    path = shared / "cn_shenzhen" / "shenzhen_taxi_trips_2020-01.csv"
    rep = import_events(path, db=db, mapping={"lat": "Lat", "lng": "Lng", "time": "Stime", "id": "orderid"},
                        progress=False)
    raw = pd.read_csv(path)
    _balanced(rep)
    assert rep.rows_read == len(raw) == 10619
    assert rep.loaded > 10000
    assert not rep.no_grids and "(kept, marked with no grid)" in rep.summary()
    store = Store(db)
    ev = store.sql("SELECT * FROM events")
    assert len(ev) == rep.loaded
    assert ev["h3"].notna().all() and (ev["h3"] > 0).all()
    assert (ev["time"].min(), ev["time"].max()) == (pd.Timestamp(raw.Stime.min()), pd.Timestamp(raw.Stime.max()))
    # Coarser cells come from the stored fine cell by the SQL macro; check with the h3 library.
    import h3

    sample = store.sql("SELECT h3, h3_hex(h3_parent(h3, 8)) AS p8 FROM events LIMIT 200")
    for cell, p8 in zip(sample["h3"], sample["p8"], strict=True):
        assert h3.cell_to_parent(h3.int_to_str(int(cell)), 8) == p8
    # Exact point-in-polygon grid assignment, checked with geopandas on the same points.
    grids = store.sql("SELECT code, ST_AsWKB(geom) AS wkb FROM grids")
    grids = gpd.GeoDataFrame(grids[["code"]], geometry=shapely.from_wkb(grids["wkb"].map(bytes)), crs=4326)
    pts = gpd.GeoDataFrame(ev[["event_id", "grid_code"]], geometry=gpd.points_from_xy(ev.lng, ev.lat), crs=4326)
    joined = gpd.sjoin(pts, grids, predicate="intersects", how="left").groupby("event_id")["code"].min()
    expected = joined.reindex(ev["event_id"]).to_numpy()
    assert (pd.Series(expected).fillna("-").to_numpy() == ev["grid_code"].fillna("-").to_numpy()).all()
    assert rep.outside_grids == int(ev["grid_code"].isna().sum())
    again = import_events(path, db=db, mapping={"lat": "Lat", "lng": "Lng", "time": "Stime", "id": "orderid"},
                          progress=False)
    assert again.loaded == 0 and again.duplicates == rep.loaded


def test_gcj02_districts_align_after_conversion(tmp_path, shared):
    wgs = gpd.read_file(shared / "cn_shenzhen" / "shenzhen_districts_transbigdata_sz.json")
    db = tmp_path / "gcj.duckdb"
    raw_db = tmp_path / "raw.duckdb"
    gcj = shared / "cn_gcj02" / "深圳市.shp"
    # The Amap file has no .prj and no .cpg; its names are UTF-8 (detected), and it has 9 districts
    # (大鹏新区 is a functional area inside 龙岗区 there, a tenth polygon in the transbigdata file).
    # Amap's administrative division code ``adcode`` is found by its name, as users run it (no --code).
    name_col = "name"
    rep = import_areas(gcj, db=db, level="district", crs="gcj02", progress=False)
    assert rep.columns == {"code": "adcode", "name": name_col}
    assert rep.loaded == 9 and rep.crs == "gcj02" and rep.encoding == "utf-8"
    assert Store(db).sql("SELECT code FROM areas WHERE name = '福田区'")["code"].tolist() == ["440304"]
    # In a micro-grid file such a column is the code of the area the grid lies in, not the grid's own code.
    cells = gpd.read_file(gcj).iloc[:2][["adcode", "geometry"]]
    cells["geometry"] = [g.centroid.buffer(0.002, cap_style="square") for g in cells.geometry]
    cells.set_crs(4326).to_file(tmp_path / "cells.geojson")  # near enough: the codes are what is checked
    # events before any micro-grid: every one is outside grids, and the report says why
    taxi = import_events(shared / "cn_shenzhen" / "shenzhen_taxi_trips_2020-01.csv", db=db,
                         mapping={"time": "Stime", "id": "orderid"}, progress=False)
    assert taxi.no_grids and taxi.outside_grids == taxi.loaded > 10000
    assert "(the city has no micro-grids yet: civicgrid import grids)" in taxi.summary()
    grid_rep = import_grids(tmp_path / "cells.geojson", db=db, progress=False)
    assert "code" not in grid_rep.columns and grid_rep.loaded == 2
    assert not Store(db).sql("SELECT code FROM grids")["code"].isin(cells["adcode"]).any()
    assert set(Store(db).sql("SELECT name FROM areas")["name"]) >= {"南山区", "福田区", "罗湖区", "龙岗区"}
    import_areas(gcj, db=raw_db, level="district", mapping={"code": "adcode", "name": name_col}, progress=False)

    def offsets(path):
        a = Store(path).sql("SELECT name, ST_AsWKB(geom) AS wkb FROM areas")
        a = gpd.GeoDataFrame(a[["name"]], geometry=shapely.from_wkb(a["wkb"].map(bytes)), crs=4326).to_crs(32650)
        ref = wgs.to_crs(32650)
        out = []
        for geom in a.geometry:
            match = ref.geometry[ref.geometry.intersection(geom).area.idxmax()]
            out.append(geom.centroid.distance(match.centroid))
        return np.array(out)

    converted, raw = offsets(db), offsets(raw_db)
    assert np.median(raw) > 300  # read raw, the GCJ-02 polygons sit hundreds of metres off
    assert np.median(converted) < 60  # converted, they agree to tens of metres


# --- San Francisco and New York 311 -----------------------------------------------------------------------


def test_sf311_point_column_and_duplicate_case_ids(tmp_path, shared):
    db = tmp_path / "sf.duckdb"
    a = shared / "us_sf311" / "sf311_cases_sample_10000.csv"
    b = shared / "us_sf311" / "sf311_cases_sample_geo_4984.csv"
    first = import_events(a, db=db, point="Point", mapping={"time": "Opened", "id": "CaseID"},
                          tz="America/Los_Angeles", progress=False)
    _balanced(first)
    assert first.rows_read == 10000
    # the 24 rows without coordinates have an address (the Address column): kept, unlocated
    assert first.rejected == 0 and first.unlocated == 24 and first.located == 10000 - 24
    assert first.loaded == 10000
    second = import_events(b, db=db, mapping={"lat": "Lat", "lng": "Long", "time": "Opened", "id": "CaseID"},
                           tz="America/Los_Angeles", progress=False)
    _balanced(second)
    da, dbb = pd.read_csv(a, dtype=str), pd.read_csv(b, dtype=str)
    assert len(set(da.CaseID) & set(dbb.CaseID)) == 672
    loaded_ids = set(da.CaseID)
    expected_dups = int(dbb.CaseID.isin(loaded_ids).sum())
    assert second.duplicates == expected_dups
    times = Store(db).sql("SELECT min(time) AS lo, max(time) AS hi FROM events")
    # Opened runs 2008-07-01 .. 2016-01-27 in San Francisco time; stored in the store's zone (+15/16 h).
    assert times["lo"][0] >= pd.Timestamp("2008-07-01") and times["hi"][0] <= pd.Timestamp("2016-01-29")


def test_a_point_column_is_found_by_its_name(tmp_path, shared):
    """San Francisco 311 keeps its coordinates only in "Point" ("(lat, lon)"): without --point they are read
    from it (found by its name, and said so), the same points as with --point; without it every row loaded
    unlocated. A file whose only coordinates are a 坐标 column and no address loads too (it was refused)."""
    path = shared / "us_sf311" / "sf311_cases_sample_10000.csv"
    mapping = {"time": "Opened", "id": "CaseID"}
    found = import_events(path, db=tmp_path / "a.duckdb", mapping=mapping, tz="America/Los_Angeles", progress=False)
    given = import_events(path, db=tmp_path / "b.duckdb", mapping=mapping, point="Point", tz="America/Los_Angeles",
                          progress=False)
    assert found.located == given.located == 10000 - 24 and found.columns["point"] == "Point"
    assert any("coordinates read from column 'Point' as (latitude, longitude), found by its name" in w
               for w in found.warnings)
    assert not any("found by its name" in w and "Point" in w for w in given.warnings)
    points = "SELECT external_id, lng, lat, h3 FROM events ORDER BY external_id"
    pd.testing.assert_frame_equal(Store(tmp_path / "a.duckdb").sql(points), Store(tmp_path / "b.duckdb").sql(points))
    raw = pd.read_csv(path, dtype=str).dropna(subset=["Point"]).head(5)
    want = raw.Point.str.strip("()").str.split(",", expand=True).astype(float)
    got = Store(tmp_path / "a.duckdb").sql("SELECT external_id, lat, lng FROM events").set_index("external_id")
    assert np.allclose(got.loc[raw.CaseID, ["lat", "lng"]].to_numpy(), want.to_numpy())

    f = tmp_path / "zh.csv"
    pd.DataFrame({"时间": ["2024-03-08 15:00", "2024-03-09 10:00", "2024-03-09 11:00"],
                  "坐标": ["28.205,112.905", "(28.21, 112.91)", "不详"]}).to_csv(f, index=False)
    zh = import_events(f, db=tmp_path / "zh.duckdb", progress=False)
    assert zh.loaded == 2 and zh.rejected == 1 and zh.columns["point"] == "坐标"
    assert "unparseable point '不详'" in zh.rejects[0]["reason"]


def test_a_store_created_in_the_citys_zone_keeps_its_wall_clock_times(tmp_path, shared, monkeypatch):
    """A store for San Francisco (CIVICGRID_TIMEZONE at creation) keeps 311's Opened times as they read; in a
    store of the default zone (Asia/Shanghai) the same rows are moved by 15/16 hours and the report says so."""
    path = shared / "us_sf311" / "sf311_cases_sample_10000.csv"
    frame = pd.read_csv(path, dtype=str)
    opened = pd.to_datetime(frame.Opened, format="%m/%d/%Y %I:%M:%S %p")
    expected = dict(zip(frame.CaseID.astype(int).astype(str), opened, strict=True))
    mapping = {"time": "Opened", "id": "CaseID"}
    monkeypatch.setenv("CIVICGRID_TIMEZONE", "America/Los_Angeles")
    sf = import_events(path, db=tmp_path / "sf.duckdb", point="Point", mapping=mapping, progress=False)
    assert sf.loaded == 10000 and not [w for w in sf.warnings if "wall-clock" in w]
    store = Store(tmp_path / "sf.duckdb")
    assert store.meta("timezone") == "America/Los_Angeles"
    got = store.sql("SELECT external_id, time FROM events")
    assert (got.time.to_numpy() == got.external_id.map(expected).to_numpy()).all()
    # the city's evening stays evening: 311 opened between 1 and 5 am are few
    assert (got.time.dt.hour.between(1, 4)).mean() < 0.05

    monkeypatch.delenv("CIVICGRID_TIMEZONE")
    sh = import_events(path, db=tmp_path / "sh.duckdb", point="Point", mapping=mapping, tz="America/Los_Angeles",
                       progress=False)
    assert Store(tmp_path / "sh.duckdb").meta("timezone") == "Asia/Shanghai"
    assert any("stored as wall-clock times of the store's zone Asia/Shanghai" in w and
               "CIVICGRID_TIMEZONE=America/Los_Angeles" in w for w in sh.warnings)
    moved = Store(tmp_path / "sh.duckdb").sql("SELECT external_id, time FROM events")
    shifted = {k: v.tz_localize("America/Los_Angeles", ambiguous="NaT", nonexistent="NaT")
               .tz_convert("Asia/Shanghai").tz_localize(None) for k, v in expected.items()}
    want = moved.external_id.map(shifted)
    sure = want.notna().to_numpy()  # the hour a clock change repeats is not compared
    assert sure.sum() > 9900 and (moved.time.to_numpy()[sure] == want.to_numpy()[sure]).all()


@pytest.mark.parametrize(("name", "rows", "missing"), [("nyc311_2023-12_sample.csv", 500, 68),
                                                       ("nyc311_2024-04_sample.csv", 1000, 23)])
def test_nyc311_quoted_newlines_and_missing_coordinates(tmp_path, shared, name, rows, missing):
    path = shared / "us_nyc311_small" / name
    with open(path, newline="", encoding="utf-8") as fh:
        assert sum(1 for _ in csv.reader(fh)) - 1 == rows
    rep = import_events(path, db=tmp_path / "nyc.duckdb", tz="America/New_York", progress=False,
                        mapping={"lat": "latitude", "lng": "longitude", "time": "created_date", "id": "unique_key",
                                 "text": "descriptor"})
    _balanced(rep)
    frame = pd.read_csv(path, dtype=str)
    no_point = frame.latitude.isna() | frame.longitude.isna()
    assert int(no_point.sum()) == missing
    # rows without coordinates but with an address (incident_address, found by its name) are kept, unlocated
    lost = no_point & frame.incident_address.isna()
    assert rep.rows_read == rows and rep.rejected == int(lost.sum()) and rep.loaded == rows - int(lost.sum())
    assert rep.unlocated == int((no_point & ~lost).sum())
    assert all(r["field"] == "lat/lng" and r["reason"] == "missing coordinates, and no address either"
               for r in rep.rejects)
    # the rows kept have an address: their note says why they have no point, not "no address either"
    kept, n_kept = [w for w in rep.warnings if "kept without them" in w], int((no_point & ~lost).sum())
    assert kept == ([f"{n_kept} rows with unusable coordinates kept without them (located by area or unlocated): "
                     f"{n_kept} missing coordinates"] if n_kept else [])
    # Reported rows are spreadsheet rows: they point at the records that really lack coordinates.
    expected_rows = (np.flatnonzero(lost) + 2).tolist()
    assert [r["row"] for r in rep.rejects] == expected_rows


def test_the_report_names_a_column_of_area_codes_for_rows_without_coordinates(tmp_path, shared):
    """New York 311 with its ZIP codes loaded as the areas: 21 rows of April 2024 have no coordinates but an address
    and an ``incident_zip``. They load unlocated, and the report names the column whose cells are the codes of
    loaded areas; importing again with ``--map area=incident_zip --update`` places exactly those rows in their
    ZIP (it said nothing, and the rows stayed off every map)."""
    db = tmp_path / "nyc.duckdb"
    nyc = shared / "us_nyc311_small"
    import_areas(nyc / "nyc_zipcodes.shp", db=db, level="district", mapping={"code": "ZIPCODE", "name": "PO_NAME"},
                 progress=False)
    path = nyc / "nyc311_2024-04_sample.csv"
    first = import_events(path, db=db, tz="America/New_York", progress=False)
    frame = pd.read_csv(path, dtype=str)
    kept = frame.latitude.isna() & frame.incident_address.notna()
    assert first.unlocated == int(kept.sum()) == 21 and frame.incident_zip[kept].notna().all()
    hint = [w for w in first.warnings if "code of a loaded area" in w]
    assert hint == [f"21 rows kept without coordinates have the code of a loaded area in column 'incident_zip' "
                    f"(e.g. {frame.incident_zip[kept].iloc[0]!r}): --map area=incident_zip places them in their area "
                    "(import the file again with --update to place the rows loaded)"]
    again = import_events(path, db=db, tz="America/New_York", progress=False, mapping={"area": "incident_zip"},
                          update=True)
    assert again.updated == 21 and again.located_by_area == 21 and again.unlocated == 0
    assert not [w for w in again.warnings if "code of a loaded area" in w]
    placed = Store(db).sql("SELECT external_id, district_code FROM events WHERE lng IS NULL").set_index("external_id")
    want = frame[kept].set_index("unique_key")["incident_zip"]
    assert placed.loc[want.index, "district_code"].tolist() == want.tolist()
    # without areas of those codes there is no hint
    other = import_events(path, db=tmp_path / "bare.duckdb", tz="America/New_York", progress=False)
    assert other.unlocated == 21 and not [w for w in other.warnings if "code of a loaded area" in w]


def test_nyc_zip_polygons_in_us_feet(tmp_path, shared):
    db = tmp_path / "nyc.duckdb"
    rep = import_areas(shared / "us_nyc311_small" / "nyc_zipcodes.shp", db=db, level="district",
                       mapping={"code": "ZIPCODE", "name": "PO_NAME"}, progress=False)
    _balanced(rep)
    zips = gpd.read_file(shared / "us_nyc311_small" / "nyc_zipcodes.shp")
    assert rep.crs == "EPSG:2263"
    # rows repeating a ZIP code with another shape are parts of one area (merged), not duplicates
    same = zips[zips.ZIPCODE.duplicated(keep=False)]
    parts = sum(len(g) - 1 for _, g in same.groupby("ZIPCODE")
                if not all(g.geometry.iloc[0].equals(x) for x in g.geometry.iloc[1:]))
    assert parts > 0 and rep.duplicates == int(zips.ZIPCODE.duplicated().sum()) - parts
    assert rep.loaded == zips.ZIPCODE.nunique() + parts and any("merged" in w for w in rep.warnings)
    stored = Store(db).sql("SELECT code, ST_Area(geom) AS a FROM areas").set_index("code")["a"]
    assert len(stored) == zips.ZIPCODE.nunique()
    want = zips.to_crs(4326).dissolve("ZIPCODE")  # areas in square degrees, as ST_Area on lon/lat
    np.testing.assert_allclose(stored.loc[want.index].to_numpy(), shapely.area(want.geometry.to_numpy()), rtol=1e-6)
    box = Store(db).sql("SELECT min(ST_XMin(geom)) x0, max(ST_XMax(geom)) x1, min(ST_YMin(geom)) y0, "
                        "max(ST_YMax(geom)) y1 FROM areas").iloc[0]
    ref = zips.to_crs(4326).total_bounds
    assert np.allclose([box.x0, box.y0, box.x1, box.y1], ref, atol=1e-6)


# --- generated bad input ----------------------------------------------------------------------------------


def test_grid_hierarchy_and_leaders(small_city):
    g = Store(small_city).sql("SELECT * FROM grids ORDER BY code")
    assert g["community_code"].unique().tolist() == ["430102001001"]
    assert g["street_code"].unique().tolist() == ["430102001"]
    assert g["district_code"].unique().tolist() == ["430102"]
    assert g["leader_name"].tolist() == ["张三", "李四", "王五", "赵六"]
    assert g["households"].tolist() == [300, 420, 250, 510]
    assert np.allclose(g["area_km2"], 0.98 * 1.11, rtol=0.03)  # 0.01° × 0.01° at 28.2°N


def test_gbk_csv_with_chinese_headers_and_bad_rows(small_city, tmp_path):
    rows = [
        ("东风农贸市场", "农贸（集贸）市场", "人民路1号", "112.905", "28.205"),
        ("芙蓉银行网点", "03", "解放路2号", "112.915", "28.215"),
        ("书店", "Bookshop", "五一路3号", "112.905", "28.215"),
        ("颠倒的点", "公园", "八一路4号", "28.205", "112.905"),          # swapped
        ("未知类别", "菜市场", "韶山路5号", "112.906", "28.206"),        # unknown category
        ("远处", "网吧", "远处路6号", "116.40", "39.90"),                # Beijing: outside the city
        ("缺坐标", "网吧", "无坐标路7号", "", ""),
        ("坏坐标", "网吧", "坏坐标路8号", "abc", "28.2"),
    ]
    f = tmp_path / "样本框.csv"
    f.write_bytes(("名称,类别,地址,经度,纬度\n" + "\n".join(",".join(r) for r in rows) + "\n").encode("gbk"))
    rep = import_sites(f, db=small_city, progress=False)
    _balanced(rep)
    assert rep.encoding.lower() in {"gb18030", "gbk"}
    assert rep.columns["name"] == "名称" and rep.columns["lat"] == "纬度"
    # an unknown category label is kept as the city's own (issue 16), with the closest known names in a warning;
    # a site without coordinates but with an address is kept without a location
    assert rep.loaded == 5 and rep.rejected == 3
    why = {r["row"]: r for r in rep.rejects}
    assert "swapped" in why[5]["reason"]
    assert any("菜市场" in w and "农贸（集贸）市场" in w for w in rep.warnings)
    assert "outside the city's extent" in why[7]["reason"]
    assert any("1 sites have no coordinates but an address" in w for w in rep.warnings)
    assert why[9] == {"row": 9, "field": "lng", "reason": "non-numeric longitude 'abc'"}
    sites = Store(small_city).sql("SELECT name, category_code, grid_code, lng FROM sites ORDER BY site_id")
    assert sites[["name", "category_code", "grid_code"]].astype(object).where(sites.notna(), None).values.tolist() == [
        ["东风农贸市场", "16", "430102001001001"], ["芙蓉银行网点", "03", "430102001001004"],
        ["书店", "20", "430102001001002"], ["未知类别", "菜市场", "430102001001001"], ["缺坐标", "27", None]]
    assert np.isnan(sites["lng"].iloc[4])
    own = Store(small_city).sql("SELECT code, name_zh FROM site_categories WHERE code = '菜市场'")
    assert own.values.tolist() == [["菜市场", "菜市场"]]


def test_excel_with_merged_header_rows(small_city, tmp_path):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["2024年示范区样本框点位信息表"])
    ws.merge_cells("A1:F1")
    ws.append(["点位名称", "点位类别", "位置", None, "责任单位", "联系电话"])
    ws.merge_cells("C2:D2")
    ws.append([None, None, "经度", "纬度", None, None])
    ws.append(["人民公园", "公园", 112.905, 28.205, "园林局", "13800000000"])
    ws.append(["第一小学", "中小学校、幼儿园（校内）", 112.915, 28.205, "教育局", "13900000000"])
    f = tmp_path / "frame.xlsx"
    wb.save(f)
    rep = import_sites(f, db=small_city, progress=False, mapping={"unit": _col(f, "责任单位"),
                                                               "phone": _col(f, "联系电话")})
    assert rep.loaded == 2, rep.summary()
    s = Store(small_city).sql("SELECT name, category_code, responsible_unit, phone FROM sites ORDER BY site_id")
    assert s.values.tolist() == [["人民公园", "11", "园林局", "13800000000"],
                                 ["第一小学", "24", "教育局", "13900000000"]]


def _col(path, contains):
    from civicgrid.geo.readers import read_table

    return next(c for c in read_table(path).table.column_names if contains in c)


def test_times_in_chinese_forms(small_city, tmp_path):
    f = tmp_path / "events.csv"
    pd.DataFrame({
        "编号": ["a", "b", "c", "d", "e"],
        "时间": ["2024年3月5日 14:30", "2024/3/5 14:30", "2024-03-05", "2024-03-05T06:30:00Z", "下周"],
        "经度": ["112.905"] * 5, "纬度": ["28.205"] * 5,
        "问题类型": ["暴露垃圾", "0101", "环境卫生", "Hawkers", "0101"],
    }).to_csv(f, index=False)
    rep = import_events(f, db=small_city, progress=False)
    assert rep.loaded == 4 and rep.rejects == [{"row": 6, "field": "time", "reason": "unparseable time '下周'"}]
    ev = Store(small_city).sql("SELECT external_id, time, problem_type FROM events ORDER BY external_id")
    assert ev["time"].tolist() == [pd.Timestamp("2024-03-05 14:30")] * 2 + [pd.Timestamp("2024-03-05"),
                                                                            pd.Timestamp("2024-03-05 14:30")]
    assert ev["problem_type"].tolist() == ["0101", "0101", "01", "0203"]


def test_unknown_problem_type_names_the_closest(small_city, tmp_path):
    f = tmp_path / "e.csv"
    f.write_text("id,time,lat,lng,type\n1,2024-03-05 10:00,28.205,112.905,占道经营啊\n", encoding="utf-8")
    rep = import_events(f, db=small_city, progress=False, types="strict")
    assert rep.rejected == 1 and "占道经营" in rep.rejects[0]["reason"] and rep.rejects[0]["field"] == "type"
    # by default the row loads with its own label, and the report names the closest types
    rep = import_events(f, db=small_city, progress=False)
    assert rep.loaded == 1 and rep.unmapped_types == {"占道经营啊": 1}
    assert rep.type_suggestions["占道经营啊"][0] == "0201 占道经营 (Street occupation)"


@pytest.mark.parametrize("content", [b"", b"id,time,lat,lng\n"])
def test_empty_file_fails_and_changes_nothing(small_city, tmp_path, content):
    f = tmp_path / "empty.csv"
    f.write_bytes(content)
    before = _digest(small_city)
    with pytest.raises(ImportFileError, match="empty"):
        import_events(f, db=small_city, progress=False)
    assert _digest(small_city) == before


def test_wrong_extension_and_missing_column(small_city, tmp_path):
    f = tmp_path / "events.txt"
    f.write_text("id,time,lat,lng\n1,2024-03-05,28.205,112.905\n")
    before = _digest(small_city)
    with pytest.raises(ImportFileError, match="unknown format"):
        import_events(f, db=small_city, progress=False)
    g = tmp_path / "events.csv"
    g.write_text("id,time,lat,lng\n1,2024-03-05,28.205,112.905\n")
    with pytest.raises(ImportFileError, match=r"'when'.*not in the file"):
        import_events(g, db=small_city, mapping={"time": "when"}, progress=False)
    assert _digest(small_city) == before


def test_events_before_grids_are_relocated(tmp_path):
    db = tmp_path / "late.duckdb"
    f = tmp_path / "e.csv"
    f.write_text("id,time,lat,lng\n1,2024-03-05 10:00,28.205,112.905\n2,2024-03-05 11:00,28.215,112.915\n")
    rep = import_events(f, db=db, progress=False)
    assert rep.loaded == 2 and rep.outside_grids == 2
    g = tmp_path / "g.geojson"
    gpd.GeoDataFrame({"code": ["G1"]}, geometry=[shapely.box(112.90, 28.20, 112.91, 28.21)], crs=4326).to_file(g)
    import_grids(g, db=db, progress=False)
    codes = Store(db).sql("SELECT coalesce(grid_code, '-') AS g FROM events ORDER BY event_id")["g"].tolist()
    assert codes == ["G1", "-"]


def test_inspections_and_linked_hits(small_city, tmp_path):
    sites = tmp_path / "s.csv"
    sites.write_text("编号,名称,类别,经度,纬度\nS1,东风农贸市场,16,112.905,28.205\nS2,人民路公交站,05,112.915,28.215\n",
                     encoding="utf-8")
    import_sites(sites, db=small_city, progress=False)
    insp = tmp_path / "i.csv"
    insp.write_text("编号,点位编号,检查时间,检查人,检查结果\nI1,S1,2024-03-05 09:00,王督查,2\nI2,东风农贸市场,"
                    "2024-03-12 09:00,李督查,符合\nI3,S9,2024-03-12 09:00,李督查,符合\nI4,S2,2024-03-13 09:00,"
                    "李督查,也许\n", encoding="utf-8")
    rep = import_inspections(insp, db=small_city, mapping={"inspector": "检查人"}, progress=False)
    assert rep.loaded == 2 and [r["row"] for r in rep.rejects] == [4, 5]
    assert "unknown site 'S9'" in rep.rejects[0]["reason"] and "unknown result" in rep.rejects[1]["reason"]
    got = Store(small_city).sql("SELECT external_id, site_id, conforming, problems_found, inspector, grid_code "
                                "FROM inspections ORDER BY external_id")
    assert got.values.tolist() == [["I1", 1, False, 2, "王督查", "430102001001001"],
                                   ["I2", 1, True, 0, "李督查", "430102001001001"]]
    hits = tmp_path / "h.csv"
    hits.write_text("id,time,lat,lng,type,site,inspection\nH1,2024-03-05 09:10,28.2051,112.9051,占道经营,S1,I1\n"
                    "H2,2024-03-05 09:15,28.2052,112.9052,暴露垃圾,S1,I1\n", encoding="utf-8")
    rep = import_events(hits, db=small_city, source="inspection", progress=False)
    assert rep.loaded == 2
    ev = Store(small_city).sql("SELECT source, site_id, inspection_id, dedup_key FROM events ORDER BY external_id")
    assert ev.values.tolist() == [["inspection", 1, 1, "inspection:H1"], ["inspection", 1, 1, "inspection:H2"]]


def test_content_hash_dedup_without_ids(small_city, tmp_path):
    f = tmp_path / "noid.csv"
    f.write_text("time,lat,lng\n2024-03-05 10:00,28.205,112.905\n2024-03-05 10:00,28.205,112.905\n"
                 "2024-03-05 11:00,28.205,112.905\n")
    first = import_events(f, db=small_city, progress=False)
    assert (first.loaded, first.duplicates) == (2, 1)
    again = import_events(f, db=small_city, progress=False)
    assert (again.loaded, again.duplicates) == (0, 3)


def test_cli_import_report_json(small_city, tmp_path):
    f = tmp_path / "e.csv"
    f.write_text("单号,上报时间,经度,纬度\n1,2024-03-05 10:00,112.905,28.205\n2,2024-03-05 10:00,,\n")
    out = tmp_path / "report.json"
    res = CliRunner().invoke(main, ["import", "events", str(f), "--db", str(small_city), "--id", "单号",
                                    "--report", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "rows read" in res.output and "missing coordinates" in res.output
    data = json.loads(out.read_text(encoding="utf-8"))
    assert {k: data[k] for k in ("rows_read", "loaded", "duplicates", "rejected", "outside_grids")} == {
        "rows_read": 2, "loaded": 1, "duplicates": 0, "rejected": 1, "outside_grids": 0}
    assert data["rejects"] == [{"row": 3, "field": "lat/lng", "reason": "missing coordinates"}]
    bad = CliRunner().invoke(main, ["import", "events", str(tmp_path / "nothing.csv"), "--db", str(small_city)])
    assert bad.exit_code == 2 and "error:" in bad.output


def test_every_command_has_help():
    runner = CliRunner()
    for args in ([], ["import"], ["import", "areas"], ["import", "grids"], ["import", "sites"],
                 ["import", "events"], ["import", "inspections"], ["demo"], ["info"]):
        res = runner.invoke(main, [*args, "--help"])
        assert res.exit_code == 0 and "Usage:" in res.output, args


def test_lattice_lookup_matches_geopandas_on_the_shenzhen_grid(shenzhen):
    """The lattice index (used for large imports) agrees exactly with a geopandas spatial join."""
    from civicgrid.grids.locate import PolygonIndex

    db, _, _ = shenzhen
    g = Store(db).sql("SELECT code, ST_AsWKB(geom) AS wkb FROM grids ORDER BY code")
    geoms = shapely.from_wkb(g["wkb"].map(bytes))
    rng = np.random.default_rng(3)
    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    n = 100_000
    x, y = rng.uniform(x0 - 0.01, x1 + 0.01, n), rng.uniform(y0 - 0.01, y1 + 0.01, n)
    # Plus points exactly on vertices and edge midpoints (shared boundaries go to the smaller code).
    ring = shapely.get_coordinates(shapely.boundary(geoms[:2000]))
    mid = (ring[:-1] + ring[1:]) / 2
    x = np.concatenate([x, ring[:, 0], mid[:, 0]])
    y = np.concatenate([y, ring[:, 1], mid[:, 1]])
    index = PolygonIndex(geoms)
    index._build()  # large imports use the lattice; build it here for a test-sized sample
    got = index.locate(x, y)
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(x, y), crs=4326)
    polys = gpd.GeoDataFrame({"j": np.arange(len(geoms))}, geometry=geoms, crs=4326)
    joined = gpd.sjoin(pts, polys, predicate="intersects", how="left").groupby(level=0)["j"].min()
    expected = joined.reindex(np.arange(len(x))).fillna(-1).to_numpy().astype(int)
    assert (got == expected).all(), int((got != expected).sum())
    assert (got >= 0).mean() > 0.4


# --- batched events import (the path large files take) ---------------------------------------------------


def _batch_file(tmp_path, n=3000, seed=5):
    """Events with duplicate ids (within and across batches), rows without ids, and bad rows spread out."""
    rng = np.random.default_rng(seed)
    ids = [f"E{i}" for i in range(n)]
    for a, b in ((2500, 10), (2900, 2899), (1700, 1200), (40, 39)):
        ids[a] = ids[b]
    for i in (300, 301, 2200):
        ids[i] = ""
    frame = pd.DataFrame({
        "id": ids,
        "time": [f"2024-03-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00" for i in range(n)],
        "lng": np.round(rng.uniform(112.9005, 112.9195, n), 6).astype(str),
        "lat": np.round(rng.uniform(28.2005, 28.2195, n), 6).astype(str),
        "type": rng.choice(["暴露垃圾", "0101", "占道经营"], n),
        "status": rng.choice(["已办结", "处理中", ""], n),
    })
    frame.loc[301, ["time", "lng", "lat", "type", "status"]] = frame.loc[300, ["time", "lng", "lat", "type", "status"]]
    frame.loc[700, "lat"] = "北纬28度"
    frame.loc[1500, "time"] = "下周"
    frame.loc[2600, ["lng", "lat"]] = ""
    frame.loc[2750, "time"] = "2024-02-30 10:00"
    f = tmp_path / "batched.csv"
    frame.to_csv(f, index=False)
    return f, frame


def test_batched_import_equals_one_batch(small_city, tmp_path, monkeypatch):

    from civicgrid.geo import _csv as geo_csv
    from civicgrid.sites import events as site_events

    f, frame = _batch_file(tmp_path)
    one = tmp_path / "one.duckdb"
    copy_store(small_city, one)
    whole = import_events(f, db=one, progress=False)
    monkeypatch.setattr(geo_csv, "BLOCK_BYTES", 4096)  # the CSV streams in blocks of ~60 rows
    monkeypatch.setattr(site_events, "IMPORT_BATCH_ROWS", 250)
    parts = import_events(f, db=small_city, progress=False)
    _balanced(parts)
    keys = frame["id"].mask(frame["id"] == "", None)
    bad_rows = {702, 1502, 2602, 2752}
    valid = ~frame.index.isin([r - 2 for r in bad_rows])
    expected_dups = int(keys[valid].dropna().duplicated().sum()) + 1  # + the repeated row without an id
    assert (parts.rows_read, parts.rejected, parts.duplicates) == (3000, 4, expected_dups)
    assert {r["row"] for r in parts.rejects} == bad_rows
    assert [r["field"] for r in parts.rejects] == ["lat", "time", "lat/lng", "time"]
    assert parts.to_dict() | {"import_id": None, "file": None} == whole.to_dict() | {"import_id": None, "file": None}
    cols = "external_id, problem_type, time, status, lng, lat, h3, grid_code, community_code, dedup_key"
    a = Store(one).sql(f"SELECT {cols} FROM events ORDER BY event_id")
    b = Store(small_city).sql(f"SELECT {cols} FROM events ORDER BY event_id")
    pd.testing.assert_frame_equal(a, b)
    assert len(b) == parts.loaded and b["dedup_key"].is_unique
    again = import_events(f, db=small_city, progress=False)
    assert (again.loaded, again.duplicates, again.rejected) == (0, 2996, 4)


def test_duplicates_exact_under_hash_collisions(small_city, tmp_path, monkeypatch):
    """Keys are deduplicated by hash, then compared exactly: colliding hashes never drop a distinct row."""
    from civicgrid.geo import _csv as geo_csv
    from civicgrid.geo.dedup import KeyIndex
    from civicgrid.sites import events as site_events

    f, frame = _batch_file(tmp_path)
    real = KeyIndex.hashes
    monkeypatch.setattr(KeyIndex, "hashes", lambda self, keys: real(self, keys) % np.uint64(7))
    monkeypatch.setattr(geo_csv, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(site_events, "IMPORT_BATCH_ROWS", 250)
    rep = import_events(f, db=small_city, progress=False)
    _balanced(rep)
    stored = Store(small_city).sql("SELECT dedup_key, external_id FROM events")
    assert stored["dedup_key"].is_unique
    ids = frame["id"][frame["id"] != ""]
    bad = {"E700", "E1500", "E2600", "E2750"}
    assert set(stored["external_id"].dropna()) == set(ids) - bad
    assert rep.duplicates == 5 and rep.loaded == 3000 - 5 - 4


def test_bad_row_in_a_later_batch_is_a_reject(small_city, tmp_path, monkeypatch):
    """A row of the wrong field count far into a streamed file (issue 14): rejected with its row number, the
    rows around it loaded (Arrow's batches before it kept, the exact reader on from there)."""
    from civicgrid.geo import _csv as geo_csv
    from civicgrid.sites import events as site_events

    f = tmp_path / "late_error.csv"
    rows = [f"{i},2024-03-05 10:00,28.205,112.905" for i in range(2000)]
    rows[1800] = '1800,2024-03-05 10:00,28.205,112.905,"extra"'
    f.write_text("id,time,lat,lng\n" + "\n".join(rows) + "\n", encoding="utf-8")
    monkeypatch.setattr(geo_csv, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(site_events, "IMPORT_BATCH_ROWS", 250)
    report = import_events(f, db=small_city, progress=False)
    assert (report.rows_read, report.rejected) == (2000, 1)
    assert report.loaded + report.duplicates == 1999
    assert report.rejects == [{"row": 1802, "field": "column 5",
                               "reason": "5 fields where the header has 4 (an unquoted comma or a missing value "
                                         "on line 1802)"}]


def test_content_keys_keep_their_stored_form():
    """Keys of rows without ids stay ``prefix#`` + 16 hex digits of pandas' row hash (idempotent across versions)."""
    import pyarrow as pa
    from civicgrid.geo.dedup import content_keys

    rng = np.random.default_rng(11)
    values = [None if v < 0.1 else f" {v:.6f}" for v in rng.random(5000)]
    table = pa.table({"a": values, "b": [str(i) for i in range(5000)]})
    text = [f"{'' if a is None else a}\x1f{b}" for a, b in zip(values, table.column("b").to_pylist(), strict=True)]
    hashed = pd.util.hash_array(np.array(text, dtype=object), categorize=False)
    expected = [f"events#{h:016x}" for h in hashed]
    assert content_keys(table, ["a", "b"], "events#").tolist() == expected
    assert any(k[7] == "0" for k in expected)  # leading zeros kept


#: Run in a process of its own: the import group's CPU priority, and that of a thread started afterwards (as DuckDB's
#: and the import's are).
_PRIORITY = """
import os, sys, threading
from click.testing import CliRunner
from civicgrid.api.cli import main
result = CliRunner().invoke(main, ["import", "events", "--help"])
assert result.exit_code == 0, result.output
seen = []
t = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, 0)))
t.start(); t.join()
tasks = {os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")}  # the libraries' threads too
assert tasks == {os.getpriority(os.PRIO_PROCESS, 0)}, tasks
print(os.getpriority(os.PRIO_PROCESS, 0), seen[0])
"""


@pytest.mark.parametrize(("started", "setting", "runs"), [(0, None, 10), (0, "7", 7), (0, "0", 0), (12, "7", 12)])
def test_import_runs_at_the_settings_cpu_priority(started, setting, runs):
    """``civicgrid import`` lowers its CPU priority to ``CIVICGRID_IMPORT_NICE`` (default 10) before it opens the
    store, so every thread it makes afterwards runs at it too; it never raises a priority it was started with."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CIVICGRID_IMPORT_NICE"}
    if setting is not None:
        env["CIVICGRID_IMPORT_NICE"] = setting
    cmd = [sys.executable, "-c", _PRIORITY]
    if started:
        cmd = ["nice", "-n", str(started), *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=120).stdout.split()
    assert out == [str(runs), str(runs)]
