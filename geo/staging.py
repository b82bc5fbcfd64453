"""Large writes that never hold up small ones: an import's rows are staged as Parquet files, then published.

A case move waits for the writers' lock (:func:`civicgrid.geo.store.writing`) only as long as another short
write holds it. An import of millions of rows must not hold that lock for its whole run, so it works in three
steps (:func:`importing`):

1. **Stage** (no lock): each batch of rows is written as a Parquet file ``import-<uuid>.parquet`` into the
   table's folder of the store's data folder (:meth:`Staging.add`). Nobody sees these files yet. Ids for the
   rows are *reserved* first in a very short write (:meth:`Staging.reserve`), so a case created meanwhile
   never takes one of them.
2. **Publish** (:meth:`Staging.publish`): one short write registers the files with the lake
   (``ducklake_add_data_files``) and runs whatever else the import does with its rows (creating cases, linking
   rebounds, logging the import). Readers see all of it at once, or none of it.
3. **Or discard**: an import that fails deletes its files; one that is killed leaves them, and the next import
   (or ``civicgrid maintain``) deletes every staged file the lake does not know.

Imports of one store take turns (a lock of their own, ``<db>.lock.import``), so two imports never
deduplicate against each other's unpublished rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from civicgrid.geo.store import (
    ALIAS,
    Location,
    _lake,
    fetch_value,
    locate,
    quote,
    recorded_bounds,
    set_meta,
    writing,
)

logger = logging.getLogger(__name__)

#: Name prefix of staged files (what leftover cleaning looks for).
STAGED_PREFIX = "import-"

#: Rows per row group of a staged file: DuckDB's own (a scan of the lake splits its work by row group).
ROW_GROUP_ROWS = 122_880

#: The Arrow type a staged column takes for each SQL type that Arrow writes to Parquet as DuckDB would (the
#: other types are written by DuckDB).
_ARROW_TYPES = {"BIGINT": pa.int64(), "INTEGER": pa.int32(), "SMALLINT": pa.int16(), "TINYINT": pa.int8(),
                "UBIGINT": pa.uint64(), "UINTEGER": pa.uint32(), "DOUBLE": pa.float64(), "FLOAT": pa.float32(),
                "BOOLEAN": pa.bool_(), "VARCHAR": pa.string(), "TIMESTAMP": pa.timestamp("us"), "DATE": pa.date32()}


#: Longest text value of a batch Arrow writes: Arrow leaves a column holding a longer one without its min/max in
#: the file (its ``max_statistics_size``), where DuckDB truncates them; a lake column without bounds in a file is a
#: wrong bound for DuckLake (``geo.store_files.repair_column_stats``), so such a batch is written by DuckDB.
MAX_ARROW_TEXT_BYTES = 4096


def arrow_writes(data: pa.Table, types: dict[str, str]) -> pa.Schema | None:
    """The schema Arrow writes ``data`` with as a staged file of a table of column ``types``
    (:func:`arrow_schema`), or None when DuckDB must write it (a cast, or a text value longer than
    :data:`MAX_ARROW_TEXT_BYTES`)."""
    schema = arrow_schema(data.schema, types)
    if schema is None:
        return None
    for name in data.column_names:
        for chunk in data.column(name).chunks:
            values = chunk.dictionary if pa.types.is_dictionary(chunk.type) else chunk
            if pa.types.is_string(values.type) and len(values) and \
                    (pc.max(pc.binary_length(values)).as_py() or 0) > MAX_ARROW_TEXT_BYTES:
                return None
    return schema


def arrow_schema(data: pa.Schema, types: dict[str, str]) -> pa.Schema | None:
    """The schema ``data`` is written to Parquet with, each column in the Arrow type of its SQL type in ``types``;
    None when a column needs DuckDB's cast (another type, or values Arrow would have to convert: text to
    numbers or times).

    Only casts that cannot change a value are taken: the same type, an all-null column, a string column
    (plain or dictionary: dictionaries stay dictionaries) into VARCHAR and a coarser timestamp into
    TIMESTAMP (microseconds).
    """
    fields = []
    for f in data:
        target = _ARROW_TYPES.get(types.get(f.name, ""))
        if target is None:
            return None
        t = f.type
        if t == target or pa.types.is_null(t):
            fields.append(pa.field(f.name, target))
        elif target == pa.string() and pa.types.is_dictionary(t) and t.value_type == pa.string():
            fields.append(pa.field(f.name, t))
        elif pa.types.is_timestamp(t) and pa.types.is_timestamp(target) and t.tz is None \
                and t.unit in ("s", "ms", "us"):
            fields.append(pa.field(f.name, target))
        else:
            return None
    return pa.schema(fields)


def _reserved_key(table: str) -> str:
    return f"ids.{table}"


def next_id(con: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
    """The next free id of ``table.column``: above every stored id and every id an import in progress has
    reserved (:meth:`Staging.reserve`). Use it inside a write (:func:`~civicgrid.geo.store.writing`).

    Writers of one machine take turns, so two of them never see the same maximum. Writers of *several* machines
    (a PostgreSQL catalog) do not share that lock: there every :func:`~civicgrid.geo.store.writing` transaction
    rewrites one row of ``meta`` at its start, so that of two writes that saw the same maximum the second one to
    commit conflicts and is run again (:class:`~civicgrid.geo.store.WriteConflictError`) instead of repeating
    ids.

    The largest stored id is read above a lower bound (:func:`_top_ids`), so that only the files and row groups
    holding the newest ids are read, not the whole table (the store's connections do not answer ``max`` from the
    catalog's statistics: ``geo.store.SAFE_OPTIMIZER_SETTINGS``); the stored maximum and the reserved ids are
    read in one statement."""
    return next_ids(con, [(table, column)])[table]


def next_ids(con: duckdb.DuckDBPyConnection, columns: Sequence[tuple[str, str]]) -> dict[str, int]:
    """:func:`next_id` of several ``(table, column)`` at once, in one statement (e.g. the new events' and audit
    rows' ids of a group of case writes): the next free id by table."""
    catalog = _catalog_path(con)
    return {table: max(top + 1, reserved) for table, (top, reserved) in _top_ids(con, catalog, columns).items()}


#: The largest id of each (catalog, table, column) this process has read: where the next read of it may start
#: (ids are only ever added; a bound that is too high is found out and the whole column read, see _top_ids).
_TOPS: dict[tuple[str, str, str], int] = {}


def _top_ids(con: duckdb.DuckDBPyConnection, catalog: str, columns: Sequence[tuple[str, str]]
             ) -> dict[str, tuple[int, int]]:
    """By table of ``columns``: the largest stored id (0 for none) and the first id after those an import in
    progress reserved (0 for none), all read in one statement.

    ``max(id)`` over a lake table reads the whole column (tens of millions of rows for ``case_log``: 1.4 s at
    10M events). Read as ``max(id) WHERE id >= bound`` with a literal bound, the lake skips every file whose
    recorded range lies below the bound (the catalog's per-file statistics, which are right where the
    table-level ones may not be: bench/DUCKLAKE.md section 10) and the Parquet reader every row group: only the
    newest rows are read. The bound is the largest id this process read before, or at first the catalog's
    table-level maximum. Either may be wrong (rows removed since, a store made again at the same path, a wrong
    table-level bound): a bound above every stored id finds nothing and the whole column is read; a bound
    below the maximum only reads more. So the answer is always the true maximum."""
    bounds = []
    for table, column in columns:
        bound = _TOPS.get((catalog, table, column))
        bounds.append(_recorded_top(con, table, column) if bound is None else bound)
    # literals: a prepared lake query is planned twice (≈ 4 ms)
    parts = [f"(SELECT max({column}) FROM {table} WHERE {column} >= {int(bound or 0)}), "
             f"(SELECT value FROM meta WHERE key = {quote(_reserved_key(table))} LIMIT 1)"
             for (table, column), bound in zip(columns, bounds, strict=True)]
    row = con.execute(f"SELECT {', '.join(parts)}").fetchone()
    values = list(row) if row is not None else [None] * (2 * len(columns))
    out = {}
    for k, ((table, column), bound) in enumerate(zip(columns, bounds, strict=True)):
        top, reserved = values[2 * k], values[2 * k + 1]
        if top is None and bound:  # nothing at or above the bound: it was too high
            top = fetch_value(con, f"SELECT max({column}) FROM {table}")
        top = int(top or 0)
        if top > 0:
            _TOPS[(catalog, table, column)] = top
        out[table] = (top, int(reserved) if reserved is not None else 0)
    return out


def _recorded_top(con: duckdb.DuckDBPyConnection, table: str, column: str) -> int | None:
    """The catalog's table-level maximum of ``table.column`` (None when it has none): a starting bound for
    :func:`_top_ids`, never trusted as the answer."""
    value = recorded_bounds(con, table, column)[1]
    try:
        return int(value) if value is not None else None
    except ValueError:  # not a whole number: no bound (the whole column is read)
        return None


def _catalog_path(con: duckdb.DuckDBPyConnection) -> str:
    """The catalog of the store ``con`` writes, e.g. ``sqlite:/data/city.duckdb`` or ``postgres:dbname=...``."""
    return str(fetch_value(con, "SELECT path FROM duckdb_databases() WHERE database_name = ?", [ALIAS]))


def _catalog_kind(con: duckdb.DuckDBPyConnection) -> str:
    """``sqlite`` or ``postgres``: the catalog of the store ``con`` writes."""
    return _catalog_path(con).split(":", 1)[0]


def reserve_ids(db: str | os.PathLike | None, table: str, column: str, n: int) -> int:
    """Reserve ``n`` ids of ``table.column`` for rows not yet published, in one short write; return the first."""
    with writing(db) as con:
        first = next_id(con, table, column)
        set_meta(con, _reserved_key(table), str(first + int(n)))
    return first


class Staging:
    """The Parquet files of one import, before they are published (see the module docstring).

    Parameters
    ----------
    db
        The store.
    """

    def __init__(self, db: str | os.PathLike | None) -> None:
        self.db = db
        self.location: Location = locate(db)
        lake = _lake(self.location, create=True)
        self.con = lake.cursor()  # reads: autocommit, sees every committed write
        self._writer = lake.cursor()  # writes the files, on the background thread
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="civicgrid-stage")
        self._pending: Future | None = None
        self.files: dict[str, list[Path]] = {}
        self.rows: dict[str, int] = {}
        self._types: dict[str, dict[str, str]] = {}
        self._reserved: set[str] = set()
        #: Ids reserved ahead and not handed out yet, by table: (next, end).
        self._ahead: dict[str, tuple[int, int]] = {}

    # -- ids -----------------------------------------------------------------------------------------------

    def reserve(self, table: str, column: str, n: int, *, ahead: int = 0) -> int:
        """Reserve ``n`` ids of ``table.column`` for staged rows; return the first.

        ``ahead``: reserve that many more in the same write, handed out by the next calls for the table (an
        import of many batches reserves its file's rows once, not one write a batch). Ids reserved and not used
        are given back when the import is published or discarded."""
        self._reserved.add(table)
        nxt, end = self._ahead.get(table, (0, 0))
        if end - nxt >= n:
            self._ahead[table] = (nxt + int(n), end)
            return nxt
        first = reserve_ids(self.db, table, column, int(n) + max(int(ahead), 0))
        self._ahead[table] = (first + int(n), first + int(n) + max(int(ahead), 0))
        return first

    # -- files ---------------------------------------------------------------------------------------------

    def _column_types(self, table: str) -> dict[str, str]:
        if table not in self._types:
            rows = self.con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_catalog = ? AND table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
                [ALIAS, table]).fetchall()
            if not rows:
                msg = f"no table {table!r} in the store"
                raise ValueError(msg)
            self._types[table] = dict(rows)
        return self._types[table]

    def add(self, table: str, data: pa.Table) -> None:
        """Write ``data`` (columns of ``table``; the others get their defaults) as a staged Parquet file.

        The file is written on a background thread while the caller prepares the next batch; :meth:`wait`
        waits for it (and raises its error)."""
        types = self._column_types(table)
        unknown = [c for c in data.column_names if c not in types]
        if unknown:
            msg = f"columns {unknown} are not columns of {table}"
            raise ValueError(msg)
        self.wait()
        if not data.num_rows:
            return
        folder = self.location.data_path / "main" / table
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{STAGED_PREFIX}{uuid.uuid4().hex}.parquet"
        self.files.setdefault(table, []).append(path)
        self.rows[table] = self.rows.get(table, 0) + data.num_rows
        select = ", ".join(f"CAST({c} AS {types[c]}) AS {c}" for c in data.column_names)
        self._pending = self._pool.submit(self._write, data, select, path, arrow_writes(data, types))

    def _write(self, data: pa.Table, select: str, path: Path, schema: pa.Schema | None = None) -> None:
        """Write ``data`` as the Parquet file ``path``: by Arrow when its columns have their stored types already
        (``schema``: half the CPU of DuckDB's COPY, which casts and re-encodes every value), else by DuckDB."""
        if schema is not None:
            # dictionary pages for the dictionary columns only (codes, labels): trying them on ids, times, points
            # and texts costs a third of the write and saves nothing
            pq.write_table(data.cast(schema), path, row_group_size=ROW_GROUP_ROWS, compression="snappy",
                           use_dictionary=[f.name for f in schema if pa.types.is_dictionary(f.type)])
            return
        self._writer.register("_stage", pa.RecordBatchReader.from_batches(data.schema, data.to_batches()))
        try:
            self._writer.execute(f"COPY (SELECT {select} FROM _stage) TO {quote(str(path))} (FORMAT parquet)")
        finally:
            self._writer.unregister("_stage")

    def scratch(self) -> duckdb.DuckDBPyConnection:
        """A new cursor on the store (autocommit, ``USE lake``) whose TEMP tables are its own: work on the staged
        rows before they are published, e.g. with temp tables that shadow the lake's tables of the same name."""
        return _lake(self.location, create=False).cursor()

    def columns(self, table: str) -> dict[str, str]:
        """The columns of ``table`` in the store and their SQL types, in order."""
        return dict(self._column_types(table))

    def new_file(self, table: str) -> Path:
        """The path of one more staged file of ``table``, listed (a failed import deletes it) before anything is
        written there (:meth:`write_file`)."""
        folder = self.location.data_path / "main" / table
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{STAGED_PREFIX}{uuid.uuid4().hex}.parquet"
        self.files.setdefault(table, []).append(path)
        return path

    def write_file(self, table: str, data: pa.Table, path: Path, *, con: duckdb.DuckDBPyConnection) -> int:
        """Write ``data`` (columns of ``table``) as the staged file ``path`` (:meth:`new_file`) on the caller's
        thread, as :meth:`add` writes its files (by Arrow, or by DuckDB on the caller's cursor ``con`` when a column
        needs a cast); return its rows. Several threads may write files at once, each with its own cursor; the
        caller counts the rows in :attr:`rows`."""
        types = self._column_types(table)
        select = ", ".join(f"CAST({c} AS {types[c]}) AS {c}" for c in data.column_names)
        schema = arrow_writes(data, types)
        if schema is not None:
            self._write(data, select, path, schema)
        else:
            con.register("_stage_file", pa.RecordBatchReader.from_batches(data.schema, data.to_batches()))
            try:
                con.execute(f"COPY (SELECT {select} FROM _stage_file) TO {quote(str(path))} (FORMAT parquet)")
            finally:
                con.unregister("_stage_file")
        return data.num_rows

    def unstage(self, table: str, paths: list[Path], *, rows: int = 0) -> None:
        """Remove the staged files ``paths`` of ``table`` holding ``rows`` rows (staged again in other files)."""
        self.rows[table] = self.rows.get(table, 0) - rows
        drop = set(paths)
        self.files[table] = [p for p in self.files.get(table, []) if p not in drop]
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def relation(self, table: str, columns: str = "*") -> str:
        """SQL for ``columns`` of ``table`` as published plus the rows staged so far (call :meth:`wait` before
        running it)."""
        files = self.files.get(table)
        if not files:
            return f"(SELECT {columns} FROM {table})"
        paths = ", ".join(quote(str(p)) for p in files)
        return f"(SELECT {columns} FROM {table} UNION ALL SELECT {columns} FROM read_parquet([{paths}]))"

    def wait(self) -> None:
        """Wait until the last staged file is written."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    # -- publish or discard ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def publish(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One short write: register every staged file, then yield the transaction for the import's own
        follow-up (cases, rebounds, its log row). Everything becomes visible at once when the block ends."""
        self.wait()
        with writing(self.db) as con:
            for table, files in self.files.items():
                for path in files:
                    con.execute(f"CALL ducklake_add_data_files({quote(ALIAS)}, {quote(table)}, "
                                f"{quote(str(path))}, allow_missing => true)")
            for table in sorted(self._reserved):  # the rows are in: their ids are above the stored ones now
                con.execute("DELETE FROM meta WHERE key = ?", [_reserved_key(table)])
            yield con
        self.files = {}
        self._reserved = set()
        self._ahead = {}

    def discard(self) -> None:
        """Delete the staged files (the import failed)."""
        with contextlib.suppress(Exception):
            self.wait()
        for files in self.files.values():
            for path in files:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        self.files = {}
        if self._reserved:  # give the reserved ids back (a failed import leaves the store as it was)
            try:
                with writing(self.db) as con:
                    for table in sorted(self._reserved):
                        con.execute("DELETE FROM meta WHERE key = ?", [_reserved_key(table)])
            except Exception:  # the import's own error matters more; a stale reservation only skips ids
                logger.exception("%s: could not release the ids reserved by a failed import", self.location.name)
            self._reserved = set()
            self._ahead = {}

    def close(self) -> None:
        self._pool.shutdown()
        for cur in (self.con, self._writer):
            with contextlib.suppress(Exception):
                cur.close()


