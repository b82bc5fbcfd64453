"""Time in civicgrid: the store's time zone, "now", moments and periods users give, and time columns of files.

Times are stored as naive wall-clock times of the store's time zone (``meta.timezone``, :data:`DEFAULT_TIMEZONE`
for every store civicgrid creates). This module is the one place that knows it:

* :func:`store_timezone`, :func:`now_local` and :func:`store_now`: the zone and the current wall-clock time in it;
* :func:`parse_moment` (:func:`as_datetime` where a value is optional): one date or time a user typed (a
  parameter, a CLI option). Year first only: ``01/03/2025`` (1 March or 3 January?) is refused, never guessed;
  an offset (``2025-07-01T08:30+00:00``) is converted to the store's zone;
* :func:`parse_day`, :func:`is_date_only`, :func:`end_of_day` and :func:`parse_end`: days, and the rule that a
  date-only ``end`` includes that whole day;
* :func:`parse_period`: ``2025-03``, ``2025-Q1``, ``2025``, ``2025-03-05`` or ``2025-03-01..2025-03-15``;
* :func:`parse_times`: whole time columns of city files, vectorized. Files are not typed by the user at hand,
  so it also reads Excel serial days and day- or month-first dates (``01/07/2014 12:00:00 AM`` of US 311
  portals), these read one way for the whole column (:func:`decide_date_order`: proven by a value such as
  ``13/02/2025``, else given as ``--date-order dmy|mdy``; an undecided column is refused, never guessed).
"""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import zoneinfo
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import date, datetime, timedelta
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from civicgrid.geo.errors import InvalidParameterError, OutOfRangeError
from civicgrid.geo.settings import get_settings, known_zone
from civicgrid.geo.store import Store

#: The time zone of the wall-clock times of a store civicgrid creates (``meta.timezone``), and of values
#: given without one.
DEFAULT_TIMEZONE = "Asia/Shanghai"


def store_timezone(store: Store | duckdb.DuckDBPyConnection | str | os.PathLike) -> str:
    """The time zone of a store's times: its ``meta.timezone``, or :data:`DEFAULT_TIMEZONE` when unset.

    A store's zone is set when it is created and never changes: it is read once per process
    (:meth:`~civicgrid.geo.store.Store.fixed_meta`; from a connection, whose store is not known, each time).

    Parameters
    ----------
    store
        A :class:`~civicgrid.geo.store.Store`, the store's path or URL (what ``--db`` takes), or an open
        connection to the database (inside a write).
    """
    if isinstance(store, duckdb.DuckDBPyConnection):
        row = store.execute("SELECT value FROM meta WHERE key = 'timezone'").fetchone()
        return (row[0] if row else None) or DEFAULT_TIMEZONE
    return (store if isinstance(store, Store) else Store(store)).fixed_meta("timezone") or DEFAULT_TIMEZONE


def store_now(store: Store | duckdb.DuckDBPyConnection | str | os.PathLike) -> datetime:
    """The current wall-clock time of the store's zone (:func:`store_timezone`), to the second: what a store
    records as "now" (a case found now, a user made now)."""
    return now_local(tz=store_timezone(store))


def now_local(*, tz: str = DEFAULT_TIMEZONE,
              precision: Literal["second", "minute", "microsecond"] = "second") -> datetime:
    """The current wall-clock time in ``tz``, naive (as times are stored).

    Parameters
    ----------
    tz
        The time zone (the store's, :data:`DEFAULT_TIMEZONE` by default), not the machine's.
    precision
        ``second`` (the default: what cases and users record), ``minute`` (a cache key that changes once a
        minute) or ``microsecond``.
    """
    now = datetime.now(zoneinfo.ZoneInfo(tz)).replace(tzinfo=None)
    if precision == "second":
        return now.replace(microsecond=0)
    if precision == "minute":
        return now.replace(second=0, microsecond=0)
    if precision == "microsecond":
        return now
    msg = f"precision must be second, minute or microsecond, got {precision!r}"
    raise InvalidParameterError(msg)


def stored_moment(moment: datetime, *, tz: str = DEFAULT_TIMEZONE) -> datetime:
    """A moment of the machine's clock as the store keeps times: naive wall-clock time in ``tz`` (the store's).

    ``moment`` with a time zone is converted; a naive one (``datetime.now()``) is read as the machine's local
    time, which need not be the store's (a server on UTC keeping a Beijing-time store).
    """
    return moment.astimezone(zoneinfo.ZoneInfo(tz)).replace(tzinfo=None)


# --- the plausible window ----------------------------------------------------------------------------------------


def time_window(*, tz: str = DEFAULT_TIMEZONE) -> tuple[datetime, datetime]:
    """The plausible window of times a user may give or store: ``(earliest, latest)``, both inclusive.

    ``earliest`` is the midnight of the setting ``earliest_time`` (default 1990-01-01), ``latest`` is now plus
    the setting ``latest_days_ahead`` days (default 366) in ``tz``. :func:`parse_moment` and :func:`parse_period`
    refuse times outside it; :func:`outside_window` marks a column's.
    """
    settings = get_settings()
    first = datetime(settings.earliest_time.year, settings.earliest_time.month, settings.earliest_time.day)
    return first, now_local(tz=tz) + timedelta(days=settings.latest_days_ahead)


