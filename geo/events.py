"""Complaints and inspection hits: import and the events table."""

from __future__ import annotations

import os
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from geo import importing as imp
from geo.store import writing
from geo.times import parse_times
from grids.locate import location_arrays, locate_points

#: Event sources.
SOURCES = ("complaint", "inspection")

#: Status words of city files, mapped to the stored status.
STATUS_WORDS = {
    "open": "open", "opened": "open", "pending": "open", "in progress": "open", "assigned": "open",
    "未结案": "open", "待处理": "open", "处理中": "open", "办理中": "open", "已派遣": "open", "未办结": "open",
    "closed": "closed", "resolved": "closed", "completed": "closed",
    "已结案": "closed", "已办结": "closed", "办结": "closed", "结案": "closed", "已处理": "closed", "已完成": "closed",
}

EVENT_FIELDS = ["id", "lat", "lng", "time", "type", "site", "text", "status", "inspection"]


def _column(table: pa.Table, column: str | None, idx: np.ndarray) -> pa.Array:
    """The trimmed strings of ``column`` at rows ``idx`` (nulls when there is no such column)."""
    if column is None:
        return pa.nulls(len(idx), pa.string())
    return imp._trimmed(table, column).take(pa.array(idx))


def problem_type_choices(con) -> pd.DataFrame:
    """Problem types and their major classes as one matching table (code, name_zh, name_en)."""
    return con.execute(
        """
        SELECT code, name_zh, name_en FROM problem_types
        UNION ALL
        SELECT DISTINCT major_code, major_zh, major_en FROM problem_types
        """
    ).df()


