"""Shared fixtures: paths to the real public data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The real fixtures: ../shared/data beside the project, or $CIVICGRID_SHARED_DATA.
SHARED = Path(os.environ.get("CIVICGRID_SHARED_DATA") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared() -> Path:
    """The read-only real fixtures folder (../shared/data beside the project)."""
    if not SHARED.exists():
        pytest.fail(f"real fixtures not found at {SHARED}; they sit beside the project as ../shared/data "
                    "(or set CIVICGRID_SHARED_DATA)")
    return SHARED


#: Size and seed of the demo city shared by the test session.
DEMO_EVENTS = 30_000
DEMO_SEED = 7


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory) -> Path:
    """A small demo city database (30,000 events, seed 7) built once per test session. Do not write to it;
    copy it (``shutil.copy``) when a test needs to change data."""
    from civicgrid.data.demo import build_demo

    path = tmp_path_factory.mktemp("demo_city") / "demo.duckdb"
    build_demo(path, events=DEMO_EVENTS, seed=DEMO_SEED, progress=False)
    return path


@pytest.fixture(scope="session")
def civicgrid_cli() -> list[str]:
    """The command that runs this environment's ``civicgrid`` CLI (its console script, else ``python -m api.cli``)."""
    import sys

    exe = Path(sys.executable).with_name("civicgrid")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "civicgrid.api.cli"]


@pytest.fixture(scope="session")
def civicgrid_serve(civicgrid_cli):
    """Start ``civicgrid serve`` in a subprocess: ``with civicgrid_serve(db) as (base, proc):``.

    Serves ``db`` on a free local port, waits (at most 60 s) until ``/openapi.json`` answers, gives the base URL
    and the process, and stops the process on leaving the block.
    """
    import contextlib
    import socket
    import subprocess
    import time
    import urllib.request

    @contextlib.contextmanager
    def serve(db: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([*civicgrid_cli, "serve", "--db", str(db), "--port", str(port),
                                 "--log-level", "warning"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(base + "/openapi.json", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None:
                    pytest.fail(f"civicgrid serve exited with {proc.returncode}: {proc.stdout.read()}")
                if time.monotonic() > deadline:
                    pytest.fail("civicgrid serve did not answer within 60 s")
                time.sleep(0.3)
            yield base, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    return serve


@pytest.fixture()
def small_city(tmp_path) -> Path:
    """A tiny city near Changsha: one district, street and community (测试district…) and four 1 km micro-grids
    (codes ``430102001001001``–``004``, names, leaders and households). Each test gets its own database."""
    import geopandas as gpd
    import shapely
    from civicgrid.grids.areas import import_areas, import_grids

    db = tmp_path / "city.duckdb"
    x0, y0, d = 112.90, 28.20, 0.01
    cells = [shapely.box(x0 + i * d, y0 + j * d, x0 + (i + 1) * d, y0 + (j + 1) * d)
             for i in range(2) for j in range(2)]
    whole = shapely.box(x0, y0, x0 + 2 * d, y0 + 2 * d)
    for level, code, parent in (("district", "430102", None), ("street", "430102001", "430102"),
                                ("community", "430102001001", "430102001")):
        f = tmp_path / f"{level}.geojson"
        gpd.GeoDataFrame({"code": [code], "name": [f"测试{level}"], "parent": [parent]}, geometry=[whole],
                         crs=4326).to_file(f)
        import_areas(f, db=db, level=level, progress=False)
    f = tmp_path / "grids.geojson"
    gpd.GeoDataFrame({"code": [f"430102001001{k:03d}" for k in range(1, 5)],
                      "name": [f"第{k}网格" for k in range(1, 5)],
                      "网格长": ["张三", "李四", "王五", "赵六"], "户数": ["300", "420", "250", "510"]},
                     geometry=cells, crs=4326).to_file(f)
    rep = import_grids(f, db=db, mapping={"leader": "网格长"}, progress=False)
    assert rep.loaded == 4
    return db
