"""The analysts' notebooks: stored clean, and run top to bottom on a fresh demo city with charts and offline maps."""

from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from civicgrid.maps.offline import render_offline, vendor_path
from nbclient import NotebookClient

from conftest import plain_duckdb

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ["01_hotspot_exploration.ipynb", "02_emerging_hotspots_and_rebounds.ipynb",
             "03_risk_and_backtest.ipynb", "04_assessment_readiness_and_patrol.ipynb"]
#: Fewest matplotlib charts and inline folium maps each notebook must produce.
MIN_OUTPUTS = {
    "01_hotspot_exploration.ipynb": (6, 2),
    "02_emerging_hotspots_and_rebounds.ipynb": (5, 1),
    "03_risk_and_backtest.ipynb": (6, 1),
    "04_assessment_readiness_and_patrol.ipynb": (2, 1),
}
#: Size of the demo city the notebooks run on, and kernels run at once (the machine has 2 cores).
EVENTS, SEED, PARALLEL = 100_000, 3, 2

#: The first characters of the vendored Leaflet, which every inline map page must contain.
LEAFLET_HEAD = vendor_path("leaflet.js").read_text(encoding="utf-8")[:300]

_SRCDOC = re.compile(r'srcdoc="(.*?)"', re.S)
#: Anything a page would fetch: script and stylesheet tags, images, CSS urls (links such as Leaflet's
#: attribution ``<a href="https://leafletjs.com">`` are not fetched).
_FETCHED = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)"
                      r"|url\(\s*[\"']?((?:https?:)?//[^\"')]+)", re.IGNORECASE)


def fetched_urls(page: str) -> list[str]:
    """URLs outside the page that a browser would load for it."""
    return [a or b for a, b in _FETCHED.findall(page)]

pytestmark = pytest.mark.slow


