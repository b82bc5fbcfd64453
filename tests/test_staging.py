"""Imports stage their rows as Parquet files and publish them in one short write (civicgrid.geo.staging)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from civicgrid.geo import importing as imp
from civicgrid.geo import staging
from civicgrid.geo.store import Store, locate
from civicgrid.sites import cases as cs
from civicgrid.sites import events as sev
from civicgrid.sites.events import import_events

from conftest import store_digest


def _events(n: int, prefix: str = "E") -> pd.DataFrame:
    return pd.DataFrame({
        "单号": [f"{prefix}{i}" for i in range(n)],
        "时间": [f"2024-03-{1 + i % 28:02d} 10:00" for i in range(n)],
        "经度": [f"{112.901 + (i % 17) * 0.001:.4f}" for i in range(n)],
        "纬度": [f"{28.201 + (i % 13) * 0.001:.4f}" for i in range(n)],
        "问题类型": ["暴露垃圾"] * n,
    })


def _file(tmp_path, frame, name="e.parquet"):
    """A Parquet file (read in batches of IMPORT_BATCH_ROWS rows, where a CSV file comes in blocks of bytes)."""
    path = tmp_path / name
    frame.to_parquet(path, index=False)
    return path


def _staged_files(db):
    return sorted((locate(db).data_path / "main").glob(f"*/{staging.STAGED_PREFIX}*.parquet"))


def _leftovers(db):
    """Staged files the lake does not know."""
    return staging.leftover_files(Store(db).cursor(), locate(db))


def test_case_work_goes_on_while_an_import_stages_and_ids_never_collide(small_city, tmp_path, monkeypatch):
    monkeypatch.setattr(sev, "IMPORT_BATCH_ROWS", 10)
    path = _file(tmp_path, _events(40))
    in_import, release = threading.Event(), threading.Event()
    batches = imp.prefetch

    def slow(items):  # the import pauses after its second batch until the test has written cases
        for i, batch in enumerate(batches(items)):
            if i == 2:
                in_import.set()
                assert release.wait(60)
            yield batch

    monkeypatch.setattr(imp, "prefetch", slow)
    result = {}
    thread = threading.Thread(target=lambda: result.update(report=import_events(
        path, db=small_city, mapping={"id": "单号", "time": "时间"}, progress=False)))
    thread.start()
    try:
        assert in_import.wait(60)
        store = Store(small_city)
        assert store.sql("SELECT count(*) AS n FROM events")["n"].iloc[0] == 0  # nothing published yet
        deadline = time.monotonic() + 30  # the second batch's file is written on the staging thread
        while len(_staged_files(small_city)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_staged_files(small_city)) == 2
        started = time.perf_counter()
        made = [cs.create_case(small_city, actor="巡查员", problem_type="0101", lng=112.905, lat=28.205,
                               time="2024-03-02 09:00") for _ in range(3)]
        assert time.perf_counter() - started < 30  # not queued behind the import (it is paused)
        assert store.sql("SELECT count(*) AS n FROM events")["n"].iloc[0] == 3
    finally:
        release.set()
        thread.join(120)
    report = result["report"]
    assert report.loaded == 40 and report.cases_created == 40
    ev = Store(small_city).sql("SELECT event_id, dedup_key FROM events ORDER BY event_id")
    assert len(ev) == 43 and ev["event_id"].is_unique
    mine = {c["case_id"] for c in made}
    assert mine <= set(ev["event_id"]) and ev.loc[ev.event_id.isin(mine), "dedup_key"].str.startswith("case:").all()
    cases = Store(small_city).sql("SELECT case_id, event_id FROM cases")
    assert len(cases) == 43 and (cases.case_id == cases.event_id).all()
    # the reservations are gone once published: the next id follows the stored ones
    assert Store(small_city).meta("ids.events") is None
    assert _staged_files(small_city)  # the published files are the lake's now: not leftovers
    assert not _leftovers(small_city)
    assert not staging.remove_leftovers(small_city)
    # one file of events, one of their cases and one of their audit rows per batch of the import
    tables = [f.parent.name for f in _staged_files(small_city)]
    assert sorted(set(tables)) == ["case_log", "cases", "events"]
    assert tables.count("events") == tables.count("cases") == tables.count("case_log") == 4


def test_duplicates_across_batches_of_one_import_are_found(small_city, tmp_path, monkeypatch):
    monkeypatch.setattr(sev, "IMPORT_BATCH_ROWS", 7)
    frame = _events(20)
    frame = pd.concat([frame, frame.iloc[[0, 3, 19]]], ignore_index=True)  # repeats in later batches
    report = import_events(_file(tmp_path, frame), db=small_city, mapping={"id": "单号", "time": "时间"},
                           progress=False)
    assert (report.rows_read, report.loaded, report.duplicates) == (23, 20, 3)
    again = import_events(_file(tmp_path, frame, "again.parquet"), db=small_city,
                          mapping={"id": "单号", "time": "时间"}, progress=False)
    assert (again.loaded, again.duplicates) == (0, 23)
    assert Store(small_city).sql("SELECT count(*) AS n FROM events")["n"].iloc[0] == 20


def test_an_import_reserves_the_ids_of_its_file_in_one_write(small_city, tmp_path, monkeypatch):
    monkeypatch.setattr(sev, "IMPORT_BATCH_ROWS", 10)
    writes, real = [], staging.reserve_ids
    monkeypatch.setattr(staging, "reserve_ids",
                        lambda db, table, column, n: writes.append((table, n)) or real(db, table, column, n))
    report = import_events(_file(tmp_path, _events(40)), db=small_city, mapping={"id": "单号", "time": "时间"},
                           progress=False)
    assert report.loaded == 40
    # four batches, one reservation of the file's 40 rows (a Parquet file knows its row count)
    assert [w for w in writes if w[0] == "events"] == [("events", 40)]
    ev = Store(small_city).sql("SELECT event_id, external_id FROM events ORDER BY event_id")
    assert ev["event_id"].tolist() == list(range(ev["event_id"].iloc[0], ev["event_id"].iloc[0] + 40))
    assert ev["external_id"].tolist() == [f"E{i}" for i in range(40)]  # in the file's order
    assert Store(small_city).meta("ids.events") is None  # released when published


def test_ids_reserved_ahead_are_handed_out_in_order_and_given_back(small_city):
    with staging.importing(small_city) as stage:
        first = stage.reserve("events", "event_id", 5, ahead=10)
        assert Store(small_city).meta("ids.events") == str(first + 15)  # one write for all 15
        assert stage.reserve("events", "event_id", 4) == first + 5  # from the ids reserved ahead
        assert stage.reserve("events", "event_id", 5) == first + 9
        assert Store(small_city).meta("ids.events") == str(first + 15)  # no write for those
        # more than is left: a new reservation after the first one (the one id left is skipped)
        assert stage.reserve("events", "event_id", 2) == first + 15
        assert Store(small_city).meta("ids.events") == str(first + 17)
        stage.discard()
    assert Store(small_city).meta("ids.events") is None


def test_a_failed_import_leaves_no_rows_files_or_reservations(small_city, tmp_path, monkeypatch):
    monkeypatch.setattr(sev, "IMPORT_BATCH_ROWS", 5)
    import_events(_file(tmp_path, _events(6, "OLD")), db=small_city, mapping={"id": "单号", "time": "时间"},
                  progress=False)
    before, files = store_digest(small_city), _staged_files(small_city)
    real = sev._finish_batch
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(sev, "_finish_batch", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        import_events(_file(tmp_path, _events(30)), db=small_city, mapping={"id": "单号", "time": "时间"},
                      progress=False)
    assert store_digest(small_city) == before
    assert _staged_files(small_city) == files  # the failed import's own files are gone


@pytest.mark.parametrize("threads", [0, 2])
def test_an_import_failing_while_a_batch_is_prepared_publishes_nothing(small_city, tmp_path, monkeypatch, threads):
    """A batch prepared on a thread (or in turn) that fails: the error reaches the caller after the batches
    before it were staged, and nothing of the import is published."""
    monkeypatch.setattr(sev, "IMPORT_BATCH_ROWS", 5)
    monkeypatch.setenv("CIVICGRID_IMPORT_THREADS", str(threads))
    import_events(_file(tmp_path, _events(6, "OLD")), db=small_city, mapping={"id": "单号", "time": "时间"},
                  progress=False)
    before, files = store_digest(small_city), _staged_files(small_city)
    real = sev._prepare_batch
    prepared = []

    def failing(batch, ctx):
        first = batch.column("__row__")[0].as_py()
        prepared.append(first)
        if first > 15:  # the fourth batch and those after it, however often they are prepared
            raise RuntimeError("bad disk sector")
        return real(batch, ctx)

    monkeypatch.setattr(sev, "_prepare_batch", failing)
    with pytest.raises(RuntimeError, match="bad disk sector"):
        import_events(_file(tmp_path, _events(30)), db=small_city, mapping={"id": "单号", "time": "时间"},
                      progress=False)
    assert {r for r in prepared if r <= 15} == {1, 6, 11}  # the batches before it were prepared
    assert store_digest(small_city) == before
    assert _staged_files(small_city) == files


def test_files_of_a_killed_import_are_removed_by_the_next_one(small_city, tmp_path, monkeypatch):
    import_events(_file(tmp_path, _events(3, "OLD")), db=small_city, mapping={"id": "单号", "time": "时间"},
                  progress=False)
    # what a killed import leaves: a staged file the lake does not know (and a reservation in meta)
    stage = staging.Staging(small_city)
    stage.reserve("events", "event_id", 1000)
    import pyarrow as pa
    stage.add("events", pa.table({"event_id": [10_000], "source": ["complaint"],
                                  "time": [pd.Timestamp("2024-03-01")]}))
    stage.wait()
    stage.close()
    left = _leftovers(small_city)
    assert len(left) == 1
    report = import_events(_file(tmp_path, _events(4)), db=small_city, mapping={"id": "单号", "time": "时间"},
                           progress=False)
    assert report.loaded == 4
    assert not left[0].exists()
    ids = Store(small_city).sql("SELECT event_id FROM events ORDER BY 1")["event_id"].tolist()
    assert len(ids) == 7 and 10_000 not in ids


def test_maintain_removes_import_leftovers_unless_an_import_runs(small_city, tmp_path):
    from civicgrid.geo.store_files import maintain

    stage = staging.Staging(small_city)
    import pyarrow as pa
    stage.add("events", pa.table({"event_id": [1], "source": ["complaint"], "time": [pd.Timestamp("2024-03-01")]}))
    stage.wait()
    stage.close()
    assert len(_leftovers(small_city)) == 1
    with staging._import_lock(locate(small_city)):  # an import is running: its files are not touched
        assert staging.remove_leftovers(small_city, wait=False) is None
        assert len(_leftovers(small_city)) == 1
    done = maintain(small_city, keep_days=30)
    assert done["import_leftovers_removed"] == 1 and not _leftovers(small_city)


def test_the_service_maintains_the_store_on_a_schedule(small_city, tmp_path, monkeypatch):
    from civicgrid.geo import store_files

    for k in range(4):  # small imports: one Parquet file each, to be merged
        import_events(_file(tmp_path, _events(1200, f"B{k}-"), f"b{k}.parquet"), db=small_city,
                      mapping={"id": "单号", "time": "时间"}, progress=False)
    before = len(list((locate(small_city).data_path / "main" / "events").glob("*.parquet")))
    runs = []
    real = store_files.maintain
    monkeypatch.setattr(store_files, "maintain", lambda db, **kw: runs.append(real(db, **kw)))
    stop = store_files.maintain_periodically(small_city, every_hours=0.5 / 3600, first_after_s=0.1, keep_days=0)
    try:
        deadline = time.monotonic() + 120
        while len(runs) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
    assert len(runs) >= 2 and runs[0]["snapshots_expired"] > 0
    assert len(list((locate(small_city).data_path / "main" / "events").glob("*.parquet"))) < before
    assert Store(small_city).sql("SELECT count(*) AS n FROM events")["n"].iloc[0] == 4800
    with pytest.raises(ValueError, match="every_hours"):
        store_files.maintain_periodically(small_city, every_hours=0)


def test_a_locked_import_is_one_transaction(small_city):
    import pyarrow as pa

    with staging.importing(small_city, locked=True) as stage:
        first = stage.reserve("events", "event_id", 2)
        assert stage.reserve("events", "event_id", 1) == first + 2  # ids follow on in the transaction
        stage.add("events", pa.table({"event_id": [first, first + 1], "source": ["complaint"] * 2,
                                      "time": [pd.Timestamp("2024-03-01")] * 2}))
        with stage.publish() as con:
            assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 2  # the transaction sees them
            assert Store(small_city).sql("SELECT count(*) AS n FROM events")["n"].iloc[0] == 0  # others do not
    assert Store(small_city).sql("SELECT count(*) AS n FROM events")["n"].iloc[0] == 2
    assert not _staged_files(small_city)


def test_remove_store_takes_the_imports_lock_file_too(small_city, tmp_path):
    from civicgrid.geo.store_files import remove_store

    import_events(_file(tmp_path, _events(3)), db=small_city, mapping={"id": "单号", "time": "时间"}, progress=False)
    assert Path(f"{small_city}.lock.import").exists()
    remove_store(small_city)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("city.duckdb")) == []


def test_event_times_outside_the_plausible_window_are_rejects(small_city, tmp_path):
    frame = _events(3)
    frame.loc[1, "时间"] = "1980-01-01 10:00"
    frame.loc[2, "时间"] = "2200-01-01 10:00"
    report = import_events(_file(tmp_path, frame), db=small_city, mapping={"id": "单号", "time": "时间"},
                           progress=False)
    assert (report.rows_read, report.loaded, report.rejected) == (3, 1, 2)
    reasons = [r["reason"] for r in report.rejects]
    assert all("outside the plausible window 1990-01-01.." in r for r in reasons), reasons


def test_staged_columns_are_written_by_arrow_only_when_no_value_needs_converting():
    import pyarrow as pa

    types = {"a": "BIGINT", "b": "VARCHAR", "t": "TIMESTAMP", "h": "UBIGINT", "g": "GEOMETRY"}
    schema = staging.arrow_schema(pa.schema([("a", pa.int64()), ("b", pa.dictionary(pa.int8(), pa.string())),
                                             ("t", pa.timestamp("s")), ("h", pa.null())]), types)
    assert schema == pa.schema([("a", pa.int64()), ("b", pa.dictionary(pa.int8(), pa.string())),
                                ("t", pa.timestamp("us")), ("h", pa.uint64())])
    for other in [("a", pa.string()),  # text into a number: DuckDB's cast decides what it means
                  ("a", pa.int32()), ("t", pa.timestamp("us", tz="UTC")), ("g", pa.binary()), ("x", pa.int64())]:
        assert staging.arrow_schema(pa.schema([other]), types) is None, other


_BOUNDS = """
    SELECT c.column_name, s.value_count, s.null_count, s.min_value, s.max_value
    FROM __ducklake_metadata_lake.ducklake_file_column_stats s
    JOIN __ducklake_metadata_lake.ducklake_table t USING (table_id)
    JOIN __ducklake_metadata_lake.ducklake_column c ON c.table_id = s.table_id AND c.column_id = s.column_id
    WHERE t.table_name = '{table}' AND c.column_name NOT IN ('import_id', 'updated_at') AND c.end_snapshot IS NULL
    ORDER BY ALL