def window_text(*, tz: str = DEFAULT_TIMEZONE) -> str:
    """The plausible window for messages: ``1990-01-01..2027-12-06 (settings earliest_time,
    latest_days_ahead)``."""
    first, last = time_window(tz=tz)
    return (f"{first.date().isoformat()}..{last.date().isoformat()} (settings CIVICGRID_EARLIEST_TIME, "
            "CIVICGRID_LATEST_DAYS_AHEAD)")


def check_window(moment: datetime, *, name: str = "time", value: object = None,
                 tz: str = DEFAULT_TIMEZONE) -> datetime:
    """Return ``moment`` when it lies in the plausible window (:func:`time_window`), else raise.

    Raises
    ------
    OutOfRangeError
        The moment is before the earliest or after the latest plausible time; the message names ``name``, the
        value as given (``value``, else the moment) and the window.
    """
    first, last = time_window(tz=tz)
    if first <= moment <= last:
        return moment
    shown = moment.isoformat(sep=" ") if value is None else value
    msg = f"{name}={shown!r} is outside the plausible window {window_text(tz=tz)}"
    raise OutOfRangeError(msg)


def outside_window(times: np.ndarray, *, tz: str = DEFAULT_TIMEZONE) -> np.ndarray:
    """A mask of the times of a column (``datetime64``; NaT is not outside) outside the plausible window, for
    importers to reject with :func:`window_text` as the reason."""
    first, last = time_window(tz=tz)
    t = np.asarray(times, dtype="datetime64[us]")
    present = ~np.isnat(t)
    out = np.zeros(len(t), dtype=bool)
    out[present] = (t[present] < np.datetime64(first, "us")) | (t[present] > np.datetime64(last, "us"))
    return out


# --- one moment a user gives ----------------------------------------------------------------------------------

#: A text must start with a 4-digit year (2025-07-01, 2025/7/1, 20250701, 2025年7月1日, 2025-07-01T08:00).
_YEAR_FIRST = re.compile(r"^\d{4}(?:\d{4}(?!\d)|[^\d]|$)")
#: Day- or month-first dates (01/07/2025, 1.7.2025, 07-01-25): 1 July or 7 January?
_DAY_FIRST = re.compile(r"^\d{1,2}\s*[-/.]\s*\d{1,2}\s*[-/.]\s*\d{2,4}(?!\d)")
#: A day without a time of day, year first: 2025-07-01, 2025/7/1, 2025.7.1, 2025年7月1日, 20250701.
_DATE_ONLY = re.compile(r"\d{4}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}\s*日?|\d{8}")
_MUST = "{name} must be a date like 2025-07-01 or a date-time like 2025-07-01T08:30 (the year first; 2025年7月1日 too)"


def parse_moment(value: object, *, name: str = "time", tz: str = DEFAULT_TIMEZONE) -> datetime:
    """Read one date or date-time given by a user as a naive wall-clock time of ``tz``.

    Parameters
    ----------
    value
        A datetime (an aware one is converted to ``tz``), a date (its midnight), a ``numpy.datetime64`` or a
        text that starts with a 4-digit year: ISO 8601 (``2025-07-01``, ``2025-07-01T08:30``, with an offset or
        ``Z``), ``2025/7/1``, ``20250701``, ``2025年7月1日 下午2:30``.
    name
        The parameter's name, for messages.
    tz
        The store's time zone: where wall-clock times are read and offsets converted to.

    Raises
    ------
    InvalidParameterError
        No value; a text that does not start with the year (``01/07/2025`` is refused as ambiguous: pandas
        would read 7 January, a planner may mean 1 July); a text that is not a date; a time outside the
        plausible window (:func:`time_window`, :class:`~civicgrid.geo.errors.OutOfRangeError`).
    """
    return check_window(_parse_moment(value, name=name, tz=tz), name=name,
                        value=value if isinstance(value, str) else None, tz=tz)


def _parse_moment(value: object, *, name: str, tz: str) -> datetime:
    if isinstance(value, datetime):  # pandas Timestamps too
        if pd.isna(value):
            ts = None
        elif value.tzinfo is None:
            return value if type(value) is datetime else pd.Timestamp(value).to_pydatetime()
        else:
            ts = pd.Timestamp(value)
    elif isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    elif isinstance(value, np.datetime64):
        ts = None if np.isnat(value) else pd.Timestamp(value)
    elif value is None or not str(value).strip():
        ts = None
    else:
        return _parse_text(value, name=name, tz=tz)
    if ts is None:
        msg = f"{name} is required: a date like 2025-07-01 or a date-time like 2025-07-01T08:00"
        raise InvalidParameterError(msg)
    return _naive(ts, tz)


