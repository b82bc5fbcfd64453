"""Period reports: the XLSX workbook (sheets, headers, totals, lagging fills) and the HTML scorecard with its map."""

from __future__ import annotations

import html
import io
import json
import math
import re
from datetime import date

import numpy as np
import pandas as pd
import pytest
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.geo.store_files import copy_store
from civicgrid.maps.offline import external_urls, vendor_path
from civicgrid.sites import reports as rp
from openpyxl import load_workbook

from conftest import build_toronto


def fake_kpi_table(store, *, start, end, level, as_of=None, lang="zh"):
    """A KPI table of the documented shape with consistent counts and rates (random, seeded per level)."""
    if level == "category":
        units = store.sql("SELECT code, name_zh AS name, name_en FROM site_categories ORDER BY code")
    elif level == "grid":
        units = store.sql("SELECT code, name, name AS name_en FROM grids ORDER BY code")
    else:
        units = store.sql("SELECT code, name, name_en FROM areas WHERE level = ? ORDER BY code", [level])
    rng = np.random.default_rng(len(units))
    n = len(units)
    found = rng.integers(0, 60, n)
    found[0] = 0  # a unit with nothing found: its rates are undefined
    rect = (found * rng.uniform(0.5, 1, n)).astype(int)
    due = rng.integers(0, 50, n)
    due[0] = 0
    closed = (due * rng.uniform(0.4, 1, n)).astype(int)
    on_time = (closed * rng.uniform(0.5, 1, n)).astype(int)
    rework = (rect * rng.uniform(0, 0.3, n)).astype(int)
    rebounds = (closed * rng.uniform(0, 0.2, n)).astype(int)

    def ratio(a, b):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / np.maximum(b, 1), np.nan)

    return pd.DataFrame({
        "code": units["code"], "name": units["name_en"] if lang == "en" else units["name"],
        "found": found, "rectified": rect, "rectification_rate": ratio(rect, found),
        "due": due, "closed": closed, "closed_on_time": on_time, "closure_rate": ratio(closed, due),
        "on_time_closure_rate": ratio(on_time, due), "reworked": rework, "rework_rate": ratio(rework, rect),
        "rebounds": rebounds, "rebound_rate": ratio(rebounds, closed),
        "mean_hours_to_rectify": np.where(rect > 0, rng.uniform(2, 100, n), np.nan),
        "median_hours_to_rectify": np.where(rect > 0, rng.uniform(2, 80, n), np.nan),
        "open": rng.integers(0, 10, n), "overdue": rng.integers(0, 5, n), "no_deadline": rng.integers(0, 3, n),
    })


@pytest.fixture(scope="module")
def store(demo_db) -> Store:
    return Store(demo_db)


@pytest.fixture(scope="module")
def built(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = rp.build_report(store, period="2024-03", level="street", out_dir=out, kpi_table=fake_kpi_table)
    return paths


# --- period, totals, lagging rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(("period", "first", "stop", "label"), [
    ("2024-03", date(2024, 3, 1), date(2024, 4, 1), "2024-03"),
    ("2024-02", date(2024, 2, 1), date(2024, 3, 1), "2024-02"),
    ("2024-Q4", date(2024, 10, 1), date(2025, 1, 1), "2024-Q4"),
    ("2024q1", date(2024, 1, 1), date(2024, 4, 1), "2024-Q1"),
    ("2024", date(2024, 1, 1), date(2025, 1, 1), "2024"),
    ("2024-03-05", date(2024, 3, 5), date(2024, 3, 6), "2024-03-05"),
    ("2024-03-01..2024-03-15", date(2024, 3, 1), date(2024, 3, 16), "2024-03-01..2024-03-15"),
    ("2024-04-01..2024-06-30", date(2024, 4, 1), date(2024, 7, 1), "2024-Q2"),
    ("2024-02-01..2024-04-30", date(2024, 2, 1), date(2024, 5, 1), "2024-02-01..2024-04-30"),
])
def test_parse_period(period, first, stop, label):
    assert rp.parse_period(period) == (first, stop, label)


