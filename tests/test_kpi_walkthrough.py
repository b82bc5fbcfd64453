"""Follow-ups of a README walk-through (cases, KPIs, flags, simulator, reports, users): each test is a bug found."""

from __future__ import annotations

import re
from datetime import date, datetime

import pandas as pd
import pytest
from civicgrid.geo.errors import AuthenticationError, InvalidParameterError, NotFoundError
from civicgrid.geo.store import Store
from civicgrid.geo.store_files import copy_store
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def store(demo_db) -> Store:
    return Store(demo_db)


@pytest.fixture(scope="module")
def client(demo_db):
    from civicgrid.api.app import create_app

    return TestClient(create_app(demo_db))


# --- unknown area / site codes were a silent empty answer ---


def test_list_cases_refuses_unknown_area_and_site(store):
    from civicgrid.sites.cases import list_cases

    district = store.sql("SELECT min(code) AS c FROM areas WHERE level = 'district'")["c"].iloc[0]
    got = list_cases(store, area=district, limit=50)
    assert len(got) == 50 and (got["district_code"] == district).all()
    with pytest.raises(NotFoundError, match=r"unknown area or grid code '999'; closest known"):
        list_cases(store, area="999")
    with pytest.raises(NotFoundError, match="no site 999999"):
        list_cases(store, site_id=999_999)