def import_events(path: str | os.PathLike, *, db: str | os.PathLike, source: str = "complaint",
                  mapping: dict[str, str] | None = None, point: str | None = None, crs: str | None = None,
                  tz: str = "Asia/Shanghai", encoding: str | None = None, layer: str | None = None,
                  sheet: str | int | None = None, progress: bool = True) -> imp.ImportReport:
    """Import complaints or inspection hits from a file into the store.

    Parameters
    ----------
    path
        CSV, XLSX, GeoJSON, GeoPackage, Shapefile (or zipped), GeoParquet or Parquet file.
    db
        The civicgrid database (created if missing).
    source
        ``"complaint"`` (e.g. 12345 hotline) or ``"inspection"`` (inspection hits).
    mapping
        ``{field: column}`` for fields ``id, lat, lng, time, type, site, text, status, inspection``;
        unmapped fields are looked up by common column names.
    point
        A single text column holding "(lat, lon)" or "lat,lon".
    crs
        Coordinate system of the input: ``wgs84``, ``gcj02``, ``bd09``, ``cgcs2000`` or ``EPSG:NNNN``.
    tz
        Time zone of times written without an offset.

    Returns
    -------
    ImportReport
        Counts and every rejected row with its field and reason.
    """
    if source not in SOURCES:
        msg = f"source must be one of {', '.join(SOURCES)}, got {source!r}"
        raise ValueError(msg)
    started = datetime.now()
    src = imp.read_input(path, encoding=encoding, layer=layer, sheet=sheet)
    table = src.table
    cols = imp.resolve_columns(table, mapping or {}, fields=EVENT_FIELDS, required=["time"])
    report = imp.start_report("events", path, src)
    report.columns = {k: v for k, v in cols.items() if k not in ("lat", "lng") or point is None}
    n = table.num_rows
    rows = table.column("__row__").to_numpy()
    bar = imp.progress_bar(n, desc=f"import {source} events", enabled=progress)
    with writing(db) as con:
        store_tz = con.execute("SELECT value FROM meta WHERE key = 'timezone'").fetchone()[0]
        rej = imp.Rejects(rows)
        lng, lat, _ = imp.read_locations(src, cols, rej, report, con=con, point=point, crs=crs)
        bar.update(n // 4)

        raw_time = imp._trimmed(table, cols["time"])
        times, bad_time = parse_times(raw_time, tz=tz, store_tz=store_tz)
        rej.add(raw_time.is_null().to_numpy(zero_copy_only=False), "time", "missing time")
        if bad_time.any():
            reasons = np.full(n, None, dtype=object)
            bad_idx = np.flatnonzero(bad_time)
            reasons[bad_idx] = [f"unparseable time {v!r}" for v in raw_time.take(pa.array(bad_idx)).to_pylist()]
            rej.add(bad_time, "time", reasons)

        ptype = np.full(n, None, dtype=object)
        if "type" in cols:
            ptype, unknown, reasons = imp.match_names(
                imp._trimmed(table, cols["type"]), problem_type_choices(con), key="code",
                names=["name_zh", "name_en"], what="problem type")
            rej.add(unknown, "type", reasons)

        site_id = np.full(n, None, dtype=object)
        if "site" in cols:
            sites = con.execute("SELECT CAST(site_id AS VARCHAR) AS code, external_id, name FROM sites").df()
            site_id, unknown, reasons = imp.match_names(
                imp.strings(table, cols["site"]), sites, key="code", names=["external_id", "name"], what="site")
            rej.add(unknown, "site", reasons)

        inspection_id = np.full(n, None, dtype=object)
        if "inspection" in cols:
            insp = con.execute(
                "SELECT CAST(inspection_id AS VARCHAR) AS code, external_id FROM inspections").df()
            inspection_id, unknown, reasons = imp.match_names(
                imp.strings(table, cols["inspection"]), insp, key="code", names=["external_id"], what="inspection")
            rej.add(unknown, "inspection", reasons)

        status = np.full(n, "open", dtype=object)
        if "status" in cols:
            enc = imp._trimmed(table, cols["status"]).dictionary_encode()
            words = pd.Series(enc.dictionary.to_numpy(zero_copy_only=False), dtype=object)
            norm = words.str.lower().map(STATUS_WORDS).to_numpy(dtype=object)
            codes = enc.indices.to_numpy(zero_copy_only=False)
            present = ~enc.indices.is_null().to_numpy(zero_copy_only=False)
            codes = np.where(present, codes, 0).astype(np.int64)
            status = np.where(present, norm[codes] if len(norm) else None, "open")
            unknown = present & pd.isna(status)
            status = np.where(pd.isna(status), "open", status).astype(object)
            if unknown.any():
                known = ", ".join(sorted(set(STATUS_WORDS)))
                reasons = np.full(n, None, dtype=object)
                reasons[unknown] = [f"unknown status {words[c]!r} (known: {known})" for c in codes[unknown]]
                rej.add(unknown, "status", reasons)
        bar.update(n // 4)

        keys = imp.dedup_keys(table, cols, prefix=source)
        dup = imp.find_duplicates(con, "events", keys, rej.ok)
        new = rej.ok & ~dup
        idx = np.flatnonzero(new)
        located = locate_points(con, lng[idx], lat[idx])
        bar.update(n // 4)
        first = imp.next_id(con, "events", "event_id")
        report.import_id = imp.next_id(con, "imports", "import_id")
        data = pa.table({
            "event_id": pa.array(np.arange(first, first + len(idx)), pa.int64()),
            "source": pa.array(np.full(len(idx), source, dtype=object), pa.string()),
            "external_id": _column(table, cols.get("id"), idx),
            "problem_type": pa.array(ptype[idx], pa.string()),
            "time": pa.array(times[idx]),
            "status": pa.array(status[idx], pa.string()),
            "site_id": pa.array(pd.to_numeric(pd.Series(site_id[idx], dtype=object)), pa.int64(), from_pandas=True),
            "inspection_id": pa.array(pd.to_numeric(pd.Series(inspection_id[idx], dtype=object)), pa.int64(),
                                      from_pandas=True),
            "text": _column(table, cols.get("text"), idx),
            "lng": pa.array(lng[idx]),
            "lat": pa.array(lat[idx]),
            **location_arrays(located),
            "dedup_key": pa.array(keys[idx], pa.string()),
            "import_id": pa.array(np.full(len(idx), report.import_id), pa.int32()),
        })
        imp.insert_arrow(con, "events", data)
        report.outside_grids = int(located["grid_code"].isna().sum())
        imp.finish_report(report, rej, loaded=len(idx), duplicates=int(dup.sum()))
        imp.record_import(con, report, started)
        bar.update(n - bar.n)
    bar.close()
    return report
