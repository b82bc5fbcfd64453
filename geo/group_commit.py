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

The processes of one service (``civicgrid serve --workers N``) would otherwise take turns on the store's lock,
each committing its own small groups: a write waited for the other processes' commits as well as its own.
With :data:`SHARE_ENV` set (``civicgrid serve`` sets it for its workers), the first of them to write becomes the
store's *committer* on this machine: it listens on a Unix socket (in the abstract namespace, named after the
store's lock file, so it goes away with the process), and the others hand it their writes
(:func:`_hand_over`), which join its groups; each answer goes back to the process that asked. Only a process
of the same user is served, and a process hands its writes only to a committer of its own user (the
kernel's record of the peer, ``SO_PEERCRED``: a socket name in the abstract namespace can be taken by anyone).
Nothing is ever applied twice or guessed: a write the committer did not take (it is
ending, or there is none on this machine, e.g. another machine of a PostgreSQL-catalog office) is committed by
the process itself under the store's lock, as without sharing; and when the committer ends (killed) after it
took a write but before it answered, the write fails with an error saying it may have been committed — like
the answer of a killed service, it is not acknowledged.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import pickle
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import duckdb
from civicgrid.geo.errors import StoreError
from civicgrid.geo.store import (
    ALIAS,
    WRITE_TRIES,
    Location,
    WriteConflictError,
    fetch_value,
    locate,
    retry_pause,
    writing,
)

logger = logging.getLogger(__name__)

#: Most writes committed in one group.
MAX_GROUP = 64

Apply = Callable[[duckdb.DuckDBPyConnection, Sequence[Any]], Sequence[Any]]


class _Writer:
    """The writer thread of one store."""

    def __init__(self, db: str | os.PathLike | None, name: str) -> None:
        self.db = db
        self.queue: queue.SimpleQueue[tuple[Apply, Any, Future] | None] = queue.SimpleQueue()
        self._gate = threading.Lock()
        self.closing = False
        #: (snapshot id, memory) of the last group: what its writes kept (:func:`group_memory`) and the snapshot
        #: its commit made; valid for the next group only if that group's transaction reads this very snapshot.
        self.kept: tuple[int, dict[str, Any]] | None = None
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

    def offer(self, apply: Apply, item: Any) -> Future | None:
        """Queue a write; its future, or None when the writer is ending (then nothing was queued)."""
        with self._gate:
            if self.closing:
                return None
            future: Future = Future()
            self.queue.put((apply, item, future))
            return future

    def stop(self, timeout: float = 60) -> None:
        """Commit what is queued, then end the thread (at the process's exit: a thread left inside DuckDB's
        objects while the interpreter shuts down aborts the process)."""
        with self._gate:
            self.closing = True
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

    def _begin(self, con: duckdb.DuckDBPyConnection) -> int:
        """Start a group's transaction: the snapshot it reads, and (as :func:`group_memory`) a copy of what the
        last group kept when that snapshot is the one the last group's own commit made, else an empty one."""
        start = int(fetch_value(con, f"SELECT id FROM {ALIAS}.current_snapshot()"))
        kept = self.kept if self.kept is not None and self.kept[0] == start else (start, {})
        self.kept = None  # dropped while the group writes: a failed commit may or may not have committed
        # entries are replaced, never changed in place: a copy one level deep is the transaction's own
        _GROUP.memory = {k: v.copy() if isinstance(v, dict) else v for k, v in kept[1].items()}
        return start

    def _keep(self, group: list[tuple[Apply, Any, Future]], start: int, results: list[Any]) -> None:
        """After the group's commit: keep its memory for the next group, with the snapshot its commit made if it
        was the only commit since ``start`` (the snapshot the group read): ``start + 1``, or ``start`` when the
        group wrote nothing. The next group takes it only if its transaction reads that very snapshot: another
        commit before or after this one makes the ids differ (each commit adds one to the newest id). A group
        with a write of a kind that does not keep the memory up to date keeps nothing."""
        memory = getattr(_GROUP, "memory", None)
        if memory is None or not all(apply in _KEEPERS for apply, _, _ in group):
            return
        wrote = any(not isinstance(r, BaseException) for r in results)
        self.kept = (start + 1 if wrote else start, memory)

    def _commit(self, group: list[tuple[Apply, Any, Future]]) -> None:
        started = time.perf_counter()
        for attempt in range(WRITE_TRIES):
            try:
                _GROUP.state = {}  # a new state for each try: a retried transaction starts again
                # the snapshot the last group's commit made, in which no other machine's lease held (that group
                # read the lease in the snapshot before it): if this group's transaction reads it, the leases are
                # unchanged and not read again (writing, lease_free_at)
                lease_free_at = self.kept[0] if self.kept is not None else None
                try:
                    with writing(self.db, keep_cursor=True, lease_free_at=lease_free_at) as con:  # one cursor
                        start = self._begin(con)
                        results = self._apply(con, group)
                    self._keep(group, start, results)
                finally:
                    _GROUP.state = None
                    _GROUP.memory = None
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


def group_memory() -> dict[str, Any] | None:
    """What the writes of this thread's group may take as known without reading the store again (None outside a
    group): a dict the ``apply`` functions that keep it (:func:`keeps_memory`) fill with exactly what a read in
    the group's transaction would give, e.g. the cases they wrote and the next free ids.

    It carries over from one group to the next only while nothing else is committed to the store in between:
    the writer keeps it after a commit that made the one snapshot after the one its transaction read, and hands
    it to the next group only when that group's transaction reads this very snapshot (the ids of a lake's
    snapshots go up by one with each commit); otherwise the next group starts with an empty one (and reads).
    A group that fails, or holds a write of a kind that does not keep it, drops it. Its values are dicts (copied
    for each group) or values never changed in place: replace an entry, do not mutate it."""
    return getattr(_GROUP, "memory", None)


_KEEPERS: set[Apply] = set()


def keeps_memory(apply: Apply) -> Apply:
    """Declare that ``apply`` keeps :func:`group_memory` up to date with everything it writes (a decorator);
    a group with a write of any other kind drops the memory after its commit."""
    _KEEPERS.add(apply)
    return apply


_WRITERS: dict[Location, _Writer] = {}
_EXCHANGES: dict[Location, _Exchange] = {}
_LOCK = threading.Lock()

#: Environment variable: when set (to anything but "" or "0"), the processes of this machine hand their writes
#: of a store to one of them (the committer), which commits them with its own; ``civicgrid serve`` sets it.
SHARE_ENV = "CIVICGRID_SHARED_WRITER"


def _sharing() -> bool:
    return os.environ.get(SHARE_ENV, "") not in ("", "0")


def _address(key: Location) -> str:
    """The committer's socket of the store ``key`` on this machine (abstract namespace: no file, gone with the
    process that holds it, so a killed committer leaves nothing behind)."""
    digest = hashlib.sha256(str(key.lock_path).encode()).hexdigest()[:40]
    return f"\0civicgrid-writes-{digest}"


def _peer_uid(conn: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (the kernel's record, not its word)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _send(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(struct.pack("!Q", len(payload)) + payload)


def _receive(conn: socket.socket) -> bytes | None:
    """One message, or None when the other side closed the connection before sending all of it."""
    head = _read_exactly(conn, 8)
    if head is None:
        return None
    return _read_exactly(conn, struct.unpack("!Q", head)[0])


def _read_exactly(conn: socket.socket, n: int) -> bytes | None:
    parts, got = [], 0
    while got < n:
        part = conn.recv(min(n - got, 1 << 20))
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class _Exchange:
    """The committer's side of a store's socket: the writes other processes hand over join this process's
    writer's groups, and each answer (result or error) goes back on the connection it came from."""

    def __init__(self, writer: _Writer, listener: socket.socket) -> None:
        self.writer = writer
        self.listener = listener
        self.handlers: set[threading.Thread] = set()
        self._handlers_lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, name="civicgrid-writes-exchange", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            if _peer_uid(conn) != os.getuid():  # writes (pickles) only from this user's processes:
                with contextlib.suppress(OSError), conn:  # another user's process commits its writes itself
                    _send(conn, pickle.dumps(("local", None)))
                continue
            handler = threading.Thread(target=self._handle, args=(conn,), name="civicgrid-writes-in", daemon=True)
            with self._handlers_lock:
                self.handlers.add(handler)
            handler.start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            with conn:
                message = _receive(conn)
                if message is None:
                    return
                try:
                    apply, item = pickle.loads(message)  # from a process of this user (SO_PEERCRED)
                except Exception as exc:  # e.g. another version of civicgrid: that process commits it itself
                    logger.warning("a write handed over by another process could not be read: %s", exc)
                    future = None
                else:
                    future = self.writer.offer(apply, item)
                if future is None:  # not taken (this process is ending): the other one commits it itself
                    _send(conn, pickle.dumps(("local", None)))
                    return
                try:
                    answer: tuple[str, Any] = ("ok", future.result())
                except BaseException as exc:
                    answer = ("error", exc)
                try:
                    payload = pickle.dumps(answer)
                except Exception:
                    payload = pickle.dumps(("error", StoreError(f"{type(answer[1]).__name__}: {answer[1]}")))
                _send(conn, payload)
        except OSError as exc:
            logger.warning("a write handed over by another process could not be answered: %s", exc)
        finally:
            with self._handlers_lock:
                self.handlers.discard(threading.current_thread())

    def close(self) -> None:
        """Take no more writes (the next process to write becomes the committer)."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.listener.close()
        self.thread.join(5)

    def finish(self, timeout: float = 30) -> None:
        """Wait until the writes taken from other processes are answered (after the writer committed them)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._handlers_lock:
                left = list(self.handlers)
            if not left or time.monotonic() > deadline:
                return
            left[0].join(max(0.0, deadline - time.monotonic()))


@atexit.register
def _stop_writers() -> None:
    with _LOCK:
        writers = list(_WRITERS.values())
        exchanges = list(_EXCHANGES.values())
        _WRITERS.clear()
        _EXCHANGES.clear()
    for exchange in exchanges:
        exchange.close()
    for writer in writers:
        writer.stop()
    for exchange in exchanges:
        exchange.finish()


def _writer(db: str | os.PathLike | None, key: Location) -> _Writer:
    writer = _WRITERS.get(key)
    if writer is None:
        with _LOCK:
            writer = _WRITERS.get(key)
            if writer is None:
                writer = _WRITERS[key] = _Writer(db, "writer")
    return writer


def _become_committer(db: str | os.PathLike | None, key: Location) -> bool:
    """Listen on the store's socket (False when another process does already)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(_address(key))
    except OSError:
        listener.close()
        return False
    listener.listen(128)
    writer = _writer(db, key)
    with _LOCK:
        _EXCHANGES[key] = _Exchange(writer, listener)
    logger.info("%s: this process commits the writes of the service's processes", key.name)
    return True


_LOCAL = object()


def _hand_over(db: str | os.PathLike | None, key: Location, apply: Apply, item: Any) -> Any:
    """Have the store's committer on this machine commit ``item`` (becoming the committer when there is none);
    its result, or :data:`_LOCAL` when this process must commit the write itself."""
    if key in _EXCHANGES:
        return _LOCAL
    try:
        message = pickle.dumps((apply, item))
    except (pickle.PicklingError, AttributeError, TypeError):  # e.g. a function made at run time
        return _LOCAL
    for _ in range(3):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with conn:
            try:
                conn.connect(_address(key))
            except (ConnectionRefusedError, FileNotFoundError):
                if _become_committer(db, key):
                    return _LOCAL
                continue  # another process became the committer meanwhile
            if _peer_uid(conn) != os.getuid():
                # an abstract socket has no file permissions: any user may hold the name. Its answers (pickles)
                # are read only from a process of this user; otherwise this process commits the write itself
                logger.warning("%s: the store's write socket is held by another user's process (uid %d); "
                               "this process commits its writes itself", key.name, _peer_uid(conn))
                return _LOCAL
            try:
                _send(conn, message)
            except (BrokenPipeError, ConnectionResetError):
                continue  # not all of it arrived: the committer never saw a whole write
            try:
                reply = _receive(conn)
            except OSError:  # reset: the committer ended
                reply = None
        if reply is None:
            msg = (f"{key.name}: the process committing this store's writes ended before it answered; the write "
                   "may or may not have been committed: look before repeating it")
            raise StoreError(msg)
        status, value = pickle.loads(reply)  # the committer is a process of this user
        if status == "local":  # not taken (the committer is ending, or serves another user): commit it here
            return _LOCAL
        if status == "error":
            raise value
        return value
    return _LOCAL


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
    if _sharing():
        result = _hand_over(db, key, apply, item)
        if result is not _LOCAL:
            return result
    future = _writer(db, key).offer(apply, item)
    if future is None:
        msg = f"{key.name}: this process is ending; its writer takes no more writes"
        raise StoreError(msg)
    return future.result()
