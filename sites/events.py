"""Complaints and inspection hits as an office imports them: read a city file, check and locate each row, store
the new events and open their cases (with rebounds linked), in one transaction.

The events table itself and the queries of it live in :mod:`civicgrid.geo.events`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Self

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from civicgrid.geo import importing as imp
from civicgrid.geo.columns import column_key, match_names, resolve_columns, strings, trim_columns, trimmed
from civicgrid.geo.dedup import KeyIndex, dedup_key_array
from civicgrid.geo.errors import ImportFileError, InvalidParameterError
from civicgrid.geo.events import SOURCES
from civicgrid.geo.import_report import ImportReport, Rejects, finish_report
from civicgrid.geo.locations import city_extent, read_locations
from civicgrid.geo.readers import BatchReader, ReadResult
from civicgrid.geo.settings import get_settings
from civicgrid.geo.staging import Staging, importing
from civicgrid.geo.store import fetch_value, set_meta
from civicgrid.geo.times import (
    decide_date_order,
    outside_window,
    parse_times,
    store_timezone,
    window_text,
    zone_note,
)
from civicgrid.grids.locate import Locator, location_arrays
from civicgrid.grids.road_places import CONFIDENCE as ROAD_CONFIDENCE
from civicgrid.grids.road_places import RoadGazetteer
from civicgrid.sites.cases import backfill, link_rebounds
from civicgrid.sites.cases.bulk import ImportCases
from civicgrid.sites.event_places import AddressGazetteer, AreaIndex, coarsen, place_unlocated
from civicgrid.sites.event_updates import apply_updates, refresh_kept_cases
from civicgrid.sites.taxonomy import STATUS_WORDS, TypeMatcher, status_words, type_choices, type_column_warnings

__all__ = ["EVENT_FIELDS", "STATUS_WORDS", "TYPE_MODES", "import_events", "problem_type_choices"]

#: The fields an events import maps to columns (``area``, ``address``: where a row without coordinates is).
EVENT_FIELDS = ["id", "lat", "lng", "time", "type", "site", "text", "status", "inspection", "rectified", "closed",
                "area", "address"]

#: ``types``: ``open`` keeps rows whose label is no known type (without a type, counted in ``unmapped_types``),
#: ``strict`` rejects them.
TYPE_MODES = ("open", "strict")

#: Stored statuses (the dictionary of the status column an import writes).
_STATUSES = ["open", "closed"]

#: How an event is located (the dictionary of the ``located_by`` column an import writes; NULL: unlocated).
_LOCATED_BY = ["point", "address", "area"]

#: Rows per batch of an events import: a batch is prepared while the one before is written.
IMPORT_BATCH_ROWS = 1 << 18


def problem_type_choices(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Problem types and their major classes as one matching table (code, name_zh, name_en)."""
    return type_choices(con)


