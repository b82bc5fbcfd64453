"""Tests for sites.patrol: optimality against brute force, independent feasibility checks, coverage."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sites.network import load_network, straight_line_minutes
from sites.patrol import (
    Inspector,
    apply_coverage,
    check_plan,
    patrol_points,
    plan_patrols,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FUTIAN = DATA / "cn_shenzhen" / "shenzhen_futian_osm_drive_G.graphml"
SOLVERS = ["pyvrp", "ortools"]
T0 = datetime(2026, 11, 23, 9, 0)


def random_sites(n: int, seed: int, *, spread: float = 0.012, windows: bool = False, must: int = 0) -> pd.DataFrame:
    """n sites around central Futian with integer prizes, optional windows and must-visits."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "site_id": [f"S{i:03d}" for i in range(n)],
        "lng": 114.05 + rng.uniform(-spread, spread, n),
        "lat": 22.54 + rng.uniform(-spread, spread, n),
        "prize": rng.integers(1, 20, n).astype(float),
        "service_min": rng.choice([8.0, 12.0, 15.0], n),
        "must_visit": False,
        "tw_start_min": np.nan,
        "tw_end_min": np.nan,
    })
    if windows:
        w = rng.random(n) < 0.4
        start = rng.uniform(0, 120, n).round()
        df.loc[w, "tw_start_min"] = start[w]
        df.loc[w, "tw_end_min"] = start[w] + rng.choice([30.0, 60.0], n)[w]
    if must:
        df.loc[rng.choice(n, must, replace=False), "must_visit"] = True
    return df


def best_sequences(mat: np.ndarray, start: int, end: int, offset: int, cand: pd.DataFrame, shift: float,
                   t0: float = 0.0) -> dict[int, float]:
    """All feasible visiting orders of one inspector by depth-first search: {subset bitmask: best prize}."""
    n = len(cand)
    prize = cand["prize"].to_numpy()
    serv = cand["service_min"].to_numpy()
    tws = np.nan_to_num(cand["tw_start_min"].to_numpy(), nan=-np.inf)
    twe = np.nan_to_num(cand["tw_end_min"].to_numpy(), nan=np.inf)
    best: dict[int, float] = {0: 0.0}

    def dfs(prev: int, clock: float, mask: int, total: float) -> None:
        for j in range(n):
            if mask >> j & 1:
                continue
            begin = max(clock + mat[prev, offset + j], tws[j])
            if begin > twe[j] + 1e-9:
                continue
            done = begin + serv[j]
            if done + mat[offset + j, end] > t0 + shift + 1e-9:
                continue   # cannot come back even directly: no extension from here can either (triangle ineq.)
            m, p = mask | 1 << j, total + prize[j]
            best[m] = max(best.get(m, 0.0), p)
            dfs(offset + j, done, m, p)

    dfs(start, t0, 0, 0.0)
    return best


def brute_force(cand: pd.DataFrame, inspectors: list[Inspector], mat: np.ndarray) -> float:
    """Optimal prize for one or two inspectors by enumerating subsets and orders."""
    m2 = 2 * len(inspectors)
    tables = [best_sequences(mat, 2 * k, 2 * k + 1, m2, cand, ins.shift_minutes) for k, ins in enumerate(inspectors)]
    if len(tables) == 1:
        return max(tables[0].values())
    a, b = tables
    return max(pa + pb for ma, pa in a.items() for mb, pb in b.items() if not ma & mb)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_inspector_reaches_brute_force_optimum(solver: str, seed: int) -> None:
    cand = random_sites(8, seed, windows=seed == 3)
    ins = [Inspector("A", 114.05, 22.54, shift_start=T0, shift_minutes=90, mode="walk")]
    lng, lat = patrol_points(cand, ins)
    mat = straight_line_minutes(lng, lat, mode="walk")
    optimum = brute_force(cand, ins, mat)
    plan = plan_patrols(cand, ins, travel_minutes=mat, solver=solver, time_limit_s=1.0)
    assert 0 < optimum < cand["prize"].sum()          # the shift is binding: not every site fits
    assert plan.total_prize == pytest.approx(optimum)
    assert check_plan(plan, cand, ins, mat) == []
    assert plan.objective == pytest.approx(optimum, abs=0.01 * cand["prize"].min())


