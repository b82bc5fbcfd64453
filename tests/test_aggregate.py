"""H3 aggregation: heatmap counts, metrics, filters, area statistics and the cell budget, against pandas."""

from __future__ import annotations

from datetime import UTC, datetime

import h3
import numpy as np
import pandas as pd
import pytest
import shapely
from civicgrid.geo.aggregate import (
    EventFilter,
    area_stats,
    cell_counts_by_res,
    check_cell_budget,
    city_cells,
    heatmap,
    heatmap_frame,
)
from civicgrid.geo.errors import InvalidParameterError, NotFoundError, TooManyCellsError
from civicgrid.geo.store import Store, writing
from civicgrid.geo.store_files import copy_store


@pytest.fixture(scope="module")
def store(demo_db) -> Store:
    return Store(demo_db)


@pytest.fixture(scope="module")
def events(store) -> pd.DataFrame:
    """The raw events with their site category, read once, for independent pandas computations."""
    ev = store.sql("SELECT e.event_id, e.source, e.problem_type, e.time, e.status, e.deadline, e.site_id, e.h3, "
                   "e.grid_code, e.community_code, e.street_code, e.district_code, s.category_code "
                   "FROM events e LEFT JOIN sites s USING (site_id)")
    ev["h3"] = ev["h3"].astype("uint64")
    return ev


def _parents(cells: pd.Series, res: int) -> pd.Series:
    """Parent cells with the h3 library, one call per distinct cell (independent of the SQL bit arithmetic)."""
    uniq = cells.unique()
    mapping = {c: h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(c)), res)) for c in uniq}
    return cells.map(mapping).astype("uint64")


def _expected(ev: pd.DataFrame, res: int) -> pd.DataFrame:
    g = ev.assign(cell=_parents(ev["h3"], res)).groupby("cell")
    return pd.DataFrame({"count": g.size(), "sites": g["site_id"].nunique()}).sort_index()


@pytest.mark.parametrize("res", [5, 7, 9, 11])
def test_heatmap_counts_equal_pandas_groupby(store, events, res):
    got = heatmap(store, res=res).set_index("h3")
    want = _expected(events, res)
    assert len(got) == len(want)
    assert (got.index.to_numpy() == want.index.to_numpy()).all()
    assert (got["count"].to_numpy() == want["count"].to_numpy()).all()
    assert (got["sites"].to_numpy() == want["sites"].to_numpy()).all()
    assert (got["value"] == got["count"]).all()
    assert got["count"].sum() == len(events)


def test_filters_match_pandas(store, events):
    pt = store.sql("SELECT code, major_code FROM problem_types")
    majors = dict(zip(pt.code, pt.major_code, strict=True))
    street = events["street_code"].dropna().value_counts().index[0]
    f = EventFilter(start="2024-03-01", end="2024-09-01", source="complaint", types=("02", "0301"), area=street)
    got = heatmap(store, res=9, filters=f).set_index("h3")
    ev = events[(events.time >= "2024-03-01") & (events.time < "2024-09-01") & (events.source == "complaint")
                & (events.problem_type.map(majors).eq("02") | events.problem_type.eq("0301"))
                & (events.street_code == street)]
    assert len(ev) > 100
    want = _expected(ev, 9)
    assert got["count"].to_dict() == want["count"].to_dict()


def test_category_and_status_filters(store, events):
    got = heatmap(store, res=8, filters=EventFilter(categories="银行网点,14")).set_index("h3")
    ev = events[events.category_code.isin(["03", "14"])]
    assert len(ev) > 50
    assert got["count"].to_dict() == _expected(ev, 8)["count"].to_dict()
    as_of = datetime(2025, 12, 1)
    got = heatmap(store, res=8, filters=EventFilter(status="overdue", as_of=as_of))
    overdue = events[(events.status == "open") & (events.deadline < as_of)]
    assert len(overdue) > 0
    assert got["count"].sum() == len(overdue)
    closed = heatmap(store, res=8, filters=EventFilter(status="closed"))
    assert closed["count"].sum() == (events.status == "closed").sum()


def test_density_and_sites_metrics(store):
    d = heatmap(store, res=9, metric="density")
    areas = np.array([h3.cell_area(h3.int_to_str(int(c)), unit="km^2") for c in d["h3"]])
    assert np.allclose(d["value"], d["count"] / areas, rtol=1e-9)
    s = heatmap(store, res=9, metric="sites")
    assert (s["value"] == s["sites"]).all()
    assert s["sites"].max() > 0


def test_heatmap_frame_hexagons(store):
    gdf = heatmap_frame(store, res=8)
    assert gdf.crs.to_epsg() == 4326
    assert list(gdf.columns[:3]) == ["h3", "h3_hex", "value"]
    for row in gdf.head(20).itertuples():
        assert row.h3_hex == h3.int_to_str(int(row.h3))
        lat, lng = h3.cell_to_latlng(row.h3_hex)
        assert row.geometry.contains(shapely.Point(lng, lat))
        ref = shapely.Polygon([(x, y) for y, x in h3.cell_to_boundary(row.h3_hex)])
        assert abs(row.geometry.area - ref.area) < 1e-12


