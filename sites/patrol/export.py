"""Patrol plan exports: GeoJSON, GPX, printable HTML and XLSX stop lists, and the folium route map."""

from __future__ import annotations

import html
import io
import json
import os
import re
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from civicgrid.geo.coords import from_wgs84, to_crs_frame
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.geo.texts import check_lang, labels, name_column, text
from civicgrid.geo.times import DEFAULT_TIMEZONE
from civicgrid.maps.layers import RawHtml, SafeGeoJsonTooltip
from civicgrid.sites._workbooks import save_values_only

#: Export formats and their file suffix and media type.
FORMATS: dict[str, tuple[str, str]] = {
    "geojson": (".geojson", "application/geo+json"),
    "gpx": (".gpx", "application/gpx+xml"),
    "html": (".html", "text/html; charset=utf-8"),
    "xlsx": (".xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
}

#: One colour per inspector, in route order (ColorBrewer Set1 then Dark2: distinct on light and dark tiles).
ROUTE_COLORS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#1b9e77",
                "#d95f02", "#7570b3", "#e7298a", "#66a61e")

#: Stop-list columns, in order.
STOP_COLUMNS = ("seq", "arrival", "start_time", "departure", "name", "category", "address", "grid_name", "grid_code",
                "risk",
                "must_visit", "travel_min", "wait_min", "service_min", "reason", "site_id", "lng", "lat")


def _labels(lang: str) -> dict:
    """The stop lists' column and page labels in ``lang`` (``[patrol.export]`` of the text catalogue)."""
    return labels("patrol.export", check_lang(lang))


def _mode(mode: str, lang: str) -> str:
    """An inspector's mode of travel in ``lang`` (步行 / walk)."""
    return labels("patrol.mode", lang).get(mode, mode)


def _reason(stop: dict, lang: str) -> str:
    sep = text("common.reason_sep", lang)
    return sep.join(r.get(lang, "") for r in stop.get("reasons", [])) or stop.get("reason", "")


def _category(stop: dict, lang: str) -> str:
    return stop.get(name_column(lang, "category")) or stop.get("category") or ""


def _print_reason(stop: dict, lang: str) -> str:
    """A stop's reasons for the printed list: why it must be visited first, then its risk, then its window."""
    order = {"overdue": 0, "recheck": 0, "coverage": 1, "requested": 1, "risk": 2, "window": 3}
    reasons = sorted(stop.get("reasons", []), key=lambda r: order.get(r.get("kind"), 2))
    sep = text("common.reason_sep", lang)
    return sep.join(r.get(lang, "") for r in reasons) or stop.get("reason", "")


def _grid(stop: dict) -> str:
    """A stop's micro-grid by name (its code when the grid has none)."""
    return stop.get("grid_name") or stop.get("grid_code") or ""


#: The off-network note of a ``travel_source`` (written by :mod:`civicgrid.sites.patrol.travel`).
_OFF_NETWORK = re.compile(r" \((\d+) of (\d+) points more than ([\d.]+) m from it: ")
#: Phrases of a ``travel_source``, replaced in this order (``[patrol.source]`` of the text catalogue).
_SOURCE_PHRASES = ("roads_table", "road_network_colon", "road_network", "straight_line", "given_matrix")


def travel_source_text(source: str | None, lang: str = "zh") -> str:
    """A plan's ``travel_source`` (written in English) in ``lang``: ``直线距离 × 1.3``, ``路网：futian.graphml`` …
    for ``zh``; unchanged for ``en``."""
    t = labels("patrol.source", check_lang(lang))
    out, n = _OFF_NETWORK.subn(lambda m: t["off_network"].format(n=m[1], of=m[2], metres=m[3]), str(source or ""))
    if n and out.endswith(")"):
        out = out[:-1] + t["off_network_end"]
    for key in _SOURCE_PHRASES:
        out = out.replace(text(f"patrol.source.{key}", "en"), t[key])
    return out


def _hm(iso: str | None) -> str:
    return "" if not iso else iso[11:16]


def _xy(lng: float, lat: float, crs: str) -> tuple[float, float]:
    if crs == "wgs84":
        return float(lng), float(lat)
    x, y = from_wgs84(np.array([lng]), np.array([lat]), crs)
    return float(x[0]), float(y[0])


def stops_frame(doc: dict, *, lang: str = "zh"):
    """One row per stop of a plan document (``inspector`` first, then :data:`STOP_COLUMNS`), as a GeoDataFrame."""
    import geopandas as gpd

    rows = []
    for r in doc["routes"]:
        for s in r["stops"]:
            row = {"inspector": r["inspector"], "mode": r["mode"]}
            row.update({c: s.get(c) for c in STOP_COLUMNS})
            row["category"] = _category(s, lang)
            row["reason"] = _reason(s, lang)
            rows.append(row)
    df = pd.DataFrame(rows, columns=["inspector", "mode", *STOP_COLUMNS])
    return gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df["lng"], df["lat"]), crs="EPSG:4326")


# ---------------------------------------------------------------------------------------------- GeoJSON


