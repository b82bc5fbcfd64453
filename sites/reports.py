"""Period reports: an XLSX workbook of the rectification KPIs per level and an HTML scorecard with a grid map.

The KPIs themselves come from :func:`sites.kpis.kpi_table` (one row per unit, columns
:data:`KPI_COLUMNS`); this module lays them out.

* **Workbook**: one sheet per level (district, street, community, grid, site category), Chinese headers by
  default (``lang="en"``: English), the parent units beside each unit, a totals row, rates as percentages,
  the header row frozen, and the lagging rows filled red with a 落后 / lagging mark; a last sheet explains
  the period, the KPI and the rule.
* **Totals row**: counts are summed; each rate is recomputed from the summed numerator and denominator
  (never an average of rates) — the denominator is the count column whose ratio reproduces the rate on every
  row of the table (:data:`RATE_PARTS`); the mean time to rectify is the mean weighted by rectified cases;
  a median cannot be combined from parts: it comes from :func:`sites.kpis.kpi_totals` of the level (left
  empty with a custom ``kpi_table``).
* **Lagging rows** (:func:`lagging_mask`): among the units that have a value of the chosen KPI, the worst
  quarter (:data:`LAG_SHARE`, at least one unit, ties included) — lowest for rates where higher is better,
  highest for rework, rebound, time to rectify, open and overdue — provided the value is worse than the best
  unit's (when every unit has the same value, nobody lags).
* **Scorecard**: the city figures, a map of micro-grids coloured by the KPI (folium, rendered with
  :func:`civicgrid.maps.offline.render_offline`, no tile layer, so it needs no internet), and the chosen level's table.
  Written to a file, Leaflet is inlined so the page opens from disk on a machine without network.
"""

from __future__ import annotations

import io
import math
import unicodedata
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.levels import AREA_LEVELS
from civicgrid.geo.store import Store
from civicgrid.geo.texts import check_lang, city_name, labels, local_name, pairs, text
from civicgrid.geo.times import now_local, parse_period, store_timezone
from civicgrid.maps.hotspot import GRID_OUTLINE_GATE
from civicgrid.maps.layers import SafeGeoJsonTooltip
from civicgrid.maps.offline import inline_assets, render_offline
from civicgrid.maps.pages import render_template
from civicgrid.sites import kpis
from civicgrid.sites._workbooks import save_values_only
from civicgrid.sites.kpis import KPI_LEVELS, check_level

#: Levels of the workbook, in sheet order (the KPI levels).
LEVELS = KPI_LEVELS

#: Sheet names per level: (Chinese, English) (``[level]`` of the text catalogue, :mod:`civicgrid.geo.texts`).
LEVEL_NAMES: dict[str, tuple[str, ...]] = pairs("level")

#: Kind of each column of the KPI table: text, count, rate or hours.
_KPI_KINDS = {
    "code": "text", "name": "text", "found": "count", "rectified": "count", "rectification_rate": "rate",
    "due": "count", "closed": "count", "closed_on_time": "count", "closure_rate": "rate",
    "on_time_closure_rate": "rate", "reworked": "count", "rework_rate": "rate", "rebounds": "count",
    "rebound_rate": "rate", "mean_hours_to_rectify": "hours", "median_hours_to_rectify": "hours", "open": "count",
    "overdue": "count", "no_deadline": "count",
}
#: The KPI table's columns: name -> (Chinese header, English header, kind); headers from ``[kpi]`` of the text
#: catalogue.
KPI_COLUMNS: dict[str, tuple[str, ...]] = {col: (*pairs("kpi")[col], kind) for col, kind in _KPI_KINDS.items()}

#: KPIs where a lower value is better (everything else: higher is better).
LOWER_IS_BETTER = frozenset({"rework_rate", "rebound_rate", "mean_hours_to_rectify", "median_hours_to_rectify",
                             "open", "overdue", "reworked", "rebounds", "no_deadline"})

#: Rate -> (numerator, candidate denominators in order of preference), for the totals row: the definition of
#: ``sites.kpis.RATES`` first (rebound_rate = rebounds / found), then other plausible bases for a custom
#: ``kpi_table`` (the first that reproduces the rate on every row wins).
RATE_PARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "rectification_rate": ("rectified", ("found",)),
    "closure_rate": ("closed", ("due",)),
    "on_time_closure_rate": ("closed_on_time", ("due",)),
    "rework_rate": ("reworked", ("rectified", "closed", "found")),
    "rebound_rate": ("rebounds", ("found", "closed", "rectified")),
}

#: Share of the units (worst first) marked as lagging.
LAG_SHARE = 0.25

#: Fills of the workbook (Excel's "bad" style for lagging rows).
LAG_FILL, LAG_FONT, HEADER_FILL, TOTAL_FILL = "FFC7CE", "9C0006", "DDEBF7", "F2F2F2"

