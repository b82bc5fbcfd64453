"""Settings (``CIVICGRID_*``), domain errors and logging: one settings object, every error a CivicgridError
mapped in one table, log records on request, never on stdout."""

from __future__ import annotations

import inspect
import logging

import click
import pytest
from civicgrid.api.app import create_app
from civicgrid.api.cli import main, user_errors
from civicgrid.api.errors import DEFAULT_STATUS_CODES, status_for
from civicgrid.geo import errors
from civicgrid.geo.errors import CivicgridError, InvalidParameterError, StoreError
from civicgrid.geo.logs import ROOT_LOGGER, configure_logging
from civicgrid.geo.settings import PUBLIC_LAYERS, Settings, get_settings
from civicgrid.geo.store import DEFAULT_DB, default_db_path, open_store
from click.testing import CliRunner
from fastapi.testclient import TestClient


@pytest.fixture()
def clean_env(monkeypatch):
    """No ``CIVICGRID_*`` setting from the environment running the tests."""
    for name in ("DB", "MAX_CELLS", "TIANDITU_KEY", "NETWORK", "DATA_PATH", "LOG_LEVEL", "EARLIEST_TIME",
                 "LATEST_DAYS_AHEAD", "MAX_UPLOAD_MB", "PUBLIC_LAYERS", "PUBLIC_URL", "MAX_PHOTO_MB"):
        monkeypatch.delenv(f"CIVICGRID_{name}", raising=False)
    return monkeypatch


@pytest.fixture()
def empty_db(tmp_path):
    path = tmp_path / "empty.duckdb"
    open_store(path, create=True).close()
    return path


@pytest.fixture(autouse=True)
def _restore_logging():
    """Leave the ``civicgrid`` logger as the test found it (the CLI's --log-level configures it)."""
    logger = logging.getLogger(ROOT_LOGGER)
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


# --- settings ------------------------------------------------------------------------------------------------


def test_defaults(clean_env):
    s = get_settings()
    assert (s.db, s.max_cells, s.tianditu_key, s.network, s.data_path, s.log_level) == (
        DEFAULT_DB, 50_000, "", "", "", "WARNING")
    assert s.timezone == "Asia/Shanghai"
    assert default_db_path() == "civicgrid.duckdb"


def test_every_setting_is_documented():
    doc = inspect.getdoc(Settings) or ""
    for name, field in Settings.model_fields.items():
        assert f"\n{name}\n" in doc, f"setting {name} is not described in the Settings docstring"
        assert field.description, f"setting {name} has no description"


def test_environment_is_read_at_each_call(clean_env, tmp_path):
    clean_env.setenv("CIVICGRID_DB", str(tmp_path / "city.duckdb"))
    clean_env.setenv("CIVICGRID_MAX_CELLS", "1234")
    clean_env.setenv("CIVICGRID_LOG_LEVEL", "info")
    clean_env.setenv("CIVICGRID_DATA_PATH", "/srv/city-data")
    s = get_settings()
    assert (s.db, s.max_cells, s.log_level, s.data_path) == (str(tmp_path / "city.duckdb"), 1234, "INFO",
                                                           "/srv/city-data")
    assert default_db_path() == str(tmp_path / "city.duckdb")
    clean_env.setenv("CIVICGRID_MAX_CELLS", "99")
    assert get_settings().max_cells == 99


def test_tianditu_key_is_not_shown(clean_env):
    clean_env.setenv("CIVICGRID_TIANDITU_KEY", "secret-key")
    assert get_settings().tianditu_key == "secret-key"
    assert "secret-key" not in repr(get_settings())


@pytest.mark.parametrize(("name", "value"), [("MAX_CELLS", "many"), ("MAX_CELLS", "0"), ("LOG_LEVEL", "loud"),
                                             ("TIMEZONE", "Mars/Olympus")])
def test_a_bad_value_names_its_variable(clean_env, name, value):
    clean_env.setenv(f"CIVICGRID_{name}", value)
    with pytest.raises(InvalidParameterError, match=f"CIVICGRID_{name}='{value}'"):
        get_settings()


def test_a_bad_value_is_one_cli_error(clean_env, empty_db):
    clean_env.setenv("CIVICGRID_MAX_CELLS", "many")
    res = CliRunner().invoke(main, ["info", "--db", str(empty_db)])
    assert res.exit_code == 2 and "CIVICGRID_MAX_CELLS='many'" in res.output and "Traceback" not in res.output


def test_service_settings_come_from_the_environment(clean_env, empty_db, tmp_path):
    clean_env.setenv("CIVICGRID_MAX_CELLS", "777")
    clean_env.setenv("CIVICGRID_TIANDITU_KEY", "k1")
    clean_env.setenv("CIVICGRID_NETWORK", str(tmp_path / "roads.osm.pbf"))
    clean_env.setenv("CIVICGRID_MAP_CACHE_PAGES", "7")
    clean_env.setenv("CIVICGRID_API_CACHE_RESPONSES", "9")
    clean_env.setenv("CIVICGRID_PUBLIC_URL", "http://10.1.2.3:8000")
    clean_env.setenv("CIVICGRID_CACHE_DIR", str(tmp_path / "shared"))
    app = create_app(empty_db)
    assert app.state.settings == {"max_cells": 777, "tianditu_key": "k1",
                                  "patrol_network": str(tmp_path / "roads.osm.pbf"), "max_upload_mb": 200,
                                  "map_cache_pages": 7, "api_cache_responses": 9,
                                  "cache_dir": str(tmp_path / "shared"),
                                  "public_layers": frozenset(PUBLIC_LAYERS),
                                  "public_url": "http://10.1.2.3:8000", "max_photo_mb": 10}
    assert app.state.map_pages.size == 7 and app.state.api_responses.size == 9
    assert app.state.map_pages.shared == tmp_path / "shared" / "map"
    assert app.state.api_responses.shared == tmp_path / "shared" / "api"
    app = create_app(empty_db, settings={"max_cells": 5})  # an explicit value wins
    assert app.state.settings["max_cells"] == 5 and app.state.settings["tianditu_key"] == "k1"
    clean_env.delenv("CIVICGRID_NETWORK")
    assert create_app(empty_db).state.settings["patrol_network"] is None