def to_geojson(doc: dict, *, lang: str = "zh", crs: str = "wgs84", links: dict[str, str] | None = None) -> dict:
    """A FeatureCollection: per inspector a LineString (start → stops → end: the street path when the plan was
    made on a road network, else straight segments joining the stops) and one Point per stop with its sequence,
    times, risk and reason.

    ``crs="gcj02"`` or ``"bd09"`` converts coordinates for Chinese map services. ``links``: each inspector's
    field link (:func:`civicgrid.sites.patrol.field.field_links`), a ``field_url`` property of the route.
    """
    _labels(lang)
    features = []
    for k, r in enumerate(doc["routes"]):
        color = ROUTE_COLORS[k % len(ROUTE_COLORS)]
        pts = r.get("path") or [r["start"], *[[s["lng"], s["lat"]] for s in r["stops"]], r["end"]]
        features.append({
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [list(_xy(x, y, crs)) for x, y in pts]},
            "properties": {"kind": "route", "inspector": r["inspector"], "mode": r["mode"], "color": color,
                           "shift_start": r["shift_start"], "end_time": r["end_time"], **r["totals"],
                           **({"field_url": links.get(r["inspector"])} if links else {})},
        })
        for s in r["stops"]:
            props = {"kind": "stop", "inspector": r["inspector"], "color": color}
            props.update({c: s.get(c) for c in STOP_COLUMNS if c not in ("lng", "lat")})
            props["category"] = _category(s, lang)
            props["reason"] = _reason(s, lang)
            features.append({"type": "Feature", "geometry": {"type": "Point",
                                                             "coordinates": list(_xy(s["lng"], s["lat"], crs))},
                             "properties": props})
    return {"type": "FeatureCollection", "features": features,
            "properties": {"plan_id": doc.get("plan_id"), "date": doc.get("date"), "crs": crs,
                           "travel_source": doc.get("travel_source"), "solver": doc.get("solver"),
                           "totals": doc.get("totals")}}


# ---------------------------------------------------------------------------------------------- GPX

_GPX_NS = "http://www.topografix.com/GPX/1/1"


def to_gpx(doc: dict, *, lang: str = "zh", timezone: str | None = None) -> str:
    """GPX 1.1 for phone navigation apps: a waypoint per stop and a route (``rte``) per inspector.

    Waypoints are named ``<inspector>-<seq> <site>`` with the planned arrival as ``time`` (UTC, from the local
    times of the store's time zone) and the reason as ``desc``. Coordinates are WGS84, as GPX requires.
    """
    t = _labels(lang)
    tz = ZoneInfo(timezone or doc.get("timezone") or DEFAULT_TIMEZONE)
    ET.register_namespace("", _GPX_NS)
    root = ET.Element(f"{{{_GPX_NS}}}gpx", {"version": "1.1", "creator": "civicgrid"})
    meta = ET.SubElement(root, f"{{{_GPX_NS}}}metadata")
    ET.SubElement(meta, f"{{{_GPX_NS}}}name").text = f"{t['title']} {doc.get('date') or ''} {doc.get('plan_id') or ''}"

    def utc(iso: str | None) -> str | None:
        if not iso:
            return None
        return datetime.fromisoformat(iso).replace(tzinfo=tz).astimezone(ZoneInfo("UTC")).strftime(
            "%Y-%m-%dT%H:%M:%SZ")

    def point(tag: str, parent, lng: float, lat: float, name: str, desc: str | None = None,
              when: str | None = None, sym: str | None = None):
        el = ET.SubElement(parent, f"{{{_GPX_NS}}}{tag}", {"lat": f"{lat:.7f}", "lon": f"{lng:.7f}"})
        if when:
            ET.SubElement(el, f"{{{_GPX_NS}}}time").text = when
        ET.SubElement(el, f"{{{_GPX_NS}}}name").text = name
        if desc:
            ET.SubElement(el, f"{{{_GPX_NS}}}desc").text = desc
        if sym:
            ET.SubElement(el, f"{{{_GPX_NS}}}sym").text = sym
        return el

    for r in doc["routes"]:
        for s in r["stops"]:
            desc = f"{t['arrival']} {_hm(s['arrival'])} · {_category(s, lang)} · {t['risk']} {s['risk']:.2f}. " \
                   f"{_reason(s, lang)}"
            point("wpt", root, s["lng"], s["lat"], f"{r['inspector']}-{s['seq']:02d} {s['name'] or s['site_id']}",
                  desc, utc(s["arrival"]), "Flag")
    for r in doc["routes"]:
        rte = ET.SubElement(root, f"{{{_GPX_NS}}}rte")
        ET.SubElement(rte, f"{{{_GPX_NS}}}name").text = f"{r['inspector']} ({_mode(r['mode'], lang)})"
        ET.SubElement(rte, f"{{{_GPX_NS}}}desc").text = (
            f"{len(r['stops'])} {t['stops']}, {t['travel']} {r['totals']['travel_min']:.0f} {t['min']}")
        point("rtept", rte, r["start"][0], r["start"][1], t["start"], when=utc(r["shift_start"]))
        for s in r["stops"]:
            point("rtept", rte, s["lng"], s["lat"], f"{s['seq']:02d} {s['name'] or s['site_id']}",
                  when=utc(s["arrival"]))
        point("rtept", rte, r["end"][0], r["end"][1], t["end"], when=utc(r["end_time"]))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---------------------------------------------------------------------------------------------- HTML

_CSS = """
/* a line height of its own: rows as tall whatever the font (Noto Sans CJK's is 1.45, and a day of 16 stops took
   two pages with it); the pages' row counts below are measured with it */
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif; margin: 1.5em; color: #222;
       line-height: 1.25; }
h1 { font-size: 1.25em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 0 0 .3em; }
p.meta { color: #555; margin: .15em 0; font-size: .8em; }
table { border-collapse: collapse; width: 100%; font-size: .75em; table-layout: fixed; }
th, td { border: 1px solid #999; padding: 2px 4px; vertical-align: top; text-align: left; overflow: hidden; }
th { background: #eee; } td.num { text-align: right; white-space: nowrap; } td.t { white-space: nowrap; }
td.one { white-space: nowrap; text-overflow: ellipsis; }
td .clamp { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden; }
section.page { page-break-after: always; break-after: page; }
section.page:last-of-type { page-break-after: auto; break-after: auto; }
.swatch { display: inline-block; width: .9em; height: .9em; border-radius: 50%; margin-right: .3em; }
.dense table { font-size: .66em; } .dense td .clamp { -webkit-line-clamp: 1; }
.dense td, .dense th { padding: 1px 3px; line-height: 1.15; }
.dense2 table { font-size: .56em; } .dense2 p.meta { font-size: .7em; } .dense2 h1 { font-size: 1.05em; }
.dense2 td, .dense2 th { padding: 0 3px; line-height: 1.1; }
.later { font-size: .7em; font-weight: normal; border: 1px solid #777; border-radius: 3px; padding: 0 .3em; }
div.field { float: right; display: flex; gap: 6px; align-items: center; font-size: .75em; max-width: 26em; }
div.field svg { flex: none; } div.field .url { word-break: break-all; color: #555; }
@media print { body { margin: 0; } @page { size: A4 landscape; margin: 10mm; } }
"""

