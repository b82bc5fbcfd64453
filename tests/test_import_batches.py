"""An events import prepares its batches on threads (civicgrid.sites.events.prepare_threads): the stores, the
reports and the lake's recorded bounds are those of preparing and finishing each batch in turn."""

from __future__ import annotations

import pandas as pd
import pytest
from civicgrid.geo.store import Store
from civicgrid.geo.times import file_date_order
from civicgrid.sites import events as sev
from civicgrid.sites.events import import_events

from conftest import build_small_city

_BOUNDS = """
    SELECT c.column_name, s.value_count, s.null_count, s.min_value, s.max_value
    FROM __ducklake_metadata_lake.ducklake_file_column_stats s
    JOIN __ducklake_metadata_lake.ducklake_table t USING (table_id)
    JOIN __ducklake_metadata_lake.ducklake_column c ON c.table_id = s.table_id AND c.column_id = s.column_id
    WHERE t.table_name = 'events' AND c.column_name <> 'import_id' AND c.end_snapshot IS NULL
    ORDER BY ALL
"""


def _rows(n: int, prefix: str, *, first: int = 0) -> pd.DataFrame:
    i = range(first, first + n)
    return pd.DataFrame({
        "单号": [f"{prefix}{k}" for k in i],
        "时间": [f"2024-03-{1 + k % 28:02d} {k % 24:02d}:15:00" for k in i],
        "经度": [f"{112.901 + (k % 17) * 0.001:.4f}" for k in i],
        "纬度": [f"{28.201 + (k % 13) * 0.001:.4f}" for k in i],
        "问题类型": ["暴露垃圾" if k % 5 else "0102" for k in i],
        "状态": ["已办结" if k % 3 else "处理中" for k in i],
        "区域": [None] * n,
        "内容": [f" 第{k}号 投诉 " if k % 4 else f"投诉{k}" for k in i],
    })


def _messy() -> pd.DataFrame:
    """Rows of every kind an import meets, spread over many batches: rejects, duplicates within a batch, across
    batches and of stored rows, unknown labels and statuses, rows placed by their area, cells to trim, and
    day-first dates decided by a batch after the first (later batches hold only dates that need it)."""
    frame = _rows(70, "N")
    frame.loc[2, "经度"] = "not a number"
    frame.loc[5, "时间"] = None
    frame.loc[8, "时间"] = "yesterday"
    frame.loc[9, "时间"] = "1899-01-01 10:00"
    frame.loc[11, "经度"] = "113.5"  # outside the city
    frame.loc[12, ["经度", "纬度"]] = None
    frame.loc[12, "区域"] = "430102001001"  # no point: placed by its area
    frame.loc[13, ["经度", "纬度"]] = None  # no point and no area: rejected
    frame.loc[15, "问题类型"] = "没有这种类型"
    frame.loc[16, "状态"] = "挂起"
    frame.loc[17, "单号"] = "N16"  # a duplicate in the same batch (batches of 7 rows)
    frame.loc[30, "单号"] = "N3"  # a duplicate of an earlier batch
    frame.loc[31, "单号"] = "OLD1"  # a duplicate of a stored row
    frame.loc[33, "单号"] = "  "  # no id: keyed by its content
    frame.loc[40, "时间"] = "13/03/2024 10:00"  # decides: day first
    frame.loc[44, "时间"] = "tomorrow"  # the next batch has none, but its reason names the order
    late = frame.index >= 49
    frame.loc[late, "时间"] = [f"{1 + k % 12:02d}/{1 + k % 12:02d}/2024 0{k % 10}:30" if k % 2 else
                               f"0{1 + k % 9}/1{k % 3}/2024 10:00" for k in range(late.sum())]
    frame.loc[50, "内容"] = "\u3000全角空格\u3000"
    frame.loc[51, "内容"] = ""
    return frame


def _import(db, path, threads, monkeypatch, **kw):
    monkeypatch.setenv("CIVICGRID_IMPORT_THREADS", str(threads))
    report = import_events(path, db=db, mapping={"id": "单号", "time": "时间", "type": "问题类型", "status": "状态",
                                                 "area": "区域", "text": "内容"},
                           progress=False, cases=False, **kw)
    d = report.to_dict()
    d.pop("import_id")
    d.pop("file")
    return d


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_batches_prepared_on_threads_store_what_batches_in_turn_store(tmp_path, monkeypatch, threads):
    monkeypatch.setattr(sev, "IMPORT_BATCH_ROWS", 7)
    stores = []
    for name in ("plain", "threads"):
        (tmp_path / name).mkdir()
        db = build_small_city(tmp_path / name / "city.duckdb", tmp_path / name)
        old = tmp_path / name / "old.parquet"
        _rows(3, "OLD").to_parquet(old, index=False)
        _import(db, old, 0, monkeypatch)
        stores.append(db)
    path = tmp_path / "messy.parquet"
    _messy().to_parquet(path, index=False)
    plain = _import(stores[0], path, 0, monkeypatch)
    fast = _import(stores[1], path, threads, monkeypatch)
    assert plain == fast
    assert plain["rows_read"] == 70 and plain["duplicates"] == 3 and plain["located_by_area"] == 1
    assert {r["field"] for r in plain["rejects"]} >= {"time", "lat/lng", "lng"}
    assert any("day first" in w for w in plain["warnings"])
    assert {r["reason"] for r in plain["rejects"] if r["row"] == 45} == {
        "unparseable time 'tomorrow'; the column is read day first (dmy)"}
    assert plain["unmapped_types"] == {"没有这种类型": 1}
    query = "SELECT * EXCLUDE (import_id) FROM events ORDER BY event_id"
    a, b = Store(stores[0]).sql(query), Store(stores[1]).sql(query)
    assert len(a) == 3 + plain["loaded"]
    pd.testing.assert_frame_equal(a, b)
    assert a.loc[a.external_id == "N50", "text"].iloc[0] == "全角空格"
    pd.testing.assert_frame_equal(Store(stores[0]).sql(_BOUNDS), Store(stores[1]).sql(_BOUNDS))