def test_parse_period_errors():
    for bad in ("2024-13", "March", "2024-03-10..2024-03-01"):
        with pytest.raises(InvalidParameterError):
            rp.parse_period(bad)
    assert rp.parse_period(None, start="2024-03-01", end="2024-03-31")[:2] == (date(2024, 3, 1), date(2024, 4, 1))
    with pytest.raises(InvalidParameterError, match="period"):
        rp.parse_period(None)


def small_table() -> pd.DataFrame:
    df = pd.DataFrame({
        "code": ["a", "b", "c", "d", "e"], "name": list("ABCDE"),
        "found": [10, 20, 0, 5, 8], "rectified": [8, 10, 0, 5, 2],
        "due": [10, 10, 0, 4, 5], "closed": [9, 5, 0, 4, 2], "closed_on_time": [9, 4, 0, 2, 2],
        "reworked": [1, 2, 0, 0, 1], "rebounds": [0, 1, 0, 2, 0],
        "mean_hours_to_rectify": [10.0, 40.0, np.nan, 4.0, 7.0],
        "median_hours_to_rectify": [9.0, 30.0, np.nan, 4.0, 6.0], "open": [1, 5, 0, 0, 3], "overdue": [0, 3, 0, 0, 1],
        "no_deadline": [0, 2, 0, 1, 0],
    })
    with np.errstate(invalid="ignore", divide="ignore"):
        df["rectification_rate"] = df["rectified"] / df["found"].where(df["found"] > 0)
        df["closure_rate"] = df["closed"] / df["due"].where(df["due"] > 0)
        df["on_time_closure_rate"] = df["closed_on_time"] / df["due"].where(df["due"] > 0)
        df["rework_rate"] = df["reworked"] / df["rectified"].where(df["rectified"] > 0)
        df["rebound_rate"] = df["rebounds"] / df["closed"].where(df["closed"] > 0)
    return df[list(rp.KPI_COLUMNS)]


def test_totals_recompute_rates_from_parts():
    tot = rp.totals(small_table())
    assert tot["found"] == 43 and tot["due"] == 29 and tot["overdue"] == 4 and tot["no_deadline"] == 3
    assert tot["rectification_rate"] == pytest.approx(25 / 43)
    assert tot["closure_rate"] == pytest.approx(20 / 29)
    assert tot["on_time_closure_rate"] == pytest.approx(17 / 29)
    assert tot["rework_rate"] == pytest.approx(4 / 25)
    assert tot["rebound_rate"] == pytest.approx(3 / 20)
    assert tot["mean_hours_to_rectify"] == pytest.approx((8 * 10 + 10 * 40 + 5 * 4 + 2 * 7) / 25)
    assert tot["median_hours_to_rectify"] is None


def test_totals_follow_the_tables_denominator():
    df = small_table()
    df["rebound_rate"] = df["rebounds"] / df["found"].where(df["found"] > 0)  # another definition
    assert rp.totals(df)["rebound_rate"] == pytest.approx(3 / 43)


def test_lagging_rule():
    df = small_table()
    # on-time closure (higher is better): values a 0.9, b 0.4, c NaN, d 0.5, e 0.4 -> worst quarter of 4 = 1 unit,
    # ties included: b and e
    assert list(rp.lagging_mask(df, "on_time_closure_rate")) == [False, True, False, False, True]
    # overdue (lower is better): a 0, b 3, c 0, d 0, e 1 -> worst ceil(5/4)=2: b and e
    assert list(rp.lagging_mask(df, "overdue")) == [False, True, False, False, True]
    # mean hours (lower is better): b is the slowest
    assert list(rp.lagging_mask(df, "mean_hours_to_rectify")) == [False, True, False, False, False]
    same = df.assign(closure_rate=1.0)
    assert not rp.lagging_mask(same, "closure_rate").any()
    with pytest.raises(InvalidParameterError, match="on_time_closure_rate"):
        rp.lagging_mask(df, "on_time_closure")


def independent_lagging(values: pd.Series, lower_better: bool) -> np.ndarray:
    v = pd.to_numeric(values, errors="coerce")
    s = -v if lower_better else v
    valid = s.dropna()
    m = max(1, math.ceil(0.25 * len(valid)))
    cut = valid.nsmallest(m).max()
    return ((s <= cut) & (s < valid.max())).fillna(False).to_numpy()


