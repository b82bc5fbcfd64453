"""The import pipeline shared by every layer: map columns, validate, locate, deduplicate, report."""

from __future__ import annotations

import difflib
import json
import logging
import os
import queue
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from civicgrid.geo import coords
from civicgrid.geo.errors import ImportFileError, ReadError
from civicgrid.geo.readers import BatchReader, ReadResult, read_batches, read_table
from civicgrid.geo.store import fetch_value

#: Column names recognised without a flag, per field (compared case-insensitively,
#: ignoring spaces, dots and underscores). A flag always wins over these.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "external_id", "编号", "案件编号", "工单编号", "事件编号", "caseid", "unique_key", "objectid"),
    "lat": ("lat", "latitude", "纬度", "wgs84纬度", "y坐标"),
    "lng": ("lng", "lon", "long", "longitude", "经度", "wgs84经度", "x坐标"),
    "time": ("time", "datetime", "时间", "发现时间", "受理时间", "上报时间", "检查时间", "created_date", "opened"),
    "type": ("type", "problem_type", "问题类型", "问题小类", "小类", "事件类型"),
    "name": ("name", "名称", "点位名称", "区域名称", "网格名称", "site_name"),
    "code": ("code", "编码", "代码", "区域编码", "网格编码"),
    "category": ("category", "类别", "点位类别", "点位类型"),
    "parent": ("parent", "parent_code", "上级编码", "所属社区编码"),
    "site": ("site", "site_id", "点位编号", "点位"),
    "result": ("result", "结果", "检查结果"),
    "text": ("text", "description", "描述", "内容", "问题描述", "诉求内容"),
    "address": ("address", "地址", "详细地址", "点位地址"),
    "unit": ("responsible_unit", "unit", "责任单位"),
    "contact": ("contact", "联系人", "责任人"),
    "phone": ("phone", "电话", "联系电话", "手机"),
    "inspector": ("inspector", "检查人", "督查员", "巡查员"),
    "status": ("status", "状态", "办理状态"),
    "rectified": ("rectified_at", "整改时间", "整改完成时间", "处置完成时间"),
    "closed": ("closed_at", "结案时间", "办结时间"),
    "leader": ("leader", "leader_name", "网格长"),
    "leader_phone": ("leader_phone", "网格长电话"),
    "households": ("households", "户数"),
    "active": ("active", "是否有效"),
    "inspection": ("inspection", "inspection_id", "检查编号"),
}

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Margin around the areas' bounding box inside which points count as "in the city".
EXTENT_MARGIN_DEG = 0.05


