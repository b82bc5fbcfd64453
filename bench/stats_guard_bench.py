"""Cost of reading a store without the optimizations that trust the lake's table-level column statistics.

Usage::

    .venv/bin/python bench/stats_guard_bench.py [--events 1000000] [--dir /tmp/stats_guard_bench] [--repeats 12]

DuckLake 1.5.5 can record a table's min/max of a column narrower than the values stored (bench/DUCKLAKE.md
section 10); DuckDB's ``compressed_materialization`` and ``statistics_propagation`` optimizers then read wrong
values. civicgrid disables both on every connection (``geo.store.SAFE_OPTIMIZER_SETTINGS``). This measures what
that costs on the reads users wait for, in one run, each query alternately with the optimizers on (the reference:
DuckDB's default) and off (civicgrid's setting), on the same warm store:

* the heatmap of a half-year and one 大类 at res 9, uncached (``geo.aggregate.heatmap``; a different month and
  type each repeat, the result cache cleared);
* the KPI table (``sites.kpis.kpi_table``) of a month by street and by micro-grid, and the KPI totals;
* a big sort and a GROUP BY over the events (``ORDER BY time`` of all rows' ids; count per H3 cell at res 9).

Prints p50 per query and mode, the ratio off/on, and checks both modes return the same result.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import pandas as pd
from heatmap_bench import build  # the demo city built once, reused (bench/ is the script's folder)

ON = "SET disabled_optimizers = ''"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--dir", default="/tmp/stats_guard_bench")
    ap.add_argument("--db", help="an existing store to measure instead of building a demo")
    ap.add_argument("--repeats", type=int, default=12)
    args = ap.parse_args()

    from civicgrid.geo.aggregate import EventFilter, clear_cache, heatmap
    from civicgrid.geo.store import SAFE_OPTIMIZER_SETTINGS, Store
    from civicgrid.sites.kpis import kpi_table, kpi_totals

    if args.db:
        path = Path(args.db)
    else:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        path = Path(args.dir) / f"demo_{args.events}.duckdb"
        build(path, args.events)
    store = Store(path)
    off = f"SET disabled_optimizers = '{SAFE_OPTIMIZER_SETTINGS}'"
    months = pd.date_range("2024-01-01", "2025-06-01", freq="MS")
    types = ["01", "02", "03", "04", "05", "06", "07", "08"]

    def hm(i: int) -> pd.DataFrame:
        clear_cache()
        m0 = months[i % len(months)]
        return heatmap(store, res=9, filters=EventFilter(start=m0, end=m0 + pd.DateOffset(months=6),
                                                         types=types[i % len(types)]))

    def month(i: int) -> tuple:
        m0 = months[i % len(months)]
        return m0, m0 + pd.DateOffset(months=1)

    queries = {
        "heatmap res 9, half-year, one type (uncached)": hm,
        "KPI table by street, a month": lambda i: kpi_table(store, start=month(i)[0], end=month(i)[1],
                                                            level="street"),
        "KPI table by micro-grid, a month": lambda i: kpi_table(store, start=month(i)[0], end=month(i)[1],
                                                                level="grid"),
        "KPI totals, a month": lambda i: pd.DataFrame([kpi_totals(store, start=month(i)[0], end=month(i)[1])]),
        "all event ids ORDER BY time": lambda i: store.sql("SELECT event_id FROM events ORDER BY time, event_id"),
        "events per res-9 cell (GROUP BY)": lambda i: store.sql(
            "SELECT h3_parent(h3, 9) AS c, count(*) AS n FROM events WHERE h3 IS NOT NULL GROUP BY c ORDER BY c"),
    }
    times: dict[tuple[str, str], list[float]] = {}
    for name, fn in queries.items():
        fn(0)  # warm: files cached by the OS, the query planned once
        for i in range(args.repeats):
            results = {}
            for mode, setting in (("on", ON), ("off", off)) if i % 2 == 0 else (("off", off), ("on", ON)):
                store.con.execute(setting)
                t = time.perf_counter()
                results[mode] = fn(i)
                times.setdefault((name, mode), []).append(time.perf_counter() - t)
            pd.testing.assert_frame_equal(results["on"].reset_index(drop=True), results["off"].reset_index(drop=True))
    store.con.execute(off)
    print(f"store {path} ({store.sql('SELECT count(*) AS n FROM events')['n'][0]:,} events), "
          f"load average {os.getloadavg()[0]:.1f}, {args.repeats} repeats per mode, alternated")
    print(f"{'query':50s} {'optimizers on':>14s} {'off (civicgrid)':>16s} {'ratio':>6s}")
    for name in queries:
        on, off_ = statistics.median(times[(name, 'on')]), statistics.median(times[(name, 'off')])
        print(f"{name:50s} {on * 1000:11.1f} ms {off_ * 1000:13.1f} ms {off_ / on:6.2f}")


if __name__ == "__main__":
    main()