def _parse_text(value: object, *, name: str, tz: str) -> datetime:
    text = str(value).strip()
    if not _YEAR_FIRST.match(text):
        what = "ambiguous (day or month first?)" if _DAY_FIRST.match(text) else "not a date with the year first"
        msg = f"{name}={value!r} is {what}; {_MUST.format(name=name)}"
        raise InvalidParameterError(msg)
    year = int(text[:4])
    first, last = time_window(tz=tz)
    if not first.year <= year <= last.year:  # year 1 or 9999: out of the window before any parsing
        msg = f"{name}={value!r} is outside the plausible window {window_text(tz=tz)}"
        raise OutOfRangeError(msg)
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        ts = pd.NaT
    if not pd.isna(ts):
        return _naive(ts, tz)
    parsed, _ = parse_times([text], tz=tz, store_tz=tz)  # the forms of Chinese office systems
    if np.isnat(parsed[0]):
        msg = f"{name}={value!r} is not a date or time; {_MUST.format(name=name)}"
        raise InvalidParameterError(msg)
    return pd.Timestamp(parsed[0]).to_pydatetime()


def _naive(ts: pd.Timestamp, tz: str) -> datetime:
    if ts.tzinfo is not None:
        ts = ts.tz_convert(tz).tz_localize(None)
    return ts.to_pydatetime()


def has_offset(value: object) -> bool:
    """Whether a moment carries its own offset: an aware datetime, or a text such as ``2025-07-01T08:30-07:00``
    or ``…Z``. Its wall-clock time in a store's zone is known only once the store is (:func:`as_instant`)."""
    if isinstance(value, datetime):
        return value.tzinfo is not None and not pd.isna(value)
    if isinstance(value, str) and _YEAR_FIRST.match(value.strip()):
        try:
            return pd.Timestamp(value.strip()).tzinfo is not None
        except (ValueError, TypeError, OverflowError):
            return False
    return False


def as_instant(value: object, *, name: str = "time") -> datetime:
    """An aware moment (:func:`has_offset`), read and checked as :func:`parse_moment` does, in UTC: kept so
    until a store's zone turns it into that store's wall-clock time (:func:`stored_moment`)."""
    return parse_moment(value, name=name, tz="UTC").replace(tzinfo=zoneinfo.ZoneInfo("UTC"))


def as_datetime(value: object, *, name: str = "time", tz: str = DEFAULT_TIMEZONE) -> datetime | None:
    """:func:`parse_moment` of an optional value: ``None`` (or an empty text) stays ``None``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_moment(value, name=name, tz=tz)


# --- days, the date-only end, periods ------------------------------------------------------------------------


def is_date_only(value: object) -> bool:
    """Whether ``value`` names a day without a time of day: a date, or a text such as ``2025-07-01``,
    ``2025/7/1``, ``2025年7月1日`` or ``20250701``."""
    if isinstance(value, datetime):
        return False
    if isinstance(value, date):
        return True
    return isinstance(value, str) and _DATE_ONLY.fullmatch(value.strip()) is not None


def parse_day(value: object, *, name: str = "day", tz: str = DEFAULT_TIMEZONE) -> date:
    """The day of a moment (:func:`parse_moment`): ``2025-07-01``, ``2025/7/1`` or a datetime's date."""
    if value is None or (isinstance(value, str) and not value.strip()):
        msg = f"{name} is required: a day like 2025-07-01 (the year first)"
        raise InvalidParameterError(msg)
    return parse_moment(value, name=name, tz=tz).date()


def end_of_day(day: date) -> datetime:
    """The exclusive end of the whole day ``day``: the next midnight."""
    return datetime(day.year, day.month, day.day) + timedelta(days=1)


def parse_end(value: object, *, name: str = "end", tz: str = DEFAULT_TIMEZONE) -> datetime | None:
    """The exclusive end of a time window given as ``end``: a date-only value includes that whole day
    (:func:`end_of_day`); a date-time is the exclusive end itself; ``None`` (or empty) stays ``None``."""
    moment = as_datetime(value, name=name, tz=tz)
    if moment is None or not is_date_only(value):
        return moment
    return end_of_day(moment.date())