# --- the workbook ----------------------------------------------------------------------------------------------


def test_workbook_sheets_headers_totals_and_fills(built, store):
    wb = load_workbook(built["xlsx"])
    assert wb.sheetnames == ["区县", "街道", "社区", "网格", "点位类别", "说明"]
    assert wb.active.title == "街道"
    for level, sheet in zip(rp.LEVELS, wb.sheetnames, strict=False):  # the last sheet holds the notes
        ws = wb[sheet]
        expected = fake_kpi_table(store, start=None, end=None, level=level)
        heads = [c.value for c in ws[1]]
        assert heads[:2] == ["编码", "名称"] and heads[-1] == "状态"
        assert "按期结案率" in heads and "整改率" in heads and "超期数" in heads
        assert ws.freeze_panes == "C2"
        assert ws.max_row == len(expected) + 2  # header + units + totals
        codes = [ws.cell(r, 1).value for r in range(2, ws.max_row)]
        assert codes == list(expected["code"].astype(str))
        col = {h: i + 1 for i, h in enumerate(heads)}
        total = ws.max_row
        assert ws.cell(total, 1).value == "合计"
        assert ws.cell(total, col["发现数"]).value == expected["found"].sum()
        assert ws.cell(total, col["按期结案率"]).value == pytest.approx(
            expected["closed_on_time"].sum() / expected["due"].sum())
        assert ws.cell(total, col["整改率"]).value == pytest.approx(
            expected["rectified"].sum() / expected["found"].sum())
        assert ws.cell(2, col["按期结案率"]).number_format == "0.0%"
        assert ws.cell(total, col["整改率"]).number_format == "0.0%"
        # lagging rows: red fill on every cell, the 落后 mark; other rows unfilled
        lag = independent_lagging(expected["on_time_closure_rate"], lower_better=False)
        assert lag.any() and not lag.all()
        for i, is_lagging in enumerate(lag):
            row = i + 2
            fills = {ws.cell(row, j).fill.fgColor.rgb for j in range(1, len(heads) + 1)}
            if is_lagging:
                assert fills == {"00" + rp.LAG_FILL}, (sheet, row)
                assert ws.cell(row, len(heads)).value == "落后"
            else:
                assert ws.cell(row, 1).fill.fill_type is None, (sheet, row)
                assert ws.cell(row, len(heads)).value is None
        assert len(ws.conditional_formatting) == 1
    grid = wb["网格"]
    heads = [c.value for c in grid[1]]
    assert heads[2:5] == ["区县", "街道", "社区"]
    names = store.sql("SELECT g.code, s.name AS street FROM grids g JOIN areas s ON s.code = g.street_code")
    first = grid.cell(2, 1).value
    assert grid.cell(2, 4).value == names.set_index("code").loc[first, "street"]


def test_workbook_in_english_with_another_kpi(store, tmp_path):
    paths = rp.build_report(store, period="2024-Q1", level="grid", out_dir=tmp_path, kpi="overdue", lang="en",
                            kpi_table=fake_kpi_table)
    assert paths["xlsx"].name == "report_2024-Q1_grid.xlsx" and paths["html"].name == "scorecard_2024-Q1_grid.html"
    wb = load_workbook(paths["xlsx"])
    assert wb.sheetnames == ["District", "Street", "Community", "Grid", "Site category", "Notes"]
    assert wb.active.title == "Grid"
    ws = wb["Street"]
    heads = [c.value for c in ws[1]]
    assert heads[:3] == ["Code", "Name", "District"] and "On-time closure rate" in heads
    assert ws.cell(ws.max_row, 1).value == "Total"
    expected = fake_kpi_table(store, start=None, end=None, level="street", lang="en")
    lag = independent_lagging(expected["overdue"], lower_better=True)
    got = [ws.cell(r, len(heads)).value == "lagging" for r in range(2, ws.max_row)]
    assert got == list(lag)
    assert ws.cell(2, 2).value == expected["name"].iloc[0]