def import_events(path: str | os.PathLike, *, db: str | os.PathLike, source: str = "complaint",
                  mapping: dict[str, str] | None = None, point: str | None = None, crs: str | None = None,
                  tz: str | None = None, encoding: str | None = None, layer: str | None = None,
                  sheet: str | int | None = None, progress: bool = True, cases: bool = True,
                  date_order: str | None = None, types: str = "open", update: bool = False) -> ImportReport:
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
        rectified, closed, area, address`` (``rectified`` / ``closed``: when the problem was fixed / the case
        closed, e.g. 整改时间 / 办结时间; a closed time makes the event closed unless a status column says
        otherwise; ``type`` may name several columns, ``一级分类,二级分类``, matched most specific (last)
        first; ``area``: a district, street, community or micro-grid code or name locating rows without
        coordinates; ``address``: kept with the event); unmapped fields are looked up by common column names
        (the report says which columns were used).
    point
        A single text column holding "(lat, lon)" or "lat,lon".
    crs
        Coordinate system of the input: ``wgs84``, ``gcj02``, ``bd09``, ``cgcs2000`` or ``EPSG:NNNN``.
    tz
        Time zone of times written without an offset (default: the store's, ``meta.timezone``).
    cases
        Create the cases of the new events (and of any earlier event still without one) and link their
        rebounds; ``report.cases_created`` and ``report.rebounds_linked`` count them.
    date_order
        ``dmy`` or ``mdy``: how dates such as ``01/03/2025`` are read (default: decided per column from its
        values; a column no value decides is refused, naming this option).
    types
        ``open`` (default): a row whose type label is no known type loads with its label (``source_type``)
        and no type, counted in ``report.unmapped_types`` with the closest types in
        ``report.type_suggestions``; ``strict``: such rows are rejected.
    update
        Rows whose (source, id) is stored already replace the stored events when their content differs (type,
        time, status, coordinates, place, text...): same event id, location and cell recomputed, the case
        recomputed from the new record; ``report.updated`` counts them (identical rows stay duplicates). Rows
        without an id are matched by content, so they never update.

    Returns
    -------
    ImportReport
        Counts and every rejected row with its field and reason.
    """
    if source not in SOURCES:
        msg = f"source must be one of {', '.join(SOURCES)}, got {source!r}"
        raise InvalidParameterError(msg)
    if types not in TYPE_MODES:
        msg = f"types must be open (keep unknown labels) or strict (reject them), got {types!r}"
        raise InvalidParameterError(msg)
    decide_date_order([], date_order=date_order)  # a wrong order is named before the file is read
    started = datetime.now().astimezone()  # a moment; record_import stores it on the store's clock
    reader = imp.read_input_batches(path, encoding=encoding, layer=layer, sheet=sheet, rows=IMPORT_BATCH_ROWS)
    header = pa.table({c: pa.array([], pa.string()) for c in reader.columns})
    mapping = dict(mapping or {})
    type_columns = [c.strip() for c in mapping.pop("type", "").split(",") if c.strip()] if mapping.get("type") \
        else []
    for c in type_columns[:-1]:
        resolve_columns(header, {"type": c}, fields=EVENT_FIELDS)  # each column named must be in the file
    if type_columns:
        mapping["type"] = type_columns[-1]
    cols = resolve_columns(header, mapping, fields=EVENT_FIELDS, required=["time"])
    if "type" in cols and not type_columns:
        type_columns = [cols["type"]]
    if point is not None and point not in reader.columns:
        msg = f"column {point!r} (given for --point) is not in the file. Columns are: " + ", ".join(
            c for c in reader.columns if c != "__row__")
        raise ImportFileError(msg)
    report = ImportReport(layer="events", file=str(path), format=reader.format, encoding=reader.encoding,
                              warnings=list(reader.warnings))
    report.columns = {k: v for k, v in cols.items() if k not in ("lat", "lng") or point is None}
    if len(type_columns) > 1:
        report.columns["type"] = ",".join(type_columns)
    report.warnings += type_column_warnings(report.columns.get("type", ""), reader.columns, cols,
                                            given="type" in mapping)
    report.unmapped_types, report.type_suggestions = {}, {}
    report.located = report.located_by_area = report.located_by_address = report.unlocated = 0
    bar = imp.progress_bar(reader.rows_hint or 0, desc=f"import {source} events", enabled=progress)
    # The rows are staged as Parquet files without holding up other writers, their cases made beside them, and
    # all of it published in one short write (civicgrid.geo.staging): all of the import or nothing. An import
    # that replaces stored rows (--update) is one transaction holding the writers' lock instead.
    with importing(db, locked=update) as staging:
        ctx = _EventBatchContext.read(staging.con, cols=cols, source=source, point=point, crs=crs, tz=tz,
                                      report=report, reader=reader, type_columns=type_columns,
                                      date_order=date_order, strict_types=types == "strict")
        ctx.update = update
        report.no_grids = ctx.locator.index is None
        report.warnings += filter(None, [zone_note(tz, ctx.store_tz)])
        report.updated = 0 if update else None
        report.import_id = staging.reserve("imports", "import_id", 1)
        # Only when an import without cases left earlier events to catch up on (or rows were replaced) are
        # the cases made in the publishing write; otherwise they are staged with the events (ImportCases).
        pending = bool(fetch_value(staging.con, "SELECT count(*) FROM meta WHERE key = 'cases_pending'"))
        staged = ImportCases(staging.con, actor="import") if cases and not pending and not update else None
        ids = _load_batches(staging, ctx, bar=bar, cases=staged)
        if staged is not None:
            report.cases_created, report.rebounds_linked = staged.finish(staging, threads=finish_threads())
        with staging.publish() as con:
            if cases and (pending or update):
                report.cases_created = backfill(con, actor="import", event_ids=None if pending else ids)
                report.rebounds_linked = link_rebounds(con, case_ids=ids) if len(ids) else 0
                con.execute("DELETE FROM meta WHERE key = 'cases_pending'")
            if ctx.kept_case_ids:  # cases users moved: kept with their steps, brought up to date with the rows
                refresh_kept_cases(con, np.array(ctx.kept_case_ids, dtype=np.int64))
            elif not cases and len(ids):
                set_meta(con, "cases_pending", "1")
            imp.record_import(con, report, started)
        bar.total = report.rows_read
        bar.refresh()
    bar.close()
    return report


def _load_batches(staging: Staging, ctx: _EventBatchContext, *, bar, cases: ImportCases | None) -> np.ndarray:
    """Prepare and stage every batch of the file (with their deadlines when ``cases`` makes their cases),
    finish the report; return the ids of the events staged."""
    report = ctx.report
    rejects: list[dict] = []
    ids: list[np.ndarray] = []
    loaded = duplicates = 0
    try:
        # the threads preparing batches are stopped (closing) before the key index is closed
        with contextlib.closing(_prepared(ctx)) as prepared:
            for prep in prepared:
                batch = prep.raw
                # the ids of the whole file in one write (its row count as the reader estimates it)
                ahead = max((ctx.reader.rows_hint or 0) - report.rows_read - batch.num_rows, 0)
                first = staging.reserve("events", "event_id", batch.num_rows, ahead=ahead)
                data, rej, dup, outside = _finish_batch(prep, ctx, first_id=first, con=staging.con,
                                                        before_query=staging.wait)
                report.rows_read += batch.num_rows
                rejects.extend(rej)
                duplicates += dup
                report.outside_grids += outside
                if data is not None:  # new events (ids from ``first``) and, with --update, replaced ones
                    loaded += int(pc.sum(pc.greater_equal(data["event_id"], first)).as_py() or 0)
                    ids.append(data.column("event_id").to_numpy())
                    staging.add("events", data if cases is None else cases.with_case_state(data))
                    ctx.keys.table = staging.relation("events", "dedup_key")  # later batches check these too
                bar.update(batch.num_rows)
        staging.wait()
    finally:
        ctx.keys.close()
    _finish_labels(ctx)
    if "address" in ctx.cols:
        report.addresses_ambiguous = ctx.ambiguous_addresses
        if ctx.ambiguous_addresses:
            report.warnings.append(f"{ctx.ambiguous_addresses:,} addresses name roads that fit several places (two "
                                   "roads of one name, or roads that do not meet): left unlocated; an area column "
                                   "(--map area=…) or the district in the address picks one")
    report.warnings = list(dict.fromkeys(report.warnings))
    finish_report(report, rejects, loaded=loaded, duplicates=duplicates)
    if ctx.update:
        kept = len(ctx.kept_case_ids)
        report.warnings.append(f"--update: {report.updated or 0:,} stored events replaced by rows that differ "
                               "(their cases recomputed" + (f", except {kept:,} cases users have moved since: "
                               "they keep their state and steps, and take the row's type, time and place)"
                               if kept else ")"))
    return np.concatenate(ids) if ids else np.zeros(0, np.int64)


def prepare_threads() -> int:
    """The threads an events import prepares its batches on (:func:`_prepare_batch`; their heavy steps — Arrow,
    numpy, H3, GEOS, DuckDB — run without the GIL) while the batch before them is finished and the one before
    that written: the setting ``import_threads`` (``CIVICGRID_IMPORT_THREADS``) when it is 0 or more (0: every
    batch prepared and finished in turn on the calling thread), else 2 when the machine is not busy (its load
    average over the last minute below its cores), else 0.

    Not "a core to spare" (a load at least one below the cores): on 2 cores the load a previous import or a
    query left (1.5–2) turned the threads off on an otherwise idle machine, where they save 12–15 % of the
    time (10M events: 9.5–9.7 s against 10.9–11.4 s in turn, interleaved, load 1.5–3.3).

    On a busy machine the threads cost more than they bring: the import's process gets its share of the cores
    whatever its threads, and handing the GIL between them when the cores are taken costs CPU and time (10M
    events from CSV at load 12–16: 36.6–38.7 s in turn, 39.6–46.7 s on two threads; at load ≈ 7: 8.9–10.2 s on
    two threads). What is stored is the same either way.
    """
    chosen = get_settings().import_threads
    if chosen >= 0:
        return chosen
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available: as on a busy machine
        return 0
    return 2 if cores > 1 and load < cores else 0


def finish_threads() -> int:
    """The threads an import with cases makes its cases, audit rows and rebound links on once its events are
    staged (:meth:`~civicgrid.sites.cases.bulk.ImportCases.finish`, a staged file each at a time; their heavy
    steps — numpy, Arrow's reads and writes — run without the GIL): the setting ``import_threads``
    (``CIVICGRID_IMPORT_THREADS``) when it is 0 or more (0: every step in turn on the calling thread), else one
    per core, up to 4.

    The default is not the load rule of :func:`prepare_threads`: the import with cases met its target with these
    threads on (2 on 2 cores, load 1.6–2.3; bench/RESULTS.md); the step in turn is measured against them in
    bench/RESULTS.md's section "One rule written once".
    """
    chosen = get_settings().import_threads
    if chosen >= 0:
        return chosen
    return max(1, min(4, os.cpu_count() or 1))


def _prepared(ctx: _EventBatchContext) -> Iterator[_Prepared]:
    """The file's batches prepared (:func:`_prepare_batch`), in file order: read and handed to
    :func:`prepare_threads` threads on a reading thread (:func:`~civicgrid.geo.importing.prefetch`), a few
    batches ahead of the caller.

    A batch whose preparing failed is prepared again when the caller reaches it (:func:`_ready`). A caller
    that stops early waits for the batches under way.
    """
    threads = prepare_threads()
    if threads <= 0:
        for batch in imp.prefetch(ctx.reader.batches):
            yield _prepare_batch(batch, ctx)
        return
    pool = ThreadPoolExecutor(threads, thread_name_prefix="civicgrid-prepare")
    outer = contextvars.copy_context()  # each job in a copy of the caller's (an import's --date-order is one)

    def submitted() -> Iterator[tuple[pa.Table, Future]]:
        for batch in ctx.reader.batches:
            yield batch, pool.submit(outer.copy().run, _prepare_quietly, batch, ctx)

    jobs = imp.prefetch(submitted())
    try:
        for batch, job in jobs:
            yield _ready(batch, job, ctx)
    finally:
        jobs.close()
        pool.shutdown(wait=True, cancel_futures=True)


def _prepare_quietly(batch: pa.Table, ctx: _EventBatchContext) -> _Prepared | BaseException:
    """:func:`_prepare_batch`, its error returned rather than raised."""
    try:
        return _prepare_batch(batch, ctx)
    except Exception as exc:  # raised by _ready unless the batch is prepared again
        return exc


def _ready(batch: pa.Table, job: Future, ctx: _EventBatchContext) -> _Prepared:
    """A batch prepared on a thread. One that failed is prepared again here, where every batch before it is
    finished (it may have failed on a date order an earlier batch decided since), so the error raised is the
    one preparing batch after batch would raise."""
    prep = job.result()
    return _prepare_batch(batch, ctx) if isinstance(prep, BaseException) else prep


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
    types: TypeMatcher | None
    sites: pd.DataFrame | None
    inspections: pd.DataFrame | None
    type_columns: list[str]
    strict_types: bool
    date_order: str | None
    areas: AreaIndex | None
    #: The order of each time column's day- or month-first dates, once decided (kept for the later batches).
    date_orders: dict[str, str] = field(default_factory=dict)
    #: Status labels that are no known status word: label -> rows.
    unknown_statuses: dict[str, int] = field(default_factory=dict)
    #: Rows whose status says closed without a closure time (their cases closed at the time found).
    closed_without_time: int = 0
    #: Rows kept without their unusable coordinates (an area or address locates them), by reason.
    kept_without_point: Counter = field(default_factory=Counter)
    #: Without an area column: the codes of the store's areas and micro-grids, and the columns of the file holding
    #: such codes for rows kept without a point (column -> rows; an example code), for the report's hint.
    area_codes: pa.Array | None = None
    area_code_columns: Counter = field(default_factory=Counter)
    area_code_example: dict[str, str] = field(default_factory=dict)
    #: The addresses with a point in the store, and its roads (built when a row first needs them).
    gazetteer: AddressGazetteer | None = None
    roads: RoadGazetteer | None = None
    #: Addresses naming roads that fit several places (or roads that do not meet): not placed.
    ambiguous_addresses: int = 0
    #: ``--update``: replace stored events whose id comes again with other content; the ids replaced.
    update: bool = False
    updated_ids: list[int] = field(default_factory=list)
    #: ``--update``: the replaced events whose case users had moved (kept with its audit trail).
    kept_case_ids: list[int] = field(default_factory=list)

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection, *, cols: dict[str, str], source: str, point: str | None,
             crs: str | None, tz: str | None, report: ImportReport, reader: BatchReader, type_columns: list[str],
             date_order: str | None, strict_types: bool) -> Self:
        """The context of an import into the store of ``con``: its time zone, extent, grids, keys and codes."""
        return cls(
            cols=cols, source=source, point=point, crs=crs, tz=tz or store_timezone(con), report=report,
            reader=reader, store_tz=store_timezone(con),
            extent=city_extent(con), locator=Locator(con), keys=KeyIndex(con, "events"),
            types=TypeMatcher.read(con, source=source) if type_columns else None,
            type_columns=type_columns, strict_types=strict_types, date_order=date_order,
            areas=AreaIndex.read(con) if "area" in cols else None,
            area_codes=None if "area" in cols else pa.array(
                con.execute("SELECT code FROM areas UNION SELECT code FROM grids").fetchnumpy()["code"], pa.string()),
            sites=con.execute("SELECT CAST(site_id AS VARCHAR) AS code, external_id, name FROM sites").df()
            if "site" in cols else None,
            inspections=con.execute("SELECT CAST(inspection_id AS VARCHAR) AS code, external_id FROM inspections")
            .df() if "inspection" in cols else None,
        )


def _column(table: pa.Table, column: str | None, idx: np.ndarray) -> pa.Array:
    """The trimmed strings of ``column`` at rows ``idx`` (nulls when there is no such column)."""
    if column is None:
        return pa.nulls(len(idx), pa.string())
    return _rows(trimmed(table, column), idx)


def _rows(values: pa.Array, idx: np.ndarray) -> pa.Array:
    """``values`` at rows ``idx`` (distinct, increasing): ``values`` itself when ``idx`` holds every row (a batch
    without rejects or duplicates, the usual one: no copy of its text)."""
    return values if len(idx) == len(values) else values.take(pa.array(idx))


def _ids(values: np.ndarray, idx: np.ndarray) -> pa.Array:
    """Integer ids (matched as text) at rows ``idx``."""
    return pa.array(pd.to_numeric(pd.Series(values[idx], dtype=object)), pa.int64(), from_pandas=True)


@dataclass
class _Prepared:
    """One batch checked and located without the store: what :func:`_prepare_batch` hands to
    :func:`_finish_batch` (which runs batch after batch, in file order)."""

    raw: pa.Table
    batch: pa.Table
    rej: Rejects
    lng: np.ndarray
    lat: np.ndarray
    has_point: np.ndarray
    times: np.ndarray
    ends: dict[str, np.ndarray]
    ptype: pa.Array
    labels: pa.Array
    site_id: np.ndarray
    inspection_id: np.ndarray
    status: np.ndarray
    status_labels: pa.Array
    dup_mark: np.ndarray
    ids: pa.Array | None
    keys: pa.Array
    #: DuckDB's hash of each key (:meth:`KeyIndex.hashes`).
    hashes: np.ndarray
    #: Every row located at its point, when every row not rejected has one (else None: located when finished).
    located: pd.DataFrame | None
    #: What the batch adds to the import's context and report, applied when it is finished.
    notes: _BatchNotes


@dataclass
class _BatchNotes:
    """What preparing one batch learnt for the import as a whole (merged into the context in file order)."""

    #: The date orders of the time columns decided when the batch started (by earlier batches), and after it.
    before: dict[str, str]
    orders: dict[str, str]
    #: The order each time column was read with (None: it holds no day- or month-first date), and the columns
    #: with unparseable values (their reasons name the column's order).
    used: dict[str, str | None] = field(default_factory=dict)
    unparseable: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    #: The report's columns and CRS as the coordinates step sets them (``crs``: :data:`_UNSET` when not set).
    columns: dict[str, str] = field(default_factory=dict)
    crs: object = None
    kept_without_point: Counter = field(default_factory=Counter)
    area_code_columns: Counter = field(default_factory=Counter)
    area_code_example: dict[str, str] = field(default_factory=dict)
    unknown_statuses: dict[str, int] = field(default_factory=dict)
    closed_without_time: int = 0


#: A report field the batch did not set.
_UNSET = object()


def _prepare_batch(batch: pa.Table, ctx: _EventBatchContext) -> _Prepared:
    """The part of a batch's work that needs neither the store nor the batches before it: trimmed cells,
    coordinates, times, types and statuses checked, dedup keys and their hashes, and the points located.

    Reads the context without changing it (what the batch learns goes to ``notes``), so several batches can be
    prepared at once on threads; the date orders decided by earlier batches are those known when it starts
    (:func:`_finish_batch` prepares the batch again if an earlier batch decided one meanwhile).
    """
    cols = ctx.cols
    trim = [c for k, c in cols.items() if k not in ("site", "inspection")] + ctx.type_columns
    raw, batch = batch, trim_columns(batch, trim)
    rows = batch.column("__row__").to_numpy()
    rej = Rejects(rows)
    notes = _BatchNotes(before=dict(ctx.date_orders), orders=dict(ctx.date_orders), crs=_UNSET)
    lng, lat, has_point = _event_points(batch, ctx, rej, notes)
    times, ends = _event_times(batch, ctx, rej, notes)
    ptype, labels, site_id, inspection_id = _event_codes(batch, ctx, rej)
    status, status_labels, dup_mark = _event_status(batch, ctx, rej, notes, closed_at=ends.get("closed"))
    ids = trimmed(batch, cols["id"]) if "id" in cols else None
    keys = dedup_key_array(raw, cols, prefix=ctx.source, ids=ids)
    hashes = ctx.keys.hashes(keys)
    located = None
    if has_point[rej.ok].all():  # the usual batch: every row kept is placed at its point
        located = ctx.locator.locate(lng, lat)
    return _Prepared(raw=raw, batch=batch, rej=rej, lng=lng, lat=lat, has_point=has_point, times=times, ends=ends,
                     ptype=ptype, labels=labels, site_id=site_id, inspection_id=inspection_id, status=status,
                     status_labels=status_labels, dup_mark=dup_mark, ids=ids, keys=keys, hashes=hashes,
                     located=located, notes=notes)


def _merge_notes(ctx: _EventBatchContext, notes: _BatchNotes) -> None:
    """Add what a prepared batch learnt to the import's context and report (batch after batch, in file order)."""
    report = ctx.report
    for column, order in notes.orders.items():
        ctx.date_orders.setdefault(column, order)
    report.warnings += notes.warnings
    report.columns.update(notes.columns)
    if notes.crs is not _UNSET:
        report.crs = notes.crs
    ctx.kept_without_point.update(notes.kept_without_point)
    ctx.area_code_columns.update(notes.area_code_columns)
    for column, code in notes.area_code_example.items():
        ctx.area_code_example.setdefault(column, code)
    for word, n in notes.unknown_statuses.items():
        ctx.unknown_statuses[word] = ctx.unknown_statuses.get(word, 0) + n
    ctx.closed_without_time += notes.closed_without_time


def _read_otherwise(notes: _BatchNotes, ctx: _EventBatchContext) -> bool:
    """Whether a batch read a time column's day- or month-first dates in another order than the one known now
    (decided by the batches before it, which may have finished after it was prepared)."""
    for column, used in notes.used.items():
        known = decide_date_order([], date_order=ctx.date_orders.get(column) or ctx.date_order)
        if used is not None and known is not None and used != known:
            return True
        if column in notes.unparseable and notes.before.get(column) != ctx.date_orders.get(column):
            return True
    return False


def _finish_batch(prep: _Prepared, ctx: _EventBatchContext, *, first_id: int, con: duckdb.DuckDBPyConnection,
                  before_query) -> tuple[pa.Table | None, list[dict], int, int]:
    """Deduplicate a prepared batch against the store and the batches before it, place the rows without a
    point, and build the rows to stage.

    Returns
    -------
    data, rejects, duplicates, outside_grids
        The rows to insert (None when there are none, event ids from
        ``first_id``), the rejected rows, the count of duplicates and of new
        rows outside every grid.
    """
    if _read_otherwise(prep.notes, ctx):  # an earlier batch decided a date order meanwhile
        prep = _prepare_batch(prep.raw, ctx)
    _merge_notes(ctx, prep.notes)
    cols, report = ctx.cols, ctx.report
    batch, rej, ids, keys, has_point = prep.batch, prep.rej, prep.ids, prep.keys, prep.has_point
    dup = ctx.keys.duplicates(con, keys, rej.ok, before_query=before_query, hashes=prep.hashes)
    # --update: a row whose id is stored already is a candidate to replace the stored row (if it differs)
    again = dup & rej.ok & ~ids.is_null().to_numpy(zero_copy_only=False) if ctx.update and ids is not None \
        else np.zeros(batch.num_rows, dtype=bool)
    idx = np.flatnonzero(rej.ok & (~dup | again))
    rejects = rej.to_list()
    if not len(idx):
        return None, rejects, int(dup.sum()), 0
    point_rows = has_point[idx]
    lng_i, lat_i = prep.lng[idx], prep.lat[idx]
    confidence = np.full(len(idx), np.nan)
    area = _column(batch, cols.get("area"), idx)
    by_address = np.zeros(len(idx), dtype=bool)
    precision = np.full(len(idx), None, dtype=object)
    coarse: dict[int, tuple] = {}
    if prep.located is not None and point_rows.all():  # located when prepared
        places = {k: _rows(v, idx) for k, v in location_arrays(prep.located, dictionary=True).items()}
        located_by = np.zeros(len(idx), dtype=np.int8)
    else:
        if not point_rows.all() and "address" in cols:  # the point of the address in what the store holds
            by_address, confidence = _address_points(con, ctx, batch, idx, point_rows, area, lng_i, lat_i,
                                                     precision, coarse, before_query=before_query)
        located = ctx.locator.locate(lng_i, lat_i)
        places = location_arrays(located, dictionary=True)
        located_by = np.where(point_rows, 0, np.where(by_address, 1, -1)).astype(np.int8)  # into _LOCATED_BY
        if not (point_rows | by_address).all():  # rows without a point: the area column's place, no H3 cell
            places, by_area = place_unlocated(places, located, point_rows | by_address, area, ctx.areas)
            located_by[by_area] = _LOCATED_BY.index("area")
        if coarse:  # placed on a long road: only the areas that hold the whole road, no cell
            places = coarsen(places, coarse)
    new = ~again[idx]
    event_id = np.full(len(idx), -1, dtype=np.int64)
    event_id[new] = np.arange(first_id, first_id + int(new.sum()))
    data = pa.table({
        "event_id": pa.array(event_id, pa.int64()),
        "source": pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(idx), np.int8)), pa.array([ctx.source])),
        "external_id": _column(batch, cols.get("id"), idx),
        "problem_type": _rows(prep.ptype, idx),
        "source_type": _rows(prep.labels, idx),
        "time": pa.array(prep.times[idx]),
        "status": pa.DictionaryArray.from_arrays(pa.array(prep.status[idx]), pa.array(_STATUSES)),
        "source_status": _rows(prep.status_labels, idx),
        "source_duplicate": pa.array(prep.dup_mark[idx]),
        "site_id": _ids(prep.site_id, idx) if "site" in cols else pa.nulls(len(idx), pa.int64()),
        "inspection_id": _ids(prep.inspection_id, idx) if "inspection" in cols else pa.nulls(len(idx), pa.int64()),
        "text": _column(batch, cols.get("text"), idx),
        "address": _column(batch, cols.get("address"), idx),
        **{f"{name}_at": pa.array(end[idx]) for name, end in prep.ends.items()},
        "lng": pa.array(lng_i, mask=~np.isfinite(lng_i)),  # no point: NULL, not NaN
        "lat": pa.array(lat_i, mask=~np.isfinite(lat_i)),
        **places,
        "located_by": pa.DictionaryArray.from_arrays(pa.array(located_by, mask=located_by < 0), pa.array(_LOCATED_BY)),
        "location_confidence": pa.array(confidence, pa.float64(), mask=np.isnan(confidence)),
        "location_precision": pa.array(precision, pa.string()),
        "dedup_key": _rows(keys, idx),
        "import_id": pa.array(np.full(len(idx), report.import_id), pa.int32()),
    })
    n_dup = int(dup.sum())
    if not new.all():
        data, unchanged, replaced, kept = apply_updates(con, data, ~new, source=ctx.source,
                                                        before_query=before_query)
        ctx.updated_ids.extend(int(i) for i in replaced)
        ctx.kept_case_ids.extend(int(i) for i in kept)
        report.updated = (report.updated or 0) + len(replaced)
        n_dup -= int((~new).sum()) - unchanged  # the rows that replace stored ones are not duplicates
    outside = pc.sum(pc.and_(pc.is_valid(data["h3"]), pc.is_null(data["grid_code"]))).as_py() or 0
    return _counted(ctx, data), rejects, n_dup, int(outside)  # placed at a point (a cell) in no grid