#: Colours of the map, worst to best (ColorBrewer RdYlGn, 5 classes).
PALETTE = ("#d7191c", "#fdae61", "#ffffbf", "#a6d96a", "#1a9641")
NO_DATA_COLOUR = "#cccccc"

#: The scorecard page (a template of :mod:`civicgrid.maps.pages`).
SCORECARD_TEMPLATE = "report_scorecard.html"

# --- inputs ----------------------------------------------------------------------------------------------------


def check_kpi(kpi: str) -> str:
    """Return ``kpi`` if it is a numeric KPI column, else raise naming the known ones."""
    if kpi in KPI_COLUMNS and KPI_COLUMNS[kpi][2] != "text":
        return kpi
    known = [k for k, v in KPI_COLUMNS.items() if v[2] != "text"]
    import difflib

    close = difflib.get_close_matches(str(kpi), known, n=3, cutoff=0.4)
    msg = f"unknown KPI {kpi!r}; closest: {', '.join(close) or ', '.join(known[:5])} (known: {', '.join(known)})"
    raise InvalidParameterError(msg)


def _default_kpi_table() -> Callable:
    """The KPI function of a report (tests replace it with a fixed table)."""
    return kpis.kpi_table


def report_tables(store: Store, *, start: date, end: date, as_of=None, lang: str = "zh",
                  levels: tuple[str, ...] = LEVELS, kpi_table: Callable | None = None) -> dict[str, pd.DataFrame]:
    """The KPI table of every level for the days ``start`` (inclusive) to ``end`` (exclusive).

    Each table gets the codes and names of its parent units (district, street, community) beside it. With
    the default KPI function, ``df.attrs["totals"]`` holds :func:`sites.kpis.kpi_totals` of the level (the same
    cases pooled in SQL), which gives the totals row its median time to rectify.

    Parameters
    ----------
    levels
        The levels to compute (default: all of :data:`LEVELS`).
    kpi_table
        The KPI function (default :func:`sites.kpis.kpi_table`), called as
        ``kpi_table(store, start=..., end=..., level=..., as_of=..., lang=...)``.
    """
    func = kpi_table or _default_kpi_table()
    tables = {}
    parents = _parents(store, lang)
    for level in levels:
        df = func(store, start=start, end=end, level=level, as_of=as_of, lang=lang)
        missing = [c for c in KPI_COLUMNS if c not in df.columns]
        if missing:
            msg = f"kpi_table({level!r}) lacks the columns {', '.join(missing)}"
            raise InvalidParameterError(msg)
        df = df[list(KPI_COLUMNS)].copy()
        df["code"] = df["code"].astype(str)
        if level in ("street", "community", "grid"):
            up = parents.reindex(df["code"])
            keep = {"street": ["district"], "community": ["district", "street"],
                    "grid": ["district", "street", "community"]}[level]
            for i, col in enumerate(keep):
                df.insert(2 + i, f"{col}_name", up[f"{col}_name"].to_numpy())
        df = df.reset_index(drop=True)
        if func is kpis.kpi_table:
            df.attrs["totals"] = kpis.kpi_totals(store, start=start, end=end, level=level, as_of=as_of, lang=lang)
        tables[level] = df
    return tables


def _parents(store: Store, lang: str) -> pd.DataFrame:
    """Per area or grid code: the names of its district, street and community."""
    areas = store.sql(f"SELECT code, {local_name(lang)} AS name, level, parent_code FROM areas")
    name = dict(zip(areas["code"], areas["name"], strict=True))
    parent = dict(zip(areas["code"], areas["parent_code"], strict=True))
    grids = store.sql("SELECT code, community_code, street_code, district_code FROM grids")
    rows = []
    for a in areas.itertuples():
        if a.level == "street":
            rows.append((a.code, name.get(a.parent_code), None, None))
        elif a.level == "community":
            st = parent.get(a.code)
            rows.append((a.code, name.get(parent.get(st)), name.get(st), None))
    for g in grids.itertuples():
        rows.append((g.code, name.get(g.district_code), name.get(g.street_code), name.get(g.community_code)))
    return pd.DataFrame(rows, columns=["code", "district_name", "street_name", "community_name"]).drop_duplicates(
        "code").set_index("code")


# --- totals and lagging rows --------------------------------------------------------------------------------


