"""A real city's files load whole (issue 13): dates never guessed (part 3), rows without coordinates kept and
located by their area (part 2), and the acceptance check on the real 311 files and a GBK 12345 export."""

from __future__ import annotations

import csv
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from civicgrid.api.cli import main
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.geo.times import decide_date_order, file_date_order, parse_times
from civicgrid.sites.event_places import normalize_place
from civicgrid.sites.events import import_events
from civicgrid.sites.importers import get_importer
from civicgrid.sites.kpis import kpi_table
from civicgrid.sites.taxonomy import map_label
from click.testing import CliRunner

# --- part 3: dates are never guessed -----------------------------------------------------------------------


def test_a_slash_date_column_is_read_one_way_decided_by_a_value():
    got, _ = parse_times(["01/03/2025", "13/02/2025 08:30", "1.3.2025"])
    want = np.array(["2025-03-01", "2025-02-13T08:30", "2025-03-01"], dtype="datetime64[us]")
    np.testing.assert_array_equal(got, want)
    got, _ = parse_times(["01/03/2025", "02/13/2025 02:30:00 PM"])
    np.testing.assert_array_equal(got, np.array(["2025-01-03", "2025-02-13T14:30"], dtype="datetime64[us]"))
    # equal fields read the same either way: nothing to decide
    assert decide_date_order(["01/01/2025", "2025-03-05"]) == "mdy" and decide_date_order(["2025-03-05"]) is None


def test_an_undecided_column_is_refused_naming_the_option():
    with pytest.raises(InvalidParameterError, match=r"'受理时间' has dates like '01/03/2025' that read day first "
                                                    r"\(1 March\) or month first \(3 January\).*--date-order dmy"):
        parse_times(["01/03/2025", "05/04/2025"], column="受理时间")
    with pytest.raises(InvalidParameterError, match=r"mixes day-first dates .* and month-first dates"):
        parse_times(["13/02/2025", "02/13/2025"])
    got, bad = parse_times(["01/03/2025", "13/02/2025"], date_order="mdy")
    assert got[0] == np.datetime64("2025-01-03") and bad.tolist() == [False, True]
    with file_date_order("dmy"):
        assert parse_times(["01/03/2025"])[0][0] == np.datetime64("2025-03-01")
    with pytest.raises(InvalidParameterError, match=r"dmy .* or mdy"):
        decide_date_order(["01/03/2025"], date_order="ymd")


def _hits(tmp_path, times, closed=None, name="d.csv"):
    frame = pd.DataFrame({"编号": [f"D{i}" for i in range(len(times))], "时间": times,
                          "经度": "112.905", "纬度": "28.205"})
    if closed is not None:
        frame["办结时间"] = closed
    f = tmp_path / name
    frame.to_csv(f, index=False)
    return f


def test_import_refuses_an_ambiguous_column_and_loads_with_date_order(small_city, tmp_path):
    f = _hits(tmp_path, ["01/03/2024 10:00", "05/04/2024 10:00"])
    with pytest.raises(InvalidParameterError, match=r"'时间' has dates like .*--date-order dmy"):
        import_events(f, db=small_city, progress=False)
    assert Store(small_city).sql("SELECT count(*) AS n FROM events")["n"][0] == 0  # nothing half loaded
    rep = import_events(f, db=small_city, progress=False, date_order="dmy")
    assert rep.loaded == 2 and "column '时间': dates read day first (dmy, as given)" in rep.warnings
    got = Store(small_city).sql("SELECT time FROM events ORDER BY external_id")["time"].tolist()
    assert got == [pd.Timestamp("2024-03-01 10:00"), pd.Timestamp("2024-04-05 10:00")]


def test_each_column_is_decided_on_its_own(small_city, tmp_path):
    # 时间 is proven day first by 13/03; 办结时间 month first by 03/20
    f = _hits(tmp_path, ["13/03/2024 10:00", "01/03/2024 10:00"], closed=["03/20/2024 10:00", "03/02/2024 10:00"])
    rep = import_events(f, db=small_city, progress=False)
    assert rep.loaded == 2, rep.rejects
    ev = Store(small_city).sql("SELECT time, closed_at FROM events ORDER BY external_id")
    assert ev["time"].tolist() == [pd.Timestamp("2024-03-13 10:00"), pd.Timestamp("2024-03-01 10:00")]
    assert ev["closed_at"].tolist() == [pd.Timestamp("2024-03-20 10:00"), pd.Timestamp("2024-03-02 10:00")]


