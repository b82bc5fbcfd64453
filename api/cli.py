"""The ``civicgrid`` command line: the main group, import, demo and info; other commands live in ``api/commands/``."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from civicgrid.geo.errors import CivicgridError
from civicgrid.geo.import_report import ImportReport
from civicgrid.geo.logs import configure_logging
from civicgrid.geo.settings import LOG_LEVELS, get_settings
from civicgrid.geo.store import DEFAULT_DB, default_db_path
from civicgrid.sites.importers import FIELD_HELP, IMPORTERS, OPTIONS, Importer

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


def _finish(report: ImportReport, report_path: str | None) -> None:
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

    One store (--db city.duckdb: a DuckLake catalog with its data folder
    city.duckdb.files beside it, or a PostgreSQL catalog for an office server)
    holds the areas, micro-grids, the 38 site categories, the sample frame,
    complaints, cases, inspections and hits. Start with `civicgrid demo` for a
    ready demo city, or load your own files with `civicgrid import`.
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
    and reason of every rejected row. It runs at a lower CPU priority
    ($CIVICGRID_IMPORT_NICE, default 10), leaving the cores to a service's
    requests first.
    """
    lower_priority(get_settings().import_nice)


def lower_priority(nice: int) -> int:
    """Lower this process's CPU priority to the Unix nice value ``nice`` (never raise it: a process started
    nicer stays so); return the nice value it runs at.

    On Linux the nice value belongs to each thread and a new thread takes its creator's: every thread the
    process has (the libraries' own, started when they were imported: OpenBLAS's, Arrow's allocator's) is
    lowered, and called before the command opens the store, it holds for every thread the command makes
    (DuckDB's, the import's)."""
    if not hasattr(os, "getpriority"):  # not a Unix
        return 0
    now = os.getpriority(os.PRIO_PROCESS, 0)
    if nice <= now:
        return now
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:  # e.g. a container's seccomp profile refusing it: run as started
        logger.warning("the import's CPU priority could not be lowered to nice %d: %s", nice, exc)
        return now
    tasks = Path("/proc/self/task")
    for tid in (int(t.name) for t in tasks.iterdir()) if tasks.is_dir() else ():
        with contextlib.suppress(OSError):  # a thread that has ended meanwhile, or one already nicer
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
    return nice


def _option(name: str) -> Callable[[F], F]:
    """The ``--NAME`` option of the importer option ``name`` (:data:`civicgrid.sites.importers.OPTIONS`)."""
    opt = OPTIONS[name]
    if opt.flag:
        return click.option(f"--{name.replace('_', '-')}", f"opt_{name}", is_flag=True, default=None, help=opt.help)
    kwargs: dict[str, Any] = {"help": opt.help, "required": opt.required, "metavar": opt.metavar}
    if opt.choices:
        kwargs["type"] = click.Choice(opt.choices)
    if opt.default is not None:
        kwargs.update(default=opt.default, show_default=True)
    return click.option(f"--{name.replace('_', '-')}", f"opt_{name}", **kwargs)


def import_command(importer: Importer) -> click.Command:
    """The ``civicgrid import LAYER`` command of ``importer``: FILE, ``--db``, a ``--FIELD COLUMN`` flag per field
    of :attr:`~civicgrid.sites.importers.Importer.flags`, ``--map FIELD=COLUMN`` for any field, the importer's
    options, ``--report`` and ``--quiet``; it prints the import report."""
    fields = ", ".join(importer.fields)

    def run(file: str, db: str, maps: tuple[str, ...], report_path: str | None, quiet: bool, **kwargs: Any) -> None:
        mapping = {k[4:]: v for k, v in kwargs.items() if k.startswith("col_") and v}
        mapping.update(_parse_maps(maps))
        options = {k[4:]: v for k, v in kwargs.items() if k.startswith("opt_")}
        report = importer.run(file, db=db, mapping=mapping, progress=not quiet, **options)
        _finish(report, report_path)

    decorators = [
        click.argument("file", type=click.Path(exists=False, dir_okay=False)),
        db_option,
        *[click.option(f"--{name}", f"col_{name}", metavar="COLUMN", help=f"column holding the {FIELD_HELP[name]}")
          for name in importer.flags],
        click.option("--map", "maps", multiple=True, metavar="FIELD=COLUMN",
                     help=f"map a field to a column, e.g. --map {importer.example} (repeatable); fields: {fields}"),
        *[_option(name) for name in importer.options],
        click.option("--report", "report_path", type=click.Path(dir_okay=False),
                     help="also write the import report as JSON to this file"),
        click.option("--quiet", is_flag=True, help="no progress bar"),
    ]
    func: Callable[..., None] = user_errors(run)
    for deco in reversed(decorators):
        func = deco(func)
    return click.command(name=importer.layer, help=importer.help)(func)


for _importer in IMPORTERS.values():
    import_.add_command(import_command(_importer))


@main.command()
@db_option
@click.option("--events", "n_events", type=click.IntRange(min=0), default=200_000, show_default=True,
              help="number of complaints and inspection hits to generate (up to 10,000,000 for benchmarks)")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed (same seed, same city)")