# --- the scorecard --------------------------------------------------------------------------------------------


def map_document(page: str) -> str:
    m = re.search(r'<iframe[^>]*srcdoc="([^"]*)"', page)
    assert m, "the scorecard embeds the map in an iframe"
    return html.unescape(m.group(1))


def map_features(doc: str) -> list[dict]:
    m = re.search(r"geo_json_\w+_add\(", doc)
    data, _ = json.JSONDecoder().raw_decode(doc, m.end())
    return data["features"]


def test_scorecard_file_is_standalone_with_every_grid(built, store):
    page = built["html"].read_text(encoding="utf-8")
    doc = map_document(page)
    assert "/static/vendor" not in doc  # Leaflet is inlined: the file opens without the service
    own = doc
    for name in ("leaflet.js", "leaflet.css", "jquery.min.js"):  # the inlined libraries, verbatim
        body = vendor_path(name).read_text(encoding="utf-8").replace("</script", "<\\/script")
        assert body in own, name
        own = own.replace(body, "")
    assert external_urls(page) == [] and external_urls(own) == []  # nothing loaded from outside
    assert re.findall(r"https?://", own) == []
    assert "L.tileLayer" not in doc  # no tile layer: nothing on the page needs internet
    features = map_features(doc)
    grids = store.sql("SELECT code FROM grids WHERE geom IS NOT NULL")
    assert sorted(f["properties"]["code"] for f in features) == sorted(grids["code"])
    assert {f["geometry"]["type"] for f in features} <= {"Polygon", "MultiPolygon"}
    # colours follow the KPI of each grid
    table = fake_kpi_table(store, start=None, end=None, level="grid").set_index("code")
    rates = table["on_time_closure_rate"]
    lo, hi = rates.min(), rates.max()  # the scale spans the observed range
    for f in features[:50]:
        value = table.loc[f["properties"]["code"], "on_time_closure_rate"]
        if np.isnan(value):
            assert f["properties"]["colour"] == rp.NO_DATA_COLOUR
        else:
            assert f["properties"]["colour"] == rp.PALETTE[min(int((value - lo) / (hi - lo) * 5), 4)]
    # the street table with its lagging rows and totals
    streets = fake_kpi_table(store, start=None, end=None, level="street")
    lag = independent_lagging(streets["on_time_closure_rate"], lower_better=False)
    marked = re.findall(r'<tr class="lagging" data-code="(\d+)"', page)
    assert sorted(marked) == sorted(streets.loc[lag, "code"])
    assert "合计" in page and "按期结案率" in page
    assert f"{streets['closed_on_time'].sum() / streets['due'].sum():.1%}" in page


def test_scorecard_page_for_the_service_uses_vendored_assets(store):
    page = rp.scorecard_page(store, period="2024-03", level="community", kpi="rework_rate", lang="en",
                             kpi_table=fake_kpi_table)
    doc = map_document(page)
    assert external_urls(page) == [] and external_urls(doc) == []
    assert re.findall(r"https?://", page) == [] and re.findall(r"https?://", doc) == []
    assert '/static/vendor/leaflet.js' in doc
    assert len(map_features(doc)) == len(store.sql("SELECT code FROM grids WHERE geom IS NOT NULL"))
    assert "Rework rate" in page and "Community" in page
    # the chosen KPI is the first figure column, beside the unit's name, and in bold
    head = re.search(r"<thead>(.*?)</thead>", page, re.S).group(1)
    figures = re.findall(r"<th[^>]*>([^<]*)</th>", head)
    assert figures[figures.index("Community") + 1] == "Rework rate" and '<th class="kpi">Rework rate</th>' in head
    assert figures.count("Rework rate") == 1


