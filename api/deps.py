"""Request dependencies: the store, settings and the query parameters shared by several endpoints."""

from __future__ import annotations

from datetime import date, datetime

from fastapi import Depends, Query, Request

from geo.aggregate import MAX_RES, MIN_RES, EventFilter, end_of_day
from geo.errors import InvalidParameterError
from geo.store import Store


def get_store(request: Request) -> Store:
    """The service's store (read-only, follows published versions)."""
    return request.app.state.store


def get_settings(request: Request) -> dict:
    """The service's settings."""
    return request.app.state.settings


# --- query parameters shared by the heatmap, hotspot, stats and map endpoints --------------------------------


def _end_param(value: str | None) -> datetime | None:
    """A date-only ``end`` includes that whole day; a date-time is the exclusive upper bound."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if len(text) == 10:
        try:
            return end_of_day(date.fromisoformat(text))
        except ValueError:
            pass
    return text


def event_filters(
    store: Store = Depends(get_store),
    start: str | None = Query(None, description="first day or time, e.g. 2024-03-01 or 2024-03-01T08:00 "
                                                "(local time)", examples=["2024-01-01"]),
    end: str | None = Query(None, description="last day (inclusive) or exclusive end time", examples=["2024-12-31"]),
    source: str | None = Query(None, description="complaint or inspection (inspection hits)"),
    type: str | None = Query(None, description="problem types, comma-separated: 小类 codes (0201), 大类 codes "
                                              "(02) or names (占道经营)"),
    category: str | None = Query(None, description="site categories, comma-separated codes (03) or names: "
                                                  "events at sample-frame sites of these categories"),
    area: str | None = Query(None, description="a district, street, community or micro-grid code"),
    status: str | None = Query(None, description="open, closed or overdue (open past its deadline)"),
) -> EventFilter:
    """Parse and validate the event filters against the store (unknown codes: 404 with the closest names)."""
    return EventFilter(start=start, end=_end_param(end), source=source or None, types=type, categories=category,
                       area=area or None, status=status or None).validate(store)


def res_param(res: int = Query(9, description=f"H3 resolution {MIN_RES}..{MAX_RES} (9: cells of about 0.1 km²)")
              ) -> int:
    """The H3 resolution of a cell view."""
    if not MIN_RES <= res <= MAX_RES:
        msg = f"res must be {MIN_RES}..{MAX_RES} (9: cells of about 0.1 km²), got {res}"
        raise InvalidParameterError(msg)
    return res


def lang_param(lang: str = Query("zh", description="label language: zh (default) or en")) -> str:
    """The label language."""
    key = lang.strip().lower()
    if key.startswith("zh") or key in ("cn", "chinese"):
        return "zh"
    if key.startswith("en"):
        return "en"
    msg = f"lang must be zh or en, got {lang!r}"
    raise InvalidParameterError(msg)


def crs_param(crs: str = Query("wgs84", description="output coordinates: wgs84 (default) or gcj02 (for AMap "
                                                   "tiles)")) -> str:
    """The output coordinate system of GeoJSON responses."""
    key = crs.strip().lower().replace("-", "").replace("_", "")
    if key in ("wgs84", "epsg:4326", "4326"):
        return "wgs84"
    if key in ("gcj02", "amap", "gaode"):
        return "gcj02"
    msg = f"crs must be wgs84 or gcj02, got {crs!r}"
    raise InvalidParameterError(msg)


def max_cells(settings: dict = Depends(get_settings)) -> int:
    """The service's cap on cells per response (setting ``max_cells``)."""
    return int(settings.get("max_cells", 50_000))
