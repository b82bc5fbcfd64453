"""The field page on a phone-sized headless Chromium (390×844): a visit recorded online, one recorded offline (the
browser's network switched off through DevTools), kept across a reload, and sent once when the connection returns.

Starts ``civicgrid serve`` on a copy of the demo city with today's plan (the field keys are valid until the end of
the plan's day). Set ``CIVICGRID_SCREENSHOTS=DIR`` to keep PNG screenshots.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import prcoords
import pytest
from civicgrid.geo.store_files import copy_store

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
#: DevTools network conditions of the test: a slow mobile line, then no line at all.
NET = {"latency": 80, "download_throughput": 200 * 1024, "upload_throughput": 100 * 1024}


@pytest.fixture(scope="module")
def field_city(demo_db: Path, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the demo city with today's plan for one inspector; (store, plan)."""
    from civicgrid.geo.store import Store
    from civicgrid.geo.times import now_local
    from civicgrid.sites.patrol import plan_day, save_plan

    db = tmp_path_factory.mktemp("field_browser") / "city.duckdb"
    copy_store(demo_db, db)
    doc = plan_day(Store(db), [{"name": "王伟", "start": [112.93, 28.22], "shift_start": "09:00",
                                "shift_minutes": 150, "mode": "walk"}],
                   date=now_local().date().isoformat(), area="430105001", time_limit_s=1.0, solver="ortools",
                   max_candidates=60)
    save_plan(db, doc)
    assert len(doc["routes"][0]["stops"]) >= 3
    return db, doc


@pytest.fixture(scope="module")
def server(field_city, civicgrid_serve):
    with civicgrid_serve(field_city[0]) as (base, _proc):
        yield base


@pytest.fixture(scope="module")
def phone(chromium):
    """Headless Chromium emulating a 390×844 phone, with console and network logs."""
    with chromium("--hide-scrollbars", mobile=PHONE) as driver:
        yield driver


