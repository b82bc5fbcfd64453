"""Issue 14, parts 1 and 2: every input bounded at the edge (no 500 from a bad value), a logged 500 with a
request id for anything unhandled, tokens checked before bodies, personal data behind a viewer token."""

from __future__ import annotations

import logging
import time

import pytest
from civicgrid.geo.errors import OutOfRangeError
from civicgrid.geo.store import Store
from civicgrid.geo.store_files import copy_store
from civicgrid.geo.times import now_local, parse_moment, parse_period, time_window
from civicgrid.geo.users import add_user
from fastapi.testclient import TestClient

INT64 = 2**63 - 1


@pytest.fixture(scope="module")
def env(demo_db, tmp_path_factory):
    path = tmp_path_factory.mktemp("hardening") / "demo.duckdb"
    copy_store(demo_db, path)
    tokens = {role: add_user(path, f"h_{role}", role=role)[1] for role in ("viewer", "inspector", "admin")}
    from civicgrid.api.app import create_app

    # raise_server_exceptions=False: a 500 is answered as a client sees it, not raised into the test
    return path, TestClient(create_app(path), raise_server_exceptions=False), tokens


def _h(tokens, role):
    return {"Authorization": f"Bearer {tokens[role]}"}


# --- the 500s of the issue, as a user met them ------------------------------------------------------------------

WINDOW = "outside the plausible window 1990-01-01.."


@pytest.mark.parametrize(("method", "url", "role", "body", "names"), [
    ("POST", "/api/cases", "inspector", {"problem_type": "0201", "lng": 112.94, "lat": 28.23, "time": ""},
     "time is required"),
    ("POST", "/api/cases", "inspector", {"problem_type": "0201", "lng": 112.94, "lat": 28.23, "time": "0001-01-01"},
     f"time='0001-01-01' is {WINDOW}"),
    ("POST", "/api/cases", "inspector", {"problem_type": "0201", "lng": 112.94, "lat": 28.23, "time": "1677-09-22"},
     f"time='1677-09-22' is {WINDOW}"),
    ("POST", "/api/cases/1/transitions", "inspector", {"to": "register", "at": ""}, "at is required"),
    ("POST", "/api/cases/1/transitions", "inspector", {"to": "register", "at": "9999-12-31"},
     f"at='9999-12-31' is {WINDOW}"),
    ("GET", f"/api/cases/{2**70}", "viewer", None, f"case_id='{2**70}' is beyond a 64-bit integer (-{2**63}..{INT64})"),
    ("GET", f"/api/cases/{2**64}/log", "viewer", None, f"case_id='{2**64}' is beyond a 64-bit integer"),
    ("GET", "/api/heatmap?start=0001-01-01&end=9999-12-31", None, None, f"start='0001-01-01' is {WINDOW}"),
    ("GET", "/api/stats/areas?start=2024-01-01&end=9999-12-31", None, None, f"end='9999-12-31' is {WINDOW}"),
    ("GET", "/api/kpis?period=9999", None, None, f"period '9999' is {WINDOW}"),
    ("GET", "/api/kpis?period=0000-01", None, None, f"period '0000-01' is {WINDOW}"),
    ("GET", "/api/kpis?start=0001-01-01&end=2024-01-31", None, None, f"start='0001-01-01' is {WINDOW}"),
    ("GET", "/api/kpis/flags?as_of=0001-01-01", None, None, f"as_of='0001-01-01' is {WINDOW}"),
    ("GET", "/api/cases?as_of=0001-01-01&overdue=true", "viewer", None, f"as_of='0001-01-01' is {WINDOW}"),
    ("GET", "/api/simulator?as_of=0001-01-01&runs=10", None, None, f"as_of='0001-01-01' is {WINDOW}"),
    ("GET", "/api/reports/9999-12.xlsx", None, None, f"period '9999-12' is {WINDOW}"),
    ("GET", "/api/reports/0001-01/scorecard", None, None, f"period '0001-01' is {WINDOW}"),
    ("GET", "/api/reports/9999-Q4.xlsx", None, None, f"period '9999-Q4' is {WINDOW}"),
    ("GET", "/api/reports/0001-01-01..9999-12-31.xlsx", None, None, WINDOW),
    ("GET", f"/api/events?offset={2**63}", "viewer", None, f"offset='{2**63}' is beyond a 64-bit integer"),
    ("GET", f"/api/cases?offset={2**63}", "viewer", None, f"offset='{2**63}' is beyond a 64-bit integer"),
    ("GET", f"/api/cases?site={2**64}", "viewer", None, f"site='{2**64}' is beyond a 64-bit integer"),
    # found by tests/test_fuzz.py: any integer parameter of any router (here risk.py's) is bounded to 64 bits
    ("GET", f"/api/risk/{2**84}", None, None, f"site_id='{2**84}' is beyond a 64-bit integer (-{2**63}..{INT64})"),
    ("GET", f"/api/simulator?runs=5&seed=-{2**70}", None, None, f"seed='-{2**70}' is beyond a 64-bit integer"),
    ("PUT", "/api/settings/rebound_days", "admin", {"value": 1e308}, "setting rebound_days must be a number 1..3650"),
    ("PUT", "/api/settings/rebound_days", "admin", {"value": 0}, "setting rebound_days must be a number 1..3650"),
    ("PUT", "/api/settings/rebound_radius_m", "admin", {"value": 1e9}, "rebound_radius_m must be a number 1..5000"),
    ("POST", "/api/cases", "inspector", {"problem_type": "0201", "lng": 112.94, "lat": 28.23, "text": "x" * 2_000_000},
     "(2,000,000 characters): String should have at most 5000 characters"),
    ("POST", "/api/cases", "inspector", {"problem_type": "0201", "lng": 1e308, "lat": 28.23},
     "lng=1e+308: Input should be less than or equal to 180"),
])
def test_bad_values_are_4xx_naming_the_field(env, method, url, role, body, names):
    _, client, tokens = env
    r = client.request(method, url, json=body, headers=_h(tokens, role) if role else None)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and names in detail, detail
    assert len(detail) < 600  # a 2 MB text is not echoed back


