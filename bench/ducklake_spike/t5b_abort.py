"""Q5 extra: a failed import (ROLLBACK, exception, kill -9) publishes nothing; what happens to its Parquet files."""
import os
import shutil
import signal
import subprocess
import sys

import lakecommon as L

d = "/tmp/ducklake/x5b"
def nfiles():
    return sum(len(fs) for _, _, fs in os.walk(f"{d}/city.data"))
shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
con = L.open_lake("sqlite", d, extra=", META_JOURNAL_MODE 'WAL'")
con.execute("CREATE TABLE ev (id BIGINT, v DOUBLE, s VARCHAR)")
con.execute("BEGIN")
for b in range(3):
    con.execute(f"INSERT INTO ev SELECT i, random(), 'x' FROM range({b*1_000_000}, {(b+1)*1_000_000}) r(i)")
print("files during open txn:", nfiles())
con.execute("ROLLBACK")
print("after ROLLBACK: rows", con.execute("SELECT count(*) FROM ev").fetchone()[0], "files on disk", nfiles())
# python exception mid-import, then connection closed
try:
    con.execute("BEGIN")
    con.execute("INSERT INTO ev SELECT i, random(), 'x' FROM range(1000000) r(i)")
    raise RuntimeError("validation failed")
except RuntimeError:
    con.execute("ROLLBACK")
print("after exception+ROLLBACK: rows", con.execute("SELECT count(*) FROM ev").fetchone()[0], "files", nfiles())
# kill -9 during an import in another process
code = f"""
import lakecommon as L, time
c = L.open_lake('sqlite', '{d}'); c.execute('BEGIN')
for b in range(50):
    c.execute(f"INSERT INTO ev SELECT i, random(), 'x' FROM range({{b*1_000_000}}, {{(b+1)*1_000_000}}) r(i)")
    print('batch', b, flush=True)
c.execute('COMMIT')
"""
p = subprocess.Popen([sys.executable, "-c", code], cwd="/tmp/ducklake", stdout=subprocess.PIPE, text=True)
for line in p.stdout:
    if line.startswith("batch 3"):
        os.kill(p.pid, signal.SIGKILL); break
p.wait()
print("after kill -9 mid-import: rows", con.execute("SELECT count(*) FROM ev").fetchone()[0], "files on disk", nfiles())
print("delete_orphaned_files (default older_than) ->", len(con.execute("CALL ducklake_delete_orphaned_files('lake')").fetchall()), "files; on disk", nfiles())
print("delete_orphaned_files(older_than => now() - INTERVAL '1 hour') ->",
      len(con.execute("CALL ducklake_delete_orphaned_files('lake', older_than => now() - INTERVAL '1 hour')").fetchall()), "files")
print("delete_orphaned_files(older_than => now() - INTERVAL '1 second') ->",
      len(con.execute("CALL ducklake_delete_orphaned_files('lake', older_than => now() - INTERVAL '1 second')").fetchall()), "files; on disk", nfiles())
con.execute("INSERT INTO ev VALUES (1, 1, 'after')")
print("next write OK; rows", con.execute("SELECT count(*) FROM ev").fetchone()[0])
