"""Admin endpoints: users and tokens, settings (holidays, rebound rule), and file imports (admin role)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from civicgrid.api.auth import require_role
from civicgrid.api.deps import RequestBody, get_store
from civicgrid.api.routers.cases import frame_records, json_body
from civicgrid.geo.errors import InvalidParameterError, NotFoundError
from civicgrid.geo.importing import ImportReport
from civicgrid.geo.store import Store
from civicgrid.geo.users import ROLES, add_user, list_users, new_token, set_active
from civicgrid.grids.areas import import_areas, import_grids
from civicgrid.sites import cases as cs
from civicgrid.sites.events import import_events
from civicgrid.sites.frame import import_sites
from civicgrid.sites.inspections import import_inspections
from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import Response
from pydantic import Field

router = APIRouter(tags=["admin"])

_admin = require_role("admin")


class UserIn(RequestBody):
    """A new user."""

    name: str = Field(..., examples=["王伟"])
    role: str = Field("viewer", description=f"one of {', '.join(ROLES)}")


class HolidayIn(RequestBody):
    """A calendar exception."""

    date: str = Field(..., examples=["2027-01-01"])
    kind: str = Field(..., description="holiday (a day off) or workday (a make-up working day, 调休上班)")
    name: str | None = Field(None, examples=["元旦"])
    source: str | None = None


class HolidaysIn(RequestBody):
    """Calendar exceptions to store."""

    rows: list[HolidayIn] = Field(..., min_length=1)
    replace_years: bool = Field(True, description="drop the stored rows of the years listed first")


class SettingIn(RequestBody):
    """A setting value."""

    value: float


@router.get("/api/users", summary="List users")
def users(store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """Users and roles (never their tokens)."""
    return json_body({"users": frame_records(list_users(store))})


@router.post("/api/users", summary="Create a user", status_code=201)
def create_user(body: UserIn, store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """Create a user; the response holds the token, which is stored only hashed and never shown again."""
    user, token = add_user(store.path, body.name, role=body.role)
    return json_body({**user, "token": token}, status_code=201)


@router.post("/api/users/{name}/token", summary="Issue a new token")
def rotate_token(name: str, store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """Replace the user's token (the old one stops working) and return the new one once."""
    return json_body({"name": name, "token": new_token(store.path, name)})


@router.delete("/api/users/{name}", summary="Disable a user")
def disable_user(name: str, store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """Disable a user: the token is refused from now on (the audit trail keeps the name)."""
    return json_body(set_active(store.path, name, active=False))


@router.get("/api/settings", summary="Case settings")
def settings(store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """Rebound rule (``rebound_radius_m``, ``rebound_days``) and the working clock."""
    return json_body({**cs.get_settings(store), "work_start": "09:00", "work_end": "18:00"})


@router.get("/api/settings/holidays", summary="Holiday calendar")
def get_holidays(store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """Days off and make-up working days (调休) used by the deadlines."""
    return json_body({"holidays": frame_records(cs.holidays(store))})


@router.put("/api/settings/holidays", summary="Replace or add holidays")
def put_holidays(body: HolidaysIn, store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """Store calendar exceptions (by default replacing the listed years). Deadlines already set are kept;
    new cases use the new calendar."""
    n = cs.set_holidays(store.path, [r.model_dump() for r in body.rows], replace_years=body.replace_years)
    return json_body({"stored": n, "holidays": frame_records(cs.holidays(store))})


@router.put("/api/settings/{key}", summary="Change a case setting")
def put_setting(key: str, body: SettingIn, store: Store = Depends(get_store),
                _user: dict = Depends(_admin)) -> Response:
    """Set ``rebound_radius_m`` or ``rebound_days`` (positive numbers)."""
    return json_body(cs.set_setting(store.path, key, body.value))


#: Import layers and their importers (function, options they take).
IMPORT_LAYERS: dict[str, tuple[Callable[..., ImportReport], set[str]]] = {
    "areas": (import_areas, {"level", "crs", "encoding", "layer"}),
    "grids": (import_grids, {"crs", "encoding", "layer"}),
    "sites": (import_sites, {"point", "crs", "encoding", "layer", "sheet"}),
    "events": (import_events, {"source", "point", "crs", "tz", "encoding", "layer", "sheet"}),
    "inspections": (import_inspections, {"point", "crs", "tz", "encoding", "layer", "sheet"}),
}


@router.post("/api/imports/{layer}", summary="Import a file")
def import_file(layer: str, file: UploadFile = File(..., description="CSV, XLSX, GeoJSON, GeoPackage, zipped "
                                                                      "Shapefile, (Geo)Parquet"),
                map: list[str] = Form(default=[], description="FIELD=COLUMN, repeatable (e.g. name=名称)"),
                level: str | None = Form(None, description="areas: district, street or community"),
                source: str | None = Form(None, description="events: complaint or inspection"),
                crs: str | None = Form(None), encoding: str | None = Form(None),
                layer_name: str | None = Form(None, description="GeoPackage layer"),
                sheet: str | None = Form(None), point: str | None = Form(None), tz: str | None = Form(None),
                store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """Load an uploaded file with the same importer as `civicgrid import LAYER` and return its report
    (rows read = loaded + duplicates + rejected). Imported events get their cases at once."""
    if layer not in IMPORT_LAYERS:
        msg = f"unknown layer {layer!r}; layers: {', '.join(IMPORT_LAYERS)}"
        raise NotFoundError(msg)
    importer, allowed = IMPORT_LAYERS[layer]
    mapping = {}
    for item in map:
        for part in [p for p in item.split(",") if p.strip()]:
            if "=" not in part:
                msg = f"map takes FIELD=COLUMN, got {part!r}"
                raise InvalidParameterError(msg)
            key, col = part.split("=", 1)
            mapping[key.strip()] = col.strip()
    given = {"level": level, "source": source, "crs": crs, "encoding": encoding, "layer": layer_name,
             "sheet": sheet, "point": point, "tz": tz}
    wrong = [k for k, v in given.items() if v is not None and k not in allowed]
    if wrong:
        msg = f"{layer} imports take no {', '.join(wrong)} (options: {', '.join(sorted(allowed))})"
        raise InvalidParameterError(msg)
    if layer == "areas" and not level:
        msg = "areas imports need level: district, street or community"
        raise InvalidParameterError(msg)
    kwargs = {k: v for k, v in given.items() if v is not None}
    # saved under the uploaded file's own name (without any folder part), so that messages name it
    name = Path((file.filename or "").replace("\\", "/")).name.strip()
    if name in ("", ".", "..") or name.startswith("."):
        name = "upload" + ("".join(Path(name).suffixes[-2:]) or ".csv")
    elif not Path(name).suffix:
        name += ".csv"
    with tempfile.TemporaryDirectory(prefix="civicgrid-upload-") as tmp:
        path = Path(tmp) / name
        with open(path, "wb") as out:
            while chunk := file.file.read(1 << 20):
                out.write(chunk)
        # a file that cannot be imported raises ImportFileError or ReadError: 422 (api/errors.py)
        report = importer(path, db=store.path, mapping=mapping, progress=False, **kwargs)
    payload = report.to_dict()
    payload["file"] = file.filename
    return json_body(payload, status_code=201)