@pytest.mark.parametrize("threads", [0, 2])
def test_a_date_order_given_to_the_running_import_reaches_the_threads(small_city, tmp_path, monkeypatch, threads):
    """``file_date_order`` (the CLI's ``--date-order`` for importers that do not take it) is a context variable:
    batches prepared on threads read it too."""
    monkeypatch.setattr(sev, "IMPORT_BATCH_ROWS", 5)
    frame = _rows(20, "D")
    frame["时间"] = [f"0{1 + k % 9}/0{1 + k % 3}/2024 10:00" for k in range(20)]  # no value decides
    path = tmp_path / "d.parquet"
    frame.to_parquet(path, index=False)
    real, prepared = sev._prepare_batch, []
    monkeypatch.setattr(sev, "_prepare_batch", lambda batch, ctx: prepared.append(1) or real(batch, ctx))
    with file_date_order("dmy"):
        report = _import(small_city, path, threads, monkeypatch)
    assert report["loaded"] == 20
    assert len(prepared) == 4  # each batch once (not failed on a thread, then prepared again)
    times = Store(small_city).sql("SELECT external_id, time FROM events ORDER BY event_id")
    assert times["time"].iloc[1] == pd.Timestamp("2024-02-02 10:00")
    assert times["time"].iloc[2] == pd.Timestamp("2024-03-03 10:00")
    assert times["time"].iloc[4] == pd.Timestamp("2024-02-05 10:00")  # 05/02: day first


def test_batches_are_prepared_on_threads_only_when_the_machine_is_not_busy(monkeypatch):
    monkeypatch.delenv("CIVICGRID_IMPORT_THREADS", raising=False)  # the setting left as it is by default: -1
    monkeypatch.setattr(sev.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(sev.os, "getloadavg", lambda: (0.6, 3.0, 3.0))
    assert sev.prepare_threads() == 2
    monkeypatch.setattr(sev.os, "getloadavg", lambda: (1.8, 3.0, 3.0))  # what an earlier import leaves: not busy
    assert sev.prepare_threads() == 2
    monkeypatch.setattr(sev.os, "getloadavg", lambda: (2.0, 0.5, 0.5))  # the last minute's load counts
    assert sev.prepare_threads() == 0
    monkeypatch.setenv("CIVICGRID_IMPORT_THREADS", "3")  # set: used as it is
    assert sev.prepare_threads() == 3
    monkeypatch.delenv("CIVICGRID_IMPORT_THREADS", raising=False)
    monkeypatch.setattr(sev.os, "cpu_count", lambda: 1)
    monkeypatch.setattr(sev.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert sev.prepare_threads() == 0


@pytest.mark.parametrize(("name", "options"), [
    ("us_sf311/sf311_cases_sample_10000.csv",  # "(lat, lon)" points, month-first times, addresses, 24 without points
     {"point": "Point", "mapping": {"time": "Opened", "id": "CaseID", "type": "Category", "status": "Status"},
      "tz": "America/Los_Angeles"}),
    ("us_nyc311_small/nyc311_2023-12_sample.csv",  # quoted newlines, 68 rows without coordinates
     {"mapping": {"lat": "latitude", "lng": "longitude", "time": "created_date", "id": "unique_key",
                  "text": "descriptor"}, "tz": "America/New_York"}),
])
def test_real_311_files_in_many_batches_store_the_same_on_threads(tmp_path, shared, monkeypatch, name, options):
    """Real city files read in many small batches (CSV blocks of 64 KB): on two threads as in turn."""
    from civicgrid.geo import _csv

    monkeypatch.setattr(_csv, "BLOCK_BYTES", 1 << 16)
    monkeypatch.setattr(sev, "IMPORT_BATCH_ROWS", 50)  # a batch per block (64 KB: 60 to 300 rows)
    real, batches = sev._prepare_batch, []
    monkeypatch.setattr(sev, "_prepare_batch", lambda batch, ctx: batches.append(1) or real(batch, ctx))
    got = []
    for threads in (0, 2):
        monkeypatch.setenv("CIVICGRID_IMPORT_THREADS", str(threads))
        db = tmp_path / f"city{threads}.duckdb"
        report = import_events(shared / name, db=db, progress=False, cases=False, **options).to_dict()
        report.pop("import_id")
        got.append((report, Store(db).sql("SELECT * EXCLUDE (import_id) FROM events ORDER BY event_id"),
                    Store(db).sql(_BOUNDS)))
    (plain, rows, bounds), (fast, fast_rows, fast_bounds) = got
    assert plain == fast
    assert len(batches) >= 2 * 5 and plain["loaded"] == len(rows) > 0  # 5 batches or more per import
    pd.testing.assert_frame_equal(rows, fast_rows)
    pd.testing.assert_frame_equal(bounds, fast_bounds)