def test_notebooks_are_listed():
    assert sorted(p.name for p in NB_DIR.glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_without_outputs(name):
    nb = nbformat.read(NB_DIR / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"{name}: code cell {i} is stored with outputs; clear them before saving"
        assert cell.execution_count is None, f"{name}: code cell {i} is stored with an execution count"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "starts with a title"
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) / 2, "narrated in Markdown"


@pytest.fixture(scope="module")
def notebook_db(tmp_path_factory) -> Path:
    """A fresh demo city for the notebooks (never the session's shared one: the notebooks only read it)."""
    from civicgrid.data.demo import build_demo

    db = tmp_path_factory.mktemp("notebooks") / "demo.duckdb"
    build_demo(db, events=EVENTS, seed=SEED, progress=False)
    return db


def _execute(names: list[str], db: Path, *, allow_errors: bool = False) -> dict[str, nbformat.NotebookNode]:
    """The notebooks ``names`` executed against ``db`` (as ``CIVICGRID_DB``), two kernels at once (``allow_errors``:
    on to the end after a cell's error, which stays in its outputs)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CIVICGRID_DB", str(db))  # the kernels inherit the environment
    out: dict[str, nbformat.NotebookNode] = {}

    async def run_all() -> None:
        gate = asyncio.Semaphore(PARALLEL)

        async def run(name: str) -> None:
            nb = nbformat.read(NB_DIR / name, as_version=4)
            client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=allow_errors,
                                    resources={"metadata": {"path": str(NB_DIR)}})
            async with gate:
                await client.async_execute()
            out[name] = nb

        await asyncio.gather(*(run(n) for n in names))

    try:
        asyncio.run(run_all())
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="module")
def executed(notebook_db) -> dict[str, nbformat.NotebookNode]:
    """Every notebook executed against the fresh demo database given by ``CIVICGRID_DB``."""
    fallback = NB_DIR / "demo.duckdb"
    existed = fallback.exists()
    out = _execute(NOTEBOOKS, notebook_db)
    assert fallback.exists() == existed, "with CIVICGRID_DB set, the notebooks must not build their own demo"
    return out


def _outputs(nb: nbformat.NotebookNode, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind in o.get("data", {})]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_runs_top_to_bottom(executed, name):
    nb = executed[name]
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    charts, maps = MIN_OUTPUTS[name]
    assert len(_outputs(nb, "image/png")) >= charts
    pages = [html.unescape(m.group(1)) for o in _outputs(nb, "text/html")
             for m in _SRCDOC.finditer(o["data"]["text/html"])]
    assert len(pages) >= maps
    for page in pages:
        assert "/static/vendor/" not in page, "vendored files must be inlined: a notebook has no server"
        assert fetched_urls(page) == [], "an inline map must not load anything from the internet"
        assert LEAFLET_HEAD in page, "Leaflet itself is inlined"
    texts = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "Traceback" not in texts


def test_notebook_numbers_match_the_store(executed, notebook_db):
    """Figures printed in the notebooks equal an independent recomputation on the same database."""

    def printed(name: str) -> str:
        return "".join(o.get("text", "") for c in executed[name].cells if c.cell_type == "code"
                       for o in c.outputs if o.output_type == "stream")

    con = plain_duckdb(str(notebook_db))
    try:
        closed, found = zip(*con.execute("SELECT o.closed_at, e.time FROM events e "
                                         "JOIN events o ON o.event_id = e.rebound_of").fetchall(), strict=True)
    finally:
        con.close()
    # notebook 2: how soon rebounds come back, from Python datetimes instead of SQL
    days = [(f - c).total_seconds() / 86400 for c, f in zip(closed, found, strict=True)]
    within = (f"{sum(d <= 14 for d in days) / len(days):.0%} of rebounds are found within two weeks of closure, "
              f"{sum(d <= 30 for d in days) / len(days):.0%} within 30 days")
    assert within in printed("02_emerging_hotspots_and_rebounds.ipynb")
    # notebook 4: the fix-first gain equals the simulator's exact gains, recomputed from the definition
    from civicgrid.geo.store import Store
    from civicgrid.sites.simulator import assessment_sizes, site_probabilities

    store = Store(notebook_db)
    frame = site_probabilities(store)
    k = assessment_sizes(store)
    # draws per category: k_c, or the whole category when it has fewer active sites
    n = frame.groupby("category_code")["site_id"].transform("size")
    kk = np.minimum(frame["category_code"].map(k), n)
    total_k = kk.groupby(frame["category_code"]).first().sum()
    gain = (kk * frame["p"] / (n * total_k)).sort_values(ascending=False)
    expected = 1 - gain.sum()
    line = (f"fixing these 20 sites raises the expected overall rate from {expected:.1%} to "
            f"{expected + gain.head(20).sum():.1%}")
    assert line in printed("04_assessment_readiness_and_patrol.ipynb")


def test_mapview_inlines_leaflet(demo_db):
    import sys

    import folium

    sys.path.insert(0, str(NB_DIR))
    try:
        import mapview
    finally:
        sys.path.remove(str(NB_DIR))
    from civicgrid.geo.store import Store

    store = Store(demo_db)
    m = mapview.base_map(store)
    folium.CircleMarker([28.23, 112.94], radius=4, tooltip="x").add_to(m)
    page = mapview.inline_page(m)
    assert fetched_urls(page) == []
    assert fetched_urls('<script src="https://cdn.x/leaflet.js"></script><link href="//cdn.x/a.css">') == [
        "https://cdn.x/leaflet.js", "//cdn.x/a.css"]
    assert "/static/vendor/" not in page
    assert LEAFLET_HEAD in page
    assert fetched_urls(render_offline(m)) == []  # the service's page points at /static/vendor instead
    assert "/static/vendor/leaflet.js" in render_offline(m)
    assert "data:image/png;base64," in page  # the layer-control images of leaflet.css
    colours, edges, palette = mapview.colors([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], bins=2)
    assert edges == [1.0, 5.5, 10.0] and len(palette) == 2
    assert colours[:5] == [palette[0]] * 5 and colours[5:] == [palette[1]] * 5


def _printed(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.get("name") == "stdout")


def test_the_notebooks_run_on_real_cities(tmp_path, shared, monkeypatch):
    """The notebooks say they run on any civicgrid database (``CIVICGRID_DB``). On real cities they stopped with
    errors: dates of the demo city (2025) where San Francisco's 311 ends in January 2016 and Toronto's inspections
    in 2021, districts and streets a city may not have (San Francisco's census tracts are its only areas,
    Toronto has none), inspection hits a complaints-only city does not have. Now the hotspot notebooks run on San
    Francisco 311 and the risk and patrol notebooks on Toronto's sites and inspections, top to bottom, with their
    study periods taken from the data."""
    from civicgrid.api.cli import main
    from click.testing import CliRunner

    sf, tor = tmp_path / "sf.duckdb", tmp_path / "tor.duckdb"
    monkeypatch.setenv("CIVICGRID_TIMEZONE", "America/Los_Angeles")
    runs = [["import", "areas", str(shared / "us_sf311" / "sf_census_tracts_with_neighborhood.geojson"),
             "--db", str(sf), "--level", "community", "--code", "geoid", "--name", "nhood", "--quiet"],
            ["import", "events", str(shared / "us_sf311" / "sf311_cases_sample_10000.csv"), "--db", str(sf),
             "--map", "closed=Closed", "--date-order", "mdy", "--quiet"]]
    for args in runs:
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
    monkeypatch.setenv("CIVICGRID_TIMEZONE", "America/Toronto")
    toronto = shared / "dev_inspections" / "toronto" / "inspections.csv"
    runs = [["import", "sites", str(toronto), "--db", str(tor), "--id", "establishment_id", "--name",
             "establishment_name", "--category", "establishment_type", "--lat", "latitude", "--lng", "longitude",
             "--map", "address=establishment_address", "--quiet"],
            ["import", "inspections", str(toronto), "--db", str(tor), "--id", "inspection_id", "--site",
             "establishment_id", "--time", "inspection_date", "--result", "n_infractions", "--fail-when",
             "n_crucial>0", "--map", "critical=n_crucial", "--quiet"]]
    for args in runs:
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
    monkeypatch.delenv("CIVICGRID_TIMEZONE")

    done = {**_execute(NOTEBOOKS[:2], sf), **_execute(NOTEBOOKS[2:], tor)}
    for name, nb in done.items():
        errors = [f"{o.ename}: {o.evalue}" for c in nb.cells if c.cell_type == "code" for o in c.outputs
                  if o.output_type == "error"]
        assert not errors, f"{name}: {errors}"
        assert len(_outputs(nb, "image/png")) >= 2 and _outputs(nb, "text/html"), name
    # the study year ends with the last event's month, read from the store
    last = pd.read_csv(shared / "us_sf311" / "sf311_cases_sample_10000.csv", usecols=["Opened"])["Opened"]
    last = pd.to_datetime(last, format="%m/%d/%Y %I:%M:%S %p").max()
    assert last.strftime("%Y-%m") == "2016-01"
    for name in NOTEBOOKS[:2]:
        assert "study year 2015-02 … 2016-01" in _printed(done[name])
    # the backtest's window lies three months before the month of Toronto's last inspection (2021-12-31)
    assert "window 2021-09-01 … 2021-10-01" in _printed(done[NOTEBOOKS[2]])
    assert "the whole city; inspectors start at" in _printed(done[NOTEBOOKS[3]])  # no areas: the whole city


def test_the_notebooks_on_a_city_without_types_or_sites(tmp_path, shared):
    """Shenzhen as loaded from its files: Amap's districts, the 500 m grid and a day of taxi pick-ups with no type
    and no label, no sample frame. The hotspot notebooks stopped with errors (no group to map, one month where
    monthly space-time slices need ten), and their charts drew the districts' Chinese names as empty boxes. Now
    they run top to bottom, saying what the city lacks, with a Chinese font; the risk and patrol notebooks stop
    at once, saying what to load."""
    from civicgrid.grids.areas import import_areas, import_grids
    from civicgrid.sites.events import import_events

    db = tmp_path / "sz.duckdb"
    import_areas(shared / "cn_gcj02" / "深圳市.shp", db=db, level="district", crs="gcj02", progress=False)
    import_grids(shared / "cn_shenzhen" / "grid.shp", db=db, progress=False)
    import_events(shared / "cn_shenzhen" / "shenzhen_taxi_trips_2020-01.csv", db=db,
                  mapping={"time": "Stime", "id": "orderid"}, progress=False)
    done = _execute(NOTEBOOKS[:2], db)
    for name, nb in done.items():
        stderr = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                         if o.output_type == "stream" and o.get("name") == "stderr")
        assert "missing from font" not in stderr, name  # 福田区 drawn, not boxes
        assert len(_outputs(nb, "image/png")) >= (2 if name == NOTEBOOKS[0] else 1), name
    hot, emerging = _printed(done[NOTEBOOKS[0]]), _printed(done[NOTEBOOKS[1]])
    assert "no problem type and no label of their own: no maps by group" in hot
    assert "10,618 complaints of every kind" in hot
    assert "no space-time classes for this store: emerging hotspots need at least 10 time slices" in emerging
    stopped = _execute(NOTEBOOKS[2:], db, allow_errors=True)
    for name, nb in stopped.items():
        errors = [(i, o.ename, o.evalue) for i, c in enumerate(nb.cells) if c.cell_type == "code"
                  for o in c.outputs if o.output_type == "error"]
        assert errors[0][:2] == (1, "SystemExit") and "civicgrid import sites" in errors[0][2], name


def test_the_patrol_notebook_on_a_city_with_areas_and_no_events(tmp_path):
    """New York's ZIP areas, its restaurants and their inspections, no complaints: the patrol notebook planned
    "the whole city" (its busiest area is chosen by recent events, and there are none), and printed "(None)" for
    the English name a ZIP does not have. It now plans the area with the most sites, named with its code (30 ZIP
    areas are "Brooklyn"), and the risk notebook names no micro-grid the city does not have."""
    from civicgrid.geo.store import Store

    from conftest import build_new_york

    db = build_new_york(tmp_path / "nyc.duckdb")
    store = Store(db)
    most = store.sql("SELECT district_code AS code, count(*) AS n FROM sites WHERE active AND district_code IS NOT "
                     "NULL GROUP BY 1 ORDER BY n DESC, code LIMIT 1").iloc[0]
    done = _execute(NOTEBOOKS[2:], db)
    for name, nb in done.items():
        errors = [f"{o.ename}: {o.evalue}" for c in nb.cells if c.cell_type == "code" for o in c.outputs
                  if o.output_type == "error"]
        assert not errors, f"{name}: {errors}"
    printed = _printed(done[NOTEBOOKS[3]])
    assert f"({most['code']}), {most['n']:,} sites (no recent events); inspectors start at the area's centre" in printed
    assert "(None)" not in printed and ", grid None" not in _printed(done[NOTEBOOKS[2]])
