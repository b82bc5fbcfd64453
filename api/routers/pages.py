"""GET /map: the planners' hotspot map (H3 heat layer, micro-grids, sample frame, hotspot clusters), offline.

The page is a folium map rendered by :func:`api.offline.render_offline` (Leaflet and plugins served
by the app, no CDN). The heat layer is sent compactly — each hexagon as one reference vertex and
int16 offsets, base64-packed — and drawn client-side on a canvas, so 20,000 cells stay under 2 MB
of HTML. :func:`hotspot_map` builds the map without a server (for notebooks); the route only parses
the query.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from urllib.parse import urlencode

import branca.element
import folium
import folium.plugins
import geopandas as gpd
import jinja2
import numpy as np
import shapely
from civicgrid.api.deps import event_filters, get_settings, get_store, lang_param, max_cells, res_param
from civicgrid.api.errors import HtmlErrorRoute
from civicgrid.api.offline import render_offline
from civicgrid.geo.aggregate import LEVEL_COLUMNS, METRICS, EventFilter, area_stats, cell_polygons, heatmap
from civicgrid.geo.coords import from_wgs84, to_crs_frame
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.hotspots import hotspot_clusters
from civicgrid.geo.store import Store
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["pages"], route_class=HtmlErrorRoute)

#: Background choices: no tiles (district outlines as a light base), OpenStreetMap, Tianditu (天地图, CGCS2000,
#: needs a key) and AMap (高德, GCJ-02: every overlay is shifted to GCJ-02).
BASEMAPS = ("none", "osm", "tianditu", "amap")

#: Tile services per basemap: (url template, subdomains, attribution). Tianditu's ``{tk}`` is the key from the
#: service setting ``tianditu_key`` or ``$CIVICGRID_TIANDITU_KEY``. Sources: the services' public tile endpoints.
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

#: Heat colours, light to dark (ColorBrewer YlOrRd, 7 classes).
HEAT_COLORS = ("#ffffb2", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#b10026")
#: Colour per site-category group (``site_categories.group_code``); other groups get grey.
GROUP_COLORS = {"civic": "#1f77b4", "commerce": "#ff7f0e", "culture": "#9467bd", "minors": "#e377c2",
                "neighbourhood": "#2ca02c", "public_space": "#17becf", "streets": "#8c564b", "transport": "#7f7f7f"}
#: Resolutions offered by the page's form (the API accepts 5..12).
FORM_RES = (6, 7, 8, 9, 10, 11)

#: Leaflet pane of the district names: above the markers (600), below tooltips (650) and popups (700).
LABEL_PANE = "cg-labels"

#: Page labels: key -> (Chinese, English).
_LABEL_PAIRS = {
    "title": ("{city} 问题热点地图", "{city} problem hotspot map"),
    "heat": ("问题热力（H3 {res} 级）", "Problem heat (H3 res {res})"),
    "grids": ("微网格", "Micro-grids"),
    "sites": ("样本框点位", "Sample-frame sites"),
    "clusters": ("热点区域", "Hotspot clusters"),
    "districts": ("区界", "District outlines"),
    "filters": ("筛选", "Filters"),
    "start": ("开始日期", "From"),
    "end": ("结束日期", "To"),
    "source": ("来源", "Source"),
    "all": ("全部", "All"),
    "complaint": ("市民投诉（12345）", "Complaints (12345)"),
    "inspection": ("巡查发现", "Inspection hits"),
    "type": ("问题类型", "Problem type"),
    "all_types": ("全部类型", "All types"),
    "all_of": ("（全部）", " (all)"),
    "area": ("区域", "Area"),
    "all_areas": ("全市", "Whole city"),
    "district": ("区", "District"),
    "street": ("街道", "Street"),
    "community": ("社区", "Community"),
    "res": ("网格精度", "Cell size"),
    "metric": ("指标", "Metric"),
    "count": ("事件数", "Events"),
    "density": ("每平方公里事件数", "Events per km²"),
    "sites_metric": ("涉及点位数", "Sites affected"),
    "basemap": ("底图", "Basemap"),
    "bm_none": ("无底图（区界）", "None (district outlines)"),
    "bm_osm": ("OpenStreetMap", "OpenStreetMap"),
    "bm_tianditu": ("天地图", "Tianditu"),
    "bm_amap": ("高德地图", "AMap (Gaode)"),
    "apply": ("应用", "Apply"),
    "reset": ("重置", "Reset"),
    "events": ("件", "events"),
    "cells": ("个网格单元", "cells"),
    "legend": ("图例", "Legend"),
    "no_events": ("所选条件下没有事件", "No events match these filters"),
    "rank": ("热点", "Hotspot"),
    "n_cells": ("单元", "cells"),
    "km2": ("平方公里", "km²"),
    "top_types": ("主要问题", "Main problems"),
    "in_grids": ("涉及网格", "Grids"),
    "in_sites": ("样本框点位", "Sample-frame sites"),
    "none_found": ("未发现显著热点", "No significant hotspot found"),
    "code": ("编码", "Code"),
    "leader": ("网格长", "Grid leader"),
    "phone": ("电话", "Phone"),
    "households": ("户数", "Households"),
    "name": ("名称", "Name"),
    "category": ("类别", "Category"),
    "address": ("地址", "Address"),
    "unit": ("责任单位", "Responsible unit"),
    "value": ("数值", "Value"),
    "event_count": ("事件数", "Events"),
    "site_count": ("涉及点位", "Sites affected"),
    "grid_events": ("本网格事件数（当前筛选）", "Events in grid (filtered)"),
    "status": ("状态", "Status"),
    "lang": ("English", "中文"),
    "more": ("等 {n} 个", "{n} in all"),
    "hotspot_note": ("Getis-Ord Gi* 显著热点（FDR 校正，α=0.05），按事件数排序",
                     "Getis-Ord Gi* significant hot spots (FDR-corrected, α=0.05), by events"),
    "tk_missing": ("天地图需要密钥：设置环境变量 CIVICGRID_TIANDITU_KEY",
                   "Tianditu needs a key: set CIVICGRID_TIANDITU_KEY"),
    "summary": ("{events} 件事件 · {cells} 个单元", "{events} events · {cells} cells"),
    "site_groups": ("点位类别", "Site groups"),
}
#: Page labels per language.
LABELS = {lang: {k: v[i] for k, v in _LABEL_PAIRS.items()} for i, lang in enumerate(("zh", "en"))}

_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).resolve().parents[1] / "templates"),
                                autoescape=jinja2.select_autoescape(["html"]))


# ---------------------------------------------------------------------------------------------------------
# Compact hexagon layer
# ---------------------------------------------------------------------------------------------------------

def _b64(arr: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype=dtype).tobytes()).decode("ascii")


def pack_hexagons(cells: np.ndarray, *, crs: str = "wgs84") -> dict:
    """Hexagon outlines of H3 cells packed for the browser.

    Each cell is its first vertex (int32, 1e-6°) and the other vertices as int16 offsets from it in
    units of ``scale`` degrees (about 0.1 m at resolution 9), base64-encoded little-endian arrays:
    ``ref`` (2 int32 per cell, lng/lat), ``nv`` (uint8 vertex count per cell), ``off`` (2 int16 per
    vertex after the first). Vertices are converted to ``crs`` (``gcj02`` for AMap tiles) first.
    """
    cells = np.asarray(cells, dtype="uint64")
    if not len(cells):
        return {"n": 0, "scale": 1e-7, "ref": "", "nv": "", "off": ""}
    polys = cell_polygons(cells)
    xy, idx = shapely.get_coordinates(shapely.get_exterior_ring(polys), return_index=True)
    # drop each ring's closing vertex
    last = np.r_[idx[1:] != idx[:-1], True]
    xy, idx = xy[~last], idx[~last]
    if crs != "wgs84":
        x, y = from_wgs84(xy[:, 0], xy[:, 1], crs)
        xy = np.column_stack([x, y])
    nv = np.bincount(idx, minlength=len(cells))
    first = np.r_[0, np.cumsum(nv)[:-1]]
    ref = np.round(xy[first] * 1e6).astype("int64")
    rest = np.ones(len(xy), dtype=bool)
    rest[first] = False
    d = xy[rest] - ref[idx[rest]] / 1e6
    scale = max(float(np.abs(d).max()) / 32000.0, 1e-8) if len(d) else 1e-7
    off = np.round(d / scale)
    return {"n": len(cells), "scale": scale, "ref": _b64(ref, "<i4"), "nv": _b64(nv, "u1"),
            "off": _b64(off, "<i2")}


def class_breaks(values: np.ndarray, n: int = len(HEAT_COLORS)) -> np.ndarray:
    """Upper bounds of up to ``n`` colour classes at quantiles of ``values`` (distinct, increasing)."""
    values = np.asarray(values, dtype="float64")
    if not len(values):
        return np.zeros(0)
    qs = np.quantile(values, np.arange(1, n + 1) / n)
    return np.unique(qs)


def legend_values(values: np.ndarray) -> np.ndarray:
    """Values rounded as the legend prints them (:func:`_fmt`: whole numbers from 100, else one decimal).

    Classes are cut on these, so two classes never print the same range: densities of one-event cells differ
    only in the cells' slightly different areas (72.52, 72.53 … per km²) and would give breaks that all read 72.5.
    """
    v = np.asarray(values, dtype="float64")
    return np.where(np.abs(v) >= 100, np.round(v), np.round(v, 1))


def class_colors(n: int) -> list[str]:
    """``n`` heat colours spread over the whole palette (light to dark), so few classes still read low to high."""
    if n <= 0:
        return []
    if n == 1:
        return [HEAT_COLORS[-1]]
    return [HEAT_COLORS[i] for i in np.round(np.linspace(0, len(HEAT_COLORS) - 1, n)).astype(int)]


class HexagonLayer(folium.map.Layer):
    """H3 cells drawn client-side from :func:`pack_hexagons` data, coloured by class.

    Parameters
    ----------
    cells
        uint64 cell ids.
    classes
        Colour index of each cell (into ``colors``).
    colors
        Fill colours.
    info
        Per-cell numbers shown in the click popup: ``{label: array}``.
    crs
        ``wgs84`` or ``gcj02``.
    name, show
        Layer-control name and initial visibility.
    """

    _template = jinja2.Template("""
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = (function () {
            function dec(s, T) {
                var b = atob(s), u = new Uint8Array(b.length);
                for (var i = 0; i < b.length; i++) { u[i] = b.charCodeAt(i); }
                return new T(u.buffer);
            }
            var d = {{ this.data }};
            var ref = dec(d.ref, Int32Array), nv = dec(d.nv, Uint8Array), off = dec(d.off, Int16Array),
                cls = dec(d.cls, Uint8Array), info = d.info.map(function (c) { return dec(c[1], Float32Array); });
            var group = L.featureGroup(), k = 0;
            for (var i = 0; i < d.n; i++) {
                var x0 = ref[2 * i] / 1e6, y0 = ref[2 * i + 1] / 1e6, pts = [[y0, x0]];
                for (var j = 1; j < nv[i]; j++, k += 2) {
                    pts.push([y0 + off[k + 1] * d.scale, x0 + off[k] * d.scale]);
                }
                group.addLayer(L.polygon(pts, {stroke: false, fillColor: d.colors[cls[i]], fillOpacity: 0.7,
                                               cell: i}));
            }
            group.on("click", function (e) {
                var i = e.layer.options.cell, rows = d.info.map(function (c, j) {
                    var v = info[j][i];
                    return "<tr><th>" + c[0] + "</th><td>" + (Math.round(v) === v ? v : v.toFixed(1)) + "</td></tr>";
                });
                L.popup().setLatLng(e.latlng).setContent("<table class='cg-pop'>" + rows.join("") + "</table>")
                    .openOn({{ this._parent.get_name() }});
            });
            return group;
        })();
        window.cgLayers = window.cgLayers || {};
        window.cgLayers[{{ this.key|tojson }}] = {{ this.get_name() }};
        {% endmacro %}
    """)

    def __init__(self, cells: np.ndarray, classes: np.ndarray, colors, info: dict[str, np.ndarray], *,
                 crs: str = "wgs84", name: str | None = None, show: bool = True, key: str = "hex"):
        super().__init__(name=name, overlay=True, control=True, show=show)
        self._name = "HexagonLayer"
        packed = pack_hexagons(cells, crs=crs)
        packed["cls"] = _b64(classes, "u1")
        packed["colors"] = list(colors)
        packed["info"] = [[label, _b64(values, "<f4")] for label, values in info.items()]
        self.data = json.dumps(packed, separators=(",", ":"), ensure_ascii=False)
        self.key = key


class CompactMarkers(branca.element.MacroElement):
    """Circle markers added client-side to a parent layer (e.g. a MarkerCluster) from compact rows.

    ``rows`` are ``[lat, lng, colour index, popup field…]``; ``fields`` label the popup fields.
    """

    _template = jinja2.Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var d = {{ this.data }}, layer = {{ this._parent.get_name() }}, ms = [];
            d.rows.forEach(function (r) {
                var m = L.circleMarker([r[0], r[1]], {radius: 6, weight: 1.5, color: "#fff", fillOpacity: 0.95,
                                                     fillColor: d.colors[r[2]]});
                var html = d.fields.map(function (f, j) {
                    return r[3 + j] ? "<tr><th>" + f + "</th><td>" + r[3 + j] + "</td></tr>" : "";
                }).join("");
                m.bindPopup("<table class='cg-pop'>" + html + "</table>");
                ms.push(m);
            });
            layer.addLayers ? layer.addLayers(ms) : ms.forEach(function (m) { layer.addLayer(m); });
            window.cgLayers = window.cgLayers || {};
            window.cgLayers[{{ this.key|tojson }}] = layer;
        })();
        {% endmacro %}
    """)

    def __init__(self, rows: list, *, colors: list[str], fields: list[str], key: str = "sites"):
        super().__init__()
        self._name = "CompactMarkers"
        self.data = json.dumps({"rows": rows, "colors": colors, "fields": fields}, separators=(",", ":"),
                               ensure_ascii=False).replace("</", "<\\/")
        self.key = key


