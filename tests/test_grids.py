"""Micro-grid and area imports: rows repeating a code are parts of one shape (merged) or duplicates."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from civicgrid.geo.dedup import existing_keys
from civicgrid.geo.store import Store
from civicgrid.grids.areas import import_areas, import_grids

X0, Y0, D = 112.901, 28.201, 0.002


def _box(i: float, j: float, w: float = 1, h: float = 1):
    return shapely.box(X0 + i * D, Y0 + j * D, X0 + (i + w) * D, Y0 + (j + h) * D)


#: G1: two disjoint squares (an island and a shore part); G2: one square twice (a duplicate row);
#: G3: two overlapping rectangles and the second again (a duplicate part); G4: a plain grid.
PARTS = gpd.GeoDataFrame(
    {"code": ["G1", "G2", "G1", "G2", "G3", "G3", "G3", "G4"],
     "name": ["一网格", "二网格", "一网格", "二网格", "三网格", "三网格", "三网格", "四网格"]},
    geometry=[_box(0, 0), _box(3, 0), _box(0, 2), _box(3, 0), _box(0, 4, 2, 1), _box(1, 4, 2, 2),
              _box(1, 4, 2, 2), _box(5, 5)],
    crs=4326,
)


def _stored(db, table: str, codes) -> gpd.GeoDataFrame:
    g = Store(db).sql(f"SELECT code, area_km2, ST_AsWKB(geom) AS wkb FROM {table} WHERE code IN "
                      f"({', '.join('?' * len(codes))}) ORDER BY code", list(codes))
    return gpd.GeoDataFrame(g[["code", "area_km2"]], geometry=shapely.from_wkb(g["wkb"].map(bytes)),
                            crs=4326).set_index("code")


def test_grid_rows_repeating_a_code_are_merged_like_areas(small_city, tmp_path):
    f = tmp_path / "parts.geojson"
    PARTS.to_file(f)
    rep = import_grids(f, db=small_city, progress=False)
    # G1's second square and G3's second rectangle are parts (loaded); G2 again and G3's third row are duplicates.
    assert (rep.rows_read, rep.loaded, rep.duplicates, rep.rejected) == (8, 6, 2, 0)
    merged = [w for w in rep.warnings if "merged" in w]
    assert len(merged) == 1 and merged[0].startswith("2 rows are further parts of a grid of the same code")
    got = _stored(small_city, "grids", ["G1", "G2", "G3", "G4"])
    want = gpd.read_file(f).dissolve("code")  # the file as written (GeoJSON rounds coordinates)
    assert got.index.tolist() == want.index.tolist()
    for code in want.index:  # the same point set as geopandas' dissolve (union of the code's rows)
        assert shapely.equals(got.geometry[code], want.geometry[code]), code
        assert abs(got.geometry[code].area - want.geometry[code].area) < 1e-15
    assert got.geometry["G1"].geom_type == "MultiPolygon" and len(got.geometry["G1"].geoms) == 2
    utm = want.to_crs(want.estimate_utm_crs())
    np.testing.assert_allclose(got["area_km2"].to_numpy(), utm.area.to_numpy() / 1e6, rtol=1e-9)
    hier = Store(small_city).sql("SELECT DISTINCT community_code, street_code, district_code FROM grids "
                                 "WHERE code LIKE 'G%'")
    assert hier.values.tolist() == [["430102001001", "430102001", "430102"]]
    again = import_grids(f, db=small_city, progress=False)
    assert (again.loaded, again.duplicates) == (0, 8) and not any("merged" in w for w in again.warnings)


def test_areas_and_grids_read_the_stored_codes_in_one_query(small_city, tmp_path, monkeypatch):
    calls = []
    real = existing_keys

    def spy(con, table, keys):
        calls.append(table)
        return real(con, table, keys)

    monkeypatch.setattr("civicgrid.grids.areas.existing_keys", spy)  # the name areas.py calls
    f = tmp_path / "communities.geojson"
    areas = PARTS.assign(code="C" + PARTS["code"], parent="430102001")
    areas.to_file(f)
    rep = import_areas(f, db=small_city, level="community", progress=False)
    assert (rep.loaded, rep.duplicates) == (6, 2) and len(calls) == 1
    assert len(_stored(small_city, "areas", ["CG1", "CG2", "CG3", "CG4"])) == 4
    g = tmp_path / "grids.geojson"
    PARTS.to_file(g)
    calls.clear()
    import_grids(g, db=small_city, progress=False)
    assert len(calls) == 1


def test_merged_parts_with_other_names_or_households_are_reported(small_city, tmp_path):
    """Parts of one code that disagree on other fields: the first row's values are kept, and a warning says so."""
    f = tmp_path / "conflict.geojson"
    gpd.GeoDataFrame({"code": ["H1", "H1", "H2", "H2"], "name": ["东网格", "东网格", "西网格", "西网格（二）"],
                      "户数": [120, 80, 50, 50]},
                     geometry=[_box(0, 0), _box(0, 2), _box(3, 0), _box(3, 2)], crs=4326).to_file(f)
    rep = import_grids(f, db=small_city, mapping={"households": "户数"}, progress=False)
    assert (rep.loaded, rep.duplicates, rep.rejected) == (4, 0, 0)
    conflict = [w for w in rep.warnings if "differ" in w]
    assert conflict == ["2 merged codes have parts whose other fields differ from their first row, whose values "
                        "were kept: H1 (households 120 kept, 80 not), H2 (name 西网格 kept, 西网格（二） not)"]
    got = Store(small_city).sql("SELECT code, name, households FROM grids WHERE code IN ('H1', 'H2') ORDER BY code")
    assert got.values.tolist() == [["H1", "东网格", 120], ["H2", "西网格", 50]]
