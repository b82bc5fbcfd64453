"""Q4 (service model): ONE process, 16 client threads x 50 case moves (INSERT case_log + UPDATE cases by id).

strategies:
  cursors : each thread its own cursor on one DuckDB instance, no lock (DuckLake/optimistic), retry w/ jitter
  lock    : one threading.Lock around each write transaction
  group   : one writer thread drains a queue and commits all pending moves in ONE transaction (group commit)
usage: t4c_inprocess.py KIND STRATEGY [MODE=update|append] [NPROC=1]
"""
import collections
import json
import multiprocessing as mp
import os
import queue
import random
import sys
import threading
import time
from concurrent.futures import Future

import lakecommon as L
import t4_concurrency as T

CLIENTS, PER_CLIENT = 16, 50

def move(cur, cid, tag, mode):
    cur.execute("INSERT INTO case_log VALUES (?, ?, ?, now()::TIMESTAMP, 'moved', 'x')", [cid, os.getpid(), tag])
    if mode == "update":
        cur.execute("UPDATE cases SET version = version + 1, status = 'moved', updated = now()::TIMESTAMP WHERE id = ?", [cid])

def txn(cur, items, mode):
    cur.execute("BEGIN")
    try:
        for cid, tag in items:
            move(cur, cid, tag, mode)
        cur.execute("COMMIT")
    except Exception:
        try: cur.execute("ROLLBACK")
        except Exception: pass
        raise

def proc(kind, base, strategy, mode, start, q):
    con = L.open_lake(kind, base)
    con.execute("SET ducklake_retry_wait_ms=5"); con.execute("SET ducklake_max_retry_count=40")
    lat, errs, acked = [], collections.Counter(), []
    lat_t = []
    lock = threading.Lock(); wq = queue.Queue(); stop = threading.Event()
    batches = []
    def note(e): errs[str(e).replace("\n", " ")[:110]] += 1

    def writer():
        cur = con.cursor(); cur.execute("USE lake")
        while not stop.is_set() or not wq.empty():
            try: first = wq.get(timeout=0.05)
            except queue.Empty: continue
            items = [first]
            while len(items) < 64:
                try: items.append(wq.get_nowait())
                except queue.Empty: break
            batches.append(len(items))
            try:
                L.retry(lambda: txn(cur, [(c, t) for c, t, _ in items], mode), attempts=30, on_conflict=note)
                for _, _, f in items: f.set_result(True)
            except Exception as e:
                for _, _, f in items: f.set_exception(e)

    def client(k):
        cur = con.cursor(); cur.execute("USE lake"); rnd = random.Random(k * 7919 + os.getpid())
        start.wait()
        for i in range(PER_CLIENT):
            cid = rnd.randint(1, T.N_CASES); tag = k * 1000 + i
            t = time.perf_counter()
            try:
                if strategy == "cursors":
                    L.retry(lambda: txn(cur, [(cid, tag)], mode), attempts=30, on_conflict=note)
                elif strategy == "lock":
                    with lock:
                        L.retry(lambda: txn(cur, [(cid, tag)], mode), attempts=30, on_conflict=note)
                else:
                    f = Future(); wq.put((cid, tag, f)); f.result()
                acked.append(cid)
            except Exception as e:
                errs["GAVE UP " + str(e)[:80]] += 1
            lat.append(time.perf_counter() - t); lat_t.append(t)

    w = threading.Thread(target=writer) if strategy == "group" else None
    if w: w.start()
    ths = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in ths: t.start()
    for t in ths: t.join()
    stop.set()
    if w: w.join()
    t0 = min(lat_t)
    q.put(dict(warm=[l for l, tt in zip(lat, lat_t) if tt - t0 > 1.0], lat=lat, errs=dict(errs), acked=acked, batches=batches))

def main():
    kind, strategy = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "update"
    nproc = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    base = T.base_for(kind, f"inproc_{strategy}")
    T.setup(kind, base, "update")
    q = mp.Queue(); start = mp.Event()
    ps = [mp.Process(target=proc, args=(kind, base, strategy, mode, start, q)) for _ in range(nproc)]
    for p in ps: p.start()
    time.sleep(3); t0 = time.perf_counter(); start.set()
    res = [q.get() for _ in ps]; wall = time.perf_counter() - t0
    for p in ps: p.join()
    warm = [x for r in res for x in r["warm"]]
    lat = [x for r in res for x in r["lat"]]; acked = [x for r in res for x in r["acked"]]
    errs = collections.Counter()
    for r in res: errs.update(r["errs"])
    b = [x for r in res for x in r["batches"]]
    con = L.open_lake(kind, base)
    n_log = con.execute("SELECT count(*) FROM case_log").fetchone()[0]
    n_ver = con.execute("SELECT sum(version) FROM cases").fetchone()[0]
    exp = collections.Counter(acked); got = dict(con.execute("SELECT id, version FROM cases").fetchall())
    mism = sum(1 for c in got if got[c] != (exp.get(c, 0) if mode == "update" else 0))
    out = dict(kind=kind, strategy=strategy, mode=mode, procs=nproc, clients=CLIENTS * nproc, requests=len(lat), wall_s=round(wall, 2),
               tps=round(len(acked) / wall, 1), p50_ms=round(L.pct(lat, 50) * 1e3, 1), p90_ms=round(L.pct(lat, 90) * 1e3, 1),
               p99_ms=round(L.pct(lat, 99) * 1e3, 1), max_ms=round(max(lat) * 1e3, 1), after_1s_p50_ms=round(L.pct(warm, 50) * 1e3, 1), after_1s_p99_ms=round(L.pct(warm, 99) * 1e3, 1), after_1s_n=len(warm), acked=len(acked), case_log_rows=n_log,
               version_sum=n_ver, per_case_mismatch=mism, conflicts=sum(v for k, v in errs.items() if not k.startswith("GAVE")),
               gave_up=sum(v for k, v in errs.items() if k.startswith("GAVE")),
               group_commits=len(b), mean_batch=round(sum(b) / len(b), 1) if b else None,
               errors={k: v for k, v in errs.most_common(3)})
    print(json.dumps(out))
    with open("/tmp/ducklake/t4c_results.jsonl", "a") as f: f.write(json.dumps(out) + "\n")

if __name__ == "__main__":
    mp.set_start_method("spawn")
    main()
