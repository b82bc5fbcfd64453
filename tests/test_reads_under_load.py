"""Reads that hold under load (issue 14, part 5): answers kept per store version are never stale.

- a write committed by another process (or another connection) is seen by the next request, also right after a
  previous write (file times are coarse) and after the store's files had been quiet (the change probe trusted);
- concurrent identical misses compute once (single flight), and share an error;
- KPIs read at "now" are kept only until a deadline passes: an overdue count is never served stale;
- auth still holds with the caches: a revoked token is refused on its next request, a cached answer is never
  given to a caller who may not see it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from civicgrid.api.app import create_app
from civicgrid.geo import caches as caches_module
from civicgrid.geo.caches import VersionCache
from civicgrid.geo.store import Store, _ChangeProbe
from civicgrid.geo.users import add_user, new_token, set_active
from civicgrid.sites import cases as cs
from civicgrid.sites import kpis as kpis_module
from civicgrid.sites.kpis import flags_hold_until, kpi_totals
from fastapi.testclient import TestClient

from conftest import plain_duckdb

ROOT = Path(__file__).resolve().parents[1]


def _other_process_creates_case(db: Path, lng: float = 112.905, lat: float = 28.205) -> int:
    """Create a case in another Python process (its own DuckDB instance and catalog connection)."""
    code = ("import sys; from civicgrid.sites.cases import create_case; "
            "print(create_case(sys.argv[1], actor='other', problem_type='0101', lng=float(sys.argv[2]), "
            "lat=float(sys.argv[3]))['case_id'])")
    out = subprocess.run([sys.executable, "-c", code, str(db), str(lng), str(lat)], cwd=ROOT, check=True,
                         capture_output=True, text=True, env=os.environ.copy())
    return int(out.stdout.strip().splitlines()[-1])


def _lake_snapshot(db: Path) -> int:
    """The newest snapshot id as a fresh connection made without civicgrid's code reads it."""
    con = plain_duckdb(db)
    try:
        return int(con.execute("SELECT max(snapshot_id) FROM plain.snapshots()").fetchone()[0])
    finally:
        con.close()


def _age_store_files(db: Path, seconds: float = 30) -> None:
    """Set the catalog's and its WAL's times ``seconds`` back: the files look quiet, the probe trusts them."""
    past = time.time() - seconds
    for name in (db, Path(f"{db}-wal")):
        if name.exists():
            os.utime(name, (past, past))


@pytest.fixture()
def city(small_city):
    viewer = add_user(small_city, "查看员", role="viewer")[1]
    return small_city, viewer


def test_a_write_by_another_process_is_seen_by_the_next_request(city):
    db, viewer = city
    client = TestClient(create_app(db))
    auth = {"Authorization": f"Bearer {viewer}"}
    assert client.get("/api/cases", headers=auth).json()["total"] == 0
    assert client.get("/api/cases", headers=auth).json()["total"] == 0  # now an answer of the cache
    made = []
    for k in range(3):  # writes in quick succession: file times may not move between them
        made.append(_other_process_creates_case(db, lat=28.205 + k * 1e-4))
        got = client.get("/api/cases", headers=auth).json()
        assert got["total"] == len(made) and {c["case_id"] for c in got["cases"]} == set(made)
    # the files quiet for a while: the probe answers from the stat without asking the lake...
    _age_store_files(db)
    store = client.app.state.store
    store.snapshot_id()
    asked = []
    store._lake.probe.snapshot_id(lambda: asked.append(1) or -1)
    assert not asked
    assert client.get("/api/cases", headers=auth).json()["total"] == 3
    # ...and still sees the next write of another process on the next request
    made.append(_other_process_creates_case(db, lat=28.2101))
    assert client.get("/api/cases", headers=auth).json()["total"] == 4
    assert store.snapshot_id() == _lake_snapshot(db)
    # the KPIs, the heatmap and the events list follow too (each a cached answer of the previous version)
    month = cs.now_local().strftime("%Y-%m")
    assert client.get(f"/api/kpis?period={month}&level=district").json()["totals"]["found"] == 4
    assert sum(v for _, v in client.get("/api/heatmap?res=9").json()["cells"]) == 4


def test_a_write_of_another_connection_of_this_process_is_seen(city):
    db, viewer = city
    client = TestClient(create_app(db))
    auth = {"Authorization": f"Bearer {viewer}"}
    _age_store_files(db)
    assert client.get("/api/cases", headers=auth).json()["total"] == 0
    cs.create_case(db, actor="here", problem_type="0101", lng=112.905, lat=28.205)
    assert client.get("/api/cases", headers=auth).json()["total"] == 1


def test_the_probe_asks_the_lake_while_the_files_are_fresh(city):
    db, _ = city
    probe = _ChangeProbe(Store(db).location)
    asked = []

    def query() -> int:
        asked.append(1)
        return 7

    # the store was just written (add_user): its file times are younger than a second, so not trusted
    assert probe.snapshot_id(query) == 7 and probe.snapshot_id(query) == 7
    assert len(asked) == 2
    _age_store_files(db)
    probe.snapshot_id(query)
    probe.snapshot_id(query)
    assert len(asked) == 3  # quiet files: asked once, then answered from the stat
    os.utime(db)  # any change of a file's time, size or inode: asked again
    probe.snapshot_id(query)
    assert len(asked) == 4


