"""The service's JSON bodies: DataFrame rows as records, compact UTF-8 JSON, GeoJSON FeatureCollections.

Every router writes its answers with these, so that one rule holds everywhere: Chinese kept as characters, no
spaces, NaN as ``null``, times as ISO text, numpy scalars as plain numbers.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from civicgrid.geo.coords import to_crs_frame
from fastapi.responses import Response

#: Decimal places of coordinates in GeoJSON output (1e-6° ≈ 0.1 m).
COORD_DECIMALS = 6


def plain(value: Any) -> Any:
    """``value`` with numpy and pandas scalars, dates and NaN made JSON-ready, recursively (ISO times to the
    second, NaN and NaT as None)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime | pd.Timestamp):
        return None if pd.isna(value) else value.isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def frame_records(df: pd.DataFrame) -> list[dict]:
    """The rows of ``df`` as JSON-ready dicts (ISO times, NaN as None), for :func:`json_body` and
    :func:`json_response`."""
    return [plain(r) for r in df.astype(object).where(df.notna(), None).to_dict("records")]


def json_body(payload: Any, status_code: int = 200) -> Response:
    """Compact UTF-8 JSON of ``payload`` made JSON-ready by :func:`plain` (dates as ISO text, NaN as null)."""
    body = json.dumps(plain(payload), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Response(body, media_type="application/json", status_code=status_code)


def json_response(payload: Any) -> Response:
    """Compact UTF-8 JSON of ``payload`` as it is (numpy scalars and arrays, timestamps and NA converted on the
    way; a NaN float is an error: give it as None)."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default)
    return Response(body, media_type="application/json")


def _default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, pd.Timestamp):
        return o.isoformat()
    if o is pd.NA or o is pd.NaT:
        return None
    msg = f"cannot serialise {type(o).__name__}"
    raise TypeError(msg)


def geojson_text(gdf: gpd.GeoDataFrame, *, crs: str = "wgs84", drop: tuple[str, ...] = ("h3",),
                 extra: dict | None = None) -> str:
    """A GeoDataFrame as GeoJSON FeatureCollection text, vectorized (no per-feature geometry loop in Python).

    Parameters
    ----------
    gdf
        WGS84 features.
    crs
        ``wgs84`` or ``gcj02`` (converted with :func:`geo.coords.to_crs_frame`, for AMap tiles).
    drop
        Columns left out of the properties (``h3`` uint64 ids do not survive JavaScript numbers;
        ``h3_hex`` carries them).
    extra
        Top-level members added to the FeatureCollection.
    """
    if crs != "wgs84" and len(gdf):
        gdf = to_crs_frame(gdf, crs)
    geoms = gdf.geometry.to_numpy()
    geoms = shapely.transform(geoms, lambda xy: np.round(xy, COORD_DECIMALS))
    geo_txt = shapely.to_geojson(geoms)
    props = pd.DataFrame(gdf.drop(columns=[gdf.geometry.name, *[c for c in drop if c in gdf.columns]]))
    for c in props.columns:
        if pd.api.types.is_datetime64_any_dtype(props[c]):
            props[c] = props[c].dt.strftime("%Y-%m-%dT%H:%M:%S")
        elif pd.api.types.is_float_dtype(props[c]):
            props[c] = props[c].round(6)
    prop_txt = (props.to_json(orient="records", lines=True, force_ascii=False, double_precision=10).splitlines()
                if len(props) else [])
    if len(props.columns) == 0:
        prop_txt = ["{}"] * len(gdf)
    feats = ",".join(f'{{"type":"Feature","geometry":{g if g is not None else "null"},"properties":{p}}}'
                     for g, p in zip(geo_txt, prop_txt, strict=True))
    head = {"type": "FeatureCollection", **(extra or {})}
    if crs != "wgs84":
        head["crs_note"] = f"coordinates in {crs.upper()} (for tiles in that system)"
    head_txt = json.dumps(head, ensure_ascii=False, separators=(",", ":"), default=_default)[:-1]
    return f'{head_txt},"features":[{feats}]}}'


def geojson_response(gdf: gpd.GeoDataFrame, *, crs: str = "wgs84", extra: dict | None = None) -> Response:
    """:func:`geojson_text` as an ``application/geo+json`` response."""
    return Response(geojson_text(gdf, crs=crs, extra=extra), media_type="application/geo+json")