def parse_period(period: str | None = None, *, start: object = None, end: object = None) -> tuple[date, date, str]:
    """The days of a reporting period: ``(first day, day after the last, label)``.

    Parameters
    ----------
    period
        ``2024-03`` (a month), ``2024-Q1`` (a quarter), ``2024`` (a year), ``2024-03-05`` (one day) or
        ``2024-03-01..2024-03-15`` (inclusive range).
    start, end
        Instead of ``period``: first and last day (inclusive).

    Raises
    ------
    InvalidParameterError
        Neither a period nor both days; a period of another form; a period that ends before it starts.
    """
    if period is None or not str(period).strip():
        if start is None or end is None:
            msg = "give a period (2024-03, 2024-Q1, 2024, 2024-03-01..2024-03-15) or both start and end"
            raise InvalidParameterError(msg)
        first, last = _period_day(start, "start"), _period_day(end, "end")
    else:
        text = str(period).strip()
        if ".." in text:
            a, b = text.split("..", 1)
            first, last = _period_day(a, "period start"), _period_day(b, "period end")
        elif m := re.fullmatch(r"(\d{4})-(\d{1,2})", text):
            year, month = _period_year(m.group(1), text), int(m.group(2))
            if not 1 <= month <= 12:
                msg = f"period {text!r}: month must be 01..12"
                raise InvalidParameterError(msg)
            first, last = date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
        elif m := re.fullmatch(r"(\d{4})-?[Qq]([1-4])", text):
            year, q = _period_year(m.group(1), text), int(m.group(2))
            first = date(year, 3 * q - 2, 1)
            last = date(year, 3 * q, calendar.monthrange(year, 3 * q)[1])
        elif re.fullmatch(r"\d{4}", text):
            year = _period_year(text, text)
            first, last = date(year, 1, 1), date(year, 12, 31)
        else:
            first = last = _period_day(text, "period")
    if last < first:
        msg = f"the period ends ({last}) before it starts ({first})"
        raise InvalidParameterError(msg)
    low, high = time_window()
    if first < low.date() or last > high.date():
        shown = period if period is not None and str(period).strip() else f"{start}..{end}"
        msg = f"period {str(shown).strip()!r} ({first}..{last}) is outside the plausible window {window_text()}"
        raise OutOfRangeError(msg)
    return first, last + timedelta(days=1), period_label(first, last)


def _period_year(digits: str, text: str) -> int:
    """The year of a period, refused outside the plausible window (year 0 or 9999 cannot be a day at all)."""
    low, high = time_window()
    year = int(digits)
    if not low.year <= year <= high.year:
        msg = f"period {text!r} is outside the plausible window {window_text()}"
        raise OutOfRangeError(msg)
    return year


def _period_day(value: object, what: str) -> date:
    """A day of a period: a date, a datetime's day or a date-only text (a time of day would be dropped)."""
    if isinstance(value, datetime | date) or is_date_only(value):
        try:
            return parse_day(value, name=what)
        except OutOfRangeError:
            raise
        except InvalidParameterError:
            pass
    msg = (f"{what} must be a period like 2024-03, 2024-Q1, 2024 or 2024-03-01..2024-03-15 (the year first), "
           f"got {value!r}")
    raise InvalidParameterError(msg)


def period_label(first: date, last: date) -> str:
    """``2024-03`` (a whole month), ``2024-Q1`` (a whole quarter), ``2024`` (a whole year), else the days."""
    month_end = date(last.year, last.month, calendar.monthrange(last.year, last.month)[1])
    if first.day == 1 and last == month_end:
        if (first.year, first.month) == (last.year, last.month):
            return f"{first:%Y-%m}"
        if first.year == last.year and first.month % 3 == 1 and last.month == first.month + 2:
            return f"{first.year}-Q{(first.month + 2) // 3}"
        if first.year == last.year and (first.month, last.month) == (1, 12):
            return f"{first.year}"
    return f"{first}" if first == last else f"{first}..{last}"


# --- time columns of city files --------------------------------------------------------------------------------

#: How the two leading fields of a slash, dot or dash date (``01/03/2025``) are read: ``dmy`` day first (1 March),
#: ``mdy`` month first (3 January, the US 311 portals). A file column is read one way for all its rows.
DATE_ORDERS = ("dmy", "mdy")
#: The start of a day- or month-first date: two 1–2 digit fields then a 4-digit year (RE2, named groups a b y).
SLASH_DATE = r"^(?P<a>\d{1,2})\s*[-/.]\s*(?P<b>\d{1,2})\s*[-/.]\s*(?P<y>\d{4})"


#: The date order the user gave for the files of the import running in this context (:func:`file_date_order`).
_FILE_DATE_ORDER: ContextVar[str | None] = ContextVar("civicgrid_file_date_order", default=None)


@contextlib.contextmanager
def file_date_order(date_order: str | None) -> Iterator[None]:
    """Read the file columns parsed inside the block (:func:`parse_times`, :func:`decide_date_order`) with the
    import's ``--date-order`` (``dmy``, ``mdy``, or None: decided from each column)."""
    if date_order is not None and date_order not in DATE_ORDERS:
        msg = f"date order must be dmy (day first, 1/3/2025 = 1 March) or mdy (month first), got {date_order!r}"
        raise InvalidParameterError(msg)
    token = _FILE_DATE_ORDER.set(date_order)
    try:
        yield
    finally:
        _FILE_DATE_ORDER.reset(token)


