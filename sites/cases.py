"""Problem cases: lifecycle with an audit trail, working-time deadlines, automatic dispatch and rebounds.

A **case** follows one event (an inspection hit or a complaint needing action) and has the event's id
(``case_id == event_id``). Its states follow the digital city-management workflow (GB/T 30428):

``found → registered → dispatched → rectified → closed``, and ``rectified → dispatched`` when verification
fails (返工, rework). Every other move is refused with :class:`~geo.errors.ConflictError` and changes nothing.

* **Audit trail**: every transition is a row of ``case_log`` (who, when, from, to, note, unit, photo); the
  state of a case at any time is the ``to_state`` of its last log row up to that time.
* **Deadlines** come from the problem type (``deadline_value`` working days or working hours) on a working
  clock that runs :data:`WORK_START`–:data:`WORK_END` on working days: Monday–Friday except the holidays of
  the ``holidays`` table, plus its make-up working days (调休上班). ``N`` working days = ``N × 9`` working
  hours. Found before 09:00 the clock starts at 09:00; found after 18:00 or on a day off it starts at the
  next working day's 09:00; a deadline falling exactly at a day boundary is written as 18:00 of that day.
* **Dispatch**: to the site's ``responsible_unit`` for a case at a sample-frame site, else to the office of
  the area holding it (属地): the community's residents' committee (社区居委会), else the street office
  (街道办事处), else the district's city-management bureau; overridable at dispatch.
* **Rebounds** (回头看): a new case of the same problem type at the same site, or within
  ``rebound_radius_m`` metres, found within ``rebound_days`` days after an earlier case was closed, is linked
  to the most recent such case (``rebound_of``).
* The linked event is kept in sync (``status``, ``deadline``, ``rectified_at``, ``closed_at``, ``reopened``,
  ``rebound_of``), so the heatmap's ``status`` filters read the case state.

Every write goes through :func:`geo.store.writing` (copy-and-publish, atomic).
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import math
import os
import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pandas as pd
from civicgrid.geo.errors import ConflictError, InvalidParameterError, NotFoundError
from civicgrid.geo.store import Store, writing

#: Case states in workflow order.
STATES = ("found", "registered", "dispatched", "rectified", "closed")
#: Chinese names of the states.
STATE_ZH = {"found": "发现", "registered": "立案", "dispatched": "派遣", "rectified": "已整改", "closed": "结案"}
#: Actions and the (from, to) move each makes. ``rework`` (返工) sends a rectified case back.
ACTIONS: dict[str, tuple[str, str]] = {
    "register": ("found", "registered"),
    "dispatch": ("registered", "dispatched"),
    "rectify": ("dispatched", "rectified"),
    "close": ("rectified", "closed"),
    "rework": ("rectified", "dispatched"),
}
#: Legal moves: from state -> allowed next states.
NEXT_STATES: dict[str, tuple[str, ...]] = {
    s: tuple(t for a, (f, t) in ACTIONS.items() if f == s) for s in STATES
}

#: Working clock (local wall time). A working day has WORK_END - WORK_START = 9 working hours.
WORK_START = 9 * 3600
WORK_END = 18 * 3600
_DAY_WORK = WORK_END - WORK_START

#: Settings (``settings`` table) and their defaults.
DEFAULT_SETTINGS: dict[str, float] = {"rebound_radius_m": 50.0, "rebound_days": 30.0}

#: Unit name suffixes for dispatch to the area office (属地).
UNIT_SUFFIX = {"community": "居委会", "street": "办事处", "district": "城市管理和综合执法局"}
#: Unit when a case lies outside every area.
UNASSIGNED_UNIT = "属地待定（人工派遣）"

_TZ = ZoneInfo("Asia/Shanghai")
_CASE_COLUMNS = ("case_id, event_id, source, problem_type, site_id, category_code, grid_code, community_code, "
                 "street_code, district_code, state, found_at, deadline, unit, unit_code, dispatched_at, "
                 "rectified_at, closed_at, reworks, rebound_of, photo, updated_at")


def now_local() -> datetime:
    """The current wall-clock time in Asia/Shanghai, naive (as stored), to the second."""
    return datetime.now(_TZ).replace(tzinfo=None, microsecond=0)


def to_timestamp(value, *, field: str = "time") -> datetime:
    """Parse a date-time (datetime, date, ISO or Chinese text) into a naive local datetime."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(_TZ).replace(tzinfo=None)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, np.datetime64 | pd.Timestamp):
        return pd.Timestamp(value).to_pydatetime()
    text = str(value).strip()
    try:
        ts = pd.Timestamp(text)
        if ts.tzinfo is not None:
            ts = ts.tz_convert(_TZ).tz_localize(None)
        return ts.to_pydatetime()
    except (ValueError, TypeError):
        pass
    from civicgrid.geo.times import parse_times

    parsed = parse_times(np.array([text], dtype=object))[0]
    if pd.isna(parsed[0]):
        msg = f"{field} {text!r} is not a date-time; use e.g. 2025-03-05T14:30 or 2025年3月5日 14:30"
        raise InvalidParameterError(msg)
    return pd.Timestamp(parsed[0]).to_pydatetime()


# --------------------------------------------------------------------------------------------------
# Settings and the working calendar
# --------------------------------------------------------------------------------------------------


def _rows(con, query: str, params=None) -> pd.DataFrame:
    if isinstance(con, Store):
        return con.sql(query, params)
    return con.execute(query, params).df()


def get_settings(con) -> dict[str, float]:
    """The case settings (``rebound_radius_m``, ``rebound_days``) of a store or connection, with defaults."""
    out = dict(DEFAULT_SETTINGS)
    for row in _rows(con, "SELECT key, value FROM settings").itertuples():
        if row.key in out:
            out[row.key] = float(row.value)
    return out


def check_setting(key: str, value) -> float:
    """Validate one setting; return its value as a number."""
    if key not in DEFAULT_SETTINGS:
        close = difflib.get_close_matches(key, list(DEFAULT_SETTINGS), n=1)
        msg = f"unknown setting {key!r}" + (f"; did you mean {close[0]!r}?" if close else "") + \
              f" (known: {', '.join(DEFAULT_SETTINGS)})"
        raise NotFoundError(msg)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number) or number <= 0:
        msg = f"setting {key} must be a positive number, got {value!r}"
        raise InvalidParameterError(msg)
    return number


def set_setting(db: str | os.PathLike, key: str, value) -> dict[str, float]:
    """Store a case setting (atomic write); return all settings."""
    number = check_setting(key, value)
    with writing(db) as con:
        con.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", [key, repr(number)])
        return get_settings(con)


def holidays(con) -> pd.DataFrame:
    """The calendar exceptions: ``date``, ``kind`` (holiday | workday), ``name``, ``source``, by date."""
    df = _rows(con, "SELECT date, kind, name, source FROM holidays ORDER BY date")
    df["date"] = pd.to_datetime(df["date"]).dt.date
    return df