def totals(df: pd.DataFrame) -> dict[str, float | None]:
    """The totals row of a KPI table: sums of counts, rates from summed parts (see the module docstring).

    The median time to rectify cannot be combined from the rows: it is taken from ``df.attrs["totals"]`` (the
    pooled KPIs of :func:`report_tables`) when present, else left empty.
    """
    out: dict[str, float | None] = {}
    for col, (_, _, kind) in KPI_COLUMNS.items():
        if kind == "count":
            out[col] = float(pd.to_numeric(df[col], errors="coerce").fillna(0).sum())
    for rate, (num, candidates) in RATE_PARTS.items():
        den = _denominator(df, rate, num, candidates)
        out[rate] = (out[num] / out[den]) if den is not None and out.get(den) else None
    rect = pd.to_numeric(df["rectified"], errors="coerce").fillna(0)
    hours = pd.to_numeric(df["mean_hours_to_rectify"], errors="coerce")
    ok = hours.notna() & (rect > 0)
    out["mean_hours_to_rectify"] = float((hours[ok] * rect[ok]).sum() / rect[ok].sum()) if ok.any() else None
    pooled = df.attrs.get("totals") or {}
    median = pooled.get("median_hours_to_rectify")
    out["median_hours_to_rectify"] = float(median) if median is not None and np.isfinite(median) else None
    return out


def _denominator(df: pd.DataFrame, rate: str, num: str, candidates: tuple[str, ...]) -> str | None:
    """The first candidate count whose ratio reproduces ``rate`` on every row with a value."""
    r = pd.to_numeric(df[rate], errors="coerce")
    n = pd.to_numeric(df[num], errors="coerce").fillna(0)
    for den in candidates:
        d = pd.to_numeric(df[den], errors="coerce").fillna(0)
        rows = r.notna() & (d > 0)
        if not rows.any():
            continue
        if np.allclose((n[rows] / d[rows]).to_numpy(float), r[rows].to_numpy(float), rtol=1e-6, atol=1e-9):
            return den
    return None


def lagging_mask(df: pd.DataFrame, kpi: str, *, share: float = LAG_SHARE) -> np.ndarray:
    """Which rows lag on ``kpi``: the worst ``share`` of the rows with a value (ties included), if worse than
    the best row."""
    check_kpi(kpi)
    values = pd.to_numeric(df[kpi], errors="coerce").to_numpy(float)
    valid = np.isfinite(values)
    mask = np.zeros(len(df), dtype=bool)
    if not valid.any():
        return mask
    sign = -1.0 if kpi in LOWER_IS_BETTER else 1.0
    score = sign * values[valid]                       # higher score = better
    m = max(1, math.ceil(share * valid.sum()))
    cut = np.sort(score)[m - 1]
    best = score.max()
    mask[np.flatnonzero(valid)] = (score <= cut) & (score < best)
    return mask


# --- the workbook -------------------------------------------------------------------------------------------


def _headers(df: pd.DataFrame, lang: str) -> list[str]:
    t, names = labels("report", lang), labels("kpi", lang)
    heads = []
    for col in df.columns:
        if col in KPI_COLUMNS:
            heads.append(names[col])
        elif col.endswith("_name"):
            heads.append(t[col[:-5]])
        else:
            heads.append(col)
    return heads


def write_workbook(tables: dict[str, pd.DataFrame], target, *, kpi: str = "on_time_closure_rate",
                   lang: str = "zh", level: str = "street", title: str = "", notes: list[tuple[str, str]] = ()):
    """Write the KPI tables as an XLSX workbook to ``target`` (a path or a binary file object).

    One sheet per level, headers in ``lang``, a totals row, lagging rows on ``kpi`` filled red, the header
    frozen, rates formatted as percentages; the sheet of ``level`` is the active one; a notes sheet last.
    """
    from openpyxl import Workbook
    from openpyxl.styles import Font

    t = labels("report", check_lang(lang))
    kpi = check_kpi(kpi)
    wb = Workbook()
    wb.remove(wb.active)
    for lvl, df in tables.items():
        _fill_level_sheet(wb.create_sheet(text(f"level.{lvl}", lang)), df, kpi=kpi, lang=lang, t=t)
    info = wb.create_sheet(t["notes"])
    rows = [
        (title, ""),
        *notes,
        (t["kpi"], text(f"kpi.{kpi}", lang)),
        (t["rule"], t["rule_text"].format(share=LAG_SHARE)),
        (t["total"], t["totals_text"]),
        ("", t["source"]),
    ]
    for row in rows:
        info.append(list(row))
    info["A1"].font = Font(bold=True, size=13)
    info.column_dimensions["A"].width = 16
    info.column_dimensions["B"].width = 100
    wb.active = list(tables).index(level) if level in tables else 0
    save_values_only(wb, target)
    return target


