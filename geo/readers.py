"""Read a city's files (CSV, XLSX, GeoJSON, GeoPackage, Shapefile, GeoParquet, Parquet) into one Arrow table.

Every reader returns the same shape: attribute columns as strings (null for
empty cells), a ``geometry`` column of WKB for spatial formats, and ``__row__``,
the row number a user sees (CSV and XLSX: the spreadsheet row, header = row 1;
spatial files and Parquet: the feature number, from 1). Encodings of CSV files
and shapefile attribute tables are detected (UTF-8, UTF-8 with BOM,
GB18030/GBK) unless given. :func:`read_batches` reads the same tables in
batches (CSV files streamed, so memory stays bounded for files of millions of
rows).

The formats are read in private modules (``_csv``, ``_xlsx``, ``_parquet``, ``_ogr`` for GDAL's formats),
on the shared shape of ``_tables`` and the encoding detection of ``_encodings``; this module picks the
reader and refuses files whose content does not match their name.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

from civicgrid.geo._csv import read_csv, stream_csv
from civicgrid.geo._encodings import CANDIDATE_ENCODINGS, detect_encoding, file_chunks, utf16_without_bom
from civicgrid.geo._ogr import read_ogr
from civicgrid.geo._parquet import read_parquet
from civicgrid.geo._tables import BATCH_ROWS, BatchReader, ReadResult
from civicgrid.geo._xlsx import read_xlsx
from civicgrid.geo.errors import ReadError

__all__ = [
    "BATCH_ROWS",
    "CANDIDATE_ENCODINGS",
    "EXTENSIONS",
    "BatchReader",
    "ReadResult",
    "detect_encoding",
    "read_batches",
    "read_table",
]

#: File name endings per format (lower case).
EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".xlsx": "xlsx", ".xlsm": "xlsx", ".xls": "xlsx",
    ".geojson": "geojson", ".json": "geojson",
    ".gpkg": "gpkg",
    ".shp": "shapefile", ".zip": "shapefile",
    ".geoparquet": "geoparquet", ".parquet": "parquet",
}


def read_text(path: str | os.PathLike) -> str:
    """The whole text of a small text file (a type map, a team list) in its detected encoding (UTF-8 with or
    without BOM, GB18030/GBK, ...): the one place such files are decoded."""
    p = Path(path)
    return p.read_bytes().decode(detect_encoding(p))


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
        result = read_csv(p, encoding)
    elif fmt == "xlsx":
        result = read_xlsx(p, sheet)
    elif fmt in ("geoparquet", "parquet"):
        result = read_parquet(p)
    else:
        result = read_ogr(p, fmt, encoding=encoding, layer=layer)
    if result.table.num_rows == 0:
        msg = f"{p.name} is empty: it has no data rows"
        raise ReadError(msg)
    return result


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
        return stream_csv(p, encoding, rows)
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
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or utf16_without_bom(head) is not None:
        return "UTF-16 text"
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
    return all(not chunk.replace(codecs.BOM_UTF8, b"").strip() for chunk in file_chunks(p))


def _check_content(p: Path, fmt: str) -> None:
    """Refuse content that is plainly not what the extension says."""
    with open(p, "rb") as fh:
        head = fh.read(8192)
    what = _what_it_is(head)
    if what is None and _blank(p):
        msg = f"{p.name} is empty: it holds only blank lines or spaces"
        raise ReadError(msg)
    ok = {
        "csv": what in ("text", "JSON text", "UTF-16 text"),
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
