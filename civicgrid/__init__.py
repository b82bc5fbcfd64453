"""civicgrid: geospatial analytics for city inspection campaigns (创建全国文明城市).

The analysts' entry points, importable from the package itself::

    import civicgrid as cg

    store = cg.open_store("demo.duckdb")
    f = cg.EventFilter(start="2025-01-01", end="2025-07-01", types="02")
    cg.heatmap_frame(store, res=9, filters=f)
    cg.site_risk(store, as_of="2025-07-01")

The layers underneath (lowest first; each imports only from those before it):

* :mod:`civicgrid.geo`: the store, times, coordinates, H3 cells, events, aggregation and statistics;
* :mod:`civicgrid.grids`: areas, micro-grids and locating points in them;
* :mod:`civicgrid.maps`: offline folium rendering;
* :mod:`civicgrid.sites`: the sample frame, inspections, risk, patrols, cases, KPIs, the simulator and reports;
* :mod:`civicgrid.data`: taxonomies and the demo city;
* :mod:`civicgrid.api`: the FastAPI service, its pages and the ``civicgrid`` command.

Names are resolved on first use, so ``import civicgrid`` stays light (the models load when asked for).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_ENTRY_POINTS: dict[str, str] = {
    "open_store": "civicgrid.geo.store",
    "Store": "civicgrid.geo.store",
    "EventFilter": "civicgrid.geo.aggregate",
    "heatmap": "civicgrid.geo.aggregate",
    "heatmap_frame": "civicgrid.geo.aggregate",
    "area_stats": "civicgrid.geo.aggregate",
    "query_events": "civicgrid.geo.events",
    "hotspots": "civicgrid.geo.hotspots",
    "hotspot_clusters": "civicgrid.geo.hotspots",
    "emerging_hotspots": "civicgrid.geo.hotspots",
    "CivicgridError": "civicgrid.geo.errors",
    "NotFoundError": "civicgrid.geo.errors",
    "InvalidParameterError": "civicgrid.geo.errors",
    "site_risk": "civicgrid.sites.risk",
    "explain": "civicgrid.sites.risk",
    "backtest": "civicgrid.sites.backtest",
    "rolling_backtest": "civicgrid.sites.backtest",
    "plan_day": "civicgrid.sites.patrol",
    "patrol_candidates": "civicgrid.sites.patrol",
    "list_cases": "civicgrid.sites.cases",
    "kpi_table": "civicgrid.sites.kpis",
    "kpi_totals": "civicgrid.sites.kpis",
    "site_flags": "civicgrid.sites.kpis",
    "assess": "civicgrid.sites.simulator",
}

__all__ = [
    "CivicgridError",
    "EventFilter",
    "InvalidParameterError",
    "NotFoundError",
    "Store",
    "area_stats",
    "assess",
    "backtest",
    "emerging_hotspots",
    "explain",
    "heatmap",
    "heatmap_frame",
    "hotspot_clusters",
    "hotspots",
    "kpi_table",
    "kpi_totals",
    "list_cases",
    "open_store",
    "patrol_candidates",
    "plan_day",
    "query_events",
    "rolling_backtest",
    "site_flags",
    "site_risk",
]

if TYPE_CHECKING:  # what type checkers and IDEs see
    from civicgrid.geo.aggregate import EventFilter, area_stats, heatmap, heatmap_frame
    from civicgrid.geo.errors import CivicgridError, InvalidParameterError, NotFoundError
    from civicgrid.geo.events import query_events
    from civicgrid.geo.hotspots import emerging_hotspots, hotspot_clusters, hotspots
    from civicgrid.geo.store import Store, open_store
    from civicgrid.sites.backtest import backtest, rolling_backtest
    from civicgrid.sites.cases import list_cases
    from civicgrid.sites.kpis import kpi_table, kpi_totals, site_flags
    from civicgrid.sites.patrol import patrol_candidates, plan_day
    from civicgrid.sites.risk import explain, site_risk
    from civicgrid.sites.simulator import assess


def __getattr__(name: str) -> Any:
    module = _ENTRY_POINTS.get(name)
    if module is None:
        msg = f"module 'civicgrid' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