#: Stop-list columns of the printed page and their widths (% of the page).
_HTML_COLS = (("seq", 3), ("arrival", 5), ("departure", 5), ("name", 17), ("category", 10), ("address", 16),
              ("grid_name", 11), ("risk", 4), ("must_visit", 4), ("reason", 22))

#: Most stops printed with two lines of reason each on one page; longer routes get one line each.
_ROWS_TWO_LINES = 22
#: ... and with one line at the normal small size; longer routes (a car's long day) are printed smaller still.
_ROWS_ONE_LINE = 36

#: Longest reason printed per stop (characters; the whole reason is in the XLSX, GeoJSON and the map popup).
_PRINT_REASON_CHARS = 70


def _short(text_: str, n: int) -> str:
    return text_ if len(text_) <= n else text_[: n - 1] + "…"


def _route_page(doc: dict, r: dict, k: int, *, date: str, later: bool, t: dict, lang: str, field: str = ""
                ) -> list[str]:
    """One inspector-day of the printed stop list: a header (``field``: the field link block) and one line per
    stop, on one A4 page."""
    e = html.escape
    color = ROUTE_COLORS[k % len(ROUTE_COLORS)]
    tot = r["totals"]
    tag = f' <span class="later">{e(labels("patrol.backlog", lang)["later_day"])}</span>' if later else ""
    n = len(r["stops"])
    dense = "" if n <= _ROWS_TWO_LINES else " dense" if n <= _ROWS_ONE_LINE else " dense dense2"
    out = [f'<section class="page route{dense}">' + field,
           f'<h1><span class="swatch" style="background:{color}"></span>{e(t["title"])} · {e(r["inspector"])} · '
           f"{e(date)}{tag}</h1>",
           f"<p class=\"meta\">{t['plan']} {e(str(doc.get('plan_id') or ''))} · {t['source']}: "
           f"{e(travel_source_text(doc.get('travel_source'), lang))} · {t['solver']}: {e(str(doc.get('solver')))}</p>",
           f"<p class=\"meta\">{t['shift']} {_hm(r['shift_start'])}–{_hm(r['end_time']) or '—'} "
           f"({r['shift_minutes']:.0f} {t['min']}) · {t['mode']}: {e(_mode(r['mode'], lang))} · "
           f"{t['stops']} {tot['stops']} · {t['total_risk']} {tot['risk']:.2f} · {t['travel']} "
           f"{tot['travel_min']:.0f} {t['min']} · {t['service']} {tot['service_min']:.0f} {t['min']} · "
           f"{t['start']} {r['start'][0]:.5f}, {r['start'][1]:.5f}</p>",
           "<table><colgroup>" + "".join(f'<col style="width:{w}%">' for _, w in _HTML_COLS)
           + '<col style="width:3%"></colgroup><thead><tr>'
           + "".join(f"<th>{e(t[c])}</th>" for c, _ in _HTML_COLS) + "<th>✓</th></tr></thead><tbody>"]
    for s in r["stops"]:
        cells = []
        for c, _ in _HTML_COLS:
            if c == "risk":
                cells.append(f'<td class="num">{s["risk"]:.2f}</td>')
            elif c == "must_visit":
                cells.append(f"<td>{t['yes'] if s['must_visit'] else ''}</td>")
            elif c in ("arrival", "departure"):
                cells.append(f'<td class="t">{_hm(s[c])}</td>')
            elif c == "seq":
                cells.append(f'<td class="num">{s["seq"]}</td>')
            elif c == "category":
                cells.append(f'<td class="one">{e(_category(s, lang))}</td>')
            elif c == "grid_name":
                cells.append(f'<td class="one">{e(_grid(s))}</td>')
            elif c == "reason":
                cells.append(f'<td><div class="clamp">{e(_short(_print_reason(s, lang), _PRINT_REASON_CHARS))}'
                             "</div></td>")
            else:
                cells.append(f'<td class="one">{e(str(s.get(c) or ""))}</td>')
        out.append("<tr>" + "".join(cells) + '<td class="check"></td></tr>')
    out.append(f"<tr><td></td><td class=\"t\">{_hm(r['end_time'])}</td><td></td><td colspan=\"3\">{e(t['back'])} "
               f"({r['return_travel_min']:.0f} {t['min']})</td>" + "<td></td>" * (len(_HTML_COLS) - 5) + "</tr>")
    out.append("</tbody></table></section>")
    return out


