"""Inspection visits to sample-frame sites: import."""

from __future__ import annotations

import os
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
from civicgrid.geo import importing as imp
from civicgrid.geo.columns import match_names, strings
from civicgrid.geo.import_report import ImportReport
from civicgrid.geo.locations import read_locations
from civicgrid.geo.store import writing
from civicgrid.geo.times import DEFAULT_TIMEZONE, outside_window, parse_times, store_timezone, window_text
from civicgrid.sites.frame import PointRows

INSPECTION_FIELDS = ["id", "lat", "lng", "site", "time", "inspector", "result"]

#: Result words, read as conforming (True) or not (False); a number is the count of problems found.
RESULT_WORDS = {
    "符合": True, "合格": True, "达标": True, "conforming": True, "pass": True, "ok": True, "yes": True,
    "是": True, "无问题": True,
    "不符合": False, "不合格": False, "不达标": False, "nonconforming": False, "non-conforming": False,
    "fail": False, "no": False, "否": False, "有问题": False,
}


def parse_results(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (conforming, problems_found, unknown mask) from result texts or problem counts."""
    s = pd.Series(values, dtype=object)
    count = pd.to_numeric(s, errors="coerce")
    word = s.str.strip().str.lower().map(RESULT_WORDS)
    conforming = np.where(count.notna(), count == 0, word).astype(object)
    conforming[pd.isna(word).to_numpy() & count.isna().to_numpy()] = None
    problems = count.where(count.notna(), np.where(word.eq(True), 0, np.nan))
    bad_count = count.notna() & ((count < 0) | (count != count.round()))
    unknown = (s.notna() & count.isna() & word.isna()) | bad_count
    return conforming, problems.to_numpy(dtype="float64"), unknown.to_numpy()


def import_inspections(path: str | os.PathLike, *, db: str | os.PathLike, mapping: dict[str, str] | None = None,
                       point: str | None = None, crs: str | None = None, tz: str = DEFAULT_TIMEZONE,
                       encoding: str | None = None, layer: str | None = None, sheet: str | int | None = None,
                       progress: bool = True) -> ImportReport:
    """Import inspection visits: site, time, inspector and result.

    The site is matched by its external id or exact name; a visit without
    coordinates takes its site's location. The result is a conformity word
    (符合/不符合, conforming/nonconforming) or the number of problems found.
    """
    started = datetime.now()
    src, cols, report, rej = imp.start_import("inspections", path, fields=INSPECTION_FIELDS,
                                              required=["site", "time"], mapping=mapping, encoding=encoding,
                                              layer=layer, sheet=sheet)
    table = src.table
    n = table.num_rows
    with writing(db) as con:
        store_tz = store_timezone(con)
        sites = con.execute(
            "SELECT CAST(site_id AS VARCHAR) AS code, external_id, name, lng, lat FROM sites").df()
        raw_site = strings(table, cols["site"])
        site_code, unknown, reasons = match_names(raw_site, sites, key="code", names=["external_id", "name"],
                                                      what="site")
        rej.add(pd.isna(raw_site), "site", "missing site")
        rej.add(unknown, "site", reasons)
        raw_time = strings(table, cols["time"])
        times, bad_time = parse_times(raw_time, tz=tz, store_tz=store_tz)
        rej.add(pd.isna(raw_time), "time", "missing time")
        if bad_time.any():
            why = np.full(n, None, dtype=object)
            why[bad_time] = [f"unparseable time {v!r}" for v in raw_time[bad_time]]
            rej.add(bad_time, "time", why)
        implausible = outside_window(times, tz=store_tz)
        if implausible.any():
            why = np.full(n, None, dtype=object)
            why[implausible] = [f"outside the plausible window {window_text(tz=store_tz)}: {v!r}"
                                for v in raw_time[implausible]]
            rej.add(implausible, "time", why)
        conforming = np.full(n, None, dtype=object)
        problems = np.full(n, np.nan)
        if "result" in cols:
            raw = strings(table, cols["result"])
            conforming, problems, unknown = parse_results(raw)
            if unknown.any():
                why = np.full(n, None, dtype=object)
                why[unknown] = [f"unknown result {v!r} (use 符合/不符合, conforming/nonconforming "
                                "or a number of problems)" for v in raw[unknown]]
                rej.add(unknown, "result", why)
        has_coords = point is not None or ("lat" in cols and "lng" in cols) or "geometry" in table.column_names
        if has_coords:
            lng, lat, _ = read_locations(src, cols, rej, report, con=con, point=point, crs=crs)
        else:
            by_code = sites.set_index("code")
            s = pd.Series(site_code, dtype=object)
            lng = s.map(by_code["lng"]).to_numpy(dtype="float64")
            lat = s.map(by_code["lat"]).to_numpy(dtype="float64")
        rows = PointRows(con, "inspections", "inspection_id", table, cols, rej, lng, lat, report,
                         prefix="inspection")
        idx = rows.idx
        rows.store(con, report, rej, started, columns={
            "site_id": pa.array(pd.to_numeric(pd.Series(site_code[idx], dtype=object)), pa.int64(), from_pandas=True),
            "time": pa.array(times[idx]),
            "inspector": pa.array(strings(table, cols.get("inspector"))[idx], pa.string()),
            "conforming": pa.array(conforming[idx], pa.bool_(), from_pandas=True),
            "problems_found": pa.array(problems[idx], pa.float64(), from_pandas=True).cast(pa.int32(), safe=False),
        })
    return report