def test_bad_report_options(store, tmp_path):
    with pytest.raises(InvalidParameterError, match="level"):
        rp.build_report(store, period="2024-03", level="city", out_dir=tmp_path, kpi_table=fake_kpi_table)
    with pytest.raises(InvalidParameterError, match="closest: on_time_closure_rate"):
        rp.build_report(store, period="2024-03", kpi="on_time_closure", out_dir=tmp_path, kpi_table=fake_kpi_table)
    with pytest.raises(InvalidParameterError, match="lang"):
        rp.build_report(store, period="2024-03", lang="fr", out_dir=tmp_path, kpi_table=fake_kpi_table)

    def short_table(store, **kw):
        return fake_kpi_table(store, **kw).drop(columns=["overdue"])

    with pytest.raises(InvalidParameterError, match="overdue"):
        rp.build_report(store, period="2024-03", out_dir=tmp_path, kpi_table=short_table)
    assert not list(tmp_path.iterdir())  # nothing written on a bad request


# --- the real KPIs of the demo city ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    return rp.build_report(store, period="2024-03", level="street", out_dir=out)


def _num(value):
    return np.nan if value is None else float(value)


def test_workbook_of_the_real_kpis_matches_kpi_table_and_kpi_totals(real, store):
    from civicgrid.sites.kpis import kpi_table, kpi_totals

    wb = load_workbook(real["xlsx"])
    notes = {r[0]: r[1] for r in wb["说明"].iter_rows(values_only=True)}
    # open, overdue then
    assert notes["统计期"] == "2024-03-01 – 2024-03-31" and notes["数据截至"] == "2024-04-01 00:00"
    start, end = date(2024, 3, 1), date(2024, 4, 1)
    for level, sheet in zip(rp.LEVELS, wb.sheetnames, strict=False):  # the last sheet holds the notes
        ws = wb[sheet]
        want = kpi_table(store, start=start, end=end, level=level)
        heads = [c.value for c in ws[1]]
        col = {rp.KPI_COLUMNS[k][0]: k for k in rp.KPI_COLUMNS}
        rows = list(ws.iter_rows(min_row=2, max_row=ws.max_row - 1, values_only=True))
        assert [r[0] for r in rows] == want["code"].tolist()
        for j, head in enumerate(heads[:-1]):
            if head not in col or col[head] in ("code", "name"):
                continue
            got = np.array([_num(r[j]) for r in rows])
            assert got == pytest.approx(want[col[head]].to_numpy(float), nan_ok=True), (sheet, head)
        # the totals row is the same cases pooled by SQL (kpi_totals with the level), the median included
        tot = kpi_totals(store, start=start, end=end, level=level)
        last = [c.value for c in ws[ws.max_row]]
        assert last[0] == "合计"
        for j, head in enumerate(heads[:-1]):
            if head in col and col[head] not in ("code", "name"):
                assert _num(last[j]) == pytest.approx(_num(tot[col[head]]), nan_ok=True), (sheet, head)
        assert tot["found"] > 0 and last[heads.index("整改时长中位数（小时）")] is not None
        # lagging marks follow the rule on the real values
        lag = independent_lagging(want["on_time_closure_rate"], lower_better=False)
        assert [r[-1] == "落后" for r in rows] == list(lag), sheet


def test_scorecard_of_the_real_kpis(real, store):
    from civicgrid.sites.kpis import kpi_table

    page = real["html"].read_text(encoding="utf-8")
    doc = map_document(page)
    grids = kpi_table(store, start=date(2024, 3, 1), end=date(2024, 4, 1), level="grid").set_index("code")
    features = map_features(doc)
    assert len(features) == len(store.sql("SELECT code FROM grids WHERE geom IS NOT NULL"))
    for f in features:
        row = grids.loc[f["properties"]["code"]]
        value = row["on_time_closure_rate"]
        assert f["properties"]["colour"] == (rp.NO_DATA_COLOUR if np.isnan(value) else
                                             rp.PALETTE[min(int(value * 5), 4)])
        # the tooltip shows the rate's parts and the cases found
        assert f["properties"]["basis"] == f"{row['closed_on_time']:,} / {row['due']:,}"
        assert f["properties"]["found"] == row["found"]
    assert json.dumps(["按期结案数 / 应结案数", "发现数"])[1:] in doc  # the tooltip's aliases (JSON-escaped)
    # the streets are outlined and labelled
    streets = store.sql("SELECT name FROM areas WHERE level = 'street'")["name"]
    assert all(json.dumps(name)[1:-1] in doc for name in streets)
    assert doc.count("L.divIcon") >= len(streets)
    # the street table: ranked by the KPI, the lagging ones marked, the totals of the real KPIs
    table = kpi_table(store, start=date(2024, 3, 1), end=date(2024, 4, 1), level="street")
    codes = re.findall(r'<tr class="(?:lagging)?" data-code="(\d+)"', page)
    assert codes == table.sort_values("on_time_closure_rate", ascending=False, kind="stable")["code"].tolist()
    lag = independent_lagging(table["on_time_closure_rate"], lower_better=False)
    assert sorted(re.findall(r'<tr class="lagging" data-code="(\d+)"', page)) == sorted(table.loc[lag, "code"])
    assert f"{table['closed_on_time'].sum() / table['due'].sum():.1%}" in page
    assert "本统计期内没有" not in page and "数据截至 2024-04-01 00:00" in page