def _backlog_page(doc: dict, t: dict, lang: str) -> list[str]:
    """The must-visits not planned today, most urgent first, with the day each is planned for or why not."""
    e = html.escape
    backlog = doc.get("backlog") or {}
    items = [it for it in backlog.get("items", []) if it.get("planned_date") != doc.get("date")]
    if not items:
        return []
    b = labels("patrol.backlog", lang)
    loads = " · ".join(f"{p['date']}: {p['stops']} {t['stops']}, {p['shift_used_min']:.0f}/{p['capacity_min']:.0f} "
                       f"{t['min']}" for p in backlog.get("per_day", []))
    out = ['<section class="page backlog">', f"<h2>{e(b['title'])} · {e(str(doc.get('date') or ''))}</h2>",
           f'<p class="meta">{e(b["day_load"])}: {e(loads)}</p>',
           '<table><colgroup><col style="width:5%"><col style="width:8%"><col style="width:24%">'
           '<col style="width:15%"><col style="width:10%"><col style="width:38%"></colgroup><thead><tr>'
           f"<th>{e(b['rank'])}</th><th>{e(t['site_id'])}</th><th>{e(t['name'])}</th><th>{e(t['grid_name'])}</th>"
           f"<th>{e(b['urgency'])}</th><th>{e(b['planned_date'])}</th></tr></thead><tbody>"]
    for it in items:
        when = (f"{it['planned_date']} · {it.get('inspector', '')} #{it.get('seq', '')}" if it.get("planned_date")
                else it.get("reason") or b["unplanned"])
        out.append(f'<tr><td class="num">{it["rank"]}</td><td>{e(str(it["site_id"]))}</td>'
                   f'<td class="one">{e(str(it.get("name") or ""))}</td>'
                   f'<td class="one">{e(str(it.get("grid_name") or it.get("grid_code") or ""))}</td>'
                   f'<td class="one">{e(it.get("urgency") or "")}</td>'
                   f'<td><div class="clamp">{e(when)}</div></td></tr>')
    out.append("</tbody></table></section>")
    return out


def qr_svg(url: str, *, scale: int = 3) -> str:
    """An inline SVG QR code of ``url`` (segno, error correction M), drawn offline."""
    import segno

    return segno.make(url, error="m", micro=False).svg_inline(scale=scale, border=2)


def _field_block(url: str | None, lang: str) -> str:
    """The field link of a route's page of the stop list: its QR code (an absolute URL) and the link."""
    if not url:
        return ""
    e = html.escape
    qr = qr_svg(url) if url.startswith(("http://", "https://")) else ""
    return (f'<div class="field">{qr}<div><b>{e(text("field.link", lang))}</b><br>{e(text("field.scan", lang))}'
            f'<br><span class="url">{e(unquote(url))}</span></div></div>')  # readable; the QR has the URL


