"""Folium maps shown inline in Jupyter with no internet: Leaflet and plugins inlined from installed packages.

:func:`civicgrid.maps.offline.render_offline` rewrites a folium page so that Leaflet comes from the
service's ``/static/vendor/`` files instead of a CDN. A notebook has no such server, so
:func:`show` goes one step further and inlines those files into the page, then shows the
page in an ``<iframe srcdoc>``: the map works on an intranet machine with no internet and
no running ``civicgrid serve``.

Maps are drawn without a tile background by default (tiles need the internet); the
outlines of the city's areas (:func:`base_map`: districts and streets, or whatever levels the
city loaded) give the orientation instead. On a
machine that is online, add ``folium.TileLayer("OpenStreetMap").add_to(m)``; for AMap
(Gaode) tiles shift the overlays to GCJ-02 first (``civicgrid.geo.coords.to_crs_frame(gdf, "gcj02")``).
"""

from __future__ import annotations

import base64
import html
import re
from itertools import pairwise

import folium
import geopandas as gpd
import shapely
from civicgrid.geo.levels import AREA_LEVELS
from civicgrid.geo.store import Store
from civicgrid.maps.layers import RawHtml, SafeGeoJsonTooltip
from civicgrid.maps.offline import VENDOR_URL, render_offline, vendor_path
from IPython.display import HTML

_VENDOR_TAG = re.compile(
    r"<script\b[^>]*\bsrc=\"" + re.escape(VENDOR_URL) + r"/([^\"]+)\"[^>]*>\s*</script>"
    r"|<link\b[^>]*\bhref=\"" + re.escape(VENDOR_URL) + r"/([^\"]+)\"[^>]*/?>")
_CSS_URL = re.compile(r"url\((['\"]?)(images/[^'\")]+)\1\)")


def _css(name: str) -> str:
    text = vendor_path(name).read_text(encoding="utf-8")

    def data_uri(match: re.Match) -> str:
        rel = match.group(2)
        try:
            raw = vendor_path(rel).read_bytes()
        except KeyError:  # an image no page of ours uses
            return match.group(0)
        return f"url(data:image/png;base64,{base64.b64encode(raw).decode()})"

    return _CSS_URL.sub(data_uri, text)


def inline_page(m: folium.Map) -> str:
    """The map as one self-contained HTML page: every vendored script and stylesheet inlined.

    Parameters
    ----------
    m
        A folium map (markers as ``CircleMarker``/``DivIcon``: ``folium.Icon`` needs files
        that are not vendored and makes :func:`civicgrid.maps.offline.render_offline` raise).

    Returns
    -------
    str
        HTML with no reference to any URL outside the page (tile layers excepted).
    """

    def inline(match: re.Match) -> str:
        script, sheet = match.group(1), match.group(2)
        if script:
            code = vendor_path(script).read_text(encoding="utf-8").replace("</script", "<\\/script")
            return f"<script>{code}</script>"
        return f"<style>{_css(sheet)}</style>"

    return _VENDOR_TAG.sub(inline, render_offline(m))


def show(m: folium.Map, *, height: int = 520) -> HTML:
    """Display a folium map inline in a notebook without internet (see the module docstring).

    Parameters
    ----------
    m
        The map.
    height
        Height of the map in pixels.
    """
    page = html.escape(inline_page(m), quote=True)
    return HTML(f'<div><iframe srcdoc="{page}" style="width:100%;height:{height}px;border:1px solid #ccc" '
                f'sandbox="allow-scripts"></iframe></div>')


def area_levels(store: Store) -> list[str]:
    """The area levels the store has, coarsest first (a city may load only some: San Francisco's census tracts
    as communities, Toronto none at all)."""
    have = set(store.sql("SELECT DISTINCT level FROM areas")["level"])
    return [level for level in AREA_LEVELS if level in have]


def areas_frame(store: Store, *, level: str | None = None) -> gpd.GeoDataFrame:
    """Districts, streets or communities of the store as a GeoDataFrame (EPSG:4326); ``level=None``: the coarsest
    level the store has (the districts, else the streets, else the communities; empty when it has no areas)."""
    if level is None:
        levels = area_levels(store)
        level = levels[0] if levels else "district"
    df = store.sql("SELECT code, name, name_en, level, parent_code, area_km2, ST_AsWKB(geom) AS wkb "
                   "FROM areas WHERE level = ? ORDER BY code", [level])
    geom = shapely.from_wkb(df.pop("wkb").map(bytes).to_numpy()) if len(df) else []
    return gpd.GeoDataFrame(df, geometry=geom, crs="EPSG:4326")


def city_bounds(store: Store) -> tuple[float, float, float, float]:
    """``(min lng, min lat, max lng, max lat)`` of the city: its areas and micro-grids, else its events and sites
    (a store with points only)."""
    row = store.sql("""
        SELECT min(ST_XMin(geom)), min(ST_YMin(geom)), max(ST_XMax(geom)), max(ST_YMax(geom))
        FROM (SELECT geom FROM areas UNION ALL SELECT geom FROM grids)
    """).iloc[0]
    if row.isna().any():
        row = store.sql("""
            SELECT min(lng), min(lat), max(lng), max(lat)
            FROM (SELECT lng, lat FROM events UNION ALL SELECT lng, lat FROM sites) WHERE lng IS NOT NULL
        """).iloc[0]
    if row.isna().any():
        msg = "the store has no areas, micro-grids, events or sites to show on a map"
        raise ValueError(msg)
    return tuple(float(v) for v in row)


