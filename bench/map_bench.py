"""/map HTML size for about 20,000 H3 cells, against the naive folium ways (GeoJSON hexagons, HeatMap of raw points).

Run: ``.venv/bin/python bench/map_bench.py [--dir /tmp/map_bench] [--events 200000]``.

1. ``GET /map`` on a demo city (all layers: packed heat hexagons, micro-grids, sample frame, hotspot
   clusters, filter form) for a view of about 20k cells at resolution 11.
2. Exactly 20,000 synthetic cells: the packed hexagon layer alone, and the same cells as a
   ``folium.GeoJson`` of hexagon polygons with a tooltip (the usual folium way).
3. The naive heatmap: the view's raw event points read into geopandas and drawn with
   ``folium.plugins.HeatMap``, measured in the same run.

Target (issue 3): ``/map`` HTML ≤ 2 MB for 20k cells.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import folium
import folium.plugins
import geopandas as gpd
import h3
import numpy as np
from civicgrid.api.app import create_app
from civicgrid.data.demo import build_demo
from civicgrid.geo.aggregate import EventFilter, cells_frame, heatmap
from civicgrid.geo.store import Store
from civicgrid.maps.layers import HexagonLayer
from civicgrid.maps.legend import class_breaks, class_colors
from civicgrid.maps.offline import render_offline
from fastapi.testclient import TestClient

TARGET_BYTES = 2_000_000


def _mb(n: int) -> str:
    return f"{n / 1e6:7.2f} MB"


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _pick_window(store: Store, res: int, want: int) -> tuple[str, int]:
    """The shortest window ending 2025-12-31 (whole months) whose view has at least ``want`` cells."""
    for months in range(1, 25):
        start = (np.datetime64("2026-01", "M") - months).astype(str) + "-01"
        n = len(heatmap(store, res=res, filters=EventFilter(start=start)))
        if n >= want:
            return start, n
    return "2024-01-01", n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/map_bench", help="where the demo database is built")
    ap.add_argument("--events", type=int, default=200_000, help="events in the demo city")
    ap.add_argument("--cells", type=int, default=20_000, help="cells in the synthetic and real views")
    args = ap.parse_args()

    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / f"demo_{args.events}.duckdb"
    if not db.exists():
        _, dt = _timed(lambda: build_demo(db, events=args.events, seed=0, progress=False))
        print(f"built {db} ({args.events:,} events) in {dt:.1f} s")
    store = Store(db)

    # 1. the real page
    res = 11
    start, n_cells = _pick_window(store, res, args.cells)
    client = TestClient(create_app(db, settings={"max_cells": 100_000}))
    url = f"/map?res={res}&start={start}"
    r, dt_first = _timed(lambda: client.get(url))
    assert r.status_code == 200, r.text
    _, dt_warm = _timed(lambda: client.get(url))
    page_bytes = len(r.content)
    n_events = int(heatmap(store, res=res, filters=EventFilter(start=start))["count"].sum())
    print(f"\nGET {url}: {n_cells:,} cells, {n_events:,} events")
    print(f"  /map HTML (all layers)                 {_mb(page_bytes)}   first {dt_first:5.2f} s, "
          f"again {dt_warm:5.2f} s   target ≤ 2 MB: {'met' if page_bytes <= TARGET_BYTES else 'MISSED'}")

    # 2. exactly N synthetic cells, packed vs GeoJSON
    base = h3.latlng_to_cell(28.23, 112.94, 9)
    k = int(np.ceil((np.sqrt(12 * args.cells - 3) - 3) / 6)) + 1
    cells = np.array([h3.str_to_int(c) for c in h3.grid_disk(base, k)][:args.cells], dtype="uint64")
    rng = np.random.default_rng(0)
    values = np.floor(rng.pareto(1.5, len(cells)) * 10) + 1

    def packed_page() -> str:
        m = folium.Map(tiles=None, prefer_canvas=True)
        breaks = class_breaks(values)
        HexagonLayer(cells, np.searchsorted(breaks, values), class_colors(len(breaks)),
                     {"events": values}).add_to(m)
        return render_offline(m)

    def geojson_page() -> str:
        gdf = cells_frame(__import__("pandas").DataFrame({"h3": cells, "value": values}))
        m = folium.Map(tiles=None, prefer_canvas=True)
        folium.GeoJson(gdf[["h3_hex", "value", "geometry"]].to_json(), tooltip=folium.GeoJsonTooltip(["value"]),
                       style_function=lambda f: {"stroke": False, "fillOpacity": 0.7}).add_to(m)
        return render_offline(m)

    packed, dt_packed = _timed(packed_page)
    geo, dt_geo = _timed(geojson_page)
    pb, gb = len(packed.encode()), len(geo.encode())
    print(f"\n{len(cells):,} synthetic res-9 cells, one layer:")
    print(f"  packed hexagons (civicgrid)            {_mb(pb)}   {dt_packed:5.2f} s   "
          f"{pb / len(cells):6.1f} B/cell")
    print(f"  folium.GeoJson hexagons (reference)    {_mb(gb)}   {dt_geo:5.2f} s   "
          f"{gb / len(cells):6.1f} B/cell   packed = {pb / gb:.1%} of GeoJSON")

    # 3. naive: raw points -> geopandas -> folium HeatMap
    def naive_page() -> str:
        df = store.sql("SELECT lng, lat FROM events WHERE time >= ? AND h3 IS NOT NULL", [start])
        gdf = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df.lng, df.lat), crs="EPSG:4326")
        m = folium.Map(tiles=None)
        folium.plugins.HeatMap(np.column_stack([gdf.geometry.y, gdf.geometry.x]).tolist(), radius=8).add_to(m)
        return render_offline(m)

    naive, dt_naive = _timed(naive_page)
    nb = len(naive.encode())
    print(f"\nnaive HeatMap of the view's {n_events:,} raw points (reference)")
    print(f"  folium HeatMap page                    {_mb(nb)}   {dt_naive:5.2f} s   "
          f"/map = {page_bytes / nb:.1%} of it, with grids, sites and clusters on top")


if __name__ == "__main__":
    main()
