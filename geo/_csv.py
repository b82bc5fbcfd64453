"""CSV files, streamed in blocks (bounded memory for files of millions of rows) as tables of strings."""

from __future__ import annotations

import codecs
import csv
import itertools
from collections.abc import Generator, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from civicgrid.geo._encodings import check_encoding, detect_encoding
from civicgrid.geo._tables import BATCH_ROWS, BatchReader, ReadResult, dedupe_names
from civicgrid.geo.errors import ReadError

#: Bytes of a CSV block: the streaming reader holds a few dozen of them at once.
BLOCK_BYTES = 1 << 22

#: Longest value of a cell, in characters: a row with a longer one is rejected (a runaway quote, a pasted
#: document), never loaded nor allowed to stop the file.
MAX_FIELD_CHARS = 1_000_000

#: Encodings in which the byte of ``"`` only ever stands for a quote (the quote count of the bytes is exact).
_ASCII_SAFE = ("utf-8", "utf-8-sig", "gb18030", "gbk", "gb2312", "big5", "big5hkscs", "shift_jis", "cp936",
               "ascii", "latin-1", "iso8859-1", "cp1252")

#: Most rows the exact reader rejects before it gives up on a file as not CSV at all.
MAX_REJECTS = 10_000

def read_csv(p: Path, encoding: str | None) -> ReadResult:
    stream = stream_csv(p, encoding, BATCH_ROWS)
    parts = list(stream.batches)
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    return ReadResult(table=table, format="csv", crs=None, encoding=stream.encoding, warnings=stream.warnings,
                      rejects=stream.rejects)


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
    """Stream a CSV file as string tables of about ``rows`` rows (the first one is read before returning).

    Well-formed files are parsed by Arrow. A row Arrow cannot take (a wrong number of fields, a value longer
    than a block), and a last row whose value spans lines in a file of an odd number of quotes (a quote never
    closed, which Arrow reads as one value holding the rest of the file), switch to an exact reader (Python's
    ``csv``, strict) from the first row not yet read: each bad row is then a reject of the returned
    reader (``{row, field, reason}``) and the rows after it are read as rows of their own, never merged into
    it. A row holding a value of more than :data:`MAX_FIELD_CHARS` characters is rejected too.
    """
    warnings: list[str] = []
    rejects: list[dict] = []
    enc = _csv_encoding(p, encoding)
    arrow_enc = "utf8" if enc in ("utf-8", "utf-8-sig") else enc
    bad_line: list[str] = []

    def invalid(row) -> str:
        text = row.text if len(row.text) <= 80 else row.text[:77] + "..."
        bad_line.append(f"the row {text!r} has {row.actual_columns} columns where {row.expected_columns} "
                        "were expected")
        return "error"  # the exact reader takes over from the batch holding it

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

    def encoding_problem(exc: Exception) -> bool:
        return isinstance(exc, UnicodeDecodeError) or ("invalid UTF8" in str(exc) and not bad_line)

    parse = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid)
    reader = None
    try:
        names = _csv_header(p, arrow_enc, parse)
    except pa.ArrowInvalid as exc:
        if encoding_problem(exc):
            raise failure(exc) from exc
        names = _exact_header(p, enc)
    except UnicodeDecodeError as exc:
        raise failure(exc) from exc
    if not names:
        msg = f"{p.name} is empty: it has no header row"
        raise ReadError(msg)
    convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=True,
                                   null_values=[""], quoted_strings_can_be_null=True)
    try:
        reader = pacsv.open_csv(p, read_options=pacsv.ReadOptions(encoding=arrow_enc, block_size=BLOCK_BYTES),
                                parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if encoding_problem(exc):
            raise failure(exc) from exc
        # a row of the first block Arrow cannot take: the exact reader reads the file
    empty = pa.Table.from_arrays([pa.array([], pa.string())] * len(names), names=names)
    columns = dedupe_names(empty, warnings).column_names  # (cells of only spaces are nulled by the importer)

    def batches() -> Iterator[pa.Table]:
        first_row, buf, count = 2, [], 0
        full = None  # a full table held back until the next batch shows it is not the file's last
        fell_back = reader is None
        if reader is not None:
            with reader:
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        break
                    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                        if encoding_problem(exc):
                            raise failure(exc) from exc
                        fell_back = True  # the batches before were well formed: the exact reader goes on
                        break
                    if full is not None:
                        yield full
                        full = None
                    buf.append(batch)
                    count += batch.num_rows
                    if count >= rows:
                        full = _checked(_numbered(buf, columns, first_row), columns, rejects)
                        first_row, buf, count = first_row + count, [], 0
        last = full if full is not None else (
            _checked(_numbered(buf, columns, first_row), columns, rejects) if count else None)
        if last is not None and not fell_back and _swallowed(last, columns) and _odd_quotes(p, enc):
            # a quote never closed: Arrow read the rest of the file as the last row's value
            yield last.slice(0, last.num_rows - 1)
            first_row, count, fell_back = int(last.column("__row__")[-1].as_py()), 0, True
        elif last is not None:
            yield last
        if fell_back:
            try:
                yield from _exact_batches(p, enc, columns, skip=first_row - 2 + count, rows=rows, rejects=rejects)
            except UnicodeDecodeError as exc:
                raise failure(exc) from exc

    it = batches()
    first = next(it, None)
    if first is None and rejects:  # every row was rejected: an empty table, the rejects reported
        first = empty.rename_columns(columns).append_column("__row__", pa.array([], pa.int64()))
    if first is None:
        msg = f"{p.name} is empty: it has no data rows"
        raise ReadError(msg)
    size = p.stat().st_size
    text_bytes = sum(b.size for c in first.columns[:-1] for chunk in c.chunks for b in chunk.buffers()[2:] if b)
    per_row = (text_bytes + len(columns) * first.num_rows) / max(first.num_rows, 1)
    hint = first.num_rows if first.num_rows < rows else int(size / max(per_row, 1))
    return BatchReader(batches=itertools.chain([first], it), format="csv", columns=[*columns, "__row__"],
                       encoding=enc, warnings=warnings, size=size, rows_hint=hint, rejects=rejects)


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


# --- rows Arrow cannot take: the exact reader -------------------------------------------------------------------


def _checked(table: pa.Table, columns: list[str], rejects: list[dict]) -> pa.Table:
    """``table`` without the rows holding a value longer than :data:`MAX_FIELD_CHARS`, each added to
    ``rejects``."""
    too_long = None
    for name in columns:
        longest = pc.max(pc.binary_length(table.column(name))).as_py()  # bytes ≥ characters: cheap first
        if longest is None or longest <= MAX_FIELD_CHARS:
            continue
        lengths = pc.utf8_length(table.column(name))
        mask = pc.fill_null(pc.greater(lengths, MAX_FIELD_CHARS), False)
        for row, n in zip(pc.filter(table.column("__row__"), mask).to_pylist(),
                          pc.filter(lengths, mask).to_pylist(), strict=True):
            rejects.append(_too_long(row, name, n))
        too_long = mask if too_long is None else pc.or_(too_long, mask)
    return table if too_long is None else table.filter(pc.invert(too_long))


def _swallowed(table: pa.Table, columns: list[str]) -> bool:
    """Whether the last row of the file's last table holds a value spanning lines (what a quote never closed
    leaves: the rest of the file as one value)."""
    if table.num_rows == 0:
        return False
    last = table.slice(table.num_rows - 1, 1)
    return any(pc.any(pc.match_substring(last.column(name), "\n")).as_py() for name in columns)


def _too_long(row: int, name: str, chars: int) -> dict:
    return {"row": int(row), "field": name,
            "reason": f"a value of {chars:,} characters, more than the {MAX_FIELD_CHARS:,} a cell may hold"}


def _odd_quotes(p: Path, enc: str) -> bool:
    """True when the file holds an odd number of quote characters: a quote is never closed."""
    n = 0
    if codecs.lookup(enc).name in _ASCII_SAFE:
        with open(p, "rb") as fh:
            while chunk := fh.read(BLOCK_BYTES):
                n += chunk.count(b'"')
    else:
        with open(p, encoding=enc, newline="") as text:
            while part := text.read(BLOCK_BYTES):
                n += part.count('"')
    return n % 2 == 1


def _text_lines(p: Path, enc: str, first: int, pending: list[str]) -> Generator[str, None, None]:
    """The physical lines of the file from line ``first`` (1-based), each also appended to ``pending``."""
    with open(p, encoding=enc, newline="") as fh:
        for i, line in enumerate(fh, 1):
            if i >= first:
                pending.append(line)
                yield line


def _exact_header(p: Path, enc: str) -> list[str]:
    csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        return next(csv.reader(_text_lines(p, enc, 1, [])), [])
    except csv.Error as exc:
        msg = f"{p.name}: the header row cannot be read ({exc}); check its quoting"
        raise ReadError(msg) from exc


def _open_quote_field(line: str) -> int | None:
    """The index of the field of a CSV line whose quote is still open at the line's end (None if none)."""
    field, quoted, at_start, i = 0, False, True, 0
    while i < len(line):
        ch = line[i]
        if quoted:
            if ch == '"':
                if line[i + 1:i + 2] == '"':
                    i += 1
                else:
                    quoted = False
        elif ch == ",":
            field, at_start = field + 1, True
            i += 1
            continue
        elif ch == '"' and at_start:
            quoted = True
        at_start = False
        i += 1
    return field if quoted else None


def _field_name(columns: list[str], index: int) -> str:
    return columns[index] if index < len(columns) else f"column {index + 1}"


def _exact_batches(p: Path, enc: str, columns: list[str], *, skip: int, rows: int,
                   rejects: list[dict]) -> Iterator[pa.Table]:
    """The rows of a CSV file after its first ``skip`` data rows, read with Python's strict ``csv`` reader:
    every row that is not one row of the header's fields is added to ``rejects`` and the lines after it are
    read as rows of their own."""
    csv.field_size_limit(MAX_FIELD_CHARS + 1)  # a longer value stops the record: rejected, not held in memory
    n = len(columns)
    header_lines: list[str] = []
    head = csv.reader(_text_lines(p, enc, 1, header_lines))
    next(head, None)
    start, record = len(header_lines) + 1, 0  # the physical line the reader starts at; data rows seen
    values: list[list[str | None]] = [[] for _ in range(n)]
    numbers: list[int] = []

    def flush() -> pa.Table:
        table = pa.table([pa.array(v, pa.string()) for v in values], names=columns)
        table = table.append_column("__row__", pa.array(numbers, pa.int64()))
        for v in values:
            v.clear()
        numbers.clear()
        return table

    while True:
        pending: list[str] = []
        lines = _text_lines(p, enc, start, pending)
        reader = csv.reader(lines, strict=True)
        restart = None
        while True:
            lines_before = reader.line_num
            pending.clear()
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                record += 1
                first_line = start + lines_before
                if record > skip:
                    rejects.append(_malformed(pending[0] if pending else "", first_line, record + 1, columns,
                                              str(exc)))
                restart = first_line + 1  # the lines it swallowed are read again, as rows of their own
                break
            if not fields:  # a blank line is no row (as Arrow reads it)
                continue
            record += 1
            if record <= skip:
                continue
            row = record + 1
            if len(fields) != n:
                where = _field_name(columns, min(len(fields), n))
                rejects.append({"row": row, "field": where,
                                "reason": f"{len(fields)} field{'s' if len(fields) != 1 else ''} where the header "
                                          f"has {n} (an unquoted comma or a missing value on line "
                                          f"{start + lines_before})"})
            else:
                for v, text in zip(values, fields, strict=True):
                    v.append(text if text != "" else None)
                numbers.append(row)
                if len(numbers) >= rows:
                    yield flush()
            if len(rejects) > MAX_REJECTS:
                msg = (f"{p.name}: more than {MAX_REJECTS:,} rows are not rows of the header's "
                       f"{n} fields; is it a CSV file with commas between its fields?")
                raise ReadError(msg)
        lines.close()  # the file of the generator
        if restart is None:
            break
        start = restart
    if numbers:
        yield flush()


def _malformed(line: str, line_no: int, row: int, columns: list[str], error: str) -> dict:
    """The reject of a record the strict reader refused: an unclosed quote, a value too long, bad quoting."""
    quote = _open_quote_field(line.rstrip("\r\n"))
    if quote is not None:
        field = _field_name(columns, quote)
        return {"row": row, "field": field,
                "reason": f"unclosed quote: the value of {field} opens a quote on line {line_no} that is not closed "
                          "on that line nor before the end of the file (or within "
                          f"{MAX_FIELD_CHARS:,} characters); the lines after it are read as rows of their own"}
    if "field larger than field limit" in error:
        parts = line.split(",")  # (the long value's own commas, if quoted, shift this: a hint, not parsing)
        long = next((i for i, v in enumerate(parts) if len(v) > MAX_FIELD_CHARS), len(parts) - 1)
        field = _field_name(columns, max(long, 0))
        return {"row": row, "field": field,
                "reason": f"a value longer than the {MAX_FIELD_CHARS:,} characters a cell may hold"}
    return {"row": row, "field": "(row)", "reason": f"malformed quoting on line {line_no}: {error}"}
