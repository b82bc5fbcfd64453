"""Read a city's files (CSV, XLSX, GeoJSON, GeoPackage, Shapefile, GeoParquet, Parquet) into one Arrow table.

Every reader returns the same shape: attribute columns as strings (null for
empty cells), a ``geometry`` column of WKB for spatial formats, and ``__row__``,
the row number a user sees (CSV and XLSX: the spreadsheet row, header = row 1;
spatial files and Parquet: the feature number, from 1). Encodings of CSV files
and shapefile attribute tables are detected (UTF-8, UTF-8 with BOM,
GB18030/GBK) unless given. :func:`read_batches` reads the same tables in
batches (CSV files streamed, so memory stays bounded for files of millions of
rows).
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as _dt
import itertools
import json
import os
import struct
import warnings as _warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pyproj
from civicgrid.geo.errors import ReadError

#: File name endings per format (lower case).
EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".xlsx": "xlsx", ".xlsm": "xlsx", ".xls": "xlsx",
    ".geojson": "geojson", ".json": "geojson",
    ".gpkg": "gpkg",
    ".shp": "shapefile", ".zip": "shapefile",
    ".geoparquet": "geoparquet", ".parquet": "parquet",
}

#: Encodings tried, in order, when a text file does not say its own (GB18030 is a superset of GBK and GB2312).
CANDIDATE_ENCODINGS = ("utf-8", "gb18030")

#: Rows scanned from the top of a sheet to find the header row below any title rows.
_HEADER_SCAN_ROWS = 30

_BLOCK = 1 << 22  # CSV block: the streaming reader holds a few dozen of them at once

#: Rows per batch of :func:`read_batches`.
BATCH_ROWS = 1 << 20

#: Bytes from the top of a text file that decide its encoding when they hold non-ASCII text (the rest is
#: checked while it is read).
_HEAD_BYTES = 1 << 22


@dataclass
class ReadResult:
    """A file read as one Arrow table of strings (plus WKB ``geometry`` and int64 ``__row__``)."""

    table: pa.Table
    format: str
    crs: pyproj.CRS | None = None
    encoding: str | None = None
    warnings: list[str] = field(default_factory=list)


def read_table(path: str | os.PathLike, *, encoding: str | None = None, layer: str | None = None,
               sheet: str | int | None = None) -> ReadResult:
    """Read a tabular or spatial file.

    Parameters
    ----------
    path
        A ``.csv``, ``.xlsx`` (also ``.xlsm``/``.xls``), ``.geojson``/``.json``,
        ``.gpkg``, ``.shp``, ``.zip`` (zipped shapefile), ``.geoparquet`` or
        ``.parquet`` file.
    encoding
        Text encoding of a CSV file or a shapefile's attribute table; detected
        when not given (a shapefile's ``.cpg`` is used first).
    layer
        Layer of a GeoPackage (or of a zip holding several shapefiles); required
        when there are several.
    sheet
        Sheet name or 0-based index of a workbook (default: the first sheet).

    Returns
    -------
    ReadResult
        The table, the format name, the file's CRS (None when it does not say),
        the encoding used (text formats) and warnings.

    Raises
    ------
    ReadError
        Missing, empty or unreadable file, unknown extension, content that does
        not match the extension, or an ambiguous GeoPackage layer.
    """
    p = Path(path)
    fmt = _check_file(p)
    if fmt == "csv":
        result = _read_csv(p, encoding)
    elif fmt == "xlsx":
        result = _read_xlsx(p, sheet)
    elif fmt in ("geoparquet", "parquet"):
        result = _read_parquet(p)
    else:
        result = _read_ogr(p, fmt, encoding=encoding, layer=layer)
    if result.table.num_rows == 0:
        msg = f"{p.name} is empty: it has no data rows"
        raise ReadError(msg)
    return result


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


def read_batches(path: str | os.PathLike, *, encoding: str | None = None, layer: str | None = None,
                 sheet: str | int | None = None, rows: int = BATCH_ROWS) -> BatchReader:
    """Read a file batch by batch: CSV files are streamed (bounded memory), other formats read whole and sliced.

    Every batch has the columns of :func:`read_table` (strings, ``geometry``,
    ``__row__``); the row numbers run on across batches. Parameters and errors
    are those of :func:`read_table`; an error found later in a streamed file
    (a malformed row, bytes that are not valid in the encoding) is raised as
    :class:`ReadError` when the batch holding it is read.

    Parameters
    ----------
    rows
        Rows per batch (about).
    """
    p = Path(path)
    fmt = _check_file(p)
    if fmt == "csv":
        return _stream_csv(p, encoding, rows)
    result = read_table(p, encoding=encoding, layer=layer, sheet=sheet)
    table = result.table
    slices = (table.slice(lo, rows) for lo in range(0, table.num_rows, rows))
    return BatchReader(batches=slices, format=result.format, columns=table.column_names, crs=result.crs,
                       encoding=result.encoding, warnings=result.warnings, size=p.stat().st_size,
                       rows_hint=table.num_rows)


def _check_file(p: Path) -> str:
    """Return the format of an existing, non-empty file whose content matches its extension."""
    if not p.exists():
        msg = f"file not found: {p}"
        raise ReadError(msg)
    if p.is_dir():
        msg = f"{p} is a folder, not a file"
        raise ReadError(msg)
    fmt = EXTENSIONS.get(p.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(EXTENSIONS))
        msg = f"unknown format of {p.name!r}: the file name must end in one of {known}"
        raise ReadError(msg)
    if p.stat().st_size == 0:
        msg = f"{p.name} is empty (0 bytes)"
        raise ReadError(msg)
    _check_content(p, fmt)
    return fmt


# --- content sniffing -------------------------------------------------------------------------------------

_MAGIC = {
    b"PK\x03\x04": "a ZIP archive (an XLSX workbook or zipped shapefile)",
    b"\xd0\xcf\x11\xe0": "an old Excel (.xls) or other OLE document",
    b"PAR1": "a Parquet file",
    b"SQLite format 3\x00": "an SQLite database (GeoPackage)",
    b"%PDF": "a PDF document",
}


def _what_it_is(head: bytes) -> str | None:
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return what
    if b"\x00" in head[:4096]:
        return "a binary file"
    stripped = head.lstrip(codecs.BOM_UTF8).lstrip()
    if stripped.startswith((b"{", b"[")):
        return "JSON text"
    return "text" if stripped else None


#: A format's name in messages ("… is not an XLSX workbook").
_FORMAT_LABELS = {
    "csv": "a CSV file", "xlsx": "an XLSX workbook", "geojson": "a GeoJSON file", "gpkg": "a GeoPackage",
    "geoparquet": "a GeoParquet file", "parquet": "a Parquet file", "shapefile": "a shapefile",
}


def _blank(p: Path) -> bool:
    """True when the file holds nothing but white space (and a UTF-8 BOM)."""
    return all(not chunk.replace(codecs.BOM_UTF8, b"").strip() for chunk in _file_chunks(p))


def _check_content(p: Path, fmt: str) -> None:
    """Refuse content that is plainly not what the extension says."""
    with open(p, "rb") as fh:
        head = fh.read(8192)
    what = _what_it_is(head)
    if what is None and _blank(p):
        msg = f"{p.name} is empty: it holds only blank lines or spaces"
        raise ReadError(msg)
    ok = {
        "csv": what in ("text", "JSON text"),
        "xlsx": head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")),
        "geojson": what == "JSON text",
        "gpkg": head.startswith(b"SQLite format 3\x00"),
        "geoparquet": head.startswith(b"PAR1"),
        "parquet": head.startswith(b"PAR1"),
        "shapefile": head.startswith(b"PK\x03\x04") if p.suffix.lower() == ".zip" else head[:4] == b"\x00\x00\x27\x0a",
    }[fmt]
    if not ok:
        label = "a zipped shapefile" if p.suffix.lower() == ".zip" else _FORMAT_LABELS[fmt]
        seen = what or "unrecognised content"
        msg = f"{p.name} is not {label}: its content looks like {seen}; rename it to match its real format"
        raise ReadError(msg)


# --- encodings --------------------------------------------------------------------------------------------


def _decodes(chunks, encoding: str, *, final: bool = True) -> bool:
    """True when the byte chunks decode strictly in ``encoding`` (``final=False``: they may end mid-character)."""
    dec = codecs.getincrementaldecoder(encoding)("strict")
    try:
        for chunk in chunks:
            dec.decode(chunk)
        if final:
            dec.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _file_chunks(p: Path, *, skip: int = 0):
    with open(p, "rb") as fh:
        fh.seek(skip)
        while chunk := fh.read(_BLOCK):
            yield chunk


def detect_encoding(p: Path) -> str:
    """Return the encoding of a text file: ``utf-8-sig``, ``utf-8``, ``gb18030``, or charset-normalizer's guess.

    Strict decoding is tried first (UTF-8, then GB18030): it is exact where a
    statistical guess can confuse GBK with other East-Asian encodings. When the
    first 4 MB hold non-ASCII text they decide (the CSV reader then checks
    every later byte and fails with a clear message on one that does not
    decode); an all-ASCII head is followed by a scan of the whole file.
    """
    with open(p, "rb") as fh:
        head = fh.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    with open(p, "rb") as fh:
        head = fh.read(_HEAD_BYTES)
    if not head.isascii():
        # Non-ASCII text in the first MBs decides (the reader checks every later byte in that encoding).
        for enc in CANDIDATE_ENCODINGS:
            if _decodes([head], enc, final=len(head) < _HEAD_BYTES):
                return enc
    else:
        for enc in CANDIDATE_ENCODINGS:
            if _decodes(_file_chunks(p), enc):
                return enc
    from charset_normalizer import from_path

    best = from_path(p).best()
    if best is None:
        msg = f"cannot tell the text encoding of {p.name}; give it with --encoding (e.g. gbk, utf-8, big5)"
        raise ReadError(msg)
    return best.encoding


def _check_encoding(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError as exc:
        msg = f"unknown encoding {name!r} (try utf-8, gbk, gb18030, big5)"
        raise ReadError(msg) from exc


# --- CSV --------------------------------------------------------------------------------------------------


def _read_csv(p: Path, encoding: str | None) -> ReadResult:
    stream = _stream_csv(p, encoding, BATCH_ROWS)
    parts = list(stream.batches)
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    return ReadResult(table=table, format="csv", crs=None, encoding=stream.encoding, warnings=stream.warnings)


def _csv_encoding(p: Path, encoding: str | None) -> str:
    """The encoding to read a CSV file in: ``encoding`` (checked; BOM-aware for UTF-8), else detected."""
    if encoding is None:
        return detect_encoding(p)
    enc = _check_encoding(encoding)
    if enc == "utf-8":
        with open(p, "rb") as fh:
            if fh.read(3) == codecs.BOM_UTF8:
                enc = "utf-8-sig"
    return enc


def _stream_csv(p: Path, encoding: str | None, rows: int) -> BatchReader:
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
        reader = pacsv.open_csv(p, read_options=pacsv.ReadOptions(encoding=arrow_enc, block_size=_BLOCK),
                                parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise failure(exc) from exc
    empty = pa.Table.from_arrays([pa.array([], pa.string())] * len(reader.schema.names), names=reader.schema.names)
    columns = _dedupe_names(empty, warnings).column_names  # (cells of only spaces are nulled by the importer)

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


#: Column names the readers add themselves: a file's own column of that name is renamed (``geometry_2``).
_RESERVED = ("geometry", "__row__")


def _dedupe_names(table: pa.Table, warnings: list[str]) -> pa.Table:
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


def _blank_to_null(table: pa.Table) -> pa.Table:
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


# --- XLSX -------------------------------------------------------------------------------------------------


def _cell_text(v) -> str | None:
    """Text of one spreadsheet cell value as calamine returns it."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e16:
            return str(int(v))
        return repr(v)
    if isinstance(v, _dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, _dt.date | _dt.time):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return str(v)
    s = str(v).strip()
    return s or None


def _excel_column(i: int) -> str:
    name = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        name = chr(65 + r) + name
    return name


def _read_xlsx(p: Path, sheet: str | int | None) -> ReadResult:
    import python_calamine as cal

    try:
        book = cal.CalamineWorkbook.from_path(str(p))
    except Exception as exc:  # calamine raises its own error types for corrupt files
        msg = f"{p.name} is not a readable Excel workbook ({exc})"
        raise ReadError(msg) from exc
    names = book.sheet_names
    if not names:
        msg = f"{p.name} has no sheets"
        raise ReadError(msg)
    if sheet is None:
        chosen = names[0]
    elif isinstance(sheet, int) or (isinstance(sheet, str) and sheet.isdigit() and sheet not in names):
        k = int(sheet)
        if not 0 <= k < len(names):
            msg = f"{p.name} has {len(names)} sheets; sheet index {k} does not exist (sheets: {', '.join(names)})"
            raise ReadError(msg)
        chosen = names[k]
    elif sheet in names:
        chosen = sheet
    else:
        msg = f"{p.name} has no sheet {sheet!r}; its sheets are: {', '.join(names)}"
        raise ReadError(msg)
    ws = book.get_sheet_by_name(chosen)
    grid = [[_cell_text(v) for v in row] for row in ws.to_python(skip_empty_area=False)]
    warnings: list[str] = []
    if len(names) > 1 and sheet is None:
        warnings.append(f"read the first sheet {chosen!r} of {len(names)} ({', '.join(names)}); choose with --sheet")
    if not any(any(v is not None for v in row) for row in grid):
        msg = f"{p.name} is empty: sheet {chosen!r} has no cells"
        raise ReadError(msg)
    width = max(len(r) for r in grid)
    grid = [r + [None] * (width - len(r)) for r in grid]
    merged = list(getattr(ws, "merged_cell_ranges", None) or [])
    header_row, header, n_header_rows = _find_header(grid, merged, warnings)
    data = grid[header_row + n_header_rows:]
    first_row = header_row + n_header_rows + 1  # 1-based spreadsheet row of data[0]
    keep = [i for i, r in enumerate(data) if any(v is not None for v in r)]
    cols = [c for c in range(width) if header[c] is not None or any(data[i][c] is not None for i in keep)]
    for c in cols:
        if header[c] is None:
            header[c] = f"column {_excel_column(c)}"
    arrays = [pa.array([data[i][c] for i in keep], pa.string()) for c in cols]
    table = pa.table(arrays, names=[header[c] for c in cols]) if cols else pa.table({})
    table = _dedupe_names(table, warnings)
    table = table.append_column("__row__", pa.array(np.asarray(keep, dtype="int64") + first_row))
    return ReadResult(table=table, format="xlsx", crs=None, encoding=None, warnings=warnings)


def _find_header(grid: list[list], merged: list, warnings: list[str]) -> tuple[int, list, int]:
    """Find the header row (below any title rows) and merge a second header row into it.

    A title row is a row above the header with few filled cells (often one cell
    merged across the table). A header is two rows when a header cell is merged
    across several columns with sub-headers below it (位置 → 经度 | 纬度), or
    header cells are merged down into the next row. Without merge information,
    a second row that only fills the header's gaps (and the cell before each)
    with text is taken as a sub-header row.

    Returns
    -------
    row, names, n_rows
        0-based index of the header row, the column names, and 1 or 2.
    """
    counts = [sum(v is not None for v in row) for row in grid[:_HEADER_SCAN_ROWS]]
    widest = max(counts)
    need = max(2, int(np.ceil(widest * 0.5))) if widest > 1 else 1
    h = next(i for i, n in enumerate(counts) if n >= need)
    if h:
        titles = [next(v for v in grid[i] if v is not None) for i in range(h) if counts[i]]
        if titles:
            warnings.append("skipped title rows above the header: " + " / ".join(titles))
    width = len(grid[0])
    top = list(grid[h])
    grouped: set[int] = set()  # header columns under a cell merged across several columns
    down = False
    for (r0, c0), (r1, c1) in merged:
        if r0 <= h <= r1 and c1 > c0:
            for c in range(c0, min(c1, width - 1) + 1):
                grouped.add(c)
                if top[c] is None:
                    top[c] = grid[r0][c0]
        if r0 == h and r1 > h:
            down = True
    nxt: list = grid[h + 1] if h + 1 < len(grid) else [None] * width
    filled = {c for c in range(width) if nxt[c] is not None}
    two_rows = bool(filled & grouped) or down
    if not two_rows and not merged and filled:
        gaps = {c for c in range(width) if top[c] is None and c > 0 and top[c - 1] is not None}
        allowed = gaps | {c - 1 for c in gaps}
        single = {c for c in range(width) if top[c] is not None} - allowed
        if gaps and filled & gaps and filled <= allowed and single and not any(_looks_numeric(nxt[c]) for c in filled):
            for c in sorted(gaps):
                j = c - 1
                while top[c] is None:
                    top[c] = top[j]
                grouped.update({c, c - 1})
            two_rows = True
    if not two_rows:
        return h, top, 1
    names = [nxt[c] if nxt[c] is not None else top[c] for c in range(width)]
    # A sub-header that repeats (发现位置/经度 and 整改位置/经度) keeps its group name in front.
    seen: dict[str, int] = {}
    for n in names:
        if n is not None:
            seen[n] = seen.get(n, 0) + 1
    for c in range(width):
        if names[c] is not None and seen[names[c]] > 1 and c in grouped and top[c] not in (None, names[c]):
            names[c] = f"{top[c]}_{names[c]}"
    warnings.append(f"two-row header (rows {h + 1}-{h + 2}) combined into one")
    return h, names, 2


def _looks_numeric(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


# --- Parquet / GeoParquet ---------------------------------------------------------------------------------


def _read_parquet(p: Path) -> ReadResult:
    try:
        raw = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as exc:
        msg = f"{p.name} is not a readable Parquet file ({exc})"
        raise ReadError(msg) from exc
    meta = raw.schema.metadata or {}
    crs = None
    geom_col = None
    warnings: list[str] = []
    if b"geo" in meta:
        geo = json.loads(meta[b"geo"])
        geom_col = geo.get("primary_column") or next(iter(geo.get("columns", {})), None)
        info = geo.get("columns", {}).get(geom_col, {})
        enc = str(info.get("encoding", "WKB")).upper()
        if enc != "WKB" and enc != "POINT":
            msg = f"{p.name}: GeoParquet geometry encoding {enc!r} is not supported (write it as WKB)"
            raise ReadError(msg)
        crs_info = info.get("crs", "OGC:CRS84")
        crs = pyproj.CRS.from_epsg(4326) if crs_info is None else pyproj.CRS.from_user_input(
            json.dumps(crs_info) if isinstance(crs_info, dict) else crs_info)
        if crs.to_epsg() is None and crs.equals(pyproj.CRS("OGC:CRS84"), ignore_axis_order=True):
            crs = pyproj.CRS.from_epsg(4326)
    elif "geometry" in raw.column_names and pa.types.is_binary(raw.schema.field("geometry").type):
        geom_col = "geometry"
    fmt = "geoparquet" if geom_col else "parquet"
    table = _text_table(raw, geom_col, warnings)
    if geom_col:
        g = raw.column(geom_col)
        if pa.types.is_struct(g.type):  # GeoArrow point encoding
            import shapely

            xs = g.combine_chunks().field("x").to_numpy(zero_copy_only=False)
            ys = g.combine_chunks().field("y").to_numpy(zero_copy_only=False)
            g = pa.array(shapely.to_wkb(shapely.points(xs, ys)), pa.binary())
        table = table.append_column("geometry", g.cast(pa.binary()))
    table = table.append_column("__row__", pa.array(np.arange(1, raw.num_rows + 1, dtype="int64")))
    return ReadResult(table=table, format=fmt, crs=crs, encoding=None, warnings=warnings)


def _text_table(raw: pa.Table, geometry: str | None, warnings: list[str]) -> pa.Table:
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
    return _blank_to_null(_dedupe_names(pa.table(cols, names=names), warnings))


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


# --- GeoJSON / GeoPackage / Shapefile (GDAL through pyogrio) ----------------------------------------------


def _read_ogr(p: Path, fmt: str, *, encoding: str | None, layer: str | None) -> ReadResult:
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    warnings: list[str] = []
    source = str(p)
    zipped = p.suffix.lower() == ".zip"
    if zipped:
        source, layer = _zip_source(p, layer)
    elif fmt == "shapefile":
        _check_sidecars(p)
    try:
        with _gdal_warnings(warnings):
            layers = [str(name) for name, _ in pyogrio.list_layers(source)]
    except DataSourceError as exc:
        msg = f"{p.name} is not a readable {_label(fmt)} ({_first_line(exc)})"
        raise ReadError(msg) from exc
    if layer is None and len(layers) > 1:
        msg = f"{p.name} has {len(layers)} layers: {', '.join(layers)}; choose one with --layer"
        raise ReadError(msg)
    if layer is not None and layer not in layers and not zipped:
        msg = f"{p.name} has no layer {layer!r}; its layers are: {', '.join(layers)}"
        raise ReadError(msg)
    if not layers:
        msg = f"{p.name} is empty: it holds no layers"
        raise ReadError(msg)
    chosen = layer if layer is not None and not zipped else layers[0]
    enc = None
    if fmt == "shapefile":
        enc = _shapefile_encoding(p, source, chosen, encoding, warnings)
    elif encoding is not None:
        enc = _check_encoding(encoding)
    try:
        with _gdal_warnings(warnings):
            meta, table = pyogrio.read_arrow(source, layer=chosen, encoding=enc)
    except (DataSourceError, DataLayerError) as exc:
        msg = f"{p.name} is not a readable {_label(fmt)} ({_first_line(exc)})"
        raise ReadError(msg) from exc
    crs = pyproj.CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    geom_name = meta.get("geometry_name") or "wkb_geometry"
    out = _text_table(table, geom_name, warnings)
    if geom_name in table.column_names:
        out = out.append_column("geometry", table.column(geom_name).cast(pa.binary()))
    out = out.append_column("__row__", pa.array(np.arange(1, table.num_rows + 1, dtype="int64")))
    label = "geojson" if fmt == "geojson" else fmt
    return ReadResult(table=out, format=label, crs=crs, encoding=enc if fmt == "shapefile" else None,
                      warnings=warnings)


@contextlib.contextmanager
def _gdal_warnings(warnings: list[str]):
    """Collect GDAL's warnings (raised by pyogrio as RuntimeWarning) into the read's warnings, not stderr."""
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always", RuntimeWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, RuntimeWarning):
                    text = f"GDAL: {w.message}"
                    if text not in warnings:
                        warnings.append(text)
                else:
                    _warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _label(fmt: str) -> str:
    return {"geojson": "GeoJSON file", "gpkg": "GeoPackage", "shapefile": "shapefile"}.get(fmt, fmt)


def _first_line(exc: Exception) -> str:
    """The first line of a GDAL error, without GDAL's advice on drivers (which a user cannot act on)."""
    line = str(exc).strip().split("\n")[0]
    line = line.split("; It might help to specify the correct driver")[0]
    return line.replace(" not recognized as being in a supported file format.", " is not in a format GDAL recognises")


def _zip_source(p: Path, layer: str | None) -> tuple[str, str | None]:
    """GDAL path of the shapefile inside a zip (the one named by ``layer`` when there are several)."""
    try:
        with zipfile.ZipFile(p) as zf:
            shps = [n for n in zf.namelist() if n.lower().endswith(".shp") and not n.startswith("__MACOSX")]
    except zipfile.BadZipFile as exc:
        msg = f"{p.name} is not a readable zip archive ({exc})"
        raise ReadError(msg) from exc
    if not shps:
        msg = f"{p.name} holds no shapefile (.shp)"
        raise ReadError(msg)
    stems = [Path(n).stem for n in shps]
    if len(shps) > 1 and layer is None:
        msg = f"{p.name} holds {len(shps)} shapefiles: {', '.join(stems)}; choose one with --layer"
        raise ReadError(msg)
    if layer is not None:
        if layer not in stems:
            msg = f"{p.name} holds no shapefile {layer!r}; it holds: {', '.join(stems)}"
            raise ReadError(msg)
        inner = shps[stems.index(layer)]
    else:
        inner = shps[0]
    return f"/vsizip/{p.resolve()}/{inner}", None


def _check_sidecars(p: Path) -> None:
    """Refuse a plain .shp whose .shx or .dbf is not beside it (GDAL's own message names a config option)."""
    have = {q.suffix.lower() for q in p.parent.iterdir() if q.stem == p.stem}
    missing = [ext for ext in (".shx", ".dbf") if ext not in have]
    if missing:
        msg = (f"{p.name} is an incomplete shapefile: {' and '.join(p.stem + e for e in missing)} "
               "must sit beside it (copy all its files: .shp, .shx, .dbf, .prj, .cpg; or import them zipped)")
        raise ReadError(msg)


def _sidecar_bytes(p: Path, source: str, ext: str) -> bytes | None:
    """Bytes of a shapefile's sidecar file (``.cpg``, ``.dbf``), plain or inside its zip."""
    if source.startswith("/vsizip/"):
        inner = source.split(".zip/", 1)[1] if ".zip/" in source else source.rsplit("/", 1)[-1]
        stem = inner[: -len(".shp")]
        with zipfile.ZipFile(p) as zf:
            by_lower = {n.lower(): n for n in zf.namelist()}
            name = by_lower.get((stem + ext).lower())
            return zf.read(name) if name else None
    side = [q for q in p.parent.glob(p.stem + ".*") if q.suffix.lower() == ext]
    return side[0].read_bytes() if side else None


def _shapefile_encoding(p: Path, source: str, layer: str, encoding: str | None, warnings: list[str]) -> str:
    """The attribute encoding: ``encoding`` if given, else the .cpg, else detected from the .dbf bytes."""
    if encoding is not None:
        return _check_encoding(encoding)
    cpg = _sidecar_bytes(p, source, ".cpg")
    if cpg:
        text = cpg.decode("ascii", "ignore").strip()
        try:
            return _cpg_codec(text)
        except LookupError:
            warnings.append(f".cpg names an unknown encoding {text!r}; detecting it instead")
    dbf = _sidecar_bytes(p, source, ".dbf")
    if dbf is None:
        return "utf-8"
    body = _dbf_text(dbf)
    for enc in CANDIDATE_ENCODINGS:
        if _decodes([body], enc):
            if enc != "utf-8" and body.isascii() is False:
                warnings.append(f"the shapefile has no .cpg; its attributes were detected as {enc} "
                                "(give --encoding if the names look wrong)")
            return enc
    warnings.append("the shapefile has no .cpg and its attribute encoding is not UTF-8 or GBK: read as latin-1; "
                    "give --encoding")
    return "latin1"


def _cpg_codec(text: str) -> str:
    t = text.strip().lower()
    aliases = {"utf8": "utf-8", "ansi 936": "gbk", "936": "gbk", "cp936": "gbk", "88591": "latin1",
               "8859_1": "latin1", "ansi 1252": "cp1252", "1252": "cp1252"}
    t = aliases.get(t.replace("-", "").replace(" ", ""), aliases.get(t, t))
    return codecs.lookup(t).name


def _dbf_text(dbf: bytes) -> bytes:
    """The record area of a .dbf file (where attribute text lives)."""
    if len(dbf) < 32:
        return b""
    header_len = struct.unpack("<H", dbf[8:10])[0]
    return dbf[header_len:].rstrip(b"\x1a")