def to_html(doc: dict, *, lang: str = "zh", links: dict[str, str] | None = None) -> str:
    """A printable stop list: one A4-landscape page per inspector-day (today's routes, then the later working days
    the must-visit backlog is planned on), each stop on one or two lines with a check box; then the must-visits
    not planned today, most urgent first, with the day each is planned for (or why it is not). With ``links``,
    each inspector's page of today carries the field link and its QR code (the link's key ends with the day)."""
    t = _labels(lang)
    e = html.escape
    out = [f'<!DOCTYPE html><html lang="{text("common.html_lang", lang)}"><head><meta charset="utf-8">',
           f"<title>{e(t['title'])} {e(str(doc.get('date') or ''))}</title><style>{_CSS}</style></head><body>"]
    date = str(doc.get("date") or "")
    for k, r in enumerate(doc["routes"]):
        out += _route_page(doc, r, k, date=date, later=False, t=t, lang=lang,
                           field=_field_block((links or {}).get(r["inspector"]), lang))
    for day in (doc.get("backlog") or {}).get("later", []):
        for k, r in enumerate(day["routes"]):
            if r["stops"]:
                out += _route_page(doc, r, k, date=day["date"], later=True, t=t, lang=lang)
    out += _backlog_page(doc, t, lang)
    if doc.get("unvisited_must") and not doc.get("backlog"):
        out.append(f'<section class="page"><h2>{e(t["unvisited"])}</h2><table><thead><tr><th>{e(t["site_id"])}</th>'
                   f"<th>{e(t['name'])}</th><th>{e(t['why'])}</th></tr></thead><tbody>")
        for u in doc["unvisited_must"]:
            why = "; ".join([u.get(f"reason_{lang}") or u["reason"],
                             *[x.get(lang, "") for x in u.get("must_reasons", [])]])
            out.append(f"<tr><td>{e(str(u['site_id']))}</td><td>{e(str(u.get('name') or ''))}</td>"
                       f"<td>{e(why)}</td></tr>")
        out.append("</tbody></table></section>")
    out.append("</body></html>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- XLSX


def _sheet_name(name: str, used: set[str]) -> str:
    base = "".join("_" if ch in '[]:*?/\\' else ch for ch in str(name))[:28] or "sheet"
    out, i = base, 2
    while out.lower() in used:
        out, i = f"{base[:25]}~{i}", i + 1
    used.add(out.lower())
    return out


#: Stop-list columns in minutes, written with one decimal.
_MINUTE_COLUMNS = ("travel_min", "wait_min", "service_min")


def to_xlsx(doc: dict, *, lang: str = "zh", links: dict[str, str] | None = None) -> bytes:
    """An Excel workbook: a summary sheet (with ``links``, each inspector's field link), then one sheet per
    inspector with the stop list."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    t = _labels(lang)
    wb = Workbook()
    ws = wb.active
    used: set[str] = set()
    ws.title = _sheet_name(t["summary"], used)
    bold, fill = Font(bold=True), PatternFill("solid", fgColor="EEEEEE")
    ws.append([t["date"], doc.get("date")])
    ws.append([t["plan"], doc.get("plan_id")])
    ws.append([t["source"], travel_source_text(doc.get("travel_source"), lang)])
    ws.append([t["solver"], doc.get("solver")])
    ws.append([])
    head = [t["inspector"], t["mode"], t["shift"], t["stops"], t["total_risk"], t["travel"] + f" ({t['min']})",
            t["service"] + f" ({t['min']})", t["end"], *([text("field.link", lang)] if links else [])]
    ws.append(head)
    for c in ws[ws.max_row]:
        c.font, c.fill = bold, fill
    for r in doc["routes"]:
        tot = r["totals"]
        ws.append([r["inspector"], _mode(r["mode"], lang), _hm(r["shift_start"]), tot["stops"],
                   round(tot["risk"], 3), tot["travel_min"], tot["service_min"], _hm(r["end_time"]),
                   *([links.get(r["inspector"])] if links else [])])
    if doc.get("unvisited_must"):
        ws.append([])
        ws.append([t["unvisited"]])
        ws.cell(ws.max_row, 1).font = bold
        for u in doc["unvisited_must"]:
            ws.append([u["site_id"], u.get("name"), u.get(f"reason_{lang}") or u["reason"]])
    for i, w in enumerate((16, 30, 12, 8, 10, 12, 12, 10), start=1):
        ws.column_dimensions[get_column_letter(i)].width = w
    widths = {"seq": 5, "arrival": 7, "start_time": 7, "departure": 7, "name": 24, "category": 18, "address": 28,
              "grid_name": 18, "grid_code": 17, "risk": 7, "must_visit": 6, "travel_min": 9, "wait_min": 9,
              "service_min": 9, "reason": 60, "site_id": 10, "lng": 12, "lat": 12}
    for r in doc["routes"]:
        sh = wb.create_sheet(_sheet_name(r["inspector"], used))
        sh.append([t[c] for c in STOP_COLUMNS])
        for c in sh[1]:
            c.font, c.fill = bold, fill
        for s in r["stops"]:
            row = []
            for c in STOP_COLUMNS:
                if c in ("arrival", "start_time", "departure"):
                    row.append(_hm(s[c]))
                elif c == "category":
                    row.append(_category(s, lang))
                elif c == "reason":
                    row.append(_reason(s, lang))
                elif c == "must_visit":
                    row.append(t["yes"] if s["must_visit"] else "")
                elif c in _MINUTE_COLUMNS:
                    row.append(None if s.get(c) is None else round(float(s[c]), 1))
                elif c == "grid_name":
                    row.append(_grid(s))
                else:
                    row.append(s.get(c))
            sh.append(row)
            for c in _MINUTE_COLUMNS:   # minutes all with one decimal (6.0, 3.2), not 6 beside 3.16
                sh.cell(sh.max_row, STOP_COLUMNS.index(c) + 1).number_format = "0.0"
        sh.append([None, _hm(r["end_time"]), None, None, f"{t['back']} ({r['return_travel_min']:.0f} {t['min']})"])
        for i, c in enumerate(STOP_COLUMNS, start=1):
            sh.column_dimensions[get_column_letter(i)].width = widths[c]
        for row in sh.iter_rows(min_row=2, min_col=STOP_COLUMNS.index("reason") + 1,
                                max_col=STOP_COLUMNS.index("reason") + 1):
            for c in row:
                c.alignment = Alignment(wrap_text=True, vertical="top")
        sh.freeze_panes = "A2"
    _backlog_sheet(wb, doc, used, t, lang)
    buf = io.BytesIO()
    save_values_only(wb, buf)
    return buf.getvalue()


def _backlog_sheet(wb, doc: dict, used: set[str], t: dict, lang: str) -> None:
    """A sheet of every must-visit by urgency with the day it is planned for (or why it is not)."""
    from openpyxl.styles import Font

    items = (doc.get("backlog") or {}).get("items") or []
    if not items:
        return
    b = labels("patrol.backlog", lang)
    sh = wb.create_sheet(_sheet_name(b["title"], used))
    sh.append([b["rank"], t["site_id"], t["name"], t["grid_name"], t["grid_code"], t["risk"], b["urgency"],
               b["planned_date"], t["inspector"], t["seq"], t["why"]])
    for c in sh[1]:
        c.font = Font(bold=True)
    for it in items:
        sh.append([it["rank"], it["site_id"], it.get("name"), it.get("grid_name"), it.get("grid_code"), it["risk"],
                   it.get("urgency"), it.get("planned_date") or b["unplanned"], it.get("inspector"), it.get("seq"),
                   it.get("reason") or "; ".join(x.get(lang, "") for x in it.get("must_reasons", []))])
    sh.freeze_panes = "A2"


# ---------------------------------------------------------------------------------------------- map


#: How the street network is drawn under the routes: kind -> (colour, weight in pixels).
ROAD_STYLES = {"arterial": ("#b9a77c", 5), "secondary": ("#c9bb98", 3.5), "local": ("#c4c4c4", 2),
               "alley": ("#d4d4d4", 1.2), "entrance": ("#dddddd", 1)}


def plan_map(doc: dict, *, lang: str = "zh", crs: str = "wgs84", tiles: list[tuple[str, str, str]] | None = None,
             grids=None, roads=None):
    """A folium map of the plan: one colour per inspector, numbered stops with arrival times, site popups.

    Parameters
    ----------
    doc
        A plan document.
    lang
        Labels in ``zh`` or ``en``.
    crs
        ``wgs84`` or ``gcj02`` (for GCJ-02 tiles such as AMap): every overlay is converted.
    tiles
        Tile layers as ``(url, subdomains, attribution)``; default none (the page is complete offline).
    grids
        Optional GeoDataFrame (WGS84) of micro-grids with ``code`` and ``name``, drawn as a light base with
        their names in tooltips, so the routes read without tiles (see :func:`plan_grids`).
    roads
        Optional GeoDataFrame (WGS84) of streets with ``kind`` and ``name`` (see :func:`plan_roads`), drawn under
        the routes. Routes follow their street ``path`` when the plan has one.

    Returns
    -------
    folium.Map
        Render it with :func:`civicgrid.maps.offline.render_offline` for a page without CDN links.
    """
    import folium

    t = _labels(lang)
    e = html.escape
    pts = [_xy(x, y, crs) for r in doc["routes"] for x, y in
           [r["start"], r["end"], *[(s["lng"], s["lat"]) for s in r["stops"]]]]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    m = folium.Map(location=[(min(ys) + max(ys)) / 2, (min(xs) + max(xs)) / 2], zoom_start=14, tiles=None,
                   control_scale=True)
    m.get_root().title = f"{t['title']} {doc.get('date') or ''}"
    for i, (url, subs, attr) in enumerate(tiles or []):
        folium.TileLayer(tiles=url, attr=attr, subdomains=subs, max_zoom=19, overlay=i > 0, control=False).add_to(m)
    m.fit_bounds([[min(ys), min(xs)], [max(ys), max(xs)]], padding=(40, 40))
    if grids is not None and len(grids):
        base = to_crs_frame(grids[["code", "name", "geometry"]], crs)
        folium.GeoJson(
            json.loads(base.to_json(drop_id=True, ensure_ascii=False)), name=e(t["grids"]), control=True,
            style_function=lambda _: {"color": "#7a8aa6", "weight": 1, "dashArray": "4 3", "fillColor": "#f2f1ec",
                                       "fillOpacity": 1},
            tooltip=SafeGeoJsonTooltip(["name", "code"], aliases=[t["grid_name"], t["grid_code"]]),
        ).add_to(m)
    if roads is not None and len(roads):
        _draw_roads(roads, crs=crs, name=t["roads"]).add_to(m)
    for k, r in enumerate(doc["routes"]):
        color = ROUTE_COLORS[k % len(ROUTE_COLORS)]
        label = _route_label(r, lang)
        group = folium.FeatureGroup(name=e(label)).add_to(m)
        line = [_xy(*r["start"], crs), *[_xy(s["lng"], s["lat"], crs) for s in r["stops"]], _xy(*r["end"], crs)]
        if r.get("path"):
            line = [_xy(x, y, crs) for x, y in r["path"]]
        folium.PolyLine([[y, x] for x, y in line], color=color, weight=4, opacity=0.8, tooltip=e(label)).add_to(group)
        sx, sy = _xy(*r["start"], crs)
        ex, ey = _xy(*r["end"], crs)
        same = abs(sx - ex) < 1e-6 and abs(sy - ey) < 1e-6
        start_tip = f"{r['inspector']} · {t['start']} {_hm(r['shift_start'])}"
        if same:
            start_tip += f" · {t['end']} {_hm(r['end_time'])}"
        folium.Marker([sy, sx], icon=_end_icon(color, "S" if not same else "S/E", square=False),
                      tooltip=e(start_tip), z_index_offset=1000).add_to(group)
        if not same:
            folium.Marker([ey, ex], icon=_end_icon(color, "E", square=True), z_index_offset=1000,
                          tooltip=e(f"{r['inspector']} · {t['end']} {_hm(r['end_time'])}")).add_to(group)
        for s in r["stops"]:
            _stop_marker(s, r, color=color, t=t, lang=lang, crs=crs).add_to(group)
    folium.LayerControl(collapsed=False).add_to(m)
    m.get_root().html.add_child(RawHtml(_legend_html(t, roads is not None and len(roads) > 0)))
    m.get_root().script.add_child(RawHtml(_DECLUTTER_JS.replace("MAP", m.get_name())))
    return m


def _end_icon(color: str, label: str, *, square: bool):
    """The start (circle, S) or end (square, E) of a route; S/E when they are the same point."""
    import folium

    radius = "3px" if square else "50%"
    return folium.DivIcon(
        html=(f'<div class="cg-end" style="background:#fff;color:{color};border:3px solid {color};'
              f'border-radius:{radius};box-sizing:border-box;min-width:28px;height:28px;line-height:22px;'
              f'text-align:center;font:bold 11px/22px sans-serif;padding:0 2px;box-shadow:0 0 3px #555">{label}</div>'),
        icon_size=(28, 28), icon_anchor=(14, 14))


def _legend_html(t: dict, with_roads: bool) -> str:
    """The map's legend: start and end, stops (must-visit ring), arrival times, streets."""
    e = html.escape
    rows = [
        '<span style="display:inline-block;width:18px;height:18px;border:3px solid #555;border-radius:50%;'
        'font:bold 9px sans-serif;text-align:center;line-height:18px">S</span> ' + e(t["legend_start"]),
        '<span style="display:inline-block;width:18px;height:18px;border:3px solid #555;border-radius:3px;'
        'font:bold 9px sans-serif;text-align:center;line-height:18px">E</span> ' + e(t["legend_end"]),
        '<span style="display:inline-block;width:20px;height:20px;border-radius:50%;background:#555;color:#fff;'
        'border:2px solid #fff;font:bold 10px sans-serif;text-align:center;line-height:20px">3</span> '
        + e(t["legend_stop"]),
        '<span style="display:inline-block;width:20px;height:20px;border-radius:50%;background:#555;color:#fff;'
        'border:2px solid #000;font:bold 10px sans-serif;text-align:center;line-height:20px">3</span> '
        + e(t["legend_must"]),
        '<span style="font:11px sans-serif;background:#fffc;border:1px solid #bbb;padding:0 2px">10:42</span> '
        + e(t["legend_time"]),
    ]
    if with_roads:
        for kind in ("arterial", "local", "alley"):
            c, w = ROAD_STYLES[kind]
            rows.append(f'<span style="display:inline-block;width:26px;height:{w}px;background:{c};'
                        f'vertical-align:middle"></span> {e(t["road_" + kind])}')
    body = "".join(f'<div style="margin:3px 0">{r}</div>' for r in rows)
    # a <details> box: open on a desktop, closed on a narrow screen (it would cover the stops)
    return (f'<details class="cg-legend" style="position:fixed;right:10px;bottom:22px;z-index:1000;background:#fff;'
            f'border:1px solid #999;border-radius:4px;padding:5px 8px;font:12px sans-serif;'
            f'box-shadow:0 1px 4px #0003"><summary style="cursor:pointer;font-weight:bold">{e(t["legend"])}'
            f"</summary>{body}</details><script>document.querySelector('.cg-legend').open = "
            f"window.innerWidth >= 700;</script>")


#: Keeps stop markers and their time labels apart at every zoom: markers that would cover one another are moved
#: aside on a small circle (with a thin leader to the site), and each time label takes the first free side of
#: its marker (right, left, above, below); a label with no free side is hidden (the time stays in the tooltip).
_DECLUTTER_JS = """
window.addEventListener('load', function () {
  var map = MAP;
  function boxes() {
    var out = [];
    document.querySelectorAll('.cg-stop, .cg-end').forEach(function (el) { out.push(el); });
    return out;
  }
  function hit(a, b) { return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom; }
  function rect(el) { var r = el.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top,
    bottom: r.bottom}; }
  function run() {
    var els = boxes(), placed = [];
    els.forEach(function (el) { el.style.transform = ''; var l = el.parentNode.querySelector('.cg-time');
      if (l) { l.style.display = ''; } var k = el.parentNode.querySelector('.cg-lead');
      if (k) { k.style.display = 'none'; } });
    els.forEach(function (el) {
      var r = rect(el), dx = 0, dy = 0, step = 0;
      while (placed.some(function (p) { return hit(p, {left: r.left + dx - 1, right: r.right + dx + 1,
             top: r.top + dy - 1, bottom: r.bottom + dy + 1}); }) && step < 24) {
        step += 1;
        var ang = step * 2.4, rad = 14 + 4 * step;
        dx = Math.round(rad * Math.cos(ang)); dy = Math.round(rad * Math.sin(ang));
      }
      if (dx || dy) {
        el.style.transform = 'translate(' + dx + 'px,' + dy + 'px)';
        var k = el.parentNode.querySelector('.cg-lead');
        if (k) { var len = Math.sqrt(dx * dx + dy * dy), a = Math.atan2(dy, dx) * 180 / Math.PI;
          k.style.width = len + 'px'; k.style.transform = 'rotate(' + a + 'deg)'; k.style.display = ''; }
      }
      placed.push({left: r.left + dx, right: r.right + dx, top: r.top + dy, bottom: r.bottom + dy});
    });
    els.forEach(function (el) {
      var l = el.parentNode.querySelector('.cg-time');
      if (!l) { return; }
      var m = rect(el), w = l.offsetWidth, h = l.offsetHeight, ok = false;
      var spots = [[m.right + 2, m.top + 3], [m.left - w - 2, m.top + 3], [m.left, m.top - h - 2],
                   [m.left, m.bottom + 2]];
      var base = rect(el.parentNode);
      for (var i = 0; i < spots.length && !ok; i++) {
        var b = {left: spots[i][0], right: spots[i][0] + w, top: spots[i][1], bottom: spots[i][1] + h};
        if (!placed.some(function (p) { return hit(p, b); })) {
          l.style.left = (spots[i][0] - base.left) + 'px'; l.style.top = (spots[i][1] - base.top) + 'px';
          placed.push(b); ok = true;
        }
      }
      if (!ok) { l.style.display = 'none'; }
    });
  }
  map.on('zoomend moveend overlayadd overlayremove', function () { setTimeout(run, 0); });
  map.whenReady(function () { setTimeout(run, 50); });
});
"""


def _draw_roads(roads, *, crs: str, name: str):
    """The streets as one GeoJSON layer, styled by kind (arterials widest), not interactive."""
    import folium

    base = to_crs_frame(roads[["kind", "name", "geometry"]], crs)
    order = {k: i for i, k in enumerate(("entrance", "alley", "local", "secondary", "arterial"))}
    base = base.assign(_o=base["kind"].map(order).fillna(0)).sort_values("_o").drop(columns="_o")

    def style(feature):
        c, w = ROAD_STYLES.get(feature["properties"]["kind"], ("#cccccc", 1))
        return {"color": c, "weight": w, "opacity": 1}

    return folium.GeoJson(json.loads(base.to_json(drop_id=True, ensure_ascii=False)), name=html.escape(name),
                          style_function=style, control=True, interactive=False)


def _route_label(r: dict, lang: str) -> str:
    """A route's layer name and tooltip on the plan map."""
    tot = r["totals"]
    return text("patrol.export.route_label", lang, inspector=r["inspector"], mode=_mode(r["mode"], lang),
                stops=tot["stops"], risk=tot["risk"], start=_hm(r["shift_start"]), end=_hm(r["end_time"]))


def _stop_marker(s: dict, r: dict, *, color: str, t: dict, lang: str, crs: str):
    """A stop on the plan map: its number in the route's colour (black ring: must-visit), arrival time, popup."""
    import folium

    e = html.escape
    x, y = _xy(s["lng"], s["lat"], crs)
    ring = "#000" if s["must_visit"] else "#fff"
    icon = folium.DivIcon(
        html=(f'<div class="cg-lead" style="position:absolute;left:12px;top:11px;height:2px;background:{color};'
              f'transform-origin:0 50%;display:none"></div>'
              f'<div class="cg-stop" style="position:absolute;left:0;top:0;background:{color};color:#fff;'
              f'border:2px solid {ring};border-radius:50%;width:24px;height:24px;line-height:20px;'
              f'text-align:center;font:bold 12px sans-serif;box-sizing:border-box;box-shadow:0 0 3px #555">'
              f'{s["seq"]}</div>'
              f'<div class="cg-time" style="position:absolute;left:26px;top:3px;font:11px sans-serif;'
              f'background:#fffc;padding:0 2px;white-space:nowrap">{_hm(s["arrival"])}</div>'),
        icon_size=(24, 24), icon_anchor=(12, 12))
    rows = [(t["inspector"], f"{r['inspector']} #{s['seq']}"), (t["name"], s.get("name") or s["site_id"]),
            (t["category"], _category(s, lang)), (t["address"], s.get("address") or ""),
            (t["grid_name"], _grid(s)),
            (t["arrival"], f"{_hm(s['arrival'])} → {_hm(s['departure'])}"),
            (t["travel_min"], f"{s['travel_min']:.1f}"), (t["service_min"], f"{s['service_min']:.0f}"),
            (t["risk"], f"{s['risk']:.2f}"), (t["must_visit"], t["yes"] if s["must_visit"] else "—"),
            (t["reason"], _reason(s, lang))]
    body = "".join(f"<tr><th style='text-align:left;padding-right:6px;vertical-align:top'>{e(str(a))}</th>"
                   f"<td>{e(str(b))}</td></tr>" for a, b in rows)
    return folium.Marker([y, x], icon=icon, tooltip=e(f"{s['seq']}. {s.get('name') or s['site_id']} "
                                                      f"{_hm(s['arrival'])}"),
                         popup=folium.Popup(f"<table style='font-size:12px'>{body}</table>", max_width=380))


def plan_roads(store: Store, doc: dict, *, margin_deg: float = 0.005):
    """The store's streets (table ``roads``) around a plan, for :func:`plan_map`; empty without a network."""
    import geopandas as gpd
    import shapely

    has = store.sql("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'roads' "
                    "AND table_catalog = current_database()")["n"].iloc[0]
    pts = [p for r in doc["routes"] for p in [r["start"], r["end"], *[(s["lng"], s["lat"]) for s in r["stops"]]]]
    if not has or not pts:
        return gpd.GeoDataFrame({"kind": [], "name": []}, geometry=[], crs=4326)
    x0, y0 = min(p[0] for p in pts) - margin_deg, min(p[1] for p in pts) - margin_deg
    x1, y1 = max(p[0] for p in pts) + margin_deg, max(p[1] for p in pts) + margin_deg
    frame = store.sql(
        """
        SELECT kind, name, ST_AsWKB(geom) AS wkb FROM roads
        WHERE geom IS NOT NULL AND ST_Intersects(geom, ST_MakeEnvelope(?, ?, ?, ?))
        ORDER BY road_id
        """, [x0, y0, x1, y1])
    geometry = shapely.from_wkb([bytes(b) for b in frame.pop("wkb")]) if len(frame) else []
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=4326)