def _wait(driver, js: str, what: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(js)
        if value:
            return value
        if time.monotonic() > deadline:
            shown = driver.execute_script("return Array.from(document.querySelectorAll('.stop .msg'), m => "
                                          "m.textContent).slice(0, 3)")
            logs = [e["message"] for e in driver.get_log("browser")]
            pytest.fail(f"{what}: not after {timeout} s; the cards say {shown}; console {logs}")
        time.sleep(0.2)


def _screenshot(driver, name: str) -> None:
    folder = os.environ.get("CIVICGRID_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def _visits(db: Path, plan_id: str, site_id: int):
    from civicgrid.geo.store import Store

    return Store(db).sql("SELECT i.inspection_id, i.inspector, i.conforming, i.note, "
                         "(SELECT list(e.problem_type ORDER BY e.event_id) FROM events e "
                         " WHERE e.inspection_id = i.inspection_id) AS types "
                         "FROM inspections i WHERE plan_id = ? AND site_id = ?", [plan_id, int(site_id)])


def _card(driver, i: int):
    from selenium.webdriver.common.by import By

    card = driver.find_elements(By.CSS_SELECTOR, ".stop")[i]
    driver.execute_script("arguments[0].scrollIntoView()", card)
    return card


def _msg(driver, i: int) -> str:
    return driver.execute_script("return document.querySelectorAll('.stop .msg')[arguments[0]].textContent", i)


def test_field_page_records_online_and_offline_visits_once(server, phone, field_city, tmp_path) -> None:
    from civicgrid.sites.patrol.field import field_links
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    db, doc = field_city
    stops = doc["routes"][0]["stops"]
    url = field_links(db, doc, base_url=server)["王伟"]
    phone.get_log("browser")
    phone.get_log("performance")
    phone.get(url)
    _wait(phone, "return window.cgField && window.cgField.ready", "page ready")
    time.sleep(0.5)
    size = phone.execute_script("return [innerWidth, innerHeight, document.documentElement.scrollWidth]")
    assert size == [390, 844, 390], size  # phone-sized, nothing wider than the screen
    assert phone.execute_script("return document.querySelectorAll('.stop').length") == len(stops)
    assert phone.execute_script("return document.querySelectorAll('.cg-stop').length") == len(stops)  # map markers
    names = phone.execute_script("return Array.from(document.querySelectorAll('.stop .head b'), b => b.textContent)")
    assert names == [s["name"] for s in stops]
    # AMap's link carries GCJ-02 coordinates (checked against an independent implementation)
    amap = _card(phone, 0).find_element(By.CSS_SELECTOR, "a.nav-amap").get_attribute("href")
    lng, lat = (float(v) for v in parse_qs(urlparse(amap).query)["to"][0].split(",")[:2])
    want_lat, want_lng = prcoords.wgs_gcj((stops[0]["lat"], stops[0]["lng"]))
    assert (lng, lat) == pytest.approx((want_lng, want_lat), abs=2e-6)
    requested = [json.loads(e["message"])["message"]["params"]["request"]["url"]
                 for e in phone.get_log("performance")
                 if json.loads(e["message"])["message"].get("method") == "Network.requestWillBeSent"]
    local = ("data", "blob", "about", "chrome", "chrome-untrusted", "devtools")
    outside = [u for u in requested if urlparse(u).scheme not in local and urlparse(u).hostname != "127.0.0.1"]
    assert requested and not outside, outside
    assert any(u.endswith("/static/vendor/leaflet.js") for u in requested)
    _screenshot(phone, "field.png")

    # 1. online: stop 1 conforming
    card = _card(phone, 0)
    card.find_element(By.CSS_SELECTOR, "input[value=ok]").click()
    card.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(phone, "return document.querySelectorAll('.stop')[0].classList.contains('done')", "online visit")
    assert "已上传" in _card(phone, 0).find_element(By.CSS_SELECTOR, ".state").text
    got = _visits(db, doc["plan_id"], stops[0]["site_id"])
    assert len(got) == 1 and got.iloc[0].inspector == "王伟" and bool(got.iloc[0].conforming)
    _wait(phone, "return !!navigator.serviceWorker.controller", "service worker")

    # 2. offline: stop 2 with a problem and a note, queued on the phone
    phone.set_network_conditions(offline=True, **NET)
    card = _card(phone, 1)
    card.find_element(By.CSS_SELECTOR, "input[value=bad]").click()
    Select(card.find_element(By.CSS_SELECTOR, "select")).select_by_value("0201")
    card.find_element(By.CSS_SELECTOR, "textarea").send_keys("门前堆放杂物")
    from PIL import Image

    photo = tmp_path / "camera.jpg"  # a 2400×1800 camera picture: kept on the phone, shrunk to 1600 px
    Image.new("RGB", (2400, 1800), (180, 120, 60)).save(photo, quality=90)
    card.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(photo))
    card.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(phone, "return window.cgField.queued === 1 && "
                 "document.querySelectorAll('.stop .msg')[1].textContent.includes('联网后自动发送')", "queued visit")
    assert "离线" in phone.find_element(By.ID, "cg-net").text
    time.sleep(1.5)  # a send attempt while offline changes nothing on the server
    assert len(_visits(db, doc["plan_id"], stops[1]["site_id"])) == 0
    _screenshot(phone, "field_offline.png")
    # the queue outlives a reload without a connection (the service worker serves the page)
    phone.refresh()
    _wait(phone, "return window.cgField && window.cgField.ready && window.cgField.queued === 1", "reload offline")
    assert "联网后自动发送" in _msg(phone, 1)
    assert phone.execute_script("return document.querySelectorAll('.stop')[0].classList.contains('done')")

    # 3. the connection returns: the visit is sent, once
    phone.set_network_conditions(offline=False, **NET)
    phone.execute_script("window.dispatchEvent(new Event('online'))")
    _wait(phone, "return window.cgField.queued === 0 && "
                 "document.querySelectorAll('.stop')[1].classList.contains('done')", "sent after reconnect")
    phone.execute_script("return window.cgField.flush()")  # nothing left to send
    time.sleep(1)
    got = _visits(db, doc["plan_id"], stops[1]["site_id"])
    assert len(got) == 1, got
    assert (got.iloc[0].inspector, bool(got.iloc[0].conforming), got.iloc[0].note, list(got.iloc[0].types)) == (
        "王伟", False, "门前堆放杂物", ["0201"])
    assert "已立案 1 件" in _msg(phone, 1)
    from civicgrid.geo.store import Store
    from civicgrid.sites.visits import photo_folder
    from PIL import Image

    name = Store(db).sql("SELECT photo FROM inspections WHERE inspection_id = ?",
                         [int(got.iloc[0].inspection_id)])["photo"].iloc[0]
    with Image.open(photo_folder(db) / name) as im:  # sent from IndexedDB after the reconnect
        assert im.format == "JPEG" and im.size == (1600, 1200)
    assert "已记录 2/" in phone.find_element(By.ID, "cg-progress").text
    errors = [e["message"] for e in phone.get_log("browser") if e["level"] == "SEVERE"
              and "ERR_INTERNET_DISCONNECTED" not in e["message"]]  # the sends tried while offline
    assert not errors, errors
    _screenshot(phone, "field_sent.png")
    phone.get(url + "&lang=en")
    _wait(phone, "return window.cgField && window.cgField.ready", "English page")
    assert "Recorded 2/" in phone.find_element(By.ID, "cg-progress").text
    _screenshot(phone, "field_en.png")


def test_field_page_records_visits_where_the_browser_refuses_indexeddb(server, chromium, field_city) -> None:
    """A browser that refuses IndexedDB (storage turned off): the page said nothing, its start stopped at the
    count of the outbox and a visit's submit threw, so nothing could be recorded. Now the outbox is kept in the
    page, the page says so, and a visit is recorded once."""
    from civicgrid.sites.patrol.field import field_links
    from selenium.webdriver.common.by import By

    db, doc = field_city
    stops = doc["routes"][0]["stops"]
    url = field_links(db, doc, base_url=server)["王伟"]
    with chromium("--hide-scrollbars", mobile=PHONE) as driver:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
            "IDBFactory.prototype.open = function () { "
            "throw new DOMException('storage is turned off', 'InvalidStateError'); };")})
        driver.get(url + "&lang=en")
        _wait(driver, "return window.cgField && window.cgField.ready", "page ready without IndexedDB")
        assert driver.execute_script("try { indexedDB.open('x'); return false; } catch (e) { return true; }")
        memory = driver.find_element(By.ID, "cg-memory")
        assert memory.is_displayed() and "keep this page open" in memory.text
        assert "Recorded " in driver.find_element(By.ID, "cg-progress").text
        size = driver.execute_script("return [innerWidth, document.documentElement.scrollWidth]")
        assert size == [390, 390], size
        card = _card(driver, len(stops) - 1)
        card.find_element(By.CSS_SELECTOR, "input[value=ok]").click()
        card.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        _wait(driver, f"return document.querySelectorAll('.stop')[{len(stops) - 1}].classList.contains('done')",
              "visit sent without IndexedDB")
        assert driver.execute_script("return window.cgField.queued") == 0
        _screenshot(driver, "field_no_indexeddb.png")
    got = _visits(db, doc["plan_id"], stops[-1]["site_id"])
    assert len(got) == 1 and bool(got.iloc[0].conforming)
