"""The analysts' Python API: events with the service's filters, tables for notebooks, reading beside the service."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from civicgrid.geo.aggregate import EventFilter, area_stats, cells_frame, heatmap
from civicgrid.geo.errors import InvalidParameterError, NotFoundError, StoreError
from civicgrid.geo.events import QUERY_COLUMNS, query_events
from civicgrid.geo.hotspots import emerging_hotspots, hotspots
from civicgrid.geo.store import Store, open_store
from civicgrid.geo.store_files import copy_store

import civicgrid
from conftest import plain_duckdb

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(demo_db) -> Store:
    return open_store(demo_db)


@pytest.fixture(scope="module")
def raw(demo_db) -> pd.DataFrame:
    """Every event with its problem type's 大类 and its site's category, read with plain DuckDB (no civicgrid)."""
    con = plain_duckdb(str(demo_db))
    try:
        return con.execute("SELECT e.event_id, e.source, e.time, e.status, e.problem_type, p.major_code, "
                           "e.street_code, e.grid_code, e.h3, s.category_code, e.lng, e.lat FROM events e "
                           "LEFT JOIN problem_types p ON p.code = e.problem_type "
                           "LEFT JOIN sites s ON s.site_id = e.site_id").df()
    finally:
        con.close()


def _brute(raw: pd.DataFrame, *, start=None, end=None, source=None, major=None, street=None, category=None,
           status=None) -> pd.DataFrame:
    m = raw["h3"].notna()
    if start:
        m &= raw["time"] >= pd.Timestamp(start)
    if end:
        m &= raw["time"] < pd.Timestamp(end)
    if source:
        m &= raw["source"] == source
    if major:
        m &= raw["major_code"] == major
    if street:
        m &= raw["street_code"] == street
    if category:
        m &= raw["category_code"] == category
    if status:
        m &= raw["status"] == status
    return raw[m]


def test_open_store_is_the_reader(demo_db, tmp_path):
    store = open_store(demo_db)
    assert isinstance(store, Store) and store.path == Path(demo_db)
    with pytest.raises(StoreError, match="civicgrid demo"):
        open_store(tmp_path / "missing.duckdb")


@pytest.mark.parametrize("kw", [
    {},
    {"start": "2025-06-01", "end": "2025-09-01", "major": "02"},
    {"source": "inspection", "category": "16"},
    {"start": "2024-03-01", "end": "2024-04-01", "status": "closed", "street": "busiest"},
])
def test_query_events_equals_brute_force_and_the_heatmap(store, raw, kw):
    """The rows are those a pandas filter of the raw table selects, and exactly the events the heatmap counts."""
    kw = dict(kw)
    if kw.get("street") == "busiest":
        kw["street"] = raw["street_code"].value_counts().index[0]
    f = EventFilter(start=kw.get("start"), end=kw.get("end"), source=kw.get("source"),
                    types=kw.get("major") or (), categories=kw.get("category") or (), area=kw.get("street"),
                    status=kw.get("status"))
    got = query_events(store, filters=f)
    want = _brute(raw, **kw)
    assert len(want) > 50
    assert sorted(got["event_id"]) == sorted(want["event_id"])
    assert got.attrs["total"] == len(want)
    assert heatmap(store, res=9, filters=f)["count"].sum() == len(got)
    assert got.crs == "EPSG:4326" and list(got.columns) == [*QUERY_COLUMNS, "geometry"]
    assert np.allclose(got.geometry.x, got["lng"]) and np.allclose(got.geometry.y, got["lat"])
    assert got["time"].is_monotonic_increasing
    if kw.get("major"):
        assert set(got["major_code"]) == {kw["major"]}
        assert set(got["problem_type"].str[:2]) == {kw["major"]}


def test_query_events_paging_order_columns_and_lang(store):
    f = EventFilter(start="2025-01-01", end="2025-02-01")
    full = query_events(store, filters=f, newest_first=True)
    page1 = query_events(store, filters=f, newest_first=True, limit=25)
    page2 = query_events(store, filters=f, newest_first=True, limit=25, offset=25)
    assert page1.attrs["total"] == page2.attrs["total"] == len(full) > 50
    assert page1["event_id"].tolist() + page2["event_id"].tolist() == full["event_id"].head(50).tolist()
    assert full["time"].is_monotonic_decreasing
    small = query_events(store, filters=f, columns=["event_id", "type_name"], limit=3, lang="en")
    assert list(small.columns) == ["event_id", "type_name", "geometry"]
    names = store.sql("SELECT code, name_en FROM problem_types").set_index("code")["name_en"]
    zh = query_events(store, filters=f, columns=["problem_type", "type_name"], limit=3)
    assert small["type_name"].tolist() == names.loc[zh["problem_type"]].tolist()
    assert zh["type_name"].tolist() != small["type_name"].tolist()
    with pytest.raises(InvalidParameterError, match=r"unknown column.*'colour'"):
        query_events(store, columns=["event_id", "colour"])
    with pytest.raises(InvalidParameterError, match="limit"):
        query_events(store, limit=-1)
    with pytest.raises(NotFoundError, match="closest known"):
        query_events(store, filters=EventFilter(types="占道经"))


def test_cells_frame_turns_any_cell_result_into_hexagons(store):
    f = EventFilter(start="2025-01-01", end="2026-01-01")
    hs = hotspots(store, res=8, filters=f)
    g = cells_frame(hs)  # already has h3_hex: kept, not inserted twice
    assert list(g.columns[:2]) == ["h3", "h3_hex"] and len(g) == len(hs)
    assert g.geometry.is_valid.all() and g.crs == "EPSG:4326"
    em = cells_frame(emerging_hotspots(store, res=7, freq="M"))
    assert em["cls"].notna().all()
    # the hexagon is the cell's: the events H3 indexes directly into that cell are the ones inside it
    import h3

    hm = heatmap(store, res=8, filters=f).nlargest(1, "count")
    cell = cells_frame(hm).geometry.iloc[0]
    hexid = f"{int(hm['h3'].iloc[0]):x}"
    ev = query_events(store, filters=f, columns=["lng", "lat", "h3_hex"])
    direct = np.array([h3.latlng_to_cell(y, x, 8) == hexid for x, y in zip(ev["lng"], ev["lat"], strict=True)])
    assert direct.sum() > 100
    assert (ev.geometry.within(cell.buffer(1e-9)).to_numpy() == direct).all()
    # the heatmap counts by the stored resolution-12 cell's parent: H3 cells do not nest exactly, so this
    # differs from direct indexing only near the cell's edge
    by_parent = np.array([h3.cell_to_parent(c, 8) == hexid for c in ev["h3_hex"]])
    assert by_parent.sum() == hm["count"].iloc[0]
    assert shapely.distance(ev.geometry.to_numpy()[by_parent], cell).max() < 0.002  # degrees, about 200 m


def test_rolling_backtest_is_backtest_per_window(store):
    from civicgrid.sites.backtest import ORDERINGS, backtest, rolling_backtest

    windows = ["2025-05-01", "2025-09-01"]
    table = rolling_backtest(store, windows=windows, horizon_days=30, n_random=3)
    named = ["risk", "risk_inspector", *ORDERINGS[1:]]  # the demo's inspections name their inspectors
    assert len(table) == len(windows) * len(named)
    assert table["ordering"].tolist() == named * len(windows)
    for w in windows:
        b = backtest(store, as_of=w, horizon_days=30, n_random=3)
        rows = table[table["window"] == pd.Timestamp(w)].set_index("ordering")
        assert b["orderings"] == named
        for name in named:
            assert rows.loc[name, "precision_at_k"] == b["precision_at_k"][name]
            assert rows.loc[name, "mean_days_earlier"] == b["mean_days_earlier"][name]
        assert rows.loc["random", "random_sd_precision"] == b["random_sd"]["precision_at_k"]
        assert np.isnan(rows.loc["actual", "auc"]) and rows.loc["risk", "auc"] == b["auc"]["risk"]
        assert (rows["n_inspections"] == b["n_inspections"]).all()
    with pytest.raises(InvalidParameterError, match="at least one"):
        rolling_backtest(store, windows=[], horizon_days=30)


def test_events_endpoint_calls_query_events(demo_db, tmp_path):
    """``GET /api/events`` is :func:`query_events` behind the same query-string filters (viewer role)."""
    from civicgrid.api.app import create_app
    from civicgrid.geo.users import add_user
    from fastapi.testclient import TestClient

    db = tmp_path / "city.duckdb"
    copy_store(demo_db, db)
    _, token = add_user(db, "analyst", role="viewer")
    client = TestClient(create_app(db))
    params = {"start": "2025-06-01", "end": "2025-08-31", "type": "02", "limit": 40, "offset": 10,
              "order": "oldest", "lang": "en"}
    assert client.get("/api/events", params=params).status_code == 401
    h = {"Authorization": f"Bearer {token}"}
    r = client.get("/api/events", params=params, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    f = EventFilter(start="2025-06-01", end="2025-09-01", types="02")  # a date-only end includes that day
    want = query_events(Store(db), filters=f, limit=40, offset=10, lang="en")
    assert body["total"] == want.attrs["total"] == heatmap(Store(db), filters=f)["count"].sum()
    assert [p["properties"]["event_id"] for p in body["features"]] == want["event_id"].tolist()
    assert body["features"][0]["properties"]["type_name"] == want["type_name"].iloc[0]
    assert body["features"][0]["geometry"]["coordinates"] == pytest.approx(
        [want["lng"].iloc[0], want["lat"].iloc[0]], abs=1e-6)
    gcj = client.get("/api/events", params={**params, "crs": "gcj02"}, headers=h).json()
    shift = np.subtract(gcj["features"][0]["geometry"]["coordinates"], body["features"][0]["geometry"]["coordinates"])
    assert 1e-4 < np.hypot(*shift) < 1e-2  # GCJ-02 moves points by a few hundred metres
    newest = client.get("/api/events", params={"limit": 1}, headers=h).json()
    latest = Store(db).sql("SELECT max(time) t FROM events")["t"][0]
    assert newest["features"][0]["properties"]["time"] == f"{latest:%Y-%m-%dT%H:%M:%S}"
    assert client.get("/api/events", params={"limit": 0}, headers=h).status_code == 422
    assert client.get("/api/events", params={"order": "up"}, headers=h).status_code == 422
    assert client.get("/api/events", params={"area": "999"}, headers=h).status_code == 404


# --- a notebook beside `civicgrid serve` while another process writes -----------------------------------------


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_notebook_reads_while_serve_runs_and_an_import_publishes(demo_db, tmp_path, civicgrid_cli,
                                                                  civicgrid_serve):
    """The analyst's reader works beside a running ``civicgrid serve`` while ``civicgrid import`` writes.

    ``tests/test_store.py`` checks the store itself (a reader process beside a writer process). This is the
    analysts' situation end to end: the service holds the file open, a notebook (this process) calls the public
    functions in a loop, and another process imports events. No lock error, never half an import, and the
    notebook's cached aggregations follow the new version just like the service's.
    """
    db = tmp_path / "city.duckdb"
    copy_store(demo_db, db)
    with civicgrid_serve(db) as (base, server):
        # the notebook: open the store the service is serving and use the public functions
        store = open_store(db)
        f = EventFilter(start="2025-01-01", end="2026-01-01")
        n0 = int(heatmap(store, res=9, filters=f)["count"].sum())
        assert n0 == query_events(store, filters=f, columns=["event_id"]).attrs["total"]
        assert n0 == _get(f"{base}/api/heatmap?start=2025-01-01&end=2025-12-31")["total_events"]
        a0 = int(area_stats(store, level="district", filters=f)["count"].sum())
        # another process (here: a second civicgrid reader) opens the store the service holds: no lock error
        other = subprocess.run([sys.executable, "-c", "import civicgrid, sys; s = civicgrid.open_store(sys.argv[1]); "
                                "print(s.sql('SELECT count(*) AS n FROM events')['n'][0])", str(db)],
                               capture_output=True, text=True, timeout=120)
        assert other.returncode == 0, other.stderr
        assert int(other.stdout.split()[-1]) == store.sql("SELECT count(*) AS n FROM events")["n"][0]

        # another process imports 600 events of 2025 while the notebook keeps reading
        m = 600
        rng = np.random.default_rng(5)
        pts = store.sql("SELECT lng, lat FROM events WHERE street_code IS NOT NULL LIMIT 600")
        csv = tmp_path / "new.csv"
        pd.DataFrame({"id": [f"NB-{i}" for i in range(m)],
                      "time": pd.Timestamp("2025-12-01 09:00") + pd.to_timedelta(rng.integers(0, 86400 * 20, m), "s"),
                      "lng": pts["lng"].to_numpy(), "lat": pts["lat"].to_numpy(),
                      "type": "0201"}).to_csv(csv, index=False)
        seen, errors = [], []
        stop = threading.Event()

        def notebook() -> None:
            while not stop.is_set():
                try:
                    seen.append((int(heatmap(store, res=9, filters=f)["count"].sum()),
                                 int(area_stats(store, level="district", filters=f)["count"].sum()),
                                 query_events(store, filters=f, limit=1).attrs["total"]))
                except Exception as exc:  # any error is the failure being tested
                    errors.append(repr(exc))
                time.sleep(0.02)

        reader = threading.Thread(target=notebook)
        reader.start()
        try:
            time.sleep(0.5)
            imp = subprocess.run([*civicgrid_cli, "import", "events", str(csv), "--db", str(db),
                                  "--source", "complaint", "--quiet"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
            time.sleep(0.5)
        finally:
            stop.set()
            reader.join(timeout=60)
        assert imp.returncode == 0, imp.stdout + imp.stderr
        assert errors == []
        heat = [s[0] for s in seen]
        assert set(heat) == {n0, n0 + m}, "the notebook saw half an import"
        assert heat == sorted(heat) and heat[0] == n0 and heat[-1] == n0 + m
        assert {s[2] for s in seen} == {n0, n0 + m} and [s[2] for s in seen] == sorted(s[2] for s in seen)
        assert {s[1] for s in seen} == {a0, a0 + m}
        assert area_stats(store, level="district", filters=f)["count"].sum() == a0 + m
        assert query_events(store, filters=EventFilter(start="2025-12-01", types="0201", source="complaint"),
                            columns=["external_id"])["external_id"].str.startswith("NB-").sum() == m
        assert _get(f"{base}/api/heatmap?start=2025-01-01&end=2025-12-31")["total_events"] == n0 + m
        assert server.poll() is None, "the service kept running"


# --- the README's guide for analysts is true -------------------------------------------------------------------


def _readme_section(title: str, until: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text[text.index(title):text.index(until, text.index(title))]


def test_readme_tables_list_every_column(demo_db):
    """The analysts' table of tables names exactly the columns of the schema, in order."""
    section = _readme_section("### Tables for plain SQL", "\n## ")
    documented = {}
    for line in section.splitlines():
        m = re.match(r"\| `(\w+)` \| ([\w, ]+) \|$", line)
        if m:
            documented[m.group(1)] = [c.strip() for c in m.group(2).split(",")]
    store = open_store(demo_db)
    actual = store.sql("SELECT table_name, list(column_name ORDER BY ordinal_position) AS cols "
                       "FROM information_schema.columns WHERE table_catalog = current_database() GROUP BY 1")
    actual = {r.table_name: list(r.cols) for r in actual.itertuples()}
    assert set(actual) - set(documented) == {"users"}  # the accounts table is mentioned, not documented for SQL
    for table, cols in documented.items():
        assert cols == actual[table], table
    macros = set(store.sql("SELECT function_name FROM duckdb_functions() WHERE function_type = 'macro' "
                           "AND database_name = current_database()")["function_name"])
    assert {"h3_parent", "h3_hex"} <= macros


