"""Benchmark of case writes on a demo city: one transition (copy-and-publish), case creation, the backfill,
rebound linking and the KPI queries, against references measured in the same run.

Usage::

    .venv/bin/python bench/cases_bench.py [--events 200000] [--dir /tmp/cases-bench] [--repeat 5] [--only-bulk]

The backfill (every event becomes a case with its audit trail) is compared with copying the rows it writes
(``CREATE TEMP TABLE … AS SELECT * FROM cases`` and ``… FROM case_log``); rebound linking of every case
(``link_rebounds`` with all links cleared) with reading the cases' points into numpy and sorting them once
by (type, time), the least any sort-based linking does. Peak RSS of the process is printed at the end.

A transition runs in one :func:`civicgrid.geo.store.writing` transaction on the DuckLake store: the UPDATE of
the case and of its event, the audit-trail row, the commit to the catalog. The reference is the smallest
write there is: one ``writing`` block inserting one row into ``meta`` (the cost of a transaction's commit).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from civicgrid.data.demo import build_demo
from civicgrid.geo.store import Store, writing
from civicgrid.geo.store_files import remove_store
from civicgrid.sites import cases as cs
from civicgrid.sites.kpis import kpi_table, site_flags


def _median_ms(func, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        func()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--dir", default="/tmp/cases-bench")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only-bulk", action="store_true", help="time the backfill and rebound linking only")
    args = ap.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / f"demo-{args.events}.duckdb"
    remove_store(db)
    t = time.perf_counter()
    build_demo(db, events=args.events, seed=0, progress=False)
    build_s = time.perf_counter() - t
    store = Store(db)
    n_cases = int(store.sql("SELECT count(*) AS n FROM cases")["n"].iloc[0])
    n_log = int(store.sql("SELECT count(*) AS n FROM case_log")["n"].iloc[0])
    size_mb = db.stat().st_size / 1e6
    print(f"demo city: {args.events:,} events, {n_cases:,} cases, {n_log:,} audit rows, {size_mb:.0f} MB, "
          f"built in {build_s:.1f} s")
    with writing(db) as con:  # time the backfill alone on a copy: drop and rebuild the cases
        t = time.perf_counter()
        con.execute("CREATE TEMP TABLE _copy_cases AS SELECT * FROM cases")
        con.execute("CREATE TEMP TABLE _copy_log AS SELECT * FROM case_log")
        copy_rows_s = time.perf_counter() - t
        con.execute("DROP TABLE _copy_cases")
        con.execute("DROP TABLE _copy_log")
        con.execute("DELETE FROM case_log")
        con.execute("DELETE FROM cases")
        t = time.perf_counter()
        cs.backfill(con, actor="demo")
        backfill_s = time.perf_counter() - t
        con.execute("UPDATE cases SET rebound_of = NULL")  # link every case again, as an import of them all would
        t = time.perf_counter()
        pts = con.execute("SELECT t.t, epoch_us(c.found_at) AS found, epoch_us(c.closed_at) AS closed, e.lat, "
                          "e.lng FROM cases c JOIN events e ON e.event_id = c.event_id JOIN (SELECT code, "
                          "row_number() OVER (ORDER BY code) AS t FROM problem_types) t ON t.code = c.problem_type"
                          ).fetchnumpy()
        np.lexsort((pts["found"], pts["t"]))
        sort_s = time.perf_counter() - t
        del pts
        t = time.perf_counter()
        linked = cs.link_rebounds(con)
        link_s = time.perf_counter() - t
        con.execute("ROLLBACK")  # keep the demo's own links
        con.execute("BEGIN TRANSACTION")
    print(f"  backfill (cases + audit trail, SQL)  {backfill_s * 1000:8.0f} ms   ratio to copying its rows "
          f"({copy_rows_s * 1000:.0f} ms) {backfill_s / copy_rows_s:.1f}x")
    print(f"  link_rebounds, every case            {link_s * 1000:8.0f} ms   ratio to reading + sorting the points "
          f"({sort_s * 1000:.0f} ms) {link_s / sort_s:.1f}x; {linked:,} links")
    if args.only_bulk:
        print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1048576:.2f} GB")
        return
    site = int(store.sql("SELECT min(site_id) AS s FROM sites")["s"].iloc[0])
    def one_row() -> None:
        with writing(db) as con:
            con.execute("INSERT INTO meta VALUES ('bench', 'x')")

    copy_ms = _median_ms(one_row, args.repeat)
    ids = []
    create_ms = _median_ms(lambda: ids.append(cs.create_case(db, actor="bench", problem_type="0101",
                                                             site_id=site)["case_id"]), args.repeat)
    it = iter(ids)
    move_ms = _median_ms(lambda: cs.transition(db, next(it), "register", actor="bench"), args.repeat)
    kpi_ms = _median_ms(lambda: kpi_table(store, start="2025-03-01", end="2025-04-01", level="grid"), args.repeat)
    kpi_all_ms = _median_ms(lambda: kpi_table(store, start="2024-01-01", end="2026-01-01", level="street"),
                            args.repeat)
    flags_ms = _median_ms(lambda: site_flags(store, as_of="2025-12-01"), args.repeat)
    print(f"  one-row write (reference)           {copy_ms:8.0f} ms")
    print(f"  one transition                       {move_ms:8.0f} ms   ratio to one-row write {move_ms / copy_ms:.1f}x")
    print(f"  create case (new event + locate)     {create_ms:8.0f} ms   "
          f"ratio to one-row write {create_ms / copy_ms:.1f}x")
    print(f"  kpi_table grid, one month            {kpi_ms:8.0f} ms")
    print(f"  kpi_table street, two years          {kpi_all_ms:8.0f} ms")
    print(f"  site_flags (90 days)                 {flags_ms:8.0f} ms")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1048576:.2f} GB")


if __name__ == "__main__":
    main()