def _fill_level_sheet(ws, df: pd.DataFrame, *, kpi: str, lang: str, t: dict[str, str]) -> None:
    """One level's sheet of :func:`write_workbook`: headers, rows, totals, formats, lagging rows and the KPI's
    colour scale."""
    from openpyxl.formatting.rule import ColorScaleRule
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
    from openpyxl.utils import get_column_letter

    lag_fill = PatternFill("solid", start_color=LAG_FILL, end_color=LAG_FILL)
    head_fill = PatternFill("solid", start_color=HEADER_FILL, end_color=HEADER_FILL)
    total_fill = PatternFill("solid", start_color=TOTAL_FILL, end_color=TOTAL_FILL)
    thin = Side(style="thin", color="999999")
    lag = lagging_mask(df, kpi)
    cols = list(df.columns)
    heads = [*_headers(df, lang), t["status"]]
    ws.append(heads)
    for cell in ws[1]:
        cell.font = Font(bold=True)
        cell.fill = head_fill
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        cell.border = Border(bottom=thin)
    for i, rec in enumerate(df.itertuples(index=False)):
        ws.append([_cell(v) for v in rec] + [t["lagging"] if lag[i] else None])
    tot = totals(df)
    ws.append([t["total"]] + [None] * (len(cols) - 1) + [None])
    last = ws.max_row
    for j, col in enumerate(cols, start=1):
        if col in tot:
            ws.cell(last, j, _cell(tot[col]))
    for j, col in enumerate(cols, start=1):
        kind = KPI_COLUMNS.get(col, ("", "", "text"))[2]
        fmt = {"rate": "0.0%", "hours": "0.0", "count": "#,##0"}.get(kind)
        letter = get_column_letter(j)
        if fmt:
            for r in range(2, last + 1):
                ws.cell(r, j).number_format = fmt
        width = max(_text_width(str(heads[j - 1])), 8 if kind != "text" else 12) + 2
        ws.column_dimensions[letter].width = min(width, 40)
    ws.column_dimensions[get_column_letter(len(cols) + 1)].width = 8
    for i in np.flatnonzero(lag):
        for cell in ws[int(i) + 2]:
            cell.fill = lag_fill
            cell.font = Font(color=LAG_FONT)
    for cell in ws[last]:
        cell.font = Font(bold=True)
        cell.fill = total_fill
        cell.border = Border(top=thin)
    kcol = get_column_letter(cols.index(kpi) + 1)
    if last > 2:  # a colour scale on the KPI column (Excel / WPS evaluate it)
        low, high = ("F8696B", "63BE7B") if kpi not in LOWER_IS_BETTER else ("63BE7B", "F8696B")
        ws.conditional_formatting.add(f"{kcol}2:{kcol}{last - 1}", ColorScaleRule(
            start_type="min", start_color=low, mid_type="percentile", mid_value=50, mid_color="FFEB84",
            end_type="max", end_color=high))
    ws.freeze_panes = "C2"
    ws.auto_filter.ref = f"A1:{get_column_letter(len(cols) + 1)}{max(last - 1, 1)}"
    ws.row_dimensions[1].height = 32


def _text_width(value: str) -> int:
    """Columns a header takes in a spreadsheet: two per wide (CJK) character, one per other."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in value)


def _cell(value):
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- the map and the scorecard ------------------------------------------------------------------------------


def _scale(values: np.ndarray) -> tuple[float, float]:
    """The colour scale's ends: the observed range of the KPI (a fixed 0–100 % scale would paint a map of
    rework rates, all under 20 %, in one colour)."""
    ok = np.isfinite(values)
    return (float(values[ok].min()), float(values[ok].max())) if ok.any() else (0.0, 1.0)


def _colour(values: np.ndarray, kpi: str) -> list[str]:
    """Palette colour per value, between the KPI's observed minimum and maximum (best green, worst red)."""
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    lo, hi = _scale(values)
    span = hi - lo if hi > lo else 1.0
    x = np.clip(np.where(ok, (values - lo) / span, 0.0), 0, 1)
    if kpi in LOWER_IS_BETTER:
        x = 1 - x
    idx = np.minimum((x * len(PALETTE)).astype(int), len(PALETTE) - 1)
    return [PALETTE[i] if good else NO_DATA_COLOUR for i, good in zip(idx, ok, strict=True)]


def legend(kpi: str, values, lang: str = "zh") -> list[tuple[str, str]]:
    """The map's legend: ``(colour, range label)`` per palette class, worst first."""
    values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float)
    rate = KPI_COLUMNS[kpi][2] == "rate"
    lo, hi = _scale(values)
    edges = np.linspace(lo, hi, len(PALETTE) + 1)
    if kpi in LOWER_IS_BETTER:
        edges = edges[::-1]
    fmt = (lambda v: f"{v:.0%}") if rate else (lambda v: f"{v:,.1f}" if KPI_COLUMNS[kpi][2] == "hours"
                                                 else f"{v:,.0f}")
    if not np.isfinite(values).any():  # no unit has a value: every unit is grey
        out = []
    elif hi <= lo:  # one value for every unit: one class (the colour _colour gives)
        out = [(_colour(np.array([lo]), kpi)[0], fmt(lo))]
    else:
        out = [(c, f"{fmt(edges[i])} – {fmt(edges[i + 1])}") for i, c in enumerate(PALETTE)]
    out.append((NO_DATA_COLOUR, text("report.no_data", lang)))
    return out


