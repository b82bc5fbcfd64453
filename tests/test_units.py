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
        con.execute("INSERT INTO areas (code, name, level) VALUES ('430102002', '第二', 'street')")
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
    assert {u[1] for u in got} >= {"环卫所", "测试community居委会", "第二办事处", "测试district城市管理和综合执法局"}
