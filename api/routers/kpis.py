"""GET /api/kpis (rectification KPIs per unit with totals) and GET /api/kpis/flags (red / white flags of sites)."""

from __future__ import annotations

import json
from datetime import timedelta

from civicgrid.api.auth import AuthFirstRoute
from civicgrid.api.cache import cached_response
from civicgrid.api.deps import get_store, lang_param
from civicgrid.api.models import KpiTable, SiteFlags
from civicgrid.api.responses import frame_records, json_body
from civicgrid.geo.aggregate import area_code
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.geo.times import parse_end, parse_period, store_timezone
from civicgrid.sites import cases as cs
from civicgrid.sites import kpis as site_kpis
from civicgrid.sites.kpis import (
    FLAG_WINDOW_DAYS,
    flags_hold_until,
    kpi_table,
    kpi_totals,
    kpis_hold_until,
    site_flags,
)
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

router = APIRouter(prefix="/api/kpis", tags=["kpis"], route_class=AuthFirstRoute)


@router.get("", summary="Rectification KPIs per unit", response_model=KpiTable)
def kpis(request: Request, store: Store = Depends(get_store),
         period: str | None = Query(None, description="2025-03 (month), 2025-Q1, 2025, 2025-03-05 or "
                                                      "2025-03-01..2025-03-15; or give start and end",
                                    examples=["2025-03"]),
         start: str | None = Query(None, description="first day (or date-time) of the period",
                                   examples=["2025-03-01"]),
         end: str | None = Query(None, description="last day (inclusive) or exclusive end time",
                                 examples=["2025-03-31"]),
         level: str = Query("street", description="district, street, community, grid or category"),
         as_of: str | None = Query(None, description="read the record as it stood then (default: end of "
                                                     "period, or now)"),
         lang: str = Depends(lang_param)) -> Response:
    """Found, rectified, due, closed (on time), reworked, rebounds, hours to rectify, open and overdue per unit,
    with the rates and a ``totals`` row over the units (definitions in the README, "Cases and KPIs").
    The period is ``period`` or ``start`` and ``end``; with neither, the current calendar month."""
    if period is None and start is None and end is None:
        period = cs.now_local(tz=store_timezone(store)).strftime("%Y-%m")  # this month, in the store's zone
    if period is not None:
        first, after, _ = parse_period(period)
        start, end_v, end = first.isoformat(), after, (after - timedelta(days=1)).isoformat()
    elif start is None or end is None:
        msg = "give both start and end (or a period such as 2025-03)"
        raise InvalidParameterError(msg)
    else:
        end_v = parse_end(end, name="end", tz=store_timezone(store))  # a date-only end includes that day

    def compute() -> Response:
        df = kpi_table(store, start=start, end=end_v, level=level, as_of=as_of, lang=lang)
        totals = kpi_totals(store, start=start, end=end_v, level=level, as_of=as_of, lang=lang)
        return json_body({"level": level, "start": start, "end": end, "columns": list(df.columns),
                          "rows": frame_records(df), "totals": totals})

    # read at "now" (no as_of, a period not over): kept only until a deadline passes or a case changes by time
    return cached_response(request, store, compute,
                           holds_until=lambda: kpis_hold_until(store, start=start, end=end_v, as_of=as_of))


@router.get("/flags", summary="Red and white flags of sites", response_model=SiteFlags)
def flags(request: Request, store: Store = Depends(get_store),
          as_of: str | None = Query(None, description="day or moment of the assessment (default now)"),
          window_days: int = Query(FLAG_WINDOW_DAYS, ge=1, le=3650, description="look-back window in days"),
          flag: str | None = Query(None, description="only red, white or none"),
          area: str | None = Query(None, description="only sites in this district, street, community or grid "
                                                       "(code or name); counts follow it"),
          lang: str = Depends(lang_param)) -> Response:
    """The flag (红旗 good / 白旗 lagging) of every active site with its counts and reason; ``counts`` are the
    sites of ``area`` (default the city) per flag, before ``flag`` picks the listed ones."""
    if flag is not None and flag not in ("red", "white", "none"):
        msg = f"flag must be red, white or none, got {flag!r}"
        raise InvalidParameterError(msg)
    if area:
        area = area_code(store, area)  # a name is read as its code; an unknown one is a 404 naming the closest

    def compute() -> Response:
        df = site_flags(store, as_of=as_of, window_days=window_days, lang=lang)
        if area:
            df = df[(df[["grid_code", "community_code", "street_code", "district_code"]] == area).any(axis=1)]
        # the sites of the area per flag (every flag, zeros too), before the flag filter picks the listed ones
        counts = {f: int((df["flag"] == f).sum()) for f in ("red", "white", "none")}
        if flag:
            df = df[df["flag"] == flag]
        moment = None if as_of is None else df.attrs["as_of"].isoformat(timespec="seconds")
        return json_body({"as_of": moment, "window_days": window_days, "counts": counts,
                          "sites": frame_records(df)})

    # read at "now": the figures are kept until a deadline, a visit or the window's start changes them; the
    # moment they are read at is the request's own (they are the same at every moment until then)
    got = cached_response(request, store, compute,
                          holds_until=lambda: flags_hold_until(store, window_days=window_days, as_of=as_of))
    if as_of is None and got.status_code == 200:
        now = json.dumps(site_kpis.now_local(tz=store_timezone(store)).isoformat(timespec="seconds"))  # as site_flags
        got = Response(got.body.replace(b'{"as_of":null,', b'{"as_of":' + now.encode() + b",", 1),
                       media_type="application/json")
    return got
