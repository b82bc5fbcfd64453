"""Issue 17 part 2: which maintenance calls conflict with the commits civicgrid makes, and which side fails.

For each maintenance call M and each kind of concurrent write W (append into Parquet, inlined append, UPDATE and
DELETE of rows in files M rewrites), two orders on two connections (two DuckDB instances, like two processes):
  m_first : W begins and writes, M runs and commits, then W commits
  w_first : M begins (BEGIN; CALL ...) and does its work, W commits, then M commits
Prints which commit failed (and its message) and whether the table holds exactly what was acknowledged.
Run: python t11_maint_pieces.py sqlite|pg [merge,flush,...]  (pg: a server as pgctl.sh starts, or PGSOCK=dir
PGPORT=port; WIDTH=300 shows whole messages, DEBUG=1 the rows found). Findings: DUCKLAKE.md section 7.
"""
import shutil
import sqlite3
import subprocess
import sys
import os

import lakecommon as L

KIND = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
BASE = "/tmp/maintfree/t11" if KIND == "sqlite" else "t11"
PGBIN = "/usr/lib/postgresql/15/bin"
PGHOST = os.environ.get("PGSOCK", "/tmp/ducklake/pg")
PGPORT = os.environ.get("PGPORT", "5499")
L.PG_DSN = f"host={PGHOST} port={PGPORT} user=lake dbname={{db}}"

MAINT = {
    "none": "SELECT 1",
    "merge": "CALL ducklake_merge_adjacent_files('lake', 'ev', max_compacted_files => 1)",
    "merge_all": "CALL ducklake_merge_adjacent_files('lake')",
    "rewrite": "CALL ducklake_rewrite_data_files('lake', 'ev', delete_threshold => 0.0)",
    "flush": "CALL ducklake_flush_inlined_data('lake')",
    "expire": "CALL ducklake_expire_snapshots('lake', older_than => now())",
    "cleanup": "CALL ducklake_cleanup_old_files('lake', cleanup_all => true)",
    "sorted_by": "ALTER TABLE ev SET SORTED BY (v)",
}
WRITES = {
    "append_file": "INSERT INTO ev SELECT 900000 + i, 1.0 FROM range(50) r(i)",
    "append_inlined": "INSERT INTO ev VALUES (999999, 1.0)",
    "append_other_table": "INSERT INTO log VALUES (1, 'x')",
    "update": "UPDATE ev SET v = -1 WHERE id = 23",
    "delete": "DELETE FROM ev WHERE id = 25",
}


def fresh():
    if KIND == "sqlite":
        shutil.rmtree(BASE, ignore_errors=True)
        os.makedirs(BASE)
        s = sqlite3.connect(f"{BASE}/city.sqlite")
        s.execute("PRAGMA journal_mode=WAL")
        s.close()
    else:
        subprocess.run(f"{PGBIN}/dropdb --force -h {PGHOST} -p {PGPORT} -U lake --if-exists {BASE} && "
                       f"{PGBIN}/createdb -h {PGHOST} -p {PGPORT} -U lake {BASE}", shell=True, check=True)
        shutil.rmtree(f"/tmp/ducklake/pgdata_{BASE}", ignore_errors=True)
    con = L.open_lake(KIND, BASE)
    con.execute("CALL lake.set_option('data_inlining_row_limit', 10)")
    con.execute("CREATE TABLE ev (id BIGINT, v DOUBLE)")
    con.execute("CREATE TABLE log (id BIGINT, s VARCHAR)")
    for b in range(6):  # 6 small Parquet files of 20 rows (ids 0..119), one inlined batch and deletes in file 0
        con.execute(f"INSERT INTO ev SELECT i + {b * 20}, i FROM range(20) r(i)")
    con.execute("INSERT INTO ev VALUES (500, 5.0)")
    con.execute("DELETE FROM ev WHERE id = 7")
    return con


def expected(wname):
    ids = set(range(120)) | {500}
    ids.discard(7)
    if wname == "append_file":
        ids |= {900000 + i for i in range(50)}
    if wname == "append_inlined":
        ids.add(999999)
    if wname == "delete":
        ids.discard(25)
    return ids


def check(con, wname, w_ok):
    ids = {r[0] for r in con.execute("SELECT id FROM ev").fetchall()}
    want = expected(wname) if w_ok else expected("none")
    v3 = con.execute("SELECT v FROM ev WHERE id = 23").fetchall()
    v3_ok = v3 == ([(-1.0,)] if (wname == "update" and w_ok) else [(3.0,)])
    if os.environ.get("DEBUG"):
        print("  missing", sorted(want - ids)[:10], "extra", sorted(ids - want)[:10], "v23", v3, "rows",
              con.execute("SELECT count(*) FROM ev").fetchone())
    return ids == want and v3_ok


def attempt(con, sql):
    try:
        con.execute(sql)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"FAIL {type(exc).__name__}: {str(exc)[:400]}"


ONLY = sys.argv[2].split(",") if len(sys.argv) > 2 else None
WIDTH = int(os.environ.get("WIDTH", "60"))
for mname, msql in MAINT.items():
    if ONLY and mname not in ONLY:
        continue
    for wname, wsql in WRITES.items():
        for order in ("m_first", "w_first"):
            c0 = fresh()
            c0.close()
            m = L.open_lake(KIND, BASE)
            w = L.open_lake(KIND, BASE)
            if order == "m_first":
                w.execute("BEGIN")
                w.execute(wsql)
                rm = attempt(m, msql)
                rw = attempt(w, "COMMIT")
            else:
                m.execute("BEGIN")
                rb = attempt(m, msql)
                rw = attempt(w, wsql)
                rm = attempt(m, "COMMIT") if rb == "ok" else rb
            r = L.open_lake(KIND, BASE)
            good = check(r, wname, rw == "ok")
            print(f"{KIND:6} {mname:9} {wname:18} {order:7} maint={rm:{WIDTH}.{WIDTH}} write={rw:{WIDTH}.{WIDTH}} correct={good}",
                  flush=True)
            for c in (m, w, r):
                c.close()
