"""GET /api/hotspots, /api/hotspots/clusters and /api/hotspots/emerging: Gi* hot and cold spots."""

from __future__ import annotations

import json

import numpy as np
from civicgrid.api.auth import AuthFirstRoute
from civicgrid.api.cache import cached_endpoint
from civicgrid.api.deps import check_res_param, crs_param, event_filters, get_store, lang_param, max_cells, res_param
from civicgrid.api.models import FeatureCollection, HotspotCells, HotspotGeoJSON
from civicgrid.api.responses import geojson_response
from civicgrid.api.routers.heatmap import FORMATS, check_choice
from civicgrid.geo.aggregate import EventFilter, cells_frame
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.hotspots import EMERGING_CLASSES, emerging_hotspots, hotspot_clusters, hotspots
from civicgrid.geo.store import Store
from civicgrid.geo.texts import labels, name_column
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

router = APIRouter(prefix="/api/hotspots", tags=["hotspots"], route_class=AuthFirstRoute)


def k_param(k: int = Query(1, description="neighbourhood: cells within k rings (1..5)")) -> int:
    """Gi* neighbourhood rings."""
    if not 1 <= k <= 5:
        msg = f"k must be 1..5 rings, got {k}"
        raise InvalidParameterError(msg)
    return k


def alpha_param(alpha: float = Query(0.05, description="significance level after Benjamini-Hochberg "
                                                       "correction")) -> float:
    """Significance level."""
    if not 0 < alpha < 0.5:
        msg = f"alpha must be between 0 and 0.5, got {alpha}"
        raise InvalidParameterError(msg)
    return alpha


@router.get("", summary="Getis-Ord Gi* per H3 cell", response_model=HotspotCells | HotspotGeoJSON)
@cached_endpoint
def get_hotspots(store: Store = Depends(get_store), filters: EventFilter = Depends(event_filters),
                 res: int = Depends(res_param), k: int = Depends(k_param), alpha: float = Depends(alpha_param),
                 significant: bool = Query(False, description="only hot and cold cells"),
                 format: str = Query("cells", description="cells: {columns, cells: [[h3 hex, count, z, p, p_fdr, "
                                                          "cls], …]}; geojson: hexagons"),
                 lang: str = Depends(lang_param), crs: str = Depends(crs_param),
                 limit: int = Depends(max_cells)) -> Response:
    """Gi* z-score, two-sided p, Benjamini-Hochberg adjusted p and class of every cell of the study area
    (the city, or the filtered area; cells without events count as zeros)."""
    check_choice("format", format, FORMATS)
    df = hotspots(store, res=res, filters=filters, k=k, alpha=alpha, max_cells=limit)
    summary = {"res": res, "k": k, "alpha": alpha, "n_cells": len(df), "n_hot": int(df["hot"].sum()),
               "n_cold": int(df["cold"].sum()), "labels": labels("gi", lang)}
    if significant:
        df = df[df["hot"] | df["cold"]]
    if format == "geojson":
        gdf = cells_frame(df.drop(columns=["h3_hex"]))
        gdf["label"] = gdf["cls"].map(summary["labels"])
        return geojson_response(gdf, crs=crs, extra=summary)
    cols = ["h3_hex", "count", "z", "p", "p_fdr", "cls"]
    rows = list(zip(df["h3_hex"].tolist(), df["count"].astype(int).tolist(), np.round(df["z"], 4).tolist(),
                    np.round(df["p"], 6).tolist(), np.round(df["p_fdr"], 6).tolist(), df["cls"].tolist(),
                    strict=True))
    body = json.dumps({**summary, "columns": cols, "cells": rows}, ensure_ascii=False, separators=(",", ":"))
    return Response(body, media_type="application/json")


@router.get("/clusters", summary="Hotspot regions (GeoJSON), ranked", response_model=FeatureCollection)
@cached_endpoint
def get_clusters(store: Store = Depends(get_store), filters: EventFilter = Depends(event_filters),
                 res: int = Depends(res_param), k: int = Depends(k_param), alpha: float = Depends(alpha_param),
                 top: int = Query(3, ge=1, le=10, description="dominant problem types listed per cluster"),
                 lang: str = Depends(lang_param), crs: str = Depends(crs_param),
                 limit: int = Depends(max_cells)) -> Response:
    """Connected hot cells merged into regions, ranked by events, with cell and event counts, dominant problem
    types, the micro-grids and the sample-frame sites inside."""
    gdf = hotspot_clusters(store, res=res, filters=filters, k=k, alpha=alpha, top_types=top, lang=lang,
                           max_cells=limit)
    return geojson_response(gdf, crs=crs, extra={"res": res, "k": k, "alpha": alpha, "n_clusters": len(gdf)})


@router.get("/emerging", summary="Emerging hot and cold spots over weekly or monthly slices")
@cached_endpoint
def get_emerging(store: Store = Depends(get_store), filters: EventFilter = Depends(event_filters),
                 res: int = Query(8, description="H3 resolution 5..12 (default 8: cells of about 0.7 km²)"),
                 freq: str = Query("M", description="W (weekly) or M (monthly) slices"),
                 k: int = Depends(k_param), alpha: float = Depends(alpha_param),
                 all: bool = Query(False, description="also list cells with no pattern"),
                 format: str = Query("cells", description="cells or geojson"),
                 lang: str = Depends(lang_param), crs: str = Depends(crs_param),
                 limit: int = Depends(max_cells)) -> Response:
    """ESRI emerging-hot-spot class of each cell (new, consecutive, intensifying, persistent, diminishing,
    sporadic, oscillating, historical hot or cold spot) from Gi* per slice and a Mann-Kendall trend."""
    res = check_res_param(res)
    check_choice("format", format, FORMATS)
    df = emerging_hotspots(store, res=res, filters=filters, freq=freq, k=k, alpha=alpha, max_cells=limit)
    slices = df.attrs.get("slices", [])
    counts = df["cls"].value_counts().to_dict()
    summary = {"res": res, "freq": freq.upper(), "k": k, "alpha": alpha, "n_slices": len(slices),
               "first_slice": slices[0] if slices else None, "last_slice": slices[-1] if slices else None,
               "classes": {c: int(counts.get(c, 0)) for c in EMERGING_CLASSES},
               "labels": labels("emerging", lang)}
    if not all:
        df = df[df["cls"] != "no_pattern"]
    df = df.assign(label=df[name_column(lang, "label")])
    if format == "geojson":
        gdf = cells_frame(df.drop(columns=["h3_hex", "label_zh", "label_en"]))
        return geojson_response(gdf, crs=crs, extra=summary)
    cols = ["h3_hex", "cls", "label", "count", "n_hot", "n_cold", "trend_z", "trend_p"]
    rows = list(zip(df["h3_hex"].tolist(), df["cls"].tolist(), df["label"].tolist(), df["count"].tolist(),
                    df["n_hot"].astype(int).tolist(), df["n_cold"].astype(int).tolist(),
                    np.round(df["trend_z"], 4).tolist(), np.round(df["trend_p"], 6).tolist(), strict=True))
    body = json.dumps({**summary, "columns": cols, "cells": rows}, ensure_ascii=False, separators=(",", ":"))
    return Response(body, media_type="application/json")
