"""Q4 baseline: one process, sequential, latency per operation kind (no contention), SQLite(WAL) vs PG catalog."""
import os
import shutil
import subprocess
import time

import lakecommon as L


def setup(kind):
    if kind == "sqlite":
        base = "/tmp/ducklake/x4b"; shutil.rmtree(base, ignore_errors=True); os.makedirs(base)
        extra = ", META_JOURNAL_MODE 'WAL'"
    else:
        base = "conc_single"; pgbin = "/usr/lib/postgresql/15/bin"
        subprocess.run(f"su lakepg -c '{pgbin}/dropdb --force -h /tmp/ducklake/pg -p 5499 -U lake --if-exists {base} && {pgbin}/createdb -h /tmp/ducklake/pg -p 5499 -U lake {base}'", shell=True, check=True)
        shutil.rmtree(f"/tmp/ducklake/pgdata_{base}", ignore_errors=True); extra = ""
    t = time.perf_counter(); con = L.connect(); t_load = time.perf_counter() - t
    t = time.perf_counter(); con.execute(L.attach_sql(kind, base, extra=extra)); con.execute("USE lake"); t_attach = time.perf_counter() - t
    print(f"{kind}: load 4 extensions {t_load*1e3:.0f} ms, ATTACH(create) {t_attach*1e3:.0f} ms")
    con.execute("CREATE TABLE case_log (case_id UBIGINT, pid INTEGER, seq INTEGER, ts TIMESTAMP, status VARCHAR, note VARCHAR)")
    con.execute("CREATE TABLE cases (id UBIGINT, status VARCHAR, version INTEGER, updated TIMESTAMP, lon DOUBLE, lat DOUBLE)")
    con.execute("INSERT INTO cases SELECT i, 'open', 0, now()::TIMESTAMP, random(), random() FROM range(1, 1001) r(i)")
    con.close()
    t = time.perf_counter(); con = L.connect(); con.execute(L.attach_sql(kind, base)); con.execute("USE lake"); t2 = time.perf_counter() - t
    print(f"{kind}: connect+load+ATTACH existing lake {t2*1e3:.0f} ms")
    return con

def bench(con, label, fn, n=100):
    lat = []
    for i in range(n):
        t = time.perf_counter(); fn(i); lat.append(time.perf_counter() - t)
    print(f"  {label:48s} p50 {L.pct(lat,50)*1e3:7.1f} ms  p99 {L.pct(lat,99)*1e3:7.1f} ms")

for kind in ("sqlite", "pg"):
    con = setup(kind)
    bench(con, "SELECT 1 (no lake)", lambda i: con.execute("SELECT 1").fetchone())
    bench(con, "SELECT status FROM cases WHERE id=?", lambda i: con.execute("SELECT status FROM cases WHERE id=?", [i + 1]).fetchone())
    bench(con, "SELECT count(*) FROM case_log", lambda i: con.execute("SELECT count(*) FROM case_log").fetchone())
    bench(con, "current snapshot id", lambda i: con.execute("SELECT id FROM lake.current_snapshot()").fetchone())
    bench(con, "INSERT case_log (autocommit)", lambda i: con.execute("INSERT INTO case_log VALUES (?, 1, ?, now()::TIMESTAMP, 'moved', 'x')", [i, i]))
    bench(con, "UPDATE cases by id (autocommit)", lambda i: con.execute("UPDATE cases SET version=version+1 WHERE id=?", [i + 1]))
    def both(i):
        con.execute("BEGIN"); con.execute("INSERT INTO case_log VALUES (?, 1, ?, now()::TIMESTAMP, 'moved', 'x')", [i, i])
        con.execute("UPDATE cases SET version=version+1 WHERE id=?", [i + 1]); con.execute("COMMIT")
    bench(con, "BEGIN; INSERT; UPDATE; COMMIT", both)
    def both_ins(i):
        con.execute("BEGIN"); con.execute("INSERT INTO case_log VALUES (?, 1, ?, now()::TIMESTAMP, 'moved', 'x')", [i, i])
        con.execute("INSERT INTO case_log VALUES (?, 1, ?, now()::TIMESTAMP, 'moved', 'y')", [i, i]); con.execute("COMMIT")
    bench(con, "BEGIN; INSERT; INSERT; COMMIT", both_ins)
    print("  snapshots:", con.execute("SELECT count(*) FROM lake.snapshots()").fetchone()[0],
          "inlined-delete cases rows now:", con.execute("SELECT count(*), sum(version) FROM cases").fetchone())
    bench(con, "SELECT status FROM cases WHERE id=? (after 200 upd)", lambda i: con.execute("SELECT status FROM cases WHERE id=?", [i + 1]).fetchone())
    con.close()
