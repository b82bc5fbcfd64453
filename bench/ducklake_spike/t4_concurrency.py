"""Q4: N processes x 100 small transactions (append case_log row + UPDATE one cases row by id), retry with jitter.

usage: t4_concurrency.py KIND NPROC MODE [TXNS] [SETTINGS]
  KIND  sqlite | pg
  MODE  update   : cases stored in a Parquet file (1000 rows), UPDATE + INSERT per txn
        inlined  : cases stored inlined in the catalog (limit 5000), UPDATE + INSERT per txn
        append   : INSERT into case_log + INSERT a new "cases_event" row (no UPDATE)
        hotrow   : all processes update the same 5 ids
  SETTINGS e.g. "ducklake_max_retry_count=0;ducklake_retry_wait_ms=10"
"""
import collections
import fcntl
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import time

import lakecommon as L

N_CASES = 1000

def base_for(kind, tag):
    if kind == "sqlite":
        return f"/tmp/ducklake/x4_{tag}"
    return f"conc_{tag}"

def setup(kind, base, mode):
    if kind == "sqlite":
        shutil.rmtree(base, ignore_errors=True); os.makedirs(base)
        import sqlite3; s = sqlite3.connect(f"{base}/city.sqlite"); s.execute("PRAGMA journal_mode=WAL"); s.close()
    else:
        pgbin = "/usr/lib/postgresql/15/bin"
        subprocess.run(f"su lakepg -c '{pgbin}/dropdb --force -h /tmp/ducklake/pg -p 5499 -U lake --if-exists {base} && {pgbin}/createdb -h /tmp/ducklake/pg -p 5499 -U lake {base}'", shell=True, check=True)
        shutil.rmtree(f"/tmp/ducklake/pgdata_{base}", ignore_errors=True)
    con = L.open_lake(kind, base)
    con.execute("CREATE TABLE case_log (case_id UBIGINT, pid INTEGER, seq INTEGER, ts TIMESTAMP, status VARCHAR, note VARCHAR)")
    con.execute("CREATE TABLE cases (id UBIGINT, status VARCHAR, version INTEGER, updated TIMESTAMP, lon DOUBLE, lat DOUBLE)")
    if mode == "inlined":
        con.execute("CALL lake.set_option('data_inlining_row_limit', 5000, table_name => 'cases')")
    con.execute(f"INSERT INTO cases SELECT i, 'open', 0, now()::TIMESTAMP, random(), random() FROM range(1, {N_CASES + 1}) r(i)")
    nfiles = con.execute("SELECT count(*) FROM ducklake_list_files('lake','cases')").fetchone()[0]
    con.close()
    return nfiles

def worker(kind, base, mode, txns, settings, start, q):
    cfg = {}
    t_open = time.perf_counter()
    con = L.open_lake(kind, base, extra=os.environ.get("ATTACH_EXTRA", ""))
    for s in filter(None, settings.split(";")):
        con.execute(f"SET {s}")
    t_open = time.perf_counter() - t_open
    pid = os.getpid(); rnd = random.Random(pid)
    lat, errs, acked, tries_hist = [], collections.Counter(), [], collections.Counter()
    lockf = open(f"/tmp/ducklake/{os.path.basename(str(base))}.writelock", "w") if os.environ.get("LOCKFILE") else None
    start.wait()
    for seq in range(txns):
        cid = rnd.randint(1, 5) if mode == "hotrow" else rnd.randint(1, N_CASES)
        def txn():
            if lockf is not None:
                fcntl.flock(lockf, fcntl.LOCK_EX)
            try:
                return txn_body()
            finally:
                if lockf is not None:
                    fcntl.flock(lockf, fcntl.LOCK_UN)
        def txn_body():
            con.execute("BEGIN")
            try:
                con.execute("INSERT INTO case_log VALUES (?, ?, ?, now()::TIMESTAMP, 'moved', 'x')", [cid, pid, seq])
                if mode != "append":
                    con.execute("UPDATE cases SET version = version + 1, status = 'moved', updated = now()::TIMESTAMP WHERE id = ?", [cid])
                con.execute("COMMIT")
            except Exception:
                try: con.execute("ROLLBACK")
                except Exception: pass
                raise
        t = time.perf_counter()
        def note(e): errs[type(e).__name__ + ": " + str(e).replace("\n", " ")[:160]] += 1
        try:
            _, tries = L.retry(txn, attempts=30, base_ms=5, cap_ms=400, on_conflict=note)
            acked.append((cid, seq)); tries_hist[tries] += 1
        except Exception as e:
            errs["GAVE UP: " + str(e)[:100]] += 1
        lat.append(time.perf_counter() - t)
    q.put(dict(pid=pid, lat=lat, errs=dict(errs), acked=acked, tries=dict(tries_hist), t_open=t_open))

