"""``civicgrid simulate``: the assessment simulator (符合率 expected if assessed now) and what to fix first."""

from __future__ import annotations

import json
from pathlib import Path

import click
from civicgrid.api.cli import db_option, main, pad, user_errors


def _pct(value) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


@main.command()
@db_option
@click.option("--as-of", "as_of", metavar="DATE",
              help="look at the sites' state at this date or date-time (default: the latest event or inspection)")
@click.option("--runs", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True,
              help="simulated assessors' visits")
@click.option("--k", "k_items", multiple=True, metavar="CAT=K",
              help="sites drawn in category CAT (code, Chinese or English name), overriding data/assessment.csv; "
                   "repeatable, e.g. --k 03=5 --k 公园=2")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="conformity rate below which a category counts as failing")
@click.option("--fix", "fix_n", type=click.IntRange(min=0), default=10, show_default=True,
              help="propose this many sites to fix first (largest expected gain)")
@click.option("--aggregate", type=click.Choice(["pooled", "mean"]), default="pooled", show_default=True,
              help="overall rate: pooled over all drawn sites, or the mean of the category rates")
@click.option("--level", type=click.FloatRange(0.5, 0.999), default=0.9, show_default=True,
              help="central interval of the simulated rates (0.9: 5th to 95th percentile)")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed")
@click.option("--method", type=click.Choice(["auto", "rule", "risk"]), default="auto", show_default=True,
              help="where each site's chance of non-conformity comes from: the calibrated risk model (risk), "
                   "the documented rule (rule), or the risk model when it gives probabilities (auto)")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True, help="category names")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="also write the full result as JSON")
@user_errors
def simulate(db: str, as_of, runs, k_items, threshold, fix_n, aggregate, level, seed, method, lang, json_path):
    """Simulate the national assessment's field visit on the sample frame.

    Each active site gets a probability of being found non-conforming from its
    state (open and overdue problems, recent hits, nearby complaints, its
    inspection record). Every run draws k sites per category without
    replacement and scores each; the table shows the exact expected
    conformity rate (符合率) per category and overall, the simulated interval,
    and the chance of falling below --threshold. Then the sites whose fixing
    raises the expected overall rate most, with the exact gain.

    \b
    Examples:
      civicgrid simulate --db demo.duckdb
      civicgrid simulate --db demo.duckdb --as-of 2024-06-30 --k 05=8 --fix 20 --json sim.json
    """
    from civicgrid.geo.store import Store
    from civicgrid.sites.simulator import assess, parse_k_options

    store = Store(db)
    result = assess(store, as_of=as_of, runs=runs, k=parse_k_options(k_items), threshold=threshold, fix=fix_n,
                    level=level, seed=seed, aggregate=aggregate, method=method, lang=lang)
    lo, hi = 100 * (1 - result["level"]) / 2, 100 * (1 + result["level"]) / 2
    click.echo(f"as of {result['as_of']}  ({result['runs']:,} runs, probabilities: {result['method']}, "
               f"overall: {result['aggregate']})")
    for note in result["notes"]:
        click.echo(f"note: {note}")
    click.echo(f"{'category':<28} {'sites':>6} {'k':>3} {'expected':>9} {'interval':>15} "
               f"{'P(<' + format(threshold, '.0%') + ')':>9}")
    for row in result["categories"]:
        code, name = str(row["category_code"]), str(row["name"])  # a city's own category: its label is its code
        label = pad(name if code == name else f"{code} {name}", 28)
        click.echo(f"{label} {row['n_sites']:>6} {row['k']:>3} {_pct(row['expected']):>9} "
                   f"{_pct(row['low']):>7}-{_pct(row['high']):<7} {_pct(row['p_below_exact']):>9}")
    o = result["overall"]
    below = o["p_below_exact"] if o["p_below_exact"] is not None else o["p_below"]
    click.echo(f"{'overall':<28} {o['n_sites']:>6} {o['k']:>3} {_pct(o['expected']):>9} "
               f"{_pct(o['low']):>7}-{_pct(o['high']):<7} {_pct(below):>9}")
    click.echo(f"(interval: {lo:g}th-{hi:g}th percentile of the simulated visits)")
    if result["fix"]:
        click.echo(f"\nfix first (expected overall rate {_pct(o['expected']).strip()} -> "
                   f"{_pct(result['overall_after_fix']['expected']).strip()}):")
        click.echo(f"{'#':>3} {'site':>6} {'name':<20} {'category':<14} {'p':>6} {'open':>4} {'gain':>8}")
        for row in result["fix"]:
            click.echo(f"{row['rank']:>3} {row['site_id']:>6} {pad(row['name'], 20)} "
                       f"{pad(row['category'], 14)} {row['p']:6.2f} {row['open']:>4} "
                       f"{100 * row['gain']:+7.2f}pp")
    if json_path:
        Path(json_path).write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
        click.echo(f"result written to {json_path}")
