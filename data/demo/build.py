"""Building the demo city: generate it, then write it into a store."""

from __future__ import annotations

import os
import time as _time

import numpy as np
from civicgrid.data.demo.city import build_city
from civicgrid.data.demo.frame import build_frame
from civicgrid.data.demo.hotspots import grid_model, site_model
from civicgrid.data.demo.names import person_names, unique_names
from civicgrid.data.demo.simulate import N_INSPECTORS, simulate
from civicgrid.data.demo.write import (
    CHUNK,
    clear_layers,
    record_demo,
    write_areas,
    write_events,
    write_inspections,
    write_lookups,
    write_roads,
    write_sites,
)
from civicgrid.geo.store import writing
from civicgrid.geo.times import now_local
from tqdm.auto import tqdm

#: DuckDB's memory limit while the demo is written.
DUCKDB_MEMORY = "2GB"


def build_demo(path: str | os.PathLike, *, events: int = 200_000, seed: int = 0, progress: bool = True) -> dict:
    """Build the demo city (示范市) into a civicgrid database, replacing any data it held.

    The city is generated offline and is the same for the same ``seed`` and
    ``events``: a boundary of about 12 × 10 km near 28.23 N 112.94 E, a street
    network with Chinese names, districts → streets → communities → micro-grids
    nested exactly, a sample frame over all 38 site categories, two years
    (2024–2025) of inspections, and complaints and inspection hits with
    hotspots, weekly and seasonal cycles, campaign surges, rectification
    lifecycles and rebounds, and a street network (arterials, local streets,
    alleys and an entrance lane to every site) in the ``roads`` table, which
    patrol plans use for travel times.

    Parameters
    ----------
    path
        The database file (created if missing; written atomically).
    events
        Number of events (complaints plus inspection hits); about 40 % are hits.
        Up to 10,000,000 for benchmarks (generated and inserted in chunks).
    seed
        Random seed.
    progress
        Show a progress bar.

    Returns
    -------
    dict
        Counts of what was written (areas, grids, sites, inspections, events, ...) and the seconds taken.
    """
    events = int(events)
    if events < 0:
        msg = f"events must be >= 0, got {events}"
        raise ValueError(msg)
    t0 = _time.perf_counter()
    started = now_local()  # the store's wall-clock convention (geo/times.py)
    rng = np.random.default_rng(seed)
    n_chunks = max(1, -(-events // CHUNK))
    bar = tqdm(total=7 + n_chunks, desc="demo city", unit="step", disable=not progress)
    try:
        with writing(path, memory_limit=DUCKDB_MEMORY) as con:
            clear_layers(con)
            import_id = 1
            types = con.execute("SELECT code, major_code, deadline_value, deadline_unit FROM problem_types "
                                "ORDER BY code").df()
            city = build_city(rng)
            bar.update(1)
            write_areas(con, rng, city)
            bar.update(1)
            rows = build_frame(rng, city["boundary"], city["roads"], city["areas_m"])
            sm = site_model(rng, rows, city)
            bar.update(1)
            write_sites(con, rng, rows, city, import_id)
            write_roads(con, city, rows, seed=seed)   # its own random stream: the rest of the city is unchanged
            gm = grid_model(rng, city, sm["places"])
            bar.update(1)
            ev, ins, counts = simulate(rng, events, city, sm, gm, types)
            bar.update(1)
            inspectors = unique_names(person_names(rng, N_INSPECTORS))
            write_lookups(con, sm["places"], types["code"].tolist(), inspectors)
            write_inspections(con, ins, import_id, bar)
            write_events(con, ev, import_id, bar)
            del ev
            summary = record_demo(con, import_id=import_id, seed=seed, events=events, started=started, counts=counts)
            bar.update(1)
    finally:
        bar.close()
    summary["seconds"] = round(_time.perf_counter() - t0, 1)
    return summary
