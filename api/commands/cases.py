"""``civicgrid users`` (accounts and tokens) and ``civicgrid cases`` (create, move, show, list, KPIs, flags)."""

from __future__ import annotations

import click
from civicgrid.api.cli import db_option, main, pad, user_errors
from civicgrid.geo.levels import LEVELS


def _fmt(v) -> str:
    import pandas as pd

    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return "-"
    if hasattr(v, "strftime"):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


# --- users ----------------------------------------------------------------------------------------------------


@main.group()
def users() -> None:
    """Service accounts: roles viewer < inspector < admin, and their API tokens.

    viewer reads cases; inspector also creates and moves cases and plans patrols; admin also manages users,
    settings (holidays) and imports. Tokens are stored only as a hash: the token is printed once.
    """


def _users_command(name: str, *params):
    """Decorate a ``civicgrid users NAME`` command: its parameters (in ``--help`` order), ``--db`` and the
    one-line error report."""

    def deco(func):
        func = user_errors(func)
        for param in reversed((*params, db_option)):
            func = param(func)
        return users.command(name=name)(func)

    return deco


@_users_command("add", click.argument("name"),
                click.option("--role", type=click.Choice(["viewer", "inspector", "admin"]), required=True,
                             help="the user's role"))
def users_add(name, role, db: str):
    """Create user NAME with ROLE and print the new token (shown only this once)."""
    from civicgrid.geo.users import add_user

    user, token = add_user(db, name, role=role)
    click.echo(f"user {user['name']} ({user['role']}) created; token (shown once, keep it safe):", err=True)
    click.echo(token)


@_users_command("list")
def users_list(db: str):
    """List users and roles (tokens are never shown)."""
    from civicgrid.geo.store import Store
    from civicgrid.geo.users import list_users

    df = list_users(Store(db))
    if df.empty:
        click.echo("no users; create one with `civicgrid users add NAME --role admin`")
        return
    for r in df.itertuples():
        click.echo(f"{r.user_id:>4}  {pad(r.name, 20)} {r.role:<10} {'active' if r.active else 'disabled':<9} "
                   f"{_fmt(r.created_at)}")


@_users_command("token", click.argument("name"))
def users_token(name, db: str):
    """Issue a new token for NAME (the old one stops working; a disabled user is re-enabled) and print it once."""
    from civicgrid.geo.users import new_token

    click.echo(new_token(db, name))


@_users_command("disable", click.argument("name"))
def users_disable(name, db: str):
    """Disable NAME: its token is refused from now on (`civicgrid users token NAME` re-enables it)."""
    from civicgrid.geo.users import set_active

    set_active(db, name, active=False)
    click.echo(f"user {name} disabled")


# --- cases ----------------------------------------------------------------------------------------------------


@main.group()
def cases() -> None:
    """Problem cases: found → registered → dispatched → rectified → closed (rework: rectified → dispatched).

    Every move is kept in the audit trail; illegal moves are refused and change nothing.
    """


def _print_case(case: dict) -> None:
    from civicgrid.sites.cases import STATE_ZH

    click.echo(f"case {case['case_id']}  {case['state']} ({STATE_ZH[case['state']]})  "
               f"type {_fmt(case['problem_type'] or case.get('source_type'))}  source {case['source']}")
    click.echo(f"  found {_fmt(case['found_at'])}  deadline {_fmt(case['deadline'])}  unit {_fmt(case['unit'])}")
    click.echo(f"  grid {_fmt(case['grid_code'])}  site {_fmt(case['site_id'])}  reworks {case['reworks']}  "
               f"rebound of {_fmt(case['rebound_of'])}")
    click.echo(f"  rectified {_fmt(case['rectified_at'])}  closed {_fmt(case['closed_at'])}  next: "
               f"{', '.join(case['next']) or '-'}")
    for r in case["log"]:
        click.echo(f"    {_fmt(r['changed_at'])}  {r['actor']:<10} {_fmt(r['from_state']):>10} → {r['to_state']:<10} "
                   f"{_fmt(r['unit']) if r['unit'] else ''} {r['note'] or ''}".rstrip())


@cases.command(name="create")
@db_option
@click.option("--actor", required=True, help="who opens the case (audit trail)")
@click.option("--event", "event_id", type=int, help="an existing event without a case")
@click.option("--type", "problem_type", help="problem type 小类 code or name (new event)")
@click.option("--lng", type=float, help="longitude (new event)")
@click.option("--lat", type=float, help="latitude (new event)")
@click.option("--crs", default="wgs84", show_default=True, help="wgs84, gcj02 or bd09")
@click.option("--site", "site_id", type=int, help="sample-frame site id (its point is used without --lng/--lat)")
@click.option("--time", help="when found (default now), e.g. 2025-03-05T14:30")
@click.option("--text", help="description")
@click.option("--source", type=click.Choice(["inspection", "complaint"]), default="inspection", show_default=True)
@click.option("--note", help="note for the audit trail")
@click.option("--dispatch", is_flag=True, help="also register and dispatch at once (logged at --time unless "
                                                "--dispatch-time is given)")
@click.option("--dispatch-time", "dispatch_at", help="with --dispatch: when it was registered and dispatched")
@click.option("--unit", help="dispatch to this unit instead of the automatic one")
@user_errors
def cases_create(db: str, **kwargs):
    """Open a case for an event (--event) or for a new problem (--type with --lng/--lat or --site)."""
    from civicgrid.sites.cases import create_case

    _print_case(create_case(db, **kwargs))


