"""The inspectors' field page: today's stops on a phone, navigation links, and recording each visit (issue 15).

``/field/{plan_id}/{inspector}?key=…`` shows one inspector's stops of a stored plan in order, a map of the route
(Leaflet from the service's vendored files, no tiles, the micro-grids as a light base), and per stop

* navigation links: a ``geo:`` URI (WGS84, any map app), AMap (高德, GCJ-02) and Baidu (百度, BD-09) with the
  coordinates each service expects (:func:`nav_links`, converted by :mod:`civicgrid.geo.coords`);
* a form recording the visit (conforming, or the problem types found, a note and a photo), sent to
  ``/field/{plan_id}/{inspector}/visits`` and recorded by :func:`civicgrid.sites.visits.record_visit`.

A visit recorded without a connection waits in the phone's IndexedDB with its key and photo and is sent when the
connection returns; the key makes a resend harmless. A small service worker (``/field/sw.js``) keeps the page and
its scripts for reopening it offline (browsers allow service workers on HTTPS and on ``localhost`` only).

The link's ``key`` (:func:`civicgrid.geo.users.field_key`) opens the page for that plan and inspector until the
end of the plan's day; :func:`field_links` lists each inspector's link for the exports
(:func:`civicgrid.sites.patrol.export.qr_svg` draws its QR code, offline).
"""

from __future__ import annotations

import html
import json
from datetime import date
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
from civicgrid.geo.coords import from_wgs84
from civicgrid.geo.errors import InvalidParameterError, NotFoundError
from civicgrid.geo.store import Store
from civicgrid.geo.texts import DEFAULT_LANG, LANGS, check_lang, labels, name_column, text
from civicgrid.geo.times import store_now
from civicgrid.geo.users import check_field_key, field_key, field_secret
from civicgrid.maps.offline import vendor_url
from civicgrid.sites.patrol.export import ROUTE_COLORS, plan_grids

#: The page template and the service worker, beside this module.
_TEMPLATE = Path(__file__).with_name("field.html")
SERVICE_WORKER = Path(__file__).with_name("field_sw.js")
#: Travel modes of a plan -> AMap ``mode`` and Baidu ``mode`` of their navigation links.
_AMAP_MODE = {"walk": "walk", "bike": "ride", "car": "car"}
_BAIDU_MODE = {"walk": "walking", "bike": "riding", "car": "driving"}


def plan_date(doc: dict) -> date:
    """The day of a plan document (its ``date``)."""
    try:
        return date.fromisoformat(str(doc.get("date"))[:10])
    except ValueError:
        msg = f"plan {doc.get('plan_id')} has no readable date ({doc.get('date')!r})"
        raise InvalidParameterError(msg) from None


def field_path(plan_id: str, inspector: str, key: str, *, lang: str = DEFAULT_LANG) -> str:
    """The path (and query) of an inspector's field page: ``/field/<plan>/<inspector>?key=…``."""
    query = {"key": key, **({"lang": lang} if lang != DEFAULT_LANG else {})}
    return f"/field/{quote(str(plan_id), safe='')}/{quote(str(inspector), safe='')}?{urlencode(query)}"


def field_links(store: Store | str, doc: dict, *, base_url: str | None = None, lang: str = "zh") -> dict[str, str]:
    """Each inspector's field link to the stored plan ``doc``: ``{inspector: url}``, the URL starting with
    ``base_url`` (e.g. ``http://10.1.2.3:8000``; without one, the path alone). The keys are valid until the end of
    the plan's day."""
    if not doc.get("plan_id"):
        msg = "an unsaved plan has no field links (store it first)"
        raise InvalidParameterError(msg)
    secret = field_secret(store)
    day = plan_date(doc)
    base = (base_url or "").rstrip("/")
    return {r["inspector"]: base + field_path(doc["plan_id"], r["inspector"],
                                              field_key(secret, plan_id=doc["plan_id"], inspector=r["inspector"],
                                                        day=day), lang=lang)
            for r in doc["routes"]}


def check_access(store: Store, doc: dict, inspector: str, key: str | None) -> dict:
    """The route of ``inspector`` in the plan ``doc`` when ``key`` is that inspector's field key for the plan and
    the plan's day has not ended; :class:`~civicgrid.geo.errors.AuthenticationError` (401) otherwise."""
    day = plan_date(doc)
    check_field_key(field_secret(store), key, plan_id=str(doc.get("plan_id")), inspector=inspector, day=day,
                    now=store_now(store))
    for r in doc["routes"]:
        if r["inspector"] == inspector:
            return r
    msg = f"inspector {inspector!r} has no route in plan {doc.get('plan_id')}"
    raise NotFoundError(msg)


