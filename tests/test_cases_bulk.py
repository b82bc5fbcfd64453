"""The cases of events imported without one (``sites.cases.bulk``: ``backfill``, and an import's own cases, which
``tests/test_import_cases.py`` compares with it) against the rule written plainly, one event at a time
(``conftest.reference_state``, ``reference_unit``, ``reference_log``), on messy stored events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from civicgrid.geo.store import Store, writing
from civicgrid.sites import cases as cs
from civicgrid.sites.cases import bulk

from conftest import reference_log, reference_state, reference_unit

#: Sites (id, category, responsible unit): a unit to trim, blank, none, with an inner tab, trimmed already.
SITES = [(1, "16", " 园林局  "), (2, "05", "   "), (3, "11", None), (4, "24", "城管\t中队"), (5, "14", "教育局")]


def _messy_events(rng, n: int, types: list[str]) -> pd.DataFrame:
    """``n`` stored events as other writers may leave them: statuses closed, open, missing or other words;
    rectification and closure times in any combination and order; rework rounds missing, negative or several;
    deadlines kept or missing (some before the time found); types known (with hours), unknown or missing;
    sites known, unknown or none; area codes known, unknown or missing at each level; times with microseconds;
    some already linked as rebounds."""
    us = pd.to_timedelta(1, unit="us")
    t = pd.Series(pd.Timestamp("2024-03-01") + pd.to_timedelta(rng.integers(0, 30 * 86400 * 10**6, n), unit="us"))
    t = t.where(rng.random(n) < 0.5, t.dt.floor("s"))

    def maybe(values, p):
        return pd.Series(values).where(rng.random(n) < p, None).astype(object)

    return pd.DataFrame({
        "event_id": np.sort(rng.choice(np.arange(10, 10 * n), n, replace=False)),
        "source": rng.choice(["complaint", "inspection"], n),
        "problem_type": rng.choice([*types, "9999", None], n),
        "time": t,
        "status": rng.choice(["closed", "open", None, "Closed", "已办结"], n),
        "site_id": rng.choice([None, None, 1, 2, 3, 4, 5, 99], n),
        "grid_code": rng.choice(["430102001001001", None], n),
        "community_code": rng.choice(["430102001001", None, "nowhere"], n),
        "street_code": rng.choice(["430102001", "430102002", None, "x"], n),
        "district_code": rng.choice(["430102", None, "y"], n),
        "deadline": maybe(t + rng.integers(-86400, 9 * 86400, n) * 10**6 * us, 0.3),
        "rectified_at": maybe(t + rng.integers(0, 6 * 86400 * 10**6, n) * us, 0.4),
        "closed_at": maybe(t + rng.integers(0, 8 * 86400 * 10**6, n) * us, 0.3),
        "reopened": rng.choice([None, -2, 0, 0, 1, 2, 5], n),
        "rebound_of": maybe(rng.integers(1, 5, n), 0.1),
    })


def _expected(con, events: pd.DataFrame, *, actor: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cases and audit rows (numbered from 1 in case order) of ``events``, one event at a time."""
    sites = {s: (c, u) for s, c, u in con.execute("SELECT site_id, category_code, responsible_unit FROM sites"
                                                 ).fetchall()}
    areas: dict = {"community": {}, "street": {}, "district": {}}
    for level, code, name in con.execute("SELECT level, code, name FROM areas").fetchall():
        areas[level][code] = name
    cases, logs = [], []
    for e in events.to_dict("records"):
        e = {k: (None if v is None or v is pd.NaT or (isinstance(v, float) and np.isnan(v)) else v)
             for k, v in e.items()}
        deadline = e["deadline"]
        if deadline is None:  # the working clock's deadline (tests/test_cases.py checks the calendar itself)
            d = cs.compute_deadlines(con, np.array([np.datetime64(e["time"], "s")]), [e["problem_type"]])[0]
            deadline = None if np.isnat(d) else pd.Timestamp(d)
        category, unit, unit_code = reference_unit(sites, areas, e["site_id"], e["community_code"],
                                                   e["street_code"], e["district_code"])
        case = {"case_id": e["event_id"], "event_id": e["event_id"], "source": e["source"],
                "problem_type": e["problem_type"], "site_id": e["site_id"], "category_code": category,
                "grid_code": e["grid_code"], "community_code": e["community_code"], "street_code": e["street_code"],
                "district_code": e["district_code"], "found_at": e["time"], "deadline": deadline, "unit": unit,
                "unit_code": unit_code, "dispatched_at": e["time"], **reference_state(e),
                "rebound_of": e["rebound_of"], "photo": None}
        logs += reference_log(case, 1 + len(logs), actor)
        cases.append(case)
    return pd.DataFrame(cases), pd.DataFrame(logs)


