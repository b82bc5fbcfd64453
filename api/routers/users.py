"""Admin endpoints: users and tokens, settings (holidays, rebound rule), and file imports (admin role)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from civicgrid.api.auth import require_role
from civicgrid.api.deps import RequestBody, get_store
from civicgrid.api.models import ImportResult, NewUser, UserList
from civicgrid.api.responses import frame_records, json_body
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.geo.users import ROLES, add_user, list_users, new_token, set_active
from civicgrid.sites import cases as cs
from civicgrid.sites.importers import IMPORTERS, OPTIONS, get_importer
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


@router.get("/api/users", summary="List users", response_model=UserList)
def users(store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """Users and roles (never their tokens)."""
    return json_body({"users": frame_records(list_users(store))})


@router.post("/api/users", summary="Create a user", status_code=201, response_model=NewUser)
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


def _form_help(name: str) -> str:
    """The API docs of the form field of the importer option ``name``: which layers take it, what it is."""
    opt = OPTIONS[name]
    layers = [i.layer for i in IMPORTERS.values() if name in i.options]
    text = opt.help + (f" ({', '.join(opt.choices)})" if opt.choices else "")
    return text if len(layers) == len(IMPORTERS) else f"{', '.join(layers)}: {text}"


def _imports_doc() -> str:
    """The description of ``POST /api/imports/{layer}``: the layers of the importer registry."""
    rows = [f"- `{i.layer}`: {i.summary} Fields (`map`): {', '.join(i.fields)}. Options: "
            f"{', '.join('layer_name' if o == 'layer' else o for o in i.options)}." for i in IMPORTERS.values()]
    return ("Load an uploaded file with the same importer as `civicgrid import LAYER` and return its report "
            "(rows read = loaded + duplicates + rejected). Imported events get their cases at once.\n\n"
            + "\n".join(rows))


@router.post("/api/imports/{layer}", summary="Import a file", description=_imports_doc(), status_code=201,
             response_model=ImportResult)
def import_file(layer: str, file: UploadFile = File(..., description="CSV, XLSX, GeoJSON, GeoPackage, zipped "
                                                                      "Shapefile, (Geo)Parquet"),
                map: list[str] = Form(default=[], description="FIELD=COLUMN, repeatable (e.g. name=名称)"),
                level: str | None = Form(None, description=_form_help("level")),
                source: str | None = Form(None, description=_form_help("source")),
                crs: str | None = Form(None, description=_form_help("crs")),
                encoding: str | None = Form(None, description=_form_help("encoding")),
                layer_name: str | None = Form(None, description=_form_help("layer")),
                sheet: str | None = Form(None, description=_form_help("sheet")),
                point: str | None = Form(None, description=_form_help("point")),
                tz: str | None = Form(None, description=_form_help("tz")),
                fail_when: str | None = Form(None, description=_form_help("fail_when")),
                other_category: str | None = Form(None, description=_form_help("other_category")),
                store: Store = Depends(get_store), _user: dict = Depends(_admin)) -> Response:
    """Load an uploaded file with the importer of ``layer`` (:data:`civicgrid.sites.importers.IMPORTERS`)."""
    importer = get_importer(layer)  # an unknown layer: 404 naming the layers
    mapping = {}
    for item in map:
        for part in [p for p in item.split(",") if p.strip()]:
            if "=" not in part:
                msg = f"map takes FIELD=COLUMN, got {part!r}"
                raise InvalidParameterError(msg)
            key, col = part.split("=", 1)
            mapping[key.strip()] = col.strip()
    # the options the layer does not take, or a required one missing: 422 before the upload is written
    options = importer.check_options({"level": level, "source": source, "crs": crs, "encoding": encoding,
                                      "layer": layer_name, "sheet": sheet, "point": point, "tz": tz,
                                      "fail_when": fail_when, "other_category": other_category})
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
        report = importer.run(path, db=store.path, mapping=mapping, progress=False, **options)
    payload = report.to_dict()
    payload["file"] = file.filename
    return json_body(payload, status_code=201)

