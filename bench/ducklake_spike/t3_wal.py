"""Q3: SQLite catalog journal mode. Readers in one process while another process commits, DELETE vs WAL."""
import collections
import multiprocessing as mp
import os
import shutil
import sqlite3
import time

import lakecommon as L

N_COMMITS = 200

def make(d, wal):
    shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
    if wal:  # set WAL on the (empty) catalog file BEFORE DuckLake initialises it
        s = sqlite3.connect(f"{d}/city.sqlite"); print("  set:", s.execute("PRAGMA journal_mode=WAL").fetchone()); s.close()
    con = L.open_lake("sqlite", d)
    con.execute("CREATE TABLE log (id BIGINT, pid INTEGER, ts TIMESTAMP, note VARCHAR)")
    con.close()
    print("  journal_mode after DuckLake init + reopen:", sqlite3.connect(f"{d}/city.sqlite").execute("PRAGMA journal_mode").fetchone())

def writer(d, q):
    con = L.open_lake("sqlite", d)
    errs = collections.Counter(); lat = []
    for i in range(N_COMMITS):
        t = time.perf_counter()
        for attempt in range(50):
            try:
                con.execute("INSERT INTO log VALUES (?, ?, now()::TIMESTAMP, 'x')", [i, os.getpid()]); break
            except Exception as e:
                errs[str(e).replace("\n"," ")[:400]] += 1; time.sleep(0.01)
        lat.append(time.perf_counter() - t)
    q.put(("writer", errs, lat))

def reader(d, q, stop, hold):
    con = L.open_lake("sqlite", d)
    errs = collections.Counter(); n = 0; lat = []
    while not stop.is_set():
        t = time.perf_counter()
        try:
            if hold:  # keep a read transaction open for a while
                con.execute("BEGIN"); con.execute("SELECT count(*) FROM log").fetchone(); time.sleep(0.05); con.execute("COMMIT")
            else:
                con.execute("SELECT count(*), max(id) FROM log").fetchone()
            n += 1; lat.append(time.perf_counter() - t)
        except Exception as e:
            errs[str(e).replace("\n"," ")[:400]] += 1
            try: con.execute("ROLLBACK")
            except Exception: pass
    q.put(("reader", errs, (n, lat)))

def trial(wal, hold):
    d = f"/tmp/ducklake/x3_{'wal' if wal else 'del'}"
    print(f"--- journal={'WAL' if wal else 'DELETE'} reader_holds_txn={hold}")
    make(d, wal)
    q = mp.Queue(); stop = mp.Event()
    rs = [mp.Process(target=reader, args=(d, q, stop, hold)) for _ in range(2)]
    for r in rs: r.start()
    time.sleep(1.0)
    t0 = time.perf_counter()
    w = mp.Process(target=writer, args=(d, q)); w.start()
    res = [q.get()]  # writer first
    el = time.perf_counter() - t0
    stop.set(); res += [q.get() for _ in rs]
    for p in rs + [w]: p.join()
    for kind, errs, extra in res:
        if kind == "writer":
            print(f"  writer: {N_COMMITS} commits in {el:.1f}s p50={L.pct(extra,50)*1e3:.1f}ms p99={L.pct(extra,99)*1e3:.1f}ms errors={dict(errs)}")
        else:
            n, lat = extra
            print(f"  reader: {n} queries ok, p50={L.pct(lat,50)*1e3:.1f}ms p99={L.pct(lat,99)*1e3:.1f}ms errors={dict(errs)}")
    con = L.open_lake("sqlite", d); print("  rows:", con.execute("SELECT count(*) FROM log").fetchone()[0])

if __name__ == "__main__":
    mp.set_start_method("spawn")
    for wal in (False, True):
        for hold in (False, True):
            trial(wal, hold)
