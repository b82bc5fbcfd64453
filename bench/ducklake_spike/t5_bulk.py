"""Q5/Q6: bulk write of 10M events (20 cols incl. GEOMETRY point, UBIGINT h3) and GROUP BY read speed.

Each step runs in its own subprocess so peak RSS (wait4 ru_maxrss) is per step.
usage: t5_bulk.py all [ROWS] [KIND]        (driver)
       t5_bulk.py STEP ROWS KIND           (one step; used by the driver)
"""
import json
import os
import shutil
import subprocess
import sys
import time

import lakecommon as L

W = os.environ.get("T5_DIR", "/tmp/ducklake/x5")
BATCH = 1_000_000
CSV = f"{W}/events.csv"

def make_batches(rows, seed=0):
    """Yield pyarrow RecordBatches of synthetic events (19 cols; geom is built from lon/lat in SQL)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    rng = np.random.default_rng(seed)
    cats = pa.array([f"cat_{i}" for i in range(40)]); subs = pa.array([f"sub_{i}" for i in range(300)])
    srcs = pa.array(["311", "patrol", "sensor", "web", "import"]); stats = pa.array(["open", "closed", "in_progress", "dup"])
    users = pa.array([f"user{i:04d}" for i in range(2000)]); streets = pa.array([f"{i} Main Street" for i in range(5000)])
    t0 = np.datetime64("2024-01-01T00:00:00", "us").astype("int64")
    for start in range(0, rows, BATCH):
        n = min(BATCH, rows - start)
        ids = np.arange(start, start + n, dtype=np.uint64)
        ts = pa.array(t0 + rng.integers(0, 365 * 86400 * 10**6, n), pa.timestamp("us"))
        lon = 2.25 + rng.random(n) * 0.2; lat = 48.8 + rng.random(n) * 0.1
        yield pa.RecordBatch.from_arrays([
            pa.array(ids), ts,
            cats.take(pa.array(rng.integers(0, 40, n))), subs.take(pa.array(rng.integers(0, 300, n))),
            srcs.take(pa.array(rng.integers(0, 5, n))), stats.take(pa.array(rng.integers(0, 4, n))),
            pa.array(lon), pa.array(lat),
            pa.array(rng.integers(0x0890000000000000, 0x0890000000000000 + 2**40, n, dtype=np.uint64)),
            pa.array(rng.integers(1, 200, n, dtype=np.int32)), pa.array(rng.integers(1, 5000, n, dtype=np.int32)),
            pa.array(rng.integers(1, 5, n, dtype=np.int16)), pa.array(rng.random(n) * 10),
            users.take(pa.array(rng.integers(0, 2000, n))),
            pc.binary_join_element_wise("event number ", pc.cast(pa.array(ids), pa.string()), " reported", ""),
            streets.take(pa.array(rng.integers(0, 5000, n))),
            pa.array(rng.random(n) < 0.97), ts, pc.binary_join_element_wise("EXT-", pc.cast(pa.array(ids * 7), pa.string()), ""),
        ], names=["event_id", "ts", "category", "subcategory", "source", "status", "lon", "lat", "h3", "area_id",
                  "site_id", "priority", "severity", "reported_by", "description", "address", "is_valid", "created_at", "external_ref"])

SELECT_COLS = ("event_id, ts, category, subcategory, source, status, lon, lat, ST_Point(lon, lat) AS geom, h3, area_id, "
               "site_id, priority, severity, reported_by, description, address, is_valid, created_at, external_ref")
DDL = ("(event_id UBIGINT, ts TIMESTAMP, category VARCHAR, subcategory VARCHAR, source VARCHAR, status VARCHAR, lon DOUBLE, "
       "lat DOUBLE, geom GEOMETRY, h3 UBIGINT, area_id INTEGER, site_id INTEGER, priority SMALLINT, severity DOUBLE, "
       "reported_by VARCHAR, description VARCHAR, address VARCHAR, is_valid BOOLEAN, created_at TIMESTAMP, external_ref VARCHAR)")
CSV_TYPES = ("{'event_id':'UBIGINT','ts':'TIMESTAMP','category':'VARCHAR','subcategory':'VARCHAR','source':'VARCHAR',"
             "'status':'VARCHAR','lon':'DOUBLE','lat':'DOUBLE','h3':'UBIGINT','area_id':'INTEGER','site_id':'INTEGER',"
             "'priority':'SMALLINT','severity':'DOUBLE','reported_by':'VARCHAR','description':'VARCHAR','address':'VARCHAR',"
             "'is_valid':'BOOLEAN','created_at':'TIMESTAMP','external_ref':'VARCHAR'}")

def lake_base(kind):
    return f"{W}/lake" if kind == "sqlite" else "bulk"

def open_lake(kind):
    return L.open_lake(kind, lake_base(kind), extra=", META_JOURNAL_MODE 'WAL'" if kind == "sqlite" else "")

def step(name, rows, kind):
    try:
        _step(name, rows, kind)
    finally:
        if name in ("lake_arrow", "native_arrow"):
            open(f"{W}/import_done", "w").close()

def _step(name, rows, kind):
    out = {}
    if name == "gen_csv":
        con = L.connect()
        import pyarrow as pa
        t = time.perf_counter()
        rdr = pa.RecordBatchReader.from_batches(next(make_batches(1)).schema, make_batches(rows))
        con.execute(f"COPY (SELECT * FROM rdr) TO '{CSV}' (HEADER)")
        out["gen_csv_s"] = time.perf_counter() - t; out["csv_MB"] = os.path.getsize(CSV) / 1e6
    elif name == "gen_only":  # cost of producing the Arrow batches alone (subtract from the arrow steps)
        t = time.perf_counter(); n = sum(b.num_rows for b in make_batches(rows)); out["gen_batches_s"] = time.perf_counter() - t
    elif name == "copy_parquet":
        con = L.connect(); t = time.perf_counter()
        con.execute(f"COPY (SELECT * FROM read_csv('{CSV}')) TO '{W}/copy.parquet'")
        out["copy_csv_to_parquet_s"] = time.perf_counter() - t; out["parquet_MB"] = os.path.getsize(f"{W}/copy.parquet") / 1e6
    elif name == "copy_parquet_geom":
        con = L.connect(); t = time.perf_counter()
        con.execute(f"COPY (SELECT {SELECT_COLS} FROM read_csv('{CSV}', columns={CSV_TYPES})) TO '{W}/copy_geom.parquet'")
        out["copy_csv_to_parquet_with_geom_s"] = time.perf_counter() - t
    elif name in ("lake_arrow", "lake_arrow_autocommit", "native_arrow"):
        if name == "native_arrow":
            if os.path.exists(f"{W}/native.duckdb"): os.remove(f"{W}/native.duckdb")
            con = L.connect(); con.execute(f"ATTACH '{W}/native.duckdb' AS lake"); con.execute("USE lake")
            con.execute(f"CREATE OR REPLACE TABLE events {DDL}")
        else:
            con = open_lake(kind)  # table created by the 'prep' step (lake creation must not race)
        t = time.perf_counter(); tgen = 0.0; nb = 0
        if name != "lake_arrow_autocommit": con.execute("BEGIN")
        it = make_batches(rows)
        while True:
            g = time.perf_counter(); b = next(it, None); tgen += time.perf_counter() - g
            if b is None: break
            con.execute(f"INSERT INTO events SELECT {SELECT_COLS} FROM b"); nb += 1
            if nb == 1 and name == "lake_arrow":
                open(f"{W}/import_started", "w").close()
        if name != "lake_arrow_autocommit":
            c = time.perf_counter(); con.execute("COMMIT"); out["commit_s"] = time.perf_counter() - c
        out["total_s"] = time.perf_counter() - t; out["batch_gen_s"] = tgen; out["write_s"] = out["total_s"] - tgen
        out["batches"] = nb
        if name != "native_arrow":
            out["files"] = con.execute("SELECT count(*), sum(data_file_size_bytes)/1e6 FROM ducklake_list_files('lake','events')").fetchone()
        open(f"{W}/import_done", "w").close()
    elif name == "prep":  # create the lake + events table once, before reader/import processes attach
        con = open_lake(kind); con.execute(f"CREATE OR REPLACE TABLE events {DDL}")
        for tbl in ("events_csv", "events_pa"): con.execute(f"CREATE OR REPLACE TABLE {tbl} {DDL}")
        out["created"] = True
    elif name == "lake_csv":
        con = open_lake(kind)
        t = time.perf_counter()
        con.execute(f"INSERT INTO events_csv SELECT {SELECT_COLS} FROM read_csv('{CSV}', columns={CSV_TYPES})")
        out["csv_to_lake_s"] = time.perf_counter() - t
    elif name == "lake_pyarrow_csv":  # parse with pyarrow's streaming CSV reader, write batches in one txn
        import pyarrow.csv as pcsv
        con = open_lake(kind)
        t = time.perf_counter(); con.execute("BEGIN")
        for b in pcsv.open_csv(CSV, read_options=pcsv.ReadOptions(block_size=64 << 20)):
            con.execute(f"INSERT INTO events_pa SELECT {SELECT_COLS} FROM b")
        con.execute("COMMIT"); out["pyarrow_csv_to_lake_s"] = time.perf_counter() - t
    elif name == "reader":  # poll the lake while the import runs
        con = open_lake(kind); log = []
        while not os.path.exists(f"{W}/import_started"): time.sleep(0.05)
        while not os.path.exists(f"{W}/import_done"):
            t = time.perf_counter()
            try:
                n = con.execute("SELECT count(*) FROM events").fetchone()[0]
                s = con.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]
                log.append((round(time.perf_counter() - t, 4), n, s, None))
            except Exception as e:
                log.append((round(time.perf_counter() - t, 4), None, None, str(e)[:120]))
            time.sleep(0.2)
        lat = [x[0] for x in log]
        out = dict(reader_polls=len(log), reader_counts_seen=sorted({x[1] for x in log if x[1] is not None}),
                   reader_errors=[x[3] for x in log if x[3]][:3], reader_p50_ms=L.pct(lat, 50) * 1e3, reader_p99_ms=L.pct(lat, 99) * 1e3,
                   reader_max_ms=max(lat) * 1e3 if lat else None)
        datadir = f"{W}/lake/city.data" if kind == "sqlite" else "/tmp/ducklake/pgdata_bulk"
    elif name == "dirwatch":  # watch the data folder while the import runs
        datadir = f"{W}/lake/city.data" if kind == "sqlite" else "/tmp/ducklake/pgdata_bulk"
        seen = []
        while not os.path.exists(f"{W}/import_done"):
            n = sz = 0
            for root, _, fs in os.walk(datadir):
                for f in fs:
                    try: sz += os.path.getsize(os.path.join(root, f)); n += 1
                    except OSError: pass
            seen.append((n, round(sz / 1e6)))
            time.sleep(1)
        out = dict(data_dir_files_MB_during_import=seen[:: max(1, len(seen) // 8)])
    elif name == "read":
        out = read_bench(kind)
    out["load1"] = os.getloadavg()[0]
    print(json.dumps({"step": name, **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}}), flush=True)

QUERIES = {
    "by_cat_day": "SELECT category, date_trunc('day', ts) d, count(*), avg(severity) FROM events GROUP BY ALL",
    "by_h3": "SELECT h3 >> 20 AS parent, count(*) FROM events WHERE is_valid GROUP BY ALL",
    "by_area_month_filtered": "SELECT area_id, date_trunc('month', ts) m, count(*) FROM events WHERE ts >= TIMESTAMP '2024-06-01' AND category IN ('cat_1','cat_2') GROUP BY ALL",
    "bbox_count": "SELECT count(*) FROM events WHERE lon BETWEEN 2.30 AND 2.35 AND lat BETWEEN 48.82 AND 48.85",
}

def read_bench(kind, reps=11):
    res = {}
    targets = {"lake": None, "native": f"{W}/native.duckdb", "parquet_file": f"{W}/copy_geom.parquet"}
    for tgt, path in targets.items():
        t = time.perf_counter()
        if tgt == "lake":
            con = open_lake(kind)
        elif tgt == "native":
            con = L.connect(); con.execute(f"ATTACH '{path}' AS nat (READ_ONLY)"); con.execute("USE nat")
        else:
            con = L.connect(); con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{path}')")
        res[f"{tgt}_open_ms"] = (time.perf_counter() - t) * 1e3
        for qn, q in QUERIES.items():
            lat = []
            for _ in range(reps):
                t = time.perf_counter(); con.execute(q).fetchall(); lat.append(time.perf_counter() - t)
            res[f"{tgt}:{qn}"] = f"first {lat[0]*1e3:.0f} / p50 {L.pct(lat[1:],50)*1e3:.0f} / max {max(lat[1:])*1e3:.0f} ms"
        con.close()
    return res

def run_step(name, rows, kind, wait=True):
    p = subprocess.Popen([sys.executable, __file__, name, str(rows), kind], cwd="/tmp/ducklake", stdout=subprocess.PIPE, text=True)
    if not wait:
        return p
    return finish(p)

def finish(p):
    _, status, ru = os.wait4(p.pid, 0)
    out = p.stdout.read().strip().splitlines()
    d = json.loads(out[-1]) if out else {"error": status}
    d["peak_rss_MB"] = round(ru.ru_maxrss / 1024)
    print(json.dumps(d), flush=True)
    return d

def reset(kind):
    if kind == "sqlite":
        shutil.rmtree(f"{W}/lake", ignore_errors=True); os.makedirs(f"{W}/lake")
    else:
        pgbin = "/usr/lib/postgresql/15/bin"
        subprocess.run(f"su lakepg -c '{pgbin}/dropdb --force -h /tmp/ducklake/pg -p 5499 -U lake --if-exists bulk && {pgbin}/createdb -h /tmp/ducklake/pg -p 5499 -U lake bulk'", shell=True, check=True)
        shutil.rmtree("/tmp/ducklake/pgdata_bulk", ignore_errors=True)
    for f in ("import_started", "import_done"):
        if os.path.exists(f"{W}/{f}"): os.remove(f"{W}/{f}")

if __name__ == "__main__":
    if sys.argv[1] == "all":
        rows = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000
        kind = sys.argv[3] if len(sys.argv) > 3 else "sqlite"
        os.makedirs(W, exist_ok=True); reset(kind)
        if not os.path.exists(CSV):
            run_step("gen_csv", rows, kind)
        run_step("gen_only", rows, kind)
        run_step("copy_parquet", rows, kind)
        run_step("copy_parquet_geom", rows, kind)
        run_step("prep", rows, kind)
        rd = run_step("reader", rows, kind, wait=False); dw = run_step("dirwatch", rows, kind, wait=False)
        run_step("lake_arrow", rows, kind); finish(rd); finish(dw)
        run_step("copy_parquet", rows, kind)  # again, same run, after
        run_step("native_arrow", rows, kind)
        run_step("lake_csv", rows, kind)
        run_step("lake_pyarrow_csv", rows, kind)
        run_step("read", rows, kind)
    else:
        step(sys.argv[1], int(sys.argv[2]), sys.argv[3])
