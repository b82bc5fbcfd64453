"""The planners' hotspot map: H3 heat layer, micro-grids, sample-frame sites, hotspot clusters, a filter panel.

:func:`hotspot_map` builds it as a folium map without a server (for notebooks and the ``/map`` page);
render it with :func:`civicgrid.maps.offline.render_offline` for a page that needs no internet. The heat
layer is sent compactly (:class:`civicgrid.maps.layers.HexagonLayer`), so 20,000 cells stay under 2 MB of
HTML.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Mapping
from urllib.parse import urlencode

import folium
import folium.plugins
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from civicgrid.geo.aggregate import METRICS, EventFilter, area_stats, cell_polygons, heatmap
from civicgrid.geo.coords import from_wgs84, to_crs_frame
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.hotspots import hotspot_clusters
from civicgrid.geo.levels import AREA_LEVELS, LEVEL_COLUMNS
from civicgrid.geo.settings import PUBLIC_LAYERS
from civicgrid.geo.store import Store
from civicgrid.geo.texts import LANGS, check_lang, city_name, labels, local_name, name_column, text
from civicgrid.maps.basemaps import BASEMAPS, basemap_crs, check_basemap, tianditu_key, tile_layers
from civicgrid.maps.layers import (
    CompactMarkers,
    ExposeLayer,
    HexagonLayer,
    LabelZoom,
    OutlineLayer,
    PanelFit,
    RawHtml,
    SafeGeoJsonPopup,
    SafeGeoJsonTooltip,
    TileNotice,
    ZoomGate,
    label_min_zooms,
    rounded_geojson,
    zoom_for_width,
)
from civicgrid.maps.legend import class_breaks, class_colors, legend_entries, legend_values
from civicgrid.maps.pages import render_template

#: Colour per site-category group (``site_categories.group_code``); other groups get grey.
GROUP_COLORS = {"civic": "#1f77b4", "commerce": "#ff7f0e", "culture": "#9467bd", "minors": "#e377c2",
                "neighbourhood": "#2ca02c", "public_space": "#17becf", "streets": "#8c564b", "transport": "#7f7f7f"}
#: Resolutions offered by the page's form (the API accepts 5..12).
FORM_RES = (6, 7, 8, 9, 10, 11)

#: Zoom from which the sample-frame sites are drawn unless the reader switches them on (at city zoom their
#: cluster bubbles would cover the heat layer).
SITES_MIN_ZOOM = 14

#: More micro-grids than this are outlined only from the zoom at which a typical one is
#: :data:`GRID_OUTLINE_MIN_PX` pixels wide (:func:`grid_outline_min_zoom`): Shenzhen's 9,005 grids of 500 m drew a
#: mesh over the whole city at city zoom, hiding the heat layer. Fewer (the demo's 460) are always outlined.
GRID_OUTLINE_GATE = 1000
GRID_OUTLINE_MIN_PX = 12

#: Leaflet pane of the district names: above the markers (600), below tooltips (650) and popups (700).
LABEL_PANE = "cg-labels"

def hotspot_map(store: Store, *, res: int = 9, filters: EventFilter | None = None, metric: str = "count",
                lang: str = "zh", basemap: str = "none", max_cells: int | None = None,
                query: Mapping | None = None, settings: Mapping | None = None,
                layers: Collection[str] | None = None) -> folium.Map:
    """The planners' hotspot map as a folium map (render it with :func:`civicgrid.maps.offline.render_offline`).

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
    layers
        The reference layers the reader may see (names of :data:`geo.settings.PUBLIC_LAYERS`; default all):
        without ``grids`` no micro-grids are drawn, without ``grid-leaders`` their popups leave out the leaders'
        names and phones, without ``sites`` no sample-frame sites are drawn or listed.

    Returns
    -------
    folium.Map
        Layers: heat hexagons with a legend (a click on one shows its numbers and the micro-grid's card
        under it), micro-grid outlines with popups, sample-frame sites
        clustered and coloured by category group, hotspot clusters outlined and listed in a side panel,
        district outlines; a layer control and the filter form.
    """
    check_basemap(basemap)
    if metric not in METRICS:
        msg = f"metric must be one of {', '.join(METRICS)}, got {metric!r}"
        raise InvalidParameterError(msg)
    lang = check_lang(lang)
    t = labels("map", lang)
    crs = basemap_crs(basemap)
    layers = frozenset(PUBLIC_LAYERS if layers is None else layers)
    filters = (filters or EventFilter()).validate(store)
    cells = heatmap(store, res=res, filters=filters, metric=metric, max_cells=max_cells)
    clusters = hotspot_clusters(store, res=res, filters=filters, lang=lang, max_cells=max_cells)

    city = city_name(store, lang)
    districts, outline_level, grids = _area_frames(store, filters=filters, lang=lang, crs=crs)
    title = t["title"].format(city=city).strip()  # a city without a name (civicgrid info --name): no space first
    # a city with its sample frame and no events yet (Toronto's restaurants and inspections): its sites are the map
    sites_only = "sites" in layers and not len(cells) and store.sql("SELECT 1 FROM events LIMIT 1").empty
    m = _base_map(grids if len(grids) else districts, cells=cells, crs=crs, title=title[:1].upper() + title[1:],
                  sites=_sites_box(store, crs) if not len(grids) and not len(districts) else None)
    notes = _add_background(m, districts, basemap=basemap, settings=settings, t=t)
    grid_popups, grid_fields = None, []
    if "grids" in layers and len(grids):  # a city may have areas and no micro-grids yet
        grid_popups, grid_fields = _add_grid_popups(m, store, grids, filters=filters, t=t,
                                                    leaders="grid-leaders" in layers)
    values, breaks, colors, metric_label = _add_heat(m, cells, res=res, metric=metric, crs=crs, t=t,
                                                     under=grid_popups, under_fields=grid_fields)
    if grid_popups is not None:
        # micro-grid outlines above the heat layer (drawn only; their popups are the layer below the hexagons)
        outlines = OutlineLayer(grid_popups, {"color": "#2b5797", "weight": 1, "opacity": 0.7, "fill": False},
                                name=t["grids"], key="grids").add_to(m)
        if len(grids) > GRID_OUTLINE_GATE:
            ZoomGate(outlines, grid_outline_min_zoom(grids)).add_to(m)
    _add_districts(m, districts, name=t[_OUTLINE_NAMES[outline_level]], t=t)
    cluster_items = _add_clusters(m, store, clusters, crs=crs, t=t, sites="sites" in layers)
    groups = _add_sites(m, store, filters=filters, lang=lang, crs=crs, t=t, shown=sites_only) \
        if "sites" in layers else []
    folium.LayerControl(position="topright", collapsed=False).add_to(m)

    # side panels: filters, legend, cluster list
    q = {k: v for k, v in (query or {}).items() if v not in (None, "")}
    panel = render_template(
        "map_panel.html",
        t=t, lang=lang, q=q, res=res, metric=metric, basemap=basemap, basemaps=BASEMAPS, form_res=FORM_RES,
        options=_form_options(store, lang), form=_form_state(store, filters, lang),
        legend=legend_entries(values, breaks, colors), metric_label=metric_label,
        groups=groups, clusters=cluster_items, has_grids=grid_popups is not None, notes=notes, map_name=m.get_name(),
        tiles_unreachable=t["tiles_unreachable"].format(basemap=t[f"bm_{basemap}"]) if basemap != "none" else "",
        summary=t["summary"].format(events=f"{int(cells['count'].sum()):,}", cells=f"{len(cells):,}"),
        empty=not len(cells), sites_only=sites_only, heading=m.get_root().title, list_sep=text("common.list_sep", lang),
        lang_href="?" + urlencode({**q, "lang": next(x for x in LANGS if x != lang)}),
    )
    root = m.get_root()
    root.header.add_child(RawHtml(render_template("map_style.html")), name="cg_style")
    root.html.add_child(RawHtml(panel), name="cg_panel")
    return m


def grid_outline_min_zoom(grids: gpd.GeoDataFrame) -> int:
    """The web-map zoom from which the median micro-grid of ``grids`` (lon/lat) is :data:`GRID_OUTLINE_MIN_PX`
    pixels wide (:func:`~civicgrid.maps.layers.zoom_for_width`)."""
    bounds = shapely.bounds(grids.geometry.to_numpy())
    return int(zoom_for_width(GRID_OUTLINE_MIN_PX, np.nanmedian(bounds[:, 2] - bounds[:, 0])))


# ---------------------------------------------------------------------------------------------------------
# The parts of the map, in drawing order
# ---------------------------------------------------------------------------------------------------------

def _frame(store: Store, sql: str, params=None) -> gpd.GeoDataFrame:
    df = store.sql(sql, params or [])
    geoms = shapely.from_wkb(df["wkb"].map(bytes).to_numpy()) if len(df) else np.array([], dtype=object)
    return gpd.GeoDataFrame(df.drop(columns=["wkb"]), geometry=geoms, crs="EPSG:4326")


#: The map's outline layer's name (a key of the ``map`` texts), by the level of its areas.
_OUTLINE_NAMES = {"district": "districts", "street": "streets", "community": "communities"}


def _area_frames(store: Store, *, filters: EventFilter, lang: str,
                 crs: str) -> tuple[gpd.GeoDataFrame, str, gpd.GeoDataFrame]:
    """The outlines of the coarsest level of areas the store has (the districts, else the streets, else the
    communities: a city may load only some levels), names in ``lang``, and that level; the micro-grids of the
    filtered area; in ``crs``."""
    levels = list(AREA_LEVELS)  # coarsest first
    districts = _frame(store, f"SELECT code, {local_name(lang)} AS name, level, ST_AsWKB(geom) AS wkb FROM areas "
                              "WHERE level = (SELECT level FROM areas WHERE list_contains($levels, level) "
                              "ORDER BY list_position($levels, level) LIMIT 1) ORDER BY code", {"levels": levels})
    level = str(districts["level"].iloc[0]) if len(districts) else "district"
    grids = _frame(store, "SELECT code, name, leader_name, leader_phone, households, ST_AsWKB(geom) AS wkb "
                          "FROM grids ORDER BY code")
    if filters.area is not None:
        col = "code" if filters.area_level == "grid" else LEVEL_COLUMNS[filters.area_level]
        keep = store.sql(f"SELECT code FROM grids WHERE {col} = ?", [filters.area])["code"]
        grids = grids[grids["code"].isin(set(keep))]
    return to_crs_frame(districts, crs), level, to_crs_frame(grids, crs)


#: Where the map opens when the store has neither areas nor events (the demo city's centre).
_NOWHERE = (112.9, 28.2, 113.0, 28.3)


def _base_map(focus: gpd.GeoDataFrame, *, cells: pd.DataFrame, crs: str, title: str,
              sites: tuple[float, float, float, float] | None = None) -> folium.Map:
    """An empty map (no tiles) fitted to ``focus`` (in ``crs``), else to the heat layer's ``cells`` (a store
    with events and no areas yet), else to the box of the ``sites`` (one with its sample frame alone), leaving
    room for the side panel on the left."""
    if len(focus):
        x0, y0, x1, y1 = focus.total_bounds
    elif len(cells):
        hexagons = gpd.GeoDataFrame(geometry=cell_polygons(cells["h3"].to_numpy()), crs="EPSG:4326")
        x0, y0, x1, y1 = to_crs_frame(hexagons, crs).total_bounds
    elif sites is not None:
        x0, y0, x1, y1 = sites
    else:
        x0, y0, x1, y1 = _NOWHERE
    m = folium.Map(location=[(y0 + y1) / 2, (x0 + x1) / 2], zoom_start=12, tiles=None, prefer_canvas=True,
                   control_scale=True, zoom_control=True, maxZoom=19)
    m.get_root().title = title
    # beside the panel: on the left of a desktop, along the bottom of a phone
    PanelFit([[y0, x0], [y1, x1]], desktop=310).add_to(m)
    return m


def _add_background(m: folium.Map, districts: gpd.GeoDataFrame, *, basemap: str, settings: Mapping | None,
                    t: dict) -> list[str]:
    """Tiles of ``basemap``, or a light fill of the districts without tiles; the notes for the panel."""
    notes = []
    if basemap != "none":
        key = tianditu_key(settings)
        if basemap == "tianditu" and not key:
            notes.append(t["tk_missing"])
        for i, (url, subs, attr) in enumerate(tile_layers(basemap, key=key)):
            tiles = folium.TileLayer(tiles=url, attr=attr, subdomains=subs, max_zoom=18,
                                     name=t[f"bm_{basemap}"], overlay=i > 0, control=False)
            tiles.add_to(m)
            if i == 0:
                TileNotice(tiles, "cg-tiles").add_to(m)  # unreachable tiles (offline): a notice, not grey silence
    # districts: a light fill as the base without tiles; outlines and names drawn above the heat layer
    if basemap == "none":
        folium.GeoJson(rounded_geojson(districts[["code", "geometry"]]), name="base", control=False,
                       interactive=False, smooth_factor=0.5,
                       style_function=lambda _: {"stroke": False, "fillColor": "#ecebe6", "fillOpacity": 1},
                       ).add_to(m)
    return notes


def _add_grid_popups(m: folium.Map, store: Store, grids: gpd.GeoDataFrame, *, filters: EventFilter,
                     t: dict, leaders: bool = True) -> tuple[folium.GeoJson, list[tuple[str, str]]]:
    """The micro-grids' popups (with the filtered events per grid): an invisible fill drawn *below* the heat
    hexagons, so a click where there is no hexagon opens the grid's popup (Leaflet picks the topmost shape) and
    a click on a hexagon shows the grid's card inside the hexagon's popup (:class:`maps.layers.HexagonLayer`
    ``under``). Without ``leaders`` the grid leaders' names and phones are left out of the page.
    Returns the layer and its popup fields ``[(property, label), …]``."""
    per_grid = area_stats(store, level="grid", filters=filters).set_index("code")["count"]
    grids["events"] = grids["code"].map(per_grid).fillna(0).astype("int64")
    fields = [("name", t["name"]), ("code", t["code"]), ("leader_name", t["leader"]), ("leader_phone", t["phone"]),
              ("households", t["households"]), ("events", t["grid_events"])]
    if not leaders:
        fields = [f for f in fields if f[0] not in ("leader_name", "leader_phone")]
    names = [f for f, _ in fields]
    grid_popups = folium.GeoJson(
        rounded_geojson(grids[[*names, "geometry"]]), name="grid-popups", control=False,
        style_function=lambda _: {"stroke": False, "fill": True, "fillOpacity": 0},
        popup=SafeGeoJsonPopup(names, aliases=[label for _, label in fields]),
        smooth_factor=0.5,
    )
    grid_popups.add_to(m)
    return grid_popups, fields


def _add_heat(m: folium.Map, cells: pd.DataFrame, *, res: int, metric: str, crs: str, t: dict,
              under: folium.GeoJson | None = None, under_fields: list[tuple[str, str]] = (),
              ) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """The heat hexagons coloured by class of the metric; the classed values, breaks, colours and metric label."""
    values = legend_values(cells["value"].to_numpy())
    breaks = class_breaks(values)
    classes = np.searchsorted(breaks, values, side="left") if len(values) else np.zeros(0, dtype=int)
    colors = class_colors(len(breaks))
    metric_label = {"count": t["count"], "density": t["density"], "sites": t["sites_metric"]}[metric]
    info = {metric_label: cells["value"].to_numpy()} if metric != "count" else {}
    info.update({t["event_count"]: cells["count"].to_numpy(), t["site_count"]: cells["sites"].to_numpy()})
    HexagonLayer(cells["h3"].to_numpy(), classes, colors, info, crs=crs, name=t["heat"].format(res=res),
                 key="hex", under=under, under_fields=under_fields, under_title=t["grids"]).add_to(m)
    return values, breaks, colors, metric_label


def _add_districts(m: folium.Map, districts: gpd.GeoDataFrame, *, name: str, t: dict) -> None:
    """Area outlines (the layer ``name``), and their names in a pane of their own above the markers (site
    clusters would hide them), letting clicks through to what lies below; no layer for a city without areas."""
    if not len(districts):
        return
    district_layer = folium.FeatureGroup(name=name, show=True)
    folium.GeoJson(rounded_geojson(districts[["code", "name", "geometry"]]), interactive=False, smooth_factor=0.5,
                   style_function=lambda _: {"color": "#444", "weight": 2.5, "opacity": 0.8, "fill": False},
                   ).add_to(district_layer)
    folium.map.CustomPane(LABEL_PANE, z_index=625, pointer_events=False).add_to(m)
    min_zooms = label_min_zooms(districts.geometry.to_numpy(), districts["name"].astype(str))
    for name, point, z in zip(districts["name"], districts.geometry.representative_point(), min_zooms,
                              strict=True):
        folium.Marker([point.y, point.x], interactive=False, pane=LABEL_PANE,
                      icon=folium.DivIcon(html=f'<div class="cg-label" data-minzoom="{z}">'
                                               f'{html.escape(str(name))}</div>',
                                          icon_size=(120, 20), icon_anchor=(60, 10))).add_to(district_layer)
    LabelZoom().add_to(m)
    district_layer.add_to(m)


def _add_clusters(m: folium.Map, store: Store, clusters: gpd.GeoDataFrame, *, crs: str, t: dict,
                  sites: bool = True) -> list[dict]:
    """Hotspot clusters outlined (in ``crs``) with a tooltip; the panel's list of them."""
    cluster_items = []
    if not len(clusters):
        return cluster_items
    clusters_c = to_crs_frame(clusters, crs)
    cl = clusters_c[["rank", "events", "n_cells", "geometry"]].copy()
    cl["label"] = [f"{t['rank']} #{r} · {e:,} {t['events']}" for r, e in zip(cl["rank"], cl["events"],
                                                                               strict=True)]
    cl_layer = folium.GeoJson(
        rounded_geojson(cl), name=t["clusters"],
        style_function=lambda _: {"color": "#6a00a8", "weight": 3, "dashArray": "6 4", "fill": False},
        tooltip=SafeGeoJsonTooltip(["label"], labels=False),
    )
    cl_layer.add_to(m)
    ExposeLayer(cl_layer, "clusters").add_to(m)
    site_names = store.sql("SELECT site_id, name FROM sites").set_index("site_id")["name"]
    for row, geom in zip(clusters.itertuples(), clusters_c.geometry, strict=True):
        bx0, by0, bx1, by1 = geom.bounds
        names = [site_names.get(s, str(s)) for s in row.site_ids] if sites else []
        cluster_items.append({
            "rank": int(row.rank), "events": f"{int(row.events):,}", "n_cells": int(row.n_cells),
            "area": f"{row.area_km2:.2f}",
            "types": [f"{n} {c:,}" for n, c in zip(row.top_type_names, row.top_type_counts, strict=True)],
            "grids": list(row.grid_names), "sites": names,
            "bounds": [[by0, bx0], [by1, bx1]],
        })
    return cluster_items


