"""Locate points in the micro-grid and area hierarchy (exact point-in-polygon)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from geo import h3cells

#: Columns :func:`locate_points` returns, in order.
LOCATION_COLUMNS = ["h3", "grid_code", "community_code", "street_code", "district_code"]


def locate_points(con: duckdb.DuckDBPyConnection, lng: np.ndarray, lat: np.ndarray) -> pd.DataFrame:
    """Return the H3 cell, grid, community, street and district of each point.

    A point inside a micro-grid takes the grid and the grid's parent areas; a
    point outside every grid takes the smallest area polygon that contains it
    (community, then street, then district); a point outside everything gets
    nulls. The test is exact (DuckDB spatial join on the stored polygons); a
    point on a shared boundary goes to the smaller code.

    Parameters
    ----------
    con
        Connection on a civicgrid database (reads ``grids`` and ``areas``).
    lng, lat
        WGS84 coordinates; NaN for unknown.

    Returns
    -------
    pandas.DataFrame
        One row per input point, columns :data:`LOCATION_COLUMNS`.
    """
    lng = np.asarray(lng, dtype="float64")
    lat = np.asarray(lat, dtype="float64")
    n = len(lng)
    out = pd.DataFrame({"h3": h3cells.cells(lng, lat)})
    for col in LOCATION_COLUMNS[1:]:
        out[col] = pd.Series([None] * n, dtype="object")
    if n == 0:
        return out
    ok = np.isfinite(lng) & np.isfinite(lat)
    idx = np.flatnonzero(ok)
    con.register("_locate_pts", pa.table({"i": idx, "lng": lng[idx], "lat": lat[idx]}))
    try:
        in_grid = con.execute(
            """
            SELECT p.i, min(g.code) AS grid_code, min(g.community_code) AS community_code,
                   min(g.street_code) AS street_code, min(g.district_code) AS district_code
            FROM _locate_pts p JOIN grids g ON ST_Intersects(g.geom, ST_Point(p.lng, p.lat))
            GROUP BY p.i
            """
        ).to_arrow_table()
        rows = np.asarray(in_grid.column("i"))
        for col in LOCATION_COLUMNS[1:]:
            out.loc[rows, col] = in_grid.column(col).to_numpy(zero_copy_only=False)
        rest = np.setdiff1d(idx, rows, assume_unique=True)
        if len(rest) and con.execute("SELECT count(*) FROM areas").fetchone()[0]:
            _locate_in_areas(con, out, rest, lng, lat)
    finally:
        con.unregister("_locate_pts")
    return out


def _locate_in_areas(con, out: pd.DataFrame, rest: np.ndarray, lng: np.ndarray, lat: np.ndarray) -> None:
    """Fill area codes for points outside every grid from the area polygons."""
    con.register("_locate_rest", pa.table({"i": rest, "lng": lng[rest], "lat": lat[rest]}))
    try:
        hits = con.execute(
            """
            SELECT p.i, a.level, min(a.code) AS code
            FROM _locate_rest p JOIN areas a ON ST_Intersects(a.geom, ST_Point(p.lng, p.lat))
            GROUP BY p.i, a.level
            """
        ).df()
        parents = con.execute("SELECT code, level, parent_code FROM areas").df().set_index("code")
    finally:
        con.unregister("_locate_rest")
    if hits.empty:
        return
    wide = hits.pivot(index="i", columns="level", values="code")
    for level in ("district", "street", "community"):
        if level in wide:
            out.loc[wide.index, f"{level}_code"] = wide[level].to_numpy()
    # Fill missing upper levels from the hierarchy (a community knows its street and district).
    parent_of = parents["parent_code"].to_dict()
    for child, upper in (("community_code", "street_code"), ("street_code", "district_code")):
        missing = out[upper].isna() & out[child].notna()
        out.loc[missing, upper] = out.loc[missing, child].map(parent_of)


def location_arrays(located: pd.DataFrame) -> dict[str, pa.Array]:
    """Return the columns of :func:`locate_points` as Arrow arrays for insertion."""
    out = {"h3": pa.array(located["h3"].to_numpy(dtype="uint64"), pa.uint64())}
    for col in LOCATION_COLUMNS[1:]:
        out[col] = pa.array(located[col].to_numpy(dtype=object), pa.string())
    return out
