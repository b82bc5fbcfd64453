"""The inspectors' field page (issue 15): field keys, navigation links, recording visits exactly once, the links in
the plan's exports and POST /api/inspections."""

from __future__ import annotations

import io
import json
import threading
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
import prcoords
import pytest
from civicgrid.geo.errors import AuthenticationError
from civicgrid.geo.store_files import copy_store
from fastapi.testclient import TestClient

STREET = "430105001"


@pytest.fixture(scope="module")
def city(demo_db: Path, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("field") / "city.duckdb"
    copy_store(demo_db, db)
    return db


@pytest.fixture(scope="module")
def tokens(city: Path) -> dict:
    from civicgrid.geo.users import add_user

    return {role: add_user(city, f"field-{role}", role=role)[1] for role in ("viewer", "inspector")}


@pytest.fixture(scope="module")
def app(city: Path):
    from civicgrid.api.app import create_app

    return create_app(city, settings={"max_photo_mb": 0.05})


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return TestClient(app)


def _auth(tokens: dict, role: str) -> dict:
    return {"Authorization": f"Bearer {tokens[role]}"}


@pytest.fixture(scope="module")
def plan(client: TestClient, tokens: dict) -> dict:
    """Today's plan of two inspectors in one street (the field keys are valid until the end of the plan's day)."""
    from civicgrid.geo.times import now_local

    body = {"date": now_local().date().isoformat(),
            "inspectors": [{"name": "王伟", "start": [112.93, 28.22], "shift_start": "09:00", "shift_minutes": 150,
                            "mode": "bike"},
                           {"name": "Li Na", "start": [112.93, 28.22], "shift_start": "09:00", "shift_minutes": 120,
                            "mode": "walk"}],
            "options": {"area": STREET, "time_limit_s": 1.0, "solver": "ortools", "max_candidates": 80}}
    res = client.post("/api/patrols/plan", json=body, headers=_auth(tokens, "inspector"))
    assert res.status_code == 200, res.text
    doc = res.json()
    assert all(len(r["stops"]) >= 3 for r in doc["routes"]), [len(r["stops"]) for r in doc["routes"]]
    return doc


@pytest.fixture(scope="module")
def links(client: TestClient, plan: dict, tokens: dict) -> dict:
    res = client.get(f"/api/patrols/{plan['plan_id']}/field-links", headers=_auth(tokens, "inspector"))
    assert res.status_code == 200, res.text
    return {x["inspector"]: x["url"] for x in res.json()["links"]}


def _path(url: str) -> tuple[str, dict]:
    u = urlparse(url)
    return u.path, {k: v[0] for k, v in parse_qs(u.query).items()}


# --------------------------------------------------------------------------------------------- keys


def test_field_key_is_bound_to_plan_inspector_and_day(city: Path) -> None:
    import hashlib
    import hmac

    from civicgrid.geo.store import Store
    from civicgrid.geo.users import check_field_key, field_key, field_secret, new_field_secret

    secret = field_secret(city)
    assert field_secret(Store(city)) == secret and len(secret) == 32  # created once, kept in the store
    day = date(2025, 12, 20)
    key = field_key(secret, plan_id="p1", inspector="王伟", day=day)
    # independently: HMAC-SHA256 of the documented message, first 15 bytes, URL-safe base64 without padding
    import base64

    want = base64.urlsafe_b64encode(hmac.new(secret, "civicgrid-field\np1\n王伟\n2025-12-20".encode(),
                                             hashlib.sha256).digest()[:15]).decode()
    assert key == want and len(key) == 20
    ok = {"plan_id": "p1", "inspector": "王伟", "day": day}
    check_field_key(secret, key, **ok, now=datetime(2025, 12, 20, 6, 0))
    check_field_key(secret, key, **ok, now=datetime(2025, 12, 20, 23, 59, 59))
    check_field_key(secret, key, **ok, now=datetime(2025, 12, 19, 20, 0))  # the evening before (links go out)
    with pytest.raises(AuthenticationError, match="expired"):
        check_field_key(secret, key, **ok, now=datetime(2025, 12, 21, 0, 0))
    with pytest.raises(AuthenticationError, match="own plan and inspector"):
        check_field_key(secret, key, **{**ok, "inspector": "李娜"}, now=datetime(2025, 12, 20, 9))
    with pytest.raises(AuthenticationError, match="own plan and inspector"):
        check_field_key(secret, key, **{**ok, "plan_id": "p2"}, now=datetime(2025, 12, 20, 9))
    with pytest.raises(AuthenticationError, match="own plan and inspector"):  # a key of another day's plan
        check_field_key(secret, key, **{**ok, "day": date(2025, 12, 21)}, now=datetime(2025, 12, 21, 9))
    with pytest.raises(AuthenticationError, match="needs the key"):
        check_field_key(secret, None, **ok, now=datetime(2025, 12, 20, 9))
    copy = city.with_name("rotated.duckdb")
    copy_store(city, copy)
    new_field_secret(copy)  # a new secret revokes every link
    assert field_secret(copy) != secret
    with pytest.raises(AuthenticationError):
        check_field_key(field_secret(copy), key, **ok, now=datetime(2025, 12, 20, 9))


def test_field_page_refuses_other_keys(client: TestClient, plan: dict, links: dict, city: Path) -> None:
    from civicgrid.sites.patrol import save_plan

    wang_path, wang_q = _path(links["王伟"])
    _, li_q = _path(links["Li Na"])
    assert client.get(wang_path, params=wang_q).status_code == 200
    # Li Na's key on Wang Wei's page, and no key
    for params in (li_q, {}, {"key": "x" * 20}):
        res = client.get(wang_path, params=params, headers={"Accept": "application/json"})
        assert res.status_code == 401, res.text
    # the same inspector's key on another plan (a copy of the plan under a new id)
    other = dict(plan, plan_id=None)
    other_id = save_plan(city, other)
    res = client.get(wang_path.replace(plan["plan_id"], other_id), params=wang_q,
                     headers={"Accept": "application/json"})
    assert res.status_code == 401 and "own plan and inspector" in res.json()["detail"]
    # yesterday's plan: the right key for it, but its day is over
    from civicgrid.geo.times import now_local
    from civicgrid.geo.users import field_key, field_secret

    old = dict(plan, plan_id=None, date=(now_local().date() - timedelta(days=1)).isoformat())
    old_id = save_plan(city, old)
    key = field_key(field_secret(city), plan_id=old_id, inspector="王伟", day=date.fromisoformat(old["date"]))
    res = client.get(wang_path.replace(plan["plan_id"], old_id), params={"key": key},
                     headers={"Accept": "application/json"})
    assert res.status_code == 401 and "expired" in res.json()["detail"]
    # an unknown plan answers like a wrong key, without naming the stored plans
    res = client.get("/field/000000000000/王伟", params=wang_q, headers={"Accept": "application/json"})
    assert res.status_code == 401 and plan["plan_id"] not in res.text
    # a browser gets a readable page
    page = client.get(wang_path, params=li_q, headers={"Accept": "text/html"})
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")


def test_field_page_lists_todays_stops_offline(client: TestClient, plan: dict, links: dict) -> None:
    from civicgrid.maps.offline import external_urls

    path, q = _path(links["王伟"])
    res = client.get(path, params=q)
    page = res.text
    assert res.headers["referrer-policy"] == "no-referrer"  # the key must not leave in a Referer
    assert external_urls(page) == []  # Leaflet from the service, no CDN, no tiles
    assert 'src="/static/vendor/leaflet.js"' in page and "巡查路线" in page
    data = json.loads(page.split('<script id="cg-data" type="application/json">')[1].split("</script>")[0]
                      .replace("<\\/", "</"))
    route = next(r for r in plan["routes"] if r["inspector"] == "王伟")
    assert [s["site_id"] for s in data["stops"]] == [s["site_id"] for s in route["stops"]]
    assert [s["seq"] for s in data["stops"]] == list(range(1, len(route["stops"]) + 1))
    assert data["key"] == q["key"] and data["inspector"] == "王伟"
    assert data["path"] == route.get("path")  # the streets of the route when the plan has them (the demo's)
    assert len(data["types"]) == 39 and data["types"][0]["code"] == "0101"
    en = client.get(path, params={**q, "lang": "en"}).text
    assert "Patrol route" in en  # titled by the plan's day, not "Today's": plans are sent the evening before


def test_navigation_links_carry_each_services_coordinates(plan: dict) -> None:
    from civicgrid.sites.patrol.field import nav_links

    s = plan["routes"][0]["stops"][0]
    links = nav_links(s["lng"], s["lat"], s["name"], mode="bike")
    assert links["geo"].startswith(f"geo:{s['lat']:.6f},{s['lng']:.6f}?q=")
    gcj_lat, gcj_lng = prcoords.wgs_gcj((s["lat"], s["lng"]))   # independent implementation
    bd_lat, bd_lng = prcoords.wgs_bd((s["lat"], s["lng"]))
    to = parse_qs(urlparse(links["amap"]).query)["to"][0].split(",")
    assert float(to[0]) == pytest.approx(gcj_lng, abs=2e-6) and float(to[1]) == pytest.approx(gcj_lat, abs=2e-6)
    assert parse_qs(urlparse(links["amap"]).query)["coordinate"] == ["gaode"]
    assert parse_qs(urlparse(links["amap"]).query)["mode"] == ["ride"]
    dest = parse_qs(urlparse(links["baidu"]).query)["destination"][0]
    lat, lng = (float(v) for v in dest.split("|")[0].removeprefix("latlng:").split(","))
    assert lat == pytest.approx(bd_lat, abs=2e-6) and lng == pytest.approx(bd_lng, abs=2e-6)
    assert parse_qs(urlparse(links["baidu"]).query)["coord_type"] == ["bd09ll"]
    # the shift is real: tens to hundreds of metres away from WGS84
    assert abs(gcj_lng - s["lng"]) > 1e-3 and abs(bd_lng - s["lng"]) > 1e-3


# --------------------------------------------------------------------------------------------- visits


def _png(size: int = 8) -> bytes:
    """A PNG of random pixels (it does not compress: ``size`` 200 is over 100 kB)."""
    from PIL import Image

    buf = io.BytesIO()
    pixels = np.random.default_rng(size).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_visit_with_problems_and_photo_is_recorded_once(client: TestClient, plan: dict, links: dict,
                                                        city: Path) -> None:
    from civicgrid.geo.store import Store
    from civicgrid.sites.visits import photo_folder

    path, q = _path(links["王伟"])
    stop = next(r for r in plan["routes"] if r["inspector"] == "王伟")["stops"][0]
    form = {"visit_key": "visit-0001-abcdef", "site_id": str(stop["site_id"]), "conforming": "false",
            "problem_types": ["0201", "0105"], "note": "门前堆放杂物，公厕不洁",
            "recorded_at": datetime.now().astimezone().isoformat()}
    photo = _png()
    res = client.post(path + "/visits", params=q, data=form, files={"photo": ("p.png", photo, "image/png")})
    assert res.status_code == 201, res.text
    visit = res.json()
    assert visit["duplicate"] is False and visit["problems_found"] == 2 and len(visit["cases"]) == 2
    store = Store(city)
    row = store.sql("SELECT * FROM inspections WHERE visit_key = ?", [form["visit_key"]])
    assert len(row) == 1
    r = row.iloc[0]
    assert (r.site_id, r.inspector, bool(r.conforming), r.plan_id, r.note, r.kind) == (
        stop["site_id"], "王伟", False, plan["plan_id"], form["note"], "patrol")
    assert (r.lng, r.lat) == pytest.approx((stop["lng"], stop["lat"]))
    site = store.sql("SELECT grid_code FROM sites WHERE site_id = ?", [stop["site_id"]]).iloc[0]
    assert r.grid_code == site.grid_code
    assert (photo_folder(city) / r.photo).read_bytes() == photo and r.photo.endswith(".png")
    assert photo_folder(city) == Path(str(city) + ".photos")
    cases = store.sql("SELECT c.case_id, c.problem_type, c.state, c.site_id, e.inspection_id, e.source, e.text "
                      "FROM cases c JOIN events e USING (event_id) WHERE e.inspection_id = ? ORDER BY 1",
                      [int(r.inspection_id)])
    assert sorted(cases["problem_type"]) == ["0105", "0201"]
    assert set(cases["state"]) == {"found"} and set(cases["source"]) == {"inspection"}
    assert set(cases["site_id"]) == {stop["site_id"]} and set(cases["text"]) == {form["note"]}
    log = store.sql(f"SELECT actor, to_state FROM case_log WHERE case_id IN ({', '.join(map(str, cases.case_id))})")
    assert set(log["actor"]) == {"王伟"} and set(log["to_state"]) == {"found"}
    # the resend (the answer was lost): nothing new, the stored visit answered
    counts = store.sql("SELECT (SELECT count(*) FROM inspections) AS i, (SELECT count(*) FROM cases) AS c")
    again = client.post(path + "/visits", params=q, data=form, files={"photo": ("p.png", photo, "image/png")})
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["inspection_id"] == visit["inspection_id"]
    assert [c["case_id"] for c in again.json()["cases"]] == [c["case_id"] for c in visit["cases"]]
    assert store.sql("SELECT (SELECT count(*) FROM inspections) AS i, (SELECT count(*) FROM cases) AS c"
                     ).equals(counts)
    # the key names that visit: the same key for another stop is a conflict
    other = next(r for r in plan["routes"] if r["inspector"] == "王伟")["stops"][1]
    res = client.post(path + "/visits", params=q, data={**form, "site_id": str(other["site_id"])})
    assert res.status_code == 409


def test_concurrent_resends_record_one_visit(client: TestClient, plan: dict, links: dict, city: Path) -> None:
    from civicgrid.geo.store import Store

    path, q = _path(links["Li Na"])
    stop = next(r for r in plan["routes"] if r["inspector"] == "Li Na")["stops"][0]
    form = {"visit_key": "visit-race-000001", "site_id": str(stop["site_id"]), "conforming": "true"}
    answers: list[int] = []

    def send() -> None:
        answers.append(client.post(path + "/visits", params=q, data=form).status_code)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [200] * 5 + [201]
    got = Store(city).sql("SELECT inspector, conforming, problems_found FROM inspections WHERE visit_key = ?",
                          [form["visit_key"]])
    assert len(got) == 1 and got.iloc[0].tolist() == ["Li Na", True, 0]


def test_bad_visits_are_refused(client: TestClient, plan: dict, links: dict, city: Path) -> None:
    from civicgrid.geo.store import Store

    path, q = _path(links["王伟"])
    _, li_q = _path(links["Li Na"])
    route = next(r for r in plan["routes"] if r["inspector"] == "王伟")
    li_only = {s["site_id"] for s in plan["routes"][1]["stops"]} - {s["site_id"] for s in route["stops"]}
    stop = route["stops"][2]
    base = {"visit_key": "visit-bad-0000001", "site_id": str(stop["site_id"]), "conforming": "false",
            "problem_types": ["0201"]}
    before = int(Store(city).sql("SELECT count(*) AS n FROM inspections")["n"].iloc[0])
    cases = [
        ({**base, "conforming": "true"}, None, 422, "records no problems"),
        ({**base, "problem_types": []}, None, 422, "at least one problem type"),
        ({**base, "problem_types": ["9999"]}, None, 404, "unknown problem type"),
        ({**base, "site_id": str(min(li_only))}, None, 422, "not a stop"),
        ({**base, "visit_key": "short"}, None, 422, "visit_key"),
        ({**base, "recorded_at": "2020-01-01T10:00:00+08:00"}, None, 422, "plan's day"),
        (base, ("x.png", b"not an image at all", "image/png"), 422, "JPEG, PNG"),
        (base, ("big.png", _png(200), "image/png"), 413, "max_photo_mb"),  # over the 0.05 MB of this service
    ]
    for form, photo, status, words in cases:
        res = client.post(path + "/visits", params=q, data=form, files={"photo": photo} if photo else None,
                          headers={"Accept": "application/json"})
        assert res.status_code == status and words in res.json()["detail"], (form, res.status_code, res.text)
    # Li Na's key on Wang Wei's visits: refused before the body is read (401 even with a broken form)
    res = client.post(path + "/visits", params=li_q, data={"site_id": "x"})
    assert res.status_code == 401
    assert int(Store(city).sql("SELECT count(*) AS n FROM inspections")["n"].iloc[0]) == before


def test_api_inspections_records_with_the_token_user(client: TestClient, tokens: dict, city: Path) -> None:
    from civicgrid.geo.store import Store

    body = {"site_id": 5, "conforming": False, "problem_types": ["占道经营"], "note": "api", "visit_key": "api-000001"}
    assert client.post("/api/inspections", json=body).status_code == 401
    assert client.post("/api/inspections", json=body, headers=_auth(tokens, "viewer")).status_code == 403
    res = client.post("/api/inspections", json=body, headers=_auth(tokens, "inspector"))
    assert res.status_code == 201, res.text
    assert res.json()["inspector"] == "field-inspector" and res.json()["cases"][0]["problem_type"] == "0201"
    assert client.post("/api/inspections", json=body, headers=_auth(tokens, "inspector")).status_code == 200
    n = Store(city).sql("SELECT count(*) AS n FROM inspections WHERE visit_key = 'api-000001'")["n"].iloc[0]
    assert n == 1
    bad = client.post("/api/inspections", json={**body, "problem": "0201"}, headers=_auth(tokens, "inspector"))
    assert bad.status_code == 422


# --------------------------------------------------------------------------------------------- exports


def test_exports_list_the_links_for_inspectors(client: TestClient, plan: dict, tokens: dict, links: dict) -> None:
    from openpyxl import load_workbook

    pid = plan["plan_id"]
    html = client.get(f"/api/patrols/{pid}/export", params={"format": "html"}, headers=_auth(tokens, "inspector"))
    assert html.status_code == 200
    for url in links.values():
        assert unquote(url).replace("&", "&amp;") in html.text  # shown readable (the inspector's name unescaped)
    assert html.text.count("<svg") == len(plan["routes"])  # one QR code per inspector's page
    import segno

    for url in links.values():  # the QR code of each page is the code of its link
        assert segno.make(url, error="m", micro=False).svg_inline(scale=3, border=2) in html.text
    assert "手机扫码" in html.text
    viewer = client.get(f"/api/patrols/{pid}/export", params={"format": "html"}, headers=_auth(tokens, "viewer"))
    assert "key=" not in viewer.text and "<svg" not in viewer.text  # a viewer cannot record visits
    gj = client.get(f"/api/patrols/{pid}/export", params={"format": "geojson"},
                    headers=_auth(tokens, "inspector")).json()
    routes = {f["properties"]["inspector"]: f["properties"]["field_url"] for f in gj["features"]
              if f["properties"]["kind"] == "route"}
    assert routes == links
    xlsx = client.get(f"/api/patrols/{pid}/export", params={"format": "xlsx"}, headers=_auth(tokens, "inspector"))
    ws = load_workbook(io.BytesIO(xlsx.content)).worksheets[0]
    cells = [c.value for row in ws.iter_rows() for c in row]
    assert all(url in cells for url in links.values())
    assert client.get(f"/api/patrols/{pid}/field-links", headers=_auth(tokens, "viewer")).status_code == 403
    # the links open the page they name
    for name, url in links.items():
        path, q = _path(url)
        assert unquote(path.rsplit("/", 1)[1]) == name
        assert client.get(path, params=q).status_code == 200


def test_cli_prints_and_exports_the_links(city: Path, tmp_path: Path, civicgrid_cli: list[str]) -> None:
    import subprocess

    from civicgrid.geo.times import now_local

    team = tmp_path / "team.csv"
    team.write_text("name,start_lng,start_lat,shift_start,shift_minutes,mode\n王伟,112.93,28.22,09:00,90,bike\n",
                    encoding="utf-8")
    out = tmp_path / "out"
    res = subprocess.run([*civicgrid_cli, "patrol", "--db", str(city), "--inspectors", str(team), "--date",
                          now_local().date().isoformat(), "--area", STREET, "--time-limit", "0.5",
                          "--max-candidates", "40", "--public-url", "http://10.0.0.7:8000", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if "王伟: http://10.0.0.7:8000/field/" in x)
    url = line.split(": ", 1)[1]
    html = next(out.glob("*.html")).read_text(encoding="utf-8")
    assert unquote(url).replace("&", "&amp;") in html and "<svg" in html
    assert "已失效" not in res.stderr  # today's links are alive
    # a day already over in the store's zone: its links are dead on arrival, and the command says so
    past = subprocess.run([*civicgrid_cli, "patrol", "--db", str(city), "--inspectors", str(team), "--date",
                           "2025-06-02", "--area", STREET, "--time-limit", "0.5", "--max-candidates", "40"],
                          capture_output=True, text=True, timeout=600)
    assert past.returncode == 0, past.stderr
    assert "注意：计划日 2025-06-02 已过，现场巡查链接已失效" in past.stderr
