"""KPIs and flags: a hand-computed small case, and the demo city against an independent pandas computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store, writing
from civicgrid.geo.store_files import copy_store
from civicgrid.sites import cases as cs
from civicgrid.sites.kpis import COLUMNS, kpi_table, kpi_totals, site_flags


@pytest.fixture(scope="module")
def small(demo_db, tmp_path_factory):
    """The demo city with its cases removed and six hand-made cases at one site (period: March 2024).

    | case | type (deadline)     | found            | deadline         | history                             |
    |------|---------------------|------------------|------------------|-------------------------------------|
    | A    | 0101 (1 day)        | Fri 03-01 15:00  | Mon 03-04 15:00  | rectified 03-04 10:00, closed 14:00 |
    | B    | 0102 (2 days)       | Tue 03-05 09:30  | Thu 03-07 09:30  | rectified 03-06 09:00, rework 11:00, |
    |      |                     |                  |                  | rectified 03-07 10:00, closed 12:00 |
    | C    | 0209 (15 days)      | Wed 03-20 10:00  | Thu 04-11 10:00  | dispatched (Qingming off, 04-07 on) |
    | D    | 0103 (5 hours)      | Thu 03-28 11:00  | Thu 03-28 16:00  | dispatched, never rectified         |
    | E    | 0104 (4 hours)      | Thu 02-29 16:00  | Fri 03-01 11:00  | rectified 03-01 10:00, closed 10:30 |
    | F    | 0101 (1 day)        | Sun 03-10 10:00  | Mon 03-11 18:00  | rebound of A; closed 03-11 17:00    |
    """
    path = tmp_path_factory.mktemp("kpi") / "small.duckdb"
    copy_store(demo_db, path)
    with writing(path) as con:
        con.execute("DELETE FROM case_log")
        con.execute("DELETE FROM cases")
    site = Store(path).sql("SELECT site_id, grid_code, street_code, district_code, community_code, category_code "
                           "FROM sites WHERE grid_code IS NOT NULL ORDER BY site_id LIMIT 1").iloc[0]
    plan = {
        "A": ("0101", "2024-03-01 15:00", [("register", "03-01 15:00"), ("dispatch", "03-01 15:00"),
                                           ("rectify", "03-04 10:00"), ("close", "03-04 14:00")]),
        "B": ("0102", "2024-03-05 09:30", [("register", "03-05 09:30"), ("dispatch", "03-05 09:30"),
                                           ("rectify", "03-06 09:00"), ("rework", "03-06 11:00"),
                                           ("rectify", "03-07 10:00"), ("close", "03-07 12:00")]),
        "C": ("0209", "2024-03-20 10:00", [("register", "03-20 10:00"), ("dispatch", "03-20 10:00")]),
        "D": ("0103", "2024-03-28 11:00", [("register", "03-28 11:00"), ("dispatch", "03-28 11:00")]),
        "E": ("0104", "2024-02-29 16:00", [("register", "02-29 16:00"), ("dispatch", "02-29 16:00"),
                                           ("rectify", "03-01 10:00"), ("close", "03-01 10:30")]),
        "F": ("0101", "2024-03-10 10:00", [("register", "03-10 10:00"), ("dispatch", "03-10 10:00"),
                                           ("rectify", "03-11 10:00"), ("close", "03-11 17:00")]),
    }
    ids = {}
    for key in ("E", "A", "B", "F", "C", "D"):
        ptype, found, steps = plan[key]
        ids[key] = cs.create_case(path, actor="t", problem_type=ptype, site_id=int(site.site_id), time=found)["case_id"]
        for to, at in steps:
            cs.transition(path, ids[key], to, actor="t", at=f"2024-{at}")
    return path, site, ids


def test_small_case_deadlines_and_rebound(small):
    path, _, ids = small
    c = Store(path).sql("SELECT case_id, deadline, rebound_of FROM cases").set_index("case_id")
    want = {"A": "2024-03-04 15:00", "B": "2024-03-07 09:30", "C": "2024-04-11 10:00", "D": "2024-03-28 16:00",
            "E": "2024-03-01 11:00", "F": "2024-03-11 18:00"}
    for key, dl in want.items():
        assert c.loc[ids[key], "deadline"] == pd.Timestamp(dl), key
    assert c.loc[ids["F"], "rebound_of"] == ids["A"]
    assert c["rebound_of"].notna().sum() == 1


@pytest.mark.parametrize("level", ["grid", "community", "street", "district", "category"])
def test_small_case_kpis_hand_computed(small, level):
    path, site, _ = small
    df = kpi_table(Store(path), start="2024-03-01", end="2024-04-01", level=level, as_of="2024-04-01")
    assert list(df.columns) == COLUMNS
    code = site[{"grid": "grid_code", "community": "community_code", "street": "street_code",
                 "district": "district_code", "category": "category_code"}[level]]
    row = df.set_index("code").loc[code]
    want = {"found": 5, "rectified": 3, "rectification_rate": 0.6, "due": 5, "closed": 4, "closed_on_time": 3,
            "closure_rate": 0.8, "on_time_closure_rate": 0.6, "reworked": 1, "rework_rate": 1 / 3, "rebounds": 1,
            "rebound_rate": 0.2, "mean_hours_to_rectify": (67 + 48.5 + 24) / 3, "median_hours_to_rectify": 48.5,
            "open": 2, "overdue": 1, "no_deadline": 0}
    for key, value in want.items():
        assert row[key] == pytest.approx(value), key
    others = df[df["code"] != code]
    assert (others["found"] == 0).all() and (others["due"] == 0).all() and others["rectification_rate"].isna().all()


def test_small_case_as_of_replays_the_audit_trail(small):
    """At 2024-03-06 12:00 case B had been sent back (rework) and was not rectified."""
    path, site, _ = small
    row = kpi_table(Store(path), start="2024-03-01", end="2024-04-01", level="grid",
                    as_of="2024-03-06 12:00").set_index("code").loc[site.grid_code]
    assert (row.found, row.rectified, row.due, row.closed, row.closed_on_time) == (2, 1, 2, 2, 2)
    assert (row.reworked, row.open, row.overdue, row.rebounds) == (0, 1, 0, 0)
    assert row.mean_hours_to_rectify == pytest.approx(67)
    # by 03-07 10:00 B is past its deadline (09:30) and open: overdue
    row = kpi_table(Store(path), start="2024-03-01", end="2024-04-01", level="grid",
                    as_of="2024-03-07 10:00").set_index("code").loc[site.grid_code]
    assert (row.open, row.overdue, row.due, row.closed) == (1, 1, 3, 2)


def test_totals_and_errors(small):
    path, _, _ = small
    store = Store(path)
    tot = kpi_totals(store, start="2024-03-01", end="2024-04-01", level="street", as_of="2024-04-01")
    assert (tot["found"], tot["due"], tot["closed_on_time"]) == (5, 5, 3)
    assert tot["on_time_closure_rate"] == pytest.approx(0.6) and tot["name"] == "全市"
    with pytest.raises(InvalidParameterError, match="level"):
        kpi_table(store, start="2024-03-01", end="2024-04-01", level="town")
    with pytest.raises(InvalidParameterError, match="after start"):
        kpi_table(store, start="2024-04-01", end="2024-03-01")


# --- the demo city against an independent pandas computation ----------------------------------------------


def _pandas_kpis(store: Store, t0, t1, asof, col: str) -> pd.DataFrame:
    c = store.sql(f"SELECT case_id, {col} AS unit, found_at, deadline, rebound_of FROM cases")
    log = store.sql("SELECT case_id, log_id, changed_at, from_state, to_state FROM case_log")
    log = log[log["changed_at"] <= asof].sort_values("log_id")
    g = log.groupby("case_id")
    state = g["to_state"].last()
    rect_at = log[log["to_state"] == "rectified"].groupby("case_id")["changed_at"].max()
    closed_at = log[log["to_state"] == "closed"].groupby("case_id")["changed_at"].max()
    reworks = log[(log["from_state"] == "rectified") & (log["to_state"] == "dispatched")].groupby("case_id").size()
    c["state"] = c["case_id"].map(state)
    c["rect_at"] = c["case_id"].map(rect_at)
    c["closed_at"] = c["case_id"].map(closed_at)
    c["reworks"] = c["case_id"].map(reworks).fillna(0)
    c = c[c["unit"].notna()]
    f = (c["found_at"] >= t0) & (c["found_at"] < t1) & (c["found_at"] <= asof)
    d = (c["deadline"] >= t0) & (c["deadline"] < t1) & (c["deadline"] <= asof)
    rect = c["state"].isin(["rectified", "closed"])
    closed = c["state"] == "closed"
    hours = (c["rect_at"] - c["found_at"]).dt.total_seconds() / 3600
    rows = []
    for unit, grp in c.groupby("unit"):
        i = grp.index
        fr = f[i] & rect[i]
        rows.append({
            "code": unit, "found": int(f[i].sum()), "rectified": int(fr.sum()), "due": int(d[i].sum()),
            "closed": int((d[i] & closed[i]).sum()),
            "closed_on_time": int((d[i] & closed[i] & (grp["closed_at"] <= grp["deadline"])).sum()),
            "reworked": int((fr & (grp["reworks"] > 0)).sum()),
            "rebounds": int((f[i] & grp["rebound_of"].notna()).sum()),
            "mean_hours_to_rectify": hours[i][fr].mean() if fr.any() else np.nan,
            "median_hours_to_rectify": hours[i][fr].median() if fr.any() else np.nan,
            "open": int((f[i] & ~closed[i]).sum()),
            "overdue": int((f[i] & ~closed[i] & (grp["deadline"] < asof)).sum()),
            "no_deadline": int((f[i] & grp["deadline"].isna()).sum()),
        })
    return pd.DataFrame(rows).set_index("code")


@pytest.mark.parametrize(("level", "col", "start", "end", "as_of"), [
    ("street", "street_code", "2025-03-01", "2025-04-01", None),
    ("grid", "grid_code", "2024-10-01", "2024-11-01", "2024-10-20 12:00"),
    ("category", "category_code", "2024-01-01", "2026-01-01", "2025-12-31 12:00"),
])
def test_demo_kpis_equal_pandas(demo_db, level, col, start, end, as_of):
    store = Store(demo_db)
    got = kpi_table(store, start=start, end=end, level=level, as_of=as_of).set_index("code")
    t0, t1 = pd.Timestamp(start), pd.Timestamp(end)
    asof = pd.Timestamp(as_of) if as_of else t1
    want = _pandas_kpis(store, t0, t1, asof, col)
    assert got["found"].sum() > 100
    counts = ["found", "rectified", "due", "closed", "closed_on_time", "reworked", "rebounds", "open", "overdue",
              "no_deadline"]
    both = got.loc[got.index.intersection(want.index)]
    assert (got.drop(want.index, errors="ignore")[counts] == 0).all().all()
    pd.testing.assert_frame_equal(both[counts].astype("int64"), want.loc[both.index, counts].astype("int64"))
    for h in ("mean_hours_to_rectify", "median_hours_to_rectify"):
        np.testing.assert_allclose(both[h].to_numpy(float), want.loc[both.index, h].to_numpy(float), rtol=1e-9)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_allclose(got["on_time_closure_rate"], got["closed_on_time"] / got["due"].replace(0, np.nan))
        np.testing.assert_allclose(got["rework_rate"], got["reworked"] / got["rectified"].replace(0, np.nan))
    tot = kpi_totals(store, start=start, end=end, level=level, as_of=as_of)
    for k in counts:
        assert tot[k] == got[k].sum(), k


def test_demo_flags_follow_the_rule(demo_db):
    store = Store(demo_db)
    asof = pd.Timestamp("2025-12-01")
    fl = site_flags(store, as_of=asof, window_days=90).set_index("site_id")
    assert len(fl) == store.sql("SELECT count(*) AS n FROM sites WHERE active")["n"].iloc[0]
    assert set(fl["flag"]) == {"red", "white", "none"}
    # independent: overdue per site from the cases and log in pandas
    c = store.sql("SELECT case_id, site_id, found_at, deadline FROM cases WHERE site_id IS NOT NULL")
    log = store.sql("SELECT case_id, log_id, changed_at, to_state FROM case_log")
    state = log[log["changed_at"] <= asof].sort_values("log_id").groupby("case_id")["to_state"].last()
    c["state"] = c["case_id"].map(state)
    od = c[c["state"].notna() & (c["state"] != "closed") & (c["deadline"] < asof)].groupby("site_id").size()
    assert (fl["overdue"] == od.reindex(fl.index, fill_value=0)).all()
    w0 = asof - pd.Timedelta(days=90)
    ins = store.sql("SELECT site_id, count(*) AS n FROM inspections WHERE time > ? AND time <= ? GROUP BY 1",
                    [w0.to_pydatetime(), asof.to_pydatetime()]).set_index("site_id")["n"]
    assert (fl["inspections"] == ins.reindex(fl.index, fill_value=0)).all()
    white = (fl["overdue"] >= 1) | (fl["rebounds"] >= 2) | ((fl["due"] >= 3) & (fl["on_time_rate"] < 0.6))
    red = ~white & (fl["inspections"] >= 2) & (fl["rebounds"] == 0) & (
        (fl["due"] == 0) | (fl["on_time_rate"] >= 0.9))
    assert ((fl["flag"] == "white") == white).all() and ((fl["flag"] == "red") == red).all()
    assert (fl.loc[fl["flag"] == "white", "flag_label"] == "白旗").all()
    assert fl.loc[fl["flag"] == "white", "reason"].str.len().gt(0).all()