#: Cluster bubbles of the site markers: neutral, as the default green/yellow/orange would read as a second
#: heat scale.
_BUBBLE_ICON = """function (c) {
            var n = c.getChildCount(), s = n < 10 ? 18 : n < 100 ? 22 : 26;
            return L.divIcon({html: '<div class="cg-bubble" style="width:' + s + 'px;height:' + s + 'px;line-height:'
                              + s + 'px">' + n + '</div>', className: '', iconSize: L.point(s, s)});
        }"""


def _sites_box(store: Store, crs: str) -> tuple[float, float, float, float] | None:
    """The box (in ``crs``) of the active sites with a location, or None when there is none."""
    box = store.sql("SELECT min(lng) AS x0, min(lat) AS y0, max(lng) AS x1, max(lat) AS y1 FROM sites "
                    "WHERE active AND lng IS NOT NULL AND lat IS NOT NULL").iloc[0]
    if pd.isna(box["x0"]):
        return None
    xs, ys = from_wgs84(np.array([box["x0"], box["x1"]]), np.array([box["y0"], box["y1"]]), crs)
    return float(xs[0]), float(ys[0]), float(xs[1]), float(ys[1])


def _add_sites(m: folium.Map, store: Store, *, filters: EventFilter, lang: str, crs: str, t: dict,
               shown: bool = False) -> list[dict]:
    """Sample-frame sites of the filtered area, clustered, coloured by category group; the panel's groups. The
    layer is drawn from :data:`SITES_MIN_ZOOM` on, or at once when ``shown`` (a map with no events: nothing else
    to see). The city's own categories (no group) are one group of their own."""
    where, params = "s.active AND s.lng IS NOT NULL", []
    if filters.area is not None:
        where += f" AND s.{LEVEL_COLUMNS[filters.area_level]} = ?"
        params.append(filters.area)
    sites = store.sql(
        f"SELECT s.lng, s.lat, s.name, s.address, s.responsible_unit, c.{name_column(lang)} AS category, "
        f"c.group_code, c.{name_column(lang, 'group')} AS grp "
        f"FROM sites s LEFT JOIN site_categories c ON c.code = s.category_code "
        f"WHERE {where} ORDER BY c.group_code, s.site_id", params)
    sites["group_code"] = sites["group_code"].fillna("")
    sites["grp"] = sites["grp"].fillna(text("map.own_categories", lang))  # Toronto's labels read "nan"
    groups = sites[["group_code", "grp"]].drop_duplicates("group_code").reset_index(drop=True)
    group_index = {g: i for i, g in enumerate(groups["group_code"])}
    group_colors = [GROUP_COLORS.get(g, "#999999") for g in groups["group_code"]]
    lng, lat = from_wgs84(sites["lng"].to_numpy(), sites["lat"].to_numpy(), crs) if len(sites) else ([], [])
    rows = [[round(float(y), 6), round(float(x), 6), group_index[g], n, c, a, u]
            for x, y, g, n, c, a, u in zip(lng, lat, sites["group_code"], sites["name"], sites["category"],
                                           sites["address"].fillna(""), sites["responsible_unit"].fillna(""),
                                           strict=True)]
    cluster = folium.plugins.MarkerCluster(
        name=t["sites"], show=shown, options={"maxClusterRadius": 60, "disableClusteringAtZoom": 16,
                                             "chunkedLoading": True, "showCoverageOnHover": False},
        icon_create_function=_BUBBLE_ICON)
    cluster.add_to(m)
    CompactMarkers(rows, colors=group_colors, fields=[t["name"], t["category"], t["address"], t["unit"]],
                   key="sites").add_to(cluster)
    if not shown:
        ZoomGate(cluster, SITES_MIN_ZOOM).add_to(m)
    return [{"name": n, "color": c} for n, c in zip(groups["grp"], group_colors, strict=True)]


