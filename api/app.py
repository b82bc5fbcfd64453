"""The FastAPI application: one store, the routers of every capability, the offline map assets."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from civicgrid.api.auth import USER_KEY
from civicgrid.api.cache import response_cache
from civicgrid.api.deps import check_int64, reject_unknown_query
from civicgrid.api.errors import RequestGuard, add_exception_handlers
from civicgrid.api.offline import mount_assets
from civicgrid.api.routers import (
    cases,
    events,
    field,
    heatmap,
    hotspots,
    imports,
    inspections,
    kpis,
    layers,
    pages,
    patrols,
    reports,
    risk,
    signin,
    simulator,
    stats,
    types,
    users,
)
from civicgrid.api.routers.users import upload_too_large
from civicgrid.geo.caches import VersionCache
from civicgrid.geo.settings import Settings, get_settings
from civicgrid.geo.store import Store
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

#: gzip level of the answers (1 fastest … 9 smallest; see :func:`create_app`).
GZIP_LEVEL = 5

#: The router modules included by :func:`create_app`, in order.
ROUTERS = (layers, heatmap, hotspots, stats, events, risk, patrols, cases, inspections, kpis, simulator, users,
           imports, reports, types, pages, field, signin)


class RequestLog:
    """ASGI middleware logging each HTTP request at INFO, once answered: method, path, status and milliseconds
    (logger ``civicgrid.api.app``; nothing is measured while INFO is off)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            logger.info("%s %s %d %.1f ms", scope["method"], scope["path"], status,
                        1000 * (time.perf_counter() - started))


