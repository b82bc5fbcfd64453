"""The area hierarchy (district → street → community) and micro-grids: import and relocation."""

from __future__ import annotations

import os
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from civicgrid.geo import importing as imp
from civicgrid.geo.columns import AREA_ALIASES, match_names, numbers, strings
from civicgrid.geo.dedup import existing_keys
from civicgrid.geo.distance import area_km2
from civicgrid.geo.errors import ImportFileError
from civicgrid.geo.import_report import ImportReport, Rejects, finish_report
from civicgrid.geo.levels import AREA_LEVELS, PARENT_LEVEL, check_level
from civicgrid.geo.locations import crs_label, geometries, resolve_crs, to_wgs84_geometries
from civicgrid.geo.store import fetch_value, writing
from civicgrid.grids.locate import LOCATION_COLUMNS, locate_points, location_arrays

AREA_FIELDS = ["code", "name", "parent"]
GRID_FIELDS = ["code", "name", "parent", "leader", "leader_phone", "households"]


def _polygons(src, rej: Rejects, report: ImportReport, crs: str | None, *, repair: bool = False,
              labels: np.ndarray | None = None) -> np.ndarray:
    """Return valid WGS84 (multi)polygons per row; rejects rows without a polygon.

    An invalid polygon (self-intersecting, a ring that touches itself...) is rejected naming the area, the
    defect and where it is (:func:`_invalid_reasons`); with ``repair`` it is repaired instead
    (``shapely.make_valid``, its polygonal part) and a warning per area says what changed. Nothing is repaired
    silently: a repair moves the boundary, and with it the events, sites and inspections located in the area.
    """
    geoms = geometries(src)
    if geoms is None:
        msg = f"{src.format} file has no geometry: areas and grids need polygons (GeoJSON, Shapefile, GeoPackage…)"
        raise ImportFileError(msg)
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    rej.add(empty, "geometry", "missing or empty geometry")
    kind = shapely.get_type_id(geoms)
    not_poly = ~empty & ~np.isin(kind, [3, 6])
    if not_poly.any():
        names = np.full(len(geoms), None, dtype=object)
        names[not_poly] = [f"geometry is a {g.geom_type}, expected a polygon"
                           for g in geoms[not_poly]]
        rej.add(not_poly, "geometry", names)
    the_crs = resolve_crs(src, crs, report.warnings)
    report.crs = crs_label(the_crs)
    out = np.full(len(geoms), None, dtype=object)
    invalid = rej.ok & ~shapely.is_valid(geoms)
    if invalid.any():
        rows = src.table.column("__row__").to_numpy()
        names = labels if labels is not None else np.array([f"row {r}" for r in rows], dtype=object)
        reasons = _invalid_reasons(geoms, invalid, names)
        if not repair:
            why = np.full(len(geoms), None, dtype=object)
            why[invalid] = [f"{r}; fix it in the source file, or import with --repair (API: repair=true; the report "
                            "then says what changed)" for r in reasons[invalid]]
            rej.add(invalid, "geometry", why)
    ok = rej.ok
    if ok.any():
        fixed = geoms[ok]
        if repair and (ok & invalid).any():
            fixed = fixed.copy()
            which = invalid[ok]
            fixed[which] = _polygonal(shapely.make_valid(fixed[which]))
        out[ok] = to_wgs84_geometries(fixed, the_crs)
        if repair and invalid.any():
            after = out[invalid]
            for reason, geom, km2 in zip(reasons[invalid], after, _area_km2(after), strict=True):
                parts = shapely.get_num_geometries(geom)
                report.warnings.append(f"repaired {reason}: now {parts} polygon part{'s' if parts != 1 else ''} "
                                       f"of {km2:.4f} km² in all")
    return out


def _invalid_reasons(geoms: np.ndarray, invalid: np.ndarray, names: np.ndarray) -> np.ndarray:
    """``invalid polygon: self-intersection at 112.93172, 28.21006 in the file's coordinates, in <name> (<code>)``
    for each invalid geometry."""
    out = np.full(len(geoms), None, dtype=object)
    for i in np.flatnonzero(invalid):
        text = shapely.is_valid_reason(geoms[i])  # "Self-intersection[112.93172 28.21006]"
        defect, _, where = text.partition("[")
        coords = where.rstrip("]").split()
        at = f" at {', '.join(coords[:2])} in the file's coordinates" if len(coords) >= 2 else ""
        out[i] = f"invalid polygon: {defect.strip().lower()}{at}, in {names[i]}"
    return out


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """The polygonal part of repaired geometries (``make_valid`` may add the lines of collapsed parts)."""
    out = geoms.copy()
    for i, g in enumerate(geoms):
        if g.geom_type == "GeometryCollection":
            parts = [p for p in g.geoms if p.geom_type in ("Polygon", "MultiPolygon")]
            out[i] = shapely.union_all(parts) if parts else shapely.Polygon()
    return out


