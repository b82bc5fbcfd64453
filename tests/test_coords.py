"""Coordinate systems: GCJ-02 / BD-09 against prcoords and eviltransform, inverses, EPSG codes via pyproj."""

from __future__ import annotations

import eviltransform
import geopandas as gpd
import numpy as np
import prcoords
import pyproj
import pytest
import shapely
from civicgrid.geo import coords
from civicgrid.geo.errors import InvalidParameterError

N = 3000


@pytest.fixture(scope="module")
def china():
    """Random WGS84 points over China's mainland box, plus a dense sample around four big cities."""
    rng = np.random.default_rng(42)
    lng = rng.uniform(73.7, 134.7, N)
    lat = rng.uniform(18.2, 53.4, N)
    cities = np.array([[114.06, 22.54], [116.40, 39.90], [121.47, 31.23], [112.94, 28.23]])
    c = cities[rng.integers(0, 4, N)] + rng.normal(0, 0.3, (N, 2))
    return np.concatenate([lng, c[:, 0]]), np.concatenate([lat, c[:, 1]])


def _ref(func, lng, lat):
    """Apply a (lat, lng) -> (lat, lng) scalar reference function to arrays; return (lng, lat)."""
    out = np.array([tuple(func(la, lo)) for lo, la in zip(lng, lat, strict=True)])
    return out[:, 1], out[:, 0]


def test_wgs84_to_gcj02_matches_prcoords(china):
    lng, lat = china
    ours = coords.wgs84_to_gcj02(lng, lat)
    ref = _ref(lambda la, lo: prcoords.wgs_gcj((la, lo)), lng, lat)
    assert np.abs(ours[0] - ref[0]).max() < 1e-9
    assert np.abs(ours[1] - ref[1]).max() < 1e-9
    # The offset is real: hundreds of metres (a few thousandths of a degree).
    assert 1e-3 < np.median(np.hypot(ours[0] - lng, ours[1] - lat)) < 1e-2


def test_wgs84_to_gcj02_matches_eviltransform(china, monkeypatch):
    lng, lat = china
    ours = coords.wgs84_to_gcj02(lng, lat)
    # eviltransform scales the offset with the WGS84 radius (6378137 m) where the leaked GCJ-02 code and
    # prcoords use the Krasovsky radius (6378245 m): a 1.7e-5 relative difference, a few centimetres.
    raw = _ref(eviltransform.wgs2gcj, lng, lat)
    assert np.abs(ours[0] - raw[0]).max() < 1e-6 and np.abs(ours[1] - raw[1]).max() < 1e-6
    monkeypatch.setattr(eviltransform, "earthR", coords.GCJ_A)
    same = _ref(eviltransform.wgs2gcj, lng, lat)
    assert np.abs(ours[0] - same[0]).max() < 1e-9
    assert np.abs(ours[1] - same[1]).max() < 1e-9


def test_bd09_matches_both_references(china):
    lng, lat = china
    g = coords.wgs84_to_gcj02(lng, lat)
    ours = coords.gcj02_to_bd09(*g)
    for ref in (_ref(lambda la, lo: prcoords.gcj_bd((la, lo)), *g), _ref(eviltransform.gcj2bd, *g)):
        assert np.abs(ours[0] - ref[0]).max() < 1e-9
        assert np.abs(ours[1] - ref[1]).max() < 1e-9
    whole = coords.wgs84_to_bd09(lng, lat)
    ref = _ref(lambda la, lo: prcoords.wgs_bd((la, lo)), lng, lat)
    assert np.abs(whole[0] - ref[0]).max() < 1e-9 and np.abs(whole[1] - ref[1]).max() < 1e-9


@pytest.mark.parametrize("system", ["gcj02", "bd09"])
def test_inverse_round_trip_within_a_centimetre(china, system):
    lng, lat = china
    fwd = coords.from_wgs84(lng, lat, system)
    back = coords.to_wgs84(*fwd, system)
    assert np.abs(back[0] - lng).max() < 1e-7 and np.abs(back[1] - lat).max() < 1e-7
    # The inverse is exact to the forward formula, better than the references' own inverses.
    again = coords.from_wgs84(*back, system)
    assert np.abs(again[0] - fwd[0]).max() < 1e-9 and np.abs(again[1] - fwd[1]).max() < 1e-9
    if system == "gcj02":
        # eviltransform's bisection stops at 1e-6° on its own (WGS84-radius) forward: agreement to ~1 m.
        ref = _ref(eviltransform.gcj2wgs_exact, *fwd)
        assert np.abs(ref[0] - back[0]).max() < 2e-5 and np.abs(ref[1] - back[1]).max() < 2e-5
        ref = _ref(lambda la, lo: prcoords.gcj_wgs_bored((la, lo)), *fwd)
        assert np.abs(ref[0] - back[0]).max() < 2e-5 and np.abs(ref[1] - back[1]).max() < 2e-5


def test_no_offset_outside_china():
    lng = np.array([-122.4, 2.35, 139.7, 151.2])
    lat = np.array([37.77, 48.85, 35.68, -33.87])  # San Francisco, Paris, Tokyo (east of the box), Sydney
    assert np.array_equal(coords.wgs84_to_gcj02(lng, lat)[0], lng)
    assert np.array_equal(coords.gcj02_to_wgs84(lng, lat)[1], lat)
    with pytest.warns(UserWarning, match="Non-Chinese"):
        assert tuple(prcoords.wgs_gcj((37.77, -122.4), check_china=True)) == (37.77, -122.4)


def test_missing_values_stay_missing():
    lng = np.array([114.0, np.nan])
    lat = np.array([22.5, np.nan])
    out = coords.to_wgs84(lng, lat, "gcj02")
    assert np.isfinite(out[0][0]) and np.isnan(out[0][1]) and np.isnan(out[1][1])


