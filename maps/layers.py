"""Folium layers drawn from compact data in the browser: packed H3 hexagons, circle markers, outlines.

A page of 20,000 hexagons as GeoJSON would weigh tens of megabytes; :class:`HexagonLayer` sends each
hexagon as one reference vertex and int16 offsets, base64-packed (:func:`pack_hexagons`), and builds the
polygons client-side, so such a page stays under 2 MB. Each layer publishes itself as
``window.cgLayers[key]`` for page scripts and browser tests.
"""

from __future__ import annotations

import base64
import json

import branca.element
import folium
import folium.template
import geopandas as gpd
import jinja2
import jinja2.utils
import numpy as np
import pandas as pd
import shapely
from civicgrid.geo.aggregate import cell_polygons
from civicgrid.geo.coords import from_wgs84
from civicgrid.maps._branca import RawHtml as RawHtml  # pages add their own HTML with it


def script_json(obj) -> str:
    """``obj`` as JSON safe to place inside a ``<script>`` (``<``, ``>``, ``&`` and ``'`` escaped)."""
    return str(jinja2.utils.htmlsafe_json_dumps(obj, separators=(",", ":"), ensure_ascii=False))


#: JavaScript that escapes a value for HTML; numbers are kept (tooltips localise them).
_JS_ESCAPE = """
    let cgEsc = v => String(v).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                         '"': "&quot;", "'": "&#39;"})[c]);
    let handleObject = feature => {
        if (feature === null || feature === undefined) {
            return '';
        } else if (typeof(feature) == 'object') {
            return cgEsc(JSON.stringify(feature));
        } else if (typeof(feature) == 'string') {
            return cgEsc(feature);
        } else {
            return feature;
        }
    }"""


def _escaping_template(bind: str, options: str) -> folium.template.Template:
    """folium's GeoJSON detail template (``bindTooltip``/``bindPopup``) with the values escaped."""
    base = folium.features.GeoJsonDetail.base_template
    detail = base[:base.index("let handleObject")] + _JS_ESCAPE + "\n    " + base[base.index("let fields"):]
    return folium.template.Template(
        "{% macro script(this, kwargs) %}{{ this._parent.get_name() }}." + bind + "(" + detail
        + ",{{ this." + options + " | tojavascript }});{% endmacro %}")


class SafeGeoJsonTooltip(folium.GeoJsonTooltip):
    """:class:`folium.GeoJsonTooltip` that escapes the features' values (folium inserts them as HTML)."""

    _template = _escaping_template("bindTooltip", "tooltip_options")


