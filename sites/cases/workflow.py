"""The case workflow: opening a case, moving it through its states with an audit trail, and reading cases.

A **case** follows one event (an inspection hit or a complaint needing action) and has the event's id
(``case_id == event_id``). Its states follow the digital city-management workflow (GB/T 30428):
``found → registered → dispatched → rectified → closed``, and ``rectified → dispatched`` when verification
fails (返工, rework). Every other move is refused with :class:`~civicgrid.geo.errors.ConflictError` and changes
nothing. Every transition is a row of ``case_log`` (who, when, from, to, note, unit, photo), and the linked
event is kept in sync (``status``, ``deadline``, ``rectified_at``, ``closed_at``, ``reopened``,
``rebound_of``), so the heatmap's ``status`` filters read the case state.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from civicgrid.geo.aggregate import area_code
from civicgrid.geo.caches import cached_read
from civicgrid.geo.coords import to_wgs84
from civicgrid.geo.errors import ConflictError, InvalidParameterError, NotFoundError
from civicgrid.geo.group_commit import group_memory, group_state, keeps_memory, submit
from civicgrid.geo.staging import next_ids
from civicgrid.geo.store import Store, extent
from civicgrid.geo.texts import labels
from civicgrid.geo.times import now_local, parse_moment, store_now, store_timezone
from civicgrid.grids.locate import Locator
from civicgrid.sites.cases._sql import (
    CASE_COLUMNS,
    StoreOrConnection,
    query_frame,
)
from civicgrid.sites.cases.calendar import WorkCalendar, compute_deadlines, type_hours
from civicgrid.sites.cases.config import get_settings
from civicgrid.sites.cases.rebounds import LABEL_KIND, _rebound_batch, closures
from civicgrid.sites.cases.units import DispatchUnits

#: Case states in workflow order.
STATES = ("found", "registered", "dispatched", "rectified", "closed")
#: Chinese names of the states (``[case.state]`` of the text catalogue).
STATE_ZH = labels("case.state", "zh")
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


# --------------------------------------------------------------------------------------------------
# Reading cases
# --------------------------------------------------------------------------------------------------


def _case_row(con: StoreOrConnection, case_id: int) -> dict:
    row = query_frame(con, f"SELECT {CASE_COLUMNS} FROM cases WHERE case_id = ?", [int(case_id)])
    if row.empty:
        if isinstance(con, Store):
            with con.reading() as cur:
                lo, hi = extent(cur, "cases", "case_id")
        else:
            lo, hi = extent(con, "cases", "case_id")
        hint = f"case ids run {lo}..{hi}" if lo is not None else "there are no cases yet"
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


def _id(v) -> int | None:
    """An id read from a frame (a float where its column has nulls) as an int, or None."""
    v = _py(v)
    return None if v is None else int(v)


#: The columns of an audit row as read (what the memory of a group keeps of a case's trail).
_LOG_READ = "log_id, case_id, changed_at, actor, from_state, to_state, note, unit, photo"
_CASE_NAMES = tuple(c.strip() for c in CASE_COLUMNS.split(","))
_LOG_NAMES = tuple(c.strip() for c in _LOG_READ.split(","))

#: One case and its audit trail in one read (one snapshot): the case's columns, then its audit rows' (``log_*``).
_CASE_WITH_LOG = (f"SELECT {', '.join(f'c.{c}' for c in _CASE_NAMES)}, "
                  + ", ".join(f"l.{c} AS log_{c}" for c in _LOG_NAMES if c != "case_id")
                  + " FROM cases c LEFT JOIN case_log l ON l.case_id = c.case_id AND l.case_id = {id} "
                    "WHERE c.case_id = {id} ORDER BY l.log_id")


def get_case(store: StoreOrConnection, case_id: int) -> dict:
    """One case as a dict, with ``log`` (its audit trail, oldest first) and ``next`` (legal next states).

    The case and its trail are one read: a move committed meanwhile is in both or in neither."""
    rows = query_frame(store, _CASE_WITH_LOG.format(id=int(case_id)))  # a literal id: planned once
    if rows.empty:
        _case_row(store, case_id)  # raises NotFoundError naming the ids there are
    first = rows.iloc[0].to_dict()
    case = {c: _py(first[c]) for c in _CASE_NAMES}
    trail = rows[[c for c in rows.columns if c.startswith("log_")]]
    trail = trail[trail["log_log_id"].notna()]
    case["log"] = [{k.removeprefix("log_"): _py(v) for k, v in r.items()} for r in trail.to_dict("records")]
    for r in case["log"]:
        r["log_id"] = int(r["log_id"])
    case["next"] = list(NEXT_STATES[case["state"]])
    return case


def with_source_label(store: StoreOrConnection, case: dict) -> dict:
    """``case`` (a :func:`get_case` dict) with ``source_type``: the city's own label of its event when the case
    has no problem type (what it is called then), else None."""
    event = case["event_id"]
    case["source_type"] = source_labels(store, [event]).get(event) if case["problem_type"] is None else None
    return case


def source_labels(con: StoreOrConnection, event_ids) -> dict[int, str]:
    """The city's own type label (``events.source_type``) of the events ``event_ids``: what a case without a
    problem type is called (San Francisco 311's "Sidewalk_Cleaning" before it is mapped to a type)."""
    ids = sorted({int(i) for i in event_ids if i is not None and not pd.isna(i)})
    if not ids:
        return {}
    rows = query_frame(con, f"SELECT event_id, source_type FROM events WHERE event_id IN ({', '.join(map(str, ids))})"
                            " AND source_type IS NOT NULL")  # literal ids: the row groups holding them are read
    return dict(zip(rows["event_id"].astype(int), rows["source_type"], strict=True))


def case_log(store: StoreOrConnection, case_id: int) -> pd.DataFrame:
    """The audit trail of a case: ``log_id, at, actor, from_state, to_state, note, unit, photo``, oldest first."""
    _case_row(store, case_id)
    return query_frame(store, "SELECT log_id, changed_at, actor, from_state, to_state, note, unit, photo "
                              "FROM case_log WHERE case_id = ? ORDER BY log_id", [int(case_id)])


def list_cases(store: Store, *, state: str | None = None, area: str | None = None, site_id: int | None = None,
               overdue: bool | None = None, as_of=None, limit: int = 100, offset: int = 0) -> pd.DataFrame:
    """Cases, newest first, filtered by state, area (any district/street/community/grid, by code or name), site,
    overdue: one page of ``limit`` rows from ``offset``.

    ``overdue``: not closed and past its deadline at ``as_of`` (default now).

    Returns
    -------
    pandas.DataFrame
        The page: the case columns and ``source_type`` (the city's own label of a case without a problem type);
        ``attrs["total"]`` is the number of matching cases (all pages): page on with ``offset=offset + limit``
        while it is below ``total``.
    """
    where, params = ["TRUE"], []
    if state:
        if state not in STATES:
            msg = f"unknown state {state!r}; states: {', '.join(STATES)}"
            raise InvalidParameterError(msg)
        where.append("state = ?")
        params.append(state)
    if area:
        area = area_code(store, str(area))  # a name is read as its code; an unknown one raises NotFoundError
        where.append("? IN (grid_code, community_code, street_code, district_code)")
        params.append(area)
    if site_id is not None:
        if query_frame(store, "SELECT 1 FROM sites WHERE site_id = ?", [int(site_id)]).empty:
            msg = f"no site {site_id} in the sample frame"
            raise NotFoundError(msg)
        where.append("site_id = ?")
        params.append(int(site_id))
    if overdue is not None:
        tz = store_timezone(store)
        t = parse_moment(as_of, name="as_of", tz=tz) if as_of is not None else now_local(tz=tz)
        cond = "(state <> 'closed' AND deadline < ?)"
        where.append(cond if overdue else f"NOT {cond}")
        params.append(t)
    if not 0 < int(limit) <= 10_000 or int(offset) < 0:
        msg = f"limit must be 1..10000 and offset >= 0, got limit={limit}, offset={offset}"
        raise InvalidParameterError(msg)
    cond = " AND ".join(where)
    con = store.cursor() if isinstance(store, Store) else store  # one cursor: page and total read one version
    try:
        df = query_frame(con, f"SELECT {CASE_COLUMNS} FROM cases WHERE {cond} "
                              f"ORDER BY found_at DESC, case_id DESC LIMIT {int(limit)} OFFSET {int(offset)}", params)
        total = len(df) + int(offset) if 0 < len(df) < int(limit) else \
            int(query_frame(con, f"SELECT count(*) AS n FROM cases WHERE {cond}", params)["n"].iloc[0])
        labels = source_labels(con, df.loc[df["problem_type"].isna(), "event_id"])
        df["source_type"] = pd.Series([labels.get(int(e)) if pd.notna(e) else None for e in df["event_id"]],
                                      index=df.index, dtype=object)
    finally:
        if con is not store:
            con.close()
    df.attrs["total"] = total
    return df


# --------------------------------------------------------------------------------------------------
# Writing: create and transition
# --------------------------------------------------------------------------------------------------


#: The columns of an event that mirror its case: (event column, case column).
_MIRROR = (("status", "state"), ("deadline", "deadline"), ("rectified_at", "rectified_at"),
           ("closed_at", "closed_at"), ("reopened", "reworks"), ("rebound_of", "rebound_of"))


def _mirror(case: dict) -> tuple:
    """What the event of ``case`` mirrors of it (status, deadline, rectified_at, closed_at, reopened, rebound_of),
    so that the heatmap's ``status`` filters read the case state."""
    return ("closed" if case["state"] == "closed" else "open", case["deadline"], case["rectified_at"],
            case["closed_at"], int(case["reworks"] or 0), case["rebound_of"])


def _mirror_events(con: duckdb.DuckDBPyConnection, cases: Sequence[dict]) -> None:
    """Write the mirrored columns of ``cases`` (as they are now in this transaction) onto their events, from the
    values themselves: one UPDATE of those events by id, no join with ``cases``."""
    if not cases:
        return
    values = [_mirror(c) for c in cases]
    table = pa.table({"event_id": pa.array([int(c["event_id"]) for c in cases], pa.int64()),
                      "status": pa.array([v[0] for v in values], pa.string()),
                      "deadline": pa.array([v[1] for v in values], pa.timestamp("us")),
                      "rectified_at": pa.array([v[2] for v in values], pa.timestamp("us")),
                      "closed_at": pa.array([v[3] for v in values], pa.timestamp("us")),
                      "reopened": pa.array([v[4] for v in values], pa.int32()),
                      "rebound_of": pa.array([v[5] for v in values], pa.int64())})
    ids = ", ".join(str(int(c["event_id"])) for c in cases)
    con.register("_mirrored", table)
    try:
        con.execute(f"UPDATE events SET {', '.join(f'{col} = m.{col}' for col, _ in _MIRROR)} FROM _mirrored m "
                    f"WHERE events.event_id IN ({ids}) AND events.event_id = m.event_id")
    finally:
        con.unregister("_mirrored")


def _actor(actor) -> str:
    name = (actor or "").strip() if isinstance(actor, str) else ""
    if not name:
        msg = "actor (who makes the change) is required"
        raise InvalidParameterError(msg)
    return name


def resolve_type(types: pd.DataFrame, problem_type) -> str:
    """The code of a problem type given by code, Chinese or English name (``types``: the problem_types table)."""
    key = str(problem_type).strip()
    for col in ("code", "name_zh", "name_en"):
        hit = types[types[col].astype(str).str.lower() == key.lower()]
        if len(hit):
            return str(hit["code"].iloc[0])
    names = [f"{r.code} {r.name_zh}" for r in types.itertuples()]
    close = difflib.get_close_matches(key, list(types["name_zh"]) + list(types["code"]), n=3, cutoff=0.3)
    msg = (f"unknown problem type {problem_type!r}; closest: {', '.join(close) or ', '.join(names[:3])} "
           "(a 小类 code such as 0201 or its name)")
    raise NotFoundError(msg)


@dataclass(frozen=True)
class _CaseReference:
    """What opening a case reads of the small tables: the problem types (code and names, to resolve a request's,
    and their working hours to rectify), the working calendar and the case settings. Read once per change of
    those tables (:func:`~civicgrid.geo.caches.cached_read`), not once per case."""

    types: pd.DataFrame
    hours: pd.Series
    calendar: WorkCalendar
    settings: dict[str, float]

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> _CaseReference:
        types = con.execute("SELECT code, name_zh, name_en, deadline_value, deadline_unit FROM problem_types").df()
        return cls(types=types[["code", "name_zh", "name_en"]], hours=type_hours(types),
                   calendar=WorkCalendar.from_store(con), settings=get_settings(con))


@dataclass(frozen=True)
class CaseRequest:
    """One requested case creation (what :func:`create_case` queues, and :func:`open_cases` applies)."""

    actor: str
    event_id: int | None
    problem_type: str | None
    lng: float | None
    lat: float | None
    crs: str
    site_id: int | None
    time: datetime | None
    text: str | None
    source: str
    note: str | None
    dispatch: bool
    unit: str | None
    now: datetime
    inspection_id: int | None = None  # the visit that found it (a hit recorded with its inspection)
    dispatch_at: datetime | None = None


def create_case(db: str | os.PathLike, *, actor: str, event_id: int | None = None, problem_type: str | None = None,
                lng: float | None = None, lat: float | None = None, crs: str = "wgs84", site_id: int | None = None,
                time=None, text: str | None = None, source: str = "inspection", note: str | None = None,
                dispatch: bool = False, unit: str | None = None, dispatch_at=None) -> dict:
    """Open a case (state ``found``) for an existing event, or for a new event reported now.

    Cases opened at the same time by other users of this process are committed together (one short write).

    Parameters
    ----------
    db
        The store.
    actor
        Who opens the case (kept in the audit trail).
    event_id
        An existing event without a case. Otherwise a new event is created from ``problem_type`` and a
        location: ``lng``/``lat`` (in ``crs``: wgs84, gcj02, bd09, ...) or the ``site_id`` of a sample-frame
        site (its representative point), found at ``time`` (default now), with ``text`` and ``source``.
    note
        Note for the audit trail.
    dispatch
        Also register and dispatch the case in the same write (to ``unit`` or the automatic unit), logged at
        ``dispatch_at``, by default at the time the problem was found: a back-dated case (a past ``time``, an
        existing event) is not counted as registered and dispatched late by the time it took to type it in.
    dispatch_at
        When it was registered and dispatched (with ``dispatch``; not before it was found, not in the future).

    Returns
    -------
    dict
        The case as :func:`get_case` returns it. Its deadline is computed from the problem type on the
        working clock; ``rebound_of`` links it to an earlier closed case it repeats.
    """
    actor = _actor(actor)
    tz = store_timezone(db)  # "now" and times with an offset are the store's wall-clock times
    now = now_local(tz=tz)
    found_at = parse_moment(time, name="time", tz=tz) if time is not None else None
    if found_at is not None and found_at > now + timedelta(minutes=5):
        msg = f"time {found_at} is in the future (now {now})"
        raise InvalidParameterError(msg)
    sent_at = parse_moment(dispatch_at, name="dispatch_at", tz=tz) if dispatch_at is not None else None
    if sent_at is not None:
        if not dispatch:
            msg = "dispatch_at is the time of the dispatch: give dispatch=True (--dispatch) with it"
            raise InvalidParameterError(msg)
        if sent_at > now + timedelta(minutes=5):
            msg = f"dispatch_at {sent_at} is in the future (now {now})"
            raise InvalidParameterError(msg)
        if sent_at < (found_at or now) and event_id is None:
            msg = f"dispatch_at {sent_at} is before the problem was found ({found_at or now})"
            raise InvalidParameterError(msg)
    request = CaseRequest(actor=actor, event_id=None if event_id is None else int(event_id), problem_type=problem_type,
                      lng=lng, lat=lat, crs=crs, site_id=None if site_id is None else int(site_id), time=found_at,
                      text=text, source=source, note=note, dispatch=bool(dispatch), unit=unit, now=now,
                      dispatch_at=sent_at)
    return submit(db, "case-creations", _apply_creates, request)


def open_cases(con: duckdb.DuckDBPyConnection, requests: Sequence[CaseRequest]) -> list[dict | Exception]:
    """Open the cases ``requests`` inside the caller's write transaction ``con`` (the code behind
    :func:`create_case`, for a write that records more in the same transaction, e.g. a visit and the problems
    found on it: :func:`civicgrid.sites.visits.record_visit`); each request's case or the error that refused it."""
    return _apply_creates(con, requests)


@keeps_memory
def _apply_creates(con: duckdb.DuckDBPyConnection, requests: Sequence[CaseRequest]) -> list[dict | Exception]:
    """Open a group of cases in the write transaction ``con``; return each request's case (as :func:`get_case`
    returns it) or the error that refused it (which changed nothing).

    Every row is written once, complete: the new events with their deadline and rebound link, the cases in
    their state (``dispatched`` at once with ``dispatch``) and their audit rows. Nothing is updated afterwards
    and nothing is read back: what the large tables cost is an append each and the search for the closed cases
    a new one may repeat (:func:`_rebounds_of`)."""
    out: list[dict | Exception | None] = [None] * len(requests)
    ref = _known(con, "case-reference", ("problem_types", "holidays", "settings"), _CaseReference.read)
    given = sorted({r.event_id for r in requests if r.event_id is not None})
    events: dict[int, dict] = {}
    cases_of: set[int] = set()
    if given:
        id_list = ", ".join(map(str, given))
        events = {int(r["event_id"]): r for r in con.execute(
            f"SELECT event_id, source, problem_type, source_type, site_id, time, lng, lat, grid_code, community_code, "
            f"street_code, district_code FROM events WHERE event_id IN ({id_list})").df().to_dict("records")}
        cases_of = {int(v) for v in con.execute(
            f"SELECT event_id FROM cases WHERE event_id IN ({id_list})").fetchnumpy()["event_id"]}
    site_ids = sorted({r.site_id for r in requests if r.site_id is not None and r.event_id is None})
    sites = {int(r.site_id): (float(r.lng), float(r.lat)) for r in con.execute(
        f"SELECT site_id, lng, lat FROM sites WHERE site_id IN ({', '.join(map(str, site_ids))})").df().itertuples()
    } if site_ids else {}
    todo: list[tuple[int, int, datetime, str | None]] = []  # (request, event id, found at, type)
    fresh: list[tuple[int, float, float, datetime, str]] = []  # (request, lng, lat, found at, type)
    for i, r in enumerate(requests):
        try:
            if r.event_id is not None:
                if r.event_id not in events:
                    lo, hi = extent(con, "events", "event_id")
                    msg = f"no event {r.event_id}; event ids run {lo}..{hi}"
                    raise NotFoundError(msg)
                if r.event_id in cases_of:
                    msg = f"event {r.event_id} already has case {r.event_id}; move that case instead"
                    raise ConflictError(msg)
                ev = events[r.event_id]
                ptype = _py(ev["problem_type"])
                found = pd.Timestamp(ev["time"]).to_pydatetime()
                if r.dispatch_at is not None and r.dispatch_at < found:
                    msg = f"dispatch_at {r.dispatch_at} is before event {r.event_id} was found ({found})"
                    raise InvalidParameterError(msg)
                cases_of.add(r.event_id)  # a second request for the same event in this group is refused
                todo.append((i, r.event_id, found, None if ptype is None else str(ptype)))
            else:
                x, y, ptype = _new_event_point(r, types=ref.types, sites=sites)
                fresh.append((i, x, y, r.time or r.now, ptype))
        except (InvalidParameterError, NotFoundError, ConflictError, ValueError) as exc:
            out[i] = exc
    if not todo and not fresh:
        return out
    # the new events' ids and places
    if fresh:
        first = _next_id(con, "events", "event_id", len(fresh))
        locator = _known(con, "locator", ("areas", "grids"), Locator)  # as Locator.cached, once per chain of groups
        loc = locator.locate(np.array([f[1] for f in fresh]), np.array([f[2] for f in fresh]))
        for k, f in enumerate(fresh):
            r = requests[f[0]]
            event_id = first + k
            events[event_id] = {
                "event_id": event_id, "source": r.source, "problem_type": f[4], "site_id": r.site_id, "time": f[3],
                "lng": f[1], "lat": f[2], "h3": int(loc["h3"].iloc[k]), "inspection_id": r.inspection_id,
                "text": r.text, **{c: _py(loc[c].iloc[k]) for c in _AREA_COLUMNS}}
            todo.append((f[0], event_id, f[3], f[4]))
    todo.sort()
    found = np.array([np.datetime64(t[2], "s") for t in todo])
    deadlines = compute_deadlines(con, found, [t[3] for t in todo], hours=ref.hours, calendar=ref.calendar)
    eids = [t[1] for t in todo]
    rebound_of = _rebounds_of(con, [events[e] | {"problem_type": t[3], "found": t[2]} for e, t in zip(eids, todo,
                              strict=True)], radius=ref.settings["rebound_radius_m"], days=ref.settings["rebound_days"])
    # the cases' category and dispatch unit (属地), from the small tables sites and areas (read once per change)
    offices = _known(con, "case-offices", ("sites", "areas"), DispatchUnits.read)
    places = pa.table({"site_id": pa.array([_id(events[e]["site_id"]) for e in eids], pa.int64()),
                       **{c: pa.array([_py(events[e][c]) for e in eids], pa.string()) for c in _AREA_COLUMNS[1:]}})
    units = dict(zip(eids, zip(*(column.to_pylist() for column in offices.of(places)), strict=True), strict=True))
    cases: list[dict] = []
    logs: list[dict] = []
    moved: list[dict] = []
    for (i, eid, at, ptype), deadline in zip(todo, deadlines, strict=True):
        r, ev = requests[i], events[eid]
        category, unit, unit_code = units[eid]
        case = {"case_id": eid, "event_id": eid, "source": ev["source"], "problem_type": ptype,
                "site_id": _id(ev["site_id"]), "category_code": category,
                **{c: _py(ev[c]) for c in _AREA_COLUMNS}, "state": "found", "found_at": at,
                "deadline": None if np.isnat(deadline) else pd.Timestamp(deadline).to_pydatetime(),
                "unit": unit, "unit_code": unit_code, "dispatched_at": None, "rectified_at": None,
                "closed_at": None, "reworks": 0, "rebound_of": rebound_of.get(eid), "photo": None,
                "updated_at": r.now}
        trail = [{"case_id": eid, "changed_at": at, "actor": r.actor, "from_state": None, "to_state": "found",
                  "note": r.note, "unit": None, "photo": None}]
        if r.dispatch:  # registered and dispatched in the same write, at the case's own time by default
            when = r.dispatch_at or at
            for move in (_Move(eid, "registered", r.actor, when), _Move(eid, "dispatched", r.actor, when,
                                                                        unit=r.unit)):
                case, log = _moved(case, trail[-1]["changed_at"], move, now=r.now)
                moved.append(log)
                trail.append(log)
        cases.append(case)
        logs.append(trail[0])
        out[i] = case | {"log": trail}
    first_log = _next_id(con, "case_log", "log_id", len(logs) + len(moved))
    for k, log in enumerate(logs + moved):  # the found rows first, then the moves (each case's in order)
        log["log_id"] = first_log + k
    # the rows, each written once
    if fresh:
        new_ids = [first + k for k in range(len(fresh))]
        rows = {e: (c, events[e]) for c in cases if (e := c["event_id"]) in set(new_ids)}
        new_events = pa.table({
            "event_id": pa.array(new_ids, pa.int64()),
            **{c: pa.array([rows[e][1][c] for e in new_ids], t) for c, t in _NEW_EVENT_COLUMNS.items()},
            "status": pa.array(["open"] * len(new_ids), pa.string()),
            "deadline": pa.array([rows[e][0]["deadline"] for e in new_ids], pa.timestamp("us")),
            "reopened": pa.array([0] * len(new_ids), pa.int32()),
            "rebound_of": pa.array([rows[e][0]["rebound_of"] for e in new_ids], pa.int64()),
            "dedup_key": pa.array([f"case:{e}" for e in new_ids], pa.string())})
        _insert(con, "events", new_events)
    case_rows = pa.table({c: pa.array([case[c] for case in cases], t) for c, t in _CASE_TYPES.items()})
    log_rows = pa.table({c: pa.array([log[c] for log in logs + moved], t) for c, t in _LOG_COLUMNS.items()})
    _insert(con, "cases", case_rows)
    _insert(con, "case_log", log_rows)
    kept = _kept_cases()  # the new cases as written, for the moves of the next groups
    trails: dict[int, list[dict]] = {}
    for log in log_rows.to_pylist():
        trails.setdefault(log["case_id"], []).append(log)
    for case in case_rows.to_pylist():
        _keep_case(kept, case, trails.get(case["case_id"], []))
    old_events = [c for c in cases if c["event_id"] in set(given)]
    _mirror_events(con, old_events)  # an existing event takes its case's deadline, state and link
    for i, case in enumerate(out):
        if isinstance(case, dict):
            case["log"] = [{k: v for k, v in log.items() if k != "case_id"} for log in case["log"]]
            case["next"] = list(NEXT_STATES[case["state"]])
            out[i] = case
    return out


#: The area columns of an event and a case.
_AREA_COLUMNS = ("grid_code", "community_code", "street_code", "district_code")
#: The columns of a new event taken from the request and its place, and their types.
_NEW_EVENT_COLUMNS = {"source": pa.string(), "problem_type": pa.string(), "time": pa.timestamp("us"),
                      "site_id": pa.int64(), "inspection_id": pa.int64(), "text": pa.string(), "lng": pa.float64(),
                      "lat": pa.float64(), "h3": pa.uint64(), **{c: pa.string() for c in _AREA_COLUMNS}}
#: The columns of ``cases`` and their types (a new case's row).
_CASE_TYPES = {"case_id": pa.int64(), "event_id": pa.int64(), "source": pa.string(), "problem_type": pa.string(),
               "site_id": pa.int64(), "category_code": pa.string(), **{c: pa.string() for c in _AREA_COLUMNS},
               "state": pa.string(), "found_at": pa.timestamp("us"), "deadline": pa.timestamp("us"),
               "unit": pa.string(), "unit_code": pa.string(), "dispatched_at": pa.timestamp("us"),
               "rectified_at": pa.timestamp("us"), "closed_at": pa.timestamp("us"), "reworks": pa.int32(),
               "rebound_of": pa.int64(), "photo": pa.string(), "updated_at": pa.timestamp("us")}


#: Ids a group's write of a table also takes: new events come with audit rows (case creations), so their ids are
#: read in one statement; moves take audit ids only.
_ALSO_TAKES = {"events": (("case_log", "log_id"),)}


def _next_id(con: duckdb.DuckDBPyConnection, table: str, column: str, n: int) -> int:
    """The first of ``n`` new ids of ``table.column`` (:func:`~civicgrid.geo.staging.next_ids`: above the stored
    ids and those an import in progress reserved), read once per group write, with the group's other ids in the
    same statement: the writes of the group that follow take the ids after it (a second ``max`` after the
    group's own inserts would scan the whole table)."""
    state = group_state()
    memory = group_memory()  # the next ids the previous group left, when nothing else was committed since
    key = f"next-id:{table}"
    if state is not None and key in state:
        first = state[key]
    elif memory is not None and key in memory:
        first = memory[key]
    else:
        wanted = [(table, column)]
        if state is not None:  # every write of events and case_log in a group takes its ids here
            wanted += [pair for pair in _ALSO_TAKES.get(table, ()) if f"next-id:{pair[0]}" not in state
                       and (memory is None or f"next-id:{pair[0]}" not in memory)]
        firsts = next_ids(con, wanted)
        first = firsts[table]
        if state is not None:
            for other, value in firsts.items():
                state.setdefault(f"next-id:{other}", value)
    if state is not None:
        state[key] = first + n
    if memory is not None:
        memory[key] = first + n
    return first


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Append ``rows`` (an Arrow table with some of the columns of ``table``) to ``table``."""
    con.register("_rows", rows)
    try:
        con.execute(f"INSERT INTO {table} ({', '.join(rows.column_names)}) SELECT * FROM _rows")
    finally:
        con.unregister("_rows")


def _rebounds_of(con: duckdb.DuckDBPyConnection, new: list[dict], *, radius: float, days: float) -> dict[int, int]:
    """The earlier closed case each of the new cases ``new`` repeats (回头看), by case id, as
    :func:`~civicgrid.sites.cases.rebounds.link_rebounds` links them: one read of the closures that can matter
    (their kinds: problem types, else the city's labels; closed in the window before the new cases were found)
    and of their points."""
    window_us = math.floor(float(days) * 86400e6 + 0.5)
    new = [c | {"kind": _kind(c)} for c in new]
    new = [c for c in new if c["kind"] is not None and c["found"] is not None]
    if not new:
        return {}
    found_us = np.array([np.datetime64(c["found"], "us").astype(np.int64) for c in new])
    types = sorted({c["kind"] for c in new})
    old = closures(con, types, int(found_us.min()) - window_us, int(found_us.max()))
    if old.empty:
        return {}
    code = {t: k for k, t in enumerate(types)}

    def as_float(values) -> np.ndarray:
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").astype(float).to_numpy()

    new_points = {"case_id": np.array([c["event_id"] for c in new], np.int64),
                  "t": np.array([code[c["kind"]] for c in new], np.int32),
                  "has_site": np.array([_id(c["site_id"]) is not None for c in new]),
                  "site": np.array([_id(c["site_id"]) or 0 for c in new], np.int64), "found_us": found_us,
                  "lat": as_float([_py(c["lat"]) for c in new]), "lng": as_float([_py(c["lng"]) for c in new])}
    old_points = {"case_id": old["case_id"].to_numpy(np.int64), "t": old["problem_type"].map(code).to_numpy(np.int32),
                  "has_site": old["site_id"].notna().to_numpy(), "site": old["site_id"].fillna(0).to_numpy(np.int64),
                  "closed_us": old["closed_us"].to_numpy(np.int64), "lat": old["lat"].astype(float).to_numpy(float),
                  "lng": old["lng"].astype(float).to_numpy(float)}
    case_id, old_id = _rebound_batch(new_points, old_points, radius=float(radius), window_us=window_us)
    return {int(c): int(o) for c, o in zip(case_id, old_id, strict=True)}


def _kind(case: dict) -> str | None:
    """The rebound kind of a new case (``problem_type``, ``source_type``: its event's), as
    :func:`~civicgrid.sites.cases.rebounds.kind_sql`."""
    if case.get("problem_type") is not None:
        return str(case["problem_type"])
    label = _py(case.get("source_type"))
    return None if label is None else LABEL_KIND + str(label)


def _new_event_point(r: CaseRequest, *, types: pd.DataFrame, sites: dict[int, tuple[float, float]]
                     ) -> tuple[float, float, str]:
    """The WGS84 point and problem type code of a new event (raises on a bad request)."""
    if r.source not in ("complaint", "inspection"):
        msg = f"source must be complaint or inspection, got {r.source!r}"
        raise InvalidParameterError(msg)
    if r.problem_type is None:
        msg = "a new case needs event_id, or problem_type and a location (lng/lat or site_id)"
        raise InvalidParameterError(msg)
    ptype = resolve_type(types, r.problem_type)
    if r.site_id is not None:
        if r.site_id not in sites:
            msg = f"no site {r.site_id} in the sample frame"
            raise NotFoundError(msg)
        if r.lng is None or r.lat is None:
            x, y = sites[r.site_id]
        else:
            x, y = (float(v[0]) for v in to_wgs84([r.lng], [r.lat], r.crs))
    elif r.lng is not None and r.lat is not None:
        x, y = (float(v[0]) for v in to_wgs84([r.lng], [r.lat], r.crs))
    else:
        msg = "a new case needs a location: lng and lat, or site_id"
        raise InvalidParameterError(msg)
    if not (-180 <= x <= 180 and -90 <= y <= 90):
        msg = f"coordinates out of range: lng={r.lng}, lat={r.lat}"
        raise InvalidParameterError(msg)
    return x, y, ptype


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


@dataclass(frozen=True)
class _Move:
    """One requested move of a case (what :func:`transition` queues)."""

    case_id: int
    to: str
    actor: str
    at: datetime
    note: str | None = None
    unit: str | None = None
    photo: str | None = None
    #: When the move was asked for (the store's wall-clock time): the case's ``updated_at``.
    now: datetime | None = None


def _moved(case: dict, last: datetime | None, move: _Move, *, now: datetime) -> tuple[dict, dict]:
    """The case after ``move`` and its audit row (without ``log_id``); raises when the move is illegal.
    ``last`` is the time of the case's last step."""
    current = case["state"]
    target = _target(current, move.to)
    if target not in NEXT_STATES[current]:
        allowed = ", ".join(NEXT_STATES[current]) or "none (a closed case is final)"
        msg = (f"case {move.case_id} is {current} ({STATE_ZH[current]}) and cannot go to {target} "
               f"({STATE_ZH[target]}); allowed: {allowed}")
        raise ConflictError(msg)
    if last is not None and move.at < last:
        msg = f"time {move.at} is before the case's last step ({last}); transitions are recorded in order"
        raise InvalidParameterError(msg)
    new = dict(case, state=target, updated_at=now)
    if target == "dispatched":
        if move.unit is not None and str(move.unit).strip():
            new.update(unit=str(move.unit).strip(), unit_code=None)
        if current == "rectified":  # rework (返工)
            new.update(reworks=int(case["reworks"] or 0) + 1, rectified_at=None)
        else:
            new["dispatched_at"] = move.at
    elif target == "rectified":
        new["rectified_at"] = move.at
        if move.photo:
            new["photo"] = move.photo
    elif target == "closed":
        new["closed_at"] = move.at
    log = {"case_id": move.case_id, "changed_at": move.at, "actor": move.actor, "from_state": current,
           "to_state": target, "note": move.note, "unit": new["unit"] if target == "dispatched" else None,
           "photo": move.photo}
    return new, log


T = TypeVar("T")

#: Cases kept in a group's memory at most (a few KB each; the oldest are dropped first; a case not kept is read).
KEPT_CASES = 5_000


def _known(con: duckdb.DuckDBPyConnection, key: str, tables: tuple[str, ...],
           load: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """:func:`~civicgrid.geo.caches.cached_read` of small tables that case writes never change (the problem
    types, the calendar, the sites and areas), once per chain of groups: while the group's memory holds it,
    nothing but this writer's case writes was committed since it was read (the memory is dropped otherwise),
    so those tables are unchanged and the catalog need not be asked (on a SQLite catalog that record is read
    through a connection of its own beside the lake's: one more round, and one more chance of a stall)."""
    memory = group_memory()
    slot = f"read:{key}"
    if memory is not None and slot in memory:
        return memory[slot]
    value = cached_read(con, key, tables, load)
    if memory is not None:
        memory[slot] = value
    return value


def _kept_cases() -> dict[int, tuple[dict, list[dict]]]:
    """The cases this group's memory holds (:func:`~civicgrid.geo.group_commit.group_memory`): case id ->
    (its row as :data:`CASE_COLUMNS`, its audit rows oldest first), exactly as a read in the group's
    transaction gives them; a new dict (not kept after the group) outside a group."""
    memory = group_memory()
    if memory is None:
        return {}
    return memory.setdefault("cases", {})


def _keep_case(kept: dict[int, tuple[dict, list[dict]]], case: dict, trail: list[dict]) -> None:
    """Keep ``case`` (a row of ``cases``) and its audit rows in the group's memory ``kept``, newest last."""
    case_id = int(case["case_id"])
    kept.pop(case_id, None)
    kept[case_id] = ({c: case[c] for c in _CASE_NAMES}, [{c: r[c] for c in _LOG_NAMES} for r in trail])
    while len(kept) > KEPT_CASES:
        kept.pop(next(iter(kept)))


#: The columns a move may change, and their types (the update of a group of moves).
_MOVED_COLUMNS = {"state": pa.string(), "unit": pa.string(), "unit_code": pa.string(),
                  "dispatched_at": pa.timestamp("us"), "rectified_at": pa.timestamp("us"),
                  "closed_at": pa.timestamp("us"), "reworks": pa.int32(), "photo": pa.string(),
                  "updated_at": pa.timestamp("us")}
_LOG_COLUMNS = {"log_id": pa.int64(), "case_id": pa.int64(), "changed_at": pa.timestamp("us"),
                "actor": pa.string(), "from_state": pa.string(), "to_state": pa.string(), "note": pa.string(),
                "unit": pa.string(), "photo": pa.string()}


@keeps_memory
def _apply_moves(con: duckdb.DuckDBPyConnection, moves: Sequence[_Move]) -> list[dict | Exception]:
    """Apply a group of moves in the write transaction ``con`` with a few set-based statements; return each
    move's case (as :func:`get_case` returns it) or the error that refused it (which changed nothing)."""
    ids = sorted({m.case_id for m in moves})
    kept = _kept_cases()
    cases: dict[int, dict] = {}
    logs: dict[int, list[dict]] = {}
    for i in ids:  # the cases the previous groups wrote or read, as a read here would give them
        if i in kept:
            cases[i], trail = kept[i]
            cases[i], logs[i] = dict(cases[i]), list(trail)
    missing = [i for i in ids if i not in cases]
    if missing:
        id_list = ", ".join(str(int(i)) for i in missing)
        rows = con.execute(f"SELECT {CASE_COLUMNS} FROM cases WHERE case_id IN ({id_list})").df()
        read = {int(r["case_id"]): {k: _py(v) for k, v in r.items()} for r in rows.to_dict("records")}
        trails: dict[int, list[dict]] = {i: [] for i in missing}
        for r in con.execute(f"SELECT {_LOG_READ} FROM case_log WHERE case_id IN ({id_list}) "
                             "ORDER BY log_id").df().to_dict("records"):
            trails[int(r["case_id"])].append({k: _py(v) for k, v in r.items()})
        for i, case in read.items():
            _keep_case(kept, case, trails[i])  # as read: this transaction changes them below, or not at all
        cases.update(read)
        logs.update({i: trails[i] for i in missing})
    mirrored = {i: _mirror(case) for i, case in cases.items()}
    now = None  # the time of a move queued without one (a caller of _apply_moves other than transition)
    results: list[tuple[dict, int] | Exception] = []
    new_logs: list[dict] = []
    for move in moves:
        case = cases.get(move.case_id)
        if case is None:
            try:
                _case_row(con, move.case_id)  # raises NotFoundError naming the ids there are
            except NotFoundError as exc:
                results.append(exc)
            continue
        trail = logs[move.case_id]
        try:
            if move.now is None and now is None:
                now = store_now(con)
            new, log = _moved(case, max((r["changed_at"] for r in trail), default=None), move,
                              now=move.now or now)
        except (ConflictError, InvalidParameterError) as exc:
            results.append(exc)
            continue
        cases[move.case_id] = new
        trail.append(log)
        new_logs.append(log)
        results.append((dict(new), len(trail)))
    if new_logs:
        first = _next_id(con, "case_log", "log_id", len(new_logs))
        for i, log in enumerate(new_logs):
            log["log_id"] = first + i
        changed = sorted({log["case_id"] for log in new_logs})
        moved = pa.table({"case_id": pa.array(changed, pa.int64()),
                          **{c: pa.array([cases[i][c] for i in changed], t) for c, t in _MOVED_COLUMNS.items()}})
        audit = pa.table({c: pa.array([log[c] for log in new_logs], t) for c, t in _LOG_COLUMNS.items()})
        con.register("_moved", moved)
        con.register("_audit", audit)
        try:
            changed_list = ", ".join(map(str, changed))
            con.execute(f"UPDATE cases SET {', '.join(f'{c} = m.{c}' for c in _MOVED_COLUMNS)} "
                        f"FROM _moved m WHERE cases.case_id IN ({changed_list}) AND cases.case_id = m.case_id")
            con.execute(f"INSERT INTO case_log ({', '.join(_LOG_COLUMNS)}) SELECT * FROM _audit")
        finally:
            con.unregister("_moved")
            con.unregister("_audit")
        # The events mirror only status, deadline and the rectify/close/rework steps: a registration or a
        # dispatch leaves them as they are, and then the large events table is not written at all.
        _mirror_events(con, [cases[i] for i in changed if _mirror(cases[i]) != mirrored[i]])
        # what the next groups may take as known: the rows as written (read back from the Arrow tables written)
        stored = {r["case_id"]: r for r in moved.to_pylist()}
        audit_rows = audit.to_pylist()
        for i in changed:
            before, trail = kept[i]
            _keep_case(kept, before | {c: v for c, v in stored[i].items() if c != "case_id"},
                       trail + [r for r in audit_rows if r["case_id"] == i])
    out: list[dict | Exception] = []
    for result in results:
        if isinstance(result, Exception):
            out.append(result)
            continue
        case, n_log = result
        trail = logs[int(case["case_id"])][:n_log]
        case["log"] = [{k: v for k, v in r.items() if k != "case_id"} for r in trail]
        case["next"] = list(NEXT_STATES[case["state"]])
        out.append(case)
    return out


def transition(db: str | os.PathLike, case_id: int, to: str, *, actor: str, at=None, note: str | None = None,
               unit: str | None = None, photo: str | None = None) -> dict:
    """Move a case to its next state and record it in the audit trail (atomically; moves made at the same time
    by other users of this process are committed together).

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
    tz = store_timezone(db)
    now = now_local(tz=tz)
    when = parse_moment(at, name="at", tz=tz) if at is not None else now
    if when > now + timedelta(minutes=5):
        msg = f"at {when} is in the future"
        raise InvalidParameterError(msg)
    # Queued with the moves other users make meanwhile and committed together (civicgrid.geo.group_commit).
    return submit(db, "case-moves", _apply_moves, _Move(int(case_id), to, actor, when, note, unit, photo, now))
