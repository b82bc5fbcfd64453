"""The SQLite inside sqlite_scanner sleeps what it is asked once civicgrid opens a store (civicgrid.geo._sqlite_sleep).

Its PyPI build rounds every sleep up to a whole second (bench/DUCKLAKE.md section 12): ``sqlite3_sleep(ms)`` returns
the milliseconds the VFS says it slept, 1000 for any short sleep in that build, ``ms`` once the VFS has the short
sleep. The assertions read those return values and the C module's own counts, never a clock.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import pytest
from civicgrid.geo import _sqlite_sleep  # built at install (pyproject.toml's ext-modules)
from civicgrid.geo import store as store_module
from civicgrid.geo.store import Store, extension_path, locate, short_sleeps, sqlite_busy_timeout_ms, writing


def _sqlite() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(extension_path("sqlite_scanner")))  # the copy DuckDB loaded (same file, same handle)
    lib.sqlite3_sleep.restype = ctypes.c_int
    lib.sqlite3_sleep.argtypes = [ctypes.c_int]
    return lib


def test_a_store_gives_sqlite_short_sleeps(tmp_path):
    db = tmp_path / "city.duckdb"
    Store(db, create=True)
    assert short_sleeps()
    before, busy_before = _sqlite_sleep.counts()
    assert _sqlite().sqlite3_sleep(5) == 5  # the whole-second build answers 1000
    assert _sqlite().sqlite3_sleep(1000) == 1000  # a busy handler's one-second retry: slept as one busy step
    after, busy_after = _sqlite_sleep.counts()
    assert (after - before, busy_after - busy_before) == (2, 1)
    # the busy handler of such a build gives up after timeout/1000 tries: as many tries as 10 s of busy steps
    tries = sqlite_busy_timeout_ms() // 1000
    assert tries * store_module.SQLITE_BUSY_STEP_US == store_module.SQLITE_BUSY_PATIENCE_S * 1_000_000
    assert f"META_BUSY_TIMEOUT {sqlite_busy_timeout_ms()}" in locate(db).attach_sql()
    # installing twice changes nothing, and the store still reads and writes
    assert _sqlite_sleep.install(str(extension_path("sqlite_scanner")), store_module.SQLITE_BUSY_STEP_US) >= 1
    with writing(db) as con:
        con.execute("CREATE TABLE t (x BIGINT)")
        con.execute("INSERT INTO t VALUES (1), (2)")
    store = Store(db)
    assert store.con.execute("SELECT sum(x) FROM t").fetchone() == (3,)
    # catalog scans on one thread: a parallel scan's own SQLite connections would have sqlite_scanner's 5 s busy
    # timeout, five tries of a busy step
    assert store.con.execute("SELECT current_setting('sqlite_disable_multithreaded_scans')").fetchone() == (True,)


def test_install_refuses_what_it_cannot_patch(tmp_path):
    with pytest.raises(RuntimeError, match="not loaded"):
        _sqlite_sleep.install(str(tmp_path / "missing.so"), 2000)
    with pytest.raises(ValueError, match="busy step"):
        _sqlite_sleep.install(str(extension_path("sqlite_scanner")), 1_000_000)


@pytest.mark.slow
def test_the_setting_leaves_the_build_as_it_is(tmp_path):
    # with short sleeps off, the extension is as PyPI built it: this also checks the assumption the busy timeout
    # rests on (no usleep in that build). If it fails, sqlite_scanner sleeps short by itself now: drop the patch.
    code = textwrap.dedent(f"""
        import ctypes
        from civicgrid.geo.store import Store, extension_path, short_sleeps, sqlite_busy_timeout_ms
        Store({str(tmp_path / "city.duckdb")!r}, create=True)
        lib = ctypes.CDLL(str(extension_path("sqlite_scanner")))
        print(short_sleeps(), sqlite_busy_timeout_ms(), lib.sqlite3_sleep(5))
    """)
    env = {**os.environ, "CIVICGRID_SQLITE_SHORT_SLEEPS": "false"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "10000", "1000"]


@pytest.mark.parametrize("on", [True, False])
def test_info_says_how_the_catalog_waits(tmp_path, on):
    """``civicgrid info`` names the catalog and, for a SQLite file, whether its busy waits are short (in a process
    of its own: the sleeps are installed once per process)."""
    db = tmp_path / "city.duckdb"
    Store(db, create=True)
    env = {**os.environ, "CIVICGRID_SQLITE_SHORT_SLEEPS": "true" if on else "false"}
    out = subprocess.run([sys.executable, "-m", "civicgrid.api.cli", "info", "--db", str(db)], env=env,
                         capture_output=True, text=True, check=True).stdout
    said = next(line.strip() for line in out.splitlines() if "catalog:" in line)
    expected = ("busy waits of 2 ms" if on else "busy waits of whole seconds (CIVICGRID_SQLITE_SHORT_SLEEPS off")
    assert said.startswith(f"catalog: SQLite file in WAL mode, {expected}")