class LockedStaging(Staging):
    """An import that changes stored rows (``--update``): everything in one write transaction holding the
    writers' lock, as before staging existed. Same interface as :class:`Staging`: ``con`` is the transaction,
    :meth:`add` inserts (on the background thread), :meth:`reserve` takes ids in the transaction and
    :meth:`publish` yields the same transaction. Case work waits for such an import."""

    def __init__(self, db: str | os.PathLike | None, con: duckdb.DuckDBPyConnection) -> None:
        self.db = db
        self.location = locate(db)
        self.con = con
        self._writer = con
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="civicgrid-insert")
        self._pending = None
        self.files = {}
        self.rows = {}
        self._types = {}
        self._reserved = set()
        self._next: dict[str, int] = {}

    def reserve(self, table: str, column: str, n: int, *, ahead: int = 0) -> int:
        first = self._next.get(table) or next_id(self.con, table, column)
        self._next[table] = first + int(n)
        return first

    def add(self, table: str, data: pa.Table) -> None:
        self.wait()
        if data.num_rows:
            self.rows[table] = self.rows.get(table, 0) + data.num_rows
            self._pending = self._pool.submit(self._insert, table, data)

    def _insert(self, table: str, data: pa.Table) -> None:
        self.con.register("_insert", pa.RecordBatchReader.from_batches(data.schema, data.to_batches()))
        try:
            self.con.execute(f"INSERT INTO {table} ({', '.join(data.column_names)}) SELECT * FROM _insert")
        finally:
            self.con.unregister("_insert")

    def relation(self, table: str, columns: str = "*") -> str:
        return f"(SELECT {columns} FROM {table})"

    @contextlib.contextmanager
    def publish(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.wait()
        yield self.con

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.wait()

    def close(self) -> None:
        self._pool.shutdown()


def _import_lock_path(location: Location) -> Path:
    return location.lock_path.with_name(location.lock_path.name + ".import")


@contextlib.contextmanager
def _import_lock(location: Location, *, wait: bool = True) -> Iterator[bool]:
    """Hold the imports' lock (yields False, without it, when ``wait`` is false and an import holds it)."""
    with open(_import_lock_path(location), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def leftover_files(con: duckdb.DuckDBPyConnection, location: Location) -> list[Path]:
    """Staged files the lake does not know: what killed imports left behind. Only meaningful while holding the
    imports' lock (otherwise an import in progress has such files too)."""
    meta = f"__ducklake_metadata_{ALIAS}"
    known = {Path(p).name for (p,) in con.execute(
        f"SELECT path FROM {meta}.ducklake_data_file WHERE path LIKE '%{STAGED_PREFIX}%' "
        f"UNION ALL SELECT path FROM {meta}.ducklake_files_scheduled_for_deletion "
        f"WHERE path LIKE '%{STAGED_PREFIX}%'").fetchall()}
    found = (location.data_path / "main").glob(f"*/{STAGED_PREFIX}*.parquet")
    return sorted(p for p in found if p.name not in known)


def remove_leftovers(db: str | os.PathLike | None, *, wait: bool = True) -> list[Path] | None:
    """Delete what killed imports left behind; return the files deleted. An import in progress is waited for,
    or (``wait=False``) nothing is done and None is returned."""
    location = locate(db)
    with _import_lock(location, wait=wait) as held:
        return _remove_leftovers(location) if held else None


def _remove_leftovers(location: Location) -> list[Path]:
    cur = _lake(location, create=True).cursor()
    try:
        files = leftover_files(cur, location)
    finally:
        cur.close()
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if files:
        logger.warning("%s: removed %d file(s) left by an interrupted import", location.name, len(files))
    return files


@contextlib.contextmanager
def importing(db: str | os.PathLike | None, *, locked: bool = False) -> Iterator[Staging]:
    """Stage an import (see the module docstring): imports of the store take turns; what a killed import
    left is removed first; a failed import's files are deleted, and nothing of it is published.

    ``locked=True``: the whole import is one write transaction holding the writers' lock
    (:class:`LockedStaging`), for an import that must change stored rows in the same transaction.

    Examples
    --------
    >>> with importing("city.duckdb") as staging:  # doctest: +SKIP
    ...     first = staging.reserve("events", "event_id", batch.num_rows)
    ...     staging.add("events", rows)
    ...     with staging.publish() as con:
    ...         con.execute("INSERT INTO imports ...")
    """
    location = locate(db)
    if locked:  # one transaction holding the writers' lock (an import that replaces stored rows)
        with _import_lock(location), writing(db) as con:
            locked_staging = LockedStaging(db, con)
            try:
                yield locked_staging
            finally:
                locked_staging.close()
        return
    with _import_lock(location):
        _remove_leftovers(location)
        staging = Staging(db)
        try:
            yield staging
            if any(staging.files.values()):
                msg = "staged files were neither published nor discarded"
                raise RuntimeError(msg)
        except BaseException:
            staging.discard()
            raise
        finally:
            staging.close()
