"""Issue 15, the planner's side: the /map filter form gives back every URL filter, area names, head/tail legend
classes (checked against mapclassify on real skewed counts), grid cards in the hexagon popup and public_layers,
flag counts per area, paged case lists, one time convention, body typos, report folder, team.csv header."""

from __future__ import annotations

import html as htmllib
import re
from datetime import UTC, datetime, timedelta

import h3
import mapclassify
import numpy as np
import pandas as pd
import pytest
from civicgrid.api.app import create_app
from civicgrid.geo.aggregate import EventFilter, area_code, heatmap
from civicgrid.geo.errors import InvalidParameterError, NotFoundError
from civicgrid.geo.store import Store
from civicgrid.geo.store_files import copy_store
from civicgrid.geo.times import now_local
from civicgrid.geo.users import add_user
from civicgrid.maps.legend import HEAT_COLORS, class_breaks, legend_entries
from click.testing import CliRunner
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def store(demo_db) -> Store:
    return Store(demo_db)


@pytest.fixture(scope="module")
def client(demo_db) -> TestClient:
    return TestClient(create_app(demo_db))


@pytest.fixture(scope="module")
def env(demo_db, tmp_path_factory):
    """A copy of the demo city with a viewer and an inspector (for writes and tokens)."""
    path = tmp_path_factory.mktemp("planner") / "demo.duckdb"
    copy_store(demo_db, path)
    tokens = {role: add_user(path, f"p_{role}", role=role)[1] for role in ("viewer", "inspector")}
    return path, TestClient(create_app(path), raise_server_exceptions=False), tokens


def _h(tokens, role):
    return {"Authorization": f"Bearer {tokens[role]}"}


# --- the filter form ------------------------------------------------------------------------------------------


def _form(page: str) -> dict:
    """What the /map filter form shows: every select's selected values, the hidden joined fields, the inputs."""
    form = page[page.index('id="cg-filters"'):page.index("</form>")]
    out = {}
    for sel in re.finditer(r'<select id="(cg-[a-z]+)"(.*?)</select>', form, re.S):
        out[sel.group(1)] = re.findall(r'<option value="([^"]*)" selected', sel.group(2))
    for inp in re.finditer(r'<input type="([a-z-]+)" (?:id="([^"]+)" )?name="([^"]+)" (?:id="[^"]+" )?'
                           r'value="([^"]*)"', form):
        out[inp.group(3)] = (inp.group(1), htmllib.unescape(inp.group(4)))
    return out


def _summary(page: str) -> str:
    return re.search(r'id="cg-summary">([^<]*)<', page).group(1)


def test_form_shows_types_given_by_name_code_list_and_major(client, store):
    pt = store.sql("SELECT code, name_zh, major_code, major_zh FROM problem_types ORDER BY code")
    minor = pt.iloc[0]
    two = pt[pt.major_code == "02"].code.iloc[:2].tolist()
    major = pt[pt.major_code == "01"].iloc[0]
    cases = [(f"type={minor.name_zh}&start=2025-01-01", [minor.code]),
             (f"type={','.join(two)}", two),
             (f"type={major.major_zh}", [major.major_code])]
    for query, want in cases:
        page = client.get(f"/map?{query}").text
        form = _form(page)
        assert form["cg-type"] == want, (query, form["cg-type"])
        assert form["type"] == ("hidden", ",".join(want)), query
        # the form's values give the same view: the page for the form's values counts the same events
        again = client.get("/map", params={"type": form["type"][1], "start": form["start"][1]}).text
        assert _summary(again) == _summary(page), query
    page = client.get(f"/map?type={minor.name_zh}&start=2025-01-01").text
    assert _form(page)["start"] == ("date", "2025-01-01")
    n = heatmap(store, res=9, filters=EventFilter(types=minor.code, start="2025-01-01"))["count"].sum()
    assert _summary(page).startswith(f"{int(n):,} 件事件")


