"""``civicgrid risk`` (sites ranked by risk, with the components of each score) and ``civicgrid backtest``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
from civicgrid.api.cli import db_option, main, pad, user_errors


def _write_json(path: str, payload) -> None:
    Path(path).write_text(json.dumps(payload, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    click.echo(f"written to {path}")


@main.command()
@db_option
@click.option("--as-of", "as_of", metavar="DATE",
              help="score as of this date (its midnight) or date-time; only data strictly before it is used "
                   "(default: just after the latest event or inspection)")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, help="sites to list")
@click.option("--category", multiple=True, metavar="CAT",
              help="only sites of this category (code such as 16, or name such as 农贸市场); repeatable")
@click.option("--grid", "area", metavar="CODE", help="only sites in this micro-grid (or district/street/community)")
@click.option("--model", type=click.Choice(["auto", "gbm", "logistic", "learnt", "blend", "default"]), default="auto",
              show_default=True, help="gradient-boosted trees (gbm), the logistic regression of the components "
                                      "(logistic = learnt), the default rule, or auto (the higher held-out AUC)")
@click.option("--inspector", metavar="NAME", help="the probability that this inspector's visit finds a problem "
                                                  "(default: an average inspector)")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True,
              help="category names and reasons")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="also write the listed sites with every component, and the model, as JSON")
@user_errors
def risk(db: str, as_of, top, category, area, model, inspector, lang, json_path):
    """List sample-frame sites by risk: the chance the next inspection finds a problem.

    Each score is explained: the table shows the risk, the three largest
    contributions and a reason; --json writes all components (value, weight
    and contribution in logit units) per site. Components: the category's
    and the site's own problem rate, time-decayed complaints and inspection
    hits within about 200 m, open and overdue problems, days since the last
    inspection, rebounds and complaint-hotspot membership. Weights are learnt
    from the past year's inspections (with each inspector's detection rate
    as a fixed effect) when there are enough, else a documented default.

    \b
    Example:
      civicgrid risk --db demo.duckdb --as-of 2025-07-01 --top 10 --category 农贸市场
    """
    from civicgrid.geo.store import Store
    from civicgrid.geo.texts import labels
    from civicgrid.sites.risk import default_as_of, risk_records, select_sites, site_risk
    from civicgrid.sites.risk.components import NOT_REASONS

    store = Store(db)
    moment = as_of or default_as_of(store)
    frame = site_risk(store, as_of=moment, model=model, lang=lang, inspector=inspector)
    info = frame.attrs["model"]
    total = len(frame)
    shown = select_sites(store, frame, category=list(category) or None, area=area, limit=top)
    who = f" for a visit by {inspector}" if inspector else ""
    click.echo(f"as of {frame.attrs['as_of']}: {total} active sites scored{who}, model {info['choice']}"
               + (f", {info['n_train']} training inspections" if info["kind"] != "default" else ""))
    for note in frame.attrs["notes"]:
        click.echo(f"note: {note}")
    click.echo(f"{'rank':>5} {'site':>6}  {pad('name', 22)} {pad('category', 16)} {'risk':>6}  top components")
    names = labels("risk.component", lang)
    features = info["features"]
    for r in shown.itertuples(index=False):
        contrib = sorted(((getattr(r, f"{c}_contrib"), c) for c in features if c not in NOT_REASONS),
                         reverse=True)[:3]
        parts = ", ".join(f"{names[c]} {v:+.2f}" for v, c in contrib)
        click.echo(f"{r.rank:>5} {r.site_id:>6}  {pad(r.name, 22)} {pad(r.category_name or '', 16)} "
                   f"{r.risk:6.3f}  {parts}")
        click.echo(f"{'':>14}{r.reason}")
    if not total:
        click.echo("  (the store has no active sample-frame site: load them with `civicgrid import sites FILE`)")
    elif shown.empty:
        click.echo("  (no site matches)")
    if json_path:
        _write_json(json_path, {"as_of": frame.attrs["as_of"], "model": info, "n_scored": total,
                                "sites": risk_records(shown, lang=lang)})


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "     -"
    if kind == "days":
        return f"{value:+6.2f}"
    return f"{100 * value:5.1f}%"


@main.command()
@db_option
@click.option("--as-of", "as_of", metavar="DATE", required=True,
              help="start of the window (with --rolling: of the first window): scores use only data strictly "
                   "before it")
@click.option("--horizon", "horizon", type=click.FloatRange(min=0, min_open=True), default=28, show_default=True,
              metavar="DAYS", help="length of the window in days (the published evaluation replayed 60)")
@click.option("--rolling", is_flag=True, help="one window starting on every first of a month from --as-of until "
                                              "--until, each scored with the data before its own start")
@click.option("--until", metavar="DATE", help="with --rolling: end of the period (window starts before it)")
@click.option("--kind", metavar="TEXT", help="only the window's inspections whose kind contains TEXT (e.g. "
                                             "'Cycle Inspection / Initial'); scores still use every inspection")
@click.option("--k", "k", type=click.IntRange(min=1), help="precision at k (default: a tenth of the window's "
                                                           "inspections)")
@click.option("--seed", type=int, default=0, show_default=True, help="first seed of the random orderings")
@click.option("--model", type=click.Choice(["auto", "gbm", "logistic", "learnt", "blend", "default"]), default="auto",
              show_default=True, help="risk model of the risk order (auto: the higher held-out AUC)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="also write the result as JSON")
@user_errors
def backtest(db: str, as_of, horizon, rolling, until, kind, k, seed, model, json_path):
    """Replay history: rank sites with data before --as-of, then score the orderings on the real inspections.

    The inspections actually made in [as-of, as-of + horizon) are re-ordered by
    each ordering and given the same sequence of inspection times (the Chicago
    food-inspection evaluation method). For the risk order (the model auto
    chose, printed), each model on its own (gbm, logistic), the detection
    probability with the assigned inspector known (when inspections name
    one), and the baselines (historical hit rate, random averaged over 20
    seeds, category round-robin, the actual order) it reports precision at k,
    the share of problem-finding inspections in the first half of the window,
    how many days earlier they would have happened, and the AUC.

    \b
    Examples:
      civicgrid backtest --db demo.duckdb --as-of 2025-07-01 --horizon 28 --json bt.json
      civicgrid backtest --db nyc.duckdb --as-of 2014-01-01 --until 2015-01-01 --rolling --horizon 60 \\
          --kind "Cycle Inspection / Initial"
    """
    from civicgrid.geo.errors import InvalidParameterError
    from civicgrid.geo.store import Store
    from civicgrid.sites.backtest import backtest as run
    from civicgrid.sites.backtest import monthly_windows, rolling_backtest, summarize

    store = Store(db)
    if rolling:
        if not until:
            msg = "--rolling needs --until DATE (the end of the period)"
            raise InvalidParameterError(msg)
        table = rolling_backtest(store, windows=monthly_windows(as_of, until), horizon_days=horizon, k=k,
                                 seed=seed, model=model, kind=kind)
        _print_rolling(table)
        if json_path:
            _write_json(json_path, {"windows": table.to_dict("records"), "summary": summarize(table)})
        return
    result = run(store, as_of=as_of, horizon_days=horizon, k=k, seed=seed, model=model, kind=kind)
    m = result["model"]
    click.echo(f"window {result['as_of']} .. {result['end']}: {result['n_inspections']} inspections at "
               f"{result['n_sites']} sites, {result['n_found']} found a problem ({100 * result['base_rate']:.1f}%)")
    click.echo(f"risk model: {m['choice']}" + (f", {m['n_train']} training inspections" if m["kind"] != "default"
                                               else ""))
    click.echo(f"{'ordering':<15} {'prec@' + str(result['k']):>9} {'1st half':>9} {'days earlier':>13} {'AUC':>6}")
    for name in result["orderings"]:
        auc = result["auc"].get(name)
        click.echo(f"{name:<15} {_fmt(result['precision_at_k'][name], 'p'):>9} "
                   f"{_fmt(result['first_half_share'][name], 'p'):>9} "
                   f"{_fmt(result['mean_days_earlier'][name], 'days'):>13} "
                   f"{'' if auc is None else f'{auc:.3f}':>6}")
    if json_path:
        _write_json(json_path, result)


def _print_rolling(table) -> None:
    """One line per window (days earlier of each ordering, the risk AUC, the model chosen), then the summary."""
    from civicgrid.sites.backtest import summarize

    orderings = list(dict.fromkeys(table["ordering"]))
    click.echo("days earlier (mean over failures) per window; AUC of the risk order; model chosen")
    click.echo(f"{'window':<11} {'n':>6} {'found':>6} " + " ".join(f"{o[:11]:>11}" for o in orderings)
               + f" {'AUC':>6}  model")
    for w, g in table.groupby("window", sort=True):
        by = g.set_index("ordering")
        days = " ".join(f"{_fmt(by['mean_days_earlier'].get(o), 'days'):>11}" for o in orderings)
        click.echo(f"{w:%Y-%m-%d} {int(g['n_inspections'].iloc[0]):>6} {int(g['n_found'].iloc[0]):>6} {days} "
                   f"{by.loc['risk', 'auc']:6.3f}  {g['model'].iloc[0]}")
    s = summarize(table)
    click.echo(f"{'mean':<11} {'':>6} {'':>6} " + " ".join(
        f"{_fmt(s['means'][o]['mean_days_earlier'], 'days'):>11}" for o in orderings)
        + f" {s['means']['risk']['auc']:6.3f}")
    click.echo(f"risk earlier than historical in {s['risk_beats_historical']} of {s['windows']} windows; "
               f"risk / historical days earlier: {s['ratio_days_earlier']:.2f}; "
               f"model chosen: {', '.join(f'{k} {v}' for k, v in s['chosen'].items())}")
