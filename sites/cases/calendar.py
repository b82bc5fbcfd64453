"""The working calendar of case deadlines: holidays and make-up working days, the 09:00–18:00 working clock and
the hours each problem type allows. (The store's "now" and the reading of moments are
:func:`civicgrid.geo.times.now_local` and :func:`civicgrid.geo.times.parse_moment`.)

Deadlines come from the problem type (``deadline_value`` working days or working hours) on a working clock that
runs :data:`WORK_START`–:data:`WORK_END` on working days: Monday–Friday except the holidays of the ``holidays``
table, plus its make-up working days (调休上班). ``N`` working days = ``N × 9`` working hours. Found before 09:00
the clock starts at 09:00; found after 18:00 or on a day off it starts at the next working day's 09:00; a
deadline falling exactly at a day boundary is written as 18:00 of that day.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import retry_writes, writing
from civicgrid.sites.cases._sql import StoreOrConnection, query_frame

#: Working clock (local wall time). A working day has WORK_END - WORK_START = 9 working hours.
WORK_START = 9 * 3600
WORK_END = 18 * 3600
_DAY_WORK = WORK_END - WORK_START


def holidays(con: StoreOrConnection) -> pd.DataFrame:
    """The calendar exceptions: ``date``, ``kind`` (holiday | workday), ``name``, ``source``, by date."""
    df = query_frame(con, "SELECT date, kind, name, source FROM holidays ORDER BY date")
    df["date"] = pd.to_datetime(df["date"]).dt.date
    return df


@retry_writes
def set_holidays(db: str | os.PathLike, rows: pd.DataFrame | list[dict], *, replace_years: bool = True) -> int:
    """Add or replace calendar exceptions (atomic write).

    Parameters
    ----------
    rows
        Records with ``date`` (YYYY-MM-DD), ``kind`` (``holiday``: a day off; ``workday``: a make-up
        working day on a weekend, 调休上班), optional ``name`` and ``source``.
    replace_years
        Drop the stored exceptions of every year present in ``rows`` first (a new official notice
        replaces the year's schedule). Otherwise rows are upserted by date.

    Returns
    -------
    int
        The number of rows stored.
    """
    frame = pd.DataFrame(rows)
    for col in ("date", "kind"):
        if col not in frame.columns:
            msg = f"holiday rows need a {col!r} field (got {', '.join(map(str, frame.columns)) or 'no fields'})"
            raise InvalidParameterError(msg)
    for col in ("name", "source"):
        if col not in frame.columns:
            frame[col] = None
    dates = pd.to_datetime(frame["date"], errors="coerce")
    bad = dates.isna()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        msg = f"holiday row {i + 1}: date {frame['date'].iloc[i]!r} is not a date (YYYY-MM-DD)"
        raise InvalidParameterError(msg)
    kinds = frame["kind"].astype(str).str.strip().str.lower()
    wrong = ~kinds.isin(["holiday", "workday"])
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        msg = f"holiday row {i + 1}: kind {frame['kind'].iloc[i]!r} must be holiday or workday"
        raise InvalidParameterError(msg)
    if dates.duplicated().any():
        d = dates[dates.duplicated()].iloc[0].date()
        msg = f"holiday rows list {d} twice"
        raise InvalidParameterError(msg)
    clean = pd.DataFrame({"date": dates.dt.date, "kind": kinds,
                          "name": frame["name"].astype(object).where(frame["name"].notna(), None),
                          "source": frame["source"].astype(object).where(frame["source"].notna(), None)})
    with writing(db) as con:
        if replace_years:
            for year in sorted({d.year for d in clean["date"]}):
                con.execute("DELETE FROM holidays WHERE year(date) = ?", [year])
        con.register("_holidays_in", clean)
        con.execute("DELETE FROM holidays WHERE date IN (SELECT date FROM _holidays_in)")
        con.execute("INSERT INTO holidays SELECT date, kind, name, source FROM _holidays_in")
        con.unregister("_holidays_in")
    return len(clean)


class WorkCalendar:
    """Working days (Mon–Fri, minus holidays, plus make-up working days) and the 09:00–18:00 working clock.

    Parameters
    ----------
    holidays, workdays
        Days off on weekdays (and any other listed days off), and weekend days that are working days (调休).
    """

    def __init__(self, holidays=(), workdays=()) -> None:
        self.holidays = np.unique(np.asarray(list(holidays), dtype="M8[D]"))
        self.workdays = np.unique(np.asarray(list(workdays), dtype="M8[D]"))

    @classmethod
    def from_store(cls, con: StoreOrConnection) -> WorkCalendar:
        """The calendar of a store or connection (its ``holidays`` table)."""
        h = holidays(con)
        d = pd.to_datetime(h["date"]).to_numpy("M8[D]")
        kind = h["kind"].to_numpy()
        return cls(d[kind == "holiday"], d[kind == "workday"])

    def is_working(self, days) -> np.ndarray:
        """Whether each day (datetime64[D]-like) is a working day."""
        days = np.asarray(days, dtype="M8[D]")
        weekday = (days.astype("int64") + 3) % 7 < 5
        return (weekday & ~np.isin(days, self.holidays)) | np.isin(days, self.workdays)

    def working_days(self, first, last) -> np.ndarray:
        """The working days from ``first`` to ``last`` inclusive, sorted."""
        days = np.arange(np.datetime64(first, "D"), np.datetime64(last, "D") + 1, dtype="M8[D]")
        return days[self.is_working(days)]

    def deadlines(self, found, hours) -> np.ndarray:
        """Deadlines (datetime64[s]) of cases found at ``found`` given their working hours to rectify.

        Vectorized: the found time becomes a position on the working clock (working days before it × 9 h
        plus the working time elapsed that day), the hours are added, and the position is turned back into
        wall time on the table of working days.
        """
        found = np.asarray(found, dtype="M8[s]")
        hours = np.asarray(hours, dtype="float64")
        out = np.full(found.shape, np.datetime64("NaT"), dtype="M8[s]")
        ok = ~np.isnat(found) & np.isfinite(hours)
        if not ok.any():
            return out
        t = found[ok]
        need = np.maximum(np.round(hours[ok] * 3600).astype(np.int64), 1)
        day = t.astype("M8[D]")
        span_days = int(need.max() // _DAY_WORK) * 3 + 60  # a year of holidays never takes 2 of every 3 days
        table = self.working_days(day.min() - 1, day.max() + span_days)
        idx = np.searchsorted(table, day, side="left")
        on_work = (idx < len(table)) & (table[np.minimum(idx, len(table) - 1)] == day)
        tod = (t - day).astype(np.int64)
        elapsed = np.where(on_work, np.clip(tod - WORK_START, 0, _DAY_WORK), 0)
        pos = idx.astype(np.int64) * _DAY_WORK + elapsed + need
        k = -(-pos // _DAY_WORK) - 1  # ceil(pos / day) - 1: the day holding the end (a boundary ends a day)
        if (k >= len(table)).any():  # pragma: no cover - span_days covers any realistic deadline
            msg = "deadline beyond the working-day table"
            raise InvalidParameterError(msg)
        rest = pos - k * _DAY_WORK
        out[ok] = table[k].astype("M8[s]") + (WORK_START + rest).astype("m8[s]")
        return out


def type_hours(problem_types: pd.DataFrame) -> pd.Series:
    """Working hours to rectify per problem type code (working days × 9)."""
    value = pd.to_numeric(problem_types["deadline_value"], errors="coerce")
    per = np.where(problem_types["deadline_unit"].eq("working_hours"), 1.0, _DAY_WORK / 3600)
    return pd.Series((value * per).to_numpy(), index=problem_types["code"].to_numpy())


def compute_deadlines(con: StoreOrConnection, found, problem_type, *, hours: pd.Series | None = None,
                      calendar: WorkCalendar | None = None) -> np.ndarray:
    """Deadlines of cases found at ``found`` with problem types ``problem_type`` (codes), from the store (or
    from the problem types' ``hours`` (:func:`type_hours`) and the ``calendar`` given, read once by the caller)."""
    if hours is None:
        hours = type_hours(query_frame(con, "SELECT code, deadline_value, deadline_unit FROM problem_types"))
    h = pd.Series(np.asarray(problem_type, dtype=object)).map(hours).to_numpy(dtype="float64")
    return (calendar or WorkCalendar.from_store(con)).deadlines(found, h)
