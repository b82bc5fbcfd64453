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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from civicgrid.geo.aggregate import area_code
from civicgrid.geo.coords import to_wgs84
from civicgrid.geo.errors import ConflictError, InvalidParameterError, NotFoundError
from civicgrid.geo.group_commit import submit
from civicgrid.geo.staging import next_id
from civicgrid.geo.store import Store
from civicgrid.geo.texts import labels
from civicgrid.geo.times import now_local, parse_moment
from civicgrid.grids.locate import Locator
from civicgrid.sites.cases._sql import (
    CASE_COLUMNS,
    UNIT_CODE_EXPR,
    UNIT_EXPR,
    UNIT_JOINS,
    StoreOrConnection,
    query_frame,
)
from civicgrid.sites.cases.calendar import compute_deadlines
from civicgrid.sites.cases.rebounds import link_rebounds

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
        near = query_frame(con, "SELECT min(case_id) AS lo, max(case_id) AS hi, count(*) AS n FROM cases")
        near = near.iloc[0]
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


def get_case(store: StoreOrConnection, case_id: int) -> dict:
    """One case as a dict, with ``log`` (its audit trail, oldest first) and ``next`` (legal next states)."""
    case = _case_row(store, case_id)
    case["log"] = case_log(store, case_id).to_dict("records")
    case["log"] = [{k: _py(v) for k, v in r.items()} for r in case["log"]]
    case["next"] = list(NEXT_STATES[case["state"]])
    return case


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
        The page; ``attrs["total"]`` is the number of matching cases (all pages): page on with
        ``offset=offset + limit`` while it is below ``total``.
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
        t = parse_moment(as_of, name="as_of") if as_of is not None else now_local()
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
    finally:
        if con is not store:
            con.close()
    df.attrs["total"] = total
    return df


# --------------------------------------------------------------------------------------------------
# Writing: create and transition
# --------------------------------------------------------------------------------------------------


def _sync_events(con: duckdb.DuckDBPyConnection, case_ids: Sequence[int]) -> None:
    """Copy the state of the cases ``case_ids`` onto their events (status, deadline, rectified_at, closed_at,
    reopened, rebound). Both sides are filtered by the ids themselves (a case's id is its event's id), so that
    only the files and row groups holding them are read: the cost does not grow with the store."""
    ids = ", ".join(str(int(i)) for i in case_ids)
    if not ids:
        return
    con.execute(f"""
        UPDATE events SET status = CASE WHEN c.state = 'closed' THEN 'closed' ELSE 'open' END,
               deadline = c.deadline, rectified_at = c.rectified_at, closed_at = c.closed_at,
               reopened = c.reworks, rebound_of = c.rebound_of
        FROM (SELECT * FROM cases WHERE case_id IN ({ids})) c
        WHERE events.event_id IN ({ids}) AND events.event_id = c.event_id
          AND (events.status IS DISTINCT FROM CASE WHEN c.state = 'closed' THEN 'closed' ELSE 'open' END
               OR events.deadline IS DISTINCT FROM c.deadline OR events.rectified_at IS DISTINCT FROM c.rectified_at
               OR events.closed_at IS DISTINCT FROM c.closed_at OR events.reopened IS DISTINCT FROM c.reworks
               OR events.rebound_of IS DISTINCT FROM c.rebound_of)
    """)


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
    now = now_local()
    found_at = parse_moment(time, name="time") if time is not None else None
    if found_at is not None and found_at > now + timedelta(minutes=5):
        msg = f"time {found_at} is in the future (now {now})"
        raise InvalidParameterError(msg)
    sent_at = parse_moment(dispatch_at, name="dispatch_at") if dispatch_at is not None else None
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


