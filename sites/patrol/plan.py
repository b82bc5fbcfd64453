"""A day's patrol plan from the store: inspectors' shifts, candidates, routes and the plan document."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from civicgrid.geo.coords import to_wgs84
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.geo.texts import bilingual, check_lang, name_column, text
from civicgrid.geo.times import now_local, store_timezone
from civicgrid.sites.patrol.backlog import plan_backlog, urgency_prizes, urgent_pool
from civicgrid.sites.patrol.candidates import MAX_CANDIDATES, patrol_candidates, patrol_day
from civicgrid.sites.patrol.model import Inspector, PatrolPlan, as_inspectors
from civicgrid.sites.patrol.network import RoadNetwork
from civicgrid.sites.patrol.solve import DEFAULT_SOLVER, plan_patrols


def _hhmm(text: str) -> float:
    h, m = str(text).split(":")
    return int(h) * 60 + int(m)


def parse_inspectors(inspectors: Sequence[Mapping | Inspector], *, date, crs: str | None = None
                     ) -> list[Inspector]:
    """Inspectors from request or file rows, their shift starts placed on ``date``.

    Each row has ``name``, the start as ``start_lng``/``start_lat`` or ``start: [lng, lat]``, optionally the end
    (default the start), ``shift_start`` (``"08:30"`` on ``date``, or a full date-time; default 09:00),
    ``shift_minutes`` (or ``shift_hours``; default 240) and ``mode`` (walk, bike or car; default walk).
    Coordinates in ``crs`` (``gcj02``, ``bd09``, …) are converted to WGS84 with :func:`geo.coords.to_wgs84`.
    """
    day = patrol_day(date)
    out: list[Inspector] = []
    for n, row in enumerate(inspectors, start=1):
        if isinstance(row, Inspector):
            out.append(row)
            continue
        r = {k: v for k, v in dict(row).items() if v is not None and not (isinstance(v, float) and math.isnan(v))
             and not (isinstance(v, str) and not v.strip())}
        where = f"inspector {n} ({r.get('name', 'no name')})"
        if "name" not in r:
            msg = f"{where}: name is missing"
            raise InvalidParameterError(msg)
        pts = _inspector_points(r, where=where, crs=crs)
        start = r.get("shift_start", "09:00")
        try:
            if isinstance(start, datetime):
                begin = start
            elif isinstance(start, str) and len(start.strip()) <= 5 and ":" in start:
                begin = day + timedelta(minutes=_hhmm(start.strip()))
            else:
                begin = pd.Timestamp(start).to_pydatetime()
        except (ValueError, TypeError):
            msg = f"{where}: shift_start must be HH:MM or a date-time, got {start!r}"
            raise InvalidParameterError(msg) from None
        try:
            minutes = (float(r["shift_minutes"]) if "shift_minutes" in r
                       else float(r["shift_hours"]) * 60 if "shift_hours" in r else 240.0)
        except (TypeError, ValueError):
            msg = f"{where}: shift_minutes must be a number"
            raise InvalidParameterError(msg) from None
        out.append(Inspector(name=str(r["name"]), start_lng=pts["start"][0], start_lat=pts["start"][1],
                             end_lng=pts["end"][0], end_lat=pts["end"][1], shift_start=begin,
                             shift_minutes=minutes, mode=str(r.get("mode", "walk")).strip().lower()))
    return as_inspectors(out)


def _inspector_points(r: Mapping, *, where: str, crs: str | None) -> dict[str, tuple[float, float]]:
    """An inspector row's start and end (default the start) as WGS84 ``(lng, lat)``."""
    pts = {}
    for end in ("start", "end"):
        if end in r:
            try:
                pts[end] = (float(r[end][0]), float(r[end][1]))
            except (TypeError, ValueError, IndexError, KeyError):
                msg = f"{where}: {end} must be [lng, lat], got {r[end]!r}"
                raise InvalidParameterError(msg) from None
        elif f"{end}_lng" in r and f"{end}_lat" in r:
            try:
                pts[end] = (float(r[f"{end}_lng"]), float(r[f"{end}_lat"]))
            except (TypeError, ValueError):
                msg = f"{where}: {end}_lng/{end}_lat must be numbers"
                raise InvalidParameterError(msg) from None
    if "start" not in pts:
        msg = f"{where}: start is missing (start_lng and start_lat, or start: [lng, lat])"
        raise InvalidParameterError(msg)
    pts.setdefault("end", pts["start"])
    for end, (x, y) in pts.items():
        if not (-180 <= x <= 180 and -90 <= y <= 90) or (abs(y) > abs(x) > 0 and abs(x) <= 90 < abs(y)):
            msg = f"{where}: {end} ({x}, {y}) is not a lng, lat pair"
            raise InvalidParameterError(msg)
    if crs and crs.lower() not in ("wgs84", "epsg:4326", "4326"):
        xs, ys = to_wgs84([pts["start"][0], pts["end"][0]], [pts["start"][1], pts["end"][1]], crs)
        pts = {"start": (float(xs[0]), float(ys[0])), "end": (float(xs[1]), float(ys[1]))}
    return pts


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.replace(microsecond=0).isoformat(timespec="minutes")


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item"):
        return v.item()
    return v


