"""GET /api/events: the events behind a heatmap or statistics view, as points (GeoJSON), one page at a time."""

from __future__ import annotations

from civicgrid.api.auth import AuthFirstRoute, require_role
from civicgrid.api.cache import cached_endpoint
from civicgrid.api.deps import MAX_INT64, crs_param, event_filters, get_store, lang_param
from civicgrid.api.models import EventsPage
from civicgrid.api.responses import geojson_response
from civicgrid.api.routers.heatmap import check_choice
from civicgrid.geo.aggregate import EventFilter
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.events import query_events
from civicgrid.geo.store import Store
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

router = APIRouter(prefix="/api", tags=["events"], route_class=AuthFirstRoute)

#: Most events one request may return (page with ``offset`` for more).
MAX_LIMIT = 10_000
#: Orders of the rows.
ORDERS = ("newest", "oldest")


@router.get("/events", summary="The filtered events (GeoJSON points, paged)", response_model=EventsPage)
@cached_endpoint
def get_events(store: Store = Depends(get_store), _user: dict = Depends(require_role("viewer")),
               filters: EventFilter = Depends(event_filters),
               limit: int = Query(1000, description=f"events per page, 1..{MAX_LIMIT}"),
               offset: int = Query(0, ge=0, le=MAX_INT64, description="events skipped before this page"),
               order: str = Query("newest", description="newest (default) or oldest first"),
               lang: str = Depends(lang_param), crs: str = Depends(crs_param)) -> Response:
    """The events matching the same filters as ``/api/heatmap``, ``/api/hotspots`` and ``/api/stats/areas``
    (computed by :func:`geo.events.query_events`): ``event_id``, ``source``, ``time``, ``problem_type``,
    ``type_name``, the city's own label, status and address (``source_type``, ``source_status``, ``address``, as
    in its file), ``status``, ``deadline``, the site and its category, ``text``, area codes and ``h3_hex``.
    ``total`` is the number of matching events; page through them with ``offset``. Viewer role: the rows carry
    the complaints' free text, unlike the aggregated views."""
    if not 1 <= limit <= MAX_LIMIT:
        msg = f"limit must be 1..{MAX_LIMIT}, got {limit}; page with offset for more"
        raise InvalidParameterError(msg)
    if offset < 0:
        msg = f"offset must be 0 or more, got {offset}"
        raise InvalidParameterError(msg)
    check_choice("order", order, ORDERS)
    gdf = query_events(store, filters=filters, limit=limit, offset=offset, newest_first=order == "newest",
                       lang=lang)
    extra = {"total": gdf.attrs["total"], "limit": limit, "offset": offset, "order": order}
    return geojson_response(gdf.drop(columns=["lng", "lat"]), crs=crs, extra=extra)
