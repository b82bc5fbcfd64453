"""The sample frame (样本框): the field sites assessors may draw, by category."""

from __future__ import annotations

import os
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from civicgrid.geo import importing as imp
from civicgrid.geo.columns import match_names, strings
from civicgrid.geo.dedup import dedup_keys, find_duplicates
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.import_report import ImportReport, Rejects, finish_report
from civicgrid.geo.locations import read_locations
from civicgrid.geo.store import fetch_value, writing
from civicgrid.grids.locate import locate_points, location_arrays

SITE_FIELDS = ["id", "lat", "lng", "name", "address", "category", "unit", "contact", "phone", "active"]

#: Words read as "inactive" in an active column (anything else non-empty is active).
INACTIVE_WORDS = {"0", "false", "no", "n", "否", "无效", "停用", "inactive", "撤销"}


def import_sites(path: str | os.PathLike, *, db: str | os.PathLike, mapping: dict[str, str] | None = None,
                 point: str | None = None, crs: str | None = None, encoding: str | None = None,
                 layer: str | None = None, sheet: str | int | None = None, other_category: str | None = None,
                 progress: bool = True) -> ImportReport:
    """Import sample-frame sites (点位信息表) with any geometry.

    Sites take their geometry from a spatial file (points, lines or polygons)
    or from ``--lat``/``--lng`` or ``--point`` columns. A site with no
    coordinates but an address is kept without a location (a warning counts
    them; what needs a location skips it). The category is matched by code,
    Chinese or English name; a label that is none of the 38 categories is
    kept as the city's own category (a new ``site_categories`` row whose code
    and names are the label, listed in a warning), or mapped onto
    ``other_category``.

    Parameters
    ----------
    mapping
        ``{field: column}`` for ``id, name, address, category, unit, contact, phone, active, lat, lng``.
    other_category
        A category (code, Chinese or English name, e.g. ``餐饮`` or ``14``) for every label that is not one of
        the known categories; default: keep each such label as the city's own category.
    """
    started = datetime.now().astimezone()  # a moment; record_import stores it on the store's clock
    src, cols, report, rej = imp.start_import("sites", path, fields=SITE_FIELDS, required=["name", "category"],
                                              mapping=mapping, encoding=encoding, layer=layer, sheet=sheet)
    table = src.table
    n = table.num_rows
    name = strings(table, cols["name"])
    rej.add(pd.isna(name), "name", "missing name")
    with writing(db) as con:
        cats = con.execute("SELECT code, name_zh, name_en, geom_kind FROM site_categories").df()
        raw_cat = strings(table, cols["category"])
        category, unknown, why = match_names(raw_cat, cats, key="code", names=["name_zh", "name_en"],
                                             what="category")
        rej.add(pd.isna(raw_cat), "category", "missing category")
        category = _other_categories(con, cats, raw_cat, category, unknown & rej.ok, why, other_category, report)
        lng, lat, geoms = _locations(src, cols, rej, report, con=con, point=point, crs=crs)
        if geoms is None:
            geoms = np.full(n, None, dtype=object)
            ok = rej.ok & np.isfinite(lng) & np.isfinite(lat)
            geoms[ok] = shapely.points(lng[ok], lat[ok])
        cats = con.execute("SELECT code, name_zh, name_en, geom_kind FROM site_categories").df()
        _warn_kinds(geoms, category, cats, rej.ok & ~pd.isna(geoms), report)
        active = np.ones(n, dtype=bool)
        if "active" in cols:
            raw = pd.Series(strings(table, cols["active"]), dtype=object)
            active = ~raw.str.lower().isin(INACTIVE_WORDS).to_numpy()
        rows = PointRows(con, "sites", "site_id", table, cols, rej, lng, lat, report, prefix="site")
        idx = rows.idx
        rows.store(con, report, rej, started, geometry="wkb", columns={
            "name": pa.array(name[idx], pa.string()),
            "address": pa.array(strings(table, cols.get("address"))[idx], pa.string()),
            "category_code": pa.array(category[idx], pa.string()),
            "responsible_unit": pa.array(strings(table, cols.get("unit"))[idx], pa.string()),
            "contact": pa.array(strings(table, cols.get("contact"))[idx], pa.string()),
            "phone": pa.array(strings(table, cols.get("phone"))[idx], pa.string()),
            "active": pa.array(active[idx]),
            "wkb": pa.array(shapely.to_wkb(geoms[idx]) if len(idx) else [], pa.binary()),
        })
        unplaced = int((~np.isfinite(lng[idx])).sum())
        if unplaced:
            report.warnings.append(
                f"{unplaced} sites have no coordinates but an address; they are kept without a location "
                "(risk uses their record and category, not what is near them)")
    return report


