"""Must-visits as a backlog: today's plan takes what fits, the rest is planned over the next working days.

A day's must-visits (overdue problems, re-checks, the coverage rule, requests) are often more than one team can
visit in one shift. :func:`plan_backlog` ranks them by urgency (days late, then risk) and plans the ones left over
from today on the following working days of the store's calendar (:class:`~civicgrid.sites.cases.WorkCalendar`),
with the same team and shifts, until every must-visit is planned on some day or explained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.geo.texts import bilingual
from civicgrid.sites.cases.calendar import WorkCalendar
from civicgrid.sites.patrol.model import Inspector
from civicgrid.sites.patrol.network import RoadNetwork
from civicgrid.sites.patrol.solve import plan_patrols, unfit_sites

#: Most working days planned ahead when ``days`` is not given (the backlog is planned until it is cleared,
#: or until a day can place none of what is left, or for this many days).
MAX_BACKLOG_DAYS = 20

#: A day's solver is offered the most urgent must-visits only, this many times what the shifts can hold ...
POOL_FACTOR = 2.0
#: ... counting each stop as its service minutes plus this many minutes of travel (a planning assumption).
POOL_TRAVEL_MIN = 8.0

#: Solver time limit (seconds) of each later day at most (today's plan gets the full limit; the later days share
#: one more: each gets the limit divided by the days the backlog looks to need, between these two bounds).
LATER_DAY_TIME_S = 3.0
MIN_DAY_TIME_S = 0.05


def next_working_days(store: Store, day: datetime, n: int) -> list[datetime]:
    """``day`` itself, then the next ``n - 1`` working days after it (the store's ``holidays`` calendar)."""
    if n < 1:
        msg = f"days must be >= 1, got {n}"
        raise InvalidParameterError(msg)
    cal = WorkCalendar.from_store(store)
    first = np.datetime64(day.date(), "D") + 1
    out = [day]
    span = 14
    while len(out) < n:
        days = cal.working_days(first, first + span)
        out += [datetime.fromisoformat(str(d)) for d in days[: n - len(out)]]
        first, span = first + span + 1, span * 2
    return out


def urgency_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The must-visits of a candidate frame, most urgent first: days late (a grid never inspected first), then
    risk, then site id; with their ``rank`` (1 = most urgent)."""
    must = frame[frame["must_visit"]].copy()
    late = must["late_days"].astype(float) if "late_days" in must else pd.Series(0.0, index=must.index)
    must["_late"] = late.fillna(0.0)
    must = must.sort_values(["_late", "risk", "site_id"], ascending=[False, False, True], kind="stable")
    must["rank"] = np.arange(1, len(must) + 1)
    return must.drop(columns="_late")


def urgent_pool(frame: pd.DataFrame, insp: Sequence[Inspector]) -> pd.DataFrame:
    """The candidates a day's solver is offered: the other sites and only the most urgent must-visits, about
    :data:`POOL_FACTOR` times as many as the team's shifts can hold (at the median service minutes plus
    :data:`POOL_TRAVEL_MIN` per stop). Offered every must-visit, the solver would keep the most that fit — the ones
    near the start, however urgent — and leave the most urgent far ones for weeks."""
    must = urgency_order(frame)
    if must.empty:
        return frame
    per_stop = float(np.nanmedian(must["service_min"].to_numpy(float))) + POOL_TRAVEL_MIN
    size = max(1, math.ceil(POOL_FACTOR * sum(i.shift_minutes for i in insp) / per_stop))
    drop = must["site_id"].iloc[size:]
    return frame[~frame["site_id"].isin(list(drop))]


def urgency_prizes(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of the candidates whose must-visits pay by urgency, ``1 + (n - rank) / n`` (between 1 and 2, the
    most urgent most): a solver that keeps as many must-visits as fit then keeps the most urgent of them. Other
    sites keep their prize (the risk)."""
    out = frame.copy()
    ranked = urgency_order(frame)
    n = len(ranked)
    if n:
        out.loc[ranked.index, "prize"] = 1.0 + (n - ranked["rank"].to_numpy()) / n
    return out


