"""Domain errors mapped to HTTP statuses, in one table."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlencode

import jinja2
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
)
from civicgrid.geo.texts import DEFAULT_LANG, parse_lang, text
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute

logger = logging.getLogger(__name__)

#: Exception class -> HTTP status, for every domain error (:class:`~civicgrid.geo.errors.CivicgridError`).
#: Subclasses come before their bases.
DEFAULT_STATUS_CODES: dict[type[Exception], int] = {
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
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
    links.append((f"/map?lang={lang}", text("error_page.home", lang)))
    links.append(("javascript:history.back()", text("error_page.back", lang)))
    body = _TEMPLATES.get_template("error_page.html").render(lang=lang, title=text("error_page.title", lang),
                                                             message=message, links=links)
    return HTMLResponse(body, status_code=status)


class HtmlErrorRoute(APIRoute):
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
                    message = "; ".join(f"{e['loc'][-1]}={e.get('input')!r}: {e['msg']}" for e in exc.errors())
                    return error_page(request, message, 422)
                status = status_for(exc)
                log_server_error(request, exc, status)
                return error_page(request, str(exc), status, fits_res=getattr(exc, "fits_res", None))

        return route_handler