def map_level(store: Store) -> str:
    """The level the scorecard's map colours: the micro-grids, or for a city that has none yet the finest level
    of areas it has (community, street, district); ``grid`` when it has no shapes at all."""
    return _map_level(*_shapes(store))


def _shapes(store: Store) -> tuple[bool, set[str]]:
    """Whether the store has micro-grid shapes, and the levels of its area shapes: one query."""
    have = store.sql("SELECT (SELECT count(*) FROM grids WHERE geom IS NOT NULL) AS grids, "
                     "(SELECT coalesce(list(DISTINCT level), []) FROM areas WHERE geom IS NOT NULL) AS levels").iloc[0]
    return bool(have["grids"]), set(have["levels"])


def _map_level(grids: bool, levels: set[str]) -> str:
    if grids:
        return "grid"
    return next((level for level in reversed(AREA_LEVELS) if level in levels), "grid")  # the finest first


def table_level(store: Store, level: str | None = None) -> str:
    """The level of a report's table (the scorecard's table, the workbook's active sheet): ``level``, else the
    streets, or for a city without streets its finest areas, or for a city without areas its micro-grids, or for
    one without either its site categories. New York's ZIP codes loaded as districts: ``district`` (a street table
    was empty); Shenzhen's 9 districts and 9,005 micro-grids: ``district`` (a table of 9,005 rows is no
    scorecard); Toronto's restaurants alone: ``category`` (an empty micro-grid table)."""
    if level is not None:
        return check_level(level)
    grids, levels = _shapes(store)
    if "street" in levels:
        return "street"
    return _map_level(False, levels) if levels else "grid" if grids else "category"


def grid_map(store: Store, grid_table: pd.DataFrame, *, kpi: str = "on_time_closure_rate", lang: str = "zh",
             level: str = "grid"):
    """A folium map (no tile layer) of every micro-grid (or area of ``level``: :func:`map_level`) filled by its
    ``kpi`` value in ``grid_table`` (the KPI table of that level), street outlines on top.

    The tooltip of a grid shows its name, code, the KPI, for a rate its numerator and denominator (a red grid
    with 0 / 1 due reads differently from one with 0 / 30), and the cases found. Streets are outlined and
    labelled (DivIcon) so the map reads without a base map.
    """
    import folium
    import geopandas as gpd
    import shapely

    check_kpi(kpi)
    if level == "grid":
        g = store.sql("SELECT code, name, ST_AsWKB(geom) AS wkb FROM grids WHERE geom IS NOT NULL ORDER BY code")
    else:
        g = store.sql(f"SELECT code, {local_name(lang)} AS name, ST_AsWKB(geom) AS wkb FROM areas "
                      "WHERE level = ? AND geom IS NOT NULL ORDER BY code", [level])
    geoms = shapely.from_wkb([bytes(b) for b in g["wkb"]]) if len(g) else []
    gdf = gpd.GeoDataFrame(g.drop(columns="wkb"), geometry=list(geoms), crs="EPSG:4326")
    table = grid_table.set_index("code")
    values = table[kpi].reindex(gdf["code"])
    vals = pd.to_numeric(values, errors="coerce").to_numpy(float)
    gdf["colour"] = _colour(vals, kpi)
    rate = KPI_COLUMNS[kpi][2] == "rate"
    gdf["value"] = [("—" if not np.isfinite(v) else f"{v:.1%}" if rate else f"{v:,.1f}") for v in vals]
    found = table["found"].reindex(gdf["code"])
    gdf["found"] = pd.to_numeric(found, errors="coerce").fillna(0).astype(int).to_numpy()
    names = labels("kpi", lang)
    label = names[kpi]
    fields, heads = ["name", "code", "value"], [text(f"level.{level}", lang), names["code"], label]
    if rate:
        num, candidates = RATE_PARTS[kpi]
        den = _denominator(grid_table, kpi, num, candidates) or candidates[0]
        n = pd.to_numeric(table[num].reindex(gdf["code"]), errors="coerce").fillna(0).to_numpy()
        d = pd.to_numeric(table[den].reindex(gdf["code"]), errors="coerce").fillna(0).to_numpy()
        gdf["basis"] = [f"{a:,.0f} / {b:,.0f}" for a, b in zip(n, d, strict=True)]
        fields.append("basis")
        heads.append(f"{names[num]} / {names[den]}")
    if kpi != "found":
        fields.append("found")
        heads.append(names["found"])
    gdf["geometry"] = gdf.geometry.simplify(1e-5)
    if len(gdf):
        minx, miny, maxx, maxy = gdf.total_bounds
        centre = [(miny + maxy) / 2, (minx + maxx) / 2]
    else:
        centre, (minx, miny, maxx, maxy) = [0, 0], (0, 0, 0, 0)
    m = folium.Map(location=centre, zoom_start=12, tiles=None, control_scale=True, zoom_snap=0.25)
    # many grids (Shenzhen's 9,005) are edged in their own colour: grey edges drew one mesh over the city
    mesh = len(gdf) > GRID_OUTLINE_GATE
    if len(gdf):  # a tooltip needs a feature to name its fields (folium refuses them on an empty layer)
        folium.GeoJson(
            gdf[[*fields, "colour", "geometry"]].__geo_interface__,
            name=label,
            style_function=lambda f: {"fillColor": f["properties"]["colour"], "weight": 0.6, "fillOpacity": 0.75,
                                      "color": f["properties"]["colour"] if mesh else "#555555"},
            highlight_function=lambda f: {"weight": 2, "color": "#000000"},
            tooltip=SafeGeoJsonTooltip(fields, aliases=heads),
        ).add_to(m)
    _area_outlines(store, lang, coloured=level).add_to(m)
    if len(gdf):
        m.fit_bounds([[miny, minx], [maxy, maxx]])
    return m