@pytest.mark.parametrize("solver", SOLVERS)
def test_two_inspectors_reach_brute_force_optimum(solver: str) -> None:
    cand = random_sites(7, 11, spread=0.02)
    ins = [Inspector("A", 114.04, 22.53, shift_start=T0, shift_minutes=60, mode="bike"),
           Inspector("B", 114.06, 22.55, end_lng=114.05, end_lat=22.54, shift_start=T0, shift_minutes=45,
                     mode="bike")]
    lng, lat = patrol_points(cand, ins)
    mat = straight_line_minutes(lng, lat, mode="bike")
    optimum = brute_force(cand, ins, mat)
    plan = plan_patrols(cand, ins, travel_minutes=mat, solver=solver, time_limit_s=1.5)
    assert optimum < cand["prize"].sum()
    assert plan.total_prize == pytest.approx(optimum)
    assert all(r.stops for r in plan.routes)
    assert check_plan(plan, cand, ins, mat) == []


@pytest.mark.parametrize("solver", SOLVERS)
def test_random_instances_with_windows_and_must_visits_are_feasible(solver: str) -> None:
    cand = random_sites(40, 7, windows=True, must=4)
    ins = [Inspector("A", 114.05, 22.54, shift_start=T0, shift_minutes=180, mode="walk"),
           Inspector("B", 114.045, 22.535, shift_start=datetime(2026, 11, 23, 9, 30), shift_minutes=150,
                     mode="bike")]
    plan = plan_patrols(cand, ins, solver=solver, time_limit_s=1.5)
    assert plan.travel_source == "straight line × 1.3"
    assert check_plan(plan, cand, ins) == []
    assert plan.unvisited_must == []
    must = set(cand.loc[cand["must_visit"], "site_id"])
    assert must <= set(plan.visited)
    assert len(plan.visited) == len(set(plan.visited)) > 10
    # arrival times follow from the matrix: arrival = previous departure + travel, service starts after waiting
    mat = plan.travel_minutes["walk"]
    route = plan.routes[0]
    pos = {s: j for j, s in enumerate(cand["site_id"])}
    clock, prev = 0.0, 0
    for s in route.stops:
        j = 4 + pos[s.site_id]
        assert s.travel_min == pytest.approx(mat[prev, j])
        assert s.arrival_min == pytest.approx(clock + mat[prev, j])
        assert s.start_min == pytest.approx(s.arrival_min + s.wait_min)
        tws = cand.at[pos[s.site_id], "tw_start_min"]
        assert s.wait_min == pytest.approx(max(0.0, tws - s.arrival_min) if not np.isnan(tws) else 0.0)
        assert abs((s.arrival - T0).total_seconds() - 60 * s.arrival_min) < 1e-3
        clock, prev = s.start_min + s.service_min, j
    assert route.shift_used_min == pytest.approx(clock + mat[prev, 1])
    assert route.shift_used_min <= 180
    first = plan.routes[1].stops[0]
    assert abs((first.arrival - datetime(2026, 11, 23, 9, 30)).total_seconds() - 60 * first.arrival_min) < 1e-3
    frame = plan.to_frame()
    assert len(frame) == len(plan.visited)
    assert frame["prize"].sum() == pytest.approx(plan.total_prize)