def plan_day(store: Store, inspectors: Sequence[Mapping | Inspector], *, date, area: str | None = None,
             coverage_days: int | None = None, rechecks: bool = True, max_candidates: int = MAX_CANDIDATES,
             network: RoadNetwork | None = None, solver: str | None = None, time_limit_s: float = 10.0,
             seed: int = 0, must_visit: Sequence = (), exclude: Sequence = (), crs: str | None = None,
             lang: str = "zh", days: int | None = None) -> dict:
    """Plan a day's patrols from the store: candidates, must-visits, windows, routes, reasons.

    Parameters
    ----------
    store
        The database.
    inspectors
        Rows for :func:`parse_inspectors` (or :class:`Inspector` objects).
    date
        The patrol day (data before it is used for risk, re-checks and coverage).
    area, coverage_days, rechecks, max_candidates, must_visit, exclude
        See :func:`patrol_candidates`.
    network
        Road network for travel times; default straight line ×
        :data:`~civicgrid.sites.patrol.network.DETOUR_FACTOR`.
    solver
        ``"pyvrp"`` or ``"ortools"`` (default :data:`DEFAULT_SOLVER`).
    time_limit_s
        Solver time limit; the best plan found by then is returned.
    seed
        Solver seed.
    crs
        System of the inspectors' coordinates (``wgs84`` default, ``gcj02``, ``bd09``).
    lang
        Language of each stop's ``reason`` text (``zh`` or ``en``; both are kept in ``reasons``).
    days
        Working days over which the must-visits are planned, today included (see
        :func:`~civicgrid.sites.patrol.backlog.plan_backlog`): today's routes take what fits, the rest is ranked
        by urgency and planned on the next working days; None (default): until the backlog is cleared.

    Returns
    -------
    dict
        The plan document (JSON-ready): ``date, created_at, solver, travel_source, risk_model, params, totals,
        routes`` (per inspector: ``inspector, mode, shift_start, shift_minutes, start, end, stops`` with ``seq,
        site_id, name, category_code, category, lng, lat, grid_code, arrival, start_time, departure,
        arrival_min, travel_min, wait_min, service_min, risk, must_visit, reason, reasons, components``, and the
        route totals; ``path``: the street path, with a road network), ``unvisited_must`` (site, reason, urgency
        ``rank``, ``planned_date``), ``backlog`` (every must-visit with its day or the reason it has none, the
        load per day, later days' routes) and ``notes``.
    """
    solver = solver or DEFAULT_SOLVER
    check_lang(lang)
    day = patrol_day(date)
    insp = parse_inspectors(inspectors, date=day, crs=crs)
    cand = patrol_candidates(store, date=day, area=area, coverage_days=coverage_days, rechecks=rechecks,
                             max_candidates=max_candidates, must_visit=must_visit, exclude=exclude)
    t0 = min(i.shift_start for i in insp)
    base = (t0 - day).total_seconds() / 60
    frame = pd.DataFrame(cand.drop(columns="geometry"))
    frame["tw_start_min"] = [np.nan if not isinstance(a, str) else _hhmm(a) - base for a in frame["tw_from"]]
    frame["tw_end_min"] = [np.nan if not isinstance(b, str) else _hhmm(b) - base for b in frame["tw_to"]]
    # must-visits pay by urgency: the solver keeps as many as fit, then the most urgent (the rest go to later days)
    plan = plan_patrols(urgency_prizes(urgent_pool(frame, insp)), insp, network=network, solver=solver,
                        time_limit_s=time_limit_s, seed=seed)
    params = {"date": day.date().isoformat(), "area": area, "coverage_days": coverage_days, "rechecks": rechecks,
              "max_candidates": max_candidates, "solver": solver, "time_limit_s": time_limit_s, "seed": seed,
              "must_visit": [_clean(s) for s in must_visit], "exclude": [_clean(s) for s in exclude],
              "lang": lang, "inspectors": [{"name": i.name, "start": [i.start_lng, i.start_lat],
                                            "end": [i.end_lng, i.end_lat], "shift_start": _iso(i.shift_start),
                                            "shift_minutes": i.shift_minutes, "mode": i.mode} for i in insp]}
    params["days"] = days
    doc = plan_document(plan, frame, insp, params=params, lang=lang)   # the whole frame: pool sites are in it
    plan_backlog(store, doc, frame, insp, day=day, days=days, network=network, solver=solver,
                 time_limit_s=time_limit_s, seed=seed, lang=lang, document=plan_document)
    if network is not None:
        add_paths(doc, network)
    doc["risk_model"] = cand.attrs.get("risk_model")
    doc["timezone"] = store_timezone(store)
    doc["created_at"] = now_local(tz=doc["timezone"]).isoformat()  # the store's wall-clock time
    doc["candidates"] = {"sites": len(frame), "must_visit": int(frame["must_visit"].sum()),
                         "coverage": int(frame["coverage"].sum()) if "coverage" in frame else 0}
    uncovered = cand.attrs.get("coverage_without_sites") or []
    if uncovered:
        shown = text("common.list_sep", lang).join(uncovered[:5])
        more = "" if len(uncovered) <= 5 else text("patrol.note.uncovered_more", lang, n=len(uncovered),
                                                   extra=len(uncovered) - 5)
        doc["notes"].append(text("patrol.note.uncovered", lang, n=len(uncovered), days=coverage_days, shown=shown,
                                 more=more))
    unlocated = cand.attrs.get("unlocated") or []
    doc["unlocated"] = [{"site_id": u["site_id"], "name": u["name"], "reason": u[lang]} for u in unlocated]
    if unlocated:
        names = [f"{u['name']} ({u['site_id']})" for u in unlocated]
        shown = text("common.list_sep", lang).join(names[:5])
        more = "" if len(names) <= 5 else text("patrol.note.uncovered_more", lang, n=len(names),
                                                 extra=len(names) - 5)
        doc["notes"].append(text("patrol.note.unlocated", lang, n=len(names), shown=shown, more=more))
    return doc