def decide_date_order(values, *, date_order: str | None = None, column: str = "time") -> str | None:
    """How a file column's day- or month-first dates are read, decided for the whole column, never per row.

    A value whose first field is over 12 (``13/02/2025``) proves the column is day first; one whose second
    field is (``02/13/2025``) that it is month first. Values with equal fields (``01/01/2025``) read the same
    either way.

    Parameters
    ----------
    values
        The column's strings (as for :func:`parse_times`).
    date_order
        ``dmy`` or ``mdy`` when the user said (the import's ``--date-order``): it is used as given (values that
        contradict it are then unparseable rows, reported as such). None: the order given to the running
        import (:func:`file_date_order`), else decided from the values.
    column
        The column's name, for messages.

    Returns
    -------
    str or None
        ``dmy``, ``mdy``, or None when the column has no such dates.

    Raises
    ------
    InvalidParameterError
        ``date_order`` not one of :data:`DATE_ORDERS`; the column mixes both orders; or it has dates such as
        ``01/03/2025`` and no value decides: the message names ``--date-order dmy|mdy``.
    """
    if date_order is None:
        date_order = _FILE_DATE_ORDER.get()
    if date_order is not None:
        if date_order not in DATE_ORDERS:
            msg = f"date order must be dmy (day first, 1/3/2025 = 1 March) or mdy (month first), got {date_order!r}"
            raise InvalidParameterError(msg)
        return date_order
    arr = _as_arrow(values)
    # a value beginning with three digits is no such date (at most two come before its first separator): an
    # ISO column (2024-03-05 …) is ruled out without trimming its values or matching them to the pattern
    arr = arr.filter(pc.invert(pc.utf8_is_digit(pc.utf8_slice_codeunits(arr, 0, 3))))
    if not len(arr):
        return None
    arr = pc.utf8_trim_whitespace(arr)
    dated = pc.match_substring_regex(arr, SLASH_DATE)  # the distinct values of only these
    if not pc.any(dated).as_py():
        return None
    uniq = pc.unique(arr.filter(dated)).drop_null()
    got = pc.extract_regex(uniq, SLASH_DATE)
    hit = got.is_valid().to_numpy(zero_copy_only=False)
    texts = np.asarray(uniq.filter(pa.array(hit)).to_pylist(), dtype=object)
    a = pc.cast(got.field("a").filter(pa.array(hit)), pa.int64()).to_numpy(zero_copy_only=False)
    b = pc.cast(got.field("b").filter(pa.array(hit)), pa.int64()).to_numpy(zero_copy_only=False)
    day_first, month_first = (a > 12) & (b <= 12), (b > 12) & (a <= 12)
    if day_first.any() and month_first.any():
        msg = (f"column {column!r} mixes day-first dates ({texts[day_first][0]!r}) and month-first dates "
               f"({texts[month_first][0]!r}); correct the file, or say how to read it with --date-order dmy|mdy "
               "(the dates that contradict it are then rejected rows)")
        raise InvalidParameterError(msg)
    if day_first.any():
        return "dmy"
    if month_first.any() or not (a != b).any():
        return "mdy"  # proven month first, or every date reads the same either way
    example = texts[a != b][0]
    x, y = int(a[a != b][0]), int(b[a != b][0])
    msg = (f"column {column!r} has dates like {example!r} that read day first ({_day_name(x, y)}) or month first "
           f"({_day_name(y, x)}) and no value decides; say which with --date-order dmy (day first) or "
           "--date-order mdy (month first, as US exports)")
    raise InvalidParameterError(msg)


def _day_name(day: int, month: int) -> str:
    return f"{day} {calendar.month_name[month]}" if 1 <= month <= 12 else f"day {day} of month {month}"


#: Patterns tried on values the fixed-width ISO fast path does not take, in order (RE2 syntax, named groups
#: y mo d h mi s f ap z). Sources: ISO 8601; the forms Chinese office systems export (年月日, 时分秒,
#: slashes, dots); the US "MM/DD/YYYY hh:mm:ss AM" of 311 open-data portals; compact "YYYYMMDD[hhmmss]".
PATTERNS = (
    # 2024-03-05, 2024/3/5 14:30, 2024.3.5, 2024年3月5日 14时30分, 2024-03-05T06:30:00.5+08:00, … 下午2:30
    r"^(?P<y>\d{4})\s*[-/.年]\s*(?P<mo>\d{1,2})\s*[-/.月]\s*(?P<d>\d{1,2})\s*日?"
    r"(?:(?:\s+|T|\s*)(?P<ap1>上午|下午|晚上|凌晨|中午)?\s*(?P<h>\d{1,2})\s*[:：时点]\s*(?P<mi>\d{1,2})"
    r"(?:\s*[:：分]\s*(?P<s>\d{1,2})(?:[.,](?P<f>\d{1,9}))?)?\s*[分秒]?\s*(?P<ap>[AaPp][Mm]|上午|下午)?)?"
    r"\s*(?P<z>[Zz]|(?:UTC|GMT)?[+-]\d{1,2}(?::?\d{2})?)?$",
    # 03/05/2024 02:30:00 PM, 5.3.2024 14:30, 05-03-2024: day or month first, decided per column (DATE_ORDERS)
    SLASH_DATE
    + r"(?:\s+(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d{1,9}))?)?\s*(?P<ap>[AaPp][Mm])?)?$",
    # 20240305, 20240305143000, 20240305T1430
    r"^(?P<y>\d{4})(?P<mo>\d{2})(?P<d>\d{2})(?:[T ]?(?P<h>\d{2})(?P<mi>\d{2})(?P<s>\d{2})?)?$",
)