def test_form_shows_area_names_status_source_category_and_times(client, store):
    district = store.sql("SELECT code, name FROM areas WHERE level = 'district' ORDER BY code").iloc[1]
    grid = store.sql("SELECT code, name FROM grids ORDER BY code").iloc[5]
    cat = store.sql("SELECT code, name_zh FROM site_categories ORDER BY code").iloc[2]
    page = client.get("/map", params={"area": district["name"], "status": "open", "source": "complaint",
                                      "category": cat["name_zh"], "end": "2025-03-01T12:00"}).text
    form = _form(page)
    assert form["cg-area"] == [district["code"]]
    assert form["cg-status"] == ["open"] and form["cg-source"] == ["complaint"]
    assert form["cg-category"] == [cat["code"]] and form["category"] == ("hidden", cat["code"])
    assert form["end"] == ("datetime-local", "2025-03-01T12:00")  # an exclusive end time stays one
    f = EventFilter(area=district["code"], status="open", source="complaint", categories=cat["code"],
                    end="2025-03-01T12:00").validate(store)
    assert _summary(page).startswith(f"{int(heatmap(store, res=9, filters=f)['count'].sum()):,} 件事件")
    # a grid (not among the form's options) is still shown, by its name
    page = client.get("/map", params={"area": grid["code"], "end": "2025-03-31"}).text
    form = _form(page)
    assert form["cg-area"] == [grid["code"]]
    assert f'{grid["name"]} ({grid["code"]})' in htmllib.unescape(page)
    assert form["end"] == ("date", "2025-03-31")  # a date-only end (that whole day) is shown as that day


def test_area_names_resolve_to_codes(store):
    areas = store.sql("SELECT code, name, name_en FROM areas UNION ALL SELECT code, name, NULL FROM grids")
    unique = areas[~areas["name"].duplicated(keep=False)]
    row = unique.iloc[3]
    assert area_code(store, row["name"]) == row["code"]
    assert area_code(store, row["code"]) == row["code"]
    by_name = EventFilter(area=row["name"]).validate(store)
    assert by_name.area == row["code"]
    assert heatmap(store, res=9, filters=by_name).equals(heatmap(store, res=9, filters=EventFilter(area=row["code"])))
    en = areas.dropna(subset=["name_en"]).iloc[0]
    assert area_code(store, en["name_en"].upper()) == en["code"]
    with pytest.raises(NotFoundError, match="closest known"):
        area_code(store, "没有这个区")
    dup = areas[areas["name"].duplicated(keep=False)]
    if len(dup):  # a name two areas bear is refused, naming both codes
        name = dup["name"].iloc[0]
        with pytest.raises(InvalidParameterError, match="several areas") as info:
            area_code(store, name)
        for code in dup[dup["name"] == name]["code"]:
            assert code in str(info.value)


# --- legend classes ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nyc_counts(shared) -> dict[int, np.ndarray]:
    """Real long-tailed counts: NYC 311 requests per H3 cell at resolutions 7-9, counted with h3 and pandas."""
    frames = [pd.read_csv(p, usecols=["latitude", "longitude"]) for p in
              sorted((shared / "us_nyc311_small").glob("nyc311_*_sample.csv"))]
    df = pd.concat(frames).dropna()
    return {res: pd.Series([h3.latlng_to_cell(a, b, res) for a, b in zip(df.latitude, df.longitude, strict=True)])
            .value_counts().to_numpy().astype(float) for res in (7, 8, 9)}


