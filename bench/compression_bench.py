"""Benchmark of the compressed answers (gzip, ``api.app.GZIP_LEVEL``): what they cost the service and save the wire.

Usage::

    .venv/bin/python bench/compression_bench.py --db /tmp/heat10m/demo_10m.duckdb [--db city.duckdb] [--rounds 200]

For each store, through FastAPI's TestClient on one warm service: the heatmap view of ``heatmap_bench`` (res 9, a
half-year, one 大类; served from the answer cache) and the ``/map`` page, each asked with ``Accept-Encoding: gzip``
and ``identity`` in alternation (the reference, measured in the same run): p50 and p95 latency, bytes on the wire
and the ratios.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

warnings.simplefilter("ignore")

VIEW = {"res": 9, "start": "2025-01-01", "end": "2025-06-30", "type": "02"}


def measure(client, path: str, params: dict | None, rounds: int) -> dict[str, dict[str, float]]:
    """p50/p95 (ms) and bytes of ``path`` with and without gzip, asked in alternation."""
    out: dict[str, dict] = {}
    times: dict[str, list[float]] = {"gzip": [], "identity": []}
    for _ in range(rounds):
        for enc in times:
            t = time.perf_counter()
            r = client.get(path, params=params, headers={"Accept-Encoding": enc})
            times[enc].append(time.perf_counter() - t)
            assert r.status_code == 200, r.text[:200]
            out.setdefault(enc, {})["bytes"] = r.num_bytes_downloaded
    for enc, v in times.items():
        ms = np.array(v) * 1000
        out[enc].update(p50=float(np.percentile(ms, 50)), p95=float(np.percentile(ms, 95)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", action="append", required=True, help="a store (repeatable)")
    parser.add_argument("--rounds", type=int, default=200, help="requests per encoding for the heatmap view")
    args = parser.parse_args()
    from civicgrid.api.app import GZIP_LEVEL, create_app
    from fastapi.testclient import TestClient

    print(f"gzip level {GZIP_LEVEL}")
    for db in args.db:
        client = TestClient(create_app(db))
        for name, path, params, rounds in (("heatmap view", "/api/heatmap", VIEW, args.rounds),
                                           ("map page", "/map", None, max(args.rounds // 7, 10))):
            client.get(path, params=params)  # computed once, then served from the caches
            got = measure(client, path, params, rounds)
            z, ref = got["gzip"], got["identity"]
            print(f"{db} {name}: gzip p50 {z['p50']:.1f} / p95 {z['p95']:.1f} ms, {z['bytes']:,} B; "
                  f"identity (reference) p50 {ref['p50']:.1f} / p95 {ref['p95']:.1f} ms, {ref['bytes']:,} B; "
                  f"bytes {z['bytes'] / ref['bytes']:.2f}×, p50 {z['p50'] / ref['p50']:.2f}×, "
                  f"+{z['p50'] - ref['p50']:.1f} ms")


if __name__ == "__main__":
    main()