def main():
    kind, nproc, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    txns = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    settings = sys.argv[5] if len(sys.argv) > 5 else ""
    base = base_for(kind, f"{mode}_{nproc}")
    nfiles = setup(kind, base, mode)
    q = mp.Queue(); start = mp.Event()
    ps = [mp.Process(target=worker, args=(kind, base, mode, txns, settings, start, q)) for _ in range(nproc)]
    for p in ps: p.start()
    time.sleep(3.0)  # let all attach
    t0 = time.perf_counter(); start.set()
    res = [q.get() for _ in ps]
    wall = time.perf_counter() - t0
    for p in ps: p.join()
    lat = [x for r in res for x in r["lat"]]
    errs = collections.Counter(); tries = collections.Counter()
    for r in res:
        errs.update(r["errs"]); tries.update({int(k): v for k, v in r["tries"].items()})
    acked = [a for r in res for a in r["acked"]]
    con = L.open_lake(kind, base)
    n_log = con.execute("SELECT count(*) FROM case_log").fetchone()[0]
    n_ver = con.execute("SELECT sum(version) FROM cases").fetchone()[0]
    n_cases = con.execute("SELECT count(*) FROM cases").fetchone()[0]
    # per-case check: version == number of acked txns for that case
    expect = collections.Counter(c for c, _ in acked)
    got = dict(con.execute("SELECT id, version FROM cases").fetchall())
    mismatch = sum(1 for c in got if got[c] != (expect.get(c, 0) if mode != "append" else 0))
    files = {t: con.execute(f"SELECT count(*) FROM ducklake_list_files('lake','{t}')").fetchone()[0] for t in ("case_log", "cases")}
    snaps = con.execute("SELECT count(*) FROM lake.snapshots()").fetchone()[0]
    datafiles = sum(len(fs) for _, _, fs in os.walk(f"{base}/city.data" if kind == "sqlite" else f"/tmp/ducklake/pgdata_{base}"))
    out = dict(lockfile=bool(os.environ.get('LOCKFILE')), attach_extra=os.environ.get('ATTACH_EXTRA', ''), kind=kind, nproc=nproc, mode=mode, txns=nproc * txns, settings=settings, wall_s=round(wall, 2),
               tps=round(len(acked) / wall, 1), p50_ms=round(L.pct(lat, 50) * 1e3, 1), p90_ms=round(L.pct(lat, 90) * 1e3, 1),
               p99_ms=round(L.pct(lat, 99) * 1e3, 1), max_ms=round(max(lat) * 1e3, 1),
               acked=len(acked), case_log_rows=n_log, version_sum=n_ver, cases_rows=n_cases, per_case_mismatch=mismatch,
               conflicts=sum(v for k, v in errs.items() if not k.startswith("GAVE")),
               gave_up=sum(v for k, v in errs.items() if k.startswith("GAVE")), tries=dict(sorted(tries.items())),
               attach_ms=round(sorted(r["t_open"] for r in res)[len(res) // 2] * 1e3),
               cases_files_before=nfiles, live_files=files, files_on_disk=datafiles, snapshots=snaps,
               errors={k[:170]: v for k, v in errs.most_common(6)})
    print(json.dumps(out))
    with open("/tmp/ducklake/t4_results.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")

if __name__ == "__main__":
    mp.set_start_method("spawn")
    main()
