"""The map and the API docs in headless Chromium: no console errors, no request leaving the machine, layers drawn.

Starts ``civicgrid serve`` on the demo city in a subprocess and drives Debian's ``chromium`` with
``chromium-driver`` (installed by ``.ci/run``). Set ``CIVICGRID_SCREENSHOTS=DIR`` to keep PNG screenshots.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.browser

LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


@pytest.fixture(scope="module")
def server(demo_db, civicgrid_serve):
    """``civicgrid serve`` on the demo city; yields its base URL."""
    with civicgrid_serve(demo_db) as (base, _proc):
        yield base


@pytest.fixture(scope="module")
def browser(chromium):
    """Headless Chromium through chromedriver, with browser console and performance logs."""
    with chromium("--window-size=1400,900") as driver:
        yield driver


def _requested_urls(driver) -> list[str]:
    """Every URL the page asked the network for (CDP Network log) plus its resource-timing entries."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    urls += driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return urls


def _external(urls: list[str]) -> list[str]:
    out = []
    for u in urls:
        p = urlparse(u)
        if p.scheme in ("data", "blob", "about", "chrome", "chrome-untrusted", "devtools"):  # the browser's own
            continue
        if p.hostname not in LOCAL_HOSTS:
            out.append(u)
    return out


def _load(driver, url: str, ready_js: str, timeout: float = 30.0):
    driver.get_log("browser")  # drop logs of earlier pages
    driver.get_log("performance")
    driver.get(url)
    deadline = time.monotonic() + timeout
    while not driver.execute_script(ready_js):
        if time.monotonic() > deadline:
            pytest.fail(f"{url}: page not ready after {timeout} s ({ready_js})")
        time.sleep(0.2)
    time.sleep(0.5)


