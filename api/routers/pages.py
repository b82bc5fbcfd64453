"""GET /map: the planners' hotspot map (H3 heat layer, micro-grids, sample frame, hotspot clusters), offline.

Rendered pages are kept per view (the query), the reference layers the caller may see (what a token changes on
the page: :func:`civicgrid.api.auth.shows_layer`) and store version in the app's ``map_pages`` cache (setting
``map_cache_pages``; shared by the service's processes with the setting ``cache_dir``): the same view asked
again before the next committed write, by any caller who sees the same layers, is answered without rendering it
again, and concurrent requests for a view not rendered yet wait for one rendering (single flight) instead of each
rendering it. A page of an older store version is never served while the new one
renders: readers see each committed write on their next request.

The map is :func:`civicgrid.maps.hotspot.hotspot_map` (usable without a server, e.g. in a notebook),
rendered by :func:`civicgrid.maps.offline.render_offline` (Leaflet and plugins served by the app, no
CDN); the route only parses the query.
"""

from __future__ import annotations

from civicgrid.api.auth import optional_user, shows_layer
from civicgrid.api.deps import event_filters, get_settings, get_store, lang_param, max_cells, res_param
from civicgrid.api.errors import HtmlErrorRoute
from civicgrid.geo.aggregate import EventFilter
from civicgrid.geo.settings import PUBLIC_LAYERS
from civicgrid.geo.store import Store
from civicgrid.maps.hotspot import hotspot_map
from civicgrid.maps.offline import render_offline
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["pages"], route_class=HtmlErrorRoute)


@router.get("/map", response_class=HTMLResponse, summary="The hotspot map (HTML page, works offline)")
def map_page(request: Request, store: Store = Depends(get_store), filters: EventFilter = Depends(event_filters),
             res: int = Depends(res_param), lang: str = Depends(lang_param),
             metric: str = Query("count", description="count, density (events per km²) or sites"),
             basemap: str = Query("none", description="none (district outlines, offline), osm, tianditu or amap "
                                                      "(overlays shifted to GCJ-02)"),
             limit: int = Depends(max_cells), settings: dict = Depends(get_settings),
             user: dict | None = Depends(optional_user)) -> HTMLResponse:
    """The planners' map for the same filters as ``/api/heatmap``: H3 heat layer with legend, micro-grids,
    sample-frame sites, hotspot clusters with a side list, layer control and a filter form. Reference layers
    left out of the setting ``public_layers`` (micro-grids, grid leaders, sites) are drawn for a ``viewer``
    token only."""
    layers = [layer for layer in PUBLIC_LAYERS if shows_layer(layer, user, settings)]

    def render() -> str:
        m = hotspot_map(store, res=res, filters=filters, metric=metric, lang=lang, basemap=basemap,
                        max_cells=limit, query=dict(request.query_params), settings=settings, layers=layers)
        return render_offline(m)

    # the page depends on the store's version, the query and the layers shown, nothing else of the caller (no
    # name, role or token is drawn): callers who see the same layers share one rendering
    view = tuple(sorted(request.query_params.multi_items()))
    return HTMLResponse(request.app.state.map_pages.get(store, ("map", view, tuple(layers)), render))