def test_us_exports_load_with_date_order_mdy_through_the_registry(small_city, tmp_path):
    f = _hits(tmp_path, ["01/07/2014 12:00:00 AM", "01/08/2014 12:30:00 PM"])
    rep = get_importer("events").run(f, db=small_city, progress=False, date_order="mdy")
    assert rep.loaded == 2
    got = Store(small_city).sql("SELECT time FROM events ORDER BY external_id")["time"].tolist()
    assert got == [pd.Timestamp("2014-01-07 00:00"), pd.Timestamp("2014-01-08 12:30")]
    res = CliRunner().invoke(main, ["import", "events", str(_hits(tmp_path, ["02/03/2024"], name="e.csv")),
                                    "--db", str(small_city), "--quiet"])
    assert res.exit_code == 2 and "--date-order dmy (day first) or --date-order mdy" in res.output


@pytest.mark.parametrize("args", [
    ["cases", "kpis", "--start", "01/03/2025", "--end", "2025-04-01"],
    ["cases", "kpis", "--start", "2025-03-01", "--end", "2025-04-01", "--as-of", "01/04/2025"],
    ["cases", "flags", "--as-of", "01/03/2025"],
    ["simulate", "--as-of", "01/03/2025"],
    ["risk", "--as-of", "01/03/2025"],
    ["cases", "create", "--actor", "a", "--type", "0101", "--lng", "112.905", "--lat", "28.205",
     "--time", "01/03/2025"],
])
def test_cli_dates_are_year_first_only(small_city, args):
    res = CliRunner().invoke(main, [*args, "--db", str(small_city)])
    assert res.exit_code == 2, res.output
    assert "'01/0" in res.output and "ambiguous (day or month first?)" in res.output
    assert "like 2025-07-01" in res.output
    assert Store(small_city).sql("SELECT count(*) AS n FROM cases")["n"][0] == 0


def test_cli_periods_and_days_are_year_first_only(small_city):
    res = CliRunner().invoke(main, ["report", "--period", "01/03/2025", "--db", str(small_city)])
    assert res.exit_code == 2 and "the year first" in res.output


# --- part 2: rows without coordinates ------------------------------------------------------------------------


def test_rows_without_coordinates_are_kept_and_located_by_their_area(small_city, tmp_path):
    frame = pd.DataFrame({
        "编号": ["P1", "P2", "P3", "P4", "P5", "P6", "P7"],
        "时间": ["2024-03-08 15:00"] * 7,
        "经度": ["112.905", "", "", "", "", "0", ""],
        "纬度": ["28.205", "", "", "", "", "0", ""],
        "所属网格": ["", "430102001001002.0", "测试street", "测试district测试street", "外星街道", "第3网格", ""],
        "诉求地址": ["", "", "", "", "某路1号", "", ""],
    })
    f = tmp_path / "p.csv"
    frame.to_csv(f, index=False)
    rep = import_events(f, db=small_city, progress=False, mapping={"area": "所属网格", "address": "诉求地址"})
    assert (rep.rows_read, rep.loaded, rep.rejected) == (7, 6, 1)
    assert rep.rejects == [{"row": 8, "field": "lat/lng",
                            "reason": "missing coordinates, and no area or address either"}]
    assert (rep.located, rep.located_by_area, rep.located_by_address, rep.unlocated) == (1, 4, 0, 1)
    ev = Store(small_city).sql("SELECT external_id, h3, lng, grid_code, community_code, street_code, district_code, "
                               "located_by, address FROM events ORDER BY external_id").set_index("external_id")
    assert ev.loc["P1", "located_by"] == "point" and ev.loc["P1", "grid_code"] == "430102001001001"
    assert ev.loc["P2", "grid_code"] == "430102001001002" and ev.loc["P2", "district_code"] == "430102"
    assert pd.isna(ev.loc["P3", "grid_code"]) and ev.loc["P3", "street_code"] == "430102001"
    assert pd.isna(ev.loc["P3", "community_code"]) and ev.loc["P3", "district_code"] == "430102"
    assert ev.loc["P4", "street_code"] == "430102001"
    assert pd.isna(ev.loc["P5", "street_code"]) and ev.loc["P5", "address"] == "某路1号"
    assert pd.isna(ev.loc["P5", "located_by"])
    assert ev.loc["P6", "grid_code"] == "430102001001003" and ev.loc["P6", "located_by"] == "area"
    assert ev.loc[["P2", "P3", "P4", "P5", "P6"], "h3"].isna().all()  # never on an H3 map
    assert ev.loc[["P2", "P3", "P4", "P5", "P6"], "lng"].isna().all()
    assert any(w.startswith("5 rows with unusable coordinates kept") and "1 coordinates are 0,0" in w
               for w in rep.warnings), rep.warnings
    # they count in the KPIs at the level they are located at
    kpi = kpi_table(Store(small_city), start="2024-03-01", end="2024-04-01", level="street")
    assert int(kpi.loc[kpi["code"] == "430102001", "found"].iloc[0]) == 5
    assert normalize_place("66.0") == normalize_place("66") == "66"
    # and in the area statistics, never on the heatmap
    from civicgrid.geo.aggregate import area_stats, heatmap_frame

    streets = area_stats(Store(small_city), level="street").set_index("code")["count"]
    grids = area_stats(Store(small_city), level="grid").set_index("code")["count"]
    assert streets["430102001"] == 5
    assert {k: v for k, v in grids.items() if v} == {"430102001001001": 1, "430102001001002": 1,
                                                     "430102001001003": 1}  # P1 by its point, P2 and P6 by area
    assert heatmap_frame(Store(small_city), res=9)["count"].sum() == 1