def add_paths(doc: dict, network: RoadNetwork) -> None:
    """Give each route of a plan document (and of its later days) its street path, ``[[lng, lat], ...]``."""
    days = [doc["routes"], *[d["routes"] for d in doc.get("backlog", {}).get("later", [])]]
    for routes in days:
        for r in routes:
            if not r["stops"]:
                continue
            pts = [r["start"], *[(s["lng"], s["lat"]) for s in r["stops"]], r["end"]]
            path = network.path_lnglat([p[0] for p in pts], [p[1] for p in pts], mode=r["mode"])
            r["path"] = [[round(x, 6), round(y, 6)] for x, y in path]


def plan_document(plan: PatrolPlan, candidates: pd.DataFrame, inspectors: Sequence[Inspector], *,
                  params: Mapping | None = None, lang: str = "zh") -> dict:
    """The JSON-ready document of a plan (see :func:`plan_day`), stops joined with their candidate rows;
    ``created_at`` is left empty (:func:`plan_day` sets it in the store's zone; storing a document without one
    stamps the store's now)."""
    cand = candidates.reset_index(drop=True)
    pos = {sid: i for i, sid in enumerate(cand["site_id"])}
    insp = {i.name: i for i in inspectors}

    def col(i: int, name: str, default=None):
        return _clean(cand.at[i, name]) if name in cand.columns else default

    routes = []
    for r in plan.routes:
        ins = insp[r.inspector]
        stops = []
        for seq, s in enumerate(r.stops, start=1):
            i = pos[s.site_id]
            reasons = list(col(i, "reasons", None) or [])
            if not reasons:
                reasons = [{"kind": "risk", **bilingual("patrol.reason.risk_only", risk=col(i, "risk", s.prize))}]
            begin = None if ins.shift_start is None else ins.shift_start + timedelta(minutes=s.start_min)
            stops.append({
                "seq": seq, "site_id": _clean(s.site_id), "name": col(i, "name"), "address": col(i, "address"),
                "category_code": col(i, "category_code"),
                "category": col(i, name_column(lang, "category")),
                "category_zh": col(i, "category_zh"), "category_en": col(i, "category_en"),
                "grid_code": col(i, "grid_code"), "grid_name": col(i, "grid_name"),
                "lng": float(cand.at[i, "lng"]), "lat": float(cand.at[i, "lat"]),
                "arrival": _iso(s.arrival), "start_time": _iso(begin),
                "departure": _iso(None if begin is None else begin + timedelta(minutes=s.service_min)),
                "arrival_min": round(s.arrival_min, 2), "travel_min": round(s.travel_min, 2),
                "wait_min": round(s.wait_min, 2), "service_min": round(s.service_min, 2),
                "risk": round(float(col(i, "risk", s.prize)), 4), "must_visit": bool(s.must_visit),
                "tw_from": col(i, "tw_from"), "tw_to": col(i, "tw_to"),
                "reason": text("common.reason_sep", lang).join(x[lang] for x in reasons),
                "reasons": reasons, "components": col(i, "components", None) or {},
            })
        routes.append({
            "inspector": r.inspector, "mode": r.mode, "shift_start": _iso(r.shift_start),
            "shift_minutes": r.shift_minutes, "start": [ins.start_lng, ins.start_lat],
            "end": [ins.end_lng, ins.end_lat], "end_time": _iso(r.end_time), "stops": stops,
            "return_travel_min": round(r.return_travel_min, 2),
            "totals": {"stops": len(stops), "risk": round(sum(x["risk"] for x in stops), 4),
                       "travel_min": round(r.travel_min, 1), "service_min": round(r.service_min, 1),
                       "wait_min": round(r.wait_min, 1), "shift_used_min": round(r.shift_used_min, 1)},
        })
    unvisited = []
    for u in plan.unvisited_must:
        i = pos[u.site_id]
        why = {"en": u.reason, "zh": u.reason_zh or u.reason}
        unvisited.append({"site_id": _clean(u.site_id), "name": col(i, "name"), "reason": why[lang],
                          "reason_en": why["en"], "reason_zh": why["zh"],
                          "must_reasons": [x for x in (col(i, "reasons", None) or []) if x["kind"] != "risk"]})
    return {
        "plan_id": None, "created_at": None,  # plan_day sets it, on the store's clock (a document knows no store)
        "date": (params or {}).get("date"),
        "solver": plan.solver, "travel_source": plan.travel_source, "solve_seconds": round(plan.solve_seconds, 3),
        "objective": plan.objective, "params": dict(params or {}),
        "totals": {"inspectors": len(routes), "stops": sum(len(r["stops"]) for r in routes),
                   "risk": round(sum(r["totals"]["risk"] for r in routes), 4),
                   "must_visits": sum(s["must_visit"] for r in routes for s in r["stops"]),
                   "travel_min": round(plan.total_travel_min, 1),
                   "service_min": round(sum(r.service_min for r in plan.routes), 1),
                   "shift_used_min": round(plan.total_shift_used_min, 1)},
        "routes": routes, "unvisited_must": unvisited, "notes": list(plan.notes),
    }