@pytest.mark.parametrize("solver", SOLVERS)
def test_must_visit_that_cannot_fit_is_reported(solver: str) -> None:
    cand = random_sites(10, 5, must=1)
    far = pd.DataFrame([{"site_id": "FAR", "lng": 114.20, "lat": 22.60, "prize": 5.0, "service_min": 20.0,
                         "must_visit": True}])
    late = pd.DataFrame([{"site_id": "LATE", "lng": 114.051, "lat": 22.541, "prize": 5.0, "service_min": 10.0,
                          "must_visit": True, "tw_start_min": 0.0, "tw_end_min": 0.5}])
    cand = pd.concat([cand, far, late], ignore_index=True)
    ins = [Inspector("A", 114.05, 22.54, shift_start=T0, shift_minutes=120, mode="walk")]
    plan = plan_patrols(cand, ins, solver=solver, time_limit_s=1.0)
    reasons = {u.site_id: u.reason for u in plan.unvisited_must}
    assert set(reasons) == {"FAR", "LATE"}
    # FAR is ~17 km away: 17.2 km × 1.3 at 4.5 km/h ≈ 300 min each way
    assert reasons["FAR"].startswith("cannot fit: nearest inspector A (walk) needs")
    assert "20 min service" in reasons["FAR"] and "shift has 120 min" in reasons["FAR"]
    go = float(reasons["FAR"].split("needs ")[1].split(" min")[0])
    assert 280 < go < 320
    assert "window closes at minute 0.5" in reasons["LATE"]
    assert check_plan(plan, cand, ins) == []
    # the checker catches a plan that hides the problem
    plan.unvisited_must = []
    problems = check_plan(plan, cand, ins)
    assert problems == ["must-visit site 'FAR' neither visited nor reported",
                        "must-visit site 'LATE' neither visited nor reported"]


@pytest.mark.parametrize("solver", SOLVERS)
def test_must_visits_that_fit_alone_but_not_together(solver: str) -> None:
    # three must-visit sites 21-23 min walk from the start in different directions and a 54-min shift: only
    # one fits, and E (21.4 min) leaves room for the 50-point optional site on the way (53.2 min in all)
    cand = pd.DataFrame({"site_id": ["N", "E", "W", "x"], "lng": [114.05, 114.062, 114.038, 114.0505],
                         "lat": [22.552, 22.54, 22.54, 22.5405], "prize": [1.0, 1.0, 1.0, 50.0],
                         "service_min": 5.0, "must_visit": [True, True, True, False]})
    ins = [Inspector("A", 114.05, 22.54, shift_start=T0, shift_minutes=54, mode="walk")]
    plan = plan_patrols(cand, ins, solver=solver, time_limit_s=1.0)
    assert check_plan(plan, cand, ins) == []
    assert sorted(plan.visited) == ["E", "x"]
    assert plan.routes[0].shift_used_min == pytest.approx(53.2, abs=0.1)
    assert [u.site_id for u in plan.unvisited_must] == ["N", "W"]
    assert all(u.reason.startswith("does not fit together with the other must-visit sites: the cheapest "
                                   "insertion (into A's route) needs") for u in plan.unvisited_must)


def test_check_plan_finds_violations() -> None:
    cand = random_sites(12, 4, windows=True)
    ins = [Inspector("A", 114.05, 22.54, shift_start=T0, shift_minutes=100, mode="walk")]
    plan = plan_patrols(cand, ins, solver="ortools", time_limit_s=0.5)
    mat = plan.travel_minutes["walk"]
    assert check_plan(plan, cand, ins, mat) == []
    stops = plan.routes[0].stops
    assert len(stops) >= 2
    plan.routes[0].stops = [*stops, stops[0]]
    problems = check_plan(plan, cand, ins, mat)
    assert any(p.startswith(f"site '{stops[0].site_id}' visited twice") for p in problems)
    assert any("back at minute" in p for p in problems) or any("reported arrival" in p for p in problems)
    # a doubled matrix makes every reported arrival wrong and the shift too long
    plan.routes[0].stops = stops
    problems = check_plan(plan, cand, ins, mat * 3)
    assert any(p.startswith("A: reported arrival at") for p in problems)
    assert any(p.startswith("A: back at minute") for p in problems)