# --- acceptance: real files load whole with their own labels ------------------------------------------------


def _check_whole(rep):
    assert rep.rows_read == rep.loaded + rep.duplicates + rep.rejected
    assert rep.located + rep.located_by_area + rep.located_by_address + rep.unlocated == rep.loaded


def test_sf311_files_load_whole_with_their_labels(shared, tmp_path):
    db = tmp_path / "sf.duckdb"
    folder = shared / "us_sf311"
    a = import_events(folder / "sf311_cases_sample_10000.csv", db=db, progress=False, point="Point",
                      mapping={"id": "CaseID", "time": "Opened", "status": "Status",
                                                         "type": "Category", "area": "Neighborhood"})
    b = import_events(folder / "sf311_cases_sample_geo_4984.csv", db=db, progress=False,
                      mapping={"id": "CaseID", "time": "Opened", "status": "Status", "type": "Category",
                               "lat": "Lat", "lng": "Long"})
    for rep in (a, b):
        _check_whole(rep)
        assert rep.rejected == 0
    assert (a.loaded, a.located, a.unlocated) == (10_000, 9_976, 24)
    assert b.duplicates == 672 and b.loaded == 4_984 - 672
    raw = pd.read_csv(folder / "sf311_cases_sample_10000.csv", dtype=str)
    stored = Store(db).sql("SELECT source_type, count(*) AS n FROM events WHERE import_id = ? GROUP BY 1",
                           [a.import_id]).set_index("source_type")["n"]
    assert stored.to_dict() == raw["Category"].value_counts().to_dict()
    assert len(stored) == 28
    # Opened is month first (04/30/2014 proves it) and spans 2008-07-01 .. 2016-01-27
    t = Store(db).sql("SELECT min(time) AS lo, max(time) AS hi FROM events")
    assert str(t["lo"][0].date()) == "2008-07-01" and str(t["hi"][0].date()) == "2016-01-27"
    assert "column 'Opened': dates read month first (mdy, decided by its values)" in a.warnings


