"""``civicgrid import events`` creates the cases of the new events (and links rebounds) in the import's transaction."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from civicgrid.api.cli import main
from civicgrid.geo.staging import Staging
from civicgrid.geo.store import Store
from civicgrid.sites import cases as cs
from civicgrid.sites.events import import_events
from civicgrid.sites.kpis import kpi_table
from click.testing import CliRunner

from conftest import store_digest


def _digest(path) -> str:
    return store_digest(path)


#: Events with the README's deadline examples: 1 working day from Friday 15:00 -> Monday 15:00; from Friday
#: 2024-02-09 10:00 (Spring Festival next) -> Sunday 2024-02-18 10:00 (a make-up working day); 5 working hours
#: from Friday 2024-09-13 17:00 -> Saturday 2024-09-14 13:00 (make-up working day). One event has no type.
EVENTS = pd.DataFrame({
    "单号": ["A1", "A2", "A3", "A4", "A5"],
    "时间": ["2024-03-08 15:00", "2024-02-09 10:00", "2024-09-13 17:00", "2024-03-08 16:00", "2024-03-09 09:00"],
    "经度": ["112.905", "112.915", "112.905", "112.908", "112.95"],   # A4 300 m from A1; A5 outside
    "纬度": ["28.205", "28.215", "28.215", "28.205", "28.25"],
    "问题类型": ["暴露垃圾", "占道经营", "道路不洁", "暴露垃圾", ""],
    "状态": ["已办结", "处理中", "未结案", "处理中", "处理中"],
})
DEADLINES = ["2024-03-11 15:00", "2024-02-18 10:00", "2024-09-14 13:00", "2024-03-11 16:00", None]


def _import(small_city, tmp_path, frame, name="e.csv", **kw):
    f = tmp_path / name
    frame.to_csv(f, index=False)
    return import_events(f, db=small_city, mapping={"id": "单号", "time": "时间", "status": "状态"},
                         progress=False, **kw)


def test_imported_events_become_cases_with_deadlines_units_and_audit(small_city, tmp_path):
    rep = _import(small_city, tmp_path, EVENTS)
    assert rep.loaded == 5 and rep.cases_created == 5 and rep.rebounds_linked == 0
    store = Store(small_city)
    ev = store.sql("SELECT event_id, external_id, status, closed_at, deadline FROM events ORDER BY external_id")
    got = store.sql("SELECT * FROM cases ORDER BY case_id")
    assert got["case_id"].tolist() == got["event_id"].tolist() == sorted(ev["event_id"].tolist())
    got = got.set_index("event_id").loc[ev["event_id"]]
    assert got["state"].tolist() == ["closed", "dispatched", "dispatched", "dispatched", "dispatched"]
    want = [pd.Timestamp(d) if d else pd.NaT for d in DEADLINES]
    assert [pd.Timestamp(d) if pd.notna(d) else pd.NaT for d in got["deadline"]] == want
    assert got["unit"].tolist() == ["测试community居委会"] * 4 + [cs.UNASSIGNED_UNIT]
    assert got["unit_code"].tolist()[:4] == ["430102001001"] * 4
    assert got["source"].eq("complaint").all()
    # the event carries the case's state (the map's status filters follow the cases)
    assert ev["deadline"].tolist()[:4] == want[:4] and ev["status"].tolist() == ["closed"] + ["open"] * 4
    # audit trail: found, registered, dispatched; the closed one also rectified and closed
    log = store.sql("SELECT case_id, to_state, actor FROM case_log ORDER BY log_id")
    assert (log["actor"] == "import").all()
    states = log.groupby("case_id")["to_state"].apply(list)
    closed_id = int(ev.loc[ev["external_id"] == "A1", "event_id"].iloc[0])
    assert states[closed_id] == ["found", "registered", "dispatched", "rectified", "closed"]
    assert all(states[i] == ["found", "registered", "dispatched"] for i in states.index if i != closed_id)
    # the KPIs count them at once
    k = kpi_table(store, start="2024-03-01", end="2024-04-01", level="street", as_of="2024-03-12 00:00")
    row = k.set_index("code").loc["430102001"]
    assert (row["found"], row["due"], row["open"], row["overdue"]) == (2, 2, 1, 1)


def test_rebounds_of_imported_cases_are_linked(small_city, tmp_path):
    _import(small_city, tmp_path, EVENTS)
    later = pd.DataFrame({
        "单号": ["B1", "B2", "B3"],
        # B1: same type 20 m from the closed A1, 10 days later -> rebound; B2: another type; B3: 40 days later
        "时间": ["2024-03-18 10:00", "2024-03-18 10:00", "2024-04-20 10:00"],
        "经度": ["112.9051", "112.9051", "112.9050"], "纬度": ["28.2051", "28.2051", "28.2050"],
        "问题类型": ["暴露垃圾", "占道经营", "暴露垃圾"], "状态": ["处理中"] * 3,
    })
    rep = _import(small_city, tmp_path, later, name="later.csv")
    assert rep.cases_created == 3 and rep.rebounds_linked == 1
    store = Store(small_city)
    ids = store.sql("SELECT external_id, event_id FROM events").set_index("external_id")["event_id"]
    reb = store.sql("SELECT case_id, rebound_of FROM cases").set_index("case_id")["rebound_of"]
    assert reb[ids["B1"]] == ids["A1"]
    assert pd.isna(reb[ids["B2"]]) and pd.isna(reb[ids["B3"]])
    assert store.sql("SELECT rebound_of FROM events WHERE external_id = 'B1'")["rebound_of"].iloc[0] == ids["A1"]
    # a repeated import adds nothing
    again = _import(small_city, tmp_path, later, name="later.csv")
    assert (again.loaded, again.cases_created, again.rebounds_linked) == (0, 0, 0)
    assert len(store.sql("SELECT * FROM cases")) == 8


@pytest.mark.parametrize("where", ["rebounds", "audit rows"])
def test_a_failing_case_backfill_leaves_the_database_unchanged(small_city, tmp_path, monkeypatch, where):
    """A failure while the cases are made (searching rebounds, or staging the audit rows after the events and
    cases were staged again) publishes nothing and leaves no staged file behind."""
    before = _digest(small_city)

    def broken(*args, **kwargs):
        raise RuntimeError("backfill failed")

    if where == "rebounds":
        monkeypatch.setattr("civicgrid.sites.cases.bulk.find_rebounds", broken)  # (made before publishing)
    else:
        write_file = Staging.write_file

        def failing(self, table, *args, **kwargs):
            return broken() if table == "case_log" else write_file(self, table, *args, **kwargs)

        monkeypatch.setattr(Staging, "write_file", failing)
    with pytest.raises(RuntimeError, match="backfill failed"):
        _import(small_city, tmp_path, EVENTS)
    assert _digest(small_city) == before
    assert Store(small_city).sql("SELECT count(*) AS n FROM events")["n"].iloc[0] == 0
    assert not list(small_city.parent.glob("**/import-*.parquet"))


def test_cases_false_and_older_events_are_backfilled_later(small_city, tmp_path):
    rep = _import(small_city, tmp_path, EVENTS.iloc[:2], cases=False)
    assert rep.loaded == 2 and rep.cases_created is None
    assert Store(small_city).sql("SELECT count(*) AS n FROM cases")["n"].iloc[0] == 0
    # the next import also gives the earlier events without a case their case
    rep = _import(small_city, tmp_path, EVENTS.iloc[2:], name="rest.csv")
    assert rep.loaded == 3 and rep.cases_created == 5


def test_cli_import_prints_and_reports_the_cases(small_city, tmp_path):
    f = tmp_path / "e.csv"
    EVENTS.to_csv(f, index=False)
    out = tmp_path / "report.json"
    res = CliRunner().invoke(main, ["import", "events", str(f), "--db", str(small_city), "--id", "单号",
                                    "--time", "时间", "--map", "status=状态", "--source", "inspection",
                                    "--report", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "cases created" in res.output
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["cases_created"] == 5 and data["rebounds_linked"] == 0
    assert Store(small_city).sql("SELECT DISTINCT source FROM cases")["source"].tolist() == ["inspection"]
    imports = Store(small_city).sql("SELECT report_json FROM imports WHERE layer = 'events'")
    assert json.loads(imports["report_json"].iloc[0])["cases_created"] == 5


def test_rectified_and_closed_times_give_the_cases_their_lifecycle(small_city, tmp_path):
    """办结时间 / 整改时间 columns: closed and rectified cases with those times; bad or inverted times are rejected
    with row and field, and the rest load."""
    frame = pd.DataFrame({
        "单号": ["B1", "B2", "B3", "B4", "B5", "B6"],
        "时间": ["2024-03-08 15:00"] * 6,
        "经度": ["112.905"] * 6,
        "纬度": ["28.205"] * 6,
        "问题类型": ["暴露垃圾", "占道经营", "道路不洁", "暴露垃圾", "暴露垃圾", "占道经营"],
        "整改时间": ["2024-03-09 10:00", "2024-03-12 09:00", "", "2024-03-07 09:00", "", "2024-03-10 10:00"],
        "办结时间": ["2024-03-09 16:00", "", "", "", "not a time", "2024-03-09 10:00"],
    })
    f = tmp_path / "closed.csv"
    frame.to_csv(f, index=False)
    report = import_events(f, db=small_city, mapping={"id": "单号", "time": "时间"}, progress=False)
    assert report.rows_read == 6 and report.loaded == 3 and report.rejected == 3
    rejects = {r["row"]: (r["field"], r["reason"]) for r in report.rejects}
    assert rejects[5] == ("rectified", "rectified time before the event's time: 整改时间 '2024-03-07 09:00' is "
                                       "before 时间 '2024-03-08 15:00'")  # the values as the file has them
    assert rejects[6] == ("closed", "unparseable time 'not a time'")
    assert rejects[7][0] == "closed" and "before the rectified time" in rejects[7][1]
    assert "closed time before the event's time" not in report.summary()
    assert "1  rectified time before the event's time\n" in report.summary()  # counted by kind, not by value
    store = Store(small_city)
    got = store.sql("""SELECT e.external_id, e.status, c.state, c.rectified_at, c.closed_at
                       FROM events e JOIN cases c USING (event_id) ORDER BY 1""").set_index("external_id")
    assert got.loc["B1", "state"] == "closed" and got.loc["B1", "status"] == "closed"
    assert str(got.loc["B1", "closed_at"]) == "2024-03-09 16:00:00"
    assert str(got.loc["B1", "rectified_at"]) == "2024-03-09 10:00:00"
    assert got.loc["B2", "state"] == "rectified" and got.loc["B2", "status"] == "open"
    assert str(got.loc["B2", "rectified_at"]) == "2024-03-12 09:00:00"
    assert got.loc["B3", "state"] not in ("rectified", "closed") and pd.isna(got.loc["B3", "closed_at"])
    # on time: B1 closed before its deadline (Monday 15:00); B2 rectified after it
    k = kpi_table(store, start="2024-03-01", end="2024-03-31", level="district")
    assert int(k["found"].sum()) == 3


#: Sites of the comparisons (id, external id, category, responsible unit): units to trim, blank or none (the
#: case then goes to its area's office), one site no event names.
SITES = [(1, "S1", "16", "园林局"), (2, "S2", "05", "   "), (3, "S3", "11", None), (4, "S4", "24", " 教育局 "),
         (5, "S5", "14", "城管\t中队")]


def _add_sites(db) -> None:
    from civicgrid.geo.store import writing

    with writing(db) as con:
        for site_id, code, category, unit in SITES:
            con.execute("INSERT INTO sites (site_id, external_id, name, category_code, responsible_unit, lng, lat) "
                        "VALUES (?, ?, ?, ?, ?, 112.905, 28.205)", [site_id, code, f"点位{site_id}", category, unit])


def _random_events(seed: int, n: int, prefix: str, days: int) -> pd.DataFrame:
    """``n`` events close together (many rebounds: same type within the radius), some closed or rectified
    (times given or only a status), some without a type, a few outside every grid, some at a site."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-03-01") + pd.to_timedelta(rng.integers(0, days * 86400, n), unit="s")
    fixed = rng.random(n)
    rect = t0 + pd.to_timedelta(rng.integers(3600, 5 * 86400, n), unit="s")
    closed = rect + pd.to_timedelta(rng.integers(0, 2 * 86400, n), unit="s")
    fmt = "%Y-%m-%d %H:%M:%S"
    return pd.DataFrame({
        "单号": [f"{prefix}{i}" for i in range(n)],
        "时间": t0.strftime(fmt),
        "经度": np.round(np.where(rng.random(n) < 0.02, 112.95, 112.901 + rng.random(n) * 0.018), 6),
        "纬度": np.round(28.201 + rng.random(n) * 0.018, 6),
        "问题类型": rng.choice(["暴露垃圾", "占道经营", "道路不洁", ""], n, p=[0.5, 0.25, 0.2, 0.05]),
        "状态": np.where(fixed < 0.5, "已办结", "处理中"),
        "整改时间": np.where((fixed < 0.3) | (fixed > 0.8), rect.strftime(fmt), ""),
        "办结时间": np.where(fixed < 0.2, closed.strftime(fmt), ""),
        "点位": rng.choice(["", "", "", "S1", "S2", "S3", "S4"], n),
    })


