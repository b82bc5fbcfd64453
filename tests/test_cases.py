"""Case lifecycle: working-time deadlines, transitions and the audit trail, rebounds, the demo backfill."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from civicgrid.geo.errors import ConflictError, InvalidParameterError, NotFoundError
from civicgrid.geo.store import Store, writing
from civicgrid.geo.store_files import copy_store
from civicgrid.sites import cases as cs

# --- the working calendar ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calendar(tmp_path_factory) -> cs.WorkCalendar:
    """The calendar seeded from data/holidays.csv into a fresh store."""
    path = tmp_path_factory.mktemp("cal") / "empty.duckdb"
    return cs.WorkCalendar.from_store(Store(path, create=True))


def _brute_deadline(cal: cs.WorkCalendar, found: datetime, hours: float) -> datetime:
    """Walk day by day, spending the working time of each working day (an independent implementation)."""
    remaining = timedelta(hours=hours)
    cursor = found
    while True:
        day = cursor.replace(hour=0, minute=0, second=0, microsecond=0)
        if cal.is_working(np.array([np.datetime64(day.date())]))[0]:
            start = max(cursor, day + timedelta(hours=9))
            end = day + timedelta(hours=18)
            available = max(end - start, timedelta(0))
            if remaining <= available and available > timedelta(0):
                return start + remaining
            remaining -= available
        cursor = day + timedelta(days=1)


@pytest.mark.parametrize(("found", "value", "unit", "expected"), [
    # Friday afternoon, 1 working day -> Monday same time (across a weekend)
    ("2024-03-01 15:00", 1, "working_days", "2024-03-04 15:00"),
    # 除夕 2024-02-09 is a working Friday; 10-17 Feb are the Spring Festival holiday and Sunday 18 Feb is a
    # make-up working day (调休): 1 working day -> Sunday 18 Feb 10:00
    ("2024-02-09 10:00", 1, "working_days", "2024-02-18 10:00"),
    # 5 working hours from Friday 17:00 before Mid-Autumn 2024: Saturday 14 Sep is a make-up working day
    ("2024-09-13 17:00", 5, "working_hours", "2024-09-14 13:00"),
    # the same on an ordinary weekend goes to Monday
    ("2024-03-08 17:00", 5, "working_hours", "2024-03-11 13:00"),
    # found before 09:00 counts from 09:00; a full working day ends at 18:00 of that day
    ("2024-03-05 07:00", 9, "working_hours", "2024-03-05 18:00"),
    # found on a Sunday: the clock starts Monday 09:00, 1 working day ends Monday 18:00
    ("2024-03-10 10:00", 1, "working_days", "2024-03-11 18:00"),
    # found after hours: counts from the next working day's 09:00
    ("2024-03-05 20:00", 4, "working_hours", "2024-03-06 13:00"),
    # 15 working days across Qingming 2024 (4-6 Apr off, Sunday 7 Apr worked)
    ("2024-03-20 10:00", 15, "working_days", "2024-04-11 10:00"),
    # National Day 2025 (1-8 Oct off, Saturday 11 Oct worked): found Tuesday 30 Sep 16:00, 2 working days
    ("2025-09-30 16:00", 2, "working_days", "2025-10-10 16:00"),
    # New Year 2026: 1-3 Jan off, Sunday 4 Jan worked
    ("2025-12-31 23:31:14", 1, "working_days", "2026-01-04 18:00"),
])
def test_deadlines_hand_computed(calendar, found, value, unit, expected):
    hours = value * (9 if unit == "working_days" else 1)
    got = calendar.deadlines(np.array([np.datetime64(pd.Timestamp(found))], dtype="M8[s]"), [hours])[0]
    assert pd.Timestamp(got) == pd.Timestamp(expected)


def test_deadlines_equal_day_by_day_walk(calendar):
    rng = np.random.default_rng(3)
    n = 400
    start = np.datetime64("2024-01-01T00:00:00")
    found = start + rng.integers(0, 3 * 365 * 86400 - 40 * 86400, n).astype("m8[s]")
    hours = rng.choice([1, 2, 4, 5, 9, 18, 27, 45, 90, 135], n).astype(float)
    got = calendar.deadlines(found, hours)
    want = [_brute_deadline(calendar, pd.Timestamp(f).to_pydatetime(), h) for f, h in zip(found, hours, strict=True)]
    assert [pd.Timestamp(g) for g in got] == [pd.Timestamp(w) for w in want]


def test_calendar_is_the_official_one(calendar):
    days = np.array(["2024-02-04", "2024-02-12", "2025-01-26", "2025-10-08", "2025-10-11", "2026-02-14",
                     "2026-02-16", "2026-10-10", "2024-03-09"], dtype="M8[D]")
    assert calendar.is_working(days).tolist() == [True, False, True, False, True, True, False, True, False]


# --- lifecycle on a copy of the demo city --------------------------------------------------------------------


@pytest.fixture(scope="module")
def db(demo_db, tmp_path_factory):
    path = tmp_path_factory.mktemp("cases") / "demo.duckdb"
    copy_store(demo_db, path)
    return path


@pytest.fixture(scope="module")
def site(db):
    """A sample-frame site with a responsible unit, inside a grid."""
    return Store(db).sql("SELECT site_id, lng, lat, responsible_unit, grid_code, community_code, category_code "
                         "FROM sites WHERE grid_code IS NOT NULL AND responsible_unit IS NOT NULL "
                         "ORDER BY site_id LIMIT 1").iloc[0]


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_full_lifecycle_with_rework_and_audit_trail(db, site):
    case = cs.create_case(db, actor="张三", problem_type="暴露垃圾", site_id=int(site.site_id),
                          time="2024-03-01 15:00", text="门口垃圾", note="巡查发现")
    cid = case["case_id"]
    assert case["state"] == "found" and case["problem_type"] == "0101"
    assert case["deadline"] == datetime(2024, 3, 4, 15, 0)
    assert case["unit"] == site.responsible_unit and case["grid_code"] == site.grid_code
    assert case["category_code"] == site.category_code
    steps = [("register", "2024-03-01 15:10", None), ("dispatch", "2024-03-01 15:20", None),
             ("rectify", "2024-03-02 10:00", "p1.jpg"), ("rework", "2024-03-02 11:00", None),
             ("rectified", "2024-03-04 09:00", "p2.jpg"), ("close", "2024-03-04 14:00", None)]
    for to, at, photo in steps:
        case = cs.transition(db, cid, to, actor="李四", at=at, note=f"step {to}", photo=photo)
    assert case["state"] == "closed" and case["reworks"] == 1
    assert case["rectified_at"] == datetime(2024, 3, 4, 9) and case["closed_at"] == datetime(2024, 3, 4, 14)
    log = cs.case_log(Store(db), cid)
    assert log["to_state"].tolist() == ["found", "registered", "dispatched", "rectified", "dispatched",
                                        "rectified", "closed"]
    assert log["from_state"].tolist()[1:] == ["found", "registered", "dispatched", "rectified", "dispatched",
                                              "rectified"]
    assert log["actor"].tolist() == ["张三"] + ["李四"] * 6
    assert log["note"].iloc[4] == "step rework" and log["photo"].iloc[5] == "p2.jpg"
    ev = Store(db).sql("SELECT status, closed_at, rectified_at, reopened, deadline FROM events WHERE event_id = ?",
                       [cid]).iloc[0]
    assert ev.status == "closed" and ev.reopened == 1 and ev.closed_at == pd.Timestamp("2024-03-04 14:00")
    assert ev.deadline == pd.Timestamp("2024-03-04 15:00")


def test_dispatch_to_the_community_office_and_override(db):
    store = Store(db)
    g = store.sql("SELECT g.code, a.name, ST_X(ST_Centroid(g.geom)) AS x, ST_Y(ST_Centroid(g.geom)) AS y "
                  "FROM grids g JOIN areas a ON a.code = g.community_code "
                  "WHERE ST_Contains(g.geom, ST_Centroid(g.geom)) ORDER BY g.code LIMIT 1").iloc[0]
    case = cs.create_case(db, actor="a", problem_type="0201", lng=g.x, lat=g.y, time="2024-05-06 10:00",
                          source="complaint", dispatch=True)
    assert case["grid_code"] == g.code and case["state"] == "dispatched"
    assert case["unit"] == g["name"] + "居委会"
    other = cs.create_case(db, actor="a", problem_type="0201", lng=g.x, lat=g.y, time="2024-05-06 10:05",
                           dispatch=True, unit="区城管执法大队")
    assert other["unit"] == "区城管执法大队" and other["unit_code"] is None
    assert other["log"][-1]["unit"] == "区城管执法大队"


def test_every_illegal_transition_is_refused_and_changes_nothing(db, site):
    targets = [s for s in cs.STATES if s != "found"]
    path = ["register", "dispatch", "rectify", "close"]
    for depth, state in enumerate(cs.STATES):
        case = cs.create_case(db, actor="a", problem_type="0101", site_id=int(site.site_id), time="2024-06-03 10:00")
        cid = case["case_id"]
        for step in path[:depth]:
            cs.transition(db, cid, step, actor="a", at="2024-06-03 11:00")
        assert cs.get_case(Store(db), cid)["state"] == state
        illegal = [t for t in targets if t not in cs.NEXT_STATES[state]]
        illegal += [a for a, (src, _) in cs.ACTIONS.items() if src != state]
        assert illegal
        for to in illegal:
            before = _digest(db)
            with pytest.raises(ConflictError):
                cs.transition(db, cid, to, actor="a", at="2024-06-03 12:00")
            assert _digest(db) == before, (state, to)
    with pytest.raises(ConflictError, match="closed"):
        cs.transition(db, cid, "rectify", actor="a")


def test_bad_requests_change_nothing(db, site):
    case = cs.create_case(db, actor="a", problem_type="0101", site_id=int(site.site_id), time="2024-06-04 10:00")
    cid = case["case_id"]
    before = _digest(db)
    ids = Store(db).sql("SELECT min(case_id) AS lo, max(case_id) AS hi FROM cases").iloc[0]
    with pytest.raises(NotFoundError, match=rf"no case {10**12}; case ids run {ids.lo}\.\.{ids.hi} "):
        cs.transition(db, 10**12, "register", actor="a")
    with pytest.raises(InvalidParameterError, match="register"):
        cs.transition(db, cid, "registr", actor="a")
    with pytest.raises(InvalidParameterError, match="before"):
        cs.transition(db, cid, "register", actor="a", at="2024-06-01 10:00")
    with pytest.raises(InvalidParameterError, match="actor"):
        cs.transition(db, cid, "register", actor=" ")
    with pytest.raises(NotFoundError, match="problem type"):
        cs.create_case(db, actor="a", problem_type="不存在的问题", site_id=int(site.site_id))
    with pytest.raises(ConflictError, match="already has case"):
        cs.create_case(db, actor="a", event_id=cid)
    assert _digest(db) == before


def test_rebounds_same_site_nearby_and_window(db, site):
    """Same type at the same site / within R metres within N days after a closure -> linked; else not."""
    x, y = float(site.lng), float(site.lat)
    m_lat = 1 / 111_195.0  # degrees per metre north

    def closed_case(t, **kw):
        c = cs.create_case(db, actor="a", problem_type="0402", time=t, **kw)
        for step, at in (("register", t), ("dispatch", t), ("rectify", t), ("close", t)):
            cs.transition(db, c["case_id"], step, actor="a", at=at)
        return c["case_id"]

    first = closed_case("2023-06-01 10:00", site_id=int(site.site_id))
    same_site = cs.create_case(db, actor="a", problem_type="0402", site_id=int(site.site_id), time="2023-06-20 10:00")
    assert same_site["rebound_of"] == first
    other_type = cs.create_case(db, actor="a", problem_type="0403", site_id=int(site.site_id), time="2023-06-20 11:00")
    assert other_type["rebound_of"] is None

    base = closed_case("2023-08-01 10:00", lng=x + 0.01, lat=y)
    near = cs.create_case(db, actor="a", problem_type="0402", lng=x + 0.01, lat=y + 30 * m_lat,
                          time="2023-08-10 10:00")
    assert near["rebound_of"] == base
    far = cs.create_case(db, actor="a", problem_type="0402", lng=x + 0.01, lat=y + 80 * m_lat,
                         time="2023-08-10 10:00")
    assert far["rebound_of"] is None
    late = cs.create_case(db, actor="a", problem_type="0402", lng=x + 0.01, lat=y, time="2023-09-05 10:00")
    assert late["rebound_of"] is None  # 35 days after the closure
    ev = Store(db).sql("SELECT rebound_of FROM events WHERE event_id = ?", [near["case_id"]]).iloc[0, 0]
    assert ev == base


def test_link_rebounds_vectorized_equals_brute_force(demo_db, tmp_path):
    path = tmp_path / "demo.duckdb"
    copy_store(demo_db, path)
    types = ["0201", "0203", "0301"]
    with writing(path) as con:
        con.execute("UPDATE cases SET rebound_of = NULL")
        ids = con.execute("SELECT case_id FROM cases WHERE problem_type IN (SELECT unnest(?))", [types]).df()
        n = cs.link_rebounds(con, case_ids=ids["case_id"].tolist(), radius_m=120, days=20)
    store = Store(path)
    c = store.sql("SELECT c.case_id, c.problem_type, c.site_id, c.state, c.found_at, c.closed_at, e.lng, e.lat "
                  "FROM cases c JOIN events e ON e.event_id = c.event_id WHERE c.problem_type IN (SELECT unnest(?))",
                  [types])
    want = {}
    for _, grp in c.groupby("problem_type"):
        new = grp
        old = grp[(grp["state"] == "closed") & grp["closed_at"].notna()]
        p = new.merge(old, how="cross", suffixes=("", "_o"))
        lat1, lat2 = np.radians(p["lat"]), np.radians(p["lat_o"])
        dlng = np.radians(p["lng_o"] - p["lng"])
        a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin(dlng / 2) ** 2
        dist = 2 * 6371008.8 * np.arcsin(np.sqrt(a))
        same_site = p["site_id"].notna() & (p["site_id"] == p["site_id_o"])
        ok = ((dist <= 120) | same_site) & (p["closed_at_o"] < p["found_at"]) & (
            p["closed_at_o"] >= p["found_at"] - pd.Timedelta(days=20)) & (p["case_id"] != p["case_id_o"])
        best = p[ok].sort_values(["closed_at_o", "case_id_o"]).groupby("case_id").tail(1)
        want.update(dict(zip(best["case_id"], best["case_id_o"], strict=True)))
    got = store.sql("SELECT case_id, rebound_of FROM cases WHERE rebound_of IS NOT NULL")
    assert n == len(want) > 50
    assert dict(zip(got["case_id"], got["rebound_of"], strict=True)) == want


# --- the demo's backfilled cases --------------------------------------------------------------------------------


def test_demo_backfill_matches_events(demo_db):
    store = Store(demo_db)
    j = store.sql("""
        SELECT e.event_id, e.status, e.closed_at AS e_closed, e.rectified_at AS e_rect, e.reopened, e.deadline AS e_dl,
               e.rebound_of AS e_reb, c.case_id, c.state, c.closed_at, c.rectified_at, c.reworks, c.deadline,
               c.rebound_of
        FROM events e LEFT JOIN cases c ON c.event_id = e.event_id
    """)
    assert j["case_id"].notna().all() and (j["case_id"] == j["event_id"]).all()
    assert store.sql("SELECT count(*) = count(DISTINCT case_id) AS ok FROM cases")["ok"].iloc[0]
    assert ((j["state"] == "closed") == (j["status"] == "closed")).all()
    assert (j["closed_at"].fillna(pd.Timestamp(0)) == j["e_closed"].fillna(pd.Timestamp(0))).all()
    assert (j["reworks"] == j["reopened"]).all() and (j["deadline"] == j["e_dl"]).all()
    assert (j["rebound_of"].fillna(-1) == j["e_reb"].fillna(-1)).all()
    assert set(j["state"]) <= {"dispatched", "rectified", "closed"}
    log = store.sql("SELECT * FROM case_log ORDER BY case_id, log_id")
    last = log.groupby("case_id").tail(1).set_index("case_id")["to_state"]
    assert (last.reindex(j["case_id"]).to_numpy() == j["state"].to_numpy()).all()
    assert (log.groupby("case_id")["changed_at"].diff().dropna() >= pd.Timedelta(0)).all()
    # each step starts from the state the previous one reached, and only legal moves appear
    prev = log.groupby("case_id")["to_state"].shift()
    assert (prev.isna() == log["from_state"].isna()).all()
    assert (prev.dropna() == log.loc[prev.notna(), "from_state"]).all()
    moves = set(zip(log["from_state"].dropna(), log.loc[log["from_state"].notna(), "to_state"], strict=True))
    assert moves <= {v for v in cs.ACTIONS.values()}
    reworks = log[(log["from_state"] == "rectified") & (log["to_state"] == "dispatched")].groupby("case_id").size()
    assert (reworks.reindex(j["case_id"], fill_value=0).to_numpy() == j["reworks"].to_numpy()).all()
    assert j["reworks"].sum() > 100


def test_holiday_and_setting_changes(db):
    cs.set_holidays(db, [{"date": "2027-01-01", "kind": "holiday", "name": "元旦"},
                         {"date": "2027-01-02", "kind": "holiday", "name": "元旦"}])
    h = cs.holidays(Store(db))
    assert (h["date"].astype(str) == "2027-01-01").any() and (h["date"].astype(str).str[:4] == "2026").any()
    with pytest.raises(InvalidParameterError, match="kind"):
        cs.set_holidays(db, [{"date": "2027-05-01", "kind": "vacation"}])
    with pytest.raises(InvalidParameterError, match="row 2"):
        cs.set_holidays(db, [{"date": "2027-05-01", "kind": "holiday"}, {"date": "May 1st", "kind": "holiday"}])
    assert cs.set_setting(db, "rebound_radius_m", 80)["rebound_radius_m"] == 80
    with pytest.raises(NotFoundError, match="rebound_days"):
        cs.set_setting(db, "rebound_day", 5)
    with pytest.raises(InvalidParameterError):
        cs.set_setting(db, "rebound_days", -1)
    cs.set_setting(db, "rebound_radius_m", 50)


def _synthetic_cases(rng, n: int, *, radius: float, days: float) -> pd.DataFrame:
    """Cases built to hit every edge of the rebound rule: shared points (distance 0), points at ``radius`` ± 1 cm
    north or east of a centre, missing coordinates, one site far from another, hour-rounded times (ties in
    closure time), found exactly ``days`` after a closure (in) or 1 s later (out) or at the closure (out),
    closed before its own finding (itself excluded), closures in other states, links already set, and a crowd
    of closures just beyond the radius (long walks back to a qualifying one)."""
    deg_m = 180 / (np.pi * 6371008.8)  # degrees of latitude per metre on the sphere
    lat0, lng0 = 28.2, 112.95
    centres = np.column_stack([lat0 + rng.uniform(0, 1500, 80) * deg_m, lng0 + rng.uniform(0, 1500, 80) * deg_m])
    c = centres[rng.integers(0, len(centres), n)]
    kind = rng.choice(5, n, p=[0.4, 0.2, 0.15, 0.15, 0.1])
    edge = radius + rng.choice([-0.01, 0.01], n)
    lat = np.where(kind == 0, c[:, 0] + rng.normal(0, 40, n) * deg_m, c[:, 0])
    lng = np.where(kind == 0, c[:, 1] + rng.normal(0, 40, n) * deg_m / np.cos(np.radians(lat0)), c[:, 1])
    lat = np.where(kind == 2, lat + edge * deg_m, lat)
    lng = np.where(kind == 3, lng + edge * deg_m / np.cos(np.radians(lat)), lng)
    lat, lng = np.where(kind == 4, np.nan, lat), np.where(kind == 4, np.nan, lng)
    # a crowd just beyond the radius north-east of one spot, and cases at the spot: long walks back
    crowd, spot = rng.random(n) < 0.12, rng.random(n) < 0.004
    d, a = rng.uniform(1.02, 1.2, n) * radius, np.radians(rng.uniform(40, 50, n))
    lat = np.where(crowd, lat0 + d * np.cos(a) * deg_m, np.where(spot, lat0, lat))
    lng = np.where(crowd, lng0 + d * np.sin(a) * deg_m / np.cos(np.radians(lat0)), np.where(spot, lng0, lng))
    hour, day = np.timedelta64(3600, "s"), np.timedelta64(86400, "s")
    found = np.datetime64("2024-01-01T08:00:00") + rng.integers(0, 200, n) * day  # whole days: many ties
    closed = found + rng.integers(0, 10, n) * day
    state = rng.choice(["closed", "rectified", "dispatched"], n, p=[0.75, 0.1, 0.15])
    closed = np.where(state == "dispatched", np.datetime64("NaT"), closed)
    closed[rng.random(n) < 0.03] = np.datetime64("NaT")  # closed without a closure time: never an earlier case
    before = rng.random(n) < 0.03
    closed[before] = found[before] - hour  # closed before it was found: must not be its own rebound
    window = np.timedelta64(round(days * 86400), "s")
    shift = rng.random(n) < 0.3  # found exactly at a closure + window (in), + window + 1 s (out), at it (out)
    src = rng.integers(0, n, n)
    gap = rng.choice([window, window + np.timedelta64(1, "s"), np.timedelta64(0, "s"), window // 2], n)
    ok = shift & ~np.isnat(closed[src])
    found[ok] = closed[src][ok] + gap[ok]
    ptype = rng.choice(np.array(["0101", "0201", "0402", None], dtype=object), n, p=[0.45, 0.35, 0.18, 0.02])
    ptype[ok] = np.asarray(ptype[src][ok])  # the shifted ones meet their source's type
    ptype[crowd | spot] = "0101"
    site = np.where((rng.random(n) < 0.3) & ~crowd & ~spot, rng.integers(1, 12, n), -1)
    same = ok & (rng.random(n) < 0.5)
    site[same] = site[src][same]
    same = ok & (rng.random(n) < 0.5)
    lat[same], lng[same] = lat[src][same], lng[src][same]
    linked = np.where(rng.random(n) < 0.05, rng.integers(1, n + 1, n), -1)
    return pd.DataFrame({
        "case_id": np.arange(1, n + 1), "problem_type": ptype, "site_id": pd.array(np.where(site > 0, site, 0),
                                                                                     dtype="Int64"),
        "state": state, "found_at": found, "closed_at": closed, "lat": lat, "lng": lng,
        "rebound_of": pd.array(linked, dtype="Int64"),
    }).assign(site_id=lambda d: d["site_id"].mask(site < 0), rebound_of=lambda d: d["rebound_of"].mask(linked < 0))


def _brute_rebounds(c: pd.DataFrame, subset: set, *, radius: float, days: float) -> tuple[dict, dict]:
    """Every pair checked directly (an independent implementation of the README rule); with edge counts."""
    old = c[(c["state"] == "closed") & c["closed_at"].notna() & c["problem_type"].notna()]
    o_lat, o_lng = np.radians(old["lat"].to_numpy()), np.radians(old["lng"].to_numpy())
    o_site = old["site_id"].to_numpy(dtype="float64", na_value=np.nan)
    o_closed, o_id = old["closed_at"].to_numpy("M8[us]"), old["case_id"].to_numpy()
    o_type = old["problem_type"].to_numpy(object)
    window = np.timedelta64(round(days * 86400e6), "us")
    want, edges = {}, dict.fromkeys(["tie", "window_start", "at_radius", "site_only", "self_skipped",
                                    "closed_when_found", "window_plus_1s"], 0)
    for row in c.itertuples():
        if row.case_id not in subset or pd.notna(row.rebound_of) or row.problem_type is None:
            continue
        f = np.datetime64(row.found_at, "us")
        lat1, lng1 = np.radians(row.lat), np.radians(row.lng)
        a = np.sin((o_lat - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(o_lat) * np.sin((o_lng - lng1) / 2) ** 2
        dist = 2 * 6371008.8 * np.arcsin(np.sqrt(a))  # nan for missing points: never within the radius
        same_site = ~np.isnan(o_site) & (o_site == (np.nan if pd.isna(row.site_id) else row.site_id))
        place = (o_type == row.problem_type) & ((dist <= radius) | same_site)
        ok = place & (o_closed < f) & (o_closed >= f - window)
        edges["self_skipped"] += int(ok[o_id == row.case_id].any())
        ok &= o_id != row.case_id
        edges["closed_when_found"] += int((place & (o_closed == f)).any())  # excluded: not before
        edges["window_plus_1s"] += int((place & (o_closed == f - window - np.timedelta64(1, "s"))).any())
        if not ok.any():
            continue
        k = np.flatnonzero(ok)
        k = k[np.lexsort((o_id[k], o_closed[k]))]
        best = k[-1]
        want[row.case_id] = int(o_id[best])
        edges["tie"] += int((o_closed[k] == o_closed[best]).sum() > 1)
        edges["window_start"] += int(o_closed[best] == f - window)
        edges["at_radius"] += int(radius - 0.02 < dist[best] <= radius)
        edges["site_only"] += int(dist[best] > radius or np.isnan(dist[best]))
    return want, edges


@pytest.mark.parametrize(("radius", "days", "batch_rows", "direct"),
                         [(50.0, 30.0, None, False), (80.0, 7.5, 700, False), (50.0, 30.0, None, True)])
def test_link_rebounds_equals_brute_force_on_edge_cases(tmp_path, monkeypatch, radius, days, batch_rows, direct):
    """A few thousand synthetic cases with ties and boundary distances and days; batches of whole types; and the
    direct search used for a few cases (a case a user opens), here forced for all of them."""
    if batch_rows:
        monkeypatch.setattr("civicgrid.sites.cases.rebounds.REBOUND_BATCH_ROWS", batch_rows)
    monkeypatch.setattr("civicgrid.sites.cases.rebounds.FEW_CASES", 10**9 if direct else 0)
    rng = np.random.default_rng(int(radius))
    c = _synthetic_cases(rng, 4000, radius=radius, days=days)
    subset = set(c["case_id"].sample(frac=0.85, random_state=1))
    want, edges = _brute_rebounds(c, subset, radius=radius, days=days)
    assert len(want) > 800 and all(v > 15 for v in edges.values()), edges
    path = tmp_path / "synthetic.duckdb"
    with writing(path) as con:
        con.register("_c", c)
        con.execute("INSERT INTO events (event_id, source, problem_type, time, site_id, lng, lat) "
                    "SELECT case_id, 'inspection', problem_type, found_at, site_id, lng, lat FROM _c")
        con.execute("INSERT INTO cases (case_id, event_id, problem_type, site_id, state, found_at, closed_at, "
                    "rebound_of) SELECT case_id, case_id, problem_type, site_id, state, found_at, closed_at, "
                    "rebound_of FROM _c")
        con.unregister("_c")
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        n = cs.link_rebounds(con, case_ids=np.array(sorted(subset)), radius_m=radius, days=days)
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == limit  # capped, then restored
    got = Store(path).sql("SELECT c.case_id, c.rebound_of, e.rebound_of AS event_rebound_of FROM cases c "
                          "JOIN events e ON e.event_id = c.event_id ORDER BY case_id")
    kept = c.dropna(subset=["rebound_of"]).set_index("case_id")["rebound_of"].astype(int).to_dict()
    assert n == len(want)
    assert {k: v for k, v in zip(got["case_id"], got["rebound_of"], strict=True) if pd.notna(v)} == {**kept, **want}
    linked = got[got["case_id"].isin(list(want))]
    assert (linked["event_rebound_of"] == linked["rebound_of"]).all()