def test_sf311_closed_rows_without_closure_times_are_named_and_update_gives_the_real_times(shared, tmp_path):
    """SF 311 says Status "Closed" and keeps the closure time in a column named "Closed", which no common name
    finds: the first import closes those cases at the time found (a stand-in: 0 hours to rectify) and says so,
    naming the column; imported again with ``--map closed=Closed --update``, the cases take the real times (the
    129 rows closed before they were opened are refused and keep what was loaded)."""
    db = tmp_path / "sf.duckdb"
    f = shared / "us_sf311" / "sf311_cases_sample_10000.csv"
    mapping = {"id": "CaseID", "time": "Opened", "type": "Category"}
    first = import_events(f, db=db, progress=False, point="Point", mapping=mapping)
    said = [w for w in first.warnings if "say closed" in w]
    assert len(said) == 1 and said[0].startswith("9,530 rows say closed (column 'Status') but give no closure time")
    assert "('Closed' may hold them)" in said[0] and "--update" in said[0]
    again = import_events(f, db=db, progress=False, point="Point", mapping=mapping | {"closed": "Closed"},
                          update=True)
    raw = pd.read_csv(f, dtype=str)
    opened = pd.to_datetime(raw["Opened"], format="%m/%d/%Y %I:%M:%S %p")
    closed = pd.to_datetime(raw["Closed"], format="%m/%d/%Y %I:%M:%S %p")
    fine = raw["Status"].eq("Closed") & (closed >= opened)
    assert (again.updated, again.rejected) == (int(fine.sum()), int((closed < opened).sum())) == (9_401, 129)
    assert not [w for w in again.warnings if "say closed" in w]
    stored = Store(db).sql("SELECT e.external_id, c.found_at, c.rectified_at, c.closed_at FROM cases c "
                           "JOIN events e ON e.event_id = c.event_id WHERE c.state = 'closed'")
    stored = stored.set_index("external_id")
    want = pd.Series(closed[fine].to_numpy(), index=raw.loc[fine, "CaseID"])
    got = stored.loc[want.index]
    assert (got["closed_at"] == want).all() and (got["rectified_at"] == want).all()
    hours = (got["closed_at"] - got["found_at"]).dt.total_seconds() / 3600
    assert hours.mean() == pytest.approx(((closed - opened)[fine].dt.total_seconds() / 3600).mean())
    assert hours.mean() > 24
    # a case of a label no type knows: the CLI names the city's label (it printed Python's None, then "-")
    label = Store(db).sql("SELECT source_type FROM events WHERE event_id = 2")["source_type"].iloc[0]
    shown = CliRunner().invoke(main, ["cases", "show", "2", "--db", str(db)])
    assert shown.exit_code == 0 and f" type {label} " in shown.output and "None" not in shown.output, shown.output


def test_nyc311_files_load_whole_with_their_labels(shared, tmp_path):
    db = tmp_path / "nyc.duckdb"
    for name, without in (("nyc311_2023-12_sample.csv", 68), ("nyc311_2024-04_sample.csv", 23)):
        f = shared / "us_nyc311_small" / name
        rep = import_events(f, db=db, progress=False, tz="America/New_York", mapping={"area": "borough"})
        _check_whole(rep)
        assert rep.rejected == 0 and rep.columns["type"] == "complaint_type"
        with open(f, encoding="utf-8", newline="") as fh:  # a real CSV parser: quoted newlines
            rows = list(csv.DictReader(fh))
        assert rep.rows_read == len(rows) and rep.unlocated == sum(not r["latitude"] for r in rows) == without
        stored = Store(db).sql("SELECT source_type, count(*) AS n FROM events WHERE import_id = ? GROUP BY 1",
                               [rep.import_id]).set_index("source_type")["n"].to_dict()
        assert stored == pd.Series([r["complaint_type"] for r in rows]).value_counts().to_dict()


