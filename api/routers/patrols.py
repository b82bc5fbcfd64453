"""Patrol plans: POST /api/patrols/plan, GET /api/patrols/{plan_id}[/export], GET /map/patrol/{plan_id}."""

from __future__ import annotations

import threading
from typing import Literal

from civicgrid.api.auth import require_role
from civicgrid.api.deps import RequestBody, get_settings, get_store, lang_param
from civicgrid.api.errors import HtmlErrorRoute
from civicgrid.api.models import PatrolPlan
from civicgrid.api.routers.inspections import base_url
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.geo.users import ROLE_RANK
from civicgrid.maps.basemaps import BASEMAPS, TILES, tianditu_key
from civicgrid.maps.offline import render_offline
from civicgrid.sites.patrol import DEFAULT_SOLVER, MAX_CANDIDATES, SOLVERS, list_plans, load_plan, plan_day, save_plan
from civicgrid.sites.patrol.export import FORMATS, export_bytes, plan_grids, plan_map, plan_roads
from civicgrid.sites.patrol.field import field_links
from civicgrid.sites.patrol.network import load_network, store_network, store_roads_version
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from pydantic import Field

router = APIRouter(tags=["patrols"], route_class=HtmlErrorRoute)

#: Longest solver time limit a request may ask for, seconds.
MAX_TIME_LIMIT_S = 120.0


class InspectorIn(RequestBody):
    """One inspector's shift."""

    name: str = Field(..., examples=["王伟"])
    start: tuple[float, float] = Field(..., description="start point [lng, lat]", examples=[[112.93, 28.22]])
    end: tuple[float, float] | None = Field(None, description="end point [lng, lat] (default: the start)")
    shift_start: str = Field("09:00", description="HH:MM on the plan date, or a date-time", examples=["14:00"])
    shift_minutes: float = Field(240, gt=0, le=24 * 60, description="shift length in minutes")
    mode: Literal["walk", "bike", "car"] = Field("walk", description="travel mode")


class PlanOptions(RequestBody):
    """Solver and candidate options."""

    solver: Literal["pyvrp", "ortools"] = Field(DEFAULT_SOLVER, description=f"one of {SOLVERS}")
    time_limit_s: float = Field(10.0, gt=0, le=MAX_TIME_LIMIT_S, description="solver time limit (s)")
    area: str | None = Field(None, description="district, street, community or grid code (or name) to plan in")
    coverage_days: int | None = Field(None, ge=0, description="no grid of the area unvisited longer than this")
    rechecks: bool = Field(True, description="overdue problems and due re-checks (回头看) are must-visits")
    max_candidates: int = Field(MAX_CANDIDATES, ge=0, le=2000, description="highest-risk sites offered")
    must_visit: list[int] = Field(default_factory=list, description="site ids to visit for certain")
    exclude: list[int] = Field(default_factory=list, description="site ids to leave out")
    road_network: bool = Field(True, description="use the service's road network (setting patrol_network or "
                                                 "$CIVICGRID_NETWORK) when one is configured, else the store's "
                                                 "own street network (table roads) when it has one")
    days: int | None = Field(None, ge=1, le=60, description="working days to plan the must-visits over, today "
                                                           "included (default: until all are planned)")
    seed: int = 0


class PlanRequest(RequestBody):
    """A patrol planning request."""

    date: str = Field(..., description="the patrol day", examples=["2025-12-20"])
    inspectors: list[InspectorIn] = Field(..., min_length=1, max_length=50)
    crs: Literal["wgs84", "gcj02", "bd09"] = Field("wgs84", description="system of the inspectors' coordinates")
    lang: Literal["zh", "en"] = "zh"
    options: PlanOptions = Field(default_factory=PlanOptions)


_NETWORK_LOCK = threading.Lock()


def _network(request: Request, settings: dict, store: Store):
    """The configured road network, else the store's own (table ``roads``), loaded once per service and store
    version (None when there is none)."""
    path = settings.get("patrol_network")  # the setting `network` ($CIVICGRID_NETWORK) unless overridden
    if not path:
        key = (str(store.path), store_roads_version(store))
        if key[1] is None:
            return None
        with _NETWORK_LOCK:
            cached = getattr(request.app.state, "store_network", None)
            if cached is None or cached[0] != key:
                cached = (key, store_network(store))
                request.app.state.store_network = cached
        return cached[1]
    with _NETWORK_LOCK:
        cached = getattr(request.app.state, "patrol_network", None)
        if cached is None or cached[0] != path:
            cached = (path, load_network(path))
            request.app.state.patrol_network = cached
    return cached[1]


@router.post("/api/patrols/plan", summary="Plan patrol routes", dependencies=[Depends(require_role("inspector"))],
             response_model=PatrolPlan, response_model_exclude_unset=True)
