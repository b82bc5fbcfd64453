"""Arrays the case modules share: lookups in sorted keys, text columns as codes and as dictionary arrays."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def lookup(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which ``values`` are in the sorted ``keys``, and where (positions valid where found)."""
    at = np.searchsorted(keys, values)
    if not len(keys):
        return np.zeros(len(values), dtype=bool), at
    return keys[np.minimum(at, len(keys) - 1)] == values, at


def dictionary(indices: np.ndarray, values: list, *, kind=pa.int32()) -> pa.DictionaryArray:
    """A dictionary array of ``values[indices]`` (null where an index is negative)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.maximum(indices, 0), kind, mask=indices < 0),
                                          pa.array(values, pa.string()))


def codes(column) -> tuple[list, np.ndarray]:
    """The distinct values of a text column and each row's index among them (-1: null)."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if not chunks:
        return [], np.zeros(0, np.int64)
    if len(chunks) > 1:
        column = pa.chunked_array(chunks).unify_dictionaries().combine_chunks()
        chunks = [column]
    arr = chunks[0]
    index = pc.fill_null(arr.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return arr.dictionary.to_pylist(), index
