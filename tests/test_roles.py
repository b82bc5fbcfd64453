"""Users, hashed tokens and the role matrix on every write endpoint of the service."""

from __future__ import annotations

import hashlib

import pytest
from civicgrid.geo.errors import AuthenticationError, ConflictError, InvalidParameterError, PermissionDeniedError
from civicgrid.geo.store import Store
from civicgrid.geo.store_files import copy_store
from civicgrid.geo.users import ROLES, add_user, authenticate, authorize, list_users, set_active
from click.testing import CliRunner
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def env(demo_db, tmp_path_factory):
    path = tmp_path_factory.mktemp("roles") / "demo.duckdb"
    copy_store(demo_db, path)
    tokens = {role: add_user(path, f"u_{role}", role=role)[1] for role in ROLES}
    from civicgrid.api.app import create_app

    client = TestClient(create_app(path))
    return path, client, tokens


def _site(path) -> int:
    return int(Store(path).sql("SELECT min(site_id) AS s FROM sites WHERE grid_code IS NOT NULL")["s"].iloc[0])


def _new_case(path) -> int:
    from civicgrid.sites.cases import create_case

    case = create_case(path, actor="setup", problem_type="0101", site_id=_site(path), time="2025-06-03 10:00")
    return case["case_id"]


_counter = iter(range(10**6))