def create_plan(body: PlanRequest, request: Request, store: Store = Depends(get_store),
                settings: dict = Depends(get_settings)) -> dict:
    """Choose and order each inspector's sites to reach the most risk within the shifts, store the plan and
    return it: per inspector the ordered stops with arrival times, travel and service minutes, risk and the
    reason each site was chosen; the totals; the must-visits that could not fit and why; the travel-time source."""
    opt = body.options
    network = _network(request, settings, store) if opt.road_network else None
    doc = plan_day(store, [i.model_dump() for i in body.inspectors], date=body.date, area=opt.area,
                   coverage_days=opt.coverage_days, rechecks=opt.rechecks, max_candidates=opt.max_candidates,
                   network=network, solver=opt.solver, time_limit_s=opt.time_limit_s, seed=opt.seed,
                   must_visit=opt.must_visit, exclude=opt.exclude, crs=body.crs, lang=body.lang, days=opt.days)
    save_plan(store.path, doc)
    return doc


@router.get("/api/patrols", summary="Stored patrol plans")
def plans(store: Store = Depends(get_store), _user: dict = Depends(require_role("viewer")),
          limit: int = Query(50, ge=1, le=1000)) -> list[dict]:
    """Stored plans, newest first (viewer role: a plan holds the inspectors' names, starts and routes)."""
    frame = list_plans(store, limit=limit)
    # local wall-clock time of the store, written like every other time of the API (2025-07-01T08:30:00)
    frame["created_at"] = [t.isoformat() for t in frame["created_at"].dt.to_pydatetime()]
    frame["plan_date"] = frame["plan_date"].astype(str)
    return frame.to_dict("records")


@router.get("/api/patrols/{plan_id}", summary="A stored patrol plan", response_model=PatrolPlan,
            response_model_exclude_unset=True)
def get_plan(plan_id: str = PathParam(..., max_length=64), store: Store = Depends(get_store),
             _user: dict = Depends(require_role("viewer"))) -> dict:
    """The plan document as returned when it was made (viewer role)."""
    return load_plan(store, plan_id)


@router.get("/api/patrols/{plan_id}/export", summary="Export a patrol plan")
def export_plan(request: Request, plan_id: str = PathParam(..., max_length=64), store: Store = Depends(get_store),
                user: dict = Depends(require_role("viewer")), settings: dict = Depends(get_settings),
                format: str = Query("geojson", description=f"one of {', '.join(FORMATS)}"),
                lang: str = Depends(lang_param),
                crs: str = Query("wgs84", description="GeoJSON coordinates: wgs84, gcj02 or bd09")) -> Response:
    """GeoJSON (routes and stops), GPX (waypoints and one route per inspector, for phones), a printable HTML
    stop list, or an XLSX workbook (summary and one sheet per inspector). Viewer role; for the inspector role
    and above the GeoJSON, HTML and XLSX also list each inspector's field link (the HTML with its QR code)."""
    fmt = format.strip().lower()
    if fmt not in FORMATS:
        msg = f"format must be one of {', '.join(FORMATS)}, got {format!r}"
        raise InvalidParameterError(msg)
    key = crs.strip().lower()
    if key not in ("wgs84", "gcj02", "bd09"):
        msg = f"crs must be wgs84, gcj02 or bd09, got {crs!r}"
        raise InvalidParameterError(msg)
    doc = load_plan(store, plan_id)
    suffix, media = FORMATS[fmt]
    headers = {} if fmt == "html" else {
        "Content-Disposition": f'attachment; filename="patrol-{doc.get("date")}-{plan_id}{suffix}"'}
    links = field_links(store, doc, base_url=base_url(request, settings), lang=lang) \
        if fmt != "gpx" and ROLE_RANK[user["role"]] >= ROLE_RANK["inspector"] else None
    return Response(export_bytes(doc, fmt, lang=lang, crs=key, links=links), media_type=media, headers=headers)


@router.get("/map/patrol/{plan_id}", response_class=HTMLResponse, summary="Map of a patrol plan")
def patrol_map(plan_id: str = PathParam(..., max_length=64), store: Store = Depends(get_store),
               _user: dict = Depends(require_role("viewer")), settings: dict = Depends(get_settings),
               lang: str = Depends(lang_param),
               basemap: str = Query("none", description="none (offline), osm, tianditu or amap (GCJ-02)")
               ) -> HTMLResponse:
    """One colour per inspector, numbered stops labelled with arrival times, a popup per site (viewer role)."""
    tiles, crs = None, "wgs84"
    if basemap != "none":
        if basemap not in BASEMAPS:
            msg = f"basemap must be one of {', '.join(BASEMAPS)}, got {basemap!r}"
            raise InvalidParameterError(msg)
        key = tianditu_key(settings)
        tiles = [(u.replace("{tk}", key), s, a) for u, s, a in TILES[basemap]]
        crs = "gcj02" if basemap == "amap" else "wgs84"
    doc = load_plan(store, plan_id)
    grids = plan_grids(store, doc) if basemap == "none" else None  # tiles give their own context
    roads = plan_roads(store, doc) if basemap == "none" else None
    return HTMLResponse(render_offline(plan_map(doc, lang=lang, crs=crs, tiles=tiles, grids=grids, roads=roads)))
