"""Benchmark of the site risk on real inspections (issue 16): rolling 60-day backtests on the dev sets.

Usage::

    .venv/bin/python bench/risk_bench.py [--data ../shared/data/dev_inspections] [--work /tmp/risk_bench]
        [--city nyc --city toronto] [--every 4] [--out bench/risk_bench.md]

It loads each city with the ordinary ``civicgrid import`` commands of the README (into ``--work``; skipped when
the store is already there), then runs ``civicgrid backtest --rolling --horizon 60`` over the months (``--every``) of:

* NYC: 2014 and 2015 (window starts 2014-01-01 .. 2015-11-01, so that every window ends inside the data), on all
  labelled inspections, and on the routine ``Cycle Inspection / Initial Inspection`` only (the README's advice for
  a target event);
* Toronto: 2011 and 2012 (window starts 2011-01-01 .. 2012-11-01), a failure being a crucial infraction.

Each window is scored only with the data before its start; both models are refitted per window and ``auto`` keeps
the one with the higher AUC on the latest fifth of its own training year. It prints (and writes to ``--out``) a
markdown table per city and target: mean over the windows of days earlier, first-half share, precision at k and
AUC per ordering, the windows where the risk order beat the historical one, the ratio of their days earlier and
the model chosen per window.

Two reference orders that no model can use, to show what is reachable (they read the window's outcomes or the
future): ``oracle_site``, each site's failure share over *all* its labelled inspections outside the window (before
and after it: the best any fixed per-site propensity could do), and ``perfect``, the failures first. A table per
target gives every window with the ratio risk / historical. ``--every 2`` (the default) starts a window every other
month (January, March, ... November: twelve a city, every season, 60-day windows that tile the period without
overlapping); ``--every 1`` every month (23 a city, twice the time). Set ``OMP_NUM_THREADS=1`` on a shared machine:
the trees' OpenMP threads spin when the cores are busy (a window took four times longer).
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
from civicgrid.sites.backtest import _WINDOW_SQL, _auc, monthly_windows, order_measures, rolling_backtest, summarize

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

ORDER = ("risk", "gbm", "logistic", "historical", "random", "round_robin", "actual", "oracle_site", "perfect")

_LABELLED_SQL = """
SELECT site_id, time, CASE WHEN conforming IS NOT NULL THEN NOT conforming ELSE problems_found > 0 END AS found
FROM inspections WHERE site_id IS NOT NULL AND (conforming IS NOT NULL OR problems_found IS NOT NULL)
"""


def references(store: Store, labelled: pd.DataFrame, w: pd.Timestamp, kind: str | None, k: int) -> list[dict]:
    """The window's ``oracle_site`` and ``perfect`` orders (rows like :func:`rolling_backtest`'s)."""
    end = w + pd.Timedelta(days=60)
    win = store.sql(_WINDOW_SQL, {"start": w.to_pydatetime(), "end": end.to_pydatetime(), "kind": kind})
    found = win["found"].astype(bool).to_numpy()
    out = labelled[(labelled["time"] < w) | (labelled["time"] >= end)]
    g = out.groupby("site_id")["found"].agg(["sum", "count"])
    city = float(out["found"].mean())
    loo = (g["sum"] + 2 * city) / (g["count"] + 2)  # two pseudo-visits at the city's share
    scores = {"oracle_site": win["site_id"].map(loo).fillna(city).to_numpy(float), "perfect": found.astype(float)}
    t = win["time"].to_numpy("datetime64[us]")
    rows = []
    for name, score in scores.items():
        m = order_measures(t, found, score, start=w, horizon_days=60, k=k)
        rows.append({"window": w, "ordering": name, "precision_at_k": m["precision_at_k"],
                     "first_half_share": m["first_half_share"], "mean_days_earlier": m["mean_days_earlier"],
                     "auc": _auc(found, score)})
    return rows


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
             f"{s['windows']} windows of 60 days, {int(df.drop_duplicates('window')['n_inspections'].sum()):,} "
             f"inspection-windows; {seconds:.0f} s.", "",
             "| ordering | days earlier | 1st-half share | precision at k | AUC |", "|---|---:|---:|---:|---:|"]
    for o in [o for o in ORDER if o in s["means"]] + [o for o in s["means"] if o not in ORDER]:
        m = s["means"][o]
        auc = "" if pd.isna(m["auc"]) else f"{m['auc']:.3f}"
        lines.append(f"| {o} | {m['mean_days_earlier']:+.2f} | {100 * m['first_half_share']:.1f}% | "
                     f"{100 * m['precision_at_k']:.1f}% | {auc} |")
    wide = df.pivot(index="window", columns="ordering", values="mean_days_earlier")
    aucs = df.pivot(index="window", columns="ordering", values="auc")
    worst = (wide["risk"] - wide["historical"]).min()
    lines += ["", f"Risk earlier than historical in **{s['risk_beats_historical']} of {s['windows']}** windows "
                  f"(smallest margin {worst:+.2f} days); risk / historical days earlier **{s['ratio_days_earlier']:.2f}"
                  f"×**; model chosen: {', '.join(f'{k} {v}' for k, v in s['chosen'].items())}.", "",
              "| window | model | risk | historical | risk / historical | AUC risk / historical | oracle_site | "
              "perfect |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    chosen = df.drop_duplicates("window").set_index("window")["model"]
    for w, r in wide.iterrows():
        ratio = r["risk"] / r["historical"] if r["historical"] > 0 else float("nan")
        lines.append(f"| {w:%Y-%m} | {chosen.get(w, '')} | {r['risk']:+.2f} | {r['historical']:+.2f} | "
                     f"{ratio:.2f}× | {aucs.at[w, 'risk']:.3f} / {aucs.at[w, 'historical']:.3f} | "
                     f"{r.get('oracle_site', float('nan')):+.2f} | {r.get('perfect', float('nan')):+.2f} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dev_inspections"))
    ap.add_argument("--work", default="/tmp/risk_bench")
    ap.add_argument("--city", action="append", choices=sorted(IMPORTS))
    ap.add_argument("--out", default=None, help="also write the tables to this markdown file")
    ap.add_argument("--every", type=int, default=2, help="months between window starts (2: 60-day windows that "
                                                           "tile the period; 1: every month)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cities = args.city or list(IMPORTS)
    parts = []
    for city in cities:
        start, end, targets = RUNS[city]
        store = Store(load(city, Path(args.data), work))
        labelled = store.sql(_LABELLED_SQL)
        labelled["found"] = labelled["found"].astype(bool)
        frames: dict[str, list[pd.DataFrame]] = {label: [] for label, _ in targets}
        t0 = time.perf_counter()
        for w in monthly_windows(start, end)[::args.every]:
            for label, kind in targets:  # the same as_of: the second target reuses the cached model fit
                bt = rolling_backtest(store, windows=[w], horizon_days=60, kind=kind)
                ref = pd.DataFrame(references(store, labelled, w, kind, int(bt["k"].iloc[0])))
                frames[label].append(pd.concat([bt, ref], ignore_index=True))
                days = frames[label][-1].set_index("ordering")["mean_days_earlier"]
                print(f"{city} {w:%Y-%m-%d} {kind or 'all'}: risk {days['risk']:+.2f} / historical "
                      f"{days['historical']:+.2f} days earlier", flush=True)
            for i, (label, _) in enumerate(targets):  # what is done so far, in case the run is stopped
                pd.concat(frames[label], ignore_index=True).to_csv(work / f"{city}_{i}.csv", index=False)
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
