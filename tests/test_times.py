"""geo.times: the store's time zone, "now", the one parser of moments, days, the date-only end and periods."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from civicgrid.geo import times
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store, forget, writing
from civicgrid.geo.times import (
    DEFAULT_TIMEZONE,
    as_datetime,
    end_of_day,
    is_date_only,
    now_local,
    parse_day,
    parse_end,
    parse_moment,
    parse_period,
    parse_times,
    store_timezone,
)

# --- the store's zone and now ----------------------------------------------------------------------------------


def test_a_new_store_records_the_default_time_zone(tmp_path):
    path = tmp_path / "new.duckdb"
    assert store_timezone(Store(path, create=True)) == DEFAULT_TIMEZONE == "Asia/Shanghai"
    with writing(path) as con:
        assert store_timezone(con) == DEFAULT_TIMEZONE
        con.execute("UPDATE meta SET value = 'Europe/Paris' WHERE key = 'timezone'")
        assert store_timezone(con) == "Europe/Paris"
    # a store's zone never changes in civicgrid: a process reads it once per connection to the store; a zone
    # changed by hand is seen by the next connection (another process, or this one after forget)
    assert store_timezone(Store(path)) == DEFAULT_TIMEZONE == store_timezone(path)
    forget(Store(path).location)
    assert store_timezone(Store(path)) == "Europe/Paris" == store_timezone(path)
    with writing(path) as con:
        con.execute("DELETE FROM meta WHERE key = 'timezone'")
    forget(Store(path).location)
    assert store_timezone(Store(path)) == DEFAULT_TIMEZONE     # unset: the default


def test_now_is_the_wall_clock_of_the_zone_not_of_the_machine():
    for tz in (DEFAULT_TIMEZONE, "America/New_York", "UTC"):
        want = datetime.now(ZoneInfo(tz)).replace(tzinfo=None)
        got = now_local(tz=tz, precision="microsecond")
        assert got.tzinfo is None and abs(got - want) < timedelta(seconds=5)
    assert now_local().microsecond == 0
    minute = now_local(precision="minute")
    assert minute.second == minute.microsecond == 0
    with pytest.raises(InvalidParameterError, match="precision"):
        now_local(precision="hour")  # type: ignore[arg-type]


# --- one moment ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("2025-07-01", datetime(2025, 7, 1)), ("2025/7/1", datetime(2025, 7, 1)), ("2025.7.1", datetime(2025, 7, 1)),
    ("20250701", datetime(2025, 7, 1)), (" 2025-07-01T08:30 ", datetime(2025, 7, 1, 8, 30)),
    ("2025-07-01 08:30:15", datetime(2025, 7, 1, 8, 30, 15)),
    ("2025年7月1日", datetime(2025, 7, 1)), ("2025年7月1日 下午2:30", datetime(2025, 7, 1, 14, 30)),
    # an offset is converted to the store's wall-clock time (UTC+8)
    ("2025-07-01T08:30+00:00", datetime(2025, 7, 1, 16, 30)), ("2025-07-01T08:30Z", datetime(2025, 7, 1, 16, 30)),
    ("2025-07-01T08:30+08:00", datetime(2025, 7, 1, 8, 30)),
    (datetime(2025, 7, 1, 0, 30, tzinfo=UTC), datetime(2025, 7, 1, 8, 30)),
    (pd.Timestamp("2025-07-01 08:30", tz="UTC"), datetime(2025, 7, 1, 16, 30)),
    (datetime(2025, 7, 1, 8, 30), datetime(2025, 7, 1, 8, 30)), (pd.Timestamp("2025-07-01 08:30"),
                                                                 datetime(2025, 7, 1, 8, 30)),
    (date(2025, 7, 1), datetime(2025, 7, 1)), (np.datetime64("2025-07-01T08:30"), datetime(2025, 7, 1, 8, 30)),
])
def test_year_first_moments_are_read(value, expected):
    got = parse_moment(value)
    assert got == expected and type(got) is datetime and got.tzinfo is None


def test_offsets_go_to_the_zone_asked_for():
    assert parse_moment("2025-07-01T12:00Z", tz="America/New_York") == datetime(2025, 7, 1, 8, 0)


@pytest.mark.parametrize("text", ["01/03/2025", "1/3/2025", "03-01-2025", "1.3.2025", "01/03/25"])
def test_day_or_month_first_is_refused_as_ambiguous(text):
    with pytest.raises(InvalidParameterError, match=r"start='.*' is ambiguous \(day or month first\?\); "
                                                    r"start must be a date .*the year first"):
        parse_moment(text, name="start")


@pytest.mark.parametrize("text", ["March 1, 2025", "1 Mar 2025", "yesterday", "45356", "now"])
def test_other_texts_are_refused(text):
    with pytest.raises(InvalidParameterError, match="not a date with the year first"):
        parse_moment(text, name="as_of")


@pytest.mark.parametrize("text", ["2025-13-01", "2025-02-30", "2025年13月1日", "2025-07-01T25:00"])
def test_impossible_dates_are_refused(text):
    with pytest.raises(InvalidParameterError, match="not a date or time"):
        parse_moment(text)


@pytest.mark.parametrize("value", [None, "", "  ", pd.NaT, np.datetime64("NaT")])
def test_a_moment_is_required(value):
    with pytest.raises(InvalidParameterError, match="as_of is required"):
        parse_moment(value, name="as_of")
    if value is None or isinstance(value, str):
        assert as_datetime(value, name="as_of") is None   # optional: nothing stays nothing


def test_every_entry_point_reads_moments_the_same_way():
    """The filters, risk, KPIs, cases and patrols all read moments with parse_moment."""
    from civicgrid.geo.aggregate import EventFilter
    from civicgrid.sites.patrol import patrol_day
    from civicgrid.sites.risk import parse_as_of

    for text in ("2025-07-01T08:30+00:00", "2025/7/1 16:30", "2025年7月1日 下午4:30"):
        want = datetime(2025, 7, 1, 16, 30)
        start = EventFilter(start=text).start  # an offset is kept until validate(store) knows the store's zone
        assert (times.stored_moment(start) if start.tzinfo else start) == want
        assert parse_as_of(text) == parse_moment(text) == want
        assert patrol_day(text) == datetime(2025, 7, 1)
    for bad in ("07/01/2025", "01/07/2025"):
        for read in (lambda v: EventFilter(start=v), parse_as_of, patrol_day, parse_moment):
            with pytest.raises(InvalidParameterError, match="year first"):
                read(bad)


# --- days, the date-only end, periods ----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "date_only"), [
    ("2025-07-01", True), ("2025/7/1", True), ("2025.07.01", True), ("2025年7月1日", True), ("20250701", True),
    (date(2025, 7, 1), True), ("2025-07-01T00:00", False), ("2025-07-01 08:00", False), ("2025-07", False),
    (datetime(2025, 7, 1), False), (pd.Timestamp("2025-07-01"), False), (None, False),
])
def test_date_only(value, date_only):
    assert is_date_only(value) is date_only


def test_a_date_only_end_includes_that_day():
    nxt = datetime(2025, 7, 2)
    assert end_of_day(date(2025, 7, 1)) == nxt
    for end in ("2025-07-01", "2025/7/1", "2025年7月1日", "20250701", date(2025, 7, 1)):
        assert parse_end(end) == nxt
    assert parse_end("2025-07-01T00:00") == datetime(2025, 7, 1)          # a date-time is the exclusive end
    assert parse_end(datetime(2025, 7, 1, 12)) == datetime(2025, 7, 1, 12)
    assert parse_end("2025-12-31") == datetime(2026, 1, 1)
    assert parse_end(None) is None and parse_end(" ") is None
    with pytest.raises(InvalidParameterError, match="year first"):
        parse_end("31/12/2025")


def test_days():
    assert parse_day("2025/7/1") == parse_day(datetime(2025, 7, 1, 23, 59)) == date(2025, 7, 1)
    assert parse_day("2025-07-01T02:00+08:00", tz="UTC") == date(2025, 6, 30)
    with pytest.raises(InvalidParameterError, match="date is required: a day like"):
        parse_day("", name="date")


@pytest.mark.parametrize(("period", "first", "stop", "label"), [
    ("2024-03", date(2024, 3, 1), date(2024, 4, 1), "2024-03"),
    ("2024-2", date(2024, 2, 1), date(2024, 3, 1), "2024-02"),
    ("2024-Q4", date(2024, 10, 1), date(2025, 1, 1), "2024-Q4"),
    ("2024q1", date(2024, 1, 1), date(2024, 4, 1), "2024-Q1"),
    ("2024", date(2024, 1, 1), date(2025, 1, 1), "2024"),
    ("2024-03-05", date(2024, 3, 5), date(2024, 3, 6), "2024-03-05"),
    ("2024/3/5", date(2024, 3, 5), date(2024, 3, 6), "2024-03-05"),
    ("2024-03-01..2024/3/31", date(2024, 3, 1), date(2024, 4, 1), "2024-03"),
    ("2024年1月1日..2024年12月31日", date(2024, 1, 1), date(2025, 1, 1), "2024"),
])
def test_periods(period, first, stop, label):
    assert parse_period(period) == (first, stop, label)


def test_period_errors():
    for bad in ("2024-13", "March", "2024-03-10..2024-03-01", "03/2024", "01/03/2024", "2024-03-05T10:00"):
        with pytest.raises(InvalidParameterError):
            parse_period(bad)
    with pytest.raises(InvalidParameterError, match="the year first"):
        parse_period("01/03/2024")
    assert parse_period(None, start=date(2024, 3, 1), end="2024/3/31")[:2] == (date(2024, 3, 1), date(2024, 4, 1))
    with pytest.raises(InvalidParameterError, match="give a period"):
        parse_period(None, start="2024-03-01")


# --- time columns of files ---------------------------------------------------------------------------------------


def test_file_columns_also_take_the_forms_of_other_systems():
    """parse_times reads whole columns of city files, which also come as US month-first (said with date_order
    when no value of the column proves it) and Excel serials."""
    got, bad = parse_times(["2024-03-05 14:30:00", "03/05/2024 02:30:00 PM", "45356.5", "2024年3月5日 下午2:30",
                            "2024-03-05T06:30:00Z", "", "not a time"], date_order="mdy")
    want = np.array(["2024-03-05T14:30", "2024-03-05T14:30", "2024-03-05T12:00", "2024-03-05T14:30",
                     "2024-03-05T14:30", "NaT", "NaT"], dtype="datetime64[us]")
    np.testing.assert_array_equal(got, want)
    assert bad.tolist() == [False] * 6 + [True]
    with pytest.raises(InvalidParameterError, match="unknown time zone"):
        parse_times(["2024-03-05"], tz="Mars/Olympus")
    assert times.DEFAULT_TIMEZONE in parse_times.__kwdefaults__.values()


def test_decide_date_order_finds_day_or_month_first_dates_among_iso_values():
    """decide_date_order passes over values beginning with three digits (no day- or month-first date does: at most
    two digits come before its first separator) without trimming or matching them; a slash date among them still
    decides the column's order, leading spaces, one-digit fields and other separators included."""
    iso = ["2024-03-05 14:30:00", "2024-03-06", "20240307", "  2024-03-08"] * 3
    assert times.decide_date_order(iso) is None
    assert times.decide_date_order([*iso, "  13/02/2025 08:00"]) == "dmy"
    assert times.decide_date_order([*iso, None, "", "02/13/2025"]) == "mdy"
    assert times.decide_date_order([*iso, "3.1.2025", "13-1-2025"]) == "dmy"
    assert times.decide_date_order(["123/01/2025", "999/13/2025", *iso]) is None  # three digits: no such date
    with pytest.raises(InvalidParameterError, match="--date-order"):  # only dates that read both ways
        times.decide_date_order([*iso, "1/3/2025"])