class OutlineLayer(folium.map.Layer):
    """Outlines of another GeoJSON layer's shapes, drawn again above everything added in between.

    The shapes come from the source layer in the browser (``toGeoJSON``), so the page carries them once.
    The outlines take no clicks: the source layer, drawn lower, keeps its popups where nothing covers it.
    """

    _template = jinja2.Template("""
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = L.geoJson({{ this.source.get_name() }}.toGeoJSON(), {
            interactive: false, smoothFactor: 0.5, style: function () { return {{ this.style|tojson }}; }
        });
        {% if this.show %}{{ this.get_name() }}.addTo({{ this._parent.get_name() }});{% endif %}
        window.cgLayers = window.cgLayers || {};
        window.cgLayers[{{ this.key|tojson }}] = {{ this.get_name() }};
        {% endmacro %}
    """)

    def __init__(self, source, style: dict, *, name: str | None = None, show: bool = True, key: str):
        super().__init__(name=name, overlay=True, control=True, show=show)
        self._name = "OutlineLayer"
        self.source, self.style, self.key = source, style, key


class ExposeLayer(branca.element.MacroElement):
    """Publish a folium layer as ``window.cgLayers[key]`` (for page scripts and browser tests)."""

    _template = jinja2.Template("""
        {% macro script(this, kwargs) %}
        window.cgLayers = window.cgLayers || {};
        window.cgLayers[{{ this.key|tojson }}] = {{ this.layer.get_name() }};
        {% endmacro %}
    """)

    def __init__(self, layer, key: str):
        super().__init__()
        self.layer, self.key = layer, key