def _read(db, query: str) -> pd.DataFrame:
    """``query`` on the store ``db``. The reference path's UPDATEs (link_rebounds) leave ``cases.rebound_of`` with
    a table minimum above values stored (a DuckLake bug, bench/DUCKLAKE.md section 10): the store's reads do not
    trust it (with DuckDB's defaults a sort compressed on that minimum read 2 as 65538)."""
    return Store(db).sql(query)


def test_staged_cases_equal_the_backfill_of_the_published_events(tmp_path, monkeypatch):
    """The cases, audit rows, links and events an import stages (ImportCases, in several batches) are those that
    importing without cases then running backfill and link_rebounds on the published events makes: two imports,
    the second's cases repeating closures of the first and of its own."""
    from civicgrid.geo.store import writing
    from civicgrid.sites import events as events_module

    from conftest import build_small_city

    monkeypatch.setattr(events_module, "IMPORT_BATCH_ROWS", 500)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    staged = build_small_city(tmp_path / "a" / "city.duckdb", tmp_path / "a")
    reference = build_small_city(tmp_path / "b" / "city.duckdb", tmp_path / "b")
    mapping = {"id": "单号", "time": "时间", "status": "状态", "rectified": "整改时间", "closed": "办结时间",
               "site": "点位"}
    for db in (staged, reference):
        _add_sites(db)
    linked = []
    for k, frame in enumerate([_random_events(1, 1800, "A", 40), _random_events(2, 1300, "B", 60)]):
        f = tmp_path / f"e{k}.csv"
        frame.to_csv(f, index=False)
        rep = import_events(f, db=staged, mapping=mapping, progress=False)
        ref = import_events(f, db=reference, mapping=mapping, progress=False, cases=False)
        assert rep.loaded == ref.loaded == len(frame) and rep.cases_created == rep.loaded
        with writing(reference) as con:
            ids = con.execute("SELECT event_id FROM events WHERE import_id = ?", [ref.import_id]).fetchnumpy()
            assert cs.backfill(con, actor="import", event_ids=ids["event_id"]) == rep.cases_created
            assert cs.link_rebounds(con, case_ids=ids["event_id"]) == rep.rebounds_linked
            con.execute("DELETE FROM meta WHERE key = 'cases_pending'")
        linked.append(rep.rebounds_linked)
    assert linked[0] > 100 and linked[1] > 100
    for query in ("SELECT * EXCLUDE (updated_at) FROM cases ORDER BY case_id",
                  "SELECT * FROM case_log ORDER BY log_id",
                  "SELECT * FROM events ORDER BY event_id"):
        got, want = _read(staged, query), _read(reference, query)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
    # the second import's cases repeat closures of both imports
    store = Store(staged)
    old = store.sql("SELECT c.case_id, o.event_id AS old FROM cases c JOIN cases o ON o.case_id = c.rebound_of "
                    "JOIN events e ON e.event_id = c.event_id JOIN events oe ON oe.event_id = o.event_id "
                    "WHERE e.external_id LIKE 'B%' AND oe.external_id LIKE 'A%'")
    assert len(old) > 0
    # the cases at sites take the site's category and its responsible unit (trimmed), or their area's office
    units = store.sql("SELECT s.external_id, c.category_code, c.unit, c.unit_code FROM cases c "
                      "JOIN sites s ON s.site_id = c.site_id").drop_duplicates().set_index("external_id")
    assert units.loc["S1", ["category_code", "unit"]].tolist() == ["16", "园林局"]
    assert units.loc["S4", ["category_code", "unit"]].tolist() == ["24", "教育局"]
    assert units.loc[["S1", "S4"], "unit_code"].isna().all()
    area = units.loc[["S2", "S3"], "unit"]  # (a few events lie outside every area)
    assert area.isin(["测试community居委会", cs.UNASSIGNED_UNIT]).all() and area.eq("测试community居委会").any()


