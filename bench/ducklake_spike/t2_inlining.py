"""Q2/Q4: data inlining -- which column types inline, how to set the limit, visibility from another process."""
import os
import shutil
import sqlite3
import subprocess
import sys

import lakecommon as L


def files(con, t):
    return con.execute(f"SELECT count(*) FROM ducklake_list_files('lake','{t}')").fetchone()[0]

def run(kind, base):
    print(f"===== {kind} =====")
    con = L.open_lake(kind, base)
    tables = {
        "simple": "id UBIGINT, ts TIMESTAMP, s VARCHAR, b BOOLEAN, x DOUBLE",
        "withgeom": "id UBIGINT, geom GEOMETRY",
        "withlist": "id UBIGINT, l VARCHAR[]",
        "withjson": "id UBIGINT, j JSON",
        "withtstz": "id UBIGINT, t TIMESTAMPTZ",
        "withblob": "id UBIGINT, w BLOB",
    }
    vals = {"simple": "(1, now()::TIMESTAMP, 'a', true, 1.0)", "withgeom": "(1, ST_Point(1,2))",
            "withlist": "(1, ['a'])", "withjson": "(1, '{}')", "withtstz": "(1, now())", "withblob": "(1, '\\x01'::BLOB)"}
    for t, cols in tables.items():
        con.execute(f"CREATE TABLE {t} ({cols})")
        try:
            con.execute(f"INSERT INTO {t} VALUES {vals[t]}")
            print(f"  {t:9s} 1-row insert -> parquet files: {files(con, t)}")
        except Exception as e:
            print(f"  {t:9s} insert FAIL {str(e).splitlines()[0][:200]}")
    # 11 rows > default 10 => parquet
    con.execute("INSERT INTO simple SELECT i, now()::TIMESTAMP, 'b', false, 2.0 FROM range(2, 13) r(i)")
    print("  simple after 11-row insert: files", files(con, "simple"))
    # set option per lake / per table
    for stmt in ["CALL lake.set_option('data_inlining_row_limit', 1000)",
                 "CALL lake.set_option('data_inlining_row_limit', 50, table_name => 'simple')",
                 "CALL ducklake_set_option('lake', 'data_inlining_row_limit', 1000)"]:
        try: con.execute(stmt); print("  OK", stmt)
        except Exception as e: print("  FAIL", stmt, str(e).splitlines()[0][:200])
    print("  options:", con.execute("SELECT option_name, value, scope, scope_entry FROM lake.options() WHERE option_name LIKE '%inlin%'").fetchall())
    con.execute("INSERT INTO simple SELECT i, now()::TIMESTAMP, 'c', false, 3.0 FROM range(100, 140) r(i)")
    print("  simple after 40-row insert w/ per-table limit 50: files", files(con, "simple"))
    con.execute("INSERT INTO simple SELECT i, now()::TIMESTAMP, 'c', false, 3.0 FROM range(200, 300) r(i)")
    print("  simple after 100-row insert w/ per-table limit 50: files", files(con, "simple"))
    # another process sees inlined rows?
    code = f"import lakecommon as L; c=L.open_lake({kind!r},{base!r}); print(c.execute('SELECT count(*), count(*) FILTER (s=\\'a\\') FROM simple').fetchall())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/tmp/ducklake")
    print("  other process count(simple) (expect 152 rows, 1 'a'):", out.stdout.strip(), out.stderr.strip()[-300:])
    # attach-time option
    con2 = L.connect()
    try:
        con2.execute(L.attach_sql(kind, base, alias="lake2", extra=", DATA_INLINING_ROW_LIMIT 5"))
        print("  ATTACH ... DATA_INLINING_ROW_LIMIT 5: OK;", con2.execute("SELECT option_name, value, scope FROM lake2.options() WHERE option_name LIKE '%inlin%'").fetchall())
    except Exception as e:
        print("  ATTACH DATA_INLINING_ROW_LIMIT FAIL", str(e).splitlines()[0][:200])
    # flush inlined
    print("  flush:", con.execute("CALL ducklake_flush_inlined_data('lake')").fetchall())
    print("  simple files after flush", files(con, "simple"), con.execute("SELECT count(*) FROM simple").fetchone())
    # catalog tables holding inlined data
    if kind == "sqlite":
        s = sqlite3.connect(f"{base}/city.sqlite")
        print("  sqlite catalog inlined tables:", [r[0] for r in s.execute("SELECT name FROM sqlite_master WHERE name LIKE '%inlined%'")])
    con.close(); con2.close()

d = "/tmp/ducklake/x2"; shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
run("sqlite", d)
subprocess.run("su lakepg -c '/usr/lib/postgresql/15/bin/dropdb --force -h /tmp/ducklake/pg -p 5499 -U lake --if-exists misc; /usr/lib/postgresql/15/bin/createdb -h /tmp/ducklake/pg -p 5499 -U lake misc'", shell=True)
shutil.rmtree("/tmp/ducklake/pgdata_misc", ignore_errors=True)
run("pg", "misc")
