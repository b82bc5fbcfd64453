"""The ``civicgrid`` command line: the main group, import, demo and info; other commands live in ``api/commands/``."""

from __future__ import annotations

import functools
import logging
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from civicgrid.geo.errors import CivicgridError
from civicgrid.geo.logs import configure_logging
from civicgrid.geo.settings import LOG_LEVELS, get_settings
from civicgrid.geo.store import DEFAULT_DB, default_db_path

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger(__name__)

_DB_HELP = f"database file (default: $CIVICGRID_DB or ./{DEFAULT_DB})"


def db_option(func: F) -> F:
    """Decorate a command with ``--db`` (default: the ``db`` setting, ``$CIVICGRID_DB``)."""
    return click.option("--db", type=click.Path(dir_okay=False), default=default_db_path,
                        show_default=False, help=_DB_HELP)(func)


def _parse_maps(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        if "=" not in item:
            msg = f"--map takes FIELD=COLUMN, got {item!r}"
            raise click.BadParameter(msg)
        key, col = item.split("=", 1)
        out[key.strip()] = col.strip()
    return out


#: The fields each import maps to columns (``--FIELD COLUMN`` or ``--map FIELD=COLUMN``), as the importers name
#: them (grids.areas.AREA_FIELDS / GRID_FIELDS, sites.frame.SITE_FIELDS, sites.events.EVENT_FIELDS,
#: sites.inspections.INSPECTION_FIELDS; a test keeps them equal), and an example of ``--map`` for each.
#: Written out here so that ``--help`` does not import the importers (geopandas costs ~1 s).
IMPORT_FIELDS = {
    "areas": (["code", "name", "parent"], "name=街道名称"),
    "grids": (["code", "name", "parent", "leader", "leader_phone", "households"], "leader=网格长"),
    "sites": (["id", "lat", "lng", "name", "address", "category", "unit", "contact", "phone", "active"],
              "address=详细地址"),
    "events": (["id", "lat", "lng", "time", "type", "site", "text", "status", "inspection", "rectified", "closed"],
               "closed=办结时间"),
    "inspections": (["id", "lat", "lng", "site", "time", "inspector", "result"], "inspector=检查人"),
}

#: What the column of a field holds, for the ``--FIELD`` flags' help.
_FIELD_HELP = {"id": "record id (used to skip records already imported)", "lat": "latitude", "lng": "longitude",
               "time": "time", "type": "problem type (code, or 大类 / 小类 name)", "site": "site (id or name)",
               "text": "free text", "code": "code", "name": "name", "parent": "parent area's code",
               "category": "site category (code, Chinese or English name)",
               "result": "result (符合/不符合 or a number of problems)"}


def _import_options(layer: str, flags: tuple[str, ...], *, coordinates: bool = True, times: bool = False):
    """Decorate the import command of ``layer`` with the shared options and the column flags it takes."""
    fields, example = IMPORT_FIELDS[layer]

    def deco(func):
        opts = [
            click.argument("file", type=click.Path(exists=False, dir_okay=False)),
            db_option,
            click.option("--map", "maps", multiple=True, metavar="FIELD=COLUMN",
                         help=f"map a field to a column, e.g. --map {example} (repeatable); fields: "
                              f"{', '.join(fields)}"),
            click.option("--encoding", help="text encoding of CSV / shapefile attributes (default: detected)"),
            click.option("--layer", "layer_name",
                         help="layer inside a GeoPackage, or shapefile inside a zip (needed when it holds several)"),
            click.option("--report", "report_path", type=click.Path(dir_okay=False),
                         help="also write the import report as JSON to this file"),
            click.option("--quiet", is_flag=True, help="no progress bar"),
        ]
        if coordinates:
            opts += [
                click.option("--crs", help="coordinates' system: wgs84, gcj02, bd09, cgcs2000 or EPSG:NNNN "
                                           "(default: the file's .prj, else WGS84 with a warning)"),
            ]
        if times:
            opts.append(click.option("--tz", default="Asia/Shanghai", show_default=True,
                                     help="time zone of times written without an offset"))
        for name in flags:
            opts.append(click.option(f"--{name}", f"col_{name}", metavar="COLUMN",
                                     help=f"column holding the {_FIELD_HELP[name]}"))
        for opt in reversed(opts):
            func = opt(func)
        return func

    return deco


def _mapping(kwargs: dict, maps: tuple[str, ...]) -> dict[str, str]:
    mapping = {k[4:]: v for k, v in kwargs.items() if k.startswith("col_") and v}
    mapping.update(_parse_maps(maps))
    return mapping


def _finish(report, report_path) -> None:
    click.echo(report.summary())
    if report_path:
        report.write_json(report_path)
        click.echo(f"report written to {report_path}")


def pad(text: str, width: int) -> str:
    """Left-align ``text`` in ``width`` terminal columns (Chinese characters take two), cut when longer."""
    out, used = "", 0
    for ch in str(text):
        w = 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        if used + w > width:
            break
        out, used = out + ch, used + w
    return out + " " * (width - used)


def user_errors(func: F) -> F:
    """Print civicgrid's domain errors (a :class:`~civicgrid.geo.errors.CivicgridError`: bad input, unknown
    code, illegal transition, no database...) and a missing file as one ``error:`` line; exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (CivicgridError, FileNotFoundError) as exc:
            logger.debug("%s failed", func.__name__, exc_info=True)
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return cast(F, wrapper)


def _default_log_level() -> str:
    """The ``log_level`` setting (``$CIVICGRID_LOG_LEVEL``), WARNING when it is not a level."""
    try:
        return get_settings().log_level
    except CivicgridError:
        return "WARNING"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="civicgrid")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default=_default_log_level,
              show_default="$CIVICGRID_LOG_LEVEL, else WARNING",
              help="write civicgrid's log records of this level and above to standard error (INFO: store writes, "
                   "imports with their counts, the service's requests)")
def main(log_level: str) -> None:
    """civicgrid: geospatial analytics for civilized-city inspection campaigns.

    One DuckDB file holds the areas, micro-grids, the 38 site categories, the
    sample frame, complaints, inspections and hits. Start with `civicgrid demo`
    for a ready demo city, or load your own files with `civicgrid import`.
    """
    configure_logging(log_level)
    try:
        get_settings()  # a CIVICGRID_* variable with a wrong value is named before any command runs
    except CivicgridError as exc:
        raise click.UsageError(str(exc)) from None


@main.group(name="import")
def import_() -> None:
    """Load a city's files (CSV, XLSX, GeoJSON, GeoPackage, Shapefile, GeoParquet, Parquet).

    Each import runs in one transaction, skips rows already loaded, and prints
    a report: rows read = loaded + duplicates + rejected, with the row, field
    and reason of every rejected row.
    """


@import_.command(name="areas")
@_import_options("areas", ("code", "name", "parent"))
@click.option("--level", type=click.Choice(["district", "street", "community"]), required=True,
              help="level of the areas in FILE")
@user_errors
def import_areas_cmd(file, db: str, maps, encoding, layer_name, report_path, quiet, crs, level, **cols):
    """Import district, street (街道) or community (社区) polygons."""
    from civicgrid.grids.areas import import_areas

    report = import_areas(file, db=db, level=level, mapping=_mapping(cols, maps), crs=crs, encoding=encoding,
                          layer=layer_name, progress=not quiet)
    _finish(report, report_path)


@import_.command(name="grids")
@_import_options("grids", ("code", "name", "parent"))
@user_errors
def import_grids_cmd(file, db: str, maps, encoding, layer_name, report_path, quiet, crs, **cols):
    """Import micro-grid (微网格) polygons.

    --parent names the community code column; without it the containing
    community is used. Leader and households: --map leader=网格长
    --map leader_phone=电话 --map households=户数.
    """
    from civicgrid.grids.areas import import_grids

    report = import_grids(file, db=db, mapping=_mapping(cols, maps), crs=crs, encoding=encoding,
                          layer=layer_name, progress=not quiet)
    _finish(report, report_path)


@import_.command(name="sites")
@_import_options("sites", ("id", "name", "category", "lat", "lng"))
@click.option("--point", metavar="COLUMN", help='one text column with "(lat, lon)" or "lat,lon"')
@click.option("--sheet", help="sheet name of an XLSX file (default: the first)")
@user_errors
def import_sites_cmd(file, db: str, maps, encoding, layer_name, report_path, quiet, crs, point, sheet, **cols):
    """Import the sample frame (样本框 / 点位信息表).

    Fields: --name, --category (code, Chinese or English name), --id, and
    --map address=… unit=… contact=… phone=… active=….
    """
    from civicgrid.sites.frame import import_sites

    report = import_sites(file, db=db, mapping=_mapping(cols, maps), point=point, crs=crs, encoding=encoding,
                          layer=layer_name, sheet=sheet, progress=not quiet)
    _finish(report, report_path)


@import_.command(name="events")
@_import_options("events", ("id", "lat", "lng", "time", "type", "site", "text"), times=True)
@click.option("--source", type=click.Choice(["complaint", "inspection"]), default="complaint", show_default=True,
              help="complaints (e.g. the 12345 hotline) or inspection hits")
@click.option("--point", metavar="COLUMN", help='one text column with "(lat, lon)" or "lat,lon"')
@click.option("--sheet", help="sheet name of an XLSX file (default: the first)")
@user_errors
def import_events_cmd(file, db: str, maps, encoding, layer_name, report_path, quiet, crs, tz, source, point, sheet,
                      **cols):
    """Import complaints or inspection hits.

    Fields: --time (required), --lat/--lng or --point, --id, --type (problem
    type code or name, 大类 or 小类), --site, --text, and --map status=…
    inspection=… rectified=… closed=… (when the problem was fixed and the
    case closed, e.g. --map closed=办结时间; these give the cases their
    rectification and closure times).
    """
    from civicgrid.sites.events import import_events

    report = import_events(file, db=db, source=source, mapping=_mapping(cols, maps), point=point, crs=crs, tz=tz,
                           encoding=encoding, layer=layer_name, sheet=sheet, progress=not quiet)
    _finish(report, report_path)


@import_.command(name="inspections")
@_import_options("inspections", ("id", "site", "time", "result", "lat", "lng"), times=True)
@click.option("--point", metavar="COLUMN", help='one text column with "(lat, lon)" or "lat,lon"')
@click.option("--sheet", help="sheet name of an XLSX file (default: the first)")
@user_errors
def import_inspections_cmd(file, db: str, maps, encoding, layer_name, report_path, quiet, crs, tz, point, sheet,
                           **cols):
    """Import inspection visits: --site, --time, --result (符合/不符合 or a number of problems).

    The inspector: --map inspector=检查人. Visits without coordinates take their site's location.
    """
    from civicgrid.sites.inspections import import_inspections

    report = import_inspections(file, db=db, mapping=_mapping(cols, maps), point=point, crs=crs, tz=tz,
                                encoding=encoding, layer=layer_name, sheet=sheet, progress=not quiet)
    _finish(report, report_path)


@main.command()
@db_option
@click.option("--events", "n_events", type=click.IntRange(min=0), default=200_000, show_default=True,
              help="number of complaints and inspection hits to generate (up to 10,000,000 for benchmarks)")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed (same seed, same city)")
@click.option("--force", is_flag=True, help="replace an existing database file")
@click.option("--quiet", is_flag=True, help="no progress bar")
@user_errors
def demo(db: str, n_events, seed, force, quiet):
    """Build the built-in demo city (示范市): areas, micro-grids, sample frame, two years of events."""
    from civicgrid.data.demo import build_demo

    path = Path(db)
    if path.exists():
        if not force:
            msg = f"{path} exists; use --force to replace it with the demo city"
            raise click.UsageError(msg)
        path.unlink()
    summary = build_demo(path, events=n_events, seed=seed, progress=not quiet)
    click.echo(f"demo city written to {path}")
    for key, value in summary.items():
        click.echo(f"  {key:<16} {value:>12,}" if isinstance(value, int) else f"  {key:<16} {value}")


@main.command()
@db_option
@user_errors
def info(db: str):
    """Show what a database holds: schema version, layers and row counts."""
    from civicgrid.geo.store import Store

    store = Store(db)
    click.echo(f"{store.path}  (schema version {store.meta('schema_version')}, time zone {store.meta('timezone')})")
    for table in ("areas", "grids", "site_categories", "problem_types", "sites", "inspections", "events", "imports"):
        n = store.sql(f"SELECT count(*) AS n FROM {table}")["n"].iloc[0]
        click.echo(f"  {table:<16} {n:>12,}")
    levels = store.sql("SELECT level, count(*) AS n FROM areas GROUP BY level ORDER BY n")
    if not levels.empty:
        click.echo("  areas by level: " + ", ".join(f"{r.level} {r.n}" for r in levels.itertuples()))


# The commands of each capability (one module each under api/commands/) register on `main` when imported;
# they import `main` from here, so they come last.
from civicgrid.api.commands import cases, patrol, report, risk, serve, simulate  # noqa: E402

#: The modules adding commands to :func:`main`.
COMMAND_MODULES = (serve, risk, patrol, cases, report, simulate)

if __name__ == "__main__":  # pragma: no cover
    # `python -m civicgrid.api.cli`: the commands registered on the group of civicgrid.api.cli, not on this copy
    from civicgrid.api import cli

    cli.main()