def base_map(store: Store, *, zoom_start: int = 12, streets: bool = True) -> folium.Map:
    """A tile-less map fitted to the city, with the outlines of its coarsest area level (the districts) and, with
    ``streets``, of the next level (the streets) when the store has them."""
    minx, miny, maxx, maxy = city_bounds(store)
    m = folium.Map(location=[(miny + maxy) / 2, (minx + maxx) / 2], zoom_start=zoom_start, tiles=None,
                   control_scale=True)
    levels = area_levels(store)
    if streets and len(levels) > 1:
        folium.GeoJson(areas_frame(store, level=levels[1])[["name", "geometry"]], name=_LEVEL_NAMES[levels[1]],
                       style_function=lambda _: {"color": "#999", "weight": 0.8, "fillOpacity": 0},
                       tooltip=SafeGeoJsonTooltip(["name"], labels=False)).add_to(m)
    if levels:
        folium.GeoJson(areas_frame(store, level=levels[0])[["name", "geometry"]], name=_LEVEL_NAMES[levels[0]],
                       style_function=lambda _: {"color": "#333", "weight": 2, "fillOpacity": 0},
                       interactive=False).add_to(m)
    m.fit_bounds([[miny, minx], [maxy, maxx]])
    return m


_LEVEL_NAMES = {"district": "区 districts", "street": "街道 streets", "community": "社区 communities"}


def colors(values, *, cmap: str = "YlOrRd", bins: int = 6) -> tuple[list[str], list[float], list[str]]:
    """Quantile classes of ``values`` as hex colours (folium's Choropleth legend needs d3 from a CDN).

    Returns
    -------
    colours, edges, palette
        A colour per value, the class edges (``bins + 1`` or fewer when values repeat) and one colour per class.
    """
    import matplotlib as mpl
    import numpy as np

    v = np.asarray(values, dtype=float)
    edges = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1))) if len(v) else np.array([0.0, 1.0])
    if len(edges) < 2:
        edges = np.array([edges[0], edges[0] + 1])
    cls = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)
    cm = mpl.colormaps[cmap].resampled(len(edges) - 1)
    palette = [mpl.colors.to_hex(cm(i)) for i in range(len(edges) - 1)]
    return [palette[i] for i in cls], edges.tolist(), palette


def legend(m: folium.Map, title: str, labels: list[str], palette: list[str]) -> folium.Map:
    """Add a small fixed legend (plain HTML, no script) to the map's page."""
    rows = "".join(f'<div><span style="display:inline-block;width:14px;height:10px;background:{c};'
                   f'margin-right:6px"></span>{html.escape(t)}</div>' for t, c in zip(labels, palette, strict=True))
    box = (f'<div style="position:fixed;bottom:18px;left:18px;z-index:9999;background:white;padding:6px 8px;'
           f'font:12px sans-serif;border:1px solid #999;border-radius:4px"><b>{html.escape(title)}</b>{rows}</div>')
    m.get_root().html.add_child(RawHtml(box))
    return m


def choropleth(m: folium.Map, gdf: gpd.GeoDataFrame, column: str, *, title: str, tooltip: list[str],
               cmap: str = "YlOrRd", bins: int = 6, opacity: float = 0.75) -> folium.Map:
    """Draw ``gdf`` coloured by quantile classes of ``column``, with a tooltip and a legend."""
    fill, edges, palette = colors(gdf[column].to_numpy(), cmap=cmap, bins=bins)
    data = gdf[[*tooltip, "geometry"]].assign(_fill=fill)
    folium.GeoJson(data, name=title,
                   style_function=lambda f: {"fillColor": f["properties"]["_fill"], "color": "#000", "weight": 0,
                                             "fillOpacity": opacity},
                   tooltip=SafeGeoJsonTooltip(tooltip)).add_to(m)
    labels = [f"{a:g} – {b:g}" for a, b in pairwise(edges)]
    return legend(m, title, labels, palette)


#: Fonts with Chinese glyphs, in order of preference: Linux (Noto / Source Han, WenQuanYi), Windows (Microsoft
#: YaHei, SimHei), macOS (PingFang, Hiragino).
CJK_FONTS = ("Noto Sans CJK SC", "Source Han Sans SC", "Source Han Sans CN", "Microsoft YaHei", "SimHei",
             "PingFang SC", "Hiragino Sans GB", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback",
             "Arial Unicode MS")


def chinese_fonts() -> str | None:
    """Let matplotlib draw Chinese names (a district's 福田区 drew as empty boxes with its default font): the first
    font of :data:`CJK_FONTS` the machine has becomes the fallback after DejaVu Sans (Latin text unchanged).

    Returns the font used, or None (with a hint printed) when the machine has none.
    """
    import matplotlib as mpl
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    font = next((name for name in CJK_FONTS if name in have), None)
    if font is None:
        print("no Chinese font found for the charts: Chinese names will draw as boxes. Install one (Debian: "
              f"apt install fonts-noto-cjk), then delete matplotlib's font cache ({mpl.get_cachedir()})")
        return None
    # a list of families: matplotlib takes each glyph from the first that has it
    mpl.rcParams["font.family"] = ["DejaVu Sans", font]
    return font
