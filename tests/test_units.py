"""The automatic dispatch unit (属地) of cases: the cached rule against the rule written plainly."""

from __future__ import annotations

import pyarrow as pa
from civicgrid.geo.store import Store, writing
from civicgrid.sites.cases.units import DispatchUnits

from conftest import reference_unit


def test_the_unit_of_a_new_case_is_the_one_the_dispatch_rule_gives(small_city):
    """A case's unit (属地), computed from the cached sites and areas (``units.DispatchUnits``: new cases, backfill
    and an import's cases), is for every site and area combination the one the rule written plainly gives
    (``conftest.reference_unit``)."""
    with writing(small_city) as con:  # sites with and without a responsible unit (blank counts as none)
        con.execute("INSERT INTO sites (site_id, name, category_code, responsible_unit, lng, lat) VALUES "
                    "(1, 'a', '01', '  环卫所 ', 112.9, 28.2), (2, 'b', '02', '  ', 112.9, 28.2), "
                    "(3, 'c', '03', NULL, 112.9, 28.2)")
        con.execute("INSERT INTO areas (code, name, level) VALUES ('430102002', '第二', 'street'), "
                    "('430102003', 'Mission', 'street')")
    store = Store(small_city)
    cur = store.cursor()
    units = DispatchUnits.read(cur)
    sites = {s: (c, u) for s, c, u in cur.execute("SELECT site_id, category_code, responsible_unit FROM sites"
                                                 ).fetchall()}
    areas: dict = {"community": {}, "street": {}, "district": {}}
    for level, code, name in cur.execute("SELECT level, code, name FROM areas").fetchall():
        areas[level][code] = name
    codes = {level: [*areas[level], None, "nowhere"] for level in areas}
    rows = [(site, cm, st, di) for site in (None, 1, 2, 3, 99) for cm in codes["community"]
            for st in codes["street"] for di in codes["district"]]
    places = pa.table({"site_id": pa.array([r[0] for r in rows], pa.int64()),
                       **{f"{level}_code": pa.array([r[k] for r in rows], pa.string())
                          for k, level in enumerate(("community", "street", "district"), start=1)}})
    got = list(zip(*(column.to_pylist() for column in units.of(places)), strict=True))
    assert len(got) == len(rows) > 50
    for place, unit in zip(rows, got, strict=True):
        assert unit == reference_unit(sites, areas, *place), place
    assert {u[1] for u in got} >= {"环卫所", "测试community居委会", "第二办事处", "测试district城市管理和综合执法局",
                                   "Mission street office"}


def test_an_area_named_without_chinese_has_an_office_named_in_english(tmp_path, shared):
    """San Francisco's census tracts loaded as communities: its cases went to "Mission居委会"; an area whose
    name has no Chinese character now has its office named in English."""
    from civicgrid.grids.areas import import_areas
    from civicgrid.sites.events import import_events

    db = tmp_path / "sf.duckdb"
    import_areas(shared / "us_sf311" / "sf_census_tracts_with_neighborhood.geojson", db=db, level="community",
                 mapping={"code": "geoid", "name": "nhood"}, progress=False)
    import_events(shared / "us_sf311" / "sf311_cases_sample_geo_4984.csv", db=db, tz="America/Los_Angeles",
                  mapping={"lat": "Lat", "lng": "Long", "time": "Opened", "id": "CaseID"}, progress=False)
    got = Store(db).sql("SELECT c.unit, a.name FROM cases c JOIN areas a ON a.code = c.community_code")
    assert len(got) > 4000 and "Mission community office" in set(got["unit"])
    assert (got["unit"] == got["name"] + " community office").all()