@cases.command(name="move")
@click.argument("case_id", type=int)
@click.argument("to")
@db_option
@click.option("--actor", required=True, help="who makes the change (audit trail)")
@click.option("--note", help="note for the audit trail")
@click.option("--unit", help="with dispatch: this unit instead of the automatic one")
@click.option("--photo", help="photo reference (file name) with rectify")
@click.option("--at", help="when (default now), not before the previous step")
@user_errors
def cases_move(case_id, to, db: str, actor, note, unit, photo, at):
    """Move CASE_ID to TO: a state (registered, dispatched, rectified, closed) or an action (register,
    dispatch, rectify, close, rework)."""
    from civicgrid.sites.cases import transition

    _print_case(transition(db, case_id, to, actor=actor, note=note, unit=unit, photo=photo, at=at))


@cases.command(name="show")
@click.argument("case_id", type=int)
@db_option
@user_errors
def cases_show(case_id, db: str):
    """Show a case and its audit trail."""
    from civicgrid.geo.store import Store
    from civicgrid.sites.cases import get_case, with_source_label

    store = Store(db)
    _print_case(with_source_label(store, get_case(store, case_id)))


@cases.command(name="list")
@db_option
@click.option("--state", help="found, registered, dispatched, rectified or closed")
@click.option("--area", help="district, street, community or grid code")
@click.option("--overdue", is_flag=True, help="only open cases past their deadline now")
@click.option("--limit", type=int, default=20, show_default=True, help="cases per page")
@click.option("--offset", type=int, default=0, show_default=True, help="cases skipped (the next page: offset + limit)")
@user_errors
def cases_list(db: str, state, area, overdue, limit, offset):
    """List cases, newest first, one page at a time (the last line says how many match and how to page on)."""
    from civicgrid.geo.store import Store
    from civicgrid.sites.cases import list_cases

    df = list_cases(Store(db), state=state, area=area, overdue=True if overdue else None, limit=limit,
                    offset=offset)
    # a case's type, else the city's own label (cut at 24 characters), in a column as wide as the page needs
    kinds = [r.problem_type if isinstance(r.problem_type, str) else
             r.source_type[:24] if isinstance(r.source_type, str) else "-" for r in df.itertuples()]
    width = max([5, *map(len, kinds)])
    for r, kind in zip(df.itertuples(), kinds, strict=True):
        click.echo(f"{r.case_id:>9}  {r.state:<10} {kind:<{width}} found {_fmt(r.found_at)}  "
                   f"due {_fmt(r.deadline)}  {_fmt(r.unit)}")
    total = int(df.attrs["total"])
    shown = f"{offset + 1:,}–{offset + len(df):,}" if len(df) else "none"
    more = f"; next page: --offset {offset + limit}" if offset + limit < total else ""
    click.echo(f"cases {shown} of {total:,}{more}", err=True)


@cases.command(name="backfill")
@db_option
@user_errors
def cases_backfill(db: str):
    """Create the cases (with audit trail) of every event that has none, from the events' own record."""
    from civicgrid.sites.cases import backfill_db

    click.echo(f"{backfill_db(db):,} cases created")


@cases.command(name="kpis")
@db_option
@click.option("--start", required=True, help="first day of the period, e.g. 2025-03-01")
@click.option("--end", required=True, help="day after the period (exclusive), e.g. 2025-04-01")
@click.option("--level", type=click.Choice([*LEVELS, "category"]),
              default="street", show_default=True)
@click.option("--as-of", help="read the record as it stood then (default: end of period, or now)")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False),
              help="also write the table as CSV for Excel/WPS (UTF-8 with BOM; a text cell starting with "
                   "= + - @ gets a leading ' so it is shown, never run as a formula)")
@user_errors
def cases_kpis(db: str, start, end, level, as_of, lang, csv_path):
    """Rectification KPIs per unit for a period (definitions: README, Cases and KPIs)."""
    import pandas as pd
    from civicgrid.geo.store import Store
    from civicgrid.sites._workbooks import save_spreadsheet_csv
    from civicgrid.sites.kpis import kpi_table, kpi_totals

    store = Store(db)
    df = kpi_table(store, start=start, end=end, level=level, as_of=as_of, lang=lang)
    df = pd.concat([df, pd.DataFrame([kpi_totals(store, start=start, end=end, level=level, as_of=as_of,
                                                 lang=lang)])], ignore_index=True)
    if csv_path:
        save_spreadsheet_csv(df, csv_path)
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.precision", 3):
        click.echo(df.to_string(index=False))


@cases.command(name="flags")
@db_option
@click.option("--as-of", help="day of the assessment (default now)")
@click.option("--window-days", type=int, default=90, show_default=True)
@click.option("--flag", type=click.Choice(["red", "white"]), help="only this flag")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True)
@user_errors
def cases_flags(db: str, as_of, window_days, flag, lang):
    """Red (红旗, good) and white (白旗, lagging) flags of sites with the reason."""
    from civicgrid.geo.store import Store
    from civicgrid.sites.kpis import site_flags

    df = site_flags(Store(db), as_of=as_of, window_days=window_days, lang=lang)
    click.echo(", ".join(f"{k} {v}" for k, v in df["flag"].value_counts().items()))
    df = df[df["flag"] == flag] if flag else df[df["flag"] != "none"]
    for r in df.itertuples():
        click.echo(f"{r.site_id:>6}  {r.flag_label:<4} {r.name}  ({r.category})  {r.reason}")
