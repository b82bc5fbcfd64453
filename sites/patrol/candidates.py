"""The sites worth a patrol on a day: risk, must-visits (overdue problems, re-checks, grid coverage, requests) and
visiting windows, from the store."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from difflib import get_close_matches

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from civicgrid.geo.errors import InvalidParameterError, NotFoundError
from civicgrid.geo.store import Store
from civicgrid.geo.texts import LANGS, bilingual
from civicgrid.geo.times import parse_day
from civicgrid.sites.patrol.model import DEFAULT_SERVICE_MIN
from civicgrid.sites.risk import site_risk

#: Visiting windows by site category code (``data/site_categories.csv``): ``(from, to, label_zh, label_en)`` in
#: local wall-clock time, bounding the *start* of the visit. Planning assumptions for the default taxonomy, not
#: rules from an assessment manual; a city edits them here (or passes ``windows=`` to :func:`patrol_candidates`):
#: school surroundings are judged at dismissal, when hawkers and traffic gather (most Chinese primary schools let
#: out between 16:00 and 17:30); campuses are visited in school hours, when staff can receive an inspector; farmers'
#: markets trade mostly in the morning; service halls, banks and counters are seen open (office hours).
CATEGORY_WINDOWS: dict[str, tuple[str, str, str, str]] = {
    "25": ("16:00", "17:30", "放学时段", "school dismissal"),
    "24": ("08:00", "16:00", "在校时段", "school hours"),
    "16": ("06:30", "11:00", "早市时段", "morning market"),
    "02": ("09:00", "17:00", "办公时间", "office hours"),
    "03": ("09:00", "17:00", "营业时间", "opening hours"),
    "04": ("09:00", "17:00", "营业时间", "opening hours"),
}

#: A closed problem at a site is due for its re-check (回头看) from this many days after closing, when the site
#: has not been inspected since it closed ...
RECHECK_AFTER_DAYS = 7
#: ... and stays due until this many days after closing (older closures are left to the risk score).
RECHECK_WITHIN_DAYS = 30

#: Highest-risk sites offered to the solver besides the must-visits (a day's patrol visits a few dozen).
MAX_CANDIDATES = 300

_CANDIDATES_SQL = """
SELECT s.site_id, s.name, s.address, s.category_code, c.name_zh AS category_zh, c.name_en AS category_en,
       coalesce(c.service_minutes, $default_service) AS service_min, s.grid_code, g.name AS grid_name,
       s.community_code, s.street_code, s.district_code, s.lng, s.lat
FROM sites s LEFT JOIN site_categories c ON c.code = s.category_code LEFT JOIN grids g ON g.code = s.grid_code
WHERE coalesce(s.active, TRUE)
  AND ($area IS NULL OR $area IN (s.grid_code, s.community_code, s.street_code, s.district_code))
