"""Shared fixtures: paths to the real public data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The real fixtures: ../shared/data beside the project, or $CIVICGRID_SHARED_DATA.
SHARED = Path(os.environ.get("CIVICGRID_SHARED_DATA") or ROOT.parent / "shared" / "data")
#: In-process ``civicgrid import`` commands would lower the test process's CPU priority (and that of every service
#: it starts afterwards); tests/test_import.py checks the setting in processes of its own.
os.environ.setdefault("CIVICGRID_IMPORT_NICE", "0")


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
    copy it (``copy_store``) when a test needs to change data."""
    from civicgrid.data.demo import build_demo

    path = tmp_path_factory.mktemp("demo_city") / "demo.duckdb"
    build_demo(path, events=DEMO_EVENTS, seed=DEMO_SEED, progress=False)
    return path


def plain_duckdb(db: str | os.PathLike):
    """A plain DuckDB connection on the store ``db`` (SQLite catalog), read-only, made without civicgrid's code:
    for independent recomputations. The extensions are loaded from the files their PyPI wheels install."""
    import importlib

    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for name in ("spatial", "ducklake", "sqlite_scanner"):
        root = Path(importlib.import_module(f"duckdb_extension_{name}").__file__).parent / "extensions"
        con.load_extension(str(root / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"))
    db = Path(db).absolute()
    con.execute(f"ATTACH 'ducklake:sqlite:{db}' AS plain (READ_ONLY, DATA_PATH '{db}.files/', OVERRIDE_DATA_PATH true)")
    con.execute("USE plain")
    return con


def store_digest(db: str | os.PathLike) -> str:
    """A digest of every row of every table of the store ``db``: what "the store is as it was" means for a lake,
    whose catalog file changes with every snapshot (also for a write that only reserves ids)."""
    import hashlib

    from civicgrid.geo.store import Store

    store = Store(db)
    tables = store.sql("SELECT table_name FROM information_schema.tables WHERE table_catalog = 'lake' "
                       "AND table_type = 'BASE TABLE' ORDER BY 1")["table_name"]
    digest = hashlib.sha256()
    for table in tables:
        rows = store.sql(f"SELECT * FROM {table} ORDER BY ALL").to_csv(index=False)
        digest.update(f"{table}\n{rows}".encode())
    return digest.hexdigest()


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
                                 "--log-level", "warning", "--workers", "1"],
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


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """``chromium(*flags, mobile=None)``: a context manager yielding headless Chromium through chromedriver
    (Debian's ``chromium`` and ``chromium-driver``, which ``.ci/run`` installs) with browser console and
    performance logs, its own profile, extra command-line ``flags`` and, with ``mobile`` (``{"width", "height"}``),
    a phone's screen emulated."""
    import contextlib
    import shutil

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")

    @contextlib.contextmanager
    def start(*flags: str, mobile: dict | None = None):
        if not (binary and driver_path):
            pytest.fail("headless browser tests need Debian's chromium and chromium-driver "
                        "(apt-get install chromium chromium-driver; .ci/run installs them)")
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = binary
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--lang=zh-CN", *flags,
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
            opts.add_argument(flag)
        if mobile:
            opts.add_experimental_option("mobileEmulation", {"deviceMetrics": {**mobile, "pixelRatio": 2.0}})
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        driver = webdriver.Chrome(service=Service(driver_path), options=opts)
        driver.set_page_load_timeout(60)
        try:
            yield driver
        finally:
            driver.quit()

    return start


@pytest.fixture()
def small_city(tmp_path) -> Path:
    """A tiny city near Changsha: one district, street and community (测试district…) and four 1 km micro-grids
    (codes ``430102001001001``–``004``, names, leaders and households). Each test gets its own database."""
    return build_small_city(tmp_path / "city.duckdb", tmp_path)


def build_small_city(db, tmp_path: Path):
    """Load the areas and grids of :func:`small_city` into the store ``db`` (any catalog); return ``db``."""
    import geopandas as gpd
    import shapely
    from civicgrid.grids.areas import import_areas, import_grids

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


def build_toronto(db) -> Path:
    """Toronto as its office would load it: the restaurants of the DineSafe inspections as its sample frame (their
    own establishment types as categories) and the inspections (a crucial infraction fails); no areas, no micro-grids,
    no complaints. Returns ``db``."""
    from civicgrid.sites.frame import import_sites
    from civicgrid.sites.inspections import import_inspections

    toronto = SHARED / "dev_inspections" / "toronto" / "inspections.csv"
    import_sites(toronto, db=db, progress=False,
                 mapping={"id": "establishment_id", "name": "establishment_name", "category": "establishment_type",
                          "lat": "latitude", "lng": "longitude"})
    import_inspections(toronto, db=db, tz="America/Toronto", fail_when="n_crucial>0", progress=False,
                       mapping={"id": "inspection_id", "site": "establishment_id", "time": "inspection_date",
                                "result": "n_infractions"})
    return Path(db)


def build_new_york(db) -> Path:
    """New York as its office would load it: the ZIP code areas as districts, the restaurants as its sample frame
    (at their ZIP's centroid: hundreds share a point; cuisines as categories) and their inspections (a score of 14
    or more fails); no micro-grids, no complaints. Returns ``db``."""
    from civicgrid.grids.areas import import_areas
    from civicgrid.sites.frame import import_sites
    from civicgrid.sites.inspections import import_inspections

    nyc = SHARED / "dev_inspections" / "nyc"
    import_areas(SHARED / "us_nyc311_small" / "nyc_zipcodes.shp", db=db, level="district",
                 mapping={"code": "ZIPCODE", "name": "PO_NAME"}, progress=False)
    import_sites(nyc / "establishments.csv", db=db, progress=False,
                 mapping={"id": "camis", "name": "dba", "category": "cuisine_description", "lat": "zip_lat",
                          "lng": "zip_lng"})
    import_inspections(nyc / "inspections.csv", db=db, tz="America/New_York", fail_when="score>=14",
                       mapping={"id": "inspection_id", "site": "camis", "time": "inspection_date", "result": "score"},
                       progress=False)
    return Path(db)


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server for the stores with a PostgreSQL catalog, started from Debian's binaries
    (``apt-get install postgresql``; ``.ci/run`` installs them) on a Unix socket in a temporary folder, stopped
    at the end. Gives ``new_db(name) -> "postgresql://..."``, which creates an empty database."""
    import glob
    import shutil
    import socket
    import subprocess
    import tempfile

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin): apt-get install postgresql "
                    "(.ci/run installs it)")
    bindir = Path(found[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="civicgrid-pg-"))
    base.chmod(0o755)
    as_user: list[str] = []
    if os.getuid() == 0:  # the server refuses to run as root: run it as Debian's postgres user
        shutil.chown(base, user="postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = base / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "civicgrid", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o",
                    f"-k {base} -p {port} -c listen_addresses='' -c max_connections=200", "start"],
                   check=True, capture_output=True)

    def new_db(name: str) -> str:
        subprocess.run([str(bindir / "createdb"), "-h", str(base), "-p", str(port), "-U", "civicgrid", name],
                       check=True, capture_output=True)
        return f"postgresql://civicgrid@/{name}?host={base}&port={port}"

    try:
        yield new_db
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request, tmp_path, monkeypatch):
    """The ``--db`` of a new store of each catalog kind: a SQLite catalog file, or a database of the throwaway
    PostgreSQL server with its data folder in ``tmp_path`` (``CIVICGRID_DATA_PATH``, also for subprocesses)."""
    if request.param == "sqlite":
        return str(tmp_path / "city.duckdb")
    new_db = request.getfixturevalue("pg_server")
    monkeypatch.setenv("CIVICGRID_DATA_PATH", str(tmp_path / "city-data"))
    return new_db(f"city_{abs(hash(str(tmp_path))) % 10**9}")


# --- the rule of an imported event's case, written plainly: the reference the bulk case paths are compared with ---

#: Unit name suffixes of the area offices, and the unit of a case outside every area.
REFERENCE_SUFFIX = {"community": "居委会", "street": "办事处", "district": "城市管理和综合执法局"}
#: The same for a name without a Chinese character.
REFERENCE_SUFFIX_EN = {"community": " community office", "street": " street office",
                       "district": " city management office"}
REFERENCE_UNASSIGNED = "属地待定（人工派遣）"


def reference_unit(sites: dict, areas: dict, site_id, community, street, district) -> tuple:
    """``(category_code, unit, unit_code)`` of a case, one at a time: ``sites`` maps a site id to its
    ``(category_code, responsible_unit)``, ``areas`` a level to ``{code: name}``. The site's responsible unit
    (spaces trimmed, blank as none), without a code; else the office of the first of community, street and
    district that is a known area with a name; the code of the first known area; else the unassigned unit."""
    category, responsible = sites.get(site_id, (None, None)) if site_id is not None else (None, None)
    if responsible is not None and responsible.strip(" ") != "":
        return category, responsible.strip(" "), None
    unit = code = None
    for level, value in (("community", community), ("street", street), ("district", district)):
        if value is not None and value in areas[level]:
            code = value if code is None else code
            name = areas[level][value]
            if unit is None and name is not None:
                chinese = any("\u2e80" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" for ch in name)
                unit = name + (REFERENCE_SUFFIX if chinese else REFERENCE_SUFFIX_EN)[level]
    return category, unit if unit is not None else REFERENCE_UNASSIGNED, code


def reference_state(event: dict) -> dict:
    """What the case of a stored event without one takes from it, one event at a time: closed at its closure
    time, else (status exactly ``closed``) at its rectification time, else at its time; rectified at its
    rectification time, else its closure time, else its time when its status says closed; the rework rounds
    ``reopened`` (none when missing or negative); the state that follows."""
    said = event["status"] == "closed"
    rect, closed, t = event["rectified_at"], event["closed_at"], event["time"]
    closed_at = closed if closed is not None else ((rect if rect is not None else t) if said else None)
    rectified_at = rect if rect is not None else (closed if closed is not None else (t if said else None))
    reworks = max(event["reopened"] or 0, 0)
    state = "closed" if closed_at is not None else "rectified" if rectified_at is not None else "dispatched"
    return {"closed_at": closed_at, "rectified_at": rectified_at, "reworks": reworks, "state": state}


def reference_log(case: dict, first_log_id: int, actor: str) -> list[dict]:
    """The audit rows of one case (``case_id``, ``found_at``, ``deadline``, ``rectified_at``, ``closed_at``,
    ``reworks``, ``unit``), numbered from ``first_log_id``: found, registered, dispatched (to the unit) at its
    time t; for each of its r rework rounds j = 1..2r, at t + floor(span * j / (2r + 1)) cut to whole seconds
    (span: from t to its rectification, else its deadline, else t; at least 0), rectified (odd j) or sent back
    to the unit (even j); then rectified at its rectification time and closed at its closure time, as many of
    the two as it has of those times (a case closed always has a rectification time: :func:`reference_state`)."""
    t, r, unit = case["found_at"], case["reworks"], case["unit"]
    end = next((x for x in (case["rectified_at"], case["deadline"]) if x is not None), t)
    span_us = max((end - t) // pd.Timedelta(microseconds=1), 0)
    rows = [(None, "found", t, None), ("found", "registered", t, None), ("registered", "dispatched", t, unit)]
    for j in range(1, 2 * r + 1):
        at = t + pd.Timedelta(microseconds=span_us * j // (2 * r + 1) // 10**6 * 10**6)
        rows.append(("dispatched", "rectified", at, None) if j % 2 else ("rectified", "dispatched", at, unit))
    ends = [("dispatched", "rectified", case["rectified_at"], None), ("rectified", "closed", case["closed_at"], None)]
    rows += ends[:sum(x is not None for x in (case["rectified_at"], case["closed_at"]))]
    return [{"log_id": first_log_id + k, "case_id": case["case_id"], "changed_at": at, "actor": actor,
             "from_state": a, "to_state": b, "note": None, "unit": u, "photo": None}
            for k, (a, b, at, u) in enumerate(rows)]
