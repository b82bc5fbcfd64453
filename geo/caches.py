"""Results kept per store version, with one computation for concurrent identical misses (single flight).

A key is looked up with the store's path, the past it views and its snapshot id (:meth:`Store.snapshot_id`, a
cheap change probe), so a committed write makes every older result unreachable: readers see each committed
write on their next query. A result that also depends on "now" (an overdue count: deadlines pass) is kept only
until the moment it could change by time alone (``holds_until``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from civicgrid.geo.store import Store

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
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
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
        full = (str(store.path), store.at, store.snapshot_id(), *key)
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
            value, until = compute()
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

    def clear(self) -> None:
        """Drop every result."""
        with self._lock:
            self._items.clear()
