"""The solvers behind :func:`~civicgrid.sites.patrol.solve.plan_patrols`: the integer model, PyVRP, OR-Tools and a
greedy fallback. Private to the package: plan with ``plan_patrols``."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.sites.patrol.model import UNIT_PER_MIN, Inspector
from civicgrid.sites.patrol.travel import patrol_points

#: Clients in each client's granular neighbourhood in PyVRP's local search (its default), besides those at the same
#: point (:func:`neighbourhood_size`).
NEIGHBOURS = 50


def neighbourhood_size(lng: np.ndarray, lat: np.ndarray) -> int:
    """The granular neighbourhood PyVRP's moves search for the sites at ``lng, lat``: :data:`NEIGHBOURS` more than
    the most sites sharing one point, and no more than there are sites. Its default (the 50 nearest) held only the
    co-located sites where many share a point (New York's restaurants at their ZIP's centroid, shops of one mall):
    an inspector's route then never met the sites of another point, and in one test a car inspector went home an
    hour early with 270 sites unvisited next door (risk 15.1 where OR-Tools found 17.9)."""
    if not len(lng):
        return NEIGHBOURS
    _, shared = np.unique(np.column_stack([lng, lat]), axis=0, return_counts=True)
    return min(NEIGHBOURS + int(shared.max()) - 1, max(len(lng), NEIGHBOURS))  # no more than there are sites

#: Extra OR-Tools search parameters (``use_*`` names go to the local search operators), for experiments.
ORTOOLS_EXTRA: dict = {}


@dataclass
class Model:
    """A patrol problem in the solvers' integer units (seconds, scaled prizes), over the sites given to them."""

    cand: pd.DataFrame
    insp: list[Inspector]
    mats: dict[str, np.ndarray]
    offsets: np.ndarray
    sites: np.ndarray            # candidate positions in the model
    required: np.ndarray         # per model site
    prize_int: np.ndarray        # per model site
    big_prize: int               # prize of a soft must-visit (dominates everything else)
    dur: dict[str, np.ndarray]   # integer seconds over [depots..., model sites...]
    service: np.ndarray
    tw_early: np.ndarray
    tw_late: np.ndarray
    shift_start: np.ndarray
    shift_end: np.ndarray
    travel_weight: float


def build_model(cand: pd.DataFrame, insp: list[Inspector], mats: dict[str, np.ndarray], offsets: np.ndarray,
                sites: np.ndarray, travel_weight: float | None) -> Model:
    """The integer model of the candidate positions ``sites``: times in whole seconds (rounded so that a plan
    feasible for the solver is feasible in minutes), prizes scaled by ``travel_weight`` (None: travel only breaks
    ties) and the must-visit bonus."""
    m2 = 2 * len(insp)
    loc = np.r_[np.arange(m2), m2 + sites]
    dur = {m: np.ceil(mat[np.ix_(loc, loc)] * UNIT_PER_MIN - 1e-6).astype(np.int64) for m, mat in mats.items()}
    sub = cand.iloc[sites]
    service = np.ceil(sub["service_min"].to_numpy() * UNIT_PER_MIN - 1e-6).astype(np.int64)
    shift_start = np.ceil(offsets * UNIT_PER_MIN - 1e-6).astype(np.int64)
    shift_end = np.floor((offsets + np.array([i.shift_minutes for i in insp])) * UNIT_PER_MIN + 1e-6
                         ).astype(np.int64)
    horizon = int(shift_end.max())
    tws, twe = sub["tw_start_min"].to_numpy(), sub["tw_end_min"].to_numpy()
    tw_early = np.where(np.isnan(tws), 0, np.ceil(np.nan_to_num(tws) * UNIT_PER_MIN - 1e-6)).astype(np.int64)
    tw_late = np.where(np.isnan(twe), horizon, np.floor(np.nan_to_num(twe) * UNIT_PER_MIN + 1e-6)).astype(np.int64)
    tw_early = np.clip(tw_early, 0, horizon)
    tw_late = np.clip(tw_late, 0, horizon)
    prize = sub["prize"].to_numpy()
    required = sub["must_visit"].to_numpy(bool)
    travel_bound = int((shift_end - shift_start).sum()) + 1   # no plan travels longer than all shifts together
    if travel_weight is None:
        positive = prize[(prize > 0) & ~required]
        pmin = positive.min() if len(positive) else 1.0
        # all travel together costs at most 1% of the smallest prize, capped to keep sums far below 2**63
        scale = min(100.0 * travel_bound / pmin, 1e12 / max(prize.sum(), 1e-9))
        travel_weight = UNIT_PER_MIN / scale
    else:
        if travel_weight <= 0:
            msg = f"travel_weight must be positive, got {travel_weight}"
            raise InvalidParameterError(msg)
        scale = UNIT_PER_MIN / travel_weight
    prize_int = np.round(prize * scale).astype(np.int64)
    # a must-visit is worth more than every other prize (must-visits included) and all travel together: a plan
    # with more must-visits always beats one with fewer, whatever their risk
    big = int(prize_int.sum()) + travel_bound + 1
    return Model(cand=cand, insp=insp, mats=mats, offsets=offsets, sites=sites, required=required,
                  prize_int=prize_int, big_prize=big, dur=dur, service=service, tw_early=tw_early,
                  tw_late=tw_late, shift_start=shift_start, shift_end=shift_end, travel_weight=travel_weight)


