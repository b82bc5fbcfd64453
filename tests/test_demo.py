"""The demo city: hierarchy and codes, sample frame, event structure, lifecycles, rebounds and determinism."""

from __future__ import annotations

import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from civicgrid.data.demo import ASSESSMENTS, EPISODES, HOLIDAYS, SITE_COUNTS, build_demo
from civicgrid.geo.store import Store

N_EVENTS = 30_000
KIND_TO_TYPE = {"point": "POINT", "line": "LINESTRING", "area": "POLYGON"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One small demo city shared by the tests of this module."""
    db = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    summary = build_demo(db, events=N_EVENTS, seed=7, progress=False)
    return summary, Store(db)


def _metres(lng, lat, lng0, lat0):
    return np.column_stack([(np.asarray(lng) - lng0) * 111_320 * np.cos(np.radians(lat0)),
                            (np.asarray(lat) - lat0) * 110_850])


def test_counts_and_meta(demo):
    summary, store = demo
    assert summary["events"] == N_EVENTS
    assert summary["complaints"] + summary["hits"] == N_EVENTS
    assert 0.33 < summary["hits"] / N_EVENTS < 0.47
    levels = store.sql("SELECT level, count(*) AS n FROM areas GROUP BY level").set_index("level")["n"]
    assert 3 <= levels["district"] <= 4
    assert 10 <= levels["street"] <= 14
    assert 40 <= levels["community"] <= 60
    assert 300 <= store.sql("SELECT count(*) AS n FROM grids")["n"][0] <= 600
    assert store.meta("city_name") == "示范市"
    assert store.meta("city_name_en") == "Demo City"
    assert store.meta("demo_seed") == "7" and store.meta("demo_events") == str(N_EVENTS)
    imports = store.sql("SELECT * FROM imports")
    assert imports["layer"].tolist() == ["demo"]
    assert {r for r in store.sql("SELECT DISTINCT import_id FROM events")["import_id"]} == {imports["import_id"][0]}
    # The city sits near 28.23N 112.94E and spans about 12 x 10 km.
    ext = store.sql("SELECT min(ST_XMin(geom)) x0, max(ST_XMax(geom)) x1, min(ST_YMin(geom)) y0, "
                    "max(ST_YMax(geom)) y1, sum(area_km2) AS km2 FROM grids").iloc[0]
    assert 112.85 < ext.x0 < ext.x1 < 113.03 and 28.16 < ext.y0 < ext.y1 < 28.30
    assert 10 < (ext.x1 - ext.x0) * 98_000 / 1000 < 15 and 8.5 < (ext.y1 - ext.y0) * 110_850 / 1000 < 12.5
    assert 80 < ext.km2 < 110


def test_sample_frame_covers_all_categories(demo):
    _, store = demo
    per = store.sql(
        """
        SELECT c.code, c.geom_kind, count(s.site_id) AS n, list(DISTINCT ST_GeometryType(s.geom)::VARCHAR) AS types
        FROM site_categories c LEFT JOIN sites s ON s.category_code = c.code GROUP BY ALL ORDER BY c.code
        """
    ).set_index("code")
    assert len(per) == 38 and (per["n"] > 0).all()
    for code, row in per.iterrows():
        assert list(row["types"]) == [KIND_TO_TYPE[row["geom_kind"]]], code
    levels = store.sql("SELECT level, count(*) AS n FROM areas GROUP BY level").set_index("level")["n"]
    assert per.loc["34", "n"] == per.loc["35", "n"] == levels["community"]  # one per community
    assert per.loc["32", "n"] == per.loc["33", "n"] == levels["street"]  # one per street
    assert per.loc["25", "n"] == per.loc["24", "n"]  # one surroundings area per school
    for code in ("03", "05", "14", "16", "28", "30", "31", "09"):
        assert per.loc[code, "n"] == SITE_COUNTS[code], code
    assert 30 <= per.loc["38", "n"] <= 40 and 130 <= per.loc["36", "n"] <= 150
    sites = store.sql("SELECT * EXCLUDE (geom), ST_AsWKB(geom) AS wkb FROM sites ORDER BY site_id")
    assert sites["site_id"].tolist() == list(range(1, len(sites) + 1))
    assert (sites["external_id"] == [f"S{i:06d}" for i in sites["site_id"]]).all()
    assert (sites["dedup_key"] == "site:" + sites["external_id"]).all()
    assert sites["name"].is_unique
    assert sites["phone"].str.match(r"^(1[358]\d{9}|0731-8\d{7})$").all()
    assert sites[["address", "responsible_unit", "contact"]].notna().all().all()
    assert sites["address"].str.contains("区").all()
    assert 0.005 < (~sites["active"]).mean() < 0.05
    # The representative point lies on its geometry: the point itself, on the line, inside the polygon.
    geoms = shapely.from_wkb(sites["wkb"].map(bytes))
    pts = shapely.points(sites["lng"], sites["lat"])
    assert (shapely.distance(geoms, pts) < 1e-7).all()
    assert sites["grid_code"].notna().all() and (sites["h3"] > 0).all()
    # School surroundings: the 200 m ring around the campus.
    sur = store.sql("SELECT ST_Area(geom) AS a FROM sites WHERE category_code = '25'")["a"] * 98_000 * 110_850
    assert (sur > 150_000).all()
    # Bus lines follow several roads and are kilometres long.
    bus = store.sql("SELECT ST_Length(geom) * 100000 AS m, ST_NPoints(geom) AS n FROM sites WHERE category_code = '06'")
    assert (bus["m"] > 1500).all() and (bus["n"] > 10).all()


def test_grids_nest_and_codes(demo):
    _, store = demo
    grids = store.sql("SELECT *, ST_AsWKB(geom) AS wkb FROM grids")
    areas = store.sql("SELECT code, name, level, parent_code, ST_AsWKB(geom) AS wkb FROM areas").set_index("code")
    assert grids["code"].str.match(r"^43010[2-5]\d{9}$").all() and grids["code"].is_unique
    assert (grids["code"].str[:12] == grids["community_code"]).all()
    assert (grids["community_code"].str[:9] == grids["street_code"]).all()
    assert (grids["street_code"].str[:6] == grids["district_code"]).all()
    assert (areas.loc[grids["community_code"], "parent_code"].to_numpy() == grids["street_code"]).all()
    assert (areas.loc[grids["street_code"], "parent_code"].to_numpy() == grids["district_code"]).all()
    assert grids["name"].str.match(r"^.+社区第\d+网格$").all()
    assert grids["households"].between(150, 800).all()
    assert grids["leader_phone"].str.match(r"^1[358]\d{9}$").all()
    assert grids["leader_name"].str.match(r"^[\u4e00-\u9fff]{2,3}$").all()
    geom = dict(zip(areas.index, shapely.from_wkb(areas["wkb"].map(bytes)), strict=True))
    tol = 1e-6  # degrees, ~0.1 m
    g = shapely.from_wkb(grids["wkb"].map(bytes))
    for level in ("community_code", "street_code", "district_code"):
        parents = np.array([geom[c].buffer(tol) for c in grids[level]], dtype=object)
        assert shapely.contains(parents, g).all(), level
    # Each community is exactly the union of its grids (no gaps, no overlaps).
    for code, part in grids.groupby("community_code"):
        union = shapely.union_all(shapely.from_wkb(part["wkb"].map(bytes)))
        assert union.symmetric_difference(geom[code]).area < 1e-9
    overlap = shapely.union_all(g).area - shapely.area(g).sum()
    assert abs(overlap) < 1e-8
    names = areas.groupby("level")["name"].apply(list)
    assert all(n.endswith("区") for n in names["district"])
    assert all(n.endswith("街道") for n in names["street"])
    assert all(n.endswith("社区") for n in names["community"])


def test_events_located_typed_and_named(demo):
    _, store = demo
    ev = store.sql("SELECT * FROM events")
    assert sorted(ev["event_id"]) == list(range(1, N_EVENTS + 1))
    assert (ev["h3"] > 0).all()
    types = set(store.sql("SELECT code FROM problem_types")["code"])
    assert set(ev["problem_type"]) <= types and len(set(ev["problem_type"])) >= 35
    assert ev["time"].between("2024-01-01", "2026-01-01").all()
    outside = ev["grid_code"].isna().mean()
    assert 0.003 < outside < 0.012
    assert ev.loc[ev["grid_code"].isna(), "community_code"].isna().all()
    c = ev[ev["source"] == "complaint"]
    h = ev[ev["source"] == "inspection"]
    assert set(ev["source"]) == {"complaint", "inspection"}
    assert c["external_id"].str.match(r"^12345-\d{8}-\d{6}$").all()
    assert (c["external_id"].str[6:14] == c["time"].dt.strftime("%Y%m%d")).all()
    assert h["external_id"].str.match(r"^HIT-\d{8}-\d{6}$").all()
    assert (ev["dedup_key"] == ev["source"] + ":" + ev["external_id"]).all() and ev["dedup_key"].is_unique
    assert c["site_id"].isna().all() and c["inspection_id"].isna().all()
    assert h["site_id"].notna().all() and h["inspection_id"].notna().all()
    assert ev["text"].str.match(r"^[\u4e00-\u9fff0-9（）A-Za-z]+").all()
    assert ev["text"].str.len().between(4, 40).all()
    assert ev["status"].isin(["open", "closed"]).all()


def test_hits_scatter_around_their_site(demo):
    _, store = demo
    d = store.sql(
        """
        SELECT s.category_code AS cat, ST_Distance(s.geom, ST_Point(e.lng, e.lat)) * 100000 AS m
        FROM events e JOIN sites s USING (site_id)
        """
    )
    assert d["m"].quantile(0.5) < 60 and d["m"].quantile(0.99) < 250
    assert d["m"].quantile(0.9) > 5  # scattered, not stacked on the site point


def test_hotspots_markets_schools_and_episodes(demo):
    _, store = demo
    ev = store.sql("SELECT event_id, source, problem_type, time, lng, lat, site_id, text FROM events")
    markets = store.sql("SELECT site_id, lng, lat FROM sites WHERE category_code = '16'")
    area_km2 = store.sql("SELECT sum(area_km2) AS a FROM grids")["a"][0]
    lng0, lat0 = ev["lng"].mean(), ev["lat"].mean()
    xy = _metres(ev["lng"], ev["lat"], lng0, lat0)
    mk = _metres(markets["lng"], markets["lat"], lng0, lat0)
    near = np.zeros(len(ev), dtype=bool)
    for m in mk:
        near |= ((xy - m) ** 2).sum(1) < 150 ** 2
    near_density = near.sum() / (len(mk) * np.pi * 0.15 ** 2)
    city_density = len(ev) / area_km2
    assert near_density > 5 * city_density
    near_types = ev.loc[near, "problem_type"].value_counts(normalize=True)
    assert near_types[["0201", "0203", "0101"]].sum() > 0.3
    # Hawkers at school gates: at dismissal time on school days.
    school = ev[ev["problem_type"] == "0801"]
    assert len(school) > 100
    minutes = school["time"].dt.hour * 60 + school["time"].dt.minute
    assert ((minutes >= 16 * 60) & (minutes < 17 * 60 + 45)).mean() > 0.6
    assert (school["time"].dt.day_of_week < 5).mean() > 0.95
    assert (school["time"].dt.month == 8).mean() < 0.01  # summer vacation
    # The summer 2025 night market.
    night = ev[ev["text"].str.contains("夜市")]
    share = next(e[5] for e in EPISODES if e[0] == "night_market")
    assert len(night) > 0.5 * share * N_EVENTS
    assert night["time"].between("2025-06-01", "2025-10-01").mean() > 0.95
    assert (night["time"].dt.hour >= 18).mean() > 0.7
    # A hotspot rectified in mid-2024 fades; construction sites come and go.
    # Complaints carry no site, so count every event within 40 m of each back alley (category 30).
    alleys = store.sql("SELECT site_id, ST_AsWKB(geom) AS wkb FROM sites WHERE category_code = '30'")
    lanes = gpd.GeoDataFrame(alleys[["site_id"]], geometry=shapely.from_wkb(alleys["wkb"].map(bytes)),
                             crs=4326).to_crs(32649)
    pts = gpd.GeoDataFrame(ev[["time"]], geometry=gpd.points_from_xy(ev["lng"], ev["lat"]), crs=4326).to_crs(32649)
    near_lane = gpd.sjoin(pts, lanes.assign(geometry=lanes.buffer(40)), predicate="within")
    first_half = near_lane[near_lane["time"] < "2024-06-15"].groupby("site_id").size() / 166
    later = near_lane[near_lane["time"].dt.year == 2025].groupby("site_id").size() / 365
    top = first_half.idxmax()
    assert first_half[top] > 5 * max(later.get(top, 0), 1 / 365)  # daily rate before vs after rectification
    cons = store.sql(
        """
        SELECT s.site_id, s.active, min(e.time) AS first, max(e.time) AS last, count(*) AS n
        FROM sites s JOIN events e USING (site_id) WHERE s.category_code = '38' GROUP BY ALL
        """
    )
    assert (cons["first"] > pd.Timestamp("2024-09-01")).any()  # started later
    ended = cons[~cons["active"]]
    assert len(ended) and (ended["last"] < pd.Timestamp("2025-12-01")).all()


def test_weekly_seasonal_and_campaign_cycles(demo):
    _, store = demo
    ev = store.sql("SELECT source, problem_type, time FROM events")
    days = pd.DataFrame({"day": pd.date_range("2024-01-01", "2025-12-31")})
    weekend_days = (days["day"].dt.day_of_week >= 5).sum()
    weekday_days = len(days) - weekend_days

    def ratio(frame):
        we = (frame["time"].dt.day_of_week >= 5).sum() / weekend_days
        wd = (frame["time"].dt.day_of_week < 5).sum() / weekday_days
        return wd / we

    assert ratio(ev[ev["source"] == "inspection"]) > 5
    assert ratio(ev[ev["problem_type"].str.startswith("06")]) > 1.4  # building sites rest at weekends
    assert ratio(ev[ev["problem_type"].isin(["0701", "0203"]) & (ev["source"] == "complaint")]) < 0.95
    sanitation = ev[ev["problem_type"].str.startswith("01") & (ev["source"] == "complaint")]
    month = sanitation["time"].dt.month
    assert month.isin([7, 8]).sum() > 1.3 * month.isin([12, 1]).sum()
    # Surge in the four weeks before a mock assessment.
    start = pd.Timestamp(ASSESSMENTS[2][0])
    hits = ev[ev["source"] == "inspection"]["time"]
    before = hits.between(start - pd.Timedelta(days=28), start).sum() / 28
    usual = hits.between(pd.Timestamp("2025-03-01"), pd.Timestamp("2025-04-01")).sum() / 31
    assert before > 1.6 * usual
    comp = ev[ev["source"] == "complaint"]["time"]
    assert comp.between(start - pd.Timedelta(days=14), start).sum() / 14 > 1.1 * comp.between(
        pd.Timestamp("2025-03-01"), pd.Timestamp("2025-04-01")).sum() / 31


def test_lifecycles(demo):
    _, store = demo
    ev = store.sql("SELECT e.*, p.deadline_value, p.deadline_unit FROM events e "
                   "JOIN problem_types p ON p.code = e.problem_type")
    assert (ev["deadline"] > ev["time"]).all()
    rect = ev[ev["rectified_at"].notna()]
    assert (rect["rectified_at"] > rect["time"]).all()
    closed = ev[ev["status"] == "closed"]
    assert closed["closed_at"].notna().all() and closed["rectified_at"].notna().all()
    assert (closed["closed_at"] >= closed["rectified_at"]).all()
    assert (ev[ev["status"] == "open"]["closed_at"]).isna().all()
    on_time = (closed["closed_at"] <= closed["deadline"]).mean()
    assert 0.6 < on_time < 0.9
    assert (closed["closed_at"] > closed["deadline"]).mean() > 0.08
    assert 0.03 < (ev["reopened"] >= 1).mean() < 0.12 and (ev["reopened"] == 2).any()
    # Recent cases are still open; some old ones are open and long overdue.
    december = ev[ev["time"] >= "2025-12-28"]
    assert (december["status"] == "open").mean() > 0.3
    old_open = ev[(ev["status"] == "open") & (ev["time"] < "2025-06-01")]
    assert len(old_open) > 20 and (old_open["deadline"] < "2025-12-31").all()
    # ... but few: stuck problems are escalated and closed weeks after their deadline (demo.lifecycle),
    # so well under 1 % of the problems found before June are still open, and the overdue backlog at the end is
    # mostly from the last quarter (before: every stuck problem of two years stayed open, a third of all sites)
    assert len(old_open) < 0.005 * (ev["time"] < "2025-06-01").sum()
    overdue = ev[(ev["status"] == "open") & (ev["deadline"] < "2025-12-31")]
    assert (overdue["deadline"] >= "2025-10-01").mean() > 0.35
    late_closed = closed[closed["closed_at"] > closed["deadline"] + pd.Timedelta(days=30)]
    assert len(late_closed) > len(old_open)  # the escalated ones, closed long after their deadline
    # Deadlines follow the problem type: working hours within a few days, 15 working days over weekends.
    span = (ev["deadline"] - ev["time"]).dt.total_seconds() / 86_400
    hours = ev["deadline_unit"] == "working_hours"
    # (a working-hours deadline may jump a holiday: at most two working days later, and < 12 calendar days)
    start_day = ev["time"].dt.floor("D").to_numpy().astype("datetime64[D]")
    due_day = ev["deadline"].dt.floor("D").to_numpy().astype("datetime64[D]")
    assert (np.busday_count(start_day[hours], due_day[hours], holidays=HOLIDAYS) <= 2).all()
    assert span[hours].max() < 12 and span[hours].median() < 1.5
    fifteen = (ev["deadline_unit"] == "working_days") & (ev["deadline_value"] == 15)
    assert span[fifteen].between(19, 35).all()  # three weeks, more across the Spring Festival or National Day
    days = ev["deadline_unit"] == "working_days"
    count = np.busday_count(start_day[days], due_day[days], holidays=HOLIDAYS)
    assert (count == ev.loc[days, "deadline_value"].to_numpy()).all()  # exactly N working days later
    one = (ev["deadline_unit"] == "working_days") & (ev["deadline_value"] == 1)
    friday = one & (ev["time"].dt.day_of_week == 4) & ev["time"].dt.month.isin([3, 11])
    assert span[friday].between(3, 4).all()  # Friday + 1 working day = Monday


def test_rebounds_point_to_earlier_closed_cases(demo):
    summary, store = demo
    pairs = store.sql(
        """
        SELECT r.event_id, r.time, r.site_id, r.problem_type, r.source, r.inspection_id,
               o.event_id AS o_id, o.site_id AS o_site, o.problem_type AS o_type, o.status AS o_status,
               o.closed_at AS o_closed
        FROM events r JOIN events o ON o.event_id = r.rebound_of
        """
    )
    n = store.sql("SELECT count(rebound_of) AS n FROM events")["n"][0]
    assert len(pairs) == n == summary["rebounds"] > 0.01 * summary["hits"]
    assert (pairs["site_id"] == pairs["o_site"]).all()
    assert (pairs["problem_type"] == pairs["o_type"]).all()
    assert (pairs["o_status"] == "closed").all()
    assert (pairs["o_closed"] < pairs["time"]).all() and (pairs["o_id"] < pairs["event_id"]).all()
    gap = (pairs["time"] - pairs["o_closed"]).dt.days
    assert gap.between(3, 45).all()


def test_inspections_and_linked_hits(demo):
    _, store = demo
    ins = store.sql("SELECT * FROM inspections")
    assert ins["inspection_id"].tolist() == sorted(ins["inspection_id"]) and ins["inspection_id"].is_unique
    assert ins["external_id"].str.match(r"^INSP-\d{8}-\d{5}$").all()
    assert (ins["dedup_key"] == "inspection:" + ins["external_id"]).all()
    linked = store.sql("SELECT inspection_id, count(*) AS n, min(e.time) AS first, "
                       "count(DISTINCT site_id) AS sites FROM events e WHERE inspection_id IS NOT NULL GROUP BY 1")
    m = ins.merge(linked, on="inspection_id", how="left").fillna({"n": 0})
    assert (m["problems_found"] == m["n"]).all()
    assert (m["conforming"] == (m["problems_found"] == 0)).all()
    assert 0.3 < m["conforming"].mean() < 0.8
    hit_sites = store.sql("SELECT e.site_id AS a, i.site_id AS b, e.time AS t, i.time AS it FROM events e "
                          "JOIN inspections i USING (inspection_id)")
    assert (hit_sites["a"] == hit_sites["b"]).all()
    assert ((hit_sites["t"] - hit_sites["it"]).dt.total_seconds().between(0, 3600)).all()
    loc = store.sql("SELECT count(*) AS n FROM inspections i JOIN sites s USING (site_id) "
                    "WHERE i.lng = s.lng AND i.lat = s.lat AND i.grid_code IS NOT DISTINCT FROM s.grid_code")
    assert loc["n"][0] == len(ins)
    who = ins.groupby("inspector")["problems_found"].mean()
    assert len(who) == 20 and who.max() / who.min() > 1.3
    # Higher-risk categories are visited more often per site.
    per = store.sql("SELECT s.category_code AS c, count(i.inspection_id) / count(DISTINCT s.site_id) AS v "
                    "FROM sites s LEFT JOIN inspections i USING (site_id) GROUP BY 1").set_index("c")["v"]
    assert per["16"] > 4 * per["03"] and per["38"] > 3 * per["14"]
    assert ins["time"].dt.day_of_week.lt(5).mean() > 0.9


def _tables(db):
    store = Store(db)
    return (store.sql("SELECT * FROM events ORDER BY event_id"),
            store.sql("SELECT * EXCLUDE (geom), ST_AsHEXWKB(geom) AS g FROM sites ORDER BY site_id"),
            store.sql("SELECT * EXCLUDE (geom), ST_AsHEXWKB(geom) AS g FROM grids ORDER BY code"),
            store.sql("SELECT * FROM inspections ORDER BY inspection_id"))


def test_same_seed_same_city(tmp_path):
    a, b, c = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "c.duckdb"
    build_demo(a, events=4_000, seed=3, progress=False)
    build_demo(b, events=4_000, seed=3, progress=False)
    build_demo(c, events=4_000, seed=4, progress=False)
    for x, y in zip(_tables(a), _tables(b), strict=True):
        pd.testing.assert_frame_equal(x, y)
    ev_a, _, grids_a, _ = _tables(a)
    ev_c, _, grids_c, _ = _tables(c)
    assert not ev_a[["time", "lng"]].equals(ev_c[["time", "lng"]])
    assert not grids_a["g"].equals(grids_c["g"])
    assert len(ev_a) == len(ev_c) == 4_000


def test_rebuild_replaces_and_zero_events(tmp_path):
    db = tmp_path / "d.duckdb"
    build_demo(db, events=2_000, seed=1, progress=False)
    summary = build_demo(db, events=0, seed=1, progress=False)
    store = Store(db)
    assert summary["events"] == 0 and store.sql("SELECT count(*) AS n FROM events")["n"][0] == 0
    assert store.sql("SELECT count(*) AS n FROM imports")["n"][0] == 1
    assert store.meta("demo_events") == "0"
    assert re.match(r"^\d+$", str(store.sql("SELECT count(*) AS n FROM sites")["n"][0]))


def test_problems_build_up_between_inspections(demo):
    """Within a site, a visit long after the previous one finds a problem more often than one soon after it
    (demo.lifecycle), so days since the last inspection carries signal an analyst can find (across
    sites it is masked: risky sites are visited more often)."""
    _, store = demo
    within = store.sql(
        """
        WITH g AS (SELECT site_id, (problems_found > 0)::INT AS hit,
                          date_diff('second', lag(time) OVER (PARTITION BY site_id ORDER BY time), time) / 86400.0
                          AS gap
                   FROM inspections),
        per AS (SELECT site_id, avg(hit) FILTER (WHERE gap > 28) AS late, avg(hit) FILTER (WHERE gap <= 7) AS soon,
                       count(*) FILTER (WHERE gap > 28) AS n_late, count(*) FILTER (WHERE gap <= 7) AS n_soon
                FROM g GROUP BY site_id)
        SELECT count(*) AS sites, avg(late - soon) AS diff FROM per WHERE n_late >= 3 AND n_soon >= 3
        """
    ).iloc[0]
    assert within["sites"] > 100 and within["diff"] > 0.1
