"""The FastAPI application: one store, the routers of every capability, the offline map assets."""

from __future__ import annotations

import importlib
import os

from civicgrid.api.deps import reject_unknown_query
from civicgrid.api.errors import add_exception_handlers
from civicgrid.api.offline import mount_assets
from civicgrid.geo.store import Store, default_db_path
from fastapi import Depends, FastAPI

#: Router modules under ``api.routers`` included by :func:`create_app`, in order.
#: A module missing from the checkout is skipped (capabilities land one by one).
ROUTERS = ("layers", "heatmap", "hotspots", "stats", "events", "risk", "patrols", "cases", "kpis", "simulator",
           "users", "reports", "pages")


def create_app(db: str | os.PathLike | None = None, *, settings: dict | None = None) -> FastAPI:
    """Build the civicgrid service on the database ``db``.

    Parameters
    ----------
    db
        Database file (default: ``$CIVICGRID_DB`` or ``./civicgrid.duckdb``). It is
        opened read-only and followed as writers publish new versions.
    settings
        Overrides of service settings (e.g. ``max_cells``).
    """
    app = FastAPI(
        title="civicgrid",
        description="Hotspots, risk-ranked patrols, cases and KPIs for civilized-city inspection campaigns.",
        version="0.1.0",
    )
    app.state.store = Store(db if db is not None else default_db_path())
    app.state.settings = {"max_cells": 50_000, **(settings or {})}
    add_exception_handlers(app)
    mount_assets(app)
    for name in ROUTERS:
        try:
            module = importlib.import_module(f"civicgrid.api.routers.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"civicgrid.api.routers.{name}":
                raise
            continue
        app.include_router(module.router, dependencies=[Depends(reject_unknown_query)])
    return app