@click.option("--force", is_flag=True, help="replace an existing store (its catalog and data folder)")
@click.option("--quiet", is_flag=True, help="no progress bar")
@user_errors
def demo(db: str, n_events, seed, force, quiet):
    """Build the built-in demo city (示范市): areas, micro-grids, sample frame, two years of events."""
    from civicgrid.data.demo import build_demo
    from civicgrid.geo.store import Store, is_postgres_url
    from civicgrid.geo.store_files import remove_store

    # a PostgreSQL URL stays text: pathlib.Path would collapse its '//' and make a folder "postgresql:" here
    if is_postgres_url(db):
        if not force and Store(db, create=True).sql("SELECT count(*) AS n FROM areas")["n"].iloc[0]:
            msg = f"{db} holds a city already; use --force to replace its data with the demo city"
            raise click.UsageError(msg)
    elif Path(db).exists():
        if not force:
            msg = f"{db} exists; use --force to replace it with the demo city"
            raise click.UsageError(msg)
        remove_store(db)
    summary = build_demo(db, events=n_events, seed=seed, progress=not quiet)
    click.echo(f"demo city written to {db}")
    for key, value in summary.items():
        click.echo(f"  {key:<16} {value:>12,}" if isinstance(value, int) else f"  {key:<16} {value}")


@main.command()
@db_option
@user_errors
def migrate(db: str):
    """Move an old single-file store (civicgrid before the DuckLake store) into the current format, once.

    The old file is kept beside it as <db>.v5.duckdb; running it again does nothing.
    """
    from civicgrid.geo.store_files import migrate_file

    backup = migrate_file(db)
    if backup is None:
        click.echo(f"{db} is already a store of the current format: nothing to migrate")
    else:
        click.echo(f"{db} migrated; the old file is kept as {backup}")


@main.command()
@db_option
@click.option("--keep-days", type=click.FloatRange(min=0), default=30, show_default=True,
              help="days of snapshots kept for views of the past (open_store(db, at=...))")
@click.option("--flush/--no-flush", default=None,
              help="move small writes kept in the catalog into Parquet files (default: only with a PostgreSQL "
                   "catalog)")
@user_errors
def maintain(db: str, keep_days: float, flush: bool | None):
    """Compact the store: merge small files, expire old snapshots, delete unused files, repair column bounds
    the lake recorded wrong. Safe while the service, imports and notebooks run (writers wait one compaction piece
    or step at a time, a few seconds at most); run it daily, e.g. from cron."""
    from civicgrid.geo.store_files import maintain as run

    done = run(db, keep_days=keep_days, flush=flush)
    click.echo(f"{db}: {done['files_before']} data files -> {done['files_after']}, "
               f"{done['snapshots_expired']} snapshots expired ({done['seconds']} s; {done['compaction_pieces']} "
               f"compaction pieces, writers waited at most {done['longest_pause_s']} s at a time)")
    if done["column_stats_repaired"]:
        click.echo(f"{db}: column bounds the lake had recorded wrong repaired: "
                   f"{', '.join(done['column_stats_repaired'])}")


@main.command()
@db_option
@click.option("--name", "city", metavar="NAME", help="name the city (e.g. 深圳市): maps, scorecards and reports "
              "show it in their titles")
@click.option("--name-en", "city_en", metavar="NAME", help="the city's English name (e.g. Shenzhen; \"\" removes it)")
@user_errors
def info(db: str, city: str | None, city_en: str | None):
    """Show what a database holds: its city, schema version, catalog, layers and row counts.

    With --name (and --name-en), name the store's city first:

    \b
      civicgrid info --db city.duckdb --name 深圳市 --name-en Shenzhen
    """
    from civicgrid.geo.store import SQLITE_BUSY_STEP_US, Store, set_city_name, short_sleeps

    if city_en is not None and city is None:
        city = Store(db).meta("city_name")
        if not city:
            raise click.UsageError("--name-en needs --name: the store has no city name yet")
    if city is not None:
        set_city_name(db, name=city, name_en=city_en)
    store = Store(db)
    click.echo(f"{store.path}  (schema version {store.meta('schema_version')}, time zone {store.meta('timezone')})")
    named = " / ".join(n for n in (store.meta("city_name"), store.meta("city_name_en")) if n)
    click.echo(f"  city: {named or '(no name: civicgrid info --name NAME names it)'}")
    if store.location.kind == "sqlite":
        waits = (f"busy waits of {SQLITE_BUSY_STEP_US // 1000} ms" if short_sleeps() else
                 "busy waits of whole seconds (CIVICGRID_SQLITE_SHORT_SLEEPS off, or civicgrid.geo._sqlite_sleep "
                 "not built: see the README)")
        click.echo(f"  catalog: SQLite file in WAL mode, {waits}")
    else:
        click.echo(f"  catalog: PostgreSQL, data in {store.location.data_path}")
    for table in ("areas", "grids", "site_categories", "problem_types", "sites", "inspections", "events", "imports"):
        n = store.sql(f"SELECT count(*) AS n FROM {table}")["n"].iloc[0]
        click.echo(f"  {table:<16} {n:>12,}")
    levels = store.sql("SELECT level, count(*) AS n FROM areas GROUP BY level ORDER BY n")
    if not levels.empty:
        click.echo("  areas by level: " + ", ".join(f"{r.level} {r.n}" for r in levels.itertuples()))


# The commands of each capability (one module each under api/commands/) register on `main` when imported;
# they import `main` from here, so they come last.
from civicgrid.api.commands import cases, imports, patrol, report, risk, serve, simulate, types  # noqa: E402

#: The modules adding commands to :func:`main`.
COMMAND_MODULES = (serve, risk, patrol, cases, report, simulate, types, imports)

if __name__ == "__main__":  # pragma: no cover
    # `python -m civicgrid.api.cli`: the commands registered on the group of civicgrid.api.cli, not on this copy
    from civicgrid.api import cli

    cli.main()