def _counted(ctx: _EventBatchContext, data: pa.Table) -> pa.Table | None:
    """Count the rows of ``data`` by how they are located, and their labels without a type; None when empty."""
    if not data.num_rows:
        return None
    report = ctx.report
    by = {r["values"]: int(r["counts"]) for r in pc.value_counts(data["located_by"].combine_chunks()).to_pylist()}
    report.located += by.get("point", 0)
    report.located_by_area += by.get("area", 0)
    report.located_by_address += by.get("address", 0)
    if by.get("address"):
        how = pc.value_counts(data["location_precision"].combine_chunks().drop_null()).to_pylist()
        report.address_precision = report.address_precision or {}
        for r in how:
            report.address_precision[r["values"]] = report.address_precision.get(r["values"], 0) + int(r["counts"])
    report.unlocated += by.get(None, 0)
    _count_labels(ctx, data["source_type"].combine_chunks(), data["problem_type"].combine_chunks())
    return data


def _address_points(con: duckdb.DuckDBPyConnection, ctx: _EventBatchContext, batch: pa.Table, idx: np.ndarray,
                    point_rows: np.ndarray, area: pa.Array, lng: np.ndarray, lat: np.ndarray, precision: np.ndarray,
                    coarse: dict[int, tuple], *, before_query) -> tuple[np.ndarray, np.ndarray]:
    """Place the rows without a point at the point of their address: an address the store holds
    (:class:`~civicgrid.sites.event_places.AddressGazetteer`, rows without a known area), else the roads it
    names (:class:`~civicgrid.grids.road_places.RoadGazetteer`, within the row's area when it has one), when the
    match is sure enough. Both are built once per import. ``lng``, ``lat`` and ``precision`` are filled in
    place; ``coarse`` gets the rows placed on a long road, with the codes of the areas holding the whole road.

    Returns
    -------
    by_address, confidence
        The mask of rows placed by their address and each row's match confidence (NaN for the others).
    """
    n = len(idx)
    by_address, confidence = np.zeros(n, dtype=bool), np.full(n, np.nan)
    addresses = _column(batch, ctx.cols["address"], idx).to_numpy(zero_copy_only=False)
    need = ~point_rows & ~pd.isna(addresses)
    area_places, in_area = None, np.zeros(n, dtype=bool)
    if ctx.areas is not None:
        area_places, in_area = ctx.areas.find(area.to_numpy(zero_copy_only=False))
    if not need.any():
        return by_address, confidence
    if ctx.gazetteer is None:
        before_query()  # the connection is idle: the previous batch is written
        ctx.gazetteer = AddressGazetteer.read(con)
        ctx.roads = RoadGazetteer.read(con)
    at = np.flatnonzero(need & ~in_area)
    plng, plat, conf, ok = ctx.gazetteer.find(addresses[at])
    lng[at[ok]], lat[at[ok]] = plng[ok], plat[ok]
    by_address[at[ok]] = True
    confidence[at[ok]] = conf[ok]
    precision[at[ok]] = "address"
    if ctx.roads is not None:
        at = np.flatnonzero(need & ~by_address)
        found = ctx.roads.find(addresses[at], area_places[at] if area_places is not None else None)
        for i, p in zip(at, found, strict=True):
            if p.precision is None:
                ctx.ambiguous_addresses += int(p.ambiguous)
                continue
            lng[i], lat[i], precision[i] = p.lng, p.lat, p.precision
            confidence[i] = ROAD_CONFIDENCE[p.precision]
            by_address[i] = True
            if p.codes is not None:
                coarse[i] = p.codes
    return by_address, confidence


