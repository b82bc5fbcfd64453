"""Rectification KPIs per area, grid or site category, and the red / white flags (红旗 / 白旗) of sites.

Every figure is computed in one DuckDB query over ``cases`` and their audit trail ``case_log``, as the
record stood at ``as_of`` (the state of a case at a time is the ``to_state`` of its last log row up to then).
For the period ``start <= t < end`` and ``T = as_of`` (default: ``end``, or now if that is earlier):

* **found** (发现数): cases found in the period (and by ``T``).
* **rectified** (整改数): of those, the cases rectified or closed at ``T``; **rectification_rate** (整改率) =
  rectified / found.
* **due** (应结案数): cases whose deadline falls in the period, by ``T``; **closed** (结案数): of those, closed at
  ``T``; **closed_on_time** (按期结案数): of those, closed no later than the deadline; **closure_rate** (结案率)
  = closed / due; **on_time_closure_rate** (按期结案率) = closed_on_time / due.
* **reworked** (返工数): of the rectified cases, those sent back at least once (返工) by ``T``;
  **rework_rate** (返工率) = reworked / rectified.
* **rebounds** (反弹数): found cases linked as rebounds (回头看) of an earlier closed case;
  **rebound_rate** (反弹率) = rebounds / found.
* **mean_hours_to_rectify**, **median_hours_to_rectify**: wall-clock hours from found to the last
  rectification up to ``T``, over the rectified cases.
* **open** (未结案数): found cases not closed at ``T``; **overdue** (超期数): of those, past their deadline at ``T``.
* **no_deadline** (无期限数): found cases without a deadline: a case without a problem type (a city's label not
  mapped yet, ``civicgrid types map``) has none, so it never falls due and is in no closure rate or overdue count.

A rate with a zero denominator is missing (NaN). Units are the rows of ``areas`` (district, street,
community), ``grids`` or ``site_categories``, zeros included; a case counts in the unit its location (or its
site, for categories) falls in, so cases outside every unit or without a site are in no row but in
:func:`kpi_totals` without ``level``.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
from civicgrid.geo import levels
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.geo.texts import check_lang, labels, local_name, name_column, text
from civicgrid.geo.times import now_local, parse_moment, store_timezone

#: Levels of :func:`kpi_table`: the area levels, then site categories.
KPI_LEVELS = (*levels.LEVELS, "category")
#: Level -> the column of ``cases`` holding the unit.
UNIT_COLUMNS = {**levels.LEVEL_COLUMNS, "category": "category_code"}

#: Count columns and rates of the KPI table, in order.
COLUMNS = ["code", "name", "found", "rectified", "rectification_rate", "due", "closed", "closed_on_time",
           "closure_rate", "on_time_closure_rate", "reworked", "rework_rate", "rebounds", "rebound_rate",
           "mean_hours_to_rectify", "median_hours_to_rectify", "open", "overdue", "no_deadline"]
#: rate -> (numerator, denominator).
RATES = {"rectification_rate": ("rectified", "found"), "closure_rate": ("closed", "due"),
         "on_time_closure_rate": ("closed_on_time", "due"), "rework_rate": ("reworked", "rectified"),
         "rebound_rate": ("rebounds", "found")}
_COUNTS = ["found", "rectified", "due", "closed", "closed_on_time", "reworked", "rebounds", "open", "overdue",
           "no_deadline"]

#: Flag rule (site_flags): look-back window, and thresholds.
FLAG_WINDOW_DAYS = 90
RED_MIN_INSPECTIONS = 2
RED_MIN_ON_TIME = 0.9
WHITE_MIN_REBOUNDS = 2
WHITE_MIN_DUE = 3
WHITE_MAX_ON_TIME = 0.6

_KPI_SQL = """
WITH c AS (
    SELECT case_id, {unit} AS unit, found_at, deadline, rebound_of,
           (found_at >= $t0 AND found_at < $t1 AND found_at <= $asof) AS in_found,
           (deadline >= $t0 AND deadline < $t1 AND deadline <= $asof) AS in_due
    FROM cases
    WHERE {where}
      AND ((found_at >= $t0 AND found_at < $t1 AND found_at <= $asof)
           OR (deadline >= $t0 AND deadline < $t1 AND deadline <= $asof))
),
l AS (
    SELECT g.case_id, arg_max(g.to_state, g.log_id) AS state,
           max(g.changed_at) FILTER (WHERE g.to_state = 'rectified') AS rect_at,
           max(g.changed_at) FILTER (WHERE g.to_state = 'closed') AS closed_at,
           count(*) FILTER (WHERE g.from_state = 'rectified' AND g.to_state = 'dispatched') AS reworks
    FROM case_log g SEMI JOIN c ON c.case_id = g.case_id
    WHERE g.changed_at <= $asof
    GROUP BY g.case_id
),
x AS (
    SELECT c.*, l.state, l.closed_at, l.reworks, l.state IN ('rectified', 'closed') AS is_rect,
           (epoch(l.rect_at) - epoch(c.found_at)) / 3600.0 AS hours
    FROM c LEFT JOIN l ON l.case_id = c.case_id
)
SELECT unit AS code,
       count(*) FILTER (WHERE in_found) AS found,
       count(*) FILTER (WHERE in_found AND is_rect) AS rectified,
       count(*) FILTER (WHERE in_due) AS due,
       count(*) FILTER (WHERE in_due AND state = 'closed') AS closed,
       count(*) FILTER (WHERE in_due AND state = 'closed' AND closed_at <= deadline) AS closed_on_time,
       count(*) FILTER (WHERE in_found AND is_rect AND reworks > 0) AS reworked,
       count(*) FILTER (WHERE in_found AND rebound_of IS NOT NULL) AS rebounds,
       avg(hours) FILTER (WHERE in_found AND is_rect) AS mean_hours_to_rectify,
       median(hours) FILTER (WHERE in_found AND is_rect) AS median_hours_to_rectify,
       count(*) FILTER (WHERE in_found AND state IS DISTINCT FROM 'closed') AS open,
       count(*) FILTER (WHERE in_found AND state IS DISTINCT FROM 'closed' AND deadline < $asof) AS overdue,
       count(*) FILTER (WHERE in_found AND deadline IS NULL) AS no_deadline
