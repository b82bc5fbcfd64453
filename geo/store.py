"""The civicgrid store: one DuckDB file holding every layer, shared by readers and writers.

How processes share one file
----------------------------
DuckDB lets one process open a file read-write, or any number open it read-only,
never both. civicgrid therefore never writes the live file in place:

* **Writers** (imports, the demo generator, later case updates) take an exclusive
  advisory lock on ``<db>.lock`` (so writers queue instead of failing), copy the
  live file to ``<db>.tmp-<pid>``, apply their whole change there in one
  transaction, checkpoint, close, and atomically ``os.replace`` the copy onto the
  live path. A failed write deletes its copy: the live file is untouched.
* **Readers** (the service, notebooks, the CLI's queries) open the live file
  read-only. A reader keeps the version it opened (its file handle pins that
  inode), so it never sees half an import, and before each query
  :class:`Store` checks whether a newer version has been published and, if so,
  reopens. Readers never block writers and writers never block readers.

The price is one file copy per write (about 1 s per GB on local disk).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from civicgrid.geo.errors import StoreError, StoreVersionError
from civicgrid.geo.schema import MIGRATIONS, SCHEMA_VERSION
from civicgrid.geo.settings import Settings, get_settings
from civicgrid.geo.times import DEFAULT_TIMEZONE

logger = logging.getLogger(__name__)

#: Default database path, used when ``--db`` is not given; overridable with
#: the ``CIVICGRID_DB`` environment variable (the ``db`` setting).
DEFAULT_DB: str = Settings.model_fields["db"].default

_WRITE_SERIAL = itertools.count()
_DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def default_db_path() -> str:
    """Return the database path of the ``db`` setting: ``$CIVICGRID_DB``, else :data:`DEFAULT_DB`."""
    return get_settings().db


def spatial_extension_path() -> Path:
    """Return the path of the DuckDB spatial extension installed by ``duckdb-extension-spatial``."""
    import duckdb_extension_spatial

    root = Path(duckdb_extension_spatial.__file__).resolve().parent / "extensions"
    wanted = root / f"v{duckdb.__version__}" / "spatial.duckdb_extension"
    if wanted.exists():
        return wanted
    found = sorted(root.glob("*/spatial.duckdb_extension"))
    if not found:
        msg = f"spatial extension file not found under {root}; reinstall duckdb-extension-spatial"
        raise StoreError(msg)
    return found[-1]


def connect(path: str | os.PathLike | None = None, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB connection with the spatial extension loaded from its file.

    Extension autoinstall and autoload are off: nothing is fetched from the network.
    A read-only connection is a fresh in-memory instance with the file attached
    read-only as catalog ``city`` (and selected with ``USE``), so each one sees
    the file as it is now rather than an instance DuckDB cached for the path.

    Parameters
    ----------
    path
        Database file, or ``None`` for an in-memory database.
    read_only
        Open the file read-only (any number of processes may do so at once).
    """
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False, "autoload_known_extensions": False}
    if read_only and path is not None:
        con = duckdb.connect(":memory:", config=config)
        con.load_extension(str(spatial_extension_path()))
        quoted = str(path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS city (READ_ONLY)")
        con.execute("USE city")
        return con
    con = duckdb.connect(str(path) if path is not None else ":memory:", config=config)
    con.load_extension(str(spatial_extension_path()))
    return con


def fetch_value(con: duckdb.DuckDBPyConnection, query: str, params: list | dict | None = None) -> Any:
    """Return the first column of the first row of ``query`` (None when it returns no row)."""
    row = con.execute(query, params).fetchone()
    return row[0] if row is not None else None


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """Return the schema version of an open database (0 for an empty one)."""
    has_meta = fetch_value(
        con,
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = 'meta' AND table_schema = 'main' AND table_catalog = current_database()",
    )
    if not has_meta:
        return 0
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _check_not_newer(version: int, path: str | os.PathLike) -> None:
    if version > SCHEMA_VERSION:
        msg = (
            f"{path} has schema version {version}, newer than this civicgrid supports "
            f"({SCHEMA_VERSION}); upgrade civicgrid to open it"
        )
        raise StoreVersionError(msg)


def migrate(con: duckdb.DuckDBPyConnection, *, path: str | os.PathLike = "database") -> int:
    """Bring an open read-write database to :data:`SCHEMA_VERSION`; return the version found."""
    found = schema_version(con)
    _check_not_newer(found, path)
    for version in range(found + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version]:
            con.execute(statement)
        con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(version)])
    if found == 0:
        seed_taxonomies(con)
        con.execute("INSERT OR REPLACE INTO meta VALUES ('timezone', ?)", [DEFAULT_TIMEZONE])
        logger.info("%s: new database, schema version %d", path, SCHEMA_VERSION)
    elif found < SCHEMA_VERSION:
        logger.info("%s: migrated from schema version %d to %d", path, found, SCHEMA_VERSION)
    return found


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


