"""The built-in demo city (示范市): a generated, deterministic city with grids, sites, inspections and events.

:func:`build_demo` writes it into a store. The generator is split by what it makes:

* :mod:`~civicgrid.data.demo.city`: boundary, roads, micro-grids, districts → streets → communities;
* :mod:`~civicgrid.data.demo.frame`: the sample frame (样本框) of sites over all 38 categories;
* :mod:`~civicgrid.data.demo.hotspots`: where problems arise around each site and in each grid, episodes;
* :mod:`~civicgrid.data.demo.calendar`: the two years, holidays, campaigns, daily and hourly profiles, deadlines;
* :mod:`~civicgrid.data.demo.lifecycle`: how each problem is rectified, closed, reworked, or left open;
* :mod:`~civicgrid.data.demo.simulate`: inspections and their hits, re-checks and rebounds, complaints;
* :mod:`~civicgrid.data.demo.names`: people's names and phone numbers;
* :mod:`~civicgrid.data.demo.write`: writing it all into the store;
* :mod:`~civicgrid.data.demo.build`: :func:`build_demo`, which runs them in order.

The same ``seed`` and ``events`` give the same city, row for row.
"""

from __future__ import annotations

from civicgrid.data.demo.build import build_demo
from civicgrid.data.demo.calendar import ASSESSMENTS, END, HOLIDAYS, SCHOOL_VACATIONS, SPRING_FESTIVALS, START
from civicgrid.data.demo.city import CENTER_LAT, CENTER_LNG, CITY_NAME, CITY_NAME_EN, DISTRICTS
from civicgrid.data.demo.frame import SITE_COUNTS
from civicgrid.data.demo.hotspots import EPISODES
from civicgrid.data.demo.lifecycle import (
    ACCUMULATION_DAYS,
    ACCUMULATION_FLOOR,
    ACCUMULATION_RISE,
    ESCALATION_DAYS,
    STUCK_FOR_GOOD,
)
from civicgrid.data.demo.simulate import N_INSPECTORS

__all__ = [
    "ACCUMULATION_DAYS",
    "ACCUMULATION_FLOOR",
    "ACCUMULATION_RISE",
    "ASSESSMENTS",
    "CENTER_LAT",
    "CENTER_LNG",
    "CITY_NAME",
    "CITY_NAME_EN",
    "DISTRICTS",
    "END",
    "EPISODES",
    "ESCALATION_DAYS",
    "HOLIDAYS",
    "N_INSPECTORS",
    "SCHOOL_VACATIONS",
    "SITE_COUNTS",
    "SPRING_FESTIVALS",
    "START",
    "STUCK_FOR_GOOD",
    "build_demo",
]
