"""The imports a store has seen, and undoing one (admin role); uploading a file is ``POST /api/imports/{layer}``
(:mod:`civicgrid.api.routers.users`)."""

from __future__ import annotations

from civicgrid.api.auth import AuthFirstRoute, require_role
from civicgrid.api.deps import get_store, id_path
from civicgrid.api.models import ImportList, ImportUndone
from civicgrid.api.responses import frame_records, json_body
from civicgrid.geo.store import Store
from civicgrid.sites.import_log import list_imports, undo_import
from fastapi import APIRouter, Depends
from fastapi.responses import Response

router = APIRouter(prefix="/api/imports", tags=["admin"], route_class=AuthFirstRoute)

_admin = require_role("admin")


@router.get("", summary="List the imports", response_model=ImportList)
def get_imports(store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """Every import, oldest first: layer, file, when (the store's wall-clock time), the counts (rows read, loaded,
    updated, duplicates, rejected) and when it was undone (:func:`civicgrid.sites.import_log.list_imports`)."""
    return json_body({"imports": frame_records(list_imports(store))})


@router.post("/{import_id}/undo", summary="Undo an import", response_model=ImportUndone)
def post_undo(import_id: int = id_path("import id"), store: Store = Depends(get_store),
              _user: dict = Depends(_admin)) -> Response:
    """Remove what the import loaded, in one transaction: events with the cases it created (refused, 409, when
    someone has moved one of them since, or when it updated stored rows), sites or inspections nothing refers to.
    An unknown import is a 404; an import of areas or micro-grids, or one undone already, a 422."""
    return json_body(undo_import(store.path, import_id))