# ---------------------------------------------------------------------------------------------------------
# The map
# ---------------------------------------------------------------------------------------------------------

def _rounded_geojson(gdf: gpd.GeoDataFrame, *, digits: int = 6) -> dict:
    """GeoJSON of a frame with coordinates rounded (1e-6° ≈ 0.1 m) to keep pages small."""
    out = gdf.copy()
    out.geometry = shapely.transform(out.geometry.to_numpy(), lambda c: np.round(c, digits))
    return json.loads(out.to_json(drop_id=True, ensure_ascii=False))


def _frame(store: Store, sql: str, params=None) -> gpd.GeoDataFrame:
    df = store.sql(sql, params or [])
    geoms = shapely.from_wkb(df["wkb"].map(bytes).to_numpy()) if len(df) else np.array([], dtype=object)
    return gpd.GeoDataFrame(df.drop(columns=["wkb"]), geometry=geoms, crs="EPSG:4326")


def _tianditu_key(settings: dict | None) -> str:
    return str((settings or {}).get("tianditu_key") or os.environ.get("CIVICGRID_TIANDITU_KEY", ""))


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v - round(v)) < 1e-9 or abs(v) >= 100 else f"{v:,.1f}"


def _form_options(store: Store, lang: str) -> dict:
    """Choices of the filter form: problem types by 大类 and areas by level."""
    suffix = "en" if lang == "en" else "zh"
    pt = store.sql(f"SELECT code, name_{suffix} AS name, major_code, major_{suffix} AS major FROM problem_types "
                   "ORDER BY code")
    majors = [{"code": code, "name": part["major"].iloc[0],
               "types": [{"code": r.code, "name": r.name} for r in part.itertuples()]}
              for code, part in pt.groupby("major_code", sort=True)]
    name = "coalesce(name_en, name)" if lang == "en" else "name"
    areas = store.sql(f"SELECT code, {name} AS name, level, parent_code FROM areas ORDER BY code")
    levels = [{"level": lv, "areas": [{"code": r.code, "name": r.name} for r in areas[areas.level == lv].itertuples()]}
              for lv in ("district", "street", "community")]
    return {"majors": majors, "levels": levels, "area_codes": set(areas["code"])}


