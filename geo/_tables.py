"""The shape every reader returns (:class:`ReadResult`, :class:`BatchReader`) and the clean-up of its columns
shared by the formats: unique names, blank cells as nulls, attributes as text."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyproj

#: Rows per batch of :func:`read_batches`.
BATCH_ROWS = 1 << 20


@dataclass
class ReadResult:
    """A file read as one Arrow table of strings (plus WKB ``geometry`` and int64 ``__row__``)."""

    table: pa.Table
    format: str
    crs: pyproj.CRS | None = None
    encoding: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: Rows the reader could not make a row of the table (``{row, field, reason}``: a wrong number of fields,
    #: an unclosed quote, an oversized value); not in ``table``, reported as rejected by the import.
    rejects: list[dict] = field(default_factory=list)


@dataclass
class BatchReader:
    """A file read as a sequence of Arrow tables of the same columns (see :func:`read_batches`)."""

    batches: Iterator[pa.Table]
    format: str
    columns: list[str]
    crs: pyproj.CRS | None = None
    encoding: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: Bytes of the file (for a progress estimate), and bytes per row seen in the first batch.
    size: int = 0
    rows_hint: int | None = None
    #: As :attr:`ReadResult.rejects`; filled as the batches are read (complete once they are all read).
    rejects: list[dict] = field(default_factory=list)


#: Column names the readers add themselves: a file's own column of that name is renamed (``geometry_2``).
_RESERVED = ("geometry", "__row__")


def dedupe_names(table: pa.Table, warnings: list[str]) -> pa.Table:
    """Make column names unique, non-empty and not reserved (``name_2``…; empty → ``column_N``)."""
    seen: dict[str, int] = dict.fromkeys(_RESERVED, 0)  # the readers' own columns
    out = []
    changed = []
    for i, name in enumerate(table.column_names):
        base = str(name).strip() or f"column_{i + 1}"
        new = base
        k = seen.get(base, 0)
        while new in seen:
            k += 1
            new = f"{base}_{k + 1}"
        seen[base] = k
        seen[new] = 0
        if new != name:
            changed.append(f"{name!r} → {new!r}")
        out.append(new)
    if changed:
        warnings.append("renamed empty, repeated or reserved column names: " + ", ".join(changed))
        table = table.rename_columns(out)
    return table


def blank_to_null(table: pa.Table) -> pa.Table:
    """Turn cells holding only spaces into nulls (string columns only)."""
    cols = []
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            blank = pc.equal(pc.utf8_trim_whitespace(col), "")
            if pc.any(blank).as_py():
                col = pc.if_else(blank, pa.scalar(None, col.type), col)
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def text_table(raw: pa.Table, geometry: str | None, warnings: list[str]) -> pa.Table:
    """The attribute columns of a Parquet or GDAL table (all but ``geometry``) as strings.

    Names are made unique (and never ``geometry`` or ``__row__``, which the readers add), cells of only
    spaces become null, and a column that cannot be read as text is skipped with a warning. The row count
    holds even when no column is left.
    """
    cols, names = [], []
    for name in raw.column_names:
        if name == geometry:
            continue
        col = raw.column(name)
        try:
            col = _to_string(col)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            warnings.append(f"column {name!r} of type {col.type} cannot be read as text; skipped")
            continue
        cols.append(col)
        names.append(name)
    if not cols:
        return pa.table({"__tmp": pa.nulls(raw.num_rows)}).drop_columns(["__tmp"])
    return blank_to_null(dedupe_names(pa.table(cols, names=names), warnings))


def _to_string(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Cast an attribute column to strings (dates ISO, floats shortest form)."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    if pa.types.is_string(t):
        return col
    if pa.types.is_large_string(t):
        return col.cast(pa.string())
    if pa.types.is_timestamp(t) and t.tz is not None:
        # Keep the offset so the time parser converts it: "2024-03-05 06:30:00+00:00".
        utc = col.cast(pa.timestamp(t.unit))
        return pc.binary_join_element_wise(pc.strftime(utc, format="%Y-%m-%dT%H:%M:%S"), "Z", "")
    if pa.types.is_timestamp(t):
        return pc.strftime(col, format="%Y-%m-%d %H:%M:%S")
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        raise pa.ArrowNotImplementedError("binary")
    if pa.types.is_nested(t):
        raise pa.ArrowNotImplementedError("nested")
    return col.cast(pa.string())
