"""``civicgrid report``: the period's KPI workbook (XLSX, one sheet per level) and HTML scorecard with a grid map."""

from __future__ import annotations

import click
from civicgrid.api.cli import db_option, main, user_errors
from civicgrid.sites.reports import KPI_COLUMNS, LEVELS

_KPIS = [k for k, v in KPI_COLUMNS.items() if v[2] != "text"]


@main.command()
@db_option
@click.option("--period", required=True, metavar="PERIOD",
              help="2024-03 (a month), 2024-Q1, 2024, 2024-03-05 or 2024-03-01..2024-03-15 (inclusive)")
@click.option("--level", type=click.Choice(LEVELS), default=None,
              help="level of the scorecard's table (the workbook has a sheet for every level)  [default: street; "
                   "a city without streets: its finest areas, else its micro-grids, else its site categories]")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="folder for report_<period>_<level>.xlsx and scorecard_<period>_<level>.html "
                   "[default: ./reports/, created if missing]")
@click.option("--kpi", type=click.Choice(_KPIS), default="on_time_closure_rate", show_default=True,
              help="KPI that colours the grid map and marks lagging rows")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True,
              help="headers and labels")
@click.option("--as-of", "as_of", metavar="DATE",
              help="read the record as it stood at this moment (default: the period's end, or now if earlier); "
                   "not before the period")
@user_errors
def report(db: str, period, level, out_dir, kpi, lang, as_of):
    """Write the period's KPI report: an XLSX workbook and an HTML scorecard.

    The workbook has one sheet per level (district, street, community, grid,
    site category) with the rectification KPIs (整改率, 结案率, 按期结案率,
    返工率, 反弹率, time to rectify, open, overdue), a totals row, and the
    lagging rows on --kpi filled red. The scorecard shows the city figures, a
    map of micro-grids coloured by --kpi and the --level table; it is one file
    that opens without internet.

    \b
    Examples:
      civicgrid report --db demo.duckdb --period 2024-03 --level street --out reports/
      civicgrid report --db demo.duckdb --period 2024-Q2 --level grid --kpi overdue --lang en
    """
    from civicgrid.geo.store import Store
    from civicgrid.sites.reports import build_report

    store = Store(db)
    if out_dir is None:
        out_dir = "reports"
        click.echo("--out not given: writing into ./reports/", err=True)
    paths = build_report(store, period=period, level=level, out_dir=out_dir, kpi=kpi, lang=lang, as_of=as_of)
    click.echo(f"workbook written to {paths['xlsx']}")
    click.echo(f"scorecard written to {paths['html']}")
    missing = int(store.sql("SELECT count(*) AS n FROM events e "
                            "WHERE NOT EXISTS (SELECT 1 FROM cases c WHERE c.event_id = e.event_id)")["n"].iloc[0])
    if missing:
        click.echo(f"warning: {missing:,} events have no case and are not in the KPIs; "
                   f"run `civicgrid cases backfill --db {db}` to create them", err=True)
