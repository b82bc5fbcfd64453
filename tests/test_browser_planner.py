"""The planner's map in headless Chromium (issue 15): every URL filter survives the form's 应用 button, a click on a
hexagon reaches the micro-grid's card (leader and phone, unless ``public_layers`` hides them), unreachable tiles
are said, the phone layout. Uses the fixtures and helpers of ``tests/test_browser.py``."""

from __future__ import annotations

import os
import time

import pytest

from test_browser import (  # noqa: F401  (browser and server are fixtures)
    _MAP_READY,
    _console_errors,
    _load,
    _map_name,
    _screenshot,
    browser,
    server,
)

pytestmark = pytest.mark.browser

_FORM_STATE = """
const sel = id => Array.from(document.getElementById(id).selectedOptions).map(o => o.value);
const val = id => { const el = document.getElementById(id); return [el.type, el.value]; };
return {type: sel('cg-type'), category: sel('cg-category'), area: sel('cg-area'), status: sel('cg-status'),
        source: sel('cg-source'), start: val('cg-start'), end: val('cg-end'), res: sel('cg-res'),
        metric: sel('cg-metric'), summary: document.getElementById('cg-summary').textContent,
        hex: window.cgLayers.hex.getLayers().length};
"""


def _apply(browser):  # noqa: F811
    """Press the form's 应用 button and wait for the new page."""
    from selenium.webdriver.common.by import By

    browser.execute_script("window.cgOld = true")  # gone once the new page has loaded
    browser.find_element(By.CSS_SELECTOR, "#cg-filters button[type=submit]").click()
    deadline = time.monotonic() + 60
    while browser.execute_script("return window.cgOld === true") or not browser.execute_script(_MAP_READY):
        assert time.monotonic() < deadline, "the form did not reload the page"
        time.sleep(0.2)
    time.sleep(0.3)


def test_every_url_filter_survives_the_form(server, browser, demo_db):  # noqa: F811
    from civicgrid.geo.aggregate import EventFilter, heatmap
    from civicgrid.geo.store import Store

    store = Store(demo_db)
    pt = store.sql("SELECT code, name_zh, major_code, major_zh FROM problem_types ORDER BY code")
    minor, major = pt.iloc[0], pt[pt.major_code == "02"].iloc[0]
    two = pt[pt.major_code == "02"]["code"].iloc[:2].tolist()
    district = store.sql("SELECT code, name FROM areas WHERE level = 'district' ORDER BY code").iloc[0]
    # the micro-grid and site category with the most events before mid-2025 (so the view is not empty)
    top = store.sql("SELECT e.grid_code, c.code, c.name_zh, count(*) AS n FROM events e JOIN sites s USING (site_id) "
                    "JOIN site_categories c ON c.code = s.category_code WHERE e.time < '2025-06-30 18:00' "
                    "AND e.grid_code IS NOT NULL GROUP BY ALL ORDER BY n DESC, 1, 2 LIMIT 1").iloc[0]
    grid, cat = top["grid_code"], {"code": top["code"], "name_zh": top["name_zh"]}
    views = [  # (query, the filter it means, what the form must show)
        ({"type": minor.name_zh, "start": "2025-01-01"}, EventFilter(types=minor.code, start="2025-01-01"),
         {"type": [minor.code], "start": ["date", "2025-01-01"]}),
        ({"type": ",".join(two)}, EventFilter(types=two), {"type": two}),
        ({"type": major.major_zh, "status": "open"}, EventFilter(types=major.major_code, status="open"),
         {"type": [major.major_code], "status": ["open"]}),
        ({"area": district["name"], "source": "complaint", "res": "8"},
         EventFilter(area=district["code"], source="complaint"),
         {"area": [district["code"]], "source": ["complaint"], "res": ["8"]}),
        ({"area": grid, "end": "2025-06-30T18:00", "category": cat["name_zh"], "metric": "sites"},
         EventFilter(area=grid, end="2025-06-30T18:00", categories=cat["code"]),
         {"area": [grid], "end": ["datetime-local", "2025-06-30T18:00"], "category": [cat["code"]],
          "metric": ["sites"]}),
    ]
    from urllib.parse import urlencode

    for query, f, shown in views:
        _load(browser, server + "/map?" + urlencode(query), _MAP_READY, timeout=60)
        before = browser.execute_script(_FORM_STATE)
        for key, want in shown.items():
            assert before[key] == want, (query, key, before[key])
        res = int(query.get("res", 9))
        cells = heatmap(store, res=res, filters=f.validate(store), metric=query.get("metric", "count"))
        assert cells["count"].sum() > 0, query
        assert before["summary"].startswith(f"{int(cells['count'].sum()):,} 件事件"), (query, before["summary"])
        assert before["hex"] == len(cells)
        _apply(browser)
        after = browser.execute_script(_FORM_STATE)
        assert after == before, (query, browser.current_url)
        assert not _console_errors(browser)
    _screenshot(browser, "map_filters.png")


_HEX_SPOTS = """
const map = window[arguments[0]], L_ = window.cgLayers, size = map.getSize(), out = [];
for (const s of L_.hex.getLayers()) {
    const p = map.latLngToContainerPoint(s.getCenter()).round();
    if (p.x > 340 && p.y > 80 && p.x < size.x - 260 && p.y < size.y - 80) {
        const ll = map.containerPointToLatLng(p);
        out.push({x: p.x, y: p.y, w: size.x, h: size.y, lng: ll.lng, lat: ll.lat});
    }
}
return out;
"""