ORDER BY s.site_id
"""

_MUST_SQL = """
WITH overdue AS (
    SELECT e.site_id, e.event_id, e.problem_type, e.deadline, NULL::TIMESTAMP AS closed_at, 'overdue' AS kind
    FROM events e
    WHERE e.site_id IS NOT NULL AND e.time < $day AND e.deadline < $day
      AND (e.closed_at IS NULL OR e.closed_at >= $day) AND coalesce(e.status, 'open') <> 'cancelled'
),
recheck AS (
    SELECT e.site_id, e.event_id, e.problem_type, e.deadline, e.closed_at, 'recheck' AS kind
    FROM events e
    WHERE e.site_id IS NOT NULL AND e.closed_at < $day - to_days($after)
      AND e.closed_at >= $day - to_days($within)
      AND NOT EXISTS (SELECT 1 FROM inspections i
                      WHERE i.site_id = e.site_id AND i.time > e.closed_at AND i.time < $day)
)
SELECT m.*, p.name_zh AS type_zh, p.name_en AS type_en
FROM (SELECT * FROM overdue UNION ALL SELECT * FROM recheck) m
LEFT JOIN problem_types p ON p.code = m.problem_type
ORDER BY m.site_id, m.kind, m.event_id
"""

_GRID_VISITS_SQL = """
SELECT g.code AS grid_code, date_diff('day', max(i.time)::DATE, $day::DATE) AS days
FROM grids g LEFT JOIN inspections i ON i.grid_code = g.code AND i.time < $day
GROUP BY g.code
"""


def patrol_day(date) -> datetime:
    """The patrol day of ``date`` (a date-time, or text with the year first such as ``2026-01-05``) at midnight;
    :class:`~civicgrid.geo.errors.InvalidParameterError` for anything else, ambiguous ``01/07/2025`` included."""
    day = parse_day(date, name="date")
    return datetime(day.year, day.month, day.day)


def check_area(store: Store, area: str | None) -> str | None:
    """The area code as given when it names a district, street, community or grid; else NotFoundError."""
    if area is None or not str(area).strip():
        return None
    code = str(area).strip()
    known = store.sql("SELECT code, name FROM areas UNION ALL SELECT code, coalesce(name, code) FROM grids")
    if code in set(known["code"]):
        return code
    hit = known.loc[known["name"] == code, "code"]
    if len(hit):
        return str(hit.iloc[0])
    close = get_close_matches(code, known["code"].tolist() + known["name"].tolist(), n=5, cutoff=0.5)
    msg = f"unknown area {code!r}; closest: {', '.join(close) if close else 'none'}"
    raise NotFoundError(msg)


def site_risk_frame(store: Store, *, as_of: datetime, sites: Sequence | None = None) -> tuple[pd.DataFrame, str]:
    """Risk in [0, 1] per active site with its components and reason, and which model made it.

    Uses :func:`civicgrid.sites.risk.site_risk`, in Chinese and English for the reasons; its ``components``, or
    else its numeric columns other than ids, coordinates, rank and base, become the components.

    Parameters
    ----------
    store
        The database.
    as_of
        Only data before this moment is used.
    sites
        Site ids to score (default all active sites).

    Returns
    -------
    frame, model
        ``site_id, risk, components (dict), reason_zh, reason_en``; ``"civicgrid.sites.risk (<model>)"``.
    """
    kw = {"sites": list(sites)} if sites is not None else {}
    frames = {lang: pd.DataFrame(site_risk(store, as_of=as_of, **kw, lang=lang)) for lang in LANGS}
    frame = frames["zh"]
    out = pd.DataFrame({"site_id": frame["site_id"].to_numpy(),
                        "risk": pd.to_numeric(frame["risk"], errors="coerce").fillna(0.0).clip(0, 1)})
    if "components" in frame:
        out["components"] = [_as_dict(c) for c in frame["components"]]
    else:
        skip = {"site_id", "lng", "lat", "risk", "rank", "base"}
        num = [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
        vals = frame[num].astype(float).round(4)
        out["components"] = [{k: (None if pd.isna(v) else v) for k, v in r.items()}
                             for r in vals.to_dict("records")]
    reason = frame["reason"].astype(str) if "reason" in frame else pd.Series([""] * len(frame))
    out["reason_zh"] = reason.to_numpy()
    en = frames["en"].set_index("site_id")["reason"].astype(str) if "reason" in frames["en"] else reason
    out["reason_en"] = out["site_id"].map(en).fillna("").to_numpy()
    model = frame["model"].iloc[0] if "model" in frame and len(frame) else None
    return out, f"civicgrid.sites.risk ({model})" if model else "civicgrid.sites.risk"


def _as_dict(value) -> dict:
    if isinstance(value, Mapping):
        return {str(k): (v.item() if hasattr(v, "item") else v) for k, v in value.items()}
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return {}
    return {}


def patrol_candidates(store: Store, *, date, area: str | None = None, coverage_days: int | None = None,
                      rechecks: bool = True, max_candidates: int = MAX_CANDIDATES,
                      windows: Mapping[str, tuple[str, str, str, str]] | None = None,
                      must_visit: Sequence = (), exclude: Sequence = ()):
    """The sites worth visiting on ``date``, with their risk, must-visit status, window and reasons.

    Parameters
    ----------
    store
        The database (:class:`geo.store.Store`).
    date
        The patrol day; only data before it is used.
    area
        District, street, community or grid code (or name) to plan in; default the whole city.
    coverage_days
        Coverage rule: no grid goes unvisited longer than this. Grids of the area whose last inspection is this
        many days old or more (or that were never inspected) get their highest-risk site as a must-visit.
    rechecks
        Make overdue re-checks must-visits: sites with a problem open past its deadline, and sites with a problem
        closed :data:`RECHECK_AFTER_DAYS`–:data:`RECHECK_WITHIN_DAYS` days ago and not inspected since (回头看).
    max_candidates
        The highest-risk sites offered besides the must-visits.
    windows
        Visiting windows by category code; default :data:`CATEGORY_WINDOWS`.
    must_visit, exclude
        Site ids to visit for certain, or to leave out.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per candidate: ``site_id, name, address, category_code, category_zh, category_en, grid_code,
        lng, lat, risk, prize`` (= risk), ``components``, ``service_min`` (the category's ``service_minutes``),
        ``must_visit``, ``coverage``, ``tw_from``/``tw_to`` (``"16:00"`` or None), ``reasons`` (a list of
        ``{kind, zh, en}``: ``risk``, ``overdue``, ``recheck``, ``coverage``, ``window``, ``requested``), and the
        frame's ``attrs["risk_model"]``.
    """
    day = patrol_day(date)
    area = check_area(store, area)
    if max_candidates < 0:
        msg = f"max_candidates must be >= 0, got {max_candidates}"
        raise InvalidParameterError(msg)
    df, model = _risk_candidates(store, day=day, area=area)
    unlocated = df.attrs.get("unlocated", [])
    if not len(df) and not len(must_visit):
        _no_sites(area, unlocated)
    _add_requested(df, must_visit, area=area, unlocated=unlocated)
    if rechecks:
        _add_rechecks(df, store, day=day)
    df["coverage"] = False
    uncovered: list[str] = []
    if coverage_days is not None:
        df, uncovered = _add_coverage(df, store, day=day, area=area, coverage_days=coverage_days)
    if len(exclude):
        df = df[~df["site_id"].isin(list(exclude))]
    top = df[~df["must_visit"] & (df["risk"] > 0)].sort_values("risk", ascending=False, kind="stable")
    keep = df["must_visit"] | df.index.isin(top.index[:max_candidates])
    df = df[keep].reset_index(drop=True)
    df["prize"] = df["risk"]
    df.attrs["coverage_without_sites"] = uncovered
    df.attrs["unlocated"] = unlocated
    _add_windows(df, CATEGORY_WINDOWS if windows is None else windows)
    df = df.drop(columns=["reason_zh", "reason_en"])
    out = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df["lng"], df["lat"]), crs="EPSG:4326")
    out.attrs["risk_model"] = model
    return out


#: Area columns of a site, finest first: a site without coordinates is placed inside the first it has.
AREA_COLUMNS = (("grid_code", "grids"), ("community_code", "areas"), ("street_code", "areas"),
                ("district_code", "areas"))


def place_unlocated(store: Store, sites: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Sites without coordinates (a NYC restaurant known by its address only) placed at a point inside their finest
    area (micro-grid, community, street, district; ``shapely.point_on_surface``), marked ``placed_by = "area"``
    with the area's code in ``placed_in``; those without an area with a shape are left out, each with a reason
    (``{site_id, name, zh, en}``). Sites with coordinates are ``placed_by = "site"``."""
    out = sites.copy()
    out["placed_by"] = "site"
    out["placed_in"] = None
    missing = out["lng"].isna() | out["lat"].isna()
    if not missing.any():
        return out, []
    points: dict[tuple[str, str], tuple[float, float]] = {}
    for col, table in AREA_COLUMNS:
        codes = sorted({str(c) for c in out.loc[missing, col].dropna() if str(c)})
        if not codes:
            continue
        shapes = store.sql(f"SELECT code, ST_AsWKB(geom) AS wkb FROM {table} "
                           "WHERE geom IS NOT NULL AND list_contains($codes, code)", {"codes": codes})
        if shapes.empty:
            continue
        pts = shapely.point_on_surface(shapely.from_wkb([bytes(b) for b in shapes["wkb"]], on_invalid="ignore"))
        for code, pt in zip(shapes["code"], pts, strict=True):
            if pt is not None and not shapely.is_empty(pt):
                points[(col, str(code))] = (float(shapely.get_x(pt)), float(shapely.get_y(pt)))
    left: list[dict] = []
    for i in np.flatnonzero(missing.to_numpy()):
        row = out.iloc[i]
        hit = next(((col, str(row[col])) for col, _ in AREA_COLUMNS
                    if pd.notna(row[col]) and (col, str(row[col])) in points), None)
        if hit is None:
            left.append({"site_id": int(row["site_id"]), "name": row["name"],
                         **bilingual("patrol.reason.unlocated", address=row.get("address") or "")})
            continue
        j = out.index[i]
        out.loc[j, ["lng", "lat"]] = points[hit]
        out.loc[j, "placed_by"] = "area"
        out.loc[j, "placed_in"] = hit[1]
    keep = ~out["site_id"].isin([x["site_id"] for x in left])
    return out[keep].reset_index(drop=True), left


def _risk_candidates(store: Store, *, day: datetime, area: str | None) -> tuple[pd.DataFrame, str]:
    """The active sites of the area with their risk, components and a first ``risk`` reason; the risk model.
    Sites without coordinates are placed in their area or left out (``attrs["unlocated"]``, with reasons)."""
    sites, left = place_unlocated(store, store.sql(_CANDIDATES_SQL, {"area": area,
                                                                     "default_service": DEFAULT_SERVICE_MIN}))
    risk, model = site_risk_frame(store, as_of=day, sites=sites["site_id"].tolist() if area else None)
    df = sites.merge(risk, on="site_id", how="left")
    df["risk"] = df["risk"].fillna(0.0).astype(float)
    df["components"] = [c if isinstance(c, dict) else {} for c in df["components"]]
    df["reasons"] = [[{"kind": "risk", **bilingual("patrol.reason.risk", risk=r, reason={"zh": z, "en": e})}]
                     for r, z, e in zip(df["risk"], df["reason_zh"].fillna(""), df["reason_en"].fillna(""),
                                        strict=True)]
    for i in np.flatnonzero((df["placed_by"] == "area").to_numpy()):
        df.at[i, "reasons"].append({"kind": "placed_by_area",
                                    **bilingual("patrol.reason.placed_by_area", area=df.at[i, "placed_in"])})
    df["must_visit"] = False
    df["late_days"] = np.nan   # how late the most urgent must-visit reason is (see _late)
    df.attrs["unlocated"] = left
    return df, model


def _no_sites(area: str | None, unlocated: list[dict]) -> None:
    """Refuse a plan with no site to visit: an empty plan printed as a plan (Shenzhen's store, with complaints and
    no sample frame, planned "0 sites" without a word)."""
    where = f" in area {area}" if area else ""
    hint = ("choose another area, or load its sites" if area else "load the sample frame") + \
        " with `civicgrid import sites FILE`"
    if unlocated:
        hint += f"; {len(unlocated)} sites{where} have no coordinates and no area to place them in"
    msg = f"no site of the sample frame (样本框){where} to patrol: {hint}"
    raise NotFoundError(msg)


def _late(df: pd.DataFrame, i: int, days: float) -> None:
    """Keep the largest lateness of a must-visit (days past its deadline, its re-check or its coverage limit)."""
    cur = df.at[i, "late_days"]
    if pd.isna(cur) or days > cur:
        df.at[i, "late_days"] = float(days)


def _add_requested(df: pd.DataFrame, must_visit: Sequence, *, area: str | None, unlocated: Sequence[dict] = ()
                   ) -> None:
    """Mark the requested sites must-visit (in place); InvalidParameterError for a site not in ``df``."""
    ids = set(df["site_id"])
    nowhere = {x["site_id"]: x for x in unlocated}
    for sid in must_visit:
        if sid in nowhere:
            msg = f"must-visit site {sid!r} cannot be placed on the map: {nowhere[sid]['en']}"
            raise InvalidParameterError(msg)
        if sid not in ids:
            msg = f"must-visit site {sid!r} is not an active site{' of area ' + area if area else ''}"
            raise InvalidParameterError(msg)
    req = df["site_id"].isin(list(must_visit))
    df.loc[req, "must_visit"] = True
    for i in np.flatnonzero(req.to_numpy()):
        df.at[i, "reasons"].append({"kind": "requested", **bilingual("patrol.reason.requested")})


def _add_rechecks(df: pd.DataFrame, store: Store, *, day: datetime) -> None:
    """Mark sites with an overdue problem or a re-check (回头看) due must-visit, with the reason (in place)."""
    must = store.sql(_MUST_SQL, {"day": day, "after": RECHECK_AFTER_DAYS, "within": RECHECK_WITHIN_DAYS})
    pos = {sid: i for i, sid in enumerate(df["site_id"])}
    for row in must.itertuples(index=False):
        i = pos.get(row.site_id)
        if i is None:
            continue
        df.at[i, "must_visit"] = True
        kind = {"zh": row.type_zh or row.problem_type or "", "en": row.type_en or row.problem_type or ""}
        if row.kind == "overdue":
            _late(df, i, (day - pd.Timestamp(row.deadline)).total_seconds() / 86400)
            d = pd.Timestamp(row.deadline).strftime("%Y-%m-%d %H:%M")
            df.at[i, "reasons"].append({"kind": "overdue", **bilingual("patrol.reason.overdue", event=row.event_id,
                                                                       type=kind, due=d)})
        else:
            _late(df, i, (day - pd.Timestamp(row.closed_at)).total_seconds() / 86400 - RECHECK_AFTER_DAYS)
            d = pd.Timestamp(row.closed_at).strftime("%Y-%m-%d")
            df.at[i, "reasons"].append({"kind": "recheck", **bilingual("patrol.reason.recheck", event=row.event_id,
                                                                       type=kind, closed=d)})


def _add_coverage(df: pd.DataFrame, store: Store, *, day: datetime, area: str | None, coverage_days: int
                  ) -> tuple[pd.DataFrame, list[str]]:
    """The coverage rule (:func:`apply_coverage`) with its reasons, and the due grids without an active site."""
    visits = store.sql(_GRID_VISITS_SQL, {"day": day})
    last = {g: (np.inf if pd.isna(d) else float(d)) for g, d in zip(visits["grid_code"], visits["days"],
                                                                     strict=True)}
    df["prize"] = df["risk"]
    df = apply_coverage(df, last, max_days=int(coverage_days))
    # grids due for a visit that have no active site to send an inspector to: the plan cannot cover them
    in_area = store.sql("SELECT code FROM grids" + (" WHERE ? IN (code, community_code, street_code, "
                                                    "district_code)" if area else ""),
                        [str(area)] if area else None)["code"]
    due = {g for g in in_area if last.get(g, np.inf) >= int(coverage_days)}
    uncovered = sorted(due - set(df["grid_code"].dropna()))
    for i in np.flatnonzero(df["coverage"].to_numpy()):
        d = last.get(df.at[i, "grid_code"], np.inf)
        _late(df, i, d - coverage_days)   # never inspected: infinitely late, first in the backlog
        seen = bilingual("patrol.reason.never_inspected") if np.isinf(d) else \
            bilingual("patrol.reason.last_inspected", days=d)
        grid = df.at[i, "grid_name"] if "grid_name" in df and isinstance(df.at[i, "grid_name"], str) else None
        df.at[i, "reasons"].append({"kind": "coverage", **bilingual("patrol.reason.coverage",
                                                                    grid=grid or df.at[i, "grid_code"], last=seen,
                                                                    days=coverage_days)})
    return df, uncovered


def _add_windows(df: pd.DataFrame, rules: Mapping[str, tuple[str, str, str, str]]) -> None:
    """The visiting window of each site's category as ``tw_from``/``tw_to``, with a ``window`` reason (in place)."""
    win = [rules.get(c) for c in df["category_code"]]
    df["tw_from"] = [w[0] if w else None for w in win]
    df["tw_to"] = [w[1] if w else None for w in win]
    for i, w in enumerate(win):
        if w:
            df.at[i, "reasons"].append({"kind": "window", **bilingual("patrol.reason.window", start=w[0], end=w[1],
                                                                      label={"zh": w[2], "en": w[3]})})


# ---------------------------------------------------------------------------------------------- coverage


def apply_coverage(candidates: pd.DataFrame, last_visit_days_by_grid: Mapping[str, float], *, max_days: int,
                   boost: float | None = None) -> pd.DataFrame:
    """Make sure no grid goes unvisited longer than ``max_days``: mark one site per stale grid as must-visit.

    A grid is stale when its last visit was ``max_days`` or more days ago (today is its last chance), or when it
    has no entry in ``last_visit_days_by_grid`` (never visited). In each stale grid the site with the highest
    prize (first in input order on ties) becomes ``must_visit``, unless the grid already has a must-visit site.
    With ``boost``, the prize of every site in a stale grid is also multiplied by ``boost`` so the solver prefers
    them even beyond the one required visit.

    Parameters
    ----------
    candidates
        Candidate sites with a ``grid_code`` column.
    last_visit_days_by_grid
        ``{grid_code: days since the last visit}``.
    max_days
        Longest allowed gap in days.
    boost
        Optional prize multiplier (> 1) for the sites of stale grids.

    Returns
    -------
    pandas.DataFrame
        A copy with ``must_visit`` updated and a boolean ``coverage`` column marking the sites made must-visit.
    """
    if "grid_code" not in candidates.columns:
        msg = "apply_coverage needs a grid_code column in candidates"
        raise InvalidParameterError(msg)
    if max_days < 0:
        msg = f"max_days must be >= 0, got {max_days}"
        raise InvalidParameterError(msg)
    df = candidates.copy()
    df["must_visit"] = df["must_visit"].fillna(False).astype(bool) if "must_visit" in df else False
    df["coverage"] = False
    days = df["grid_code"].map(lambda g: last_visit_days_by_grid.get(g, math.inf))
    stale = df["grid_code"].notna() & (days >= max_days)
    if boost is not None:
        if boost <= 1:
            msg = f"boost must be > 1, got {boost}"
            raise InvalidParameterError(msg)
        df.loc[stale, "prize"] = df.loc[stale, "prize"] * boost
    covered = set(df.loc[df["must_visit"], "grid_code"])
    pick = (df[stale & ~df["grid_code"].isin(covered)]
            .sort_values("prize", ascending=False, kind="stable")   # stable: input order breaks ties
            .drop_duplicates("grid_code"))
    df.loc[pick.index, "must_visit"] = True
    df.loc[pick.index, "coverage"] = True
    return df