def set_holidays(db: str | os.PathLike, rows: pd.DataFrame | list[dict], *, replace_years: bool = True) -> int:
    """Add or replace calendar exceptions (atomic write).

    Parameters
    ----------
    rows
        Records with ``date`` (YYYY-MM-DD), ``kind`` (``holiday``: a day off; ``workday``: a make-up
        working day on a weekend, 调休上班), optional ``name`` and ``source``.
    replace_years
        Drop the stored exceptions of every year present in ``rows`` first (a new official notice
        replaces the year's schedule). Otherwise rows are upserted by date.

    Returns
    -------
    int
        The number of rows stored.
    """
    frame = pd.DataFrame(rows)
    for col in ("date", "kind"):
        if col not in frame.columns:
            msg = f"holiday rows need a {col!r} field (got {', '.join(map(str, frame.columns)) or 'no fields'})"
            raise InvalidParameterError(msg)
    for col in ("name", "source"):
        if col not in frame.columns:
            frame[col] = None
    dates = pd.to_datetime(frame["date"], errors="coerce")
    bad = dates.isna()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        msg = f"holiday row {i + 1}: date {frame['date'].iloc[i]!r} is not a date (YYYY-MM-DD)"
        raise InvalidParameterError(msg)
    kinds = frame["kind"].astype(str).str.strip().str.lower()
    wrong = ~kinds.isin(["holiday", "workday"])
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        msg = f"holiday row {i + 1}: kind {frame['kind'].iloc[i]!r} must be holiday or workday"
        raise InvalidParameterError(msg)
    if dates.duplicated().any():
        d = dates[dates.duplicated()].iloc[0].date()
        msg = f"holiday rows list {d} twice"
        raise InvalidParameterError(msg)
    clean = pd.DataFrame({"date": dates.dt.date, "kind": kinds,
                          "name": frame["name"].astype(object).where(frame["name"].notna(), None),
                          "source": frame["source"].astype(object).where(frame["source"].notna(), None)})
    with writing(db) as con:
        if replace_years:
            for year in sorted({d.year for d in clean["date"]}):
                con.execute("DELETE FROM holidays WHERE year(date) = ?", [year])
        con.register("_holidays_in", clean)
        con.execute("INSERT OR REPLACE INTO holidays SELECT date, kind, name, source FROM _holidays_in")
        con.unregister("_holidays_in")
    return len(clean)