@pytest.mark.parametrize(("text", "expected"), [
    ("wgs84", "wgs84"), ("WGS-84", "wgs84"), ("EPSG:4326", "wgs84"), ("gcj02", "gcj02"), ("GCJ-02", "gcj02"),
    ("amap", "gcj02"), ("高德", None), ("bd09", "bd09"), ("baidu", "bd09"), ("BD09LL", "bd09")])
def test_parse_crs_names(text, expected):
    if expected is None:
        with pytest.raises(InvalidParameterError, match="wgs84, gcj02, bd09, cgcs2000 or EPSG"):
            coords.parse_crs(text)
    else:
        assert coords.parse_crs(text) == expected


def test_cgcs2000_and_epsg_codes_use_pyproj():
    assert coords.parse_crs("cgcs2000") == pyproj.CRS.from_epsg(4490)
    assert coords.parse_crs("EPSG:2263") == pyproj.CRS.from_epsg(2263)
    with pytest.raises(InvalidParameterError, match="unknown coordinate system 'EPSG:999999'"):
        coords.parse_crs("EPSG:999999")
    rng = np.random.default_rng(1)
    lng, lat = rng.uniform(113.8, 114.6, 500), rng.uniform(22.4, 22.9, 500)
    # CGCS2000 geographic: what pyproj says (WGS84 and CGCS2000 agree to centimetres).
    x, y = coords.to_wgs84(lng, lat, "cgcs2000")
    px, py = pyproj.Transformer.from_crs(4490, 4326, always_xy=True).transform(lng, lat)
    assert np.allclose(x, px, atol=1e-12) and np.allclose(y, py, atol=1e-12)
    assert np.abs(x - lng).max() < 1e-6
    # A Chinese projected system (CGCS2000 / 3-degree Gauss-Kruger CM 114E) both ways.
    e, n = coords.from_wgs84(lng, lat, "EPSG:4547")
    pe, pn = pyproj.Transformer.from_crs(4326, 4547, always_xy=True).transform(lng, lat)
    assert np.allclose(e, pe, atol=1e-6) and np.allclose(n, pn, atol=1e-6)
    assert e.min() > 300_000 and e.max() < 700_000 and n.min() > 2_400_000
    back = coords.to_wgs84(e, n, "EPSG:4547")
    assert np.abs(back[0] - lng).max() < 1e-9 and np.abs(back[1] - lat).max() < 1e-9
    # NYC State Plane (US feet): the Empire State Building.
    ex, ey = pyproj.Transformer.from_crs(4326, 2263, always_xy=True).transform(-73.9857, 40.7484)
    x, y = coords.to_wgs84(np.array([ex]), np.array([ey]), "EPSG:2263")
    assert abs(x[0] + 73.9857) < 1e-9 and abs(y[0] - 40.7484) < 1e-9


def test_geometries_convert_vertex_by_vertex():
    poly = shapely.Polygon([(114.0, 22.5), (114.01, 22.5), (114.01, 22.51), (114.0, 22.51)])
    line = shapely.LineString([(114.0, 22.5), (114.02, 22.52)])
    out = coords.transform_geometries(np.array([poly, line, None], dtype=object), "gcj02", to_wgs84=False)
    assert out[2] is None
    xy = shapely.get_coordinates(poly)
    gx, gy = coords.wgs84_to_gcj02(xy[:, 0], xy[:, 1])
    assert np.allclose(shapely.get_coordinates(out[0]), np.column_stack([gx, gy]), atol=1e-12)
    back = coords.transform_geometries(out, "gcj02", to_wgs84=True)
    assert shapely.equals_exact(back[0], poly, tolerance=1e-9) and shapely.equals_exact(back[1], line, tolerance=1e-9)


def test_to_crs_frame():
    gdf = gpd.GeoDataFrame({"name": ["a"]}, geometry=[shapely.Point(114.05, 22.54)], crs=4326)
    bd = coords.to_crs_frame(gdf, "bd09")
    ref = prcoords.wgs_bd((22.54, 114.05))
    assert abs(bd.geometry[0].x - ref.lon) < 1e-9 and abs(bd.geometry[0].y - ref.lat) < 1e-9
    assert gdf.geometry[0].x == 114.05  # the input is not changed
    utm = coords.to_crs_frame(gdf, "EPSG:32650")
    assert utm.crs.to_epsg() == 32650 and 100_000 < utm.geometry[0].x < 900_000


@pytest.mark.parametrize(("text", "message"), [
    ("EPSG:999999", ("unknown coordinate system 'EPSG:999999': pyproj knows no such EPSG code; use wgs84, gcj02, "
                    "bd09, cgcs2000 or EPSG:NNNN")),
    ("foo", "unknown coordinate system 'foo': use wgs84, gcj02, bd09, cgcs2000 or EPSG:NNNN")])
def test_an_unknown_crs_is_named_without_proj_internals(text, message):
    with pytest.raises(InvalidParameterError) as info:
        coords.parse_crs(text)
    assert str(info.value) == message


@pytest.mark.parametrize("system", ["wgs84", "gcj02", "bd09", "EPSG:4547"])
def test_to_and_from_wgs84_are_inverses_and_copy(system):
    lng, lat = np.array([114.05, 113.93]), np.array([22.54, 22.52])
    x, y = coords.from_wgs84(lng, lat, system)
    back = coords.to_wgs84(x, y, system)
    assert np.abs(back[0] - lng).max() < 1e-8 and np.abs(back[1] - lat).max() < 1e-8
    assert x is not lng and back[0] is not x  # never the caller's array