class BodyLimit:
    """ASGI middleware refusing a request body over the setting ``max_upload_mb`` with 413 as it streams: a
    ``Content-Length`` over the limit before anything is read, else as soon as the bytes received pass it (the
    request is then cut off; nothing more is read or written to disk)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = int(scope["app"].state.settings.get("max_upload_mb", 200)) << 20
        length = dict(scope.get("headers", [])).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await self._refuse(limit, scope, receive, send)
            return
        received, refused = 0, False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await self._refuse(limit, scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def quiet_send(message: Message) -> None:
            if not refused:  # the 413 went out: what the app answers to the cut-off request is dropped
                await send(message)

        try:
            await self.app(scope, counting_receive, quiet_send)
        except Exception:
            if not refused:
                raise

    @staticmethod
    async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        exc = upload_too_large(limit)
        await JSONResponse({"detail": str(exc)}, status_code=413)(scope, receive, send)


def create_app(db: str | os.PathLike | None = None, *, settings: Mapping[str, Any] | None = None) -> FastAPI:
    """Build the civicgrid service on the database ``db``.

    Parameters
    ----------
    db
        Database file (default: the ``db`` setting, ``$CIVICGRID_DB``, else ``./civicgrid.duckdb``). It is
        opened read-only and followed as writers publish new versions.
    settings
        Overrides of the service settings (``max_cells``, ``tianditu_key``, ``patrol_network``,
        ``max_upload_mb``, ``map_cache_pages``, ``api_cache_responses``, ``cache_dir``, ``public_layers``),
        which otherwise come from the ``CIVICGRID_*`` settings (:func:`civicgrid.geo.settings.get_settings`).
    """
    config = get_settings()
    app = FastAPI(
        title="civicgrid",
        description="Hotspots, risk-ranked patrols, cases and KPIs for civilized-city inspection campaigns.",
        version="0.1.0",
    )
    app.state.store = Store(db if db is not None else config.db)
    app.state.settings = {**config.service_settings(), **(settings or {})}
    shared = app.state.settings.get("cache_dir")
    for folder in (("map", "api") if shared else ()):  # shared by the service's processes
        Path(shared, folder).mkdir(parents=True, exist_ok=True)
    app.state.map_pages = VersionCache(int(app.state.settings.get("map_cache_pages", 32)),
                                       shared=Path(shared, "map") if shared else None)
    app.state.api_responses = response_cache(int(app.state.settings.get("api_cache_responses", 256)),
                                             shared=Path(shared, "api") if shared else None)
    if isinstance(app.state.settings["public_layers"], str):  # an override as the environment writes it
        app.state.settings["public_layers"] = Settings(public_layers=app.state.settings["public_layers"]
                                                       ).public_layer_set()
    add_exception_handlers(app)
    mount_assets(app)
    for module in ROUTERS:
        app.include_router(module.router, dependencies=[Depends(reject_unknown_query), Depends(check_int64)])
    # answers of 1 KB and more compressed for clients that accept it: a map page of Shenzhen's 9,005 micro-grids
    # is 3.7 MB, 0.49 MB compressed (34 ms at level 5; level 9 took 107 ms for 2 % less) on an inspector's phone
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=GZIP_LEVEL)
    app.add_middleware(BodyLimit)     # an upload over max_upload_mb refused as it streams
    app.add_middleware(RequestGuard)  # a request id on every answer; any unhandled exception a logged 500
    app.add_middleware(RequestLog)
    logger.info("service on %s (max_cells %s, road network %s)", app.state.store.path,
                app.state.settings["max_cells"], app.state.settings.get("patrol_network") or "none")
    return app


#: The views :func:`warm_app` computes before the service answers: the pages and answers a planner's first visit
#: asks for (the map in both languages, the default heatmaps and hotspots at the map's resolutions, the KPIs and
#: flags, every reference layer), as an anonymous caller and, for what a token changes, as a ``viewer``.
WARM_VIEWS: tuple[tuple[str, str | None], ...] = (
    *((path, None) for path in (
        "/map", "/map?lang=en",
        "/api/heatmap", *(f"/api/heatmap?res={r}" for r in (7, 8, 9)),
        "/api/hotspots", *(f"/api/hotspots?res={r}" for r in (7, 8, 9)),
        "/api/kpis", "/api/kpis/flags",
        "/api/layers/areas", "/api/layers/grids", "/api/layers/sites", "/api/layers/categories",
        "/api/layers/problem-types")),
    *((path, "viewer") for path in ("/map", "/map?lang=en", "/api/layers/grids", "/api/layers/sites",
                                    "/api/events", "/api/cases")),
)

#: The views warmed after the service accepts connections (:func:`warm_app` in a thread of a one-process service):
#: the sites ranked by risk, whose first answer fits the risk models (seconds to minutes; the fit is then kept until
#: the data before the day changes), too long to keep the port closed for. A caller asking meanwhile waits for that
#: one fit.
WARM_LATER_VIEWS: tuple[tuple[str, str | None], ...] = (("/api/risk", None),)


def warm_app(app: FastAPI, *, views: Iterable[tuple[str, str | None]] = WARM_VIEWS, seconds: float = 120) -> int:
    """Compute the answers of ``views`` into the app's caches before the service accepts connections, so that
    the first callers of a fresh process (or, with the setting ``cache_dir``, of every worker of the service)
    do not queue behind cold computations.

    Each view is asked through the app itself, as a request would be (same answer, same cache key); a view of
    a role is asked as a caller authenticated with that role (no token is made or used). A view that fails is
    logged and skipped: warming never stops the service. The answers are kept per store version, like any
    other: a write committed since makes them unreachable.

    Parameters
    ----------
    app
        The service (:func:`create_app`).
    views
        ``(path with query, role or None)`` pairs (default :data:`WARM_VIEWS`).
    seconds
        Stop warming after this long (the views left are computed by their first callers).

    Returns
    -------
    int
        The views answered 200.
    """
    deadline = time.monotonic() + seconds
    done = 0
    for path, role in views:
        if time.monotonic() > deadline:
            logger.info("warming stopped after %.0f s", seconds)
            break
        started = time.perf_counter()
        try:
            status = asyncio.run(_get(app, path, role))
        except Exception:
            logger.exception("warming %s failed", path)
            continue
        done += status == 200
        logger.info("warmed %s (%s): %d in %.0f ms", path, role or "anonymous", status,
                    1000 * (time.perf_counter() - started))
    return done


async def _get(app: FastAPI, path: str, role: str | None) -> int:
    """The status of ``GET path`` asked of ``app`` in-process (the body is dropped)."""
    route, _, query = path.partition("?")
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": route, "raw_path": route.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"localhost")], "client": ("127.0.0.1", 0), "server": ("localhost", 80),
        "state": {} if role is None else {USER_KEY: {"name": f"({role} warm-up)", "role": role}}}
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    await app(scope, receive, send)
    return status