@pytest.mark.slow
def test_readme_function_examples_run(demo_db, monkeypatch):
    """Every example of the analysts' function table runs on the demo city and returns what it says."""
    section = _readme_section("### The main functions", "### Tables for plain SQL")
    examples = [(m.group(1), m.group(2)) for m in re.finditer(r"^\| `([\w.]+)` \| `(.+?)` \|", section, re.M)]
    assert len(examples) >= 18
    monkeypatch.chdir(Path(demo_db).parent)  # the examples open "demo.duckdb"
    ns: dict = {}
    setup = _readme_section("### The main functions", "| function |")
    exec(re.search(r"```python\n(.*?)```", setup, re.S).group(1), ns)
    for dotted, _ in examples:
        module, name = dotted.rsplit(".", 1)
        ns[name] = getattr(importlib.import_module(module), name)
    ns["assessment_sizes"] = importlib.import_module("civicgrid.sites.simulator").assessment_sizes
    ns["store"] = open_store(demo_db)
    for dotted, code in examples:
        if code.startswith("frame = "):
            exec(code, ns)
            out = ns["frame"]
        else:
            out = eval(code, ns)  # the README's own examples
        fn = ns[dotted.rsplit(".", 1)[1]]
        ret = fn.__annotations__.get("return") if hasattr(fn, "__annotations__") else None
        if isinstance(out, pd.DataFrame):
            assert len(out), dotted
        if "GeoDataFrame" in str(ret):
            assert out.crs == "EPSG:4326", dotted
    assert isinstance(civicgrid.open_store(demo_db), Store)