def _click_hexagon(browser, db):  # noqa: F811
    """Click the centre of a visible hexagon lying in a micro-grid (the store's polygons decide which)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    name = _map_name(browser)
    spots = browser.execute_script(_HEX_SPOTS, name)
    spot = next((s for s in spots[::7] if _grid_at(db, s["lng"], s["lat"]) is not None), None)
    assert spot, "no hexagon inside a micro-grid in the visible map"
    el = browser.find_element(By.ID, name)
    ActionChains(browser).move_to_element_with_offset(el, spot["x"] - spot["w"] / 2,
                                                      spot["y"] - spot["h"] / 2).click().perform()
    deadline, text = time.monotonic() + 10, ""
    while time.monotonic() < deadline and not text:
        text = browser.execute_script(
            "const p = document.querySelector('.leaflet-popup-content'); return p ? p.textContent : ''")
        time.sleep(0.2)
    return spot, text


def _grid_at(demo_db, lng, lat):
    """The micro-grid holding a point, found by shapely from the store's polygons (independently of the page)."""
    import shapely
    from civicgrid.geo.store import Store

    g = Store(demo_db).sql("SELECT code, name, leader_name, leader_phone, ST_AsWKB(geom) AS wkb FROM grids")
    polys = shapely.from_wkb(g["wkb"].map(bytes).to_numpy())
    hit = shapely.contains_xy(polys, lng, lat)
    return g[hit].iloc[0] if hit.sum() == 1 else None


def test_hexagon_click_reaches_the_grid_leader(server, browser, demo_db):  # noqa: F811
    _load(browser, server + "/map", _MAP_READY)
    spot, text = _click_hexagon(browser, demo_db)
    _screenshot(browser, "popup_hex_grid.png")
    grid = _grid_at(demo_db, spot["lng"], spot["lat"])
    assert "事件数" in text and "涉及点位" in text, text  # the hexagon's own numbers
    assert grid["name"] in text and grid["code"] in text, (grid["name"], text)
    assert "网格长" in text and grid["leader_name"] in text and grid["leader_phone"] in text, text
    assert browser.execute_script("return window[arguments[0]].hasLayer(window.cgLayers.hex)", _map_name(browser))
    assert not _console_errors(browser)


def test_hexagon_click_without_public_leaders(demo_db, civicgrid_serve, browser):  # noqa: F811
    old = os.environ.get("CIVICGRID_PUBLIC_LAYERS")
    os.environ["CIVICGRID_PUBLIC_LAYERS"] = "areas,grids,sites,categories,problem-types"
    try:
        with civicgrid_serve(demo_db) as (base, _proc):
            _load(browser, base + "/map", _MAP_READY)
            spot, text = _click_hexagon(browser, demo_db)
    finally:
        if old is None:
            os.environ.pop("CIVICGRID_PUBLIC_LAYERS")
        else:
            os.environ["CIVICGRID_PUBLIC_LAYERS"] = old
    grid = _grid_at(demo_db, spot["lng"], spot["lat"])
    assert grid["name"] in text, text
    assert "网格长" not in text and grid["leader_name"] not in text and grid["leader_phone"] not in text, text


def test_unreachable_tiles_are_said(server, browser):  # noqa: F811
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*tile.openstreetmap.org*"]})
    try:
        _load(browser, server + "/map?basemap=osm", _MAP_READY)
        deadline = time.monotonic() + 15
        while browser.execute_script("return document.getElementById('cg-tiles').hidden"):
            assert time.monotonic() < deadline, "no notice of the unreachable tiles"
            time.sleep(0.3)
        text = browser.execute_script("return document.getElementById('cg-tiles').textContent")
        _screenshot(browser, "map_osm_offline.png")
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    assert "OpenStreetMap 底图瓦片无法加载" in text


def test_map_on_a_phone(server, browser):  # noqa: F811
    browser.set_window_size(390, 844)
    try:
        _load(browser, server + "/map", _MAP_READY)
        got = browser.execute_script("""
            const map = window[arguments[0]], side = document.getElementById('cg-side').getBoundingClientRect();
            const b = map.getBounds(), box = map.getContainer().getBoundingClientRect();
            const city = window.cgLayers.grids.getBounds();
            const nw = map.latLngToContainerPoint(city.getNorthWest());
            const se = map.latLngToContainerPoint(city.getSouthEast());
            return {sideTop: side.top, sideLeft: side.left, width: box.width, height: box.height,
                    top: nw.y, left: nw.x, right: se.x, bottom: se.y, zoom: map.getZoom(),
                    sitesShown: map.hasLayer(window.cgLayers.sites)};""", _map_name(browser))
        _screenshot(browser, "map_phone.png")
    finally:
        browser.set_window_size(1400, 900)
    # the panel lies along the bottom and the city's grids are fitted above it, inside the width
    assert got["sideLeft"] < 20 and got["sideTop"] > got["height"] * 0.4, got
    assert got["left"] >= -2 and got["right"] <= got["width"] + 2 and got["bottom"] <= got["sideTop"] + 2, got
    assert not got["sitesShown"]  # site bubbles wait for street zoom
