"""Benchmark of ``GET /api/risk`` (the default view) after a case write, in-process on a demo city, against a
reference measured in the same run.

Usage::

    .venv/bin/python bench/risk_reuse_bench.py [--db /tmp/risk-reuse/demo.duckdb] [--events 200000] [--writes 3]

The demo city is built into ``--db`` when it is not there, and copied to a work store. ``/api/risk`` is asked once
(cold: the models are fitted), then after each of ``--writes`` case writes (a case found at a site, dated after
the latest event of the same day, so the default ``as_of`` moves on within the day, as an inspector's writes
do). The reference is the same request with every cache dropped (:func:`~civicgrid.geo.aggregate.clear_cache`):
what every request after a write cost before the fit was kept across writes (the fit was keyed by the store's
version). The load average is printed (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from civicgrid.geo.aggregate import clear_cache
from civicgrid.geo.store import Store
from civicgrid.geo.store_files import copy_store, remove_store
from civicgrid.sites import cases as cs
from civicgrid.sites.risk import default_as_of


def _get_ms(client) -> float:
    t = time.perf_counter()
    r = client.get("/api/risk")
    ms = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        msg = f"/api/risk answered {r.status_code}: {r.text[:300]}"
        raise RuntimeError(msg)
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="/tmp/risk-reuse/demo.duckdb")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--writes", type=int, default=3)
    args = ap.parse_args()
    from civicgrid.api.app import create_app
    from fastapi.testclient import TestClient

    src = Path(args.db)
    if not src.exists():
        from civicgrid.data.demo import build_demo

        src.parent.mkdir(parents=True, exist_ok=True)
        build_demo(src, events=args.events, progress=False)
    work = src.with_name("risk-reuse-work.duckdb")
    remove_store(work)
    copy_store(src, work)
    client = TestClient(create_app(work))
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    cold = _get_ms(client)
    print(f"cold /api/risk (fit + scores): {cold:,.0f} ms")
    sites = Store(work).sql("SELECT site_id FROM sites WHERE active ORDER BY site_id LIMIT 20")["site_id"].tolist()
    after = []
    for i in range(args.writes):
        as_of = default_as_of(Store(work))
        day_end = datetime.combine(as_of.date(), datetime.min.time()) + timedelta(days=1)
        found = (as_of + (day_end - as_of) / 2).replace(microsecond=0)
        t = time.perf_counter()
        cs.create_case(work, actor="bench", problem_type="0101", site_id=int(sites[i % len(sites)]), time=found)
        write_ms = (time.perf_counter() - t) * 1000
        after.append(_get_ms(client))
        print(f"write {i + 1} ({write_ms:,.0f} ms, found {found:%Y-%m-%d %H:%M:%S}): "
              f"next /api/risk {after[-1]:,.0f} ms")
    clear_cache()
    reference = _get_ms(client)
    med = statistics.median(after)
    print(f"reference, every cache dropped (a refit, as each request after a write before): {reference:,.0f} ms")
    print(f"/api/risk after a case write: median {med:,.0f} ms over {len(after)} writes; "
          f"ratio to the reference {med / reference:.3f}")
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    remove_store(work)


if __name__ == "__main__":
    main()
