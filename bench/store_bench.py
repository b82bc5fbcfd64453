"""Benchmark of case writes over the API with many inspectors at once, before and after the DuckLake store.

Usage::

    .venv/bin/python bench/store_bench.py [--events 200000] [--clients 16] [--cases 6] [--dir /tmp/store-bench]
        [--before /work/main-old/.venv/bin/civicgrid] [--import-events 0] [--catalog sqlite|postgres] [--port 8900]
        [--from-store big.duckdb] [--store URL-or-path] [--workers N] [--unshared] [--maintain 6]

For each civicgrid given (this checkout's, and with ``--before`` another installation, e.g. the single-file
store), the demo city is built with that civicgrid, ``civicgrid serve`` is started on it, an inspector token is
made, and ``--clients`` threads each create ``--cases`` cases (POST /api/cases at an event's point) and move each
twice (register, dispatch): every request's latency is recorded. With ``--import-events N`` another process
imports N complaints (a CSV exported from the demo) while the clients write. Afterwards every acknowledged case
must be in the store (lost writes are counted). ``--unshared`` first runs this checkout with the service's worker
processes committing their own writes (``CIVICGRID_SHARED_WRITER=0``: they take turns on the store's lock), then
as it serves by default (the workers hand their writes to one committer, :mod:`civicgrid.geo.group_commit`).
``--store`` runs every version on one existing store, as it is (set ``CIVICGRID_DATA_PATH`` for a PostgreSQL
catalog): each version's writes add to it. ``--from-store`` gives each version a copy of a store built before
(SQLite catalog, e.g. ``/tmp/heat10m/demo_10m.duckdb``); with ``--catalog postgres`` its catalog is copied into a
database of the throwaway server (:data:`_TO_POSTGRES`), so a 10M-event PostgreSQL run needs no 10M build.

``--maintain N`` measures case writes while ``civicgrid maintain`` runs (issue 17): before the service starts, N
batches of events (copies of the first 200k events, shifted by a day and shuffled, one Parquet file each) are
written so that maintenance has files to merge; then ``civicgrid maintain --keep-days 30`` runs in another process
while the clients write, each client writing until maintenance ends (at least one case each). Maintenance's
duration, its own figures and the writes' latencies during it are reported.

``--catalog postgres`` puts the store's catalog in a throwaway PostgreSQL server started for the run from
Debian's binaries (``/usr/lib/postgresql/*/bin``, as the tests' ``pg_server`` fixture does), on a Unix socket in
``--dir``, and its data folder in ``--dir`` (``CIVICGRID_DATA_PATH``); the server is stopped at the end.

The reference, measured in the same run: one GET /api/cases/{id} (a read of one case through the same service
and HTTP stack), so the ratio says what a write costs beyond a request that reads.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


#: N batches of events, one Parquet file each, for maintenance to merge (run with the civicgrid measured).
_MORE_EVENTS = """
import sys
from civicgrid.geo.store import writing
for b in range(int(sys.argv[2])):
    with writing(sys.argv[1]) as con:
        con.execute(f'''
            INSERT INTO events (event_id, source, problem_type, time, status, lng, lat, h3)
            SELECT 100000000 + {b} * 1000000 + event_id, source, problem_type, time + INTERVAL ({b + 1}) DAY,
                   status, lng, lat, h3
            FROM events WHERE event_id <= 200000 ORDER BY hash(event_id + {b})''')
