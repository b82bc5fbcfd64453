"""Minimal reproduction of a wrong table-level column statistic in DuckLake (DuckDB 1.5.5, SQLite catalog), found
through civicgrid's cases backfill + link_rebounds (bench/DUCKLAKE.md section 10).

One transaction writes a table both a Parquet file and inlined rows (``data_inlining_row_limit``: here a bulk
INSERT of 1,800 rows plus an INSERT of 450 rows; in civicgrid a bulk INSERT then an UPDATE of some of its rows,
whose new versions are inlined). When the file's column is all NULL, the table's min/max of the column stay
NULL: the inlined rows' values are not counted. A later commit then sets the min/max from its own rows only, above
values stored, and reads that trust the statistic return wrong values (2 read as 65538 by a sort compressed on the
minimum) or fail (perfect hash aggregate).

Each case prints the catalog's table min/max after each commit, the values stored, and the reads of
:data:`QUERIES` that differ from the same reads of a DuckDB memory table given the same statements: by default,
and with :data:`SAFE`. ``python t10_inlined_stats.py`` runs every case; a name runs one.
"""
import os
import shutil
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from lakecommon import connect  # noqa: E402

ROOT = "/tmp/ducklake/t10"


def table_stats(base: str) -> tuple:
    c = sqlite3.connect(f"{base}/c.sqlite")
    try:
        return c.execute("""SELECT s.min_value, s.max_value FROM ducklake_table_column_stats s
            JOIN ducklake_column c USING (table_id, column_id) WHERE c.column_name = 'r' AND c.end_snapshot IS NULL
        """).fetchone()
    finally:
        c.close()


#: Each case: per commit, the statements (``{lo}``: first id of the commit, ``{v}``: its first value).
CASES = {
    # file all NULL + inlined rows with values, in one transaction (the bug)
    "file_null+inlined": ["INSERT INTO t SELECT i, NULL FROM range({lo}, {lo} + 1800) r(i)",
                          "INSERT INTO t SELECT i, {v} + i - {lo} FROM range({lo} + 1800, {lo} + 2250) r(i)"],
    # the same through an UPDATE of the file's rows in the transaction (civicgrid's backfill + link_rebounds)
    "file_null+update": ["INSERT INTO t SELECT i, NULL FROM range({lo}, {lo} + 1800) r(i)",
                         "UPDATE t SET r = {v} + id - {lo} WHERE id >= {lo} AND (id - {lo}) % 4 = 0"],
    # the same with Parquet files written beforehand and added with ducklake_add_data_files (civicgrid's import)
    "add_files_null+values": ["FILE SELECT i AS id, NULL::BIGINT AS r FROM range({lo}, {lo} + 10) r(i)",
                              "FILE SELECT i AS id, {v} + i - {lo} AS r FROM range({lo} + 10, {lo} + 20) r(i)"],
    # controls: the file holds values too; inlined rows only; file only
    "file_values+inlined": ["INSERT INTO t SELECT i, 100000 + i FROM range({lo}, {lo} + 1800) r(i)",
                            "INSERT INTO t SELECT i, {v} + i - {lo} FROM range({lo} + 1800, {lo} + 2250) r(i)"],
    "inlined_only": ["INSERT INTO t SELECT i, {v} + i - {lo} FROM range({lo}, {lo} + 450) r(i)"],
    "file_only": ["INSERT INTO t SELECT i, CASE WHEN i % 4 = 0 THEN {v} + i - {lo} END FROM range({lo}, {lo} + 1800) r(i)"],
}


#: Reads compared between the lake table and a DuckDB memory table holding the same rows (the truth).
QUERIES = (
    "SELECT id, r FROM {t} ORDER BY r NULLS FIRST, id",
    "SELECT r, count(*) FROM {t} GROUP BY r ORDER BY r NULLS FIRST",
    "SELECT min(r), max(r), count(r), count(*) FROM {t}",
    "SELECT count(*) FROM {t} WHERE r < 1000",
    "SELECT count(*) FROM {t} WHERE r BETWEEN 2 AND 13",
    "SELECT id FROM {t} WHERE r = 2",
    "SELECT count(*) FROM {t} a JOIN {t} b ON a.r = b.id",
    "SELECT r, sum(id) OVER (ORDER BY r) FROM {t} WHERE r IS NOT NULL ORDER BY r LIMIT 5",
)
#: What makes reads correct on a store whose statistics are wrong.
SAFE = "SET disabled_optimizers = 'compressed_materialization,statistics_propagation'"


def reads(con, table: str) -> list:
    out = []
    for q in QUERIES:
        try:
            out.append(con.execute(q.format(t=table)).fetchall())
        except Exception as exc:  # noqa: BLE001
            out.append(f"error: {str(exc).splitlines()[0][:100]}")
    return out


def run(name: str) -> dict:
    base = f"{ROOT}/{name}"
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    con = connect(exts=("ducklake", "sqlite_scanner"))
    con.execute(f"ATTACH 'ducklake:sqlite:{base}/c.sqlite' AS lake (DATA_PATH '{base}/d/')")
    con.execute("CALL lake.set_option('data_inlining_row_limit', 1000)")
    for db in ("lake", "memory"):
        con.execute(f"CREATE TABLE {db}.t (id BIGINT, r BIGINT)")
    for k, v in enumerate((2, 14)):
        for db in ("lake", "memory"):
            con.execute(f"USE {db}")
            con.execute("BEGIN")
            for j, sql in enumerate(CASES[name]):
                sql = sql.format(lo=100000 * k, v=v)
                if sql.startswith("FILE "):  # a Parquet file added to the lake, inserted into the memory table
                    path = f"{base}/f{k}_{j}.parquet"
                    if db == "lake":
                        con.execute(f"COPY ({sql[5:]}) TO '{path}'")
                        sql = f"CALL ducklake_add_data_files('lake', 't', '{path}')"
                    else:
                        sql = f"INSERT INTO t SELECT * FROM read_parquet('{path}')"
                con.execute(sql)
            con.execute("COMMIT")
        print(f"{name}: commit {k + 1}: table stats min/max {table_stats(base)}")
    true = con.execute("SELECT min(r)::VARCHAR, max(r)::VARCHAR FROM memory.t").fetchone()
    print(f"{name}: values stored: min/max {true}")
    want = reads(con, "memory.t")
    result = {}
    for label, setting in (("default", None), ("safe", SAFE)):
        if setting:
            con.execute(setting)
        got = reads(con, "lake.t")
        bad = [QUERIES[i].format(t="t") for i in range(len(QUERIES)) if got[i] != want[i]]
        result[label] = bad
        for i, q in enumerate(QUERIES):
            if got[i] != want[i]:
                g = got[i] if isinstance(got[i], str) else f"{got[i][:3]}"
                print(f"  {label}: WRONG {q.format(t='t')}: {g} (want {want[i][:3]})")
        print(f"{name}: {label} reads: {len(bad)} of {len(QUERIES)} wrong")
    con.close()
    return result


if __name__ == "__main__":
    import duckdb
    print("duckdb", duckdb.__version__)
    results = {name: run(name) for name in (sys.argv[1:] or CASES)}
    for name, r in results.items():
        print(f"{name}: wrong reads default {len(r['default'])}, with {SAFE!r} {len(r['safe'])}")
