"""civicgrid's settings: one object, read from ``CIVICGRID_*`` environment variables.

Every setting has a default and can be set in the environment with the prefix ``CIVICGRID_`` and the field's
name in upper case (``CIVICGRID_DB``, ``CIVICGRID_MAX_CELLS``, ``CIVICGRID_TIANDITU_KEY``, ...). Command-line
options and function arguments given explicitly win over these values; the service's settings
(``app.state.settings``) start from them.

Examples
--------
>>> from civicgrid.geo.settings import get_settings
>>> get_settings().max_cells  # doctest: +SKIP
50000
"""

from __future__ import annotations

from civicgrid.geo.errors import InvalidParameterError
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Environment variables of the settings start with this.
ENV_PREFIX = "CIVICGRID_"

#: Log levels accepted by ``log_level`` and ``civicgrid --log-level``, most verbose last.
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


class Settings(BaseSettings):
    """civicgrid's settings (environment variables ``CIVICGRID_<NAME>``; see the module docstring).

    Attributes
    ----------
    db
        The database file used when none is given (``--db``, ``open_store()`` without a path, the service).
    max_cells
        The most H3 cells one heatmap, hotspot or map request of the service may return; a finer view gets
        HTTP 422 naming the resolution that fits (``civicgrid serve --max-cells``).
    tianditu_key
        The key of the Tianditu (天地图) tile service, needed by the ``tianditu`` basemap of the maps (without
        it the map notes that a key is missing).
    network
        A road network file for patrol plans' travel times (``.osm.pbf``, ``.graphml`` or a line layer);
        empty: straight-line times (``civicgrid serve --network``).
    data_path
        The data folder of a store whose catalog is in PostgreSQL (``db`` = ``postgresql://...``): a folder every
        machine sharing the store mounts at the same path. A store with a SQLite catalog keeps its data beside
        the catalog file (``<db>.files/``) and ignores this.
    maintain_hours
        Hours between the store maintenance runs of ``civicgrid serve`` (:func:`civicgrid.geo.store_files.maintain`;
        the first 10 minutes after the start); 0 turns them off (e.g. when cron runs ``civicgrid maintain``).
    log_level
        Level of the log records civicgrid writes to standard error (``civicgrid --log-level``): CRITICAL,
        ERROR, WARNING, INFO (store writes, imports, requests) or DEBUG.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_assignment=True)

    db: str = Field(default="civicgrid.duckdb",
                    description="store used when none is given: a path, or postgresql://user@host/dbname")
    max_cells: int = Field(default=50_000, ge=1, description="most H3 cells one service request may return")
    tianditu_key: str = Field(default="", repr=False,
                              description="Tianditu (天地图) tile key, for the tianditu basemap")
    network: str = Field(default="", description="road network file for patrol travel times; empty: straight lines")
    data_path: str = Field(default="", description="data folder of a store with a PostgreSQL catalog")
    maintain_hours: float = Field(default=24, ge=0, le=24 * 365,
                                  description="hours between the service's runs of `civicgrid maintain` (0: never)")
    log_level: str = Field(default="WARNING", description=f"log level: {', '.join(LOG_LEVELS)}")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            msg = f"log level must be one of {', '.join(LOG_LEVELS)}, got {value!r}"
            raise ValueError(msg)
        return level

    def service_settings(self) -> dict[str, object]:
        """The settings the service reads per request (``app.state.settings``): ``max_cells``,
        ``tianditu_key`` and ``patrol_network`` (None when no network is set)."""
        return {"max_cells": self.max_cells, "tianditu_key": self.tianditu_key,
                "patrol_network": self.network or None}


def get_settings() -> Settings:
    """The settings as the environment gives them now (read again on each call, so a changed variable counts).

    Raises
    ------
    InvalidParameterError
        A ``CIVICGRID_*`` variable holds a value its setting cannot take (e.g. ``CIVICGRID_MAX_CELLS=many``);
        the message names the variable.
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}={e.get('input')!r}: {e['msg']}"
                             for e in exc.errors())
        msg = f"bad setting in the environment: {problems}"
        raise InvalidParameterError(msg) from None
