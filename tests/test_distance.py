"""geo.distance: one great-circle distance, longitude first, for patrols and rebounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from civicgrid.geo.distance import EARTH_RADIUS_M, area_km2, haversine_m, utm_crs
from pyproj import Geod

#: (lng1, lat1, lng2, lat2): across a street, across a city, across China, at the equator, near a pole.
PAIRS = [
    (114.0579, 22.5431, 114.0580, 22.5432),
    (112.9388, 28.2282, 113.0823, 28.1987),
    (116.4074, 39.9042, 121.4737, 31.2304),
    (0.0, 0.0, 1.0, 0.0),
    (10.0, 89.0, -170.0, 89.0),
]


def _direct(lng1: float, lat1: float, lng2: float, lat2: float) -> float:
    """The haversine formula written out with floats, term by term."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = math.radians(lat2 - lat1), math.radians(lng2 - lng1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


@pytest.mark.parametrize("pair", PAIRS)
def test_matches_the_formula_written_out(pair):
    assert float(haversine_m(*pair)) == pytest.approx(_direct(*pair), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("pair", PAIRS[:4])
def test_within_half_a_percent_of_the_wgs84_ellipsoid(pair):
    lng1, lat1, lng2, lat2 = pair
    _, _, geodesic = Geod(ellps="WGS84").inv(lng1, lat1, lng2, lat2)
    assert float(haversine_m(*pair)) == pytest.approx(geodesic, rel=0.005)


def test_longitude_comes_first():
    # one degree along the equator, and the short way over the pole between opposite meridians at 89°N
    assert float(haversine_m(0.0, 0.0, 1.0, 0.0)) == pytest.approx(EARTH_RADIUS_M * math.pi / 180)
    assert float(haversine_m(10.0, 89.0, -170.0, 89.0)) == pytest.approx(2 * EARTH_RADIUS_M * math.pi / 180)
    # Beijing to Shanghai is about 1,067 km; the same numbers latitude first are another pair of points
    right = float(haversine_m(116.4074, 39.9042, 121.4737, 31.2304))
    assert right == pytest.approx(1_067_000, rel=0.01)
    assert float(haversine_m(39.9042, 116.4074, 31.2304, 121.4737)) == pytest.approx(730_000, rel=0.01)


def test_broadcasts_and_takes_known_cosines():
    rng = np.random.default_rng(7)
    lng, lat = rng.uniform(112.8, 113.2, 50), rng.uniform(28.0, 28.4, 50)
    d = haversine_m(lng[:, None], lat[:, None], lng[None, :], lat[None, :])
    assert d.shape == (50, 50) and np.allclose(d, d.T) and np.all(np.diag(d) == 0)
    cos = np.cos(np.radians(lat))
    fast = haversine_m(lng[:, None], lat[:, None], lng[None, :], lat[None, :],
                       cos_lat1=cos[:, None], cos_lat2=cos[None, :])
    np.testing.assert_allclose(fast, d, rtol=1e-12, atol=1e-9)
    assert float(haversine_m([112.9388], [28.2282], 113.0823, 28.1987)[0]) == pytest.approx(_direct(*PAIRS[1]))


def test_patrols_and_rebounds_use_the_same_distance():
    from civicgrid.sites.cases import rebounds
    from civicgrid.sites.patrol import network

    assert network.haversine_m is rebounds.haversine_m is haversine_m
    assert network.EARTH_RADIUS_M == rebounds.EARTH_RADIUS_M == EARTH_RADIUS_M


@pytest.mark.parametrize("centre", [(112.94, 28.23), (-73.95, 40.7), (151.2, -33.9), (179.9, 10), (-180, 0)])
def test_areas_in_the_utm_zone_geopandas_picks(centre):
    import geopandas as gpd
    import shapely

    lng, lat = centre
    boxes = [shapely.box(lng + d, lat + d / 2, min(lng + d + 0.01, 180), lat + d / 2 + 0.02) for d in (0, 0.005, 0.01)]
    series = gpd.GeoSeries(boxes, crs=4326)
    expected = series.to_crs(series.estimate_utm_crs()).area.to_numpy() / 1e6
    assert utm_crs(lng, lat) == series.estimate_utm_crs()
    np.testing.assert_allclose(area_km2(boxes), expected, rtol=1e-9)
    # and the geodesic area on the ellipsoid within 0.1 % (a box 1 km wide, at most a zone's width off-centre)
    geodesic = [abs(Geod(ellps="WGS84").geometry_area_perimeter(b)[0]) / 1e6 for b in boxes]
    np.testing.assert_allclose(area_km2(boxes), geodesic, rtol=2e-3)
    assert area_km2([]).shape == (0,)