def _other_categories(con: duckdb.DuckDBPyConnection, cats: pd.DataFrame, raw: np.ndarray, category: np.ndarray,
                      unknown: np.ndarray, why: np.ndarray, other: str | None, report: ImportReport) -> np.ndarray:
    """The categories of labels that are none of the known ones: ``other`` (a known category), or each label
    kept as the city's own category (added to ``site_categories``)."""
    category = category.copy()
    if not unknown.any():
        return category
    labels = pd.unique(pd.Series(raw[unknown], dtype=object))
    if other is not None:
        code, bad, why = match_names(np.array([other], dtype=object), cats, key="code", names=["name_zh", "name_en"],
                                     what="category")
        if bad[0]:
            partial = cats[cats["name_zh"].str.contains(str(other), regex=False)
                           | cats["name_en"].str.lower().str.contains(str(other).lower(), regex=False)]
            if len(partial) != 1:
                msg = f"other_category: {why[0]}"
                raise InvalidParameterError(msg)
            code = partial["code"].to_numpy(object)
        category[unknown] = code[0]
        report.warnings.append(f"{int(unknown.sum())} sites with {len(labels)} labels that are not known categories "
                               f"({_sample(labels)}) are in category {code[0]}")
        return category
    category[unknown] = raw[unknown]
    con.executemany("INSERT INTO site_categories (code, name_zh, name_en, geom_kind) VALUES (?, ?, ?, 'point')",
                    [[str(v), str(v), str(v)] for v in labels])
    first = pd.Series(why[unknown], index=raw[unknown]).groupby(level=0, sort=False).first()
    hints = "; ".join(str(first[v]) for v in labels[:3])
    report.warnings.append(f"{len(labels)} category labels are not among the known categories and are kept as the "
                           f"city's own ({_sample(labels)}); map them with --other-category 餐饮 (or any category), "
                           f"or fix the file: {hints}")
    return category


def _sample(labels, k: int = 5) -> str:
    shown = ", ".join(str(v) for v in labels[:k])
    return shown + (f", … ({len(labels)} in all)" if len(labels) > k else "")


