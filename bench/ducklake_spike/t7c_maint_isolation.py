"""Q7 extra: does maintenance in another process change what an open read transaction sees?"""
import os
import shutil
import sqlite3
import subprocess
import sys

import lakecommon as L

KIND = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
base = "/tmp/ducklake/x7c" if KIND == "sqlite" else "snap"
PGBIN = "/usr/lib/postgresql/15/bin"
OPS = ["CALL ducklake_flush_inlined_data('lake')", "CALL ducklake_merge_adjacent_files('lake')",
       "CALL ducklake_expire_snapshots('lake', older_than => now())", "CALL ducklake_cleanup_old_files('lake', cleanup_all => true)",
       "CALL ducklake_rewrite_data_files('lake', delete_threshold => 0.0)"]
def q(con):
    return con.execute("SELECT count(*), count(v), count(DISTINCT id) FROM ev").fetchone()
for op in OPS:
    for _c in ("con", "r"):
        if _c in globals(): globals()[_c].close()
    if KIND == "sqlite":
        shutil.rmtree(base, ignore_errors=True); os.makedirs(base)
        s = sqlite3.connect(f"{base}/city.sqlite"); s.execute("PRAGMA journal_mode=WAL"); s.close()
    else:
        subprocess.run(f"su lakepg -c '{PGBIN}/dropdb --force -h /tmp/ducklake/pg -p 5499 -U lake --if-exists snap && {PGBIN}/createdb -h /tmp/ducklake/pg -p 5499 -U lake snap'", shell=True, check=True)
        shutil.rmtree("/tmp/ducklake/pgdata_snap", ignore_errors=True)
    con = L.open_lake(KIND, base)
    con.execute("CREATE TABLE ev (id BIGINT, v DOUBLE)")
    for b in range(20):
        con.execute(f"INSERT INTO ev SELECT i + {b * 100}, random() FROM range({5 if b % 2 else 100}) r(i)")  # mix inlined + files
    con.execute("DELETE FROM ev WHERE id % 7 = 0")
    if "cleanup" in op:
        con.execute("CALL ducklake_merge_adjacent_files('lake')"); con.execute("CALL ducklake_expire_snapshots('lake', older_than => now())")
    r = L.connect(); r.execute(L.attach_sql(KIND, base)); r.execute("USE lake")
    r.execute("BEGIN"); a = q(r)
    code = f"import lakecommon as L; c=L.open_lake('{KIND}','{base}'); print(c.execute(\"{op}\").fetchall()[:2])"
    out = subprocess.run([sys.executable, "-c", code], cwd="/tmp/ducklake", capture_output=True, text=True)
    try:
        b = q(r); r.execute("COMMIT"); c = q(r)
        print(f"{op:70s} txn before {a} / in txn after {b} / new txn {c}  {'OK' if a == b == c else 'DIFFERENT'}  [{out.stdout.strip()[:60]}{out.stderr.strip()[-100:]}]")
    except Exception as e:
        print(f"{op:70s} txn before {a} / in-txn read FAILS: {str(e).splitlines()[0][:120]}")
