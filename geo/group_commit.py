"""Group commit: the small writes of many users of one process, committed together.

On a lake every statement and every commit costs a round of catalog work (10–50 ms), whatever its size. When
sixteen inspectors move cases at once, running their writes one transaction after another makes the last one
wait for fifteen. Instead, a process has one writer thread per store (:func:`submit`): a write is queued, and
the writer applies *every write queued meanwhile*, of every kind (case creations, case moves, visits), in one
transaction — the writes of each kind with a few set-based statements (the ``apply`` function of that kind) —
then commits once. A lone write costs what it did; under load the cost per write falls with the size of the
group, and a creation never waits for a separate transaction of moves (nor the other way round).

Each write in a group gets its own answer: ``apply`` returns a result or an exception per write, and a write
refused by validation (an illegal move) changes nothing while the others of its group go through. When the
group's transaction fails as a whole, it is retried after a race with another writer (with a random pause,
:func:`~civicgrid.geo.store.retry_pause`, at most :data:`~civicgrid.geo.store.WRITE_TRIES` tries, then the
writes fail with the error: never silently), and otherwise each write is tried alone, so one bad write never
fails the others.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import duckdb
from civicgrid.geo.store import WRITE_TRIES, Location, WriteConflictError, locate, retry_pause, writing

logger = logging.getLogger(__name__)

#: Most writes committed in one group.
MAX_GROUP = 64

Apply = Callable[[duckdb.DuckDBPyConnection, Sequence[Any]], Sequence[Any]]


class _Writer:
    """The writer thread of one store."""

    def __init__(self, db: str | os.PathLike | None, name: str) -> None:
        self.db = db
        self.queue: queue.SimpleQueue[tuple[Apply, Any, Future] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=f"civicgrid-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        stop = False
        while not stop:
            got = [self.queue.get()]
            while len(got) < MAX_GROUP:
                try:
                    got.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(entry is None for entry in got)  # stop(): finish what was queued, then end
            group = [entry for entry in got if entry is not None]
            if group:
                self._commit(group)

    def stop(self, timeout: float = 60) -> None:
        """Commit what is queued, then end the thread (at the process's exit: a thread left inside DuckDB's
        objects while the interpreter shuts down aborts the process)."""
        self.queue.put(None)
        self.thread.join(timeout)

    @staticmethod
    def _apply(con: duckdb.DuckDBPyConnection, group: list[tuple[Apply, Any, Future]]) -> list[Any]:
        """Apply the writes of ``group`` in ``con``'s transaction, each kind's writes together (in the order
        they were queued), and return their results in the group's order."""
        kinds: dict[Apply, list[int]] = {}
        for i, (apply, _, _) in enumerate(group):
            kinds.setdefault(apply, []).append(i)
        results: list[Any] = [None] * len(group)
        for apply, where in kinds.items():
            got = list(apply(con, [group[i][1] for i in where]))
            if len(got) != len(where):
                msg = f"{apply.__name__} answered {len(got)} results for {len(where)} writes"
                raise RuntimeError(msg)
            for i, result in zip(where, got, strict=True):
                results[i] = result
        return results

    def _commit(self, group: list[tuple[Apply, Any, Future]]) -> None:
        started = time.perf_counter()
        for attempt in range(WRITE_TRIES):
            try:
                _GROUP.state = {}  # a new state for each try: a retried transaction starts again
                try:
                    with writing(self.db) as con:
                        results = self._apply(con, group)
                finally:
                    _GROUP.state = None
                break
            except WriteConflictError as exc:
                if attempt == WRITE_TRIES - 1:
                    return self._fail(group, exc)
                logger.info("a group of %d writes lost a race (try %d): %s", len(group), attempt + 1, exc)
                time.sleep(retry_pause(attempt))
            except BaseException as exc:
                if len(group) > 1:  # find the write that fails: each one alone
                    for one in group:
                        self._commit([one])
                    return None
                return self._fail(group, exc)
        logger.debug("a group of %d writes committed in %.3f s", len(group), time.perf_counter() - started)
        for (_, _, future), result in zip(group, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        return None

    @staticmethod
    def _fail(group: list[tuple[Apply, Any, Future]], exc: BaseException) -> None:
        for _, _, future in group:
            future.set_exception(exc)


_GROUP = threading.local()


def group_state() -> dict[str, Any] | None:
    """A dict shared by the ``apply`` functions of the group being written in this thread's transaction (None
    outside a group): e.g. the next free id of a table, which a second read of ``max(id)`` after the group's own
    inserts would find only by scanning the whole table (its statistics do not cover uncommitted rows)."""
    return getattr(_GROUP, "state", None)


_WRITERS: dict[Location, _Writer] = {}
_LOCK = threading.Lock()


@atexit.register
def _stop_writers() -> None:
    with _LOCK:
        writers = list(_WRITERS.values())
        _WRITERS.clear()
    for writer in writers:
        writer.stop()


def submit(db: str | os.PathLike | None, kind: str, apply: Apply, item: Any) -> Any:
    """Queue ``item`` for the writer of the store ``db``, wait for its group to commit and return its result (or
    raise its exception).

    Parameters
    ----------
    db
        The store.
    kind
        The kind of write, e.g. ``"case-moves"`` (for messages; the writes of one kind are those of one
        ``apply`` function).
    apply
        ``apply(con, items) -> results``: applies a group of items of this kind in the open write transaction
        ``con``, one result or exception per item, in order. Items answered with an exception must have changed
        nothing; ``apply`` must not commit, and must leave the connection as it found it (temp tables dropped,
        Arrow tables unregistered), since other kinds' writes follow in the same transaction.
    item
        This write.
    """
    key = locate(db)
    writer = _WRITERS.get(key)
    if writer is None:
        with _LOCK:
            writer = _WRITERS.get(key)
            if writer is None:
                writer = _WRITERS[key] = _Writer(db, "writer")
    future: Future = Future()
    writer.queue.put((apply, item, future))
    return future.result()