class SolveLimit:
    """Stop at a CPU or wall-clock deadline, or as soon as the best cost is below ``done_below`` (PyVRP calls it
    with the best cost; its cost is travel plus the prizes left out, so a cost below one must-visit's prize means
    that every site is planned)."""

    def __init__(self, seconds: float, *, cpu_time: bool, done_below: float | None = None) -> None:
        self.clock = time.process_time if cpu_time else time.perf_counter
        self.end = self.clock() + seconds
        self.done_below = done_below

    def __call__(self, best_cost: float | None = None) -> bool:
        if self.done_below is not None and best_cost is not None and best_cost < self.done_below:
            return True
        return self.clock() >= self.end


def solve_pyvrp(mod: Model, *, time_limit_s: float, seed: int, soft_must: bool, cpu_time: bool = False,
                initial: list[list[int]] | None = None, until_all: bool = False) -> list[list[int]] | None:
    """Routes (model site indices per inspector) by PyVRP's iterated local search, or None without a feasible plan.

    ``soft_must`` makes must-visits optional with a bonus prize; ``initial`` is a warm start; ``until_all`` stops
    as soon as every site is planned.
    """
    import pyvrp
    from pyvrp import Client, Depot, Location, ProblemData, VehicleType
    from pyvrp.exceptions import PenaltyBoundWarning
    from pyvrp.PenaltyManager import PenaltyParams
    from pyvrp.search import NeighbourhoodParams

    insp = mod.insp
    m2 = 2 * len(insp)
    modes = sorted(mod.dur)
    profile = {m: p for p, m in enumerate(modes)}
    lng, lat = patrol_points(mod.cand.iloc[mod.sites], insp)
    locations = [Location(x=float(x), y=float(y)) for x, y in zip(lng, lat, strict=True)]
    depots = [Depot(location=d) for d in range(m2)]
    clients = []
    for i in range(len(mod.sites)):
        req = bool(mod.required[i]) and not soft_must
        prize = int(mod.prize_int[i]) + (mod.big_prize if (mod.required[i] and soft_must) else 0)
        clients.append(Client(location=m2 + i, service_duration=int(mod.service[i]), tw_early=int(mod.tw_early[i]),
                              tw_late=int(mod.tw_late[i]), prize=prize, required=req))
    vtypes = [VehicleType(num_available=1, start_depot=2 * k, end_depot=2 * k + 1, tw_early=int(mod.shift_start[k]),
                          tw_late=int(mod.shift_end[k]), shift_duration=int(mod.shift_end[k] - mod.shift_start[k]),
                          unit_distance_cost=1, profile=profile[ins.mode], name=ins.name)
              for k, ins in enumerate(insp)]
    data = ProblemData(locations, clients, depots, vtypes, [mod.dur[m] for m in modes], [mod.dur[m] for m in modes])
    top = max(int(mod.prize_int.max(initial=1)), mod.big_prize if soft_must else 1)
    size = neighbourhood_size(np.asarray(lng[m2:], float), np.asarray(lat[m2:], float))
    params = pyvrp.SolveParams(penalty=PenaltyParams(max_penalty=float(max(100_000, top))),
                               neighbourhood=NeighbourhoodParams(num_neighbours=size))
    with warnings.catch_warnings():
        # PyVRP warns when required clients cannot all fit; the caller then retries with them optional
        warnings.simplefilter("ignore", PenaltyBoundWarning)
        stop = SolveLimit(time_limit_s, cpu_time=cpu_time, done_below=mod.big_prize if until_all else None)
        init = None
        if initial is not None and any(initial):
            init = pyvrp.Solution(data, [pyvrp.Route(data, visits, k) for k, visits in enumerate(initial) if visits])
        res = pyvrp.solve(data, stop=stop, seed=seed, display=False, collect_stats=False,
                          params=params, initial_solution=init)
    best = res.best
    if not best.is_feasible():
        return None
    routes: list[list[int]] = [[] for _ in insp]
    for r in best.routes():
        routes[r.vehicle_type()] = [a.idx for a in r.schedule() if a.is_client()]  # client index
    return routes


