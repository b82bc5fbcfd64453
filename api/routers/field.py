"""The inspectors' field page: GET /field/{plan_id}/{inspector}?key=…, POST …/visits, GET /field/sw.js.

A phone cannot send an ``Authorization`` header: the field link's ``key`` (valid for that plan and inspector until
the end of the plan's day, :func:`civicgrid.geo.users.check_field_key`) is the credential, checked before the
request's body is read (:class:`FieldRoute`). An unknown plan answers like a wrong key (401), so that the page
never tells an anonymous caller which plan ids exist.
"""

from __future__ import annotations

from civicgrid.api.deps import MAX_INT64, MAX_NAME, MAX_TEXT, get_settings, get_store, lang_param
from civicgrid.api.errors import HtmlErrorRoute
from civicgrid.geo.errors import AuthenticationError, InvalidParameterError, NotFoundError
from civicgrid.geo.store import Store
from civicgrid.geo.times import parse_moment, store_timezone
from civicgrid.sites.patrol import load_plan
from civicgrid.sites.patrol.field import SERVICE_WORKER, check_access, field_page, plan_date
from civicgrid.sites.visits import MAX_PROBLEMS, record_visit, save_photo
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

#: Longest field key a request may carry (the keys are 20 characters).
MAX_KEY = 64


def _route(store: Store, plan_id: str, inspector: str, key: str | None) -> tuple[dict, dict]:
    """(plan, route) when ``key`` opens ``plan_id`` for ``inspector``; 401 otherwise (an unknown plan too)."""
    if len(plan_id) > 64 or len(inspector) > MAX_NAME or (key is not None and len(key) > MAX_KEY):
        msg = f"plan id, inspector or key too long (at most 64, {MAX_NAME} and {MAX_KEY} characters)"
        raise InvalidParameterError(msg)
    try:
        doc = load_plan(store, plan_id)
    except NotFoundError:
        msg = "this field link is not valid (no such plan for this key); ask the planner for your link"
        raise AuthenticationError(msg) from None
    return doc, check_access(store, doc, inspector, key)


class FieldRoute(HtmlErrorRoute):
    """The route class of the field endpoints: a visit (``…/visits``) has its link's key checked before its body
    (a photo) is read, as :class:`~civicgrid.api.auth.AuthFirstRoute` does for tokens."""

    def get_route_handler(self):
        handler = super().get_route_handler()
        if not self.path.endswith("/visits"):
            return handler

        async def route_handler(request: Request):
            p = request.path_params
            await run_in_threadpool(_route, request.app.state.store, str(p.get("plan_id", "")),
                                    str(p.get("inspector", "")), request.query_params.get("key"))
            return await handler(request)

        return route_handler


router = APIRouter(tags=["field"], route_class=FieldRoute)


@router.get("/field/sw.js", include_in_schema=False)
def service_worker() -> Response:
    """The field page's service worker (keeps the page and its scripts for reopening it offline)."""
    return Response(SERVICE_WORKER.read_text(encoding="utf-8"), media_type="text/javascript",
                    headers={"Cache-Control": "no-cache"})


@router.get("/field/{plan_id}/{inspector}", response_class=HTMLResponse, summary="An inspector's field page")
def field(plan_id: str = PathParam(..., max_length=64), inspector: str = PathParam(..., max_length=MAX_NAME),
          key: str | None = Query(None, max_length=MAX_KEY, description="the key of the inspector's field link"),
          lang: str = Depends(lang_param), store: Store = Depends(get_store)) -> HTMLResponse:
    """Today's stops of one inspector in order, a map of the route, navigation links (geo:, AMap GCJ-02, Baidu
    BD-09) and a form per stop recording the visit; visits recorded offline are queued on the phone and sent when
    the connection returns. Opened by the link the plan's exports list (``key``), valid until the end of the plan's
    day; a phone-sized page that needs no internet."""
    doc, _ = _route(store, plan_id, inspector, key)
    return HTMLResponse(field_page(store, doc, inspector, key=key or "", lang=lang),
                        headers={"Cache-Control": "private, no-cache", "Referrer-Policy": "no-referrer"})


@router.post("/field/{plan_id}/{inspector}/visits", summary="Record a visit from the field page", status_code=201)
def record(plan_id: str = PathParam(..., max_length=64),
           inspector: str = PathParam(..., max_length=MAX_NAME),
           key: str | None = Query(None, max_length=MAX_KEY, description="the key of the inspector's field link"),
           lang: str = Depends(lang_param), store: Store = Depends(get_store), settings: dict = Depends(get_settings),
           visit_key: str = Form(..., max_length=64, description="idempotency key made by the phone (a UUID): a "
                                                                 "resend of the same key records nothing new"),
           site_id: int = Form(..., ge=1, le=MAX_INT64, description="the stop's site"),
           conforming: bool = Form(..., description="true: conforming (符合); false: problems found"),
           problem_types: list[str] = Form([], description="小类 codes of the problems found (repeat the field)"),
           note: str | None = Form(None, max_length=MAX_TEXT),
           recorded_at: str | None = Form(None, max_length=64, description="when the visit was recorded on the "
                                                                           "phone (ISO 8601 with offset)"),
           photo: UploadFile | None = File(None, description="a JPEG, PNG, WebP or HEIC photo (setting "
                                                             "max_photo_mb)")) -> JSONResponse:
    """Record the visit to a stop of the inspector's route: the inspection (inspector, note, photo, plan) and a
    case per problem type found, through the same code as ``POST /api/inspections`` and ``POST /api/cases``.
    201 with the visit and its cases; 200 with the stored visit (``duplicate: true``) when its key was sent before."""
    doc, route = _route(store, plan_id, inspector, key)
    if site_id not in {int(s["site_id"]) for s in route["stops"]}:
        msg = f"site {site_id} is not a stop of {inspector}'s route in plan {plan_id}"
        raise InvalidParameterError(msg)
    if len(problem_types) > MAX_PROBLEMS or any(len(t) > MAX_NAME for t in problem_types):
        msg = f"at most {MAX_PROBLEMS} problem types of at most {MAX_NAME} characters each"
        raise InvalidParameterError(msg)
    day = plan_date(doc)
    # a phone sends its clock's moment with an offset (toISOString: UTC): read as the store's wall-clock time
    when = parse_moment(recorded_at, name="recorded_at", tz=store_timezone(store)) if recorded_at else None
    if when is not None and when.date() != day:
        msg = f"recorded_at {recorded_at} is not on the plan's day {day} (is the phone's clock right?)"
        raise InvalidParameterError(msg)
    name = None
    if photo is not None and photo.filename is not None:
        limit = float(settings.get("max_photo_mb", 10))
        data = photo.file.read(int(limit * (1 << 20)) + 1)
        if data:
            name = save_photo(store.path, data, visit_key=visit_key, day=day, max_mb=limit)
    visit = record_visit(store.path, site_id=site_id, inspector=inspector, conforming=conforming,
                         problem_types=problem_types, note=note, photo=name, time=when, visit_key=visit_key,
                         plan_id=plan_id)
    return JSONResponse(jsonable_encoder(visit), status_code=200 if visit["duplicate"] else 201)
