"""Benchmark of the assessment simulator: vectorized visits against a plain Python loop, measured in one run.

Usage::

    .venv/bin/python bench/simulator_bench.py [--runs 10000] [--scale 1 --scale 10]

Frames have the demo city's category sizes (1,694 active sites in 38 categories) times ``--scale``, with
probabilities drawn from Beta(2, 4), and ``k`` from ``data/assessment.csv``. For each frame:

* ``simulate_visits`` (numpy: uniform keys + argpartition per category, Bernoulli outcomes) for ``--runs`` runs;
* the reference: the same visits in plain Python (``random.sample`` of ``k`` sites per category per run and
  ``random.random() < p`` per drawn site), the way a spreadsheet macro or a first script would do it;
* ``exact_assessment`` (Poisson-binomial x hypergeometric, the exact distribution) and ``fix_first`` (exact gains).

With ``--db DEMO.duckdb`` it also times the whole question on a real store as the CLI asks it: each site's
probability (the documented rule; the risk model) and ``assess`` end to end (10,000 runs, fix 10), against the
simulation alone measured in the same run.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from civicgrid.sites.simulator import assessment_sizes, exact_assessment, fix_first, simulate_visits

#: Active sites per category in the demo city (seed 7), codes 01..38.
DEMO_SIZES = [17, 5, 80, 30, 250, 20, 25, 4, 100, 10, 14, 5, 58, 282, 37, 20, 15, 10, 9, 12, 4, 5, 13, 60, 60,
              47, 30, 30, 8, 80, 40, 13, 13, 51, 51, 150, 6, 30]


def frame(scale: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = np.repeat([f"{i:02d}" for i in range(1, 39)], [s * scale for s in DEMO_SIZES])
    return pd.DataFrame({"site_id": np.arange(len(codes)), "category_code": codes,
                         "p": rng.beta(2, 4, len(codes))})


def python_visits(df: pd.DataFrame, k: pd.Series, runs: int, seed: int = 0) -> np.ndarray:
    rnd = random.Random(seed)
    groups = [(int(min(k[c], len(g))), g["p"].tolist()) for c, g in df.groupby("category_code")]
    out = np.empty((runs, len(groups)), dtype=np.int32)
    for r in range(runs):
        for j, (kk, p) in enumerate(groups):
            drawn = rnd.sample(range(len(p)), kk)
            out[r, j] = sum(1 for i in drawn if rnd.random() >= p[i])
    return out


def timed(func, *args, **kwargs):
    t = time.perf_counter()
    value = func(*args, **kwargs)
    return value, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--scale", type=int, action="append")
    ap.add_argument("--db", help="also time site probabilities and assess() on this store (e.g. a demo city)")
    args = ap.parse_args()
    k = assessment_sizes()
    for scale in args.scale or [1, 10]:
        df = frame(scale)
        sim, t_np = timed(simulate_visits, df, k, runs=args.runs, seed=1)
        ref, t_py = timed(python_visits, df, k, args.runs, 2)
        exact, t_exact = timed(exact_assessment, df, k, threshold=0.9)
        _, t_fix = timed(fix_first, df, k, n=20)
        mean_np = sim.overall_rates.mean()
        mean_py = (ref.sum(axis=1) / sim.k.sum()).mean()
        print(f"frame: {len(df):,} sites x 38 categories, {args.runs:,} runs, {int(sim.k.sum())} draws per visit")
        print(f"  simulate_visits (numpy)       {t_np * 1000:9.1f} ms   overall mean {mean_np:.4f}")
        print(f"  plain Python loop (reference) {t_py * 1000:9.1f} ms   overall mean {mean_py:.4f}   "
              f"ratio {t_py / t_np:.1f}x")
        print(f"  exact_assessment              {t_exact * 1000:9.1f} ms   "
              f"overall mean {exact['overall']['expected']:.4f}"
              f"   P(<90%) {exact['overall']['p_below']:.4f}")
        print(f"  fix_first (20 sites)          {t_fix * 1000:9.1f} ms")
    if args.db:
        store_figures(args.db, args.runs)


def store_figures(db: str, runs: int) -> None:
    """``assess`` first (cold: nothing of this store computed yet in the process), then its parts."""
    from civicgrid.geo.aggregate import clear_cache
    from civicgrid.geo.store import Store
    from civicgrid.sites.simulator import assess, site_probabilities

    res, t_all = timed(assess, Store(db), runs=runs, fix=10, method="auto")
    clear_cache()
    rule, t_rule = timed(site_probabilities, Store(db), method="rule")
    clear_cache()
    _, t_risk = timed(site_probabilities, Store(db), method="risk")
    _, t_sim = timed(simulate_visits, rule, assessment_sizes(Store(db)), runs=runs, seed=1)
    print(f"store {db}: {len(rule):,} active sites, as of the latest event, {runs:,} runs")
    print(f"  assess, end to end, cold (risk) {t_all * 1000:9.1f} ms   ratio {t_all / t_sim:.0f}x the simulation   "
          f"expected {res['overall']['expected']:.4f}, after fixing 10: {res['overall_after_fix']['expected']:.4f}")
    print(f"  site_probabilities (rule, SQL)  {t_rule * 1000:9.1f} ms")
    print(f"  site_probabilities (risk model) {t_risk * 1000:9.1f} ms   (its fitted model cached in the process)")
    print(f"  simulate_visits alone           {t_sim * 1000:9.1f} ms   (reference)")


if __name__ == "__main__":
    main()