def _event_points(batch: pa.Table, ctx: _EventBatchContext, rej: Rejects,
                  notes: _BatchNotes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's WGS84 point (NaN where it has none) and the mask of rows with one.

    A row without usable coordinates (missing, unparseable, outside the city...) is kept, unlocated, when it
    has an area or an address; otherwise it is rejected with the coordinates' reason.
    """
    cols = ctx.cols
    where = [c for k, c in cols.items() if k in ("area", "address")]
    loc_rej = Rejects(batch.column("__row__").to_numpy())
    src = ReadResult(table=batch, format=ctx.reader.format, crs=ctx.reader.crs, encoding=ctx.reader.encoding)
    seen = ImportReport(layer="events", file="", crs=_UNSET)  # what the coordinates step reports, kept in notes
    lng, lat, _ = read_locations(src, cols, loc_rej, seen, con=None, point=ctx.point, crs=ctx.crs,
                                 extent=ctx.extent, required=not where)
    notes.warnings += seen.warnings
    notes.columns.update(seen.columns)
    notes.crs = seen.crs
    has_point = loc_rej.ok & np.isfinite(lng) & np.isfinite(lat)
    has_place = np.zeros(batch.num_rows, dtype=bool)
    for c in where:
        has_place |= ~trimmed(batch, c).is_null().to_numpy(zero_copy_only=False)
    fields, reasons = loc_rej.reasons()
    lost = ~has_point & ~has_place
    if where and lost.any():
        named = " or ".join(k for k in ("area", "address") if k in cols)
        reasons = np.array([f"{r}, and no {named} either" if r is not None and gone else r
                            for r, gone in zip(reasons, lost, strict=True)], dtype=object)  # the kept ones have one
    for name in dict.fromkeys(fields[lost & (fields != None)]):  # noqa: E711 - an object array
        mask = lost & (fields == name)
        rej.add(mask, name, reasons)
    if where:
        rej.add(lost & (fields == None), "/".join(["lat/lng", *where]),  # noqa: E711
                "no coordinates, area or address")
        kept = ~has_point & has_place & (fields != None)  # noqa: E711
        notes.kept_without_point.update(str(r).split(" (")[0] for r in reasons[kept])
        _area_code_columns(batch, np.flatnonzero(kept), ctx, notes)
    lng = np.where(has_point, lng, np.nan)
    lat = np.where(has_point, lat, np.nan)
    return lng, lat, has_point


#: Rows kept without a point whose cells :func:`_area_code_columns` looks at, per batch.
_AREA_HINT_ROWS = 2000


def _area_code_columns(batch: pa.Table, kept: np.ndarray, ctx: _EventBatchContext, notes: _BatchNotes) -> None:
    """Count, per column of the file not used for a field, the rows kept without a point whose cell is the code
    of one of the store's areas or micro-grids (New York 311's ``incident_zip`` where the areas are its ZIP codes):
    the report then names the column that would place them (``--map area=COLUMN``)."""
    if ctx.area_codes is None or not len(ctx.area_codes) or not len(kept):
        return
    idx = pa.array(kept[:_AREA_HINT_ROWS])
    used = {*ctx.cols.values(), ctx.point, "__row__", "geometry"}
    for column in batch.column_names:
        if column in used:
            continue
        cells = trimmed(batch, column).take(idx)
        hit = pc.is_in(cells, value_set=ctx.area_codes)
        n = pc.sum(hit).as_py() or 0
        if n:
            notes.area_code_columns[column] += n
            notes.area_code_example.setdefault(column, cells.filter(hit)[0].as_py())


def _event_times(batch: pa.Table, ctx: _EventBatchContext, rej: Rejects,
                 notes: _BatchNotes) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The events' times, and when the problem was fixed and the case closed (``rectified``, ``closed``: the
    fields the file has), rejecting missing, unparseable and out-of-order times. Day- or month-first dates
    are read one way per column (decided by the first batch that decides, or given: ``date_order``)."""
    cols, n = ctx.cols, batch.num_rows
    raw_time = trimmed(batch, cols["time"])
    times, bad_time = _parse_column(raw_time, cols["time"], ctx, notes)
    rej.add(raw_time.is_null().to_numpy(zero_copy_only=False), "time", "missing time")
    if bad_time.any():
        reasons = np.full(n, None, dtype=object)
        bad_idx = np.flatnonzero(bad_time)
        reasons[bad_idx] = [_unparseable(v, cols["time"], notes) for v in raw_time.take(pa.array(bad_idx)).to_pylist()]
        rej.add(bad_time, "time", reasons)
    implausible = outside_window(times, tz=ctx.store_tz)  # a year 1 or 2999 would explode the time slicing
    if implausible.any():
        reasons = np.full(n, None, dtype=object)
        idx = np.flatnonzero(implausible)
        reasons[idx] = [f"outside the plausible window {window_text(tz=ctx.store_tz)}: {v!r}"
                        for v in raw_time.take(pa.array(idx)).to_pylist()]
        rej.add(implausible, "time", reasons)

    # when the problem was fixed and the case closed (optional): not before the event itself
    ends = {}
    for name in ("rectified", "closed"):
        if name not in cols:
            continue
        raw_end = trimmed(batch, cols[name])
        end, bad_end = _parse_column(raw_end, cols[name], ctx, notes)
        early = ~np.isnat(end) & ~np.isnat(times) & (end < times)
        reasons = np.full(n, None, dtype=object)
        for i in np.flatnonzero(bad_end):
            reasons[i] = _unparseable(raw_end[int(i)].as_py(), cols[name], notes)
        for i in np.flatnonzero(early):  # the values as the file has them (the parsed ones are in the store's zone)
            reasons[i] = (f"{name} time before the event's time: {cols[name]} {raw_end[int(i)].as_py()!r} is "
                          f"before {cols['time']} {raw_time[int(i)].as_py()!r}")
        rej.add(bad_end | early, name, reasons)
        ends[name] = end
    if "rectified" in ends and "closed" in ends:
        order = ~np.isnat(ends["rectified"]) & ~np.isnat(ends["closed"]) & (ends["closed"] < ends["rectified"])
        reasons = np.full(n, None, dtype=object)
        raw_closed, raw_rectified = trimmed(batch, cols["closed"]), trimmed(batch, cols["rectified"])
        for i in np.flatnonzero(order):
            reasons[i] = (f"closed time before the rectified time: {cols['closed']} "
                          f"{raw_closed[int(i)].as_py()!r} is before {cols['rectified']} "
                          f"{raw_rectified[int(i)].as_py()!r}")
        rej.add(order, "closed", reasons)
    return times, ends