def _apply_creates(con: duckdb.DuckDBPyConnection, requests: Sequence[CaseRequest]) -> list[dict | Exception]:
    """Open a group of cases in the write transaction ``con`` with a few set-based statements; return each
    request's case (as :func:`get_case` returns it) or the error that refused it (which changed nothing)."""
    out: list[dict | Exception | None] = [None] * len(requests)
    types = con.execute("SELECT code, name_zh, name_en FROM problem_types").df()
    given = sorted({r.event_id for r in requests if r.event_id is not None})
    events = cases_of = None
    if given:
        id_list = ", ".join(map(str, given))
        events = {int(r.event_id): r for r in con.execute(
            f"SELECT event_id, time, problem_type FROM events WHERE event_id IN ({id_list})").df().itertuples()}
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
                    lo, hi = con.execute("SELECT min(event_id), max(event_id) FROM events").fetchone()
                    msg = f"no event {r.event_id}; event ids run {lo}..{hi}"
                    raise NotFoundError(msg)
                if r.event_id in cases_of:
                    msg = f"event {r.event_id} already has case {r.event_id}; move that case instead"
                    raise ConflictError(msg)
                ev = events[r.event_id]
                ptype = None if ev.problem_type is None or pd.isna(ev.problem_type) else str(ev.problem_type)
                found = pd.Timestamp(ev.time).to_pydatetime()
                if r.dispatch_at is not None and r.dispatch_at < found:
                    msg = f"dispatch_at {r.dispatch_at} is before event {r.event_id} was found ({found})"
                    raise InvalidParameterError(msg)
                cases_of.add(r.event_id)  # a second request for the same event in this group is refused
                todo.append((i, r.event_id, found, ptype))
            else:
                x, y, ptype = _new_event_point(r, types=types, sites=sites)
                fresh.append((i, x, y, r.time or r.now, ptype))
        except (InvalidParameterError, NotFoundError, ConflictError, ValueError) as exc:
            out[i] = exc
    if fresh:
        first = next_id(con, "events", "event_id")
        ids = np.arange(first, first + len(fresh), dtype=np.int64)
        loc = Locator.cached(con).locate(np.array([f[1] for f in fresh]), np.array([f[2] for f in fresh]))
        rows = pa.table({
            "event_id": pa.array(ids, pa.int64()),
            "source": pa.array([requests[f[0]].source for f in fresh], pa.string()),
            "problem_type": pa.array([f[4] for f in fresh], pa.string()),
            "time": pa.array([f[3] for f in fresh], pa.timestamp("us")),
            "status": pa.array(["open"] * len(fresh), pa.string()),
            "site_id": pa.array([requests[f[0]].site_id for f in fresh], pa.int64()),
            "inspection_id": pa.array([requests[f[0]].inspection_id for f in fresh], pa.int64()),
            "text": pa.array([requests[f[0]].text for f in fresh], pa.string()),
            "lng": pa.array([f[1] for f in fresh], pa.float64()),
            "lat": pa.array([f[2] for f in fresh], pa.float64()),
            "h3": pa.array(loc["h3"].to_numpy(np.uint64), pa.uint64()),
            **{c: pa.array([None if pd.isna(v) else str(v) for v in loc[c]], pa.string())
               for c in ("grid_code", "community_code", "street_code", "district_code")},
            "reopened": pa.array([0] * len(fresh), pa.int32()),
            "dedup_key": pa.array([f"case:{e}" for e in ids], pa.string()),
        })
        con.register("_new_events", rows)
        try:
            con.execute(f"INSERT INTO events ({', '.join(rows.column_names)}) SELECT * FROM _new_events")
        finally:
            con.unregister("_new_events")
        todo += [(f[0], int(e), f[3], f[4]) for f, e in zip(fresh, ids, strict=True)]
    if not todo:
        return out
    todo.sort()
    eids = [t[1] for t in todo]
    found = np.array([np.datetime64(t[2], "s") for t in todo])
    deadline = compute_deadlines(con, found, [t[3] for t in todo])
    opened = pa.table({
        "event_id": pa.array(eids, pa.int64()),
        "deadline": pa.array([None if np.isnat(d) else pd.Timestamp(d).to_pydatetime() for d in deadline],
                             pa.timestamp("us")),
        "updated_at": pa.array([requests[t[0]].now for t in todo], pa.timestamp("us"))})
    lo, hi = min(eids), max(eids)
    con.register("_opened", opened)
    try:
        con.execute(f"""
            INSERT INTO cases ({CASE_COLUMNS})
            SELECT e.event_id, e.event_id, e.source, e.problem_type, e.site_id, s.category_code, e.grid_code,
                   e.community_code, e.street_code, e.district_code, 'found', e.time, n.deadline,
                   {UNIT_EXPR}, {UNIT_CODE_EXPR},
                   NULL, NULL, NULL, 0, NULL, NULL, n.updated_at
            FROM events e JOIN _opened n ON n.event_id = e.event_id {UNIT_JOINS}
            WHERE e.event_id BETWEEN {lo} AND {hi}
        """)
    finally:
        con.unregister("_opened")
    first_log = next_id(con, "case_log", "log_id")  # above the ids an import in progress reserved
    audit = pa.table({
        "log_id": pa.array(np.arange(first_log, first_log + len(todo)), pa.int64()),
        "case_id": pa.array(eids, pa.int64()),
        "changed_at": pa.array([t[2] for t in todo], pa.timestamp("us")),
        "actor": pa.array([requests[t[0]].actor for t in todo], pa.string()),
        "from_state": pa.nulls(len(todo), pa.string()),
        "to_state": pa.array(["found"] * len(todo), pa.string()),
        "note": pa.array([requests[t[0]].note for t in todo], pa.string())})
    con.register("_audit", audit)
    try:
        con.execute(f"INSERT INTO case_log ({', '.join(audit.column_names)}) SELECT * FROM _audit")
    finally:
        con.unregister("_audit")
    link_rebounds(con, case_ids=eids)
    moves = []
    for i, eid, at, _ in todo:
        r = requests[i]
        if r.dispatch:
            when = r.dispatch_at or at  # the case's own time, not the moment it was typed in
            moves += [_Move(eid, "registered", r.actor, when), _Move(eid, "dispatched", r.actor, when, unit=r.unit)]
    for result in _apply_moves(con, moves) if moves else []:
        if isinstance(result, Exception):
            raise result  # register and dispatch of a new case are always legal: a failure is a bug
    _sync_events(con, eids)
    made = _cases_with_logs(con, eids)
    for i, eid, _, _ in todo:
        out[i] = made[eid]
    return out