def solve_ortools(mod: Model, *, time_limit_s: float, seed: int, soft_must: bool, cpu_time: bool = False,
                  initial: list[list[int]] | None = None, until_all: bool = False) -> list[list[int]] | None:
    """Routes (model site indices per inspector) by OR-Tools' routing library, or None without a feasible plan.

    Parallel cheapest insertion, then guided local search; same arguments as :func:`solve_pyvrp` (``seed`` is
    unused: the routing search is deterministic).
    """
    m2 = 2 * len(mod.insp)
    manager, routing = _ortools_model(mod, soft_must=soft_must)
    params = _ortools_search(routing, mod, time_limit_s=time_limit_s, cpu_time=cpu_time, until_all=until_all)
    start = None
    if initial is not None and any(initial):
        routing.CloseModelWithParameters(params)
        start = routing.ReadAssignmentFromRoutes([[manager.NodeToIndex(m2 + i) for i in r] for r in initial], True)
    if start is not None:
        sol = routing.SolveFromAssignmentWithParameters(start, params)
    else:
        sol = routing.SolveWithParameters(params)
    if sol is None:
        return None
    routes = []
    for k in range(len(mod.insp)):
        idx, order = sol.Value(routing.NextVar(routing.Start(k))), []
        while not routing.IsEnd(idx):
            order.append(manager.IndexToNode(idx) - m2)
            idx = sol.Value(routing.NextVar(idx))
        routes.append(order)
    return routes


def _ortools_model(mod: Model, *, soft_must: bool):
    """The OR-Tools index manager and routing model: arc costs, the time dimension, windows and prizes."""
    from ortools.constraint_solver import pywrapcp

    insp = mod.insp
    m = len(insp)
    m2 = 2 * m
    n = m2 + len(mod.sites)
    manager = pywrapcp.RoutingIndexManager(n, m, [2 * k for k in range(m)], [2 * k + 1 for k in range(m)])
    routing = pywrapcp.RoutingModel(manager)
    service = np.r_[np.zeros(m2, np.int64), mod.service]
    transit, cost = {}, {}
    for mode, dur in mod.dur.items():
        cost[mode] = routing.RegisterTransitMatrix(dur.tolist())
        transit[mode] = routing.RegisterTransitMatrix((dur + service[:, None]).tolist())
    for k, ins in enumerate(insp):
        routing.SetArcCostEvaluatorOfVehicle(cost[ins.mode], k)
    horizon = int(mod.shift_end.max())
    routing.AddDimensionWithVehicleTransits([transit[i.mode] for i in insp], horizon, horizon, False, "time")
    tdim = routing.GetDimensionOrDie("time")
    for k in range(m):
        tdim.CumulVar(routing.Start(k)).SetRange(int(mod.shift_start[k]), int(mod.shift_start[k]))
        tdim.CumulVar(routing.End(k)).SetRange(int(mod.shift_start[k]), int(mod.shift_end[k]))
    for i in range(len(mod.sites)):
        idx = manager.NodeToIndex(m2 + i)
        tdim.CumulVar(idx).SetRange(int(mod.tw_early[i]), int(mod.tw_late[i]))
        if mod.required[i]:
            if soft_must:
                routing.AddDisjunction([idx], mod.big_prize + int(mod.prize_int[i]))
        else:
            routing.AddDisjunction([idx], int(mod.prize_int[i]))
    return manager, routing