def _parse_column(values: pa.Array, column: str, ctx: _EventBatchContext,
                  notes: _BatchNotes) -> tuple[np.ndarray, np.ndarray]:
    """:func:`parse_times` of a time column, its date order decided once for the whole file (``notes.orders``:
    the orders decided so far; one the batch decides is added there)."""
    order = decide_date_order(values, date_order=notes.orders.get(column) or ctx.date_order, column=column)
    notes.used[column] = order
    if order is not None and column not in notes.orders:
        notes.orders[column] = order
        how = "day first" if order == "dmy" else "month first"
        given = "as given" if ctx.date_order else "decided by its values"
        notes.warnings.append(f"column {column!r}: dates read {how} ({order}, {given})")
    return parse_times(values, tz=ctx.tz, store_tz=ctx.store_tz, date_order=order or "mdy", column=column)


def _unparseable(value: object, column: str, notes: _BatchNotes) -> str:
    notes.unparseable.add(column)
    order = notes.orders.get(column)
    how = f"; the column is read {'day' if order == 'dmy' else 'month'} first ({order})" if order else ""
    return f"unparseable time {value!r}{how}"


def _event_codes(batch: pa.Table, ctx: _EventBatchContext,
                 rej: Rejects) -> tuple[pa.Array, pa.Array, np.ndarray, np.ndarray]:
    """The problem type and source label, site and inspection of each event, matched by code or name.

    The type: the first of the type columns, most specific (last) first, whose label is a known type or a
    mapped label; the label kept is that column's, else the most specific label present. Unknown labels are
    kept without a type (rejected with ``--types strict``); unknown sites and inspections are rejected.
    """
    cols, n = ctx.cols, batch.num_rows
    ptype: pa.Array = pa.nulls(n, pa.string())
    labels: pa.Array = pa.nulls(n, pa.string())
    if ctx.types is not None and len(ctx.type_columns) == 1 and not ctx.strict_types:
        # one type column (the usual file): its labels and their codes as dictionary arrays, no Python strings
        labels = trimmed(batch, ctx.type_columns[0]).dictionary_encode()
        ptype, _ = ctx.types.match(labels)
    elif ctx.types is not None:
        code = np.full(n, None, dtype=object)
        label = np.full(n, None, dtype=object)
        for column in reversed(ctx.type_columns):
            values = trimmed(batch, column)
            got, unknown = ctx.types.match(values)
            got_np = got.to_numpy(zero_copy_only=False)
            vals = values.to_numpy(zero_copy_only=False)
            take = pd.isna(code) & ~pd.isna(got_np)
            code[take], label[take] = got_np[take], vals[take]
            fill = pd.isna(label) & ~pd.isna(vals)
            label[fill] = vals[fill]
        ptype = pa.array(code, pa.string()).dictionary_encode()
        labels = pa.array(label, pa.string()).dictionary_encode()
        if ctx.strict_types:
            unknown = pd.isna(code) & ~pd.isna(label)
            reasons = np.full(n, None, dtype=object)
            for i in np.flatnonzero(unknown):
                close = ctx.types.suggest(label[i])
                hint = f" (closest: {', '.join(close)})" if close else ""
                reasons[i] = f"unknown problem type {label[i]!r}{hint}; without --types strict it loads unmapped"
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
    return ptype, labels, site_id, inspection_id