def test_service_opens_the_db_setting(clean_env, empty_db):
    clean_env.setenv("CIVICGRID_DB", str(empty_db))
    assert create_app().state.store.path == empty_db


# --- errors ----------------------------------------------------------------------------------------------------


def _error_classes() -> list[type[Exception]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass)
            if issubclass(c, Exception) and c.__module__ == errors.__name__]


def test_every_domain_error_is_a_civicgrid_error_with_an_http_status():
    classes = _error_classes()
    assert {"ReadError", "ImportFileError", "StoreError", "StoreVersionError"} <= {c.__name__ for c in classes}
    for cls in classes:
        assert issubclass(cls, CivicgridError), cls
        if cls is not CivicgridError:
            assert cls in DEFAULT_STATUS_CODES or any(issubclass(cls, b) for b in DEFAULT_STATUS_CODES), cls
    # subclasses come before their bases, so the first match is the most specific
    table = list(DEFAULT_STATUS_CODES)
    for i, cls in enumerate(table):
        assert not any(issubclass(later, cls) and later is not cls for later in table[i + 1:]), cls


@pytest.mark.parametrize(("cls", "base", "status"), [
    (errors.ReadError, ValueError, 422), (errors.ImportFileError, ValueError, 422),
    (errors.StoreError, RuntimeError, 503), (errors.StoreVersionError, RuntimeError, 503),
])
def test_errors_keep_their_builtin_base(cls, base, status):
    assert issubclass(cls, base)
    assert status_for(cls("x")) == status


def test_cli_reports_domain_errors_only():
    @click.command()
    @click.argument("kind")
    @user_errors
    def cmd(kind: str) -> None:
        raise {"domain": InvalidParameterError("bad --thing"), "bug": ValueError("internal")}[kind]

    res = CliRunner().invoke(cmd, ["domain"])
    assert res.exit_code == 2 and res.output.strip() == "error: bad --thing"
    res = CliRunner().invoke(cmd, ["bug"])  # not a domain error: not disguised as bad input
    assert isinstance(res.exception, ValueError)


def test_store_errors_are_503_and_logged(empty_db, caplog):
    app = create_app(empty_db)

    def broken() -> None:
        msg = "cannot open the database"
        raise StoreError(msg)

    app.add_api_route("/api/broken", broken)
    with caplog.at_level(logging.ERROR, logger="civicgrid"):
        r = TestClient(app).get("/api/broken")
    assert r.status_code == 503 and r.json() == {"detail": "cannot open the database"}
    assert any(rec.levelno == logging.ERROR and "GET /api/broken -> 503 StoreError" in rec.getMessage()
               for rec in caplog.records)


# --- logging ---------------------------------------------------------------------------------------------------


def test_request_log(empty_db, caplog):
    client = TestClient(create_app(empty_db))
    with caplog.at_level(logging.INFO, logger="civicgrid"):
        assert client.get("/api/stats/areas", params={"level": "street"}).status_code == 200
        assert client.get("/api/stats/areas", params={"level": "nowhere"}).status_code == 422
    lines = [r.getMessage() for r in caplog.records if r.name == "civicgrid.api.app"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /api/stats/areas 200 ") and lines[0].endswith(" ms")
    assert lines[1].startswith("GET /api/stats/areas 422 ")


def test_no_request_log_below_info(empty_db, caplog):
    client = TestClient(create_app(empty_db))
    with caplog.at_level(logging.WARNING, logger="civicgrid"):
        client.get("/api/stats/areas", params={"level": "street"})
    assert not [r for r in caplog.records if r.name == "civicgrid.api.app"]


def test_log_level_option_writes_to_stderr_only(clean_env, empty_db, tmp_path):
    f = tmp_path / "areas.csv"
    f.write_text("code,name\n1,x\n", encoding="utf-8")
    runner = CliRunner()
    quiet = runner.invoke(main, ["info", "--db", str(empty_db)])
    assert quiet.exit_code == 0 and " INFO " not in quiet.output and not quiet.stderr
    res = runner.invoke(main, ["--log-level", "info", "import", "grids", str(f), "--db", str(empty_db), "--quiet"])
    assert res.exit_code == 2  # no polygons: the import fails, and its start was logged
    assert "INFO civicgrid.geo.importing: import: reading" in res.stderr
    assert " INFO " not in res.stdout
    clean_env.setenv("CIVICGRID_LOG_LEVEL", "debug")  # the option's default comes from the setting
    res = runner.invoke(main, ["info", "--db", str(empty_db)])
    assert res.exit_code == 0 and logging.getLogger(ROOT_LOGGER).level == logging.DEBUG


def test_configure_logging_replaces_its_handler():
    configure_logging("info")
    configure_logging("debug")
    logger = logging.getLogger(ROOT_LOGGER)
    assert logger.level == logging.DEBUG
    assert len([h for h in logger.handlers if type(h).__name__ == "_StderrHandler"]) == 1


def test_library_logs_nothing_without_configuration(empty_db, capsys):
    open_store(empty_db).sql("SELECT 1")
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