@dataclass
class ImportReport:
    """What an import did: counts, and every rejected row with its field and reason."""

    layer: str
    file: str
    format: str = ""
    encoding: str | None = None
    crs: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    rows_read: int = 0
    loaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    outside_grids: int = 0
    rejects: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    import_id: int | None = None
    #: Events only: cases created in the import's transaction (``sites.cases.backfill``), rebounds linked.
    cases_created: int | None = None
    rebounds_linked: int | None = None

    def to_dict(self) -> dict:
        """Return the report as a JSON-ready dict."""
        return asdict(self)

    def write_json(self, path: str | os.PathLike) -> None:
        """Write the report as JSON (UTF-8)."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2, default=str), encoding="utf-8")

    def summary(self, *, max_rejects: int = 10) -> str:
        """Return a readable multi-line summary."""
        lines = [
            f"import {self.layer} from {self.file} ({self.format}"
            + (f", {self.encoding}" if self.encoding else "")
            + (f", {self.crs}" if self.crs else "")
            + ")",
            f"  rows read      {self.rows_read:>10,}",
            f"  loaded         {self.loaded:>10,}",
            f"  duplicates     {self.duplicates:>10,}",
            f"  rejected       {self.rejected:>10,}",
        ]
        if self.layer in {"events", "sites", "inspections"}:
            lines.append(f"  outside grids  {self.outside_grids:>10,}  (kept, marked with no grid)")
        if self.cases_created is not None:
            lines.append(f"  cases created  {self.cases_created:>10,}  "
                         f"(rebounds linked: {self.rebounds_linked or 0:,})")
        if self.columns:
            lines.append("  columns used: " + ", ".join(f"{k}={v}" for k, v in self.columns.items()))
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        if self.rejects:
            kinds = [r["reason"].split(" (")[0].split(":")[0] for r in self.rejects]
            reasons = Counter(kinds)
            if len(reasons) > max_rejects:  # one line per value ('S001', 'S002'…): count by kind of reason
                reasons = Counter(_QUOTED.sub("", k).strip() for k in kinds)
            lines.append("  rejected rows by reason:")
            lines.extend(f"    {n:>8,}  {reason}" for reason, n in reasons.most_common(max_rejects))
            if len(reasons) > max_rejects:
                lines.append(f"    … and {len(reasons) - max_rejects} other reasons")
            lines.append(f"  first {min(max_rejects, len(self.rejects))} rejected rows:")
            lines.extend(
                f"    row {r['row']}: {r['field']}: {r['reason']}" for r in self.rejects[:max_rejects]
            )
        return "\n".join(lines)


#: A quoted value inside a reject reason (``unknown site 'S001'``).
_QUOTED = re.compile(r"""\s*(['"]).*?\1""")


class Rejects:
    """Collects rejected rows (one reason per row: the first problem found)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = np.asarray(rows)
        self.bad = np.zeros(len(rows), dtype=bool)
        self._items: list[tuple[np.ndarray, str, np.ndarray]] = []

    def add(self, mask: np.ndarray, field_name: str, reasons: str | np.ndarray) -> None:
        """Reject rows where ``mask`` is true and that are not rejected yet."""
        new = np.asarray(mask, dtype=bool) & ~self.bad
        if not new.any():
            return
        idx = np.flatnonzero(new)
        if isinstance(reasons, str):
            why = np.full(len(idx), reasons, dtype=object)
        else:
            why = np.asarray(reasons, dtype=object)[idx]
        self._items.append((idx, field_name, why))
        self.bad |= new

    @property
    def ok(self) -> np.ndarray:
        """Mask of rows not rejected."""
        return ~self.bad

    def to_list(self) -> list[dict]:
        """Return ``{row, field, reason}`` dicts in row order."""
        if not self._items:
            return []
        idx = np.concatenate([i for i, _, _ in self._items])
        fields = np.concatenate([np.full(len(i), f, dtype=object) for i, f, _ in self._items])
        why = np.concatenate([w for _, _, w in self._items])
        order = np.argsort(idx, kind="stable")
        rows = self.rows[idx[order]]
        return [
            {"row": int(r), "field": f, "reason": str(w)}
            for r, f, w in zip(rows, fields[order], why[order], strict=True)
        ]


def _norm(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch not in " ._-")


def read_input(path: str | os.PathLike, *, encoding: str | None = None, layer: str | None = None,
               sheet: str | int | None = None) -> ReadResult:
    """Read an input file, turning reader errors into :class:`ImportFileError`."""
    logger.info("import: reading %s", path)
    try:
        src = read_table(path, encoding=encoding, layer=layer, sheet=sheet)
    except ReadError as exc:
        raise ImportFileError(str(exc)) from exc
    logger.info("import: %s read as %s, %d rows", path, src.format, src.table.num_rows)
    return src


def prefetch(items: Iterable[T]) -> Iterator[T]:
    """Yield ``items``, producing each next one on a background thread while the caller works on the current.

    An error of the producer is raised in the caller; a caller that stops early stops the producer.
    """
    q: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as exc:  # handed to the caller, raised there
            put((end, exc))

    thread = threading.Thread(target=produce, name="civicgrid-read", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is end:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join()


def read_input_batches(path: str | os.PathLike, *, encoding: str | None = None, layer: str | None = None,
                       sheet: str | int | None = None, rows: int | None = None) -> BatchReader:
    """Read an input file batch by batch (:func:`geo.readers.read_batches`), reader errors — also those found
    in a later batch — raised as :class:`ImportFileError`."""
    logger.info("import: reading %s in batches", path)
    try:
        reader = read_batches(path, encoding=encoding, layer=layer, sheet=sheet,
                              **({"rows": rows} if rows else {}))
    except ReadError as exc:
        raise ImportFileError(str(exc)) from exc

    def batches(it):
        try:
            yield from it
        except ReadError as exc:
            raise ImportFileError(str(exc)) from exc

    reader.batches = batches(reader.batches)
    return reader


def resolve_columns(table: pa.Table, mapping: dict[str, str], *, fields: list[str],
                    required: Sequence[str] = ()) -> dict[str, str]:
    """Return ``{field: column}`` from explicit flags and recognised column names.

    Raises
    ------
    ImportFileError
        A flag names a column that is not in the file, or a required field has no column.
    """
    names = [c for c in table.column_names if c not in ("geometry", "__row__")]
    by_norm = {_norm(c): c for c in names}
    out: dict[str, str] = {}
    for key, col in mapping.items():
        if col is None:
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            msg = f"unknown field {key!r} in --map {key}={col}: {hint}This import's fields are: {', '.join(fields)}"
            raise ImportFileError(msg)
        if col not in names:
            close = difflib.get_close_matches(col, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "."
            msg = f"column {col!r} (given for {key}) is not in the file{hint} Columns are: {', '.join(names)}"
            raise ImportFileError(msg)
        out[key] = col
    taken = set(out.values())
    for key in fields:
        if key in out:
            continue
        for alias in FIELD_ALIASES.get(key, (key,)):
            found = by_norm.get(_norm(alias))
            if found is not None and found not in taken:
                out[key] = found
                taken.add(found)
                break
    missing = [k for k in required if k not in out]
    if missing:
        flags = ", ".join(f"--{k}" if k in _FLAG_FIELDS else f"--map {k}=COLUMN" for k in missing)
        msg = f"no column for {', '.join(missing)}: name it with {flags}. Columns are: {', '.join(names)}"
        raise ImportFileError(msg)
    return out


_FLAG_FIELDS = {"id", "lat", "lng", "time", "type", "name", "code", "category", "parent", "site", "result", "text"}


#: Field metadata marking a column :func:`trim_columns` already trimmed.
_TRIMMED = {b"civicgrid": b"trimmed"}


def trim_columns(table: pa.Table, columns) -> pa.Table:
    """Return ``table`` with ``columns`` trimmed once (empty cells null); :func:`trimmed` then reads them as is."""
    for name in dict.fromkeys(c for c in columns if c is not None and c in table.column_names):
        i = table.column_names.index(name)
        table = table.set_column(i, pa.field(name, pa.string(), metadata=_TRIMMED), trimmed(table, name))
    return table


def trimmed(table: pa.Table, column: str) -> pa.Array:
    """A column as one Arrow string array, trimmed, with nulls for empty cells."""
    arr = table.column(column)
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if table.schema.field(column).metadata == _TRIMMED:
        return arr
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    arr = pc.utf8_trim_whitespace(arr)
    if not pc.any(pc.equal(pc.binary_length(arr), 0)).as_py():  # usually none: no copy
        return arr
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


def strings(table: pa.Table, column: str | None) -> np.ndarray:
    """Return a column as an object array of stripped strings (None for empty)."""
    if column is None:
        return np.full(table.num_rows, None, dtype=object)
    return trimmed(table, column).to_numpy(zero_copy_only=False)


#: A decimal number as city files write it (optional sign, decimals, exponent).
_NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"


def numbers(values, *, trimmed: bool = False) -> np.ndarray:
    """Parse strings to floats (NaN where empty or not a number).

    ``values`` is an object array of strings or an Arrow string array
    (``trimmed``: already without surrounding spaces).
    """
    arr = values if isinstance(values, pa.Array) else pa.array(np.asarray(values, dtype=object), pa.string(),
                                                                from_pandas=True)
    if not trimmed:
        arr = pc.utf8_trim_whitespace(arr)
    try:  # the usual case, every value a plain number: one strict cast
        num = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False).astype("float64")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        num = None
    if num is not None and np.isfinite(num[~np.isnan(num)]).all() and \
            np.isnan(num).sum() == arr.null_count:  # "nan"/"inf" text is not a number: the checked path says so
        return num
    good = pc.match_substring_regex(arr, _NUMBER)
    num = pc.cast(pc.if_else(good, arr, pa.scalar(None, pa.string())), pa.float64())
    return num.to_numpy(zero_copy_only=False).astype("float64")


def city_extent(con: duckdb.DuckDBPyConnection) -> tuple[float, float, float, float] | None:
    """Return the bounding box of the loaded areas and grids with a margin, or None when none are loaded."""
    row = con.execute(
        """
        SELECT min(ST_XMin(geom)), min(ST_YMin(geom)), max(ST_XMax(geom)), max(ST_YMax(geom))
        FROM (SELECT geom FROM areas UNION ALL SELECT geom FROM grids)
        """
    ).fetchone()
    if row is None or row[0] is None:
        return None
    m = EXTENT_MARGIN_DEG
    return (row[0] - m, row[1] - m, row[2] + m, row[3] + m)


def _inside(lng, lat, box) -> np.ndarray:
    return (lng >= box[0]) & (lng <= box[2]) & (lat >= box[1]) & (lat <= box[3])


def check_coordinates(lng: np.ndarray, lat: np.ndarray, rej: Rejects, *, extent) -> np.ndarray:
    """Reject swapped, out-of-range and placeholder geographic coordinates (before conversion).

    Returns the mask of rows whose coordinates look swapped.
    """
    finite = np.isfinite(lng) & np.isfinite(lat)
    out_range = finite & ((np.abs(lat) > 90) | (np.abs(lng) > 180))
    swapped = out_range & (np.abs(lng) <= 90) & (np.abs(lat) <= 180)
    if extent is not None:
        swapped |= finite & ~_inside(lng, lat, extent) & _inside(lat, lng, extent)
    if swapped.any():
        reasons = np.full(len(lng), None, dtype=object)
        idx = np.flatnonzero(swapped)
        reasons[idx] = [f"coordinates look swapped (lat={lat[i]:.6f}, lng={lng[i]:.6f}): "
                        "the latitude column holds longitudes" for i in idx]
        rej.add(swapped, "lat/lng", reasons)
    rej.add(out_range, "lat/lng", "coordinates out of range (|lat| must be ≤ 90 and |lng| ≤ 180)")
    rej.add(finite & (lat == 0) & (lng == 0), "lat/lng", "coordinates are 0,0 (a placeholder for missing)")
    return swapped


def check_extent(lng: np.ndarray, lat: np.ndarray, rej: Rejects, *, extent) -> None:
    """Reject WGS84 points outside the city's extent (when areas or grids are loaded)."""
    if extent is None:
        return
    outside = np.isfinite(lng) & np.isfinite(lat) & ~_inside(lng, lat, extent)
    if outside.any():
        box = ", ".join(f"{v:.3f}" for v in extent)
        rej.add(outside, "lat/lng", f"outside the city's extent (lng/lat box {box})")


def read_locations(src: ReadResult, cols: dict[str, str], rej: Rejects, report: ImportReport, *,
                   con: duckdb.DuckDBPyConnection | None, point: str | None = None, crs: str | None = None,
                   required: bool = True, extent=...) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Return WGS84 (lng, lat) per row and the WGS84 geometries (if the file has any).

    Coordinates come from ``--point``, else ``--lat``/``--lng``, else the file's
    geometry (its representative point). Rows with missing, non-numeric,
    swapped, out-of-range or out-of-city coordinates are rejected. ``extent``
    is the city's box (:func:`city_extent`, None for none); when not given it
    is read through ``con``.
    """
    n = src.table.num_rows
    table = src.table
    geoms = geometries(src)
    if point is not None:
        if point not in table.column_names:
            msg = f"column {point!r} (given for --point) is not in the file. Columns are: " + ", ".join(
                c for c in table.column_names if c != "__row__")
            raise ImportFileError(msg)
        raw = strings(table, point)
        lng, lat = parse_point_column(raw)
        rej.add(pd.isna(raw), "point", "missing coordinates")
        bad = np.isnan(lng) & ~pd.isna(raw)
        if bad.any():
            reasons = np.full(n, None, dtype=object)
            reasons[bad] = [f"unparseable point {v!r} (expected '(lat, lon)' or 'lat,lon')" for v in raw[bad]]
            rej.add(bad, "point", reasons)
        report.columns["point"] = point
        source = "text"
    elif "lat" in cols and "lng" in cols:
        raw_lat, raw_lng = trimmed(table, cols["lat"]), trimmed(table, cols["lng"])
        lat, lng = numbers(raw_lat, trimmed=True), numbers(raw_lng, trimmed=True)
        empty = (raw_lat.is_null().to_numpy(zero_copy_only=False)
                 | raw_lng.is_null().to_numpy(zero_copy_only=False))
        rej.add(empty, "lat/lng", "missing coordinates")
        for values, raw, name, label in ((lat, raw_lat, "lat", "latitude"), (lng, raw_lng, "lng", "longitude")):
            bad = np.isnan(values) & ~empty
            if bad.any():
                reasons = np.full(n, None, dtype=object)
                bad_values = raw.take(pa.array(np.flatnonzero(bad))).to_pylist()
                reasons[bad] = [f"non-numeric {label} {v!r}" for v in bad_values]
                rej.add(bad, name, reasons)
        source = "columns"
    elif geoms is not None:
        lng, lat = representative_points(geoms)
        rej.add(np.isnan(lng), "geometry", "missing or empty geometry")
        source = "geometry"
    elif required:
        names = ", ".join(c for c in table.column_names if c not in ("geometry", "__row__"))
        half = [k for k in ("lat", "lng") if k in cols]
        if half:
            labels = {"lat": "latitude", "lng": "longitude"}
            have, other = half[0], "lng" if half[0] == "lat" else "lat"
            msg = (f"no {labels[other]} column (the {labels[have]} is {cols[have]!r}): give --{other} COLUMN. "
                   f"Columns are: {names}")
        else:
            msg = ("no coordinates: give --lat and --lng columns, --point COLUMN, or a spatial file (GeoJSON, "
                   f"Shapefile…). Columns are: {names}")
        raise ImportFileError(msg)
    else:
        nan = np.full(n, np.nan)
        return nan, nan.copy(), None
    the_crs = resolve_crs(src if source == "geometry" else _no_crs(src), crs, report.warnings)
    report.crs = crs_label(the_crs)
    if extent is ...:
        if con is None:
            msg = "read_locations needs con, or the city's extent, to check coordinates"
            raise TypeError(msg)
        extent = city_extent(con)
    if is_geographic(the_crs):
        swapped = check_coordinates(lng, lat, rej, extent=extent)
        if source != "geometry" and 2 * swapped.sum() > (np.isfinite(lng) & np.isfinite(lat)).sum():
            report.warnings.append(
                f"most rows have latitude and longitude the wrong way round: is --lat {cols['lat']} "
                f"--lng {cols['lng']} right?" if source == "columns" else
                f"most points of --point {point} look like (lon, lat), where (lat, lon) is expected")
    ok = rej.ok & np.isfinite(lng) & np.isfinite(lat)
    out_lng = np.full(n, np.nan)
    out_lat = np.full(n, np.nan)
    if ok.any():
        out_lng[ok], out_lat[ok] = coords.to_wgs84(lng[ok], lat[ok], the_crs)
    if not is_geographic(the_crs):
        check_coordinates(out_lng, out_lat, rej, extent=None)
    check_extent(out_lng, out_lat, rej, extent=extent)
    out_geoms = None
    if geoms is not None and source == "geometry":
        out_geoms = np.full(n, None, dtype=object)
        keep = rej.ok & ~shapely.is_missing(geoms)
        if keep.any():
            out_geoms[keep] = to_wgs84_geometries(geoms[keep], the_crs)
    return out_lng, out_lat, out_geoms


def _no_crs(src: ReadResult) -> ReadResult:
    """The same read result seen as text columns, whose coordinates carry no CRS of their own."""
    if src.crs is None:
        return src
    return ReadResult(table=src.table, format=src.format, crs=None, encoding=src.encoding, warnings=src.warnings)


def parse_point_column(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parse "(lat, lon)" or "lat,lon" text into (lng, lat) arrays (NaN where unparseable)."""
    s = pd.Series(values, dtype=object).astype("string")
    parts = s.str.extract(r"^\s*\(?\s*(-?\d+(?:\.\d+)?)\s*[,，\s]\s*(-?\d+(?:\.\d+)?)\s*\)?\s*$")
    lat = pd.to_numeric(parts[0], errors="coerce").to_numpy(dtype="float64")
    lng = pd.to_numeric(parts[1], errors="coerce").to_numpy(dtype="float64")
    return lng, lat


def resolve_crs(src: ReadResult, crs: str | None, warnings: list[str]):
    """Return the CRS to read coordinates in: ``--crs`` wins, then the file's, else WGS84 with a warning."""
    if crs is not None:
        parsed = coords.parse_crs(crs)
        if src.crs is not None and not src.crs.equals(4326) and isinstance(parsed, str) and parsed == "wgs84":
            warnings.append(f"--crs {crs} overrides the file's own CRS ({src.crs.to_string()})")
        return parsed
    if src.crs is not None:
        return src.crs
    warnings.append("the file does not say its coordinate system; assumed WGS84 (give --crs gcj02, bd09, "
                    "cgcs2000 or EPSG:NNNN if it is not)")
    return "wgs84"


def crs_label(crs) -> str:
    """Return a short text for a CRS value from :func:`resolve_crs`."""
    if isinstance(crs, str):
        return crs
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.name


def is_geographic(crs) -> bool:
    """True when coordinates in ``crs`` are degrees."""
    return isinstance(crs, str) or crs.is_geographic


def geometries(src: ReadResult) -> np.ndarray | None:
    """Return the file's geometries as a shapely array (None when the file has none)."""
    if "geometry" not in src.table.column_names:
        return None
    wkb = src.table.column("geometry").to_numpy(zero_copy_only=False)
    return shapely.from_wkb(wkb, on_invalid="ignore")


def representative_points(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (lng, lat) of a representative point: points as is, line midpoints, polygon interior points."""
    n = len(geoms)
    lng = np.full(n, np.nan)
    lat = np.full(n, np.nan)
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if not ok.any():
        return lng, lat
    g = geoms[ok]
    kind = shapely.get_type_id(g)
    pts = np.empty(len(g), dtype=object)
    is_line = np.isin(kind, [1, 2, 5])
    is_poly = np.isin(kind, [3, 6])
    other = ~(is_line | is_poly)
    if is_line.any():
        pts[is_line] = shapely.line_interpolate_point(shapely.line_merge(g[is_line]), 0.5, normalized=True)
        # line_merge of a MultiLineString may stay multi; interpolate handles the first part.
    if is_poly.any():
        pts[is_poly] = shapely.point_on_surface(g[is_poly])
    if other.any():
        pts[other] = shapely.point_on_surface(g[other])
    lng[ok] = shapely.get_x(pts.astype(object))
    lat[ok] = shapely.get_y(pts.astype(object))
    return lng, lat


def to_wgs84_geometries(geoms: np.ndarray, crs) -> np.ndarray:
    """Convert shapely geometries from ``crs`` to WGS84 lon/lat."""
    if isinstance(crs, str) and crs == "wgs84":
        return geoms
    if not isinstance(crs, str) and crs.equals(4326):
        return geoms
    return coords.transform_geometries(geoms, crs, to_wgs84=True)


def match_names(values: np.ndarray, choices: pd.DataFrame, *, key: str, names: list[str],
                what: str, arrow: bool = False) -> tuple[np.ndarray | pa.DictionaryArray, np.ndarray, np.ndarray]:
    """Match free-text values to codes of a reference table by code or any name column.

    With ``arrow=True`` the codes come as an Arrow dictionary array (no Python
    string per row).

    Returns
    -------
    codes, unknown, reasons
        The matched codes (None if unknown or empty), a mask of non-empty
        values that matched nothing, and a reason per row naming the closest
        known names.
    """
    lookup: dict[str, str] = {}
    for col in [key, *names]:
        for code, name in zip(choices[key], choices[col], strict=True):
            if isinstance(name, str) and name:
                lookup.setdefault(_norm(name), code)
    arr = values if isinstance(values, pa.Array) else pa.array(np.asarray(values, dtype=object), pa.string(),
                                                                from_pandas=True)
    enc = arr.dictionary_encode()  # each distinct value is matched once
    uniq = enc.dictionary.to_pylist()
    present = ~enc.indices.is_null().to_numpy(zero_copy_only=False)
    idx = np.where(present, enc.indices.fill_null(0).to_numpy(zero_copy_only=False), 0).astype(np.int64)
    mapped = np.array([lookup.get(_norm(v)) for v in uniq] + [None], dtype=object)
    if arrow:
        known, slot = pd.factorize(pd.Series(mapped[:-1], dtype=object))[::-1]
        slot = np.append(slot, -1).astype(np.int32)[np.where(present, idx, len(uniq))]
        codes = pa.DictionaryArray.from_arrays(pa.array(slot, pa.int32(), mask=slot < 0),
                                               pa.array(np.asarray(known, dtype=object), pa.string()))
        unknown = present & (slot < 0)
    else:
        codes = np.where(present, mapped[np.where(present, idx, len(uniq))], None  # type: ignore[call-overload]
                         ).astype(object)
        unknown = present & pd.isna(codes)
    reasons = np.full(len(arr), None, dtype=object)
    if unknown.any():
        candidates = [str(n) for col in names for n in choices[col] if isinstance(n, str)]
        why = np.full(len(uniq), None, dtype=object)
        for k in np.unique(idx[unknown]):
            v = uniq[k]
            close = difflib.get_close_matches(str(v), candidates, n=3, cutoff=0.3)
            hint = f" (closest: {', '.join(close)})" if close else ""
            why[k] = f"unknown {what} {v!r}{hint}"
        reasons[unknown] = why[idx[unknown]]
    return codes, unknown, reasons


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


def next_id(con: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
    """Return the next free integer id of a table."""
    return int(fetch_value(con, f"SELECT coalesce(max({column}), 0) + 1 FROM {table}"))


def start_report(layer: str, path, src: ReadResult) -> ImportReport:
    """Create a report for a file that was read."""
    return ImportReport(layer=layer, file=str(path), format=src.format, encoding=src.encoding,
                        rows_read=src.table.num_rows, warnings=list(src.warnings))


def start_import(what: str, path: str | os.PathLike, *, fields: list[str], required: Sequence[str] = (),
                 mapping: dict[str, str] | None = None, encoding: str | None = None, layer: str | None = None,
                 sheet: str | int | None = None) -> tuple[ReadResult, dict[str, str], ImportReport, Rejects]:
    """Read a file whole and map its columns: the start of an areas, grids, sites or inspections import.

    Parameters
    ----------
    what
        The store layer imported into (the report's ``layer``).
    fields, required, mapping
        As for :func:`resolve_columns`.
    encoding, layer, sheet
        As for :func:`read_input` (``layer``: of a GeoPackage or zip).

    Returns
    -------
    src, cols, report, rejects
        The file read, ``{field: column}``, the report started (with the columns used) and an empty
        :class:`Rejects` over the file's rows.
    """
    src = read_input(path, encoding=encoding, layer=layer, sheet=sheet)
    cols = resolve_columns(src.table, mapping or {}, fields=fields, required=required)
    report = start_report(what, path, src)
    report.columns = dict(cols)
    return src, cols, report, Rejects(src.table.column("__row__").to_numpy())


def record_import(con: duckdb.DuckDBPyConnection, report: ImportReport, started: datetime) -> None:
    """Log the import in the ``imports`` table (assigning ``report.import_id`` if not yet set)."""
    if report.import_id is None:
        report.import_id = next_id(con, "imports", "import_id")
    logger.info("import %d of %s from %s: %d rows read, %d loaded, %d duplicates, %d rejected, %d outside the "
                "grids", report.import_id, report.layer, report.file, report.rows_read, report.loaded,
                report.duplicates, report.rejected, report.outside_grids)
    con.execute(
        "INSERT INTO imports VALUES (?, ?, ?, ?, now()::TIMESTAMP, ?, ?, ?, ?, ?, ?)",
        [report.import_id, report.layer, report.file, started, report.rows_read, report.loaded,
         report.duplicates, report.rejected, report.outside_grids,
         json.dumps({k: v for k, v in report.to_dict().items() if k != "rejects"}, ensure_ascii=False)],
    )


def finish_report(report: ImportReport, rej: Rejects | list[dict], *, loaded: int, duplicates: int) -> ImportReport:
    """Fill the counts; checks ``rows_read == loaded + duplicates + rejected``.

    ``rej`` is the import's :class:`Rejects`, or the ``{row, field, reason}``
    list of an import read in batches.
    """
    report.rejects = rej if isinstance(rej, list) else rej.to_list()
    report.rejected = len(report.rejects)
    report.loaded = int(loaded)
    report.duplicates = int(duplicates)
    total = report.loaded + report.duplicates + report.rejected
    if total != report.rows_read:  # pragma: no cover - an invariant, not an input error
        msg = f"internal error: {report.rows_read} rows read but {total} accounted for"
        raise RuntimeError(msg)
    return report


def progress_bar(total: int, *, desc: str, enabled: bool = True):
    """Return a tqdm progress bar on stderr (disabled when not wanted or not a terminal)."""
    from tqdm.auto import tqdm

    # disable=None: tqdm turns itself off when stderr is not a terminal (a log file, a pipe, a test).
    return tqdm(total=total, desc=desc, unit="row", unit_scale=True, disable=None if enabled else True,
                file=sys.stderr, leave=False)


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
        # A private in-memory instance hashes keys while the import's connection may be busy writing.
        self._hasher = duckdb.connect(config={"threads": 1})
        self.bits = np.zeros(1 << (self.BITMAP_BITS - 6), dtype=np.uint64)
        self.runs: list[np.ndarray] = []  # sorted hashes: the stored keys, then one run per batch
        stored = con.execute(f"SELECT hash(dedup_key) AS h FROM {table} WHERE dedup_key IS NOT NULL").fetchnumpy()
        self._add(np.sort(np.asarray(stored["h"], dtype=np.uint64)))

    def hashes(self, keys: pa.Array) -> np.ndarray:
        """DuckDB's ``hash`` of each key (the function used on the stored keys)."""
        self._hasher.register("_k", pa.table({"k": keys}))
        try:
            h = self._hasher.execute("SELECT hash(k) AS h FROM _k").fetchnumpy()["h"]
        finally:
            self._hasher.unregister("_k")
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
                   before_query=None) -> np.ndarray:
        """Mask of rows (among ``ok``) repeating an earlier row of the import or a stored row.

        The other valid rows count as loaded from now on. ``before_query`` is
        called before ``con`` is queried (to wait for a pending write).
        """
        dup = np.zeros(len(keys), dtype=bool)
        idx = np.flatnonzero(ok)
        if not len(idx):
            return dup
        k = keys.take(pa.array(idx)) if len(idx) < len(keys) else keys
        h = self.hashes(k)
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
        self._hasher.close()


def insert_arrow(con: duckdb.DuckDBPyConnection, table_name: str, data: pa.Table, *,
                 geometry: str | None = None) -> None:
    """Insert an Arrow table into a store table (``geometry`` names a WKB column to convert).

    The table goes in as a one-shot batch stream: DuckDB copies it, where a registered table would be kept
    alive until the transaction ends (an import of many batches would hold all of them in memory).
    """
    con.register("_insert", pa.RecordBatchReader.from_batches(data.schema, data.to_batches()))
    try:
        cols = [c for c in data.column_names]
        select = ", ".join(f"ST_GeomFromWKB({c})" if c == geometry else c for c in cols)
        target = ", ".join("geom" if c == geometry else c for c in cols)
        con.execute(f"INSERT INTO {table_name} ({target}) SELECT {select} FROM _insert")
    finally:
        con.unregister("_insert")