def test_upload_file_names_are_cleaned(env):
    _path, client, tokens = env
    csv = b"code,name\n"
    for name in ("a\x00b.csv", "a" * 300 + ".csv", "中" * 200 + ".csv", "../../etc/passwd"):
        r = client.post("/api/imports/grids", files={"file": (name, csv, "text/csv")}, headers=_h(tokens, "admin"))
        assert r.status_code in (201, 422), (name[:20], r.status_code, r.text[:200])
    from civicgrid.api.routers.users import upload_name

    assert upload_name("a\x00b.csv") == "ab.csv"
    long = upload_name("a" * 300 + ".csv")
    assert len(long.encode()) == 255 and long.endswith(".csv")
    cut = upload_name("中" * 200 + ".shp.zip")  # cut on a character boundary, the double suffix kept
    assert len(cut.encode()) <= 255 and cut.endswith(".shp.zip") and "\ufffd" not in cut
    assert upload_name("../../etc/passwd") == "passwd.csv" and upload_name("") == "upload.csv"


def test_uploads_over_the_limit_are_refused_as_they_stream(env, tmp_path):
    path, _, tokens = env
    from civicgrid.api.app import create_app

    client = TestClient(create_app(path, settings={"max_upload_mb": 1}), raise_server_exceptions=False)
    big = b"code,name\n" + b"1,x\n" * 400_000  # 1.6 MB
    r = client.post("/api/imports/grids", files={"file": ("big.csv", big, "text/csv")},
                    headers=_h(tokens, "admin"))
    assert r.status_code == 413
    assert "larger than 1 MB" in r.json()["detail"] and "CIVICGRID_MAX_UPLOAD_MB" in r.json()["detail"]

    sent = []

    def chunks():  # no Content-Length: counted as it streams, refused past 1 MB
        yield (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
               b"Content-Type: text/csv\r\n\r\ncode,name\n")
        for _ in range(64):
            sent.append(1)
            yield b"1,x\n" * 16384  # 64 kB

    r = client.post("/api/imports/grids", content=chunks(),
                    headers={**_h(tokens, "admin"), "content-type": "multipart/form-data; boundary=XyZ"})
    assert r.status_code == 413 and "CIVICGRID_MAX_UPLOAD_MB" in r.json()["detail"]
    small = client.post("/api/imports/grids", files={"file": ("ok.csv", b"code,name\n", "text/csv")},
                        headers=_h(tokens, "admin"))
    assert small.status_code in (201, 422)  # the limit does not touch small files


