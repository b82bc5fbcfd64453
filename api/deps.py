"""Request dependencies: the store, settings and the query parameters shared by several endpoints.

The dependencies that only read the request or the app's state (no store query, nothing that blocks) are
``async``: FastAPI calls them in the event loop instead of handing each to a worker thread, which costs a thread
switch per dependency and request (eight on a heatmap) and, on a busy machine, a wait for that thread's turn.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any

from civicgrid.geo.aggregate import MAX_RES, MIN_RES, EventFilter
from civicgrid.geo.errors import InvalidParameterError, OutOfRangeError
from civicgrid.geo.store import Store
from civicgrid.geo.texts import parse_lang
from civicgrid.geo.times import as_datetime, is_date_only, parse_end, store_timezone
from fastapi import Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict

#: The largest id, offset or count a request may give: ids are 64-bit integers in the store.
MAX_INT64 = 2**63 - 1
#: Longest free text of a request (a case's text, a note), characters.
MAX_TEXT = 5_000
#: Longest short text of a request (a name, a code, a unit, a photo reference), characters.
MAX_NAME = 200


def id_path(description: str) -> Any:
    """A path parameter holding a store id: a 64-bit integer from 1 (an id beyond 64 bits is a 422 naming the
    range, not an error of the store)."""
    return Path(..., ge=1, le=MAX_INT64, description=f"{description} (1..{MAX_INT64})")


async def get_store(request: Request) -> Store:
    """The service's store (read-only, follows published versions)."""
    return request.app.state.store


async def get_settings(request: Request) -> dict[str, Any]:
    """The service's settings (``max_cells``, ``tianditu_key``, ``patrol_network``): the ``CIVICGRID_*``
    settings of :mod:`civicgrid.geo.settings` with the overrides given to ``create_app``."""
    return request.app.state.settings


