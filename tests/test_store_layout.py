"""The lake's file layout: `civicgrid maintain` compacts the events into files sorted by month, type and time
(so a heatmap's window and type skip row groups), and changes no row."""

from __future__ import annotations

import pandas as pd
from civicgrid.geo.store import Store
from civicgrid.geo.store_files import SORT_ORDER, _sort_steps, copy_store, maintain, sort_order

from conftest import plain_duckdb, store_digest


def _event_files(db) -> list[str]:
    con = plain_duckdb(db)
    try:
        return [r[0] for r in con.execute("SELECT data_file FROM ducklake_list_files('plain', 'events')").fetchall()]
    finally:
        con.close()


def test_maintain_sorts_the_events_by_month_type_and_time_and_changes_no_row(demo_db, tmp_path):
    db = copy_store(demo_db, tmp_path / "city.duckdb")
    store = Store(db)
    # Three more imports' worth of events, each in its own file, their times and types in no order.
    for batch in range(3):
        with store.write() as con:
            con.execute(f"""
                INSERT INTO events (event_id, source, problem_type, time, status, lng, lat, h3)
                SELECT 1000000 + {batch} * 5000 + event_id, source, problem_type,
                       time + INTERVAL ({batch + 1}) DAY, status, lng, lat, h3
                FROM events WHERE event_id <= 5000 ORDER BY hash(event_id + {batch})""")
    files_before = _event_files(db)
    assert len(files_before) >= 4
    digest = store_digest(db)
    with store.write() as con:
        assert sort_order(con, "events") == ()

    done = maintain(db, keep_days=30)

    assert store_digest(db) == digest  # every row as it was
    with store.write() as con:
        assert sort_order(con, "events") == SORT_ORDER["events"]
        assert _sort_steps(con) == []  # the next maintenance leaves the sort order alone
    files = _event_files(db)
    assert len(files) < len(files_before) and done["files_after"] < done["files_before"]
    con = plain_duckdb(db)
    try:
        for f in files:
            rows = con.execute(f"SELECT strftime(time, '%Y-%m') AS month, problem_type, time "
                               f"FROM read_parquet('{f}', file_row_number = true) "
                               f"ORDER BY file_row_number").df()
            expected = rows.sort_values(["month", "problem_type", "time"], kind="stable", na_position="last")
            pd.testing.assert_frame_equal(rows.reset_index(drop=True), expected.reset_index(drop=True))
    finally:
        con.close()
    maintain(db, keep_days=30)
    assert store_digest(db) == digest
