"""``civicgrid serve``: the web service (API, map pages and offline docs) under uvicorn."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import click
from civicgrid.api.cli import db_option, main, user_errors
from civicgrid.geo.logs import ROOT_LOGGER, configure_logging
from civicgrid.geo.settings import get_settings

#: Seconds a worker process may take to answer uvicorn's health check before it is killed and started again.
#: uvicorn's 5 s is shorter than a worker's start (imports, the store opened) on a busy 2-core machine: at a load
#: average of 20 every worker was killed before it served, again and again, and the service never answered;
#: a busy worker killed in the middle of a write fails the writes of every worker (see geo.group_commit).
WORKER_HEALTHCHECK_S = 120


@main.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on (0.0.0.0: every interface of the machine)")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port")
@click.option("--max-cells", type=click.IntRange(min=1), default=lambda: get_settings().max_cells,
              show_default="$CIVICGRID_MAX_CELLS, else 50000",
              help="most H3 cells one heatmap, hotspot or map request may return (finer views get 422 with the "
                   "resolution that fits)")
@click.option("--network", type=click.Path(exists=True, dir_okay=False),
              help="road network for patrol plans: a local OpenStreetMap extract (.osm.pbf) or a line layer "
                   "(GeoJSON, Shapefile, GeoPackage); default: $CIVICGRID_NETWORK, else the store's own street network "
                   "(table roads: the demo city has one), else straight-line times")
@click.option("--maintain-hours", type=click.FloatRange(min=0), default=lambda: get_settings().maintain_hours,
              show_default="$CIVICGRID_MAINTAIN_HOURS, else 24",
              help="hours between store maintenance runs (merge small files, expire old snapshots, delete unused "
                   "files; the first 10 minutes after the start); 0: never (run `civicgrid maintain` yourself)")
@click.option("--workers", type=click.IntRange(1, 64), default=lambda: os.cpu_count() or 1,
              show_default="the machine's number of cores",
              help="service processes sharing the port (each answers requests; writes from all of them are safe)")
@click.option("--warm/--no-warm", default=True, show_default=True,
              help="compute the default views (map, heatmaps, hotspots, KPIs, layers) before accepting connections, "
                   "so that the first callers do not queue behind cold computations; with one worker, also the "
                   "sites ranked by risk (its models' fit) just after")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="uvicorn's log level (server start, access log); civicgrid's own records, "
                                      "with each request's time: civicgrid --log-level info serve ...")
@user_errors
def serve(db: str, host, port, max_cells, network, maintain_hours, workers, warm, log_level):
    """Start the web service on a database: the API under /api, the map at /map, API docs at /docs.

    Imports, case work and notebooks use the store while it serves: each request
    sees every write committed before it. The worker processes share their cached
    pages and answers (per store version) in a temporary folder removed when the
    service stops; with --warm (default) the default views are computed before the
    service accepts connections. Every --maintain-hours the service
    compacts the store (civicgrid maintain). Every page works without internet
    (Leaflet, plugins and swagger-ui are served by the app).

    \b
    Examples:
      civicgrid serve --db demo.duckdb
      civicgrid serve --db city.duckdb --host 0.0.0.0 --port 8080
      civicgrid serve --db city.duckdb --network city-roads.osm.pbf
      civicgrid serve --db postgresql://civicgrid@dbhost/city --workers 2 --host 0.0.0.0
    then open http://127.0.0.1:8000/map (or /map?lang=en) and /docs.
    """
    import uvicorn
    from civicgrid.api.app import WARM_LATER_VIEWS, create_app, warm_app
    from civicgrid.geo.aggregate import clear_cache
    from civicgrid.geo.group_commit import SHARE_ENV
    from civicgrid.geo.store import Store

    Store(db).sql("SELECT 1")  # open the store now: a wrong --db fails here, not on the first request
    settings: dict[str, object] = {"max_cells": max_cells}
    if network:
        settings["patrol_network"] = network
    # the worker processes hand their writes to one of them, which commits them together (geo.group_commit)
    os.environ.setdefault(SHARE_ENV, "1")
    own_cache = None
    if workers > 1 and not get_settings().cache_dir:  # the workers share their answers in a folder of this run
        _remove_dead_cache_folders()
        own_cache = tempfile.mkdtemp(prefix=f"{CACHE_PREFIX}{os.getpid()}-")
        os.environ["CIVICGRID_CACHE_DIR"] = own_cache
    try:
        if workers > 1:  # each worker process builds the app from the settings of its environment
            level = logging.getLevelName(logging.getLogger(ROOT_LOGGER).getEffectiveLevel())
            os.environ.update({"CIVICGRID_DB": str(db), "CIVICGRID_MAX_CELLS": str(max_cells),
                               "CIVICGRID_LOG_LEVEL": level,  # civicgrid --log-level, for worker_app
                               **({"CIVICGRID_NETWORK": str(network)} if network else {})})
            if warm:  # into the shared folder, read by every worker on its first requests
                warm_app(create_app(db, settings=settings))
                clear_cache()  # this process only warms: its own copies of the aggregations are not needed
            app: object = "civicgrid.api.commands.serve:worker_app"
        else:
            app = create_app(db, settings=settings)
            if warm:
                warm_app(app)
                # once the server has started (not when the app is only built): the risk models' fit, in a thread
                app.router.add_event_handler("startup", lambda: threading.Thread(
                    target=warm_app, args=(app,), kwargs={"views": WARM_LATER_VIEWS}, daemon=True,
                    name="civicgrid-warm-later").start())
        if maintain_hours:
            from civicgrid.geo.store_files import maintain_periodically

            maintain_periodically(db, every_hours=maintain_hours)
        click.echo(f"civicgrid serving {db} on http://{host}:{port}  (map: /map, API docs: /docs)")
        # civicgrid's request log (INFO, with each request's time) replaces uvicorn's access log when it is on
        requests_logged = logging.getLogger("civicgrid.api.app").isEnabledFor(logging.INFO)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=not requests_logged,
                    **({"workers": workers, "factory": True, "timeout_worker_healthcheck": WORKER_HEALTHCHECK_S}
                       if workers > 1 else {}))
    finally:
        if own_cache is not None:
            shutil.rmtree(own_cache, ignore_errors=True)
            os.environ.pop("CIVICGRID_CACHE_DIR", None)


def worker_app():
    """The app of one of ``civicgrid serve``'s worker processes (uvicorn's factory): civicgrid's log records written
    at the level the command was given (``civicgrid --log-level``, passed in ``CIVICGRID_LOG_LEVEL``) — a worker is
    a new process, without the command's logging: its requests and its 500s' tracebacks went nowhere — then the
    app of the store of its environment."""
    from civicgrid.api.app import create_app

    configure_logging(get_settings().log_level)
    return create_app()


#: The name of the folders ``civicgrid serve`` shares its workers' answers in, followed by its process id.
CACHE_PREFIX = "civicgrid-serve-"


def _remove_dead_cache_folders() -> None:
    """Remove the answer folders of services that were killed before they could remove their own."""
    for folder in Path(tempfile.gettempdir()).glob(f"{CACHE_PREFIX}*-*"):
        pid = folder.name[len(CACHE_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not folder.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # that service is gone
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            continue