def test_scorecard_of_an_empty_period_says_so(store):
    page = rp.scorecard_page(store, period="2023-01", level="category", lang="en")
    assert "No case was found or fell due in this period." in page
    assert len(map_features(map_document(page))) > 0


# --- CLI and API ------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_kpis(monkeypatch):
    monkeypatch.setattr(rp, "_default_kpi_table", lambda: fake_kpi_table)


def test_cli_report(demo_db, tmp_path, fake_kpis):
    from civicgrid.api.cli import main
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["report", "--db", str(demo_db), "--period", "2024-03", "--level", "street",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report_2024-03_street.xlsx").exists()
    assert (tmp_path / "scorecard_2024-03_street.html").exists()
    assert "warning" not in result.output  # every demo event has its case
    bad = CliRunner().invoke(main, ["report", "--db", str(demo_db), "--period", "2024-14", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "month" in bad.output


def test_cli_report_warns_of_events_without_a_case(demo_db, tmp_path, fake_kpis):

    from civicgrid.api.cli import main
    from civicgrid.geo.store import writing
    from click.testing import CliRunner

    db = tmp_path / "copy.duckdb"
    copy_store(demo_db, db)
    with writing(db) as con:
        con.execute("DELETE FROM cases WHERE case_id IN (SELECT case_id FROM cases ORDER BY case_id LIMIT 3)")
    result = CliRunner().invoke(main, ["report", "--db", str(db), "--period", "2024-03", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "warning: 3 events have no case" in result.output and "civicgrid cases backfill" in result.output


def test_api_reports(demo_db, fake_kpis):
    from civicgrid.api.app import create_app
    from fastapi.testclient import TestClient

    client = TestClient(create_app(demo_db))
    r = client.get("/api/reports/2024-03.xlsx", params={"level": "grid", "kpi": "overdue"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert "attachment" in r.headers["content-disposition"]
    wb = load_workbook(io.BytesIO(r.content))
    assert wb.active.title == "网格" and len(wb.sheetnames) == 6
    page = client.get("/api/reports/2024-03/scorecard", params={"lang": "en"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Campaign scorecard" in page.text
    doc = map_document(page.text)
    assert client.get("/static/vendor/leaflet.js").status_code == 200
    assert "/static/vendor/leaflet.js" in doc
    assert client.get("/api/reports/2024-13.xlsx").status_code == 422
    assert client.get("/api/reports/2024-03/scorecard", params={"kpi": "speed"}).status_code == 422
    assert client.get("/api/reports/2024-03/scorecard", params={"level": "city"}).status_code == 422


def test_map_colours_span_the_observed_range():
    """Rework rates all under 20 % still get the whole palette: best green, worst red, no data grey."""
    from civicgrid.sites.reports import NO_DATA_COLOUR, PALETTE, _colour, legend

    values = np.array([0.0, 0.05, 0.1, 0.15, 0.2, np.nan])
    colours = _colour(values, "rework_rate")
    assert colours[0] == PALETTE[-1] and colours[4] == PALETTE[0] and colours[5] == NO_DATA_COLOUR
    assert len(set(colours[:5])) == len(PALETTE)
    # higher is better: the same values the other way round
    assert _colour(values, "on_time_closure_rate")[0] == PALETTE[0]
    labels = [label for _, label in legend("rework_rate", values, "en")]
    assert labels[0] == "20% – 16%" and labels[-2] == "4% – 0%" and labels[-1] == "no data"


def test_scorecard_of_a_city_without_micro_grids_colours_its_finest_areas(shared, tmp_path):
    """San Francisco's census tracts as communities and its 311 cases, no micro-grids: the scorecard (a 500
    before: folium refused the tooltip of an empty grid layer) colours the tracts by the KPI of the real KPI
    table, and says so."""
    from civicgrid.grids.areas import import_areas
    from civicgrid.sites.events import import_events
    from civicgrid.sites.kpis import kpi_table

    db = tmp_path / "sf.duckdb"
    tracts = shared / "us_sf311" / "sf_census_tracts_with_neighborhood.geojson"
    import_areas(tracts, db=db, level="community", mapping={"code": "geoid", "name": "nhood"}, progress=False)
    import_events(shared / "us_sf311" / "sf311_cases_sample_10000.csv", db=db, progress=False, point="Point",
                  mapping={"id": "CaseID", "time": "Opened", "type": "Category", "closed": "Closed"})
    store = Store(db)
    assert rp.map_level(store) == "community"
    page = rp.scorecard_page(store, period="2014", level="community", kpi="rectification_rate", lang="en")
    features = map_features(map_document(page))
    assert len(features) == 195
    table = kpi_table(store, start="2014-01-01", end="2015-01-01", level="community").set_index("code")
    rates = table["rectification_rate"]
    lo, hi = rates.min(), rates.max()
    for f in features:
        value = rates[f["properties"]["code"]]
        want = rp.NO_DATA_COLOUR if np.isnan(value) else rp.PALETTE[min(int((value - lo) / (hi - lo) * 5), 4)]
        assert f["properties"]["colour"] == want
    assert "Community areas coloured by Rectification rate" in page and "no micro-grids yet" in page


def test_a_city_without_streets_gets_a_scorecard_of_its_own_areas(shared, tmp_path, store):
    """New York's ZIP codes loaded as districts, 998 complaints of April 2024: the scorecard's default table was
    the streets, which this city does not have, so the table was empty, the city's figures (summed from it) read
    0 cases found and the page said no case was found. Now the default table is the finest level the city has,
    the city's figures count every case (whatever its units: also with ``level="street"``), units whose names
    repeat show their codes, and a KPI with one value for every unit has one legend class."""
    from civicgrid.grids.areas import import_areas
    from civicgrid.sites.events import import_events

    db = tmp_path / "nyc.duckdb"
    nyc = shared / "us_nyc311_small"
    import_areas(nyc / "nyc_zipcodes.shp", db=db, level="district", mapping={"code": "ZIPCODE", "name": "PO_NAME"},
                 progress=False)
    import_events(nyc / "nyc311_2024-04_sample.csv", db=db, tz="America/New_York", progress=False)
    city = Store(db)
    assert rp.table_level(city) == "district" and rp.table_level(store) == "street"  # the demo city has streets
    found = int(city.sql("SELECT count(*) AS n FROM cases WHERE found_at >= '2024-04-01' AND found_at < '2024-05-01'")
                ["n"].iloc[0])
    assert found == 998

    def card(page: str) -> dict[str, str]:
        return dict(re.findall(r'<div class="label">([^<]*)</div><div class="value">([^<]*)</div>', page))

    page = rp.scorecard_page(city, period="2024-04", lang="en")
    assert card(page)["Found"] == "998"
    assert "District · " in page and "No case was found" not in page
    names = re.findall(r'<td class="left">([^<]*)</td>', page)
    assert "Brooklyn (11226)" in names and "Brooklyn" not in names and len(names) == len(set(names))
    streets = rp.scorecard_page(city, period="2024-04", level="street", lang="en")  # an empty table, the city's cases
    assert card(streets)["Found"] == "998" and "No case was found" not in streets
    assert rp.legend("on_time_closure_rate", [0.0, 0.0, np.nan], "en") == [(rp.PALETTE[0], "0%"),
                                                                            (rp.NO_DATA_COLOUR, "no data")]
    assert len(rp.legend("on_time_closure_rate", [0.0, 0.5], "en")) == len(rp.PALETTE) + 1


def test_shenzhen_scorecard_tables_its_districts_and_says_why_rates_are_empty(shared, tmp_path):
    """Shenzhen as a city office loads it: Amap's 9 districts (GCJ-02), the 9,005-cell grid as micro-grids and a
    day of taxi pick-ups as events without a type. The scorecard's table was the 9,005 micro-grids, every one
    ranked 1 although none had a value, and its on-time closure rate read "—" with no word why. Now the table is
    the districts (the map still colours the micro-grids), units without a value are unranked, and a note says
    that the cases have no problem type, hence no deadline."""
    from civicgrid.grids.areas import import_areas, import_grids
    from civicgrid.sites.events import import_events

    db = tmp_path / "sz.duckdb"
    import_areas(shared / "cn_gcj02" / "深圳市.shp", db=db, level="district", crs="gcj02", progress=False)
    import_grids(shared / "cn_shenzhen" / "grid.shp", db=db, progress=False)
    rep = import_events(shared / "cn_shenzhen" / "shenzhen_taxi_trips_2020-01.csv", db=db,
                        mapping={"time": "Stime", "id": "orderid"}, progress=False)
    city = Store(db)
    assert rp.table_level(city) == "district" and rp.map_level(city) == "grid"
    tot = city.sql("SELECT count(*) AS n, count(deadline) AS d FROM cases")
    assert (int(tot["n"].iloc[0]), int(tot["d"].iloc[0])) == (rep.loaded, 0)
    page = rp.scorecard_page(city, period="2020-01", lang="en")
    rows = re.findall(r'<tr class="[a-z]*" data-code="([^"]*)">\s*<td>([^<]*)</td>', page)
    assert sorted(code for code, _ in rows) == sorted(city.sql("SELECT code FROM areas")["code"])
    assert {rank for _, rank in rows} == {"—"}  # no district has an on-time closure rate: no case fell due
    assert f"{rep.loaded:,} of the {rep.loaded:,} cases found in this period have no problem type" in page
    # the map colours the micro-grids and outlines the districts, named; its legend has no colour classes
    doc = map_document(page)
    labelled = [json.dumps(name)[1:-1] for name in ("福田区", "南山区", "光明区")]  # as folium writes them
    assert len(map_features(doc)) == 9005 and doc.count("translate(-50%") == 9 and all(n in doc for n in labelled)
    assert "0% – 20%" not in page and rp.legend("on_time_closure_rate", [np.nan] * 3, "en") == [
        (rp.NO_DATA_COLOUR, "no data")]
    # ranked by a KPI every district has: 1, 2, ... by cases found, ties sharing a rank
    found = rp.scorecard_page(city, period="2020-01", lang="en", kpi="found")
    ranks = [int(r) for _, r in re.findall(r'<tr class="[a-z]*" data-code="([^"]*)">\s*<td>([^<]*)</td>', found)]
    assert ranks[0] == 1 and ranks == sorted(ranks) and len(ranks) == 9
    table = rp.report_tables(city, start=date(2020, 1, 1), end=date(2020, 2, 1), levels=("district",))["district"]
    assert int(table["no_deadline"].sum()) == int(table["found"].sum()) > 10000


def test_a_city_with_its_sample_frame_alone_has_a_scorecard_by_category(tmp_path):
    """Toronto's restaurants and inspections, no areas, no micro-grids: the scorecard's table was an empty
    micro-grid table beside an empty grey map. Its table is now the site categories (the city's own included),
    and there is no map."""
    db = build_toronto(tmp_path / "tor.duckdb")
    city = Store(db)
    assert rp.table_level(city) == "category"
    page = rp.scorecard_page(city, period="2021", lang="en")
    assert "<iframe" not in page and 'class="layout single"' in page
    rows = [html.unescape(code) for code in re.findall(r'<tr class="[a-z]*" data-code="([^"]*)">', page)]
    assert sorted(rows) == sorted(city.sql("SELECT code FROM site_categories")["code"]) and "Food Take Out" in rows
