"""Benchmark of the site risk on real inspections (issue 16): rolling 60-day backtests on the dev sets.

Usage::

    .venv/bin/python bench/risk_bench.py [--data ../shared/data/dev_inspections] [--work /tmp/risk_bench]
        [--city nyc --city toronto] [--out bench/risk_bench.md]

It loads each city with the ordinary ``civicgrid import`` commands of the README (into ``--work``; skipped when
the store is already there), then runs ``civicgrid backtest --rolling --horizon 60`` over every month of:

* NYC: 2014 and 2015 (window starts 2014-01-01 .. 2015-11-01, so that every window ends inside the data), on all
  labelled inspections, and on the routine ``Cycle Inspection / Initial Inspection`` only (the README's advice for
  a target event);
* Toronto: 2011 and 2012 (window starts 2011-01-01 .. 2012-11-01), a failure being a crucial infraction.

Each window is scored only with the data before its start; both models are refitted per window and ``auto`` keeps
the one with the higher AUC on the latest fifth of its own training year. It prints (and writes to ``--out``) a
markdown table per city and target: mean over the windows of days earlier, first-half share, precision at k and
AUC per ordering, the windows where the risk order beat the historical one, the ratio of their days earlier and
the model chosen per window.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from civicgrid.geo.store import Store
from civicgrid.sites.backtest import monthly_windows, rolling_backtest, summarize

ROOT = Path(__file__).resolve().parents[1]
CLI = str(ROOT / ".venv" / "bin" / "civicgrid")

#: The README's import commands per city (FILE paths relative to the data folder).
IMPORTS = {
    "nyc": [
        ["sites", "nyc/establishments.csv", "--id", "camis", "--name", "dba", "--category", "cuisine_description",
         "--lat", "zip_lat", "--lng", "zip_lng", "--map", "address=street"],
        ["inspections", "nyc/inspections.csv", "--id", "inspection_id", "--site", "camis", "--time",
         "inspection_date", "--result", "score", "--fail-when", "score>=14", "--map", "critical=any_critical",
         "--map", "kind=inspection_type", "--tz", "America/New_York"],
    ],
    "toronto": [
        ["sites", "toronto/inspections.csv", "--id", "establishment_id", "--name", "establishment_name",
         "--category", "establishment_type", "--lat", "latitude", "--lng", "longitude", "--map",
         "address=establishment_address"],
        ["inspections", "toronto/inspections.csv", "--id", "inspection_id", "--site", "establishment_id", "--time",
         "inspection_date", "--result", "n_infractions", "--fail-when", "n_crucial>0", "--map",
         "critical=n_crucial", "--tz", "America/Toronto"],
    ],
}

#: city: (first window, end of the period, [(label, kind filter), ...]); the targets of a city share each window's
#: model fit.
RUNS = {
    "nyc": ("2014-01-01", "2015-11-02", [
        ("NYC, all labelled inspections (score >= 14 fails)", None),
        ("NYC, routine initial cycle inspections only", "Cycle Inspection / Initial")]),
    "toronto": ("2011-01-01", "2012-11-02", [("Toronto, all inspections (a crucial infraction fails)", None)]),
}

ORDER = ("risk", "gbm", "logistic", "historical", "random", "round_robin", "actual")


def load(city: str, data: Path, work: Path) -> Path:
    db = work / f"{city}.duckdb"
    if db.exists():
        return db
    for layer, file, *args in IMPORTS[city]:
        cmd = [CLI, "import", layer, str(data / file), *args, "--db", str(db), "--quiet"]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
    return db


def table(label: str, df: pd.DataFrame, seconds: float) -> str:
    s = summarize(df)
    lines = [f"### {label}", "",
             f"{s['windows']} windows of 60 days, {df.drop_duplicates('window')['n_inspections'].sum():,} "
             f"inspection-windows; {seconds:.0f} s.", "",
             "| ordering | days earlier | 1st-half share | precision at k | AUC |", "|---|---:|---:|---:|---:|"]
    for o in [o for o in ORDER if o in s["means"]] + [o for o in s["means"] if o not in ORDER]:
        m = s["means"][o]
        auc = "" if pd.isna(m["auc"]) else f"{m['auc']:.3f}"
        lines.append(f"| {o} | {m['mean_days_earlier']:+.2f} | {100 * m['first_half_share']:.1f}% | "
                     f"{100 * m['precision_at_k']:.1f}% | {auc} |")
    wide = df.pivot(index="window", columns="ordering", values="mean_days_earlier")
    worst = (wide["risk"] - wide["historical"]).min()
    lines += ["", f"Risk earlier than historical in **{s['risk_beats_historical']} of {s['windows']}** windows "
                  f"(smallest margin {worst:+.2f} days); risk / historical days earlier **{s['ratio_days_earlier']:.2f}"
                  f"×**; model chosen: {', '.join(f'{k} {v}' for k, v in s['chosen'].items())}.", "",
              "Per window (days earlier): " + "; ".join(
                  f"{w:%Y-%m} risk {r['risk']:+.1f} / hist {r['historical']:+.1f}" for w, r in wide.iterrows()), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dev_inspections"))
    ap.add_argument("--work", default="/tmp/risk_bench")
    ap.add_argument("--city", action="append", choices=sorted(IMPORTS))
    ap.add_argument("--out", default=None, help="also write the tables to this markdown file")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cities = args.city or list(IMPORTS)
    parts = []
    for city in cities:
        start, end, targets = RUNS[city]
        store = Store(load(city, Path(args.data), work))
        frames: dict[str, list[pd.DataFrame]] = {label: [] for label, _ in targets}
        t0 = time.perf_counter()
        for w in monthly_windows(start, end):
            for label, kind in targets:  # the same as_of: the second target reuses the cached model fit
                frames[label].append(rolling_backtest(store, windows=[w], horizon_days=60, kind=kind))
            print(f"{city} {w:%Y-%m-%d} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        seconds = time.perf_counter() - t0
        for i, (label, _) in enumerate(targets):
            df = pd.concat(frames[label], ignore_index=True)
            df.to_csv(work / f"{city}_{i}.csv", index=False)
            part = table(label, df, seconds)
            print(part, flush=True)
            parts.append(part)
    if args.out:
        Path(args.out).write_text("\n".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
