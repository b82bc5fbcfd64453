"""``civicgrid types``: the city's problem taxonomy — types with counts, source labels without a type, mapping a
label (retroactively), adding a type, importing a whole label map."""

from __future__ import annotations

import json

import click
from civicgrid.api.cli import db_option, main, pad, user_errors
from civicgrid.geo.events import SOURCES

_SOURCE = click.option("--source", type=click.Choice(SOURCES),
                       help="the labels of this source only (default: every source)")


@main.group()
def types() -> None:
    """The city's problem types (大类 / 小类) and the labels of its files.

    An events import keeps each row's own type label; labels that are no known
    type load without a type and are listed by `types unmapped`. `types map`
    gives them a type (with its deadline), for the events already loaded and
    every later import.

    \b
    Examples:
      civicgrid types unmapped --db city.duckdb
      civicgrid types map "Garbage in alley" 0101 --db city.duckdb
      civicgrid types add 0905 噪音扰民 --name-en "Noise nuisance" --major 09 --deadline 3d
      civicgrid types import-map labels.csv     # CSV: source,label,code
    """


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


@types.command(name="list")
@db_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@user_errors
def types_list(db: str, as_json: bool) -> None:
    """List the problem types with their deadline, events and the labels mapped to them."""
    from civicgrid.geo.store import Store
    from civicgrid.sites.taxonomy import list_types

    df = list_types(Store(db))
    if as_json:
        click.echo(df.to_json(orient="records", force_ascii=False))
        return
    for r in df.itertuples():
        deadline = "-" if r.deadline_value != r.deadline_value or r.deadline_value is None else \
            f"{r.deadline_value:g}{'d' if r.deadline_unit == 'working_days' else 'h'}"
        labels = f"  labels: {r.labels}" if isinstance(r.labels, str) else ""
        click.echo(f"{r.code:<6} {pad(_text(r.major_zh), 10)} {pad(r.name_zh, 22)} {pad(_text(r.name_en), 30)} "
                   f"{deadline:>5} {r.events:>10,}{labels}")


@types.command(name="unmapped")
@db_option
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="labels shown at most")
@click.option("--json", "as_json", is_flag=True, help="print JSON (every label)")
@user_errors
def types_unmapped(db: str, limit: int, as_json: bool) -> None:
    """List the source labels whose events have no type, by number of events, with the closest types."""
    from civicgrid.geo.store import Store
    from civicgrid.sites.taxonomy import unmapped_labels

    df = unmapped_labels(Store(db))
    if as_json:
        click.echo(df.to_json(orient="records", force_ascii=False))
        return
    if df.empty:
        click.echo("every source label has a type")
        return
    for r in df.head(limit).itertuples():
        near = "; ".join(r.suggestions) or "none near (civicgrid types add makes one)"
        click.echo(f"{r.events:>9,}  {r.source:<10} {pad(r.label, 40)} closest: {near}")
    if len(df) > limit:
        click.echo(f"… and {len(df) - limit:,} more labels ({int(df['events'].iloc[limit:].sum()):,} events)")


@types.command(name="map")
@click.argument("label")
@click.argument("code")
@db_option
@_SOURCE
@user_errors
def types_map(label: str, code: str, db: str, source: str | None) -> None:
    """Map the source label LABEL to the problem type CODE (code or name), for the events already loaded (they
    and their cases get the type and its deadline) and every later import."""
    from civicgrid.sites.taxonomy import map_label

    done = map_label(db, label, code, source=source)
    click.echo(f"{done['label']!r} → {done['code']}: {done['events']:,} events and {done['cases']:,} cases updated, "
               f"{done['rebounds']:,} of them rebounds (回头看) of an earlier closed case")


@types.command(name="add")
@click.argument("code")
@click.argument("name_zh")
@db_option
@click.option("--name-en", help="English name")
@click.option("--major", help="code of its major class (大类); default: the code's first two characters, else 99")
@click.option("--deadline", help="rectification deadline: working days (3d) or working hours (8h)")
@user_errors
def types_add(code: str, name_zh: str, db: str, name_en: str | None, major: str | None,
              deadline: str | None) -> None:
    """Add a problem type (小类) CODE named NAME_ZH."""
    from civicgrid.sites.taxonomy import add_type

    t = add_type(db, code, name_zh, name_en=name_en, major=major, deadline=deadline)
    click.echo(f"type {t['code']} {t['name_zh']} added (major {t['major_code']})")


@types.command(name="import-map")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@db_option
@user_errors
def types_import_map(file: str, db: str) -> None:
    """Map many labels at once from a CSV with columns source,label,code (source empty: every source)."""
    from civicgrid.sites.taxonomy import import_map

    done = import_map(db, file)
    click.echo(f"{len(done)} labels mapped: {sum(d['events'] for d in done):,} events and "
               f"{sum(d['cases'] for d in done):,} cases updated, "
               f"{sum(d['rebounds'] for d in done):,} of them rebounds (回头看) of an earlier closed case")
    for d in done:
        click.echo(json.dumps(d, ensure_ascii=False))