"""


@pytest.mark.parametrize("cases", [False, True])
def test_events_staged_by_arrow_are_stored_as_duckdb_would_store_them(tmp_path, monkeypatch, cases):
    """The same file imported into two copies of one city, its staged files written by Arrow (the fast path)
    and by DuckDB's COPY: the stores hold the same rows, and the lake records the same bounds of every column of
    the file; Arrow's files have DuckDB's row groups. With cases, the staged events carry their deadlines, and
    the events are written again with their cases and audit rows (by Arrow, or DuckDB), the same bounds too."""
    import pyarrow.parquet as pq

    from conftest import build_small_city

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = build_small_city(tmp_path / "a" / "city.duckdb", tmp_path / "a"), \
        build_small_city(tmp_path / "b" / "city.duckdb", tmp_path / "b")
    monkeypatch.setattr(staging, "ROW_GROUP_ROWS", 16)
    frame = _events(50)
    frame.loc[3, "经度"] = "not a number"  # a reject
    frame.loc[7, "问题类型"] = "没有这种类型"  # a label that is no type
    frame.loc[9, "时间"] = "2024-03-05 10:00:00+08:00"
    path = _file(tmp_path, frame)
    written = []
    real_write = pq.write_table

    def write(table, where, **kw):
        real_write(table, where, **kw)
        written.append(pq.ParquetFile(where).metadata.num_row_groups)

    monkeypatch.setattr(pq, "write_table", write)
    mapping = {"id": "单号", "time": "时间"}
    fast = import_events(path, db=a, mapping=mapping, progress=False, cases=cases)
    # 49 rows in row groups of 16; with cases, the events again, their cases and audit rows (any order)
    assert written[0] == 4 and sorted(written[1:]) == ([4, 4, 10] if cases else [])
    monkeypatch.setattr(staging, "arrow_schema", lambda data, types: None)
    written.clear()
    slow = import_events(path, db=b, mapping=mapping, progress=False, cases=cases)
    assert not written
    assert (fast.loaded, fast.rejected) == (slow.loaded, slow.rejected) == (49, 1)
    query = "SELECT * EXCLUDE (import_id) FROM events ORDER BY event_id"
    pd.testing.assert_frame_equal(Store(a).sql(query), Store(b).sql(query))
    types = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'events' ORDER BY 1"
    pd.testing.assert_frame_equal(Store(a).sql(types), Store(b).sql(types))
    bounds = Store(a).sql(_BOUNDS.format(table="events"))
    assert set(bounds["column_name"]) >= {"event_id", "time", "text", "h3", "grid_code", "problem_type"}
    pd.testing.assert_frame_equal(bounds, Store(b).sql(_BOUNDS.format(table="events")))
    for table in ["cases", "case_log"] if cases else []:
        bounds = Store(a).sql(_BOUNDS.format(table=table))
        assert len(bounds) >= 8
        pd.testing.assert_frame_equal(bounds, Store(b).sql(_BOUNDS.format(table=table)))


def test_a_batch_with_a_text_arrow_would_leave_without_bounds_is_written_by_duckdb():
    import pyarrow as pa

    types = {"text": "VARCHAR", "code": "VARCHAR"}
    short = pa.table({"text": ["投诉" * 100, None], "code": pa.array(["a", "b"]).dictionary_encode()})
    assert staging.arrow_writes(short, types) is not None
    long = pa.table({"text": ["x" * (staging.MAX_ARROW_TEXT_BYTES + 1), "y"], "code": ["a", "b"]})
    assert staging.arrow_writes(long, types) is None
    long_label = pa.table({"text": ["x", "y"], "code": pa.array(["a" * 5000, "b"]).dictionary_encode()})
    assert staging.arrow_writes(long_label, types) is None


def test_next_id_reads_the_true_maximum_whatever_bound_it_starts_from(small_city, tmp_path, monkeypatch):
    """next_id reads max(id) above a remembered bound (the newest rows only); a bound that is wrong either way
    (too high: rows removed, a store made again at the path; too low: ids added by another process) still gives
    the stored maximum + 1, compared with a plain max() read by a reader."""
    import_events(_file(tmp_path, _events(30)), db=small_city, mapping={"id": "单号", "time": "时间"},
                  progress=False)
    from civicgrid.geo.store import writing

    def truth() -> int:
        return int(Store(small_city).sql("SELECT max(event_id) AS m FROM events")["m"].iloc[0]) + 1

    expected = truth()
    with writing(small_city) as con:
        catalog = staging._catalog_path(con)
        key = (catalog, "events", "event_id")
        for bound in (None, 0, 1, expected - 5, expected - 1, expected, expected + 1000):
            if bound is None:  # first read of this process: the catalog's recorded maximum as the bound
                staging._TOPS.pop(key, None)
            else:
                staging._TOPS[key] = bound
            assert staging.next_id(con, "events", "event_id") == expected, bound
            assert staging._TOPS[key] == expected - 1  # remembered: the stored maximum
        staging._TOPS.clear()  # several tables in one statement: as read one by one, and as a reader reads them
        both = staging.next_ids(con, [("events", "event_id"), ("case_log", "log_id")])
        log_top = Store(small_city).sql("SELECT coalesce(max(log_id), 0) AS m FROM case_log")["m"].iloc[0]
        assert both == {"events": expected, "case_log": int(log_top) + 1}
        assert both["case_log"] == staging.next_id(con, "case_log", "log_id")
        con.execute("DELETE FROM events WHERE event_id >= ?", [expected - 3])  # the newest rows go
        assert staging.next_id(con, "events", "event_id") == expected - 3  # bound above all: found out
        con.execute("ROLLBACK")  # the write is given up (writing() then has nothing to commit)
        con.execute("BEGIN TRANSACTION")
    assert truth() == expected
    # ids reserved by an import in progress count, read in the same statement
    with staging.importing(small_city) as stage:
        first = stage.reserve("events", "event_id", 5)
        assert first == expected
        with writing(small_city) as con:
            assert staging.next_id(con, "events", "event_id") == expected + 5
        stage.discard()