def test_class_breaks_are_mapclassify_head_tail_breaks_on_real_counts(nyc_counts):
    for counts in nyc_counts.values():
        assert counts.max() > 8 * np.median(counts)  # long-tailed indeed
        theirs = mapclassify.HeadTailBreaks(counts)
        ours = class_breaks(counts)
        assert len(theirs.bins) <= len(HEAT_COLORS)
        np.testing.assert_allclose(ours, theirs.bins)
        np.testing.assert_array_equal(np.searchsorted(ours, counts, side="left"), theirs.yb)
        # the legend prints each class's own smallest and largest count, and how many cells it holds
        legend = legend_entries(counts, ours, list(HEAT_COLORS[:len(ours)]))
        assert [e["n"] for e in legend] == list(theirs.counts)
        yb = np.asarray(theirs.yb)
        first = counts[yb == 0]
        assert legend[0]["label"] == (f"{first.min():,.0f} – {first.max():,.0f}" if first.min() < first.max()
                                      else f"{first.min():,.0f}")
        # reads on skewed data: the lightest class holds most cells, the darkest only the extreme head
        assert theirs.counts[0] > 0.5 * len(counts) and theirs.counts[-1] < 0.01 * len(counts) + 1
    # where quantiles collapse: at res 9 most cells hold 1-2 requests and quantiles give only 4 classes
    q = mapclassify.Quantiles(nyc_counts[9], k=7)
    assert len(q.bins) < 7 and q.bins[-2] <= 3


def test_class_breaks_merge_the_top_classes_of_a_very_long_tail():
    values = np.floor(1e5 / np.arange(1, 50_001) ** 0.8)  # Zipf-like counts: head/tail breaks give 8 classes
    theirs = mapclassify.HeadTailBreaks(values).bins
    assert len(theirs) > len(HEAT_COLORS)
    ours = class_breaks(values)
    assert len(ours) == len(HEAT_COLORS)
    np.testing.assert_allclose(ours[:-1], theirs[:len(HEAT_COLORS) - 1])
    assert ours[-1] == values.max()
    assert class_breaks(np.array([4.0, 4.0])).tolist() == [4.0] and class_breaks(np.array([])).size == 0


def test_map_names_its_classification(client, store):
    page = client.get("/map?lang=en").text
    assert "head/tail breaks (mapclassify)" in page
    page = client.get("/map").text
    assert "头尾分割法" in page
    counts = heatmap(store, res=9)["count"].to_numpy()
    block = page[page.index('id="cg-legend"'):]
    shown = [int(n.replace(",", "")) for n in re.findall(r'class="cg-count">([\d,]+) 个单元<', block)]
    theirs = [int(n) for n in mapclassify.HeadTailBreaks(counts).counts]
    k = len(HEAT_COLORS)
    merged = theirs if len(theirs) <= k else [*theirs[:k - 1], sum(theirs[k - 1:])]  # top classes merged
    assert shown == merged and sum(shown) == len(counts)


# --- grid cards, public layers, the sites layer -----------------------------------------------------------------


def test_hexagon_popup_carries_the_grid_card_and_public_layers_hide_leaders(env, monkeypatch):
    path, client, tokens = env
    page = client.get("/map").text
    assert "underAt(e.latlng)" in page and '["leader_name", "\\u7f51\\u683c\\u957f"]' in page
    leader = Store(path).sql("SELECT leader_name, leader_phone FROM grids WHERE leader_phone IS NOT NULL "
                             "ORDER BY code LIMIT 1").iloc[0]
    assert leader["leader_phone"] in page
    monkeypatch.setenv("CIVICGRID_PUBLIC_LAYERS", "areas,grids,sites,categories,problem-types")
    closed = TestClient(create_app(path))
    page = closed.get("/map").text
    assert leader["leader_phone"] not in page and leader["leader_name"] not in page
    assert "leader_name" not in page and "cgLayers[\"grids\"]" in page
    page = closed.get("/map", headers=_h(tokens, "viewer")).text
    assert leader["leader_phone"] in page
    monkeypatch.setenv("CIVICGRID_PUBLIC_LAYERS", "areas,categories,problem-types")
    page = TestClient(create_app(path)).get("/map").text
    assert "grid-popups" not in page and 'cgLayers["sites"]' not in page and leader["leader_phone"] not in page


