"""Q7: snapshot ids (cache keys), time travel, maintenance while readers/writers run.
usage: t7_snapshots.py sqlite|pg"""
import collections
import multiprocessing as mp
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import lakecommon as L


def base_of(kind):
    return "/tmp/ducklake/x7" if kind == "sqlite" else "snap"

def data_dir(kind):
    return "/tmp/ducklake/x7/city.data" if kind == "sqlite" else "/tmp/ducklake/pgdata_snap"

def count_files(kind):
    return sum(len(fs) for _, _, fs in os.walk(data_dir(kind)))

def setup(kind):
    if kind == "sqlite":
        shutil.rmtree("/tmp/ducklake/x7", ignore_errors=True); os.makedirs("/tmp/ducklake/x7")
        s = sqlite3.connect("/tmp/ducklake/x7/city.sqlite"); s.execute("PRAGMA journal_mode=WAL"); s.close()
    else:
        pgbin = "/usr/lib/postgresql/15/bin"
        subprocess.run(f"su lakepg -c '{pgbin}/dropdb --force -h /tmp/ducklake/pg -p 5499 -U lake --if-exists snap && {pgbin}/createdb -h /tmp/ducklake/pg -p 5499 -U lake snap'", shell=True, check=True)
        shutil.rmtree(data_dir(kind), ignore_errors=True)
    con = L.open_lake(kind, base_of(kind))
    con.execute("CREATE TABLE ev (id BIGINT, batch INTEGER, v DOUBLE, s VARCHAR)")
    con.execute("CREATE TABLE cases (id BIGINT, version INTEGER)")
    con.execute("INSERT INTO cases SELECT i, 0 FROM range(1000) r(i)")
    return con

def writer(kind, stop, q):
    con = L.open_lake(kind, base_of(kind)); con.execute("SET ducklake_retry_wait_ms=5")
    n = 0; errs = collections.Counter(); b = 10_000
    while not stop.is_set():
        b += 1
        def t():
            con.execute("BEGIN")
            con.execute(f"INSERT INTO ev SELECT i, {b}, random(), 'w' FROM range(50) r(i)")
            con.execute("UPDATE cases SET version = version + 1 WHERE id = ?", [b % 1000])
            con.execute("COMMIT")
        try:
            L.retry(t, attempts=30, on_conflict=lambda e: errs.update([str(e)[:100]])); n += 1
        except Exception as e:
            errs["GAVE UP " + str(e)[:100]] += 1
            try: con.execute("ROLLBACK")
            except Exception: pass
    q.put(("writer", n, dict(errs)))

def reader(kind, stop, q, hold):
    con = L.open_lake(kind, base_of(kind)); n = 0; errs = collections.Counter(); last = 0; nonmono = 0
    while not stop.is_set():
        try:
            if hold:  # long read transaction spanning maintenance
                con.execute("BEGIN")
                a = con.execute("SELECT count(*), sum(v) FROM ev").fetchone()
                time.sleep(1.0)
                b = con.execute("SELECT count(*), sum(v) FROM ev").fetchone()
                con.execute("COMMIT")
                if a[0] != b[0]: errs["repeatable read violated (count changed)"] += 1
                c = a[0]
            else:
                c = con.execute("SELECT count(*) FROM ev").fetchone()[0]
                con.execute("SELECT sum(version) FROM cases").fetchone()
            if c < last: nonmono += 1
            last = c; n += 1
        except Exception as e:
            errs[str(e).replace("\n", " ")[:160]] += 1
            try: con.execute("ROLLBACK")
            except Exception: pass
    q.put(("reader_hold" if hold else "reader", n, dict(errs), nonmono))