# --- poisoned settings ---------------------------------------------------------------------------------------


def test_a_poisoned_stored_setting_falls_back_to_its_default(env, caplog):
    path, client, tokens = env
    from civicgrid.geo.store import writing
    from civicgrid.sites import cases as cs

    with writing(path) as con:  # what PUT stored before it was checked
        con.execute("DELETE FROM settings WHERE key = 'rebound_days'")
        con.execute("INSERT INTO settings VALUES ('rebound_days', '1e+308')")
    with caplog.at_level(logging.WARNING, logger="civicgrid"):
        assert cs.get_settings(Store(path))["rebound_days"] == 30.0
    assert any("rebound_days" in r.getMessage() for r in caplog.records)
    r = client.post("/api/cases", json={"problem_type": "0201", "lng": 112.94, "lat": 28.23},
                    headers=_h(tokens, "inspector"))
    assert r.status_code == 201, r.text
    ok = client.put("/api/settings/rebound_days", json={"value": 3650}, headers=_h(tokens, "admin"))
    assert ok.status_code == 200 and ok.json()["rebound_days"] == 3650


# --- the plausible window ---------------------------------------------------------------------------------------


def test_time_window_follows_its_settings(monkeypatch):
    first, last = time_window()
    assert first.isoformat() == "1990-01-01T00:00:00"
    assert abs((last - now_local()).total_seconds() - 366 * 86400) < 60
    with pytest.raises(OutOfRangeError, match="time='1989-12-31'"):
        parse_moment("1989-12-31")
    assert parse_moment("1990-01-01").year == 1990
    monkeypatch.setenv("CIVICGRID_EARLIEST_TIME", "1900-01-01")
    assert parse_moment("1950-06-01").year == 1950
    monkeypatch.setenv("CIVICGRID_LATEST_DAYS_AHEAD", "0")
    with pytest.raises(OutOfRangeError, match="CIVICGRID_LATEST_DAYS_AHEAD"):
        parse_period("2099")
    # a period ending at the calendar's end is refused before its day after is computed (no OverflowError)
    monkeypatch.delenv("CIVICGRID_LATEST_DAYS_AHEAD")
    with pytest.raises(OutOfRangeError):
        parse_period(start="2024-01-01", end="9999-12-31")