def _screenshot(driver, name: str) -> None:
    folder = os.environ.get("CIVICGRID_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def _console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


_MAP_READY = "return !!(window.cgLayers && window.cgLayers.hex && window.cgLayers.grids && window.cgLayers.sites)"

_MAP_COUNTS = """
const L_ = window.cgLayers, map = window[arguments[0]];
const onMap = l => map.hasLayer(l);
return {hex: L_.hex.getLayers().length, hexOnMap: onMap(L_.hex),
        grids: L_.grids.getLayers().length, gridsOnMap: onMap(L_.grids),
        sites: L_.sites.getLayers().length,
        clusters: L_.clusters ? L_.clusters.getLayers().length : 0,
        canvases: document.querySelectorAll('.leaflet-overlay-pane canvas').length,
        listed: document.querySelectorAll('#cg-clusters li').length,
        layerControl: Array.from(document.querySelectorAll('.leaflet-control-layers-overlays label'))
                           .map(l => l.textContent.trim()),
        title: document.title};
"""


def _map_name(driver) -> str:
    return driver.execute_script("return Object.keys(window).find(k => /^map_[0-9a-f]+$/.test(k))")


def test_map_page_offline_in_browser(server, browser, demo_db):
    from civicgrid.geo.aggregate import heatmap
    from civicgrid.geo.hotspots import hotspot_clusters
    from civicgrid.geo.store import Store

    _load(browser, server + "/map", _MAP_READY)
    errors = _console_errors(browser)
    urls = _requested_urls(browser)
    _screenshot(browser, "map.png")
    assert not errors, f"console errors on /map: {errors}"
    assert any(u.endswith("/static/vendor/leaflet.js") for u in urls), urls
    assert not _external(urls), f"/map requested outside the machine: {_external(urls)}"

    counts = browser.execute_script(_MAP_COUNTS, _map_name(browser))
    store = Store(demo_db)
    cells = heatmap(store, res=9)
    n_grids = int(store.sql("SELECT count(*) AS n FROM grids")["n"].iloc[0])
    n_sites = int(store.sql("SELECT count(*) AS n FROM sites WHERE active AND lng IS NOT NULL")["n"].iloc[0])
    clusters = hotspot_clusters(store, res=9)
    assert counts["hex"] == len(cells) > 100
    assert counts["grids"] == n_grids > 100
    assert counts["sites"] == n_sites
    assert counts["clusters"] == counts["listed"] == len(clusters) > 0
    assert counts["hexOnMap"] and counts["gridsOnMap"]
    assert counts["canvases"] >= 1  # vectors drawn on a canvas (prefer_canvas)
    assert {"微网格", "样本框点位", "热点区域"} <= set(counts["layerControl"]), counts["layerControl"]
    assert "热点地图" in counts["title"]


def test_map_hexagons_where_the_cells_are(server, browser, demo_db):
    """The decoded hexagons sit on the H3 cells: the page's hexagon bounds match h3's cell boundaries."""
    import numpy as np
    from civicgrid.geo.aggregate import EventFilter, cell_polygons, heatmap
    from civicgrid.geo.store import Store

    _load(browser, server + "/map?res=8&type=02&lang=en", _MAP_READY)
    assert not _console_errors(browser)
    got = browser.execute_script(
        "return window.cgLayers.hex.getLayers().map(p => {const b = p.getBounds();"
        " return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()];})")
    cells = heatmap(Store(demo_db), res=8, filters=EventFilter(types="02"))
    import shapely

    want = shapely.bounds(cell_polygons(cells["h3"].to_numpy()))
    assert len(got) == len(want)
    np.testing.assert_allclose(np.array(got), want, atol=2e-6)  # about 0.2 m
    labels = browser.execute_script(
        "return Array.from(document.querySelectorAll('.leaflet-control-layers-overlays label'))"
        ".map(l => l.textContent.trim())")
    assert "Micro-grids" in labels
    _screenshot(browser, "map_en.png")


def test_map_filter_form_reloads_with_parameters(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _load(browser, server + "/map", _MAP_READY)
    before = browser.execute_script("return window.cgLayers.hex.getLayers().length")
    Select(browser.find_element(By.ID, "cg-source")).select_by_value("complaint")
    Select(browser.find_element(By.ID, "cg-type")).select_by_value("02")
    browser.execute_script("document.getElementById('cg-filters').submit()")
    deadline = time.monotonic() + 30
    while "source=complaint" not in browser.current_url:
        assert time.monotonic() < deadline, browser.current_url
        time.sleep(0.2)
    deadline = time.monotonic() + 30
    while not browser.execute_script(_MAP_READY):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "type=02" in browser.current_url
    after = browser.execute_script("return window.cgLayers.hex.getLayers().length")
    assert 0 < after < before
    assert Select(browser.find_element(By.ID, "cg-type")).first_selected_option.get_attribute("value") == "02"
    assert not _console_errors(browser)


def test_docs_offline_in_browser(server, browser):
    _load(browser, server + "/docs", "return document.querySelectorAll('.opblock').length > 10")
    errors = _console_errors(browser)
    urls = _requested_urls(browser)
    _screenshot(browser, "docs.png")
    assert not errors, errors
    assert not _external(urls), f"/docs requested outside the machine: {_external(urls)}"
    assert any(u.endswith("/static/vendor/swagger-ui-bundle.js") for u in urls)
    assert any(u.endswith("/openapi.json") for u in urls)


_CLICK_TARGET = """
const map = window[arguments[0]], L_ = window.cgLayers, size = map.getSize();
[L_.sites, L_.clusters].forEach(l => l && map.removeLayer(l));  // markers would sit above the shapes
if (arguments[1] === 'grid') { map.removeLayer(L_.hex); }
const shapes = arguments[1] === 'grid' ? L_.grids.getLayers() : L_.hex.getLayers();
for (const s of shapes) {
    const p = map.latLngToContainerPoint(s.getCenter());
    if (p.x > 340 && p.y > 60 && p.x < size.x - 220 && p.y < size.y - 60) {
        return {x: p.x, y: p.y, w: size.x, h: size.y};
    }
}
return null;
"""


@pytest.mark.parametrize("target", ["hex", "grid"])
def test_click_opens_the_popup_of_what_is_under_the_pointer(server, browser, target):
    """A click on a heat hexagon opens the hexagon's numbers with the micro-grid's card; where no hexagon is, the
    micro-grid's card."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _load(browser, server + "/map?lang=en", _MAP_READY)
    name = _map_name(browser)
    spot = browser.execute_script(_CLICK_TARGET, name, target)
    assert spot, "no shape inside the visible map"
    el = browser.find_element(By.ID, name)
    ActionChains(browser).move_to_element_with_offset(el, spot["x"] - spot["w"] / 2,
                                                      spot["y"] - spot["h"] / 2).click().perform()
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = browser.execute_script(
            "const p = document.querySelector('.leaflet-popup-content'); return p ? p.textContent : ''")
        if text:
            break
        time.sleep(0.2)
    _screenshot(browser, f"popup_{target}.png")
    if target == "hex":
        # the hexagon's numbers (and the card of a micro-grid under it: tests/test_browser_planner.py)
        assert "Events" in text and "Sites affected" in text, text
    else:
        assert "Grid leader" in text and "Households" in text, text
    assert not _console_errors(browser)