def plan_grids(store: Store, doc: dict, *, margin_deg: float = 0.01):
    """The micro-grids around a plan (its stops, starts and ends plus ``margin_deg``), for :func:`plan_map`."""
    import geopandas as gpd
    import shapely

    pts = [p for r in doc["routes"] for p in [r["start"], r["end"], *[(s["lng"], s["lat"]) for s in r["stops"]]]]
    x0, y0 = min(p[0] for p in pts) - margin_deg, min(p[1] for p in pts) - margin_deg
    x1, y1 = max(p[0] for p in pts) + margin_deg, max(p[1] for p in pts) + margin_deg
    frame = store.sql(
        """
        SELECT code, name, ST_AsWKB(geom) AS wkb FROM grids
        WHERE geom IS NOT NULL AND ST_Intersects(geom, ST_MakeEnvelope(?, ?, ?, ?))
        ORDER BY code
        """, [x0, y0, x1, y1])
    geometry = shapely.from_wkb([bytes(b) for b in frame.pop("wkb")]) if len(frame) else []
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=4326)


# ---------------------------------------------------------------------------------------------- files


def export_bytes(doc: dict, fmt: str, *, lang: str = "zh", crs: str = "wgs84",
                 links: dict[str, str] | None = None) -> bytes:
    """One export of a plan as bytes: ``geojson``, ``gpx``, ``html`` or ``xlsx`` (``links``: the inspectors'
    field links, listed by the GeoJSON, HTML and XLSX)."""
    if fmt not in FORMATS:
        msg = f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}"
        raise InvalidParameterError(msg)
    if fmt == "geojson":
        return json.dumps(to_geojson(doc, lang=lang, crs=crs, links=links), ensure_ascii=False, indent=1).encode()
    if fmt == "gpx":
        return to_gpx(doc, lang=lang).encode()
    if fmt == "html":
        return to_html(doc, lang=lang, links=links).encode()
    return to_xlsx(doc, lang=lang, links=links)


def write_exports(doc: dict, out_dir: str | os.PathLike, *, lang: str = "zh", stem: str | None = None,
                  links: dict[str, str] | None = None) -> list[Path]:
    """Write the plan JSON and every export format to ``out_dir``; return the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"patrol-{doc.get('date') or 'plan'}-{doc.get('plan_id') or 'unsaved'}"
    files = [out / f"{stem}.json"]
    files[0].write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    for fmt, (suffix, _) in FORMATS.items():
        path = out / f"{stem}{suffix}"
        path.write_bytes(export_bytes(doc, fmt, lang=lang, links=links))
        files.append(path)
    return files
