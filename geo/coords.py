"""Chinese coordinate systems: vectorized WGS84 <-> GCJ-02 <-> BD-09, CRS parsing and geometry conversion.

GCJ-02 (火星坐标, used by AMap/Gaode, Tencent and Tianditu's Chinese imagery
partners) is WGS84 with a published obfuscation offset; BD-09 (Baidu) adds a
second offset on top of GCJ-02. The forward formulas are the widely reproduced
ones (constants of the Krasovsky 1940 ellipsoid as used in the GCJ-02 leak;
see the ``eviltransform`` and ``prcoords`` packages, which the tests compare
against). Inverses are computed by fixed-point iteration to better than 1e-9°.
CGCS2000 (EPSG:4490) differs from WGS84 by centimetres and is handled by pyproj.
"""

from __future__ import annotations

import numpy as np
import pyproj
import shapely
from civicgrid.geo.errors import InvalidParameterError

#: Semi-major axis and eccentricity squared used by the GCJ-02 formulas (Krasovsky 1940).
GCJ_A = 6378245.0
GCJ_EE = 0.00669342162296594323
#: BD-09 rotation constant.
X_PI = np.pi * 3000.0 / 180.0
#: Bounding box outside which GCJ-02 applies no offset (as in eviltransform).
CHINA_BBOX = (72.004, 0.8293, 137.8347, 55.8271)

#: Names accepted for each coordinate system (case-insensitive, '-' and '_' ignored).
CRS_ALIASES = {
    "wgs84": ("wgs84", "wgs", "epsg:4326", "4326", "gps"),
    "gcj02": ("gcj02", "gcj", "mars", "amap", "gaode", "tencent", "qq"),
    "bd09": ("bd09", "bd09ll", "baidu", "bd"),
    "cgcs2000": ("cgcs2000", "epsg:4490", "4490", "cgcs"),
}

#: pyproj transformers to or from WGS84, by (source WKT, inverse)
_TO_WGS: dict[tuple[str, bool], pyproj.Transformer] = {}


def parse_crs(text: str):
    """Parse a coordinate-system name.

    Parameters
    ----------
    text
        ``wgs84``, ``gcj02``, ``bd09``, ``cgcs2000`` (and common aliases such as
        ``amap``, ``baidu``), or ``EPSG:NNNN`` / any string pyproj understands.

    Returns
    -------
    str or pyproj.CRS
        ``"wgs84"``, ``"gcj02"`` or ``"bd09"`` for those systems, else a :class:`pyproj.CRS`.
    """
    key = str(text).strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    for name, aliases in CRS_ALIASES.items():
        if key in aliases:
            return pyproj.CRS.from_epsg(4490) if name == "cgcs2000" else name
    try:
        return pyproj.CRS.from_user_input(str(text).strip())
    except pyproj.exceptions.CRSError as exc:
        known = "pyproj knows no such EPSG code; " if key.startswith("epsg:") else ""
        msg = f"unknown coordinate system {text!r}: {known}use wgs84, gcj02, bd09, cgcs2000 or EPSG:NNNN"
        raise InvalidParameterError(msg) from exc


def _arrays(lng, lat) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(lng, dtype="float64"), np.asarray(lat, dtype="float64")


def in_china(lng, lat) -> np.ndarray:
    """Mask of coordinates inside the box where GCJ-02 offsets apply."""
    lng, lat = _arrays(lng, lat)
    x0, y0, x1, y1 = CHINA_BBOX
    return (lng >= x0) & (lng <= x1) & (lat >= y0) & (lat <= y1)


