"""Events per H3 cell and per area, with time, source, problem-type, category, area and status filters.

Every event is stored with its resolution-12 cell (``events.h3``); a coarser
cell is ``h3_parent(h3, res)``, bit arithmetic inside DuckDB, so an aggregation
is one ``GROUP BY`` over the filtered events and never a Python loop.

Results are cached per database version: the key holds the file's identity
(inode, mtime, size), so a writer publishing a new version invalidates every
cached result at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import geopandas as gpd
import h3ronpy
import h3ronpy.vector
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from civicgrid.geo.caches import VersionCache
from civicgrid.geo.errors import InvalidParameterError, NotFoundError, TooManyCellsError
from civicgrid.geo.h3cells import MEAN_AREA_KM2, to_hex
from civicgrid.geo.levels import LEVEL_COLUMNS, check_level
from civicgrid.geo.schema import H3_RES
from civicgrid.geo.store import Store
from civicgrid.geo.times import as_datetime, as_instant, has_offset, now_local, store_timezone, stored_moment

#: Resolutions a heatmap may be asked for (resolution 12 is the stored one).
MIN_RES, MAX_RES = 5, H3_RES
#: Event sources (``events.source``).
SOURCES = ("complaint", "inspection")
#: Case statuses a filter may ask for; ``overdue`` is an open event past its deadline at ``as_of``.
STATUSES = ("open", "closed", "overdue")
#: Heatmap metrics: events per cell, events per km² of the cell, distinct sample-frame sites with events.
METRICS = ("count", "density", "sites")
#: Default cap on the cells one request may return (the service's ``max_cells`` setting overrides it).
DEFAULT_MAX_CELLS = 50_000


def _codes(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    return tuple(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))


def _closest(word: str, choices: dict[str, str], n: int = 3) -> str:
    """Describe the known values closest to ``word``; ``choices`` maps each code or name to a label."""
    # A city's own types may lack a 大类 (or an English name): those keys are missing values, not words.
    choices = {k: v for k, v in choices.items() if isinstance(k, str) and k}
    hits = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.3)
    if not hits:
        hits = [c for c in choices if word and (word in c or c.startswith(word[:2]))][:n]
    if not hits:
        hits = list(choices)[:n]
    labels = list(dict.fromkeys(choices[h] for h in hits))
    return ", ".join(labels)


@dataclass(frozen=True)
class EventFilter:
    """Which events an aggregation counts. Every field is optional; an empty filter counts every event.

    Parameters
    ----------
    start, end
        Time window ``start <= time < end``: the store's wall-clock time (as stored), or a moment with an offset
        (``2025-06-01T00:00-07:00``, an aware datetime), read in the store's zone by :meth:`validate`.
    source
        ``complaint`` or ``inspection`` (inspection hits).
    types
        Problem types: 小类 codes (``0201``), 大类 codes (``02``, all its 小类) or their Chinese/English names; or
        a city's own labels (the ``source_type`` of imported events, e.g. ``Graffiti``, ``噪音扰民``), mapped to a
        type or not.
    categories
        Site categories (``03`` or 银行网点): events linked to a sample-frame site of these categories.
    area
        Any district, street, community or micro-grid, by code or name (:func:`area_code`): events located in
        it. :meth:`validate` replaces a name by its code.
    status
        ``open``, ``closed`` or ``overdue`` (open and past its deadline at ``as_of``).
    as_of
        Reference time for ``overdue`` (default: now, the store's wall-clock time).
    """

    start: datetime | None = None
    end: datetime | None = None
    source: str | None = None
    types: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    area: str | None = None
    status: str | None = None
    as_of: datetime | None = None
    #: Set by :meth:`validate`: the 小类 codes ``types`` expand to, the source labels among them (events whose
    #: ``source_type`` is one of them count, with or without a type), and the area's level.
    type_codes: tuple[str, ...] = field(default=(), repr=False)
    type_labels: tuple[str, ...] = field(default=(), repr=False)
    area_level: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("start", "end", "as_of"):  # a moment with an offset waits for the store's zone (validate)
            value = getattr(self, name)
            set_(self, name, as_instant(value, name=name) if has_offset(value) else as_datetime(value, name=name))
        set_(self, "types", _codes(self.types))
        set_(self, "categories", _codes(self.categories))
        set_(self, "type_codes", _codes(self.type_codes))
        set_(self, "type_labels", _codes(self.type_labels))
        if self.start and self.end and _aware(self.start) == _aware(self.end) and self.start >= self.end:
            msg = f"start ({self.start:%Y-%m-%d %H:%M}) must be before end ({self.end:%Y-%m-%d %H:%M})"
            raise InvalidParameterError(msg)
        if self.source is not None:
            src = str(self.source).strip().lower()
            if src not in SOURCES:
                msg = f"unknown source {self.source!r}; use one of {', '.join(SOURCES)}"
                raise InvalidParameterError(msg)
            set_(self, "source", src)
        if self.status is not None:
            st = str(self.status).strip().lower()
            if st not in STATUSES:
                msg = f"unknown status {self.status!r}; use one of {', '.join(STATUSES)}"
                raise InvalidParameterError(msg)
            set_(self, "status", st)
        if self.area is not None:
            set_(self, "area", str(self.area).strip() or None)

    @property
    def area_column(self) -> str:
        """The events' column holding codes of the area's level (``street_code``...), known once
        :meth:`validate` has found the level."""
        if self.area_level is None:
            msg = f"the level of area {self.area!r} is not known yet: validate(store) the filter first"
            raise RuntimeError(msg)
        return LEVEL_COLUMNS[self.area_level]

    @property
    def validated(self) -> bool:
        """Whether codes were checked against a store (:meth:`validate`)."""
        return ((not self.types or bool(self.type_codes or self.type_labels))
                and (self.area is None or self.area_level is not None)
                and not any(_aware(t) for t in (self.start, self.end, self.as_of))
                and (self.status != "overdue" or self.as_of is not None))

    def validate(self, store: Store) -> EventFilter:
        """Check every code against ``store`` and return the filter with types expanded to 小类 codes.

        Raises
        ------
        NotFoundError
            An unknown problem type, category or area; the message names the closest known ones.
        """
        if self.validated and not self.categories:
            return self
        type_codes, type_labels = _type_codes(store, self.types) if self.types else ([], [])
        cats = list(self.categories)
        if cats:
            sc = cached(store, ("site_categories",), lambda: store.sql(
                "SELECT code, name_zh, name_en FROM site_categories"))
            out = []
            for c in cats:
                hit = sc[(sc.code == c) | (sc.name_zh == c) | (sc.name_en.str.lower() == c.lower())]
                if not len(hit):
                    choices = {**{r.code: f"{r.code} {r.name_zh}" for r in sc.itertuples()},
                               **{r.name_zh: f"{r.code} {r.name_zh}" for r in sc.itertuples()}}
                    msg = f"unknown site category {c!r}; closest known: {_closest(c, choices)}"
                    raise NotFoundError(msg)
                out.append(hit.code.iloc[0])
            cats = out
        level, area = None, self.area
        if area is not None:
            area = area_code(store, area)
            level = area_level(store, area)
        tz = store_timezone(store)
        start, end, as_of = (stored_moment(t, tz=tz) if t is not None and _aware(t) else t
                             for t in (self.start, self.end, self.as_of))
        if self.status == "overdue" and as_of is None:
            # pin "now" (to the minute) so the cache key changes as deadlines pass
            as_of = now_local(tz=tz, precision="minute")
        return EventFilter(start=start, end=end, source=self.source, types=self.types,
                           categories=tuple(cats), area=area, status=self.status, as_of=as_of,
                           type_codes=tuple(dict.fromkeys(type_codes)), type_labels=tuple(type_labels),
                           area_level=level)

    def where(self, alias: str = "e", *, located_only: bool = True) -> tuple[str, list]:
        """SQL condition on ``events`` (as ``alias``) and its parameters. Call :meth:`validate` first.

        ``located_only``: only events with an H3 cell (maps); False also counts the events without coordinates
        placed by their area (area statistics, at the level they are located at)."""
        if not self.validated:
            msg = "EventFilter.where() needs a validated filter; call .validate(store) first"
            raise InvalidParameterError(msg)
        a = f"{alias}." if alias else ""
        parts: list[str] = [f"{a}h3 IS NOT NULL" if located_only else "TRUE"]
        params: list[object] = []
        if self.start is not None:
            parts.append(f"{a}time >= ?")
            params.append(self.start)
        if self.end is not None:
            parts.append(f"{a}time < ?")
            params.append(self.end)
        # Codes are inlined as SQL string literals (quotes doubled): DuckDB pushes constant filters into the
        # scan, several times faster than bound parameters on 10M rows. Times stay parameters.
        if self.source is not None:
            parts.append(f"{a}source = {_lit(self.source)}")
        types = []
        if self.type_codes:
            types.append(f"list_contains([{', '.join(map(_lit, self.type_codes))}], {a}problem_type)")
        if self.type_labels:
            types.append(f"list_contains([{', '.join(map(_lit, self.type_labels))}], {a}source_type)")
        if types:
            parts.append(types[0] if len(types) == 1 else f"({' OR '.join(types)})")
        if self.categories:
            parts.append(f"{a}site_id IN (SELECT site_id FROM sites WHERE category_code IN "
                         f"({', '.join(map(_lit, self.categories))}))")
        if self.area is not None:
            parts.append(f"{a}{self.area_column} = {_lit(self.area)}")
        if self.status in ("open", "closed"):
            parts.append(f"{a}status = {_lit(self.status)}")
        elif self.status == "overdue":
            parts.append(f"{a}status = 'open' AND {a}deadline < ?")
            params.append(self.as_of)  # set by validate (validated)
        return " AND ".join(parts), params


def _aware(moment: datetime | None) -> bool:
    return moment is not None and moment.tzinfo is not None


def _type_codes(store: Store, types: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The 小类 codes and the source labels ``types`` name: a problem type's code or name (小类 first, then 大类),
    else a label of imported events (``source_type``, exact first, then ignoring case).

    Raises
    ------
    NotFoundError
        Neither a type nor a label; the message names the closest types and labels.
    """
    pt = cached(store, ("problem_types",), lambda: store.sql(
        "SELECT code, major_code, name_zh, name_en, major_zh, major_en FROM problem_types"))
    codes: list[str] = []
    found: list[str] = []
    for t in types:
        key = t.lower()
        minor = pt[(pt.code == t) | (pt.name_zh == t) | (pt.name_en.str.lower() == key)]
        major = pt[(pt.major_code == t) | (pt.major_zh == t) | (pt.major_en.str.lower() == key)]
        hit = minor if len(minor) else major
        if len(hit):
            codes.extend(hit.code)
            continue
        # Only a word that is no type is looked up among the labels: listing them reads a column of every
        # event (a third of a second at 10M), once per store version, i.e. after every write.
        labels = _source_labels(store)
        same = labels[labels == t]
        same = same if len(same) else labels[labels.str.lower() == key]
        if len(same):
            found.extend(same)
            continue
        choices = {**{r.code: f"{r.code} {r.name_zh}" for r in pt.itertuples()},
                   **{r.name_zh: f"{r.code} {r.name_zh}" for r in pt.itertuples()},
                   **{r.major_code: f"{r.major_code} {r.major_zh}" for r in pt.itertuples()},
                   **{r.major_zh: f"{r.major_code} {r.major_zh}" for r in pt.itertuples()},
                   **{v: f"{v} (label)" for v in labels}}
        msg = f"unknown problem type or label {t!r}; closest known: {_closest(t, choices)}"
        raise NotFoundError(msg)
    return codes, list(dict.fromkeys(found))


def _source_labels(store: Store) -> pd.Series:
    """The distinct labels of imported events (``source_type``), cached per store version."""
    return cached(store, ("source_types",), lambda: store.sql(
        "SELECT DISTINCT source_type FROM events WHERE source_type IS NOT NULL")["source_type"].astype(str))


def _lit(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def area_level(store: Store, code: str) -> str:
    """Return ``district``, ``street``, ``community`` or ``grid`` for an area or micro-grid code.

    Raises
    ------
    NotFoundError
        The code is neither an area nor a grid; the message names the closest codes and names.
    """
    known = _area_index(store)
    if code in known.index:
        return known.loc[code, "level"]
    by_name = known[known.name == code]
    if len(by_name):
        msg = f"area {code!r} is a name; use its code {by_name.index[0]} ({by_name.iloc[0]['level']})"
        raise NotFoundError(msg)
    choices = {**{c: f"{c} {r['name']}" for c, r in known.iterrows()},
               **{r["name"]: f"{c} {r['name']}" for c, r in known.iterrows()}}
    msg = f"unknown area or grid code {code!r}; closest known: {_closest(code, choices)}"
    raise NotFoundError(msg)


def area_code(store: Store, value: str) -> str:
    """The code of an area or micro-grid given by its code or its name (Chinese, or English in any case).

    Raises
    ------
    NotFoundError
        Neither a code nor a name; the message names the closest codes and names.
    InvalidParameterError
        A name that several areas bear (e.g. a community and its street): the message lists their codes.
    """
    value = str(value).strip()
    known = _area_index(store)
    if value in known.index:
        return value
    hit = known[(known.name == value) | (known.name_en.str.lower() == value.lower())]
    if len(hit) == 1:
        return str(hit.index[0])
    if len(hit) > 1:
        codes = ", ".join(f"{c} ({lv})" for c, lv in zip(hit.index, hit.level, strict=True))
        msg = f"area name {value!r} is borne by several areas: {codes}; give the code"
        raise InvalidParameterError(msg)
    area_level(store, value)  # raises NotFoundError naming the closest known codes and names
    return value


def _area_index(store: Store) -> pd.DataFrame:
    return cached(store, ("area_index",), lambda: store.sql(
        "SELECT code, name, name_en, level FROM areas "
        "UNION ALL SELECT code, name, NULL AS name_en, 'grid' FROM grids").set_index("code"))


# ---------------------------------------------------------------------------------------------------------
# Per-version cache
# ---------------------------------------------------------------------------------------------------------

T = TypeVar("T")

#: Results kept in the per-version cache of aggregations (least recently used dropped first).
CACHE_SIZE = 256
_CACHE = VersionCache(CACHE_SIZE)



def cached(store: Store, key: tuple, compute: Callable[[], T]) -> T:
    """Return ``compute()`` cached under ``key`` for the store's current version (at most :data:`CACHE_SIZE`
    results are kept; a committed write makes a new version)."""
    return _CACHE.get(store, key, compute)


#: Results kept across store versions (:func:`cached_lasting`): few, each costly (a fitted risk model).
LASTING_SIZE = 8
_LASTING = VersionCache(LASTING_SIZE)


def cached_lasting(store: Store, key: tuple, compute: Callable[[], T]) -> T:
    """Return ``compute()`` cached under ``key`` for the store across its versions (at most :data:`LASTING_SIZE`
    results are kept): ``key`` must identify every datum ``compute`` reads (a fingerprint of the rows it reads),
    as a write does not make the result unreachable."""
    return _LASTING.get_lasting(store, key, compute)


def clear_cache() -> None:
    """Drop every cached aggregation (they are also dropped when a new database version is published) and every
    result kept across versions (:func:`cached_lasting`)."""
    _CACHE.clear()
    _LASTING.clear()


def check_res(res: int) -> int:
    """Return ``res`` as an int, checked to be an H3 resolution civicgrid aggregates at."""
    try:
        r = int(res)
    except (TypeError, ValueError) as exc:
        msg = f"res must be an integer {MIN_RES}..{MAX_RES}, got {res!r}"
        raise InvalidParameterError(msg) from exc
    if not MIN_RES <= r <= MAX_RES:
        msg = f"res must be {MIN_RES}..{MAX_RES} (H3 resolution; 9 ≈ 0.1 km² cells), got {res}"
        raise InvalidParameterError(msg)
    return r


def validated_filter(store: Store, filters: EventFilter | None) -> EventFilter:
    """Return ``filters`` (an empty filter when None) validated against ``store``."""
    f = filters or EventFilter()
    return f.validate(store)


# ---------------------------------------------------------------------------------------------------------
# Heatmap
# ---------------------------------------------------------------------------------------------------------

def parent_sql(col: str, res: int) -> str:
    """SQL for the resolution-``res`` parent of a stored cell column, as UBIGINT.

    Same bit arithmetic as the ``h3_parent`` macro, with the masks folded into UBIGINT literals:
    the macro's result is HUGEINT (exact, but slower to group by and read back as float64 by pandas).
    """
    res = int(res)
    keep = ((1 << 64) - 1) & ~(15 << 52)
    setbits = (res << 52) | ((1 << (3 * (15 - res))) - 1)
    return f"(({col} & {keep}::UBIGINT) | {setbits}::UBIGINT)"


# Two-level grouping: (cell, site) first, then cell; counting the non-null sites of the first level gives
# the distinct sites, faster than count(DISTINCT site_id).
_HEATMAP_SQL = """
SELECT h3, sum(n)::BIGINT AS count, count(site_id) AS sites
FROM (
    SELECT {parent} AS h3, e.site_id, count(*) AS n
    FROM events e
    WHERE {where}
    GROUP BY 1, 2
)
GROUP BY 1
ORDER BY 1
"""

_CELL_COUNTS_SQL = """
SELECT {counts}
FROM events e
WHERE {where}
"""


def cell_counts_by_res(store: Store, *, filters: EventFilter | None = None) -> dict[int, int]:
    """Number of non-empty cells the filtered events fall in, for every resolution 5..12."""
    f = validated_filter(store, filters)

    def compute():
        where, params = f.where("e")
        counts = ", ".join(f"count(DISTINCT {parent_sql('e.h3', r)}) AS r{r}" for r in range(MIN_RES, MAX_RES + 1))
        row = store.sql(_CELL_COUNTS_SQL.format(counts=counts, where=where), params).iloc[0]
        return {r: int(row[f"r{r}"]) for r in range(MIN_RES, MAX_RES + 1)}

    return cached(store, ("cell_counts", f), compute)


def check_cell_budget(store: Store, *, res: int, filters: EventFilter | None = None,
                      max_cells: int = DEFAULT_MAX_CELLS, n_cells: int | None = None) -> None:
    """Raise :class:`TooManyCellsError` when a view at ``res`` would hold more than ``max_cells`` cells.

    Parameters
    ----------
    store
        The database.
    res
        Requested resolution.
    filters
        The view's filters.
    max_cells
        The cap (the service's ``max_cells`` setting).
    n_cells
        The number of cells of the view when already known (skips the count at ``res``).
    """
    res = check_res(res)
    if n_cells is not None and n_cells <= max_cells:
        return
    counts = cell_counts_by_res(store, filters=filters)
    if n_cells is None:
        n_cells = counts[res]
    if n_cells <= max_cells:
        return
    fits = [r for r in range(MIN_RES, MAX_RES + 1) if counts[r] <= max_cells]
    finest = max(fits) if fits else None
    advice = (f"res={finest} or coarser fits ({counts[finest]:,} cells)" if finest is not None
              else "narrow the filters (time window, area or problem type)")
    msg = (f"res={res} would return {n_cells:,} cells, more than the limit of {max_cells:,}; {advice}, "
           f"or narrow the view with area/time/type filters")
    raise TooManyCellsError(msg, fits_res=finest)


def heatmap(store: Store, *, res: int = 9, filters: EventFilter | None = None, metric: str = "count",
            max_cells: int | None = None) -> pd.DataFrame:
    """Events per H3 cell.

    Parameters
    ----------
    store
        The database.
    res
        H3 resolution 5..12 (9: cells of about 0.1 km², 174 m edge).
    filters
        Which events to count (:class:`EventFilter`).
    metric
        ``count`` (events), ``density`` (events per km² of the cell) or ``sites`` (distinct
        sample-frame sites with events in the cell).
    max_cells
        Raise :class:`TooManyCellsError` when the result has more cells (``None``: no cap).

    Returns
    -------
    pandas.DataFrame
        One row per non-empty cell, ordered by cell id: ``h3`` (uint64), ``value`` (the metric),
        ``count``, ``sites``, ``area_km2``.
    """
    res = check_res(res)
    if metric not in METRICS:
        msg = f"unknown metric {metric!r}; use one of {', '.join(METRICS)}"
        raise InvalidParameterError(msg)
    f = validated_filter(store, filters)

    def compute() -> pd.DataFrame:
        where, params = f.where("e")
        df = store.sql(_HEATMAP_SQL.format(parent=parent_sql("e.h3", res), where=where), params)
        out = pd.DataFrame({"h3": df["h3"].to_numpy(dtype="uint64"),
                            "count": df["count"].to_numpy(dtype="int64"),
                            "sites": df["sites"].to_numpy(dtype="int64")})
        out["area_km2"] = cell_areas_km2(out["h3"].to_numpy())
        return out

    base = cached(store, ("heatmap", res, f), compute)
    if max_cells is not None:
        check_cell_budget(store, res=res, filters=f, max_cells=max_cells, n_cells=len(base))
    out = base.copy()
    if metric == "count":
        out.insert(1, "value", out["count"].astype("float64"))
    elif metric == "sites":
        out.insert(1, "value", out["sites"].astype("float64"))
    else:
        out.insert(1, "value", out["count"] / out["area_km2"])
    return out


def cell_areas_km2(cells: np.ndarray) -> np.ndarray:
    """Exact area in km² of each H3 cell."""
    cells = np.asarray(cells, dtype="uint64")
    if not len(cells):
        return np.zeros(0)
    return np.asarray(pa.array(h3ronpy.cells_area_km2(cells)).to_numpy(zero_copy_only=False), dtype="float64")


def cell_polygons(cells: np.ndarray) -> np.ndarray:
    """Shapely hexagons (WGS84 lon/lat) of H3 cells, vectorized."""
    cells = np.asarray(cells, dtype="uint64")
    if not len(cells):
        return np.array([], dtype=object)
    wkb = pa.array(h3ronpy.vector.cells_to_wkb_polygons(cells)).to_numpy(zero_copy_only=False)
    return shapely.from_wkb(np.asarray(wkb, dtype=object))


def cells_frame(df: pd.DataFrame) -> gpd.GeoDataFrame:
    """Turn a frame with an ``h3`` column into a GeoDataFrame of hexagons with ``h3_hex`` (EPSG:4326).

    Parameters
    ----------
    df
        Any per-cell result, e.g. of :func:`heatmap`, :func:`geo.hotspots.hotspots` or
        :func:`geo.hotspots.emerging_hotspots`.

    Returns
    -------
    geopandas.GeoDataFrame
        ``df``'s rows and columns (``h3_hex`` inserted after ``h3`` when missing) with hexagon geometry.
    """
    cells = df["h3"].to_numpy(dtype="uint64")
    out = df.copy()
    if "h3_hex" not in out.columns:
        out.insert(out.columns.get_loc("h3") + 1, "h3_hex", to_hex(cells))
    return gpd.GeoDataFrame(out, geometry=cell_polygons(cells), crs="EPSG:4326")


def heatmap_frame(store: Store, *, res: int = 9, filters: EventFilter | None = None, metric: str = "count",
                  max_cells: int | None = None) -> gpd.GeoDataFrame:
    """Events per H3 cell as hexagon polygons: :func:`heatmap` with geometry.

    Parameters
    ----------
    store
        The database.
    res, filters, metric, max_cells
        As for :func:`heatmap`.

    Returns
    -------
    geopandas.GeoDataFrame
        One hexagon per non-empty cell (EPSG:4326): ``h3`` (uint64), ``h3_hex``, ``value`` (the metric),
        ``count``, ``sites``, ``area_km2``.

    Examples
    --------
    >>> hm = heatmap_frame(store, res=9, filters=EventFilter(start="2025-01-01", types="02"))  # doctest: +SKIP
    >>> hm.plot(column="count")  # doctest: +SKIP
    """
    return cells_frame(heatmap(store, res=res, filters=filters, metric=metric, max_cells=max_cells))


# ---------------------------------------------------------------------------------------------------------
# Per-area statistics
# ---------------------------------------------------------------------------------------------------------

_AREA_COUNTS_SQL = """
SELECT e.{col} AS code, count(*) AS count, count(DISTINCT e.site_id) AS sites,
       count(*) FILTER (WHERE e.source = 'complaint') AS complaints,
       count(*) FILTER (WHERE e.source = 'inspection') AS hits,
       count(*) FILTER (WHERE e.status = 'open') AS open
FROM events e
WHERE {where} AND e.{col} IS NOT NULL
GROUP BY 1
"""


def hierarchy(store: Store) -> pd.DataFrame:
    """Every district, street, community and micro-grid with its ancestors' codes, indexed by code.

    Columns: ``name``, ``name_en``, ``level``, ``parent_code``, ``area_km2``, ``district_code``,
    ``street_code``, ``community_code``, ``grid_code`` (a unit's own code in its own level's column).
    """

    def compute() -> pd.DataFrame:
        areas = store.sql("SELECT code, name, name_en, level, parent_code, area_km2 FROM areas")
        grids = store.sql("SELECT code, name, NULL::VARCHAR AS name_en, 'grid' AS level, "
                          "community_code AS parent_code, area_km2, community_code, street_code, district_code "
                          "FROM grids")
        parent = dict(zip(areas.code, areas.parent_code, strict=True))
        up1 = areas.parent_code
        up2 = up1.map(parent)
        lv = areas.level
        areas["community_code"] = np.where(lv == "community", areas.code, None)
        areas["street_code"] = np.where(lv == "street", areas.code, np.where(lv == "community", up1, None))
        areas["district_code"] = np.where(lv == "district", areas.code,
                                          np.where(lv == "street", up1, np.where(lv == "community", up2, None)))
        areas["grid_code"] = None
        grids["grid_code"] = grids.code
        out = pd.concat([areas, grids[areas.columns]], ignore_index=True)
        return out.drop_duplicates("code").set_index("code")

    return cached(store, ("hierarchy",), compute)


def area_stats(store: Store, *, level: str = "district", filters: EventFilter | None = None) -> pd.DataFrame:
    """Event counts per district, street, community or micro-grid for the same filters as a heatmap.

    Parameters
    ----------
    store
        The database.
    level
        ``district``, ``street``, ``community`` or ``grid``.
    filters
        Which events to count. With an ``area`` filter only the units inside that area (or the one
        containing it, when the area is finer than ``level``) are listed.

    Returns
    -------
    pandas.DataFrame
        Every unit of the level (zero counts included), by count descending: ``code``, ``name``,
        ``name_en``, ``level``, ``parent_code``, ``area_km2``, ``count``, ``complaints``, ``hits``,
        ``open``, ``sites``, ``density`` (events per km²), ``share`` (of the listed total).
        Events outside every unit of the level are not listed.
    """
    check_level(level)
    f = validated_filter(store, filters)

    def compute() -> pd.DataFrame:
        h = hierarchy(store)
        units = h[h.level == level]
        if f.area is not None:
            fcol, lcol = f.area_column, LEVEL_COLUMNS[level]
            inside = units[fcol] == f.area
            container = h.loc[f.area, lcol]
            units = units[inside | (units.index == container)]
        where, params = f.where("e", located_only=False)
        counts = store.sql(_AREA_COUNTS_SQL.format(col=LEVEL_COLUMNS[level], where=where), params)
        df = units[["name", "name_en", "level", "parent_code", "area_km2"]].rename_axis("code").reset_index()
        df = df.merge(counts, on="code", how="left")
        for c in ("count", "complaints", "hits", "open", "sites"):
            df[c] = df[c].fillna(0).astype("int64")
        df["density"] = df["count"] / df["area_km2"].where(df["area_km2"] > 0)
        total = df["count"].sum()
        df["share"] = df["count"] / total if total else 0.0
        return df.sort_values(["count", "code"], ascending=[False, True], ignore_index=True)

    return cached(store, ("area_stats", level, f), compute).copy()


def city_cells(store: Store, *, res: int, area: str | None = None) -> np.ndarray:
    """H3 cells at ``res`` whose centre lies in the city (the union of districts) or in one area / grid.

    This is the study area of the hotspot statistics: cells without events inside it count as zeros.
    """
    res = check_res(res)

    def compute() -> np.ndarray:
        if area is None:
            df = store.sql("SELECT ST_AsWKB(ST_Union_Agg(geom)) AS g FROM areas WHERE level = 'district'")
            if df.empty or df["g"].iloc[0] is None:
                df = store.sql("SELECT ST_AsWKB(ST_Union_Agg(geom)) AS g FROM grids")
        else:
            level = area_level(store, area)
            table = "grids" if level == "grid" else "areas"
            df = store.sql(f"SELECT ST_AsWKB(geom) AS g FROM {table} WHERE code = ?", [area])
        if df.empty or df["g"].iloc[0] is None:
            return np.zeros(0, dtype="uint64")
        geom = shapely.from_wkb(bytes(df["g"].iloc[0]))
        parts = [geom] if isinstance(geom, shapely.Polygon) else list(getattr(geom, "geoms", [geom]))
        found = [np.asarray(pa.array(h3ronpy.vector.geometry_to_cells(p, res)).to_numpy(zero_copy_only=False),
                            dtype="uint64") for p in parts if isinstance(p, shapely.Polygon)]
        return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype="uint64")

    return cached(store, ("city_cells", res, area), compute)


def mean_cell_area_km2(res: int) -> float:
    """Average H3 hexagon area at ``res`` (from the H3 tables)."""
    return MEAN_AREA_KM2[int(res)]