"""


#: Copy a store with a SQLite catalog (argv 1) into an empty PostgreSQL database (argv 2, a ``postgresql://`` URL),
#: through a copy of it (argv 3, :func:`copy_store`: the data files hard-linked) whose inlined rows are first
#: flushed into Parquet files, so that the catalog's fixed tables are all there is to copy: DuckLake makes them in
#: the PostgreSQL database (``ATTACH``), then their rows are copied over (types cast by DuckDB) and ``data_path``
#: set to the copy's data folder, which becomes the PostgreSQL store's (printed). The inlined tables of the copy
#: hold no live row after the flush and are left out (the PostgreSQL catalog makes its own at the first write).
#: Run by this checkout's Python for every version measured, so each starts from the same catalog.
_TO_POSTGRES = """
import sys
from civicgrid.geo.store import connect, quote, locate
from civicgrid.geo.store_files import copy_store
src, url, scratch = sys.argv[1:4]
from pathlib import Path
Path(scratch).parent.mkdir(parents=True, exist_ok=True)
copy_store(src, scratch)
where = locate(scratch)
con = connect(extensions=("spatial", "ducklake", "sqlite_scanner", "postgres_scanner"))
con.execute(where.attach_sql())  # the copy, with its inlined rows flushed into Parquet files
con.execute("CALL ducklake_flush_inlined_data('lake')")
con.execute("DETACH lake")
data = str(where.data_path) + "/"
pg = url if not url.startswith("postgres:") or "://" in url else url.removeprefix("postgres:")
# DuckLake makes its tables
con.execute(f"ATTACH {quote('ducklake:postgres:' + pg)} AS fresh (DATA_PATH {quote(data)})")
con.execute("DETACH fresh")
con.execute(f"ATTACH {quote(where.catalog)} AS src (TYPE sqlite, READ_ONLY)")
con.execute(f"ATTACH {quote(pg)} AS dst (TYPE postgres)")
tables = [r[0] for r in con.execute(
    "SELECT table_name FROM duckdb_tables() WHERE database_name = 'src' "
    "AND table_name LIKE 'ducklake_%' AND table_name NOT LIKE 'ducklake_inlined_%'").fetchall()]
have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'dst'").fetchall()}
missing = [t for t in tables if t not in have]
if missing:
    sys.exit(f"the PostgreSQL catalog has no {missing}")
con.execute("BEGIN")
for t in tables:
    cols = [r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE database_name = 'dst' "
                                      "AND table_name = ? ORDER BY column_index", [t]).fetchall()]
    srccols = {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE database_name = 'src' "
                                         "AND table_name = ?", [t]).fetchall()}
    if set(cols) != srccols:
        sys.exit(f"{t}: columns differ: {sorted(set(cols) ^ srccols)}")
    names = ", ".join(f'"{c}"' for c in cols)
    con.execute(f"DELETE FROM dst.{t}")
    con.execute(f"INSERT INTO dst.{t} ({names}) SELECT {names} FROM src.{t}")
con.execute("UPDATE dst.ducklake_metadata SET value = ? WHERE key = 'data_path'", [data])
con.execute("COMMIT")
print(data)
"""


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def _request(url: str, *, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {"detail": exc.read().decode(errors="replace")[:300]}


def _serve(cli: str, db: Path | str, port: int, workers: int | None = None) -> subprocess.Popen:
    more = ["--workers", str(workers)] if workers else []
    proc = subprocess.Popen([cli, "serve", "--db", str(db), "--port", str(port), "--log-level", "warning", *more],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600  # a 10M store on a machine at load 30 took over two minutes
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)  # its worker processes too
    raise RuntimeError("civicgrid serve did not start")


class _Postgres:
    """A throwaway PostgreSQL server on a Unix socket in ``base`` (Debian's binaries, as tests/conftest.py)."""

    def __init__(self, base: Path) -> None:
        import glob
        import socket
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            msg = "--catalog postgres needs Debian's PostgreSQL server binaries (apt-get install postgresql)"
            raise SystemExit(msg)
        self.bindir = Path(found[-1]).parent
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)
        self.as_user: list[str] = []
        if os.getuid() == 0:  # the server refuses to run as root
            shutil.chown(base, user="postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data = base / "data"
        subprocess.run([*self.as_user, str(self.bindir / "initdb"), "-D", str(self.data), "-U", "civicgrid",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(base / "log"),
                        "-w", "-o", f"-k {base} -p {self.port} -c listen_addresses='' -c max_connections=200",
                        "start"], check=True, capture_output=True)

    def new_db(self, name: str) -> str:
        subprocess.run([str(self.bindir / "createdb"), "-h", str(self.base), "-p", str(self.port), "-U", "civicgrid",
                        name], check=True, capture_output=True)
        return f"postgresql://civicgrid@/{name}?host={self.base}&port={self.port}"

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
                       capture_output=True)