def test_the_import_threads_setting_governs_the_case_step(tmp_path, monkeypatch):
    """``CIVICGRID_IMPORT_THREADS`` also sets the threads the cases are made on (``finish_threads``): 0 makes them
    in turn on the calling thread (no thread pool), N on N threads, -1 on a thread per core up to 4; the store
    is the same whatever the threads."""
    from civicgrid.sites import events as events_module
    from civicgrid.sites.cases import bulk

    from conftest import build_small_city

    monkeypatch.setattr(events_module, "IMPORT_BATCH_ROWS", 300)
    monkeypatch.setattr(events_module.os, "cpu_count", lambda: 8)
    for value, threads in (("-1", 4), ("0", 0), ("3", 3)):
        monkeypatch.setenv("CIVICGRID_IMPORT_THREADS", value)
        assert events_module.finish_threads() == threads
    mapping = {"id": "单号", "time": "时间", "status": "状态", "rectified": "整改时间", "closed": "办结时间",
               "site": "点位"}
    f = tmp_path / "e.csv"
    _random_events(3, 1500, "A", 40).to_csv(f, index=False)
    pools = []
    real_pool = bulk.ThreadPoolExecutor
    monkeypatch.setattr(bulk, "ThreadPoolExecutor", lambda n, **kw: pools.append(n) or real_pool(n, **kw))
    got = []
    for value in ("0", "3"):
        monkeypatch.setenv("CIVICGRID_IMPORT_THREADS", value)
        (tmp_path / value).mkdir()
        db = build_small_city(tmp_path / value / "city.duckdb", tmp_path / value)
        _add_sites(db)
        rep = import_events(f, db=db, mapping=mapping, progress=False)
        assert rep.cases_created == rep.loaded == 1500 and rep.rebounds_linked > 50
        got.append([_read(db, q) for q in ("SELECT * EXCLUDE (updated_at) FROM cases ORDER BY case_id",
                                           "SELECT * FROM case_log ORDER BY log_id",
                                           "SELECT * EXCLUDE (import_id) FROM events ORDER BY event_id")])
    assert pools == [3]  # none in turn
    for a, b in zip(*got, strict=True):
        pd.testing.assert_frame_equal(a, b)