def _shifted(insp: Sequence[Inspector], delta: timedelta) -> list[Inspector]:
    return [replace(i, shift_start=None if i.shift_start is None else i.shift_start + delta) for i in insp]


def _late_text(days: float) -> dict:
    if math.isinf(days):
        return bilingual("patrol.backlog.never_inspected")
    return bilingual("patrol.backlog.late", days=max(days, 0.0))


def plan_backlog(store: Store, doc: dict, frame: pd.DataFrame, insp: Sequence[Inspector], *, day: datetime,
                 days: int | None, network: RoadNetwork | None, solver: str, time_limit_s: float, seed: int,
                 lang: str, document) -> dict:
    """Plan the must-visits today's plan could not take over the next working days; update ``doc`` in place.

    Parameters
    ----------
    store
        The database (its working-day calendar).
    doc
        Today's plan document (:func:`~civicgrid.sites.patrol.plan.plan_day`); its ``unvisited_must`` get
        ``rank`` and ``planned_date``, and ``doc["backlog"]`` is set.
    frame
        Today's candidates (the solver's frame: time windows in minutes from the earliest shift start).
    insp
        Today's inspectors; later days keep their shifts, starting the same time of day.
    day
        The plan date.
    days
        Working days to plan, today included (``None``: until the backlog is cleared, at most
        :data:`MAX_BACKLOG_DAYS`).
    network, solver, time_limit_s, seed
        As for today's plan; the later days together get about ``time_limit_s`` more (each between
        :data:`MIN_DAY_TIME_S` and :data:`LATER_DAY_TIME_S` seconds).
    lang
        Language of the reasons.
    document
        :func:`~civicgrid.sites.patrol.plan.plan_document` (passed in: that module calls this one).

    Returns
    -------
    dict
        ``doc["backlog"]``: ``must_visits``, ``days`` (working days planned), ``per_day`` (date, stops,
        must-visits, travel, service and shift minutes used against ``capacity_min``), ``items`` (every
        must-visit by urgency: ``rank, site_id, name, grid_code, grid_name, late_days, urgency, planned_date,
        inspector, seq`` or ``reason``), ``later`` (each later day's routes, as the document's ``routes``).
    """
    horizon = MAX_BACKLOG_DAYS if days is None else int(days)
    if horizon < 1:
        msg = f"days must be >= 1, got {days}"
        raise InvalidParameterError(msg)
    ranked = urgency_order(frame)
    rank = dict(zip(ranked["site_id"], ranked["rank"], strict=True))
    planned: dict = {}
    for r in doc["routes"]:
        for s in r["stops"]:
            if s["site_id"] in rank:
                planned[s["site_id"]] = (doc["date"], r["inspector"], s["seq"])
    capacity = float(sum(i.shift_minutes for i in insp))
    per_day = [_load(doc["date"], doc["routes"], capacity)]
    later, why = [], {}
    rest = ranked[~ranked["site_id"].isin(list(planned))]
    dates = next_working_days(store, day, horizon) if horizon > 1 else [day]
    n = len(ranked)
    if len(rest):   # what no inspector can do even alone on any day (same shifts, windows and streets): explained
        why = unfit_sites(rest.drop(columns="rank"), insp, network=network)
        rest = rest[~rest["site_id"].isin(list(why))]
    # the later days share one more time limit: per day about time_limit_s / the days the backlog looks to need
    if len(rest):
        per_stop = float(np.nanmedian(rest["service_min"].to_numpy(float))) + POOL_TRAVEL_MIN
        per_day_sites = max(1.0, capacity / per_stop)
        need = min(len(dates) - 1, math.ceil(len(rest) / per_day_sites)) or 1
        day_limit = min(LATER_DAY_TIME_S, max(MIN_DAY_TIME_S, time_limit_s / need))
    for d in dates[1:]:
        if rest.empty:
            break
        cand = urgent_pool(rest.drop(columns="rank"), insp)
        cand = urgency_prizes(cand.assign(prize=cand["risk"]))
        team = _shifted(insp, d - day)
        plan = plan_patrols(cand, team, network=network, solver=solver, seed=seed, time_limit_s=day_limit)
        date = d.date().isoformat()
        routes = document(plan, cand, team, lang=lang)["routes"]
        if not plan.visited:
            break
        later.append({"date": date, "routes": routes})
        per_day.append(_load(date, routes, capacity))
        for r in routes:
            for s in r["stops"]:
                planned[s["site_id"]] = (date, r["inspector"], s["seq"])
        rest = rest[~rest["site_id"].isin(list(planned))]
    items = []
    for row in ranked.itertuples(index=False):
        late = float(row.late_days) if "late_days" in ranked and not pd.isna(row.late_days) else 0.0
        item = {"rank": int(row.rank), "site_id": _py(row.site_id), "name": row.name,
                "grid_code": row.grid_code, "grid_name": getattr(row, "grid_name", None),
                "risk": round(float(row.risk), 4), "late_days": None if math.isinf(late) else round(late, 1),
                "urgency": _late_text(late)[lang],
                "must_reasons": [x for x in (row.reasons or []) if x["kind"] not in ("risk", "window")]}
        if row.site_id in planned:
            item["planned_date"], item["inspector"], item["seq"] = planned[row.site_id]
        else:
            item["planned_date"] = None
            reason = why.get(row.site_id) or bilingual("patrol.backlog.beyond", days=len(dates))
            item["reason"], item["reason_en"], item["reason_zh"] = reason[lang], reason["en"], reason["zh"]
        items.append(item)
    by_site = {it["site_id"]: it for it in items}
    listed = {u["site_id"] for u in doc["unvisited_must"]}
    for it in items:   # must-visits not offered today (less urgent than the day's pool): not today either
        if it["planned_date"] != doc["date"] and it["site_id"] not in listed:
            why = bilingual("patrol.backlog.not_offered", rank=it["rank"])
            doc["unvisited_must"].append({"site_id": it["site_id"], "name": it["name"], "reason": why[lang],
                                          "reason_en": why["en"], "reason_zh": why["zh"],
                                          "must_reasons": it["must_reasons"]})
    doc["unvisited_must"].sort(key=lambda u: by_site[u["site_id"]]["rank"] if u["site_id"] in by_site else 0)
    for u in doc["unvisited_must"]:
        it = by_site.get(u["site_id"])
        if it is not None:
            u["rank"], u["planned_date"] = it["rank"], it["planned_date"]
            if it["planned_date"] is None:
                u["reason"], u["reason_en"], u["reason_zh"] = it["reason"], it["reason_en"], it["reason_zh"]
    backlog = {"must_visits": n, "planned": sum(it["planned_date"] is not None for it in items),
               "unplanned": sum(it["planned_date"] is None for it in items),
               "days": [p["date"] for p in per_day], "horizon_days": horizon if days is not None else None,
               "capacity_min": capacity, "per_day": per_day, "items": items, "later": later}
    doc["backlog"] = backlog
    return backlog


def _load(date: str, routes: list[dict], capacity: float) -> dict:
    """A day's load: stops, must-visits and minutes used against the team's shift minutes."""
    return {"date": date, "stops": sum(len(r["stops"]) for r in routes),
            "must_visits": sum(s["must_visit"] for r in routes for s in r["stops"]),
            "travel_min": round(sum(r["totals"]["travel_min"] for r in routes), 1),
            "service_min": round(sum(r["totals"]["service_min"] for r in routes), 1),
            "shift_used_min": round(sum(r["totals"]["shift_used_min"] for r in routes), 1),
            "capacity_min": capacity}


def _py(v):
    return v.item() if hasattr(v, "item") else v