def test_now_is_the_wall_clock_of_the_stores_own_zone(tmp_path, monkeypatch):
    """A store made for San Francisco (CIVICGRID_TIMEZONE at creation), used later without the variable: a case
    opened now, its move, a user, a visit and the scorecard's "generated" time are San Francisco's wall-clock
    time, as the store keeps its times (they were Shanghai's, 15-16 hours ahead: a case opened "now" lay in the
    city's future)."""
    from civicgrid.geo.users import add_user
    from civicgrid.sites.cases import create_case, transition
    from civicgrid.sites.reports import scorecard_page
    from civicgrid.sites.visits import record_visit

    db = tmp_path / "sf.duckdb"
    monkeypatch.setenv("CIVICGRID_TIMEZONE", "America/Los_Angeles")
    Store(db, create=True)
    monkeypatch.delenv("CIVICGRID_TIMEZONE")
    with writing(db) as con:
        con.execute("INSERT INTO sites (site_id, name, category_code, lng, lat) VALUES (1, 'a', '01', -122.4, 37.8)")

    def sf_now() -> datetime:
        return datetime.now(ZoneInfo("America/Los_Angeles")).replace(tzinfo=None)

    def near_now(moment) -> bool:
        return abs(pd.Timestamp(moment).to_pydatetime() - sf_now()) < timedelta(minutes=2)

    before = sf_now()
    case = create_case(db, actor="甲", problem_type="0201", lng=-122.41, lat=37.77)
    assert near_now(case["found_at"]) and near_now(case["updated_at"])
    moved = transition(db, case["case_id"], "register", actor="乙")
    assert near_now(moved["log"][-1]["changed_at"]) and near_now(moved["updated_at"])
    user, _ = add_user(db, "丙", role="inspector")
    assert near_now(user["created_at"])
    visit = record_visit(db, site_id=1, inspector="丁", conforming=True)
    assert near_now(visit["time"])
    page = scorecard_page(Store(db), period=f"{before:%Y-%m}", lang="en")
    shown = {f"{before:%Y-%m-%d %H:%M}", f"{sf_now():%Y-%m-%d %H:%M}"}
    assert any(f"Generated {t}" in page for t in shown)
    assert abs(datetime.now(ZoneInfo("Asia/Shanghai")).replace(tzinfo=None) - sf_now()) > timedelta(hours=14)


