"""Benchmark of case writes over the API with many inspectors at once, before and after the DuckLake store.

Usage::

    .venv/bin/python bench/store_bench.py [--events 200000] [--clients 16] [--cases 6] [--dir /tmp/store-bench]
        [--before /work/main-old/.venv/bin/civicgrid] [--import-events 0]

For each civicgrid given (this checkout's, and with ``--before`` another installation, e.g. the single-file
store), the demo city is built with that civicgrid, ``civicgrid serve`` is started on it, an inspector token is
made, and ``--clients`` threads each create ``--cases`` cases (POST /api/cases at an event's point) and move each
twice (register, dispatch): every request's latency is recorded. With ``--import-events N`` another process
imports N complaints (a CSV exported from the demo) while the clients write. Afterwards every acknowledged case
must be in the store (lost writes are counted).

The reference, measured in the same run: one GET /api/cases/{id} (a read of one case through the same service
and HTTP stack), so the ratio says what a write costs beyond a request that reads.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


def _serve(cli: str, db: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([cli, "serve", "--db", str(db), "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("civicgrid serve did not start")


def run(cli: str, label: str, args: argparse.Namespace, work: Path, port: int) -> dict:
    db = work / f"{label}.duckdb"
    subprocess.run([cli, "demo", "--db", str(db), "--force", "--quiet", "--events", str(args.events)], check=True,
                   capture_output=True)
    out = subprocess.run([cli, "users", "add", "bench-inspector", "--role", "inspector", "--db", str(db)],
                         check=True, capture_output=True, text=True).stdout
    token = next(w for w in out.split() if w.startswith("cg_"))
    csv = None
    if args.import_events:
        csv = work / f"{label}-import.csv"
        code = (f"import civicgrid, sys; s = civicgrid.open_store({str(db)!r}); "
                f"df = s.sql('SELECT time, lng, lat, problem_type AS type FROM events LIMIT {args.import_events}'); "
                f"df['id'] = ['BENCH-' + str(i) for i in range(len(df))]; df.to_csv({str(csv)!r}, index=False)")
        subprocess.run([str(Path(cli).with_name("python")), "-c", code], check=True)
    proc = _serve(cli, db, port)
    base = f"http://127.0.0.1:{port}"
    try:
        points = [tuple(f["geometry"]["coordinates"]) for f in
                  _request(f"{base}/api/events?limit=500", token=token)[1].get("features", [])] or [(112.94, 28.23)]
        lat: dict[str, list[float]] = {"create": [], "move": [], "read": []}
        acked: list[int] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            rng = random.Random(k)
            for _ in range(args.cases):
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
        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - started
        import_s = None
        if importer is not None:
            importer.wait()
            import_s = round(time.perf_counter() - started, 1)
        lost = sum(_request(f"{base}/api/cases/{c}", token=token)[0] != 200 for c in acked)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    writes = lat["create"] + lat["move"]
    ref = statistics.median(lat["read"]) if lat["read"] else float("nan")
    return {"label": label, "writes": len(writes), "wall_s": round(wall, 1),
            "writes_per_s": round(len(writes) / wall, 1),
            "p50_ms": round(1000 * _pct(writes, 50)), "p99_ms": round(1000 * _pct(writes, 99)),
            "create_p50_ms": round(1000 * _pct(lat["create"], 50)), "move_p50_ms": round(1000 * _pct(lat["move"], 50)),
            "read_p50_ms (reference)": round(1000 * ref, 1),
            "p50 / reference": round(_pct(writes, 50) / ref, 1) if ref else None,
            "lost": lost, "errors": len(errors), "first_errors": errors[:3], "import_s": import_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--cases", type=int, default=6, help="cases each client creates (and moves twice)")
    parser.add_argument("--import-events", type=int, default=0, help="events imported by another process meanwhile")
    parser.add_argument("--before", help="the civicgrid CLI of another installation to compare with")
    parser.add_argument("--dir", default="/tmp/store-bench")
    args = parser.parse_args()
    work = Path(args.dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    clis = [(str(Path(sys.executable).with_name("civicgrid")), "after")]
    if args.before:
        clis.insert(0, (args.before, "before"))
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; events {args.events:,}, "
          f"{args.clients} clients x {args.cases} cases x 3 writes, import {args.import_events:,}")
    for i, (cli, label) in enumerate(clis):
        print(json.dumps(run(cli, label, args, work, 8900 + i), ensure_ascii=False))


if __name__ == "__main__":
    main()