def _labels(code: np.ndarray | None, name: np.ndarray | None, *, rows=None) -> np.ndarray:
    """``<name> (<code>)`` per row, for messages (``row N`` when neither is given)."""
    n = len(code) if code is not None else len(name) if name is not None else len(rows)
    out = np.empty(n, dtype=object)
    for i in range(n):
        c = code[i] if code is not None and not pd.isna(code[i]) else None
        m = name[i] if name is not None and not pd.isna(name[i]) else None
        out[i] = f"{m} ({c})" if m and c else (m or c or f"row {rows[i].as_py() if rows is not None else i + 2}")
    return out


def _area_km2(geoms: np.ndarray) -> np.ndarray:
    """Area of WGS84 polygons in km², in a local UTM projection."""
    return area_km2(geoms)


def _parents_by_containment(con: duckdb.DuckDBPyConnection, geoms: np.ndarray, level: str) -> np.ndarray:
    """Code of the ``level`` area containing each polygon's interior point (None if none)."""
    pts = shapely.point_on_surface(geoms)
    frame = pa.table({"i": np.arange(len(pts)), "x": shapely.get_x(pts), "y": shapely.get_y(pts)})
    con.register("_pp", frame)
    try:
        hits = con.execute(
            "SELECT p.i, min(a.code) AS code FROM _pp p JOIN areas a "
            "ON a.level = ? AND ST_Intersects(a.geom, ST_Point(p.x, p.y)) GROUP BY p.i",
            [level],
        ).df()
    finally:
        con.unregister("_pp")
    out = np.full(len(geoms), None, dtype=object)
    out[hits["i"].to_numpy()] = hits["code"].to_numpy(dtype=object)
    return out


def _first_rows(keys: np.ndarray, firsts: np.ndarray) -> dict[str, int]:
    """Row index of the first row of each code among ``firsts``."""
    first: dict[str, int] = {}
    for i in np.flatnonzero(firsts):
        first.setdefault(keys[i], int(i))
    return first


def _merge_parts(keys: np.ndarray, geoms: np.ndarray, repeats: np.ndarray, firsts: np.ndarray) -> np.ndarray:
    """Merge rows that repeat a code earlier in the file with a different shape into that first row.

    Shapefiles often store one area as several rows (NYC ZIP 11370 is an island and a shore part); those rows
    are parts, not duplicates. ``repeats`` marks the rows that repeat an earlier code of the file (and no stored
    one), ``firsts`` the rows loaded as new areas; ``geoms`` of the first rows are replaced by the union in place.
    Returns the mask of merged rows (a row with exactly the shape of a part already seen stays a duplicate).
    """
    merged = np.zeros(len(keys), dtype=bool)
    if not repeats.any():
        return merged
    first = _first_rows(keys, firsts)
    parts: dict[int, list] = {}
    for i in np.flatnonzero(repeats):
        j = first.get(keys[i])
        if j is None or geoms[i] is None or geoms[j] is None:
            continue
        seen = parts.get(j, [geoms[j]])
        if any(shapely.equals(geoms[i], g) for g in seen):
            continue
        parts[j] = [*seen, geoms[i]]
        merged[i] = True
    for j, shapes in parts.items():
        geoms[j] = shapely.union_all(shapes)
    return merged


def _plain(v) -> str:
    """A cell value as written (no trailing ``.0`` on whole numbers, ``-`` for none)."""
    if pd.isna(v):
        return "-"
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _part_conflicts(keys: np.ndarray, merged: np.ndarray, new: np.ndarray, attrs: dict[str, np.ndarray]) -> list[str]:
    """``code (field kept / other not, …)`` for each merged code whose further parts disagree with its first row."""
    first = _first_rows(keys, new)
    out: dict[str, list[str]] = {}
    for i in np.flatnonzero(merged):
        j = first[keys[i]]
        for field, values in attrs.items():
            a, b = values[j], values[i]
            if (pd.isna(a) and pd.isna(b)) or (not pd.isna(a) and not pd.isna(b) and a == b):
                continue
            note = f"{field} {_plain(a)} kept, {_plain(b)} not"
            if note not in out.setdefault(keys[i], []):
                out[keys[i]].append(note)
    return [f"{k} ({'; '.join(v)})" for k, v in out.items()]


