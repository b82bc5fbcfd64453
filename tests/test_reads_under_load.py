"""Reads that hold under load (issue 14, part 5): answers kept per store version are never stale.

- a write committed by another process (or another connection) is seen by the next request, also right after a
  previous write (file times are coarse) and after the store's files had been quiet (the change probe trusted);
- concurrent identical misses compute once (single flight), and share an error;
- KPIs read at "now" are kept only until a deadline passes: an overdue count is never served stale;
- auth still holds with the caches: a revoked token is refused on its next request, a cached answer is never
  given to a caller who may not see it;
- the processes of one service share their answers through a folder: computed once across them (also when they
  miss at the same moment), never stale either (a write by another process is seen by every one of them), the
  folder bounded; ``civicgrid serve`` makes one per run and removes it (and those of killed services);
- the warm-up computes the default views before the service answers: their first callers get the same answers
  as a service without caches, without computing them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
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


@pytest.fixture()
def served(city):
    """The small city served in-process, with the viewer's ``Authorization`` header."""
    db, viewer = city
    return db, TestClient(create_app(db)), {"Authorization": f"Bearer {viewer}"}


def _at_once(n: int, ask: Callable[[], None]) -> None:
    """Call ``ask`` in ``n`` threads started together (a barrier), and wait for them."""
    started = threading.Barrier(n)

    def run() -> None:
        started.wait()
        ask()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_a_write_by_another_process_is_seen_by_the_next_request(served):
    db, client, auth = served
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


def test_a_write_of_another_connection_of_this_process_is_seen(served):
    db, client, auth = served
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

    def compute() -> str:
        calls.append(1)
        time.sleep(0.3)  # long enough for every thread to ask while it runs
        return "value"

    _at_once(6, lambda: got.append(cache.get(FakeStore(), ("k",), compute)))
    assert got == ["value"] * 6 and len(calls) == 1

    # an error is shared by the callers who waited for it, and not kept: the next call computes again
    errors = []

    def fail() -> str:
        calls.append(1)
        time.sleep(0.3)
        raise ValueError("boom")

    def ask_fail() -> None:
        try:
            cache.get(FakeStore(), ("bad",), fail)
        except ValueError as exc:
            errors.append(str(exc))

    calls.clear()
    _at_once(6, ask_fail)
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
    _at_once(4, lambda: answers.append(client.get("/map?res=8&lang=en")))
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


def test_flags_answer_the_moment_they_are_read_at(served):
    _db, client, _auth = served
    first = client.get("/api/kpis/flags").json()
    time.sleep(1.1)
    second = client.get("/api/kpis/flags").json()
    assert second["as_of"] > first["as_of"]  # the figures may be kept, the moment is the request's
    assert {k: v for k, v in first.items() if k != "as_of"} == {k: v for k, v in second.items() if k != "as_of"}


def test_a_revoked_token_is_refused_on_its_next_request(served):
    db, client, auth = served
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