def _routes(client) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation the app serves (from its OpenAPI document)."""
    return {(m.upper(), path) for path, ops in client.app.openapi()["paths"].items() for m in ops}


def _requests(path) -> dict[tuple[str, str], tuple[str, callable]]:
    """Every write endpoint -> (the weakest role allowed, a function making a valid request for it)."""

    def create_case(c, h):
        return c.post("/api/cases", json={"problem_type": "0201", "site_id": _site(path), "note": "x"}, headers=h)

    def move(c, h):
        return c.post(f"/api/cases/{_new_case(path)}/transitions", json={"to": "register", "note": "ok"}, headers=h)

    def new_user(c, h):
        return c.post("/api/users", json={"name": f"new{next(_counter)}", "role": "viewer"}, headers=h)

    def token(c, h):
        name = f"tok{next(_counter)}"
        add_user(path, name, role="viewer")
        return c.post(f"/api/users/{name}/token", headers=h)

    def disable(c, h):
        name = f"dis{next(_counter)}"
        add_user(path, name, role="viewer")
        return c.delete(f"/api/users/{name}", headers=h)

    def setting(c, h):
        return c.put("/api/settings/rebound_days", json={"value": 30}, headers=h)

    def holidays(c, h):
        return c.put("/api/settings/holidays", json={"rows": [{"date": "2027-01-01", "kind": "holiday"}]}, headers=h)

    def imports(c, h):
        csv = ("编号,时间,经度,纬度,问题小类\nT1,2025-06-03 10:00,112.94,28.23,0201\n"
               "T2,2025-06-03 11:00,112.95,28.22,暴露垃圾\n")
        return c.post("/api/imports/events", files={"file": ("hits.csv", csv.encode("utf-8"), "text/csv")},
                      data={"source": "inspection", "map": ["id=编号", "time=时间", "type=问题小类"]}, headers=h)

    def undo(c, h):
        from civicgrid.sites.events import import_events

        f = path.parent / f"undo{next(_counter)}.csv"
        f.write_text(f"编号,时间,经度,纬度\n{f.stem},2025-06-03 10:00,112.94,28.23\n", encoding="utf-8")
        rep = import_events(f, db=path, mapping={"id": "编号", "time": "时间"}, source="inspection", progress=False)
        return c.post(f"/api/imports/{rep.import_id}/undo", headers=h)

    def map_label(c, h):
        return c.post("/api/types/map", json={"label": f"label{next(_counter)}", "code": "0101"}, headers=h)

    def add_type(c, h):
        return c.post("/api/types", json={"code": f"X{next(_counter)}", "name_zh": "新类型"}, headers=h)

    def import_map(c, h):
        return c.post("/api/types/import-map", headers=h,
                      files={"file": ("m.csv", f"source,label,code\n,l{next(_counter)},0101\n".encode(), "text/csv")})

    def patrol(c, h):
        return c.post("/api/patrols/plan", headers=h, json={
            "date": "2025-12-20", "inspectors": [{"name": "甲", "start": [112.94, 28.23], "shift_minutes": 60}],
            "options": {"time_limit_s": 1, "max_candidates": 15, "road_network": False}})

    def visit(c, h):
        return c.post("/api/inspections", headers=h, json={"site_id": 5, "conforming": True})

    return {
        ("POST", "/api/cases"): ("inspector", create_case),
        ("POST", "/api/inspections"): ("inspector", visit),
        ("POST", "/api/cases/{case_id}/transitions"): ("inspector", move),
        ("POST", "/api/users"): ("admin", new_user),
        ("POST", "/api/users/{name}/token"): ("admin", token),
        ("DELETE", "/api/users/{name}"): ("admin", disable),
        ("PUT", "/api/settings/{key}"): ("admin", setting),
        ("PUT", "/api/settings/holidays"): ("admin", holidays),
        ("POST", "/api/imports/{layer}"): ("admin", imports),
        ("POST", "/api/imports/{import_id}/undo"): ("admin", undo),
        ("POST", "/api/patrols/plan"): ("inspector", patrol),
        ("POST", "/api/types/map"): ("admin", map_label),
        ("POST", "/api/types"): ("admin", add_type),
        ("POST", "/api/types/import-map"): ("admin", import_map),
    }


def test_every_write_endpoint_is_in_the_matrix(env):
    path, client, _ = env
    writes = {(m, p) for m, p in _routes(client) if m in ("POST", "PUT", "PATCH", "DELETE") and p.startswith("/api/")}
    assert writes <= set(_requests(path)), writes - set(_requests(path))
    assert {("POST", "/api/cases"), ("POST", "/api/imports/{layer}")} <= writes


@pytest.mark.parametrize("endpoint", [
    ("POST", "/api/cases"), ("POST", "/api/cases/{case_id}/transitions"), ("POST", "/api/users"),
    ("POST", "/api/users/{name}/token"), ("DELETE", "/api/users/{name}"), ("PUT", "/api/settings/{key}"),
    ("PUT", "/api/settings/holidays"), ("POST", "/api/imports/{layer}"), ("POST", "/api/imports/{import_id}/undo"),
    ("POST", "/api/patrols/plan"),
    ("POST", "/api/types/map"), ("POST", "/api/types"), ("POST", "/api/types/import-map"),
    ("POST", "/api/inspections"),
])
def test_role_matrix(env, endpoint):
    path, client, tokens = env
    if endpoint not in _routes(client):
        pytest.skip(f"{endpoint} not served in this checkout")
    need, call = _requests(path)[endpoint]
    r = call(client, {})
    assert r.status_code == 401, r.text
    assert r.headers.get("www-authenticate") == "Bearer"
    assert call(client, {"Authorization": "Bearer cg_not-a-token"}).status_code == 401
    assert call(client, {"Authorization": f"Basic {tokens['admin']}"}).status_code == 401
    for role in ROLES:
        r = call(client, {"Authorization": f"Bearer {tokens[role]}"})
        if ROLES.index(role) < ROLES.index(need):
            assert r.status_code == 403, (role, r.text)
            assert need in r.json()["detail"]
        else:
            assert r.status_code in (200, 201), (role, r.status_code, r.text)


def test_reads_need_a_viewer_token_and_kpis_are_open(env):
    path, client, tokens = env
    cid = _new_case(path)
    assert client.get(f"/api/cases/{cid}").status_code == 401
    h = {"Authorization": f"Bearer {tokens['viewer']}"}
    body = client.get(f"/api/cases/{cid}", headers=h).json()
    assert body["state"] == "found" and body["next"] == ["registered"] and body["log"][0]["actor"] == "setup"
    assert client.get(f"/api/cases/{cid}/log", headers=h).json()["log"][0]["to_state"] == "found"
    assert client.get("/api/cases?state=found&limit=5", headers=h).json()["count"] >= 1
    k = client.get("/api/kpis?start=2025-03-01&end=2025-03-31&level=district").json()
    assert k["totals"]["found"] == sum(r["found"] for r in k["rows"]) > 0
    # a period is the same as its start and end; half a period is refused
    import pandas as pd  # a period is the same as its start and end (means summed in parallel: not bit-equal)

    pd.testing.assert_frame_equal(pd.DataFrame(client.get("/api/kpis?period=2025-03&level=district").json()["rows"]),
                                  pd.DataFrame(k["rows"]), rtol=1e-12)
    q1 = client.get("/api/kpis?period=2025-Q1&level=district").json()
    assert (q1["start"], q1["end"]) == ("2025-01-01", "2025-03-31") and q1["totals"]["found"] > k["totals"]["found"]
    assert client.get("/api/kpis?start=2025-03-01&level=district").status_code == 422
    assert client.get("/api/kpis?period=2025-13").status_code == 422
    assert client.get("/api/kpis?level=district").json()["start"].endswith("-01")  # default: this month
    f = client.get("/api/kpis/flags?as_of=2025-12-01&flag=white&lang=en").json()
    assert f["sites"] and all(s["flag"] == "white" for s in f["sites"])
    assert client.get("/api/users", headers=h).status_code == 403


def test_case_api_flow_and_conflict(env):
    path, client, tokens = env
    h = {"Authorization": f"Bearer {tokens['inspector']}"}
    r = client.post("/api/cases", json={"problem_type": "0201", "lng": 112.94, "lat": 28.23, "crs": "gcj02",
                                        "dispatch": True}, headers=h)
    assert r.status_code == 201, r.text
    case = r.json()
    assert case["state"] == "dispatched" and case["log"][-1]["actor"] == "u_inspector"
    cid = case["case_id"]
    r = client.post(f"/api/cases/{cid}/transitions", json={"to": "close"}, headers=h)
    assert r.status_code == 409 and "rectified" in r.json()["detail"]
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert client.post(f"/api/cases/{cid}/transitions", json={"to": "closed"}, headers=h).status_code == 409
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    r = client.post(f"/api/cases/{cid}/transitions", json={"to": "rectify", "photo": "a.jpg"}, headers=h)
    assert r.status_code == 200 and r.json()["state"] == "rectified"
    assert client.post("/api/cases/999999999/transitions", json={"to": "close"}, headers=h).status_code == 404
    assert client.post(f"/api/cases/{cid}/transitions", json={"to": "finish"}, headers=h).status_code == 422
    ev = Store(path).sql("SELECT status, rectified_at FROM events WHERE event_id = ?", [cid]).iloc[0]
    assert ev.status == "open" and ev.rectified_at is not None
    # a field the endpoint does not take is refused, not ignored (here 'type' for 'problem_type')
    r = client.post("/api/cases", json={"type": "0201", "site_id": _site(path)}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "type"]
    assert r.json()["detail"].startswith("unknown field 'type' (did you mean 'problem_type'?) in the body; it takes:")
    r = client.post(f"/api/cases/{cid}/transitions", json={"to": "close", "photos": "b.jpg"}, headers=h)
    assert r.status_code == 422 and "photos" in r.text
    # the token without 'Bearer ' (a common mistake) gets a message saying how to write the header
    r = client.post("/api/cases", json={"problem_type": "0201", "site_id": _site(path)},
                    headers={"Authorization": tokens["inspector"]})
    assert r.status_code == 401 and "'Bearer ' is missing" in r.json()["detail"]
    r = client.post("/api/cases", json={"problem_type": "0201", "site_id": _site(path)},
                    headers={"Authorization": f"Token {tokens['inspector']}"})
    assert r.status_code == 401 and "got 'Token'" in r.json()["detail"]
    assert tokens["inspector"] not in r.text


def test_admin_user_token_and_import(env):
    path, client, tokens = env
    h = {"Authorization": f"Bearer {tokens['admin']}"}
    r = client.post("/api/users", json={"name": "赵六", "role": "inspector"}, headers=h)
    assert r.status_code == 201
    tok = r.json()["token"]
    assert client.post("/api/users", json={"name": "赵六", "role": "viewer"}, headers=h).status_code == 409
    assert client.post("/api/users", json={"name": "x", "role": "boss"}, headers=h).status_code == 422
    users = client.get("/api/users", headers=h).json()["users"]
    assert "token_hash" not in users[0] and any(u["name"] == "赵六" for u in users)
    assert client.delete("/api/users/赵六", headers=h).status_code == 200
    r = client.post("/api/cases", json={"problem_type": "0201", "site_id": _site(path)},
                    headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 401
    n_cases = Store(path).sql("SELECT count(*) AS n FROM cases")["n"].iloc[0]
    csv = "编号,时间,经度,纬度,问题小类\nZ1,2025-06-05 10:00,112.94,28.23,0201\n"
    r = client.post("/api/imports/events", files={"file": ("z.csv", csv.encode(), "text/csv")},
                    data={"map": ["id=编号", "time=时间", "type=问题小类"]}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["loaded"] == 1 and r.json()["cases_created"] == 1
    assert Store(path).sql("SELECT count(*) AS n FROM cases")["n"].iloc[0] == n_cases + 1
    r = client.post("/api/imports/rivers", files={"file": ("z.csv", b"a\n1\n", "text/csv")}, headers=h)
    assert r.status_code == 404
    # a bad file's message names the file as uploaded (its folder part dropped), not a temporary name
    r = client.post("/api/imports/events", files={"file": ("../../投诉 6月.csv", b"", "text/csv")}, headers=h)
    assert r.status_code == 422 and "投诉 6月.csv" in r.json()["detail"] and "upload" not in r.json()["detail"]
    hol = client.get("/api/settings/holidays", headers=h).json()["holidays"]
    assert any(x["date"] == "2024-02-04" and x["kind"] == "workday" for x in hol)


def test_tokens_are_stored_hashed(tmp_path):
    path = tmp_path / "u.duckdb"
    Store(path, create=True)
    _user, token = add_user(path, "王伟", role="inspector")
    assert token.startswith("cg_") and len(token) > 40
    store = Store(path)
    stored = store.sql("SELECT token_hash FROM users")["token_hash"].iloc[0]
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored
    store.close()
    assert token.encode() not in path.read_bytes()
    assert authenticate(store, token)["name"] == "王伟"
    assert authorize(authenticate(store, token), "viewer")["role"] == "inspector"
    with pytest.raises(PermissionDeniedError, match="admin"):
        authorize(authenticate(store, token), "admin")
    with pytest.raises(AuthenticationError):
        authenticate(store, token + "x")
    with pytest.raises(ConflictError):
        add_user(path, "王伟", role="viewer")
    with pytest.raises(InvalidParameterError, match="admin"):
        add_user(path, "x", role="admn")
    set_active(path, "王伟", active=False)
    with pytest.raises(AuthenticationError):
        authenticate(store, token)
    assert list(list_users(store).columns) == ["user_id", "name", "role", "created_at", "active"]


def test_cli_users_and_cases(tmp_path, demo_db):
    from civicgrid.api.cli import main

    path = tmp_path / "c.duckdb"
    copy_store(demo_db, path)
    runner = CliRunner()
    r = runner.invoke(main, ["users", "add", "王伟", "--role", "admin", "--db", str(path)])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert authenticate(Store(path), token)["role"] == "admin"
    runner.invoke(main, ["users", "add", "li", "--role", "viewer", "--db", str(path)])
    r = runner.invoke(main, ["users", "list", "--db", str(path)])
    assert "王伟" in r.output and token not in r.output
    # the role column lines up on a terminal whatever the name's script (Chinese characters are two columns wide)
    import unicodedata

    def col(line, word):
        head = line[:line.index(word)]
        return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in head)

    lines = {ln.split()[1]: ln for ln in r.output.splitlines()}
    assert col(lines["王伟"], "admin") == col(lines["li"], "viewer")
    r = runner.invoke(main, ["cases", "create", "--db", str(path), "--actor", "王伟", "--type", "0201",
                             "--site", str(_site(path)), "--time", "2025-06-03 10:00"])
    assert r.exit_code == 0, r.output
    cid = int(r.output.split()[1])
    r = runner.invoke(main, ["cases", "move", str(cid), "close", "--actor", "王伟", "--db", str(path)])
    assert r.exit_code == 2 and "cannot close" in r.output
    r = runner.invoke(main, ["cases", "move", str(cid), "register", "--actor", "王伟", "--db", str(path)])
    assert r.exit_code == 0 and "registered" in r.output
    r = runner.invoke(main, ["cases", "show", str(cid), "--db", str(path)])
    assert "found → registered" in " ".join(r.output.split()) and "王伟" in r.output
    r = runner.invoke(main, ["cases", "kpis", "--db", str(path), "--start", "2025-03-01", "--end", "2025-04-01",
                             "--level", "district"])
    assert r.exit_code == 0 and "全市" in r.output