def _ortools_search(routing, mod: Model, *, time_limit_s: float, cpu_time: bool, until_all: bool):
    """Search parameters and limits of :func:`solve_ortools` (the stop monitors are added to ``routing``)."""
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2
    from ortools.util import optional_boolean_pb2

    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PARALLEL_CHEAPEST_INSERTION
    params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    # large-neighbourhood moves that re-insert left-out sites: without them guided local search can stay on a plan
    # that swapping two sites for two others would beat (a 9-site instance of tests/test_patrol.py shows it)
    params.local_search_operators.use_inactive_lns = optional_boolean_pb2.BOOL_TRUE
    done = [False]
    if until_all:
        # every site planned: nothing left to gain in this phase (its cost is then travel only)
        def seen() -> None:
            done[0] = done[0] or routing.CostVar().Max() < mod.big_prize

        routing.AddAtSolutionCallback(seen)
    if cpu_time or until_all:
        deadline = SolveLimit(time_limit_s, cpu_time=cpu_time)
        routing.AddSearchMonitor(routing.solver().CustomLimit(lambda: done[0] or deadline()))
    if cpu_time:
        params.time_limit.FromSeconds(int(100 * time_limit_s) + 60)   # a wall-clock backstop only
    else:
        params.time_limit.FromMilliseconds(max(1, int(time_limit_s * 1000)))
    for k, v in ORTOOLS_EXTRA.items():
        if k.startswith("use_"):
            setattr(params.local_search_operators, k, v)
        else:
            setattr(params, k, v)
    return params


def must_and_prize(mod: Model, routes: list[list[int]]) -> tuple[int, int]:
    """The planner's order of plans: must-visits planned, then prize."""
    visited = [i for order in routes for i in order]
    return int(mod.required[visited].sum()), int(mod.prize_int[visited].sum())


def greedy_routes(mod: Model) -> list[list[int]]:
    """Feasible plan by best-ratio insertion (prize per extra second), used when a solver returns nothing."""
    m = len(mod.insp)
    routes: list[list[int]] = [[] for _ in range(m)]
    value = mod.prize_int + np.where(mod.required, mod.big_prize, 0)
    left = set(range(len(mod.sites)))

    def times(k: int, seq: list[int]) -> int | None:
        dur = mod.dur[mod.insp[k].mode]
        t, prev = int(mod.shift_start[k]), 2 * k
        for i in seq:
            t = max(t + int(dur[prev, 2 * m + i]), int(mod.tw_early[i]))
            if t > mod.tw_late[i]:
                return None
            t += int(mod.service[i])
            prev = 2 * m + i
        t += int(dur[prev, 2 * k + 1])
        return t if t <= mod.shift_end[k] else None

    while left:
        best = None
        for k in range(m):
            base = times(k, routes[k])
            for i in left:
                for pos in range(len(routes[k]) + 1):
                    seq = [*routes[k][:pos], i, *routes[k][pos:]]
                    t = times(k, seq)
                    if t is not None:
                        ratio = value[i] / max(t - base, 1)
                        if best is None or ratio > best[0]:
                            best = (ratio, k, seq, i)
        if best is None:
            break
        _, k, routes[k], i = best
        left.discard(i)
    return routes
