"""GET /api/heatmap: events per H3 cell as compact cells or hexagon GeoJSON."""

from __future__ import annotations

import json

import numpy as np
from civicgrid.api.auth import AuthFirstRoute
from civicgrid.api.cache import cached_endpoint
from civicgrid.api.deps import crs_param, event_filters, get_store, max_cells, res_param
from civicgrid.api.models import HeatmapCells, HeatmapGeoJSON
from civicgrid.api.responses import geojson_response
from civicgrid.geo.aggregate import METRICS, EventFilter, cells_frame, heatmap
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.h3cells import to_hex
from civicgrid.geo.store import Store
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

router = APIRouter(prefix="/api", tags=["heatmap"], route_class=AuthFirstRoute)

#: Response formats: compact ``[hex, value]`` pairs, or hexagon polygons.
FORMATS = ("cells", "geojson")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Raise a 422 naming the allowed values when ``value`` is not one of ``choices``."""
    if value not in choices:
        msg = f"{name} must be one of {', '.join(choices)}, got {value!r}"
        raise InvalidParameterError(msg)
    return value


def cell_values(values: np.ndarray, metric: str) -> list:
    """Values as JSON numbers: integers for counts, 3 decimals for densities."""
    if metric == "density":
        return np.round(values, 3).tolist()
    return values.astype("int64").tolist()


@router.get("/heatmap", summary="Events per H3 cell", response_model=HeatmapCells | HeatmapGeoJSON)
@cached_endpoint
def get_heatmap(store: Store = Depends(get_store), filters: EventFilter = Depends(event_filters),
                res: int = Depends(res_param),
                metric: str = Query("count", description="count, density (events per km²) or sites (distinct "
                                                         "sample-frame sites with events)"),
                format: str = Query("cells", description="cells: {res, cells: [[h3 hex, value], …]}; geojson: "
                                                         "hexagon polygons with h3_hex, value, count, sites"),
                crs: str = Depends(crs_param), limit: int = Depends(max_cells)) -> Response:
    """The filtered events counted per H3 cell at ``res``.

    A view with more cells than the service's ``max_cells`` setting is refused (422) with the finest
    resolution that fits.
    """
    check_choice("metric", metric, METRICS)
    check_choice("format", format, FORMATS)
    df = heatmap(store, res=res, filters=filters, metric=metric, max_cells=limit)
    values = df["value"].to_numpy()
    summary = {"res": res, "metric": metric, "n_cells": len(df), "total_events": int(df["count"].sum()),
               "max": (cell_values(values[[int(np.argmax(values))]], metric)[0] if len(df) else 0)}
    if format == "geojson":
        gdf = cells_frame(df.drop(columns=["area_km2"]))
        gdf["value"] = cell_values(values, metric)
        return geojson_response(gdf, crs=crs, extra=summary)
    cells = list(zip(to_hex(df["h3"].to_numpy()).tolist(), cell_values(values, metric), strict=True))
    body = json.dumps({**summary, "cells": cells}, separators=(",", ":"))
    return Response(body, media_type="application/json")
