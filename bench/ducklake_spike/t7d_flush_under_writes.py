"""Q7 extra: maintenance calls while 2 writers commit continuously; full error texts; retry counts."""
import multiprocessing as mp
import sys
import time

import t7_snapshots as T


def main(kind):
    con = T.setup(kind)
    for b in range(40):
        con.execute(f"INSERT INTO ev SELECT i, {b}, random(), 's' FROM range(50) r(i)")
    q = mp.Queue(); stop = mp.Event()
    ps = [mp.Process(target=T.writer, args=(kind, stop, q)) for _ in range(2)]
    for p in ps: p.start()
    time.sleep(4)
    for stmt in ["CALL ducklake_flush_inlined_data('lake')", "CALL ducklake_merge_adjacent_files('lake')",
                 "CALL ducklake_expire_snapshots('lake', older_than => now() - INTERVAL '2 seconds')",
                 "CALL ducklake_cleanup_old_files('lake', cleanup_all => true)"]:
        t = time.perf_counter(); errs = []
        for attempt in range(30):
            try:
                con.execute(stmt).fetchall(); break
            except Exception as e:
                errs.append(str(e).replace("\n", " "))
                time.sleep(0.05 * (attempt + 1))
        ok = attempt < 29 or not errs or len(errs) < 30
        print(f"{kind} {stmt}: {'OK' if len(errs) < 30 else 'GAVE UP'} after {len(errs)} failed tries, {time.perf_counter()-t:.1f}s")
        for e in dict.fromkeys(x[:160] + " ... " + x[-260:] for x in errs): print("     err:", e)
    stop.set(); res = [q.get() for _ in ps]
    for p in ps: p.join()
    print("  writers:", res)
    print("  files on disk", T.count_files(kind), "full scan", con.execute("SELECT count(v) FROM ev").fetchone())

if __name__ == "__main__":
    mp.set_start_method("spawn"); main(sys.argv[1])
