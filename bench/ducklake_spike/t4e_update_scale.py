"""Q8: cost of point SELECT / UPDATE by id (no indexes in DuckLake) vs table size; SQLite catalog."""
import os
import random
import shutil
import time

import lakecommon as L

d = "/tmp/ducklake/x4e"; shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
con = L.open_lake("sqlite", d, extra=", META_JOURNAL_MODE 'WAL'")
nat = L.connect(); nat.execute(f"ATTACH '{d}/native.duckdb' AS nat")
for n in (1_000, 100_000, 1_000_000, 10_000_000):
    for tgt, c, name in (("lake", con, f"cases_{n}"), ("native", nat, f"nat.cases_{n}")):
        c.execute(f"CREATE TABLE {name} AS SELECT i AS id, 'open' AS status, 0 AS version, random() AS lon FROM range({n}) r(i)")
        rnd = random.Random(1); sel, upd = [], []
        for _ in range(30):
            k = rnd.randrange(n)
            t = time.perf_counter(); c.execute(f"SELECT status FROM {name} WHERE id = ?", [k]).fetchone(); sel.append(time.perf_counter() - t)
            t = time.perf_counter(); c.execute(f"UPDATE {name} SET version = version + 1 WHERE id = ?", [k]); upd.append(time.perf_counter() - t)
        extra = ""
        if tgt == "lake":
            extra = str(c.execute(f"SELECT count(*), count(delete_file) FROM ducklake_list_files('lake','{name}')").fetchone())
        print(f"{tgt:6s} rows={n:>9,}  point SELECT p50 {L.pct(sel,50)*1e3:6.1f} p99 {L.pct(sel,99)*1e3:6.1f} ms | "
              f"UPDATE by id p50 {L.pct(upd,50)*1e3:6.1f} p99 {L.pct(upd,99)*1e3:6.1f} ms  files/deletes {extra}", flush=True)