def test_concurrent_identical_misses_compute_once():
    class FakeStore:
        path, at = "x", None

        def snapshot_id(self) -> int:
            return 1

    cache, calls, got = VersionCache(8), [], []
    started = threading.Barrier(6)

    def compute() -> str:
        calls.append(1)
        time.sleep(0.3)  # long enough for every thread to ask while it runs
        return "value"

    def ask() -> None:
        started.wait()
        got.append(cache.get(FakeStore(), ("k",), compute))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == ["value"] * 6 and len(calls) == 1

    # an error is shared by the callers who waited for it, and not kept: the next call computes again
    errors = []

    def fail() -> str:
        calls.append(1)
        time.sleep(0.3)
        raise ValueError("boom")

    def ask_fail() -> None:
        started.wait()
        try:
            cache.get(FakeStore(), ("bad",), fail)
        except ValueError as exc:
            errors.append(str(exc))

    calls.clear()
    threads = [threading.Thread(target=ask_fail) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == ["boom"] * 6 and len(calls) == 1
    assert cache.get(FakeStore(), ("bad",), lambda: "fine") == "fine"


def test_concurrent_map_requests_render_once(demo_db, monkeypatch):
    from civicgrid.api.routers import pages

    rendered = []
    real = pages.render_offline

    def counting(m):
        rendered.append(1)
        return real(m)

    monkeypatch.setattr(pages, "render_offline", counting)
    client = TestClient(create_app(demo_db))
    answers = []
    started = threading.Barrier(4)

    def ask() -> None:
        started.wait()
        answers.append(client.get("/map?res=8&lang=en"))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in answers] == [200] * 4
    assert len({r.text for r in answers}) == 1 and len(rendered) == 1


class _Clock:
    """A settable "now" for the KPIs and the caches' expiry."""

    def __init__(self, now) -> None:
        self.now = now

    def now_local(self, **_):
        return self.now

    def time(self) -> float:
        return self.now.timestamp()


def test_kpis_read_now_expire_when_a_deadline_passes(city, monkeypatch):
    db, _viewer = city
    case = cs.create_case(db, actor="here", problem_type="0101", lng=112.905, lat=28.205)
    store = Store(db)
    deadline = store.sql("SELECT deadline FROM cases WHERE case_id = ?", [case["case_id"]])["deadline"][0]
    deadline = deadline.to_pydatetime()
    clock = _Clock(deadline - timedelta(hours=1))
    monkeypatch.setattr(kpis_module, "now_local", clock.now_local)
    monkeypatch.setattr(cs, "now_local", clock.now_local)
    monkeypatch.setattr(caches_module, "time", clock)
    computed = []
    real = kpis_module.kpi_table

    def counting(*args, **kwargs):
        computed.append(1)
        return real(*args, **kwargs)

    from civicgrid.api.routers import kpis as kpis_router

    monkeypatch.setattr(kpis_router, "kpi_table", counting)
    client = TestClient(create_app(db))
    found = case["found_at"] if isinstance(case["found_at"], str) else case["found_at"].isoformat()
    query = f"/api/kpis?start={found[:10]}&end={(deadline + timedelta(days=3)).date()}&level=district"

    def overdue() -> int:
        return client.get(query).json()["totals"]["overdue"]

    # the figures hold until the deadline: an independent reading at each moment agrees with the answers
    assert kpis_module.kpis_hold_until(store, start=found[:10], end=deadline + timedelta(days=3)) == deadline
    assert flags_hold_until(store) == deadline
    assert overdue() == 0 == kpi_totals(store, start=found[:10], end=deadline + timedelta(days=3),
                                        as_of=clock.now)["overdue"]
    clock.now = deadline - timedelta(minutes=1)
    assert overdue() == 0 and len(computed) == 1  # still before the deadline: the kept answer
    clock.now = deadline + timedelta(minutes=1)
    assert overdue() == 1 == kpi_totals(store, start=found[:10], end=deadline + timedelta(days=3),
                                        as_of=clock.now)["overdue"]
    assert len(computed) == 2
    # read at a fixed moment the answer never expires by time
    fixed = f"{query}&as_of={(deadline - timedelta(hours=2)).isoformat()}"
    assert client.get(fixed).json()["totals"]["overdue"] == 0
    clock.now = deadline + timedelta(days=1)
    assert client.get(fixed).json()["totals"]["overdue"] == 0 and len(computed) == 3


def test_flags_answer_the_moment_they_are_read_at(city):
    db, _viewer = city
    client = TestClient(create_app(db))
    first = client.get("/api/kpis/flags").json()
    time.sleep(1.1)
    second = client.get("/api/kpis/flags").json()
    assert second["as_of"] > first["as_of"]  # the figures may be kept, the moment is the request's
    assert {k: v for k, v in first.items() if k != "as_of"} == {k: v for k, v in second.items() if k != "as_of"}


def test_a_revoked_token_is_refused_on_its_next_request(city):
    db, viewer = city
    client = TestClient(create_app(db))
    auth = {"Authorization": f"Bearer {viewer}"}
    _age_store_files(db)
    for _ in range(2):
        assert client.get("/api/cases", headers=auth).status_code == 200
    new_token(db, "查看员")  # the old token is revoked
    assert client.get("/api/cases", headers=auth).status_code == 401
    # a cached answer is never given without the role it needs
    assert client.get("/api/cases").status_code == 401
    fresh = new_token(db, "查看员")
    assert client.get("/api/cases", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    set_active(db, "查看员", active=False)
    assert client.get("/api/cases", headers={"Authorization": f"Bearer {fresh}"}).status_code == 401


def test_answers_are_kept_per_caller_role(city):
    db, viewer = city
    client = TestClient(create_app(db, settings={"public_layers": "areas,grids"}))  # leaders' names not public
    auth = {"Authorization": f"Bearer {viewer}"}
    for _ in range(2):  # in both orders of callers, from the cache the second time
        anonymous = client.get("/api/layers/grids").text
        signed_in = client.get("/api/layers/grids", headers=auth).text
        assert "张三" in signed_in and "张三" not in anonymous
