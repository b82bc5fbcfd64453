"""The import pipeline shared by every layer: read the file, map its columns, log the import, write the rows.

The steps live in the modules named after them: :mod:`~civicgrid.geo.columns` (which column holds each
field, clean cells), :mod:`~civicgrid.geo.locations` (coordinates, checked and in WGS84),
:mod:`~civicgrid.geo.dedup` (duplicate rows) and :mod:`~civicgrid.geo.import_report` (the report and the
rejected rows). This module reads the input (whole or in batches), starts an import and records it in the
``imports`` table, and inserts Arrow tables into the store.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from datetime import datetime
from typing import Self, TypeVar

import duckdb
import pyarrow as pa
from civicgrid.geo import staging
from civicgrid.geo.columns import FIELD_ALIASES, resolve_columns
from civicgrid.geo.errors import ImportFileError, ReadError
from civicgrid.geo.import_report import ImportReport, Rejects, note_reader_rejects, start_report
from civicgrid.geo.readers import BatchReader, ReadResult, read_batches, read_table
from civicgrid.geo.store import fetch_value
from civicgrid.geo.times import now_local, store_timezone, stored_moment

T = TypeVar("T")


logger = logging.getLogger(__name__)


def read_input(path: str | os.PathLike, *, encoding: str | None = None, layer: str | None = None,
               sheet: str | int | None = None) -> ReadResult:
    """Read an input file, turning reader errors into :class:`ImportFileError`."""
    logger.info("import: reading %s", path)
    try:
        src = read_table(path, encoding=encoding, layer=layer, sheet=sheet)
    except ReadError as exc:
        raise ImportFileError(str(exc)) from exc
    note_reader_rejects(src.rejects)
    logger.info("import: %s read as %s, %d rows", path, src.format, src.table.num_rows)
    return src


def prefetch(items: Iterable[T]) -> Iterator[T]:
    """Yield ``items``, producing each next one on a background thread while the caller works on the current.

    An error of the producer is raised in the caller; a caller that stops early stops the producer.
    """
    q: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as exc:  # handed to the caller, raised there
            put((end, exc))

    thread = threading.Thread(target=produce, name="civicgrid-read", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is end:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join()


def read_input_batches(path: str | os.PathLike, *, encoding: str | None = None, layer: str | None = None,
                       sheet: str | int | None = None, rows: int | None = None) -> BatchReader:
    """Read an input file batch by batch (:func:`geo.readers.read_batches`), reader errors — also those found
    in a later batch — raised as :class:`ImportFileError`."""
    logger.info("import: reading %s in batches", path)
    try:
        reader = read_batches(path, encoding=encoding, layer=layer, sheet=sheet,
                              **({"rows": rows} if rows else {}))
    except ReadError as exc:
        raise ImportFileError(str(exc)) from exc
    note_reader_rejects(reader.rejects)

    def batches(it):
        try:
            yield from it
        except ReadError as exc:
            raise ImportFileError(str(exc)) from exc

    reader.batches = batches(reader.batches)
    return reader


def start_import(what: str, path: str | os.PathLike, *, fields: list[str], required: Sequence[str] = (),
                 mapping: dict[str, str] | None = None, encoding: str | None = None, layer: str | None = None,
                 sheet: str | int | None = None, aliases: dict[str, tuple[str, ...]] | None = None,
                 ) -> tuple[ReadResult, dict[str, str], ImportReport, Rejects]:
    """Read a file whole and map its columns: the start of an areas, grids, sites or inspections import.

    Parameters
    ----------
    what
        The store layer imported into (the report's ``layer``).
    fields, required, mapping, aliases
        As for :func:`resolve_columns` (``aliases`` default: :data:`~civicgrid.geo.columns.FIELD_ALIASES`).
    encoding, layer, sheet
        As for :func:`read_input` (``layer``: of a GeoPackage or zip).

    Returns
    -------
    src, cols, report, rejects
        The file read, ``{field: column}``, the report started (with the columns used) and an empty
        :class:`Rejects` over the file's rows.
    """
    src = read_input(path, encoding=encoding, layer=layer, sheet=sheet)
    cols = resolve_columns(src.table, mapping or {}, fields=fields, required=required,
                           aliases=FIELD_ALIASES if aliases is None else aliases)
    report = start_report(what, path, src)
    report.columns = dict(cols)
    return src, cols, report, Rejects(src.table.column("__row__").to_numpy())


def next_id(con: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
    """Return the next free integer id of a table (above the ids an import in progress has reserved)."""
    return staging.next_id(con, table, column)


def record_import(con: duckdb.DuckDBPyConnection, report: ImportReport, started: datetime) -> None:
    """Log the import in the ``imports`` table (assigning ``report.import_id`` if not yet set).

    ``started_at`` and ``finished_at`` are the store's wall-clock time, like every time it keeps
    (:func:`~civicgrid.geo.times.stored_moment`; ``started`` naive: the machine's local time)."""
    if report.import_id is None:
        report.import_id = next_id(con, "imports", "import_id")
    logger.info("import %d of %s from %s: %d rows read, %d loaded, %d duplicates, %d rejected, %d outside the "
                "grids", report.import_id, report.layer, report.file, report.rows_read, report.loaded,
                report.duplicates, report.rejected, report.outside_grids)
    # on the store's wall clock like every stored time (not DuckDB's now(), in the machine's zone)
    tz = store_timezone(con)
    con.execute(
        "INSERT INTO imports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [report.import_id, report.layer, report.file, stored_moment(started, tz=tz),
         now_local(tz=tz, precision="microsecond"), report.rows_read, report.loaded,
         report.duplicates, report.rejected, report.outside_grids,
         json.dumps({k: v for k, v in report.to_dict().items() if k != "rejects"}, ensure_ascii=False)],
    )


def progress_bar(total: int, *, desc: str, enabled: bool = True):
    """Return a tqdm progress bar on stderr (disabled when not wanted or not a terminal)."""
    from tqdm.auto import tqdm

    # disable=None: tqdm turns itself off when stderr is not a terminal (a log file, a pipe, a test).
    return tqdm(total=total, desc=desc, unit="row", unit_scale=True, disable=None if enabled else True,
                file=sys.stderr, leave=False)


def insert_arrow(con: duckdb.DuckDBPyConnection, table_name: str, data: pa.Table, *,
                 geometry: str | None = None) -> None:
    """Insert an Arrow table into a store table (``geometry`` names a WKB column to convert).

    The table goes in as a one-shot batch stream: DuckDB copies it, where a registered table would be kept
    alive until the transaction ends (an import of many batches would hold all of them in memory).
    """
    con.register("_insert", pa.RecordBatchReader.from_batches(data.schema, data.to_batches()))
    try:
        cols = [c for c in data.column_names]
        select = ", ".join(f"ST_GeomFromWKB({c})" if c == geometry else c for c in cols)
        target = ", ".join("geom" if c == geometry else c for c in cols)
        con.execute(f"INSERT INTO {table_name} ({target}) SELECT {select} FROM _insert")
    finally:
        con.unregister("_insert")


class BatchWriter:
    """Inserts Arrow tables on a background thread, one at a time and in order, so the next batch is prepared
    meanwhile; leaving the block waits for the last insert (and re-raises its error)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, *, threads: int | None = None) -> None:
        self.con = con
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="civicgrid-insert")
        self.pending: Future[None] | None = None
        self.threads: object = None
        if threads is not None:
            self.threads = fetch_value(con, "SELECT current_setting('threads')")
            con.execute(f"SET threads = {int(threads)}")

    def insert(self, table: str, data: pa.Table) -> None:
        self.wait()
        self.pending = self.pool.submit(insert_arrow, self.con, table, data)

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
                    self.con.execute(f"SET threads = {int(str(self.threads))}")
                except duckdb.Error:
                    if exc_type is None:
                        raise
