"""Background maps: no tiles, OpenStreetMap, Tianditu (天地图) and AMap (高德), and the Tianditu key.

Used by every map page that offers a background (the hotspot map, the patrol map). ``none`` draws no
tiles and works offline; the tile services need the internet. AMap tiles are in GCJ-02: a page that
shows them converts every overlay to GCJ-02 (:func:`basemap_crs`).
"""

from __future__ import annotations

from collections.abc import Mapping

from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.settings import get_settings

#: Background choices: no tiles (district outlines as a light base), OpenStreetMap, Tianditu (天地图, CGCS2000,
#: needs a key) and AMap (高德, GCJ-02: every overlay is shifted to GCJ-02).
BASEMAPS = ("none", "osm", "tianditu", "amap")

#: Tile services per basemap: (url template, subdomains, attribution). Tianditu's ``{tk}`` is the key from the
#: service setting ``tianditu_key`` (``$CIVICGRID_TIANDITU_KEY``). Sources: the services' public tile endpoints.
TILES = {
    "osm": [("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "abc",
             '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors')],
    "tianditu": [
        ("https://t{s}.tianditu.gov.cn/vec_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=vec"
         "&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}&tk={tk}", "01234567",
         "&copy; 天地图"),
        ("https://t{s}.tianditu.gov.cn/cva_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=cva"
         "&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}&tk={tk}", "01234567",
         "&copy; 天地图"),
    ],
    "amap": [("https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1&style=8&x={x}&y={y}&z={z}",
              "1234", "&copy; 高德地图 AutoNavi")],
}


def tianditu_key(settings: Mapping | None = None) -> str:
    """The Tianditu key: ``settings["tianditu_key"]`` (the service's settings), else the ``tianditu_key`` setting
    of :func:`civicgrid.geo.settings.get_settings` (``$CIVICGRID_TIANDITU_KEY``), else ``""``."""
    return str((settings or {}).get("tianditu_key") or get_settings().tianditu_key)


def check_basemap(basemap: str) -> str:
    """``basemap`` if it is one of :data:`BASEMAPS`.

    Raises
    ------
    InvalidParameterError
        Any other value.
    """
    if basemap not in BASEMAPS:
        msg = f"basemap must be one of {', '.join(BASEMAPS)}, got {basemap!r}"
        raise InvalidParameterError(msg)
    return basemap


def basemap_crs(basemap: str) -> str:
    """The coordinates overlays are drawn in over ``basemap``: ``gcj02`` for AMap, else ``wgs84``."""
    return "gcj02" if basemap == "amap" else "wgs84"


def tile_layers(basemap: str, *, key: str = "") -> list[tuple[str, str, str]]:
    """The tile layers of ``basemap`` as ``(url, subdomains, attribution)``, Tianditu's ``{tk}`` filled with ``key``.

    ``none`` has no tiles (an empty list).
    """
    return [(url.replace("{tk}", key), subs, attr) for url, subs, attr in TILES.get(check_basemap(basemap), [])]


__all__ = ["BASEMAPS", "TILES", "basemap_crs", "check_basemap", "tianditu_key", "tile_layers"]