class WorkCalendar:
    """Working days (Mon–Fri, minus holidays, plus make-up working days) and the 09:00–18:00 working clock.

    Parameters
    ----------
    holidays, workdays
        Days off on weekdays (and any other listed days off), and weekend days that are working days (调休).
    """

    def __init__(self, holidays=(), workdays=()) -> None:
        self.holidays = np.unique(np.asarray(list(holidays), dtype="M8[D]"))
        self.workdays = np.unique(np.asarray(list(workdays), dtype="M8[D]"))

    @classmethod
    def from_store(cls, con) -> WorkCalendar:
        """The calendar of a store or connection (its ``holidays`` table)."""
        h = holidays(con)
        d = pd.to_datetime(h["date"]).to_numpy("M8[D]")
        kind = h["kind"].to_numpy()
        return cls(d[kind == "holiday"], d[kind == "workday"])

    def is_working(self, days) -> np.ndarray:
        """Whether each day (datetime64[D]-like) is a working day."""
        days = np.asarray(days, dtype="M8[D]")
        weekday = (days.astype("int64") + 3) % 7 < 5
        return (weekday & ~np.isin(days, self.holidays)) | np.isin(days, self.workdays)

    def working_days(self, first, last) -> np.ndarray:
        """The working days from ``first`` to ``last`` inclusive, sorted."""
        days = np.arange(np.datetime64(first, "D"), np.datetime64(last, "D") + 1, dtype="M8[D]")
        return days[self.is_working(days)]

    def deadlines(self, found, hours) -> np.ndarray:
        """Deadlines (datetime64[s]) of cases found at ``found`` given their working hours to rectify.

        Vectorized: the found time becomes a position on the working clock (working days before it × 9 h
        plus the working time elapsed that day), the hours are added, and the position is turned back into
        wall time on the table of working days.
        """
        found = np.asarray(found, dtype="M8[s]")
        hours = np.asarray(hours, dtype="float64")
        out = np.full(found.shape, np.datetime64("NaT"), dtype="M8[s]")
        ok = ~np.isnat(found) & np.isfinite(hours)
        if not ok.any():
            return out
        t = found[ok]
        need = np.maximum(np.round(hours[ok] * 3600).astype(np.int64), 1)
        day = t.astype("M8[D]")
        span_days = int(need.max() // _DAY_WORK) * 3 + 60  # a year of holidays never takes 2 of every 3 days
        table = self.working_days(day.min() - 1, day.max() + span_days)
        idx = np.searchsorted(table, day, side="left")
        on_work = (idx < len(table)) & (table[np.minimum(idx, len(table) - 1)] == day)
        tod = (t - day).astype(np.int64)
        elapsed = np.where(on_work, np.clip(tod - WORK_START, 0, _DAY_WORK), 0)
        pos = idx.astype(np.int64) * _DAY_WORK + elapsed + need
        k = -(-pos // _DAY_WORK) - 1  # ceil(pos / day) - 1: the day holding the end (a boundary ends a day)
        if (k >= len(table)).any():  # pragma: no cover - span_days covers any realistic deadline
            msg = "deadline beyond the working-day table"
            raise InvalidParameterError(msg)
        rest = pos - k * _DAY_WORK
        out[ok] = table[k].astype("M8[s]") + (WORK_START + rest).astype("m8[s]")
        return out


def type_hours(problem_types: pd.DataFrame) -> pd.Series:
    """Working hours to rectify per problem type code (working days × 9)."""
    value = pd.to_numeric(problem_types["deadline_value"], errors="coerce")
    per = np.where(problem_types["deadline_unit"].eq("working_hours"), 1.0, _DAY_WORK / 3600)
    return pd.Series((value * per).to_numpy(), index=problem_types["code"].to_numpy())


def compute_deadlines(con, found, problem_type) -> np.ndarray:
    """Deadlines of cases found at ``found`` with problem types ``problem_type`` (codes), from the store."""
    hours = type_hours(_rows(con, "SELECT code, deadline_value, deadline_unit FROM problem_types"))
    h = pd.Series(np.asarray(problem_type, dtype=object)).map(hours).to_numpy(dtype="float64")
    return WorkCalendar.from_store(con).deadlines(found, h)


# --------------------------------------------------------------------------------------------------
# Reading cases
# --------------------------------------------------------------------------------------------------


def _case_row(con, case_id: int) -> dict:
    row = _rows(con, f"SELECT {_CASE_COLUMNS} FROM cases WHERE case_id = ?", [int(case_id)])
    if row.empty:
        near = _rows(con, "SELECT min(case_id) AS lo, max(case_id) AS hi, count(*) AS n FROM cases").iloc[0]
        hint = f"case ids run {int(near.lo)}..{int(near.hi)}" if near.n else "there are no cases yet"
        msg = f"no case {case_id}; {hint} (a case has the id of its event)"
        raise NotFoundError(msg)
    return {k: _py(v) for k, v in row.iloc[0].to_dict().items()}


def _py(v):
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT or (
            not isinstance(v, str | bytes) and pd.api.types.is_scalar(v) and pd.isna(v)):
        return None
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def get_case(store, case_id: int) -> dict:
    """One case as a dict, with ``log`` (its audit trail, oldest first) and ``next`` (legal next states)."""
    case = _case_row(store, case_id)
    case["log"] = case_log(store, case_id).to_dict("records")
    case["log"] = [{k: _py(v) for k, v in r.items()} for r in case["log"]]
    case["next"] = list(NEXT_STATES[case["state"]])
    return case


def case_log(store, case_id: int) -> pd.DataFrame:
    """The audit trail of a case: ``log_id, at, actor, from_state, to_state, note, unit, photo``, oldest first."""
    _case_row(store, case_id)
    return _rows(store, "SELECT log_id, changed_at, actor, from_state, to_state, note, unit, photo FROM case_log "
                        "WHERE case_id = ? ORDER BY log_id", [int(case_id)])


def list_cases(store, *, state: str | None = None, area: str | None = None, site_id: int | None = None,
               overdue: bool | None = None, as_of=None, limit: int = 100, offset: int = 0) -> pd.DataFrame:
    """Cases, newest first, filtered by state, area (any district/street/community/grid code), site, overdue.

    ``overdue``: not closed and past its deadline at ``as_of`` (default now).
    """
    where, params = ["TRUE"], []
    if state:
        if state not in STATES:
            msg = f"unknown state {state!r}; states: {', '.join(STATES)}"
            raise InvalidParameterError(msg)
        where.append("state = ?")
        params.append(state)
    if area:
        from civicgrid.geo.aggregate import area_level

        area_level(store, str(area))  # an unknown code raises NotFoundError naming the closest ones
        where.append("? IN (grid_code, community_code, street_code, district_code)")
        params.append(str(area))
    if site_id is not None:
        if _rows(store, "SELECT 1 FROM sites WHERE site_id = ?", [int(site_id)]).empty:
            msg = f"no site {site_id} in the sample frame"
            raise NotFoundError(msg)
        where.append("site_id = ?")
        params.append(int(site_id))
    if overdue is not None:
        t = to_timestamp(as_of, field="as_of") if as_of is not None else now_local()
        cond = "(state <> 'closed' AND deadline < ?)"
        where.append(cond if overdue else f"NOT {cond}")
        params.append(t)
    if not 0 < int(limit) <= 10_000 or int(offset) < 0:
        msg = f"limit must be 1..10000 and offset >= 0, got limit={limit}, offset={offset}"
        raise InvalidParameterError(msg)
    return _rows(store, f"SELECT {_CASE_COLUMNS} FROM cases WHERE {' AND '.join(where)} "
                        f"ORDER BY found_at DESC, case_id DESC LIMIT {int(limit)} OFFSET {int(offset)}", params)


# --------------------------------------------------------------------------------------------------
# Dispatch units
# --------------------------------------------------------------------------------------------------

#: SQL of the automatic unit and unit code of each event ``e`` (joined with its site ``s`` and areas).
_UNIT_EXPR = f"""
    CASE WHEN nullif(trim(s.responsible_unit), '') IS NOT NULL THEN trim(s.responsible_unit)
         WHEN cm.name IS NOT NULL THEN cm.name || '{UNIT_SUFFIX["community"]}'
         WHEN st.name IS NOT NULL THEN st.name || '{UNIT_SUFFIX["street"]}'
         WHEN di.name IS NOT NULL THEN di.name || '{UNIT_SUFFIX["district"]}'
         ELSE '{UNASSIGNED_UNIT}' END"""
_UNIT_CODE_EXPR = """
    CASE WHEN nullif(trim(s.responsible_unit), '') IS NOT NULL THEN NULL
         ELSE coalesce(cm.code, st.code, di.code) END"""
_UNIT_SQL = f"{_UNIT_EXPR} AS unit, {_UNIT_CODE_EXPR} AS unit_code"
_UNIT_JOINS = """
    LEFT JOIN sites s ON s.site_id = e.site_id
    LEFT JOIN areas cm ON cm.code = e.community_code AND cm.level = 'community'
    LEFT JOIN areas st ON st.code = e.street_code AND st.level = 'street'
    LEFT JOIN areas di ON di.code = e.district_code AND di.level = 'district'"""


# --------------------------------------------------------------------------------------------------
# Writing: create, transition, backfill
# --------------------------------------------------------------------------------------------------


def _sync_events(con, case_ids_sql: str, params=None) -> None:
    """Copy the case state onto the linked events (status, deadline, rectified_at, closed_at, reopened, rebound)."""
    con.execute(f"""
        UPDATE events SET status = CASE WHEN c.state = 'closed' THEN 'closed' ELSE 'open' END,
               deadline = c.deadline, rectified_at = c.rectified_at, closed_at = c.closed_at,
               reopened = c.reworks, rebound_of = c.rebound_of
        FROM cases c WHERE events.event_id = c.event_id AND c.case_id IN ({case_ids_sql})
          AND (events.status IS DISTINCT FROM CASE WHEN c.state = 'closed' THEN 'closed' ELSE 'open' END
               OR events.deadline IS DISTINCT FROM c.deadline OR events.rectified_at IS DISTINCT FROM c.rectified_at
               OR events.closed_at IS DISTINCT FROM c.closed_at OR events.reopened IS DISTINCT FROM c.reworks
               OR events.rebound_of IS DISTINCT FROM c.rebound_of)
    """, params)


def _log(con, case_id: int, at: datetime, actor: str, from_state, to_state: str, note=None, unit=None,
         photo=None) -> None:
    con.execute("INSERT INTO case_log SELECT coalesce(max(log_id), 0) + 1, ?, ?, ?, ?, ?, ?, ?, ? FROM case_log",
                [int(case_id), at, actor, from_state, to_state, note, unit, photo])


def _actor(actor) -> str:
    name = (actor or "").strip() if isinstance(actor, str) else ""
    if not name:
        msg = "actor (who makes the change) is required"
        raise InvalidParameterError(msg)
    return name


def _resolve_type(con, problem_type) -> str:
    types = con.execute("SELECT code, name_zh, name_en FROM problem_types").df()
    key = str(problem_type).strip()
    for col in ("code", "name_zh", "name_en"):
        hit = types[types[col].astype(str).str.lower() == key.lower()]
        if len(hit):
            return str(hit["code"].iloc[0])
    labels = [f"{r.code} {r.name_zh}" for r in types.itertuples()]
    close = difflib.get_close_matches(key, list(types["name_zh"]) + list(types["code"]), n=3, cutoff=0.3)
    msg = (f"unknown problem type {problem_type!r}; closest: {', '.join(close) or ', '.join(labels[:3])} "
           "(a 小类 code such as 0201 or its name)")
    raise NotFoundError(msg)


def create_case(db: str | os.PathLike, *, actor: str, event_id: int | None = None, problem_type: str | None = None,
                lng: float | None = None, lat: float | None = None, crs: str = "wgs84", site_id: int | None = None,
                time=None, text: str | None = None, source: str = "inspection", note: str | None = None,
                dispatch: bool = False, unit: str | None = None) -> dict:
    """Open a case (state ``found``) for an existing event, or for a new event reported now.

    Parameters
    ----------
    db
        Database file (written atomically).
    actor
        Who opens the case (kept in the audit trail).
    event_id
        An existing event without a case. Otherwise a new event is created from ``problem_type`` and a
        location: ``lng``/``lat`` (in ``crs``: wgs84, gcj02, bd09, ...) or the ``site_id`` of a sample-frame
        site (its representative point), found at ``time`` (default now), with ``text`` and ``source``.
    note
        Note for the audit trail.
    dispatch
        Also register and dispatch the case in the same write (to ``unit`` or the automatic unit).

    Returns
    -------
    dict
        The case as :func:`get_case` returns it. Its deadline is computed from the problem type on the
        working clock; ``rebound_of`` links it to an earlier closed case it repeats.
    """
    actor = _actor(actor)
    at_now = now_local()
    with writing(db) as con:
        if event_id is not None:
            ev = con.execute("SELECT event_id, time, problem_type FROM events WHERE event_id = ?",
                             [int(event_id)]).df()
            if ev.empty:
                msg = f"no event {event_id}; event ids run " + "..".join(
                    str(x) for x in con.execute("SELECT min(event_id), max(event_id) FROM events").fetchone())
                raise NotFoundError(msg)
            if con.execute("SELECT count(*) FROM cases WHERE event_id = ?", [int(event_id)]).fetchone()[0]:
                msg = f"event {event_id} already has case {event_id}; move that case instead"
                raise ConflictError(msg)
            eid = int(event_id)
            found_at = pd.Timestamp(ev["time"].iloc[0]).to_pydatetime()
            ptype = ev["problem_type"].iloc[0]
        else:
            eid, found_at, ptype = _new_event(con, problem_type=problem_type, lng=lng, lat=lat, crs=crs,
                                              site_id=site_id, time=time, text=text, source=source, now=at_now)
        deadline = None
        if ptype is not None and not pd.isna(ptype):
            dl = compute_deadlines(con, [np.datetime64(found_at, "s")], [ptype])[0]
            deadline = None if np.isnat(dl) else pd.Timestamp(dl).to_pydatetime()
        con.execute(f"""
            INSERT INTO cases ({_CASE_COLUMNS})
            SELECT e.event_id, e.event_id, e.source, e.problem_type, e.site_id, s.category_code, e.grid_code,
                   e.community_code, e.street_code, e.district_code, 'found', e.time, ?::TIMESTAMP,
                   {_UNIT_EXPR}, {_UNIT_CODE_EXPR},
                   NULL, NULL, NULL, 0, NULL, NULL, ?::TIMESTAMP
            FROM events e {_UNIT_JOINS} WHERE e.event_id = ?
        """, [deadline, at_now, eid])
        _log(con, eid, found_at, actor, None, "found", note)
        link_rebounds(con, case_ids=[eid])
        if dispatch:
            _transition(con, eid, "registered", actor=actor, at=max(at_now, found_at), note=None)
            _transition(con, eid, "dispatched", actor=actor, at=max(at_now, found_at), note=None, unit=unit)
        _sync_events(con, "?", [eid])
        return get_case(con, eid)


def _new_event(con, *, problem_type, lng, lat, crs, site_id, time, text, source, now) -> tuple[int, datetime, str]:
    from civicgrid.geo.coords import to_wgs84
    from civicgrid.grids.locate import locate_points

    if source not in ("complaint", "inspection"):
        msg = f"source must be complaint or inspection, got {source!r}"
        raise InvalidParameterError(msg)
    if problem_type is None:
        msg = "a new case needs event_id, or problem_type and a location (lng/lat or site_id)"
        raise InvalidParameterError(msg)
    ptype = _resolve_type(con, problem_type)
    if site_id is not None:
        site = con.execute("SELECT lng, lat FROM sites WHERE site_id = ?", [int(site_id)]).fetchone()
        if site is None:
            msg = f"no site {site_id} in the sample frame"
            raise NotFoundError(msg)
        if lng is None or lat is None:
            x, y = float(site[0]), float(site[1])
        else:
            x, y = (float(v[0]) for v in to_wgs84([lng], [lat], crs))
    elif lng is not None and lat is not None:
        x, y = (float(v[0]) for v in to_wgs84([lng], [lat], crs))
    else:
        msg = "a new case needs a location: lng and lat, or site_id"
        raise InvalidParameterError(msg)
    if not (-180 <= x <= 180 and -90 <= y <= 90):
        msg = f"coordinates out of range: lng={lng}, lat={lat}"
        raise InvalidParameterError(msg)
    found_at = to_timestamp(time, field="time") if time is not None else now
    if found_at > now + timedelta(minutes=5):
        msg = f"time {found_at} is in the future (now {now})"
        raise InvalidParameterError(msg)
    loc = locate_points(con, np.array([x]), np.array([y])).iloc[0]
    eid = int(con.execute("SELECT coalesce(max(event_id), 0) + 1 FROM events").fetchone()[0])
    vals = {c: (None if pd.isna(loc[c]) else str(loc[c])) for c in
            ("grid_code", "community_code", "street_code", "district_code")}
    con.execute("""
        INSERT INTO events (event_id, source, external_id, problem_type, time, status, site_id, inspection_id, text,
                            lng, lat, h3, grid_code, community_code, street_code, district_code, reopened, dedup_key)
        VALUES (?, ?, NULL, ?, ?, 'open', ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)
    """, [eid, source, ptype, found_at, None if site_id is None else int(site_id), text, x, y, int(loc["h3"]),
          vals["grid_code"], vals["community_code"], vals["street_code"], vals["district_code"],
          f"case:{eid}"])
    return eid, found_at, ptype


def _target(current: str, to: str) -> str:
    key = str(to).strip().lower()
    if key in ACTIONS:
        src, dst = ACTIONS[key]
        if current != src:
            allowed = ", ".join(NEXT_STATES[current]) or "none (a closed case is final)"
            msg = f"cannot {key}: the case is {current} ({STATE_ZH[current]}); it can go to: {allowed}"
            raise ConflictError(msg)
        return dst
    if key in STATES:
        return key
    close = difflib.get_close_matches(key, list(STATES) + list(ACTIONS), n=2, cutoff=0.4)
    msg = (f"unknown transition {to!r}" + (f"; did you mean {' or '.join(close)}?" if close else "") +
           f" (states: {', '.join(STATES)}; actions: {', '.join(ACTIONS)})")
    raise InvalidParameterError(msg)


def _transition(con, case_id: int, to: str, *, actor: str, at: datetime, note=None, unit=None, photo=None) -> dict:
    case = _case_row(con, case_id)
    current = case["state"]
    target = _target(current, to)
    if target not in NEXT_STATES[current]:
        allowed = ", ".join(NEXT_STATES[current]) or "none (a closed case is final)"
        msg = (f"case {case_id} is {current} ({STATE_ZH[current]}) and cannot go to {target} "
               f"({STATE_ZH[target]}); allowed: {allowed}")
        raise ConflictError(msg)
    last = con.execute("SELECT max(changed_at) FROM case_log WHERE case_id = ?", [int(case_id)]).fetchone()[0]
    if last is not None and at < last:
        msg = f"time {at} is before the case's last step ({last}); transitions are recorded in order"
        raise InvalidParameterError(msg)
    sets, params = ["state = ?", "updated_at = ?"], [target, now_local()]
    if target == "dispatched":
        if unit is not None and str(unit).strip():
            sets += ["unit = ?", "unit_code = NULL"]
            params.append(str(unit).strip())
        if current == "rectified":  # rework (返工)
            sets += ["reworks = reworks + 1", "rectified_at = NULL"]
        else:
            sets.append("dispatched_at = ?")
            params.append(at)
    elif target == "rectified":
        sets.append("rectified_at = ?")
        params.append(at)
        if photo:
            sets.append("photo = ?")
            params.append(photo)
    elif target == "closed":
        sets.append("closed_at = ?")
        params.append(at)
    con.execute(f"UPDATE cases SET {', '.join(sets)} WHERE case_id = ?", [*params, int(case_id)])
    unit_now = con.execute("SELECT unit FROM cases WHERE case_id = ?", [int(case_id)]).fetchone()[0]
    _log(con, case_id, at, actor, current, target, note, unit_now if target == "dispatched" else None, photo)
    return _case_row(con, case_id)


def transition(db: str | os.PathLike, case_id: int, to: str, *, actor: str, at=None, note: str | None = None,
               unit: str | None = None, photo: str | None = None) -> dict:
    """Move a case to its next state and record it in the audit trail (one atomic write).

    Parameters
    ----------
    case_id
        The case (its event's id).
    to
        The target state (``registered``, ``dispatched``, ``rectified``, ``closed``) or an action
        (``register``, ``dispatch``, ``rectify``, ``close``, ``rework``). ``dispatched`` from ``rectified``
        is a rework (返工).
    actor
        Who makes the change.
    at
        When (default now); not before the case's previous step.
    note, photo
        Free text and a photo reference (e.g. a file name) for the audit trail (``photo`` mainly with
        ``rectified``).
    unit
        Dispatch to this unit instead of the automatic one.

    Returns
    -------
    dict
        The updated case with its audit trail.

    Raises
    ------
    ConflictError
        An illegal transition (e.g. closing an unrectified case, rectifying a closed one); nothing changes.
    """
    actor = _actor(actor)
    when = to_timestamp(at, field="at") if at is not None else now_local()
    if when > now_local() + timedelta(minutes=5):
        msg = f"at {when} is in the future"
        raise InvalidParameterError(msg)
    with writing(db) as con:
        _transition(con, int(case_id), to, actor=actor, at=when, note=note, unit=unit, photo=photo)
        _sync_events(con, "?", [int(case_id)])
        return get_case(con, int(case_id))


#: Rows (new cases plus earlier closed cases) :func:`link_rebounds` holds in memory at once; a batch holds
#: whole problem types, so one type larger than this is still handled in one batch.
REBOUND_BATCH_ROWS = 2_000_000
#: Events :func:`backfill` turns into cases per statement (bounds DuckDB's memory at any number of events).
BACKFILL_CHUNK = 1_000_000
#: Sphere of the rebound distance (metres; the IUGG mean Earth radius) and metres per degree of latitude on it.
EARTH_RADIUS_M = 6371008.8
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180
#: DuckDB memory limit while :func:`backfill` and :func:`link_rebounds` run on a connection that allows more
#: (both run in 1 GB at 10 million cases; without a cap DuckDB keeps a large write's blocks in memory, up to
#: 80 % of RAM by default).
CASES_MEMORY_LIMIT = "2GB"
_SIZE_UNITS = {"": 1, "b": 1, "bytes": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2.0**10,
               "mib": 2.0**20, "gib": 2.0**30, "tib": 2.0**40}


def _size_bytes(text) -> float | None:
    """Bytes of a DuckDB size setting such as ``'2GB'`` or ``'18.8 GiB'`` (None when not understood)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(text))
    unit = _SIZE_UNITS.get(m.group(2).lower()) if m else None
    return None if unit is None else float(m.group(1)) * unit


@contextlib.contextmanager
def _memory_cap(con):
    """Lower DuckDB's memory limit to :data:`CASES_MEMORY_LIMIT` for the block when it is higher."""
    current = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    have = _size_bytes(current)
    lowered = False
    if have is None or have > _size_bytes(CASES_MEMORY_LIMIT):
        with contextlib.suppress(duckdb.Error):  # e.g. more than the cap is in use already: keep the limit
            con.execute(f"SET memory_limit = '{CASES_MEMORY_LIMIT}'")
            lowered = True
    try:
        yield
    finally:
        if lowered:
            with contextlib.suppress(duckdb.Error):
                con.execute(f"SET memory_limit = '{_restorable(current)}'")


def _restorable(setting: str) -> str:
    """A DuckDB size setting as read back (truncated to its last shown digit, e.g. ``'18.8 GiB'``) moved to the
    middle of what it can stand for, so that setting it again shows the same value."""
    m = re.fullmatch(r"\s*([0-9]+)(?:\.([0-9]+))?\s*([A-Za-z]*)\s*", str(setting))
    if not m or not m.group(2) or m.group(3).lower() in ("", "b", "bytes"):
        return str(setting)
    digits = len(m.group(2))
    return f"{float(m.group(1) + '.' + m.group(2)) + 0.5 * 10.0**-digits:.{digits + 1}f} {m.group(3)}"


def haversine_m(lat1, lng1, lat2, lng2, cos1=None, cos2=None) -> np.ndarray:
    """Great-circle distance in metres on the sphere of radius :data:`EARTH_RADIUS_M` (degrees in).

    ``cos1``, ``cos2``: the cosines of the latitudes, when already known.
    """
    cos1 = np.cos(np.radians(lat1)) if cos1 is None else cos1
    cos2 = np.cos(np.radians(lat2)) if cos2 is None else cos2
    a = (np.sin(np.radians(np.subtract(lat2, lat1)) / 2) ** 2
         + cos1 * cos2 * np.sin(np.radians(np.subtract(lng2, lng1)) / 2) ** 2)
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


class _Closures:
    """Earlier closed cases sorted by (bucket key, closed_at, case_id); each key's cases are one segment.

    ``rank`` is each closure time's rank among all times of the batch (closures and findings) and ``n_ranks``
    their number, so that (segment, time) pairs become single integers ordered like the pairs.
    """

    def __init__(self, key, closed, ids, rank, n_ranks: int, lat=None, lng=None) -> None:
        order = np.lexsort((ids, closed, key))
        self.closed, self.ids = closed[order], ids[order]
        self.lat = None if lat is None else lat[order]
        self.lng = None if lng is None else lng[order]
        self.cos = None if lat is None else np.cos(np.radians(self.lat))
        self.keys, self.start, seg = np.unique(key[order], return_index=True, return_inverse=True)
        self.end = np.append(self.start[1:], len(order))
        self.n_ranks = int(n_ranks)
        self.pair = seg.astype(np.int64) * self.n_ranks + rank[order]  # sorted: (segment, time rank)

    def improve(self, q, key, found, rank, start, self_id, best_c, best_i, lat=None, lng=None, cos=None,
                radius=None) -> None:
        """Raise ``(best_c, best_i)`` of queries ``q`` to the latest closure of their segment that qualifies.

        A closure qualifies when it was closed in ``[start, found)``, is another case and, with ``radius``,
        lies within ``radius`` metres. The walk goes back from the last closure before ``found`` (one
        ``searchsorted`` on the (segment, time rank) pairs) in (closed_at, case_id) order and stops at the
        first that qualifies, at the window's start, or at the best closure found so far (``best_c``,
        ``best_i``, updated in place), checking 1, 2, 4, … 64 closures at a time.
        """
        if not len(self.keys) or not len(q):
            return
        seg = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        hit = self.keys[seg] == key
        lo = self.start[seg]
        pos = np.searchsorted(self.pair, seg * self.n_ranks + rank[q]) - 1  # last closure before found
        act = np.flatnonzero(hit & (pos >= lo))
        width = 1
        while act.size:
            idx = q[act]
            cand = pos[act, None] - np.arange(width)
            valid = cand >= lo[act, None]
            cand = np.where(valid, cand, lo[act, None])
            oc, oi = self.closed[cand], self.ids[cand]
            bc, bi = best_c[idx, None], best_i[idx, None]
            # eligible: in the window and better than the best so far (both stay false once false on the walk)
            go = valid & (oc >= start[idx, None]) & ((oc > bc) | ((oc == bc) & (oi > bi)))
            ok = go & (oi != self_id[idx, None])
            if radius is not None:
                ok &= haversine_m(lat[idx, None], lng[idx, None], self.lat[cand], self.lng[cand],
                                  cos[idx, None], self.cos[cand]) <= radius
            got = ok.any(axis=1)
            rows = np.flatnonzero(got)
            j = ok[rows].argmax(axis=1)
            best_c[idx[rows]] = oc[rows, j]
            best_i[idx[rows]] = oi[rows, j]
            more = ~got & go.all(axis=1)
            pos[act] -= width
            act = act[more]
            width = min(2 * width, 64)


def _grid_keys(t, lat, lng, *, c0: float, radius: float, n_types: int):
    """Square buckets of side just over ``2 * radius`` metres: (gx, gy), the position in the bucket (0..1 in x
    and y) and a key function of (type, gx, gy).

    North-south metres per degree are exact on the sphere; east-west ones are scaled by ``c0`` (the cosine of
    the largest latitude), so bucket distances never exceed true ones: a point within ``radius`` of another
    lies in its bucket or in a neighbour across the nearer side in x, in y, or both (the farther sides are
    more than ``radius`` away). The side grows when the key would not fit in 62 bits.
    """
    side = 2.02 * radius
    while True:
        y, x = lat * _M_PER_DEG / side, lng * _M_PER_DEG * c0 / side
        gy, gx = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
        x0, y0 = (int(gx.min()), int(gy.min())) if len(gx) else (0, 0)
        nx = (int(gx.max()) - x0 + 3) if len(gx) else 3
        ny = (int(gy.max()) - y0 + 3) if len(gy) else 3
        if n_types * nx * ny < 2**62:
            break
        side *= 2.0

    def key(ti, ix, iy):
        return (ti.astype(np.int64) * nx + (ix - x0 + 1)) * ny + (iy - y0 + 1)

    return gx, gy, x - gx, y - gy, key


def _rebound_batch(new: dict, old: dict, *, radius: float, window_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Links (case_id, old case_id) of one batch of new cases against the earlier closed cases of their types."""
    n = len(new["case_id"])
    best_c = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    best_i = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    found, self_id = new["found_us"], new["case_id"]
    start = found - window_us
    n_types = int(max(new["t"].max(initial=0), old["t"].max(initial=0))) + 1
    times, rank = np.unique(np.concatenate([found, old["closed_us"]]), return_inverse=True)
    n_ranks = len(times) + 1
    new_rank, old_rank = rank[:n].astype(np.int64), rank[n:].astype(np.int64)
    del times, rank
    # 1. the same site: buckets (type, site)
    qs, os_ = np.flatnonzero(new["has_site"]), np.flatnonzero(old["has_site"])
    if qs.size and os_.size:
        _, site = np.unique(np.concatenate([new["site"][qs], old["site"][os_]]), return_inverse=True)
        n_sites = int(site.max()) + 1
        qkey = new["t"][qs].astype(np.int64) * n_sites + site[:qs.size]
        okey = old["t"][os_].astype(np.int64) * n_sites + site[qs.size:]
        index = _Closures(okey, old["closed_us"][os_], old["case_id"][os_], old_rank[os_], n_ranks)
        order = np.lexsort((found[qs], qkey))  # queries in index order: searches touch memory in sequence
        index.improve(qs[order], qkey[order], found, new_rank, start, self_id, best_c, best_i)
    # 2. within the radius: buckets (type, grid square), each new case against its square and 3 neighbours
    qf = np.flatnonzero(np.isfinite(new["lat"]) & np.isfinite(new["lng"]))
    of = np.flatnonzero(np.isfinite(old["lat"]) & np.isfinite(old["lng"]))
    if qf.size and of.size:
        lat = np.concatenate([new["lat"][qf], old["lat"][of]])
        lng = np.concatenate([new["lng"][qf], old["lng"][of]])
        c0 = math.cos(math.radians(min(float(np.abs(lat).max()), 89.9)))
        t = np.concatenate([new["t"][qf], old["t"][of]])
        gx, gy, fx, fy, key = _grid_keys(t, lat, lng, c0=c0, radius=radius, n_types=n_types)
        m = qf.size
        fx, fy = fx[:m], fy[:m]
        index = _Closures(key(t[m:], gx[m:], gy[m:]), old["closed_us"][of], old["case_id"][of], old_rank[of],
                          n_ranks, lat[m:], lng[m:])
        qkey = key(t[:m], gx[:m], gy[:m])
        order = np.lexsort((found[qf], qkey))  # queries in index order (a neighbour's key is a constant shift)
        qf, qkey = qf[order], qkey[order]
        qx, qy, qt = gx[:m][order], gy[:m][order], t[:m][order]
        del lat, lng, t, gx, gy
        cos = np.cos(np.radians(new["lat"]))
        # the square of each new case and the neighbour across its nearer side, in x, in y and diagonally
        ex, ey = np.where(fx[order] < 0.5, -1, 1), np.where(fy[order] < 0.5, -1, 1)
        for dx, dy in ((0, 0), (ex, 0), (0, ey), (ex, ey)):
            index.improve(qf, key(qt, qx + dx, qy + dy), found, new_rank, start, self_id, best_c, best_i,
                          lat=new["lat"], lng=new["lng"], cos=cos, radius=radius)
    linked = best_i != np.iinfo(np.int64).min
    return self_id[linked], best_i[linked]


def link_rebounds(con: duckdb.DuckDBPyConnection, *, case_ids=None, radius_m: float | None = None,
                  days: float | None = None) -> int:
    """Link cases to the earlier closed case they repeat (回头看); return the number of links set.

    A case ``c`` rebounds from ``o`` when both have the same problem type, they are at the same site or within
    ``radius_m`` metres (great-circle distance of the events' points on a sphere of radius 6,371,008.8 m), and
    ``o`` was closed before ``c`` was found, at most ``days`` days before. The most recent such closure wins
    (on a tie, the larger case id). Cases already linked keep their link.

    Near-linear at any size: the closed cases are sorted by (type, site, closed_at) and by (type, square of
    side ``2 × radius_m``, closed_at); each new case searches its site, its square and the 3 squares across
    its nearer sides for the last closure before it was found, and walks back only until one qualifies, the
    window ends or the best so far is older. No candidate pairs are materialised; memory is bounded by
    batches of whole problem types (:data:`REBOUND_BATCH_ROWS`).

    Parameters
    ----------
    con
        A read-write connection (inside :func:`geo.store.writing`).
    case_ids
        Cases to link (a list or array; default: every unlinked case).
    radius_m, days
        Default: the settings ``rebound_radius_m`` and ``rebound_days``.
    """
    with _memory_cap(con):
        return _link_rebounds(con, case_ids=case_ids, radius_m=radius_m, days=days)


def _link_rebounds(con, *, case_ids, radius_m, days) -> int:
    cfg = get_settings(con)
    radius = float(radius_m if radius_m is not None else cfg["rebound_radius_m"])
    window = float(days if days is not None else cfg["rebound_days"])
    window_us = math.floor(window * 86400e6 + 0.5)
    ranges = _case_id_ranges(con)
    if case_ids is not None:
        ids = np.unique(np.asarray(case_ids, dtype=np.int64))
        if not ids.size or not ranges:
            return 0
        con.register("_link_ids_df", pd.DataFrame({"case_id": ids}))
        con.execute("CREATE OR REPLACE TEMP TABLE _link_ids AS SELECT * FROM _link_ids_df")
        con.unregister("_link_ids_df")
        del ids
        subset = "AND c.case_id IN (SELECT case_id FROM _link_ids WHERE case_id >= $lo AND case_id < $hi)"
    else:
        subset = ""
    try:
        # In ranges of case ids, so that DuckDB's joins stay small at any number of cases.
        con.execute("CREATE OR REPLACE TEMP TABLE _reb_new (case_id BIGINT, problem_type VARCHAR, site_id BIGINT, "
                    "found_us BIGINT, lat DOUBLE, lng DOUBLE)")
        for part in ranges:
            con.execute(f"""
                INSERT INTO _reb_new
                SELECT c.case_id, c.problem_type, c.site_id, epoch_us(c.found_at), e.lat, e.lng
                FROM cases c JOIN events e ON e.event_id = c.event_id
                WHERE c.case_id >= $lo AND c.case_id < $hi AND e.event_id BETWEEN $elo AND $ehi
                  AND c.rebound_of IS NULL AND c.problem_type IS NOT NULL AND c.found_at IS NOT NULL {subset}
            """, part)
        con.execute("DROP TABLE IF EXISTS _link_ids")
        # Per type: the closures that can matter are those in [first found - window, last found).
        types = con.execute("""
            SELECT problem_type, count(*) AS n, min(found_us) AS lo, max(found_us) AS hi
            FROM _reb_new GROUP BY problem_type ORDER BY problem_type
        """).df()
        if types.empty:
            return 0
        types["t"] = np.arange(len(types), dtype=np.int32)
        types["lo"] = types["lo"] - window_us
        con.register("_reb_types_df", types[["problem_type", "t", "lo", "hi"]])
        con.execute("CREATE OR REPLACE TEMP TABLE _reb_types AS SELECT * FROM _reb_types_df")
        con.unregister("_reb_types_df")
        con.execute("CREATE OR REPLACE TEMP TABLE _reb_old (case_id BIGINT, problem_type VARCHAR, site_id BIGINT, "
                    "closed_us BIGINT, lat DOUBLE, lng DOUBLE)")
        for part in ranges:
            con.execute("""
                INSERT INTO _reb_old
                SELECT c.case_id, c.problem_type, c.site_id, epoch_us(c.closed_at), e.lat, e.lng
                FROM cases c JOIN _reb_types t ON t.problem_type = c.problem_type
                JOIN events e ON e.event_id = c.event_id
                WHERE c.case_id >= $lo AND c.case_id < $hi AND e.event_id BETWEEN $elo AND $ehi
                  AND c.state = 'closed' AND c.closed_at IS NOT NULL
                  AND epoch_us(c.closed_at) >= t.lo AND epoch_us(c.closed_at) < t.hi
            """, part)
        counts = types.set_index("problem_type")["n"].add(
            con.execute("SELECT problem_type, count(*) AS n FROM _reb_old GROUP BY problem_type").df()
            .set_index("problem_type")["n"], fill_value=0).reindex(types["problem_type"]).to_numpy()
        batch = np.zeros(len(types), dtype=np.int64)
        rows = 0
        for i, c in enumerate(counts):  # consecutive whole types, up to REBOUND_BATCH_ROWS rows per batch
            if rows and rows + c > REBOUND_BATCH_ROWS:
                batch[i:] += 1
                rows = 0
            rows += c
        links = []
        for b in range(int(batch.max()) + 1):
            tlo, thi = int(types["t"][batch == b].min()), int(types["t"][batch == b].max())
            new = _fetch_points(con, "_reb_new", "found_us", tlo, thi)
            old = _fetch_points(con, "_reb_old", "closed_us", tlo, thi)
            links.append(_rebound_batch(new, old, radius=radius, window_us=window_us))
            del new, old
        case_id = np.concatenate([a for a, _ in links])
        old_id = np.concatenate([b for _, b in links])
        del links
        if not case_id.size:
            return 0
        con.register("_reb_df", pd.DataFrame({"case_id": case_id, "old_id": old_id}))
        con.execute("CREATE OR REPLACE TEMP TABLE _reb AS SELECT * FROM _reb_df ORDER BY case_id")
        con.unregister("_reb_df")
        con.execute("UPDATE cases SET rebound_of = r.old_id FROM _reb r WHERE cases.case_id = r.case_id")
        # the events carry the link (only rebound_of changed: one column, not a full _sync_events), in ranges
        con.execute("CREATE OR REPLACE TEMP TABLE _reb_ev AS SELECT c.event_id, r.old_id FROM cases c "
                    "JOIN _reb r ON r.case_id = c.case_id ORDER BY c.event_id")
        for lo, hi in _id_ranges(con, "_reb_ev", "event_id"):
            con.execute("""
                UPDATE events SET rebound_of = r.old_id FROM _reb_ev r
                WHERE events.event_id >= $lo AND events.event_id < $hi AND r.event_id >= $lo AND r.event_id < $hi
                  AND events.event_id = r.event_id AND events.rebound_of IS DISTINCT FROM r.old_id
            """, {"lo": lo, "hi": hi})
        return int(case_id.size)
    finally:
        for name in ("_link_ids", "_reb_new", "_reb_old", "_reb_types", "_reb", "_reb_ev"):
            con.execute(f"DROP TABLE IF EXISTS {name}")


def _case_id_ranges(con) -> list[dict[str, int]]:
    """Parts of about :data:`REBOUND_BATCH_ROWS` cases: ``[lo, hi)`` of their case ids and ``[elo, ehi]`` of
    their event ids (both bounds let DuckDB skip the rest of ``cases`` and ``events``)."""
    out = []
    for lo, hi in _id_ranges(con, "cases", "case_id"):
        elo, ehi = con.execute("SELECT min(event_id), max(event_id) FROM cases WHERE case_id >= ? AND case_id < ?",
                               [lo, hi]).fetchone()
        if elo is not None:
            out.append({"lo": lo, "hi": hi, "elo": int(elo), "ehi": int(ehi)})
    return out


def _id_ranges(con, table: str, column: str) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges of an id column splitting a table into parts of about :data:`REBOUND_BATCH_ROWS`."""
    lo, hi, n = con.execute(f"SELECT min({column}), max({column}), count(*) FROM {table}").fetchone()
    if not n:
        return []
    parts = max(1, -(-int(n) // REBOUND_BATCH_ROWS))
    inner = np.linspace(int(lo), int(hi) + 1, parts + 1)[1:-1].round().astype(np.int64).tolist()
    edges = sorted({int(lo), *inner, int(hi) + 1})
    return list(itertools.pairwise(edges))


def _fetch_points(con, table: str, time_col: str, tlo: int, thi: int) -> dict[str, np.ndarray]:
    """Columns of the cases of types ``tlo..thi`` of a rebound temp table as numpy arrays."""
    got = con.execute(f"""
        SELECT x.case_id, t.t, x.site_id IS NOT NULL AS has_site, coalesce(x.site_id, 0) AS site,
               x.{time_col}, coalesce(x.lat, 'nan'::DOUBLE) AS lat, coalesce(x.lng, 'nan'::DOUBLE) AS lng
        FROM {table} x JOIN _reb_types t ON t.problem_type = x.problem_type
        WHERE t.t BETWEEN ? AND ?
    """, [tlo, thi]).fetchnumpy()
    return {k: np.asarray(v) for k, v in got.items()}


def backfill(con: duckdb.DuckDBPyConnection, *, actor: str = "import") -> int:
    """Turn every event without a case into a case with an audit trail, from the event's own record.

    For use inside :func:`geo.store.writing` (the demo and imports call it). The state follows the event:
    ``closed`` when it has ``closed_at`` (or status closed), ``rectified`` when it has ``rectified_at``, else
    ``dispatched`` (to the automatic unit). The audit trail gets found, registered and dispatched at the
    event's time, ``reopened`` rework rounds (rectified → dispatched) spread evenly between the event's time
    and its last rectification (the source records no earlier times), the last rectification and the
    closure. The event's deadline is kept (computed on the working clock when missing) and its
    ``rebound_of`` link is kept; no rebound linking runs here (see :func:`link_rebounds`).
    Bulk SQL in chunks of :data:`BACKFILL_CHUNK` events in id order (audit rows are numbered by case, then
    step); returns the number of cases created.
    """
    with _memory_cap(con):
        return _backfill(con, actor=actor)


def _backfill(con, *, actor: str) -> int:
    closed = "coalesce(e.closed_at, CASE WHEN e.status = 'closed' THEN coalesce(e.rectified_at, e.time) END)"
    rectified = "coalesce(e.rectified_at, e.closed_at, CASE WHEN e.status = 'closed' THEN e.time END)"
    reworks = "greatest(coalesce(e.reopened, 0), 0)::INTEGER"
    todo = con.execute(f"""
        SELECT e.event_id, 3 + 2 * {reworks} + ({rectified} IS NOT NULL)::INTEGER
                             + ({closed} IS NOT NULL)::INTEGER AS n_steps
        FROM events e WHERE NOT EXISTS (SELECT 1 FROM cases c WHERE c.event_id = e.event_id)
    """).fetchnumpy()
    ids = np.asarray(todo["event_id"], dtype=np.int64)
    if not ids.size:
        return 0
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    steps = np.asarray(todo["n_steps"], dtype=np.int64)[order]
    del todo, order
    first_log = int(con.execute("SELECT coalesce(max(log_id), 0) FROM case_log").fetchone()[0]) + 1
    log0 = first_log + np.cumsum(steps) - steps  # each case's first audit row id
    del steps
    hours = type_hours(_rows(con, "SELECT code, deadline_value, deadline_unit FROM problem_types"))
    con.register("_bf_hours_df", pd.DataFrame({"code": hours.index.astype(str), "hours": hours.to_numpy(float)}))
    con.execute("CREATE OR REPLACE TEMP TABLE _bf_hours AS SELECT * FROM _bf_hours_df")
    con.unregister("_bf_hours_df")
    calendar = WorkCalendar.from_store(con)
    stamp = now_local()
    try:
        for i in range(0, ids.size, BACKFILL_CHUNK):
            chunk_ids, chunk_log0 = ids[i:i + BACKFILL_CHUNK], log0[i:i + BACKFILL_CHUNK]
            lo, hi = int(chunk_ids[0]), int(chunk_ids[-1]) + 1  # the id range lets DuckDB skip the rest
            missing = con.execute("""
                SELECT e.event_id, e.time, h.hours FROM events e JOIN _bf_hours h ON h.code = e.problem_type
                WHERE e.event_id >= ? AND e.event_id < ? AND e.deadline IS NULL AND e.problem_type IS NOT NULL
            """, [lo, hi]).fetchnumpy()
            deadline = np.full(chunk_ids.size, np.datetime64("NaT"), dtype="M8[s]")
            at = np.searchsorted(chunk_ids, np.asarray(missing["event_id"], dtype=np.int64))
            mine = (at < chunk_ids.size) & (chunk_ids[np.minimum(at, chunk_ids.size - 1)] == missing["event_id"])
            deadline[at[mine]] = calendar.deadlines(np.asarray(missing["time"]).astype("M8[s]")[mine],
                                                    np.asarray(missing["hours"], dtype="float64")[mine])
            del missing
            con.register("_bf_ids_df", pd.DataFrame({"event_id": chunk_ids, "log0": chunk_log0,
                                                     "deadline": deadline}))
            con.execute("CREATE OR REPLACE TEMP TABLE _bf_ids AS SELECT * FROM _bf_ids_df")
            con.unregister("_bf_ids_df")
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE _bf AS
                SELECT *, CASE WHEN closed_at IS NOT NULL THEN 'closed'
                               WHEN rectified_at IS NOT NULL THEN 'rectified' ELSE 'dispatched' END AS state,
                          3 + 2 * reworks + (rectified_at IS NOT NULL)::INTEGER
                            + (closed_at IS NOT NULL)::INTEGER AS n_steps
                FROM (
                    SELECT e.event_id AS case_id, e.event_id, e.source, e.problem_type, e.site_id, s.category_code,
                           e.grid_code, e.community_code, e.street_code, e.district_code,
                           e.time AS found_at, coalesce(e.deadline, k.deadline) AS deadline, {_UNIT_SQL},
                           {closed} AS closed_at, {rectified} AS rectified_at, {reworks} AS reworks,
                           e.rebound_of, k.log0
                    FROM _bf_ids k JOIN events e ON e.event_id = k.event_id {_UNIT_JOINS}
                    WHERE e.event_id >= ? AND e.event_id < ?
                )
            """, [lo, hi])
            con.execute(f"""
                INSERT INTO cases ({_CASE_COLUMNS})
                SELECT case_id, event_id, source, problem_type, site_id, category_code, grid_code,
                       community_code, street_code, district_code, state, found_at, deadline, unit, unit_code,
                       found_at, rectified_at, closed_at, reworks, rebound_of, NULL, ?::TIMESTAMP
                FROM _bf
            """, [stamp])
            # Steps of a case with r reworks: 0 found, 1 registered, 2 dispatched; 3 .. 2 + 2r the rework rounds
            # (the k-th of r rectified at t + span*(2k-1)/(2r+1), sent back at t + span*2k/(2r+1)); 3 + 2r
            # rectified; 4 + 2r closed. A case's rows are numbered from its log0 on.
            con.execute("""
                INSERT INTO case_log
                SELECT log0 + step, case_id,
                       CASE WHEN step < 3 THEN found_at
                            WHEN step < 3 + 2 * reworks THEN found_at + to_microseconds(
                                greatest(epoch_us(coalesce(rectified_at, deadline, found_at)) - epoch_us(found_at), 0)
                                * (step - 2) // (2 * reworks + 1) // 1000000 * 1000000)
                            WHEN step = 3 + 2 * reworks THEN rectified_at ELSE closed_at END,
                       ?,
                       CASE WHEN step = 0 THEN NULL WHEN step = 1 THEN 'found' WHEN step = 2 THEN 'registered'
                            WHEN step < 3 + 2 * reworks
                                THEN CASE WHEN (step - 3) % 2 = 0 THEN 'dispatched' ELSE 'rectified' END
                            WHEN step = 3 + 2 * reworks THEN 'dispatched' ELSE 'rectified' END,
                       CASE WHEN step = 0 THEN 'found' WHEN step = 1 THEN 'registered' WHEN step = 2 THEN 'dispatched'
                            WHEN step < 3 + 2 * reworks
                                THEN CASE WHEN (step - 3) % 2 = 0 THEN 'rectified' ELSE 'dispatched' END
                            WHEN step = 3 + 2 * reworks THEN 'rectified' ELSE 'closed' END,
                       NULL,
                       CASE WHEN step = 2 OR (step < 3 + 2 * reworks AND (step - 3) % 2 = 1) THEN unit END,
                       NULL
                FROM (SELECT case_id, found_at, deadline, rectified_at, closed_at, reworks, unit, log0,
                             unnest(range(n_steps::BIGINT)) AS step FROM _bf)
            """, [actor])
            # the event carries its case's state (only rows that differ are written)
            con.execute("""
                UPDATE events SET status = CASE WHEN b.state = 'closed' THEN 'closed' ELSE 'open' END,
                       deadline = b.deadline, rectified_at = b.rectified_at, closed_at = b.closed_at,
                       reopened = b.reworks, rebound_of = b.rebound_of
                FROM _bf b WHERE events.event_id = b.event_id AND events.event_id >= ? AND events.event_id < ?
                  AND (events.status IS DISTINCT FROM CASE WHEN b.state = 'closed' THEN 'closed' ELSE 'open' END
                       OR events.deadline IS DISTINCT FROM b.deadline
                       OR events.rectified_at IS DISTINCT FROM b.rectified_at
                       OR events.closed_at IS DISTINCT FROM b.closed_at
                       OR events.reopened IS DISTINCT FROM b.reworks
                       OR events.rebound_of IS DISTINCT FROM b.rebound_of)
            """, [lo, hi])
    finally:
        for name in ("_bf", "_bf_ids", "_bf_hours"):
            con.execute(f"DROP TABLE IF EXISTS {name}")
    return int(ids.size)


def backfill_db(db: str | os.PathLike, *, actor: str = "import") -> int:
    """:func:`backfill` as one atomic write on the database file ``db``."""
    with writing(db) as con:
        return backfill(con, actor=actor)
