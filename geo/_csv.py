"""CSV files, streamed in blocks (bounded memory for files of millions of rows) as tables of strings."""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from civicgrid.geo._encodings import check_encoding, detect_encoding
from civicgrid.geo._tables import BATCH_ROWS, BatchReader, ReadResult, dedupe_names
from civicgrid.geo.errors import ReadError

#: Bytes of a CSV block: the streaming reader holds a few dozen of them at once.
BLOCK_BYTES = 1 << 22

def read_csv(p: Path, encoding: str | None) -> ReadResult:
    stream = stream_csv(p, encoding, BATCH_ROWS)
    parts = list(stream.batches)
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    return ReadResult(table=table, format="csv", crs=None, encoding=stream.encoding, warnings=stream.warnings)


def _csv_encoding(p: Path, encoding: str | None) -> str:
    """The encoding to read a CSV file in: ``encoding`` (checked; BOM-aware for UTF-8), else detected."""
    if encoding is None:
        return detect_encoding(p)
    enc = check_encoding(encoding)
    if enc == "utf-8":
        with open(p, "rb") as fh:
            if fh.read(3) == codecs.BOM_UTF8:
                enc = "utf-8-sig"
    return enc


def stream_csv(p: Path, encoding: str | None, rows: int) -> BatchReader:
    """Stream a CSV file as string tables of about ``rows`` rows (the first one is read before returning)."""
    warnings: list[str] = []
    enc = _csv_encoding(p, encoding)
    arrow_enc = "utf8" if enc in ("utf-8", "utf-8-sig") else enc
    bad_line: list[str] = []

    def invalid(row) -> str:
        text = row.text if len(row.text) <= 80 else row.text[:77] + "..."
        bad_line.append(f"line {row.number}: expected {row.expected_columns} columns, got {row.actual_columns}"
                        if row.number is not None else
                        f"the row {text!r} has {row.actual_columns} columns where {row.expected_columns} "
                        "were expected")
        return "error"

    def failure(exc: Exception) -> ReadError:
        if isinstance(exc, UnicodeDecodeError):
            msg = f"{p.name} is not valid {enc} text ({exc.reason} at byte {exc.start}); give the right --encoding"
        elif "invalid UTF8" in str(exc) and not bad_line:
            msg = (f"{p.name} is not valid {enc} text (it starts as UTF-8 but holds bytes further on that are "
                   "not UTF-8); give the right --encoding")
        else:
            detail = bad_line[0] if bad_line else str(exc).split("\n")[0]
            msg = f"{p.name} is not a well-formed CSV file ({detail}); check its delimiter and quoting"
        return ReadError(msg)

    parse = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid)
    try:
        names = _csv_header(p, arrow_enc, parse)
        if not names:
            msg = f"{p.name} is empty: it has no header row"
            raise ReadError(msg)
        convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=True,
                                       null_values=[""], quoted_strings_can_be_null=True)
        reader = pacsv.open_csv(p, read_options=pacsv.ReadOptions(encoding=arrow_enc, block_size=BLOCK_BYTES),
                                parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise failure(exc) from exc
    empty = pa.Table.from_arrays([pa.array([], pa.string())] * len(reader.schema.names), names=reader.schema.names)
    columns = dedupe_names(empty, warnings).column_names  # (cells of only spaces are nulled by the importer)

    def batches() -> Iterator[pa.Table]:
        first_row, buf, count = 2, [], 0
        with reader:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                    raise failure(exc) from exc
                buf.append(batch)
                count += batch.num_rows
                if count >= rows:
                    yield _numbered(buf, columns, first_row)
                    first_row, buf, count = first_row + count, [], 0
        if count:
            yield _numbered(buf, columns, first_row)

    it = batches()
    first = next(it, None)
    if first is None:
        msg = f"{p.name} is empty: it has no data rows"
        raise ReadError(msg)
    size = p.stat().st_size
    text_bytes = sum(b.size for c in first.columns[:-1] for chunk in c.chunks for b in chunk.buffers()[2:] if b)
    per_row = (text_bytes + len(columns) * first.num_rows) / max(first.num_rows, 1)
    hint = first.num_rows if first.num_rows < rows else int(size / max(per_row, 1))
    return BatchReader(batches=itertools.chain([first], it), format="csv", columns=[*columns, "__row__"],
                       encoding=enc, warnings=warnings, size=size, rows_hint=hint)


def _numbered(batches: list[pa.RecordBatch], columns: list[str], first_row: int) -> pa.Table:
    """One table of record batches, renamed, with ``__row__`` (the spreadsheet row, from ``first_row``)."""
    table = pa.Table.from_batches(batches).rename_columns(columns)
    return table.append_column("__row__", pa.array(np.arange(first_row, first_row + table.num_rows, dtype="int64")))


def _csv_header(p: Path, arrow_enc: str, parse: pacsv.ParseOptions) -> list[str]:
    """Column names of a CSV file (read from its first block only)."""
    opts = pacsv.ReadOptions(encoding=arrow_enc, block_size=1 << 20)
    try:
        reader = pacsv.open_csv(p, read_options=opts, parse_options=parse,
                                convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return []
        raise
    with reader:
        return list(reader.schema.names)