def test_one_outlier_does_not_explode_emerging_hotspots(env, monkeypatch):
    _path, client, tokens = env
    monkeypatch.setenv("CIVICGRID_EARLIEST_TIME", "1900-01-01")  # an old store, or a wider window once
    r = client.post("/api/cases", json={"problem_type": "0201", "lng": 112.94, "lat": 28.23,
                                        "time": "1900-01-02"}, headers=_h(tokens, "inspector"))
    assert r.status_code == 201, r.text
    monkeypatch.delenv("CIVICGRID_EARLIEST_TIME")
    started = time.perf_counter()
    r = client.get("/api/hotspots/emerging", params={"res": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    # the slices run over the events inside the window (demo: 2024-01..2025-12, plus the cases made now)
    _t0, t1 = time_window()
    months = (t1.year - 2024) * 12 + t1.month
    assert body["first_slice"] == "2024-01-01T00:00:00" and body["n_slices"] <= months
    assert time.perf_counter() - started < 60


# --- the catch-all ----------------------------------------------------------------------------------------------


def test_an_unhandled_error_is_a_logged_500_with_a_request_id(env, caplog):
    path, _, _ = env
    from civicgrid.api.app import create_app

    app = create_app(path)

    def broken() -> None:
        return 1 / 0

    app.add_api_route("/api/broken", broken)
    client = TestClient(app, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="civicgrid"):
        r = client.get("/api/broken")
    assert r.status_code == 500
    rid = r.json()["request_id"]
    assert r.headers["x-request-id"] == rid and rid in r.json()["detail"] and "ZeroDivision" not in r.text
    logged = [rec for rec in caplog.records if rid in rec.getMessage()]
    assert logged and logged[0].exc_info and logged[0].exc_info[0] is ZeroDivisionError
    ok = client.get("/api/stats/areas")  # the service answers on
    assert ok.status_code == 200 and ok.headers["x-request-id"] != rid


# --- auth before the body -----------------------------------------------------------------------------------------


#: Writes authenticated otherwise than by a role's token: a field visit by its link's key (tests/test_field.py),
#: the sign-in form by the token it is given (tests/test_signin.py).
_OWN_AUTH = ("/field/", "/signin")


def _write_operations(client):
    spec = client.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        if path.startswith(_OWN_AUTH):
            continue
        for method in ops:
            if method in ("post", "put", "delete", "patch"):
                yield method.upper(), path.replace("{case_id}", "1").replace("{name}", "x").replace(
                    "{key}", "rebound_days").replace("{layer}", "events")


def test_every_write_checks_the_token_before_the_body(env):
    _, client, tokens = env
    ops = list(_write_operations(client))
    assert len(ops) >= 9
    for method, path in ops:
        for body in (b"{not json", b'{"unknown_field": 1}', b""):
            r = client.request(method, path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 401, (method, path, body, r.status_code, r.text[:200])
            assert r.headers.get("www-authenticate") == "Bearer"
        r = client.request(method, path, content=b"{not json",
                           headers={"content-type": "application/json", **_h(tokens, "viewer")})
        assert r.status_code == 403, (method, path, r.status_code, r.text[:200])


def test_plans_and_site_contacts_need_a_viewer(env):
    path, client, tokens = env
    assert client.get("/api/patrols").status_code == 401
    assert client.get("/api/patrols/abc").status_code == 401
    assert client.get("/api/patrols", headers=_h(tokens, "viewer")).status_code == 200
    anonymous = client.get("/api/layers/sites", params={"category": "03"}).json()["features"]
    viewer = client.get("/api/layers/sites", params={"category": "03"}, headers=_h(tokens, "viewer")).json()
    stored = Store(path).sql("SELECT count(*) AS n FROM sites WHERE category_code = '03' AND active "
                             "AND contact IS NOT NULL")["n"].iloc[0]
    assert stored > 0 and len(anonymous) == len(viewer["features"])
    assert all(f["properties"]["contact"] is None and f["properties"]["phone"] is None for f in anonymous)
    assert sum(f["properties"]["contact"] is not None for f in viewer["features"]) == stored
    # grid leaders (网格员公示) are public by default
    grids = client.get("/api/layers/grids").json()["features"]
    assert any(f["properties"]["leader_phone"] for f in grids)


def test_public_layers_is_a_setting(env, monkeypatch):
    path, _, tokens = env
    from civicgrid.api.app import create_app

    monkeypatch.setenv("CIVICGRID_PUBLIC_LAYERS", "areas, grids")
    client = TestClient(create_app(path))
    assert client.get("/api/layers/areas").status_code == 200
    assert client.get("/api/layers/sites").status_code == 401
    assert client.get("/api/layers/categories").status_code == 401
    assert client.get("/api/layers/sites", headers=_h(tokens, "viewer")).status_code == 200
    grids = client.get("/api/layers/grids").json()["features"]
    assert grids and all(f["properties"]["leader_name"] is None for f in grids)
    grids = client.get("/api/layers/grids", headers=_h(tokens, "viewer")).json()["features"]
    assert any(f["properties"]["leader_name"] for f in grids)
    monkeypatch.setenv("CIVICGRID_PUBLIC_LAYERS", "areas,roads")
    from civicgrid.geo.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="roads"):
        create_app(path)