def _count_labels(ctx: _EventBatchContext, labels: pa.Array, ptype: pa.Array) -> None:
    """Count the loaded rows whose label got no type (``report.unmapped_types``)."""
    if ctx.types is None or not len(labels):
        return
    miss = pc.and_(pc.is_null(ptype), pc.is_valid(labels))
    if not pc.any(miss).as_py():
        return
    counts = ctx.report.unmapped_types
    for item in pc.value_counts(labels.filter(miss).cast(pa.string())).to_pylist():
        counts[item["values"]] = counts.get(item["values"], 0) + int(item["counts"])


def _event_status(batch: pa.Table, ctx: _EventBatchContext, rej: Rejects, notes: _BatchNotes, *,
                  closed_at: np.ndarray | None) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """Each event's stored status (an index into ``_STATUSES``), its status label and duplicate mark.

    Known words (:data:`~civicgrid.sites.taxonomy.STATUS_WORDS`, a ``… - Dup`` suffix marking a duplicate)
    give open or closed; an unknown word loads as open with its label kept (the report warns, naming it).
    Without a status column, an event with a closed time (``closed_at``) is closed.
    """
    cols, n = ctx.cols, batch.num_rows
    status = np.zeros(n, dtype=np.int8)  # index into _STATUSES; empty → open
    dup = np.zeros(n, dtype=bool)
    labels: pa.Array = pa.nulls(n, pa.string())
    if "status" in cols:
        enc = trimmed(batch, cols["status"]).dictionary_encode()  # a few words: stored as a dictionary
        labels = enc
        words = enc.dictionary.to_pylist()
        stored, marks, unknown = status_words(words)
        slot = np.array([_STATUSES.index(w) for w in stored] + [0], dtype=np.int8)
        mark = np.array([*marks, False], dtype=bool)
        present = ~enc.indices.is_null().to_numpy(zero_copy_only=False)
        codes = np.where(present, enc.indices.fill_null(0).to_numpy(zero_copy_only=False), len(words))
        status, dup = slot[codes], mark[codes]
        if unknown:
            counts = Counter(np.asarray(words, dtype=object)[codes[present]])
            for word in unknown:
                notes.unknown_statuses[word] = notes.unknown_statuses.get(word, 0) + int(counts[word])
        said = (status == _STATUSES.index("closed")) & rej.ok
        notes.closed_without_time += int((said & np.isnat(closed_at)).sum() if closed_at is not None else said.sum())
    if closed_at is not None and "status" not in cols:
        status[~np.isnat(closed_at)] = _STATUSES.index("closed")
    return status, labels, dup