def _sf_store_of_two_events(tmp_path, monkeypatch):
    """A store made for San Francisco (its zone set at creation, used without the variable after) holding two
    events of 1 March 2024, at 00:30 and 23:30 there."""
    from civicgrid.sites.events import import_events

    db = tmp_path / "sf.duckdb"
    pd.DataFrame({"id": ["a", "b"], "time": ["2024-03-01 00:30:00", "2024-03-01 23:30:00"], "lng": [-122.41, -122.42],
                  "lat": [37.77, 37.78]}).to_csv(tmp_path / "e.csv", index=False)
    monkeypatch.setenv("CIVICGRID_TIMEZONE", "America/Los_Angeles")
    import_events(tmp_path / "e.csv", db=db, progress=False)
    monkeypatch.delenv("CIVICGRID_TIMEZONE")
    return db


def test_the_api_reads_a_time_with_an_offset_in_the_stores_zone(tmp_path, monkeypatch):
    """``start=2024-03-01T08:00:00Z`` on a San Francisco store is midnight there (it was read as Shanghai's 16:00,
    a day's events of difference)."""
    from civicgrid.api.app import create_app
    from fastapi.testclient import TestClient

    db = _sf_store_of_two_events(tmp_path, monkeypatch)
    client = TestClient(create_app(db))

    def total(start: str) -> int:
        r = client.get("/api/heatmap", params={"res": 7, "start": start, "end": "2024-03-02T08:00:00Z"})
        assert r.status_code == 200, r.text
        return r.json()["total_events"]

    assert total("2024-03-01T08:00:00Z") == 2  # 00:00 in San Francisco
    assert total("2024-03-01T16:00:00Z") == 1  # 08:00 there
    assert total("2024-03-01 00:00") == 2  # a time without an offset is the store's wall-clock time as it is


