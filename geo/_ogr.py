"""GeoJSON, GeoPackage and Shapefile (plain or zipped) through GDAL (pyogrio): layers, sidecar files and the
attribute encoding of shapefiles."""

from __future__ import annotations

import codecs
import contextlib
import struct
import warnings as _warnings
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyproj
from civicgrid.geo._encodings import CANDIDATE_ENCODINGS, check_encoding, decodes
from civicgrid.geo._tables import ReadResult, text_table
from civicgrid.geo.errors import ReadError


def read_ogr(p: Path, fmt: str, *, encoding: str | None, layer: str | None) -> ReadResult:
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
        enc = check_encoding(encoding)
    try:
        with _gdal_warnings(warnings):
            meta, table = pyogrio.read_arrow(source, layer=chosen, encoding=enc)
    except (DataSourceError, DataLayerError) as exc:
        msg = f"{p.name} is not a readable {_label(fmt)} ({_first_line(exc)})"
        raise ReadError(msg) from exc
    crs = pyproj.CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    geom_name = meta.get("geometry_name") or "wkb_geometry"
    out = text_table(table, geom_name, warnings)
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
            names = [n for n in zf.namelist() if not n.startswith("__MACOSX")]
    except zipfile.BadZipFile as exc:
        msg = f"{p.name} is not a readable zip archive ({exc})"
        raise ReadError(msg) from exc
    shps = [n for n in names if n.lower().endswith(".shp")]
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
    # the .shx and .dbf must sit beside the .shp inside the zip too (without the .dbf GDAL reads the shapes
    # with no attribute at all, and the import would report an empty column set)
    base = inner[:-4]
    have = {n[len(base):].lower() for n in names if n.startswith(base) and len(n) == len(inner)}
    missing = [ext for ext in (".shx", ".dbf") if ext not in have]
    if missing:
        msg = (f"{p.name} holds an incomplete shapefile: {' and '.join(Path(base).name + e for e in missing)} "
               f"must sit beside {Path(inner).name} in the zip (zip all its files: .shp, .shx, .dbf, .prj, .cpg)")
        raise ReadError(msg)
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
        return check_encoding(encoding)
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
        if decodes([body], enc):
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