def test_a_case_write_does_not_make_every_token_read_the_users_again(served, monkeypatch):
    """Every case write is a new store version; the users are read again only after a write changed them (a new
    token, a disabled user), and such a change is seen on the next request."""
    from civicgrid.geo import users as users_module
    db, client, auth = served
    reads, real = [], users_module._users_by_token
    monkeypatch.setattr(users_module, "_users_by_token", lambda con: reads.append(1) or real(con))
    assert client.get("/api/cases", headers=auth).status_code == 200
    before = len(reads)
    for _ in range(3):  # case writes (another user's): new versions, the users unchanged
        cs.create_case(db, actor="someone", problem_type="0201", lng=112.905, lat=28.205)
        assert client.get("/api/cases", headers=auth).status_code == 200
    assert len(reads) == before  # no read of the users after the case writes
    assert Store(db).sql("SELECT count(*) AS n FROM cases")["n"].iloc[0] >= 3
    set_active(db, "查看员", active=False)  # a change of the users: seen on the next request
    assert client.get("/api/cases", headers=auth).status_code == 401
    assert len(reads) == before + 1
    fresh = new_token(db, "查看员")
    assert client.get("/api/cases", headers=auth).status_code == 401  # the old token stays revoked
    assert client.get("/api/cases", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200

def test_answers_are_kept_per_caller_role(city):
    db, viewer = city
    client = TestClient(create_app(db, settings={"public_layers": "areas,grids"}))  # leaders' names not public
    auth = {"Authorization": f"Bearer {viewer}"}
    for _ in range(2):  # in both orders of callers, from the cache the second time
        anonymous = client.get("/api/layers/grids").text
        signed_in = client.get("/api/layers/grids", headers=auth).text
        assert "张三" in signed_in and "张三" not in anonymous


class _Version:
    """A store stand-in whose snapshot id the test sets."""

    path, at = "x", None

    def __init__(self) -> None:
        self.snapshot = 1

    def snapshot_id(self) -> int:
        return self.snapshot


def test_processes_share_answers_through_a_folder(tmp_path):
    store, calls = _Version(), []

    def compute(value: str) -> Callable[[], str]:
        def run() -> str:
            calls.append(value)
            time.sleep(0.3)  # long enough for every other "process" to miss while it runs
            return value
        return run

    # one cache per process: nothing in common but the folder (each its own memory and single flight)
    workers = [VersionCache(4, shared=tmp_path) for _ in range(4)]
    got: list[str] = []
    turn = iter(workers)  # each thread takes its own
    _at_once(4, lambda: got.append(next(turn).get(store, ("heat", 9), compute("v1"))))
    assert got == ["v1"] * 4 and calls == ["v1"]  # missed at the same moment, computed once
    assert VersionCache(4, shared=tmp_path).get(store, ("heat", 9), compute("other")) == "v1"
    assert calls == ["v1"]  # a new process reads it
    store.snapshot = 2  # a committed write: every process computes the new version's answer
    assert [w.get(store, ("heat", 9), compute("v2")) for w in workers] == ["v2"] * 4 and calls == ["v1", "v2"]
    # an answer that holds until a past moment (or a refused one: 0) is answered, never kept
    expired = VersionCache(4, shared=tmp_path)
    assert expired.get_until(store, ("kpis",), lambda: (calls.append("k") or "k", 0.0)) == "k"
    assert workers[0].get_until(store, ("kpis",), lambda: (calls.append("k") or "k", 0.0)) == "k"
    assert calls.count("k") == 2
    # the folder keeps the newest `size` answers
    for k in range(10):
        workers[0].get(store, ("view", k), lambda k=k: k)
    assert len(list(tmp_path.glob("*.pickle"))) == 4
    assert VersionCache(4, shared=tmp_path).get(store, ("view", 9), lambda: "recomputed") == 9
    assert VersionCache(4, shared=tmp_path).get(store, ("view", 0), lambda: "recomputed") == "recomputed"
    # a file cut short (a process killed while writing it) is a miss, computed again
    for name in tmp_path.glob("*.pickle"):
        name.write_bytes(name.read_bytes()[:5])
    assert VersionCache(4, shared=tmp_path).get(store, ("view", 9), lambda: "again") == "again"
    # the folder removed under the service (a temporary folder cleaned): answered, by each process alone
    assert VersionCache(4, shared=tmp_path / "gone").get(store, ("view", 9), lambda: "alone") == "alone"


def test_workers_sharing_answers_see_each_write(served, tmp_path):
    db, _client, auth = served
    a, b = (TestClient(create_app(db, settings={"cache_dir": str(tmp_path / "shared")})) for _ in range(2))
    assert a.get("/api/cases", headers=auth).json()["total"] == 0
    assert b.get("/api/cases", headers=auth).json()["total"] == 0  # read from the folder
    assert b.get("/api/cases").status_code == 401  # the role check comes before the shared answer too
    made = _other_process_creates_case(db)
    for client in (b, a):
        got = client.get("/api/cases", headers=auth).json()
        assert got["total"] == 1 and got["cases"][0]["case_id"] == made
    assert sum(v for _, v in a.get("/api/heatmap?res=9").json()["cells"]) == 1
    assert sum(v for _, v in b.get("/api/heatmap?res=9").json()["cells"]) == 1


def test_warm_answers_the_default_views_as_computed_cold(demo_db, tmp_path, monkeypatch):
    from civicgrid.api import app as app_module
    from civicgrid.api.routers import pages
    from civicgrid.geo.store_files import copy_store

    db = tmp_path / "w.duckdb"
    copy_store(demo_db, db)
    viewer = {"Authorization": f"Bearer {add_user(db, 'viewer1', role='viewer')[1]}"}
    views = [("/map?res=8", None), ("/api/heatmap?res=8", None), ("/api/kpis/flags", None),
             ("/api/layers/grids", None), ("/api/cases", "viewer"), ("/api/nothing-here", None)]
    assert app_module.warm_app(create_app(db, settings={"cache_dir": str(tmp_path / "c")}), views=views) == 5
    rendered = []
    real = pages.render_offline
    monkeypatch.setattr(pages, "render_offline", lambda m: rendered.append(1) or real(m))
    worker = TestClient(create_app(db, settings={"cache_dir": str(tmp_path / "c")}))  # another process's app
    cold = TestClient(create_app(db, settings={"map_cache_pages": 0, "api_cache_responses": 0}))
    for path, role in views[1:-1]:
        headers = viewer if role else {}
        warm, computed = (c.get(path, headers=headers).json() for c in (worker, cold))
        if path == "/api/kpis/flags":  # the moment read is each request's own
            assert warm.pop("as_of") <= computed.pop("as_of")
        assert warm == computed
    assert worker.get("/api/cases").status_code == 401  # warmed as a viewer: still needs a token
    assert worker.get("/map?res=8").status_code == 200 and rendered == []  # rendered by the warm-up
    cs.create_case(db, actor="here", problem_type="0101", lng=112.905, lat=28.205)
    assert worker.get("/api/cases", headers=viewer).json()["total"] == (
        cold.get("/api/cases", headers=viewer).json()["total"])
    worker.get("/map?res=8")
    assert rendered == [1]  # a new version of the store: rendered again
    # a warm-up that runs out of time stops (the views left are computed by their first callers)
    assert app_module.warm_app(create_app(db), views=views, seconds=0) == 0


def test_serve_shares_a_folder_per_run_and_removes_it(demo_db, tmp_path, monkeypatch):
    import uvicorn
    from civicgrid.api.cli import main
    from civicgrid.api.commands import serve
    from click.testing import CliRunner

    monkeypatch.setattr(serve.tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f"{serve.CACHE_PREFIX}{dead.pid}-abc"  # a service killed before removing its folder
    alive = tmp_path / f"{serve.CACHE_PREFIX}{os.getpid()}-def"  # a service still running
    for folder in (left, alive):
        folder.mkdir()
    seen = {}

    def run(app, **kw) -> None:
        folder = Path(os.environ["CIVICGRID_CACHE_DIR"])
        seen.update(app=app, folder=folder, answers=len(list(folder.glob("*/*.pickle"))), **kw)

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setenv("CIVICGRID_DB", "unset")  # serve sets these for its workers: restored after the test
    monkeypatch.setenv("CIVICGRID_MAX_CELLS", "50000")
    monkeypatch.delenv("CIVICGRID_CACHE_DIR", raising=False)
    r = CliRunner().invoke(main, ["serve", "--db", str(demo_db), "--workers", "2", "--maintain-hours", "0"])
    assert r.exit_code == 0, r.output
    assert seen["workers"] == 2 and seen["folder"].parent == tmp_path
    assert seen["answers"] >= 20  # warmed into the folder before the workers start
    assert not seen["folder"].exists() and "CIVICGRID_CACHE_DIR" not in os.environ
    assert not left.exists() and alive.exists()
    seen.clear()
    r = CliRunner().invoke(main, ["serve", "--db", str(demo_db), "--workers", "2", "--maintain-hours", "0",
                                  "--no-warm"])
    assert r.exit_code == 0, r.output
    assert seen["answers"] == 0 and not seen["folder"].exists()
