"""Complaints and inspection hits: import, and queries of the events table with the service's filters."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Self

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from civicgrid.geo import importing as imp
from civicgrid.geo.readers import BatchReader
from civicgrid.geo.store import writing
from civicgrid.geo.times import parse_times
from civicgrid.grids.locate import Locator, location_arrays

if TYPE_CHECKING:
    import geopandas as gpd
    from civicgrid.geo.aggregate import EventFilter
    from civicgrid.geo.store import Store

#: Event sources.
SOURCES = ("complaint", "inspection")

#: Status words of city files, mapped to the stored status.
STATUS_WORDS = {
    "open": "open", "opened": "open", "pending": "open", "in progress": "open", "assigned": "open",
    "未结案": "open", "待处理": "open", "处理中": "open", "办理中": "open", "已派遣": "open", "未办结": "open",
    "closed": "closed", "resolved": "closed", "completed": "closed",
    "已结案": "closed", "已办结": "closed", "办结": "closed", "结案": "closed", "已处理": "closed", "已完成": "closed",
}

EVENT_FIELDS = ["id", "lat", "lng", "time", "type", "site", "text", "status", "inspection", "rectified", "closed"]

#: Stored statuses (the dictionary of the status column an import writes).
_STATUSES = ["open", "closed"]

#: Rows per batch of an events import: a batch is prepared while the one before is written.
IMPORT_BATCH_ROWS = 1 << 18
#: DuckDB threads while batches are written (the other core prepares the next batch); None keeps the default.
INSERT_THREADS: int | None = 1


def _column(table: pa.Table, column: str | None, idx: np.ndarray) -> pa.Array:
    """The trimmed strings of ``column`` at rows ``idx`` (nulls when there is no such column)."""
    if column is None:
        return pa.nulls(len(idx), pa.string())
    return imp._trimmed(table, column).take(pa.array(idx))


def problem_type_choices(con) -> pd.DataFrame:
    """Problem types and their major classes as one matching table (code, name_zh, name_en)."""
    return con.execute(
        """
        SELECT code, name_zh, name_en FROM problem_types
        UNION ALL
        SELECT DISTINCT major_code, major_zh, major_en FROM problem_types
        """
    ).df()


def import_events(path: str | os.PathLike, *, db: str | os.PathLike, source: str = "complaint",
                  mapping: dict[str, str] | None = None, point: str | None = None, crs: str | None = None,
                  tz: str = "Asia/Shanghai", encoding: str | None = None, layer: str | None = None,
                  sheet: str | int | None = None, progress: bool = True, cases: bool = True) -> imp.ImportReport:
    """Import complaints or inspection hits from a file into the store.

    Each imported event becomes a problem case (``sites.cases.backfill``: state, deadline, automatic unit and
    audit trail from the event's record) and is linked to the earlier closed case it repeats, if any
    (``sites.cases.link_rebounds``), in the same transaction as the import.

    Parameters
    ----------
    path
        CSV, XLSX, GeoJSON, GeoPackage, Shapefile (or zipped), GeoParquet or Parquet file.
    db
        The civicgrid database (created if missing).
    source
        ``"complaint"`` (e.g. 12345 hotline) or ``"inspection"`` (inspection hits).
    mapping
        ``{field: column}`` for fields ``id, lat, lng, time, type, site, text, status, inspection,
        rectified, closed`` (``rectified`` / ``closed``: when the problem was fixed / the case closed, e.g.
        整改时间 / 办结时间; a closed time makes the event closed unless a status column says otherwise);
        unmapped fields are looked up by common column names.
    point
        A single text column holding "(lat, lon)" or "lat,lon".
    crs
        Coordinate system of the input: ``wgs84``, ``gcj02``, ``bd09``, ``cgcs2000`` or ``EPSG:NNNN``.
    tz
        Time zone of times written without an offset.
    cases
        Create the cases of the new events (and of any earlier event still without one) and link their
        rebounds; ``report.cases_created`` and ``report.rebounds_linked`` count them.

    Returns
    -------
    ImportReport
        Counts and every rejected row with its field and reason.
    """
    if source not in SOURCES:
        msg = f"source must be one of {', '.join(SOURCES)}, got {source!r}"
        raise ValueError(msg)
    started = datetime.now()
    reader = imp.read_input_batches(path, encoding=encoding, layer=layer, sheet=sheet, rows=IMPORT_BATCH_ROWS)
    header = pa.table({c: pa.array([], pa.string()) for c in reader.columns})
    cols = imp.resolve_columns(header, mapping or {}, fields=EVENT_FIELDS, required=["time"])
    if point is not None and point not in reader.columns:
        msg = f"column {point!r} (given for --point) is not in the file. Columns are: " + ", ".join(
            c for c in reader.columns if c != "__row__")
        raise imp.ImportFileError(msg)
    report = imp.ImportReport(layer="events", file=str(path), format=reader.format, encoding=reader.encoding,
                              warnings=list(reader.warnings))
    report.columns = {k: v for k, v in cols.items() if k not in ("lat", "lng") or point is None}
    bar = imp.progress_bar(reader.rows_hint or 0, desc=f"import {source} events", enabled=progress)
    with writing(db) as con:
        # Everything read through the connection is read up front: batches are then prepared while the
        # previous one is written (DuckDB releases the GIL), and the connection is used by one thread at a time.
        ctx = _EventBatchContext(
            cols=cols, source=source, point=point, crs=crs, tz=tz, report=report, reader=reader,
            store_tz=con.execute("SELECT value FROM meta WHERE key = 'timezone'").fetchone()[0],
            extent=imp.city_extent(con), locator=Locator(con), keys=imp.KeyIndex(con, "events"),
            problem_types=problem_type_choices(con) if "type" in cols else None,
            sites=con.execute("SELECT CAST(site_id AS VARCHAR) AS code, external_id, name FROM sites").df()
            if "site" in cols else None,
            inspections=con.execute("SELECT CAST(inspection_id AS VARCHAR) AS code, external_id FROM inspections")
            .df() if "inspection" in cols else None,
        )
        first = imp.next_id(con, "events", "event_id")
        report.import_id = imp.next_id(con, "imports", "import_id")
        rejects: list[dict] = []
        loaded = duplicates = 0
        try:
            with _Writer(con, threads=INSERT_THREADS) as writer:
                for batch in imp.prefetch(reader.batches):
                    data, rej, dup, outside = _event_batch(batch, ctx, first_id=first + loaded,
                                                           con=con, before_query=writer.wait)
                    report.rows_read += batch.num_rows
                    rejects.extend(rej)
                    duplicates += dup
                    report.outside_grids += outside
                    if data is not None:
                        loaded += data.num_rows
                        writer.insert("events", data)
                    bar.update(batch.num_rows)
        finally:
            ctx.keys.close()
        report.warnings = list(dict.fromkeys(report.warnings))
        imp.finish_report(report, rejects, loaded=loaded, duplicates=duplicates)
        if cases:
            from civicgrid.sites.cases import backfill, link_rebounds

            report.cases_created = backfill(con, actor="import")
            new_ids = np.arange(first, first + loaded, dtype=np.int64)
            report.rebounds_linked = link_rebounds(con, case_ids=new_ids) if len(new_ids) else 0
        imp.record_import(con, report, started)
        bar.total = report.rows_read
        bar.refresh()
    bar.close()
    return report


@dataclass
class _EventBatchContext:
    """What every batch of an events import needs, read from the store before the first write."""

    cols: dict[str, str]
    source: str
    point: str | None
    crs: str | None
    tz: str
    report: imp.ImportReport
    reader: BatchReader
    store_tz: str
    extent: tuple | None
    locator: Locator
    keys: imp.KeyIndex
    problem_types: pd.DataFrame | None
    sites: pd.DataFrame | None
    inspections: pd.DataFrame | None


class _Writer:
    """Inserts Arrow tables on a background thread, one at a time and in order, so the next batch is prepared
    meanwhile; leaving the block waits for the last insert (and re-raises its error)."""

    def __init__(self, con, *, threads: int | None = None) -> None:
        self.con = con
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="civicgrid-insert")
        self.pending = None
        self.threads = None
        if threads is not None:
            self.threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
            con.execute(f"SET threads = {int(threads)}")

    def insert(self, table: str, data: pa.Table) -> None:
        self.wait()
        self.pending = self.pool.submit(imp.insert_arrow, self.con, table, data)

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
            elif self.pending is not None:
                futures_wait([self.pending])  # the connection must be idle before the transaction rolls back
        finally:
            self.pool.shutdown()
            if self.threads is not None:
                try:
                    self.con.execute(f"SET threads = {int(self.threads)}")
                except duckdb.Error:
                    if exc_type is None:
                        raise


def _ids(values: np.ndarray, idx: np.ndarray) -> pa.Array:
    """Integer ids (matched as text) at rows ``idx``."""
    return pa.array(pd.to_numeric(pd.Series(values[idx], dtype=object)), pa.int64(), from_pandas=True)


def _event_batch(batch: pa.Table, ctx: _EventBatchContext, *, first_id: int, con,
                 before_query) -> tuple[pa.Table | None, list[dict], int, int]:
    """Validate, deduplicate and locate one batch of events.

    Returns
    -------
    data, rejects, duplicates, outside_grids
        The rows to insert (None when there are none, event ids from
        ``first_id``), the rejected rows, the count of duplicates and of new
        rows outside every grid.
    """
    cols, report = ctx.cols, ctx.report
    n = batch.num_rows
    raw, batch = batch, imp.trim_columns(batch, [c for k, c in cols.items() if k not in ("site", "inspection")])
    rej = imp.Rejects(batch.column("__row__").to_numpy())
    src = imp.ReadResult(table=batch, format=ctx.reader.format, crs=ctx.reader.crs, encoding=ctx.reader.encoding)
    lng, lat, _ = imp.read_locations(src, cols, rej, report, con=None, point=ctx.point, crs=ctx.crs,
                                     extent=ctx.extent)

    raw_time = imp._trimmed(batch, cols["time"])
    times, bad_time = parse_times(raw_time, tz=ctx.tz, store_tz=ctx.store_tz)
    rej.add(raw_time.is_null().to_numpy(zero_copy_only=False), "time", "missing time")
    if bad_time.any():
        reasons = np.full(n, None, dtype=object)
        bad_idx = np.flatnonzero(bad_time)
        reasons[bad_idx] = [f"unparseable time {v!r}" for v in raw_time.take(pa.array(bad_idx)).to_pylist()]
        rej.add(bad_time, "time", reasons)

    # when the problem was fixed and the case closed (optional): not before the event itself
    ends = {}
    for field in ("rectified", "closed"):
        if field not in cols:
            continue
        raw_end = imp._trimmed(batch, cols[field])
        end, bad_end = parse_times(raw_end, tz=ctx.tz, store_tz=ctx.store_tz)
        early = ~np.isnat(end) & ~np.isnat(times) & (end < times)
        reasons = np.full(n, None, dtype=object)
        for i in np.flatnonzero(bad_end):
            reasons[i] = f"unparseable time {raw_end[int(i)].as_py()!r}"
        for i in np.flatnonzero(early):
            reasons[i] = f"{field} time {end[i]} is before the event's time {times[i]}"
        rej.add(bad_end | early, field, reasons)
        ends[field] = end
    if "rectified" in ends and "closed" in ends:
        order = ~np.isnat(ends["rectified"]) & ~np.isnat(ends["closed"]) & (ends["closed"] < ends["rectified"])
        reasons = np.full(n, None, dtype=object)
        for i in np.flatnonzero(order):
            reasons[i] = f"closed time {ends['closed'][i]} is before the rectified time {ends['rectified'][i]}"
        rej.add(order, "closed", reasons)

    ptype = pa.nulls(n, pa.string())
    if "type" in cols:
        ptype, unknown, reasons = imp.match_names(
            imp._trimmed(batch, cols["type"]), ctx.problem_types, key="code", names=["name_zh", "name_en"],
            what="problem type", arrow=True)
        rej.add(unknown, "type", reasons)

    site_id = np.full(n, None, dtype=object)
    if "site" in cols:
        site_id, unknown, reasons = imp.match_names(
            imp.strings(batch, cols["site"]), ctx.sites, key="code", names=["external_id", "name"], what="site")
        rej.add(unknown, "site", reasons)

    inspection_id = np.full(n, None, dtype=object)
    if "inspection" in cols:
        inspection_id, unknown, reasons = imp.match_names(
            imp.strings(batch, cols["inspection"]), ctx.inspections, key="code", names=["external_id"],
            what="inspection")
        rej.add(unknown, "inspection", reasons)

    status = np.zeros(n, dtype=np.int8)  # index into _STATUSES; empty → open
    if "status" in cols:
        enc = imp._trimmed(batch, cols["status"]).dictionary_encode()
        words = pd.Series(enc.dictionary.to_numpy(zero_copy_only=False), dtype=object)
        slot = words.str.lower().map(STATUS_WORDS).map({v: i for i, v in enumerate(_STATUSES)})
        slot = slot.fillna(-1).to_numpy(dtype=np.int8)
        codes = enc.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        present = ~enc.indices.is_null().to_numpy(zero_copy_only=False)
        status = np.where(present, slot[codes] if len(slot) else -1, 0).astype(np.int8)
        unknown = status < 0
        status[unknown] = 0
        if unknown.any():
            known = ", ".join(sorted(set(STATUS_WORDS)))
            reasons = np.full(n, None, dtype=object)
            reasons[unknown] = [f"unknown status {words[c]!r} (known: {known})" for c in codes[unknown]]
            rej.add(unknown, "status", reasons)

    if "closed" in ends and "status" not in cols:
        status[~np.isnat(ends["closed"])] = _STATUSES.index("closed")

    keys = imp.dedup_key_array(raw, cols, prefix=ctx.source,
                               ids=imp._trimmed(batch, cols["id"]) if "id" in cols else None)
    dup = ctx.keys.duplicates(con, keys, rej.ok, before_query=before_query)
    idx = np.flatnonzero(rej.ok & ~dup)
    rejects = rej.to_list()
    if not len(idx):
        return None, rejects, int(dup.sum()), 0
    located = ctx.locator.locate(lng[idx], lat[idx])
    take = pa.array(idx)
    data = pa.table({
        "event_id": pa.array(np.arange(first_id, first_id + len(idx)), pa.int64()),
        "source": pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(idx), np.int8)), pa.array([ctx.source])),
        "external_id": _column(batch, cols.get("id"), idx),
        "problem_type": ptype.take(take),
        "time": pa.array(times[idx]),
        "status": pa.DictionaryArray.from_arrays(pa.array(status[idx]), pa.array(_STATUSES)),
        "site_id": _ids(site_id, idx) if "site" in cols else pa.nulls(len(idx), pa.int64()),
        "inspection_id": _ids(inspection_id, idx) if "inspection" in cols else pa.nulls(len(idx), pa.int64()),
        "text": _column(batch, cols.get("text"), idx),
        **{f"{field}_at": pa.array(end[idx]) for field, end in ends.items()},
        "lng": pa.array(lng[idx]),
        "lat": pa.array(lat[idx]),
        **location_arrays(located, dictionary=True),
        "dedup_key": keys.take(take),
        "import_id": pa.array(np.full(len(idx), report.import_id), pa.int32()),
    })
    return data, rejects, int(dup.sum()), int(located["grid_code"].isna().sum())


#: Columns of :func:`query_events`, in order (``geometry`` is added last).
QUERY_COLUMNS = ("event_id", "source", "external_id", "time", "problem_type", "type_name", "major_code",
                 "major_name", "status", "deadline", "rectified_at", "closed_at", "reopened", "rebound_of",
                 "site_id", "site_name", "category_code", "category_name", "inspection_id", "text", "lng", "lat",
                 "h3_hex", "grid_code", "community_code", "street_code", "district_code")

_QUERY_SQL = """
SELECT e.event_id, e.source, e.external_id, e.time, e.problem_type, p.name_{lang} AS type_name, p.major_code,
       p.major_{lang} AS major_name, e.status, e.deadline, e.rectified_at, e.closed_at, e.reopened, e.rebound_of,
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
    import geopandas as gpd
    from civicgrid.geo.aggregate import EventFilter
    from civicgrid.geo.errors import InvalidParameterError

    if lang not in ("zh", "en"):
        msg = f"lang must be zh or en, got {lang!r}"
        raise InvalidParameterError(msg)
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
        total = len(df) if not page else int(cur.execute(_COUNT_SQL.format(where=where), params).fetchone()[0])
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
    row = store.sql(
        "SELECT least((SELECT min(time) FROM events), (SELECT min(time) FROM inspections)) AS first, "
        "greatest((SELECT max(time) FROM events), (SELECT max(time) FROM inspections)) AS last"
    ).iloc[0]
    return pd.Timestamp(row["first"]), pd.Timestamp(row["last"])


def as_of_notes(store: Store, as_of: datetime, *, lang: str = "zh") -> list[str]:
    """Warnings for a moment outside the store's data: before its first event or inspection (nothing is known
    yet, every site looks the same), or more than :data:`STALE_AFTER_DAYS` days after its last one (what is known
    is that old). Empty when ``as_of`` lies within the data."""
    first, last = data_span(store)
    if pd.isna(first):
        return ["库中还没有事件或检查记录" if lang == "zh" else "the store holds no events or inspections yet"]
    t = pd.Timestamp(as_of)
    if t <= first:
        return [f"时点 {t:%Y-%m-%d %H:%M} 早于库中最早的记录（{first:%Y-%m-%d}）：此前没有任何数据，各点位结果相同"
                if lang == "zh" else
                f"as_of {t:%Y-%m-%d %H:%M} is before the first record ({first:%Y-%m-%d}): nothing is known yet, "
                "so every site looks the same"]
    days = (t - last).days
    if days > STALE_AFTER_DAYS:
        return [f"时点 {t:%Y-%m-%d} 晚于库中最新的记录（{last:%Y-%m-%d}）{days} 天：结果只反映那时的状况"
                if lang == "zh" else
                f"as_of {t:%Y-%m-%d} is {days} days after the latest record ({last:%Y-%m-%d}): the result shows "
                "the state as of then, nothing since is known"]
    return []
