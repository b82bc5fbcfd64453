"""Parquet and GeoParquet files: attributes as text, the geometry as WKB with the CRS of the ``geo`` metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyproj
from civicgrid.geo._tables import ReadResult, text_table
from civicgrid.geo.errors import ReadError


def read_parquet(p: Path) -> ReadResult:
    try:
        raw = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as exc:
        msg = f"{p.name} is not a readable Parquet file ({exc})"
        raise ReadError(msg) from exc
    meta = raw.schema.metadata or {}
    crs = None
    geom_col = None
    warnings: list[str] = []
    if b"geo" in meta:
        geo = json.loads(meta[b"geo"])
        geom_col = geo.get("primary_column") or next(iter(geo.get("columns", {})), None)
        info = geo.get("columns", {}).get(geom_col, {})
        enc = str(info.get("encoding", "WKB")).upper()
        if enc != "WKB" and enc != "POINT":
            msg = f"{p.name}: GeoParquet geometry encoding {enc!r} is not supported (write it as WKB)"
            raise ReadError(msg)
        crs_info = info.get("crs", "OGC:CRS84")
        crs = pyproj.CRS.from_epsg(4326) if crs_info is None else pyproj.CRS.from_user_input(
            json.dumps(crs_info) if isinstance(crs_info, dict) else crs_info)
        if crs.to_epsg() is None and crs.equals(pyproj.CRS("OGC:CRS84"), ignore_axis_order=True):
            crs = pyproj.CRS.from_epsg(4326)
    elif "geometry" in raw.column_names and pa.types.is_binary(raw.schema.field("geometry").type):
        geom_col = "geometry"
    fmt = "geoparquet" if geom_col else "parquet"
    table = text_table(raw, geom_col, warnings)
    if geom_col:
        g = raw.column(geom_col)
        if pa.types.is_struct(g.type):  # GeoArrow point encoding
            import shapely

            xs = g.combine_chunks().field("x").to_numpy(zero_copy_only=False)
            ys = g.combine_chunks().field("y").to_numpy(zero_copy_only=False)
            g = pa.array(shapely.to_wkb(shapely.points(xs, ys)), pa.binary())
        table = table.append_column("geometry", g.cast(pa.binary()))
    table = table.append_column("__row__", pa.array(np.arange(1, raw.num_rows + 1, dtype="int64")))
    return ReadResult(table=table, format=fmt, crs=crs, encoding=None, warnings=warnings)
