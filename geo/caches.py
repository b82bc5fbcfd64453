"""Results kept per store version, with one computation for concurrent identical misses (single flight).

A key is looked up with the store's path, the past it views and its snapshot id (:meth:`Store.snapshot_id`, a
cheap change probe), so a committed write makes every older result unreachable: readers see each committed
write on their next query. A result that also depends on "now" (an overdue count: deadlines pass) is kept only
until the moment it could change by time alone (``holds_until``).

The processes of one service can share their results through a folder (``shared``): a result one process
computed is read by the others instead of being computed again, and a miss is computed once across the
processes (a lock file per key). The files are keyed like the memory (store, past viewed, snapshot id, key), so
they are never stale either; the folder keeps at most ``size`` results (the least recently written dropped).

Writes need a finer key: :func:`cached_read` keeps a read of a few small tables (problem types, the locator's
areas) until a committed write changes *those* tables, read from the catalog's record of each snapshot's changes,
so a case write does not read them again after every other case write.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pickle
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from civicgrid.geo.store import ALIAS, Store, quote

T = TypeVar("T")


class _Flight:
    """One computation in progress: the callers asking for the same key while it runs wait for its result."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class VersionCache:
    """Results kept per store version (least recently used dropped first), computed once per key.

    Concurrent callers missing the same key wait for the one computing it (single flight) instead of all
    computing it: the first view of a heavy page or query after a write costs its CPU once, not once per client.

    Parameters
    ----------
    size
        The most results kept; 0 keeps none (every call computes, nothing is shared).
    shared
        A folder shared with the other processes keeping the same results (e.g. the workers of one service),
        or None: this process only. Results stored there must pickle, and their keys must have the same
        ``repr`` in every process (strings, numbers, None, tuples of them).
    """

    def __init__(self, size: int, *, shared: str | os.PathLike | None = None) -> None:
        self.size = int(size)
        self.shared = Path(shared) if shared else None
        self._items: OrderedDict[Hashable, tuple[Any, float | None]] = OrderedDict()
        self._flights: dict[Hashable, _Flight] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, store: Store, key: tuple, compute: Callable[[], T]) -> T:
        """Return ``compute()`` cached under ``key`` for the store's current version."""
        return self.get_until(store, key, lambda: (compute(), None))

    def get_until(self, store: Store, key: tuple,
                  compute: Callable[[], tuple[T, float | None]]) -> T:
        """Return the value of ``compute()``, which returns ``(value, holds_until)``, cached under ``key`` for the
        store's current version and, when ``holds_until`` is not None, until that moment (seconds since the
        epoch, as :func:`time.time`): a value that depends on "now" is computed again once it could differ."""
        if self.size <= 0:
            return compute()[0]
        return self._get((str(store.path), store.at, store.snapshot_id(), *key), compute)

    def get_lasting(self, store: Store, key: tuple, compute: Callable[[], T]) -> T:
        """Return ``compute()`` cached under ``key`` for the store's path and the past it views, across its
        versions: for results whose ``key`` itself identifies every datum they read (e.g. a fingerprint of the
        rows read), which a write elsewhere leaves valid."""
        if self.size <= 0:
            return compute()
        return self._get((str(store.path), store.at, "lasting", *key), lambda: (compute(), None))

    def _get(self, full: tuple, compute: Callable[[], tuple[T, float | None]]) -> T:
        with self._lock:
            found = self._items.get(full)
            if found is not None and (found[1] is None or time.time() < found[1]):
                self._items.move_to_end(full)
                return found[0]
            running = self._flights.get(full)
            if running is None:
                flight = self._flights[full] = _Flight()
        if running is not None:  # another caller computes it: wait for its result (or its error)
            running.done.wait()
            if running.error is not None:
                raise running.error
            return running.value
        try:
            value, until = compute() if self.shared is None else self._shared_compute(full, compute)
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.value = value
            with self._lock:
                if until is None or time.time() < until:
                    self._items[full] = (value, until)
                    self._items.move_to_end(full)
                    while len(self._items) > self.size:
                        self._items.popitem(last=False)
            return value
        finally:
            with self._lock:
                self._flights.pop(full, None)
            flight.done.set()

    def _shared_compute(self, full: tuple, compute: Callable[[], tuple[T, float | None]]
                        ) -> tuple[T, float | None]:
        """``compute()``, or the result another process computed for ``full`` (waiting while one computes)."""
        assert self.shared is not None
        name = repr(full)
        digest = hashlib.sha256(name.encode()).hexdigest()
        path = self.shared / f"{digest}.pickle"
        try:
            lock = open(self.shared / f"{digest}.lock", "ab")  # noqa: SIM115 (closed below)
        except OSError:  # the folder is gone (e.g. a temporary folder cleaned): this process computes alone
            return compute()
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process computing it: wait for its result
            try:
                try:
                    with open(path, "rb") as f:
                        found_name, value, until = pickle.load(f)
                    if found_name == name and (until is None or time.time() < until):
                        return value, until
                except (OSError, EOFError, pickle.UnpicklingError, ValueError):
                    pass  # not there (or pruned, or cut short by a crash): computed
                value, until = compute()
                if until is None or time.time() < until:
                    part = path.with_name(f"{digest}.{os.getpid()}.{threading.get_ident()}.part")
                    try:
                        with open(part, "wb") as f:
                            pickle.dump((name, value, until), f, protocol=pickle.HIGHEST_PROTOCOL)
                        os.replace(part, path)
                        self._prune()
                    except OSError:  # a full disk: the answer is not shared, still answered
                        with contextlib.suppress(OSError):
                            part.unlink()
                return value, until
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _prune(self) -> None:
        """Keep the newest ``size`` results of the shared folder (a lock file removed while another process
        holds it at worst lets one result be computed twice)."""
        assert self.shared is not None
        kept: list[tuple[float, Path]] = []
        for entry in os.scandir(self.shared):
            if entry.name.endswith(".pickle"):
                with contextlib.suppress(FileNotFoundError):
                    kept.append((entry.stat().st_mtime, Path(entry.path)))
        kept.sort()
        for _, path in kept[:max(0, len(kept) - self.size)]:
            for name in (path, path.with_suffix(".lock")):
                with contextlib.suppress(FileNotFoundError):
                    name.unlink()

    def clear(self) -> None:
        """Drop every result (of this process; the shared folder's files are keyed by store version)."""
        with self._lock:
            self._items.clear()


