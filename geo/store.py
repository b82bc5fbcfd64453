"""The civicgrid store: a DuckLake shared by every reader and writer of a city, in one process or many.

What ``--db`` names
-------------------
A store is a `DuckLake <https://ducklake.select>`_: a *catalog* database holds the tables' metadata and every
committed version (snapshot), and the rows live in Parquet files in a *data folder*.

* ``--db city.duckdb`` (the default kind, nothing to run): the catalog is the SQLite file ``city.duckdb``
  (in WAL mode, with ``city.duckdb-wal`` and ``city.duckdb-shm`` beside it while open), the data folder is
  ``city.duckdb.files/`` beside it (one folder per table, ``main/<table>/*.parquet``), and
  ``city.duckdb.lock`` is the writers' lock file. All of it belongs to the store: copy it with
  :func:`copy_store`, delete it with :func:`remove_store`. One machine only (SQLite's WAL needs shared memory).
* ``--db postgresql://user@host/dbname`` (an office server): the catalog is a PostgreSQL database and the data
  folder is the ``data_path`` setting (``CIVICGRID_DATA_PATH``, ``civicgrid --data``), e.g. a folder every
  machine mounts at the same path. Several services, imports and notebooks on several machines share it.

How readers and writers share it
--------------------------------
Each process opens a store once (:class:`Store`, :func:`writing`): one DuckDB instance with the spatial,
DuckLake and catalog extensions loaded from their files (never fetched), the lake attached as ``lake``.

* **Readers** run short autocommit queries: each sees every write committed before it started, and never half
  of one. No reopen, no lock.
* **Writers** (:func:`writing`) run one transaction. Writers of one store take turns: a lock per process and
  an advisory lock on ``<db>.lock`` across processes of one machine, held only for the transaction, so a case
  move waits for at most another short write, never for a whole import (imports stage their Parquet files
  first and take the lock only to publish them; see :mod:`civicgrid.geo.staging`). A write that fails leaves the store
  as it was; a write that loses a race with another machine is retried (:func:`retry_writes`).
* The cost of a write does not grow with the store: nothing is copied, a small write is a few rows in the
  catalog (data inlining) and a large one adds Parquet files.

Every committed write is a snapshot: :meth:`Store.snapshot_id` keys result caches, and
``open_store(path, at=...)`` opens a read-only view of the store as it was at a snapshot id or a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import duckdb
import duckdb_extension_ducklake
import duckdb_extension_postgres_scanner
import duckdb_extension_spatial
import duckdb_extension_sqlite_scanner
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError, StoreError, StoreVersionError
from civicgrid.geo.schema import LAKE_MIGRATIONS, LAKE_SCHEMA, SCHEMA_VERSION
from civicgrid.geo.settings import Settings, get_settings

try:  # built at install where a C compiler is found (pyproject.toml's ext-modules)
    from civicgrid.geo import _sqlite_sleep
except ImportError:  # pragma: no cover - an install without a compiler
    _sqlite_sleep = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: Default store path, used when ``--db`` is not given; overridable with the ``CIVICGRID_DB`` environment
#: variable (the ``db`` setting).
DEFAULT_DB: str = Settings.model_fields["db"].default

#: The name the lake is attached under in every connection (queries name tables without it: ``USE lake``).
ALIAS = "lake"

#: Rows a write may keep in the catalog instead of a Parquet file (a case move, a user, a setting): set on
#: every new store. Tables with a GEOMETRY column are never inlined.
INLINE_ROWS = 1000

#: DuckDB optimizers every store connection runs without. DuckLake 1.5.5 can record a table's min/max of a column
#: narrower than the values stored (a column all NULL in the first write of the table's first data commit, with
#: values in a later write of that commit: the table's bounds stay NULL, and the next commit's values become
#: them; ``bench/DUCKLAKE.md`` section 10, ``bench/ducklake_spike/t10_inlined_stats.py``). These two optimizers
#: trust those bounds: a sort compressed on the min reads 2 as 65538, a filter below the min finds nothing, a
#: GROUP BY fails ("Perfect hash aggregate ... statistics ... corrupt"). Without them every read is right,
#: whatever the catalog's statistics; the cost is measured by ``bench/stats_guard_bench.py``.
SAFE_OPTIMIZER_SETTINGS = "compressed_materialization,statistics_propagation"

_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False, "autoload_known_extensions": False,
    # instance-wide (DuckDB's scope for it is GLOBAL): the connection and every cursor of it
    "disabled_optimizers": SAFE_OPTIMIZER_SETTINGS}
#: Run on every connection and cursor: the lake by default, and no DuckDB progress bar (it would print into the
#: output of the CLI and of scripts; civicgrid draws its own).
def _session(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"USE {ALIAS}")
    # (in Jupyter without ipywidgets DuckDB refuses to change it, and draws no bar there)
    with contextlib.suppress(duckdb.Error):
        con.execute("SET enable_progress_bar = false")



_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_PG_PREFIXES = ("postgresql://", "postgres://", "postgres:")
#: What a ``postgresql://`` URL becomes when it went through ``pathlib.Path`` (``//`` collapsed to ``/``).
_MANGLED_PG = ("postgresql:/", "postgres:/")

_EXTENSIONS = {"spatial": duckdb_extension_spatial, "ducklake": duckdb_extension_ducklake,
               "sqlite_scanner": duckdb_extension_sqlite_scanner,
               "postgres_scanner": duckdb_extension_postgres_scanner}

P = ParamSpec("P")
R = TypeVar("R")


def default_db_path() -> str:
    """Return the store of the ``db`` setting: ``$CIVICGRID_DB``, else :data:`DEFAULT_DB`."""
    return get_settings().db


# --- extensions and plain connections ---------------------------------------------------------------------

def extension_path(name: str) -> Path:
    """Return the file of the DuckDB extension ``name`` (``spatial``, ``ducklake``, ``sqlite_scanner``,
    ``postgres_scanner``) installed from PyPI by ``duckdb-extension-<name>``."""
    module = _EXTENSIONS.get(name)
    if module is None:
        msg = f"unknown extension {name!r}; civicgrid loads {', '.join(_EXTENSIONS)}"
        raise StoreError(msg)
    root = Path(str(module.__file__)).resolve().parent / "extensions"
    wanted = root / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if wanted.exists():
        return wanted
    found = sorted(root.glob(f"*/{name}.duckdb_extension"))
    if not found:
        msg = f"{name} extension file not found under {root}; reinstall duckdb-extension-{name.replace('_', '-')}"
        raise StoreError(msg)
    return found[-1]


#: How long a SQLite catalog's busy handler waits for another connection's lock before the write or read fails.
SQLITE_BUSY_PATIENCE_S = 10
#: The wait between two of its tries once short sleeps are installed (:func:`load_extensions`), in microseconds.
SQLITE_BUSY_STEP_US = 2000

_sleeps_lock = threading.Lock()
_sleeps_installed: bool | None = None  # None: not tried in this process


def short_sleeps() -> bool:
    """Whether the SQLite inside ``sqlite_scanner`` sleeps what it is asked in this process.

    The SQLite compiled into PyPI's ``duckdb-extension-sqlite-scanner`` 1.5.5 was built without ``usleep`` and
    ``nanosleep``, so its unix VFS rounds every sleep up to whole seconds (``bench/DUCKLAKE.md`` section 12). A
    SQLite catalog's reads beside a writer then stall for a second: a reader that races a writer's WAL commit
    waits a few microseconds, and a busy handler's retry a second, and both took one. The C module
    ``civicgrid.geo._sqlite_sleep`` gives that VFS an ``xSleep`` that sleeps what is asked, and a busy handler's
    one-second retry :data:`SQLITE_BUSY_STEP_US`; :meth:`Location.attach_sql` raises the busy timeout to match, so
    the handler still waits :data:`SQLITE_BUSY_PATIENCE_S` in all. Installed once per process, the first time
    the extension is loaded (:func:`load_extensions`); ``False`` where the ``sqlite_short_sleeps`` setting is off,
    or the C module was not built (a warning says so) or could not install.
    """
    return bool(_sleeps_installed)


def _install_short_sleeps(path: Path) -> None:
    global _sleeps_installed
    with _sleeps_lock:
        if _sleeps_installed is not None:
            return
        if not get_settings().sqlite_short_sleeps:
            _sleeps_installed = False
            return
        if _sqlite_sleep is None:
            logger.warning("civicgrid.geo._sqlite_sleep was not built (no C compiler at install): a SQLite "
                           "catalog's reads beside a writer can stall for a second (reinstall with gcc)")
            _sleeps_installed = False
            return
        try:
            patched = _sqlite_sleep.install(str(path), SQLITE_BUSY_STEP_US)
        except (RuntimeError, ValueError) as exc:
            logger.warning("short SQLite sleeps not installed (%s): a SQLite catalog's reads beside a writer "
                           "can stall for a second", exc)
            patched = 0
        _sleeps_installed = patched > 0


def load_extensions(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> None:
    """Load the DuckDB extensions ``names`` into ``con`` from their files (never fetched).

    Loading ``sqlite_scanner`` the first time in a process also installs its short sleeps (:func:`short_sleeps`),
    and every time makes that instance scan SQLite tables on one thread.
    """
    for name in names:
        path = extension_path(name)
        con.load_extension(str(path))
        if name == "sqlite_scanner":
            if _sleeps_installed is None:
                _install_short_sleeps(path)
            # A SQLite catalog's table scans on one thread: a parallel scan opens a SQLite connection of its own for
            # each further thread, with sqlite_scanner's default busy timeout (5 s, not META_BUSY_TIMEOUT), six
            # connections of seven per catalog read here. Besides their cost (each one opens, loads the schema and
            # closes), with short sleeps their five busy tries last 10 ms, and reads beside a writer failed with
            # "database is locked" (bench/DUCKLAKE.md section 12).
            con.execute("SET GLOBAL sqlite_disable_multithreaded_scans = true")


def sqlite_busy_timeout_ms() -> int:
    """The ``META_BUSY_TIMEOUT`` that makes a SQLite catalog's busy handler wait :data:`SQLITE_BUSY_PATIENCE_S`.

    Without ``usleep`` that handler gives up after ``timeout / 1000`` tries, whatever each try sleeps: one second
    each by default, :data:`SQLITE_BUSY_STEP_US` with short sleeps installed.
    """
    if short_sleeps():
        return SQLITE_BUSY_PATIENCE_S * 1000 * (1_000_000 // SQLITE_BUSY_STEP_US)
    return SQLITE_BUSY_PATIENCE_S * 1000


def spatial_extension_path() -> Path:
    """Return the path of the DuckDB spatial extension installed by ``duckdb-extension-spatial``."""
    return extension_path("spatial")


def connect(path: str | os.PathLike | None = None, *, read_only: bool = False,
            extensions: tuple[str, ...] = ("spatial",)) -> duckdb.DuckDBPyConnection:
    """Open a plain DuckDB connection (not a store) with extensions loaded from their files.

    Extension autoinstall and autoload are off: nothing is fetched from the network. Used for scratch
    databases and for reading an old single-file store (:func:`migrate_file`); a store is opened with
    :func:`open_store` or :func:`writing`.

    Parameters
    ----------
    path
        A DuckDB database file, or ``None`` for an in-memory database.
    read_only
        Attach the file read-only (as catalog ``city``, selected with ``USE``).
    extensions
        Extensions to load.
    """
    if read_only and path is not None:
        con = duckdb.connect(":memory:", config=_CONFIG)
        load_extensions(con, extensions)
        con.execute(f"ATTACH {quote(str(path))} AS city (READ_ONLY)")
        con.execute("USE city")
        return con
    con = duckdb.connect(str(path) if path is not None else ":memory:", config=_CONFIG)
    load_extensions(con, extensions)
    return con


def fetch_value(con: duckdb.DuckDBPyConnection, query: str, params: list | dict | None = None) -> Any:
    """Return the first column of the first row of ``query`` (None when it returns no row)."""
    row = con.execute(query, params).fetchone()
    return row[0] if row is not None else None


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --- where a store lives ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Location:
    """Where a store lives: its catalog, data folder and writers' lock file.

    Attributes
    ----------
    name
        What the user gave (``city.duckdb``, ``postgresql://...``), for messages.
    kind
        ``"sqlite"`` (a catalog file) or ``"postgres"`` (a catalog database).
    catalog
        The catalog file (absolute) or the PostgreSQL connection string.
    data_path
        The data folder (absolute).
    lock_path
        The writers' lock file.
    """

    name: str
    kind: str
    catalog: str
    data_path: Path
    lock_path: Path

    def attach_sql(self, alias: str = ALIAS, *, read_only: bool = False,
                   snapshot: int | str | None = None) -> str:
        """The ``ATTACH`` statement of this store (read-only at a snapshot id or time when ``snapshot``)."""
        if self.kind == "sqlite":
            uri = f"ducklake:sqlite:{self.catalog}"
            options = ["META_JOURNAL_MODE 'WAL'", f"META_BUSY_TIMEOUT {sqlite_busy_timeout_ms()}"]
        else:
            uri = f"ducklake:postgres:{self.catalog}"
            options = []
        options += [f"DATA_PATH {quote(str(self.data_path) + os.sep)}", "OVERRIDE_DATA_PATH true"]
        if read_only or snapshot is not None:
            options.append("READ_ONLY")
        if isinstance(snapshot, int):
            options.append(f"SNAPSHOT_VERSION {int(snapshot)}")
        elif snapshot is not None:
            options.append(f"SNAPSHOT_TIME {quote(str(snapshot))}")
        return f"ATTACH {quote(uri)} AS {alias} ({', '.join(options)})"

    def exists(self) -> bool:
        """Whether the catalog exists (always assumed for a PostgreSQL catalog)."""
        return self.kind == "postgres" or Path(self.catalog).exists()


def locate(db: str | os.PathLike | None = None, *, data_path: str | os.PathLike | None = None) -> Location:
    """Return where the store ``db`` lives (see the module docstring for the layout).

    Parameters
    ----------
    db
        A path (SQLite catalog; default: the ``db`` setting) or a ``postgresql://`` URL (PostgreSQL catalog).
    data_path
        The data folder of a PostgreSQL-catalog store (default: the ``data_path`` setting).
    """
    text = str(db if db is not None else default_db_path())
    if text.startswith(_MANGLED_PG) and not text.startswith(_PG_PREFIXES[:2]):
        # pathlib.Path("postgresql://u@h/db") is "postgresql:/u@h/db": opening it as a file would create a folder
        # "postgresql:" in the working directory and a SQLite store in it
        msg = (f"{text} looks like a PostgreSQL URL that went through pathlib.Path ('//' became '/'); pass the "
               "URL itself (a str), never pathlib.Path(url)")
        raise StoreError(msg)
    if is_postgres_url(text):
        folder = data_path or get_settings().data_path
        if not folder:
            msg = (f"a store with a PostgreSQL catalog ({text}) needs a data folder: give --data or set "
                   "CIVICGRID_DATA_PATH (a folder every machine of the office mounts at the same path)")
            raise StoreError(msg)
        folder = Path(folder).absolute()
        conninfo = text.removeprefix("postgres:") if text.startswith("postgres:") and "://" not in text else text
        return Location(name=text, kind="postgres", catalog=conninfo, data_path=folder,
                        lock_path=folder / ".civicgrid.lock")
    path = Path(text).absolute()
    return Location(name=text, kind="sqlite", catalog=str(path), data_path=path.with_name(path.name + ".files"),
                    lock_path=path.with_name(path.name + ".lock"))


def is_postgres_url(db: str | os.PathLike | None) -> bool:
    """Whether ``db`` names a store with a PostgreSQL catalog (``postgresql://``, ``postgres://`` or
    ``postgres:<conninfo>``) rather than a catalog file: the one place that decides, used by :func:`locate` and
    by every command that treats a file store differently (``civicgrid demo --force``)."""
    return db is not None and str(db).startswith(_PG_PREFIXES)


def file_kind(path: str | os.PathLike) -> str:
    """What is at ``path``: ``"store"`` (a DuckLake SQLite catalog), ``"file-store"`` (an old single-file
    DuckDB store, see :func:`migrate_file`), ``"missing"`` or ``"other"``."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return "missing"
    except IsADirectoryError:
        return "other"
    if head == _SQLITE_MAGIC:
        return "store"
    if len(head) == 16 and head[8:12] == b"DUCK":
        return "file-store"
    if not head:
        return "missing"  # an empty file (e.g. made by mkstemp) becomes a store
    return "other"


# --- the process's connection to each store ---------------------------------------------------------------

class _ChangeProbe:
    """Whether a store may have changed since its snapshot id was last read, without asking the catalog.

    A SQLite catalog changes only by writes to its file or its WAL (``<db>-wal``): a committed write changes the
    size or the modification time of one of them (a copied or replaced store: the inode). So the snapshot id read
    from the lake is kept with the files' ``stat`` (device, inode, size, ``mtime_ns``) taken before the query, and
    a later call answers it again without a query while the ``stat`` is unchanged. File times are coarse (a
    write in the same clock tick as the previous one keeps the same ``mtime``, and a WAL restarted after a
    checkpoint keeps its size): a ``stat`` whose newest time is less than :data:`TRUST_AFTER_NS` old is not
    trusted, and the lake is asked again until the files have been quiet that long. A PostgreSQL catalog has
    no file to watch: it is asked every time.
    """

    #: How old the newest file time must be before an unchanged ``stat`` counts as "no write since".
    TRUST_AFTER_NS = 1_000_000_000

    def __init__(self, location: Location) -> None:
        self.files = ((location.catalog, location.catalog + "-wal") if location.kind == "sqlite" else ())
        self._lock = threading.Lock()
        self._known: tuple[tuple, int] | None = None  # (trusted stat, snapshot id)

    def _stat(self) -> tuple[tuple, int]:
        out: list[tuple[int, int, int, int] | None] = []
        newest = 0
        for name in self.files:
            try:
                st = os.stat(name)
            except FileNotFoundError:
                out.append(None)
                continue
            if st.st_size == 0 and name.endswith("-wal"):
                # an empty WAL holds no write, as a missing one: a SQLite connection kept open (the cursor a thread
                # keeps, Store.reading) creates it and touches its time at each read; a write makes it grow, or
                # (checkpointed into the catalog file) changes that file
                out.append(None)
                continue
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
            newest = max(newest, st.st_mtime_ns)
        return tuple(out), newest

    def snapshot_id(self, query: Callable[[], int]) -> int:
        """The snapshot id: the one known while the files are unchanged, else ``query()`` (the lake's)."""
        if not self.files:
            return query()
        stat, newest = self._stat()
        known = self._known
        if known is not None and known[0] == stat:
            return known[1]
        snapshot = query()  # after the stat: a write in between makes the next stat differ, and asks again
        if time.time_ns() - newest >= self.TRUST_AFTER_NS:
            with self._lock:
                self._known = (stat, snapshot)
        return snapshot


class _Lake:
    """One process's connection to one store: a DuckDB instance with the lake attached, and the writers' lock."""

    def __init__(self, location: Location, *, create: bool) -> None:
        self.location = location
        self.write_lock = threading.RLock()
        self.probe = _ChangeProbe(location)
        self._reader = threading.local()  # each thread's kept cursor (reading)
        self._writer = threading.local()  # each thread's kept cursor for writes (writing with keep_cursor)
        #: ``meta`` values set when the store is created and never changed (:meth:`Store.fixed_meta`), once read
        self.fixed: dict[str, str | None] = {}
        self.con = duckdb.connect(":memory:", config=_CONFIG)
        catalog_ext = "sqlite_scanner" if location.kind == "sqlite" else "postgres_scanner"
        load_extensions(self.con, ("spatial", "ducklake", catalog_ext))
        if location.kind == "sqlite":
            kind = file_kind(location.catalog)
            if kind == "file-store":
                msg = (f"{location.name} is a civicgrid store of the old single-file kind; move it into the "
                       f"current store format once with `civicgrid migrate --db {location.name}`")
                raise StoreVersionError(msg)
            if kind == "other":
                msg = f"{location.name} is not a civicgrid store (neither a DuckLake catalog nor a DuckDB file)"
                raise StoreError(msg)
            if kind == "missing" and not create:
                msg = (f"no civicgrid database at {location.name}; build one with "
                       f"`civicgrid demo --db {location.name}` or load data with `civicgrid import`")
                raise StoreError(msg)
            Path(location.catalog).parent.mkdir(parents=True, exist_ok=True)
        location.data_path.mkdir(parents=True, exist_ok=True)
        with self._cross_process_lock():  # two processes creating one store at once would collide
            self.con.execute(location.attach_sql())
            _session(self.con)
            self._ensure_schema(create=create)
        if location.kind == "postgres":
            ensure_deletion_tables(self.con)

    @contextlib.contextmanager
    def _cross_process_lock(self) -> Iterator[None]:
        with open(self.location.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self.con.cursor()
        _session(cur)
        return cur

    def write_cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's kept cursor for writes (:func:`writing` with ``keep_cursor``)."""
        cur = getattr(self._writer, "cur", None)
        if cur is None:
            cur = self._writer.cur = self.cursor()
        return cur

    def drop_write_cursor(self) -> None:
        self._writer.cur = None

    @contextlib.contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """This thread's cursor for autocommit reads, kept from one read to the next (:meth:`Store.reading`)."""
        cur = getattr(self._reader, "cur", None)
        if cur is None:
            cur = self._reader.cur = self.cursor()
        try:
            yield cur
        except BaseException:
            self._reader.cur = None  # whatever state an error left it in, the next read starts afresh
            with contextlib.suppress(Exception):
                cur.close()
            raise

    def _ensure_schema(self, *, create: bool) -> None:
        version = schema_version(self.con)
        check_version(version, self.location.name)
        if version == SCHEMA_VERSION:
            return
        if not create and self.location.kind == "postgres":
            msg = (f"no civicgrid database in {self.location.name}; build one with "
                   f"`civicgrid demo --db {self.location.name}` or load data with `civicgrid import`")
            raise StoreError(msg)
        cur = self.cursor()
        try:
            cur.execute("BEGIN TRANSACTION")
            if version == 0:
                create_schema(cur)
            else:
                for v in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in LAKE_MIGRATIONS.get(v, []):
                        cur.execute(statement)
                set_meta(cur, "schema_version", str(SCHEMA_VERSION))
            cur.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                cur.execute("ROLLBACK")
            raise
        finally:
            cur.close()
        if version == 0:
            self.con.execute(f"CALL {ALIAS}.set_option('data_inlining_row_limit', {INLINE_ROWS})")
        logger.info("%s: store at schema version %d (was %d)", self.location.name, SCHEMA_VERSION, version)


_LAKES: dict[Location, _Lake] = {}
_LAKES_LOCK = threading.Lock()


def _lake(location: Location, *, create: bool) -> _Lake:
    found = _LAKES.get(location)
    if found is not None:
        return found
    with _LAKES_LOCK:
        found = _LAKES.get(location)
        if found is None:
            found = _LAKES[location] = _Lake(location, create=create)
        return found


def forget(location: Location) -> None:
    """Close this process's connection to a store (before it is removed or replaced)."""
    with _LAKES_LOCK:
        lake = _LAKES.pop(location, None)
    if lake is not None:
        with contextlib.suppress(Exception):
            lake.con.close()


#: What DuckLake 1.5.5 creates, in a PostgreSQL catalog, the first time a commit deletes rows of a table's Parquet
#: files and keeps the deletions in the catalog (data inlining): ``ducklake_inlined_delete_<table id>``.
_DELETION_TABLE = "ducklake_inlined_delete_{id}"
_DELETION_COLUMNS = "file_id BIGINT, row_id BIGINT, begin_snapshot BIGINT"
#: The tables of DuckLake's catalog in a PostgreSQL database (run there by ``postgres_query``).
_CATALOG_TABLES = ("SELECT table_schema::text, table_name::text FROM information_schema.tables "
                   "WHERE table_schema = current_schema() AND table_name LIKE 'ducklake\\_%'")


def ensure_deletion_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Create, in a PostgreSQL catalog, the empty table of inlined deletions of every table of the store that has
    none yet (``ducklake_inlined_delete_<table id>``, exactly as DuckLake creates it at the first such deletion);
    the names created.

    Every read of a table's Parquet files looks for that table. While it is missing, the PostgreSQL extension
    looks it up in PostgreSQL's own catalog again after each commit of this process (two ``pg_class`` queries
    per table a transaction reads: a move's group transaction makes four, a read of one case four), since a
    missing table's answer is not kept across commits and a found one's is (bench/DUCKLAKE.md section 13).
    An empty table holds no deletion, as a missing one: DuckLake reads it the same, adds to it when it
    deletes rows of the table's files (``CREATE TABLE IF NOT EXISTS``) and empties it when it flushes them.
    Creating it is an optimisation only: when another process creates it at the same moment (PostgreSQL may
    then refuse the second ``CREATE TABLE IF NOT EXISTS``), nothing is lost and the next opening tries again."""
    meta = f"__ducklake_metadata_{ALIAS}"
    # the catalog's own tables, in the schema DuckLake uses (the connection's, civicgrid never names another)
    found = con.execute(f"SELECT * FROM postgres_query({quote(meta)}, {quote(_CATALOG_TABLES)})").fetchall()
    schema = next((s for s, t in found if t == "ducklake_snapshot"), None)
    if schema is None:
        return []
    have = {t for _, t in found}
    ids = [int(r[0]) for r in con.execute(
        f"SELECT table_id FROM {meta}.ducklake_table WHERE end_snapshot IS NULL ORDER BY table_id").fetchall()]
    missing = [name for name in (_DELETION_TABLE.format(id=i) for i in ids) if name not in have]
    if not missing:
        return []
    target = '"' + schema.replace('"', '""') + '"'
    ddl = "; ".join(f"CREATE TABLE IF NOT EXISTS {target}.{name} ({_DELETION_COLUMNS})" for name in missing)
    try:
        con.execute(f"CALL postgres_execute({quote(meta)}, {quote(ddl)})")
    except duckdb.Error as exc:  # e.g. another process created one of them at the same moment
        logger.info("the tables of inlined deletions were not all created (%s); the next opening tries again", exc)
        return []
    return missing


# --- schema -------------------------------------------------------------------------------------------------

def recorded_bounds(con: duckdb.DuckDBPyConnection, table: str, column: str) -> tuple[str | None, str | None]:
    """The table-level (min, max) of ``table.column`` the lake's catalog recorded, as text (None: none).

    A starting bound for a read, never an answer: these bounds may be wrong (:data:`SAFE_OPTIMIZER_SETTINGS`).
    Reads only the DuckLake catalog tables every store has, so it cannot fail and abort a write's transaction."""
    meta = f"__ducklake_metadata_{ALIAS}"
    row = con.execute(f"""
        SELECT s.min_value, s.max_value FROM {meta}.ducklake_table_column_stats s
        JOIN {meta}.ducklake_table t ON t.table_id = s.table_id AND t.end_snapshot IS NULL
        JOIN {meta}.ducklake_column c ON c.table_id = s.table_id AND c.column_id = s.column_id
            AND c.end_snapshot IS NULL
        WHERE t.table_name = {quote(table)} AND c.column_name = {quote(column)}""").fetchone()
    return (None, None) if row is None else (row[0], row[1])


def extent(con: duckdb.DuckDBPyConnection, table: str, column: str) -> tuple[Any, Any]:
    """The smallest and largest value of ``table.column`` (None, None for an empty table), reading only the data
    files that can hold them.

    ``min``/``max`` over a lake table read the whole column (the store's connections do not answer them from
    the catalog's statistics: :data:`SAFE_OPTIMIZER_SETTINGS`): a second at 10M events. Read as
    ``min(c) WHERE c <= bound`` and ``max(c) WHERE c >= bound`` with the catalog's table-level bounds as literals,
    the lake skips every file whose own recorded range (right where the table-level one may not be: bench/
    DUCKLAKE.md section 10) lies beyond the bound, and Parquet every row group. A bound that is wrong either way
    still gives the true answer: one too far out finds nothing and the whole column is read; one too far in only
    reads more."""
    kind = fetch_value(con, "SELECT data_type FROM duckdb_columns() WHERE database_name = ? AND table_name = ? "
                            "AND column_name = ?", [ALIAS, table, column])
    if kind is None:
        msg = f"no column {table}.{column} in the store"
        raise StoreError(msg)
    low, high = recorded_bounds(con, table, column)

    def read(agg: str, op: str, bound: str | None) -> str:
        where = "" if bound is None else f" WHERE {column} {op} TRY_CAST({quote(bound)} AS {kind})"
        return f"(SELECT {agg}({column}) FROM {table}{where})"

    first, last = con.execute(f"SELECT {read('min', '<=', low)}, {read('max', '>=', high)}").fetchone() or (None, None)
    if first is None and low is not None:  # nothing at or below the recorded min: it was wrong
        first = fetch_value(con, f"SELECT min({column}) FROM {table}")
    if last is None and high is not None:
        last = fetch_value(con, f"SELECT max({column}) FROM {table}")
    return first, last


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """Return the schema version of an open store (0 for an empty one)."""
    has_meta = fetch_value(
        con,
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = 'meta' AND table_schema = 'main' AND table_catalog = current_database()",
    )
    if not has_meta:
        return 0
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def check_version(version: int, name: str | os.PathLike) -> None:
    """Refuse a store written by a newer civicgrid (:class:`StoreVersionError`)."""
    if version > SCHEMA_VERSION:
        msg = (f"{name} has schema version {version}, newer than this civicgrid supports "
               f"({SCHEMA_VERSION}); upgrade civicgrid to open it")
        raise StoreVersionError(msg)


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables of a new store and seed its taxonomies, meta and holiday calendar (in ``con``'s
    transaction)."""
    for statement in LAKE_SCHEMA:
        con.execute(statement)
    seed_taxonomies(con)
    set_meta(con, "schema_version", str(SCHEMA_VERSION))
    set_meta(con, "timezone", get_settings().timezone)


def set_meta(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    """Set a value of the ``meta`` table (in ``con``'s transaction)."""
    con.execute("DELETE FROM meta WHERE key = ?", [key])
    con.execute("INSERT INTO meta VALUES (?, ?)", [key, value])


def set_city_name(db: str | os.PathLike, *, name: str, name_en: str | None = None) -> None:
    """Name the store's city: the titles of its maps, scorecards and reports show it (``meta.city_name`` and
    ``city_name_en``, read by :func:`civicgrid.geo.texts.city_name`).

    Parameters
    ----------
    db
        The store (what ``--db`` takes).
    name
        The name in Chinese (or the city's own language): ``深圳市``.
    name_en
        The English name (default: unchanged; ``""`` removes it, and English pages then show ``name``).
    """
    name = str(name).strip()
    if not name:
        msg = "the city's name is empty"
        raise InvalidParameterError(msg)
    with writing(db) as con:
        set_meta(con, "city_name", name)
        if name_en is not None:
            con.execute("DELETE FROM meta WHERE key = 'city_name_en'")
            if str(name_en).strip():
                set_meta(con, "city_name_en", str(name_en).strip())


def seed_taxonomies(con: duckdb.DuckDBPyConnection, *, data_dir: Path = _DATA_DIR) -> None:
    """Fill empty ``site_categories`` and ``problem_types`` from the editable CSV files in ``data/``."""
    for table, name in (("site_categories", "site_categories.csv"), ("problem_types", "problem_types.csv")):
        if fetch_value(con, f"SELECT count(*) FROM {table}"):
            continue
        frame = pd.read_csv(data_dir / name, dtype=str, keep_default_na=False)
        cols = ", ".join(frame.columns)
        con.register("_seed", frame)
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _seed")
        con.unregister("_seed")


# --- writes ---------------------------------------------------------------------------------------------------

def retryable(exc: BaseException) -> bool:
    """A commit that lost a race with another writer (DuckLake transaction conflict, a busy SQLite catalog, a
    PostgreSQL catalog's serialization failure)."""
    text = str(exc)
    return (isinstance(exc, duckdb.TransactionException) or "database is locked" in text or "onflict" in text
            or "could not serialize access" in text)


class WriteConflictError(StoreError):
    """A write lost a race with a writer of another machine; :func:`retry_writes` runs it again."""


#: The ``meta`` row a maintenance holds while it compacts a store with a PostgreSQL catalog: ``"<until> <machine>"``
#: (an ISO time in UTC and :data:`MACHINE`). Writes of other machines wait while it holds (:func:`writing`).
LEASE_KEY = "maintenance.until"
#: Seconds a lease holds at most: a maintenance that is killed leaves one that ends by itself.
LEASE_S = 600
#: Seconds a write waits for another machine's lease to end before it gives up (:class:`WriteConflictError`);
#: a compaction piece takes a few seconds.
LEASE_WAIT_S = 120
#: This machine, in a lease: the writes of this machine never wait for its leases (they wait for this machine's
#: writers' lock, which its maintenance holds while it compacts; a lease of this machine they see is a killed one's).
MACHINE = socket.gethostname()

def claim_ids(con: duckdb.DuckDBPyConnection) -> None:
    """Rewrite the ``meta`` row ``ids.taken`` in ``con``'s transaction: of two overlapping transactions that both
    do (on a PostgreSQL catalog), the second to commit conflicts and nothing of it is written."""
    con.execute("DELETE FROM meta WHERE key = 'ids.taken'")
    con.execute("INSERT INTO meta VALUES ('ids.taken', CAST(now() AS VARCHAR))")


def lease_holder(con: duckdb.DuckDBPyConnection) -> str | None:
    """The machine whose maintenance holds the store (a lease in ``con``'s snapshot, not ended, not of
    :data:`MACHINE`), or None."""
    now = datetime.now(UTC)
    for (value,) in con.execute("SELECT value FROM meta WHERE key = ?", [LEASE_KEY]).fetchall():
        until, _, machine = str(value).partition(" ")
        try:
            ends = datetime.fromisoformat(until)
        except ValueError:  # not a lease civicgrid wrote: none
            continue
        if ends > now and machine != MACHINE:
            return machine
    return None


def lease_value(seconds: float = LEASE_S) -> str:
    """A lease of :data:`MACHINE` that ends ``seconds`` from now (the ``meta`` value under :data:`LEASE_KEY`)."""
    return f"{(datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()} {MACHINE}"


def _begin_guarded(cur: duckdb.DuckDBPyConnection, location: Location, lease_free_at: int | None = None) -> None:
    """Begin a write of a store with a PostgreSQL catalog (in the transaction ``cur`` began): wait while another
    machine's maintenance holds a lease (each look a new transaction), then rewrite ``ids.taken``, so that this
    write conflicts with a lease committed before it commits (and is run again) instead of being lost to a
    compaction (bench/DUCKLAKE.md section 11).

    When the transaction reads the snapshot ``lease_free_at`` (:func:`writing`), the lease is not read: no lease
    of another machine held there."""
    if lease_free_at is not None and fetch_value(cur, f"SELECT id FROM {ALIAS}.current_snapshot()") == lease_free_at:
        claim_ids(cur)
        return
    deadline = time.monotonic() + LEASE_WAIT_S
    while (holder := lease_holder(cur)) is not None:
        cur.execute("ROLLBACK")
        if time.monotonic() > deadline:
            msg = (f"{location.name}: the maintenance of {holder} held the store longer than {LEASE_WAIT_S} s; "
                   "the write was not made")
            cur.execute("BEGIN TRANSACTION")  # the caller rolls it back
            raise WriteConflictError(msg)
        time.sleep(random.uniform(0.05, 0.25))
        cur.execute("BEGIN TRANSACTION")
    claim_ids(cur)


@contextlib.contextmanager
def writing(db: str | os.PathLike | Location | None, *, memory_limit: str | None = None, keep_cursor: bool = False,
            lease_free_at: int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """Write the store in one transaction: all of it is committed, or (on an exception) none of it.

    Writers of a store take turns (a lock in the process and an advisory lock on ``<db>.lock`` across the
    processes of a machine), each for its transaction only. Readers are never blocked and see the write once
    it commits.

    With a PostgreSQL catalog the transaction also rewrites the ``meta`` row ``ids.taken`` (two overlapping
    writes conflict at commit), and it waits while another machine's maintenance holds its lease (``meta`` row
    :data:`LEASE_KEY`; at most :data:`LEASE_WAIT_S` seconds): a compaction would lose an UPDATE or DELETE
    committed while it runs (bench/DUCKLAKE.md section 11).

    Parameters
    ----------
    db
        The store (created if missing), or its :class:`Location` (what :meth:`Store.write` gives, with the data
        folder the store was opened with).
    memory_limit
        Optional DuckDB memory limit for this write, e.g. ``"4GB"``.
    keep_cursor
        Write on a cursor this thread keeps from one committed write to the next (dropped after a failed one),
        for a thread that writes often and leaves nothing on it (registered tables, temporary tables): a new
        cursor's ``USE lake`` is a round of catalog work of its own (the group writer,
        :mod:`civicgrid.geo.group_commit`).
    lease_free_at
        A snapshot id at which the caller knows that no maintenance of another machine held a lease: the
        snapshot its own previous write's commit made, when that write read the lease in the snapshot just
        before it (the group writer's chain, :func:`~civicgrid.geo.group_commit.group_memory`). When this
        transaction reads that very snapshot, nothing else was committed since, so the leases are as that write
        saw them and are not read again (one read of ``meta`` less); ``ids.taken`` is rewritten all the same,
        so a lease committed while this write runs still makes it conflict. PostgreSQL catalog only.

    Yields
    ------
    duckdb.DuckDBPyConnection
        A connection (``USE lake``) inside the transaction.

    Raises
    ------
    WriteConflictError
        The commit lost a race with a writer on another machine (PostgreSQL catalog): nothing was written.
    """
    lake = _lake(db if isinstance(db, Location) else locate(db), create=True)
    with lake.write_lock, lake._cross_process_lock():
        started = time.perf_counter()
        cur = lake.write_cursor() if keep_cursor else lake.cursor()
        previous = None
        committed = False
        try:
            if memory_limit:
                previous = fetch_value(cur, "SELECT current_setting('memory_limit')")
                cur.execute(f"SET memory_limit = {quote(memory_limit)}")
            cur.execute("BEGIN TRANSACTION")
            try:
                if lake.location.kind == "postgres":
                    _begin_guarded(cur, lake.location, lease_free_at)
                yield cur
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    cur.execute("ROLLBACK")
                logger.debug("%s: write rolled back (%s)", lake.location.name, type(exc).__name__)
                raise
            try:
                cur.execute("COMMIT")
            except duckdb.Error as exc:
                if retryable(exc):
                    msg = f"{lake.location.name}: the write lost a race with another writer ({exc})"
                    raise WriteConflictError(msg) from exc
                raise
            logger.info("%s: write committed in %.3f s", lake.location.name, time.perf_counter() - started)
            committed = True
        finally:
            if previous is not None:
                with contextlib.suppress(Exception):
                    cur.execute(f"SET memory_limit = {quote(str(previous))}")
            if not (keep_cursor and committed):
                if keep_cursor:
                    lake.drop_write_cursor()
                cur.close()


@contextlib.contextmanager
def writers_paused(db: str | os.PathLike | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """Hold the store's writers (of this process and of the other processes of this machine) and yield an
    autocommit connection: for maintenance (:func:`civicgrid.geo.store_files.maintain`)."""
    lake = _lake(locate(db), create=False)
    with lake.write_lock, lake._cross_process_lock():
        cur = lake.cursor()
        try:
            yield cur
        finally:
            cur.close()


#: Tries of a write that loses races with another machine's writers.
WRITE_TRIES = 30


def retry_pause(attempt: int) -> float:
    """Seconds to wait before try ``attempt + 2`` of a write that lost a race: random, growing from 10 ms to 2 s
    (all 30 tries take about a minute at most)."""
    return random.uniform(0, min(2.0, 0.01 * 2 ** attempt))


def retry_writes(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a function that writes the store again when its write loses a race (:class:`WriteConflictError`):
    up to :data:`WRITE_TRIES` tries with a random pause (:func:`retry_pause`)."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(WRITE_TRIES):
            try:
                return fn(*args, **kwargs)
            except WriteConflictError:
                if attempt == WRITE_TRIES - 1:
                    raise
                time.sleep(retry_pause(attempt))
        raise AssertionError  # pragma: no cover
    return wrapper


def ensure_current(path: str | os.PathLike) -> None:
    """Create the store at ``path`` if there is none (a new store has the current schema)."""
    _lake(locate(path), create=True)


# --- reading ------------------------------------------------------------------------------------------------

class Store:
    """A civicgrid store opened for reading (and the handle writes are made through).

    Every query sees every write committed before it started. Many processes may hold a :class:`Store` on the
    same store while ``civicgrid serve``, imports and case work write it.

    Parameters
    ----------
    path
        The store: a path (SQLite catalog) or a ``postgresql://`` URL. An old single-file store raises
        :class:`StoreVersionError` naming ``civicgrid migrate``; a newer one raises it too.
    create
        Create an empty, seeded store when there is none.
    at
        Open a read-only view of the store as it was: a snapshot id (int) or a time (``datetime`` or text,
        ``2026-12-01 18:00:00+08``). Analysts use it to reproduce a published figure.
    data_path
        The data folder of a PostgreSQL-catalog store (default: the ``data_path`` setting).
    """

    def __init__(self, path: str | os.PathLike | None = None, *, create: bool = False,
                 at: int | str | datetime | None = None, data_path: str | os.PathLike | None = None) -> None:
        self.location = locate(path, data_path=data_path)
        self.path: Path | str = (Path(self.location.name) if self.location.kind == "sqlite"
                                 else self.location.name)
        self._lake = _lake(self.location, create=create)
        self.at = at
        self._past: duckdb.DuckDBPyConnection | None = None
        self._past_snapshot: int | None = None
        if at is not None:
            self._past = self._open_past(at)

    def _open_past(self, at: int | str | datetime) -> duckdb.DuckDBPyConnection:
        snapshot: int | str
        if isinstance(at, bool):
            msg = f"at must be a snapshot id or a time, got {at!r}"
            raise StoreError(msg)
        if isinstance(at, int):
            snapshot = at
        elif isinstance(at, datetime):
            snapshot = (at if at.tzinfo else at.astimezone()).isoformat()
        else:
            snapshot = str(at)
        con = duckdb.connect(":memory:", config=_CONFIG)
        catalog_ext = "sqlite_scanner" if self.location.kind == "sqlite" else "postgres_scanner"
        load_extensions(con, ("spatial", "ducklake", catalog_ext))
        try:
            con.execute(self.location.attach_sql(snapshot=snapshot))
        except duckdb.Error as exc:
            con.close()
            msg = f"{self.location.name} has no snapshot at {at!r} ({exc}); see Store.snapshots()"
            raise StoreError(msg) from exc
        _session(con)
        return con

    def __repr__(self) -> str:
        at = f", at={self.at!r}" if self.at is not None else ""
        return f"Store({str(self.path)!r}{at})"

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection queries run on (``USE lake``)."""
        return self._past if self._past is not None else self._lake.con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor, for use from one thread."""
        cur = self.con.cursor()
        _session(cur)
        return cur

    @contextlib.contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor for autocommit reads (each query sees every write committed before it), kept by this thread
        from one read to the next: not to be closed, nor used for a transaction or a change of settings.

        A new cursor costs a round of catalog work of its own (its ``USE lake`` reads the newest snapshot from
        the catalog, as the query after it does), which on a SQLite catalog beside a writer is also one more
        chance of a stall; :meth:`sql` and :meth:`snapshot_id` read through this one."""
        if self._past is not None:  # a view of the past: cursors of its own connection, as before
            cur = self.cursor()
            try:
                yield cur
            finally:
                cur.close()
            return
        with self._lake.reading() as cur:
            yield cur

    #: What a statement :meth:`sql` runs on the thread's kept cursor starts with (a read); anything else (a
    #: transaction, a setting, an attachment) runs on a cursor of its own, as before.
    _READS = ("SELECT", "WITH", "FROM", "EXPLAIN", "DESCRIBE", "SUMMARIZE", "SHOW", "VALUES", "TABLE", "(")

    def sql(self, query: str, params: list | dict | None = None) -> pd.DataFrame:
        """Run a read-only SQL query and return a DataFrame."""
        if query.lstrip().upper().startswith(self._READS):
            with self.reading() as cur:
                return cur.execute(query, params).df()
        cur = self.cursor()
        try:
            return cur.execute(query, params).df()
        finally:
            cur.close()

    def write(self, *, memory_limit: str | None = None
              ) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        """Open a write transaction on this store (see :func:`writing`)."""
        if self._past is not None:
            msg = f"{self!r} is a view of the past: it cannot be written"
            raise StoreError(msg)
        return writing(self.location, memory_limit=memory_limit)

    def meta(self, key: str, default: str | None = None) -> str | None:
        """Return a value of the ``meta`` table."""
        with self.reading() as cur:
            row = cur.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else default

    def fixed_meta(self, key: str) -> str | None:
        """A value of the ``meta`` table set when the store was created and never changed (its time zone), read
        once by this process's connection to the store (a store removed and made again is connected anew)."""
        fixed = self._lake.fixed
        if key not in fixed:
            fixed[key] = self.meta(key)
        return fixed[key]

    def snapshot_id(self) -> int:
        """The id of the store's newest snapshot (of the snapshot viewed, for a view of the past): it changes
        with every committed write, so it keys result caches.

        Asked on every cached request, so it is cheap: for a SQLite catalog the lake is queried only when the
        catalog file or its WAL changed since the last answer (:class:`_ChangeProbe`); a PostgreSQL catalog is
        queried each time. Either way a write committed before the call is seen by it."""
        if self._past is not None:
            if self._past_snapshot is None:
                self._past_snapshot = self._query_snapshot()
            return self._past_snapshot
        return self._lake.probe.snapshot_id(self._query_snapshot)

    def _query_snapshot(self) -> int:
        # Not read with Python's sqlite3: two SQLite libraries on one file in one process break each other's
        # POSIX locks (closing one's file handle drops the other's locks), which corrupts reads.
        with self.reading() as cur:
            return int(fetch_value(cur, f"SELECT id FROM {ALIAS}.current_snapshot()"))

    def snapshots(self) -> pd.DataFrame:
        """The store's snapshots (id, time, what changed): what ``open_store(path, at=...)`` can open."""
        return self.sql(f"SELECT snapshot_id, snapshot_time, changes FROM {ALIAS}.snapshots() ORDER BY 1")

    def close(self) -> None:
        """Close a view of the past (the process's connection to the store stays open for others)."""
        if self._past is not None:
            self._past.close()
            self._past = None


def open_store(path: str | os.PathLike | None = None, *, create: bool = False,
               at: int | str | datetime | None = None) -> Store:
    """Open a civicgrid store: the entry point of notebooks and scripts.

    The store can be opened while ``civicgrid serve``, imports and case work write it: every query sees every
    write committed before it started, never half of one. Every analysis function of ``geo``, ``grids`` and
    ``sites`` takes this store as its first argument.

    Parameters
    ----------
    path
        The store (default: ``$CIVICGRID_DB``, else ``civicgrid.duckdb`` in the working directory): a path, or a
        ``postgresql://`` URL with ``$CIVICGRID_DATA_PATH`` naming its data folder.
    create
        Create an empty, seeded store when there is none (otherwise that is an error).
    at
        A snapshot id or a time: a read-only view of the store as it was then (to reproduce a published figure).

    Returns
    -------
    Store
        ``store.sql(query, params)`` runs SQL and returns a pandas DataFrame; ``store.cursor()`` gives a DuckDB
        cursor (e.g. to ``register`` a DataFrame as a table); ``store.snapshots()`` lists the versions.

    Raises
    ------
    StoreError
        No store at ``path`` (and ``create`` is false), or no snapshot at ``at``.
    StoreVersionError
        The store was written by a newer civicgrid, or is an old single-file store (run ``civicgrid migrate``).

    Examples
    --------
    >>> store = open_store("demo.duckdb")  # doctest: +SKIP
    >>> store.sql("SELECT source, count(*) AS n FROM events GROUP BY ALL")  # doctest: +SKIP
    """
    return Store(path, create=create, at=at)