def test_site_bubbles_wait_for_street_zoom(client):
    page = client.get("/map").text
    assert "map.getZoom() >= 14" in page  # ZoomGate: sites shown from zoom 14, not at city zoom
    assert "cg-tiles" not in page  # no tile notice without tiles
    osm = client.get("/map?basemap=osm").text
    assert 'id="cg-tiles" hidden' in osm and "tileerror" in osm


# --- flags, cases -----------------------------------------------------------------------------------------------


def test_flag_counts_follow_the_area(client, store):
    from civicgrid.sites.kpis import site_flags

    street = store.sql("SELECT code, name FROM areas WHERE level = 'street' ORDER BY code").iloc[0]
    body = client.get("/api/kpis/flags", params={"area": street["name"], "as_of": "2025-12-01"}).json()
    flags = site_flags(store, as_of="2025-12-01")
    inside = store.sql("SELECT site_id FROM sites WHERE street_code = ?", [street["code"]])["site_id"]
    mine = flags[flags.site_id.isin(set(inside))]
    assert body["counts"] == {f: int((mine.flag == f).sum()) for f in ("red", "white", "none")}
    assert sum(body["counts"].values()) == len(body["sites"]) == len(mine) < len(flags)
    white = client.get("/api/kpis/flags", params={"area": street["code"], "as_of": "2025-12-01",
                                                  "flag": "white"}).json()
    assert white["counts"] == body["counts"] and len(white["sites"]) == body["counts"]["white"]
    city = client.get("/api/kpis/flags", params={"as_of": "2025-12-01"}).json()["counts"]
    assert city == {f: int((flags.flag == f).sum()) for f in ("red", "white", "none")}


def test_list_cases_says_total_and_pages(env):
    from civicgrid.sites.cases import list_cases

    path, client, tokens = env
    store = Store(path)
    district = store.sql("SELECT code FROM areas WHERE level = 'district' ORDER BY code")["code"].iloc[0]
    want = store.sql("SELECT case_id FROM cases WHERE district_code = ? ORDER BY found_at DESC, case_id DESC",
                     [district])["case_id"].tolist()
    assert len(want) > 250
    pages, offset = [], 0
    while True:
        df = list_cases(store, area=district, limit=100, offset=offset)
        assert df.attrs["total"] == len(want)
        pages += df["case_id"].tolist()
        if offset + 100 >= df.attrs["total"]:
            break
        offset += 100
    assert pages == want
    assert list_cases(store, area=district, limit=5, offset=len(want) + 10).attrs["total"] == len(want)
    body = client.get("/api/cases", params={"area": district, "limit": 100, "offset": 200},
                      headers=_h(tokens, "viewer")).json()
    assert body["total"] == len(want) and body["count"] == min(100, len(want) - 200)
    assert body["next_offset"] == (300 if len(want) > 300 else None)
    assert [c["case_id"] for c in body["cases"]] == want[200:300]


# --- times ------------------------------------------------------------------------------------------------------


def test_back_dated_case_is_dispatched_at_its_own_time(env):
    path, client, tokens = env
    site = int(Store(path).sql("SELECT min(site_id) AS s FROM sites")["s"].iloc[0])
    body = {"problem_type": "0201", "site_id": site, "time": "2025-11-03T09:00", "dispatch": True}
    r = client.post("/api/cases", json=body, headers=_h(tokens, "inspector"))
    assert r.status_code == 201, r.text
    case = r.json()
    assert [(x["to_state"], x["changed_at"]) for x in case["log"]] == [
        ("found", "2025-11-03T09:00:00"), ("registered", "2025-11-03T09:00:00"),
        ("dispatched", "2025-11-03T09:00:00")]
    assert case["dispatched_at"] == "2025-11-03T09:00:00"
    r = client.post("/api/cases", json={**body, "dispatch_at": "2025-11-03T10:30"}, headers=_h(tokens, "inspector"))
    assert [x["changed_at"] for x in r.json()["log"]][1:] == ["2025-11-03T10:30:00"] * 2
    r = client.post("/api/cases", json={**body, "dispatch_at": "2025-11-02T10:30"}, headers=_h(tokens, "inspector"))
    assert r.status_code == 422 and "before the problem was found" in r.json()["detail"]
    r = client.post("/api/cases", json={**body, "dispatch": False, "dispatch_at": "2025-11-03T10:30"},
                    headers=_h(tokens, "inspector"))
    assert r.status_code == 422 and "dispatch" in r.json()["detail"]


