"""DuckLake 1.5.5, SQLite catalog: the ~1 s stalls of catalog reads beside a writer are SQLite's sleeps rounded up to
whole seconds (DUCKLAKE.md section 12). The SQLite inside the PyPI `sqlite_scanner` 1.5.5 was built without
usleep/nanosleep, so its unix VFS's xSleep sleeps whole seconds: the busy handler's retries (1,000,000 us each) and
also the short waits of a reader racing a writer's WAL commit (1, 39, 156, 351 us asked). Replacing xSleep in every
registered VFS (the extension exports sqlite3_vfs_find; the struct's pNext at byte 16, zName at 24, xSleep at 112)
by a sleep of what is asked, at most 2 ms, removes the stalls.

Run: python t13_sqlite_sleep.py plain|patch (civicgrid installed; 1 writer, 6 readers, 40 s). On 2 cores, load 4-7,
two runs each (2026-12-07): plain p99 1026-1031 ms, 2.0-2.4 % of reads over 0.9 s; patched p99 68-93 ms, none
over 0.9 s, no error; p50 13-16 ms plain against 30-38 ms patched (not explained).
This experiment's replacement is a Python ctypes callback, which needs the GIL in whichever thread SQLite sleeps; a
thread that holds the GIL while it waits for such a thread would deadlock. civicgrid uses a C xSleep instead
(geo/_sqlite_sleep.c; section 12's end): with civicgrid installed, "plain" here already has short sleeps unless
CIVICGRID_SQLITE_SHORT_SLEEPS=false is set.
"""
import ctypes, os, shutil, sys, threading, time
from civicgrid.geo.store import Store, writing, extension_path
PATCH = sys.argv[1] == "patch"
db = "/tmp/ducklake/t13.duckdb"; os.makedirs("/tmp/ducklake", exist_ok=True)
for p in (db, db + ".files", db + ".lock"):
    shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else (os.path.exists(p) and os.remove(p))
store = Store(db, create=True)   # loads the extension into this process
lib = ctypes.CDLL(str(extension_path("sqlite_scanner")))
lib.sqlite3_sleep.restype = ctypes.c_int
t = time.perf_counter(); r = lib.sqlite3_sleep(5); print("sqlite3_sleep(5) ->", r, round(time.perf_counter() - t, 3), "s")
SLEEP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
calls = []
@SLEEP
def short_sleep(vfs, us):
    calls.append(us)
    time.sleep(min(us, 2000) / 1e6)
    return us
if PATCH:
    lib.sqlite3_vfs_find.restype = ctypes.c_void_p
    vfs = lib.sqlite3_vfs_find(None)
    n = 0
    while vfs:
        name = ctypes.cast(ctypes.c_void_p.from_address(vfs + 24).value, ctypes.c_char_p).value
        ctypes.c_void_p.from_address(vfs + 112).value = ctypes.cast(short_sleep, ctypes.c_void_p).value
        print("patched", name); n += 1
        vfs = ctypes.c_void_p.from_address(vfs + 16).value
    t = time.perf_counter(); r = lib.sqlite3_sleep(5); print("after: sqlite3_sleep(5) ->", r, round(time.perf_counter() - t, 4), "s")
with writing(db) as con:
    con.execute("CREATE TABLE t (x BIGINT)")
stop = time.monotonic() + 40
lat = []
def writer():
    i = 0
    while time.monotonic() < stop:
        with writing(db) as con:
            con.execute(f"INSERT INTO t VALUES ({i})"); i += 1
def reader():
    cur = store.cursor()
    while time.monotonic() < stop:
        t = time.perf_counter()
        cur.execute("SELECT count(*) FROM t").fetchone()
        lat.append(time.perf_counter() - t)
ths = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(6)]
[x.start() for x in ths]; [x.join() for x in ths]
lat.sort()
slow = sum(1 for x in lat if x > 0.9)
print(f"{'patched' if PATCH else 'plain'}: reads {len(lat)}, p50 {1000*lat[len(lat)//2]:.0f} ms, p99 {1000*lat[int(len(lat)*.99)]:.0f} ms, >0.9 s: {slow} ({100*slow/len(lat):.1f} %), sleep calls {len(calls)}, sizes {sorted(set(calls))[:10]}")
try:
    from civicgrid.geo import _sqlite_sleep
    print("civicgrid's C xSleep: (sleeps, busy sleeps) =", _sqlite_sleep.counts())
except ImportError:
    pass