def _area_outlines(store: Store, lang: str, *, coloured: str):
    """Street (街道) boundaries as thick lines, each labelled with its name at a point inside it; for a city without
    streets its districts (Shenzhen's 9,005 micro-grids read as one grey mesh without them). None when that level
    is the one the map colours."""
    import folium
    import geopandas as gpd
    import shapely

    a = store.sql(f"SELECT code, {local_name(lang)} AS name, level, ST_AsWKB(geom) AS wkb FROM areas "
                  "WHERE geom IS NOT NULL AND level = (SELECT CASE WHEN bool_or(level = 'street') THEN 'street' "
                  "ELSE 'district' END FROM areas WHERE geom IS NOT NULL) ORDER BY code")
    outlined = a["level"].iloc[0] if len(a) else "street"
    group = folium.FeatureGroup(name=text(f"level.{outlined}", lang))
    if not len(a) or outlined == coloured:
        return group
    gdf = gpd.GeoDataFrame({"code": a["code"], "name": a["name"]},
                           geometry=list(shapely.from_wkb([bytes(b) for b in a["wkb"]])), crs="EPSG:4326")
    gdf["geometry"] = gdf.geometry.simplify(5e-5)
    folium.GeoJson(gdf.__geo_interface__, style_function=lambda f: {"fill": False, "color": "#222222",
                                                                   "weight": 2.2, "opacity": 0.9}).add_to(group)
    for name, point in zip(gdf["name"], gdf.geometry.representative_point(), strict=True):
        shown = str(name).replace("&", "&amp;").replace("<", "&lt;")
        folium.Marker([point.y, point.x], icon=folium.DivIcon(
            html=f'<div style="transform: translate(-50%, -50%); white-space: nowrap; font-size: 12px; '
                 f'font-weight: 600; color: #111; text-shadow: 0 0 3px #fff, 0 0 3px #fff;">{shown}</div>',
            icon_size=(0, 0)), interactive=False).add_to(group)
    return group


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NA:
        return "—"
    if kind == "rate":
        return f"{value:.1%}"
    if kind == "hours":
        return f"{value:,.1f}"
    if kind == "count":
        return f"{value:,.0f}"
    return str(value)


#: Columns of the scorecard's table (the chosen KPI is added if missing).
SCORECARD_COLUMNS = ("found", "rectification_rate", "closure_rate", "on_time_closure_rate", "rework_rate",
                     "rebound_rate", "mean_hours_to_rectify", "overdue")


