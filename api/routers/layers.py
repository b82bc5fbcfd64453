"""Reference layers as GeoJSON (areas, micro-grids, sample-frame sites) and JSON lists (categories, problem types)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from civicgrid.api.auth import AuthFirstRoute, layer_access, shows_layer
from civicgrid.api.cache import cached_endpoint
from civicgrid.api.deps import crs_param, get_settings, get_store, lang_param
from civicgrid.api.responses import frame_records, geojson_response, json_response
from civicgrid.geo.aggregate import EventFilter, area_level
from civicgrid.geo.coords import to_wgs84
from civicgrid.geo.errors import InvalidParameterError, NotFoundError
from civicgrid.geo.levels import AREA_LEVELS, LEVEL_COLUMNS, check_level
from civicgrid.geo.store import Store
from civicgrid.geo.texts import local_name, name_column
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

router = APIRouter(prefix="/api/layers", tags=["layers"], route_class=AuthFirstRoute)

def bbox_param(bbox: str | None = Query(None, description="minLng,minLat,maxLng,maxLat in the output crs"),
               crs: str = Depends(crs_param)) -> tuple[float, float, float, float] | None:
    """Parse ``bbox`` and return it in WGS84."""
    if bbox is None or not bbox.strip():
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in bbox.split(","))
    except ValueError as exc:
        msg = f"bbox must be minLng,minLat,maxLng,maxLat (four numbers), got {bbox!r}"
        raise InvalidParameterError(msg) from exc
    if not (x0 < x1 and y0 < y1):
        msg = f"bbox must have minLng < maxLng and minLat < maxLat, got {bbox!r}"
        raise InvalidParameterError(msg)
    xs, ys = to_wgs84(np.array([x0, x1]), np.array([y0, y1]), crs)
    return float(xs[0]), float(ys[0]), float(xs[1]), float(ys[1])


def _bbox_sql(bbox, col: str = "geom") -> tuple[str, list]:
    if bbox is None:
        return "TRUE", []
    return f"ST_Intersects({col}, ST_MakeEnvelope(?, ?, ?, ?))", list(bbox)


def _frame(df: pd.DataFrame, col: str = "wkb") -> gpd.GeoDataFrame:
    geoms = shapely.from_wkb(df[col].map(lambda b: bytes(b) if b is not None else None).to_numpy()) \
        if len(df) else np.array([], dtype=object)
    return gpd.GeoDataFrame(df.drop(columns=[col]), geometry=geoms, crs="EPSG:4326")


def _codes(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _area_column(store: Store, area: str) -> str:
    return LEVEL_COLUMNS[area_level(store, area)]


@router.get("/areas", summary="Districts, streets and communities (GeoJSON)")
@cached_endpoint
def areas(store: Store = Depends(get_store), _user: dict | None = Depends(layer_access("areas")),
          level: str | None = Query(None, description="district, street or community"),
          parent: str | None = Query(None, description="only the children of this area code"),
          code: str | None = Query(None, description="comma-separated area codes"),
          bbox=Depends(bbox_param), lang: str = Depends(lang_param), crs: str = Depends(crs_param)) -> Response:
    """Area polygons with ``code``, ``name`` (in ``lang``), ``name_zh``, ``name_en``, ``level``, ``parent_code``,
    ``area_km2``."""
    where, params = [], []
    if level is not None:
        check_level(level, levels=AREA_LEVELS)
        where.append("level = ?")
        params.append(level)
    if parent:
        area_level(store, parent)
        where.append("parent_code = ?")
        params.append(parent)
    codes = _codes(code)
    for c in codes:
        area_level(store, c)
    if codes:
        where.append(f"code IN ({', '.join('?' * len(codes))})")
        params.extend(codes)
    bsql, bparams = _bbox_sql(bbox)
    where.append(bsql)
    params.extend(bparams)
    df = store.sql(f"SELECT code, {local_name(lang)} AS name, name AS name_zh, name_en, level, parent_code, area_km2, "
                   f"ST_AsWKB(geom) AS wkb FROM areas WHERE {' AND '.join(where)} ORDER BY code", params)
    return geojson_response(_frame(df), crs=crs)


@router.get("/grids", summary="Micro-grids with their leaders (GeoJSON)")
@cached_endpoint
def grids(store: Store = Depends(get_store), user: dict | None = Depends(layer_access("grids")),
          settings: dict = Depends(get_settings),
          area: str | None = Query(None, description="district, street or community code"),
          code: str | None = Query(None, description="comma-separated grid codes"),
          bbox=Depends(bbox_param), crs: str = Depends(crs_param)) -> Response:
    """Micro-grid polygons with ``code``, ``name``, ``community_code``, ``street_code``, ``district_code``,
    ``leader_name``, ``leader_phone``, ``households``, ``area_km2``. The leaders' names and phones (网格员公示)
    are public unless the setting ``public_layers`` leaves out ``grid-leaders``; then they are null without a
    ``viewer`` token."""
    where, params = [], []
    if area:
        where.append(f"{_area_column(store, area)} = ?")
        params.append(area)
    codes = _codes(code)
    if codes:
        known = set(store.sql("SELECT code FROM grids")["code"])
        for c in codes:
            if c not in known:
                area_level(store, c)
        where.append(f"code IN ({', '.join('?' * len(codes))})")
        params.extend(codes)
    bsql, bparams = _bbox_sql(bbox)
    where.append(bsql)
    params.extend(bparams)
    df = store.sql("SELECT code, name, community_code, street_code, district_code, leader_name, leader_phone, "
                   f"households, area_km2, ST_AsWKB(geom) AS wkb FROM grids WHERE {' AND '.join(where)} "
                   "ORDER BY code", params)
    if not shows_layer("grid-leaders", user, settings):
        df["leader_name"] = df["leader_phone"] = None
    return geojson_response(_frame(df), crs=crs)


def _category_codes(store: Store, value: str | None) -> list[str]:
    cats = _codes(value)
    if not cats:
        return []
    return list(EventFilter(categories=cats).validate(store).categories)


@router.get("/sites", summary="Sample-frame sites (GeoJSON)")
@cached_endpoint
def sites(store: Store = Depends(get_store), user: dict | None = Depends(layer_access("sites")),
          category: str | None = Query(None, description="comma-separated category codes or names"),
          area: str | None = Query(None, description="district, street, community or grid code"),
          active: bool | None = Query(True, description="only active sites (default); false: only inactive"),
          geometry: str = Query("point", description="point (representative point) or full (point, line or "
                                                     "polygon as stored)"),
          bbox=Depends(bbox_param), lang: str = Depends(lang_param), crs: str = Depends(crs_param)) -> Response:
    """Sites with ``site_id``, ``name``, ``category_code``, ``category``, ``group_code``, ``group``, ``address``,
    ``responsible_unit``, ``contact``, ``phone``, ``grid_code``, ``active``. A site's ``contact`` and ``phone``
    (a person's name and number) are given to a ``viewer`` token only; they are null without one."""
    if geometry not in ("point", "full"):
        msg = f"geometry must be point or full, got {geometry!r}"
        raise InvalidParameterError(msg)
    where, params = [], []
    cats = _category_codes(store, category)
    if cats:
        where.append(f"s.category_code IN ({', '.join('?' * len(cats))})")
        params.extend(cats)
    if area:
        where.append(f"s.{_area_column(store, area)} = ?")
        params.append(area)
    if active is not None:
        where.append("s.active = ?")
        params.append(active)
    bsql, bparams = _bbox_sql(bbox, "s.geom")
    where.append(bsql)
    params.extend(bparams)
    geom_sql = "ST_AsWKB(ST_Point(s.lng, s.lat))" if geometry == "point" else "ST_AsWKB(s.geom)"
    df = store.sql(
        f"SELECT s.site_id, s.name, s.category_code, c.{name_column(lang)} AS category, c.group_code, "
        f"c.{name_column(lang, 'group')} AS \"group\", s.address, s.responsible_unit, s.contact, s.phone, s.grid_code, "
        f"s.active, "
        f"{geom_sql} AS wkb FROM sites s LEFT JOIN site_categories c ON c.code = s.category_code "
        f"WHERE {' AND '.join(where)} ORDER BY s.site_id", params)
    if user is None:  # personal data: a token of any role shows it
        df["contact"] = df["phone"] = None
    return geojson_response(_frame(df), crs=crs)


@router.get("/categories", summary="The site categories (JSON list)")
@cached_endpoint
def categories(store: Store = Depends(get_store), _user: dict | None = Depends(layer_access("categories")),
               lang: str = Depends(lang_param)) -> Response:
    """Every site category with ``code``, ``name`` (in ``lang``), ``name_zh``, ``name_en``, ``group_code``,
    ``group``, ``geom_kind``, ``service_minutes`` and ``sites`` (active sample-frame sites)."""
    df = store.sql(
        f"SELECT c.code, c.{name_column(lang)} AS name, c.name_zh, c.name_en, c.group_code, "
        f"c.{name_column(lang, 'group')} AS \"group\", c.geom_kind, c.service_minutes, count(s.site_id) AS sites "
        "FROM site_categories c LEFT JOIN sites s ON s.category_code = c.code AND s.active "
        "GROUP BY ALL ORDER BY c.code")
    return json_response(frame_records(df))


@router.get("/problem-types", summary="The problem taxonomy, 大类/小类 (JSON list)")
@cached_endpoint
def problem_types(store: Store = Depends(get_store),
                  _user: dict | None = Depends(layer_access("problem-types")), lang: str = Depends(lang_param),
                  major: str | None = Query(None, description="only this 大类 code")) -> Response:
    """Every problem type (小类) with ``code``, ``name``, ``major_code``, ``major``, both languages' names,
    ``deadline_value`` and ``deadline_unit``."""
    params, where = [], "TRUE"
    if major:
        known = store.sql("SELECT DISTINCT major_code, major_zh FROM problem_types")
        if major not in set(known.major_code):
            opts = ", ".join(f"{r.major_code} {r.major_zh}" for r in known.sort_values("major_code").itertuples())
            msg = f"unknown 大类 {major!r}; known: {opts}"
            raise NotFoundError(msg)
        where, params = "major_code = ?", [major]
    df = store.sql(
        f"SELECT code, {name_column(lang)} AS name, major_code, {name_column(lang, 'major')} AS major, name_zh, "
        f"name_en, major_zh, major_en, deadline_value, deadline_unit FROM problem_types WHERE {where} ORDER BY code",
        params)
    return json_response(frame_records(df))