# --- small tables read again only after a write changed them -------------------------------------------------

#: Kinds of snapshot change that name a table by its id and change only its rows (``inlined_insert:9``).
_ROW_CHANGES = frozenset({"inserted_into_table", "deleted_from_table", "inlined_insert", "inlined_delete",
                          "compacted_table", "flushed_inlined", "merge_adjacent", "rewrote_table"})
_CHANGE = re.compile(r'(\w+):("[^"]*"(?:\."[^"]*")*|\d+)')
_CHANGES = re.compile(rf"(?:{_CHANGE.pattern})(?:,(?:{_CHANGE.pattern}))*")
_CACHED: dict[tuple[str, str], tuple[int, Any]] = {}
_CACHED_LOCK = threading.Lock()


def _unchanged_since(con: duckdb.DuckDBPyConnection, since: int, now: int, tables: tuple[str, ...]) -> bool:
    """Whether no snapshot after ``since`` up to ``now`` changed ``tables`` (or the schema), read from the
    catalog's own record of each snapshot's changes: one small query, whatever the size of the store. False
    when a snapshot of that range was expired (its record is gone)."""
    meta = f"__ducklake_metadata_{ALIAS}"
    since, now = int(since), int(now)
    row = con.execute(f"""
        SELECT (SELECT count(*) FROM {meta}.ducklake_snapshot WHERE snapshot_id BETWEEN {since} AND {now}),
               (SELECT list(changes_made) FROM {meta}.ducklake_snapshot_changes
                WHERE snapshot_id > {since} AND snapshot_id <= {now}),
               (SELECT list(CAST(table_id AS VARCHAR)) FROM {meta}.ducklake_table
                WHERE end_snapshot IS NULL AND table_name IN ({', '.join(quote(t) for t in tables)}))""").fetchone()
    if row is None or int(row[0]) != now - since + 1 or len(row[2] or []) != len(tables):
        return False
    ids = set(row[2])
    for changes in row[1] or []:
        if changes and not _CHANGES.fullmatch(changes):  # a record this code cannot read: assume a change
            return False
        for kind, value in _CHANGE.findall(changes or ""):
            if kind not in _ROW_CHANGES or value in ids:  # the schema changed, or one of the tables
                return False
    return True


def cached_read(con: duckdb.DuckDBPyConnection, key: str, tables: tuple[str, ...],
                load: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """``load(con)`` (a read of the small tables ``tables``, e.g. the problem types), reused by this process for
    as long as no committed write changes those tables.

    Reading a small table of the lake costs a round of catalog work (5–30 ms), which a write repeating it on
    every request pays many times; this costs two catalog lookups (the snapshot ``con`` reads and the record of
    the snapshots since the cached one), so a case write reads each of them once per change, not once per write.
    Only for reads in a connection that has not itself written ``tables`` in its open transaction (its
    uncommitted changes are not in the catalog's record).

    Parameters
    ----------
    con
        A connection to the store (``USE lake``), autocommit or inside a write.
    key
        What is cached (one value per key and store), e.g. ``"problem_types"``.
    tables
        The tables ``load`` reads.
    load
        Reads the value from ``con``; its result is shared: callers must not change it.
    """
    row = con.execute(f"SELECT (SELECT path FROM duckdb_databases() WHERE database_name = '{ALIAS}'), "
                      f"(SELECT id FROM {ALIAS}.current_snapshot())").fetchone()
    if row is None:  # pragma: no cover (a scalar query always answers one row)
        return load(con)
    store, now = str(row[0]), int(row[1])
    slot = (store, key)
    with _CACHED_LOCK:
        hit = _CACHED.get(slot)
    if hit is not None:
        since, value = hit
        if since == now:
            return value
        if since < now and _unchanged_since(con, since, int(now), tables):
            with _CACHED_LOCK:
                if _CACHED.get(slot, (0,))[0] <= now:
                    _CACHED[slot] = (int(now), value)
            return value
    value = load(con)
    if hit is None or hit[0] <= now:  # a transaction reading an older snapshot does not replace a newer value
        with _CACHED_LOCK:
            _CACHED[slot] = (int(now), value)
    return value
