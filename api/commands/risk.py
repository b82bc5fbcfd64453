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
@click.option("--model", type=click.Choice(["auto", "learnt", "default"]), default="auto", show_default=True,
              help="learnt weights (logistic regression on past inspections), the default rule, or auto")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True,
              help="category names and reasons")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="also write the listed sites with every component, and the model, as JSON")
@user_errors
def risk(db: str, as_of, top, category, area, model, lang, json_path):
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
    from civicgrid.sites.risk import COMPONENTS, default_as_of, risk_records, select_sites, site_risk

    store = Store(db)
    moment = as_of or default_as_of(store)
    frame = site_risk(store, as_of=moment, model=model, lang=lang)
    info = frame.attrs["model"]
    total = len(frame)
    shown = select_sites(store, frame, category=list(category) or None, area=area, limit=top)
    head = f"as of {frame.attrs['as_of']}: {total} active sites scored, model {info['kind']}"
    if info["kind"] == "learnt":
        head += f" ({info['n_train']} inspections, in-sample AUC {info['train_auc']:.3f})"
    else:
        head += f" ({info['reason']})"
    click.echo(head)
    for note in frame.attrs["notes"]:
        click.echo(f"note: {note}")
    click.echo(f"{'rank':>5} {'site':>6}  {pad('name', 22)} {pad('category', 16)} {'risk':>6}  top components")
    names = labels("risk.component", lang)
    for r in shown.itertuples(index=False):
        contrib = sorted(((getattr(r, f"{c}_contrib"), c) for c in COMPONENTS), reverse=True)[:3]
        parts = ", ".join(f"{names[c]} {v:+.2f}" for v, c in contrib)
        click.echo(f"{r.rank:>5} {r.site_id:>6}  {pad(r.name, 22)} {pad(r.category_name or '', 16)} "
                   f"{r.risk:6.3f}  {parts}")
        click.echo(f"{'':>14}{r.reason}")
    if shown.empty:
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
              help="start of the window: scores use only data strictly before it")
@click.option("--horizon", "horizon", type=click.FloatRange(min=0, min_open=True), default=28, show_default=True,
              metavar="DAYS", help="length of the window in days")
@click.option("--k", "k", type=click.IntRange(min=1), help="precision at k (default: a tenth of the window's "
                                                           "inspections)")
@click.option("--seed", type=int, default=0, show_default=True, help="first seed of the random orderings")
@click.option("--model", type=click.Choice(["auto", "learnt", "default"]), default="auto", show_default=True,
              help="risk model to evaluate")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="also write the result as JSON")
@user_errors
def backtest(db: str, as_of, horizon, k, seed, model, json_path):
    """Replay history: rank sites with data before --as-of, then score the orderings on the real inspections.

    The inspections actually made in [as-of, as-of + horizon) are re-ordered by
    each ordering and given the same sequence of inspection times (the Chicago
    food-inspection evaluation method). For the risk order and the baselines
    (historical hit rate, random averaged over 20 seeds, category round-robin,
    and the actual order) it reports precision at k, the share of
    problem-finding inspections in the first half of the window, and how many
    days earlier problem-finding inspections would have happened.

    \b
    Example:
      civicgrid backtest --db demo.duckdb --as-of 2025-07-01 --horizon 28 --json bt.json
    """
    from civicgrid.geo.store import Store
    from civicgrid.sites.backtest import ORDERINGS
    from civicgrid.sites.backtest import backtest as run

    store = Store(db)
    result = run(store, as_of=as_of, horizon_days=horizon, k=k, seed=seed, model=model)
    m = result["model"]
    click.echo(f"window {result['as_of']} .. {result['end']}: {result['n_inspections']} inspections at "
               f"{result['n_sites']} sites, {result['n_found']} found a problem ({100 * result['base_rate']:.1f}%)")
    click.echo(f"risk model: {m['kind']}" + (f" ({m['n_train']} training inspections)" if m["kind"] == "learnt"
                                             else f" ({m['reason']})"))
    click.echo(f"{'ordering':<12} {'prec@' + str(result['k']):>9} {'1st half':>9} {'days earlier':>13} {'AUC':>6}")
    for name in ORDERINGS:
        auc = result["auc"].get(name)
        click.echo(f"{name:<12} {_fmt(result['precision_at_k'][name], 'p'):>9} "
                   f"{_fmt(result['first_half_share'][name], 'p'):>9} "
                   f"{_fmt(result['mean_days_earlier'][name], 'days'):>13} "
                   f"{'' if auc is None else f'{auc:.3f}':>6}")
    if json_path:
        _write_json(json_path, result)
