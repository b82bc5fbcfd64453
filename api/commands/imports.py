"""``civicgrid imports``: the imports a store has seen, and undoing one."""

from __future__ import annotations

import click
from civicgrid.api.cli import db_option, main, pad, user_errors


@main.group()
def imports() -> None:
    """The imports of a store: list them, undo one.

    \b
    Examples:
      civicgrid imports list --db city.duckdb
      civicgrid imports undo 7 --db city.duckdb
    """


@imports.command(name="list")
@db_option
@user_errors
def imports_list(db: str) -> None:
    """Show each import: id, layer, file, time and counts (read, loaded, updated, duplicates, rejected)."""
    from civicgrid.geo.store import Store
    from civicgrid.sites.import_log import list_imports

    df = list_imports(Store(db))
    if df.empty:
        click.echo("no imports")
        return
    click.echo(f"{'id':>5}  {'layer':<12} {'finished':<19} {'read':>9} {'loaded':>9} {'updated':>8} {'dups':>8} "
               f"{'rejected':>8}  file")
    for r in df.itertuples():
        undone = f"  (undone {r.undone_at:%Y-%m-%d %H:%M})" if not pd_isna(r.undone_at) else ""
        finished = f"{r.finished_at:%Y-%m-%d %H:%M:%S}" if not pd_isna(r.finished_at) else "-"
        click.echo(f"{r.import_id:>5}  {pad(r.layer, 12)} {finished:<19} {r.rows_read:>9,} {r.loaded:>9,} "
                   f"{r.updated:>8,} {r.duplicates:>8,} {r.rejected:>8,}  {r.file}{undone}")


def pd_isna(value: object) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


@imports.command(name="undo")
@click.argument("import_id", type=int)
@db_option
@user_errors
def imports_undo(import_id: int, db: str) -> None:
    """Remove what import IMPORT_ID loaded (events: with the cases it created, unless someone has moved them)."""
    from civicgrid.sites.import_log import undo_import

    done = undo_import(db, import_id)
    what = ", ".join(f"{done[k]:,} {k}" for k in ("events", "cases", "sites", "inspections", "roads")
                     if done.get(k))
    click.echo(f"import {import_id} ({done['layer']}) undone: {what or 'nothing'} removed")