#: Words in the name of a column that may hold a case's closure time: the name is one of them, or holds one of
#: them and a word for a date or time (names compared by :func:`~civicgrid.geo.columns.column_key`).
_CLOSURE_WORDS = ("closed", "close", "resolved", "resolution", "结案", "办结", "办毕", "完成")


def _closed_without_time(ctx: _EventBatchContext) -> str:
    """The warning about rows whose status says closed without a closure time, naming the file's columns that
    may hold it (by their names)."""
    rows, status = f"{ctx.closed_without_time:,}", repr(ctx.cols["status"])
    if "closed" in ctx.cols:
        return (f"{rows} rows say closed (column {status}) with an empty closure time (column "
                f"{ctx.cols['closed']!r}): their cases are closed at their rectification time, else at the time "
                "found")
    used = set(ctx.cols.values()) | set(ctx.type_columns)
    names = {c: column_key(c) for c in ctx.reader.columns if c not in used}
    likely = [c for c, n in names.items() if any(w in n for w in _CLOSURE_WORDS)
              and (n in _CLOSURE_WORDS or any(w in n for w in ("date", "time", "时间", "日期")))]
    hint = f" ({', '.join(repr(c) for c in likely)} may hold them)" if likely else ""
    if "rectified" in ctx.cols:
        stand_in = "closed at their rectification time (else at the time found)"
        name = "--map closed=COLUMN"
    else:
        stand_in = "rectified and closed at the time found (their hours to rectify count as 0 in the KPIs)"
        name = "--map closed=COLUMN (and that of the rectification times with --map rectified=COLUMN)"
    return (f"{rows} rows say closed (column {status}) but give no closure time: "
            f"their cases are {stand_in}; name the column of the closure times{hint} with {name}, then import "
            "the file again with --update to correct the rows loaded")


