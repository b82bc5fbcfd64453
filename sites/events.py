"""Complaints and inspection hits as an office imports them: read a city file, check and locate each row, store
the new events and open their cases (with rebounds linked), in one transaction.

The events table itself and the queries of it live in :mod:`civicgrid.geo.events`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Self

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from civicgrid.geo import importing as imp
from civicgrid.geo.columns import match_names, resolve_columns, strings, trim_columns, trimmed
from civicgrid.geo.dedup import KeyIndex, dedup_key_array
from civicgrid.geo.errors import ImportFileError, InvalidParameterError
from civicgrid.geo.events import SOURCES
from civicgrid.geo.import_report import ImportReport, Rejects, finish_report
from civicgrid.geo.locations import city_extent, read_locations
from civicgrid.geo.readers import BatchReader, ReadResult
from civicgrid.geo.staging import Staging, importing
from civicgrid.geo.store import fetch_value, set_meta
from civicgrid.geo.times import DEFAULT_TIMEZONE, parse_times, store_timezone
from civicgrid.grids.locate import Locator, location_arrays
from civicgrid.sites.cases import backfill, link_rebounds
from civicgrid.sites.cases.bulk import stage_cases

#: Status words of city files, mapped to the stored status.
STATUS_WORDS = {
    "open": "open", "opened": "open", "pending": "open", "in progress": "open", "assigned": "open",
    "未结案": "open", "待处理": "open", "处理中": "open", "办理中": "open", "已派遣": "open", "未办结": "open",
    "closed": "closed", "resolved": "closed", "completed": "closed",
    "已结案": "closed", "已办结": "closed", "办结": "closed", "结案": "closed", "已处理": "closed", "已完成": "closed",
}

#: The fields an events import maps to columns.
EVENT_FIELDS = ["id", "lat", "lng", "time", "type", "site", "text", "status", "inspection", "rectified", "closed"]

#: Stored statuses (the dictionary of the status column an import writes).
_STATUSES = ["open", "closed"]

#: Rows per batch of an events import: a batch is prepared while the one before is written.
IMPORT_BATCH_ROWS = 1 << 18


def problem_type_choices(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
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
                  tz: str = DEFAULT_TIMEZONE, encoding: str | None = None, layer: str | None = None,
                  sheet: str | int | None = None, progress: bool = True, cases: bool = True) -> ImportReport:
    """Import complaints or inspection hits from a file into the store.

    Each imported event becomes a problem case (:func:`civicgrid.sites.cases.backfill`: state, deadline,
    automatic unit and audit trail from the event's record) and is linked to the earlier closed case it
    repeats, if any (:func:`civicgrid.sites.cases.link_rebounds`), in the same transaction as the import.

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
        raise InvalidParameterError(msg)
    started = datetime.now()
    reader = imp.read_input_batches(path, encoding=encoding, layer=layer, sheet=sheet, rows=IMPORT_BATCH_ROWS)
    header = pa.table({c: pa.array([], pa.string()) for c in reader.columns})
    cols = resolve_columns(header, mapping or {}, fields=EVENT_FIELDS, required=["time"])
    if point is not None and point not in reader.columns:
        msg = f"column {point!r} (given for --point) is not in the file. Columns are: " + ", ".join(
            c for c in reader.columns if c != "__row__")
        raise ImportFileError(msg)
    report = ImportReport(layer="events", file=str(path), format=reader.format, encoding=reader.encoding,
                              warnings=list(reader.warnings))
    report.columns = {k: v for k, v in cols.items() if k not in ("lat", "lng") or point is None}
    bar = imp.progress_bar(reader.rows_hint or 0, desc=f"import {source} events", enabled=progress)
    # The rows are staged as Parquet files without holding up other writers, then published in one short
    # write with their cases and rebound links (civicgrid.geo.staging): all of the import or nothing.
    with importing(db) as staging:
        ctx = _EventBatchContext.read(staging.con, cols=cols, source=source, point=point, crs=crs, tz=tz,
                                      report=report, reader=reader)
        report.import_id = staging.reserve("imports", "import_id", 1)
        ids = _load_batches(staging, ctx, bar=bar)
        # The cases of the new events are made before publishing, without the writers' lock; only when an
        # import without cases left earlier events to catch up on are they made in the publishing write.
        pending = bool(fetch_value(staging.con, "SELECT count(*) FROM meta WHERE key = 'cases_pending'"))
        if cases and not pending:
            report.cases_created, report.rebounds_linked = stage_cases(staging, ids, actor="import")
        with staging.publish() as con:
            if cases and pending:
                report.cases_created = backfill(con, actor="import")
                report.rebounds_linked = link_rebounds(con, case_ids=ids) if len(ids) else 0
                con.execute("DELETE FROM meta WHERE key = 'cases_pending'")
            elif not cases and len(ids):
                set_meta(con, "cases_pending", "1")
            imp.record_import(con, report, started)
        bar.total = report.rows_read
        bar.refresh()
    bar.close()
    return report


def _load_batches(staging: Staging, ctx: _EventBatchContext, *, bar) -> np.ndarray:
    """Prepare and stage every batch of the file, finish the report; return the ids of the events staged."""
    report = ctx.report
    rejects: list[dict] = []
    ids: list[np.ndarray] = []
    loaded = duplicates = 0
    try:
        for batch in imp.prefetch(ctx.reader.batches):
            first = staging.reserve("events", "event_id", batch.num_rows)
            data, rej, dup, outside = _event_batch(batch, ctx, first_id=first, con=staging.con,
                                                   before_query=staging.wait)
            report.rows_read += batch.num_rows
            rejects.extend(rej)
            duplicates += dup
            report.outside_grids += outside
            if data is not None:
                loaded += data.num_rows
                ids.append(data.column("event_id").to_numpy())
                staging.add("events", data)
                ctx.keys.table = staging.relation("events", "dedup_key")  # later batches check these rows too
            bar.update(batch.num_rows)
        staging.wait()
    finally:
        ctx.keys.close()
    report.warnings = list(dict.fromkeys(report.warnings))
    finish_report(report, rejects, loaded=loaded, duplicates=duplicates)
    return np.concatenate(ids) if ids else np.zeros(0, np.int64)


@dataclass
class _EventBatchContext:
    """What every batch of an events import needs, read from the store before the first write."""

    cols: dict[str, str]
    source: str
    point: str | None
    crs: str | None
    tz: str
    report: ImportReport
    reader: BatchReader
    store_tz: str
    extent: tuple | None
    locator: Locator
    keys: KeyIndex
    problem_types: pd.DataFrame | None
    sites: pd.DataFrame | None
    inspections: pd.DataFrame | None

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection, *, cols: dict[str, str], source: str, point: str | None,
             crs: str | None, tz: str, report: ImportReport, reader: BatchReader) -> Self:
        """The context of an import into the store of ``con``: its time zone, extent, grids, keys and codes."""
        return cls(
            cols=cols, source=source, point=point, crs=crs, tz=tz, report=report, reader=reader,
            store_tz=store_timezone(con),
            extent=city_extent(con), locator=Locator(con), keys=KeyIndex(con, "events"),
            problem_types=problem_type_choices(con) if "type" in cols else None,
            sites=con.execute("SELECT CAST(site_id AS VARCHAR) AS code, external_id, name FROM sites").df()
            if "site" in cols else None,
            inspections=con.execute("SELECT CAST(inspection_id AS VARCHAR) AS code, external_id FROM inspections")
            .df() if "inspection" in cols else None,
        )


