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

import os
import zoneinfo
from datetime import date

from civicgrid.geo.errors import InvalidParameterError
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Environment variables of the settings start with this.
ENV_PREFIX = "CIVICGRID_"

#: The reference layers ``public_layers`` may name (all public by default).
PUBLIC_LAYERS = ("areas", "grids", "grid-leaders", "sites", "categories", "problem-types")

#: Log levels accepted by ``log_level`` and ``civicgrid --log-level``, most verbose last.
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def known_zone(name: str) -> str:
    """``name`` without surrounding blanks, if it is a time zone the machine knows (an IANA name).

    Raises
    ------
    InvalidParameterError
        An unknown zone (a :class:`ValueError`, so that the settings refuse it too).
    """
    try:
        zoneinfo.ZoneInfo(name.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"unknown time zone {name!r}: give an IANA name such as Asia/Shanghai or America/Los_Angeles"
        raise InvalidParameterError(msg) from exc
    return name.strip()


class Settings(BaseSettings):
    """civicgrid's settings (environment variables ``CIVICGRID_<NAME>``; see the module docstring).

    Attributes
    ----------
    timezone
        The time zone of a store created from now on (default ``Asia/Shanghai``, all of China): a store keeps
        its times as wall-clock times of its zone (``meta.timezone``), so that days, months and hours of the
        heatmaps and KPIs are the city's own. Set it before the first import of a city elsewhere (e.g.
        ``CIVICGRID_TIMEZONE=America/Los_Angeles``); an existing store keeps the zone it was created with.
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
    sqlite_short_sleeps
        Whether the SQLite inside DuckDB's ``sqlite_scanner`` sleeps what it is asked (default true). Its PyPI build
        rounds every sleep up to a whole second, so a SQLite catalog's reads beside a writer stall for a second
        now and then; civicgrid gives it short sleeps (``civicgrid.geo.store.short_sleeps``). False keeps the
        extension as it is built. Read once per process, when the extension is first loaded.
    earliest_time
        The earliest plausible time a user may give or store (a date, default ``1990-01-01``): a case, a
        transition, ``start``, ``end``, ``as_of`` or a report period before it is refused (HTTP 422 naming the
        window) instead of being stored as year 1 or 1677 and turning one outlier into thousands of empty
        monthly slices.
    latest_days_ahead
        How far past now a time may lie, in days (0..36500, default 366): the plausible window's other end.
    max_upload_mb
        The largest file ``POST /api/imports/{layer}`` accepts, in MB (1..100000, default 200); a larger upload
        is refused (HTTP 413) while it streams, before it fills the disk.
    map_cache_pages
        Rendered ``/map`` pages each service process keeps per view, layers shown and store version (0..1024, default
        32; 0: render every request). A committed write is a new version: no page outlives the data it shows.
    api_cache_responses
        Answers of the read API (heatmaps, hotspots, KPIs, layers, lists) each service process keeps per request,
        caller's role and store version (0..100000, default 256; 0: compute every request). A committed write
        is a new version: no answer outlives the data it shows; KPIs are kept only while "now" cannot change
        them.
    cache_dir
        A folder the processes of one service share their cached ``/map`` pages and API answers in (per view,
        caller's role and store version, like each process's own caches): an answer computed by one worker is
        read by the others instead of being computed again, and concurrent misses of one answer in several
        workers compute it once. Empty (default): each process keeps its own. ``civicgrid serve`` makes one per
        run (in the system's temporary folder) and removes it when it stops.
    public_layers
        The reference layers served without a token, comma-separated, from ``areas``, ``grids``,
        ``grid-leaders`` (the micro-grid leaders' names and phones, 网格员公示, on ``/api/layers/grids`` and the
        map's grid popups), ``sites`` (the sample frame, without its contacts: a site's ``contact`` and ``phone``
        always need a ``viewer`` token), ``categories`` and ``problem-types``. Default: all of them; a layer left
        out needs a ``viewer`` token (HTTP 401 without one), and grid leaders left out are blanked for anonymous
        callers.
    public_url
        The address phones reach the service at (e.g. ``http://10.1.2.3:8000``), written into the inspectors'
        field links and their QR codes by the plan exports (``civicgrid patrol``, ``/api/patrols/{id}/export``);
        empty: the service uses the address a request came to, and the CLI lists the links without QR codes.
    max_photo_mb
        The largest photo a visit recorded on the field page may carry, in MB (default 10).
    import_threads
        The threads of an events import: those it prepares its batches on (parsing, checks, H3, grids and areas)
        while the batch before is staged, and those it then makes the new events' cases, audit rows and rebound
        links on. 0 for none (batch after batch, then the cases file after file); -1 (default) for batches
        prepared on 2 threads when the machine is not busy (its load average over the last minute below its
        cores) and on none otherwise, and cases made on a thread per core, up to 4; N for N of each. What is
        stored is the same either way; on a busy machine the preparing threads cost more than they bring.
    import_nice
        The CPU priority (Unix nice value, 0–19) ``civicgrid import`` lowers itself to (default 10), so that an
        import running beside the service leaves the cores to the inspectors' requests first; on an idle
        machine it runs as fast as at 0. 0 leaves the priority as it was started with.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_assignment=True)

    timezone: str = Field(default="Asia/Shanghai",
                          description="time zone of a store created from now on (its times are wall-clock times of it)")
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
    sqlite_short_sleeps: bool = Field(default=True, description="give the SQLite catalog's SQLite short sleeps "
                                                                "instead of whole seconds")
    earliest_time: date = Field(default=date(1990, 1, 1), ge=date(1900, 1, 1), le=date(2200, 1, 1),
                                description="earliest plausible time of a case, an event, a filter or a report")
    latest_days_ahead: int = Field(default=366, ge=0, le=36_500,
                                   description="how many days past now a time may lie (0..36500)")
    max_upload_mb: int = Field(default=200, ge=1, le=100_000, description="largest file upload, MB (1..100000)")
    map_cache_pages: int = Field(default=32, ge=0, le=1024,
                                 description="rendered /map pages kept per view and store version (0: none)")
    api_cache_responses: int = Field(default=256, ge=0, le=100_000,
                                     description="read API answers kept per request and store version (0: none)")
    cache_dir: str = Field(default="", description="folder the service's processes share cached answers in")
    public_layers: str = Field(default=",".join(PUBLIC_LAYERS),
                               description=f"layers served without a token: any of {', '.join(PUBLIC_LAYERS)}")
    public_url: str = Field(default="", description="address phones reach the service at, for the field links")
    max_photo_mb: float = Field(default=10, gt=0, le=100, description="largest photo of a field visit, MB")
    import_threads: int = Field(default=-1, ge=-1, le=32,
                                description="threads an events import prepares its batches and makes its cases on "
                                            "(0: none; -1: batches on 2 when the machine is not busy, cases on a "
                                            "thread per core up to 4)")
    import_nice: int = Field(default=10, ge=0, le=19,
                             description="CPU priority (nice, 0..19) `civicgrid import` lowers itself to "
                                         "(0: as started)")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            msg = f"log level must be one of {', '.join(LOG_LEVELS)}, got {value!r}"
            raise ValueError(msg)
        return level

    @field_validator("public_layers")
    @classmethod
    def _known_layers(cls, value: str) -> str:
        names = [v.strip().lower() for v in value.split(",") if v.strip()]
        unknown = [n for n in names if n not in PUBLIC_LAYERS]
        if unknown:
            msg = f"public layers must be among {', '.join(PUBLIC_LAYERS)}, got {', '.join(map(repr, unknown))}"
            raise ValueError(msg)
        return ",".join(dict.fromkeys(names))

    def public_layer_set(self) -> frozenset[str]:
        """The layers of ``public_layers`` as a set."""
        return frozenset(v for v in self.public_layers.split(",") if v)

    def service_settings(self) -> dict[str, object]:
        """The settings the service reads per request (``app.state.settings``): ``max_cells``,
        ``tianditu_key``, ``patrol_network`` (None when no network is set), ``max_upload_mb``,
        ``map_cache_pages``, ``api_cache_responses``, ``cache_dir`` (None when unset), ``public_layers`` (a set),
        ``public_url`` and ``max_photo_mb``."""
        return {"max_cells": self.max_cells, "tianditu_key": self.tianditu_key,
                "patrol_network": self.network or None, "max_upload_mb": self.max_upload_mb,
                "map_cache_pages": self.map_cache_pages, "api_cache_responses": self.api_cache_responses,
                "cache_dir": self.cache_dir or None,
                "public_layers": self.public_layer_set(),
                "public_url": self.public_url, "max_photo_mb": self.max_photo_mb}


def get_settings() -> Settings:
    """The settings as the environment gives them now (read again on each call, so a changed variable counts).

    Raises
    ------
    InvalidParameterError
        A ``CIVICGRID_*`` variable holds a value its setting cannot take (e.g. ``CIVICGRID_MAX_CELLS=many``);
        the message names the variable.
    """
    # parsing the settings costs ~10 ms: done again only when a CIVICGRID_* variable changed (a copy is returned,
    # so that a caller's change of it stays its own)
    key = tuple(sorted((k.upper(), v) for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)))
    parsed = _PARSED.get(key)
    if parsed is not None:
        return parsed.model_copy()
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}={e.get('input')!r}: {e['msg']}"
                             for e in exc.errors())
        msg = f"bad setting in the environment: {problems}"
        raise InvalidParameterError(msg) from None
    _PARSED.clear()  # one entry: the settings of the environment as it is now
    _PARSED[key] = settings
    return settings.model_copy()


#: The settings last parsed, by the CIVICGRID_* variables they were parsed from.
_PARSED: dict[tuple, Settings] = {}
