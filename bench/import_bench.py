"""Benchmark: end-to-end CSV import of demo events against raw H3 indexing of the same points, and demo build times.

For each size (default 1M and 10M events) the script builds a demo city with
that many events (cached under --work), exports its events to a 12345-style
CSV (id, time, problem type, lng, lat, status, text), and imports the CSV into
a fresh store holding only the city's areas and micro-grids, in a child
process so its peak RSS is measured alone. In the same run it times the raw
h3ronpy indexing of the same points (the fastest vectorized H3 library,
``h3ronpy.vector.coordinates_to_cells`` on all cores) and DuckDB's own load of
the same CSV into a table with no processing at all (the floor of any import
into the DuckDB store), and reports events/s, the ratios import/raw-H3 and
import/floor, and peak memory.

Usage::

    .venv/bin/python bench/import_bench.py [--sizes 1000000 10000000] [--work /tmp/civicgrid-bench]
    .venv/bin/python bench/import_bench.py --sizes 1000000 10000000 --from-demo 1000000
    .venv/bin/python bench/import_bench.py --demo-only --sizes 200000 10000000
    .venv/bin/python bench/import_bench.py --sizes 1000000 --from-demo 200000 \\
        --baseline-python ../main-checkout/.venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Targets from issue 2 (on the 2-core benchmark machine).
TARGET_EVENTS_PER_S = 1_000_000
TARGET_RATIO_TO_H3 = 3.0
TARGET_PEAK_GB = 4.0


def _child(code: str, python: str | None = None) -> dict:
    """Run Python code in a child process (``python``: another interpreter, e.g. another checkout's venv);
    return its JSON result plus wall time and peak RSS (GB)."""
    t0 = time.perf_counter()
    out = subprocess.run([python or sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    wall = time.perf_counter() - t0
    if out.returncode:
        sys.stderr.write(out.stderr)
        msg = f"child failed with status {out.returncode}"
        raise RuntimeError(msg)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    result["peak_gb_so_far"] = usage.ru_maxrss / 1024 / 1024  # the largest child so far (Linux: KB)
    return result


def build_demo(path: Path, events: int, seed: int = 0) -> dict:
    """Build a demo city in a child process; return its summary, seconds and peak RSS."""
    code = (f"import json, time; from civicgrid.data.demo import build_demo; t=time.perf_counter(); "
            f"s=build_demo({str(path)!r}, events={events}, seed={seed}, progress=False); "
            f"s['seconds']=time.perf_counter()-t; "
            f"import resource; s['rss_gb']=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1048576; "
            f"print(json.dumps(s))")
    return _child(code)


def export_csv(demo: Path, csv_path: Path, *, copies: int = 1) -> int:
    """Write the demo's events as a 12345-style CSV (UTF-8, Chinese headers); return the row count.

    With ``copies`` > 1 the events are written that many times, each copy with its own ids.
    """
    from civicgrid.geo.store import Store

    con = Store(demo).cursor()
    try:
        n = con.execute("SELECT count(*) FROM events").fetchone()[0] * copies
        quoted = str(csv_path).replace("'", "''")
        ident = "source || '-' || event_id" if copies == 1 else "source || '-' || k || '-' || event_id"
        con.execute(
            f"""
            COPY (
                SELECT {ident} AS 工单编号, strftime(time, '%Y-%m-%d %H:%M:%S') AS 受理时间,
                       problem_type AS 问题小类, round(lng, 6) AS 经度, round(lat, 6) AS 纬度,
                       CASE status WHEN 'closed' THEN '已办结' ELSE '处理中' END AS 办理状态, text AS 诉求内容
                FROM events, range({copies}) r(k) ORDER BY k, event_id
            ) TO '{quoted}' (HEADER, DELIMITER ',')
            """
        )
    finally:
        con.close()
    return int(n)


def city_only(demo: Path, target: Path) -> None:
    """Create ``target`` holding only the demo city's areas and micro-grids (no sites, no events)."""
    from civicgrid.geo.store import Store, writing
    from civicgrid.geo.store_files import remove_store

    remove_store(target)
    source = Store(demo)
    areas, grids = source.sql("SELECT * FROM areas"), source.sql("SELECT * FROM grids")
    for frame in (areas, grids):
        frame["geom"] = frame["geom"].map(bytes)
    with writing(target) as con:
        for table, frame in (("areas", areas), ("grids", grids)):
            con.register("_rows", frame)
            cols = ", ".join(c if c != "geom" else "ST_GeomFromWKB(geom)" for c in frame.columns)
            con.execute(f"INSERT INTO {table} SELECT {cols} FROM _rows")
            con.unregister("_rows")


def import_csv(csv_path: Path, db: Path, *, cases: bool = False, python: str | None = None,
               threads: int | None = None) -> dict:
    """Import the CSV in a child process; return the report counts, seconds, CPU seconds and peak RSS.

    ``cases=False`` times the import itself; ``cases=True`` adds the case backfill and rebound linking
    (``sites.cases``) that ``civicgrid import events`` runs in the same transaction. ``python``: the
    interpreter of another checkout (``--baseline-python``), to time its import in the same run. ``threads``:
    the setting ``import_threads`` (the threads the import prepares its batches and makes its cases on; None:
    as it decides).
    """
    code = (
        "import json, os, time, resource; from civicgrid.sites.events import import_events; "
        + (f"os.environ['CIVICGRID_IMPORT_THREADS'] = '{int(threads)}'; " if threads is not None else "")
        + "t=time.perf_counter(); "
        f"r=import_events({str(csv_path)!r}, db={str(db)!r}, progress=False, cases={cases!r}); "
        "d={k: getattr(r, k) for k in ('rows_read','loaded','duplicates','rejected','outside_grids',"
        "'cases_created','rebounds_linked')}; "
        "d['seconds']=time.perf_counter()-t; u=resource.getrusage(resource.RUSAGE_SELF); "
        "d['cpu_s']=u.ru_utime+u.ru_stime; d['rss_gb']=u.ru_maxrss/1048576; print(json.dumps(d))"
    )
    return _child(code, python)


def _load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())