def _column(table: pa.Table, column: str | None, idx: np.ndarray) -> pa.Array:
    """The trimmed strings of ``column`` at rows ``idx`` (nulls when there is no such column)."""
    if column is None:
        return pa.nulls(len(idx), pa.string())
    return trimmed(table, column).take(pa.array(idx))


def _ids(values: np.ndarray, idx: np.ndarray) -> pa.Array:
    """Integer ids (matched as text) at rows ``idx``."""
    return pa.array(pd.to_numeric(pd.Series(values[idx], dtype=object)), pa.int64(), from_pandas=True)


def _event_batch(batch: pa.Table, ctx: _EventBatchContext, *, first_id: int, con: duckdb.DuckDBPyConnection,
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
    raw, batch = batch, trim_columns(batch, [c for k, c in cols.items() if k not in ("site", "inspection")])
    rej = Rejects(batch.column("__row__").to_numpy())
    src = ReadResult(table=batch, format=ctx.reader.format, crs=ctx.reader.crs, encoding=ctx.reader.encoding)
    lng, lat, _ = read_locations(src, cols, rej, report, con=None, point=ctx.point, crs=ctx.crs,
                                     extent=ctx.extent)
    times, ends = _event_times(batch, ctx, rej)
    ptype, site_id, inspection_id = _event_codes(batch, ctx, rej)
    status = _event_status(batch, cols, rej, closed_at=ends.get("closed"))

    keys = dedup_key_array(raw, cols, prefix=ctx.source,
                               ids=trimmed(batch, cols["id"]) if "id" in cols else None)
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


def _event_times(batch: pa.Table, ctx: _EventBatchContext,
                 rej: Rejects) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The events' times, and when the problem was fixed and the case closed (``rectified``, ``closed``: the
    fields the file has), rejecting missing, unparseable and out-of-order times."""
    cols, n = ctx.cols, batch.num_rows
    raw_time = trimmed(batch, cols["time"])
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
        raw_end = trimmed(batch, cols[field])
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
    return times, ends


def _event_codes(batch: pa.Table, ctx: _EventBatchContext,
                 rej: Rejects) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The problem type, site and inspection of each event, matched by code or name (unknown ones rejected)."""
    cols, n = ctx.cols, batch.num_rows
    ptype = pa.nulls(n, pa.string())
    if "type" in cols:
        ptype, unknown, reasons = match_names(
            trimmed(batch, cols["type"]), ctx.problem_types, key="code", names=["name_zh", "name_en"],
            what="problem type", arrow=True)
        rej.add(unknown, "type", reasons)

    site_id = np.full(n, None, dtype=object)
    if "site" in cols:
        site_id, unknown, reasons = match_names(
            strings(batch, cols["site"]), ctx.sites, key="code", names=["external_id", "name"], what="site")
        rej.add(unknown, "site", reasons)

    inspection_id = np.full(n, None, dtype=object)
    if "inspection" in cols:
        inspection_id, unknown, reasons = match_names(
            strings(batch, cols["inspection"]), ctx.inspections, key="code", names=["external_id"],
            what="inspection")
        rej.add(unknown, "inspection", reasons)
    return ptype, site_id, inspection_id


def _event_status(batch: pa.Table, cols: dict[str, str], rej: Rejects, *,
                  closed_at: np.ndarray | None) -> np.ndarray:
    """Each event's stored status (an index into ``_STATUSES``) from its status word (unknown words rejected);
    without a status column, an event with a closed time (``closed_at``, when the file has them) is closed."""
    n = batch.num_rows
    status = np.zeros(n, dtype=np.int8)  # index into _STATUSES; empty → open
    if "status" in cols:
        enc = trimmed(batch, cols["status"]).dictionary_encode()
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

    if closed_at is not None and "status" not in cols:
        status[~np.isnat(closed_at)] = _STATUSES.index("closed")
    return status
