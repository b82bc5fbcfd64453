"""Q8 extra: type support per column, non-literal DEFAULT, RTREE index, CHECKPOINT effect."""
import os
import shutil

import lakecommon as L

d = "/tmp/ducklake/x8b"; shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
con = L.open_lake("sqlite", d)
for t in ["GEOMETRY", "UBIGINT", "HUGEINT", "UHUGEINT", "DECIMAL(18,3)", "UUID", "INTERVAL", "VARCHAR[]", "INTEGER[3]",
          "MAP(VARCHAR, INTEGER)", "STRUCT(a INT, b VARCHAR)", "ENUM('a','b')", "TIME", "TIMESTAMP_NS", "TIMESTAMPTZ", "BLOB", "JSON", "BIT", "VARIANT"]:
    try:
        con.execute(f'CREATE OR REPLACE TABLE ty (c {t})'); con.execute("INSERT INTO ty SELECT NULL"); print(f"OK   {t}")
    except Exception as e:
        print(f"FAIL {t}: {str(e).splitlines()[0][:110]}")
for s in ["CREATE TABLE dft (id INTEGER, t TIMESTAMP DEFAULT now())", "INSERT INTO dft (id) VALUES (1)", "SELECT * FROM dft",
          "CREATE TABLE dft2 (id INTEGER, u UUID DEFAULT uuidv7())", "INSERT INTO dft2 (id) VALUES (1)", "SELECT * FROM dft2",
          "CREATE TABLE gg (id INTEGER, geom GEOMETRY)", "CREATE INDEX gix ON gg USING RTREE (geom)"]:
    try:
        r = con.execute(s); print("OK  ", s, r.fetchall() if s.startswith("SELECT") else "")
    except Exception as e:
        print("FAIL", s, "->", str(e).splitlines()[0][:140])