def raw_h3(csv_path: Path) -> dict:
    """Time raw h3ronpy indexing (all cores) of the CSV's points, after reading them (read time excluded)."""
    code = (
        "import json, time, os; import numpy as np; import pyarrow.csv as c; import pyarrow as pa; "
        "from concurrent.futures import ThreadPoolExecutor; from h3ronpy import vector as v; "
        f"t=c.read_csv({str(csv_path)!r}, convert_options=c.ConvertOptions(include_columns=['经度','纬度'], "
        "column_types={'经度': pa.float64(), '纬度': pa.float64()})); "
        "lng=t.column('经度').to_numpy(); lat=t.column('纬度').to_numpy(); n=len(lng); w=os.cpu_count() or 1; "
        "b=np.linspace(0,n,w+1).astype(int); "
        "f=lambda ab: np.asarray(v.coordinates_to_cells(lat[ab[0]:ab[1]], lng[ab[0]:ab[1]], 12)); "
        "best=1e9\n"
        "for _ in range(3):\n"
        "    t0=time.perf_counter()\n"
        "    with ThreadPoolExecutor(w) as p: cells=np.concatenate(list(p.map(f, zip(b[:-1], b[1:]))))\n"
        "    best=min(best, time.perf_counter()-t0)\n"
        "print(json.dumps({'seconds': best, 'n': n, 'cells': int(len(np.unique(cells)))}))"
    )
    return _child(code)


def bare_load(csv_path: Path, db: Path) -> dict:
    """Time DuckDB's own load of the CSV into a table, with no processing at all (all cores).

    ``CREATE TABLE … AS SELECT * FROM read_csv(…)`` plus a checkpoint, into a fresh file: the least any
    import into the DuckDB store can cost (parse the file, write its columns), without validation, times,
    H3, grids, duplicates or the derived columns.
    """
    code = (
        "import json, time, os, resource; import duckdb; "
        f"db={str(db)!r}; [os.remove(p) for p in (db, db + '.wal') if os.path.exists(p)]; "
        "con=duckdb.connect(db); t=time.perf_counter(); "
        f"con.execute(\"CREATE TABLE t AS SELECT * FROM read_csv('{csv_path!s}')\"); con.execute('CHECKPOINT'); "
        "s=time.perf_counter()-t; n=con.execute('SELECT count(*) FROM t').fetchone()[0]; con.close(); os.remove(db); "
        "u=resource.getrusage(resource.RUSAGE_SELF); "
        "print(json.dumps({'seconds': s, 'n': n, 'cpu_s': u.ru_utime + u.ru_stime}))"
    )
    return _child(code)


