"""Group commit: the small writes of many users of one process, committed together.

On a lake every statement and every commit costs a round of catalog work (10–50 ms), whatever its size. When
sixteen inspectors move cases at once, running their writes one transaction after another makes the last one
wait for fifteen. Instead, a process has one writer thread per kind of write (:func:`submit`): a write is
queued, and the writer applies *every write queued meanwhile* in one transaction with a few set-based
statements (the ``apply`` function of that kind), then commits once. A lone write costs what it did; under load
the cost per write falls with the size of the group.

Each write in a group gets its own answer: ``apply`` returns a result or an exception per write, and a write
refused by validation (an illegal move) changes nothing while the others of its group go through. When the
group's transaction fails as a whole, it is retried after a race with another machine's writer, and otherwise
each write is tried alone, so one bad write never fails the others.
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
    """The writer thread of one kind of write to one store."""

    def __init__(self, db: str | os.PathLike | None, apply: Apply, name: str) -> None:
        self.db = db
        self.apply = apply
        self.queue: queue.SimpleQueue[tuple[Any, Future] | None] = queue.SimpleQueue()
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

    def _commit(self, group: list[tuple[Any, Future]]) -> None:
        items = [item for item, _ in group]
        for attempt in range(WRITE_TRIES):
            try:
                with writing(self.db) as con:
                    results = list(self.apply(con, items))
                break
            except WriteConflictError as exc:
                if attempt == WRITE_TRIES - 1:
                    return self._fail(group, exc)
                time.sleep(retry_pause(attempt))
            except BaseException as exc:
                if len(group) > 1:  # find the write that fails: each one alone
                    for one in group:
                        self._commit([one])
                    return None
                return self._fail(group, exc)
        for (_, future), result in zip(group, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        return None

    @staticmethod
    def _fail(group: list[tuple[Any, Future]], exc: BaseException) -> None:
        for _, future in group:
            future.set_exception(exc)


_WRITERS: dict[tuple[Location, str], _Writer] = {}
_LOCK = threading.Lock()


@atexit.register
def _stop_writers() -> None:
    with _LOCK:
        writers = list(_WRITERS.values())
        _WRITERS.clear()
    for writer in writers:
        writer.stop()


def submit(db: str | os.PathLike | None, kind: str, apply: Apply, item: Any) -> Any:
    """Queue ``item`` for the writer of ``kind`` on the store ``db``, wait for its group to commit and return
    its result (or raise its exception).

    Parameters
    ----------
    db
        The store.
    kind
        The kind of write (one writer thread per kind and store in a process), e.g. ``"case-moves"``.
    apply
        ``apply(con, items) -> results``: applies a group of items in the open write transaction ``con``, one
        result or exception per item, in order. Items answered with an exception must have changed nothing.
    item
        This write.
    """
    key = (locate(db), kind)
    writer = _WRITERS.get(key)
    if writer is None:
        with _LOCK:
            writer = _WRITERS.get(key)
            if writer is None:
                writer = _WRITERS[key] = _Writer(db, apply, kind)
    future: Future = Future()
    writer.queue.put((item, future))
    return future.result()