def _delta(lng: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 offset (dlng, dlat) in degrees at WGS84 (lng, lat)."""
    x, y = lng - 105.0, lat - 35.0
    sx = np.sqrt(np.abs(x))
    common = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sx + common
            + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
            + (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0)
    dlng = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sx + common
            + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
            + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0)
    rad = lat / 180.0 * np.pi
    magic = 1.0 - GCJ_EE * np.sin(rad) ** 2
    sqm = np.sqrt(magic)
    dlat = dlat * 180.0 / ((GCJ_A * (1.0 - GCJ_EE)) / (magic * sqm) * np.pi)
    dlng = dlng * 180.0 / (GCJ_A / sqm * np.cos(rad) * np.pi)
    inside = in_china(lng, lat)
    return np.where(inside, dlng, 0.0), np.where(inside, dlat, 0.0)


def wgs84_to_gcj02(lng, lat) -> tuple[np.ndarray, np.ndarray]:
    """Convert WGS84 to GCJ-02 (no offset outside China)."""
    lng, lat = _arrays(lng, lat)
    dlng, dlat = _delta(lng, lat)
    return lng + dlng, lat + dlat


def _invert(forward, lng: np.ndarray, lat: np.ndarray, *, iterations: int = 30, tol: float = 1e-10):
    """Invert ``forward`` by fixed-point iteration starting from the target point."""
    x, y = lng.copy(), lat.copy()
    for _ in range(iterations):
        fx, fy = forward(x, y)
        ex, ey = fx - lng, fy - lat
        x, y = x - ex, y - ey
        err = np.nanmax(np.abs(np.concatenate([ex, ey]))) if len(x) else 0.0
        if not err > tol:
            break
    return x, y


def gcj02_to_wgs84(lng, lat) -> tuple[np.ndarray, np.ndarray]:
    """Convert GCJ-02 to WGS84 (iterative exact inverse, error < 1e-9°)."""
    lng, lat = _arrays(lng, lat)
    return _invert(wgs84_to_gcj02, lng, lat)


def gcj02_to_bd09(lng, lat) -> tuple[np.ndarray, np.ndarray]:
    """Convert GCJ-02 to BD-09."""
    x, y = _arrays(lng, lat)
    z = np.sqrt(x * x + y * y) + 0.00002 * np.sin(y * X_PI)
    theta = np.arctan2(y, x) + 0.000003 * np.cos(x * X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def bd09_to_gcj02(lng, lat) -> tuple[np.ndarray, np.ndarray]:
    """Convert BD-09 to GCJ-02 (iterative exact inverse)."""
    lng, lat = _arrays(lng, lat)
    return _invert(gcj02_to_bd09, lng, lat)


def wgs84_to_bd09(lng, lat) -> tuple[np.ndarray, np.ndarray]:
    """Convert WGS84 to BD-09."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lng, lat))


def bd09_to_wgs84(lng, lat) -> tuple[np.ndarray, np.ndarray]:
    """Convert BD-09 to WGS84."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lng, lat))


def _pyproj(crs, *, inverse: bool):
    key = (crs.to_wkt(), inverse)
    tr = _TO_WGS.get(key)
    if tr is None:
        src, dst = (pyproj.CRS.from_epsg(4326), crs) if inverse else (crs, pyproj.CRS.from_epsg(4326))
        tr = pyproj.Transformer.from_crs(src, dst, always_xy=True)
        _TO_WGS[key] = tr
    return tr


def _convert(lng, lat, crs, *, inverse: bool) -> tuple[np.ndarray, np.ndarray]:
    """Convert coordinates from ``crs`` to WGS84 lon/lat, or (``inverse``) from WGS84 to ``crs``."""
    if isinstance(crs, str):
        crs = parse_crs(crs)
    lng, lat = _arrays(lng, lat)
    if isinstance(crs, str) and crs != "wgs84":
        return _OFFSETS[crs][inverse](lng, lat)
    if isinstance(crs, str) or crs.equals(pyproj.CRS.from_epsg(4326)):  # WGS84 itself
        return lng.copy(), lat.copy()
    x, y = _pyproj(crs, inverse=inverse).transform(lng, lat)
    return np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")


def to_wgs84(lng, lat, crs) -> tuple[np.ndarray, np.ndarray]:
    """Convert coordinates in ``crs`` (a :func:`parse_crs` result or name) to WGS84 lon/lat."""
    return _convert(lng, lat, crs, inverse=False)


def from_wgs84(lng, lat, crs) -> tuple[np.ndarray, np.ndarray]:
    """Convert WGS84 lon/lat to ``crs`` (e.g. ``"gcj02"`` for AMap tiles, ``"bd09"`` for Baidu)."""
    return _convert(lng, lat, crs, inverse=True)


#: The offset systems' conversions: (to WGS84, from WGS84).
_OFFSETS = {"gcj02": (gcj02_to_wgs84, wgs84_to_gcj02), "bd09": (bd09_to_wgs84, wgs84_to_bd09)}


def transform_geometries(geoms, crs, *, to_wgs84: bool = True) -> np.ndarray:
    """Convert every vertex of shapely geometries from ``crs`` to WGS84 (or from WGS84 to ``crs``).

    Parameters
    ----------
    geoms
        Array of shapely geometries (None allowed).
    crs
        A :func:`parse_crs` result or name.
    to_wgs84
        Direction: from ``crs`` to WGS84 (default) or from WGS84 to ``crs``.
    """
    func = to_wgs84_xy if to_wgs84 else from_wgs84_xy

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = func(xy[:, 0], xy[:, 1], crs)
        return np.column_stack([x, y])

    return shapely.transform(np.asarray(geoms, dtype=object), apply)


to_wgs84_xy = to_wgs84
from_wgs84_xy = from_wgs84


def to_crs_frame(gdf, crs):
    """Return a copy of a WGS84 GeoDataFrame with geometries converted to ``crs`` (e.g. ``"gcj02"``).

    Pyproj systems use :meth:`GeoDataFrame.to_crs`; GCJ-02 and BD-09, which have no
    EPSG code, keep ``crs`` metadata EPSG:4326 (their coordinates are lon/lat).
    """
    parsed = parse_crs(crs) if isinstance(crs, str) else crs
    if not isinstance(parsed, str):
        return gdf.to_crs(parsed)
    out = gdf.copy()
    if parsed != "wgs84":
        out.geometry = transform_geometries(gdf.geometry.to_numpy(), parsed, to_wgs84=False)
    return out