def _finish_labels(ctx: _EventBatchContext) -> None:
    """The report's suggestions for unmapped labels and its warnings about labels and statuses."""
    report = ctx.report
    if report.unmapped_types:
        report.unmapped_types = dict(sorted(report.unmapped_types.items(), key=lambda kv: (-kv[1], kv[0])))
        report.type_suggestions = {label: ctx.types.suggest(label) for label in report.unmapped_types} \
            if ctx.types is not None else {}
        rows = sum(report.unmapped_types.values())
        report.warnings.append(
            f"{rows:,} rows loaded with {len(report.unmapped_types):,} type labels that are no known type (kept "
            "as their source label, without a type or deadline): see unmapped_types; map them with "
            "`civicgrid types map LABEL CODE`")
    if ctx.kept_without_point:
        why = ctx.kept_without_point
        report.warnings.append(
            f"{sum(why.values())} rows with unusable coordinates kept without them (located by area or "
            "unlocated): " + ", ".join(f"{n} {r}" for r, n in why.most_common(3)))
    if ctx.area_code_columns and report.unlocated:
        column, n = ctx.area_code_columns.most_common(1)[0]
        report.warnings.append(
            f"{n:,} rows kept without coordinates have the code of a loaded area in column {column!r} (e.g. "
            f"{ctx.area_code_example[column]!r}): --map area={column} places them in their area (import the file "
            "again with --update to place the rows loaded)")
    if ctx.closed_without_time:
        report.warnings.append(_closed_without_time(ctx))
    if ctx.unknown_statuses:
        top = sorted(ctx.unknown_statuses.items(), key=lambda kv: -kv[1])
        report.warnings.append("unknown statuses loaded as open (their label kept): " + ", ".join(
            f"{w!r} ({k:,} rows)" for w, k in top[:10]) + (" …" if len(top) > 10 else ""))