def hotspot_map(store: Store, *, res: int = 9, filters: EventFilter | None = None, metric: str = "count",
                lang: str = "zh", basemap: str = "none", max_cells: int | None = None,
                query: dict | None = None, settings: dict | None = None) -> folium.Map:
    """The planners' hotspot map as a folium map (render it with :func:`api.offline.render_offline`).

    Parameters
    ----------
    store
        The database.
    res
        H3 resolution of the heat layer and of the hotspot statistics.
    filters
        Which events to show (:class:`geo.aggregate.EventFilter`).
    metric
        ``count``, ``density`` or ``sites`` (see :func:`geo.aggregate.heatmap`).
    lang
        ``zh`` (default) or ``en`` labels.
    basemap
        ``none`` (district outlines as a light base; works offline), ``osm``, ``tianditu`` or ``amap``
        (GCJ-02 tiles: every overlay is converted to GCJ-02).
    max_cells
        Refuse views with more cells (:class:`geo.errors.TooManyCellsError`).
    query
        The page's current query parameters (pre-fill the filter form).
    settings
        Service settings (``tianditu_key``).

    Returns
    -------
    folium.Map
        Layers: heat hexagons with a legend, micro-grid outlines with popups, sample-frame sites
        clustered and coloured by category group, hotspot clusters outlined and listed in a side panel,
        district outlines; a layer control and the filter form.
    """
    if basemap not in BASEMAPS:
        msg = f"basemap must be one of {', '.join(BASEMAPS)}, got {basemap!r}"
        raise InvalidParameterError(msg)
    if metric not in METRICS:
        msg = f"metric must be one of {', '.join(METRICS)}, got {metric!r}"
        raise InvalidParameterError(msg)
    lang = "en" if lang == "en" else "zh"
    t = LABELS[lang]
    crs = "gcj02" if basemap == "amap" else "wgs84"
    filters = (filters or EventFilter()).validate(store)
    cells = heatmap(store, res=res, filters=filters, metric=metric, max_cells=max_cells)
    clusters = hotspot_clusters(store, res=res, filters=filters, lang=lang, max_cells=max_cells)

    city = store.meta("city_name_en" if lang == "en" else "city_name") or store.meta("city_name") or ""
    districts = _frame(store, "SELECT code, name, coalesce(name_en, name) AS name_en, ST_AsWKB(geom) AS wkb "
                              "FROM areas WHERE level = 'district' ORDER BY code")
    if lang == "en":
        districts["name"] = districts["name_en"]
    grids = _frame(store, "SELECT code, name, leader_name, leader_phone, households, ST_AsWKB(geom) AS wkb "
                          "FROM grids ORDER BY code")
    if filters.area is not None:
        col = "code" if filters.area_level == "grid" else LEVEL_COLUMNS[filters.area_level]
        keep = store.sql(f"SELECT code FROM grids WHERE {col} = ?", [filters.area])["code"]
        grids = grids[grids["code"].isin(set(keep))]
    districts, grids = to_crs_frame(districts, crs), to_crs_frame(grids, crs)
    clusters_c = to_crs_frame(clusters, crs) if len(clusters) else clusters

    focus = grids if len(grids) else districts
    if len(focus):
        x0, y0, x1, y1 = focus.total_bounds
    else:
        x0, y0, x1, y1 = 112.9, 28.2, 113.0, 28.3
    m = folium.Map(location=[(y0 + y1) / 2, (x0 + x1) / 2], zoom_start=12, tiles=None, prefer_canvas=True,
                   control_scale=True, zoom_control=True, maxZoom=19)
    m.get_root().title = t["title"].format(city=city)
    m.fit_bounds([[y0, x0], [y1, x1]], padding_top_left=(310, 10), padding_bottom_right=(10, 10))

    notes = []
    if basemap != "none":
        key = _tianditu_key(settings)
        if basemap == "tianditu" and not key:
            notes.append(t["tk_missing"])
        for i, (url, subs, attr) in enumerate(TILES[basemap]):
            folium.TileLayer(tiles=url.replace("{tk}", key), attr=attr, subdomains=subs, max_zoom=18,
                             name=t[f"bm_{basemap}"], overlay=i > 0, control=False).add_to(m)

    # districts: a light fill as the base without tiles; outlines and names drawn above the heat layer
    if basemap == "none":
        folium.GeoJson(_rounded_geojson(districts[["code", "geometry"]]), name="base", control=False,
                       interactive=False, smooth_factor=0.5,
                       style_function=lambda _: {"stroke": False, "fillColor": "#ecebe6", "fillOpacity": 1},
                       ).add_to(m)
    # micro-grid popups: an invisible fill drawn *below* the heat hexagons, so a click on a hexagon opens the
    # hexagon's popup and a click where there is none opens the grid's (Leaflet picks the topmost shape)
    per_grid = area_stats(store, level="grid", filters=filters).set_index("code")["count"]
    grids["events"] = grids["code"].map(per_grid).fillna(0).astype("int64")
    grid_fields = ["name", "code", "leader_name", "leader_phone", "households", "events"]
    grid_geojson = _rounded_geojson(grids[[*grid_fields, "geometry"]])
    grid_popups = folium.GeoJson(
        grid_geojson, name="grid-popups", control=False,
        style_function=lambda _: {"stroke": False, "fill": True, "fillOpacity": 0},
        popup=folium.GeoJsonPopup(grid_fields, aliases=[t["name"], t["code"], t["leader"], t["phone"],
                                                        t["households"], t["grid_events"]]),
        smooth_factor=0.5,
    )
    grid_popups.add_to(m)
    # heat layer
    values = legend_values(cells["value"].to_numpy())
    breaks = class_breaks(values)
    classes = np.searchsorted(breaks, values, side="left") if len(values) else np.zeros(0, dtype=int)
    colors = class_colors(len(breaks))
    metric_label = {"count": t["count"], "density": t["density"], "sites": t["sites_metric"]}[metric]
    info = {metric_label: cells["value"].to_numpy()} if metric != "count" else {}
    info.update({t["event_count"]: cells["count"].to_numpy(), t["site_count"]: cells["sites"].to_numpy()})
    HexagonLayer(cells["h3"].to_numpy(), classes, colors, info, crs=crs, name=t["heat"].format(res=res),
                 key="hex").add_to(m)

    # micro-grid outlines above the heat layer (drawn only; their popups are the layer below the hexagons)
    OutlineLayer(grid_popups, {"color": "#2b5797", "weight": 1, "opacity": 0.7, "fill": False},
                 name=t["grids"], key="grids").add_to(m)

    district_layer = folium.FeatureGroup(name=t["districts"], show=True)
    folium.GeoJson(_rounded_geojson(districts[["code", "name", "geometry"]]), interactive=False, smooth_factor=0.5,
                   style_function=lambda _: {"color": "#444", "weight": 2.5, "opacity": 0.8, "fill": False},
                   ).add_to(district_layer)
    # district names in a pane of their own above the markers (site clusters would hide them), letting clicks
    # through to what lies below
    folium.map.CustomPane(LABEL_PANE, z_index=625, pointer_events=False).add_to(m)
    for name, point in zip(districts["name"], districts.geometry.representative_point(), strict=True):
        folium.Marker([point.y, point.x], interactive=False, pane=LABEL_PANE,
                      icon=folium.DivIcon(html=f'<div class="cg-label">{html.escape(str(name))}</div>',
                                          icon_size=(120, 20), icon_anchor=(60, 10))).add_to(district_layer)
    district_layer.add_to(m)

    # hotspot clusters
    cluster_items = []
    if len(clusters_c):
        cl = clusters_c[["rank", "events", "n_cells", "geometry"]].copy()
        cl["label"] = [f"{t['rank']} #{r} · {e:,} {t['events']}" for r, e in zip(cl["rank"], cl["events"],
                                                                                   strict=True)]
        cl_layer = folium.GeoJson(
            _rounded_geojson(cl), name=t["clusters"],
            style_function=lambda _: {"color": "#6a00a8", "weight": 3, "dashArray": "6 4", "fill": False},
            tooltip=folium.GeoJsonTooltip(["label"], labels=False),
        )
        cl_layer.add_to(m)
        ExposeLayer(cl_layer, "clusters").add_to(m)
        site_names = store.sql("SELECT site_id, name FROM sites").set_index("site_id")["name"]
        for row, geom in zip(clusters.itertuples(), clusters_c.geometry, strict=True):
            bx0, by0, bx1, by1 = geom.bounds
            sites = [site_names.get(s, str(s)) for s in row.site_ids]
            cluster_items.append({
                "rank": int(row.rank), "events": f"{int(row.events):,}", "n_cells": int(row.n_cells),
                "area": f"{row.area_km2:.2f}",
                "types": [f"{n} {c:,}" for n, c in zip(row.top_type_names, row.top_type_counts, strict=True)],
                "grids": list(row.grid_names), "sites": sites,
                "bounds": [[by0, bx0], [by1, bx1]],
            })

    # sample-frame sites, clustered, coloured by category group
    suffix = "en" if lang == "en" else "zh"
    where, params = "s.active AND s.lng IS NOT NULL", []
    if filters.area is not None:
        where += f" AND s.{LEVEL_COLUMNS[filters.area_level]} = ?"
        params.append(filters.area)
    sites = store.sql(
        f"SELECT s.lng, s.lat, s.name, s.address, s.responsible_unit, c.name_{suffix} AS category, c.group_code, "
        f"c.group_{suffix} AS grp FROM sites s LEFT JOIN site_categories c ON c.code = s.category_code "
        f"WHERE {where} ORDER BY c.group_code, s.site_id", params)
    groups = sites[["group_code", "grp"]].drop_duplicates("group_code").reset_index(drop=True)
    group_index = {g: i for i, g in enumerate(groups["group_code"])}
    group_colors = [GROUP_COLORS.get(g, "#999999") for g in groups["group_code"]]
    lng, lat = from_wgs84(sites["lng"].to_numpy(), sites["lat"].to_numpy(), crs) if len(sites) else ([], [])
    rows = [[round(float(y), 6), round(float(x), 6), group_index[g], n, c, a, u]
            for x, y, g, n, c, a, u in zip(lng, lat, sites["group_code"], sites["name"], sites["category"],
                                           sites["address"].fillna(""), sites["responsible_unit"].fillna(""),
                                           strict=True)]
    cluster = folium.plugins.MarkerCluster(
        name=t["sites"], show=True, options={"maxClusterRadius": 60, "disableClusteringAtZoom": 16,
                                             "chunkedLoading": True, "showCoverageOnHover": False},
        # neutral bubbles: the default green/yellow/orange would read as a second heat scale
        icon_create_function="""function (c) {
            var n = c.getChildCount(), s = n < 10 ? 22 : n < 100 ? 26 : 32;
            return L.divIcon({html: '<div class="cg-bubble" style="width:' + s + 'px;height:' + s + 'px;line-height:'
                              + s + 'px">' + n + '</div>', className: '', iconSize: L.point(s, s)});
        }""")
    cluster.add_to(m)
    CompactMarkers(rows, colors=group_colors, fields=[t["name"], t["category"], t["address"], t["unit"]],
                   key="sites").add_to(cluster)

    folium.LayerControl(position="topright", collapsed=False).add_to(m)

    # side panels: filters, legend, cluster list
    legend = []
    lo = float(values.min()) if len(values) else 0.0
    for i, (b, col) in enumerate(zip(breaks, colors, strict=True)):
        a = lo if i == 0 else float(breaks[i - 1])
        legend.append({"color": col, "label": _fmt(a) if i == 0 and a == b else
                       (f"{_fmt(a)} – {_fmt(b)}" if i == 0 else f"> {_fmt(a)} – {_fmt(b)}")})
    q = {k: v for k, v in (query or {}).items() if v not in (None, "")}
    panel = _TEMPLATES.get_template("map_panel.html").render(
        t=t, lang=lang, q=q, res=res, metric=metric, basemap=basemap, basemaps=BASEMAPS, form_res=FORM_RES,
        options=_form_options(store, lang), legend=legend, metric_label=metric_label,
        groups=[{"name": n, "color": c} for n, c in zip(groups["grp"], group_colors, strict=True)],
        clusters=cluster_items, notes=notes, map_name=m.get_name(),
        summary=t["summary"].format(events=f"{int(cells['count'].sum()):,}", cells=f"{len(cells):,}"),
        empty=not len(cells), heading=m.get_root().title,
        lang_href="?" + urlencode({**q, "lang": "zh" if lang == "en" else "en"}),
        hidden={k: q[k] for k in ("category", "status") if k in q},
    )
    root = m.get_root()
    root.header.add_child(branca.element.Element(
        _TEMPLATES.get_template("map_style.html").render()), name="cg_style")
    root.html.add_child(branca.element.Element(panel), name="cg_panel")
    return m


# ---------------------------------------------------------------------------------------------------------
# Route
# ---------------------------------------------------------------------------------------------------------

@router.get("/map", response_class=HTMLResponse, summary="The hotspot map (HTML page, works offline)")
def map_page(request: Request, store: Store = Depends(get_store), filters: EventFilter = Depends(event_filters),
             res: int = Depends(res_param), lang: str = Depends(lang_param),
             metric: str = Query("count", description="count, density (events per km²) or sites"),
             basemap: str = Query("none", description="none (district outlines, offline), osm, tianditu or amap "
                                                      "(overlays shifted to GCJ-02)"),
             limit: int = Depends(max_cells), settings: dict = Depends(get_settings)) -> HTMLResponse:
    """The planners' map for the same filters as ``/api/heatmap``: H3 heat layer with legend, micro-grids,
    sample-frame sites, hotspot clusters with a side list, layer control and a filter form."""
    m = hotspot_map(store, res=res, filters=filters, metric=metric, lang=lang, basemap=basemap, max_cells=limit,
                    query=dict(request.query_params), settings=settings)
    return HTMLResponse(render_offline(m))
