"""Search for the reported DuckLake 1.5.5 bug (an INTEGER 11 read back as 65547 with ORDER BY after UPDATE):
fill a lake table over 1 or 3 snapshots, UPDATE every 7th row (value set to 11), read it with and without ORDER
BY (and ORDER BY ... LIMIT, SELECT *), and print every read that differs from the expected values. Matrix:
30 / 3,000 / 150,000 rows x inlining limit 0 / 10 / 1000 / 1e6 x columns added by ALTER or not x ORDER BY an
int, a text or the updated column. Run of 2026-12-06 (DuckDB + DuckLake 1.5.5, SQLite catalog): no difference
(prints only "done"): the bug is NOT reproduced by this matrix."""
import sys, shutil, os, itertools
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from lakecommon import connect

def run(n, inline, alter, order, limit, nsnap, tag):
    base = f"/tmp/ducklake/t9_{tag}"
    shutil.rmtree(base, ignore_errors=True); os.makedirs(base)
    con = connect(exts=("ducklake", "sqlite_scanner"))
    con.execute(f"ATTACH 'ducklake:sqlite:{base}/c.sqlite' AS lake (DATA_PATH '{base}/d/')")
    con.execute("USE lake")
    con.execute(f"CALL lake.set_option('data_inlining_row_limit', {inline})")
    con.execute("CREATE TABLE t (id BIGINT, s VARCHAR, reopened INTEGER DEFAULT 0, imp INTEGER)")
    if alter:
        con.execute("ALTER TABLE t ADD COLUMN extra VARCHAR")
        con.execute("ALTER TABLE t ADD COLUMN flag BOOLEAN")
    per = n // nsnap
    exp = {}
    for k in range(nsnap):
        lo, hi = k * per, (k + 1) * per
        cols = "id, s, reopened, imp" + (", extra, flag" if alter else "")
        vals = f"i, 'x' || i, 0, {k+1}" + (", 'e' || i, i % 2 = 0" if alter else "")
        con.execute(f"INSERT INTO t ({cols}) SELECT {vals} FROM range({lo}, {hi}) r(i)")
        for i in range(lo, hi): exp[i] = k + 1
    # update: the --update pattern: change imp of every 7th row to 11
    con.execute("UPDATE t SET imp = 11, s = s || 'u' WHERE id % 7 = 0")
    for i in exp:
        if i % 7 == 0: exp[i] = 11
    bad = {}
    qs = ["SELECT id, imp FROM t", f"SELECT id, imp FROM t ORDER BY {order}"]
    if limit: qs.append(f"SELECT id, imp FROM t ORDER BY {order} LIMIT {limit}")
    qs.append(f"SELECT * FROM t ORDER BY {order}")
    for q in qs:
        rows = con.execute(q).fetchall()
        if q.startswith("SELECT *"):
            rows = [(r[0], r[3]) for r in rows]
        wrong = [(i, v, exp[i]) for i, v in rows if exp.get(i) != v]
        if wrong or (len(rows) != len(exp) and "LIMIT" not in q):
            bad[q] = (len(rows), wrong[:3], len(wrong))
    con.close()
    return bad

c = 0
for n in (30, 3000, 150000):
    for inline in (0, 10, 1000, 1000000):
        for alter in (False, True):
            for order in ("id", "s", "imp"):
                for nsnap in (1, 3):
                    c += 1
                    r = run(n, inline, alter, order, 10, nsnap, c)
                    if r: print(n, inline, alter, order, nsnap, r, flush=True)
print("done")
