"""Q4 diagnosis: why in-process writes are slower: same cursor vs round-robin cursors vs batch-of-8 txn (sequential)."""
import random
import sys
import time

import lakecommon as L
import t4_concurrency as T

kind = sys.argv[1]
base = T.base_for(kind, "diag"); T.setup(kind, base, "update")
con = L.open_lake(kind, base)
curs = [con.cursor() for _ in range(16)]
for c in curs: c.execute("USE lake")
rnd = random.Random(1)
def txn(cur, n):
    cur.execute("BEGIN")
    for _ in range(n):
        cid = rnd.randint(1, 1000)
        cur.execute("INSERT INTO case_log VALUES (?, 1, 1, now()::TIMESTAMP, 'moved', 'x')", [cid])
        cur.execute("UPDATE cases SET version = version + 1 WHERE id = ?", [cid])
    cur.execute("COMMIT")
def bench(label, fn, n=60):
    lat = []
    for i in range(n):
        t = time.perf_counter(); fn(i); lat.append(time.perf_counter() - t)
    print(f"{kind} {label:40s} p50 {L.pct(lat,50)*1e3:7.1f} ms  p99 {L.pct(lat,99)*1e3:7.1f} ms", flush=True)
bench("same connection, 1 move/txn", lambda i: txn(con, 1))
bench("16 cursors round-robin, 1 move/txn", lambda i: txn(curs[i % 16], 1))
bench("same connection, 1 move/txn (again)", lambda i: txn(con, 1))
bench("same connection, 8 moves/txn", lambda i: txn(con, 8), n=20)
def stmt_profile():
    con.execute("BEGIN")
    for k in range(8):
        t = time.perf_counter(); con.execute("INSERT INTO case_log VALUES (1, 1, 1, now()::TIMESTAMP, 'moved', 'x')"); a = time.perf_counter() - t
        t = time.perf_counter(); con.execute("UPDATE cases SET version = version + 1 WHERE id = ?", [k + 1]); b = time.perf_counter() - t
        print(f"   stmt {k}: insert {a*1e3:.1f} ms update {b*1e3:.1f} ms")
    t = time.perf_counter(); con.execute("COMMIT"); print(f"   commit {(time.perf_counter()-t)*1e3:.1f} ms")
stmt_profile()
print("inlined rows case_log/cases:", con.execute("SELECT count(*) FROM case_log").fetchone(), con.execute("SELECT count(*) FROM ducklake_list_files('lake','cases')").fetchone())