def file_key(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """Return what identifies the published version of a database file (inode, modification time, size), or
    None when there is no file: it changes whenever a writer publishes."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@contextlib.contextmanager
def writing(path: str | os.PathLike, *, memory_limit: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the database for one atomic write and publish it on success.

    Yields a read-write connection on a private copy of the file, inside a
    transaction. On normal exit the transaction commits and the copy replaces
    the live file atomically; on an exception nothing is published.

    Parameters
    ----------
    path
        The live database file (created if missing).
    memory_limit
        Optional DuckDB memory limit for this write, e.g. ``"4GB"``.
    """
    live = Path(path)
    live.parent.mkdir(parents=True, exist_ok=True)
    lock_path = live.with_name(live.name + ".lock")
    tmp = live.with_name(f"{live.name}.tmp-{os.getpid()}-{threading.get_ident()}-{next(_WRITE_SERIAL)}")
    with open(lock_path, "a+") as lock:
        waited = time.perf_counter()
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.perf_counter()
        logger.debug("%s: write lock taken after %.2f s", live, started - waited)
        try:
            _remove(tmp)
            if live.exists():
                copy_file(live, tmp)
            con = connect(tmp)
            try:
                if memory_limit:
                    con.execute(f"SET memory_limit = '{memory_limit}'")
                con.execute("BEGIN TRANSACTION")
                migrate(con, path=live)
                yield con
                con.execute("COMMIT")
                con.execute("CHECKPOINT")
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    con.execute("ROLLBACK")
                logger.debug("%s: write not published (%s)", live, type(exc).__name__)
                raise
            finally:
                con.close()
            os.replace(tmp, live)
            logger.info("%s: write published in %.2f s", live, time.perf_counter() - started)
        finally:
            _remove(tmp)
            fcntl.flock(lock, fcntl.LOCK_UN)


#: ``FICLONE`` ioctl (linux/fs.h): make ``dst`` share ``src``'s blocks, copy-on-write.
_FICLONE = 0x40049409


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a database file for a write: a copy-on-write clone where the file system has them (XFS, Btrfs:
    instant whatever the size), else a plain kernel copy (ext4: about 1 s per GB)."""
    with open(src, "rb") as fsrc, open(dst, "wb") as fdst:
        try:
            fcntl.ioctl(fdst.fileno(), _FICLONE, fsrc.fileno())
            return
        except OSError:  # no reflinks here (EOPNOTSUPP, EXDEV, EINVAL): copy the bytes
            pass
    shutil.copyfile(src, dst)


def _remove(tmp: Path) -> None:
    for p in (tmp, tmp.with_name(tmp.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def ensure_current(path: str | os.PathLike) -> None:
    """Create or migrate the database file at ``path`` so readers can open it."""
    live = Path(path)
    if live.exists():
        con = connect(live, read_only=True)
        try:
            version = schema_version(con)
        finally:
            con.close()
        _check_not_newer(version, live)
        if version == SCHEMA_VERSION:
            return
    with writing(live):
        pass


class Store:
    """A civicgrid database opened for reading, following versions published by writers.

    Every query runs on the newest published version: before each query the
    store checks (one ``stat`` call) whether a writer has replaced the file and
    reopens if so. Many processes may hold a :class:`Store` on the same file
    while one ``civicgrid import`` writes it.

    Parameters
    ----------
    path
        Database file. An older schema version is migrated on open; a newer one
        raises :class:`StoreVersionError`.
    create
        Create an empty, seeded database when the file does not exist.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, create: bool = False) -> None:
        self.path = Path(path if path is not None else default_db_path())
        if not self.path.exists() and not create:
            msg = (
                f"no civicgrid database at {self.path}; build one with "
                f"`civicgrid demo --db {self.path}` or load data with `civicgrid import`"
            )
            raise StoreError(msg)
        ensure_current(self.path)
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._key: tuple[int, int, int] | None = None

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The read-only connection on the newest published version."""
        key = file_key(self.path)
        if self._con is not None and key == self._key:
            return self._con
        with self._lock:
            key = file_key(self.path)
            if self._con is None or key != self._key:
                con = connect(self.path, read_only=True)
                version = schema_version(con)
                if version != SCHEMA_VERSION:
                    con.close()
                    ensure_current(self.path)
                    con = connect(self.path, read_only=True)
                    key = file_key(self.path)
                # The old connection is not closed here: queries of other
                # threads may still run on it; it closes when last released.
                if self._con is not None:
                    logger.debug("%s: following a newly published version", self.path)
                self._con, self._key = con, key
        return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor on the newest version, for use from one thread."""
        cur = self.con.cursor()
        cur.execute("USE city")
        return cur

    def sql(self, query: str, params: list | dict | None = None) -> pd.DataFrame:
        """Run a read-only SQL query and return a DataFrame."""
        cur = self.cursor()
        try:
            return cur.execute(query, params).df()
        finally:
            cur.close()

    def write(self, *, memory_limit: str | None = None
              ) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        """Open an atomic write on this store (see :func:`writing`)."""
        return writing(self.path, memory_limit=memory_limit)

    def meta(self, key: str, default: str | None = None) -> str | None:
        """Return a value of the ``meta`` table."""
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else default

    def close(self) -> None:
        """Close the connection (a later query reopens it)."""
        with self._lock:
            if self._con is not None:
                self._con.close()
            self._con, self._key = None, None