#: The city's own labels without a type listed in the map's type filter (the most frequent first).
FORM_LABELS = 200


def _form_options(store: Store, lang: str) -> dict:
    """Choices of the filter form: problem types by 大类, the city's own labels without a type (the most frequent
    :data:`FORM_LABELS`), and areas by level."""
    pt = store.sql(f"SELECT code, {name_column(lang)} AS name, major_code, {name_column(lang, 'major')} AS major "
                   "FROM problem_types ORDER BY code")
    # a city's own types may lack a 大类: they are listed under their code alone, not dropped from the form
    majors = [{"code": code, "name": part["major"].iloc[0] if pd.notna(part["major"].iloc[0]) else "",
               "types": [{"code": r.code, "name": r.name} for r in part.itertuples()]}
              for code, part in pt.groupby(pt["major_code"].fillna(""), sort=True)]
    labels = store.sql("SELECT source_type AS label, count(*) AS n FROM events WHERE problem_type IS NULL AND "
                       f"source_type IS NOT NULL GROUP BY 1 ORDER BY n DESC, label LIMIT {FORM_LABELS}")
    if len(labels):
        majors.append({"code": "", "name": text("map.own_labels", lang), "own": True,
                       "types": [{"code": v, "name": v} for v in labels["label"]]})
    areas = store.sql(f"SELECT code, {local_name(lang)} AS name, level, parent_code FROM areas ORDER BY code")
    levels = [{"level": lv, "areas": [{"code": r.code, "name": r.name} for r in areas[areas.level == lv].itertuples()]}
              for lv in AREA_LEVELS]
    sc = store.sql(f"SELECT code, {name_column(lang)} AS name, group_code, {name_column(lang, 'group')} AS grp "
                   "FROM site_categories ORDER BY group_code, code")
    # the 38 categories by group, then the city's own (no group: a file's labels kept as categories)
    categories = [{"name": part["grp"].iloc[0] if pd.notna(part["grp"].iloc[0]) else
                   (code or text("map.own_categories", lang)),
                   "cats": [{"code": r.code, "name": r.name} for r in part.itertuples()]}
                  for code, part in sorted(sc.groupby(sc["group_code"].fillna(""), sort=True),
                                           key=lambda kv: kv[0] == "")]
    return {"majors": majors, "levels": levels, "area_codes": set(areas["code"]), "categories": categories}