def test_cases_and_flags_api_answer_404_for_an_unknown_area(demo_db, client):
    from civicgrid.geo.users import add_user

    path = demo_db.parent / "walk_users.duckdb"
    copy_store(demo_db, path)
    from civicgrid.api.app import create_app

    c = TestClient(create_app(path))
    token = add_user(path, "viewer1", role="viewer")[1]
    r = c.get("/api/cases?area=999", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 404 and "closest known" in r.json()["detail"]
    r = client.get("/api/kpis/flags?as_of=2025-12-01&area=999")
    assert r.status_code == 404 and "closest known" in r.json()["detail"]
    street = Store(demo_db).sql("SELECT min(code) AS c FROM areas WHERE level = 'street'")["c"].iloc[0]
    sites = client.get(f"/api/kpis/flags?as_of=2025-12-01&area={street}").json()["sites"]
    assert sites and all(s["street_code"] == street for s in sites)


# --- the flags answer named no as_of when it defaulted to now ---


def test_flags_report_the_moment_used(client, monkeypatch):
    import civicgrid.sites.kpis as kp

    monkeypatch.setattr(kp, "now_local", lambda **_: datetime(2025, 12, 1, 9, 30))
    body = client.get("/api/kpis/flags").json()
    assert body["as_of"] == "2025-12-01T09:30:00"
    assert client.get("/api/kpis/flags?as_of=2025-12-01").json()["as_of"] == "2025-12-01T00:00:00"
    same = client.get("/api/kpis/flags?as_of=2025-12-01T09:30").json()
    assert same["counts"] == body["counts"]


# --- an as_of before the period gave a report of zeros ---


def test_kpis_refuse_an_as_of_before_the_period(store, client, monkeypatch):
    from civicgrid.sites.kpis import kpi_table, kpi_totals

    with pytest.raises(InvalidParameterError, match="before the period starts"):
        kpi_table(store, start="2024-03-01", end="2024-04-01", as_of="2024-02-01")
    with pytest.raises(InvalidParameterError, match="before the period starts"):
        kpi_totals(store, start="2024-03-01", end="2024-04-01", as_of="2024-02-01")
    # a period in the future: "now" is before it
    import civicgrid.sites.kpis as kp

    monkeypatch.setattr(kp, "now_local", lambda **_: datetime(2025, 12, 1, 9, 30))
    with pytest.raises(InvalidParameterError, match=r"now \(2025-12-01 09:30:00\) is before"):
        kpi_table(store, start="2026-03-01", end="2026-04-01")
    # as_of inside the period still works: the period up to then
    part = kpi_totals(store, start="2024-03-01", end="2024-04-01", as_of="2024-03-16")
    whole = kpi_totals(store, start="2024-03-01", end="2024-04-01")
    assert 0 < part["found"] < whole["found"]
    assert client.get("/api/reports/2024-03.xlsx?as_of=2024-02-01").status_code == 422
    assert client.get("/api/kpis?period=2024-03&as_of=2024-02-01").status_code == 422


# --- "now" was the machine's clock, not the store's time zone ---


def test_current_month_and_generated_time_use_the_store_time_zone(store, client, monkeypatch, tmp_path):
    import civicgrid.sites.cases as cs
    import civicgrid.sites.kpis as kp
    import civicgrid.sites.reports as rp
    from civicgrid.sites.reports import build_report

    # 2025-04-01 04:00 in Shanghai is still 2025-03-31 on a UTC machine
    monkeypatch.setattr(cs, "now_local", lambda **_: datetime(2025, 4, 1, 4, 0))
    monkeypatch.setattr(kp, "now_local", lambda **_: datetime(2025, 4, 1, 4, 0))
    monkeypatch.setattr(rp, "now_local", lambda **_: datetime(2025, 4, 1, 4, 0))
    body = client.get("/api/kpis?level=district").json()
    assert (body["start"], body["end"]) == ("2025-04-01", "2025-04-30")
    paths = build_report(store, period="2024-03", level="district", out_dir=tmp_path)
    from openpyxl import load_workbook

    notes = {r[0]: r[1] for r in load_workbook(paths["xlsx"])["说明"].iter_rows(values_only=True)}
    assert notes["生成时间"] == "2025-04-01 04:00"
    assert "生成时间 2025-04-01 04:00" in paths["html"].read_text(encoding="utf-8")


# --- tied units got different ranks in the scorecard ---


def test_scorecard_ties_share_a_rank(store):
    from civicgrid.sites.kpis import kpi_table
    from civicgrid.sites.reports import scorecard_page

    page = scorecard_page(store, period="2024-03", level="grid")
    got = re.findall(r'data-code="(\d+)">\s*<td>(\d+)</td>', page)
    assert got, "no ranked rows found"
    table = kpi_table(store, start="2024-03-01", end="2024-04-01", level="grid").set_index("code")
    values = table["on_time_closure_rate"]
    for code, rank in got:
        v = values[code]
        better = (values > v).sum() if pd.notna(v) else values.notna().sum()
        assert int(rank) == better + 1, (code, v, rank)
    assert len({r for _, r in got}) < len(got)  # the demo has ties (e.g. several grids at 100 %)


def test_report_download_has_the_cli_file_name(client):
    r = client.get("/api/reports/2024-03.xlsx?level=street")
    assert r.status_code == 200
    assert r.headers["content-disposition"].endswith("''report_2024-03_street.xlsx")
    r = client.get("/api/reports/2024-03-01..2024-03-15.xlsx?level=grid")
    assert r.headers["content-disposition"].endswith("''report_2024-03-01_2024-03-15_grid.xlsx")


# --- the simulator read 2024/06/30 as midnight but 2024-06-30 as the end of the day ---


def test_simulator_dates_mean_the_end_of_the_day_however_written(store):
    from civicgrid.sites.simulator import site_state

    iso = site_state(store, as_of="2025-06-30")
    for text in ("2025/06/30", "2025/6/30", "2025年6月30日", date(2025, 6, 30)):
        pd.testing.assert_frame_equal(site_state(store, as_of=text), iso)
    assert not site_state(store, as_of="2025-06-30T00:00").equals(iso)
    with pytest.raises(InvalidParameterError, match="as_of must be a date"):
        site_state(store, as_of="tomorrow")


# --- a disabled user's token: say so ---


def test_disabled_user_is_named_and_a_new_token_re_enables(tmp_path, demo_db):
    from civicgrid.geo.users import add_user, authenticate, new_token, set_active

    path = tmp_path / "u.duckdb"
    copy_store(demo_db, path)
    token = add_user(path, "王伟", role="inspector")[1]
    set_active(path, "王伟", active=False)
    with pytest.raises(AuthenticationError, match="user '王伟' is disabled"):
        authenticate(Store(path), token)
    with pytest.raises(AuthenticationError, match="invalid or revoked token"):
        authenticate(Store(path), "cg_nothing")
    fresh = new_token(path, "王伟")
    assert authenticate(Store(path), fresh)["name"] == "王伟"
    with pytest.raises(AuthenticationError, match="invalid or revoked"):
        authenticate(Store(path), token)
