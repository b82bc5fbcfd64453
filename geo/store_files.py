"""Copying, removing and migrating whole stores (the files a store with a SQLite catalog is made of)."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
from civicgrid.geo.errors import StoreError
from civicgrid.geo.schema import FILE_SCHEMA_VERSION, MIGRATIONS, SCHEMA_VERSION
from civicgrid.geo.staging import remove_leftovers
from civicgrid.geo.store import (
    ALIAS,
    LEASE_KEY,
    LEASE_WAIT_S,
    Location,
    Store,
    check_version,
    claim_ids,
    connect,
    fetch_value,
    file_kind,
    forget,
    lease_holder,
    lease_value,
    locate,
    quote,
    retryable,
    schema_version,
    seed_taxonomies,
    set_meta,
    writers_paused,
    writing,
)
from civicgrid.geo.times import DEFAULT_TIMEZONE

logger = logging.getLogger(__name__)

def copy_store(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy the store ``src`` (SQLite catalog) to ``dst``, consistently while others write it: the catalog
    through SQLite's backup, the data files as hard links where possible (Parquet files are never changed in
    place). Returns ``dst``."""
    source, target = locate(src), locate(dst)
    if source.kind != "sqlite" or target.kind != "sqlite":
        msg = "copy_store copies stores with a SQLite catalog; back up a PostgreSQL catalog with pg_dump"
        raise StoreError(msg)
    if not Path(source.catalog).exists():
        msg = f"no civicgrid store at {src}"
        raise StoreError(msg)
    remove_store(dst)
    # The catalog is copied by another process: this one may have it open through DuckDB's own SQLite, and a
    # second SQLite library on the same file in one process breaks its locks (see Store.snapshot_id).
    done = subprocess.run([sys.executable, "-c", _COPY_CATALOG, source.catalog, target.catalog,
                           str(target.data_path) + os.sep], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"copying the catalog of {src} failed: {done.stderr.strip().splitlines()[-1:]}"
        raise StoreError(msg)

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    if source.data_path.exists():
        shutil.copytree(source.data_path, target.data_path, copy_function=link)
    return Path(target.catalog)


_COPY_CATALOG = """
import sqlite3, sys
src, dst, data = sys.argv[1:4]
if open(src, "rb").read(16) != b"SQLite format 3\\x00":
    sys.exit(f"{src} is not a civicgrid store")
a, b = sqlite3.connect(src), sqlite3.connect(dst)
a.backup(b)
b.execute("UPDATE ducklake_metadata SET value = ? WHERE key = 'data_path'", [data])
b.commit()
"""


def remove_store(path: str | os.PathLike) -> None:
    """Delete the store at ``path`` (SQLite catalog): the catalog, its WAL files, data folder and lock files."""
    location = locate(path)
    if location.kind != "sqlite":
        msg = "remove_store removes stores with a SQLite catalog"
        raise StoreError(msg)
    forget(location)
    catalog = Path(location.catalog)
    for p in (catalog, catalog.with_name(catalog.name + "-wal"), catalog.with_name(catalog.name + "-shm"),
              location.lock_path, location.lock_path.with_name(location.lock_path.name + ".import")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    shutil.rmtree(location.data_path, ignore_errors=True)


def migrate_file(path: str | os.PathLike) -> Path | None:
    """Move an old single-file store (DuckDB file, schema versions 1 to 5) into a store of the current kind.

    The file is renamed ``<name>.v5.duckdb`` (kept as a backup) and a new store at ``path`` receives every
    table. Idempotent: a store already in the current format is left alone (returns None). On a failure the
    old file is put back and nothing else remains. A ``postgresql://`` store is opened, which updates its tables;
    an empty PostgreSQL database or a missing path raises :class:`StoreError` (there is nothing to migrate).

    Returns
    -------
    pathlib.Path or None
        The backup of the old file, or None when there was nothing to migrate.
    """
    location = locate(path)
    if location.kind == "postgres":
        Store(path)  # a PostgreSQL catalog holds no old single file: opening it brings its tables up to date
        return None
    kind = file_kind(location.catalog)
    if kind == "missing":
        msg = f"no civicgrid store at {path}: nothing to migrate"
        raise StoreError(msg)
    if kind == "store":
        return None
    if kind != "file-store":
        msg = f"{path} is not a civicgrid store"
        raise StoreError(msg)
    live = Path(location.catalog)
    backup = live.with_name(live.name + ".v5.duckdb")
    n = 1
    while backup.exists():
        n += 1
        backup = live.with_name(f"{live.name}.v5-{n}.duckdb")
    work = live.with_name(live.name + ".migrating.duckdb")
    shutil.copyfile(live, work)
    try:
        old = connect(work)
        try:
            found = schema_version(old)
            if found > FILE_SCHEMA_VERSION:
                check_version(found, path)
            old.execute("BEGIN TRANSACTION")
            for version in range(found + 1, FILE_SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    old.execute(statement)
            old.execute("COMMIT")
        finally:
            old.close()
        os.replace(live, backup)
        try:
            _copy_tables(work, location)
        except BaseException:
            remove_store(path)
            os.replace(backup, live)
            raise
    finally:
        for p in (work, work.with_name(work.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    logger.info("%s: migrated from a single-file store (backup %s)", path, backup)
    return backup


def _copy_tables(old_file: Path, location: Location) -> None:
    store = Store(location.name, create=True)
    store.con.execute(f"ATTACH {quote(str(old_file))} AS old (READ_ONLY)")
    try:
        with writing(location.name) as con:
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'old' "
                "AND table_schema = 'main' AND table_type = 'BASE TABLE'").fetchall()]
            lake_tables = {r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? "
                "AND table_schema = 'main'", [ALIAS]).fetchall()}
            for table in tables:
                if table not in lake_tables:
                    continue
                new_cols = [r[0] for r in con.execute(f"DESCRIBE {ALIAS}.main.{table}").fetchall()]
                old_cols = {r[0] for r in con.execute(f"DESCRIBE old.main.{table}").fetchall()}
                cols = ", ".join(c for c in new_cols if c in old_cols)
                con.execute(f"DELETE FROM {ALIAS}.main.{table}")
                con.execute(f"INSERT INTO {ALIAS}.main.{table} ({cols}) SELECT {cols} FROM old.main.{table}")
            seed_taxonomies(con)  # a file whose taxonomies were never seeded gets them, as a new store does
            set_meta(con, "schema_version", str(SCHEMA_VERSION))
            con.execute("INSERT INTO meta SELECT 'timezone', ? WHERE NOT EXISTS "
                        "(SELECT 1 FROM meta WHERE key = 'timezone')", [DEFAULT_TIMEZONE])
    finally:
        store.con.execute("DETACH old")


#: The order compaction writes each table's rows in (``ALTER TABLE ... SET SORTED BY``, set by :func:`maintain`;
#: new Parquet files of an ``INSERT`` and of a flush of inlined rows follow it too, files an import adds do not).
#: Events: month, then problem type, then time, so a heatmap's or a hotspot query's time window skips whole files
#: and row groups by their min/max statistics, also for events imported out of time order, and within a month a
#: type's rows lie together (bench/RESULTS.md: on the 10M demo, already in time order, the gain is small, 0-20 %).
#: The month is the text of the time's first 7 characters (``2025-06``), not ``date_trunc``: a PostgreSQL catalog
#: holds inlined rows' times as text, and DuckLake sorts those by the same expression when it flushes them (an
#: order only places rows in files: it can never change what a query finds).
SORT_ORDER: dict[str, tuple[str, ...]] = {
    "events": ('"left"(CAST("time" AS VARCHAR), 7)', "problem_type", '"time"'),
}


def sort_order(con: duckdb.DuckDBPyConnection, table: str) -> tuple[str, ...]:
    """The sort keys of ``table`` in the lake's catalog (as the catalog spells them; empty when unsorted)."""
    meta = f"__ducklake_metadata_{ALIAS}"
    rows = con.execute(f"""
        SELECT e.expression
        FROM {meta}.ducklake_sort_info i
        JOIN {meta}.ducklake_sort_expression e ON e.sort_id = i.sort_id AND e.table_id = i.table_id
        JOIN {meta}.ducklake_table t ON t.table_id = i.table_id AND t.end_snapshot IS NULL
        WHERE t.table_name = ? AND i.end_snapshot IS NULL
        ORDER BY e.sort_key_index""", [table]).fetchall()
    return tuple(r[0] for r in rows)


def _sort_steps(con: duckdb.DuckDBPyConnection) -> list[str]:
    """``SET SORTED BY`` statements for the tables whose sort order differs from :data:`SORT_ORDER`."""
    return [f"ALTER TABLE {table} SET SORTED BY ({', '.join(keys)})"
            for table, keys in SORT_ORDER.items() if sort_order(con, table) != keys]


#: The size of the files compaction writes (DuckLake's ``target_file_size``, set on the store by :func:`maintain`):
#: it bounds one compaction piece, and so how long one piece holds up writers (4–9 s for a piece of ~1M events
#: on 2 busy cores). DuckLake's default, 512 MB, made one piece of a whole 10M-event table.
PIECE_FILE_BYTES = 32_000_000
#: Seconds :func:`maintain` leaves the writers' lock free between two pieces, so that writers waiting for it
#: commit before the next piece starts.
WRITERS_TURN_S = 0.05


def maintain(db: str | os.PathLike, *, keep_days: float = 30, flush: bool | None = None) -> dict[str, object]:
    """Compact the store and drop what no snapshot within ``keep_days`` needs; safe while others read and write.

    Writers wait for maintenance only a short moment at a time: every step below runs in its own short pause of
    this machine's writers (the writers' lock), and compaction runs table by table in pieces of about
    :data:`PIECE_FILE_BYTES` each, with the lock free between pieces (writers that waited commit then). A piece
    needs the pause: with a SQLite catalog any write committed while a piece runs makes the piece fail (it would
    start again and again under steady case work), and with a PostgreSQL catalog DuckLake 1.5.5 lets a piece
    and a concurrent UPDATE or DELETE of the rows it merges both commit, and the change is lost (measured in
    ``bench/ducklake_spike/t11_maint_pieces.py``; the pause holds this machine's writers, and with a PostgreSQL
    catalog a lease in ``meta`` holds those of the other machines sharing it: :func:`_leased`). Each piece is
    one DuckLake transaction: a maintenance that fails or is killed leaves every row as it was (a killed piece's
    new files are deleted as orphans a day later).

    The steps: column bounds DuckLake recorded wrong are rewritten (:func:`repair_column_stats`); the events' sort
    order is set; with ``flush``, rows kept in the catalog are written to Parquet; with a PostgreSQL catalog the
    files of ``meta`` are rewritten without their deleted rows (every write rewrites a row there); Parquet files
    smaller than :data:`PIECE_FILE_BYTES` are merged (sorted; larger files, such as an import's full batches, stay
    as written); snapshots older than ``keep_days`` expire (views of the past reach back that far); files no
    snapshot uses any more are deleted, and so are files that no commit ever registered: an interrupted import's
    staged files (when no import is running) and any other once it is a day old (never younger: a write may still be
    making it).

    Parameters
    ----------
    db
        The store.
    keep_days
        How many days of snapshots to keep for ``open_store(path, at=...)``.
    flush
        Also move rows kept in the catalog (small writes) into Parquet files. Default: only with a PostgreSQL
        catalog; with a SQLite catalog a read running in another process at that moment could miss those rows.

    Returns
    -------
    dict
        What was done: files before and after, snapshots expired, files deleted, the columns whose bounds were
        repaired, the compaction pieces and the longest time writers waited for one step, seconds.
    """
    if keep_days < 0:
        msg = f"keep_days must be >= 0, got {keep_days}"
        raise ValueError(msg)
    location = locate(db)
    flush = location.kind == "postgres" if flush is None else flush
    started = time.perf_counter()
    repaired = repair_column_stats(location.name)
    files_before = _data_files(location)
    longest = 0.0

    def paused(statements: list[str], *, leased: bool = False) -> list[tuple]:
        """Run ``statements`` in one short pause of this machine's writers (and, ``leased``, with a PostgreSQL
        catalog, under a lease that holds the writers of the other machines: :func:`_leased`, for a compaction
        piece); the rows the last one returned."""
        nonlocal longest
        with writers_paused(location.name) as con:
            t = time.perf_counter()
            rows: list[tuple] = []
            with _leased(con, location) if leased else contextlib.nullcontext():
                for statement in statements:
                    rows = _with_retries(con, statement)
            longest = max(longest, time.perf_counter() - t)
        return rows

    with writers_paused(location.name) as con:
        before = int(fetch_value(con, f"SELECT count(*) FROM {ALIAS}.snapshots()"))
        setup = [*_sort_steps(con), *_piece_size_steps(con)]
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY table_name", [ALIAS]).fetchall()]
    if setup:
        paused(setup)

    if flush:  # conflicts with another machine's write to the table (no lease: that would add files to meta)
        for table in tables:
            paused([f"CALL ducklake_flush_inlined_data({quote(ALIAS)}, table_name => {quote(table)})"])
    if location.kind == "postgres" and "meta" in tables:
        # every write of a PostgreSQL catalog rewrites a row of meta: its files would gain a delete file at each
        # maintenance, which merging skips; rewriting them drops the deleted rows (meta is a few rows)
        paused([f"CALL ducklake_rewrite_data_files({quote(ALIAS)}, 'meta', delete_threshold => 0.0)"], leased=True)
    pieces = 0
    for table in tables:
        merge = f"CALL ducklake_merge_adjacent_files({quote(ALIAS)}, {quote(table)}, max_compacted_files => 1)"
        for _ in range(files_before):  # each piece leaves at least one file fewer
            if not paused([merge], leased=True):
                break
            pieces += 1
            _writers_turn(table)
    paused([f"CALL ducklake_expire_snapshots({quote(ALIAS)}, older_than => now() - INTERVAL "
            f"{quote(f'{float(keep_days) * 86400:.0f} seconds')})"])
    after = int(paused([f"SELECT count(*) FROM {ALIAS}.snapshots()"])[0][0])
    paused([f"CALL ducklake_cleanup_old_files({quote(ALIAS)}, older_than => now())"])
    paused([f"CALL ducklake_delete_orphaned_files({quote(ALIAS)}, older_than => now() - INTERVAL '1 day')"])
    leftovers = remove_leftovers(location.name, wait=False)  # None: an import is running (its files are young)
    result: dict[str, object] = {
        "files_before": files_before, "files_after": _data_files(location),
        "snapshots_expired": max(0, before - after), "flushed": flush,
        "column_stats_repaired": [f"{w.table}.{w.column}" for w in repaired],
        "import_leftovers_removed": None if leftovers is None else len(leftovers),
        "compaction_pieces": pieces, "longest_pause_s": round(longest, 2),
        "seconds": round(time.perf_counter() - started, 2)}
    logger.info("%s: maintained: %s", location.name, result)
    return result


@contextlib.contextmanager
def _leased(con: duckdb.DuckDBPyConnection, location: Location) -> Iterator[None]:
    """Hold the writers of the other machines sharing a PostgreSQL catalog while the ``with`` block compacts.

    DuckLake 1.5.5 lets a compaction and a concurrent UPDATE or DELETE of the rows it merges both commit, and the
    change is lost (bench/DUCKLAKE.md section 11); a compaction cannot write anything else in its transaction.
    So a short transaction first sets a lease (``meta`` row :data:`~civicgrid.geo.store.LEASE_KEY`, ending
    :data:`~civicgrid.geo.store.LEASE_S` from now) and rewrites ``ids.taken``, which every write of a
    PostgreSQL catalog rewrites too: a write in flight conflicts with it (one of the two is run again), and every
    write that begins after it sees the lease and waits (:func:`~civicgrid.geo.store.writing`). The lease is
    cleared after the block, also when it fails; a maintenance that is killed leaves a lease that ends by itself,
    and the next one overwrites it. A lease of another machine's maintenance is waited for first. With a SQLite
    catalog any two overlapping writes conflict: nothing to do."""
    if location.kind != "postgres":
        yield
        return
    deadline = time.monotonic() + LEASE_WAIT_S  # then a lease left by a killed maintenance is overwritten
    attempt = 0
    while True:
        try:
            con.execute("BEGIN TRANSACTION")
            if lease_holder(con) is not None and time.monotonic() < deadline:
                con.execute("ROLLBACK")
                time.sleep(random.uniform(0.1, 0.5))
                continue
            set_meta(con, LEASE_KEY, lease_value())
            claim_ids(con)
            con.execute("COMMIT")
            break
        except duckdb.Error as exc:
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")
            if attempt >= 20 or not retryable(exc):
                raise
            time.sleep(random.uniform(0, min(2.0, 0.05 * 2 ** attempt)))
            attempt += 1
    try:
        yield
    finally:
        _with_retries(con, f"DELETE FROM meta WHERE key = {quote(LEASE_KEY)}")


def _piece_size_steps(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Setting the store's ``target_file_size`` to :data:`PIECE_FILE_BYTES` (none when it is set already)."""
    found = con.execute(f"SELECT value FROM {ALIAS}.options() WHERE option_name = 'target_file_size' "
                        "AND scope = 'GLOBAL'").fetchall()
    if found and str(found[0][0]) == str(PIECE_FILE_BYTES):
        return []
    return [f"CALL {ALIAS}.set_option('target_file_size', '{PIECE_FILE_BYTES // 1000}KB')"]


def _writers_turn(table: str) -> None:
    """Between two compaction pieces (of ``table``), with the writers' lock free: let waiting writers commit."""
    time.sleep(WRITERS_TURN_S)


#: Column types whose table-level min/max DuckDB's optimizers use (the others are not checked).
_BOUNDED_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                  "UBIGINT", "FLOAT", "DOUBLE", "DATE", "TIME", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "VARCHAR")
#: The table-level bounds DuckLake recorded for the columns of the store's tables.
_RECORDED_SQL = """
    SELECT t.table_name, c.column_name, s.table_id, s.column_id, s.min_value, s.max_value
    FROM {meta}.ducklake_table_column_stats s
    JOIN {meta}.ducklake_table t ON t.table_id = s.table_id AND t.end_snapshot IS NULL
    JOIN {meta}.ducklake_column c ON c.table_id = s.table_id AND c.column_id = s.column_id
         AND c.end_snapshot IS NULL AND c.parent_column IS NULL
    ORDER BY t.table_name, c.column_order
"""


@dataclass
class WrongBounds:
    """A column whose table-level min/max in the lake's catalog do not hold the values stored."""

    table: str
    column: str
    #: DuckDB's type of the column.
    type: str
    table_id: int
    column_id: int
    #: The (min, max) DuckLake recorded (text; None: none).
    recorded: tuple[str | None, str | None]
    #: The (min, max) of the values stored (text).
    stored: tuple[str, str]
    #: The (min, max) :func:`repair_column_stats` wrote.
    fixed: tuple[str, str] | None = None


def wrong_column_stats(con: duckdb.DuckDBPyConnection) -> list[WrongBounds]:
    """The columns whose table-level min/max in the lake's catalog do not hold the values stored.

    DuckLake 1.5.5 can record a bound narrower than the values (``bench/DUCKLAKE.md`` section 10); civicgrid's
    reads do not use these bounds (``geo.store.SAFE_OPTIMIZER_SETTINGS``), but other readers of the lake would.
    A bound is wrong when it is above the smallest (below the largest) value stored, or missing while values
    are stored (DuckLake would then take the next write's values as the bounds). Each table is read once (the
    ``min`` and ``max`` of its columns whose type has bounds: numbers, times, text).

    Parameters
    ----------
    con
        A connection on the store (its reads must not trust the bounds: any civicgrid connection).
    """
    meta = f"__ducklake_metadata_{ALIAS}"
    types = {(t, c): d for t, c, d in con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE database_name = ?",
        [ALIAS]).fetchall()}
    by_table: dict[str, list[tuple]] = {}
    for row in con.execute(_RECORDED_SQL.format(meta=meta)).fetchall():
        if types.get((row[0], row[1])) in _BOUNDED_TYPES:
            by_table.setdefault(row[0], []).append(row)
    wrong = []
    for table, rows in by_table.items():
        parts = []
        for _, column, _, _, lo, hi in rows:
            kind, col = types[(table, column)], '"' + column.replace('"', '""') + '"'
            keep = f" FILTER (WHERE NOT isnan({col}))" if kind in ("FLOAT", "DOUBLE") else ""
            low, high = f"min({col}){keep}", f"max({col}){keep}"
            below = "true" if lo is None else f"{low} < TRY_CAST({quote(lo)} AS {kind})"
            above = "true" if hi is None else f"{high} > TRY_CAST({quote(hi)} AS {kind})"
            parts.append(f"{low}::VARCHAR, {high}::VARCHAR, coalesce({below} OR {above}, false)")
        got = con.execute(f'SELECT {", ".join(parts)} FROM "{table}"').fetchone() or ()
        for k, (_, column, table_id, column_id, lo, hi) in enumerate(rows):
            s_lo, s_hi, bad = got[3 * k: 3 * k + 3]
            if s_lo is not None and bad:
                wrong.append(WrongBounds(table=table, column=column, type=types[(table, column)],
                                         table_id=int(table_id), column_id=int(column_id), recorded=(lo, hi),
                                         stored=(str(s_lo), str(s_hi))))
    return wrong


def repair_column_stats(db: str | os.PathLike) -> list[WrongBounds]:
    """Rewrite the table-level bounds of :func:`wrong_column_stats` in the lake's catalog, then commit a snapshot
    (the ``meta`` key ``column_stats_repaired``) so that every process attached to the store reads the bounds
    again instead of its cached ones (which its next write would otherwise write back).

    The values are read without holding up writers; then, in a short pause of the writers (with a PostgreSQL
    catalog, under the lease of :func:`_leased`, which holds the other machines' writers too), each wrong bound
    becomes the smaller (larger) of the value read and the bound recorded now (which covers what was written
    meanwhile); the other bound stays.

    Parameters
    ----------
    db
        The store.

    Returns
    -------
    list of WrongBounds
        The columns repaired, with the bounds written (``fixed``).
    """
    with contextlib.closing(Store(db).cursor()) as cur:
        wrong = wrong_column_stats(cur)
    if not wrong:
        return []
    meta = f"__ducklake_metadata_{ALIAS}"
    # the lease holds other machines' writers too (PostgreSQL catalog): a commit of theirs between the read of a
    # bound and its update would write back the bound it read before
    with writers_paused(db) as con, _leased(con, locate(db)):
        for w in wrong:
            where = f"WHERE table_id = {w.table_id} AND column_id = {w.column_id}"
            now = con.execute(f"SELECT min_value, max_value FROM {meta}.ducklake_table_column_stats {where}"
                              ).fetchone() or (None, None)
            lo, hi = con.execute(f"""
                SELECT CASE WHEN $now_lo IS NULL OR TRY_CAST($lo AS {w.type}) < TRY_CAST($now_lo AS {w.type})
                            THEN $lo ELSE $now_lo END,
                       CASE WHEN $now_hi IS NULL OR TRY_CAST($hi AS {w.type}) > TRY_CAST($now_hi AS {w.type})
                            THEN $hi ELSE $now_hi END""",
                {"lo": w.stored[0], "hi": w.stored[1], "now_lo": now[0], "now_hi": now[1]}).fetchone() or now
            w.fixed = (str(lo), str(hi))
            _with_retries(con, f"UPDATE {meta}.ducklake_table_column_stats SET min_value = {quote(str(lo))}, "
                               f"max_value = {quote(str(hi))} {where}")
            logger.warning("%s: the lake's bounds of %s.%s were %s, values stored %s: now %s", db, w.table,
                           w.column, w.recorded, w.stored, w.fixed)
        for attempt in range(10):  # another machine's write to ``meta`` (PostgreSQL catalog) may win the race
            con.execute("BEGIN TRANSACTION")
            try:
                set_meta(con, "column_stats_repaired", ", ".join(f"{w.table}.{w.column}" for w in wrong))
                con.execute("COMMIT")
                break
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    con.execute("ROLLBACK")
                if attempt == 9 or not isinstance(exc, duckdb.Error) or not retryable(exc):
                    raise
                time.sleep(random.uniform(0, min(2.0, 0.05 * 2 ** attempt)))
    return wrong


def _data_files(location: Location) -> int:
    return sum(1 for _ in location.data_path.rglob("*.parquet"))


def _with_retries(con: duckdb.DuckDBPyConnection, statement: str, *, tries: int = 10) -> list[tuple]:
    """Run ``statement`` (autocommit) again when it loses a race with another writer; the rows it returned."""
    for attempt in range(tries):
        try:
            return con.execute(statement).fetchall()
        except duckdb.Error as exc:
            if attempt == tries - 1 or not retryable(exc):
                raise
            time.sleep(random.uniform(0, min(2.0, 0.05 * 2 ** attempt)))
    raise AssertionError  # pragma: no cover


def maintain_periodically(db: str | os.PathLike, *, every_hours: float, first_after_s: float = 600,
                          keep_days: float = 30) -> threading.Event:
    """Run :func:`maintain` on a background thread: first after ``first_after_s`` seconds, then every
    ``every_hours`` hours, until the returned event is set. A failed run is logged and tried again next time.
    ``civicgrid serve`` starts it (setting ``maintain_hours``)."""
    if every_hours <= 0:
        msg = f"every_hours must be > 0, got {every_hours}"
        raise ValueError(msg)
    stop = threading.Event()

    def run() -> None:
        wait = first_after_s
        while not stop.wait(wait):
            try:
                maintain(db, keep_days=keep_days)
            except Exception:
                logger.exception("%s: scheduled maintenance failed; next try in %s h", db, every_hours)
            wait = every_hours * 3600

    threading.Thread(target=run, name="civicgrid-maintain", daemon=True).start()
    return stop
