"""Benchmark of the heatmap service and Gi*: latency, payload size and the naive way, measured in one run.

Usage::

    .venv/bin/python bench/heatmap_bench.py [--events 1000000 --events 10000000] [--dir /tmp/heatmap_bench]

For each size a demo city is built once under ``--dir`` (reused when present), then:

* ``GET /api/heatmap`` (city-wide, res 9, a half-year window and one 大类) through FastAPI's TestClient:
  the first request on a fresh service, warm p50/p95 of the same view (served from the per-version cache),
  and warm p50/p95 of *uncached* views (a different month/type each time, cache cleared: the DuckDB query);
* the payload of ``format=cells`` against ``format=geojson``;
* the naive way for the same view: the raw points into geopandas, one ``h3.latlng_to_cell`` call per point
  in Python, a pandas groupby, plus the size of a folium HeatMap page of the raw points;
* Gi* (``geo.hotspots.gi_star``) on 10k and 100k cells, and esda's ``G_Local`` on the 10k cells as reference.

``--maintained``: also a copy of each store after ``civicgrid maintain`` (files compacted and sorted by month, type
and time), measured the same way, then both stores' uncached requests interleaved (the same views, one store then
the other) so a noisy machine weighs on both alike; the as-built store is the reference.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.simplefilter("ignore")

ROOT = Path(__file__).resolve().parents[1]
VIEW = {"res": 9, "start": "2025-01-01", "end": "2025-06-30", "type": "02"}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def build(path: Path, events: int) -> None:
    from civicgrid.data.demo import build_demo

    if path.exists():
        print(f"reusing {path}")
        return
    t = time.perf_counter()
    build_demo(path, events=events, seed=0, progress=False)
    print(f"built {path} ({events:,} events) in {time.perf_counter() - t:.0f} s")


def bench_service(path: Path, *, repeats: int = 60) -> dict:
    from civicgrid.api.app import create_app
    from civicgrid.geo.aggregate import clear_cache
    from fastapi.testclient import TestClient

    out: dict = {}
    clear_cache()
    client = TestClient(create_app(path))
    t = time.perf_counter()
    r = client.get("/api/heatmap", params=VIEW)
    out["first"] = time.perf_counter() - t
    assert r.status_code == 200, r.text
    out["cells_bytes"] = len(r.content)
    out["n_cells"] = r.json()["n_cells"]
    out["events_in_view"] = r.json()["total_events"]
    warm = []
    for _ in range(repeats):
        t = time.perf_counter()
        client.get("/api/heatmap", params=VIEW)
        warm.append(time.perf_counter() - t)
    out["warm_p50"], out["warm_p95"] = _pct(warm, 50), _pct(warm, 95)
    uncached = []
    for params in _uncached_views(repeats // 2):
        clear_cache()
        t = time.perf_counter()
        assert client.get("/api/heatmap", params=params).status_code == 200
        uncached.append(time.perf_counter() - t)
    out["uncached_p50"], out["uncached_p95"] = _pct(uncached, 50), _pct(uncached, 95)
    t = time.perf_counter()
    g = client.get("/api/heatmap", params={**VIEW, "format": "geojson"})
    out["geojson_time"] = time.perf_counter() - t
    out["geojson_bytes"] = len(g.content)
    return out


def maintained_copy(path: Path) -> Path:
    """A copy of the store ``path`` after ``civicgrid maintain`` (made once, reused)."""
    from civicgrid.geo.store_files import copy_store, maintain

    out = path.with_name(path.name.replace("demo_", "sorted_"))
    if out.exists():
        print(f"reusing {out}")
        return out
    copy_store(path, out)
    t = time.perf_counter()
    done = maintain(out, keep_days=30)
    print(f"maintained {out} in {time.perf_counter() - t:.0f} s: {done}")
    return out


def _uncached_views(n: int) -> list[dict]:
    months = pd.date_range("2024-01-01", "2025-12-01", freq="MS")
    types = ["01", "02", "03", "04", "05", "06", "07", "08"]
    return [{"res": 9, "start": months[i % 18].date().isoformat(),
             "end": (months[i % 18] + pd.DateOffset(months=6)).date().isoformat(), "type": types[i % len(types)]}
            for i in range(n)]


def bench_pair(reference: Path, other: Path, *, repeats: int = 30) -> dict:
    """Uncached requests of the same views on two stores, interleaved; also what listing the events' labels
    costs (each uncached request ran it before the labels were read only for a word that is no type)."""
    from civicgrid.api.app import create_app
    from civicgrid.geo.aggregate import clear_cache
    from civicgrid.geo.store import Store
    from fastapi.testclient import TestClient

    clients = [TestClient(create_app(reference)), TestClient(create_app(other))]
    times: list[list[float]] = [[], []]
    for params in _uncached_views(repeats):
        for k, client in enumerate(clients):
            clear_cache()
            t = time.perf_counter()
            assert client.get("/api/heatmap", params=params).status_code == 200
            times[k].append(time.perf_counter() - t)
    labels = []
    for _ in range(5):
        t = time.perf_counter()
        Store(reference).sql("SELECT DISTINCT source_type FROM events WHERE source_type IS NOT NULL")
        labels.append(time.perf_counter() - t)
    return {"ref_p50": _pct(times[0], 50), "ref_p95": _pct(times[0], 95),
            "p50": _pct(times[1], 50), "p95": _pct(times[1], 95), "labels_p50": _pct(labels, 50)}


def bench_naive(path: Path) -> dict:
    """The naive way: raw points of the view into geopandas, h3 per point in Python, groupby; folium HeatMap."""
    import folium
    import geopandas as gpd
    import h3
    from civicgrid.geo.store import Store
    from folium.plugins import HeatMap

    out: dict = {}
    store = Store(path)
    t = time.perf_counter()
    pts = store.sql("SELECT lng, lat FROM events e JOIN problem_types p ON p.code = e.problem_type "
                    "WHERE e.time >= ? AND e.time < ? AND p.major_code = ?",
                    [pd.Timestamp(VIEW["start"]), pd.Timestamp(VIEW["end"]) + pd.Timedelta(days=1), VIEW["type"]])
    gdf = gpd.GeoDataFrame(pts, geometry=gpd.points_from_xy(pts.lng, pts.lat), crs="EPSG:4326")
    cells = [h3.latlng_to_cell(p.y, p.x, VIEW["res"]) for p in gdf.geometry]
    counts = pd.Series(cells).value_counts()
    out["naive_time"] = time.perf_counter() - t
    out["naive_cells"] = len(counts)
    out["naive_points"] = len(pts)
    t = time.perf_counter()
    m = folium.Map(location=[float(pts.lat.mean()), float(pts.lng.mean())], zoom_start=12, tiles=None)
    HeatMap(pts[["lat", "lng"]].to_numpy().tolist()).add_to(m)
    html = m.get_root().render()
    out["naive_heatmap_time"] = time.perf_counter() - t
    out["naive_heatmap_bytes"] = len(html.encode())
    return out


def bench_gi() -> dict:
    import esda
    import h3
    import libpysal
    from civicgrid.geo.hotspots import gi_star, neighbours

    out: dict = {}
    rng = np.random.default_rng(0)
    centre = h3.latlng_to_cell(28.2, 112.95, 12)
    for n_target, radius in ((10_000, 58), (100_000, 183)):
        cells = np.sort(np.array([h3.str_to_int(c) for c in h3.grid_disk(centre, radius)], dtype="uint64"))
        x = rng.poisson(2.0, len(cells)).astype(float)
        s = pd.Series(x, index=cells)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            res = gi_star(s, k=1, res=12)
            times.append(time.perf_counter() - t)
        out[f"gi_{n_target}"] = min(times)
        out[f"gi_{n_target}_n"] = len(cells)
        if n_target == 10_000:
            t = time.perf_counter()
            wm = neighbours(cells, k=1, self_weight=False)
            w = libpysal.weights.W({i: wm[i].indices.tolist() for i in range(len(cells))}, silence_warnings=True)
            g = esda.G_Local(x, w, transform="B", star=True, permutations=0)
            out["esda_10000"] = time.perf_counter() - t
            out["esda_max_abs_dz"] = float(np.abs(g.Zs - res["z"].to_numpy()).max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, action="append", help="demo sizes (repeatable; default 1M and 10M)")
    ap.add_argument("--dir", default="/tmp/heatmap_bench", help="where the demo databases are built")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--maintained", action="store_true", help="also a maintained (compacted, sorted) copy")
    args = ap.parse_args()
    sizes = args.events or [1_000_000, 10_000_000]
    Path(args.dir).mkdir(parents=True, exist_ok=True)

    gi = bench_gi()
    print(f"Gi* 10k cells ({gi['gi_10000_n']:,}): {_ms(gi['gi_10000'])}; esda G_Local (with W build) "
          f"{_ms(gi['esda_10000'])} -> {gi['esda_10000'] / gi['gi_10000']:.0f}x; max |dz| {gi['esda_max_abs_dz']:.1e}")
    print(f"Gi* 100k cells ({gi['gi_100000_n']:,}): {_ms(gi['gi_100000'])} (target <= 1 s)")

    for n in sizes:
        path = Path(args.dir) / f"demo_{n // 1_000_000}m.duckdb"
        build(path, n)
        stores = [path, maintained_copy(path)] if args.maintained else [path]
        s = report(path, n)
        for p in stores[1:]:
            report(p, n)
        if args.maintained:
            print(f"\nload average {_load()}")
            r = bench_pair(stores[0], stores[1])
            print(f"uncached, interleaved, same views: as built p50 {_ms(r['ref_p50'])}, p95 {_ms(r['ref_p95'])}; "
                  f"maintained p50 {_ms(r['p50'])} ({r['p50'] / r['ref_p50']:.2f}x), p95 {_ms(r['p95'])} "
                  f"({r['p95'] / r['ref_p95']:.2f}x); listing the labels (SELECT DISTINCT source_type) "
                  f"{_ms(r['labels_p50'])}; load average {_load()}")
        if not args.skip_naive:
            nv = bench_naive(path)
            print(f"naive: {nv['naive_points']:,} points -> geopandas + h3 per point + groupby "
                  f"{_ms(nv['naive_time'])} ({nv['naive_cells']} cells) = {nv['naive_time'] / s['first']:.1f}x the "
                  f"first request, {nv['naive_time'] / s['uncached_p50']:.0f}x an uncached warm one")
            print(f"naive folium HeatMap of the raw points: {nv['naive_heatmap_bytes']:,} B HTML in "
                  f"{_ms(nv['naive_heatmap_time'])} = {nv['naive_heatmap_bytes'] / s['cells_bytes']:.0f}x the cells "
                  f"payload")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def report(path: Path, n: int) -> dict:
    """Measure the service on the store ``path`` and print the figures."""
    print(f"\nload average {_load()}")
    s = bench_service(path)
    print(f"== {n:,} events ({path}) view {VIEW}: {s['n_cells']} cells, {s['events_in_view']:,} events")
    print(f"GET /api/heatmap first request: {_ms(s['first'])}")
    print(f"warm (same view, cached): p50 {_ms(s['warm_p50'])}, p95 {_ms(s['warm_p95'])} (target p95 <= 100 ms)")
    print(f"warm uncached (new month/type each, DuckDB query): p50 {_ms(s['uncached_p50'])}, "
          f"p95 {_ms(s['uncached_p95'])}")
    print(f"payload cells {s['cells_bytes']:,} B vs geojson {s['geojson_bytes']:,} B -> "
          f"{100 * s['cells_bytes'] / s['geojson_bytes']:.1f} % (target <= 20 %); geojson request "
          f"{_ms(s['geojson_time'])}")
    return s


if __name__ == "__main__":
    main()