class RequestBody(BaseModel):
    """Base of every JSON request body: a field the endpoint does not take (a typo, ``type`` for
    ``problem_type``) is a 422 naming it, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


# --- unknown query parameters --------------------------------------------------------------------------------

_QUERY_NAMES: dict[int, frozenset[str]] = {}


def _route_query_names(route) -> frozenset[str]:
    key = id(route)
    if key not in _QUERY_NAMES:
        names, todo = set(), [route.dependant]
        while todo:   # the endpoint's own query parameters and those of every dependency, recursively
            d = todo.pop()
            names.update(p.alias for p in d.query_params)
            todo.extend(d.dependencies)
        _QUERY_NAMES[key] = frozenset(names)
    return _QUERY_NAMES[key]


async def reject_unknown_query(request: Request) -> None:
    """Refuse query parameters the endpoint does not take (422 naming them and the ones it takes).

    Without this a typo (``rez=9``) or a parameter of another endpoint (``area`` on ``/api/risk``, which takes
    ``grid``) is silently ignored and the answer covers more than the user asked for. Used as a router
    dependency of every router (``api.app.create_app``).
    """
    route = request.scope.get("route")
    if route is None or getattr(route, "dependant", None) is None:
        return
    known = _route_query_names(route)
    unknown = [k for k in dict.fromkeys(request.query_params.keys()) if k not in known]
    if not unknown:
        return
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, sorted(known), n=1, cutoff=0.6)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    takes = ", ".join(sorted(known)) or "no query parameters"
    msg = f"unknown query parameter {', '.join(hints)} for {route.path}; it takes: {takes}"
    raise InvalidParameterError(msg)


# --- integers within 64 bits ----------------------------------------------------------------------------------

_INT_NAMES: dict[int, tuple[frozenset[str], frozenset[str]]] = {}


def _is_int(annotation: Any) -> bool:
    return annotation is int or (int in typing.get_args(annotation) and bool not in typing.get_args(annotation))


def _route_int_names(route) -> tuple[frozenset[str], frozenset[str]]:
    key = id(route)
    if key not in _INT_NAMES:
        path, query, todo = set(), set(), [route.dependant]
        while todo:  # the endpoint's own parameters and those of every dependency, recursively
            d = todo.pop()
            path.update(p.alias for p in d.path_params if _is_int(p.field_info.annotation))
            query.update(p.alias for p in d.query_params if _is_int(p.field_info.annotation))
            todo.extend(d.dependencies)
        _INT_NAMES[key] = (frozenset(path), frozenset(query))
    return _INT_NAMES[key]


async def check_int64(request: Request) -> None:
    """Refuse an integer path or query parameter beyond 64 bits (422 naming it and the range), on every endpoint
    (a router dependency, ``api.app.create_app``): the store's ids and counts are 64-bit, and a larger Python
    integer would fail inside the query instead of being named here. Endpoints bound their own parameters more
    tightly where they can (:func:`id_path`, ``Query(le=...)``)."""
    route = request.scope.get("route")
    if route is None or getattr(route, "dependant", None) is None:
        return
    path, query = _route_int_names(route)
    values = [(k, request.path_params.get(k)) for k in path]
    values += [(k, v) for k in query for v in request.query_params.getlist(k)]
    for name, value in values:
        try:
            number = int(str(value).strip())
        except ValueError:
            continue  # not a number: FastAPI's validation names it
        if not -MAX_INT64 - 1 <= number <= MAX_INT64:
            msg = f"{name}={value!r} is beyond a 64-bit integer ({-MAX_INT64 - 1}..{MAX_INT64})"
            raise OutOfRangeError(msg)


# --- query parameters shared by the heatmap, hotspot, stats and map endpoints --------------------------------


def event_filters(
    store: Store = Depends(get_store),
    start: str | None = Query(None, description="first day or time, e.g. 2024-03-01 or 2024-03-01T08:00 "
                                                "(local time)", examples=["2024-01-01"]),
    end: str | None = Query(None, description="last day (inclusive) or exclusive end time", examples=["2024-12-31"]),
    source: str | None = Query(None, description="complaint or inspection (inspection hits)"),
    type: str | None = Query(None, description="problem types, comma-separated: 小类 codes (0201), 大类 codes "
                                              "(02), names (占道经营) or the city's own labels of imported "
                                              "events (噪音扰民, Graffiti), with a type or not"),
    category: str | None = Query(None, description="site categories, comma-separated codes (03) or names: "
                                                  "events at sample-frame sites of these categories"),
    area: str | None = Query(None, description="a district, street, community or micro-grid: its code or its "
                                               "name (芙蓉区)"),
    status: str | None = Query(None, description="open, closed or overdue (open past its deadline)"),
) -> EventFilter:
    """Parse and validate the event filters against the store (unknown codes: 404 with the closest names)."""
    tz = store_timezone(store)  # a time with an offset (…Z) is read as the store's wall-clock time
    first, last = as_datetime(start, name="start", tz=tz), parse_end(end, name="end", tz=tz)  # date-only end: whole day
    if first is not None and last is not None and first >= last:
        # name the values as typed: a date-only end is stored as the next midnight, which would confuse
        inclusive = " (a date-only end includes that whole day)" if is_date_only(end) else ""
        msg = (f"start={start.strip()} is not before end={end.strip()}{inclusive}; "
               "are start and end the wrong way round?")
        raise InvalidParameterError(msg)
    return EventFilter(start=first, end=last, source=source or None, types=type, categories=category,
                       area=area or None, status=status or None).validate(store)


async def res_param(res: int = Query(9, description=f"H3 resolution {MIN_RES}..{MAX_RES} (9: cells of about 0.1 km²)")
              ) -> int:
    """The H3 resolution of a cell view."""
    return check_res_param(res)


def check_res_param(res: int) -> int:
    """``res`` checked to be an H3 resolution of a cell view (422 naming the range)."""
    if not MIN_RES <= res <= MAX_RES:
        msg = f"res must be {MIN_RES}..{MAX_RES} (9: cells of about 0.1 km²), got {res}"
        raise InvalidParameterError(msg)
    return res


async def lang_param(lang: str = Query("zh", description="label language: zh (default) or en")) -> str:
    """The label language (:func:`civicgrid.geo.texts.parse_lang`: ``zh-CN``, ``EN`` … are read too)."""
    return parse_lang(lang)


async def crs_param(crs: str = Query("wgs84", description="output coordinates: wgs84 (default) or gcj02 (for AMap "
                                                   "tiles)")) -> str:
    """The output coordinate system of GeoJSON responses."""
    key = crs.strip().lower().replace("-", "").replace("_", "")
    if key in ("wgs84", "epsg:4326", "4326"):
        return "wgs84"
    if key in ("gcj02", "amap", "gaode"):
        return "gcj02"
    msg = f"crs must be wgs84 or gcj02, got {crs!r}"
    raise InvalidParameterError(msg)


async def max_cells(settings: dict = Depends(get_settings)) -> int:
    """The service's cap on cells per response (setting ``max_cells``)."""
    return int(settings["max_cells"])
