"""The city's problem taxonomy over HTTP: types, source labels without a type, mapping labels (retroactive),
adding types, importing a label map. Reading: viewer role; changing: admin role."""

from __future__ import annotations

import tempfile
from pathlib import Path

from civicgrid.api.auth import AuthFirstRoute, require_role
from civicgrid.api.deps import RequestBody, get_store
from civicgrid.api.models import LabelMapped, LabelsMapped, ProblemType, ProblemTypes, UnmappedLabels
from civicgrid.api.responses import frame_records, json_body
from civicgrid.geo.store import Store
from civicgrid.sites.taxonomy import add_type, import_map, list_types, map_label, unmapped_labels
from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.responses import Response
from pydantic import Field

router = APIRouter(prefix="/api/types", tags=["types"], route_class=AuthFirstRoute)

_admin = require_role("admin")


class MapIn(RequestBody):
    """A source label to map to a problem type."""

    label: str = Field(..., examples=["噪音扰民"])
    code: str = Field(..., description="a problem type code or name", examples=["0101"])
    source: str | None = Field(None, description="complaint or inspection (default: every source)")


class TypeIn(RequestBody):
    """A new problem type (小类)."""

    code: str = Field(..., examples=["0905"])
    name_zh: str = Field(..., examples=["油烟污染"])
    name_en: str | None = Field(None, examples=["Cooking fumes"])
    major: str | None = Field(None, description="its major class code (default: the code's first two characters, "
                                                "else 99)")
    deadline: str | None = Field(None, description="working days (3d) or working hours (8h)", examples=["3d"])


@router.get("", summary="Problem types with their events and mapped labels", response_model=ProblemTypes)
def get_types(store: Store = Depends(get_store), _user: dict = Depends(require_role("viewer"))) -> Response:
    """Every problem type (:func:`civicgrid.sites.taxonomy.list_types`)."""
    return json_body({"types": frame_records(list_types(store))})


@router.get("/unmapped", summary="Source labels without a type", response_model=UnmappedLabels)
def get_unmapped(store: Store = Depends(get_store), _user: dict = Depends(require_role("viewer"))) -> Response:
    """The labels of imported events that are no known type, by number of events, with the closest types."""
    return json_body({"labels": frame_records(unmapped_labels(store))})


@router.post("/map", summary="Map a source label to a type (retroactive)", response_model=LabelMapped)
def post_map(body: MapIn, store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """The label's events (and their cases) get the type and its deadline; later imports map it at once."""
    return json_body(map_label(store.path, body.label, body.code, source=body.source))


@router.post("", summary="Add a problem type", status_code=201, response_model=ProblemType)
def post_type(body: TypeIn, store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """A new 小类 with its major class and deadline."""
    add_type(store.path, body.code, body.name_zh, name_en=body.name_en, major=body.major, deadline=body.deadline)
    row = list_types(Store(store.path)).query("code == @body.code")
    return json_body(frame_records(row)[0], status_code=201)


@router.post("/import-map", summary="Map many labels from a CSV source,label,code", response_model=LabelsMapped)
def post_import_map(file: UploadFile = File(..., description="CSV with columns source,label,code"),
                    store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """Every label of the file mapped as ``/api/types/map`` does, in one transaction (nothing when a code is
    unknown: 404 naming the lines)."""
    with tempfile.TemporaryDirectory(prefix="civicgrid-types-") as tmp:
        path = Path(tmp) / "map.csv"
        path.write_bytes(file.file.read())
        done = import_map(store.path, path)
    return json_body({"mapped": done})