def open_store(path: str | os.PathLike | None = None, *, create: bool = False) -> Store:
    """Open a civicgrid database for reading: the entry point of notebooks and scripts.

    The store is read-only and follows the versions writers publish (see the module docstring), so it
    can be opened while ``civicgrid serve`` runs on the same file and while imports or case updates
    write it: no lock error, never half a write. Every analysis function of ``geo``, ``grids`` and
    ``sites`` takes this store as its first argument.

    Parameters
    ----------
    path
        Database file (default: ``$CIVICGRID_DB``, else ``civicgrid.duckdb`` in the working directory).
    create
        Create an empty, seeded database when the file does not exist (otherwise that is an error).

    Returns
    -------
    Store
        ``store.sql(query, params)`` runs read-only SQL and returns a pandas DataFrame;
        ``store.cursor()`` gives a DuckDB cursor (e.g. to ``register`` a DataFrame as a table).

    Raises
    ------
    StoreError
        No database at ``path`` (and ``create`` is false).
    StoreVersionError
        The file was written by a newer civicgrid.

    Examples
    --------
    >>> store = open_store("demo.duckdb")  # doctest: +SKIP
    >>> store.sql("SELECT source, count(*) AS n FROM events GROUP BY ALL")  # doctest: +SKIP
    """
    return Store(path, create=create)