def _form_state(store: Store, filters: EventFilter, lang: str) -> dict:
    """What the filter form shows for ``filters`` (validated), so that its 应用 button gives the same filters back.

    Problem types keep the level they were given at: a 大类 (code or name) selects the 大类's own option, a
    小类 (code or name) its option; names become codes. The area is a code (a name was resolved by validate).
    Times: a midnight ``start`` is shown as a date, any other as a date-time; an ``end`` at midnight as the last
    day included (a date-only ``end`` includes that day), any other as the exclusive date-time it is."""
    pt = store.sql("SELECT code, name_zh, name_en, major_code, major_zh, major_en FROM problem_types")
    types = []
    for token in filters.types:
        key = token.lower()
        minor = pt[(pt.code == token) | (pt.name_zh == token) | (pt.name_en.str.lower() == key)]
        major = pt[(pt.major_code == token) | (pt.major_zh == token) | (pt.major_en.str.lower() == key)]
        if len(minor) or len(major):
            types.extend(minor["code"] if len(minor) else major["major_code"].iloc[:1])
        elif token in filters.type_labels:  # a city's own label (without a type): its own option
            types.append(token)
    area_label = filters.area or ""
    if filters.area is not None:
        row = store.sql(f"SELECT {local_name(lang)} AS name FROM areas WHERE code = ? "
                        "UNION ALL SELECT name FROM grids WHERE code = ?", [filters.area, filters.area])
        if len(row) and row["name"].iloc[0]:
            area_label = f"{row['name'].iloc[0]} ({filters.area})"
    return {"start": _form_time(filters.start), "end": _form_time(filters.end, end=True),
            "source": filters.source, "status": filters.status, "types": list(dict.fromkeys(types)),
            "categories": list(filters.categories), "area": filters.area, "area_label": area_label}


def _form_time(moment, *, end: bool = False) -> dict:
    """An ``<input>`` for a filter time: ``{"kind": "date" | "datetime-local", "value": …}``."""
    if moment is None:
        return {"kind": "date", "value": ""}
    if moment.hour == moment.minute == moment.second == moment.microsecond == 0:
        day = (moment - pd.Timedelta(days=1)) if end else moment
        return {"kind": "date", "value": f"{day:%Y-%m-%d}"}
    fmt = "%Y-%m-%dT%H:%M:%S" if moment.second or moment.microsecond else "%Y-%m-%dT%H:%M"
    return {"kind": "datetime-local", "value": moment.strftime(fmt)}


__all__ = ["FORM_RES", "GROUP_COLORS", "LABEL_PANE", "SITES_MIN_ZOOM", "hotspot_map"]