#: Overlaps of two areas of one level smaller than this (km², 100 m²) are drawing noise, not worth a warning.
MIN_OVERLAP_KM2 = 1e-4
#: Overlapping pairs named in the warning.
OVERLAPS_SHOWN = 5


def _warn_overlaps(con: duckdb.DuckDBPyConnection, stored_sql: str, codes: np.ndarray, geoms: np.ndarray,
                   report: ImportReport, *, what: str) -> None:
    """Warn when new areas overlap each other or the stored areas of their level (``stored_sql`` gives
    ``code, wkb``), naming the pairs and the overlap in km² (areas of one level should tile the city: an
    overlap makes an event, site or inspection count in both)."""
    if len(geoms) == 0:
        return
    stored = con.execute(stored_sql).fetch_df()
    keep = ~stored["code"].isin(set(codes)).to_numpy() if len(stored) else np.zeros(0, dtype=bool)
    old_codes = stored["code"].to_numpy()[keep] if len(stored) else np.array([], dtype=object)
    old = shapely.from_wkb([bytes(b) for b in stored["wkb"].to_numpy()[keep]]) if keep.any() else np.array([])
    all_codes = np.concatenate([np.asarray(codes, dtype=object), old_codes.astype(object)])
    all_geoms = np.concatenate([np.asarray(geoms, dtype=object), np.asarray(old, dtype=object)])
    tree = shapely.STRtree(all_geoms)
    left, right = tree.query(np.asarray(geoms, dtype=object), predicate="overlaps")
    pairs = left < right  # each new pair once; new against stored always (stored indices come after)
    left, right = left[pairs], right[pairs]
    if not len(left):
        return
    overlap = _area_km2(shapely.intersection(all_geoms[left], all_geoms[right]))
    big = overlap >= MIN_OVERLAP_KM2
    if not big.any():
        return
    order = np.argsort(-overlap[big])
    shown = [f"{all_codes[a]} and {all_codes[b]} ({km2:.4f} km²)" for a, b, km2 in
             zip(left[big][order][:OVERLAPS_SHOWN], right[big][order][:OVERLAPS_SHOWN], overlap[big][order],
                 strict=False)]
    more = f" and {int(big.sum()) - OVERLAPS_SHOWN} more" if big.sum() > OVERLAPS_SHOWN else ""
    report.warnings.append(f"{int(big.sum())} pairs of {what} overlap, {overlap[big].sum():.4f} km² in all: "
                           f"{', '.join(shown)}{more}; areas of one level should tile the city without overlaps")