def test_a_gbk_12345_export_loads_whole_and_types_map_moves_it_into_the_kpis(small_city, tmp_path):
    frame = pd.DataFrame({
        "工单编号": [f"2024{i:04d}" for i in range(1, 9)],
        "受理时间": ["2024/03/08 15:00:00"] * 8,
        "问题分类": ["暴露垃圾", "噪音扰民", "油烟污染", "噪音扰民", "道路不洁", "噪音扰民", "占道经营", "油烟污染"],
        "诉求地址": ["测试路1号", "测试路2号", "", "测试路4号", "测试路5号", "测试路6号", "测试路7号", "测试路8号"],
        "经度": ["112.905", "112.915", "112.905", "", "112.905", "", "112.915", "112.905"],
        "纬度": ["28.205", "28.215", "28.215", "", "28.205", "", "28.215", "28.205"],
        "所属街道": ["测试street"] * 8,
    })
    f = tmp_path / "12345.csv"
    frame.to_csv(f, index=False, encoding="gbk")
    res = CliRunner().invoke(main, ["import", "events", str(f), "--db", str(small_city), "--quiet",
                                    "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    import json

    rep = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert rep["encoding"] in ("gb18030", "gbk") and rep["columns"]["type"] == "问题分类"
    assert (rep["rows_read"], rep["loaded"], rep["rejected"]) == (8, 8, 0)
    assert rep["unmapped_types"] == {"噪音扰民": 3, "油烟污染": 2}
    assert (rep["located"], rep["located_by_area"], rep["unlocated"]) == (6, 2, 0)
    res = CliRunner().invoke(main, ["types", "unmapped", "--db", str(small_city)])
    assert [ln.split()[2] for ln in res.output.splitlines()] == ["噪音扰民", "油烟污染"]
    kpi = kpi_table(Store(small_city), start="2024-03-01", end="2024-04-01", level="street")
    before = kpi.set_index("code").loc["430102001"]
    assert before["found"] == 8
    map_label(small_city, "噪音扰民", "0101")
    ev = Store(small_city).sql("SELECT external_id, problem_type, deadline FROM events ORDER BY 1")
    assert ev["problem_type"].tolist()[:2] == ["0101", "0101"] and ev["problem_type"][3] == "0101"
    assert pd.isna(ev["problem_type"][2])
    assert ev["deadline"][1] == ev["deadline"][0] == pd.Timestamp(datetime(2024, 3, 11, 15, 0))
    heat = Store(small_city).sql("SELECT count(*) AS n FROM events WHERE problem_type = '0101' AND h3 IS NOT NULL")
    assert heat["n"][0] == 2  # the two with coordinates are on the map, the unlocated one is not


# --- part 4: corrections and undo ------------------------------------------------------------------------------

_TABLES = {
    "events": "SELECT * EXCLUDE (import_id) FROM events ORDER BY event_id",
    "cases": "SELECT * EXCLUDE (updated_at) FROM cases ORDER BY case_id",
    "case_log": "SELECT * EXCLUDE (log_id, changed_at) FROM case_log ORDER BY case_id, to_state, log_id",
}


def _state(db) -> dict[str, pd.DataFrame]:
    store = Store(db)
    return {k: store.sql(q).reset_index(drop=True) for k, q in _TABLES.items()}


def _assert_same(a: dict, b: dict) -> None:
    for k in _TABLES:
        pd.testing.assert_frame_equal(a[k], b[k], check_dtype=False, obj=k)


def _file(tmp_path, name, rows):
    frame = pd.DataFrame(rows, columns=["编号", "时间", "经度", "纬度", "问题分类", "状态"])
    f = tmp_path / name
    frame.to_csv(f, index=False)
    return f


FIRST = [["A1", "2024-03-08 15:00", "112.905", "28.205", "暴露垃圾", "处理中"],
         ["A2", "2024-03-08 16:00", "112.915", "28.215", "道路不洁", "处理中"],
         ["A3", "2024-03-09 09:00", "112.905", "28.215", "占道经营", "已办结"]]
#: A2 moved to another grid and retyped, A3 unchanged, A4 new.
FIXED = [FIRST[0], ["A2", "2024-03-08 16:00", "112.905", "28.215", "暴露垃圾", "处理中"], FIRST[2],
         ["A4", "2024-03-10 09:00", "112.915", "28.205", "道路不洁", "处理中"]]


def test_update_replaces_rows_that_differ_as_a_fresh_import_would(small_city, tmp_path):
    from civicgrid.geo.store_files import copy_store

    fresh = tmp_path / "fresh.duckdb"
    copy_store(small_city, fresh)
    import_events(_file(tmp_path, "first.csv", FIRST), db=small_city, progress=False)
    plain = import_events(_file(tmp_path, "fixed.csv", FIXED), db=small_city, progress=False)
    assert (plain.loaded, plain.duplicates, plain.updated) == (1, 3, None)  # without --update: duplicates
    rep = import_events(_file(tmp_path, "fixed2.csv", FIXED), db=small_city, progress=False, update=True)
    assert (rep.rows_read, rep.loaded, rep.updated, rep.duplicates, rep.rejected) == (4, 0, 1, 3, 0)
    ev = Store(small_city).sql("SELECT event_id, external_id, problem_type, grid_code, h3, deadline FROM events "
                               "ORDER BY event_id").set_index("external_id")
    assert ev.loc["A2", "event_id"] == 2 and ev.loc["A2", "problem_type"] == "0101"
    assert ev.loc["A2", "grid_code"] == "430102001001002"  # was 430102001001004
    # the store is the one a fresh import of the corrected file gives (ids, places, cells, cases, audit trails)
    import_events(_file(tmp_path, "fixed.csv", FIXED), db=fresh, progress=False)
    _assert_same(_state(small_city), _state(fresh))
    res = CliRunner().invoke(main, ["import", "events", str(_file(tmp_path, "f4.csv", FIXED)), "--db",
                                    str(small_city), "--update", "--quiet"])
    assert res.exit_code == 0 and "updated                 0" in res.output, res.output


def test_undo_leaves_the_store_as_before_the_import(small_city, tmp_path):
    from civicgrid.geo.store_files import copy_store
    from civicgrid.sites import cases as cs
    from civicgrid.sites.import_log import undo_import

    import_events(_file(tmp_path, "first.csv", FIRST), db=small_city, progress=False)
    before = tmp_path / "before.duckdb"
    copy_store(small_city, before)
    a5 = ["A5", "2024-03-11 09:00", "112.905", "28.205", "暴露垃圾", "处理中"]
    rep = import_events(_file(tmp_path, "more.csv", [*FIXED[3:], a5]), db=small_city, progress=False)
    assert rep.loaded == 2 and rep.rebounds_linked == 0
    res = CliRunner().invoke(main, ["imports", "list", "--db", str(small_city)])
    lines = res.output.splitlines()
    assert res.exit_code == 0 and lines[-1].split()[:2] == [str(rep.import_id), "events"]
    assert lines[-1].split()[4:10] == ["2", "2", "0", "0", "0", str(tmp_path / "more.csv")]
    res = CliRunner().invoke(main, ["imports", "undo", str(rep.import_id), "--db", str(small_city)])
    assert res.exit_code == 0 and "2 events, 2 cases removed" in res.output, res.output
    _assert_same(_state(small_city), _state(before))
    res = CliRunner().invoke(main, ["imports", "undo", str(rep.import_id), "--db", str(small_city)])
    assert res.exit_code == 2 and "undone already" in res.output
    assert "(undone " in CliRunner().invoke(main, ["imports", "list", "--db", str(small_city)]).output
    # the same file loads again after the undo; once a user moves one of its cases, undo refuses
    again = import_events(_file(tmp_path, "more.csv", FIXED[3:]), db=small_city, progress=False)
    assert again.loaded == 1
    case_id = int(Store(small_city).sql("SELECT case_id FROM cases c JOIN events e USING (event_id) "
                                        "WHERE e.external_id = 'A4'")["case_id"][0])
    cs.transition(small_city, case_id, "rectified", actor="张三")
    with pytest.raises(Exception, match=f"moved since \\({case_id}\\)"):
        undo_import(small_city, again.import_id)
    assert Store(small_city).sql("SELECT count(*) AS n FROM events")["n"][0] == 4


def test_addresses_are_matched_to_what_the_store_holds(small_city, tmp_path):
    from civicgrid.sites.event_places import normalize_address

    assert normalize_address("420 Berry St, SAN FRANCISCO, CA, 94107") == "420 BERRY STREET"
    assert normalize_address("湖南省长沙市 测试路１号") == normalize_address("测试路1号") == "测试路1号"
    known = pd.DataFrame({
        "编号": ["K1", "K2", "K3", "K4", "K5"], "时间": ["2024-03-08 15:00"] * 5,
        "经度": ["112.905", "112.9051", "112.915", "112.905", "112.915"],
        "纬度": ["28.205", "28.2051", "28.215", "28.205", "28.205"],
        "地址": ["420 BERRY ST", "420 Berry Street", "1 MAIN AVE", "9 WIDE RD", "9 WIDE RD"],
    })
    f = tmp_path / "known.csv"
    known.to_csv(f, index=False)
    import_events(f, db=small_city, progress=False)
    new = pd.DataFrame({"编号": ["U1", "U2", "U3", "U4"], "时间": ["2024-03-09 10:00"] * 4,
                        "经度": [""] * 4, "纬度": [""] * 4,
                        "地址": ["420 Berry St., San Francisco", "1 Main Avenue", "9 Wide Road", "77 Nowhere Ln"]})
    g = tmp_path / "new.csv"
    new.to_csv(g, index=False)
    rep = import_events(g, db=small_city, progress=False)
    assert (rep.loaded, rep.located, rep.located_by_address, rep.unlocated) == (4, 0, 2, 2)
    ev = Store(small_city).sql("SELECT external_id, lng, lat, grid_code, h3, located_by, location_confidence "
                               "FROM events WHERE external_id LIKE 'U%' ORDER BY 1").set_index("external_id")
    # U1: two stored points 14 m apart, their median; U2: one stored point; U3: 1 km apart -> ambiguous, unlocated
    assert ev.loc["U1", "lng"] == pytest.approx(112.90505) and ev.loc["U1", "location_confidence"] == 0.9
    assert ev.loc["U2", "grid_code"] == "430102001001004" and ev.loc["U2", "location_confidence"] == 0.7
    assert ev.loc[["U1", "U2"], "located_by"].tolist() == ["address", "address"] and ev.loc["U1", "h3"] > 0
    assert ev.loc[["U3", "U4"], "located_by"].isna().all() and ev.loc[["U3", "U4"], "h3"].isna().all()


def test_imports_list_and_undo_from_the_api_with_one_clock(small_city, tmp_path):
    """Part 4: GET /api/imports and POST /api/imports/{id}/undo (admin); started, finished and undone times are
    all the store's wall-clock time (geo/times.py), not the machine's or UTC."""
    import zoneinfo

    from civicgrid.api.app import create_app
    from civicgrid.geo.times import store_timezone
    from civicgrid.geo.users import add_user
    from fastapi.testclient import TestClient

    _, admin = add_user(small_city, "adm", role="admin")
    _, viewer = add_user(small_city, "vw", role="viewer")
    client = TestClient(create_app(small_city))
    as_admin, as_viewer = ({"Authorization": f"Bearer {t}"} for t in (admin, viewer))
    tz = zoneinfo.ZoneInfo(store_timezone(Store(small_city)))
    t0 = datetime.now(tz).replace(tzinfo=None, microsecond=0)  # the API writes whole seconds
    first = import_events(_file(tmp_path, "first.csv", FIRST), db=small_city, progress=False)
    more = import_events(_file(tmp_path, "more.csv", FIXED), db=small_city, progress=False)
    t1 = datetime.now(tz).replace(tzinfo=None)
    assert client.get("/api/imports", headers=as_viewer).status_code == 403
    r = client.get("/api/imports", headers=as_admin)
    assert r.status_code == 200, r.text
    rows = {x["import_id"]: x for x in r.json()["imports"]}
    got = rows[more.import_id]
    assert (got["layer"], got["rows_read"], got["loaded"], got["duplicates"], got["rejected"], got["updated"]) == (
        "events", 4, 1, 3, 0, 0)
    assert got["file"] == str(tmp_path / "more.csv") and got["undone_at"] is None
    for x in (rows[first.import_id], got):
        assert t0 <= datetime.fromisoformat(x["started_at"]) <= datetime.fromisoformat(x["finished_at"]) <= t1
    r = client.post(f"/api/imports/{more.import_id}/undo", headers=as_admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("import_id", "layer", "events", "cases", "sites", "inspections")} == {
        "import_id": more.import_id, "layer": "events", "events": 1, "cases": 1, "sites": 0, "inspections": 0}
    undone = datetime.fromisoformat(body["undone_at"])
    assert t1.replace(microsecond=0) <= undone <= datetime.now(tz).replace(tzinfo=None)  # the API: whole seconds
    listed = {x["import_id"]: x for x in client.get("/api/imports", headers=as_admin).json()["imports"]}
    assert datetime.fromisoformat(listed[more.import_id]["undone_at"]) == undone
    assert Store(small_city).sql("SELECT count(*) AS n FROM events")["n"][0] == 3
    # again: 422 (undone already); unknown: 404; beyond 64 bits: 422
    assert client.post(f"/api/imports/{more.import_id}/undo", headers=as_admin).status_code == 422
    assert client.post("/api/imports/999/undo", headers=as_admin).status_code == 404
    assert client.post(f"/api/imports/{2**64}/undo", headers=as_admin).status_code == 422
    # a case moved by a user: 409 naming it, nothing removed
    case_id = int(Store(small_city).sql("SELECT case_id FROM cases c JOIN events e USING (event_id) "
                                        "WHERE e.external_id = 'A1'")["case_id"][0])
    from civicgrid.sites import cases as cs

    cs.transition(small_city, case_id, "rectified", actor="张三")
    r = client.post(f"/api/imports/{first.import_id}/undo", headers=as_admin)
    assert r.status_code == 409 and f"({case_id})" in r.json()["detail"]
    assert Store(small_city).sql("SELECT count(*) AS n FROM events")["n"][0] == 3


def test_update_keeps_the_steps_of_cases_users_moved(small_city, tmp_path):
    """Part 4: a case moved by a user after the import keeps its state and every step when ``--update``
    replaces its event; it takes the corrected type, place and deadline. Undoing the update import is refused."""
    from civicgrid.sites import cases as cs
    from civicgrid.sites.cases.calendar import compute_deadlines

    first = import_events(_file(tmp_path, "first.csv", FIRST), db=small_city, progress=False)
    store = Store(small_city)
    case_id = int(store.sql("SELECT case_id FROM cases JOIN events USING (event_id) WHERE external_id = 'A2'")
                  ["case_id"][0])
    cs.transition(small_city, case_id, "rectified", actor="张三", at="2024-03-09 10:00", note="已清扫")
    log_before = Store(small_city).sql(f"SELECT * FROM case_log WHERE case_id = {case_id} ORDER BY log_id")
    assert log_before["actor"].tolist()[-1] == "张三"
    a1_steps = Store(small_city).sql("SELECT count(*) AS n FROM case_log JOIN cases USING (case_id) "
                                     "JOIN events USING (event_id) WHERE external_id = 'A1'")["n"][0]
    fixed = [[*FIXED[0][:5], "已办结"], *FIXED[1:]]  # A1 closed by the file (not moved by users: rebuilt)
    rep = import_events(_file(tmp_path, "fixed.csv", fixed), db=small_city, progress=False, update=True)
    assert (rep.loaded, rep.updated, rep.duplicates) == (1, 2, 1)
    assert any("except 1 cases users have moved since" in w for w in rep.warnings), rep.warnings
    store = Store(small_city)
    log_after = store.sql(f"SELECT * FROM case_log WHERE case_id = {case_id} ORDER BY log_id")
    pd.testing.assert_frame_equal(log_after, log_before)  # every step kept, the user's included
    case = store.sql(f"SELECT * FROM cases WHERE case_id = {case_id}").iloc[0]
    ev = store.sql("SELECT * FROM events WHERE external_id = 'A2'").iloc[0]
    assert case["state"] == "rectified" and case["problem_type"] == "0101" == ev["problem_type"]
    assert case["grid_code"] == ev["grid_code"] == "430102001001002"  # the corrected place
    expected = compute_deadlines(store, np.array([np.datetime64("2024-03-08T16:00")]), np.array(["0101"]))[0]
    assert case["deadline"] == ev["deadline"] == pd.Timestamp(expected)  # the new type's deadline
    assert ev["status"] == "open" and ev["rectified_at"] == pd.Timestamp("2024-03-09 10:00")  # the case's state
    # A1 (not moved by users) was rebuilt from the file: closed, its audit trail the import's own
    a1 = store.sql("SELECT c.state, count(l.log_id) AS n, min(l.actor) AS actor FROM cases c JOIN events e "
                   "USING (event_id) JOIN case_log l USING (case_id) WHERE e.external_id = 'A1' GROUP BY 1")
    assert a1["state"].tolist() == ["closed"] and a1["n"][0] == a1_steps + 2 and a1["actor"][0] == "import"
    with pytest.raises(Exception, match="updated 2 stored rows"):
        from civicgrid.sites.import_log import undo_import

        undo_import(small_city, rep.import_id)
    assert first.import_id != rep.import_id