def copy_floor(csv_path: Path, out: Path) -> dict:
    """Time DuckDB's ``COPY (SELECT * FROM read_csv(...)) TO 'x.parquet'`` of the CSV (all cores): the store
    issue's reference for an import into the lake (parse the file, write Parquet; nothing else)."""
    code = (
        "import json, time, os, resource; import duckdb; "
        f"out={str(out)!r}; con=duckdb.connect(); t=time.perf_counter(); "
        f"con.execute(\"COPY (SELECT * FROM read_csv('{csv_path!s}')) TO '\" + out + \"' (FORMAT parquet)\"); "
        "s=time.perf_counter()-t; n=con.execute(f\"SELECT count(*) FROM '{out}'\").fetchone()[0]; os.remove(out); "
        "u=resource.getrusage(resource.RUSAGE_SELF); "
        "print(json.dumps({'seconds': s, 'n': n, 'cpu_s': u.ru_utime + u.ru_stime}))"
    )
    return _child(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/civicgrid-bench"))
    parser.add_argument("--demo-only", action="store_true", help="only time demo-city builds at --sizes")
    parser.add_argument("--rebuild", action="store_true", help="rebuild cached demo cities and CSVs")
    parser.add_argument("--from-demo", type=int, default=None, metavar="N",
                        help="build one demo city of N events and export each size as copies of its events "
                             "(each copy with its own ids) instead of building a city per size")
    parser.add_argument("--cases-up-to", type=int, default=1_000_000,
                        help="also time the import with its case backfill (sites.cases) up to this size")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="time COPY, the import and the baseline's import N times each, interleaved (COPY, "
                             "import, baseline, COPY, ...), and report each one's fastest run: on a shared machine "
                             "the load drifts, and the fastest runs are those least slowed by it")
    parser.add_argument("--prepare-threads", type=int, default=None, metavar="N",
                        help="this checkout's import runs on N threads (the setting import_threads: its batches "
                             "prepared on N, its cases made on N; 0: in turn; default: as the import decides)")
    parser.add_argument("--baseline-python", default=None, metavar="PYTHON",
                        help="also time the imports with this interpreter (another checkout's venv, e.g. main's) "
                             "in the same run: before/after figures under the same load")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from civicgrid.geo.store_files import remove_store

    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    for n in args.sizes:
        base = args.from_demo or n
        if n % base:
            parser.error(f"--from-demo {base} does not divide size {n}")
        copies = n // base
        demo = args.work / f"demo_{base}.duckdb"
        if args.demo_only or args.rebuild or not demo.exists():
            demo.unlink(missing_ok=True)
            d = build_demo(demo, base)
            print(f"demo city, {base:,} events: {d['seconds']:.1f} s (peak RSS {d['rss_gb']:.2f} GB); "
                  f"{d['grids']} grids, {d['sites']:,} sites, {d['inspections']:,} inspections")
        if args.demo_only:
            continue
        csv_path = args.work / (f"events_{n}.csv" if copies == 1 else f"events_{base}x{copies}.csv")
        if args.rebuild or not csv_path.exists():
            export_csv(demo, csv_path, copies=copies)
        if copies > 1:
            print(f"events: the {base:,}-event demo city's events written {copies} times, each copy with its own ids")
        size_mb = csv_path.stat().st_size / 1e6
        target = args.work / f"import_{n}.duckdb"
        city_only(demo, target)
        print(f"[{_load()}]")
        h3 = raw_h3(csv_path)
        bare = bare_load(csv_path, args.work / "bare_load.duckdb")
        copies_, imports, base_imports = [], [], []
        for _ in range(max(args.repeat, 1)):
            copies_.append(copy_floor(csv_path, args.work / "copy_floor.parquet"))
            city_only(demo, target)
            imports.append(import_csv(csv_path, target, threads=args.prepare_threads))
            remove_store(target)
            if args.baseline_python and args.repeat > 1:
                city_only(demo, target)
                base_imports.append(import_csv(csv_path, target, python=args.baseline_python))
                remove_store(target)
            print(f"[{_load()}] COPY {copies_[-1]['seconds']:.2f} s (CPU {copies_[-1]['cpu_s']:.1f}), import "
                  f"{imports[-1]['seconds']:.2f} s (CPU {imports[-1]['cpu_s']:.1f})" + (
                      f", baseline {base_imports[-1]['seconds']:.2f} s (CPU {base_imports[-1]['cpu_s']:.1f})"
                      if base_imports else ""))
        copy = min(copies_, key=lambda r: r["seconds"])
        imp = min(imports, key=lambda r: r["seconds"])
        if args.repeat > 1:
            print(f"  fastest of {args.repeat} runs each below")
        rate = imp["rows_read"] / imp["seconds"]
        ratio = imp["seconds"] / h3["seconds"]
        ok = (rate >= TARGET_EVENTS_PER_S, ratio <= TARGET_RATIO_TO_H3, imp["rss_gb"] <= TARGET_PEAK_GB)
        print(f"import {n:,} events from CSV ({size_mb:,.0f} MB), without the case backfill: {imp['seconds']:.2f} s "
              f"= {rate / 1e6:.2f} M events/s [target ≥ 1.0: {'ok' if ok[0] else 'MISSED'}]; "
              f"CPU {imp['cpu_s']:.1f} s = {imp['cpu_s'] / imp['seconds']:.2f} cores busy")
        print(f"  raw h3ronpy (res 12, {os.cpu_count()} threads) on the same {h3['n']:,} points: {h3['seconds']:.2f} s "
              f"= {h3['n'] / h3['seconds'] / 1e6:.1f} M points/s; import / raw H3 = {ratio:.2f}× "
              f"[target ≤ {TARGET_RATIO_TO_H3:.0f}×: {'ok' if ok[1] else 'MISSED'}]")
        print(f"  floor: DuckDB's own load of the same CSV into a table, no processing at all: {bare['seconds']:.2f} s "
              f"= {bare['n'] / bare['seconds'] / 1e6:.2f} M rows/s (CPU {bare['cpu_s']:.1f} s) = "
              f"{bare['seconds'] / h3['seconds']:.2f}× raw H3; "
              f"import / this floor = {imp['seconds'] / bare['seconds']:.2f}×")
        print(f"  COPY (SELECT * FROM read_csv(...)) TO parquet of the same CSV: {copy['seconds']:.2f} s = "
              f"{copy['n'] / copy['seconds'] / 1e6:.2f} M rows/s (CPU {copy['cpu_s']:.1f} s); "
              f"import / COPY = {imp['seconds'] / copy['seconds']:.2f}× "
              f"(CPU seconds: {imp['cpu_s'] / copy['cpu_s']:.2f}×, the ratio a shared machine's load moves least) "
              f"[target ≤ 2×: {'ok' if imp['seconds'] <= 2 * copy['seconds'] else 'MISSED'}]")
        print(f"  peak RSS of the import process: {imp['rss_gb']:.2f} GB [target ≤ {TARGET_PEAK_GB:.0f}: "
              f"{'ok' if ok[2] else 'MISSED'}]; loaded {imp['loaded']:,}, rejected {imp['rejected']:,}, "
              f"outside grids {imp['outside_grids']:,}")
        if args.baseline_python:
            if base_imports:
                base_imp = min(base_imports, key=lambda r: r["seconds"])
            else:
                city_only(demo, target)
                base_imp = import_csv(csv_path, target, python=args.baseline_python)
                remove_store(target)
            print(f"  baseline ({args.baseline_python}), without the case backfill: {base_imp['seconds']:.2f} s "
                  f"(CPU {base_imp['cpu_s']:.1f} s) = {base_imp['seconds'] / copy['seconds']:.2f}× COPY "
                  f"(CPU seconds: {base_imp['cpu_s'] / copy['cpu_s']:.2f}×; this checkout / baseline in CPU "
                  f"seconds: {imp['cpu_s'] / base_imp['cpu_s']:.2f}×), "
                  f"peak RSS {base_imp['rss_gb']:.2f} GB; this checkout / baseline = "
                  f"{imp['seconds'] / base_imp['seconds']:.2f}× [{_load()}]")
        if n <= args.cases_up_to:
            city_only(demo, target)
            full = import_csv(csv_path, target, cases=True)
            remove_store(target)
            if args.baseline_python:
                city_only(demo, target)
                base = import_csv(csv_path, target, cases=True, python=args.baseline_python)
                remove_store(target)
                print(f"  baseline ({args.baseline_python}), with the case backfill: {base['seconds']:.2f} s "
                      f"(CPU {base['cpu_s']:.1f} s) = {base['rows_read'] / base['seconds'] / 1e6:.3f} M events/s "
                      f"= {base['seconds'] / copy['seconds']:.2f}× COPY, peak RSS {base['rss_gb']:.2f} GB; cases "
                      f"{base['cases_created']:,}, rebounds {base['rebounds_linked']:,} [{_load()}]")
            print(f"  with the case backfill (sites.cases backfill + link_rebounds, as `civicgrid import events` "
                  f"runs it): {full['seconds']:.2f} s (CPU {full['cpu_s']:.1f} s) = "
                  f"{full['rows_read'] / full['seconds'] / 1e6:.3f} M events/s = "
                  f"{full['seconds'] / copy['seconds']:.2f}× COPY, "
                  f"peak RSS {full['rss_gb']:.2f} GB; cases {full['cases_created']:,}, rebounds "
                  f"{full['rebounds_linked']:,} [target ≥ 0.3: "
                  f"{'ok' if full['rows_read'] / full['seconds'] >= 3e5 else 'MISSED'}] [{_load()}]")
        else:
            print(f"  (import with the case backfill not timed above {args.cases_up_to:,} events: --cases-up-to)")


if __name__ == "__main__":
    main()