def _locations(src, cols: dict[str, str], rej: Rejects, report: ImportReport, *, con: duckdb.DuckDBPyConnection,
               point: str | None, crs: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`read_locations`, keeping sites with no coordinates at all but an address (NaN coordinates)."""
    table = src.table
    n = table.num_rows
    address = strings(table, cols.get("address"))
    spatial = point is not None or ("lat" in cols and "lng" in cols)
    if not spatial:
        if "geometry" not in table.column_names and (~pd.isna(address)).any():
            report.warnings.append("no coordinates: every site with an address is kept without a location")
            nan = np.full(n, np.nan)
            rej.add(pd.isna(address), "lat/lng", "no coordinates and no address")
            return nan, nan.copy(), None
        return read_locations(src, cols, rej, report, con=con, point=point, crs=crs)
    given = [point] if point is not None else [cols["lat"], cols["lng"]]
    empty = np.all([pd.isna(strings(table, c)) for c in given], axis=0)
    keep = empty & ~pd.isna(address) & rej.ok
    if not keep.any():
        return read_locations(src, cols, rej, report, con=con, point=point, crs=crs)
    loc = Rejects(rej.rows)
    loc.add(rej.bad | keep, "_", "_")
    lng, lat, geoms = read_locations(src, cols, loc, report, con=con, point=point, crs=crs)
    new = loc.bad & ~rej.bad & ~keep
    if new.any():
        found = {r["row"]: (r["field"], r["reason"]) for r in loc.to_list() if r["field"] != "_"}
        for field in {f for f, _ in found.values()}:
            reasons = np.array([found.get(int(r), (None, None))[1] if found.get(int(r), (None,))[0] == field
                                else None for r in rej.rows], dtype=object)
            rej.add(new & pd.notna(reasons), field, reasons)
    lng[keep] = np.nan
    lat[keep] = np.nan
    return lng, lat, geoms


class PointRows:
    """The new rows of a sites or inspections file: valid, not loaded before, numbered and located.

    Rows repeating an earlier row of the file or a stored one (by external
    id, else content) are duplicates; the others get the next ids of
    ``table_name`` and their grid and areas. Sets ``report.import_id`` and
    ``report.outside_grids``.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, table_name: str, id_column: str, table: pa.Table,
                 cols: dict[str, str], rej: Rejects, lng: np.ndarray, lat: np.ndarray,
                 report: ImportReport, *, prefix: str) -> None:
        self.table_name = table_name
        keys = dedup_keys(table, cols, prefix=prefix)
        self.dup = find_duplicates(con, table_name, keys, rej.ok)
        self.idx = idx = np.flatnonzero(rej.ok & ~self.dup)
        located = locate_points(con, lng[idx], lat[idx])
        first = imp.next_id(con, table_name, id_column)
        report.import_id = imp.next_id(con, "imports", "import_id")
        report.outside_grids = int(located["grid_code"].isna().sum())
        report.no_grids = not fetch_value(con, "SELECT count(*) FROM grids WHERE geom IS NOT NULL")
        unplaced = ~(np.isfinite(lng[idx]) & np.isfinite(lat[idx]))
        self.columns = {
            id_column: pa.array(np.arange(first, first + len(idx)), pa.int64()),
            "external_id": pa.array(strings(table, cols.get("id"))[idx], pa.string()),
            "lng": pa.array(lng[idx], from_pandas=True),  # no location (a site known by its address): NULL
            "lat": pa.array(lat[idx], from_pandas=True),
            **location_arrays(located),
            "dedup_key": pa.array(keys[idx], pa.string()),
            "import_id": pa.array(np.full(len(idx), report.import_id), pa.int32()),
        }
        if unplaced.any():
            self.columns["h3"] = pa.array(self.columns["h3"].to_numpy(zero_copy_only=False), pa.uint64(),
                                          mask=unplaced)

    def store(self, con: duckdb.DuckDBPyConnection, report: ImportReport, rej: Rejects, started: datetime, *,
              columns: dict[str, pa.Array], geometry: str | None = None) -> None:
        """Insert the new rows with their layer's own ``columns``; fill and record the report."""
        imp.insert_arrow(con, self.table_name, pa.table({**self.columns, **columns}), geometry=geometry)
        finish_report(report, rej, loaded=len(self.idx), duplicates=int(self.dup.sum()))
        imp.record_import(con, report, started)


def _warn_kinds(geoms: np.ndarray, category: np.ndarray, cats: pd.DataFrame, ok: np.ndarray,
                report: ImportReport) -> None:
    """Warn (not reject) when a site's geometry kind differs from its category's usual kind."""
    if not ok.any():
        return
    kind_of = dict(zip(cats["code"], cats["geom_kind"], strict=True))
    type_id = shapely.get_type_id(geoms[ok])
    have = np.select([np.isin(type_id, [0, 4]), np.isin(type_id, [1, 2, 5])], ["point", "line"], "area")
    want = pd.Series(category[ok]).map(kind_of).to_numpy()
    differ = int((have != want).sum())
    if differ:
        report.warnings.append(
            f"{differ} sites have a geometry kind other than their category's (e.g. a point for an area "
            "category); they are kept as given")