def nav_links(lng: float, lat: float, name: str, *, mode: str = "walk") -> dict[str, str]:
    """Navigation links to a point given in WGS84: ``geo`` (RFC 5870 ``geo:`` URI, WGS84, for any map app),
    ``amap`` (高德 URI API, GCJ-02, opens the app when installed) and ``baidu`` (百度地图 app URI, BD-09)."""
    (gx,), (gy,) = from_wgs84(np.array([lng]), np.array([lat]), "gcj02")
    (bx,), (by,) = from_wgs84(np.array([lng]), np.array([lat]), "bd09")
    label = str(name or "").replace(",", " ").replace("|", " ")
    return {
        "geo": f"geo:{lat:.6f},{lng:.6f}?q={lat:.6f},{lng:.6f}({quote(label)})",
        "amap": "https://uri.amap.com/navigation?" + urlencode(
            {"to": f"{gx:.6f},{gy:.6f},{label}", "mode": _AMAP_MODE.get(mode, "walk"), "coordinate": "gaode",
             "callnative": 1, "src": "civicgrid"}),
        "baidu": "baidumap://map/direction?" + urlencode(
            {"destination": f"latlng:{by:.6f},{bx:.6f}|name:{label}", "coord_type": "bd09ll",
             "mode": _BAIDU_MODE.get(mode, "walking"), "src": "civicgrid.field"}),
    }


def recorded_visits(store: Store, plan_id: str, inspector: str) -> dict[int, dict]:
    """The visits already recorded for a plan by an inspector, by site: ``inspection_id, time, conforming,
    problems_found`` (the last one per site)."""
    frame = store.sql("SELECT site_id, inspection_id, time, conforming, problems_found FROM inspections "
                      "WHERE plan_id = ? AND inspector = ? ORDER BY time", [str(plan_id), str(inspector)])
    return {int(r.site_id): {"inspection_id": int(r.inspection_id), "time": str(r.time)[:16],
                             "conforming": bool(r.conforming), "problems_found": int(r.problems_found)}
            for r in frame.itertuples()}


def _types(store: Store, lang: str) -> list[dict]:
    col = name_column(lang)
    major = name_column(lang, "major")
    frame = store.sql(f"SELECT code, major_code, coalesce({major}, major_zh) AS major, "
                      f"coalesce({col}, name_zh) AS name FROM problem_types ORDER BY code")
    return frame.to_dict("records")


def field_page(store: Store, doc: dict, inspector: str, *, key: str, lang: str = "zh") -> str:
    """The field page of ``inspector``'s route in the stored plan ``doc`` (call :func:`check_access` first)."""
    lang = check_lang(lang)
    route = next(r for r in doc["routes"] if r["inspector"] == inspector)
    k = [r["inspector"] for r in doc["routes"]].index(inspector)
    t = labels("field", lang)
    ex = labels("patrol.export", lang)
    done = recorded_visits(store, doc["plan_id"], inspector)
    stops = []
    for s in route["stops"]:
        reasons = text("common.reason_sep", lang).join(r.get(lang, "") for r in s.get("reasons", [])) \
            or s.get("reason", "")
        stops.append({"seq": s["seq"], "site_id": int(s["site_id"]), "name": s.get("name") or str(s["site_id"]),
                      "category": s.get(name_column(lang, "category")) or s.get("category") or "",
                      "address": s.get("address") or "", "arrival": (s.get("arrival") or "")[11:16],
                      "departure": (s.get("departure") or "")[11:16], "must": bool(s.get("must_visit")),
                      "reason": reasons, "lng": s["lng"], "lat": s["lat"],
                      "nav": nav_links(s["lng"], s["lat"], s.get("name") or "", mode=route["mode"]),
                      "done": done.get(int(s["site_id"]))})
    grids = plan_grids(store, {"routes": [route]}, margin_deg=0.004) if route["stops"] else None
    day = plan_date(doc)
    data = {
        "plan_id": doc["plan_id"], "inspector": inspector, "key": key, "lang": lang, "date": day.isoformat(),
        "color": ROUTE_COLORS[k % len(ROUTE_COLORS)], "start": route["start"], "end": route["end"],
        "path": route.get("path"),  # the streets walked or ridden, when the plan was made on a network
        "stops": stops, "types": _types(store, lang), "t": t,
        "post": f"/field/{quote(str(doc['plan_id']), safe='')}/{quote(inspector, safe='')}/visits",
        "grids": json.loads(grids[["name", "geometry"]].to_json(drop_id=True, ensure_ascii=False))
        if grids is not None and len(grids) else None,
    }
    other = next(x for x in LANGS if x != lang)  # the page's link to the other language
    page = _TEMPLATE.read_text(encoding="utf-8")
    fills = {
        "{{html_lang}}": text("common.html_lang", lang), "{{title}}": html.escape(f"{t['title']} · {inspector}"),
        "{{heading}}": html.escape(f"{t['title']} {day.isoformat()}"), "{{inspector}}": html.escape(inspector),
        "{{mode}}": html.escape(labels("patrol.mode", lang).get(route["mode"], route["mode"])),
        "{{shift}}": html.escape(f"{ex['shift']} {(route.get('shift_start') or '')[11:16]}–"
                                 f"{(route.get('end_time') or '')[11:16]}"),
        "{{valid}}": html.escape(text("field.valid_until", lang, day=day.isoformat())),
        "{{other_lang_url}}": html.escape(field_path(doc["plan_id"], inspector, key, lang=other)),
        "{{other_lang}}": html.escape(t["lang_other"]),
        "{{leaflet_css}}": vendor_url("leaflet.css"), "{{leaflet_js}}": vendor_url("leaflet.js"),
        "{{data}}": json.dumps(data, ensure_ascii=False).replace("</", "<\\/"),
    }
    for mark, value in fills.items():
        page = page.replace(mark, value)
    return page
