"""A city's own labels on pages: shown as text, never run as a template on the server or as HTML in the browser.

Names come from the city's files (areas, micro-grids, sites, problem types). folium/branca compile
``Element(text)`` as a Jinja template and folium's GeoJSON tooltips and popups insert property values as HTML,
so a label such as ``{{ 7919*7 }}`` ran on the server (the page showed 55433) and ``<img onerror=…>`` ran in the
reader's browser.
"""

from __future__ import annotations

import csv
import re

import geopandas as gpd
import pytest
import shapely
from civicgrid.api.app import create_app
from civicgrid.grids.areas import import_grids
from civicgrid.sites.events import import_events
from civicgrid.sites.frame import import_sites
from fastapi.testclient import TestClient

from conftest import build_small_city

#: Runs on the server if a page compiles the label as a Jinja template (7919 * 7 = 55433).
TEMPLATE = "{{ 7919*7 }}"
#: Runs in the browser if a page inserts the label as HTML.
HTML = "<img src=x onerror=window.cgPwned=(window.cgPwned||0)+1>"
LABEL = f"坏{TEMPLATE}{HTML}"
#: A formula if a workbook writes it as one (openpyxl does for any text starting with '=').
FORMULA = '=HYPERLINK("http://example.com/x","点此")'


@pytest.fixture(scope="module")
def hostile_city(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    db = build_small_city(tmp / "city.duckdb", tmp)
    f = tmp / "grid.geojson"
    gpd.GeoDataFrame({"code": ["430102001001009", "430102001001010"], "name": [f"网格{LABEL}", FORMULA],
                      "网格长": [f"长{LABEL}", FORMULA]},
                     geometry=[shapely.box(112.9, 28.2, 112.92, 28.22), shapely.box(112.9, 28.2, 112.901, 28.201)],
                     crs=4326).to_file(f)
    import_grids(f, db=db, mapping={"leader": "网格长"}, progress=False)
    sites = tmp / "sites.csv"
    with sites.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["编号", "名称", "类别", "经度", "纬度", "地址"],
                                  ["S1", f"市场{LABEL}", "16", "112.905", "28.205", f"路{LABEL}"]])
    assert import_sites(sites, db=db, progress=False).loaded == 1
    events = tmp / "events.csv"
    with events.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "time", "lat", "lng", "type", "address"])
        for i in range(40):
            w.writerow([f"E{i}", f"2024-03-{1 + i % 28:02d} 10:00", f"{28.201 + (i % 5) * 0.001:.4f}",
                        f"{112.901 + (i % 7) * 0.001:.4f}", f"类型{LABEL}", f"址{LABEL}"])
    assert import_events(events, db=db, progress=False).loaded == 40
    return db


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_map_page_shows_labels_as_text(hostile_city, lang):
    page = TestClient(create_app(hostile_city)).get(f"/map?lang={lang}&start=2024-01-01&end=2024-12-31")
    assert page.status_code == 200, page.text
    text = page.text
    assert "55433" not in text  # no label ran as a template
    assert "7919*7" in text  # the label is on the page (panel's type filter, popups' data)
    assert "<img src=x" not in text  # nor as markup, anywhere (panel escaped, script data \u003c-escaped)
    assert re.search(r"&lt;img src=x|\\u003cimg src=x", text)


def test_scorecard_page_shows_labels_as_text(hostile_city):
    """The KPI scorecard's grid map (folium tooltips with the micro-grids' names) and its tables."""
    client = TestClient(create_app(hostile_city))
    for lang in ("zh", "en"):
        r = client.get(f"/api/reports/2024-03/scorecard?level=grid&lang={lang}")
        assert r.status_code == 200, r.text
        assert "55433" not in r.text and "<img src=x" not in r.text
        assert "7919*7" in r.text


@pytest.mark.browser
def test_map_popups_and_tooltips_do_not_run_labels(hostile_city, civicgrid_serve, chromium):
    """Every popup and tooltip of the map opened in Chromium: the labels appear as text and no markup runs."""
    with civicgrid_serve(hostile_city) as (base, _proc), chromium("--window-size=1200,900") as driver:
        driver.get(base + "/map?start=2024-01-01&end=2024-12-31")
        ready = "return !!(window.cgLayers && window.cgLayers.hex && window.cgLayers.sites)"
        for _ in range(200):
            if driver.execute_script(ready):
                break
            driver.implicitly_wait(0.1)
        shown = driver.execute_script("""
            const map = window[Object.keys(window).find(k => /^map_[0-9a-f]+$/.test(k))], texts = [];
            // click and hover every feature as a reader would; keep the text of the popups and tooltips shown
            const visit = l => {
                let at = null;
                try { at = l.getLatLng ? l.getLatLng() : (l.getBounds ? l.getBounds().getCenter() : null); }
                catch (e) { at = null; }
                if (!at) { return; }
                for (const type of ["click", "mouseover"]) {
                    l.fire(type, {latlng: at, originalEvent: {}}, true);
                    document.querySelectorAll(".leaflet-popup-content, .leaflet-tooltip")
                        .forEach(el => texts.push(el.innerText));
                }
                map.closePopup();
            };
            map.eachLayer(l => { if (l.eachLayer) { l.eachLayer(visit); } else { visit(l); } });
            // the sites' markers (shown from zoom 15): their popups' HTML
            window.cgLayers.sites.getLayers().forEach(m => {
                const div = document.createElement('div');
                div.innerHTML = m.getPopup().getContent();
                document.body.appendChild(div);
                texts.push(div.innerText);
            });
            return texts;
        """)
        import time

        time.sleep(1.0)  # an <img src=x> fails and runs its onerror within milliseconds
        pwned = driver.execute_script("return window.cgPwned || 0")
    assert pwned == 0
    joined = "\n".join(shown)
    assert f"网格{LABEL}" in joined  # the grid's popup or tooltip, as text
    assert f"市场{LABEL}" in joined and f"路{LABEL}" in joined  # the site's popup


def test_kpi_workbook_keeps_labels_as_text(hostile_city):
    """A grid called '=HYPERLINK(…)' is a text cell in the KPI workbook, not a formula Excel would run."""
    import io

    from openpyxl import load_workbook

    r = TestClient(create_app(hostile_city)).get("/api/reports/2024-03.xlsx?level=grid")
    assert r.status_code == 200, r.text
    wb = load_workbook(io.BytesIO(r.content))
    cells = [c for ws in wb.worksheets for row in ws.iter_rows() for c in row if c.value is not None]
    assert not [c.coordinate for c in cells if c.data_type == "f"]
    assert [c.value for c in cells if c.value == FORMULA] == [FORMULA]  # the grid's name, as written


def test_kpi_csv_keeps_labels_as_text(hostile_city, tmp_path):
    """`cases kpis --csv`: a label starting with '=' is written with a leading apostrophe; numbers as they are."""
    import pandas as pd
    from civicgrid.api.cli import main
    from click.testing import CliRunner

    out = tmp_path / "kpis.csv"
    r = CliRunner().invoke(main, ["cases", "kpis", "--db", str(hostile_city), "--start", "2024-03-01",
                                  "--end", "2024-04-01", "--level", "grid", "--csv", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel reads the Chinese labels
    table = pd.read_csv(out, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    cells = [v for col in table.columns for v in table[col]]
    assert "'" + FORMULA in cells and FORMULA not in cells
    assert not [v for v in cells if v[:1] in ("=", "+", "@")]
    assert f"网格{LABEL}" in cells  # other labels untouched