def test_stored_times_are_the_stores_local_wall_clock(env, tmp_path):
    import geopandas as gpd
    import shapely
    from civicgrid.grids.areas import import_areas

    path, client, tokens = env
    f = tmp_path / "d.geojson"
    gpd.GeoDataFrame({"code": ["990101"], "name": ["测试区"]}, geometry=[shapely.box(100, 10, 100.1, 10.1)],
                     crs=4326).to_file(f)
    import_areas(f, db=path, level="district", progress=False)
    row = Store(path).sql("SELECT started_at, finished_at FROM imports ORDER BY import_id DESC LIMIT 1").iloc[0]
    local, utc = now_local(), datetime.now(UTC).replace(tzinfo=None)
    assert abs(local - utc) > timedelta(hours=7)  # Asia/Shanghai: the two clocks differ by 8 hours
    for t in (row["started_at"], row["finished_at"]):
        assert abs(pd.Timestamp(t).to_pydatetime() - local) < timedelta(minutes=10), (t, local)
    # patrol plans: created_at on the same clock, written like the API's other times
    from civicgrid.sites.patrol.storage import save_plan

    plan_id = save_plan(path, {"totals": {"inspectors": 0, "stops": 0, "risk": 0.0}, "date": "2025-12-01"})
    assert client.get("/api/patrols").status_code == 401  # personal data: a viewer token at least
    assert client.get(f"/api/patrols/{plan_id}").status_code == 401
    plans = client.get("/api/patrols", headers=_h(tokens, "viewer")).json()
    mine = next(p for p in plans if p["plan_id"] == plan_id)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", mine["created_at"])
    assert abs(datetime.fromisoformat(mine["created_at"]) - now_local()) < timedelta(minutes=10)


# --- small ones -------------------------------------------------------------------------------------------------


def test_body_typo_names_the_field_meant(env):
    _path, client, tokens = env
    r = client.post("/api/cases", json={"problem": "0201", "site_id": 1}, headers=_h(tokens, "inspector"))
    assert r.status_code == 422
    assert "unknown field 'problem' (did you mean 'problem_type'?)" in r.json()["detail"]
    assert "it takes: event_id, problem_type" in r.json()["detail"]


def test_report_without_out_writes_into_reports(demo_db, tmp_path, monkeypatch):
    from civicgrid.api.cli import main

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["report", "--db", str(demo_db), "--period", "2024-03"])
    assert r.exit_code == 0, r.output
    assert "writing into ./reports/" in r.output
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "report_2024-03_street.xlsx", "scorecard_2024-03_street.html"]
    assert not list(tmp_path.glob("*.xlsx"))


def test_team_csv_without_header_says_a_header_is_needed(tmp_path):
    from civicgrid.api.commands.patrol import read_inspectors

    f = tmp_path / "team.csv"
    f.write_text("王伟,112.93,28.22,14:00,240,bike\n", encoding="utf-8")
    with pytest.raises(InvalidParameterError, match="first line must be a header"):
        read_inspectors(f)
    f.write_text("name,start_lng,start_lat,shift_start,shift_minutes,mode\n王伟,112.93,28.22,14:00,240,bike\n",
                 encoding="utf-8")
    assert read_inspectors(f)[0]["name"] == "王伟"
