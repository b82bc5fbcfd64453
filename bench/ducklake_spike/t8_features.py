"""Q8: what DDL/DML works in a DuckLake (1.5.5, format 1.0); SQLite and PG catalogs."""
import os
import shutil
import subprocess
import sys

import lakecommon as L

STMTS = [
    "CREATE TABLE pk (id INTEGER PRIMARY KEY, v VARCHAR)",
    "CREATE TABLE uq (id INTEGER UNIQUE, v VARCHAR)",
    "CREATE TABLE ck (id INTEGER CHECK (id > 0))",
    "CREATE TABLE nn (id INTEGER NOT NULL, v VARCHAR)",
    "INSERT INTO nn VALUES (NULL, 'x')",
    "CREATE TABLE fk (id INTEGER, p INTEGER REFERENCES nn(id))",
    "CREATE SEQUENCE seq1",
    "CREATE TABLE defs (id INTEGER, s VARCHAR DEFAULT 'open', n INTEGER DEFAULT 0, t TIMESTAMP DEFAULT now())",
    "CREATE TABLE defs2 (id INTEGER, s VARCHAR DEFAULT 'open', n INTEGER DEFAULT 0)",
    "INSERT INTO defs2 (id) VALUES (1)",
    "SELECT * FROM defs2",
    "CREATE TABLE g (id INTEGER, geom GEOMETRY, h3 UBIGINT, tags VARCHAR[], m MAP(VARCHAR, INTEGER), st STRUCT(a INT, b VARCHAR), e ENUM('a','b'), u UUID, iv INTERVAL, hi HUGEINT, dec DECIMAL(18,3), fa INTEGER[3])",
    "CREATE TYPE mood AS ENUM ('a','b')",
    "CREATE INDEX ix ON nn(id)",
    "CREATE INDEX gix ON g USING RTREE (geom)",
    "ALTER TABLE nn ADD COLUMN added INTEGER DEFAULT 5",
    "INSERT INTO nn (id) VALUES (1)",
    "SELECT * FROM nn",
    "ALTER TABLE nn RENAME COLUMN added TO added2",
    "ALTER TABLE nn ALTER COLUMN id TYPE BIGINT",
    "ALTER TABLE nn ALTER COLUMN v TYPE INTEGER",
    "ALTER TABLE nn DROP COLUMN added2",
    "ALTER TABLE nn RENAME TO nn2",
    "ALTER TABLE nn2 ALTER id DROP NOT NULL",
    "CREATE VIEW vv AS SELECT * FROM nn2",
    "CREATE OR REPLACE VIEW vv AS SELECT id FROM nn2",
    "CREATE SCHEMA s2",
    "CREATE TABLE s2.t (i INTEGER)",
    "CREATE TABLE ctas AS SELECT range AS i, range::VARCHAR AS s FROM range(100)",
    "INSERT INTO ctas VALUES (1, 'dup') ON CONFLICT DO NOTHING",
    "MERGE INTO ctas USING (SELECT 1 AS i, 'merged' AS s) src ON ctas.i = src.i WHEN MATCHED THEN UPDATE SET s = src.s WHEN NOT MATCHED THEN INSERT VALUES (src.i, src.s)",
    "UPDATE ctas SET s = 'u' WHERE i < 10",
    "DELETE FROM ctas WHERE i > 90",
    "TRUNCATE ctas",
    "ALTER TABLE ctas SET PARTITIONED BY (i)",
    "COMMENT ON TABLE ctas IS 'hello'",
    "CREATE TEMP TABLE tmp_t (i INTEGER)",
    "CREATE MACRO m1(a) AS a + 1",
    "CREATE MACRO tm() AS TABLE SELECT 42 AS x",
    "SELECT * FROM tm()",
    "CREATE OR REPLACE MACRO m1(a) AS a + 2",
    "SELECT m1(1)",
    "CHECKPOINT",
]

def run(kind, base):
    print(f"===== {kind}")
    con = L.open_lake(kind, base)
    for s in STMTS:
        try:
            r = con.execute(s)
            try: rows = r.fetchall()
            except Exception: rows = None
            print(f"OK   {s[:110]}" + (f"  -> {rows[:3]}" if rows and s.startswith("SELECT") else ""))
        except Exception as e:
            print(f"FAIL {s[:110]}\n       -> {type(e).__name__}: {str(e).splitlines()[0][:160]}")

d = "/tmp/ducklake/x8"; shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
run("sqlite", d)
pgbin = "/usr/lib/postgresql/15/bin"
subprocess.run(f"su lakepg -c '{pgbin}/dropdb --force -h /tmp/ducklake/pg -p 5499 -U lake --if-exists misc && {pgbin}/createdb -h /tmp/ducklake/pg -p 5499 -U lake misc'", shell=True, check=True)
shutil.rmtree("/tmp/ducklake/pgdata_misc", ignore_errors=True)
if "--pg" in sys.argv: run("pg", "misc")