class SafeGeoJsonPopup(folium.GeoJsonPopup):
    """:class:`folium.GeoJsonPopup` that escapes the features' values (folium inserts them as HTML)."""

    _template = _escaping_template("bindPopup", "popup_options")


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
    under
        A GeoJSON layer drawn below the hexagons (the micro-grids), whose shape under a clicked hexagon's point
        adds its ``under_fields`` (``[(property, label), …]``) to the popup under the heading ``under_title``:
        the hexagons cover that layer, so its own popup could not be reached.
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
            {% if this.under %}
            // the shape of the layer below (micro-grids) holding a point: ray casting over its rings
            function inRing(x, y, ring) {
                var inside = false;
                for (var a = 0, b = ring.length - 1; a < ring.length; b = a++) {
                    var xa = ring[a][0], ya = ring[a][1], xb = ring[b][0], yb = ring[b][1];
                    if ((ya > y) !== (yb > y) && x < (xb - xa) * (y - ya) / (yb - ya) + xa) { inside = !inside; }
                }
                return inside;
            }
            function underAt(ll) {
                var found = null;
                {{ this.under.get_name() }}.eachLayer(function (l) {
                    if (found || !l.feature || !l.getBounds().contains(ll)) { return; }
                    var g = l.feature.geometry, polys = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
                    polys.forEach(function (rings) {
                        if (!found && inRing(ll.lng, ll.lat, rings[0]) &&
                            !rings.slice(1).some(function (h) { return inRing(ll.lng, ll.lat, h); })) { found = l; }
                    });
                });
                return found;
            }
            function esc(v) {
                return String(v).replace(/[&<>"]/g, function (c) {
                    return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]; });
            }
            {% endif %}
            group.on("click", function (e) {
                var i = e.layer.options.cell, rows = d.info.map(function (c, j) {
                    var v = info[j][i];
                    return "<tr><th>" + c[0] + "</th><td>" + (Math.round(v) === v ? v : v.toFixed(1)) + "</td></tr>";
                });
                var html = "<table class='cg-pop'>" + rows.join("") + "</table>";
                {% if this.under %}
                var u = underAt(e.latlng);
                if (u) {
                    var p = u.feature.properties, under = {{ this.under_fields|tojson }}.map(function (f) {
                        var v = p[f[0]];
                        return v === null || v === undefined || v === "" ? "" :
                            "<tr><th>" + esc(f[1]) + "</th><td>" + esc(v) + "</td></tr>";
                    });
                    html += "<div class='cg-pop-sub'>" + esc({{ this.under_title|tojson }}) + "</div>" +
                            "<table class='cg-pop cg-pop-under'>" + under.join("") + "</table>";
                }
                {% endif %}
                L.popup().setLatLng(e.latlng).setContent(html).openOn({{ this._parent.get_name() }});
            });
            return group;
        })();
        window.cgLayers = window.cgLayers || {};
        window.cgLayers[{{ this.key|tojson }}] = {{ this.get_name() }};
        {% endmacro %}
    """)

    def __init__(self, cells: np.ndarray, classes: np.ndarray, colors, info: dict[str, np.ndarray], *,
                 crs: str = "wgs84", name: str | None = None, show: bool = True, key: str = "hex",
                 under=None, under_fields: list[tuple[str, str]] = (), under_title: str = ""):
        super().__init__(name=name, overlay=True, control=True, show=show)
        self._name = "HexagonLayer"
        self.under, self.under_fields, self.under_title = under, [list(f) for f in under_fields], under_title
        packed = pack_hexagons(cells, crs=crs)
        packed["cls"] = _b64(classes, "u1")
        packed["colors"] = list(colors)
        packed["info"] = [[label, _b64(values, "<f4")] for label, values in info.items()]
        self.data = script_json(packed)
        self.key = key


class CompactMarkers(branca.element.MacroElement):
    """Circle markers added client-side to a parent layer (e.g. a MarkerCluster) from compact rows.

    ``rows`` are ``[lat, lng, colour index, popup field…]``; ``fields`` label the popup fields.
    """

    _template = jinja2.Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var d = {{ this.data }}, layer = {{ this._parent.get_name() }}, ms = [];
            function esc(v) {
                return String(v).replace(/[&<>"']/g, function (c) {
                    return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]; });
            }
            d.rows.forEach(function (r) {
                var m = L.circleMarker([r[0], r[1]], {radius: 6, weight: 1.5, color: "#fff", fillOpacity: 0.95,
                                                     fillColor: d.colors[r[2]]});
                var html = d.fields.map(function (f, j) {
                    return r[3 + j] ? "<tr><th>" + esc(f) + "</th><td>" + esc(r[3 + j]) + "</td></tr>" : "";
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
        self.data = script_json({"rows": rows, "colors": colors, "fields": fields})
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


class TileNotice(branca.element.MacroElement):
    """Say so on the page (the element ``#target``, unhidden) when a tile layer's tiles cannot be loaded: an
    offline intranet would otherwise show a grey map with no word why. Shown after ``after`` failed tiles with
    none loaded; hidden again once a tile loads."""

    _template = jinja2.Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var failed = 0, loaded = 0, layer = {{ this.layer.get_name() }};
            function show() {
                var el = document.getElementById({{ this.target|tojson }});
                if (el) { el.hidden = !(failed >= {{ this.after }} && loaded === 0); }
            }
            layer.on("tileerror", function () { failed++; show(); });
            layer.on("tileload", function () { loaded++; show(); });
        })();
        {% endmacro %}
    """)

    def __init__(self, layer, target: str, *, after: int = 2):
        super().__init__()
        self._name = "TileNotice"
        self.layer, self.target, self.after = layer, target, int(after)


class PanelFit(branca.element.MacroElement):
    """Fit the map to ``bounds`` beside the side panel ``#panel``: on a wide screen the panel is on the left
    (``desktop`` padding on the left); on a narrow one (a phone, ``media``) it lies along the bottom, and the
    bounds are fitted into the part of the map above it. Refitted when the window changes size, until the
    reader moves the map. Not animated (an animated fit ending late would undo the phone's fit)."""

    _template = jinja2.Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var map = {{ this._parent.get_name() }}, touched = false;
            function fit() {
                if (touched) { return; }
                var side = document.getElementById({{ this.panel|tojson }});
                var phone = side && window.matchMedia({{ this.media|tojson }}).matches;
                map.invalidateSize({animate: false});
                map.fitBounds({{ this.bounds|tojson }}, phone
                    ? {animate: false, paddingTopLeft: [10, 10], paddingBottomRight: [10, side.offsetHeight + 10]}
                    : {animate: false, paddingTopLeft: [{{ this.desktop }}, 10], paddingBottomRight: [10, 10]});
            }
            ["mousedown", "touchstart", "wheel"].forEach(function (ev) {
                map.getContainer().addEventListener(ev, function () { touched = true; }, {passive: true});
            });
            window.addEventListener("resize", fit);  // a phone's window can settle after the scripts ran
            fit();
        })();
        {% endmacro %}
    """)

    def __init__(self, bounds, *, panel: str = "cg-side", desktop: int = 310, media: str = "(max-width: 600px)"):
        super().__init__()
        self._name = "PanelFit"
        self.bounds, self.panel, self.desktop, self.media = bounds, panel, int(desktop), media


class ZoomGate(branca.element.MacroElement):
    """Show a layer only from zoom ``min_zoom`` in (e.g. site clusters, which would cover the heat layer at city
    zoom), until the reader switches it on or off in the layer control: from then on it stays as they chose."""

    _template = jinja2.Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var map = {{ this._parent.get_name() }}, layer = {{ this.layer.get_name() }}, chosen = false;
            function gate() {
                if (chosen) { return; }
                var want = map.getZoom() >= {{ this.min_zoom }};
                if (want !== map.hasLayer(layer)) { want ? map.addLayer(layer) : map.removeLayer(layer); }
            }
            map.on("overlayadd overlayremove", function (e) { if (e.layer === layer) { chosen = true; } });
            map.on("zoomend", gate);
            map.whenReady(gate);
        })();
        {% endmacro %}
    """)

    def __init__(self, layer, min_zoom: int):
        super().__init__()
        self._name = "ZoomGate"
        self.layer, self.min_zoom = layer, int(min_zoom)