def scorecard_html(store: Store, tables: dict[str, pd.DataFrame], *, level: str = "street",
                   kpi: str = "on_time_closure_rate", lang: str = "zh", period_label: str = "",
                   as_of=None, standalone: bool = False, city_totals: dict | None = None) -> str:
    """The HTML scorecard: city figures, the grid map coloured by ``kpi`` and the table of ``level``.

    Parameters
    ----------
    city_totals
        The city's figures (:func:`sites.kpis.kpi_totals` of every case, whatever its units); default: the
        totals of the ``level`` table.
    standalone
        Inline Leaflet into the page (a file that opens without the service); otherwise the map loads it from
        the service's ``/static/vendor``.
    """
    t, names = labels("report", check_lang(lang)), labels("kpi", lang)
    check_kpi(kpi)
    check_level(level)
    df = tables[level]
    lag = lagging_mask(df, kpi)
    tot = totals(df)
    # the chosen KPI first, beside the unit's name (the table scrolls sideways on narrow screens)
    cols = [kpi, *(c for c in SCORECARD_COLUMNS if c != kpi)]
    sign = -1 if kpi in LOWER_IS_BETTER else 1
    values = pd.to_numeric(df[kpi], errors="coerce")
    score = -sign * values.fillna(-np.inf * sign).to_numpy(float)
    order = np.argsort(score, kind="stable")
    # Ties share a rank (并列): 1, 1, 3, ... ; units without a value come last, unranked (shown "—").
    ranks = pd.Series(score).rank(method="min").astype(int).to_numpy()
    unranked = values.isna().to_numpy()
    rows = []
    # a unit is named by its name, with its code where names repeat (New York's ZIP codes: 30 are "Brooklyn")
    named = df["name"].where(df["name"].notna() & (df["name"].astype(str).str.strip() != ""), df["code"]).astype(str)
    shown_names = named.where(~named.duplicated(keep=False) | (named == df["code"].astype(str)),
                              named + " (" + df["code"].astype(str) + ")").to_numpy()
    for i in order:
        rec = df.iloc[i]
        rows.append({"rank": None if unranked[i] else int(ranks[i]), "code": rec["code"], "name": shown_names[i],
                     "lagging": bool(lag[i]),
                     "cells": [_fmt(_cell(rec[c]), KPI_COLUMNS[c][2]) for c in cols]})
    grids, levels = _shapes(store)
    shown = _map_level(grids, levels)
    if shown not in tables:  # tables made for other levels (a caller's): the micro-grids' as before
        shown = "grid"
    map_page = ""  # a city without shapes (its sample frame alone) has no map to colour
    if grids or levels:
        map_page = render_offline(grid_map(store, tables[shown], kpi=kpi, lang=lang, level=shown))
        if standalone:
            map_page = inline_assets(map_page)
    city = city_name(store, lang)
    label = names[kpi]
    whole = tot if city_totals is None else city_totals
    summary = [(names[c], _fmt(whole.get(c), KPI_COLUMNS[c][2]))
               for c in ("found", "rectification_rate", "on_time_closure_rate", "rework_rate", "rebound_rate",
                         "overdue")]
    return render_template(
        SCORECARD_TEMPLATE,
        lang=lang, html_lang=text("common.html_lang", lang), t=t, city=city, period=period_label,
        level_name=text(f"level.{level}", lang),
        kpi=kpi, kpi_label=label, generated=_now_text(store_timezone(store)),
        as_of=str(as_of) if as_of is not None else "",
        summary=summary, headers=[names[c] for c in cols],
        kpi_index=cols.index(kpi), rows=rows, total_cells=[_fmt(tot.get(c), KPI_COLUMNS[c][2]) for c in cols],
        map_srcdoc=map_page, map_caption=t["map"].format(kpi=label) if shown == "grid" else
        t["map_areas"].format(kpi=label, level=text(f"level.{shown}", lang)),
        legend=legend(kpi, tables[shown][kpi], lang), lag_rule=t["rule_text"].format(share=LAG_SHARE),
        n_lagging=int(lag.sum()), empty=not (whole.get("found") or whole.get("due")),
        no_deadline=_no_deadline_note(whole, lang),
    )


def _no_deadline_note(whole: dict, lang: str) -> str:
    """The scorecard's note on the period's cases without a deadline (no problem type), or "" when there are none:
    San Francisco's labels, unmapped, left 88 % of its cases out of every closure rate without a word."""
    n, found = whole.get("no_deadline"), whole.get("found")
    if not n or not found or pd.isna(n):
        return ""
    return text("report.no_deadline", lang, n=_fmt(n, "count"), found=_fmt(found, "count"))


# --- the whole report ---------------------------------------------------------------------------------------