def _dedupe_codes(con: duckdb.DuckDBPyConnection, table: str, keys: np.ndarray, geoms: np.ndarray, ok: np.ndarray,
                  report: ImportReport, *, what: str,
                  attrs: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split valid rows of an areas or grids file into new, duplicate and merged rows by their code.

    A code already stored, or repeated in the file with a shape seen before, is a duplicate; a code repeated
    in the file with another shape is a further part of the first row of that code, whose geometry becomes
    the union of its parts (in ``geoms``, in place; one warning says so). The stored codes are read in one
    query.

    Returns
    -------
    new, dup, merged
        Masks of the rows to insert, the duplicates and the parts merged into a new row.
    """
    idx = np.flatnonzero(ok)
    stored = np.zeros(len(keys), dtype=bool)
    stored[idx] = existing_keys(con, f"(SELECT code AS dedup_key FROM {table})", keys[idx])
    repeat = np.zeros(len(keys), dtype=bool)
    repeat[idx] = pd.Series(keys[idx], dtype=object).duplicated().to_numpy()
    new = ok & ~stored & ~repeat
    merged = _merge_parts(keys, geoms, ok & repeat & ~stored, new)
    if merged.any():
        report.warnings.append(f"{int(merged.sum())} rows are further parts of {what} of the same code (e.g. "
                               f"{keys[merged][0]}) and were merged into it as one multipolygon")
        conflicts = _part_conflicts(keys, merged, new, attrs or {})
        if conflicts:
            shown = ", ".join(conflicts[:3]) + (f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else "")
            report.warnings.append(f"{len(conflicts)} merged codes have parts whose other fields differ from their "
                                   f"first row, whose values were kept: {shown}")
    return new, ok & (stored | repeat) & ~merged, merged


def _check_parents(con: duckdb.DuckDBPyConnection, given: np.ndarray, level: str, rej: Rejects) -> None:
    known = con.execute("SELECT code, name FROM areas WHERE level = ?", [level]).df()
    _, unknown, reasons = match_names(given, known, key="code", names=["code"], what=f"parent {level} code")
    rej.add(unknown, "parent", reasons)


def import_areas(path: str | os.PathLike, *, db: str | os.PathLike, level: str,
                 mapping: dict[str, str] | None = None, crs: str | None = None, encoding: str | None = None,
                 layer: str | None = None, repair: bool = False, progress: bool = True) -> ImportReport:
    """Import district, street or community polygons.

    A street's or community's parent comes from ``--parent`` (a code of the
    level above, which must be loaded) or, when not given, from the area of
    the level above that contains it. Existing events, sites and inspections
    are relocated afterwards.

    Parameters
    ----------
    path
        A polygon file (GeoJSON, Shapefile, GeoPackage, GeoParquet, or XLSX/CSV with WKT is not supported).
    db
        The civicgrid database.
    level
        ``district``, ``street`` or ``community``.
    mapping
        ``{field: column}`` for ``code``, ``name``, ``parent``.
    repair
        Repair invalid polygons (self-intersections...) and say what changed, instead of rejecting them.
    """
    check_level(level, levels=AREA_LEVELS)
    started = datetime.now().astimezone()  # a moment; record_import stores it on the store's clock
    src, cols, report, rej = imp.start_import("areas", path, fields=AREA_FIELDS, required=["code", "name"],
                                              mapping=mapping, encoding=encoding, layer=layer, aliases=AREA_ALIASES)
    table = src.table
    code = strings(table, cols["code"])
    name = strings(table, cols["name"])
    rej.add(pd.isna(code), "code", "missing code")
    rej.add(pd.isna(name), "name", "missing name")
    geoms = _polygons(src, rej, report, crs, repair=repair, labels=_labels(code, name))
    with writing(db) as con:
        parent_level = PARENT_LEVEL[level]
        parent = np.full(len(code), None, dtype=object)
        if parent_level is not None:
            if "parent" in cols:
                parent = strings(table, cols["parent"])
                _check_parents(con, parent, parent_level, rej)
            missing = rej.ok & pd.isna(parent)
            if missing.any():
                parent[missing] = _parents_by_containment(con, geoms[missing], parent_level)
                orphans = int((rej.ok & pd.isna(parent)).sum())
                if orphans:
                    report.warnings.append(f"{orphans} {level} areas lie in no loaded {parent_level}: "
                                           "parent left empty")
        keys = np.array([f"{c}" for c in code], dtype=object)
        fresh, dup, merged = _dedupe_codes(con, "areas", keys, geoms, rej.ok, report, what="an area",
                                           attrs={"name": name, "parent": parent})
        new = np.flatnonzero(fresh)
        _warn_overlaps(con, f"SELECT code, ST_AsWKB(geom) AS wkb FROM areas WHERE level = '{level}'",
                       code[new], geoms[new], report, what=f"{level} areas")
        data = pa.table({
            "code": pa.array(code[new], pa.string()),
            "name": pa.array(name[new], pa.string()),
            "level": pa.array([level] * len(new), pa.string()),
            "parent_code": pa.array(parent[new], pa.string()),
            "area_km2": pa.array(_area_km2(geoms[new])),
            "wkb": pa.array(shapely.to_wkb(geoms[new]) if len(new) else [], pa.binary()),
        })
        imp.insert_arrow(con, "areas", data, geometry="wkb")
        finish_report(report, rej, loaded=len(new) + int(merged.sum()), duplicates=int(dup.sum()))
        imp.record_import(con, report, started)
        if len(new):
            relocate(con, progress=progress)
    return report


def import_grids(path: str | os.PathLike, *, db: str | os.PathLike, mapping: dict[str, str] | None = None,
                 crs: str | None = None, encoding: str | None = None, layer: str | None = None,
                 repair: bool = False, progress: bool = True) -> ImportReport:
    """Import micro-grid polygons with their leaders and households.

    The parent community comes from ``--parent`` or from the community that
    contains the grid; street and district follow from the hierarchy. A file
    without a code column gets codes from a hash of each grid's geometry (a
    warning says so), which keeps re-imports idempotent.
    """
    started = datetime.now().astimezone()  # a moment; record_import stores it on the store's clock
    src, cols, report, rej = imp.start_import("grids", path, fields=GRID_FIELDS, mapping=mapping,
                                              encoding=encoding, layer=layer)
    table = src.table
    labels = _labels(strings(table, cols["code"]) if "code" in cols else None,
                     strings(table, cols["name"]) if "name" in cols else None, rows=table.column("__row__"))
    geoms = _polygons(src, rej, report, crs, repair=repair, labels=labels)
    if "code" in cols:
        code = strings(table, cols["code"])
        rej.add(pd.isna(code), "code", "missing code")
    else:
        wkt = shapely.to_wkt(geoms, rounding_precision=7, trim=True)  # None for rejected rows
        hashed = pd.util.hash_pandas_object(pd.Series(wkt, dtype=object).fillna(""), index=False).to_numpy()
        code = np.char.add("G", np.char.mod("%016x", hashed)).astype(object)
        report.warnings.append("no grid code column (--code): codes were made from each grid's geometry")
    name = strings(table, cols.get("name"))
    households = numbers(strings(table, cols.get("households")))
    bad_hh = ~np.isnan(households) & ((households < 0) | (households != np.round(households)))
    rej.add(bad_hh, "households", "households must be a whole number ≥ 0")
    raw_hh = strings(table, cols.get("households"))
    rej.add(np.isnan(households) & ~pd.isna(raw_hh), "households", "households is not a number")
    with writing(db) as con:
        community = np.full(len(code), None, dtype=object)
        if "parent" in cols:
            community = strings(table, cols["parent"])
            _check_parents(con, community, "community", rej)
        missing = rej.ok & pd.isna(community)
        if missing.any():
            community[missing] = _parents_by_containment(con, geoms[missing], "community")
        fresh, dup, merged = _dedupe_codes(con, "grids", code, geoms, rej.ok, report, what="a grid",
                                           attrs={"name": name, "community": community, "households": households})
        new = np.flatnonzero(fresh)
        _warn_overlaps(con, "SELECT code, ST_AsWKB(geom) AS wkb FROM grids", code[new], geoms[new], report,
                       what="micro-grids")
        hier = con.execute(
            "SELECT c.code AS community_code, s.code AS street_code, s.parent_code AS district_code "
            "FROM areas c LEFT JOIN areas s ON s.code = c.parent_code WHERE c.level = 'community'"
        ).df().set_index("community_code")
        comm = pd.Series(community[new], dtype=object)
        street = comm.map(hier["street_code"]).to_numpy(dtype=object)
        district = comm.map(hier["district_code"]).to_numpy(dtype=object)
        if comm.isna().any():
            # Grids outside any community: take street and district by containment.
            lost = np.flatnonzero(comm.isna().to_numpy())
            street[lost] = _parents_by_containment(con, geoms[new][lost], "street")
            district[lost] = _parents_by_containment(con, geoms[new][lost], "district")
            if fetch_value(con, "SELECT count(*) FROM areas WHERE level = 'community'"):
                report.warnings.append(f"{len(lost)} grids lie in no loaded community")
        data = pa.table({
            "code": pa.array(code[new], pa.string()),
            "name": pa.array(name[new], pa.string()),
            "community_code": pa.array(community[new], pa.string()),
            "street_code": pa.array(street, pa.string()),
            "district_code": pa.array(district, pa.string()),
            "leader_name": pa.array(strings(table, cols.get("leader"))[new], pa.string()),
            "leader_phone": pa.array(strings(table, cols.get("leader_phone"))[new], pa.string()),
            "households": pa.array(households[new], pa.float64()).cast(pa.int32(), safe=False),
            "area_km2": pa.array(_area_km2(geoms[new])),
            "wkb": pa.array(shapely.to_wkb(geoms[new]) if len(new) else [], pa.binary()),
        })
        imp.insert_arrow(con, "grids", data, geometry="wkb")
        finish_report(report, rej, loaded=len(new) + int(merged.sum()), duplicates=int(dup.sum()))
        imp.record_import(con, report, started)
        if len(new):
            relocate(con, progress=progress)
    return report


def relocate(con: duckdb.DuckDBPyConnection, *, progress: bool = True) -> None:
    """Recompute grid and area codes of every stored event, site and inspection (after areas change)."""
    for table, key in (("sites", "site_id"), ("inspections", "inspection_id"), ("events", "event_id")):
        n = fetch_value(con, f"SELECT count(*) FROM {table}")
        if not n:
            continue
        pts = con.execute(f"SELECT {key} AS k, lng, lat FROM {table}").fetchnumpy()
        located = location_arrays(locate_points(con, pts["lng"], pts["lat"]))
        frame = pa.table({"k": pa.array(pts["k"]), **{c: located[c] for c in LOCATION_COLUMNS[1:]}})
        con.register("_relocated", frame)
        try:
            sets = ", ".join(f"{c} = r.{c}" for c in LOCATION_COLUMNS[1:])
            con.execute(f"UPDATE {table} SET {sets} FROM _relocated r WHERE {table}.{key} = r.k")
        finally:
            con.unregister("_relocated")
