"""Admin endpoints: users and tokens, settings (holidays, rebound rule), and file imports (admin role)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from civicgrid.api.auth import AuthFirstRoute, require_role
from civicgrid.api.deps import MAX_NAME, RequestBody, get_settings, get_store
from civicgrid.api.models import ImportResult, NewUser, UserList
from civicgrid.api.responses import frame_records, json_body
from civicgrid.geo.errors import InvalidParameterError, TooLargeError
from civicgrid.geo.store import Store
from civicgrid.geo.users import ROLES, add_user, list_users, new_token, set_active
from civicgrid.sites import cases as cs
from civicgrid.sites.importers import IMPORTERS, OPTIONS, get_importer
from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import Field

router = APIRouter(tags=["admin"], route_class=AuthFirstRoute)

_admin = require_role("admin")


class UserIn(RequestBody):
    """A new user."""

    name: str = Field(..., min_length=1, max_length=MAX_NAME, examples=["王伟"])
    role: str = Field("viewer", max_length=20, description=f"one of {', '.join(ROLES)}")


class HolidayIn(RequestBody):
    """A calendar exception."""

    date: str = Field(..., max_length=64, examples=["2027-01-01"])
    kind: str = Field(..., max_length=20, description="holiday (a day off) or workday (a make-up working day, "
                                                      "调休上班)")
    name: str | None = Field(None, max_length=MAX_NAME, examples=["元旦"])
    source: str | None = Field(None, max_length=MAX_NAME)


class HolidaysIn(RequestBody):
    """Calendar exceptions to store."""

    rows: list[HolidayIn] = Field(..., min_length=1, max_length=3660)
    replace_years: bool = Field(True, description="drop the stored rows of the years listed first")


class SettingIn(RequestBody):
    """A setting value (its range depends on the setting: ``rebound_days`` 1..3650, ``rebound_radius_m``
    1..5000)."""

    value: float = Field(..., allow_inf_nan=False, examples=[30])


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
def rotate_token(name: str = PathParam(..., max_length=MAX_NAME), store: Store = Depends(get_store),
                 _user: dict = Depends(_admin)) -> Response:
    """Replace the user's token (the old one stops working) and return the new one once."""
    return json_body({"name": name, "token": new_token(store.path, name)})


@router.delete("/api/users/{name}", summary="Disable a user")
def disable_user(name: str = PathParam(..., max_length=MAX_NAME), store: Store = Depends(get_store),
                 _user: dict = Depends(_admin)) -> Response:
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
def put_setting(body: SettingIn, key: str = PathParam(..., max_length=MAX_NAME), store: Store = Depends(get_store),
                _user: dict = Depends(_admin)) -> Response:
    """Set ``rebound_radius_m`` (metres, 1..5000) or ``rebound_days`` (1..3650); a value outside its range is
    a 422 naming it."""
    return json_body(cs.set_setting(store.path, key, body.value))


#: Longest file name kept from an upload, in UTF-8 bytes (what file systems take).
MAX_FILE_NAME_BYTES = 255


def upload_name(filename: str | None) -> str:
    """The name an upload is saved under: the client's file name without any folder part, control characters
    (NUL…) or leading dots, cut to 255 UTF-8 bytes keeping its suffixes (``.csv``, ``.shp.zip``); ``upload.csv``
    when nothing is left, ``.csv`` added when it has no suffix."""
    raw = (filename or "").replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in raw if ch.isprintable()).strip().lstrip(".")
    suffix = "".join(Path(name).suffixes[-2:]) if name else ""
    if len(suffix.encode()) > 32:  # not a suffix but a long name with dots
        suffix = Path(name).suffix if len(Path(name).suffix.encode()) <= 32 else ""
    stem = name[:len(name) - len(suffix)] if suffix else name
    if not stem.strip():
        stem = "upload"
    suffix = suffix or ".csv"
    stem = stem.encode()[:MAX_FILE_NAME_BYTES - len(suffix.encode())].decode(errors="ignore")
    return stem + suffix


def upload_too_large(limit: int) -> TooLargeError:
    """The error of an upload over ``limit`` bytes (HTTP 413), naming the setting."""
    msg = (f"the upload is larger than {limit >> 20} MB, the service's limit (setting CIVICGRID_MAX_UPLOAD_MB); "
           "split the file or import it on the server with `civicgrid import`")
    return TooLargeError(msg)


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
                date_order: str | None = Form(None, description=_form_help("date_order")),
                types: str | None = Form(None, description=_form_help("types")),
                update: bool | None = Form(None, description=_form_help("update")),
                repair: bool | None = Form(None, description=_form_help("repair")),
                fail_when: str | None = Form(None, description=_form_help("fail_when")),
                other_category: str | None = Form(None, description=_form_help("other_category")),
                store: Store = Depends(get_store), settings: dict = Depends(get_settings),
                _user: dict = Depends(_admin)) -> Response:
    """Load an uploaded file with the importer of ``layer`` (:data:`civicgrid.sites.importers.IMPORTERS`)."""
    importer = get_importer(layer)  # an unknown layer: 404 naming the layers
    mapping = {}
    for item in map:
        key = None
        for part in [p for p in item.split(",") if p.strip()]:
            if "=" not in part and key == "type":  # type=一级分类,二级分类: several type columns
                mapping[key] += "," + part.strip()
                continue
            if "=" not in part:
                msg = f"map takes FIELD=COLUMN, got {part!r}"
                raise InvalidParameterError(msg)
            key, col = part.split("=", 1)
            key = key.strip()
            mapping[key] = col.strip()
    # the options the layer does not take, or a required one missing: 422 before the upload is written
    options = importer.check_options({"level": level, "source": source, "crs": crs, "encoding": encoding,
                                      "layer": layer_name, "sheet": sheet, "point": point, "tz": tz,
                                      "date_order": date_order, "types": types, "update": update or None,
                                      "repair": repair or None, "fail_when": fail_when,
                                      "other_category": other_category})
    # saved under the uploaded file's own name (cleaned: no folder part, no control character, at most 255
    # bytes), so that messages name it
    name = upload_name(file.filename)
    limit = int(settings.get("max_upload_mb", 200)) << 20
    with tempfile.TemporaryDirectory(prefix="civicgrid-upload-") as tmp:
        path = Path(tmp) / name
        size = 0
        with open(path, "wb") as out:
            while chunk := file.file.read(1 << 20):
                size += len(chunk)
                if size > limit:  # the service's body limit (api.app.BodyLimit) refuses it sooner, as it streams
                    raise upload_too_large(limit)
                out.write(chunk)
        # a file that cannot be imported raises ImportFileError or ReadError: 422 (api/errors.py)
        report = importer.run(path, db=store.path, mapping=mapping, progress=False, **options)
    payload = report.to_dict()
    payload["file"] = file.filename
    return json_body(payload, status_code=201)

