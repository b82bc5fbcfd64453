"""Cost of loading each extension by file path into a fresh in-memory connection (median of 7)."""
import statistics
import subprocess
import sys

code = """
import time, duckdb, lakecommon as L, json, sys
names = sys.argv[1].split(',')
t = time.perf_counter(); con = duckdb.connect(':memory:', config=L.CONFIG); base = time.perf_counter() - t
out = {'connect': base}
for n in names:
    t = time.perf_counter(); con.load_extension(L.ext_path(n)); out[n] = time.perf_counter() - t
print(json.dumps(out))
"""
import json

res = {}
for _ in range(7):
    r = subprocess.run([sys.executable, "-c", code, "spatial,ducklake,sqlite_scanner,postgres_scanner"], capture_output=True, text=True, cwd="/tmp/ducklake")
    for k, v in json.loads(r.stdout).items(): res.setdefault(k, []).append(v)
for k, v in res.items(): print(f"{k:18s} median {statistics.median(v)*1e3:6.1f} ms  max {max(v)*1e3:6.1f} ms")
