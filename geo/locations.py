"""Where the rows of an input file are: coordinates from columns, a point text or the file's geometries,
checked (missing, swapped, out of range, outside the city) and converted to WGS84."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from civicgrid.geo import coords
from civicgrid.geo.columns import numbers, point_column, strings, trimmed
from civicgrid.geo.errors import ImportFileError
from civicgrid.geo.import_report import ImportReport, Rejects
from civicgrid.geo.readers import ReadResult

#: Margin around the areas' bounding box inside which points count as "in the city".
EXTENT_MARGIN_DEG = 0.05


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
    geometry (its representative point), else a column named as a point
    (:func:`~civicgrid.geo.columns.point_column`). Rows with missing, non-numeric,
    swapped, out-of-range or out-of-city coordinates are rejected. ``extent``
    is the city's box (:func:`city_extent`, None for none); when not given it
    is read through ``con``.
    """
    n = src.table.num_rows
    table = src.table
    geoms = geometries(src)
    if point is None and not ("lat" in cols and "lng" in cols) and geoms is None:
        point = point_column(table.column_names)  # San Francisco 311's "Point": "(37.77, -122.41)"
        if point is not None:
            report.warnings.append(f"coordinates read from column {point!r} as (latitude, longitude), found by its "
                                   "name (--point COLUMN chooses another, --lat and --lng two columns)")
    if point is not None:
        lng, lat = _point_text_coordinates(table, point, rej)
        report.columns["point"] = point
        source = "text"
    elif "lat" in cols and "lng" in cols:
        lng, lat = _column_coordinates(table, cols, rej)
        source = "columns"
    elif geoms is not None:
        lng, lat = representative_points(geoms)
        rej.add(np.isnan(lng), "geometry", "missing or empty geometry")
        source = "geometry"
    elif required:
        raise _no_coordinates_error(table, cols)
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


def _point_text_coordinates(table: pa.Table, point: str, rej: Rejects) -> tuple[np.ndarray, np.ndarray]:
    """(lng, lat) parsed from the ``--point`` column, rejecting rows where it is empty or unparseable."""
    if point not in table.column_names:
        msg = f"column {point!r} (given for --point) is not in the file. Columns are: " + ", ".join(
            c for c in table.column_names if c != "__row__")
        raise ImportFileError(msg)
    raw = strings(table, point)
    lng, lat = parse_point_column(raw)
    rej.add(pd.isna(raw), "point", "missing coordinates")
    bad = np.isnan(lng) & ~pd.isna(raw)
    if bad.any():
        reasons = np.full(table.num_rows, None, dtype=object)
        reasons[bad] = [f"unparseable point {v!r} (expected '(lat, lon)' or 'lat,lon')" for v in raw[bad]]
        rej.add(bad, "point", reasons)
    return lng, lat


def _column_coordinates(table: pa.Table, cols: dict[str, str], rej: Rejects) -> tuple[np.ndarray, np.ndarray]:
    """(lng, lat) read from the ``lat`` and ``lng`` columns, rejecting rows where one is empty or not a number."""
    raw_lat, raw_lng = trimmed(table, cols["lat"]), trimmed(table, cols["lng"])
    lat, lng = numbers(raw_lat, trimmed=True), numbers(raw_lng, trimmed=True)
    empty = (raw_lat.is_null().to_numpy(zero_copy_only=False)
             | raw_lng.is_null().to_numpy(zero_copy_only=False))
    rej.add(empty, "lat/lng", "missing coordinates")
    for values, raw, name, label in ((lat, raw_lat, "lat", "latitude"), (lng, raw_lng, "lng", "longitude")):
        bad = np.isnan(values) & ~empty
        if bad.any():
            reasons = np.full(table.num_rows, None, dtype=object)
            bad_values = raw.take(pa.array(np.flatnonzero(bad))).to_pylist()
            reasons[bad] = [f"non-numeric {label} {v!r}" for v in bad_values]
            rej.add(bad, name, reasons)
    return lng, lat


def _no_coordinates_error(table: pa.Table, cols: dict[str, str]) -> ImportFileError:
    """The error of a file without coordinates: which column is missing, or which options give them."""
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
    return ImportFileError(msg)


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
