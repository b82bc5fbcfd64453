"""Problem cases: create (POST /api/cases), move (POST /api/cases/{id}/transitions), list, show, audit trail."""

from __future__ import annotations

from civicgrid.api.auth import AuthFirstRoute, require_role
from civicgrid.api.cache import cached_endpoint
from civicgrid.api.deps import MAX_INT64, MAX_NAME, MAX_TEXT, RequestBody, get_store, id_path
from civicgrid.api.models import CaseDetail, CaseList, CaseLog
from civicgrid.api.responses import frame_records, json_body
from civicgrid.geo.store import Store
from civicgrid.sites import cases as cs
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import Field

router = APIRouter(prefix="/api/cases", tags=["cases"], route_class=AuthFirstRoute)


class CaseIn(RequestBody):
    """A new case: for an existing event (``event_id``), or a new event at a place (``lng``/``lat`` or
    ``site_id``) with a problem type."""

    event_id: int | None = Field(None, ge=1, le=MAX_INT64, description="an existing event without a case")
    problem_type: str | None = Field(None, max_length=MAX_NAME, description="小类 code or name (new event)",
                                     examples=["0201"])
    lng: float | None = Field(None, ge=-180, le=180, examples=[112.94])
    lat: float | None = Field(None, ge=-90, le=90, examples=[28.23])
    crs: str = Field("wgs84", max_length=20, description="wgs84, gcj02 (AMap) or bd09 (Baidu)")
    site_id: int | None = Field(None, ge=1, le=MAX_INT64, description="sample-frame site of the problem")
    time: str | None = Field(None, max_length=64, description="when found (default now), local time, in the "
                                                             "plausible window (settings earliest_time, "
                                                             "latest_days_ahead)")
    text: str | None = Field(None, max_length=MAX_TEXT, description=f"what was found, at most {MAX_TEXT} characters")
    source: str = Field("inspection", max_length=20, description="inspection (a hit) or complaint")
    note: str | None = Field(None, max_length=MAX_TEXT, description="note for the audit trail")
    dispatch: bool = Field(False, description="also register and dispatch at once")
    unit: str | None = Field(None, max_length=MAX_NAME,
                             description="dispatch to this unit instead of the automatic one")
    dispatch_at: str | None = Field(None, max_length=64, description="with dispatch: when it was registered and "
                                                                     "dispatched (default: the time found)")


class TransitionIn(RequestBody):
    """A move of a case."""

    to: str = Field(..., max_length=20, description="target state (registered, dispatched, rectified, closed) or "
                                                    "action (register, dispatch, rectify, close, rework)",
                    examples=["dispatch"])
    note: str | None = Field(None, max_length=MAX_TEXT)
    unit: str | None = Field(None, max_length=MAX_NAME,
                             description="with dispatch: this unit instead of the automatic one")
    photo: str | None = Field(None, max_length=MAX_NAME,
                              description="photo reference, e.g. a file name, with rectified")
    at: str | None = Field(None, max_length=64, description="when (default now), not before the previous step")


@router.get("", summary="List cases", response_model=CaseList)
@cached_endpoint
def list_cases(store: Store = Depends(get_store), _user: dict = Depends(require_role("viewer")),
               state: str | None = Query(None, description="found, registered, dispatched, rectified or closed"),
               area: str | None = Query(None, description="district, street, community or grid: code or name"),
               site: int | None = Query(None, ge=1, le=MAX_INT64, description="site id"),
               overdue: bool | None = Query(None, description="true: open past the deadline at as_of"),
               as_of: str | None = Query(None, max_length=64, description="moment for overdue (default now)"),
               limit: int = Query(100, ge=1, le=10_000), offset: int = Query(0, ge=0, le=MAX_INT64)) -> Response:
    """Cases, newest first (viewer role), one page: ``count`` rows of the ``total`` matching; page through them with
    ``offset`` (``next_offset`` is the next page's, null on the last page)."""
    df = cs.list_cases(store, state=state, area=area, site_id=site, overdue=overdue, as_of=as_of, limit=limit,
                       offset=offset)
    total = int(df.attrs["total"])
    return json_body({"count": len(df), "total": total, "limit": limit, "offset": offset,
                      "next_offset": offset + limit if offset + limit < total else None,
                      "cases": frame_records(df)})


@router.post("", summary="Create a case", status_code=201, response_model=CaseDetail)
def create_case(body: CaseIn, store: Store = Depends(get_store),
                user: dict = Depends(require_role("inspector"))) -> Response:
    """Open a case (inspector role); the deadline comes from the problem type on the working clock."""
    case = cs.create_case(store.path, actor=user["name"], **body.model_dump())
    return json_body(case, status_code=201)


@router.get("/{case_id}", summary="One case with its audit trail", response_model=CaseDetail)
def get_case(case_id: int = id_path("case id"), store: Store = Depends(get_store),
             _user: dict = Depends(require_role("viewer"))) -> Response:
    """The case, its audit trail (``log``) and its legal next states (``next``) (viewer role)."""
    return json_body(cs.with_source_label(store, cs.get_case(store, case_id)))


@router.get("/{case_id}/log", summary="The audit trail of a case", response_model=CaseLog)
def get_log(case_id: int = id_path("case id"), store: Store = Depends(get_store),
            _user: dict = Depends(require_role("viewer"))) -> Response:
    """Who moved the case when, from which state to which, with notes (viewer role)."""
    return json_body({"case_id": case_id, "log": frame_records(cs.case_log(store, case_id))})


@router.post("/{case_id}/transitions", summary="Move a case", response_model=CaseDetail)
def move_case(body: TransitionIn, case_id: int = id_path("case id"), store: Store = Depends(get_store),
              user: dict = Depends(require_role("inspector"))) -> Response:
    """Register, dispatch, rectify, close or send back (rework) a case (inspector role). An illegal move
    answers 409 and changes nothing."""
    case = cs.transition(store.path, case_id, body.to, actor=user["name"], at=body.at, note=body.note,
                         unit=body.unit, photo=body.photo)
    return json_body(case)
