"""Benchmark of reads under an office's load (issue 14, part 5): many clients on a mixed read workload.

Usage::

    .venv/bin/python bench/load_bench.py [--db /tmp/load-bench/demo.duckdb] [--events 200000] [--clients 50]
        [--seconds 60] [--workers N] [--baseline-cli OTHER_CHECKOUT/.venv/bin/civicgrid]

On the demo city (built with ``--events`` when ``--db`` is missing), ``civicgrid serve`` is started twice in the
same run and ``--clients`` concurrent clients (asyncio, one HTTP connection each) send requests for ``--seconds``:

- **before**: one service process, no ``/map`` page cache and no API answer cache (``--workers 1``,
  ``CIVICGRID_MAP_CACHE_PAGES=0``, ``CIVICGRID_API_CACHE_RESPONSES=0``), as the service ran before this part
  (the store's change probe and the token lookups per store version cannot be turned off: they are on in both);
- **after**: ``--workers`` processes (default: the number of cores) with both caches on (their defaults), the
  workers sharing their answers through the folder ``civicgrid serve`` makes, warmed before they start;
- with ``--baseline-cli``, between them, **baseline**: the "after" service as another checkout's ``civicgrid``
  runs it (e.g. main's, before a change), for an A/B of the same configuration in the same run.

The workload mixes what planners and analysts open: heatmaps at three resolutions with and without a type or
month filter, hotspots, KPIs, events and cases lists (a viewer token), the grids layer, and ``/map`` for five
views (the same views come again, as a team looks at the same city). Every answer that is not 200 is an error.
It prints requests/s, errors and p50/p95/p99 per kind of request and overall, with the issue's targets:
0 errors, API p99 ≤ 500 ms, ``/map`` p95 ≤ 2 s. The reference measured in the same run is the "before" service.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("civicgrid"))

TARGET_API_P99_MS = 500
TARGET_MAP_P95_MS = 2000


def _workload(months: list[str], types: list[str]) -> list[tuple[str, str, int]]:
    """(kind, path, weight) of the mixed read workload."""
    w: list[tuple[str, str, int]] = []
    for res in (7, 8, 9):
        w.append(("heatmap", f"/api/heatmap?res={res}", 6))
        w += [("heatmap", f"/api/heatmap?res={res}&type={t}", 2) for t in types]
        w += [("heatmap", f"/api/heatmap?res={res}&start={m}-01&end={m}-28", 2) for m in months]
    w.append(("hotspots", "/api/hotspots?res=8", 3))
    w += [("hotspots", f"/api/hotspots?res=8&type={t}", 1) for t in types]
    w.append(("kpis", "/api/kpis", 3))
    w.append(("kpis", "/api/kpis/flags", 2))
    w.append(("events", "/api/events?limit=100", 3))
    w.append(("cases", "/api/cases?limit=50", 3))
    w.append(("layers", "/api/layers/grids", 2))
    maps = ["/map", "/map?res=8", "/map?lang=en", f"/map?type={types[0]}", f"/map?start={months[0]}-01"]
    w += [("map", m, 2) for m in maps]
    return w


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db: Path, *, workers: int, cache_pages: int, cache_answers: int, cli: str = CLI,
           extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str, float]:
    port = _port()
    env = {**os.environ, "CIVICGRID_MAP_CACHE_PAGES": str(cache_pages),
           "CIVICGRID_API_CACHE_RESPONSES": str(cache_answers)}
    env.pop("CIVICGRID_CACHE_DIR", None)
    started = time.monotonic()
    proc = subprocess.Popen([cli, "serve", "--db", str(db), "--port", str(port), "--workers", str(workers),
                             "--maintain-hours", "0", "--log-level", "warning", *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/openapi.json", timeout=2).status_code == 200:
                return proc, base, time.monotonic() - started
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    msg = "the service did not start"
    raise RuntimeError(msg)


async def _client(base: str, work: list[tuple[str, str, int]], token: str, until: float, seed: int,
                  out: dict[str, list[float]], errors: dict[str, int], late: dict[str, list[float]],
                  warm_from: float) -> None:
    rng = random.Random(seed)
    kinds, paths, weights = zip(*work, strict=True)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, timeout=120, headers=headers) as client:
        while time.monotonic() < until:
            i = rng.choices(range(len(paths)), weights=weights)[0]
            t0, started = time.perf_counter(), time.monotonic()
            try:
                r = await client.get(paths[i])
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            out[kinds[i]].append(time.perf_counter() - t0)
            if started >= warm_from:
                late[kinds[i]].append(time.perf_counter() - t0)
            if not ok:
                errors[kinds[i]] += 1


#: Seconds at the start of a run left out of the "warm" figures (every process computing its first answers).
WARM_AFTER_S = 10


async def _run(base: str, work, token: str, *, clients: int, seconds: float) -> tuple[dict, dict, float, dict]:
    out: dict[str, list[float]] = defaultdict(list)
    late: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    started = time.monotonic()
    until = started + seconds
    await asyncio.gather(*(_client(base, work, token, until, k, out, errors, late, started + WARM_AFTER_S)
                           for k in range(clients)))
    return out, errors, time.monotonic() - started, late


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return 1000 * xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


def _report(label: str, out: dict, errors: dict, wall: float, late: dict, *, start_s: float,
            load_before: float) -> dict:
    api = [x for k, v in out.items() if k != "map" for x in v]
    n = sum(len(v) for v in out.values())
    print(f"\n{label}: {n:,} requests in {wall:.0f} s = {n / wall:.1f} req/s; errors {sum(errors.values())} "
          f"(service answering {start_s:.1f} s after its start; load average {load_before:.1f} before the run, "
          f"{os.getloadavg()[0]:.1f} at its end)")
    print(f"  {'kind':10} {'n':>6} {'err':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for kind in sorted(out):
        xs = out[kind]
        print(f"  {kind:10} {len(xs):6} {errors.get(kind, 0):4} {_pct(xs, 50):8.0f} {_pct(xs, 95):8.0f} "
              f"{_pct(xs, 99):8.0f}")
    fig = {"rps": n / wall, "errors": sum(errors.values()), "api_p50": _pct(api, 50), "api_p99": _pct(api, 99),
           "map_p50": _pct(out["map"], 50), "map_p95": _pct(out["map"], 95)}
    print(f"  API (all but /map): p50 {fig['api_p50']:.0f} ms, p99 {fig['api_p99']:.0f} ms "
          f"[target ≤ {TARGET_API_P99_MS}: {'ok' if fig['api_p99'] <= TARGET_API_P99_MS else 'MISSED'}]; "
          f"/map p50 {fig['map_p50']:.0f} ms, p95 {fig['map_p95']:.0f} ms "
          f"[target ≤ {TARGET_MAP_P95_MS}: {'ok' if fig['map_p95'] <= TARGET_MAP_P95_MS else 'MISSED'}]; "
          f"errors [target 0: {'ok' if not fig['errors'] else 'MISSED'}]")
    warm_api = [x for k, v in late.items() if k != "map" for x in v]
    fig.update(warm_api_p99=_pct(warm_api, 99), warm_map_p95=_pct(late["map"], 95))
    print(f"  requests started after the first {WARM_AFTER_S} s: API p99 {fig['warm_api_p99']:.0f} ms, "
          f"/map p95 {fig['warm_map_p95']:.0f} ms")
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, default=Path("/tmp/load-bench/demo.duckdb"))
    parser.add_argument("--events", type=int, default=200_000, help="demo events when --db is built")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--baseline-cli", help="another checkout's civicgrid command, run as 'after' in between")
    args = parser.parse_args()
    from civicgrid.geo.store import Store
    from civicgrid.geo.users import add_user

    if not Path(str(args.db)).exists():
        from civicgrid.data.demo import build_demo

        args.db.parent.mkdir(parents=True, exist_ok=True)
        build_demo(str(args.db), events=args.events, progress=False)
    store = Store(args.db)
    token = add_user(args.db, f"load-{os.getpid()}", role="viewer")[1]
    months = store.sql("SELECT DISTINCT strftime(time, '%Y-%m') AS m FROM events ORDER BY m DESC LIMIT 3")["m"]
    types = store.sql("SELECT problem_type AS t FROM events GROUP BY 1 ORDER BY count(*) DESC LIMIT 2")["t"]
    work = _workload(list(months), list(types))
    n_events = int(store.sql("SELECT count(*) AS n FROM events")["n"][0])
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; store {args.db} "
          f"({n_events:,} events); {args.clients} clients for {args.seconds:.0f} s, {len(work)} distinct requests")
    runs = [("before: 1 process, no /map or API cache", 1, 0, 0, CLI, ("--no-warm",))]
    if args.baseline_cli:
        runs.append((f"baseline: {args.workers} processes, /map and API caches, {args.baseline_cli}", args.workers,
                     32, 256, args.baseline_cli, ()))
    runs.append((f"after: {args.workers} processes, /map and API caches shared, warmed", args.workers, 32, 256,
                 CLI, ()))
    figures = {}
    for label, workers, cache, answers, cli, extra in runs:
        load_before = os.getloadavg()[0]
        proc, base, start_s = _serve(args.db, workers=workers, cache_pages=cache, cache_answers=answers, cli=cli,
                                     extra=extra)
        try:
            out, errors, wall, late = asyncio.run(_run(base, work, token, clients=args.clients,
                                                       seconds=args.seconds))
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=60)
        figures[label] = _report(label, out, errors, wall, late, start_s=start_s, load_before=load_before)
    before, *_, after = figures.values()
    print(f"\nafter / before: {after['rps'] / before['rps']:.2f}× requests/s; API p99 "
          f"{after['api_p99'] / before['api_p99']:.2f}×; /map p95 {after['map_p95'] / before['map_p95']:.2f}× "
          f"(load average now {os.getloadavg()[0]:.1f})")
    if args.baseline_cli:
        baseline = list(figures.values())[1]
        print(f"after / baseline: {after['rps'] / baseline['rps']:.2f}× requests/s; API p99 "
              f"{after['api_p99'] / baseline['api_p99']:.2f}× (after the first {WARM_AFTER_S} s "
              f"{after['warm_api_p99'] / baseline['warm_api_p99']:.2f}×); /map p95 "
              f"{after['map_p95'] / baseline['map_p95']:.2f}×")

if __name__ == "__main__":
    main()
