"""GET /api/stats/areas: event counts per district, street, community or micro-grid."""

from __future__ import annotations

from civicgrid.api.auth import AuthFirstRoute
from civicgrid.api.cache import cached_endpoint
from civicgrid.api.deps import event_filters, get_store, lang_param
from civicgrid.api.models import AreaStats
from civicgrid.api.responses import frame_records, json_response
from civicgrid.geo.aggregate import EventFilter, area_stats
from civicgrid.geo.store import Store
from civicgrid.geo.texts import local_names
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

router = APIRouter(prefix="/api/stats", tags=["stats"], route_class=AuthFirstRoute)


@router.get("/areas", summary="Event counts per area", response_model=AreaStats)
@cached_endpoint
def stats_areas(store: Store = Depends(get_store), filters: EventFilter = Depends(event_filters),
                level: str = Query("district", description="district, street, community or grid"),
                lang: str = Depends(lang_param)) -> Response:
    """Every unit of ``level`` with ``count``, ``complaints``, ``hits``, ``open``, ``sites``, ``density``
    (per km²) and ``share`` for the same filters as the heatmap, by count descending."""
    df = area_stats(store, level=level, filters=filters)
    df.insert(1, "label", local_names(df, lang))
    return json_response({"level": level, "total_events": int(df["count"].sum()), "areas": frame_records(df)})
