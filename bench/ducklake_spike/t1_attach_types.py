"""Q1+Q2: attach with SQLite and PostgreSQL catalogs; type round-trip; macros."""
import os
import shutil

import lakecommon as L


def run(kind, base):
    print(f"===== {kind} =====")
    con = L.connect()
    sql = L.attach_sql(kind, base)
    print(sql)
    con.execute(sql)
    con.execute("USE lake")
    con.execute("""CREATE TABLE t (id UBIGINT, ts TIMESTAMP, name VARCHAR, ok BOOLEAN, x DOUBLE,
                   geom GEOMETRY, tstz TIMESTAMPTZ, d DATE, i INTEGER, big BIGINT, arr VARCHAR[], js JSON)""")
    con.execute("""INSERT INTO t VALUES (18446744073709551615, TIMESTAMP '2024-05-01 12:34:56.789123', 'café ✓', true, 1.5,
                   ST_Point(2.35, 48.85), TIMESTAMPTZ '2024-05-01 12:00:00+02', DATE '2024-05-01', 7, -9, ['a','b'], '{"k":1}'),
                   (1, NULL, NULL, NULL, NULL, ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'), NULL, NULL, NULL, NULL, NULL, NULL)""")
    print(con.execute("SELECT id, ts, name, ok, x, ST_AsText(geom), typeof(geom), tstz, arr, js, ST_Area(geom) FROM t ORDER BY id").fetchall())
    print(con.execute("DESCRIBE t").fetchall())
    # fresh connection reads it back
    con2 = L.connect(); con2.execute(sql); con2.execute("USE lake")
    print("fresh:", con2.execute("SELECT id, ST_AsText(geom), typeof(geom), ST_GeometryType(geom), ST_AsWKB(geom)::BLOB FROM t ORDER BY id").fetchall())
    # files written
    print("data files:", con2.execute("SELECT data_file FROM ducklake_list_files('lake','t')").fetchall())
    # macro in lake?
    for stmt in ["CREATE MACRO lake.main.twice(a) AS a*2",
                 "CREATE MACRO twice(a) AS a*2",
                 "CREATE TEMP MACRO twice_t(a) AS a*2",
                 "CREATE MACRO memory.main.twice_m(a) AS a*2",
                 "CREATE VIEW v AS SELECT id, ST_AsText(geom) AS wkt FROM t",
                 "CREATE TABLE ts_def (id INTEGER, v VARCHAR DEFAULT 'x')"]:
        try:
            con.execute(stmt); print("OK  ", stmt)
        except Exception as e:
            print("FAIL", stmt, "->", type(e).__name__, str(e).splitlines()[0][:200])
    for q in ["SELECT twice_m(3)", "SELECT twice_t(3)", "SELECT twice(3)"]:
        try: print(q, con.execute(q).fetchall())
        except Exception as e: print("FAIL", q, str(e).splitlines()[0][:150])
    con3 = L.connect(); con3.execute(sql); con3.execute("USE lake")
    for q in ["SELECT * FROM v", "SELECT lake.main.twice(3)", "SELECT twice(3)"]:
        try: print("fresh", q, con3.execute(q).fetchall())
        except Exception as e: print("fresh FAIL", q, str(e).splitlines()[0][:150])
    print(con3.execute("SELECT function_name, database_name, schema_name, function_type FROM duckdb_functions() WHERE function_name LIKE 'twice%'").fetchall())
    con.close(); con2.close(); con3.close()

d = "/tmp/ducklake/x1"; shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
run("sqlite", d)
shutil.rmtree("/tmp/ducklake/pgdata_t1", ignore_errors=True)
run("pg", "t1")