def test_area_stats_match_pandas(store, events):
    f = EventFilter(source="inspection")
    ev = events[events.source == "inspection"]
    for level, col in (("district", "district_code"), ("street", "street_code"), ("grid", "grid_code")):
        got = area_stats(store, level=level, filters=f).set_index("code")
        want = ev.groupby(col).size()
        n_units = store.sql(f"SELECT count(*) AS n FROM {'grids' if level == 'grid' else 'areas'}"
                            + ("" if level == "grid" else f" WHERE level = '{level}'"))["n"].iloc[0]
        assert len(got) == n_units  # zero-count units listed
        assert got["count"].reindex(want.index).tolist() == want.tolist()
        assert got.loc[~got.index.isin(want.index), "count"].eq(0).all()
        assert (got["count"].diff().dropna() <= 0).all()  # sorted by count
    street = events["street_code"].dropna().iloc[0]
    got = area_stats(store, level="community", filters=EventFilter(area=street))
    kids = store.sql("SELECT code FROM areas WHERE parent_code = ?", [street])["code"]
    assert set(got["code"]) == set(kids)
    assert got["count"].sum() == (events.street_code == street).sum() - events[
        (events.street_code == street) & events.community_code.isna()].shape[0]
    dens = got["count"] / got["area_km2"]
    assert np.allclose(got["density"], dens)


def test_cell_budget_names_resolution_that_fits(store, events):
    counts = cell_counts_by_res(store)
    for r in (7, 10, 12):
        assert counts[r] == _parents(events["h3"], r).nunique()
    cap = (counts[10] + counts[11]) // 2
    with pytest.raises(TooManyCellsError, match="res=10 or coarser fits") as err:
        heatmap(store, res=12, max_cells=cap)
    assert f"{counts[12]:,} cells" in str(err.value)
    check_cell_budget(store, res=10, max_cells=cap)  # fits: no error
    assert len(heatmap(store, res=10, max_cells=cap)) == counts[10]


def test_validation_errors_name_closest(store):
    with pytest.raises(NotFoundError, match="0209"):
        heatmap(store, filters=EventFilter(types="0299"))
    with pytest.raises(NotFoundError, match="暴露垃圾"):
        heatmap(store, filters=EventFilter(types="垃圾暴露"))
    with pytest.raises(NotFoundError, match="银行网点"):
        heatmap(store, filters=EventFilter(categories="银行"))
    code = store.sql("SELECT code FROM areas WHERE level = 'street' LIMIT 1")["code"].iloc[0]
    with pytest.raises(NotFoundError, match=code[:6]):
        heatmap(store, filters=EventFilter(area=code[:-1] + "9"))
    with pytest.raises(InvalidParameterError, match="before end"):
        EventFilter(start="2024-05-01", end="2024-04-01")
    with pytest.raises(InvalidParameterError, match="open, closed, overdue"):
        EventFilter(status="late")
    with pytest.raises(InvalidParameterError, match="complaint, inspection"):
        EventFilter(source="hotline")
    with pytest.raises(InvalidParameterError, match="not a date"):
        EventFilter(start="yesterday-ish")
    with pytest.raises(InvalidParameterError, match=r"5\.\.12"):
        heatmap(store, res=13)
    with pytest.raises(InvalidParameterError, match="metric"):
        heatmap(store, metric="sum")


def test_type_names_and_grid_area(store, events):
    by_name = heatmap(store, res=7, filters=EventFilter(types="占道经营"))
    by_code = heatmap(store, res=7, filters=EventFilter(types="0201"))
    assert by_name["count"].sum() == by_code["count"].sum() == (events.problem_type == "0201").sum()
    grid = events["grid_code"].dropna().iloc[0]
    got = heatmap(store, res=10, filters=EventFilter(area=grid))
    assert got["count"].sum() == (events.grid_code == grid).sum()


def test_city_cells_cover_the_city(store):
    cells = city_cells(store, res=8)
    city = shapely.from_wkb(bytes(store.sql(
        "SELECT ST_AsWKB(ST_Union_Agg(geom)) AS g FROM areas WHERE level = 'district'")["g"].iloc[0]))
    pts = [shapely.Point(lng, lat) for lat, lng in (h3.cell_to_latlng(h3.int_to_str(int(c))) for c in cells)]
    assert all(city.buffer(1e-9).contains(p) for p in pts)
    # the cells tile the city: their total area is close to the city's
    area = sum(h3.cell_area(h3.int_to_str(int(c)), unit="km^2") for c in cells)
    total = store.sql("SELECT sum(area_km2) AS a FROM areas WHERE level = 'district'")["a"].iloc[0]
    assert abs(area - total) / total < 0.05


def test_cache_follows_new_versions(demo_db, tmp_path):
    path = tmp_path / "copy.duckdb"
    copy_store(demo_db, path)
    store = Store(path)
    before = heatmap(store, res=7)["count"].sum()
    with writing(path) as con:
        con.execute("DELETE FROM events WHERE source = 'complaint'")
        left = con.execute("SELECT count(*) FROM events").fetchone()[0]
    after = heatmap(store, res=7)["count"].sum()
    assert before > after == left


@pytest.mark.parametrize("text", ["01/07/2025", "07/01/2025", "1.7.2025", "July 1, 2025", "1 Jul 2025"])
def test_day_or_month_first_dates_are_refused(text):
    # pandas reads 01/07/2025 as 7 January; a planner may mean 1 July — refuse instead of guessing
    with pytest.raises(InvalidParameterError, match="year first"):
        EventFilter(start=text)
    with pytest.raises(InvalidParameterError, match="year first"):
        EventFilter(end=text)


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-07-01", datetime(2025, 7, 1)), ("2025/7/1", datetime(2025, 7, 1)), ("20250701", datetime(2025, 7, 1)),
    ("2025-07-01T08:30", datetime(2025, 7, 1, 8, 30)), ("2025-07-01 08:30:00", datetime(2025, 7, 1, 8, 30)),
    # with an offset: that moment, read in the store's zone by validate (test_times: a San Francisco store)
    ("2025-07-01T08:30+00:00", datetime(2025, 7, 1, 8, 30, tzinfo=UTC)),
])
def test_year_first_dates_are_read(text, expected):
    assert EventFilter(start=text).start == expected