def main(kind):
    con = setup(kind)
    # --- many small commits: 150 commits x 50 rows (> inline limit 10 -> one Parquet file each)
    t = time.perf_counter()
    for b in range(150):
        con.execute(f"INSERT INTO ev SELECT i, {b}, random(), 's' FROM range(50) r(i)")
    for i in range(50):
        con.execute("UPDATE cases SET version = version + 1 WHERE id = ?", [i])
    ev_files = con.execute("SELECT count(*) FROM ducklake_list_files('lake','ev')").fetchone()[0]
    case_files = con.execute("SELECT count(*), count(delete_file) FROM ducklake_list_files('lake','cases')").fetchone()
    print(f"150 small appends + 50 updates: {time.perf_counter()-t:.1f}s; files on disk {count_files(kind)}; "
          f"live ev files {ev_files}, cases data/delete files {case_files}")
    # --- snapshot id reads
    for label, q in [("SELECT id FROM lake.current_snapshot()", "SELECT id FROM lake.current_snapshot()"),
                     ("SELECT ducklake_current_snapshot('lake')", "SELECT * FROM ducklake_current_snapshot('lake')"),
                     ("SELECT * FROM lake.last_committed_snapshot()", "SELECT * FROM lake.last_committed_snapshot()"),
                     ("SELECT max(snapshot_id) FROM __ducklake_metadata_lake.ducklake_snapshot", "SELECT max(snapshot_id) FROM __ducklake_metadata_lake.ducklake_snapshot")]:
        lat = []
        try:
            for _ in range(50):
                s = time.perf_counter(); r = con.execute(q).fetchall(); lat.append(time.perf_counter() - s)
            print(f"  {label:80s} -> {r} p50 {L.pct(lat,50)*1e3:.2f} ms p99 {L.pct(lat,99)*1e3:.2f} ms")
        except Exception as e:
            print(f"  FAIL {label}: {str(e).splitlines()[0][:120]}")
    if kind == "sqlite":
        s3 = sqlite3.connect("file:/tmp/ducklake/x7/city.sqlite?mode=ro", uri=True); lat = []
        for _ in range(200):
            s = time.perf_counter(); r = s3.execute("SELECT max(snapshot_id) FROM ducklake_snapshot").fetchone(); lat.append(time.perf_counter() - s)
        print(f"  python sqlite3 (ro) SELECT max(snapshot_id) FROM ducklake_snapshot -> {r} p50 {L.pct(lat,50)*1e3:.3f} ms p99 {L.pct(lat,99)*1e3:.3f} ms")
    # inside a transaction the snapshot id is pinned
    c2 = L.open_lake(kind, base_of(kind))
    con.execute("BEGIN"); s0 = con.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]
    c2.execute("INSERT INTO ev VALUES (-1, -1, 0, 'other')")
    s1 = con.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]; con.execute("COMMIT")
    s2 = con.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]
    print(f"  snapshot id in open txn before/after other commit: {s0}/{s1}; after COMMIT (autocommit query): {s2}")
    # --- time travel
    snaps = con.execute("SELECT snapshot_id, snapshot_time FROM lake.snapshots() ORDER BY 1").fetchall()
    v = snaps[len(snaps) // 2][0]; ts = snaps[len(snaps) // 2][1]
    for q in [f"SELECT count(*) FROM ev AT (VERSION => {v})",
              f"SELECT count(*) FROM ev AT (TIMESTAMP => TIMESTAMPTZ '{ts.isoformat()}')",
              "SELECT count(*) FROM ev AT (TIMESTAMP => now() - INTERVAL '1 second')",
              "SELECT count(*) FROM ev"]:
        try: print(f"  {q} -> {con.execute(q).fetchone()}")
        except Exception as e: print(f"  FAIL {q}: {str(e).splitlines()[0][:140]}")
    extra = f", SNAPSHOT_VERSION {v}"
    try:
        c3 = L.connect(); c3.execute(L.attach_sql(kind, base_of(kind), alias="past", extra=extra))
        print(f"  ATTACH ... (SNAPSHOT_VERSION {v}) -> count {c3.execute('SELECT count(*) FROM past.ev').fetchone()}")
        try: c3.execute("INSERT INTO past.ev VALUES (1,1,1,'x')"); print("   write to snapshot attach: allowed?!")
        except Exception as e: print("   write to snapshot attach refused:", str(e).splitlines()[0][:120])
    except Exception as e:
        print("  FAIL ATTACH SNAPSHOT_VERSION:", str(e).splitlines()[0][:140])
    try:
        c4 = L.connect(); c4.execute(L.attach_sql(kind, base_of(kind), alias="past", extra=f", SNAPSHOT_TIME '{ts.isoformat()}'"))
        print(f"  ATTACH ... (SNAPSHOT_TIME '{ts}') -> count {c4.execute('SELECT count(*) FROM past.ev').fetchone()}")
    except Exception as e:
        print("  FAIL ATTACH SNAPSHOT_TIME:", str(e).splitlines()[0][:140])
    try:
        c5 = L.connect(); c5.execute(L.attach_sql(kind, base_of(kind), alias="ro", extra=", READ_ONLY"))
        print("  ATTACH ... (READ_ONLY) count", c5.execute("SELECT count(*) FROM ro.ev").fetchone())
    except Exception as e:
        print("  FAIL ATTACH READ_ONLY:", str(e).splitlines()[0][:140])
    # --- maintenance while 2 writers + 2 readers + 1 long-txn reader run
    q = mp.Queue(); stop = mp.Event()
    ps = [mp.Process(target=writer, args=(kind, stop, q)) for _ in range(2)]
    ps += [mp.Process(target=reader, args=(kind, stop, q, False)) for _ in range(2)]
    ps += [mp.Process(target=reader, args=(kind, stop, q, True))]
    for p in ps: p.start()
    time.sleep(5)
    print(f"  before maintenance: files on disk {count_files(kind)}, snapshots {con.execute('SELECT count(*) FROM lake.snapshots()').fetchone()[0]}")
    maint = os.environ.get("MAINT", "safe")
    stmts = ["CALL ducklake_flush_inlined_data('lake')",
             "CALL ducklake_merge_adjacent_files('lake')",
             "CALL ducklake_rewrite_data_files('lake')",
             "CALL ducklake_expire_snapshots('lake', older_than => now() - INTERVAL '2 seconds')",
             "CALL ducklake_cleanup_old_files('lake', cleanup_all => true)"]
    if maint == "orphans":
        stmts.append("CALL ducklake_delete_orphaned_files('lake', cleanup_all => true)")
    if maint == "orphans_default":
        stmts.append("CALL ducklake_delete_orphaned_files('lake')")
    if maint == "checkpoint":
        stmts = ["CHECKPOINT lake"]
    print("  maintenance set:", maint)
    for stmt in stmts:
        t = time.perf_counter()
        for attempt in range(10):
            try:
                r = con.execute(stmt).fetchall()
                print(f"  OK {stmt} ({time.perf_counter()-t:.2f}s, try {attempt+1}) -> {len(r)} rows {str(r)[:120]}; files on disk now {count_files(kind)}")
                break
            except Exception as e:
                print(f"  ERR {stmt}: {str(e).replace(chr(10),' ')[:200]}")
                time.sleep(0.3)
        time.sleep(1.5)
    time.sleep(3); stop.set()
    res = [q.get() for _ in ps]
    for p in ps: p.join()
    for r in res: print("  ", r)
    ev_files = con.execute("SELECT count(*) FROM ducklake_list_files('lake','ev')").fetchone()[0]
    print(f"  after: files on disk {count_files(kind)}, live ev files {ev_files}, "
          f"snapshots {con.execute('SELECT count(*) FROM lake.snapshots()').fetchone()[0]}")
    try: print("  time travel to expired snapshot:", con.execute(f"SELECT count(*) FROM ev AT (VERSION => {v})").fetchone())
    except Exception as e: print("  time travel to expired snapshot FAILS:", str(e).splitlines()[0][:140])
    try:
        full = con.execute("SELECT count(v), sum(v) FROM ev").fetchone(); print("  full scan of ev OK:", full)
    except Exception as e:
        print("  FULL SCAN OF ev FAILS (committed data lost):", str(e).splitlines()[0][:200])
    n_ev = con.execute("SELECT count(*) FROM ev").fetchone()[0]; n_w = sum(r[1] for r in res if r[0] == "writer")
    print(f"  integrity: ev rows {n_ev} == 150*50 + 1 + 50*writer commits ({7501 + 50*n_w}) -> {n_ev == 7501 + 50*n_w}")

if __name__ == "__main__":
    mp.set_start_method("spawn")
    main(sys.argv[1])
