"""Great-circle distances between WGS84 points, and areas of WGS84 polygons.

Every civicgrid function takes coordinates in the order of GeoJSON and shapely: **longitude first, then
latitude**, in degrees. Distances are on a sphere of radius :data:`EARTH_RADIUS_M`; against the WGS84
ellipsoid they are within about 0.5 % (enough for patrol travel times and the rebound radius).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyproj
import shapely
from numpy.typing import ArrayLike

#: Radius of the sphere the distances are measured on: the IUGG mean Earth radius, metres.
EARTH_RADIUS_M = 6_371_008.8


def haversine_m(lng1: ArrayLike, lat1: ArrayLike, lng2: ArrayLike, lat2: ArrayLike, *,
                cos_lat1: ArrayLike | None = None, cos_lat2: ArrayLike | None = None) -> np.ndarray:
    """Great-circle distance in metres between points ``(lng1, lat1)`` and ``(lng2, lat2)``.

    Vectorized: the arguments broadcast against each other (``lng[:, None], lat[:, None], lng[None, :],
    lat[None, :]`` gives all pairs).

    Parameters
    ----------
    lng1, lat1, lng2, lat2
        WGS84 coordinates in degrees, **longitude first** (as GeoJSON and every civicgrid function).
    cos_lat1, cos_lat2
        ``cos(radians(lat1))`` and ``cos(radians(lat2))`` when the caller already has them: a hot loop
        comparing the same points many times computes them once.

    Returns
    -------
    numpy.ndarray
        Distances in metres on the sphere of radius :data:`EARTH_RADIUS_M` (float64).
    """
    lng1, lat1, lng2, lat2 = (np.asarray(a, dtype="float64") for a in (lng1, lat1, lng2, lat2))
    c1 = np.cos(np.radians(lat1)) if cos_lat1 is None else cos_lat1
    c2 = np.cos(np.radians(lat2)) if cos_lat2 is None else cos_lat2
    a = (np.sin(np.radians(np.subtract(lat2, lat1)) / 2) ** 2
         + np.multiply(c1, c2) * np.sin(np.radians(np.subtract(lng2, lng1)) / 2) ** 2)
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))



@lru_cache(maxsize=64)
def _utm(zone: int, south: bool) -> pyproj.CRS:
    return pyproj.CRS.from_epsg((32700 if south else 32600) + zone)


def utm_crs(lng: float, lat: float) -> pyproj.CRS:
    """The WGS84 / UTM zone CRS of the point (``lng``, ``lat``) (the zone geopandas' ``estimate_utm_crs`` picks
    for a frame centred there, without its query of the projection database on every call)."""
    zone = min(int((float(lng) + 180) // 6) + 1, 60)
    return _utm(zone, float(lat) < 0)


def area_km2(geoms: ArrayLike) -> np.ndarray:
    """Areas in km² of WGS84 (lng, lat) polygons, in the UTM zone of their bounds' centre."""
    geoms = np.asarray(geoms, dtype=object)
    if not geoms.size:
        return np.zeros(0)
    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    crs = utm_crs((x0 + x1) / 2, (y0 + y1) / 2)
    to_utm = pyproj.Transformer.from_crs(4326, crs, always_xy=True)
    return shapely.area(shapely.transform(geoms, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1]))))\
        / 1e6
