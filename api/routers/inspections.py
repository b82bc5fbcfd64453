"""Visits recorded one at a time: POST /api/inspections; the inspectors' field links: GET
/api/patrols/{plan_id}/field-links."""

from __future__ import annotations

from civicgrid.api.auth import AuthFirstRoute, require_role
from civicgrid.api.deps import MAX_INT64, MAX_TEXT, RequestBody, get_settings, get_store, lang_param
from civicgrid.geo.store import Store
from civicgrid.sites.patrol import load_plan
from civicgrid.sites.patrol.field import field_links, plan_date
from civicgrid.sites.visits import MAX_PROBLEMS, record_visit
from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import Field

router = APIRouter(tags=["inspections"], route_class=AuthFirstRoute)


class VisitIn(RequestBody):
    """A visit to a sample-frame site, recorded as it happens."""

    site_id: int = Field(..., ge=1, le=MAX_INT64, description="the site visited")
    conforming: bool = Field(..., description="true: conforming (符合); false: the problems problem_types found")
    problem_types: list[str] = Field(default_factory=list, max_length=MAX_PROBLEMS,
                                     description="小类 codes or names of the problems found: a case each")
    note: str | None = Field(None, max_length=MAX_TEXT, description="what was found (the cases' text)")
    time: str | None = Field(None, max_length=64, description="when (default now), local time, not in the future")
    visit_key: str | None = Field(None, min_length=8, max_length=64,
                                  description="idempotency key: a resend with the same key records nothing new")
    plan_id: str | None = Field(None, max_length=64, description="the patrol plan of the visit")


def base_url(request: Request, settings: dict) -> str:
    """The address the field links start with: the setting ``public_url``, else the address of the request."""
    return str(settings.get("public_url") or request.base_url).rstrip("/")


@router.post("/api/inspections", summary="Record a visit", status_code=201)
def create_inspection(body: VisitIn, store: Store = Depends(get_store),
                      user: dict = Depends(require_role("inspector"))) -> JSONResponse:
    """Record a visit by the token's user (inspector role): the inspection and a case per problem type found, in
    one write (the field page records its visits with the same code). 201 with the visit and its ``cases``; 200
    with the stored visit (``duplicate: true``) when ``visit_key`` was sent before."""
    visit = record_visit(store.path, inspector=user["name"], **body.model_dump())
    return JSONResponse(jsonable_encoder(visit), status_code=200 if visit["duplicate"] else 201)


@router.get("/api/patrols/{plan_id}/field-links", summary="The inspectors' field links of a plan")
def links(request: Request, plan_id: str = PathParam(..., max_length=64), store: Store = Depends(get_store),
          _user: dict = Depends(require_role("inspector")), settings: dict = Depends(get_settings),
          lang: str = Depends(lang_param)) -> JSONResponse:
    """Each inspector's link to the field page of the plan (inspector role: a link lets its holder record visits
    as that inspector), valid until the end of the plan's day. The links start with the setting ``public_url``
    (the address phones reach the service at), else the address of this request."""
    doc = load_plan(store, plan_id)
    got = field_links(store, doc, base_url=base_url(request, settings), lang=lang)
    return JSONResponse({"plan_id": plan_id, "date": plan_date(doc).isoformat(),
                         "valid_until": f"{plan_date(doc).isoformat()}T24:00",
                         "links": [{"inspector": k, "url": v} for k, v in got.items()]})