def _frame(rows: pd.DataFrame, columns) -> pd.DataFrame:
    """``rows`` with ``columns`` in order, every value a plain Python one (None for missing), to compare."""
    out = rows[list(columns)].astype(object)
    return out.where(out.notna(), None).reset_index(drop=True)


def test_backfill_equals_the_rule_written_plainly(small_city, monkeypatch):
    """backfill (in several chunks and two calls, the first on some events only) gives every stored event the
    case, audit rows and synced event that the rule written one event at a time gives."""
    monkeypatch.setattr(bulk, "BACKFILL_CHUNK", 97)
    rng = np.random.default_rng(11)
    with writing(small_city) as con:
        for site_id, category, unit in SITES:
            con.execute("INSERT INTO sites (site_id, name, category_code, responsible_unit, lng, lat) "
                        "VALUES (?, ?, ?, ?, 112.905, 28.205)", [site_id, f"点位{site_id}", category, unit])
        con.execute("INSERT INTO areas (code, name, level, parent_code) VALUES "
                    "('430102002', '第二街道', 'street', '430102')")
        types = [r[0] for r in con.execute("SELECT code FROM problem_types WHERE deadline_value IS NOT NULL "
                                           "ORDER BY code LIMIT 3").fetchall()]
        events = _messy_events(rng, 900, types)
        con.register("_ev", events)
        cols = ", ".join(events.columns)
        con.execute(f"INSERT INTO events ({cols}) SELECT {cols} FROM _ev")
        con.unregister("_ev")
        want_cases, want_log = _expected(con, events, actor="import")
        first = events["event_id"].to_numpy()[rng.random(len(events)) < 0.2]
        assert cs.backfill(con, actor="import", event_ids=np.concatenate([first, [10**9]])) == len(first)
    with writing(small_city) as con:
        assert cs.backfill(con, actor="import") == len(events) - len(first)
        assert cs.backfill(con, actor="import") == 0  # every event has its case
    # the first call's cases took the first audit row ids: number the reference in that order
    order = pd.Series(np.isin(want_cases["case_id"], first)).map({True: 0, False: 1})
    steps = want_log.groupby("case_id", sort=False).size()
    want_cases = want_cases.iloc[np.lexsort((want_cases["case_id"], order))].reset_index(drop=True)
    want_log = want_log.set_index("case_id").loc[want_cases["case_id"]].reset_index()
    want_log["log_id"] = np.arange(1, len(want_log) + 1)
    assert steps.sum() == len(want_log)
    store = Store(small_city)
    got = store.sql("SELECT * EXCLUDE (updated_at) FROM cases")
    got = got.set_index("case_id").loc[want_cases["case_id"]].reset_index()
    columns = [c for c in want_cases.columns if c != "state"] + ["state"]
    pd.testing.assert_frame_equal(_frame(got, columns), _frame(want_cases, columns))
    log_columns = ["log_id", "case_id", "changed_at", "actor", "from_state", "to_state", "note", "unit", "photo"]
    got_log = store.sql("SELECT * FROM case_log ORDER BY log_id")
    pd.testing.assert_frame_equal(_frame(got_log, log_columns), _frame(want_log, log_columns))
    # the events carry their cases' state; their other columns are as written
    ev = store.sql("SELECT * FROM events ORDER BY event_id")
    want_ev = want_cases.sort_values("event_id", ignore_index=True)
    synced = pd.DataFrame({"event_id": want_ev["event_id"],
                           "status": np.where(want_ev["state"] == "closed", "closed", "open"),
                           "deadline": want_ev["deadline"], "rectified_at": want_ev["rectified_at"],
                           "closed_at": want_ev["closed_at"], "reopened": want_ev["reworks"],
                           "rebound_of": want_ev["rebound_of"]})
    pd.testing.assert_frame_equal(_frame(ev, synced.columns), _frame(synced, synced.columns))
    kept = ["event_id", "source", "problem_type", "time", "site_id", "grid_code", "community_code", "street_code",
            "district_code"]
    pd.testing.assert_frame_equal(_frame(ev, kept), _frame(events, kept))
    # what the input holds: every state, rework rounds, units of every kind
    assert set(got["state"]) == {"dispatched", "rectified", "closed"} and got["reworks"].max() == 5
    units = {"园林局", "城管\t中队", "教育局", "第二街道办事处", "测试community居委会", cs.UNASSIGNED_UNIT}
    assert units <= set(got["unit"])


