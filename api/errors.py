"""Domain errors mapped to HTTP statuses, in one table."""

from __future__ import annotations

import difflib
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

import jinja2
from civicgrid.api.auth import AuthFirstRoute
from civicgrid.geo.errors import (
    AuthenticationError,
    CivicgridError,
    ConflictError,
    ImportFileError,
    InvalidParameterError,
    NotFoundError,
    OfflineAssetError,
    PermissionDeniedError,
    ReadError,
    StoreError,
    StoreVersionError,
    TooLargeError,
)
from civicgrid.geo.texts import DEFAULT_LANG, parse_lang, text
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

#: Exception class -> HTTP status, for every domain error (:class:`~civicgrid.geo.errors.CivicgridError`).
#: Subclasses come before their bases.
DEFAULT_STATUS_CODES: dict[type[Exception], int] = {
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    TooLargeError: 413,
    InvalidParameterError: 422,
    ReadError: 422,
    ImportFileError: 422,
    StoreVersionError: 503,
    StoreError: 503,
    OfflineAssetError: 500,
}


def add_exception_handlers(app: FastAPI, status_codes: dict[type[Exception], int] | None = None) -> None:
    """Register a JSON ``{"detail": message}`` handler per domain error class (errors mapped to a 5xx status
    are also logged, at ERROR)."""
    for exc_type, status in (status_codes or DEFAULT_STATUS_CODES).items():

        def handler(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            log_server_error(request, exc, status)
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

        app.add_exception_handler(exc_type, handler)
    app.add_exception_handler(RequestValidationError, validation_handler)


#: Longest shown part of a value a request gave, in a message.
_SHOWN = 60


def _shown(value: object) -> str:
    text = repr(value)
    if isinstance(value, str) and len(value) > _SHOWN:
        return f"{value[:_SHOWN]!r}… ({len(value):,} characters)"
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}…"


def validation_message(exc: RequestValidationError, *, body_fields: Sequence[str] = ()) -> str:
    """One line naming each field that failed FastAPI's validation, what it must be, and what came:
    ``text='xxxx…' (2,000,000 characters): String should have at most 5000 characters``. A body field the
    endpoint does not take names the closest of ``body_fields`` (``'problem' (did you mean 'problem_type'?)``)
    and all of them, as unknown query parameters do."""
    parts = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ())]
        source = len(loc) > 1 and loc[0] in ("body", "query", "path", "header", "cookie")
        where = ".".join(loc[1:] if source else loc) or "body"
        if e.get("type") == "extra_forbidden" and body_fields:
            name = loc[-1] if loc else where
            close = difflib.get_close_matches(name, list(body_fields), n=1, cutoff=0.6) or \
                [f for f in body_fields if name and (name in f or f in name)][:1]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            parts.append(f"unknown field {where!r}{hint} in the body; it takes: {', '.join(body_fields)}")
        elif e.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON: {e.get('ctx', {}).get('error', e['msg'])}")
        elif e.get("type") == "missing":
            parts.append(f"{where} is required")
        else:
            parts.append(f"{where}={_shown(e.get('input'))}: {e['msg']}")
    return "; ".join(parts)


def validation_handler(request: Request, exc: Exception) -> JSONResponse:
    """A request that FastAPI's validation refused: 422 with the usual ``{"detail": message}`` (the message
    names each field, its allowed values or range and what came) and the structured ``errors``."""
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
    return JSONResponse({"detail": validation_message(exc, body_fields=_body_fields(request)), "errors": errors},
                        status_code=422)


def _body_fields(request: Request) -> list[str]:
    """The fields of the route's JSON body model (empty for a route without one)."""
    field = getattr(request.scope.get("route"), "body_field", None)
    info = getattr(field, "field_info", None)
    fields = getattr(getattr(info, "annotation", None), "model_fields", None)
    return [f.alias or name for name, f in fields.items()] if isinstance(fields, dict) else []


class RequestGuard:
    """ASGI middleware giving each HTTP request an id (the ``X-Request-ID`` answer header) and turning any
    exception that no handler took into a 500 ``{"detail": ..., "request_id": ...}`` answer, logged at ERROR with
    its traceback and the id (the connection stays open; nothing of the exception is shown to the caller)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("%s %s -> 500 request %s", scope.get("method"), scope.get("path"), request_id)
            if started:  # the answer had begun: nothing better can be done than end it
                raise
            body = {"detail": f"internal error; the service log has its details under request id {request_id}",
                    "request_id": request_id}
            await JSONResponse(body, status_code=500)(scope, receive, send_with_id)


def log_server_error(request: Request, exc: Exception, status: int) -> None:
    """Log a domain error answered with a 5xx status (the store cannot be opened...) at ERROR."""
    if status >= 500:
        logger.error("%s %s -> %d %s: %s", request.method, request.url.path, status, type(exc).__name__, exc)


def status_for(exc: Exception, status_codes: dict[type[Exception], int] | None = None) -> int:
    """The HTTP status of a domain error (500 for anything else)."""
    for cls, status in (status_codes or DEFAULT_STATUS_CODES).items():
        if isinstance(exc, cls):
            return status
    return 500


_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"),
                                autoescape=True)


def error_page(request: Request, message: str, status: int, *, fits_res: int | None = None) -> HTMLResponse:
    """A short HTML page (in the page's ``lang``) with the error, a link back and, for a view with too many
    cells, a link to the same view at ``fits_res``, the resolution that fits."""
    try:
        lang = parse_lang(request.query_params.get("lang", DEFAULT_LANG))
    except InvalidParameterError:  # the page explains another error: show it in the default language
        lang = DEFAULT_LANG
    links = []
    if fits_res is not None:
        query = {**dict(request.query_params), "res": str(fits_res)}
        links.append((f"{request.url.path}?{urlencode(query)}", text("error_page.coarser", lang, res=fits_res)))
    if status == 401:  # a page opened in a browser: sign it in, then come back here
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        links.append((f"/signin?{urlencode({'next': here, 'lang': lang})}", text("error_page.signin", lang)))
    links.append((f"/map?lang={lang}", text("error_page.home", lang)))
    links.append(("javascript:history.back()", text("error_page.back", lang)))
    body = _TEMPLATES.get_template("error_page.html").render(lang=lang, title=text("error_page.title", lang),
                                                             message=message, links=links)
    return HTMLResponse(body, status_code=status)


class HtmlErrorRoute(AuthFirstRoute):
    """A route of an HTML page: a browser (``Accept: text/html``) gets its errors as a readable page with a way
    back instead of raw JSON; other clients keep the JSON ``{"detail": ...}`` answer."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route_handler(request: Request):
            try:
                return await handler(request)
            except (CivicgridError, RequestValidationError) as exc:
                if "text/html" not in request.headers.get("accept", ""):
                    raise
                if isinstance(exc, RequestValidationError):
                    return error_page(request, validation_message(exc), 422)
                status = status_for(exc)
                log_server_error(request, exc, status)
                return error_page(request, str(exc), status, fits_res=getattr(exc, "fits_res", None))

        return route_handler