def _cases_with_logs(con: duckdb.DuckDBPyConnection, ids: list[int]) -> dict[int, dict]:
    """The cases ``ids`` as :func:`get_case` returns them, in two queries."""
    id_list = ", ".join(str(int(i)) for i in ids)
    lo, hi = min(ids), max(ids)
    got = {int(r["case_id"]): {k: _py(v) for k, v in r.items()} for r in con.execute(
        f"SELECT {CASE_COLUMNS} FROM cases WHERE case_id IN ({id_list}) AND case_id BETWEEN {lo} AND {hi}"
    ).df().to_dict("records")}
    for case in got.values():
        case["log"] = []
        case["next"] = list(NEXT_STATES[case["state"]])
    for r in con.execute(f"SELECT case_id, log_id, changed_at, actor, from_state, to_state, note, unit, photo "
                         f"FROM case_log WHERE case_id IN ({id_list}) AND case_id BETWEEN {lo} AND {hi} "
                         "ORDER BY log_id").df().to_dict("records"):
        got[int(r.pop("case_id"))]["log"].append({k: _py(v) for k, v in r.items()})
    return got


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


#: The columns a move may change, and their types (the update of a group of moves).
_MOVED_COLUMNS = {"state": pa.string(), "unit": pa.string(), "unit_code": pa.string(),
                  "dispatched_at": pa.timestamp("us"), "rectified_at": pa.timestamp("us"),
                  "closed_at": pa.timestamp("us"), "reworks": pa.int32(), "photo": pa.string(),
                  "updated_at": pa.timestamp("us")}
_LOG_COLUMNS = {"log_id": pa.int64(), "case_id": pa.int64(), "changed_at": pa.timestamp("us"),
                "actor": pa.string(), "from_state": pa.string(), "to_state": pa.string(), "note": pa.string(),
                "unit": pa.string(), "photo": pa.string()}


def _apply_moves(con: duckdb.DuckDBPyConnection, moves: Sequence[_Move]) -> list[dict | Exception]:
    """Apply a group of moves in the write transaction ``con`` with a few set-based statements; return each
    move's case (as :func:`get_case` returns it) or the error that refused it (which changed nothing)."""
    ids = sorted({m.case_id for m in moves})
    id_list = ", ".join(str(int(i)) for i in ids)
    rows = con.execute(f"SELECT {CASE_COLUMNS} FROM cases WHERE case_id IN ({id_list})").df()
    cases = {int(r["case_id"]): {k: _py(v) for k, v in r.items()} for r in rows.to_dict("records")}
    logs: dict[int, list[dict]] = {i: [] for i in ids}
    for r in con.execute(f"SELECT log_id, case_id, changed_at, actor, from_state, to_state, note, unit, photo "
                         f"FROM case_log WHERE case_id IN ({id_list}) ORDER BY log_id").df().to_dict("records"):
        logs[int(r["case_id"])].append({k: _py(v) for k, v in r.items()})
    now = now_local()
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
            new, log = _moved(case, max((r["changed_at"] for r in trail), default=None), move, now=now)
        except (ConflictError, InvalidParameterError) as exc:
            results.append(exc)
            continue
        cases[move.case_id] = new
        trail.append(log)
        new_logs.append(log)
        results.append((dict(new), len(trail)))
    if new_logs:
        first = next_id(con, "case_log", "log_id")  # above the ids an import in progress reserved
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
            _sync_events(con, changed)
        finally:
            con.unregister("_moved")
            con.unregister("_audit")
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
    when = parse_moment(at, name="at") if at is not None else now_local()
    if when > now_local() + timedelta(minutes=5):
        msg = f"at {when} is in the future"
        raise InvalidParameterError(msg)
    # Queued with the moves other users make meanwhile and committed together (civicgrid.geo.group_commit).
    return submit(db, "case-moves", _apply_moves, _Move(int(case_id), to, actor, when, note, unit, photo))