@pytest.mark.parametrize("rounds", [[0], [0, 0, 1, 2, 5]])
def test_audit_rows_equal_the_rule_written_plainly(rounds):
    """The audit rows of cases (numpy, ``bulk._log_rows``, as an import stages them and backfill writes them)
    are those the rule written one case at a time gives: rework rounds (which no import file sets, but a stored
    event may carry), times rectified, closed, both or neither, deadlines before the time found or missing, times
    with microseconds."""
    rng = np.random.default_rng(7)
    n = 3000
    us = np.timedelta64(1, "us")
    found = np.datetime64("2024-03-01T00:00:00", "us") + rng.integers(0, 40 * 86400 * 10**6, n) * us
    rect = found + rng.integers(0, 9 * 86400 * 10**6, n) * us
    closed = rect + rng.integers(0, 3 * 86400 * 10**6, n) * us
    deadline = found + rng.integers(-86400 * 10**6, 7 * 86400 * 10**6, n) * us
    kind = rng.integers(0, 4, n)  # 0: neither, 1: rectified, 2: both, 3: closed only (no sync makes it; kept exact)
    has_rect, has_closed, has_deadline = np.isin(kind, [1, 2]), np.isin(kind, [2, 3]), rng.random(n) < 0.8
    reworks = rng.choice(rounds, n).astype(np.int32)
    ids = np.sort(rng.choice(10**7, n, replace=False)).astype(np.int64)
    units = np.array(["甲居委会", "乙办事处", cs.UNASSIGNED_UNIT])[rng.integers(0, 3, n)]
    ts = pa.timestamp("us")
    events = pa.table({"event_id": ids, "time": pa.array(found, ts),
                       "deadline": pa.array(deadline, ts, mask=~has_deadline),
                       "rectified_at": pa.array(rect, ts, mask=~has_rect),
                       "closed_at": pa.array(closed, ts, mask=~has_closed), "reopened": reworks})
    steps = bulk._n_steps(events)
    log0 = 1000 + np.cumsum(steps) - steps
    got = bulk._log_rows(events, pa.array(units).dictionary_encode(), log0, actor="import").to_pandas()
    want = []
    for i in range(n):
        want += reference_log({"case_id": int(ids[i]), "found_at": pd.Timestamp(found[i]),
                               "deadline": pd.Timestamp(deadline[i]) if has_deadline[i] else None,
                               "rectified_at": pd.Timestamp(rect[i]) if has_rect[i] else None,
                               "closed_at": pd.Timestamp(closed[i]) if has_closed[i] else None,
                               "reworks": int(reworks[i]), "unit": str(units[i])}, int(log0[i]), "import")
    want = pd.DataFrame(want)
    got = got.sort_values("log_id", ignore_index=True)
    assert len(got) == len(want) == int(steps.sum()) and (reworks > 0).any() == (max(rounds) > 0)
    assert len(want) == 3 * n + 2 * int(reworks.sum()) + int(has_rect.sum()) + int(has_closed.sum())
    pd.testing.assert_frame_equal(_frame(got, want.columns), _frame(want, want.columns))
