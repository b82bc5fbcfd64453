"""Several service processes on one store: two `civicgrid serve` on one PostgreSQL catalog (as two machines
would run them), `serve --workers 2` on one port, and writers that do not share a lock never repeat ids."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from civicgrid.geo.store import Store
from civicgrid.geo.users import add_user

from conftest import build_small_city

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(base: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {"detail": exc.read().decode(errors="replace")}


def _serve(cli, db: str, *extra: str) -> tuple[subprocess.Popen, str]:
    port = _port()
    proc = subprocess.Popen([*cli, "serve", "--db", db, "--port", str(port), "--log-level", "warning",
                             "--maintain-hours", "0", *extra], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(base + "/openapi.json", timeout=5):
                return proc, base
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"civicgrid serve {' '.join(extra)} did not start")
            time.sleep(0.3)


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture()
def pg_city(pg_server, tmp_path, monkeypatch):
    monkeypatch.setenv("CIVICGRID_DATA_PATH", str(tmp_path / "city-data"))
    return build_small_city(pg_server(f"many_{abs(hash(str(tmp_path))) % 10**9}"), tmp_path)


def test_two_services_on_one_postgresql_catalog_share_the_city(pg_city, civicgrid_cli):
    db = pg_city
    _, token = add_user(db, "巡查员甲", role="inspector")
    (a, base_a), (b, base_b) = _serve(civicgrid_cli, db), _serve(civicgrid_cli, db)
    try:
        def work(k: int) -> list[int]:
            made = []
            for j in range(4):  # opened on one service, moved on the other, read back on the first
                one, other = (base_a, base_b) if (k + j) % 2 else (base_b, base_a)
                status, case = _call(one, "/api/cases", token, {"problem_type": "0101", "lng": 112.905 + k * 1e-4,
                                                               "lat": 28.205 + j * 1e-4})
                assert status == 201, case
                status, moved = _call(other, f"/api/cases/{case['case_id']}/transitions", token,
                                      {"to": "register"})
                assert status == 200 and moved["state"] == "registered", moved
                status, seen = _call(one, f"/api/cases/{case['case_id']}", token)
                assert status == 200 and seen["state"] == "registered"
                made.append(case["case_id"])
            return made

        with ThreadPoolExecutor(8) as pool:
            made = [i for ids in pool.map(work, range(8)) for i in ids]
    finally:
        _stop(a, b)
    assert len(made) == len(set(made)) == 32
    store = Store(db)
    got = store.sql("SELECT c.case_id, c.state, count(l.log_id) AS steps FROM cases c JOIN case_log l USING (case_id) "
                    "GROUP BY ALL ORDER BY 1")
    assert got["case_id"].tolist() == sorted(made) and (got["state"] == "registered").all()
    assert (got["steps"] == 2).all()
    assert store.sql("SELECT count(*) - count(DISTINCT event_id) AS d FROM events")["d"][0] == 0


def test_serve_workers_share_one_port(small_city, civicgrid_cli):
    db = str(small_city)
    _, token = add_user(db, "巡查员甲", role="inspector")
    proc, base = _serve(civicgrid_cli, db, "--workers", "2")
    try:
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        workers = [c for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(workers) == 2
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda k: _call(base, "/api/cases", token, {
                "problem_type": "0101", "lng": 112.905 + k * 1e-4, "lat": 28.205}), range(12)))
    finally:
        _stop(proc)
    assert all(status == 201 for status, _ in answers), answers
    ids = [case["case_id"] for _, case in answers]
    assert len(set(ids)) == 12
    assert sorted(Store(db).sql("SELECT case_id FROM cases")["case_id"]) == sorted(ids)


MACHINE = textwrap.dedent("""
    import contextlib, sys
    from civicgrid.geo import store
    from civicgrid.sites import cases as cs
    # another machine: this machine's lock file does not reach the other writer
    store._Lake._cross_process_lock = lambda self: contextlib.nullcontext()
    for i in range(int(sys.argv[2])):
        print(cs.create_case(sys.argv[1], actor="m", problem_type="0101", lng=112.905, lat=28.205)["case_id"],
              flush=True)
""")


def test_writers_of_two_machines_never_repeat_ids(pg_city):
    db = pg_city
    procs = [subprocess.Popen([sys.executable, "-c", MACHINE, db, "15"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    ids = [int(x) for out, _ in outs for x in out.split()]
    assert len(ids) == 30 and len(set(ids)) == 30
    store = Store(db)
    assert sorted(store.sql("SELECT event_id FROM events")["event_id"]) == sorted(ids)
    assert store.sql("SELECT count(*) - count(DISTINCT log_id) AS d FROM case_log")["d"][0] == 0


def test_serve_workers_write_civicgrids_log_at_the_commands_level(small_city, civicgrid_cli, tmp_path):
    """``civicgrid --log-level info serve --workers 2``: each worker process writes civicgrid's records (each
    request with its status and time) to standard error. Workers are new processes without the command's logging
    configuration: uvicorn's access log was off (civicgrid's replaces it at INFO) and civicgrid's records went
    nowhere, so no request was logged, nor the traceback a 500 answer promises "the service log has"."""
    port = _port()
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([*civicgrid_cli, "--log-level", "info", "serve", "--db", str(small_city), "--port",
                                 str(port), "--maintain-hours", "0", "--workers", "2", "--no-warm"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err, env=os.environ.copy())
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(base + "/openapi.json", timeout=5):
                        break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                    time.sleep(0.3)
            for _ in range(6):
                with urllib.request.urlopen(base + "/api/layers/areas", timeout=60) as r:
                    assert r.status == 200
        finally:
            _stop(proc)
    said = log.read_text()
    lines = [line for line in said.splitlines() if "civicgrid.api.app: GET /api/layers/areas 200" in line]
    assert len(lines) == 6, said[-3000:]
    assert " INFO civicgrid.api.app: service on " in said  # each worker's app, built at the command's level