def run(cli: str, label: str, args: argparse.Namespace, work: Path, port: int) -> dict:
    db: Path | str = work / f"{label}.duckdb"
    if args.store:
        db = args.store
    elif args.postgres is not None:
        db = args.postgres.new_db(f"bench_{label}")
        os.environ["CIVICGRID_DATA_PATH"] = str(work / f"{label}-data")  # for every civicgrid started below
    if args.store:
        pass
    elif args.from_store and args.postgres is not None:  # its catalog copied into the throwaway server
        data = subprocess.run([sys.executable, "-c", _TO_POSTGRES, args.from_store, str(db),
                               str(work / f"{label}-copy.duckdb")], check=True, capture_output=True, text=True)
        os.environ["CIVICGRID_DATA_PATH"] = data.stdout.strip().splitlines()[-1]
    elif args.from_store:  # a copy of a store built before (a 10M-event demo takes long to build)
        python = str(Path(cli).with_name("python"))
        subprocess.run([python, "-c", "import sys; from civicgrid.geo.store_files import copy_store; "
                        "copy_store(sys.argv[1], sys.argv[2])", args.from_store, str(db)], check=True)
    else:
        subprocess.run([cli, "demo", "--db", str(db), "--force", "--quiet", "--events", str(args.events)],
                       check=True, capture_output=True)
    if args.maintain:
        subprocess.run([str(Path(cli).with_name("python")), "-c", _MORE_EVENTS, str(db), str(args.maintain)],
                       check=True)
    out = subprocess.run([cli, "users", "add", f"bench-{label}-{os.getpid()}", "--role", "inspector", "--db", str(db)],
                         check=True, capture_output=True, text=True).stdout
    token = next(w for w in out.split() if w.startswith("cg_"))
    csv = None
    if args.import_events:
        csv = work / f"{label}-import.csv"
        code = (f"import civicgrid, sys; s = civicgrid.open_store({str(db)!r}); "
                f"df = s.sql('SELECT time, lng, lat, problem_type AS type FROM events LIMIT {args.import_events}'); "
                f"df['id'] = ['BENCH-' + str(i) for i in range(len(df))]; df.to_csv({str(csv)!r}, index=False)")
        subprocess.run([str(Path(cli).with_name("python")), "-c", code], check=True)
    proc = _serve(cli, db, port, args.workers)
    base = f"http://127.0.0.1:{port}"
    try:
        points = [tuple(f["geometry"]["coordinates"]) for f in
                  _request(f"{base}/api/events?limit=500", token=token)[1].get("features", [])] or [(112.94, 28.23)]
        lat: dict[str, list[float]] = {"create": [], "move": [], "read": []}
        acked: list[int] = []
        errors: list[str] = []
        lock = threading.Lock()

        maintainer: subprocess.Popen | None = None

        def more(n: int) -> bool:
            if maintainer is not None:
                return n == 0 or maintainer.poll() is None
            return n < args.cases

        def client(k: int) -> None:
            rng = random.Random(k)
            n = 0
            while more(n):
                n += 1
                lng, la = rng.choice(points)
                t = time.perf_counter()
                status, case = _request(f"{base}/api/cases", token=token,
                                        body={"problem_type": "0201", "lng": lng, "lat": la, "text": "bench"})
                dt = time.perf_counter() - t
                if status != 201:
                    with lock:
                        errors.append(f"create {status} {case}")
                    continue
                cid = case["case_id"]
                with lock:
                    lat["create"].append(dt)
                    acked.append(cid)
                for to in ("register", "dispatch"):
                    t = time.perf_counter()
                    status, body = _request(f"{base}/api/cases/{cid}/transitions", token=token, body={"to": to})
                    with lock:
                        (lat["move"] if status == 200 else errors).append(
                            time.perf_counter() - t if status == 200 else f"{to} {status} {body}")
                t = time.perf_counter()
                _request(f"{base}/api/cases/{cid}", token=token)
                with lock:
                    lat["read"].append(time.perf_counter() - t)

        importer = None
        if csv is not None:
            importer = subprocess.Popen([cli, "import", "events", str(csv), "--db", str(db), "--source", "complaint",
                                         "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = time.perf_counter()
        if args.maintain:
            maintainer = subprocess.Popen([cli, "maintain", "--db", str(db), "--keep-days", "30"],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - started
        maintained = None
        if maintainer is not None:
            out, err = maintainer.communicate()
            maintained = {"exit": maintainer.returncode, "said": (out.strip() or err.strip()[-300:])}
        import_s = None
        if importer is not None:
            importer.wait()
            import_s = round(time.perf_counter() - started, 1)
            if importer.returncode != 0:  # a failed import is no import: say so rather than report its time
                said = importer.stderr.read() if importer.stderr else ""
                import_s = f"failed ({importer.returncode}): {said[-300:]}"
        lost = sum(_request(f"{base}/api/cases/{c}", token=token)[0] != 200 for c in acked)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    writes = lat["create"] + lat["move"]
    ref = statistics.median(lat["read"]) if lat["read"] else float("nan")
    return {"label": label, "writes": len(writes), "wall_s": round(wall, 1),
            "writes_per_s": round(len(writes) / wall, 1),
            "p50_ms": round(1000 * _pct(writes, 50)), "p90_ms": round(1000 * _pct(writes, 90)),
            "p99_ms": round(1000 * _pct(writes, 99)), "max_ms": round(1000 * max(writes, default=float("nan"))),
            "create_p50_ms": round(1000 * _pct(lat["create"], 50)), "move_p50_ms": round(1000 * _pct(lat["move"], 50)),
            "read_p50_ms (reference)": round(1000 * ref, 1),
            "p50 / reference": round(_pct(writes, 50) / ref, 1) if ref else None,
            "lost": lost, "errors": len(errors), "first_errors": errors[:3], "import_s": import_s,
            "maintain": maintained}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--cases", type=int, default=6, help="cases each client creates (and moves twice)")
    parser.add_argument("--import-events", type=int, default=0, help="events imported by another process meanwhile")
    parser.add_argument("--before", help="the civicgrid CLI of another installation to compare with")
    parser.add_argument("--dir", default="/tmp/store-bench")
    parser.add_argument("--catalog", choices=("sqlite", "postgres"), default="sqlite",
                        help="the store's catalog: a SQLite file, or a throwaway PostgreSQL server started for the run")
    parser.add_argument("--port", type=int, default=8900, help="port of the first service started")
    parser.add_argument("--from-store", help="copy this store (SQLite catalog) for each run instead of building "
                                             "the demo (--events is then only reported); with --catalog postgres "
                                             "its catalog is copied into the throwaway server")
    parser.add_argument("--store", help="run every version on this existing store as it is (no copy, no build)")
    parser.add_argument("--unshared", action="store_true",
                        help="first run this checkout with each worker process committing its own writes")
    parser.add_argument("--long-sleeps", type=int, default=0, metavar="N",
                        help="also run this checkout with the SQLite catalog's whole-second sleeps "
                             "(CIVICGRID_SQLITE_SHORT_SLEEPS=false), N times interleaved with as many runs of it as is")
    parser.add_argument("--workers", type=int, default=None, help="civicgrid serve --workers (default: its own)")
    parser.add_argument("--maintain", type=int, default=0, metavar="N",
                        help="write N batches of events, then measure case writes while civicgrid maintain runs")
    args = parser.parse_args()
    work = Path(args.dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    args.postgres = _Postgres(work / "pg") if args.catalog == "postgres" else None
    clis = [(str(Path(sys.executable).with_name("civicgrid")), "after")]
    if args.unshared:
        clis.insert(0, (clis[0][0], "unshared"))
    if args.long_sleeps:  # after --before and --unshared: pairs of this checkout with long and short sleeps
        cli = clis[-1][0]
        clis = clis[:-1] + [c for i in range(1, args.long_sleeps + 1)
                            for c in ((cli, f"long-sleeps-{i}"), (cli, f"after-{i}"))]
    if args.before:
        clis.insert(0, (args.before, "before"))
    catalog = ("postgres" if str(args.store).startswith("postgres") else "sqlite") if args.store else args.catalog
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; catalog {catalog}; "
          f"events {args.events:,}, {args.clients} clients x {args.cases} cases x 3 writes, "
          f"import {args.import_events:,}, maintain {args.maintain} batches")
    try:
        for i, (cli, label) in enumerate(clis):
            os.environ["CIVICGRID_SHARED_WRITER"] = "0" if label == "unshared" else "1"
            os.environ["CIVICGRID_SQLITE_SHORT_SLEEPS"] = "false" if label.startswith("long-sleeps") else "true"
            print(json.dumps(run(cli, label, args, work, args.port + i), ensure_ascii=False), flush=True)
            print(f"load after {label}: {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        if args.postgres is not None:
            args.postgres.stop()


if __name__ == "__main__":
    main()
