"""Patrol solver benchmark: PyVRP vs OR-Tools on the same instances, solve time and gap to a 60-s reference.

For 60, 200 and 500 candidate sites with 1, 5 and 10 inspectors, every solver runs with the short time limit of
the instance size (0.9 s for 60 sites, 4.5 s for 200, 9 s for 500: the targets' 1 s and 10 s less a margin for
building the model, so that the whole call stays within the target). The reference of an instance is the best plan of
all its runs, including a 60-s run of the best configuration (the default solver, PyVRP; ``--ref-solvers
pyvrp,ortools`` adds OR-Tools). Reported: CPU and wall time of ``plan_patrols`` (model building and solving; the
travel matrix is given; limits count CPU seconds unless ``--wall``), total risk collected, must-visits planned,
and the gap to the reference in % of risk — among plans with as many must-visits as the reference: the planner
wants the must-visits first, so a plan with fewer has no gap figure and misses the target. Targets of issue 4:
60 sites / 1 inspector within 1 % in ≤ 1 s; 500 sites / 10 inspectors within 3 % in ≤ 10 s.

Instances imitate a street-level day (seeded, reproducible): sites uniform in a 6 km × 6 km district of the demo
city, risk ~ Beta(2, 5), service minutes drawn from the categories' ``service_minutes`` (6-20), 10 % of sites in a
16:00-17:30 dismissal window, 2 % must-visits; inspectors cycle (bike) from one of three street offices for a
4-hour shift from 14:00. Travel: straight line × 1.3 (the solvers see the same matrix either way).

Run: ``.venv/bin/python bench/patrol_bench.py [--quick] [--ref-seconds 60]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from civicgrid.sites.patrol import DEFAULT_SOLVER, Inspector, check_plan, patrol_points, plan_patrols
from civicgrid.sites.patrol.network import straight_line_minutes

SIZES = (60, 200, 500)
TEAMS = (1, 5, 10)
LIMITS = {60: 0.9, 200: 4.5, 500: 9.0}
#: Targets of issue 4: (sites, inspectors) -> (seconds, gap %).
TARGETS = {(60, 1): (1.0, 1.0), (500, 10): (10.0, 3.0)}
SERVICE = np.array([6, 8, 8, 10, 10, 10, 12, 12, 15, 15, 15, 20, 20], dtype=float)
T0 = datetime(2025, 12, 20, 14, 0)
#: Time limits count CPU seconds of this process (``--wall`` for wall-clock): the machine the figures come from is
#: shared, and a wall-clock limit under a load of 20+ would measure the neighbours, not the solvers.
CPU_TIME = True


def instance(n: int, m: int, seed: int = 0) -> tuple[pd.DataFrame, list[Inspector], np.ndarray]:
    rng = np.random.default_rng(1000 * n + m + seed)
    # 6 km x 6 km around the demo city's centre (1° lat ≈ 111 km; 1° lng ≈ 98 km at 28.2°N)
    lng = 112.94 + rng.uniform(-0.0306, 0.0306, n)
    lat = 28.23 + rng.uniform(-0.027, 0.027, n)
    cand = pd.DataFrame({"site_id": np.arange(n), "lng": lng, "lat": lat,
                         "prize": rng.beta(2, 5, n).round(4), "service_min": rng.choice(SERVICE, n),
                         "must_visit": rng.random(n) < 0.02, "tw_start_min": np.nan, "tw_end_min": np.nan})
    school = rng.random(n) < 0.10
    cand.loc[school, "tw_start_min"] = 120.0      # 16:00 - 17:30 for a 14:00 shift
    cand.loc[school, "tw_end_min"] = 210.0
    offices = [(112.925, 28.22), (112.955, 28.24), (112.94, 28.205)]
    insp = [Inspector(f"I{k}", *offices[k % 3], shift_start=T0, shift_minutes=240, mode="bike") for k in range(m)]
    x, y = patrol_points(cand, insp)
    return cand, insp, straight_line_minutes(x, y, mode="bike")


def run(cand, insp, mat, solver: str, limit: float) -> dict:
    """One solve (time limit in CPU seconds unless ``--wall``): risk, must-visits planned, stops, CPU and wall s."""
    cpu = time.process_time()
    plan = plan_patrols(cand, insp, travel_minutes=mat, solver=solver, time_limit_s=limit, cpu_time=CPU_TIME)
    cpu = time.process_time() - cpu
    problems = check_plan(plan, cand, insp, mat)
    if problems:
        msg = f"{solver}: infeasible plan: {problems[:3]}"
        raise AssertionError(msg)
    must = sum(s.must_visit for r in plan.routes for s in r.stops)
    return {"risk": plan.total_prize, "must": must, "stops": len(plan.visited), "cpu": cpu, "wall": plan.solve_seconds}


def better(a: dict, b: dict) -> bool:
    """The planner's order: more must-visits first, then more risk."""
    return (a["must"], a["risk"]) > (b["must"], b["risk"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref-seconds", type=float, default=60.0, help="time limit of the reference runs")
    ap.add_argument("--quick", action="store_true", help="60 and 200 sites only, 10-s references")
    ap.add_argument("--solvers", default="pyvrp,ortools")
    ap.add_argument("--ref-solvers", default=DEFAULT_SOLVER,
                    help="solvers of the reference runs (default: the best configuration, the default solver)")
    ap.add_argument("--csv", help="also write the rows to this CSV file")
    ap.add_argument("--wall", action="store_true", help="time limits in wall-clock seconds instead of CPU seconds")
    args = ap.parse_args()
    global CPU_TIME
    CPU_TIME = not args.wall
    print(f"time limits in {'CPU' if CPU_TIME else 'wall-clock'} seconds; load average at start "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    sizes = SIZES[:2] if args.quick else SIZES
    ref_s = 10.0 if args.quick else args.ref_seconds
    solvers = args.solvers.split(",")
    ref_solvers = args.ref_solvers.split(",")
    rows = []
    print(f"{'sites':>5} {'insp':>4} {'solver':>7} {'limit s':>7} {'cpu s':>7} {'wall s':>7} {'risk':>8} "
          f"{'must':>4} {'stops':>5} {'ref':>8} {'gap %':>6}", flush=True)
    for n in sizes:
        for m in TEAMS:
            cand, insp, mat = instance(n, m)
            short = {s: run(cand, insp, mat, s, LIMITS[n]) for s in solvers}
            long = {s: run(cand, insp, mat, s, ref_s) for s in ref_solvers}
            ref = None
            for r in [*short.values(), *long.values()]:
                if ref is None or better(r, ref):
                    ref = r
            for s in solvers:
                r = short[s]
                # the gap compares risk among plans with as many must-visits; fewer must-visits is a miss
                gap = 100 * (ref["risk"] - r["risk"]) / ref["risk"] if r["must"] == ref["must"] else np.nan
                rows.append({"sites": n, "inspectors": m, "solver": s, "limit_s": LIMITS[n], "time_s": r["cpu"],
                             "wall_s": r["wall"], "risk": r["risk"], "must": r["must"], "stops": r["stops"],
                             "ref": ref["risk"], "ref_must": ref["must"], "gap_pct": gap})
                flag = "" if r["must"] == ref["must"] else f"  ({ref['must'] - r['must']} must-visit(s) fewer)"
                print(f"{n:>5} {m:>4} {s:>7} {LIMITS[n]:>7.1f} {r['cpu']:>7.2f} {r['wall']:>7.2f} {r['risk']:>8.3f} "
                      f"{r['must']:>4} {r['stops']:>5} {ref['risk']:>8.3f} {gap:>6.2f}{flag}", flush=True)
            print(f"{'':>5} {'':>4} reference: {ref_s:.0f}-s runs "
                  + ", ".join(f"{s} {long[s]['risk']:.3f} ({long[s]['must']} must, {long[s]['stops']} stops)"
                              for s in ref_solvers), flush=True)
    df = pd.DataFrame(rows)
    print()
    print("mean gap % by solver:", df.groupby("solver")["gap_pct"].mean().round(2).to_dict())
    print("mean time s by solver:", df.groupby("solver")["time_s"].mean().round(2).to_dict())
    for (n, m), (lim, tol) in TARGETS.items():
        for s in solvers:
            r = df[(df.sites == n) & (df.inspectors == m) & (df.solver == s)]
            if len(r):
                r = r.iloc[0]
                ok = r.time_s <= lim and r.gap_pct <= tol   # NaN (fewer must-visits): not met
                print(f"target {n} sites / {m} inspector(s), {s}: gap {r.gap_pct:.2f} % (≤ {tol:g}) in "
                      f"{r.time_s:.2f} s (≤ {lim:g}) -> {'met' if ok else 'NOT met'}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"rows written to {args.csv}")


if __name__ == "__main__":
    main()
