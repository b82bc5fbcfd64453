"""Duplicate rows of an import: the dedup key of each row (its id, else a hash of its content) and the rows
whose key is already stored or came earlier in the file (:class:`KeyIndex` across the batches of one import)."""

from __future__ import annotations

import threading

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from civicgrid.geo.columns import trimmed


def content_keys(table: pa.Table, columns: list[str], prefix: str) -> np.ndarray:
    """Return a content hash per row over ``columns`` (the dedup key of files without ids)."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=object)
    return content_key_array(table, columns, prefix).to_numpy(zero_copy_only=False)


_HEX_BYTES = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def content_key_array(table: pa.Table, columns: list[str], prefix: str) -> pa.Array:
    """:func:`content_keys` as an Arrow string array (``prefix`` + 16 hex digits of the row's hash)."""
    if table.num_rows == 0:
        return pa.array([], pa.string())
    parts = [pc.fill_null(table.column(c).cast(pa.string()), "") for c in columns]
    text = pc.binary_join_element_wise(*parts, "\x1f") if len(parts) > 1 else parts[0]
    hashed = pd.util.hash_array(text.to_numpy(zero_copy_only=False).astype(object), categorize=False)
    digits = _HEX_BYTES[np.ascontiguousarray(hashed.astype(">u8")).view(np.uint8).reshape(-1, 8)]
    hexes = pa.array(np.ascontiguousarray(digits).view("S16").ravel(), pa.binary(16)).cast(pa.string())
    return pc.binary_join_element_wise(pa.scalar(prefix), hexes, "")


def existing_keys(con: duckdb.DuckDBPyConnection, table: str, keys: np.ndarray | pa.Array) -> np.ndarray:
    """Return a mask of ``keys`` already present in ``table.dedup_key``."""
    if len(keys) == 0:
        return np.zeros(0, dtype=bool)
    arr = keys if isinstance(keys, pa.Array) else pa.array(keys, type=pa.string())
    con.register("_keys", pa.table({"i": np.arange(len(keys)), "k": arr}))
    try:
        hit = con.execute(f"SELECT k.i FROM _keys k SEMI JOIN {table} t ON t.dedup_key = k.k").fetchnumpy()["i"]
    finally:
        con.unregister("_keys")
    mask = np.zeros(len(keys), dtype=bool)
    mask[np.asarray(hit, dtype=int)] = True
    return mask


def find_duplicates(con: duckdb.DuckDBPyConnection, table: str, keys: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Mask of valid rows that repeat an earlier row of the file or a row already stored."""
    dup = np.zeros(len(keys), dtype=bool)
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return dup
    dup[idx[pd.Series(keys[idx]).duplicated().to_numpy()]] = True
    fresh = idx[~dup[idx]]
    dup[fresh] |= existing_keys(con, table, keys[fresh])
    return dup


def dedup_keys(table: pa.Table, cols: dict[str, str], *, prefix: str) -> np.ndarray:
    """Return ``prefix:id`` keys from the id column, or content hashes when the file has no ids.

    Rows with an empty id fall back to their content hash.
    """
    return dedup_key_array(table, cols, prefix=prefix).to_numpy(zero_copy_only=False)


def dedup_key_array(table: pa.Table, cols: dict[str, str], *, prefix: str, ids: pa.Array | None = None) -> pa.Array:
    """:func:`dedup_keys` as an Arrow string array (``ids``: the id column already trimmed).

    Content hashes are taken over the cells as read (``table`` untrimmed), as they always were.
    """
    content_cols = [c for c in table.column_names if c not in ("__row__",)]
    if "id" not in cols:
        return content_key_array(table, content_cols, f"{prefix}#")
    ids = trimmed(table, cols["id"]) if ids is None else ids
    keyed = pc.binary_join_element_wise(pa.scalar(f"{prefix}:"), ids, "")
    if ids.null_count:
        missing = np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))
        hashed = content_key_array(table.take(pa.array(missing)), content_cols, f"{prefix}#")
        slot = np.full(len(ids), -1, dtype=np.int64)
        slot[missing] = np.arange(len(missing))
        keyed = pc.if_else(ids.is_null(), pc.take(hashed, pa.array(slot, mask=slot < 0)), keyed)
    return keyed


class KeyIndex:
    """Exact duplicate detection across the batches of one import (and against the rows already stored).

    Keeps the 64-bit hash of every stored key and of every key loaded so far:
    a Bloom filter of 2^28 bits (32 MB, two bits per key) answers "surely new"
    for almost every new row, and sorted arrays of the hashes settle the rest. A row whose
    hash was seen is a candidate, checked exactly against ``table.dedup_key``
    — so a hash collision never drops a row. Keys of the same batch are
    compared exactly among the rows that share a hash.

    Parameters
    ----------
    con
        The import's connection (read once here, and for exact checks).
    table
        Table holding ``dedup_key``.
    """

    BITMAP_BITS = 28

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        self.table = table
        # A private in-memory instance hashes keys while the import's connection may be busy writing; each
        # thread hashing takes its own cursor of it (a connection runs one query at a time).
        self._hasher = duckdb.connect(config={"threads": 1})
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self.bits = np.zeros(1 << (self.BITMAP_BITS - 6), dtype=np.uint64)
        self.runs: list[np.ndarray] = []  # sorted hashes: the stored keys, then one run per batch
        stored = con.execute(f"SELECT hash(dedup_key) AS h FROM {table} WHERE dedup_key IS NOT NULL").fetchnumpy()
        self._add(np.sort(np.asarray(stored["h"], dtype=np.uint64)))

    def hashes(self, keys: pa.Array) -> np.ndarray:
        """DuckDB's ``hash`` of each key (the function used on the stored keys); safe to call from several
        threads at once."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                cur = self._hasher.cursor()
                self._cursors.append(cur)
            self._local.cursor = cur
        cur.register("_k", pa.table({"k": keys}))
        try:
            h = cur.execute("SELECT hash(k) AS h FROM _k").fetchnumpy()["h"]
        finally:
            cur.unregister("_k")
        return np.asarray(h, dtype=np.uint64)

    def _slots(self, h: np.ndarray):
        """Two (word, bit) places of each hash in the bitmap, from disjoint bits of the hash."""
        mask = np.uint64(len(self.bits) - 1)
        for shift in (0, 32):
            part = h >> np.uint64(shift)
            yield ((part >> np.uint64(6)) & mask).astype(np.int64), np.left_shift(np.uint64(1), part & np.uint64(63))

    def _add(self, run: np.ndarray) -> None:
        if not len(run):
            return
        for word, bit in self._slots(run):
            self.bits[word] |= bit  # a word twice in ``word`` keeps one of its bits: the others are set next
            lost = (self.bits[word] & bit) == 0
            if lost.any():
                np.bitwise_or.at(self.bits, word[lost], bit[lost])
        self.runs.append(run)

    def seen(self, h: np.ndarray) -> np.ndarray:
        """Mask of hashes seen before (exact on hashes)."""
        maybe = np.ones(len(h), dtype=bool)
        for word, bit in self._slots(h):
            maybe &= (self.bits[word] & bit) != 0
        maybe = np.flatnonzero(maybe)
        out = np.zeros(len(h), dtype=bool)
        if len(maybe):
            hm = h[maybe]
            for run in self.runs:
                pos = np.minimum(np.searchsorted(run, hm), len(run) - 1)
                out[maybe] |= run[pos] == hm
        return out

    def duplicates(self, con: duckdb.DuckDBPyConnection, keys: pa.Array, ok: np.ndarray, *,
                   before_query=None, hashes: np.ndarray | None = None) -> np.ndarray:
        """Mask of rows (among ``ok``) repeating an earlier row of the import or a stored row.

        The other valid rows count as loaded from now on. ``before_query`` is
        called before ``con`` is queried (to wait for a pending write). ``hashes``: :meth:`hashes` of every key
        when already taken (e.g. on another thread).
        """
        dup = np.zeros(len(keys), dtype=bool)
        idx = np.flatnonzero(ok)
        if not len(idx):
            return dup
        whole = len(idx) == len(keys)
        k = keys if whole else keys.take(pa.array(idx))
        h = self.hashes(k) if hashes is None else (hashes if whole else hashes[idx])
        hs = np.sort(h)
        fresh = np.ones(len(idx), dtype=bool)
        if (hs[1:] == hs[:-1]).any():  # rows sharing a hash: compared exactly, in row order
            order = np.argsort(h, kind="stable")
            same = np.flatnonzero(h[order][1:] == h[order][:-1])
            grp = np.unique(np.concatenate([order[same], order[same + 1]]))
            again = pd.Series(k.take(pa.array(grp)).to_numpy(zero_copy_only=False)).duplicated().to_numpy()
            fresh[grp[again]] = False
        cand = np.flatnonzero(fresh & self.seen(h))
        if len(cand):  # hash hits: checked exactly against the stored keys
            if before_query is not None:
                before_query()
            stored = existing_keys(con, self.table, k.take(pa.array(cand)))
            fresh[cand[stored]] = False
        dup[idx[~fresh]] = True
        self._add(hs if fresh.all() else np.sort(h[fresh]))
        return dup

    def close(self) -> None:
        """Release the hashing instance."""
        for cur in self._cursors:
            cur.close()
        self._hasher.close()