class LabelZoom(branca.element.MacroElement):
    """Show each area label (``<div class="cg-label" data-minzoom="Z">``) only from its zoom ``Z`` in, so that
    labels of small areas appear once their area is wide enough on screen to hold them (see
    :func:`label_min_zooms`) instead of piling over each other at city zoom."""

    _template = jinja2.Template("""
        {% macro script(this, kwargs) %}
        (function () {
            var map = {{ this._parent.get_name() }};
            function gate() {
                var z = map.getZoom();
                map.getContainer().querySelectorAll(".cg-label[data-minzoom]").forEach(function (el) {
                    el.style.visibility = z >= Number(el.dataset.minzoom) ? "" : "hidden";
                });
            }
            map.on("zoomend layeradd", gate);
            map.whenReady(gate);
        })();
        {% endmacro %}
    """)

    def __init__(self) -> None:
        super().__init__()
        self._name = "LabelZoom"


def label_min_zooms(geoms: np.ndarray, names: pd.Series, *, max_zoom: int = 18) -> np.ndarray:
    """The web-map zoom from which each area (lon/lat polygons) is wider on screen than its label ``names``.

    A Web Mercator map is ``256 * 2**zoom`` pixels around the world, so a shape ``w`` degrees of longitude wide
    spans ``w * 256 * 2**zoom / 360`` pixels at any latitude. A label's width is estimated from its characters
    (14 px a CJK character, 8 px others, at the labels' 13 px bold font). Areas with no extent get ``max_zoom``.
    """
    widths = np.array([sum(14 if ord(ch) >= 0x2E80 else 8 for ch in str(n)) + 8 for n in names], dtype=float)
    if not len(widths):
        return np.zeros(0, dtype=int)
    bounds = shapely.bounds(geoms)
    return zoom_for_width(widths, np.nan_to_num(bounds[:, 2] - bounds[:, 0], nan=0.0), max_zoom=max_zoom)


def zoom_for_width(pixels, degrees, *, max_zoom: int = 18) -> np.ndarray:
    """The web-map zoom from which a shape ``degrees`` of longitude wide spans ``pixels`` on screen: a Web Mercator
    map is ``256 * 2**zoom`` pixels around the world, so ``degrees * 256 * 2**zoom / 360`` pixels at any latitude.
    No extent gives ``max_zoom``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.ceil(np.log2(np.asarray(pixels, dtype=float) * 360.0 / (256.0 * np.asarray(degrees, dtype=float))))
    return np.clip(np.nan_to_num(z, nan=max_zoom, posinf=max_zoom), 0, max_zoom).astype(int)


def rounded_geojson(gdf: gpd.GeoDataFrame, *, digits: int = 6, tolerance: float = 1.5e-5) -> dict:
    """GeoJSON of a frame (lon/lat) with coordinates rounded (1e-6° ≈ 0.1 m) and lines and polygons simplified
    within ``tolerance`` degrees (1.5e-5° ≈ 1.7 m, less than a screen pixel up to zoom 16), to keep pages small:
    a city's surveyed boundaries carry a vertex every few metres (New York's 263 ZIP areas: 140,000 vertices,
    3.5 MB a layer unsimplified, 0.7 MB simplified). Topology of each shape is preserved; 0 keeps every vertex."""
    out = gdf.copy()
    geoms = out.geometry.to_numpy()
    if tolerance > 0:
        geoms = shapely.simplify(geoms, tolerance, preserve_topology=True)
    out.geometry = shapely.transform(geoms, lambda c: np.round(c, digits))
    return json.loads(out.to_json(drop_id=True, ensure_ascii=False))


__all__ = ["CompactMarkers", "ExposeLayer", "HexagonLayer", "LabelZoom", "OutlineLayer", "PanelFit", "TileNotice",
           "ZoomGate", "label_min_zooms", "pack_hexagons", "rounded_geojson", "zoom_for_width"]