FROM x GROUP BY unit
"""


def _period(start, end, as_of, *, tz: str):
    t0 = parse_moment(start, name="start", tz=tz)
    t1 = parse_moment(end, name="end", tz=tz)
    if t1 <= t0:
        msg = f"end ({t1}) must be after start ({t0}); end is exclusive"
        raise InvalidParameterError(msg)
    t = parse_moment(as_of, name="as_of", tz=tz) if as_of is not None else min(t1, now_local(tz=tz))
    if t < t0:
        # Nothing can have been found or fallen due by T: every count would be a silent zero.
        what = f"as_of ({t})" if as_of is not None else f"now ({t})"
        msg = (f"{what} is before the period starts ({t0}): no case can have been found or fallen due by then; "
               f"choose a later as_of or an earlier period")
        raise InvalidParameterError(msg)
    return t0, t1, t


def check_level(level: str) -> str:
    """Return ``level`` if it is a KPI level (district, street, community, grid, category), else raise."""
    return levels.check_level(level, levels=KPI_LEVELS)


def _rates(df: pd.DataFrame) -> pd.DataFrame:
    for col in _COUNTS:
        df[col] = df[col].fillna(0).astype("int64")
    for rate, (num, den) in RATES.items():
        d = df[den].to_numpy(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            df[rate] = np.where(d > 0, df[num].to_numpy(float) / np.where(d > 0, d, 1), np.nan)
    for col in ("mean_hours_to_rectify", "median_hours_to_rectify"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return df


def _units(store: Store, level: str, lang: str) -> pd.DataFrame:
    if level == "category":
        return store.sql(f"SELECT code, {name_column(lang)} AS name FROM site_categories ORDER BY code")
    if level == "grid":
        return store.sql("SELECT code, name FROM grids ORDER BY code")
    return store.sql(f"SELECT code, {local_name(lang)} AS name FROM areas WHERE level = ? ORDER BY code", [level])


def kpi_table(store: Store, *, start, end, level: str = "street", as_of=None, lang: str = "zh") -> pd.DataFrame:
    """The rectification KPIs of every unit of a level for the period ``start <= t < end``.

    Parameters
    ----------
    store
        The civicgrid store.
    start, end
        The period (dates or date-times, local time; ``end`` exclusive).
    level
        ``district``, ``street``, ``community``, ``grid`` or ``category`` (site category).
    as_of
        The moment the record is read at (default: ``end``, or now if earlier).
    lang
        Unit names in ``zh`` (default) or ``en``.

    Returns
    -------
    pandas.DataFrame
        One row per unit (zeros included), columns :data:`COLUMNS`; definitions in the module docstring.
    """
    level, lang = check_level(level), check_lang(lang)
    t0, t1, t = _period(start, end, as_of, tz=store_timezone(store))
    col = UNIT_COLUMNS[level]
    sql = _KPI_SQL.format(unit=col, where=f"{col} IS NOT NULL")
    got = store.sql(sql, {"t0": t0, "t1": t1, "asof": t})
    units = _units(store, level, lang)
    df = units.merge(got, on="code", how="left")
    return _rates(df)[COLUMNS].reset_index(drop=True)


def kpi_totals(store: Store, *, start, end, level: str | None = None, as_of=None, lang: str = "zh") -> dict:
    """The KPIs of all cases of the period as one row (a dict with the keys of :data:`COLUMNS`).

    With ``level``, only the cases that have a unit at that level (so the counts are the sums of
    :func:`kpi_table`'s rows); without it, every case (including those outside every area or without a site).
    Rates are pooled (summed numerator over summed denominator); the median is over all cases.
    """
    lang = check_lang(lang)
    t0, t1, t = _period(start, end, as_of, tz=store_timezone(store))
    where = f"{UNIT_COLUMNS[check_level(level)]} IS NOT NULL" if level else "TRUE"
    got = store.sql(_KPI_SQL.format(unit="'total'", where=where), {"t0": t0, "t1": t1, "asof": t})
    if got.empty:
        got = pd.DataFrame({"code": ["total"]})
        for c in COLUMNS[2:]:
            got[c] = np.nan
    got["name"] = text("common.city", lang)
    row = _rates(got)[COLUMNS].iloc[0].to_dict()
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}


_FLAG_SQL = """
WITH l AS (
    SELECT g.case_id, arg_max(g.to_state, g.log_id) AS state,
           max(g.changed_at) FILTER (WHERE g.to_state = 'closed') AS closed_at
    FROM case_log g WHERE g.changed_at <= $asof
      AND g.case_id IN (SELECT case_id FROM cases WHERE site_id IS NOT NULL AND found_at <= $asof)
    GROUP BY g.case_id
),
x AS (
    SELECT k.site_id, k.found_at, k.deadline, k.rebound_of, l.state, l.closed_at
    FROM cases k JOIN l ON l.case_id = k.case_id
),
per AS (
    SELECT site_id,
           count(*) FILTER (WHERE found_at > $w0) AS found,
           count(*) FILTER (WHERE deadline > $w0 AND deadline <= $asof) AS due,
           count(*) FILTER (WHERE deadline > $w0 AND deadline <= $asof AND state = 'closed'
                            AND closed_at <= deadline) AS closed_on_time,
           count(*) FILTER (WHERE state <> 'closed' AND deadline < $asof) AS overdue,
           count(*) FILTER (WHERE found_at > $w0 AND rebound_of IS NOT NULL) AS rebounds
    FROM x GROUP BY site_id
),
ins AS (
    SELECT site_id, count(*) AS inspections FROM inspections
    WHERE time > $w0 AND time <= $asof GROUP BY site_id
)
SELECT s.site_id, s.name, s.category_code, sc.{cat_name} AS category, s.grid_code, s.community_code,
       s.street_code, s.district_code, s.responsible_unit, s.lng, s.lat,
       coalesce(ins.inspections, 0) AS inspections, coalesce(per.found, 0) AS found,
       coalesce(per.due, 0) AS due, coalesce(per.closed_on_time, 0) AS closed_on_time,
       coalesce(per.overdue, 0) AS overdue, coalesce(per.rebounds, 0) AS rebounds
FROM sites s
LEFT JOIN site_categories sc ON sc.code = s.category_code
LEFT JOIN per ON per.site_id = s.site_id
LEFT JOIN ins ON ins.site_id = s.site_id
WHERE s.active
ORDER BY s.site_id
"""


def site_flags(store: Store, *, as_of=None, window_days: int = FLAG_WINDOW_DAYS, lang: str = "zh") -> pd.DataFrame:
    """The red or white flag (红旗 / 白旗) of every active site from its record over the last ``window_days``.

    Over the window ``(as_of - window_days, as_of]``, per site: ``inspections`` (visits), ``found`` (cases
    found), ``due`` (cases whose deadline fell in the window), ``closed_on_time`` (of those, closed by the
    deadline), ``on_time_rate`` = closed_on_time / due, ``rebounds`` (cases found that are rebounds); and
    ``overdue``: the site's cases open past their deadline at ``as_of`` (whenever found).

    * **white** (白旗, lagging): ``overdue >= 1``, or ``rebounds >= 2`` (:data:`WHITE_MIN_REBOUNDS`), or at
      least 3 cases due (:data:`WHITE_MIN_DUE`) with ``on_time_rate < 0.6`` (:data:`WHITE_MAX_ON_TIME`).
    * **red** (红旗, good): not white, at least 2 inspections (:data:`RED_MIN_INSPECTIONS`) in the window,
      no rebound, and every due case closed on time at a rate of at least 0.9 (:data:`RED_MIN_ON_TIME`) or
      none due.
    * otherwise no flag (``none``): too few visits to tell, or an average record.

    Parameters
    ----------
    as_of
        The day or moment of the assessment (default now).
    window_days
        Length of the look-back window in days.
    lang
        ``category`` names and ``reason`` in ``zh`` or ``en``.

    Returns
    -------
    pandas.DataFrame
        One row per active site with the site's codes, the counts above, ``on_time_rate``, ``flag``
        (``red`` / ``white`` / ``none``), ``flag_label`` (红旗 / 白旗 / 无) and ``reason``;
        ``attrs["as_of"]`` is the moment used.
    """
    lang = check_lang(lang)
    tz = store_timezone(store)
    t = parse_moment(as_of, name="as_of", tz=tz) if as_of is not None else now_local(tz=tz)
    if int(window_days) <= 0:
        msg = f"window_days must be positive, got {window_days}"
        raise InvalidParameterError(msg)
    w0 = t - timedelta(days=int(window_days))
    df = store.sql(_FLAG_SQL.format(cat_name=name_column(lang)), {"asof": t, "w0": w0})
    due = df["due"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        df["on_time_rate"] = np.where(due > 0, df["closed_on_time"] / np.where(due > 0, due, 1), np.nan)
    overdue = df["overdue"].to_numpy() >= 1
    many_reb = df["rebounds"].to_numpy() >= WHITE_MIN_REBOUNDS
    late = (due >= WHITE_MIN_DUE) & (np.nan_to_num(df["on_time_rate"].to_numpy(), nan=1.0) < WHITE_MAX_ON_TIME)
    white = overdue | many_reb | late
    red = (~white & (df["inspections"].to_numpy() >= RED_MIN_INSPECTIONS) & (df["rebounds"].to_numpy() == 0)
           & ((due == 0) | (np.nan_to_num(df["on_time_rate"].to_numpy(), nan=0.0) >= RED_MIN_ON_TIME)))
    df["flag"] = np.where(white, "white", np.where(red, "red", "none"))
    df["flag_label"] = df["flag"].map(labels("flag", lang))
    df["reason"] = _reasons(df, overdue, many_reb, late, red, lang, int(window_days))
    df.attrs["as_of"] = t
    return df


def _reasons(df, overdue, many_reb, late, red, lang, days) -> list[str]:
    """One readable reason per site: the texts of ``[flag.reason]`` that apply, joined (formatted only for the
    sites a mask selects)."""
    rate = (df["on_time_rate"] * 100).round(0).astype("Int64").astype(str)
    parts = [(overdue, "overdue", "n", df["overdue"]), (many_reb, "rebounds", "n", df["rebounds"]),
             (late, "late", "rate", rate), (red, "good", "n", df["inspections"])]
    out: list[list[str]] = [[] for _ in range(len(df))]
    for mask, key, field, values in parts:
        for i in np.flatnonzero(mask):
            out[i].append(text(f"flag.reason.{key}", lang, days=days, **{field: values.iat[i]}))
    sep = text("common.reason_sep", lang)
    return [sep.join(p) for p in out]


# --- until when an answer read at "now" holds --------------------------------------------------------------

_NEXT_MOMENT_SQL = """
SELECT least((SELECT min(found_at) FROM cases WHERE found_at >= $t),
             (SELECT min(deadline) FROM cases WHERE deadline >= $t),
             (SELECT min(changed_at) FROM case_log WHERE changed_at >= $t)) AS at_now,
       least((SELECT min(found_at) FROM cases WHERE found_at >= $w0),
             (SELECT min(deadline) FROM cases WHERE deadline >= $w0)) AS at_window_start,
       (SELECT min(time) FROM inspections WHERE time >= $t) AS visit_at_now,
       (SELECT min(time) FROM inspections WHERE time >= $w0) AS visit_at_window_start
"""


def _next_moments(store: Store, t, w0) -> tuple:
    got = store.sql(_NEXT_MOMENT_SQL, {"t": t, "w0": w0}).iloc[0]
    return tuple(None if pd.isna(v) else pd.Timestamp(v).to_pydatetime() for v in got)


def kpis_hold_until(store: Store, *, start, end, as_of=None):
    """The first moment at which :func:`kpi_table` and :func:`kpi_totals` of the period, read now, could answer
    otherwise by the passing of time alone (no write): a case found, falling due (overdue) or changing state at
    a later moment, or the period's end; None when they are read at a fixed moment (``as_of`` given, or a
    period already over).

    A cache of their answers keeps one until then (call this before computing them: the answers read at any
    moment between the two calls and that one are the same).
    """
    if as_of is not None:
        return None
    _, t1, t = _period(start, end, None, tz=store_timezone(store))
    if t >= t1:
        return None
    at_now = _next_moments(store, t, t)[0]
    return t1 if at_now is None else min(at_now, t1)


def flags_hold_until(store: Store, *, window_days: int = FLAG_WINDOW_DAYS, as_of=None):
    """The first moment at which :func:`site_flags` read now could answer otherwise by the passing of time
    alone: a case found, falling due or changing state, or a visit, at a later moment, or one of them leaving
    the look-back window (``window_days`` after it); None for a fixed ``as_of``."""
    if as_of is not None:
        return None
    t = now_local(tz=store_timezone(store))
    days = timedelta(days=int(window_days))
    at_now, at_w0, visit_now, visit_w0 = _next_moments(store, t, t - days)
    moments = [m for m in (at_now, visit_now) if m is not None]
    moments += [m + days for m in (at_w0, visit_w0) if m is not None]
    return min(moments, default=None)