#: Excel stores times as days since 1899-12-30 (the 1900 date system); accepted serials span 1954–2119.
EXCEL_EPOCH = np.datetime64("1899-12-30T00:00:00", "us")
EXCEL_SERIAL_RANGE = (20_000.0, 80_000.0)

_US_PER = {"d": 86_400_000_000, "h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000}
_FAST_ROWS = 1 << 20


def parse_times(values, *, tz: str = DEFAULT_TIMEZONE, store_tz: str = DEFAULT_TIMEZONE,
                date_order: str | None = None, column: str = "time") -> tuple[np.ndarray, np.ndarray]:
    """Parse time strings into naive timestamps in the store's time zone.

    Accepted forms: ISO 8601 with or without ``T``, fraction, ``Z`` or an
    offset; ``2024年3月5日 14:30``, ``2024年3月5日``, ``2024/3/5 14:30``,
    ``2024.3.5``, ``下午2:30``; day- or month-first ``05/03/2024 14:30``,
    ``5.3.2024``, US ``03/05/2024 02:30:00 PM`` (read one way for the whole
    column: :func:`decide_date_order`); compact
    ``20240305143000``; Excel serial days (``45356.604``). Each distinct
    string is parsed once; the usual fixed-width ISO forms take a byte-level
    fast path.

    Parameters
    ----------
    values
        Strings (None or empty for missing): a numpy object array, a list, or a
        pyarrow string array.
    tz
        Time zone of values without an offset.
    store_tz
        Time zone the result is expressed in (naive wall-clock time).
    date_order
        ``dmy`` or ``mdy``: how day- or month-first dates are read (None: decided from the values, and an
        undecidable column is refused, :func:`decide_date_order`).
    column
        The column's name, for messages.

    Returns
    -------
    times, bad
        ``datetime64[us]`` (NaT where empty or unparseable) and a mask of
        non-empty values that could not be parsed.

    Raises
    ------
    InvalidParameterError
        An unknown time zone; day- or month-first dates whose order the column does not decide (without
        ``date_order``).
    """
    for name in (tz, store_tz):
        known_zone(name)
    arr = _as_arrow(values)
    n = len(arr)
    local = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
    offset = np.full(n, np.nan)  # minutes east of UTC, when the value says so
    if n == 0:
        return local, np.zeros(0, dtype=bool)
    arr = pc.utf8_trim_whitespace(arr)
    present = pc.fill_null(pc.greater(pc.binary_length(arr), 0), False).to_numpy(zero_copy_only=False)
    whole = _arrow_iso(arr)
    if whole is not None:
        local, done = whole, present
    else:
        done = _fast_iso(arr, present, local)
    rest = np.flatnonzero(present & ~done)
    if len(rest):
        sub = arr.take(pa.array(rest))
        order = decide_date_order(sub, date_order=date_order, column=column)
        _parse_distinct(sub, rest, local, offset, date_order=order or "mdy")
    has_off = ~np.isnan(offset)
    out = _to_store_zone(local, has_off, offset, tz, store_tz)
    bad = present & np.isnat(out)
    return out, bad


def zone_note(tz: str | None, store_tz: str) -> str | None:
    """A warning for an import whose times are given in ``tz`` while the store keeps another zone's wall-clock
    times (None when they agree): the hours and days the city sees are then the store's zone's."""
    if not tz or tz == store_tz:
        return None
    return (f"times given in {tz} are stored as wall-clock times of the store's zone {store_tz} (its days and "
            f"hours); a store for a city in {tz} is created with CIVICGRID_TIMEZONE={tz}")


def _as_arrow(values) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if isinstance(values, pa.Array):
        if pa.types.is_large_string(values.type) or pa.types.is_dictionary(values.type):
            values = values.cast(pa.string())
        return values
    return pa.array(np.asarray(values, dtype=object), pa.string(), from_pandas=True)


# --- fast paths: YYYY-MM-DD[( |T)HH:MM[:SS]] of fixed width ----------------------------------------------

_ISO_WIDTHS = pa.array([10, 16, 19], pa.int32())
_YEARS = (np.datetime64("1900-01-01", "us"), np.datetime64("2201-01-01", "us"))


def _arrow_iso(arr: pa.Array) -> np.ndarray | None:
    """All values at once when every one is a fixed-width ISO form (Arrow's strict cast); else None.

    Arrow's ISO 8601 cast checks each field (month 13, 31 April, 24:00, an
    offset all fail it); the widths exclude its laxer forms (``2024-03-05 14``),
    and years outside those :func:`assemble` accepts send the column to the
    row-by-row paths.
    """
    lengths = pc.binary_length(arr)
    if lengths.null_count == len(arr) or not pc.all(pc.is_in(pc.fill_null(lengths, 19), value_set=_ISO_WIDTHS)).as_py():
        return None
    try:
        t = pc.cast(arr, pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    lo, hi = pc.min_max(t).values()
    if lo.value < _YEARS[0].astype(np.int64) or hi.value >= _YEARS[1].astype(np.int64):
        return None
    return t.to_numpy(zero_copy_only=False).astype("datetime64[us]")


def _fast_iso(arr: pa.Array, present: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Parse fixed-width ISO values byte-wise into ``out``; return the mask of values parsed."""
    done = np.zeros(len(arr), dtype=bool)
    lengths = pc.binary_length(arr).to_numpy(zero_copy_only=False)
    lengths = np.where(present, lengths, 0)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    for width in (19, 16, 10):
        idx = np.flatnonzero(lengths == width)
        if not len(idx):
            continue
        for lo in range(0, len(idx), _FAST_ROWS):
            part = idx[lo: lo + _FAST_ROWS]
            starts = offsets[part].astype(np.int64)
            if len(part) > 1 and starts[-1] - starts[0] == width * (len(part) - 1) and np.all(np.diff(starts) == width):
                m = data[starts[0]: starts[0] + width * len(part)].reshape(len(part), width)
            else:
                m = data[starts[:, None] + np.arange(width)]
            ok, t = _fixed_width(m, width)
            out[part[ok]] = t[ok]
            done[part[ok]] = True
    return done


def _fixed_width(m: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    cols = {p: m[:, p].astype(np.int64) - 48 for p in (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18) if p < width}

    class _D:  # d[:, p] without widening the whole matrix
        def __getitem__(self, key):
            return cols[key[1]]

    d = _D()
    digit_pos = [0, 1, 2, 3, 5, 6, 8, 9]
    ok = (m[:, 4] == ord("-")) & (m[:, 7] == ord("-"))
    if width >= 16:
        digit_pos += [11, 12, 14, 15]
        ok &= ((m[:, 10] == ord(" ")) | (m[:, 10] == ord("T"))) & (m[:, 13] == ord(":"))
    if width == 19:
        digit_pos += [17, 18]
        ok &= m[:, 16] == ord(":")
    for p in digit_pos:
        ok &= (d[:, p] >= 0) & (d[:, p] <= 9)
    y = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    mo = d[:, 5] * 10 + d[:, 6]
    dd = d[:, 8] * 10 + d[:, 9]
    zero = np.zeros(len(m), dtype=np.int64)
    h = d[:, 11] * 10 + d[:, 12] if width >= 16 else zero
    mi = d[:, 14] * 10 + d[:, 15] if width >= 16 else zero
    s = d[:, 17] * 10 + d[:, 18] if width == 19 else zero
    t, valid = assemble(y, mo, dd, h, mi, s, zero)
    return ok & valid, t


def assemble(y, mo, d, h, mi, s, us) -> tuple[np.ndarray, np.ndarray]:
    """Build ``datetime64[us]`` from integer components; return (times, valid mask).

    Invalid combinations (month 13, 31 April, 25:00, …) are NaT and False.
    """
    y, mo, d, h, mi, s, us = (np.asarray(a, dtype=np.int64) for a in (y, mo, d, h, mi, s, us))
    valid = ((y >= 1900) & (y <= 2200) & (mo >= 1) & (mo <= 12) & (d >= 1) & (h >= 0) & (h <= 23)
             & (mi >= 0) & (mi <= 59) & (s >= 0) & (s <= 59) & (us >= 0) & (us < 1_000_000))
    ys = np.where(valid, y, 2000)
    ms = np.where(valid, mo, 1)
    month = ((ys - 1970) * 12 + (ms - 1)).astype("datetime64[M]")
    first = month.astype("datetime64[D]")
    month_days = ((month + 1).astype("datetime64[D]") - first).astype(np.int64)
    valid &= d <= month_days
    days = first.astype("datetime64[us]") + np.where(valid, d - 1, 0).astype("timedelta64[D]")
    t = days + (h * _US_PER["h"] + mi * _US_PER["m"] + s * _US_PER["s"] + us).astype("timedelta64[us]")
    t[~valid] = np.datetime64("NaT")
    return t, valid


# --- general path: distinct values through the patterns --------------------------------------------------


def _parse_distinct(values: pa.Array, where: np.ndarray, local: np.ndarray, offset: np.ndarray, *,
                    date_order: str) -> None:
    """Parse ``values`` (placed at ``where``) once per distinct string; fill ``local`` and ``offset``."""
    enc = values.dictionary_encode()
    uniq = enc.dictionary
    codes = enc.indices.to_numpy(zero_copy_only=False)
    k = len(uniq)
    t = np.full(k, np.datetime64("NaT"), dtype="datetime64[us]")
    off = np.full(k, np.nan)
    left = np.ones(k, dtype=bool)
    for pattern in PATTERNS:
        idx = np.flatnonzero(left)
        if not len(idx):
            break
        sub = uniq.take(pa.array(idx))
        got = pc.extract_regex(sub, pattern)
        matched = got.is_valid().to_numpy(zero_copy_only=False)
        if not matched.any():
            continue
        fields = {f.name: got.field(f.name) for f in got.type}
        if "a" in fields:  # a day- or month-first date: the column's order says which field is the day
            day, month = ("a", "b") if date_order == "dmy" else ("b", "a")
            fields["d"], fields["mo"] = fields.pop(day), fields.pop(month)
        tt, oo, ok = _from_fields(fields, matched)
        hit = matched & ok
        t[idx[hit]] = tt[hit]
        off[idx[hit]] = oo[hit]
        left[idx[matched]] = False  # matched the shape: parsed or invalid (e.g. 2024-02-30), not retried
    idx = np.flatnonzero(left)
    if len(idx):
        t[idx] = _excel_serial(uniq.take(pa.array(idx)))
    local[where] = t[codes]
    offset[where] = off[codes]


def _ints(col: pa.Array, default: int) -> np.ndarray:
    s = pc.if_else(pc.equal(pc.fill_null(col, ""), ""), str(default), col)
    return pc.cast(s, pa.int64()).to_numpy(zero_copy_only=False)


def _from_fields(f: dict[str, pa.Array], matched: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(matched)
    safe = {k: pc.if_else(pa.array(matched), v, "") for k, v in f.items()}
    y, mo, d = _ints(safe["y"], 2000), _ints(safe["mo"], 1), _ints(safe["d"], 1)
    h = _ints(safe["h"], 0) if "h" in safe else np.zeros(n, np.int64)
    mi = _ints(safe["mi"], 0) if "mi" in safe else np.zeros(n, np.int64)
    s = _ints(safe["s"], 0) if "s" in safe else np.zeros(n, np.int64)
    us = np.zeros(n, np.int64)
    if "f" in safe:
        frac = pc.utf8_slice_codeunits(pc.binary_join_element_wise(safe["f"], "000000", ""), 0, 6)
        us = pc.cast(frac, pa.int64()).to_numpy(zero_copy_only=False)
    ok = np.ones(n, dtype=bool)
    for key in ("ap", "ap1"):
        if key not in safe:
            continue
        ap = pc.utf8_lower(safe[key]).to_numpy(zero_copy_only=False).astype(str)
        pm = np.isin(ap, ["pm", "下午", "晚上"])
        am = np.isin(ap, ["am", "上午", "凌晨"])
        noon = ap == "中午"
        marked = pm | am | noon
        ok &= ~marked | (h <= 12)
        h = np.where(am & (h == 12), 0, h)
        h = np.where(pm & (h < 12), h + 12, h)
        h = np.where(noon & (h < 11), h + 12, h)
    t, valid = assemble(y, mo, d, h, mi, s, us)
    off = np.full(n, np.nan)
    if "z" in safe:
        z = safe["z"].to_numpy(zero_copy_only=False).astype(str)
        has = z != ""
        if has.any():
            off[has] = [_offset_minutes(v) for v in z[has]]
            ok &= ~(has & np.isnan(off))
    return t, off, ok & valid


def _offset_minutes(text: str) -> float:
    t = text.upper().removeprefix("UTC").removeprefix("GMT")
    if t == "Z":
        return 0.0
    sign = -1 if t[0] == "-" else 1
    body = t[1:].replace(":", "")
    hours, minutes = (body, "0") if len(body) <= 2 else (body[:-2], body[-2:])
    h, m = int(hours), int(minutes)
    if h > 14 or m > 59:
        return float("nan")
    return float(sign * (h * 60 + m))


def _excel_serial(values: pa.Array) -> np.ndarray:
    """Excel serial days ("45356.604166") as timestamps (rounded to the millisecond); NaT otherwise."""
    num = pc.cast(pc.if_else(pc.match_substring_regex(values, r"^\d{5}(\.\d+)?$"), values, None), pa.float64())
    x = num.to_numpy(zero_copy_only=False)
    lo, hi = EXCEL_SERIAL_RANGE
    ok = np.isfinite(x) & (x >= lo) & (x < hi)
    out = np.full(len(x), np.datetime64("NaT"), dtype="datetime64[us]")
    ms = np.round(np.where(ok, x, 0) * 86_400_000).astype(np.int64)
    out[ok] = EXCEL_EPOCH + (ms[ok] * 1000).astype("timedelta64[us]")
    return out


# --- time zones -------------------------------------------------------------------------------------------


def _to_store_zone(local: np.ndarray, has_off: np.ndarray, offset: np.ndarray, tz: str, store_tz: str) -> np.ndarray:
    out = local.copy()
    naive = ~has_off & ~np.isnat(local)
    if tz != store_tz and naive.any():
        idx = pd.DatetimeIndex(local[naive])
        conv = idx.tz_localize(tz, ambiguous=np.ones(len(idx), dtype=bool), nonexistent="shift_forward")
        out[naive] = conv.tz_convert(store_tz).tz_localize(None).to_numpy(dtype="datetime64[us]")
    if has_off.any():
        utc = local[has_off] - (offset[has_off] * 60_000_000).astype(np.int64).astype("timedelta64[us]")
        conv = pd.DatetimeIndex(utc).tz_localize("UTC").tz_convert(store_tz).tz_localize(None)
        out[has_off] = conv.to_numpy(dtype="datetime64[us]")
    return out