def test_road_network_plan_reports_its_source() -> None:
    net = load_network(FUTIAN)
    cand = random_sites(25, 8, spread=0.008)
    cand["lng"] -= 0.03                               # inside the Futian extract (113.997-114.040)
    ins = [Inspector("A", 114.02, 22.54, shift_start=T0, shift_minutes=120, mode="walk"),
           Inspector("B", 114.02, 22.535, shift_start=T0, shift_minutes=120, mode="car")]
    plan = plan_patrols(cand, ins, network=net, solver="pyvrp", time_limit_s=1.0)
    assert plan.travel_source == "road network: shenzhen_futian_osm_drive_G.graphml"
    assert set(plan.travel_minutes) == {"walk", "car"}
    assert check_plan(plan, cand, ins) == []
    lng, lat = patrol_points(cand, ins)
    straight = straight_line_minutes(lng, lat, mode="walk", detour=1.0)
    assert (plan.travel_minutes["walk"] >= straight - 1e-9).all()
    assert plan.total_prize > 0


def test_callable_and_dict_travel_inputs_agree() -> None:
    cand = random_sites(8, 9)
    ins = [{"name": "A", "start_lng": 114.05, "start_lat": 22.54, "shift_minutes": 80, "mode": "bike"}]
    lng, lat = patrol_points(cand, ins)
    mat = straight_line_minutes(lng, lat, mode="bike")
    a = plan_patrols(cand, ins, travel_minutes={"bike": mat}, solver="ortools", time_limit_s=0.5)
    b = plan_patrols(cand, ins, travel_minutes=lambda x, y, mode: straight_line_minutes(x, y, mode=mode),
                     solver="ortools", time_limit_s=0.5, travel_source="custom")
    assert a.total_prize == b.total_prize
    assert b.travel_source == "custom"
    assert a.routes[0].stops[0].arrival is None       # no shift_start: minutes only
    with pytest.raises(ValueError, match="expected \\(10, 10\\)"):
        plan_patrols(cand, ins, travel_minutes=mat[:5, :5])
    with pytest.raises(ValueError, match="unknown solver"):
        plan_patrols(cand, ins, travel_minutes=mat, solver="gurobi")


def test_travel_weight_trades_prize_for_travel() -> None:
    # a 1-point site 20 min out of the way: worth it as a tie-breaker plan, not at 0.2 prize/min
    cand = pd.DataFrame({"site_id": ["near", "far"], "lng": [114.0505, 114.062], "lat": [22.5405, 22.54],
                         "prize": [5.0, 1.0], "service_min": 5.0})
    ins = [Inspector("A", 114.05, 22.54, shift_minutes=120, mode="walk")]
    for solver in SOLVERS:
        default = plan_patrols(cand, ins, solver=solver, time_limit_s=0.5)
        assert sorted(default.visited) == ["far", "near"]
        assert default.travel_weight < 1e-3
        costly = plan_patrols(cand, ins, solver=solver, time_limit_s=0.5, travel_weight=0.2)
        assert costly.visited == ["near"]
        assert costly.objective == pytest.approx(5.0 - 0.2 * costly.total_travel_min)


def test_apply_coverage_marks_best_site_of_stale_grids() -> None:
    cand = pd.DataFrame({"site_id": range(7), "grid_code": ["g1", "g1", "g2", "g2", "g3", "g4", "g4"],
                         "prize": [3.0, 5.0, 2.0, 2.0, 1.0, 9.0, 4.0],
                         "must_visit": [False, False, False, False, False, False, True],
                         "lng": 114.05, "lat": 22.54})
    out = apply_coverage(cand, {"g1": 7, "g2": 9, "g3": 2, "g4": 30}, max_days=7)
    # g1 stale (7 >= 7): site 1 (prize 5); g2 stale: tie -> first (site 2); g3 fresh; g4 already has a must-visit
    assert out["coverage"].tolist() == [False, True, True, False, False, False, False]
    assert out["must_visit"].tolist() == [False, True, True, False, False, False, True]
    assert not cand["must_visit"].iloc[1]             # the input is not modified
    never = apply_coverage(cand, {}, max_days=7, boost=2.0)
    assert never["coverage"].sum() == 3               # g1, g2, g3 never visited; g4 already covered
    assert never["prize"].tolist() == [6.0, 10.0, 4.0, 4.0, 2.0, 18.0, 8.0]
    with pytest.raises(ValueError, match="grid_code"):
        apply_coverage(cand.drop(columns="grid_code"), {}, max_days=3)
