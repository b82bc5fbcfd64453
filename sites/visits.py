"""Recording one visit to a site as it happens: the inspection, a case per problem found, the photo (issue 15).

:func:`record_visit` is what the inspectors' field page (``/field/{plan_id}/{inspector}``) and ``POST
/api/inspections`` call. In one write it stores the visit in ``inspections`` (with the inspector, the note, the
photo's file name, the plan and the **visit key**) and opens one case per problem type found, through the same
code as ``POST /api/cases`` (:func:`civicgrid.sites.cases.open_cases`): each case's event is an inspection hit
linked to the visit (``events.inspection_id``), with its deadline from the problem type.

A phone on a flaky connection may send the same visit twice (the answer was lost, the queue resent it). The
visit key it sends identifies the visit: a visit whose key is already stored records nothing and answers the
stored visit (``duplicate: true``), so a resend never duplicates an inspection or its cases; the check runs
inside the write (two resends at once record one visit).

Photos are files beside the store (:func:`photo_folder`: ``<store>.photos/<day>/<visit key>.<jpg|png|webp|heic>``),
checked by their first bytes and size (setting ``max_photo_mb``).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from civicgrid.geo.errors import ConflictError, InvalidParameterError, NotFoundError, TooLargeError
from civicgrid.geo.group_commit import submit
from civicgrid.geo.staging import next_id
from civicgrid.geo.store import locate
from civicgrid.geo.times import now_local, parse_moment, store_timezone
from civicgrid.grids.locate import Locator
from civicgrid.sites.cases import CaseRequest, open_cases
from civicgrid.sites.cases.workflow import resolve_type

#: What a visit key may be: what a phone makes (a UUID) or any 8..64 URL-safe characters.
VISIT_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
#: Most problem types one visit may record.
MAX_PROBLEMS = 20
#: Photo kinds accepted, by their first bytes: file suffix -> test.
PHOTO_KINDS = {
    "jpg": lambda b: b[:3] == b"\xff\xd8\xff",
    "png": lambda b: b[:8] == b"\x89PNG\r\n\x1a\n",
    "webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    "heic": lambda b: b[4:8] == b"ftyp" and b[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis"),
}
#: Default largest photo, MB (setting ``max_photo_mb``).
MAX_PHOTO_MB = 10.0


def photo_folder(db: str | os.PathLike) -> Path:
    """The folder of the store's visit photos: ``<catalog>.photos`` beside a catalog file, ``<data folder>.photos``
    beside the data folder of a PostgreSQL-catalog store (outside the data folder, which the store's maintenance
    cleans of files it does not know)."""
    loc = locate(db)
    if loc.kind == "sqlite":
        return Path(loc.catalog + ".photos")
    return loc.data_path.with_name(loc.data_path.name + ".photos")


def photo_kind(data: bytes) -> str:
    """The suffix of a photo (``jpg``, ``png``, ``webp``, ``heic``) read from its first bytes; anything else is
    refused (:class:`InvalidParameterError`)."""
    for suffix, test in PHOTO_KINDS.items():
        if test(data[:16]):
            return suffix
    msg = "the photo must be a JPEG, PNG, WebP or HEIC image (its first bytes say it is none of these)"
    raise InvalidParameterError(msg)


def save_photo(db: str | os.PathLike, data: bytes, *, visit_key: str, day: date,
               max_mb: float = MAX_PHOTO_MB) -> str:
    """Write a visit's photo beside the store and return its name relative to :func:`photo_folder`
    (``2025-12-20/<visit key>.jpg``). A resend of the same visit writes the same file again."""
    if not data:
        msg = "the photo is empty"
        raise InvalidParameterError(msg)
    if len(data) > max_mb * (1 << 20):
        msg = f"the photo has {len(data) / (1 << 20):.1f} MB; at most {max_mb:g} MB (setting max_photo_mb)"
        raise TooLargeError(msg)
    _check_key(visit_key)
    name = f"{day.isoformat()}/{visit_key}.{photo_kind(data)}"
    path = photo_folder(db) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return name


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not VISIT_KEY.match(key):
        msg = f"visit_key must be 8 to 64 letters, digits, '-' or '_' (a UUID), got {str(key)[:80]!r}"
        raise InvalidParameterError(msg)
    return key


@dataclass(frozen=True)
class _Visit:
    """One visit to record (what :func:`record_visit` queues)."""

    visit_key: str
    site_id: int
    time: datetime
    inspector: str
    conforming: bool
    problem_types: tuple[str, ...]
    note: str | None
    photo: str | None
    plan_id: str | None
    kind: str | None
    now: datetime


def record_visit(db: str | os.PathLike, *, site_id: int, inspector: str, conforming: bool,
                 problem_types: Sequence[str] = (), note: str | None = None, photo: str | None = None,
                 time=None, visit_key: str | None = None, plan_id: str | None = None,
                 kind: str | None = "patrol") -> dict:
    """Record a visit to a sample-frame site and open a case per problem type found, in one write.

    Parameters
    ----------
    db
        The store.
    site_id
        The site visited.
    inspector
        Who visited (the inspection's ``inspector`` and the cases' actor in the audit trail).
    conforming
        True: nothing found (符合). False: the problems ``problem_types`` were found (at least one).
    problem_types
        小类 codes or names of the problems found; one case (an inspection hit) each.
    note
        What the inspector wrote: the inspection's note, and the text of the cases.
    photo
        The photo's name under :func:`photo_folder` (from :func:`save_photo`).
    time
        When the visit was recorded (local time of the store; default now); not in the future.
    visit_key
        The idempotency key: a visit with a stored key records nothing new (default: a new UUID).
    plan_id, kind
        The patrol plan the visit belongs to, and the kind of visit (default ``patrol``).

    Returns
    -------
    dict
        ``inspection_id, visit_key, site_id, time, inspector, conforming, problems_found, note, photo, plan_id``,
        ``cases`` (``case_id, problem_type, state, deadline`` each) and ``duplicate`` (True: the key was stored
        before and nothing was written).
    """
    name = (inspector or "").strip() if isinstance(inspector, str) else ""
    if not name:
        msg = "inspector (who visited) is required"
        raise InvalidParameterError(msg)
    types = tuple(dict.fromkeys(str(t).strip() for t in (problem_types or ()) if str(t).strip()))
    if conforming and types:
        msg = "a conforming visit (符合) records no problems: send conforming=false with the problem types found"
        raise InvalidParameterError(msg)
    if not conforming and not types:
        msg = "a visit that found problems names at least one problem type (小类 code or name)"
        raise InvalidParameterError(msg)
    if len(types) > MAX_PROBLEMS:
        msg = f"at most {MAX_PROBLEMS} problem types per visit, got {len(types)}"
        raise InvalidParameterError(msg)
    tz = store_timezone(db)
    now = now_local(tz=tz)
    when = parse_moment(time, name="time", tz=tz) if time is not None else now
    if when > now + timedelta(minutes=5):
        msg = f"time {when} is in the future (now {now}); is the phone's clock right?"
        raise InvalidParameterError(msg)
    key = _check_key(visit_key) if visit_key is not None else uuid.uuid4().hex
    item = _Visit(visit_key=key, site_id=int(site_id), time=when, inspector=name, conforming=bool(conforming),
                  problem_types=types, note=(note or None), photo=photo, plan_id=plan_id, kind=kind, now=now)
    return submit(db, "visits", _apply_visits, item)


_VISIT_COLUMNS = ("inspection_id, visit_key, site_id, time, inspector, conforming, problems_found, note, photo, "
                  "plan_id")


def _stored(con: duckdb.DuckDBPyConnection, keys: list[str]) -> dict[str, dict]:
    """The stored visits of ``keys`` with their cases, by key."""
    if not keys:
        return {}
    marks = ", ".join("?" for _ in keys)
    rows = con.execute(f"SELECT {_VISIT_COLUMNS} FROM inspections WHERE visit_key IN ({marks})", keys).df()
    out = {}
    for r in rows.to_dict("records"):
        visit = {k: _py(v) for k, v in r.items()}
        visit["cases"] = [{k: _py(v) for k, v in c.items()} for c in con.execute(
            "SELECT c.case_id, c.problem_type, c.state, c.deadline FROM cases c JOIN events e USING (event_id) "
            "WHERE e.inspection_id = ? ORDER BY c.case_id", [visit["inspection_id"]]).df().to_dict("records")]
        out[visit["visit_key"]] = visit
    return out


def _py(v):
    if v is None or v is pd.NaT or (not isinstance(v, str | bytes) and pd.api.types.is_scalar(v) and pd.isna(v)):
        return None
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    return v.item() if isinstance(v, np.generic) else v


def _apply_visits(con: duckdb.DuckDBPyConnection, items: Sequence[_Visit]) -> list[dict | Exception]:
    """Record a group of visits in the write transaction ``con``; each visit's answer or the error refusing it."""
    out: list[dict | Exception | None] = [None] * len(items)
    before = _stored(con, sorted({v.visit_key for v in items}))
    types = con.execute("SELECT code, name_zh, name_en FROM problem_types").df()
    ids = sorted({v.site_id for v in items})
    sites = {int(r[0]): (r[1], r[2]) for r in con.execute(
        f"SELECT site_id, lng, lat FROM sites WHERE site_id IN ({', '.join(map(str, ids))})").fetchall()}
    new: list[tuple[int, _Visit, tuple[str, ...]]] = []
    claimed: dict[str, int] = {}  # key -> the item of this group that records it
    for i, v in enumerate(items):
        try:
            first = before.get(v.visit_key)
            if first is not None or v.visit_key in claimed:
                site = first["site_id"] if first is not None else items[claimed[v.visit_key]].site_id
                if site != v.site_id:
                    msg = f"visit key {v.visit_key} was used for a visit to site {site}, not {v.site_id}"
                    raise ConflictError(msg)
                continue  # a resend: answered with the stored visit below
            if v.site_id not in sites:
                msg = f"no site {v.site_id} in the sample frame"
                raise NotFoundError(msg)
            codes = tuple(dict.fromkeys(resolve_type(types, t) for t in v.problem_types))
            claimed[v.visit_key] = i
            new.append((i, v, codes))
        except (InvalidParameterError, NotFoundError, ConflictError) as exc:
            out[i] = exc
    if new:
        first_id = next_id(con, "inspections", "inspection_id")
        iids = {i: first_id + k for k, (i, _, _) in enumerate(new)}
        xy = np.array([sites[v.site_id] for _, v, _ in new], dtype="float64")
        loc = Locator.cached(con).locate(xy[:, 0], xy[:, 1])
        rows = pa.table({
            "inspection_id": pa.array([iids[i] for i, _, _ in new], pa.int64()),
            "site_id": pa.array([v.site_id for _, v, _ in new], pa.int64()),
            "time": pa.array([v.time for _, v, _ in new], pa.timestamp("us")),
            "inspector": pa.array([v.inspector for _, v, _ in new], pa.string()),
            "conforming": pa.array([v.conforming for _, v, _ in new], pa.bool_()),
            "problems_found": pa.array([len(c) for _, _, c in new], pa.int32()),
            "lng": pa.array(xy[:, 0], pa.float64()),
            "lat": pa.array(xy[:, 1], pa.float64()),
            "h3": pa.array(loc["h3"].to_numpy(np.uint64), pa.uint64()),
            **{c: pa.array([None if pd.isna(x) else str(x) for x in loc[c]], pa.string())
               for c in ("grid_code", "community_code", "street_code", "district_code")},
            "dedup_key": pa.array([f"visit:{v.visit_key}" for _, v, _ in new], pa.string()),
            "kind": pa.array([v.kind for _, v, _ in new], pa.string()),
            "note": pa.array([v.note for _, v, _ in new], pa.string()),
            "photo": pa.array([v.photo for _, v, _ in new], pa.string()),
            "visit_key": pa.array([v.visit_key for _, v, _ in new], pa.string()),
            "plan_id": pa.array([v.plan_id for _, v, _ in new], pa.string()),
        })
        con.register("_visits", rows)
        try:
            con.execute(f"INSERT INTO inspections ({', '.join(rows.column_names)}) SELECT * FROM _visits")
        finally:
            con.unregister("_visits")
        requests = [CaseRequest(actor=v.inspector, event_id=None, problem_type=code, lng=None, lat=None,
                                crs="wgs84", site_id=v.site_id, time=v.time, text=v.note, source="inspection",
                                note=v.note, dispatch=False, unit=None, now=v.now, inspection_id=iids[i])
                    for i, v, codes in new for code in codes]
        for result in open_cases(con, requests) if requests else []:
            if isinstance(result, Exception):
                raise result  # validated above: a refusal here is a bug, and nothing of the group is written
    recorded = _stored(con, sorted(claimed))
    for i, v in enumerate(items):
        if out[i] is not None:
            continue
        if v.visit_key in before:
            out[i] = {**before[v.visit_key], "duplicate": True}
        else:
            out[i] = {**recorded[v.visit_key], "duplicate": claimed[v.visit_key] != i}
    return out