def build_report(store: Store, *, period: str | None = "2024-03", start=None, end=None, level: str | None = None,
                 out_dir: str | Path = ".", kpi: str = "on_time_closure_rate", lang: str = "zh", as_of=None,
                 kpi_table: Callable | None = None) -> dict[str, Path]:
    """Write the period's XLSX workbook and HTML scorecard into ``out_dir``.

    Parameters
    ----------
    store
        The database.
    period
        ``2024-03``, ``2024-Q1``, ``2024``, ``2024-03-05`` or ``2024-03-01..2024-03-15``; or None with
        ``start`` and ``end`` (inclusive days).
    level
        The scorecard's table level (also the workbook's active sheet): district, street, community, grid or
        category; default: the streets, else the finest areas, else the micro-grids (:func:`table_level`).
    out_dir
        Folder for ``report_<period>_<level>.xlsx`` and ``scorecard_<period>_<level>.html`` (created).
    kpi
        The KPI that colours the map and marks lagging rows (a column of :data:`KPI_COLUMNS`).
    lang
        ``zh`` (default) or ``en`` headers and labels.
    as_of
        Passed to the KPI table (open / overdue counts at this moment; default: its own).
    kpi_table
        The KPI function (default :func:`sites.kpis.kpi_table`).

    Returns
    -------
    dict
        ``{"xlsx": Path, "html": Path}``.
    """
    first, stop, label = parse_period(period, start=start, end=end)
    level = table_level(store, level)
    check_kpi(kpi)
    check_lang(lang)
    tables = report_tables(store, start=first, end=stop, as_of=as_of, lang=lang, kpi_table=kpi_table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{label.replace('..', '_')}_{level}"
    paths = {"xlsx": out / f"report_{stem}.xlsx", "html": out / f"scorecard_{stem}.html"}
    tz = store_timezone(store)
    write_workbook(tables, paths["xlsx"], kpi=kpi, lang=lang, level=level,
                   title=report_title(store, label, lang), notes=_notes(first, stop, as_of, lang, tz))
    page = scorecard_html(store, tables, level=level, kpi=kpi, lang=lang, period_label=label,
                          as_of=_shown_as_of(stop, as_of, store_timezone(store)), standalone=True,
                          city_totals=_city_totals(store, first, stop, as_of, lang, kpi_table))
    paths["html"].write_text(page, encoding="utf-8")
    return paths


def workbook_bytes(store: Store, *, period: str | None = None, start=None, end=None, level: str | None = None,
                   kpi: str = "on_time_closure_rate", lang: str = "zh", as_of=None,
                   kpi_table: Callable | None = None) -> bytes:
    """The report workbook as XLSX bytes (what the API sends)."""
    first, stop, label = parse_period(period, start=start, end=end)
    level = table_level(store, level)
    check_kpi(kpi)
    check_lang(lang)
    tables = report_tables(store, start=first, end=stop, as_of=as_of, lang=lang, kpi_table=kpi_table)
    buf = io.BytesIO()
    write_workbook(tables, buf, kpi=kpi, lang=lang, level=level, title=report_title(store, label, lang),
                   notes=_notes(first, stop, as_of, lang, store_timezone(store)))
    return buf.getvalue()


def scorecard_page(store: Store, *, period: str | None = None, start=None, end=None, level: str | None = None,
                   kpi: str = "on_time_closure_rate", lang: str = "zh", as_of=None, standalone: bool = False,
                   kpi_table: Callable | None = None) -> str:
    """The scorecard HTML for a period (what the API sends; the map loads Leaflet from ``/static/vendor``);
    ``level`` as :func:`table_level`."""
    first, stop, label = parse_period(period, start=start, end=end)
    level = table_level(store, level)
    check_kpi(kpi)
    check_lang(lang)
    tables = report_tables(store, start=first, end=stop, as_of=as_of, lang=lang, kpi_table=kpi_table,
                           levels=tuple(dict.fromkeys((level, map_level(store)))))
    return scorecard_html(store, tables, level=level, kpi=kpi, lang=lang, period_label=label,
                          as_of=_shown_as_of(stop, as_of, store_timezone(store)),
                          standalone=standalone, city_totals=_city_totals(store, first, stop, as_of, lang, kpi_table))


def _city_totals(store: Store, first: date, stop: date, as_of, lang: str, kpi_table: Callable | None) -> dict | None:
    """The city's figures of a scorecard: every case of the period, whatever its units (a case outside every
    street counts for the city); None with a caller's KPI function (its table's totals then)."""
    if (kpi_table or _default_kpi_table()) is not kpis.kpi_table:
        return None
    return kpis.kpi_totals(store, start=first, end=stop, level=None, as_of=as_of, lang=lang)


def report_title(store: Store, label: str, lang: str) -> str:
    """``示范市 创城考核记分卡 2024-03`` (or the English form)."""
    return f"{city_name(store, lang)} {text('report.title', lang)} {label}".strip()


def _now_text(tz: str) -> str:
    """The current wall-clock time of the store's time zone ``tz``, to the minute."""
    return f"{now_local(tz=tz):%Y-%m-%d %H:%M}"


def _shown_as_of(stop: date, as_of, tz: str) -> str:
    """The moment the record is read at, as shown: ``as_of``, else the KPIs' default (the period's end, or now)."""
    if as_of is not None:
        return str(as_of)
    end = min(datetime.combine(stop, datetime.min.time()), now_local(tz=tz))
    return f"{end:%Y-%m-%d %H:%M}"


def _notes(first: date, stop: date, as_of, lang: str, tz: str) -> list[tuple[str, str]]:
    t = labels("report", lang)
    notes = [(t["period"], f"{first} – {stop - timedelta(days=1)}"),
             (t["generated"], _now_text(tz))]
    notes.append((t["as_of"], _shown_as_of(stop, as_of, tz)))
    return notes


__all__ = [
    "KPI_COLUMNS",
    "LEVELS",
    "build_report",
    "grid_map",
    "lagging_mask",
    "map_level",
    "report_tables",
    "scorecard_html",
    "scorecard_page",
    "table_level",
    "totals",
    "workbook_bytes",
    "write_workbook",
]