def test_an_event_filter_reads_a_time_with_an_offset_in_the_stores_zone(tmp_path, monkeypatch):
    """An analyst's ``EventFilter(start="2024-03-01T08:00:00Z")`` (or an aware Timestamp) on a San Francisco store
    is midnight there, as in the API (the filter, made before it knows its store, read it as Shanghai's 16:00);
    ``overdue`` is judged at San Francisco's "now", not Shanghai's (15-16 hours later)."""
    from civicgrid.geo.aggregate import EventFilter, heatmap_frame
    from civicgrid.geo.events import query_events

    db = _sf_store_of_two_events(tmp_path, monkeypatch)
    store = Store(db)

    def total(**times) -> int:
        got = query_events(store, filters=EventFilter(**times), limit=10).attrs["total"]
        cells = heatmap_frame(store, res=7, filters=EventFilter(**times))
        assert int(cells["count"].sum()) == got
        return got

    assert total(start="2024-03-01T08:00:00Z", end="2024-03-02T08:00:00Z") == 2  # 00:00 in San Francisco
    assert total(start="2024-03-01T16:00:00+00:00") == 1  # 08:00 there
    assert total(start=pd.Timestamp("2024-03-01 16:00", tz="UTC"), end=datetime(2024, 3, 2)) == 1
    assert total(start="2024-03-01 00:00") == 2  # without an offset: the store's wall-clock time as it is
    f = EventFilter(start="2024-03-01T16:00:00Z")
    assert not f.validated
    with pytest.raises(InvalidParameterError, match="validate"):
        f.where()
    assert f.validate(store).start == datetime(2024, 3, 1, 8)
    with pytest.raises(InvalidParameterError, match="must be before end"):  # checked once both are wall-clock
        EventFilter(start="2024-03-02T00:00:00Z", end=datetime(2024, 3, 1, 12)).validate(store)
    overdue = EventFilter(status="overdue").validate(store).as_of
    sf_now = datetime.now(ZoneInfo("America/Los_Angeles")).replace(tzinfo=None)
    assert abs(overdue - sf_now) < timedelta(minutes=2)


def test_site_risk_reads_an_aware_as_of_in_the_stores_zone(tmp_path, monkeypatch):
    """An analyst's ``as_of=pd.Timestamp(..., tz="UTC")`` on a San Francisco store is that moment on the city's
    clock (08:00 UTC is midnight there; it was read as Shanghai's 16:00)."""
    from civicgrid.sites.risk import site_risk
    from civicgrid.sites.risk.components import parse_as_of

    db = tmp_path / "sf.duckdb"
    monkeypatch.setenv("CIVICGRID_TIMEZONE", "America/Los_Angeles")
    Store(db, create=True)
    monkeypatch.delenv("CIVICGRID_TIMEZONE")
    ranked = site_risk(Store(db), as_of=pd.Timestamp("2015-01-01 08:00", tz="UTC"))
    assert pd.Timestamp(ranked.attrs["as_of"]) == pd.Timestamp("2015-01-01 00:00")
    assert parse_as_of("2015-01-01T08:00:00+00:00", tz="America/Los_Angeles") == datetime(2015, 1, 1)
    assert parse_as_of("2015-01-01") == datetime(2015, 1, 1)  # a day: midnight, whatever the zone
