"""The events table (complaints and inspection hits): queries with the service's filters, and the span of the
store's data in time.

Importing events from city files (with their cases) is :mod:`civicgrid.sites.events`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import geopandas as gpd
import pandas as pd
from civicgrid.geo.aggregate import EventFilter
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store, extent
from civicgrid.geo.texts import check_lang, text

#: Event sources.
SOURCES = ("complaint", "inspection")


#: Columns of :func:`query_events`, in order (``geometry`` is added last).
QUERY_COLUMNS = ("event_id", "source", "external_id", "time", "problem_type", "type_name", "major_code",
                 "major_name", "source_type", "source_status", "address", "status", "deadline", "rectified_at",
                 "closed_at", "reopened", "rebound_of", "site_id", "site_name", "category_code", "category_name",
                 "inspection_id", "text", "lng", "lat", "h3_hex", "grid_code", "community_code", "street_code",
                 "district_code")

_QUERY_SQL = """
SELECT e.event_id, e.source, e.external_id, e.time, e.problem_type, p.name_{lang} AS type_name, p.major_code,
       p.major_{lang} AS major_name, e.source_type, e.source_status, e.address, e.status, e.deadline,
       e.rectified_at, e.closed_at, e.reopened, e.rebound_of,
       e.site_id, s.name AS site_name, s.category_code, c.name_{lang} AS category_name, e.inspection_id, e.text,
       e.lng, e.lat, h3_hex(e.h3) AS h3_hex, e.grid_code, e.community_code, e.street_code, e.district_code
FROM events e
LEFT JOIN problem_types p ON p.code = e.problem_type
LEFT JOIN sites s ON s.site_id = e.site_id
LEFT JOIN site_categories c ON c.code = s.category_code
WHERE {where}
ORDER BY e.time {order}, e.event_id {order}
{limit}
"""

_COUNT_SQL = "SELECT count(*) AS n FROM events e WHERE {where}"


def query_events(store: Store, *, filters: EventFilter | None = None, columns: Sequence[str] | None = None,
                 newest_first: bool = False, limit: int | None = None, offset: int = 0,
                 lang: str = "zh") -> gpd.GeoDataFrame:
    """The events matching the service's filters, as points.

    The filter is the :class:`geo.aggregate.EventFilter` that every heatmap, hotspot, statistics
    and map endpoint reads from its query string (and ``GET /api/events`` returns these rows), so
    the rows returned here are exactly the events those views count: only located events
    (``h3`` set) are returned.

    Parameters
    ----------
    store
        The database (:class:`geo.store.Store`).
    filters
        Time window, source, problem types, site categories, area and status; ``None``: every event.
        Unknown codes raise :class:`geo.errors.NotFoundError` naming the closest known ones.
    columns
        Columns to keep, from :data:`QUERY_COLUMNS` (default: all); ``geometry`` is always added.
    newest_first
        Order by time descending instead of ascending (ties by ``event_id``).
    limit
        At most this many rows (``None``: all; a city-wide query over millions of events is
        better aggregated with :func:`geo.aggregate.heatmap` or :func:`geo.aggregate.area_stats`).
    offset
        Rows skipped before the first returned (for paging with ``limit``).
    lang
        ``zh`` (default) or ``en``: problem-type, 大类 and site-category names.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per event (EPSG:4326 points): :data:`QUERY_COLUMNS` (or ``columns``) and ``geometry``.
        ``attrs["total"]`` is the number of matching events before ``limit`` and ``offset``.

    Examples
    --------
    >>> from civicgrid.geo.aggregate import EventFilter
    >>> f = EventFilter(start="2025-06-01", end="2025-09-01", types="02", area="430102002")
    >>> ev = query_events(store, filters=f, limit=100, newest_first=True)  # doctest: +SKIP
    """
    check_lang(lang)
    keep = list(QUERY_COLUMNS) if columns is None else list(dict.fromkeys(columns))
    unknown = [c for c in keep if c not in QUERY_COLUMNS]
    if unknown:
        msg = f"unknown column(s) {', '.join(map(repr, unknown))}; columns: {', '.join(QUERY_COLUMNS)}"
        raise InvalidParameterError(msg)
    if limit is not None and (isinstance(limit, bool) or int(limit) < 0):
        msg = f"limit must be a non-negative integer or None, got {limit!r}"
        raise InvalidParameterError(msg)
    if isinstance(offset, bool) or int(offset) < 0:
        msg = f"offset must be a non-negative integer, got {offset!r}"
        raise InvalidParameterError(msg)
    f = (filters or EventFilter()).validate(store)
    where, params = f.where("e")
    page = "" if limit is None and not offset else \
        f"LIMIT {int(limit) if limit is not None else 'ALL'} OFFSET {int(offset)}"
    cur = store.cursor()  # one cursor: the count and the rows read the same database version
    try:
        df = cur.execute(_QUERY_SQL.format(lang=lang, where=where, order="DESC" if newest_first else "ASC",
                                           limit=page), params).df()
        total = len(df)
        if page:
            (count,) = cur.execute(_COUNT_SQL.format(where=where), params).fetchall()[0]  # count(*): one row
            total = int(count)
    finally:
        cur.close()
    df["reopened"] = df["reopened"].fillna(0).astype("int64")
    gdf = gpd.GeoDataFrame(df[keep], geometry=gpd.points_from_xy(df["lng"], df["lat"]), crs="EPSG:4326")
    gdf.attrs["total"] = total
    return gdf


#: How far past the latest record an ``as_of`` may lie before :func:`as_of_notes` warns (days).
STALE_AFTER_DAYS = 30


def data_span(store: Store) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Time of the first and of the latest event or inspection in the store (``NaT`` when there is none)."""
    with store.reading() as cur:
        spans = [extent(cur, table, "time") for table in ("events", "inspections")]
    firsts = [first for first, _ in spans if first is not None]
    lasts = [last for _, last in spans if last is not None]
    return (pd.Timestamp(min(firsts)) if firsts else pd.NaT), (pd.Timestamp(max(lasts)) if lasts else pd.NaT)


def as_of_notes(store: Store, as_of: datetime, *, lang: str = "zh") -> list[str]:
    """Warnings for a moment outside the store's data: before its first event or inspection (nothing is known
    yet, every site looks the same), or more than :data:`STALE_AFTER_DAYS` days after its last one (what is known
    is that old). Empty when ``as_of`` lies within the data."""
    check_lang(lang)
    first, last = data_span(store)
    if pd.isna(first):
        return [text("events.note.empty", lang)]
    t = pd.Timestamp(as_of)
    if t <= first:
        return [text("events.note.before_first", lang, as_of=t, first=first)]
    days = (t - last).days
    if days > STALE_AFTER_DAYS:
        return [text("events.note.stale", lang, as_of=t, last=last, days=days)]
    return []
